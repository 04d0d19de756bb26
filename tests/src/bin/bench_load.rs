//! `bench_load`: the rate-limited (open-loop) HTTP/1.1 client behind the latency half of
//! `cargo xtask bench l7` and behind `cargo xtask bench auth`, for a machine without wrk2 or
//! `oha --qps`.
//!
//! `bench_load --url http[s]://127.0.0.1:PORT/ --rate RPS --connections N --duration-secs S`
//!
//! Requests are scheduled at a fixed rate (request i at start + i/rate) whatever the responses
//! do, and handed to the first idle keep-alive connection. Latency is measured from the scheduled
//! time, not from the moment a connection was free to send, so a stall shows up in the
//! percentiles instead of silently lowering the rate (no coordinated omission). The pacing loop
//! spins (yielding to the I/O driver) during the last 2 ms before each send, because tokio's
//! timer has a resolution of 1 ms, larger than the latencies measured: run it on a core of its
//! own. TLS certificates are not verified (the benchmark's own self-signed one).
//!
//! `--slow-log PATH [--slow-us 1000]` also writes every request slower than that, as
//! `scheduled_offset_ms latency_us` lines, to see whether a tail is periodic (a timer) or random.
//!
//! `--auth-dir DIR --auth SCHEME` adds the credentials of one scheme of `cargo xtask bench auth`
//! (`clients.json` in DIR, written by `auth_bench prepare`) to every request: a bearer token or
//! an API key as prepared, or an HMAC-SHA256 signature made per request (fresh timestamp and
//! nonce: the gateway refuses replays), whose cost (a few µs) counts in that request's latency.
//! `--auth` given several times interleaves the schemes request by request (request i is of
//! scheme i mod k, each to its own route, on the same connections): every stall of the machine
//! hits all of them alike, so their latencies can be compared within one run. Each scheme's
//! numbers are printed too, as `J.key value` lines (J: the position of its `--auth`, from 0;
//! a scheme may be given twice, to measure how far two identical streams differ).
//!
//! `bench_load --jitter-secs S` instead spins on its CPU for S seconds and reports how much time
//! the thread lost in gaps over 50 µs (preemption, interrupts, a hypervisor): the noise floor of
//! any latency percentile measured on that CPU.
//!
//! The run is bounded: nothing is scheduled after `--duration-secs`, and what has not answered
//! 5 s later counts as timed out. The result is printed as `key value` lines (latencies in µs).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
// The benchmark talks to its own self-signed certificate on loopback: the proxy's
// `verify: false` verifier does exactly that.
use gateway::proxy::upstream::NoVerification;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::{
    net::TcpStream,
    sync::{Mutex, mpsc},
};

struct Args {
    tls: bool,
    addr: SocketAddr,
    authority: String,
    path: String,
    rate: f64,
    connections: usize,
    duration: Duration,
    /// `--slow-log PATH --slow-us N`: every request slower than N µs, as `offset_ms latency_us`.
    slow_log: Option<std::path::PathBuf>,
    slow_ns: u64,
    /// `--auth-dir DIR --auth SCHEME...`: the schemes whose credentials requests carry, in turn.
    auth: Vec<tests::authbench::Client>,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut url, mut rate, mut connections, mut duration) = (None, None, 32usize, 10.0f64);
    let (mut slow_log, mut slow_us) = (None, 1000u64);
    let (mut auth_dir, mut auth_schemes) = (None::<std::path::PathBuf>, Vec::<String>::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--url" => url = Some(value()?),
            "--rate" => rate = Some(value()?.parse::<f64>()?),
            "--connections" => connections = value()?.parse()?,
            "--duration-secs" => duration = value()?.parse()?,
            "--slow-log" => slow_log = Some(value()?.into()),
            "--slow-us" => slow_us = value()?.parse()?,
            "--auth-dir" => auth_dir = Some(value()?.into()),
            "--auth" => auth_schemes.push(value()?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let url = url.ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let rate = rate.ok_or_else(|| anyhow::anyhow!("--rate is required"))?;
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    anyhow::ensure!(connections > 0, "--connections must be positive");
    anyhow::ensure!(
        duration > 0.0 && duration <= 600.0,
        "--duration-secs must be in (0, 600]"
    );
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        anyhow::bail!("--url must start with http:// or https://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| anyhow::anyhow!("--url needs a literal IP:PORT (got {authority})"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "bench_load only loads loopback addresses"
    );
    let auth = match (auth_dir, auth_schemes.is_empty()) {
        (Some(dir), false) => auth_schemes
            .iter()
            .map(|scheme| tests::authbench::Client::load(&dir, scheme))
            .collect::<anyhow::Result<Vec<_>>>()?,
        (None, true) => Vec::new(),
        _ => anyhow::bail!("--auth-dir and --auth go together"),
    };
    if let [a] = auth.as_slice() {
        anyhow::ensure!(
            path.split('?').next() == Some(a.path.as_str()),
            "--url path {path} is not the route of scheme {} ({})",
            a.scheme,
            a.path
        );
    } else if auth.len() > 1 {
        anyhow::ensure!(
            path == "/",
            "with several --auth schemes each request goes to its scheme's route: give the --url without a path"
        );
    }
    Ok(Args {
        auth,
        tls,
        addr,
        authority: authority.to_string(),
        path: path.to_string(),
        rate,
        connections,
        duration: Duration::from_secs_f64(duration),
        slow_log,
        slow_ns: slow_us.saturating_mul(1000),
    })
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--jitter-secs") {
        let secs: f64 = argv
            .next()
            .ok_or_else(|| anyhow::anyhow!("--jitter-secs needs a value"))?
            .parse()?;
        anyhow::ensure!(
            secs > 0.0 && secs <= 60.0,
            "--jitter-secs must be in (0, 60]"
        );
        print!("{}", jitter(Duration::from_secs_f64(secs)));
        return Ok(());
    }
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args))?;
    print!("{report}");
    Ok(())
}

