//! What the loopback benchmarks (`bench l7`, `bench waf`) share: peers installed from Debian on
//! first use, processes started pinned and stopped by PID, free ports, waiting for a peer to
//! serve, waiting for a quiet machine, CPU accounting from /proc, `wrk` runs and their parsing,
//! medians, and the JSON and markdown helpers (xtask keeps its dependencies to anyhow and clap).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exec;

/// Servers (proxy and backend) run here...
pub const SERVER_CPU: usize = 0;
/// ...and the load generator alone here.
pub const LOAD_CPU: usize = 1;

/// How long to wait for another benchmark or a busy machine before giving up.
const QUIET_PATIENCE: Duration = Duration::from_secs(30 * 60);
/// Above this share of all CPUs busy (before a run, with our peers idle) the machine is busy.
const BUSY_THRESHOLD: f64 = 0.15;
/// A run during which others used more than this share of a CPU is repeated.
const FOREIGN_LIMIT: f64 = 0.25;
/// Runs shorter than this (seconds) are not judged by their foreign share.
const FOREIGN_MIN_WALL_S: f64 = 5.0;

/// A `done` callback for `wrk` scripts: prints the summary as `<prefix>key value` lines that
/// [`parse_wrk`] reads. `{prefix}` is replaced by the caller's prefix.
const WRK_DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{prefix}requests %d\n", summary.requests))
  io.write(string.format("{prefix}duration_us %d\n", summary.duration))
  io.write(string.format("{prefix}errors %d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("{prefix}non_2xx %d\n", e.status))
  for _, p in ipairs({ {"p50", 50}, {"p90", 90}, {"p99", 99}, {"p999", 99.9} }) do
    io.write(string.format("{prefix}%s_us %.1f\n", p[1], latency:percentile(p[2])))
  end
  io.write(string.format("{prefix}mean_us %.1f\n", latency.mean))
  io.write(string.format("{prefix}max_us %.1f\n", latency.max))
end
"#;

/// The `done` callback printing lines that start with `prefix` (see [`parse_wrk`]).
pub fn wrk_done_lua(prefix: &str) -> String {
    WRK_DONE.replace("{prefix}", prefix)
}

/// The command that reproduces a run: `command` preceded by the environment settings that
/// differ from their defaults (`Some(value)`), so a report names exactly what was changed.
pub fn reproduce(command: &str, settings: &[(&str, Option<String>)]) -> String {
    let mut line = String::new();
    for (name, value) in settings {
        if let Some(v) = value {
            line.push_str(&format!("{name}={v} "));
        }
    }
    line.push_str(command);
    line
}

/// `Some(value)` when it differs from `default`: an entry for [`reproduce`].
pub fn changed<T: PartialEq + std::fmt::Display>(value: T, default: T) -> Option<String> {
    (value != default).then(|| value.to_string())
}

/// Reads an integer or a count from the environment, `default` when unset.
pub fn env_var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v}: not a number")),
        Err(_) => Ok(default),
    }
}

