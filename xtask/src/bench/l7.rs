//! `cargo xtask bench l7`: the L7 proxy against nginx and haproxy, on loopback, in one run.
//!
//! Started by the benchmark itself, on free ports chosen at run time: `bench_backend` (a hyper
//! server answering a fixed 100-byte body), nginx and haproxy as reverse proxies in front of it,
//! and the release `gateway` three times over (plain HTTP, TLS, and plain HTTP with the access log
//! on stdout sent to /dev/null). Every peer gets the same placement: the servers (proxy and
//! backend) on CPU 0, the load generator alone on CPU 1, both through `taskset`. Every proxy gets
//! the same number of workers, `L7_BENCH_WORKERS` (default 1: what nginx `auto`, haproxy and the
//! gateway each pick by default on one CPU).
//!
//! Two phases, each run `L7_BENCH_RUNS` times (default 3) for `L7_BENCH_SECS` (default 10 s),
//! interleaved across peers so that drift hits all of them alike, reported as medians:
//! 1. peak: `wrk -t1 -c N` (closed loop, N = `L7_BENCH_CONNECTIONS`, default 32);
//! 2. latency at half load: `bench_load` (open loop, latency from the scheduled send time) at
//!    50 % of the gateway's median peak, the same rate for every peer.
//!
//! Nothing is measured while `xdp_bench` runs or the machine is busy with something else (a
//! compile): each run waits for quiet first, and a run that `xdp_bench` or other work overlapped
//! (CPU time no process of ours accounts for) is repeated.
//! nginx, haproxy and wrk are installed from Debian on first use (they are benchmark peers, not
//! build or test prerequisites, so `cargo xtask setup` does not install them). Every process
//! started here is stopped by PID, also on failure. Results: `target/bench/l7.json` and
//! `target/bench/l7.md`, the latter also printed.

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

use crate::{build, exec};

/// Servers (proxy and backend) run here...
const SERVER_CPU: usize = 0;
/// ...and the load generator alone here.
const LOAD_CPU: usize = 1;
/// Targets the gateway is reported against.
const ADDED_P99_TARGET_US: f64 = 1000.0;

/// Debian packages the benchmark needs, with a file that proves each is installed.
const PEER_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("wrk", "/usr/bin/wrk"),
    ("openssl", "/usr/bin/openssl"),
];

/// How long to wait for another benchmark or a busy machine before giving up.
const QUIET_PATIENCE: Duration = Duration::from_secs(30 * 60);
/// Above this share of all CPUs busy (before a run, with our peers idle) the machine is busy.
const BUSY_THRESHOLD: f64 = 0.15;
/// A run during which others used more than this share of a CPU is repeated.
const FOREIGN_LIMIT: f64 = 0.25;

const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("L7 requests %d\n", summary.requests))
  io.write(string.format("L7 duration_us %d\n", summary.duration))
  io.write(string.format("L7 errors %d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("L7 non_2xx %d\n", e.status))
  for _, p in ipairs({ {"p50", 50}, {"p90", 90}, {"p99", 99}, {"p999", 99.9} }) do
    io.write(string.format("L7 %s_us %.1f\n", p[1], latency:percentile(p[2])))
  end
  io.write(string.format("L7 mean_us %.1f\n", latency.mean))
  io.write(string.format("L7 max_us %.1f\n", latency.max))
end
"#;

struct Settings {
    secs: u64,
    runs: usize,
    connections: usize,
    /// Workers of every proxy alike: nginx processes, haproxy threads, gateway tokio workers.
    workers: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v}: not a number")),
                Err(_) => Ok(default),
            }
        }
        let s = Self {
            secs: var("L7_BENCH_SECS", 10)?,
            runs: var("L7_BENCH_RUNS", 3)?,
            connections: var("L7_BENCH_CONNECTIONS", 32)?,
            workers: var("L7_BENCH_WORKERS", 1)?,
        };
        anyhow::ensure!(
            (1..=8).contains(&s.workers),
            "L7_BENCH_WORKERS must be 1..=8"
        );
        anyhow::ensure!((1..=120).contains(&s.secs), "L7_BENCH_SECS must be 1..=120");
        anyhow::ensure!((1..=9).contains(&s.runs), "L7_BENCH_RUNS must be 1..=9");
        anyhow::ensure!(
            (1..=1000).contains(&s.connections),
            "L7_BENCH_CONNECTIONS must be 1..=1000"
        );
        Ok(s)
    }

    fn command(&self) -> String {
        let mut env = String::new();
        if self.secs != 10 {
            let _ = write!(env, "L7_BENCH_SECS={} ", self.secs);
        }
        if self.runs != 3 {
            let _ = write!(env, "L7_BENCH_RUNS={} ", self.runs);
        }
        if self.connections != 32 {
            let _ = write!(env, "L7_BENCH_CONNECTIONS={} ", self.connections);
        }
        if self.workers != 1 {
            let _ = write!(env, "L7_BENCH_WORKERS={} ", self.workers);
        }
        format!("{env}cargo xtask bench l7")
    }
}

