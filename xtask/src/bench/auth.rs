//! `cargo xtask bench auth`: the latency authentication adds per request, through the real
//! release gateway, for every scheme against a route without authentication in the same run.
//!
//! One gateway (plain HTTP, `workers: 1`, access log off) in front of `bench_backend`, with one
//! route per scheme: `none` (the baseline), JWT RS256, ES256 and EdDSA with static keys (warm by
//! construction), JWT ES256 from a JWKS URL served by `auth_bench serve-jwks` (fetched once
//! during the warm-up, then warm: refreshed hourly), API key (header, SHA-256 hash) and
//! HMAC-SHA256 request signing; those JWT issuers have the verified-token cache off, so every
//! request pays the full verification. Then `jwt-rs256-cached`, `jwt-es256-cached` and
//! `jwt-eddsa-cached`: the same tokens to issuers with the cache on (the default), as clients
//! send one token for its whole lifetime. Keys, tokens, secrets and the configuration come from
//! `auth_bench prepare` (tests/src/authbench.rs; a unit test there checks that the gateway's
//! authentication stage accepts every credential the load generator sends). Placement as in
//! `bench l7`: gateway, backend and JWKS server pinned to CPU 0, the load generator alone on
//! CPU 1.
//!
//! Load: `bench_load` open loop at `AUTH_BENCH_RATE` req/s in all (default 2000) with the
//! schemes' credentials (`--auth`; HMAC requests are signed per request, fresh timestamp and
//! nonce), `AUTH_BENCH_CONNECTIONS` keep-alive connections (default 32), in slices of
//! `AUTH_BENCH_SECS` (default 4): in each of `AUTH_BENCH_RUNS` rounds (default 12) every scheme
//! gets a slice in which its requests alternate with requests to the `none` route (schemes
//! rotate across rounds, which stream goes first alternates); `none` itself is interleaved with
//! `none`, the floor of the method. Reported per scheme: medians over its slices of req/s and
//! latency percentiles, and the median over its slices of its stream's percentile minus the
//! `none` stream's (added p50, added p99). Any answer other than 200 is an error: shown, and the
//! benchmark fails after writing the report.
//! Also the in-process cost of the authentication stage per scheme (`auth_bench verify-cost`,
//! `AUTH_BENCH_ITERATIONS` requests per run, default 5000, median of 5 runs), which explains
//! the rows.
//!
//! Waits for a quiet machine like the other benchmarks (`BENCH_SMOKE=1` does not). Results:
//! `target/bench/auth.json` and `target/bench/auth.md`, the latter also printed.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::harness::{
    LOAD_CPU, Meter, Proc, SERVER_CPU, WorkDir, bench_load_command, env_var as var, free_ports,
    json_num, json_str, json_versions, md_versions, median, parse_bench_load, signed_us,
    start_backend, us, version, wait_log_line, wait_quiet, wait_serving_path,
};
use crate::{build, exec};

/// Names this benchmark in messages.
const TAG: &str = "bench auth";

/// The issue's target: JWT with warm keys adds less than this to the p99.
const JWT_ADDED_P99_TARGET_US: f64 = 200.0;

/// Seconds of load per scheme before measuring (the JWKS fetch happens here).
const WARMUP_SECS: u64 = 2;

/// Runs of the in-process measurement.
const IN_PROCESS_RUNS: usize = 5;

