//! Abuse controls in process, in front of real upstreams on loopback: L7 rate limits (precision
//! under concurrency, refused requests not counted, headers, IPv6 aggregation, eviction under
//! churn, quotas across a restart, 429s feeding the defense loop), bot signals, and response
//! filters (masking across awkward chunk boundaries, the size cap).

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use gateway::{
    config::Config,
    defense::{self, Enforcement, L7Blocks},
    proxy::server::{DefenseHooks, Proxy},
};
use support::backend::Backend;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

fn config(yaml: &str) -> Config {
    Config::parse(Path::new("test.yaml"), yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// A state directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("gw-ratelimit-{:x}", rand_u64()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
    /// The response ended with its terminating chunk (chunked responses only).
    complete: bool,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let (body, complete) = if chunked {
        dechunk(body)
    } else {
        (body.to_owned(), true)
    };
    Raw {
        status,
        head: head.to_owned(),
        body,
        complete,
    }
}

fn dechunk(body: &str) -> (String, bool) {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            return (out, true);
        }
        if after.len() < n {
            out.push_str(after);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (out, false)
}

/// A browser-like GET (so bot signals stay quiet unless a test wants them).
async fn get(addr: SocketAddr, target: &str, extra: &str) -> Raw {
    raw(
        addr,
        format!(
            "GET {target} HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\nUser-Agent: test-client/1.0\r\nConnection: close\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
    .await
}

fn yaml(backend: &str, state_dir: &Path, routes: &str, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
state_dir: {state}
upstreams:
  app: {{ endpoints: ["{backend}"] }}
routes:
{routes}
{extra}"#,
        state = state_dir.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_admitted_within_the_bound() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    // 1 per 10 s, burst 20: the documented bound over a test of `elapsed` seconds is
    // burst + floor(elapsed / 10s) (+1 for the token in flight at the edge).
    let proxy = Proxy::start(&config(&yaml(
        &backend.url(),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app, rate_limits: [{ key: client_ip, rate: 6/m, burst: 20 }] }",
        "",
    )))
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { get(addr, "/x", "").await.status }))
        .collect();
    let mut ok = 0u64;
    let mut limited = 0u64;
    for t in tasks {
        match t.await.expect("task") {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let bound = 20 + started.elapsed().as_secs() / 10 + 1;
    assert!(ok >= 20, "admitted {ok}: less than the burst");
    assert!(ok <= bound, "admitted {ok}, documented bound {bound}");
    assert_eq!(ok + limited, 100);
    assert_eq!(
        backend.hits() as u64,
        ok,
        "refused requests reached the upstream"
    );
}

#[tokio::test]
async fn headers_on_admitted_and_refused_responses() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let proxy = Proxy::start(&config(&yaml(
        &backend.url(),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app, rate_limits: [{ name: per-ip, key: client_ip, rate: 1/m, burst: 2 }] }",
        "",
    )))
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let first = get(addr, "/x", "").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy").as_deref(),
        Some("\"per-ip\";q=2;w=120")
    );
    assert_eq!(
        first.header("ratelimit").as_deref(),
        Some("\"per-ip\";r=1;t=60")
    );
    assert_eq!(get(addr, "/x", "").await.status, 200);
    let refused = get(addr, "/x", "").await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(
        refused.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(refused.json()["code"], "rate_limited");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let state = refused.header("ratelimit").expect("RateLimit");
    assert!(state.starts_with("\"per-ip\";r=0;t="), "{state}");
}

#[tokio::test]
async fn refused_requests_do_not_consume_the_other_limits() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let proxy = Proxy::start(&config(&yaml(
        &backend.url(),
        &dir.0,
        r#"  - name: api
    match: { prefix: / }
    upstream: app
    rate_limits:
      - { name: ip, key: client_ip, rate: 1/h, burst: 5 }
      - { name: tenant, key: "header:x-tenant", rate: 1/h, burst: 2, when_missing: skip }"#,
        "",
    )))
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let t = |name: &str| format!("X-Tenant: {name}\r\n");
    assert_eq!(get(addr, "/", &t("a")).await.status, 200);
    assert_eq!(get(addr, "/", &t("a")).await.status, 200);
    // Refused by the tenant limit, many times: the per-IP bucket must not pay for these.
    for _ in 0..5 {
        let r = get(addr, "/", &t("a")).await;
        assert_eq!(r.status, 429);
        assert!(
            r.json()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("tenant"))
        );
    }
    assert_eq!(get(addr, "/", &t("b")).await.status, 200);
    assert_eq!(get(addr, "/", &t("b")).await.status, 200);
    assert_eq!(
        get(addr, "/", &t("c")).await.status,
        200,
        "refusals were counted"
    );
    // Now the per-IP bucket is empty.
    let r = get(addr, "/", &t("d")).await;
    assert_eq!(r.status, 429);
    assert!(
        r.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`ip`"))
    );
    assert_eq!(backend.hits(), 5);
}

