//! The real `gateway` binary under test: started in a namespace with a config, its JSON logs
//! collected, stopped and cleaned up (pins, state directory) on drop.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

/// The binary: `GATEWAY_BIN`, else `target/debug/gateway` next to this test's `deps` directory.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join("gateway");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p gateway`) or set GATEWAY_BIN",
        bin.display()
    );
    bin
}

/// A unique instance name and its state directory; pins and state removed on drop.
pub struct Instance {
    pub name: String,
    pub state_dir: PathBuf,
}

impl Instance {
    pub fn new(test: &str) -> Self {
        let name = format!("t-{test}-{}", std::process::id());
        let state_dir = std::env::temp_dir().join(format!("gw-state-{name}"));
        let _ = std::fs::remove_dir_all(&state_dir);
        let _ = std::fs::remove_dir_all(pin_dir(&name));
        Self { name, state_dir }
    }

    /// Runs an operator command (`gateway <args>`) against this instance, from the root
    /// namespace (the maps are pinned in bpffs, not in a network namespace).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .env("GATEWAY_INSTANCE", &self.name)
            .env("GATEWAY_STATE_DIR", &self.state_dir)
            .env_remove("GATEWAY_CONFIG")
            .output()
            .expect("running gateway")
    }

    /// Like [`cli`](Self::cli), panicking unless it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gateway {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `gateway stats --json` as (verdict/reason) -> packets.
    pub fn packets(&self, reason: &str) -> u64 {
        let out = self.cli_ok(&["stats", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&out).expect("stats json");
        rows.as_array()
            .expect("array")
            .iter()
            .find(|r| r["reason"] == reason)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or_else(|| panic!("no counter `{reason}` in {out}"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(pin_dir(&self.name));
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

pub fn pin_dir(instance: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/gateway").join(instance)
}

/// A running daemon. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl Daemon {
    /// Writes `config_yaml` (with `instance` and `state_dir` filled in) and starts `gateway run`
    /// inside `ns`, waiting until it logs that it is ready.
    pub fn start(instance: &Instance, ns: &NetNs, config_yaml: &str) -> Self {
        std::fs::create_dir_all(&instance.state_dir).expect("state dir");
        let config = instance.state_dir.join("gateway.yaml");
        let full = format!(
            "instance: {}\nstate_dir: {}\n{config_yaml}",
            instance.name,
            instance.state_dir.display()
        );
        std::fs::write(&config, full).expect("writing config");
        Self::spawn(ns, config)
    }

    /// Starts again with the same config file (restart tests).
    pub fn restart(self, ns: &NetNs) -> Self {
        let config = self.config.clone();
        drop(self);
        Self::spawn(ns, config)
    }

    fn spawn(ns: &NetNs, config: PathBuf) -> Self {
        let mut child = ns
            .command(binary())
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning gateway run");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut daemon = Self {
            child,
            logs,
            config,
        };
        daemon.wait_for_log("gateway ready", Duration::from_secs(30));
        assert!(
            daemon.logs_contain("\"xdp\":true"),
            "daemon started without XDP:\n{}",
            daemon.logs().join("\n")
        );
        daemon
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle`; panics with the logs after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gateway exited ({status}) before logging `{needle}`:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in gateway logs after {timeout:?}:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
    }

    /// SIGKILL: no clean shutdown (crash tests).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    /// Starts with the config file a previous [`Daemon::start`] wrote for `instance`.
    pub fn start_existing(instance: &Instance, ns: &NetNs) -> Self {
        Self::spawn(ns, instance.state_dir.join("gateway.yaml"))
    }
}
