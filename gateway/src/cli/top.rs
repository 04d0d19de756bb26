//! `gateway top`: a live view for SOC analysts: drops by reason (per-CPU XDP counters summed)
//! with rates, requests per second (from the daemon's `/metrics` when it runs), the blocked
//! sources by origin with the latest ones, and the audit journal's newest records (escalations,
//! feed applies, analysts' actions) as they happen. Plain text redrawn in place: no TUI crate.

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Read as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use clap::Args;
use gateway_common::{Counter, origin, reason, stat};

use super::{Instance, duration_arg, table};
use crate::{
    defense::{Journal, Record},
    xdp::{BootClock, DenyEntry, Maps},
};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// One frame and exit (rates over one interval).
    #[arg(long)]
    once: bool,
    /// Refresh interval.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    interval: Duration,
    /// Rows in the blocked-sources and journal sections.
    #[arg(long, default_value_t = 10)]
    rows: usize,
}

/// What one frame shows.
pub(crate) struct Sample {
    pub at: Instant,
    pub counters: Vec<Counter>,
    pub blocks: Vec<DenyEntry>,
    pub journal: Vec<Record>,
    /// Sum of `gateway_http_requests_total`, when the daemon's metrics answer.
    pub requests: Option<f64>,
}

pub(super) fn execute(instance: &Instance, args: &TopArgs) -> anyhow::Result<()> {
    let pins = instance.pins();
    if !pins.exists() {
        return Err(pins.not_pinned().into());
    }
    let maps = Maps::open(&pins)?;
    let journal = Journal::open(&instance.state_dir.join(&instance.name))?;
    let take = || -> anyhow::Result<Sample> {
        Ok(Sample {
            at: Instant::now(),
            counters: maps.stats()?,
            blocks: maps.denied(),
            journal: journal.read()?,
            requests: scrape_requests(&instance.admin_socket),
        })
    };
    let tty = std::io::stdout().is_terminal() && !args.once;
    let mut previous = take()?;
    loop {
        std::thread::sleep(args.interval);
        let current = take()?;
        let frame = render(&instance.name, &previous, &current, args.rows);
        let mut out = std::io::stdout().lock();
        if tty {
            // Home and clear: redraw in place.
            out.write_all(b"\x1b[H\x1b[2J")?;
        }
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        if args.once {
            return Ok(());
        }
        previous = current;
    }
}

