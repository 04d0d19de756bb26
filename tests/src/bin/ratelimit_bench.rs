//! `ratelimit_bench`: rate-limit decisions per second and memory with 1M distinct keys, through
//! the same call the proxy's per-client stage makes (key from the client address, keyed hash,
//! sharded GCRA table). Driven by `cargo xtask bench ratelimit`; in process, no network.
//!
//! `ratelimit_bench [--keys 1000000] [--decisions 5000000] [--threads N] [--out DIR]` prints a
//! markdown table and writes `ratelimit.json` under `--out`.

use std::{net::IpAddr, sync::Arc, time::Instant};

use gateway::{
    config::RouteConfig,
    proxy::{router::Router, stage::RequestContext},
    ratelimit::{Limiter, RateLimitSection, RateLimits},
};
use hyper::http;

fn main() -> anyhow::Result<()> {
    let mut keys = 1_000_000u32;
    let mut decisions = 5_000_000u64;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--keys" => keys = value()?.parse()?,
            "--decisions" => decisions = value()?.parse()?,
            "--threads" => threads = value()?.parse()?,
            "--out" => out = Some(value()?.into()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        keys > 0 && threads > 0,
        "--keys and --threads must be above 0"
    );

    // 100/s, burst 100: every key stays admitted, so the benchmark measures the admit path.
    let route: RouteConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "match": { "prefix": "/" },
        "upstream": "app",
        "rate_limits": [{ "key": "client_ip", "rate": "100/s", "burst": 100 }],
    }))?;
    let router = Router::build(&[route]).map_err(|(_, e)| anyhow::anyhow!(e))?;
    let section = RateLimitSection {
        max_keys: (keys as usize).saturating_mul(2),
        ..RateLimitSection::default()
    };
    // Rates only: nothing is ever written under this directory.
    let state = std::env::temp_dir().join("ratelimit-bench-unused");
    let limiter = Arc::new(Limiter::open(&state, "bench", &section));
    let limits = RateLimits::new(limiter, &section, &router);
    let route = &router.routes()[0];
    let headers = http::HeaderMap::new();
    let ip =
        |i: u32| -> IpAddr { std::net::Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)).into() };
    let decide = |client_ip: IpAddr| {
        let mut ctx = RequestContext {
            request_id: "bench",
            client_ip,
            behind_proxy: false,
            tls: None,
            route,
            path: "/",
            params: &[],
            body: None,
            principal: None,
            findings: Vec::new(),
            response_headers: http::HeaderMap::new(),
        };
        limits.check_client(&mut ctx, &headers).is_ok()
    };

    let rss_before = rss_kib();
    let start = Instant::now();
    for i in 0..keys {
        anyhow::ensure!(decide(ip(i)), "a fresh key was refused");
    }
    let fill_s = start.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    let bytes_per_key = (rss_after.saturating_sub(rss_before) * 1024) as f64 / f64::from(keys);

    let per_thread = decisions / threads as u64;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let decide = &decide;
            s.spawn(move || {
                // A cheap LCG walks the key space; the work is the decision, not the RNG.
                let mut x = 0x9e37_79b9_u32.wrapping_add(t as u32);
                for _ in 0..per_thread {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    std::hint::black_box(decide(ip(x % keys)));
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let per_sec = (per_thread * threads as u64) as f64 / secs;
    println!(
        "| what ({keys} distinct keys, {threads} threads) | value |\n| --- | ---: |\n| decisions per second (per-client stage, GCRA) | {per_sec:.0} |\n| first decision of each key (inserts) per second | {:.0} |\n| resident memory of the table | {:.1} MiB ({bytes_per_key:.0} bytes/key) |",
        f64::from(keys) / fill_s,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
    );
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("ratelimit.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "keys": keys,
                "threads": threads,
                "decisions": per_thread * threads as u64,
                "decisions_per_second": per_sec,
                "inserts_per_second": f64::from(keys) / fill_s,
                "rss_delta_kib": rss_after.saturating_sub(rss_before),
                "bytes_per_key": bytes_per_key,
            }))?,
        )?;
    }
    Ok(())
}

/// Resident set size from /proc (Linux), 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
