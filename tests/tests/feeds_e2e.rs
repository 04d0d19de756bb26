//! End to end: reputation feeds in the kernel denylist. The real binary with XDP on `gw0` reads
//! a feed file; a source in it cannot open TCP connections (XDP drop counters prove it); when
//! the file changes, the entry that left is removed and the source connects again; a feed taken
//! out of the config is removed at the next start. A 100k-entry feed is applied and the time it
//! took is printed (no timing assertion: speed belongs to benchmarks).

use std::{path::Path, time::Duration};

use tests::{
    daemon::{Daemon, Instance},
    privileged,
    topo::*,
};

fn feed_config(defense: &str) -> String {
    format!(
        "{}defense: {{ {defense} }}\ntelemetry: {{ events: {{ file: events.json }} }}\n",
        xdp_config(&format!("  management: [{CLIENT}]\n"))
    )
}

const GEO_OTHER: &str = "198.18.5.67";

fn blocks(inst: &Instance) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&inst.cli_ok(&["block", "list", "--json"]))
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The fields of the last `feed applied` log line that contains `needle`.
fn applied(daemon: &mut Daemon, needle: &str, timeout: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = daemon
            .logs()
            .iter()
            .rev()
            .filter(|l| l.contains("feed applied") && l.contains(needle))
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            return v;
        }
        if std::time::Instant::now() > deadline {
            // Panics with the logs.
            daemon.wait_for_log("feed applied (never)", Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(path: &Path, text: &str) {
    // A new size or mtime is how the daemon notices; write to a temp file and rename so it
    // never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write feed");
    std::fs::rename(&tmp, path).expect("rename feed");
}

#[test]
fn a_feed_entry_is_dropped_in_xdp_and_removed_when_it_leaves_the_feed() {
    if !privileged("feeds_import_remove") {
        return;
    }
    let topo = topo();
    let server = Server::start(&topo);
    let inst = Instance::new("feeds");
    std::fs::create_dir_all(&inst.state_dir).expect("state dir");
    let feed = inst.state_dir.join("bad.txt");
    // The management address in the feed is never written (the allowlist wins anyway).
    write(
        &feed,
        &format!(
            "# test feed\n{ATTACKER}\n198.18.9.0/24 # a whole /24\n{CLIENT}\nnot-an-address\n"
        ),
    );
    // A geo file: one network of country XA, one of XB (not blocked).
    std::fs::write(
        inst.state_dir.join("geo.csv"),
        format!("# CIDR,CC\n{GEO_OTHER}/32,XA\n198.18.0.0/16,XB\n"),
    )
    .expect("geo file");
    let mut daemon = Daemon::start(
        &inst,
        &topo.gw,
        &feed_config(
            "feeds: [{ name: bad, file: bad.txt, format: plain, refresh: 1s }], \
             geo: { file: geo.csv, block: [xa], refresh: 1s }",
        ),
    );
    let first = applied(&mut daemon, "\"added\":2", Duration::from_secs(10));
    applied(&mut daemon, "geo:XA", Duration::from_secs(10));
    assert_eq!(first["allowlisted"], 1, "{first}");
    assert_eq!(first["bad_lines"], 1, "{first}");
    assert!(
        daemon.logs_contain("\"line\":5"),
        "bad line not reported with its number"
    );

    let (deny, deny_net) = (inst.packets("denylist"), inst.packets("denylist-cidr"));
    assert!(
        !connects(&topo, ATTACKER, &server),
        "feed entry not enforced"
    );
    assert!(
        !connects(&topo, "198.18.9.9", &server),
        "feed CIDR not enforced"
    );
    assert!(
        connects(&topo, CLIENT, &server),
        "management address blocked"
    );
    assert!(
        !connects(&topo, GEO_OTHER, &server),
        "geo entry not enforced"
    );
    assert!(
        inst.packets("denylist") > deny,
        "no exact-match drop counted"
    );
    assert!(
        inst.packets("denylist-cidr") > deny_net,
        "no CIDR drop counted"
    );

    let list = blocks(&inst);
    let b = list
        .iter()
        .find(|b| b["address"] == format!("{ATTACKER}/32"))
        .unwrap_or_else(|| panic!("{ATTACKER} not in {list:?}"));
    assert_eq!(b["origin"], "feed");
    assert_eq!(b["reason"], "reputation");
    assert_eq!(b["note"], "feed:bad");
    assert!(
        b["ttl_seconds"].is_null(),
        "feed entries are permanent: {b}"
    );
    let g = list
        .iter()
        .find(|b| b["address"] == format!("{GEO_OTHER}/32"))
        .unwrap_or_else(|| panic!("{GEO_OTHER} not in {list:?}"));
    assert_eq!(
        (g["note"].as_str(), g["reason"].as_str()),
        (Some("geo:XA"), Some("geo"))
    );

    // The attacker leaves the feed: removed, and connects again; the /24 stays.
    write(&feed, "198.18.9.0/24\n");
    let second = applied(&mut daemon, "\"removed\":1", Duration::from_secs(10));
    assert_eq!(second["unchanged"], 1, "{second}");
    assert!(
        connects(&topo, ATTACKER, &server),
        "removed entry still drops"
    );
    assert!(!connects(&topo, "198.18.9.9", &server));

    // One journal record per apply with the counts, none per entry.
    let audit = inst.cli_ok(&["audit", "--json"]);
    let feed_records: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r["action"] == "feed")
        .collect();
    assert_eq!(feed_records.len(), 3, "feed, geo, feed again: {audit}");
    for target in ["feed:bad", "geo:XA"] {
        assert!(
            feed_records[..2].iter().any(|r| r["target"] == target),
            "{audit}"
        );
    }
    assert!(
        feed_records[2]["note"]
            .as_str()
            .is_some_and(|n| n.contains("removed 1")),
        "{audit}"
    );

    // Each apply is a security event too (ECS), in the events file. Events are written by a
    // task behind a queue, so the last one may land a moment after the journal record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (events, applied_events) = loop {
        let events =
            std::fs::read_to_string(inst.state_dir.join("events.json")).unwrap_or_default();
        let applied: Vec<serde_json::Value> = events
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &serde_json::Value| e["event"]["action"] == "feed_applied")
            .collect();
        if applied.len() >= 3 || std::time::Instant::now() > deadline {
            break (events, applied);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(applied_events.len(), 3, "{events}");
    assert_eq!(applied_events[0]["event"]["category"][0], "threat");

    // `gateway top` shows the drops and the feed applies.
    let top = inst.cli_ok(&["top", "--once", "--interval", "200ms"]);
    assert!(
        top.contains("DROPS BY REASON") && top.contains("feed:bad"),
        "{top}"
    );
    assert!(top.contains("BLOCKED SOURCES: 2 (feed 2)"), "{top}");

    // The feed and geo are taken out of the file: at the next start their entries go.
    let config = std::fs::read_to_string(&daemon.config).expect("config");
    let start = config.find("defense:").expect("defense line");
    let end = start + config[start..].find('\n').expect("eol");
    let without = format!("{}defense: {{}}{}", &config[..start], &config[end..]);
    std::fs::write(&daemon.config, without).expect("config");
    let mut daemon = daemon.restart(&topo.gw);
    daemon.wait_for_log("feed no longer configured", Duration::from_secs(10));
    assert!(
        connects(&topo, "198.18.9.9", &server),
        "retired feed still drops"
    );
    assert!(
        connects(&topo, GEO_OTHER, &server),
        "retired geo list still drops"
    );
    assert!(blocks(&inst).is_empty());
}

#[test]
fn a_100k_entry_feed_applies_in_seconds() {
    if !privileged("feeds_100k") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("feeds100k");
    std::fs::create_dir_all(&inst.state_dir).expect("state dir");
    let feed = inst.state_dir.join("big.netset");
    let mut text = String::from("#\n# firehol-style netset, 100000 entries\n#\n");
    for i in 0..100_000u32 {
        let [_, b, c, d] = (0x0a00_0000u32 + i).to_be_bytes();
        text.push_str(&format!("10.{b}.{c}.{d}\n"));
    }
    write(&feed, &text);
    let mut daemon = Daemon::start(
        &inst,
        &topo.gw,
        &feed_config("feeds: [{ name: big, file: big.netset, format: firehol, refresh: 1s }]"),
    );
    let first = applied(&mut daemon, "\"added\":100000", Duration::from_secs(120));
    let maps: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["maps", "list", "--json"])).expect("json");
    let deny = maps
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "deny_v4"))
        .expect("deny_v4");
    assert_eq!(deny["entries"], 100_000);

    // Half of it leaves the feed.
    let half: String = text
        .lines()
        .take(3 + 50_000)
        .map(|l| format!("{l}\n"))
        .collect();
    write(&feed, &half);
    let second = applied(&mut daemon, "\"removed\":50000", Duration::from_secs(120));
    eprintln!(
        "100k-entry feed: applied in {} ms; 50k removed in {} ms (debug build, veth, this machine)",
        first["took_ms"], second["took_ms"]
    );
}