struct Settings {
    rate: f64,
    secs: u64,
    runs: usize,
    connections: usize,
    iterations: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let s = Self {
            rate: var("AUTH_BENCH_RATE", 2000.0)?,
            secs: var("AUTH_BENCH_SECS", 4)?,
            runs: var("AUTH_BENCH_RUNS", 12)?,
            connections: var("AUTH_BENCH_CONNECTIONS", 32)?,
            iterations: var("AUTH_BENCH_ITERATIONS", 5000)?,
        };
        anyhow::ensure!(
            (1.0..=100_000.0).contains(&s.rate),
            "AUTH_BENCH_RATE must be 1..=100000"
        );
        anyhow::ensure!(
            (1..=120).contains(&s.secs),
            "AUTH_BENCH_SECS must be 1..=120"
        );
        anyhow::ensure!((1..=50).contains(&s.runs), "AUTH_BENCH_RUNS must be 1..=50");
        anyhow::ensure!(
            (1..=1000).contains(&s.connections),
            "AUTH_BENCH_CONNECTIONS must be 1..=1000"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&s.iterations),
            "AUTH_BENCH_ITERATIONS must be 1..=1000000"
        );
        Ok(s)
    }

    fn command(&self) -> String {
        use super::harness::changed;
        super::harness::reproduce(
            "cargo xtask bench auth",
            &[
                ("AUTH_BENCH_RATE", changed(self.rate, 2000.0)),
                ("AUTH_BENCH_SECS", changed(self.secs, 4)),
                ("AUTH_BENCH_RUNS", changed(self.runs, 12)),
                ("AUTH_BENCH_CONNECTIONS", changed(self.connections, 32)),
                ("AUTH_BENCH_ITERATIONS", changed(self.iterations, 5000)),
            ],
        )
    }

    /// HMAC requests the gateway must remember at once (all of them fall inside its 5-minute
    /// window), with room to spare: a full replay cache would refuse valid requests.
    fn nonce_cache(&self) -> usize {
        let sent = self.rate * (self.secs * self.runs as u64 + WARMUP_SECS) as f64;
        (sent * 2.0).max(100_000.0) as usize
    }
}

struct Bins {
    gateway: PathBuf,
    backend: PathBuf,
    load: PathBuf,
    helper: PathBuf,
}

pub fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cpus >= 2,
        "bench auth pins the load generator and the servers on separate CPUs: needs 2, found {cpus}"
    );
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
        "--bin",
        "auth_bench",
    ]))?;
    let root = exec::workspace_root();
    let bins = Bins {
        gateway: build::release_binary(),
        backend: root.join("target/release/bench_backend"),
        load: root.join("target/release/bench_load"),
        helper: root.join("target/release/auth_bench"),
    };
    let work = WorkDir::new("auth", TAG, "AUTH_BENCH_KEEP")?;
    let (report, errors) = measure(&settings, &bins, &work.path)?;
    super::harness::write_report("auth", TAG, &report.json, &report.markdown)?;
    if errors > 0.0 {
        bail!(
            "{errors} requests failed or were not answered 200 (see the errors column): the \
             numbers above do not measure successful authentication"
        );
    }
    Ok(())
}

/// One route of the gateway: a scheme and its path.
struct Scheme {
    name: String,
    path: String,
}

/// Everything started for the measurement; dropped (and stopped) together.
struct Fleet {
    _procs: Vec<Proc>,
    backend_pid: u32,
    gateway_pid: u32,
    gateway_port: u16,
    schemes: Vec<Scheme>,
}

