//! `gateway stats`: what the XDP program did, per verdict and reason, summed over CPUs; with
//! `--watch`, rates between refreshes.

use std::time::{Duration, Instant};

use clap::Args;
use gateway_common::{Counter, stat};

use super::{Instance, duration_arg, table};
use crate::xdp::Maps;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Stable JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Refresh until interrupted, showing rates.
    #[arg(long)]
    watch: bool,
    /// Refresh interval with --watch.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    interval: Duration,
    /// Stop after this many refreshes with --watch.
    #[arg(long)]
    count: Option<u64>,
}

pub(super) fn execute(instance: &Instance, args: &StatsArgs) -> anyhow::Result<()> {
    let mut read: Box<dyn FnMut() -> anyhow::Result<Vec<Counter>>> = match instance.daemon()? {
        Some(daemon) => Box::new(move || from_daemon(&daemon)),
        None => {
            let pins = instance.pins();
            if !pins.exists() {
                return Err(pins.not_pinned().into());
            }
            let maps = Maps::open(&pins)?;
            Box::new(move || Ok(maps.stats()?))
        }
    };
    let mut previous: Option<(Instant, Vec<Counter>)> = None;
    let mut shown = 0u64;
    loop {
        let now = Instant::now();
        let counters = read()?;
        let rates = previous.as_ref().map(|(then, old)| {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-9);
            counters
                .iter()
                .zip(old)
                .map(|(c, o)| {
                    (
                        (c.packets.saturating_sub(o.packets)) as f64 / secs,
                        (c.bytes.saturating_sub(o.bytes)) as f64 * 8.0 / secs,
                    )
                })
                .collect::<Vec<_>>()
        });
        print_once(&counters, rates.as_deref(), args.json)?;
        shown += 1;
        if !args.watch || args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        previous = Some((now, counters));
        std::thread::sleep(args.interval);
    }
}

/// The daemon's counters (`GET /v1/stats`), in slot order.
fn from_daemon(daemon: &crate::admin::client::Client) -> anyhow::Result<Vec<Counter>> {
    let answer = daemon
        .call(http::Method::GET, "/v1/stats", None)
        .map_err(super::daemon_error)?;
    let rows = answer["xdp"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("the daemon runs without XDP: no kernel counters"))?;
    Ok(rows
        .iter()
        .map(|r| Counter {
            packets: r["packets"].as_u64().unwrap_or(0),
            bytes: r["bytes"].as_u64().unwrap_or(0),
        })
        .collect())
}

fn print_once(
    counters: &[Counter],
    rates: Option<&[(f64, f64)]>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = counters
            .iter()
            .zip(stat::NAMES)
            .enumerate()
            .map(|(i, (c, (verdict, reason)))| {
                let mut row = serde_json::json!({
                    "verdict": verdict, "reason": reason, "packets": c.packets, "bytes": c.bytes,
                });
                if let Some(r) = rates {
                    row["pps"] = serde_json::json!(r[i].0.round());
                    row["bps"] = serde_json::json!(r[i].1.round());
                }
                row
            })
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    let mut headers = vec!["VERDICT", "REASON", "PACKETS", "BYTES"];
    if rates.is_some() {
        headers.extend(["PPS", "BIT/S"]);
    }
    let rows: Vec<Vec<String>> = counters
        .iter()
        .zip(stat::NAMES)
        .enumerate()
        .map(|(i, (c, (verdict, reason)))| {
            let mut row = vec![
                verdict.to_string(),
                reason.to_string(),
                c.packets.to_string(),
                c.bytes.to_string(),
            ];
            if let Some(r) = rates {
                row.push(format!("{:.0}", r[i].0));
                row.push(format!("{:.0}", r[i].1));
            }
            row
        })
        .collect();
    println!("{}", table::render(&headers, &rows));
    Ok(())
}