type Sender = http1::SendRequest<Empty<Bytes>>;

/// The measured requests of one scheme (or of all, without `--auth`): latency from the
/// scheduled time, and from the actual send.
#[derive(Default)]
struct Samples {
    latency_ns: Vec<u64>,
    service_ns: Vec<u64>,
    non_2xx: u64,
    errors: u64,
    /// Scheduled time and latency of the requests over `--slow-us` (with `--slow-log`).
    slow: Vec<(Instant, u64)>,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.latency_ns.extend(other.latency_ns);
        self.service_ns.extend(other.service_ns);
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.slow.extend(other.slow);
    }

    /// `key value` lines (each key after `prefix`) for `scheduled` requests over `elapsed` s.
    fn report(&mut self, out: &mut String, prefix: &str, scheduled: usize, elapsed: f64) {
        self.latency_ns.sort_unstable();
        self.service_ns.sort_unstable();
        let completed = self.latency_ns.len() as u64;
        let timeouts = (scheduled as u64).saturating_sub(completed + self.non_2xx + self.errors);
        let mut put = |k: &str, v: String| {
            out.push_str(prefix);
            out.push_str(k);
            out.push(' ');
            out.push_str(&v);
            out.push('\n');
        };
        put("scheduled", scheduled.to_string());
        put("completed", completed.to_string());
        put("non_2xx", self.non_2xx.to_string());
        put("errors", self.errors.to_string());
        put("timeouts", timeouts.to_string());
        put("achieved_rps", format!("{:.1}", completed as f64 / elapsed));
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)] {
            put(
                &format!("{name}_us"),
                format!("{:.1}", pct(&self.latency_ns, q)),
            );
        }
        put(
            "max_us",
            format!(
                "{:.1}",
                self.latency_ns.last().copied().unwrap_or(0) as f64 / 1e3
            ),
        );
        put(
            "service_p50_us",
            format!("{:.1}", pct(&self.service_ns, 0.50)),
        );
        put(
            "service_p99_us",
            format!("{:.1}", pct(&self.service_ns, 0.99)),
        );
    }
}

