//! The L7 proxy in process, on loopback ports chosen by the kernel, in front of real hyper
//! upstreams: routing and normalisation, limits, client identity, header hygiene, problem
//! responses, TLS through the whole stack, reload under load, graceful shutdown.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use gateway::{config::Config, proxy::server::Proxy};
use support::backend::Backend;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

fn config(yaml: &str) -> Config {
    Config::parse(Path::new("test.yaml"), yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

async fn start(yaml: &str) -> Proxy {
    Proxy::start(&config(yaml)).await.expect("proxy starts")
}

/// One plain listener, one upstream (`upstream`, a URL), everything routed to it; `extra`:
/// more top-level YAML (limits, say).
fn one_route(upstream: &str, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
{extra}
upstreams: {{ b: {{ endpoints: ["{upstream}"] }} }}
routes: [{{ match: {{ prefix: / }}, upstream: b }}]
"#
    )
}

/// A response read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
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

    /// How many times the head carries `name`.
    fn header_count(&self, name: &str) -> usize {
        self.head
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            })
            .count()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Sends raw bytes (exact request target, no client-side normalisation), reads to EOF.
async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head: head.to_owned(),
        body: dechunk(head, body),
    }
}

fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

async fn get(addr: SocketAddr, target: &str, extra: &str) -> Raw {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
}

fn two_backends_yaml(admin: &Backend, public: &Backend, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams:
  admin: {{ endpoints: ["{}"] }}
  public: {{ endpoints: ["{}"] }}
routes:
  - {{ name: admin, match: {{ prefix: /admin, case_insensitive: true }}, upstream: admin }}
  - {{ name: orders, match: {{ path: "/orders/{{id}}", methods: [GET, DELETE] }}, upstream: public }}
  - {{ name: public, match: {{ prefix: / }}, upstream: public }}
{extra}"#,
        admin.url(),
        public.url()
    )
}

#[tokio::test]
async fn bypass_attempts_against_a_protected_prefix_never_reach_the_open_route() {
    let (admin, public) = (
        Backend::start("admin").await,
        Backend::start("public").await,
    );
    let proxy = start(&two_backends_yaml(&admin, &public, "")).await;
    let addr = proxy.addr("main").expect("listener");

    // (request target, expected status, expected backend if 200, path the upstream must see)
    let table: &[(&str, u16, &str, &str)] = &[
        ("/admin/users", 200, "admin", "/admin/users"),
        ("//admin/users", 200, "admin", "/admin/users"),
        ("/public/../admin/users", 200, "admin", "/admin/users"),
        ("/%2e%2e/admin/users", 200, "admin", "/admin/users"),
        ("/x/%2E%2E/admin/users", 200, "admin", "/admin/users"),
        ("/%61dmin/users", 200, "admin", "/admin/users"),
        ("/Admin/users", 200, "admin", "/Admin/users"),
        ("/ADMIN", 200, "admin", "/ADMIN"),
        ("/admin%2fusers", 400, "", ""),
        ("/admin%2Fusers", 400, "", ""),
        ("/admin;jsessionid=x/users", 400, "", ""),
        ("/admin%3busers", 400, "", ""),
        ("/admin%5cusers", 400, "", ""),
        ("/admin\\users", 400, "", ""),
        ("/admin%00", 400, "", ""),
        ("/admin%zz", 400, "", ""),
        ("/adminx", 200, "public", "/adminx"),
        ("/public/a//b/./c", 200, "public", "/public/a/b/c"),
        ("/orders/42?x=1", 200, "public", "/orders/42?x=1"),
    ];
    for (target, status, backend, seen) in table {
        let r = get(addr, target, "").await;
        assert_eq!(r.status, *status, "{target}: {r:?}");
        if *status == 200 {
            let j = r.json();
            assert_eq!(j["backend"], *backend, "{target}");
            assert_eq!(j["path"], *seen, "{target}");
        } else {
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/problem+json"),
                "{target}: {r:?}"
            );
        }
    }

    // 404 and 405 are problems too, with the request id; 405 says what is allowed.
    let r = get(addr, "/orders/42", "").await;
    assert_eq!(r.status, 200);
    let r = raw(
        addr,
        b"POST /orders/42 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    // The catch-all route takes POSTs, so this goes to `public`; a host-limited router shows 405:
    assert_eq!(r.status, 200);
    drop(proxy);
    let proxy = start(&format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ public: {{ endpoints: ["{}"] }} }}
