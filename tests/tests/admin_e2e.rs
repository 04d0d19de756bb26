//! End to end: the operator CLI goes through the running daemon's admin socket (one writer, one
//! audit trail naming the CLI user), falls back loudly to the pinned maps when no daemon runs,
//! and the XDP counters of a dropped flood show up in `/metrics` on the admin socket.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use tests::{
    daemon::{Daemon, Instance},
    privileged,
    topo::*,
};

fn socket(inst: &Instance) -> PathBuf {
    inst.state_dir.join(&inst.name).join("admin.sock")
}

/// `GET path` on the admin socket; the body.
fn admin_get(inst: &Instance, path: &str) -> String {
    let mut s = UnixStream::connect(socket(inst)).expect("admin socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The user the CLI names in the journal (as `gateway::cli::actor` derives it).
fn cli_user() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid:{}", nix::unistd::getuid()));
    format!("cli:{user}")
}

#[test]
fn the_cli_blocks_through_the_daemon_and_the_journal_names_the_cli_user() {
    if !privileged("admin_cli_through_daemon") {
        return;
    }
    let topo = topo();
    let server = Server::start(&topo);
    let inst = Instance::new("adm");
    let mut daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    assert!(socket(&inst).exists(), "no admin socket");
    assert!(connects(&topo, ATTACKER, &server));

    let out = inst.cli(&[
        "block", "add", ATTACKER, "--ttl", "10m", "--reason", "SOC-7",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !stderr.contains("no daemon answers"),
        "fell back although the daemon runs: {stderr}"
    );
    // The daemon made the change (its log says so), and the kernel drops.
    daemon.wait_for_log("blocked by an operator", Duration::from_secs(3));
    assert!(!connects(&topo, ATTACKER, &server));
    assert!(connects(&topo, CLIENT, &server));

    // `audit --json` is one JSON object per line.
    let audit = inst.cli_ok(&["audit", "--json"]);
    let rec: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["target"] == format!("{ATTACKER}/32") && r["action"] == "block")
        .unwrap_or_else(|| panic!("no block record in {audit}"));
    assert_eq!(rec["actor"], cli_user().as_str(), "{rec}");
    assert_eq!(rec["note"], "SOC-7");

    inst.cli_ok(&["block", "rm", ATTACKER]);
    assert!(connects(&topo, ATTACKER, &server));

    // `--direct` skips the daemon; with the daemon gone the CLI says it falls back, and works.
    let out = inst.cli(&["--direct", "block", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    drop(daemon);
    let out = inst.cli(&["block", "add", ATTACKER, "--ttl", "1m"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no daemon answers"),
        "{out:?}"
    );
}

#[test]
fn xdp_counters_of_a_dropped_flood_appear_in_metrics() {
    if !privileged("admin_metrics_xdp") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("admm");
    let _daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    inst.cli_ok(&["block", "add", ATTACKER]);
    let before = inst.packets("denylist");
    const FLOOD: u64 = 2000;
    udp_burst(&topo, ATTACKER, FLOOD as usize, 100);
    std::thread::sleep(Duration::from_millis(200));

    let text = admin_get(&inst, "/metrics");
    let value = |name: &str, labels: &[&str]| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|p| l.contains(p)))
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    let dropped = value(
        "gateway_xdp_packets_total",
        &["verdict=\"drop\"", "reason=\"denylist\""],
    );
    // Every datagram of the flood was dropped and counted; nothing else came from there.
    assert_eq!(dropped as u64 - before, FLOOD, "{text}");
    let bytes = value(
        "gateway_xdp_bytes_total",
        &["verdict=\"drop\"", "reason=\"denylist\""],
    );
    // 100 bytes of payload + UDP, IPv4 and Ethernet headers per datagram.
    assert!(bytes >= (FLOOD * 142) as f64, "{bytes}");
    // The same numbers as `gateway stats` on the maps.
    assert_eq!(inst.packets("denylist"), dropped as u64);
    assert_eq!(
        value("gateway_denylist_entries", &["origin=\"manual\""]),
        1.0
    );
}