async fn run(args: Args) -> anyhow::Result<String> {
    let args = Arc::new(args);
    let tls = args.tls.then(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                    .with_no_client_auth()
            });
        if let Ok(c) = config.as_mut() {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        config.map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
    });
    let tls = tls.transpose()?;

    // All connections are up before the clock starts.
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(connect(&args, tls.as_ref()).await?);
    }

    // Request i is of scheme i mod `kinds` (one kind without `--auth`).
    let kinds = args.auth.len().max(1);
    let expected = (args.rate * args.duration.as_secs_f64()).ceil() as usize;
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, usize)>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(senders.len());
    for sender in senders {
        let (rx, args, tls) = (rx.clone(), args.clone(), tls.clone());
        let capacity = expected / kinds / 8;
        workers.push(tokio::spawn(async move {
            worker(sender, rx, args, tls, capacity).await
        }));
    }

    // The schedule: request i at start + i / rate, spinning for the last 2 ms.
    let start = Instant::now() + Duration::from_millis(20);
    let mut lag_ns = Vec::with_capacity(expected);
    for i in 0..expected {
        let at = start + Duration::from_secs_f64(i as f64 / args.rate);
        loop {
            let now = Instant::now();
            if now >= at {
                lag_ns.push(nanos(now - at));
                break;
            }
            let left = at - now;
            if left > Duration::from_millis(2) {
                tokio::time::sleep(left - Duration::from_millis(2)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        if tx.send((at, i % kinds)).is_err() {
            break;
        }
    }
    drop(tx);
    let scheduled_end = Instant::now();

    // Bounded: whatever has not answered 5 s after the last send is a timeout.
    let deadline = scheduled_end + Duration::from_secs(5);
    let mut per_kind: Vec<Samples> = (0..kinds).map(|_| Samples::default()).collect();
    for w in workers {
        match tokio::time::timeout_at(deadline.into(), w).await {
            Ok(Ok(samples)) => {
                for (all, s) in per_kind.iter_mut().zip(samples) {
                    all.merge(s);
                }
            }
            Ok(Err(e)) => anyhow::bail!("worker panicked: {e}"),
            Err(_) => {}
        }
    }
    let elapsed = scheduled_end.duration_since(start).as_secs_f64();

    let mut out = String::new();
    if kinds > 1 {
        for (j, samples) in per_kind.iter_mut().enumerate() {
            // Requests j, j + k, j + 2k, ... below `expected`.
            let scheduled = (expected + kinds - 1 - j) / kinds;
            samples.report(&mut out, &format!("{j}."), scheduled, elapsed);
        }
    }
    let mut all = Samples::default();
    for s in per_kind {
        all.merge(s);
    }
    if let Some(path) = &args.slow_log {
        all.slow.sort_unstable();
        let mut text = String::new();
        for (at, latency) in &all.slow {
            text.push_str(&format!(
                "{:.3} {:.1}\n",
                at.duration_since(start).as_secs_f64() * 1e3,
                *latency as f64 / 1e3
            ));
        }
        std::fs::write(path, text)?;
    }
    out.push_str(&format!("target_rps {:.1}\n", args.rate));
    all.report(&mut out, "", expected, elapsed);
    lag_ns.sort_unstable();
    out.push_str(&format!("send_lag_p99_us {:.1}\n", pct(&lag_ns, 0.99)));
    Ok(out)
}

/// Sends the requests scheduled on the channel over one connection; returns the samples per
/// scheme.
async fn worker(
    mut sender: Sender,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<(Instant, usize)>>>,
    args: Arc<Args>,
    tls: Option<tokio_rustls::TlsConnector>,
    capacity: usize,
) -> Vec<Samples> {
    let mut per_kind: Vec<Samples> = (0..args.auth.len().max(1))
        .map(|_| Samples {
            latency_ns: Vec::with_capacity(capacity),
            service_ns: Vec::with_capacity(capacity),
            ..Samples::default()
        })
        .collect();
    loop {
        let Some((at, kind)) = rx.lock().await.recv().await else {
            return per_kind;
        };
        let (auth, samples) = (args.auth.get(kind), &mut per_kind[kind]);
        if sender.ready().await.is_err() {
            match connect(&args, tls.as_ref()).await {
                Ok(s) => sender = s,
                Err(_) => {
                    samples.errors += 1;
                    continue;
                }
            }
        }
        // One scheme: the URL's path (its route, perhaps with a query); several: each route.
        let path = match auth {
            Some(a) if args.auth.len() > 1 => a.path.as_str(),
            _ => args.path.as_str(),
        };
        let request = Request::get(path)
            .header(hyper::header::HOST, args.authority.as_str())
            .body(Empty::<Bytes>::new());
        let Ok(mut request) = request else {
            samples.errors += 1;
            continue;
        };
        if let Some(auth) = auth {
            auth.apply("GET", path, &args.authority, request.headers_mut());
        }
        let sent = Instant::now();
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(_) => {
                samples.errors += 1;
                continue;
            }
        };
        let ok = response.status().is_success();
        if response.into_body().collect().await.is_err() {
            samples.errors += 1;
            continue;
        }
        let done = Instant::now();
        if ok {
            let latency = nanos(done.duration_since(at));
            if args.slow_log.is_some() && latency > args.slow_ns {
                samples.slow.push((at, latency));
            }
            samples.latency_ns.push(latency);
            samples.service_ns.push(nanos(done - sent));
        } else {
            samples.non_2xx += 1;
        }
    }
}

async fn connect(args: &Args, tls: Option<&tokio_rustls::TlsConnector>) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let sender = if let Some(tls) = tls {
        let name = ServerName::try_from("localhost")?;
        let stream = tls.connect(name, tcp).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        sender
    } else {
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        sender
    };
    Ok(sender)
}

/// Spins for `length`, collecting the gaps between consecutive clock reads over 50 µs.
fn jitter(length: Duration) -> String {
    let start = Instant::now();
    let mut last = start;
    let (mut lost, mut max, mut gaps) = (Duration::ZERO, Duration::ZERO, 0u64);
    loop {
        let now = Instant::now();
        let gap = now - last;
        if gap > Duration::from_micros(50) {
            lost += gap;
            max = max.max(gap);
            gaps += 1;
        }
        last = now;
        if now - start >= length {
            break;
        }
    }
    let secs = length.as_secs_f64();
    format!(
        "jitter_gaps_per_s {:.1}\njitter_lost_us_per_s {:.1}\njitter_max_us {:.1}\n",
        gaps as f64 / secs,
        lost.as_secs_f64() * 1e6 / secs,
        max.as_secs_f64() * 1e6
    )
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e3
}
