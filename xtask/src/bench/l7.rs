//! `cargo xtask bench l7`: the L7 proxy against nginx and haproxy, on loopback, in one run.
//!
//! Started by the benchmark itself, on free ports chosen at run time: `bench_backend` (a hyper
//! server answering a fixed 100-byte body), nginx and haproxy as reverse proxies in front of it
//! (nginx twice: bare, and `nginx+headers` doing the gateway's default header work),
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
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::harness::{
    LOAD_CPU, Meter, Proc, SERVER_CPU, WorkDir, bench_load_command, env_var as var, free_ports,
    json_num, json_str, json_versions, md_versions, median, parse_bench_load, parse_kv, parse_wrk,
    signed_us, start_backend, us, version, wait_log_line, wait_quiet, wait_serving, wrk_command,
    wrk_done_lua,
};
use crate::{build, exec};

/// Names this benchmark in messages.
const TAG: &str = "bench l7";

/// Targets the gateway is reported against.
const ADDED_P99_TARGET_US: f64 = 1000.0;

/// Debian packages the benchmark needs, with a file that proves each is installed.
const PEER_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("wrk", "/usr/bin/wrk"),
    ("openssl", "/usr/bin/openssl"),
];

struct Settings {
    secs: u64,
    runs: usize,
    connections: usize,
    /// Workers of every proxy alike: nginx processes, haproxy threads, gateway tokio workers.
    workers: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
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
        use super::harness::changed;
        super::harness::reproduce(
            "cargo xtask bench l7",
            &[
                ("L7_BENCH_SECS", changed(self.secs, 10)),
                ("L7_BENCH_RUNS", changed(self.runs, 3)),
                ("L7_BENCH_CONNECTIONS", changed(self.connections, 32)),
                ("L7_BENCH_WORKERS", changed(self.workers, 1)),
            ],
        )
    }
}

pub fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cpus >= 2,
        "bench l7 pins the load generator and the servers on separate CPUs: needs 2, found {cpus}"
    );
    super::harness::install_packages(TAG, PEER_PACKAGES)?;
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

    let work = WorkDir::new("l7", TAG, "L7_BENCH_KEEP")?;
    let report = measure(&settings, &bins, &work.path)?;
    super::harness::write_report("l7", TAG, &report.json, &report.markdown)
}

struct Bins {
    gateway: PathBuf,
    backend: PathBuf,
    load: PathBuf,
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
    let (backend, backend_port) = start_backend(&bins.backend, dir, &[])?;
    let backend_pid = backend.pid();
    procs.push(backend);

    let ports = free_ports(8)?;
    let (nginx_port, nginx_tls_port, haproxy_port) = (ports[0], ports[1], ports[2]);
    let nginx_headers_port = ports[7];
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
  # The same header work as the gateway's default route: forwarding headers, a request id and
  # the security response headers (the bare server above sets none of them).
  server {{
    listen 127.0.0.1:{nginx_headers_port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Real-IP $remote_addr;
      add_header X-Content-Type-Options nosniff always;
      add_header Referrer-Policy no-referrer always;
      add_header X-Frame-Options DENY always;
      add_header X-Request-Id $request_id always;
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
    wait_serving(&mut nginx, nginx_headers_port, false)?;
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
            name: "nginx+headers",
            url: url(false, nginx_headers_port),
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

    let versions = vec![
        ("nginx".into(), version("/usr/sbin/nginx", "-v")),
        ("haproxy".into(), version("/usr/sbin/haproxy", "-v")),
        ("wrk".into(), version("/usr/bin/wrk", "-v")),
        ("gateway".into(), super::harness::git_describe()),
        ("kernel".into(), version("uname", "-r")),
        ("cpu".into(), super::harness::cpu_model()),
    ];

    Ok(Fleet {
        _procs: procs,
        backend_pid,
        peers,
        versions,
    })
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
    meter: Meter,
}

impl Measure<'_> {
    fn command(&self, peer: &Peer, load: &Load, secs: u64) -> Command {
        match load {
            Load::Peak => wrk_command(
                self.settings.connections,
                secs,
                5,
                &self.script,
                &peer.url,
                &[],
            ),
            Load::Rate(rate) => bench_load_command(
                &self.bins.load,
                &peer.url,
                *rate,
                self.settings.connections,
                secs,
                &[],
            ),
        }
    }

    /// One run against `peer`, after waiting for a quiet machine; repeated when `xdp_bench`
    /// started during it.
    fn once(&self, peer: &Peer, load: &Load, secs: u64) -> anyhow::Result<Sample> {
        // The proxy's CPU (a gateway's TLS and plain rows share one process).
        let (out, cpu) = self
            .meter
            .run(peer.proxy_pid, || self.command(peer, load, secs))?;
        let mut s = Sample {
            foreign_cpu: cpu.foreign,
            server_cpu: cpu.server,
            load_cpu: cpu.load,
            proxy_cpu: cpu.proxy,
            backend_cpu: cpu.backend,
            busy_machine: cpu.busy_machine,
            ..Sample::default()
        };
        match load {
            Load::Peak => {
                let w = parse_wrk(&out, "L7 ")?;
                s.rps = w.rps;
                s.p50 = w.p50;
                s.p99 = w.p99;
                s.p999 = w.p999;
                s.errors = w.errors;
                s.non_2xx = w.non_2xx;
            }
            Load::Rate(_) => {
                let r = parse_bench_load(&out, "")?;
                s.rps = r.rps;
                s.p50 = r.p50;
                s.p99 = r.p99;
                s.p999 = r.p999;
                s.errors = r.errors;
                s.non_2xx = r.non_2xx;
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
        Ok(s)
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
    fs::write(&script, wrk_done_lua("L7 "))?;
    let fleet = start_fleet(bins, dir, settings.workers)?;
    let m = Measure {
        settings,
        bins,
        script,
        meter: Meter::new(TAG, fleet.backend_pid),
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
        wait_quiet(TAG)?;
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
    let (nginx_headers_rps, _) = find(peak, "nginx+headers").unwrap_or((f64::NAN, f64::NAN));
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
        "- for reference, against nginx doing the gateway's header work (`nginx+headers`: X-Forwarded-For/-Proto/-Host, X-Real-IP and X-Request-Id to the upstream; X-Request-Id and three security headers to the client): {:.0} vs {:.0} ({:.2}x); the target above is judged against the bare nginx",
        gw_rps,
        nginx_headers_rps,
        gw_rps / nginx_headers_rps
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
    let _ = writeln!(md, "\n{}", md_versions(&fleet.versions));

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
    let _ = writeln!(json, "  \"versions\": {},", json_versions(&fleet.versions));
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