/// Installs Debian packages when their probe file is missing (root), or says how. `tag` names
/// the benchmark in messages (`bench l7`).
pub fn install_packages(tag: &str, packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !exec::is_root() {
        bail!(
            "{tag} needs the Debian packages {0}: run `apt-get install -y {0}` as root",
            missing.join(" ")
        );
    }
    eprintln!("{tag}: installing the peers {}", missing.join(" "));
    exec::run(Command::new("apt-get").args(["update", "-q"]))?;
    exec::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A temporary directory removed on drop (kept when the environment variable `keep` is set).
pub struct WorkDir {
    pub path: PathBuf,
    tag: String,
    keep: String,
}

impl WorkDir {
    /// `/tmp/gateway-bench-<name>-<pid>`; `tag` names the benchmark in messages.
    pub fn new(name: &str, tag: &str, keep: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gateway-bench-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            path: dir,
            tag: tag.into(),
            keep: keep.into(),
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os(&self.keep).is_some() {
            eprintln!("{}: kept {}", self.tag, self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A process this benchmark started: SIGTERM, then SIGKILL after 5 s, on drop. By PID only.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// Held open so that `bench_backend` sees end of file when we are gone.
    _stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts `program args` pinned to `cpu`, stdout and stderr to files in `dir`.
    pub fn spawn(
        name: &str,
        cpu: usize,
        program: &Path,
        args: &[&str],
        dir: &Path,
        stdout_null: bool,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string()).arg(program).args(args);
        cmd.stdin(Stdio::null())
            .stdout(if stdout_null {
                Stdio::null()
            } else {
                Stdio::from(file.try_clone()?)
            })
            .stderr(Stdio::from(file));
        eprintln!("+ {}", exec::render(&cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", exec::render(&cmd)))?;
        Ok(Self {
            name: name.into(),
            child,
            log,
            _stdin: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with the log when the process has exited.
    pub fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bench_backend` (1 tokio worker) pinned to the server CPU, with `extra` arguments;
/// returns it serving, with its port. It prints `listening ADDR` and exits at end of file on
/// stdin, which the returned [`Proc`] holds.
pub fn start_backend(bin: &Path, dir: &Path, extra: &[&str]) -> anyhow::Result<(Proc, u16)> {
    let backend_log = dir.join("backend.log");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(SERVER_CPU.to_string())
        .arg(bin)
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(fs::File::create(&backend_log)?));
    eprintln!("+ {}", exec::render(&cmd));
    let mut child = cmd.spawn().context("starting bench_backend")?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let mut backend = Proc {
        name: "backend".into(),
        child,
        log: backend_log,
        _stdin: stdin,
    };
    let mut line = String::new();
    if let Some(out) = stdout {
        BufReader::new(out).read_line(&mut line)?;
    }
    let backend_port: u16 = line
        .trim()
        .strip_prefix("listening 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("bench_backend said {line:?}"))?;
    wait_serving(&mut backend, backend_port, false)?;
    Ok((backend, backend_port))
}

/// Distinct free loopback ports (held together while chosen, so they differ).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Sends `request` (raw HTTP/1.1 that asks for `Connection: close`) over a fresh connection;
/// the status code and the body.
pub fn http_raw(port: u16, request: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// `GET path` over a fresh connection; the status code and the body.
pub fn http_get_path(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    http_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Waits until `GET /` on `port` is proxied to the backend (or, for TLS, the port accepts).
pub fn wait_serving(proc: &mut Proc, port: u16, tls: bool) -> anyhow::Result<()> {
    wait_serving_inner(proc, port, tls, "/")
}

/// Waits until `GET path` on `port` (plain HTTP) is proxied to the backend.
pub fn wait_serving_path(proc: &mut Proc, port: u16, path: &str) -> anyhow::Result<()> {
    wait_serving_inner(proc, port, false, path)
}

fn wait_serving_inner(proc: &mut Proc, port: u16, tls: bool, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        proc.alive()?;
        if tls {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
        } else {
            match http_get_path(port, path) {
                Ok((200, body)) if body.contains("bench-backend") => return Ok(()),
                Ok((status, _)) => last = format!("status {status}"),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} does not serve on port {port} ({last}):\n{}",
        proc.name,
        proc.log_tail()
    )
}

/// Waits for a line containing `needle` in the process log.
pub fn wait_log_line(proc: &mut Proc, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        proc.alive()?;
        if fs::read_to_string(&proc.log).is_ok_and(|t| t.contains(needle)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{}: no `{needle}` within 30 s:\n{}",
        proc.name,
        proc.log_tail()
    )
}

/// The first line `program arg` prints (on stdout or stderr), for the versions line.
pub fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

/// `git describe --always --dirty` of the workspace: which gateway was measured.
pub fn git_describe() -> String {
    exec::output(
        Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(exec::workspace_root()),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_default()
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default()
}

/// Busy and total jiffies per CPU (index 0 = the `cpu` line, then cpu0, cpu1, ...).
pub fn cpu_times() -> Vec<(u64, u64)> {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: busy leaves out idle, iowait
            // and steal (time the hypervisor gave to someone else is no process's).
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            (total - at(3) - at(4) - at(7), total)
        })
        .collect()
}

pub fn busy_share(before: &[(u64, u64)], after: &[(u64, u64)], index: usize) -> f64 {
    match (before.get(index), after.get(index)) {
        (Some(b), Some(a)) if a.1 > b.1 => (a.0 - b.0) as f64 / (a.1 - b.1) as f64,
        _ => 0.0,
    }
}

/// CPU time (user + system, jiffies) of `pid` and its direct children (nginx workers).
pub fn tree_jiffies(pid: u32) -> u64 {
    let mut total = 0;
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces) start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] = state (field 3), ppid = field 4, utime = 14, stime = 15.
        let ppid: u32 = f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        if p == pid || ppid == pid {
            let utime: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
            let stime: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
            total += utime + stime;
        }
    }
    total
}

/// CPU time (jiffies) of the children this process has waited for: the load generators.
fn waited_children_jiffies() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // cutime = field 16, cstime = 17.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(13) + get(14)
}

pub fn clock_ticks() -> f64 {
    exec::output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn xdp_bench_running() -> bool {
    exec::succeeds(Command::new("pgrep").args(["-f", "xdp_bench"]))
}

/// `BENCH_SMOKE=1`: measure at once, on a busy machine too, to see that a benchmark works end
/// to end (every run is flagged as measured on a busy machine; the numbers are not results).
pub fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Waits until no `xdp_bench` runs and the machine is otherwise idle. Returns `true` when it
/// gave up on "idle" (busy with something else for too long) and measured anyway, or when
/// [`smoke`] says not to wait.
pub fn wait_quiet(tag: &str) -> anyhow::Result<bool> {
    if smoke() {
        return Ok(true);
    }
    let start = Instant::now();
    loop {
        let xdp = xdp_bench_running();
        let before = cpu_times();
        std::thread::sleep(Duration::from_millis(700));
        let busy = busy_share(&before, &cpu_times(), 0);
        if !xdp && busy < BUSY_THRESHOLD {
            return Ok(false);
        }
        if start.elapsed() > QUIET_PATIENCE {
            if xdp {
                bail!("xdp_bench has been running for 30 minutes: not measuring next to it");
            }
            eprintln!(
                "{tag}: machine still {:.0} % busy after 30 minutes; measuring anyway (noted)",
                busy * 100.0
            );
            return Ok(true);
        }
        eprintln!(
            "{tag}: waiting 30 s: {}",
            if xdp {
                "xdp_bench is running".to_string()
            } else {
                format!("the machine is {:.0} % busy", busy * 100.0)
            }
        );
        std::thread::sleep(Duration::from_secs(30));
    }
}

/// What one load run cost, read from /proc around it.
#[derive(Clone, Debug, Default)]
pub struct Cpu {
    /// Busy share of the server CPU and of the load generator's CPU.
    pub server: f64,
    pub load: f64,
    /// Share of one CPU used by the proxy (with its children) and by the backend.
    pub proxy: f64,
    pub backend: f64,
    /// Share of one CPU used during the run by processes other than ours.
    pub foreign: f64,
    /// Measured after giving up on waiting for a quiet machine.
    pub busy_machine: bool,
    /// Wall time of the run, seconds.
    pub wall: f64,
}

/// Runs load generators under CPU accounting, each after waiting for a quiet machine.
pub struct Meter {
    pub tag: String,
    pub ticks: f64,
    pub backend_pid: u32,
}

impl Meter {
    pub fn new(tag: &str, backend_pid: u32) -> Self {
        Self {
            tag: tag.into(),
            ticks: clock_ticks(),
            backend_pid,
        }
    }

    /// Runs the command `make` builds (its stdout returned with the CPU it cost), after waiting
    /// for a quiet machine; repeated (up to 5 times) when `xdp_bench` started during it or
    /// something else used the CPUs. `proxy_pid` is the peer's process (a proxy's TLS and
    /// plain rows may share one).
    pub fn run(
        &self,
        proxy_pid: Option<u32>,
        make: impl Fn() -> Command,
    ) -> anyhow::Result<(String, Cpu)> {
        // Our processes on both CPUs: the proxy, the backend and the load generators.
        let ours = || {
            proxy_pid.map_or(0, tree_jiffies)
                + tree_jiffies(self.backend_pid)
                + waited_children_jiffies()
        };
        let tag = &self.tag;
        for _attempt in 0..5 {
            let busy_machine = wait_quiet(tag)?;
            let mut cmd = make();
            eprintln!("+ {}", exec::render(&cmd));
            let (cpu0, proxy0, backend0, ours0) = (
                cpu_times(),
                proxy_pid.map_or(0, tree_jiffies),
                tree_jiffies(self.backend_pid),
                ours(),
            );
            let started = Instant::now();
            let out = exec::output(&mut cmd)?;
            let wall = started.elapsed().as_secs_f64();
            let (cpu1, proxy1, backend1, ours1) = (
                cpu_times(),
                proxy_pid.map_or(0, tree_jiffies),
                tree_jiffies(self.backend_pid),
                ours(),
            );
            if xdp_bench_running() && !smoke() {
                eprintln!("{tag}: xdp_bench started during the run: discarding it");
                continue;
            }
            let share = |j0: u64, j1: u64| (j1.saturating_sub(j0)) as f64 / self.ticks / wall;
            // Busy time on the machine that none of our processes account for: something else
            // ran (another engineer's compile or benchmark). Kernel work on our behalf that is
            // not charged to a process (softirq, kworkers) lands here too, hence the margin.
            let foreign = ((cpu1[0].0.saturating_sub(cpu0[0].0)) as f64
                - (ours1.saturating_sub(ours0)) as f64)
                / self.ticks
                / wall;
            // Over short runs the estimate is noise: the load generator's time arrives when it
            // is reaped and /proc/stat counts in ticks (measured on 2 s runs with nothing else
            // running: -45 % to +72 % of a CPU). Those rely on the quiet-machine check above.
            if foreign > FOREIGN_LIMIT && wall >= FOREIGN_MIN_WALL_S && !smoke() {
                eprintln!(
                    "{tag}: something else used {:.0} % of a CPU during the run: repeating it",
                    foreign * 100.0
                );
                continue;
            }
            let cpu = Cpu {
                server: busy_share(&cpu0, &cpu1, SERVER_CPU + 1),
                load: busy_share(&cpu0, &cpu1, LOAD_CPU + 1),
                proxy: share(proxy0, proxy1),
                backend: share(backend0, backend1),
                foreign,
                busy_machine,
                wall,
            };
            return Ok((out, cpu));
        }
        bail!("other work kept overlapping the runs (xdp_bench or a busy machine): giving up")
    }
}

/// `wrk -t1 -c<connections> -d<secs>s --timeout <timeout_s>s -s <script> <url> [-- script_args]`
/// pinned to the load CPU, bounded twice: wrk stops by itself, `timeout` kills it if it does not.
pub fn wrk_command(
    connections: usize,
    secs: u64,
    timeout_s: u64,
    script: &Path,
    url: &str,
    script_args: &[&str],
) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(LOAD_CPU.to_string());
    cmd.args(["timeout", "-k", "5", &(secs + 30).to_string()]);
    cmd.arg("wrk")
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{secs}s"))
        .args(["--timeout", &format!("{timeout_s}s"), "-s"])
        .arg(script)
        .arg(url);
    if !script_args.is_empty() {
        cmd.arg("--").args(script_args);
    }
    cmd
}

/// `bench_load --url URL --rate RATE --connections N --duration-secs SECS EXTRA...` (open loop,
/// latency from each request's scheduled send time) pinned to the load CPU, bounded twice: the
/// tool stops by itself, `timeout` kills it if it does not.
pub fn bench_load_command(
    bin: &Path,
    url: &str,
    rate: f64,
    connections: usize,
    secs: u64,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(LOAD_CPU.to_string());
    cmd.args(["timeout", "-k", "5", &(secs + 30).to_string()]);
    cmd.arg(bin)
        .args(["--url", url])
        .args(["--rate", &format!("{rate:.0}")])
        .args(["--connections", &connections.to_string()])
        .args(["--duration-secs", &secs.to_string()])
        .args(extra);
    cmd
}

/// What a `bench_load` run printed (latencies in µs).
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Connection errors and requests unanswered 5 s after the last send.
    pub errors: f64,
    /// Answers with a status outside 2xx.
    pub non_2xx: f64,
}

/// What a `bench_load` run printed; `prefix` picks one stream's lines of an interleaved run
/// (`"1."`: the second `--auth`), `""` the totals.
pub fn parse_bench_load(out: &str, prefix: &str) -> anyhow::Result<LoadResult> {
    let kv = parse_kv(out, prefix);
    let get = |k: &str| {
        kv.get(k)
            .copied()
            .with_context(|| format!("bench_load printed no {prefix}{k}:\n{out}"))
    };
    Ok(LoadResult {
        rps: get("achieved_rps")?,
        p50: get("p50_us")?,
        p99: get("p99_us")?,
        p999: get("p999_us")?,
        errors: get("errors")? + get("timeouts")?,
        non_2xx: get("non_2xx")?,
    })
}

/// What a `wrk` run with the [`wrk_done_lua`] callback printed.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub requests: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    /// Connect, read, write errors and timeouts.
    pub errors: f64,
    /// Responses with a status outside 2xx/3xx.
    pub non_2xx: f64,
}

pub fn parse_wrk(out: &str, prefix: &str) -> anyhow::Result<WrkResult> {
    let kv = parse_kv(out, prefix);
    let get = |k: &str| {
        kv.get(k)
            .copied()
            .with_context(|| format!("wrk printed no {k}:\n{out}"))
    };
    let requests = get("requests")?;
    Ok(WrkResult {
        rps: requests / (get("duration_us")? / 1e6),
        requests,
        p50: get("p50_us")?,
        p99: get("p99_us")?,
        p999: get("p999_us")?,
        errors: get("errors")?,
        non_2xx: get("non_2xx")?,
    })
}

pub fn parse_kv(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn us(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

pub fn signed_us(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", us(v))
    } else {
        format!("-{}", us(-v))
    }
}

pub fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}", v)
    } else {
        "null".into()
    }
}

pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{"k":"v",...}` of the versions line.
pub fn json_versions(versions: &[(String, String)]) -> String {
    format!(
        "{{{}}}",
        versions
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// `k: v; k: v` of the versions line.
pub fn md_versions(versions: &[(String, String)]) -> String {
    versions
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes `<name>.json` and `<name>.md` under `target/bench/`, prints the markdown.
pub fn write_report(name: &str, tag: &str, json: &str, markdown: &str) -> anyhow::Result<()> {
    let out_dir = exec::workspace_root().join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let (j, m) = (
        out_dir.join(format!("{name}.json")),
        out_dir.join(format!("{name}.md")),
    );
    fs::write(&j, json)?;
    fs::write(&m, markdown)?;
    println!("{markdown}");
    eprintln!("{tag}: wrote {} and {}", j.display(), m.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{changed, reproduce};

    #[test]
    fn reproduce_names_only_settings_that_differ() {
        let line = reproduce(
            "cargo xtask bench l7",
            &[
                ("L7_BENCH_SECS", changed(10, 10)),
                ("L7_BENCH_RUNS", changed(5, 3)),
                ("L7_BENCH_RATE", changed(2500.0, 2000.0)),
            ],
        );
        assert_eq!(
            line,
            "L7_BENCH_RUNS=5 L7_BENCH_RATE=2500 cargo xtask bench l7"
        );
    }
}