routes: [{{ match: {{ path: "/orders/{{id}}", methods: [GET, DELETE] }}, upstream: public }}]
"#,
        public.url()
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    let r = raw(
        addr,
        b"POST /orders/42 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow").as_deref(), Some("GET, DELETE"));
    let j = r.json();
    assert_eq!(j["code"], "method_not_allowed");
    assert_eq!(
        Some(j["request_id"].as_str().unwrap_or_default().to_owned()),
        r.header("x-request-id")
    );
    let r = get(addr, "/nothing", "X-Request-Id: trace-abc-123\r\n").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "route_not_found");
    assert_eq!(r.json()["request_id"], "trace-abc-123");
    assert!(admin.hits() > 0 && public.hits() > 0);
}

#[tokio::test]
async fn size_limits_answer_431_414_413() {
    let b = Backend::start("b").await;
    let proxy = start(&one_route(
        &b.url(),
        "http: { max_headers: 20, max_uri_bytes: 1KiB, max_body_bytes: 1KiB }",
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = get(addr, "/", &many).await;
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(r.json()["code"], "headers_too_large");

    let long = format!("/{}", "a".repeat(2000));
    let r = get(addr, &long, "").await;
    assert_eq!(r.status, 414, "{r:?}");

    // Declared too large: refused before reading the body.
    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    // Also when the declared size is one the gateway would otherwise read with the head.
    let started = Instant::now();
    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the body"
    );
    // Chunked, found too large while streaming.
    let mut req =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'x'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(addr, &req).await;
    assert_eq!(r.status, 413, "{r:?}");
    // Within limits: forwarded whole.
    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 10);
}

/// The header-count limit is exact at the default (100, hyper's own ceiling too) and above it
/// (hyper's ceiling raised past ours, so our problem+json 431 answers). The upstream is a closed
/// port: a request within the limits gets the gateway's 502 (an upstream server has its own
/// header limit, and the gateway adds forwarding headers).
#[tokio::test]
async fn header_count_limit_is_exact_at_the_default_and_above_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    for (limits, limit) in [("", 100), ("http: { max_headers: 150 }", 150)] {
        let proxy = start(&format!(
            r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
{limits}
upstreams: {{ b: {{ endpoints: ["http://{closed_addr}"] }} }}
routes: [{{ match: {{ prefix: / }}, upstream: b }}]
"#
        ))
        .await;
        let addr = proxy.addr("main").expect("listener");
        // `get` sends Host and Connection itself.
        let r = get(addr, "/", &headers(limit - 2)).await;
        assert_eq!(r.status, 502, "{limit} headers: {r:?}");
        let r = get(addr, "/", &headers(limit - 1)).await;
        assert_eq!(r.status, 431, "{} headers: {r:?}", limit + 1);
        if limit > 100 {
            assert_eq!(r.json()["code"], "headers_too_large");
        }
    }
}