fn start_fleet(settings: &Settings, bins: &Bins, dir: &Path) -> anyhow::Result<Fleet> {
    let mut procs = Vec::new();
    let (backend, backend_port) = start_backend(&bins.backend, dir, &[])?;
    let backend_pid = backend.pid();
    procs.push(backend);
    let ports = free_ports(2)?;
    let (gateway_port, jwks_port) = (ports[0], ports[1]);

    let mut prepare = Command::new(&bins.helper);
    prepare
        .arg("prepare")
        .arg("--dir")
        .arg(dir)
        .args(["--gateway-port", &gateway_port.to_string()])
        .args(["--backend-port", &backend_port.to_string()])
        .args(["--jwks-port", &jwks_port.to_string()])
        .args(["--nonce-cache", &settings.nonce_cache().to_string()]);
    let schemes: Vec<Scheme> = exec::output(&mut prepare)?
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("scheme ")?.split_whitespace();
            Some(Scheme {
                name: w.next()?.to_owned(),
                path: w.next()?.to_owned(),
            })
        })
        .collect();
    anyhow::ensure!(
        schemes.first().is_some_and(|s| s.name == "none"),
        "auth_bench prepare printed no `none` route first"
    );

    let jwks_file = dir.join("jwks.json").display().to_string();
    let mut jwks = Proc::spawn(
        "jwks",
        SERVER_CPU,
        &bins.helper,
        &[
            "serve-jwks",
            "--file",
            &jwks_file,
            "--listen",
            &format!("127.0.0.1:{jwks_port}"),
        ],
        dir,
        false,
    )?;
    wait_log_line(&mut jwks, "listening")?;
    procs.push(jwks);

    let conf = dir.join("gateway.yaml").display().to_string();
    let check = Command::new(&bins.gateway)
        .args(["check", &conf])
        .output()
        .context("running gateway check")?;
    if !check.status.success() {
        bail!(
            "the gateway rejects the benchmark's configuration ({conf}):\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let mut gw = Proc::spawn(
        "gateway",
        SERVER_CPU,
        &bins.gateway,
        &["run", "--config", &conf],
        dir,
        false,
    )?;
    wait_log_line(&mut gw, "gateway ready")?;
    wait_serving_path(&mut gw, gateway_port, "/none")?;
    let gateway_pid = gw.pid();
    procs.push(gw);
    Ok(Fleet {
        _procs: procs,
        backend_pid,
        gateway_pid,
        gateway_port,
        schemes,
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
    /// Gateway CPU time per request of the run's whole mix of schemes, µs.
    mix_cpu_us: f64,
    server_cpu: f64,
    foreign_cpu: f64,
    busy_machine: bool,
}

struct Measure<'a> {
    settings: &'a Settings,
    bins: &'a Bins,
    dir: &'a Path,
    fleet: &'a Fleet,
    meter: Meter,
}

impl Measure<'_> {
    /// One `bench_load` run at the settings' rate, its requests taking turns among `schemes`
    /// (one sample per scheme, in that order; a scheme may appear twice). The gateway's CPU
    /// time per request is that of the whole mix.
    fn run(&self, schemes: &[&Scheme], secs: u64, label: &str) -> anyhow::Result<Vec<Sample>> {
        let path = match schemes {
            [one] => one.path.as_str(),
            _ => "/",
        };
        let url = format!("http://127.0.0.1:{}{path}", self.fleet.gateway_port);
        let dir = self.dir.display().to_string();
        let mut extra = vec!["--auth-dir", dir.as_str()];
        for scheme in schemes {
            extra.extend(["--auth", scheme.name.as_str()]);
        }
        let (out, cpu) = self.meter.run(Some(self.fleet.gateway_pid), || {
            bench_load_command(
                &self.bins.load,
                &url,
                self.settings.rate,
                self.settings.connections,
                secs,
                &extra,
            )
        })?;
        let total = parse_bench_load(&out, "")?;
        let mix_cpu_us = if total.rps > 0.0 {
            cpu.proxy / total.rps * 1e6
        } else {
            f64::NAN
        };
        let mut samples = Vec::with_capacity(schemes.len());
        for (j, scheme) in schemes.iter().enumerate() {
            let prefix = if schemes.len() == 1 {
                String::new()
            } else {
                format!("{j}.")
            };
            let r = parse_bench_load(&out, &prefix)?;
            let s = Sample {
                rps: r.rps,
                p50: r.p50,
                p99: r.p99,
                p999: r.p999,
                errors: r.errors,
                non_2xx: r.non_2xx,
                mix_cpu_us,
                server_cpu: cpu.server,
                foreign_cpu: cpu.foreign,
                busy_machine: cpu.busy_machine,
            };
            eprintln!(
                "{TAG}: {label:<8} {:<17} {:>7.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>7.1} µs  errors {} non-2xx {}  gateway {:.1} µs CPU/req (mix)  cpu{SERVER_CPU} {:.0} %  others {:.0} %",
                scheme.name,
                s.rps,
                s.p50,
                s.p99,
                s.p999,
                s.errors,
                s.non_2xx,
                s.mix_cpu_us,
                s.server_cpu * 100.0,
                s.foreign_cpu * 100.0
            );
            samples.push(s);
        }
        Ok(samples)
    }
}

/// The medians of a scheme's runs, and of its per-run differences to `none`.
struct Summary {
    scheme: String,
    path: String,
    runs: Vec<Sample>,
    /// The `none` stream of each of its slices.
    base: Vec<Sample>,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    added_p50: f64,
    added_p99: f64,
    proxy_cpu_us: f64,
    errors: f64,
}

/// The in-process cost of the authentication stage.
struct InProcess {
    /// Scheme -> ns per request.
    verify_ns: BTreeMap<String, f64>,
    /// Scheme -> ns per signature verification by ring (reference; JWT schemes with static keys).
    ring_ns: BTreeMap<String, f64>,
    client_sign_ns: f64,
}

struct Report {
    json: String,
    markdown: String,
}