/// A feed server in the gateway namespace: answers every request with the current body and
/// status (the test changes them).
fn feed_server(
    topo: &Topo,
    body: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
) -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = topo
        .gw
        .run(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind feed server"));
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut buf);
            let (status, text) = body.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                )
                .as_bytes(),
            );
        }
    });
    addr
}

#[test]
fn a_spamhaus_drop_feed_over_http_is_applied_and_kept_while_its_server_fails() {
    if !privileged("feeds_http") {
        return;
    }
    let topo = topo();
    let server = Server::start(&topo);
    let body = std::sync::Arc::new(std::sync::Mutex::new((
        200u16,
        format!(
            "; Spamhaus DROP List (test copy)\n; Last-Modified: today\n{ATTACKER_NET} ; SBL000001\n"
        ),
    )));
    let addr = feed_server(&topo, std::sync::Arc::clone(&body));
    let inst = Instance::new("feedshttp");
    let mut daemon = Daemon::start(
        &inst,
        &topo.gw,
        &feed_config(&format!(
            "feeds: [{{ name: drop, url: \"http://{addr}/drop.txt\", format: spamhaus_drop, refresh: 1s }}]"
        )),
    );
    applied(&mut daemon, "\"added\":1", Duration::from_secs(10));
    assert!(
        !connects(&topo, ATTACKER, &server),
        "DROP entry not enforced"
    );
    assert!(connects(&topo, CLIENT, &server));

    // The feed server breaks: the entries stay (an outage must not unblock a botnet list).
    *body.lock().unwrap_or_else(|p| p.into_inner()) = (503, "down".into());
    daemon.wait_for_log("feed unavailable", Duration::from_secs(10));
    assert!(
        !connects(&topo, ATTACKER, &server),
        "entries lost on a failed fetch"
    );

    // An error page served with 200: no valid line, not applied.
    *body.lock().unwrap_or_else(|p| p.into_inner()) = (200, "<html>oops</html>\n".into());
    daemon.wait_for_log("feed has no valid entry", Duration::from_secs(10));
    assert!(
        !connects(&topo, ATTACKER, &server),
        "entries lost on a garbage body"
    );

    // Back with an empty list: the entry is removed.
    *body.lock().unwrap_or_else(|p| p.into_inner()) = (200, "; empty today\n".into());
    applied(&mut daemon, "\"removed\":1", Duration::from_secs(10));
    assert!(
        connects(&topo, ATTACKER, &server),
        "removed DROP entry still drops"
    );
}