#[tokio::test]
async fn ipv6_clients_in_one_prefix_share_a_bucket_and_churn_does_not_reset_it() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let proxy = Proxy::start(&config(&yaml(
        &backend.url(),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app, rate_limits: [{ key: client_ip, rate: 1/h, burst: 2 }] }",
        "trusted_proxies: [127.0.0.1/32]\nrate_limit: { max_keys: 64 }\n",
    )))
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    assert_eq!(get(addr, "/", &from("2001:db8:1:2::1")).await.status, 200);
    assert_eq!(
        get(addr, "/", &from("2001:db8:1:2::dead:1")).await.status,
        200
    );
    // A third address inside the same /64 is the same client.
    assert_eq!(
        get(addr, "/", &from("2001:db8:1:2:ffff::9")).await.status,
        429
    );
    // The next /64 is someone else.
    assert_eq!(get(addr, "/", &from("2001:db8:1:3::1")).await.status, 200);
    // Key churn far beyond the cap of 64 keys...
    for i in 0..400u32 {
        let _ = get(addr, "/", &from(&format!("10.{}.{}.1", i / 256, i % 256))).await;
    }
    // ...does not hand the active client a fresh bucket.
    assert_eq!(get(addr, "/", &from("2001:db8:1:2::77")).await.status, 429);
}

#[tokio::test]
async fn quotas_are_kept_across_a_restart() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let text = yaml(
        &backend.url(),
        &dir.0,
        r#"  - { name: api, match: { prefix: / }, upstream: app, rate_limits: [{ name: daily, key: "header:x-api-key", quota: 3/day }] }"#,
        "instance: qtest\n",
    );
    let key = "X-Api-Key: sk-live-0123\r\n";
    let proxy = Proxy::start(&config(&text)).await.expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let r = get(addr, "/", key).await;
    assert_eq!(r.status, 200);
    let state = r.header("ratelimit").expect("RateLimit");
    assert!(state.starts_with("\"daily\";r=2;t="), "{state}");
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"daily\";q=3;w=86400")
    );
    assert_eq!(get(addr, "/", key).await.status, 200);
    proxy.shutdown(Duration::from_secs(2)).await;
    assert!(
        dir.0.join("qtest/ratelimit-quotas.json").exists(),
        "quota state not written at shutdown"
    );
    let state = std::fs::read_to_string(dir.0.join("qtest/ratelimit-quotas.json")).expect("state");
    assert!(
        !state.contains("sk-live"),
        "an API key was written to disk: {state}"
    );

    let proxy = Proxy::start(&config(&text)).await.expect("proxy again");
    let addr = proxy.addr("main").expect("addr");
    assert_eq!(get(addr, "/", key).await.status, 200, "third of three");
    let r = get(addr, "/", key).await;
    assert_eq!(r.status, 429, "the restart handed out a fresh quota");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (1..=86_400).contains(&retry),
        "Retry-After {retry}: until UTC midnight"
    );
    // Another consumer is unaffected.
    assert_eq!(get(addr, "/", "X-Api-Key: k2\r\n").await.status, 200);
}

/// A proxy reporting to a real defense loop (threshold 5), blocking at L7.
async fn with_defense(text: &str) -> (Proxy, Arc<L7Blocks>) {
    let c = config(text);
    let blocked = Arc::new(L7Blocks::default());
    let section = c.defense.clone().expect("defense section");
    let sink = defense::spawn(
        section,
        Enforcement {
            kernel: None,
            l7: Arc::clone(&blocked),
            never: Vec::new(),
            events: None,
        },
    );
    let proxy = Proxy::start_with(
        &c,
        DefenseHooks {
            blocked: Arc::clone(&blocked),
            violations: Some(sink),
            ..DefenseHooks::default()
        },
    )
    .await
    .expect("proxy");
    (proxy, blocked)
}