/// Measures; returns the report and the number of failed requests.
fn measure(settings: &Settings, bins: &Bins, dir: &Path) -> anyhow::Result<(Report, f64)> {
    let fleet = start_fleet(settings, bins, dir)?;
    let m = Measure {
        settings,
        bins,
        dir,
        fleet: &fleet,
        meter: Meter::new(TAG, fleet.backend_pid),
    };

    // Every scheme must answer 200 before anything is measured (and the JWKS gets fetched).
    eprintln!("{TAG}: warm-up, {WARMUP_SECS} s per scheme");
    for scheme in &fleet.schemes {
        for s in m.run(&[scheme], WARMUP_SECS, "warm-up")? {
            if s.rps < 1.0 || s.errors > 0.0 || s.non_2xx > 0.0 {
                bail!(
                    "{} ({}) does not answer 200 under load: {:.0} req/s, {} errors, {} non-2xx; \
                     gateway log: {}",
                    scheme.name,
                    scheme.path,
                    s.rps,
                    s.errors,
                    s.non_2xx,
                    dir.join("gateway.log").display()
                );
            }
        }
    }

    let in_process = in_process(settings, bins)?;

    // Interleaved at the request: in every slice the requests alternate between `none` and one
    // scheme on the same connections, and the added latency is the median over rounds of the
    // two streams' difference. On this kind of VM the tail moves with the machine (a kernel
    // thread stalls a CPU for milliseconds every half second; some stretches of seconds are
    // slow throughout): slices of each side seconds apart still differed by milliseconds now
    // and then, while a stall hits both streams of one slice alike. The price: a `none` request
    // may wait behind a scheme's verification (the added latency undercounts by at most one
    // verification, the in-process column). `none` against `none` is measured the same way:
    // the floor of the method.
    let n = fleet.schemes.len();
    let mut runs: Vec<Vec<Sample>> = vec![Vec::new(); n];
    let mut paired: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for run in 0..settings.runs {
        eprintln!(
            "{TAG}: {} req/s, round {}/{} ({} s slices, each scheme interleaved with `none`)",
            settings.rate,
            run + 1,
            settings.runs,
            settings.secs
        );
        // Rotated, so that no scheme always runs right after another; which stream goes first
        // alternates.
        for k in 0..n {
            let i = (k + run) % n;
            let (scheme, base) = (&fleet.schemes[i], &fleet.schemes[0]);
            let (s, b) = if run % 2 == 0 {
                let mut v = m.run(&[base, scheme], settings.secs, "measure")?;
                (v.pop(), v.pop())
            } else {
                let mut v = m.run(&[scheme, base], settings.secs, "measure")?;
                let b = v.pop();
                (v.pop(), b)
            };
            let (Some(s), Some(b)) = (s, b) else {
                bail!("bench_load reported fewer streams than it was given");
            };
            runs[i].push(s);
            paired[i].push(b);
        }
    }
    // The gateway's CPU per request of a scheme, from its mixes with `none`: half of each.
    let none_cpu = median(runs[0].iter().map(|s| s.mix_cpu_us).collect());
    let summaries: Vec<Summary> = fleet
        .schemes
        .iter()
        .zip(runs)
        .zip(paired)
        .map(|((scheme, runs), base)| {
            let med = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
            let added = |f: fn(&Sample) -> f64| {
                median(runs.iter().zip(&base).map(|(s, b)| f(s) - f(b)).collect())
            };
            Summary {
                scheme: scheme.name.clone(),
                path: scheme.path.clone(),
                rps: med(|s| s.rps),
                p50: med(|s| s.p50),
                p99: med(|s| s.p99),
                p999: med(|s| s.p999),
                added_p50: added(|s| s.p50),
                added_p99: added(|s| s.p99),
                proxy_cpu_us: 2.0 * med(|s| s.mix_cpu_us) - none_cpu,
                errors: runs.iter().chain(&base).map(|s| s.errors + s.non_2xx).sum(),
                runs,
                base,
            }
        })
        .collect();
    let errors = summaries.iter().map(|s| s.errors).sum();
    let versions = vec![
        ("gateway".into(), super::harness::git_describe()),
        ("kernel".into(), version("uname", "-r")),
        ("cpu".into(), super::harness::cpu_model()),
    ];
    Ok((render(settings, &summaries, &in_process, &versions), errors))
}