#[tokio::test]
async fn a_stalled_body_gets_408_whether_streamed_or_read_whole() {
    let b = Backend::start("b").await;
    let proxy = start(&format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
http: {{ body_timeout: 300ms }}
upstreams: {{ b: {{ endpoints: ["{}"] }} }}
routes:
  - {{ name: buffered, match: {{ prefix: /checked }}, upstream: b, validate: {{ json: {{ max_depth: 8 }} }} }}
  - {{ name: streamed, match: {{ prefix: / }}, upstream: b }}
"#,
        b.url()
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    for path in ["/checked", "/streamed"] {
        // Ten of the hundred bytes announced, then nothing.
        let started = Instant::now();
        let r = raw(
            addr,
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"a\": 1234"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 408, "{path}: {r:?}");
        assert_eq!(r.json()["code"], "body_timeout", "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path}: the connection stayed open"
        );
        // A body that keeps coming, if slowly, is not cut off: each pause is under the limit.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
                 Content-Length: 11\r\nConnection: close\r\n\r\n{{\"a\":"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        for piece in ["12", "34", "5}"] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            s.write_all(piece.as_bytes()).await.expect("write");
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        let head = String::from_utf8_lossy(&buf);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    }
}

#[tokio::test]
async fn slowloris_connections_are_closed_while_others_are_served() {
    let b = Backend::start("b").await;
    let proxy = start(&one_route(&b.url(), "http: { header_timeout: 300ms }")).await;
    let addr = proxy.addr("main").expect("listener");
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .expect("write");
        slow.push(s);
    }
    // Normal clients are served meanwhile.
    for _ in 0..5 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    let started = Instant::now();
    for mut s in slow {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("slow connection left open");
        // Closed (0 bytes or reset), possibly after a 408.
        if let Ok(n) = n
            && n > 0
        {
            assert!(
                String::from_utf8_lossy(&buf[..n]).contains("408"),
                "unexpected answer"
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn client_identity_trusts_forwarding_headers_only_from_trusted_proxies() {
    let b = Backend::start("b").await;
    let yaml = |trusted: &str, proxy_protocol: bool| {
        format!(
            r#"
listeners: [{{ name: main, address: "127.0.0.1:0", proxy_protocol: {proxy_protocol} }}]
trusted_proxies: [{trusted}]
access_log: off
upstreams: {{ b: {{ endpoints: ["{}"] }} }}
routes: [{{ match: {{ prefix: / }}, upstream: b }}]
"#,
            b.url()
        )
    };
    // Untrusted peer: its forged headers are replaced.
    let proxy = start(&yaml("10.0.0.0/8", false)).await;
    let addr = proxy.addr("main").expect("listener");
    let j = get(
        addr,
        "/",
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n",
    )
    .await
    .json();
    assert_eq!(j["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(j["headers"]["x-real-ip"], "127.0.0.1");
    assert!(j["headers"].get("forwarded").is_none(), "{j}");
    assert_eq!(j["headers"]["x-forwarded-proto"], "http");
    assert_eq!(j["headers"]["x-forwarded-host"], "api.test");
    drop(proxy);

    // Trusted peer: the rightmost untrusted hop is the client; the chain is extended.
    let proxy = start(&yaml("127.0.0.0/8", false)).await;
    let addr = proxy.addr("main").expect("listener");
    let j = get(addr, "/", "X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n")
        .await
        .json();
    assert_eq!(j["headers"]["x-real-ip"], "198.51.100.7");
    assert_eq!(
        j["headers"]["x-forwarded-for"],
        "6.6.6.6, 198.51.100.7, 127.0.0.1"
    );
    drop(proxy);

    // PROXY protocol from a trusted balancer.
    let proxy = start(&yaml("127.0.0.0/8", true)).await;
    let addr = proxy.addr("main").expect("listener");
    let r = raw(
        addr,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.json()["headers"]["x-real-ip"], "203.0.113.9");
    // No header where one is required: closed without an answer.
    let r = get(addr, "/", "").await;
    assert_eq!(r.status, 0, "{r:?}");
    drop(proxy);

    // PROXY protocol from a peer that is not a trusted balancer: refused.
    let proxy = start(&yaml("10.0.0.0/8", true)).await;
    let addr = proxy.addr("main").expect("listener");
    let r = raw(
        addr,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 0, "{r:?}");
}

#[tokio::test]
async fn the_gateways_own_headers_replace_what_client_and_upstream_sent_once_each() {
    let b = Backend::start("b").await;
    let proxy = start(&one_route(&b.url(), "")).await;
    let addr = proxy.addr("main").expect("listener");
    let forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\n\
                  X-Forwarded-Host: evil.test\r\nX-Real-IP: 6.6.6.6\r\n\
                  X-Request-Id: trace-abc-123\r\nX-Test-Answer-Ids: 1\r\n";
    // HTTP/1.1 is served by the gateway's own loop, HTTP/1.0 by hyper: both write the
    // gateway's headers, each once.
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let request =
            format!("GET / {version}\r\nHost: api.test\r\n{forged}Connection: close\r\n\r\n");
        let r = raw(addr, request.as_bytes()).await;
        assert_eq!(r.status, 200, "{version}: {r:?}");
        let j = r.json();
        assert_eq!(j["repeated"], serde_json::json!([]), "{version}: {j}");
        let sent = &j["headers"];
        assert_eq!(sent["x-forwarded-for"], "127.0.0.1", "{version}: {j}");
        assert_eq!(sent["x-forwarded-proto"], "http", "{version}");
        assert_eq!(sent["x-forwarded-host"], "api.test", "{version}");
        assert_eq!(sent["x-real-ip"], "127.0.0.1", "{version}");
        assert_eq!(sent["x-request-id"], "trace-abc-123", "{version}");
        for (name, value) in [
            ("x-request-id", "trace-abc-123"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(r.header_count(name), 1, "{version} {name}: {r:?}");
            assert_eq!(r.header(name).as_deref(), Some(value), "{version} {name}");
        }
    }
}

#[tokio::test]
async fn hop_by_hop_headers_never_cross_and_upstream_identity_is_hidden() {
    let b = Backend::start("b").await;
    let proxy = start(&format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ b: {{ endpoints: ["{}"] }} }}
routes:
  - match: {{ prefix: / }}
    upstream: b
    security_headers: {{ extra: {{ Permissions-Policy: "geolocation=()" }} }}
"#,
        b.url()
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    let r = get(
        addr,
        "/",
        "Connection: X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n",
    )
    .await;
    let j = r.json();
    assert!(j["headers"].get("x-secret-hop").is_none(), "{j}");
    assert!(j["headers"].get("keep-alive").is_none(), "{j}");
    assert_eq!(j["headers"]["x-kept"], "yes");
    assert!(
        j["headers"]["x-request-id"]
            .as_str()
            .is_some_and(|s| s.len() == 32
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
        "{j}"
    );
    assert_eq!(r.header("server"), None, "{r:?}");
    assert_eq!(r.header("x-powered-by"), None);
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        r.header("permissions-policy").as_deref(),
        Some("geolocation=()")
    );
    // Plain HTTP: no HSTS.
    assert_eq!(r.header("strict-transport-security"), None);
}

/// An HTTP/1.1 upstream on a raw socket that answers every request on a connection with
/// `response` (keep-alive); aborted on drop.
struct RawUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start(response: &'static [u8]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Requests here are bodiless GETs: a head is a request.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if s.write_all(response).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the client gets of an upstream's response fields is the same whichever way the gateway
/// carries them: kept in the upstream's bytes (HTTP/1.1 client, no stage reads them), in a map
/// (a route with CORS reads them) or through hyper (HTTP/2 client). Hop-by-hop fields and those
/// the upstream's `Connection` names stay behind, identity is hidden, the gateway's own request
/// id and security headers replace the upstream's, repeated fields keep their order.
#[tokio::test]
async fn an_upstreams_response_fields_reach_the_client_the_same_on_every_path() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Upstream-Secret\r\nX-Upstream-Secret: 1\r\n\
          Keep-Alive: timeout=5\r\nSERVER: upstream/1.0\r\nX-Powered-By: PHP\r\n\
          x-request-id: from-upstream\r\nX-Frame-Options: ALLOWALL\r\nSet-Cookie: a=1\r\n\
          Cache-Control: no-store\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = start(&format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ b: {{ endpoints: ["http://{}"] }} }}
routes:
  - {{ name: cors, match: {{ prefix: /cors }}, upstream: b, cors: {{ origins: [https://app.example] }} }}
  - {{ name: plain, match: {{ prefix: / }}, upstream: b }}
"#,
        upstream.addr
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");

    // (lowercase name, value) in the order received; left out: the date (it differs) and the
    // gateway's own `Connection: close` (the test client asks for it).
    let fields = |pairs: Vec<(String, String)>| -> Vec<(String, String)> {
        pairs
            .into_iter()
            .filter(|(n, v)| n != "date" && !(n == "connection" && v == "close"))
            .collect()
    };
    let from_head = |r: &Raw| {
        fields(
            r.head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
        )
    };
    let check = |label: &str, got: &[(String, String)]| {
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        for gone in [
            "connection",
            "keep-alive",
            "x-upstream-secret",
            "server",
            "x-powered-by",
        ] {
            assert!(!names.contains(&gone), "{label}: {gone} crossed: {got:?}");
        }
        let values = |name: &str| -> Vec<&str> {
            got.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("set-cookie"), ["a=1", "b=2"], "{label}: {got:?}");
        assert_eq!(values("cache-control"), ["no-store"], "{label}");
        assert_eq!(values("x-frame-options"), ["DENY"], "{label}");
        assert_eq!(values("x-content-type-options"), ["nosniff"], "{label}");
        let id = values("x-request-id");
        assert!(
            id.len() == 1 && id[0] != "from-upstream",
            "{label}: {got:?}"
        );
    };

    let plain = get(addr, "/plain", "").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "ok"),
        "{plain:?}"
    );
    assert_eq!(plain.header("content-length").as_deref(), Some("2"));
    check(
        "HTTP/1.1, fields in the upstream's bytes",
        &from_head(&plain),
    );

    let cors = get(addr, "/cors", "Origin: https://app.example\r\n").await;
    assert_eq!((cors.status, cors.body.as_str()), (200, "ok"), "{cors:?}");
    assert_eq!(
        cors.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    check("HTTP/1.1, fields in a map (CORS)", &from_head(&cors));

    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2c handshake");
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/h2"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    let h2: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    check("HTTP/2 through hyper", &fields(h2));
    driver.abort();
}

#[tokio::test]
async fn upstream_failures_are_problem_responses() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let slow = Backend::start("slow").await;
    let proxy = start(&format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams:
  down: {{ endpoints: ["http://{closed}"], retries: {{ attempts: 0 }} }}
  slow: {{ endpoints: ["{}"], response_timeout: 200ms, retries: {{ attempts: 0 }} }}
routes:
  - {{ match: {{ prefix: /down }}, upstream: down }}
  - {{ match: {{ prefix: /slow }}, upstream: slow }}
"#,
        slow.url()
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    let r = get(addr, "/down", "").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(
        r.json()["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("upstream_")),
        "{r:?}"
    );
    assert!(
        !r.body.contains(&closed.port().to_string()),
        "internals leaked: {}",
        r.body
    );
    let started = Instant::now();
    let r = get(addr, "/slow/2000", "").await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn tls_end_to_end_h2_and_h1_with_hsts_and_mtls() {
    let pki = support::pki::Pki::new();
    let server = pki.server("api", &["api.example.com"]);
    let client_cert = pki.client("client", "svc-a", vec![]);
    let b = Backend::start("b").await;
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}
  - name: mtls
    address: "127.0.0.1:0"
    tls: {{ certificates: [{{ cert: "{}", key: "{}" }}], client_auth: required, client_ca: "{}" }}
access_log: off
upstreams: {{ b: {{ endpoints: ["{}"] }} }}
routes: [{{ match: {{ prefix: / }}, upstream: b }}]
"#,
        server.cert.display(),
        server.key.display(),
        server.cert.display(),
        server.key.display(),
        pki.ca_pem.display(),
        b.url()
    );
    let proxy = start(&yaml).await;
    for (alpn, want) in [
        ("h2", http::Version::HTTP_2),
        ("http/1.1", http::Version::HTTP_11),
    ] {
        let cfg = pki.client_config(&[&rustls::version::TLS13], &[alpn], None);
        let resp = tls_get(proxy.addr("tls").expect("tls"), cfg, "/hello")
            .await
            .expect("tls request");
        assert_eq!(resp.0, 200);
        assert_eq!(resp.1, want);
        assert!(
            resp.2.get("strict-transport-security").is_some(),
            "no HSTS on TLS"
        );
        assert!(
            resp.3.contains("\"x-forwarded-proto\":\"https\""),
            "{}",
            resp.3
        );
    }
    // mTLS listener: no certificate, no service; a CA-signed one, served.
    let cfg = pki.client_config(&[&rustls::version::TLS13], &["http/1.1"], None);
    assert!(
        tls_get(proxy.addr("mtls").expect("mtls"), cfg, "/")
            .await
            .is_err()
    );
    let cfg = pki.client_config(
        &[&rustls::version::TLS13],
        &["http/1.1"],
        Some(&client_cert),
    );
    let resp = tls_get(proxy.addr("mtls").expect("mtls"), cfg, "/")
        .await
        .expect("mtls request");
    assert_eq!(resp.0, 200);
}

/// One request over TLS (SNI api.example.com); (status, version, headers, body).
async fn tls_get(
    addr: SocketAddr,
    cfg: rustls::ClientConfig,
    path: &str,
) -> Result<(u16, http::Version, http::HeaderMap, String), Box<dyn std::error::Error + Send + Sync>>
{
    use http_body_util::BodyExt as _;
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from("api.example.com")?;
    let tls = connector.connect(name, tcp).await?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(format!("https://api.example.com{path}"))
        .header("host", "api.example.com")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8_lossy(&body.collect().await?.to_bytes()).into_owned();
    Ok((parts.status.as_u16(), parts.version, parts.headers, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_a_bad_reload_changes_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let yaml = |target: &Backend| {
        format!(
            r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ u: {{ endpoints: ["{}"], health: {{ path: /, interval: 50ms }} }} }}
routes: [{{ match: {{ prefix: / }}, upstream: u }}]
"#,
            target.url()
        )
    };
    let proxy = Arc::new(start(&yaml(&a)).await);
    let addr = proxy.addr("main").expect("listener");
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (failures, done, stop) = (Arc::clone(&failures), Arc::clone(&done), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get(addr, "/", "").await;
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let (ya, yb) = (config(&yaml(&a)), config(&yaml(&b)));
    for i in 0..50 {
        proxy
            .reload(if i % 2 == 0 { &yb } else { &ya })
            .expect("reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    assert!(
        done.load(Ordering::Relaxed) > 50,
        "too little load to mean anything"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    // The last reload (i = 49) installed `a`.
    assert_eq!(get(addr, "/", "").await.json()["backend"], "a");

    // A file whose route names an unknown upstream is refused whole, with its line; the
    // running generation keeps serving.
    let bad = yaml(&b).replace("upstream: u", "upstream: nope");
    let err = Config::parse(Path::new("test.yaml"), &bad).expect_err("bad file accepted");
    assert!(err.to_string().starts_with("test.yaml:5:"), "{err}");
    assert_eq!(get(addr, "/", "").await.json()["backend"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let b = Backend::start("b").await;
    let proxy = start(&one_route(&b.url(), "")).await;
    let addr = proxy.addr("main").expect("listener");
    let inflight = tokio::spawn(async move { get(addr, "/slow/300", "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown(Duration::from_secs(5)).await;
    let r = inflight.await.expect("request task");
    assert_eq!(r.status, 200, "in-flight request cut: {r:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// Reads exactly one response (by `Content-Length`, or to the last chunk) off a keep-alive
/// connection.
async fn one_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            let complete = match length {
                Some(n) => body.len() >= n,
                None => body.ends_with("0\r\n\r\n"),
            };
            if complete {
                return text;
            }
        }
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Polls until connecting to `addr` is refused (a stopped listener's socket closes as its
/// task is dropped, a moment after the reload returns).
async fn refused(addr: SocketAddr) -> bool {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_the_file_on_reload() {
    let b = Backend::start("b").await;
    let yaml = |listeners: &str| {
        format!(
            r#"
listeners: [{listeners}]
access_log: off
upstreams: {{ b: {{ endpoints: ["{}"] }} }}
routes: [{{ match: {{ prefix: / }}, upstream: b }}]
"#,
            b.url()
        )
    };
    let main = r#"{ name: main, address: "127.0.0.1:0" }"#;
    let proxy = start(&yaml(main)).await;
    let main_addr = proxy.addr("main").expect("main listening");

    // Added: accepts at once; the running listener keeps its socket.
    let extra = format!(r#"{{ name: extra, address: "127.0.0.1:{}" }}"#, free_port());
    proxy
        .reload(&config(&yaml(&format!("{main}, {extra}"))))
        .expect("reload adds a listener");
    let extra_addr = proxy.addr("extra").expect("extra listening");
    assert_eq!(proxy.addr("main"), Some(main_addr));
    assert_eq!(get(extra_addr, "/", "").await.status, 200);
    assert_eq!(get(main_addr, "/", "").await.status, 200);

    // A keep-alive connection open on it when it is removed...
    let mut kept = TcpStream::connect(extra_addr).await.expect("connect");
    kept.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .expect("write");
    let first = tokio::time::timeout(Duration::from_secs(5), one_response(&mut kept))
        .await
        .expect("answer in time");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // Removed: no new connections...
    proxy
        .reload(&config(&yaml(main)))
        .expect("reload removes a listener");
    assert!(proxy.addr("extra").is_none());
    assert!(
        refused(extra_addr).await,
        "a removed listener still accepts"
    );
    // ...while the open one is served to its end.
    kept.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest)).await;
    assert!(
        rest.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );

    // An address already taken: the whole reload is refused, naming the listener; nothing
    // changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    let err = proxy
        .reload(&config(&yaml(&format!(
            r#"{main}, {{ name: busy, address: "{taken_addr}" }}"#
        ))))
        .expect_err("an address in use accepted");
    assert!(err.to_string().contains("busy"), "{err}");
    assert!(proxy.addr("busy").is_none());
    assert_eq!(get(main_addr, "/", "").await.status, 200);

    // Moved: served on the new address only.
    let port = free_port();
    proxy
        .reload(&config(&yaml(&format!(
            r#"{{ name: main, address: "127.0.0.1:{port}" }}"#
        ))))
        .expect("reload moves a listener");
    let moved = proxy.addr("main").expect("main listening");
    assert_eq!(moved.port(), port);
    assert_eq!(get(moved, "/", "").await.status, 200);
    assert!(refused(main_addr).await, "the old address still accepts");

    // Renamed on the same address: the socket stays.
    proxy
        .reload(&config(&yaml(&format!(
            r#"{{ name: public, address: "127.0.0.1:{port}" }}"#
        ))))
        .expect("reload renames a listener");
    assert_eq!(proxy.addr("public"), Some(moved));
    assert!(proxy.addr("main").is_none());
    assert_eq!(get(moved, "/", "").await.status, 200);

    // Its settings change on the same socket: new connections get the redirect to HTTPS.
    proxy
        .reload(&config(&yaml(&format!(
            r#"{{ name: public, address: "127.0.0.1:{port}", redirect_https_port: 8443 }}"#
        ))))
        .expect("reload changes a listener's settings");
    assert_eq!(proxy.addr("public"), Some(moved));
    let r = get(moved, "/orders?page=2", "").await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://api.test:8443/orders?page=2")
    );
}

/// The gateway's own HTTP/1.1 path and hyper behind it, on one connection and on others: what
/// it serves itself (pipelined requests, a body in two pieces) and what it hands to hyper
/// (chunked bodies, `Expect: 100-continue`, HTTP/1.0, the HTTP/2 preface) all answer, in order.
#[tokio::test]
async fn own_http1_path_and_its_handovers_to_hyper_answer_alike() {
    let b = Backend::start("b").await;
    let proxy = start(&one_route(&b.url(), "")).await;
    let addr = proxy.addr("main").expect("listener");
    let body_of = |text: &str| -> serde_json::Value {
        let (_, body) = text.split_once("\r\n\r\n").expect("head");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
    };

    let mut s = TcpStream::connect(addr).await.expect("connect");
    // Two requests in one write: two answers, in order.
    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let one = one_response(&mut s).await;
    assert!(one.starts_with("HTTP/1.1 200 OK\r\n"), "{one}");
    assert!(one.to_ascii_lowercase().contains("\r\ndate: "), "{one}");
    assert_eq!(body_of(&one)["path"], "/one");
    assert_eq!(body_of(&one_response(&mut s).await)["path"], "/two");
    // A body in two pieces, the second after a pause.
    s.write_all(b"POST /split HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"world").await.expect("write");
    let split = body_of(&one_response(&mut s).await);
    assert_eq!(
        (split["path"].as_str(), split["body_len"].as_u64()),
        (Some("/split"), Some(10))
    );
    // A chunked body: hyper's from here on, on the same connection, and so is what follows.
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let chunked = body_of(&one_response(&mut s).await);
    assert_eq!(chunked["body_len"], 5);
    s.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(body_of(&one_response(&mut s).await)["path"], "/after");

    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"PUT /expect HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    )
    .await
    .expect("write");
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").await.expect("write");
    assert_eq!(body_of(&one_response(&mut s).await)["body_len"], 3);

    // A body shorter than its Content-Length, then the client half-closes: answered (hyper
    // reads it), 400 as for a body read whole, not 502.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /short HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("body_incomplete"), "{answer}");

    // HTTP/1.0 without keep-alive: answered, then closed.
    let r = raw(addr, b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/old")));

    // HTTP/2 with prior knowledge on the plain listener.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/h2c"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}

/// A response the upstream streams (server-sent events, long polls) reaches the client piece by
/// piece: the first piece arrives while the upstream still holds back the second.
#[tokio::test]
async fn a_streamed_response_is_passed_on_piece_by_piece() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream_addr = upstream.local_addr().expect("addr");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.expect("request head");
            head.push(byte[0]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nd\r\ndata: first\n\n\r\n")
            .await
            .expect("first piece");
        let _ = released.await;
        s.write_all(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
            .await
            .expect("second piece");
    });
    let proxy = start(&one_route(&format!("http://{upstream_addr}"), "")).await;
    let addr = proxy.addr("main").expect("listener");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk))
            .await
            .expect("the first piece came before the upstream sent the second")
            .expect("read");
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("second"));
    let _ = release.send(());
    let rest = one_response_rest(&mut s, seen).await;
    assert!(rest.contains("data: second"), "{rest}");
    server.await.expect("upstream");
}

/// Reads on until the last chunk of a chunked response that started with `seen`.
async fn one_response_rest(s: &mut TcpStream, mut seen: Vec<u8>) -> String {
    let mut chunk = [0u8; 1024];
    while !seen.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk))
            .await
            .expect("the rest came")
            .expect("read");
        assert!(n > 0, "closed mid-response");
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}