async fn eventually_blocked(addr: SocketAddr, extra: &str) -> Raw {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(addr, "/", extra).await;
        if r.status == 403 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn repeated_429s_escalate_to_a_block() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let (proxy, blocked) = with_defense(&yaml(
        &backend.url(),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app, rate_limits: [{ key: client_ip, rate: 1/h, burst: 1 }] }",
        "defense: { threshold: 5 }\n",
    ))
    .await;
    let addr = proxy.addr("main").expect("addr");
    assert_eq!(get(addr, "/", "").await.status, 200);
    let r = eventually_blocked(addr, "").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["code"], "client_blocked");
    assert!(blocked.contains("127.0.0.1".parse().expect("ip")));
}

#[tokio::test]
async fn scanner_agents_are_blocked_where_configured_and_scored_everywhere() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let routes = r#"  - { name: strict, match: { prefix: /strict }, upstream: app }
  - { name: open, match: { prefix: / }, upstream: app, bot_signals: false }"#;
    let proxy = Proxy::start(&config(&yaml(
        &backend.url(),
        &dir.0,
        routes,
        "bot: { block: [scanner_agent] }\n",
    )))
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let sqlmap = raw(
        addr,
        b"GET /strict/x HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\nUser-Agent: sqlmap/1.8#stable (https://sqlmap.org)\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(sqlmap.status, 403, "{sqlmap:?}");
    assert_eq!(sqlmap.json()["code"], "bot_blocked");
    // A signal that is not configured to block only scores.
    let no_agent = raw(
        addr,
        b"GET /strict/x HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(no_agent.status, 200);
    // A route that opts out never blocks.
    let open = raw(
        addr,
        b"GET /x HTTP/1.1\r\nHost: api.test\r\nUser-Agent: Nikto/2.5\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(open.status, 200);
    assert_eq!(backend.hits(), 2);
    drop(proxy);

    // With a defense loop, a scanner's finding alone (weight 10) crosses a threshold of 5.
    let (proxy, _) = with_defense(&yaml(
        &backend.url(),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app }",
        "bot: {}\ndefense: { threshold: 5 }\n",
    ))
    .await;
    let addr = proxy.addr("main").expect("addr");
    let first = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\nUser-Agent: Nuclei - Open-source project (github.com/projectdiscovery/nuclei)\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first.status, 200, "detect-only: the first request passes");
    let r = eventually_blocked(addr, "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "client_blocked");
}

/// An upstream that writes its response in the given pieces, pausing between them so each
/// arrives as its own read; `content_length` picks the framing.
async fn awkward_upstream(
    pieces: Vec<Vec<u8>>,
    content_type: &str,
    content_length: bool,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let content_type = content_type.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let pieces = pieces.clone();
            let content_type = content_type.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let total: usize = pieces.iter().map(Vec::len).sum();
                let framing = if content_length {
                    format!("Content-Length: {total}")
                } else {
                    "Transfer-Encoding: chunked".to_owned()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{framing}\r\nConnection: close\r\n\r\n"
                );
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for p in pieces {
                    let out = if content_length {
                        p
                    } else {
                        let mut c = format!("{:x}\r\n", p.len()).into_bytes();
                        c.extend_from_slice(&p);
                        c.extend_from_slice(b"\r\n");
                        c
                    };
                    if tcp.write_all(&out).await.is_err() || tcp.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                if !content_length {
                    let _ = tcp.write_all(b"0\r\n\r\n").await;
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// Splits `text` so that every piece boundary falls inside one of the secrets.
fn split_inside(text: &str, cuts: &[&str]) -> Vec<Vec<u8>> {
    let mut at = Vec::new();
    for c in cuts {
        let i = text.find(c).expect("secret present");
        at.push(i + c.len() / 2);
    }
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for i in at {
        out.push(text.as_bytes()[prev..i].to_vec());
        prev = i;
    }
    out.push(text.as_bytes()[prev..].to_vec());
    out
}

#[tokio::test]
async fn values_split_across_upstream_chunks_are_masked() {
    let dir = TempDir::new();
    let card = "4111 1111 1111 1111";
    let mail = "carol.smith@example.org";
    let token = "Bearer c2VjcmV0LXRva2VuLXZhbHVl";
    let text = format!(
        "{}\ncard={card}; mail={mail}; auth={token}; order=12345678\n{}",
        "a".repeat(5000),
        "z".repeat(9000)
    );
    for content_length in [false, true] {
        let up = awkward_upstream(
            split_inside(&text, &[card, mail, token]),
            "text/plain",
            content_length,
        )
        .await;
        let proxy = Proxy::start(&config(&yaml(
            &format!("http://{up}"),
            &dir.0,
            "  - { name: api, match: { prefix: / }, upstream: app, response_filter: { mask_patterns: [card_number, email, bearer_token] } }",
            "",
        )))
        .await
        .expect("proxy");
        let r = get(proxy.addr("main").expect("addr"), "/", "").await;
        assert_eq!(r.status, 200);
        assert!(r.complete, "response cut short");
        assert_eq!(r.body.len(), text.len(), "masking must keep the length");
        if content_length {
            assert_eq!(r.header("content-length"), Some(text.len().to_string()));
        }
        assert!(
            r.body.contains("card=**** **** **** 1111;"),
            "{}",
            &r.body[5000..5120]
        );
        assert!(r.body.contains("mail=***********@example.org;"));
        assert!(r.body.contains("auth=Bearer ************************;"));
        assert!(r.body.contains("order=12345678"), "non-card numbers stay");
        assert!(!r.body.contains("carol") && !r.body.contains("c2VjcmV0"));
    }
}

#[tokio::test]
async fn json_fields_are_masked_through_the_proxy() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let proxy = Proxy::start(&config(&yaml(
        &backend.url(),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app, response_filter: { mask_fields: [x-secret, /headers/x-card] } }",
        "",
    )))
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let r = get(
        addr,
        "/",
        "X-Secret: s3cr3t\r\nX-Card: 4111111111111111\r\nX-Plain: visible\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["headers"]["x-secret"], "****");
    assert_eq!(j["headers"]["x-card"], "****");
    assert_eq!(j["headers"]["x-plain"], "visible");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
}

#[tokio::test]
async fn the_response_size_cap_refuses_or_aborts() {
    let dir = TempDir::new();
    let body = "x".repeat(5000);
    for content_length in [true, false] {
        let up = awkward_upstream(
            vec![
                body.as_bytes()[..2500].to_vec(),
                body.as_bytes()[2500..].to_vec(),
            ],
            "application/octet-stream",
            content_length,
        )
        .await;
        let proxy = Proxy::start(&config(&yaml(
            &format!("http://{up}"),
            &dir.0,
            "  - { name: api, match: { prefix: / }, upstream: app, response_filter: { max_body_bytes: 4KiB } }",
            "",
        )))
        .await
        .expect("proxy");
        let r = get(proxy.addr("main").expect("addr"), "/", "").await;
        if content_length {
            // Announced: refused before a byte is sent.
            assert_eq!(r.status, 502, "{r:?}");
            assert_eq!(r.json()["code"], "response_too_large");
        } else {
            // Only visible mid-stream: the stream is aborted, never ended cleanly.
            assert_eq!(r.status, 200);
            assert!(!r.complete, "an over-cap body must not look complete");
            assert!(
                r.body.len() <= 4096,
                "{} bytes passed the cap",
                r.body.len()
            );
        }
    }
    // Under the cap nothing changes.
    let up = awkward_upstream(vec![b"small".to_vec()], "text/plain", false).await;
    let proxy = Proxy::start(&config(&yaml(
        &format!("http://{up}"),
        &dir.0,
        "  - { name: api, match: { prefix: / }, upstream: app, response_filter: { max_body_bytes: 4KiB } }",
        "",
    )))
    .await
    .expect("proxy");
    let r = get(proxy.addr("main").expect("addr"), "/", "").await;
    assert_eq!(
        (r.status, r.body.as_str(), r.complete),
        (200, "small", true)
    );
}

#[tokio::test]
async fn buckets_survive_a_reload() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new();
    let route = |rate: &str| {
        format!(
            "  - {{ name: api, match: {{ prefix: / }}, upstream: app, rate_limits: [{{ key: client_ip, rate: {rate}, burst: 1 }}] }}"
        )
    };
    let text = yaml(&backend.url(), &dir.0, &route("1/h"), "");
    let proxy = Proxy::start(&config(&text)).await.expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    assert_eq!(get(addr, "/", "").await.status, 200);
    assert_eq!(get(addr, "/", "").await.status, 429);
    // The same limit after a reload: still empty.
    proxy.reload(&config(&text)).expect("reload");
    assert_eq!(
        get(addr, "/", "").await.status,
        429,
        "a reload handed out a fresh bucket"
    );
    // A changed limit is a new limit.
    proxy
        .reload(&config(&yaml(&backend.url(), &dir.0, &route("2/h"), "")))
        .expect("reload");
    assert_eq!(get(addr, "/", "").await.status, 200);
}
