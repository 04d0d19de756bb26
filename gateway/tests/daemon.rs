//! The `gateway` binary as operators run it, L7 only (no XDP, no root): serves from the file,
//! reloads when the file changes, keeps serving when the new file is bad, drains on SIGTERM.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use support::backend::Backend;

struct Gateway {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let g = Self { child, logs };
        g.wait_for("gateway ready");
        g
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in logs: {:?}",
                self.logs.lock()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn backend_of(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["backend"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<no backend: {buf}>"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reloads_on_file_change_rejects_bad_files_and_drains_on_sigterm() {
    daemon_lifecycle("").await;
}

/// One worker runs on a single-threaded runtime: the same lifecycle must hold there (file
/// watching, reload, drain and exit all share the one thread with the connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_reloads_and_drains_on_a_single_thread() {
    daemon_lifecycle("workers: 1\n").await;
}

async fn daemon_lifecycle(workers: &str) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "gw-daemon-{}-{}",
        std::process::id(),
        workers.len()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.yaml");
    let n = workers.len();
    let yaml = |target: &Backend| {
        format!(
            "instance: daemon-test-{n}\n{workers}state_dir: {}\nlisteners: [{{ name: main, address: \"127.0.0.1:{port}\" }}]\n\
             access_log: off\nupstreams: {{ u: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ match: {{ prefix: / }}, upstream: u }}]\n",
            dir.display(),
            target.url()
        )
    };
    std::fs::write(&file, yaml(&a)).expect("write");
    let gw = Gateway::start(&file);
    assert_eq!(backend_of(port).await, "a");

    // Edit the file: picked up without a signal.
    std::fs::write(&file, yaml(&b)).expect("write");
    let deadline = Instant::now() + Duration::from_secs(6);
    while backend_of(port).await != "b" {
        assert!(Instant::now() < deadline, "file change not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file: rejected with file:line, the running config keeps serving.
    std::fs::write(&file, yaml(&a).replace("prefix: /", "prefix: nope")).expect("write");
    let line = gw.wait_for("reload rejected");
    assert!(line.contains("gateway.yaml:"), "{line}");
    assert_eq!(backend_of(port).await, "b");

    // SIGTERM: clean exit.
    let pid = nix::unistd::Pid::from_raw(gw.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let mut gw = gw;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = gw.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert_eq!(gw.count("stopped"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