/// `auth_bench verify-cost` pinned to the server CPU, after waiting for a quiet machine.
fn in_process(settings: &Settings, bins: &Bins) -> anyhow::Result<InProcess> {
    wait_quiet(TAG)?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(SERVER_CPU.to_string())
        .args(["timeout", "-k", "5", "600"])
        .arg(&bins.helper)
        .args(["verify-cost", "--iterations"])
        .arg(settings.iterations.to_string())
        .args(["--runs", &IN_PROCESS_RUNS.to_string()]);
    eprintln!("+ {}", exec::render(&cmd));
    let out = exec::output(&mut cmd)?;
    let mut verify_ns = BTreeMap::new();
    let mut ring_ns = BTreeMap::new();
    let mut client_sign_ns = f64::NAN;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["verify_ns", scheme, ns] => {
                verify_ns.insert((*scheme).to_owned(), ns.parse().unwrap_or(f64::NAN));
            }
            ["ring_verify_ns", scheme, ns] => {
                ring_ns.insert((*scheme).to_owned(), ns.parse().unwrap_or(f64::NAN));
            }
            ["client_hmac_sign_ns", ns] => client_sign_ns = ns.parse().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    anyhow::ensure!(
        !verify_ns.is_empty(),
        "auth_bench verify-cost printed nothing:\n{out}"
    );
    for (scheme, ns) in &verify_ns {
        eprintln!("{TAG}: in process {scheme:<15} {:.2} µs", ns / 1000.0);
    }
    Ok(InProcess {
        verify_ns,
        ring_ns,
        client_sign_ns,
    })
}

/// µs with two decimals, for in-process costs well under a microsecond.
fn fine_us(ns: f64) -> String {
    if ns.is_finite() {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        "-".into()
    }
}

fn is_jwt(scheme: &str) -> bool {
    scheme.starts_with("jwt")
}

/// The suffix of the rows whose issuer caches verified tokens (`jwt-es256-cached`).
const CACHED: &str = "-cached";