/// One frame, from two samples (rates are the difference over the time between them).
pub(crate) fn render(instance: &str, before: &Sample, now: &Sample, rows: usize) -> String {
    let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    let mut out = format!(
        "gateway top: instance {instance}, {} (every {:.1}s)\n\n",
        table::timestamp(crate::xdp::unix_now()),
        secs
    );

    // Traffic.
    let sum = |c: &[Counter], drop: bool| {
        stat::NAMES
            .iter()
            .zip(c)
            .filter(|((verdict, _), _)| (*verdict == "drop") == drop)
            .map(|(_, c)| c.packets)
            .sum::<u64>()
    };
    out.push_str(&format!(
        "packets/s: passed {:.0}, dropped {:.0}    requests/s: {}\n\n",
        rate(sum(&now.counters, false), sum(&before.counters, false)),
        rate(sum(&now.counters, true), sum(&before.counters, true)),
        match (now.requests, before.requests) {
            (Some(a), Some(b)) => format!("{:.1}", (a - b).max(0.0) / secs),
            _ => "- (daemon metrics unavailable)".into(),
        }
    ));

    // Drops by reason.
    let drops: Vec<Vec<String>> = stat::NAMES
        .iter()
        .enumerate()
        .filter(|(_, (verdict, _))| *verdict == "drop")
        .map(|(i, (_, why))| {
            let (n, b) = (
                now.counters.get(i).copied().unwrap_or_default(),
                before.counters.get(i).copied().unwrap_or_default(),
            );
            vec![
                (*why).to_owned(),
                n.packets.to_string(),
                format!("{:.0}", rate(n.packets, b.packets)),
                format!("{:.0}", rate(n.bytes, b.bytes) * 8.0),
            ]
        })
        .collect();
    out.push_str("DROPS BY REASON\n");
    out.push_str(&table::render(
        &["REASON", "PACKETS", "PACKETS/S", "BITS/S"],
        &drops,
    ));

    // Blocked sources: counts by origin, newest first.
    let clock = BootClock::now();
    let active: Vec<&DenyEntry> = now
        .blocks
        .iter()
        .filter(|e| e.value.is_active(clock.boot_ns))
        .collect();
    let mut by_origin: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &active {
        *by_origin.entry(origin::name(e.value.origin)).or_default() += 1;
    }
    let counts: Vec<String> = by_origin.iter().map(|(o, n)| format!("{o} {n}")).collect();
    out.push_str(&format!(
        "\nBLOCKED SOURCES: {} ({})\n",
        active.len(),
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    ));
    let mut newest = active.clone();
    newest.sort_by_key(|e| std::cmp::Reverse(e.value.created_unix));
    let block_rows: Vec<Vec<String>> = newest
        .iter()
        .take(rows)
        .map(|e| {
            vec![
                e.net.to_string(),
                origin::name(e.value.origin).to_owned(),
                reason::name(e.value.reason).to_owned(),
                table::timestamp(e.value.created_unix),
                clock
                    .remaining(e.value.expires_ns)
                    .map_or_else(|| "permanent".into(), table::human_duration),
            ]
        })
        .collect();
    if !block_rows.is_empty() {
        out.push_str(&table::render(
            &["ADDRESS", "ORIGIN", "REASON", "SINCE", "EXPIRES IN"],
            &block_rows,
        ));
    }

    // The journal's newest records; new since the last frame marked.
    let seen = before.journal.len();
    let start = now.journal.len().saturating_sub(rows);
    let journal_rows: Vec<Vec<String>> = now.journal[start..]
        .iter()
        .enumerate()
        .rev()
        .map(|(i, r)| {
            vec![
                if start + i >= seen { "*" } else { "" }.to_owned(),
                table::timestamp(r.ts),
                serde_json::to_value(r.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.target.clone(),
                r.reason.clone(),
                r.actor.clone(),
                r.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nESCALATIONS AND CHANGES (audit journal, newest first; * = new): {} new\n",
        now.journal.len().saturating_sub(seen)
    ));
    if !journal_rows.is_empty() {
        out.push_str(&table::render(
            &["", "TIME", "ACTION", "TARGET", "REASON", "ACTOR", "NOTE"],
            &journal_rows,
        ));
    }
    out
}

/// `gateway_http_requests_total` summed over its labels, from the daemon's admin socket.
fn scrape_requests(socket: &Path) -> Option<f64> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: gateway\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| l.starts_with("gateway_http_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use gateway_common::DenyValue;

    use super::*;
    use crate::defense::Action;

    fn sample(at: Instant, deny_packets: u64, journal: usize, requests: f64) -> Sample {
        let mut counters = vec![Counter::default(); stat::COUNT as usize];
        counters[stat::DROP_DENY as usize] = Counter {
            packets: deny_packets,
            bytes: deny_packets * 100,
        };
        counters[stat::PASS as usize] = Counter {
            packets: 1000,
            bytes: 0,
        };
        let clock = BootClock::now();
        Sample {
            at,
            counters,
            blocks: vec![DenyEntry {
                net: "203.0.113.9/32".parse().expect("net"),
                value: DenyValue {
                    expires_ns: clock.boot_ns + 60_000_000_000,
                    created_unix: clock.unix_s,
                    reason: reason::WAF,
                    origin: origin::L7,
                    _pad: [0; 5],
                },
            }],
            journal: (0..journal)
                .map(|i| Record {
                    ts: clock.unix_s,
                    action: Action::Block,
                    target: format!("203.0.113.{i}/32"),
                    origin: "l7".into(),
                    reason: "waf".into(),
                    note: Some("auto: waf".into()),
                    expires: None,
                    actor: "auto:defense".into(),
                })
                .collect(),
            requests: Some(requests),
        }
    }

    #[test]
    fn a_frame_shows_rates_drops_blocks_and_new_escalations() {
        let t = Instant::now();
        let before = sample(t, 100, 1, 50.0);
        let now = sample(t + Duration::from_secs(2), 300, 3, 250.0);
        let frame = render("edge-1", &before, &now, 10);
        assert!(frame.contains("instance edge-1"), "{frame}");
        assert!(frame.contains("requests/s: 100.0"), "{frame}");
        assert!(frame.contains("dropped 100"), "{frame}");
        let deny = frame
            .lines()
            .find(|l| l.starts_with("denylist "))
            .unwrap_or_else(|| panic!("{frame}"));
        assert_eq!(
            deny.split_whitespace().collect::<Vec<_>>(),
            ["denylist", "300", "100", "80000"]
        );
        assert!(frame.contains("BLOCKED SOURCES: 1 (l7 1)"), "{frame}");
        assert!(frame.contains("203.0.113.9/32"), "{frame}");
        assert!(frame.contains(": 2 new"), "{frame}");
        // Newest first, the two new ones marked.
        let marked: Vec<&str> = frame.lines().filter(|l| l.starts_with('*')).collect();
        assert_eq!(marked.len(), 2, "{frame}");
        assert!(marked[0].contains("203.0.113.2/32"), "{frame}");
    }
}