pub fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cpus >= 2,
        "bench l7 pins the load generator and the servers on separate CPUs: needs 2, found {cpus}"
    );
    install_peers()?;
    build::release()?;
    exec::run(exec::cargo().args([
        "build",
        "--release",
        "-p",
        "tests",
        "--bin",
        "bench_backend",
        "--bin",
        "bench_load",
    ]))?;
    let root = exec::workspace_root();
    let bins = Bins {
        gateway: build::release_binary(),
        backend: root.join("target/release/bench_backend"),
        load: root.join("target/release/bench_load"),
    };

    let work = WorkDir::new()?;
    let report = measure(&settings, &bins, &work.0)?;

    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    fs::write(out_dir.join("l7.json"), &report.json)?;
    fs::write(out_dir.join("l7.md"), &report.markdown)?;
    println!("{}", report.markdown);
    eprintln!(
        "bench l7: wrote {} and {}",
        out_dir.join("l7.json").display(),
        out_dir.join("l7.md").display()
    );
    Ok(())
}

struct Bins {
    gateway: PathBuf,
    backend: PathBuf,
    load: PathBuf,
}

/// Installs the benchmark peers from Debian when one is missing (root), or says how.
fn install_peers() -> anyhow::Result<()> {
    let missing: Vec<&str> = PEER_PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !exec::is_root() {
        bail!(
            "bench l7 needs the Debian packages {0}: run `apt-get install -y {0}` as root",
            missing.join(" ")
        );
    }
    eprintln!("bench l7: installing the peers {}", missing.join(" "));
    exec::run(Command::new("apt-get").args(["update", "-q"]))?;
    exec::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A temporary directory removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gateway-bench-l7-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("L7_BENCH_KEEP").is_some() {
            eprintln!("bench l7: kept {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A process this benchmark started: SIGTERM, then SIGKILL after 5 s, on drop. By PID only.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Held open so that `bench_backend` sees end of file when we are gone.
    _stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts `program args` pinned to `cpu`, stdout and stderr to files in `dir`.
    fn spawn(
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with the log when the process has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
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

/// Distinct free loopback ports (held together while chosen, so they differ).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// `GET /` over a fresh connection; the status code and the body.
fn http_get(port: u16) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
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

/// Waits until `GET /` on `port` is proxied to the backend (or, for TLS, the port accepts).
fn wait_serving(proc: &mut Proc, port: u16, tls: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        proc.alive()?;
        if tls {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
        } else {
            match http_get(port) {
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
fn wait_log_line(proc: &mut Proc, needle: &str) -> anyhow::Result<()> {
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

/// One row of the benchmark: a name, the URL to load, what serves it.
struct Peer {
    name: &'static str,
    url: String,
    /// PIDs whose CPU time (with their children's) is the proxy's.
    proxy_pid: Option<u32>,
}

/// Everything started for a measurement; dropped (and stopped) together.
struct Fleet {
    _procs: Vec<Proc>,
    backend_pid: u32,
    peers: Vec<Peer>,
    versions: Vec<(String, String)>,
}

fn start_fleet(bins: &Bins, dir: &Path, workers: usize) -> anyhow::Result<Fleet> {
    let mut procs = Vec::new();
    // Certificate for the TLS peers (nginx and the gateway use the same).
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut openssl = Command::new("openssl");
    openssl
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    exec::run(&mut openssl)?;

    // Backend: prints `listening ADDR`, exits at end of file on stdin.
    let backend_log = dir.join("backend.log");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(SERVER_CPU.to_string())
        .arg(&bins.backend)
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
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
    let backend_pid = backend.pid();
    procs.push(backend);

    let ports = free_ports(7)?;
    let (nginx_port, nginx_tls_port, haproxy_port) = (ports[0], ports[1], ports[2]);
    let (gw_port, gw_tls_port, gw_log_port) = (ports[3], ports[4], ports[5]);

    // nginx: as many workers as every proxy gets, upstream keep-alive 32, no log.
    let ngx_dir = dir.join("nginx");
    fs::create_dir_all(ngx_dir.join("tmp"))?;
    let ngx = ngx_dir.display();
    let nginx_conf = format!(
        r#"worker_processes {workers};
pid {ngx}/nginx.pid;
error_log {ngx}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {ngx}/tmp/body;
  proxy_temp_path {ngx}/tmp/proxy;
  fastcgi_temp_path {ngx}/tmp/fastcgi;
  uwsgi_temp_path {ngx}/tmp/uwsgi;
  scgi_temp_path {ngx}/tmp/scgi;
  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive 32;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{nginx_port};
    listen 127.0.0.1:{nginx_tls_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#,
        cert = cert.display(),
        key = key.display(),
    );
    fs::write(ngx_dir.join("nginx.conf"), nginx_conf)?;
    let ngx_conf = ngx_dir.join("nginx.conf");
    let mut nginx = Proc::spawn(
        "nginx",
        SERVER_CPU,
        Path::new("/usr/sbin/nginx"),
        &[
            "-p",
            &ngx.to_string(),
            "-e",
            &format!("{ngx}/error.log"),
            "-c",
            &ngx_conf.display().to_string(),
            "-g",
            "daemon off;",
        ],
        dir,
        false,
    )?;
    wait_serving(&mut nginx, nginx_port, false)?;
    wait_serving(&mut nginx, nginx_tls_port, true)?;
    let nginx_pid = nginx.pid();
    procs.push(nginx);

    // haproxy: as many threads as every proxy gets, HTTP mode, keep-alive and connection reuse toward the backend.
    let haproxy_conf = dir.join("haproxy.cfg");
    fs::write(
        &haproxy_conf,
        format!(
            r#"global
  nbthread {workers}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:{haproxy_port}
  default_backend backend
backend backend
  server b 127.0.0.1:{backend_port}
"#
        ),
    )?;
    let mut haproxy = Proc::spawn(
        "haproxy",
        SERVER_CPU,
        Path::new("/usr/sbin/haproxy"),
        &["-db", "-f", &haproxy_conf.display().to_string()],
        dir,
        false,
    )?;
    wait_serving(&mut haproxy, haproxy_port, false)?;
    let haproxy_pid = haproxy.pid();
    procs.push(haproxy);

    // The gateway, L7 only: plain + TLS listeners without access log, and a second instance
    // with the access log on stdout (sent to /dev/null) to show what logging costs.
    let gateway_config = |name: &str, listeners: &str, access_log: &str| {
        format!(
            r#"instance: {name}
state_dir: {state}
workers: {workers}
listeners:
{listeners}access_log: {access_log}
upstreams:
  backend: {{ endpoints: ["http://127.0.0.1:{backend_port}"] }}
routes:
  - {{ match: {{ prefix: / }}, upstream: backend }}
"#,
            state = dir.join(format!("{name}-state")).display(),
        )
    };
    let main_conf = dir.join("gateway.yaml");
    fs::write(
        &main_conf,
        gateway_config(
            "bench-l7",
            &format!(
                "  - {{ name: main, address: \"127.0.0.1:{gw_port}\" }}\n  - {{ name: tls, address: \"127.0.0.1:{gw_tls_port}\", tls: {{ certificates: [{{ cert: {}, key: {} }}] }} }}\n",
                cert.display(),
                key.display()
            ),
            "off",
        ),
    )?;
    let log_conf = dir.join("gateway-log.yaml");
    fs::write(
        &log_conf,
        gateway_config(
            "bench-l7-log",
            &format!("  - {{ name: main, address: \"127.0.0.1:{gw_log_port}\" }}\n"),
            "stdout",
        ),
    )?;
    let mut gateway_pids = Vec::new();
    for (name, conf, port) in [
        ("gateway", &main_conf, gw_port),
        ("gateway-log", &log_conf, gw_log_port),
    ] {
        let mut gw = Proc::spawn(
            name,
            SERVER_CPU,
            &bins.gateway,
            &["run", "--config", &conf.display().to_string()],
            dir,
            // The access log goes to stdout: /dev/null, as the brief of the run says.
            true,
        )?;
        wait_log_line(&mut gw, "gateway ready")?;
        wait_serving(&mut gw, port, false)?;
        if name == "gateway" {
            wait_serving(&mut gw, gw_tls_port, true)?;
        }
        gateway_pids.push(gw.pid());
        procs.push(gw);
    }

    let url = |tls: bool, port: u16| {
        format!("{}://127.0.0.1:{port}/", if tls { "https" } else { "http" })
    };
    let peers = vec![
        Peer {
            name: "direct",
            url: url(false, backend_port),
            proxy_pid: None,
        },
        Peer {
            name: "nginx",
            url: url(false, nginx_port),
            proxy_pid: Some(nginx_pid),
        },
        Peer {
            name: "haproxy",
            url: url(false, haproxy_port),
            proxy_pid: Some(haproxy_pid),
        },
        Peer {
            name: "gateway",
            url: url(false, gw_port),
            proxy_pid: Some(gateway_pids[0]),
        },
        Peer {
            name: "gateway+access_log",
            url: url(false, gw_log_port),
            proxy_pid: Some(gateway_pids[1]),
        },
        Peer {
            name: "nginx-tls",
            url: url(true, nginx_tls_port),
            proxy_pid: Some(nginx_pid),
        },
        Peer {
            name: "gateway-tls",
            url: url(true, gw_tls_port),
            proxy_pid: Some(gateway_pids[0]),
        },
    ];

    let mut versions = Vec::new();
    let version = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| {
                let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                t.push_str(&String::from_utf8_lossy(&o.stderr));
                t.lines().next().unwrap_or_default().trim().to_string()
            })
            .unwrap_or_default()
    };
    versions.push(("nginx".into(), version("/usr/sbin/nginx", "-v")));
    versions.push(("haproxy".into(), version("/usr/sbin/haproxy", "-v")));
    versions.push(("wrk".into(), version("/usr/bin/wrk", "-v")));
    versions.push((
        "gateway".into(),
        exec::output(
            Command::new("git")
                .args(["describe", "--always", "--dirty"])
                .current_dir(exec::workspace_root()),
        )
        .map(|s| s.trim().to_string())
        .unwrap_or_default(),
    ));
    versions.push(("kernel".into(), version("uname", "-r")));
    versions.push(("cpu".into(), cpu_model()));

    Ok(Fleet {
        _procs: procs,
        backend_pid,
        peers,
        versions,
    })
}

fn cpu_model() -> String {
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
fn cpu_times() -> Vec<(u64, u64)> {
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

fn busy_share(before: &[(u64, u64)], after: &[(u64, u64)], index: usize) -> f64 {
    match (before.get(index), after.get(index)) {
        (Some(b), Some(a)) if a.1 > b.1 => (a.0 - b.0) as f64 / (a.1 - b.1) as f64,
        _ => 0.0,
    }
}

/// CPU time (user + system, jiffies) of `pid` and its direct children (nginx workers).
fn tree_jiffies(pid: u32) -> u64 {
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

fn clock_ticks() -> f64 {
    exec::output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn xdp_bench_running() -> bool {
    exec::succeeds(Command::new("pgrep").args(["-f", "xdp_bench"]))
}

/// Waits until no `xdp_bench` runs and the machine is otherwise idle. Returns `true` when it
/// gave up on "idle" (busy with something else for too long) and measured anyway.
fn wait_quiet() -> anyhow::Result<bool> {
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
                "bench l7: machine still {:.0} % busy after 30 minutes; measuring anyway (noted)",
                busy * 100.0
            );
            return Ok(true);
        }
        eprintln!(
            "bench l7: waiting 30 s: {}",
            if xdp {
                "xdp_bench is running".to_string()
            } else {
                format!("the machine is {:.0} % busy", busy * 100.0)
            }
        );
        std::thread::sleep(Duration::from_secs(30));
    }
}

/// One load run's numbers.
#[derive(Clone, Default)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: f64,
    non_2xx: f64,
    server_cpu: f64,
    load_cpu: f64,
    proxy_cpu: f64,
    backend_cpu: f64,
    /// CPU time used during the run by processes other than ours (share of one CPU).
    foreign_cpu: f64,
    busy_machine: bool,
}

fn parse_kv(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

enum Load {
    /// `wrk -t1 -cN`, closed loop, as fast as the peer answers.
    Peak,
    /// `bench_load` at this many requests per second, open loop.
    Rate(f64),
}

struct Measure<'a> {
    settings: &'a Settings,
    bins: &'a Bins,
    script: PathBuf,
    ticks: f64,
    backend_pid: u32,
}

impl Measure<'_> {
    fn command(&self, peer: &Peer, load: &Load, secs: u64) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(LOAD_CPU.to_string());
        // Bounded twice: the tool stops by itself, `timeout` kills it if it does not.
        cmd.args(["timeout", "-k", "5", &(secs + 30).to_string()]);
        match load {
            Load::Peak => {
                cmd.arg("wrk")
                    .args(["-t1", &format!("-c{}", self.settings.connections)])
                    .arg(format!("-d{secs}s"))
                    .args(["--timeout", "5s", "-s"])
                    .arg(&self.script)
                    .arg(&peer.url);
            }
            Load::Rate(rate) => {
                cmd.arg(&self.bins.load)
                    .args(["--url", &peer.url])
                    .args(["--rate", &format!("{rate:.0}")])
                    .args(["--connections", &self.settings.connections.to_string()])
                    .args(["--duration-secs", &secs.to_string()]);
            }
        }
        cmd
    }

    /// One run against `peer`, after waiting for a quiet machine; repeated when `xdp_bench`
    /// started during it.
    fn once(&self, peer: &Peer, load: &Load, secs: u64) -> anyhow::Result<Sample> {
        // Our processes on both CPUs: the proxy (a gateway's TLS and plain rows share one).
        let ours = || {
            peer.proxy_pid.map_or(0, tree_jiffies)
                + tree_jiffies(self.backend_pid)
                + waited_children_jiffies()
        };
        for _attempt in 0..5 {
            let busy_machine = wait_quiet()?;
            let mut cmd = self.command(peer, load, secs);
            eprintln!("+ {}", exec::render(&cmd));
            let (cpu0, proxy0, backend0, ours0) = (
                cpu_times(),
                peer.proxy_pid.map_or(0, tree_jiffies),
                tree_jiffies(self.backend_pid),
                ours(),
            );
            let started = Instant::now();
            let out = exec::output(&mut cmd)?;
            let wall = started.elapsed().as_secs_f64();
            let (cpu1, proxy1, backend1, ours1) = (
                cpu_times(),
                peer.proxy_pid.map_or(0, tree_jiffies),
                tree_jiffies(self.backend_pid),
                ours(),
            );
            if xdp_bench_running() {
                eprintln!("bench l7: xdp_bench started during the run: discarding it");
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
            if foreign > FOREIGN_LIMIT {
                eprintln!(
                    "bench l7: something else used {:.0} % of a CPU during the run: repeating it",
                    foreign * 100.0
                );
                continue;
            }
            let mut s = Sample {
                foreign_cpu: foreign,
                server_cpu: busy_share(&cpu0, &cpu1, SERVER_CPU + 1),
                load_cpu: busy_share(&cpu0, &cpu1, LOAD_CPU + 1),
                proxy_cpu: share(proxy0, proxy1),
                backend_cpu: share(backend0, backend1),
                busy_machine,
                ..Sample::default()
            };
            match load {
                Load::Peak => {
                    let kv = parse_kv(&out, "L7 ");
                    let get = |k: &str| {
                        kv.get(k)
                            .copied()
                            .with_context(|| format!("wrk printed no {k}:\n{out}"))
                    };
                    s.rps = get("requests")? / (get("duration_us")? / 1e6);
                    s.p50 = get("p50_us")?;
                    s.p99 = get("p99_us")?;
                    s.p999 = get("p999_us")?;
                    s.errors = get("errors")?;
                    s.non_2xx = get("non_2xx")?;
                }
                Load::Rate(_) => {
                    let kv = parse_kv(&out, "");
                    let get = |k: &str| {
                        kv.get(k)
                            .copied()
                            .with_context(|| format!("bench_load printed no {k}:\n{out}"))
                    };
                    s.rps = get("achieved_rps")?;
                    s.p50 = get("p50_us")?;
                    s.p99 = get("p99_us")?;
                    s.p999 = get("p999_us")?;
                    s.errors = get("errors")? + get("timeouts")?;
                    s.non_2xx = get("non_2xx")?;
                }
            }
            eprintln!(
                "bench l7: {:<20} {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {} non-2xx {}  cpu{SERVER_CPU} {:.0} % (proxy {:.0} %, backend {:.0} %)  cpu{LOAD_CPU} {:.0} %  others {:.0} %",
                peer.name,
                s.rps,
                s.p50,
                s.p99,
                s.errors,
                s.non_2xx,
                s.server_cpu * 100.0,
                s.proxy_cpu * 100.0,
                s.backend_cpu * 100.0,
                s.load_cpu * 100.0,
                s.foreign_cpu * 100.0
            );
            return Ok(s);
        }
        bail!("other work kept overlapping the runs (xdp_bench or a busy machine): giving up")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
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

/// The medians of a peer's runs.
struct Summary {
    peer: &'static str,
    runs: Vec<Sample>,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    server_cpu: f64,
    load_cpu: f64,
    proxy_cpu: f64,
    backend_cpu: f64,
}

impl Summary {
    fn new(peer: &'static str, runs: Vec<Sample>) -> Self {
        let m = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
        Self {
            peer,
            rps: m(|s| s.rps),
            p50: m(|s| s.p50),
            p99: m(|s| s.p99),
            p999: m(|s| s.p999),
            server_cpu: m(|s| s.server_cpu),
            load_cpu: m(|s| s.load_cpu),
            proxy_cpu: m(|s| s.proxy_cpu),
            backend_cpu: m(|s| s.backend_cpu),
            runs,
        }
    }

    fn errors(&self) -> f64 {
        self.runs.iter().map(|s| s.errors + s.non_2xx).sum()
    }

    /// What bounded this peer's rate, read off the CPU shares.
    fn limit(&self) -> String {
        if self.server_cpu >= 0.9 {
            if self.peer == "direct" {
                format!(
                    "CPU {SERVER_CPU} (backend {:.0} %)",
                    self.backend_cpu * 100.0
                )
            } else {
                format!(
                    "CPU {SERVER_CPU} (proxy {:.0} %, backend {:.0} %)",
                    self.proxy_cpu * 100.0,
                    self.backend_cpu * 100.0
                )
            }
        } else if self.load_cpu >= 0.9 {
            format!(
                "load generator (CPU {LOAD_CPU} {:.0} %)",
                self.load_cpu * 100.0
            )
        } else {
            format!(
                "neither CPU saturated (CPU {SERVER_CPU} {:.0} %, CPU {LOAD_CPU} {:.0} %): latency-bound at this concurrency",
                self.server_cpu * 100.0,
                self.load_cpu * 100.0
            )
        }
    }
}

struct Report {
    json: String,
    markdown: String,
}

fn measure(settings: &Settings, bins: &Bins, dir: &Path) -> anyhow::Result<Report> {
    let script = dir.join("report.lua");
    fs::write(&script, WRK_SCRIPT)?;
    let fleet = start_fleet(bins, dir, settings.workers)?;
    let m = Measure {
        settings,
        bins,
        script,
        ticks: clock_ticks(),
        backend_pid: fleet.backend_pid,
    };

    eprintln!("bench l7: warm-up, 2 s per peer");
    for peer in &fleet.peers {
        let s = m.once(peer, &Load::Peak, 2)?;
        if s.rps < 1.0 || s.non_2xx > 0.0 {
            bail!(
                "{} ({}) does not answer 200 under load: {} req/s, {} non-2xx",
                peer.name,
                peer.url,
                s.rps,
                s.non_2xx
            );
        }
    }

    // The noise floor: what a spinning thread loses on each CPU (preemption, interrupts, the
    // hypervisor). Latency percentiles cannot be finer than this.
    let mut jitter = Vec::new();
    for cpu in [SERVER_CPU, LOAD_CPU] {
        wait_quiet()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(cpu.to_string())
            .args(["timeout", "-k", "5", "30"])
            .arg(&bins.load)
            .args(["--jitter-secs", "3"]);
        let kv = parse_kv(&exec::output(&mut cmd)?, "");
        let get = |k: &str| kv.get(k).copied().unwrap_or(f64::NAN);
        jitter.push(Jitter {
            cpu,
            gaps_per_s: get("jitter_gaps_per_s"),
            lost_us_per_s: get("jitter_lost_us_per_s"),
            max_us: get("jitter_max_us"),
        });
    }

    let mut peak: Vec<Vec<Sample>> = vec![Vec::new(); fleet.peers.len()];
    for run in 1..=settings.runs {
        eprintln!("bench l7: peak, run {run}/{}", settings.runs);
        for (i, peer) in fleet.peers.iter().enumerate() {
            peak[i].push(m.once(peer, &Load::Peak, settings.secs)?);
        }
    }
    let peak: Vec<Summary> = fleet
        .peers
        .iter()
        .zip(peak)
        .map(|(p, runs)| Summary::new(p.name, runs))
        .collect();
    let by_name = |v: &[Summary], name: &str| v.iter().position(|s| s.peer == name);
    let gw = by_name(&peak, "gateway").context("no gateway row")?;
    let rate = (peak[gw].rps / 2.0).round().max(1.0);

    let mut at_rate: Vec<Vec<Sample>> = vec![Vec::new(); fleet.peers.len()];
    for run in 1..=settings.runs {
        eprintln!(
            "bench l7: {rate:.0} req/s (half the gateway's peak), run {run}/{}",
            settings.runs
        );
        for (i, peer) in fleet.peers.iter().enumerate() {
            at_rate[i].push(m.once(peer, &Load::Rate(rate), settings.secs)?);
        }
    }
    let at_rate: Vec<Summary> = fleet
        .peers
        .iter()
        .zip(at_rate)
        .map(|(p, runs)| Summary::new(p.name, runs))
        .collect();

    Ok(render(settings, &fleet, &peak, &at_rate, rate, &jitter))
}

/// What a thread spinning alone on `cpu` lost, in gaps over 50 µs.
struct Jitter {
    cpu: usize,
    gaps_per_s: f64,
    lost_us_per_s: f64,
    max_us: f64,
}

fn us(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn signed_us(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", us(v))
    } else {
        format!("-{}", us(-v))
    }
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}", v)
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
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

fn render(
    settings: &Settings,
    fleet: &Fleet,
    peak: &[Summary],
    at_rate: &[Summary],
    rate: f64,
    jitter: &[Jitter],
) -> Report {
    let find =
        |v: &[Summary], name: &str| v.iter().find(|s| s.peer == name).map(|s| (s.rps, s.p99));
    let (_, direct_p99) = find(peak, "direct").unwrap_or((f64::NAN, f64::NAN));
    let (nginx_rps, _) = find(peak, "nginx").unwrap_or((f64::NAN, f64::NAN));
    let (gw_rps, _) = find(peak, "gateway").unwrap_or((f64::NAN, f64::NAN));
    let (_, direct_rate_p99) = find(at_rate, "direct").unwrap_or((f64::NAN, f64::NAN));
    let direct_rate_p50 = at_rate
        .iter()
        .find(|s| s.peer == "direct")
        .map_or(f64::NAN, |s| s.p50);
    let added = |v: &[Summary], name: &str| {
        find(v, name).map_or(f64::NAN, |(_, p99)| p99 - direct_rate_p99)
    };
    let gw_added = added(at_rate, "gateway");
    let nginx_added = added(at_rate, "nginx");
    let rps_met = gw_rps >= nginx_rps;
    let latency_met = gw_added <= ADDED_P99_TARGET_US;
    let busy = peak
        .iter()
        .chain(at_rate)
        .any(|s| s.runs.iter().any(|r| r.busy_machine));

    let mut md = String::new();
    let _ = writeln!(md, "## L7 proxy benchmark\n");
    let _ = writeln!(md, "Reproduce: `{}`\n", settings.command());
    let _ = writeln!(
        md,
        "Loopback only, every peer started by the benchmark. Backend: `bench_backend` (hyper, 1 tokio worker, fixed 100-byte body). \
         Placement: proxy and backend pinned to CPU {SERVER_CPU}, load generator alone on CPU {LOAD_CPU} (`taskset`), the same for every peer. \
         Every proxy gets {w} worker(s) (`L7_BENCH_WORKERS`; 1 is what each one's default picks on one CPU): \
         nginx `worker_processes {w}`, upstream keep-alive 32, no access log; haproxy `nbthread {w}`, HTTP mode, keep-alive and `http-reuse always`; \
         gateway `workers: {w}`, L7 only, default limits, retries and timeouts. TLS: ECDSA P-256 self-signed, keep-alive (one handshake per connection). \
         Medians of {} runs of {} s, runs interleaved across peers.\n",
        settings.runs,
        settings.secs,
        w = settings.workers
    );
    let _ = writeln!(
        md,
        "### Peak: `wrk -t1 -c{} -d{}s` (closed loop)\n",
        settings.connections, settings.secs
    );
    let _ = writeln!(
        md,
        "| peer | req/s | p50 | p99 | added p99 vs direct | ratio vs nginx | limited by | errors |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    );
    for s in peak {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {:.2} | {} | {} |",
            s.peer,
            s.rps,
            us(s.p50),
            us(s.p99),
            if s.peer == "direct" {
                "-".into()
            } else {
                signed_us(s.p99 - direct_p99)
            },
            s.rps / nginx_rps,
            s.limit(),
            s.errors()
        );
    }
    let _ = writeln!(
        md,
        "\n### Latency at {rate:.0} req/s (half the gateway's peak): `bench_load` open loop, {} connections\n",
        settings.connections
    );
    let _ = writeln!(
        md,
        "Latency counted from each request's scheduled send time (no coordinated omission).\n"
    );
    let _ = writeln!(
        md,
        "| peer | req/s achieved | p50 | p99 | p99.9 | added p50 vs direct | added p99 vs direct | CPU {SERVER_CPU} busy | errors |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in at_rate {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.0} % | {} |",
            s.peer,
            s.rps,
            us(s.p50),
            us(s.p99),
            us(s.p999),
            if s.peer == "direct" {
                "-".into()
            } else {
                signed_us(s.p50 - direct_rate_p50)
            },
            if s.peer == "direct" {
                "-".into()
            } else {
                signed_us(s.p99 - direct_rate_p99)
            },
            s.server_cpu * 100.0,
            s.errors()
        );
    }
    let _ = writeln!(md, "\n### Targets\n");
    let _ = writeln!(
        md,
        "- gateway req/s >= nginx req/s: {:.0} vs {:.0} ({:.2}x): **{}**",
        gw_rps,
        nginx_rps,
        gw_rps / nginx_rps,
        if rps_met { "met" } else { "missed" }
    );
    let _ = writeln!(
        md,
        "- gateway added p99 <= 1 ms at half its peak ({rate:.0} req/s): {}: **{}** (nginx at the same rate: {})",
        signed_us(gw_added),
        if latency_met { "met" } else { "missed" },
        signed_us(nginx_added)
    );
    let _ = writeln!(
        md,
        "\nNoise floor (a thread spinning alone for 3 s): {}. A p99 on this machine is not finer than that.",
        jitter
            .iter()
            .map(|j| format!(
                "CPU {} lost {:.0} µs/s in {:.0} gaps/s over 50 µs, longest {}",
                j.cpu,
                j.lost_us_per_s,
                j.gaps_per_s,
                us(j.max_us)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if busy {
        let _ = writeln!(
            md,
            "\n**Note:** some runs were measured while the machine was busy with something else (see `busy_machine` in l7.json)."
        );
    }
    let _ = writeln!(
        md,
        "\n{}",
        fleet
            .versions
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // JSON, by hand: xtask keeps its dependencies to anyhow and clap.
    let sample_json = |s: &Sample| {
        format!(
            "{{\"rps\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"errors\":{},\"non_2xx\":{},\"cpu{SERVER_CPU}_busy\":{:.3},\"cpu{LOAD_CPU}_busy\":{:.3},\"proxy_cpu\":{:.3},\"backend_cpu\":{:.3},\"others_cpu\":{:.3},\"busy_machine\":{}}}",
            json_num(s.rps),
            json_num(s.p50),
            json_num(s.p99),
            json_num(s.p999),
            s.errors,
            s.non_2xx,
            s.server_cpu,
            s.load_cpu,
            s.proxy_cpu,
            s.backend_cpu,
            s.foreign_cpu,
            s.busy_machine
        )
    };
    let summary_json = |s: &Summary, base_p99: f64, with_ratio: bool| {
        let mut j = format!(
            "{{\"peer\":{},\"rps\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"added_p99_us\":{}",
            json_str(s.peer),
            json_num(s.rps),
            json_num(s.p50),
            json_num(s.p99),
            json_num(s.p999),
            if s.peer == "direct" {
                "null".into()
            } else {
                json_num(s.p99 - base_p99)
            }
        );
        if with_ratio {
            let _ = write!(
                j,
                ",\"ratio_vs_nginx\":{:.3},\"limited_by\":{}",
                s.rps / nginx_rps,
                json_str(&s.limit())
            );
        }
        let _ = write!(
            j,
            ",\"cpu{SERVER_CPU}_busy\":{:.3},\"cpu{LOAD_CPU}_busy\":{:.3},\"proxy_cpu\":{:.3},\"backend_cpu\":{:.3},\"runs\":[{}]}}",
            s.server_cpu,
            s.load_cpu,
            s.proxy_cpu,
            s.backend_cpu,
            s.runs.iter().map(sample_json).collect::<Vec<_>>().join(",")
        );
        j
    };
    let mut json = String::from("{\n");
    let _ = writeln!(json, "  \"command\": {},", json_str(&settings.command()));
    let _ = writeln!(
        json,
        "  \"settings\": {{\"duration_s\":{},\"runs\":{},\"connections\":{},\"server_cpu\":{SERVER_CPU},\"load_cpu\":{LOAD_CPU},\"backend_threads\":1,\"proxy_workers\":{},\"peak_tool\":\"wrk -t1\",\"rate_tool\":\"bench_load\"}},",
        settings.secs, settings.runs, settings.connections, settings.workers
    );
    let _ = writeln!(
        json,
        "  \"versions\": {{{}}},",
        fleet
            .versions
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        json,
        "  \"peak\": [\n    {}\n  ],",
        peak.iter()
            .map(|s| summary_json(s, direct_p99, true))
            .collect::<Vec<_>>()
            .join(",\n    ")
    );
    let _ = writeln!(
        json,
        "  \"noise_floor\": [{}],",
        jitter
            .iter()
            .map(|j| format!(
                "{{\"cpu\":{},\"gaps_over_50us_per_s\":{},\"lost_us_per_s\":{},\"longest_gap_us\":{}}}",
                j.cpu,
                json_num(j.gaps_per_s),
                json_num(j.lost_us_per_s),
                json_num(j.max_us)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(json, "  \"half_load_rps\": {rate:.0},");
    let _ = writeln!(
        json,
        "  \"half_load\": [\n    {}\n  ],",
        at_rate
            .iter()
            .map(|s| summary_json(s, direct_rate_p99, false))
            .collect::<Vec<_>>()
            .join(",\n    ")
    );
    let _ = writeln!(
        json,
        "  \"targets\": {{\"gateway_rps_ge_nginx\":{{\"gateway\":{},\"nginx\":{},\"met\":{rps_met}}},\"gateway_added_p99_le_1ms_at_half_peak\":{{\"gateway_added_p99_us\":{},\"nginx_added_p99_us\":{},\"met\":{latency_met}}}}}",
        json_num(gw_rps),
        json_num(nginx_rps),
        json_num(gw_added),
        json_num(nginx_added)
    );
    json.push_str("}\n");

    Report { json, markdown: md }
}