fn render(
    settings: &Settings,
    rows: &[Summary],
    in_process: &InProcess,
    versions: &[(String, String)],
) -> Report {
    let busy = rows.iter().any(|s| s.runs.iter().any(|r| r.busy_machine));
    let verify = |scheme: &str| {
        in_process
            .verify_ns
            .get(scheme)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let ring = |scheme: &str| in_process.ring_ns.get(scheme).copied().unwrap_or(f64::NAN);
    let met = |s: &Summary| s.added_p99 < JWT_ADDED_P99_TARGET_US;

    let mut md = String::new();
    let _ = writeln!(md, "## Authentication benchmark\n");
    let _ = writeln!(md, "Reproduce: `{}`\n", settings.command());
    let _ = writeln!(
        md,
        "The release gateway (plain HTTP, `workers: 1`, access log off) in front of `bench_backend`, one route per scheme; \
         gateway, backend and JWKS server pinned to CPU {SERVER_CPU}, the load generator alone on CPU {LOAD_CPU}. \
         JWTs carry iss, aud, sub, scope, roles, iat, nbf, exp, jti and are verified fully (signature, iss, aud, exp, nbf, iat, required sub and scope); \
         static keys are warm by construction, the JWKS key set was fetched during the warm-up (refresh hourly). \
         API key: `X-Api-Key`, SHA-256 hash lookup. HMAC: `GW-HMAC-SHA256` over method, path, host, timestamp, nonce and body digest, \
         signed by the load generator per request (fresh nonce; the gateway's replay cache remembers each). \
         `bench_load` open loop at {:.0} req/s in all, {} connections, latency from each request's scheduled send time; \
         {} rounds of {} s slices; in every slice the requests alternate between the `none` route and one scheme on the same connections \
         (half the rate each; schemes rotated across rounds, which stream goes first alternated), so a stall of the machine hits both alike. \
         A scheme's latencies are medians over its slices; added = median over its slices of its stream's percentile minus the `none` stream's. \
         The `none` row is `none` interleaved with itself: its added column is the floor of the method (two identical streams). \
         A `none` request can wait behind a scheme's verification, so added latency undercounts by at most one verification (the in-process column). \
         Gateway CPU/req: from the CPU time per request of each mix, twice the mix minus `none`'s. Errors: both streams of the scheme's slices.\n",
        settings.rate, settings.connections, settings.runs, settings.secs
    );
    let _ = writeln!(
        md,
        "| scheme | req/s achieved | p50 | p99 | p99.9 | added p50 | added p99 | gateway CPU/req | in-process auth stage | same signature, ring | errors |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.1} µs | {} | {} | {} |",
            if s.scheme == "none" {
                "none (vs none)"
            } else {
                &s.scheme
            },
            s.rps,
            us(s.p50),
            us(s.p99),
            us(s.p999),
            signed_us(s.added_p50),
            signed_us(s.added_p99),
            s.proxy_cpu_us,
            fine_us(verify(&s.scheme)),
            fine_us(ring(&s.scheme)),
            s.errors
        );
    }
    let _ = writeln!(
        md,
        "\nIn-process auth stage: `auth_bench verify-cost`, the gateway's authentication stage called directly, \
         median of {IN_PROCESS_RUNS} runs of {} requests per scheme (`none`: a route without auth). \
         The load generator spends {} signing each HMAC request; that is inside the HMAC row's latency. \
         \"Same signature, ring\": the static-key JWT signatures checked by ring directly, signature only: the floor under \
         the stage's cost (the gateway verifies with ring too, `gateway::auth::jwt_crypto`; the rest is parsing and claims).\n",
        settings.iterations,
        fine_us(in_process.client_sign_ns)
    );
    let _ = writeln!(
        md,
        "JWT rows without `{CACHED}`: the issuer's verified-token cache is off (`cache: {{ max_entries: 0 }}`), \
         every request verifies the signature. `{CACHED}` rows: the same tokens to issuers with the cache on (the default), \
         as clients send one token for its whole lifetime: after the first request, a SHA-256 lookup and the exp/nbf/iat checks.\n"
    );
    let _ = writeln!(md, "### Target\n");
    let verdict = |s: &Summary| {
        format!(
            "{}: **{}** (auth stage alone {})",
            signed_us(s.added_p99),
            if met(s) { "met" } else { "missed" },
            fine_us(verify(&s.scheme))
        )
    };
    // One line per algorithm: the signature checked on every request, and the cached token.
    for s in rows
        .iter()
        .filter(|s| is_jwt(&s.scheme) && !s.scheme.ends_with(CACHED))
    {
        let cached = rows
            .iter()
            .find(|c| c.scheme == format!("{}{CACHED}", s.scheme));
        let _ = writeln!(
            md,
            "- {} added p99 < 0.2 ms: uncached {}{}{}",
            s.scheme,
            verdict(s),
            if ring(&s.scheme).is_finite() {
                format!(
                    ", the same signature with ring {}",
                    fine_us(ring(&s.scheme))
                )
            } else {
                String::new()
            },
            cached.map_or_else(String::new, |c| format!("; cached {}", verdict(c)))
        );
    }
    let errors: f64 = rows.iter().map(|s| s.errors).sum();
    if errors > 0.0 {
        let _ = writeln!(
            md,
            "\n**{errors} requests failed or were not answered 200: these numbers do not measure successful authentication.**"
        );
    }
    if busy {
        let _ = writeln!(
            md,
            "\n**Note:** some runs were measured while the machine was busy with something else (see `busy_machine` in auth.json)."
        );
    }
    let _ = writeln!(md, "\n{}", md_versions(versions));

    // JSON, by hand: xtask keeps its dependencies to anyhow and clap.
    let sample_json = |s: &Sample| {
        format!(
            "{{\"rps\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"errors\":{},\"non_2xx\":{},\"gateway_cpu_per_req_us\":{},\"cpu{SERVER_CPU}_busy\":{:.3},\"others_cpu\":{:.3},\"busy_machine\":{}}}",
            json_num(s.rps),
            json_num(s.p50),
            json_num(s.p99),
            json_num(s.p999),
            s.errors,
            s.non_2xx,
            json_num(s.mix_cpu_us),
            s.server_cpu,
            s.foreign_cpu,
            s.busy_machine
        )
    };
    let ns_json = |ns: f64| {
        if ns.is_finite() {
            format!("{ns:.0}")
        } else {
            "null".into()
        }
    };
    let row_json = |s: &Summary| {
        format!(
            "{{\"scheme\":{},\"path\":{},\"rps\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"added_p50_us\":{},\"added_p99_us\":{},\"gateway_cpu_per_req_us\":{},\"in_process_ns\":{},\"ring_signature_ns\":{},\"errors\":{},\"runs\":[{}],\"none_stream_runs\":[{}]}}",
            json_str(&s.scheme),
            json_str(&s.path),
            json_num(s.rps),
            json_num(s.p50),
            json_num(s.p99),
            json_num(s.p999),
            json_num(s.added_p50),
            json_num(s.added_p99),
            json_num(s.proxy_cpu_us),
            ns_json(verify(&s.scheme)),
            ns_json(ring(&s.scheme)),
            s.errors,
            s.runs.iter().map(sample_json).collect::<Vec<_>>().join(","),
            s.base.iter().map(sample_json).collect::<Vec<_>>().join(",")
        )
    };
    let mut json = String::from("{\n");
    let _ = writeln!(json, "  \"command\": {},", json_str(&settings.command()));
    let _ = writeln!(
        json,
        "  \"settings\": {{\"rate\":{},\"duration_s\":{},\"runs\":{},\"connections\":{},\"in_process_iterations\":{},\"in_process_runs\":{IN_PROCESS_RUNS},\"server_cpu\":{SERVER_CPU},\"load_cpu\":{LOAD_CPU},\"gateway_workers\":1,\"load_tool\":\"bench_load\"}},",
        json_num(settings.rate),
        settings.secs,
        settings.runs,
        settings.connections,
        settings.iterations
    );
    let _ = writeln!(json, "  \"versions\": {},", json_versions(versions));
    let _ = writeln!(
        json,
        "  \"schemes\": [\n    {}\n  ],",
        rows.iter()
            .map(row_json)
            .collect::<Vec<_>>()
            .join(",\n    ")
    );
    let _ = writeln!(
        json,
        "  \"client_hmac_sign_ns\": {},",
        ns_json(in_process.client_sign_ns)
    );
    let _ = writeln!(
        json,
        "  \"targets\": {{\"jwt_added_p99_lt_200us\":{{{}}}}},",
        rows.iter()
            .filter(|s| is_jwt(&s.scheme))
            .map(|s| format!(
                "{}:{{\"added_p99_us\":{},\"met\":{},\"token_cache\":{}}}",
                json_str(&s.scheme),
                json_num(s.added_p99),
                met(s),
                s.scheme.ends_with(CACHED)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(json, "  \"errors\": {errors}");
    json.push_str("}\n");
    Report { json, markdown: md }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scheme: &str, added_p99: f64) -> Summary {
        Summary {
            scheme: scheme.into(),
            path: format!("/{scheme}"),
            runs: vec![Sample::default()],
            base: vec![Sample::default()],
            rps: 2000.0,
            p50: 200.0,
            p99: 300.0 + added_p99,
            p999: 900.0,
            added_p50: 10.0,
            added_p99,
            proxy_cpu_us: 120.0,
            errors: 0.0,
        }
    }

    /// One verdict line per algorithm, with the uncached and the cached number side by side;
    /// the JSON keeps every row's verdict and says which rows had the cache.
    #[test]
    fn each_algorithm_reports_its_uncached_and_cached_verdicts() {
        let settings = Settings {
            rate: 2000.0,
            secs: 10,
            runs: 3,
            connections: 32,
            iterations: 5000,
        };
        let rows = [
            row("none", 0.0),
            row("jwt-es256", 3030.0),
            row("jwt-es256-jwks", 181.0),
            row("jwt-es256-cached", 12.0),
        ];
        let in_process = InProcess {
            verify_ns: [
                ("jwt-es256".to_owned(), 107_650.0),
                ("jwt-es256-cached".to_owned(), 2_500.0),
            ]
            .into(),
            ring_ns: [("jwt-es256".to_owned(), 98_810.0)].into(),
            client_sign_ns: 3730.0,
        };
        let report = render(&settings, &rows, &in_process, &[]);
        let verdicts: Vec<&str> = report
            .markdown
            .lines()
            .filter(|l| l.contains("added p99 < 0.2 ms"))
            .collect();
        assert_eq!(
            verdicts,
            [
                "- jwt-es256 added p99 < 0.2 ms: uncached +3.03 ms: **missed** (auth stage alone 107.65 µs), \
                 the same signature with ring 98.81 µs; cached +12 µs: **met** (auth stage alone 2.50 µs)",
                "- jwt-es256-jwks added p99 < 0.2 ms: uncached +181 µs: **met** (auth stage alone -)",
            ],
            "{}",
            report.markdown
        );
        assert!(
            report.json.contains(
                "\"jwt-es256-cached\":{\"added_p99_us\":12.0,\"met\":true,\"token_cache\":true}"
            ),
            "{}",
            report.json
        );
        assert!(
            report.json.contains(
                "\"jwt-es256\":{\"added_p99_us\":3030.0,\"met\":false,\"token_cache\":false}"
            ),
            "{}",
            report.json
        );
    }
}
