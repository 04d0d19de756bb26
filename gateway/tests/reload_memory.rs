//! Reloading must not leak: 1,000 reloads (routers, upstream pools, health-check tasks) leave
//! the resident set flat. Alone in its own test binary, because RSS is per process and other
//! tests running beside it would blur the measurement.

mod support;

use std::{path::Path, time::Duration};

use gateway::{config::Config, proxy::server::Proxy};
use support::backend::Backend;

fn config(yaml: &str) -> Config {
    Config::parse(Path::new("test.yaml"), yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

async fn status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_1000_reloads() {
    let a = Backend::start("a").await;
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ u: {{ endpoints: ["{}", "{}"], health: {{ path: /, interval: 20ms }} }} }}
routes: [{{ match: {{ prefix: /api }}, upstream: u }}, {{ match: {{ path: "/x/{{id}}" }}, upstream: u }}]
"#,
        a.url(),
        a.url()
    );
    let c = config(&yaml);
    let proxy = Proxy::start(&c).await.expect("proxy starts");
    let addr = proxy.addr("main").expect("listener");
    // Warm up allocator pools first, then measure.
    for _ in 0..100 {
        proxy.reload(&c).expect("reload");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_kib();
    for i in 0..1000 {
        proxy.reload(&c).expect("reload");
        if i % 100 == 0 {
            assert_eq!(status(addr, "/api").await, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 1000 reloads"
    );
}
