//! The WAF stage through the real proxy, with a small rule file of the operator's own: a match
//! blocks with 403 problem+json (no rule internals), JSON bodies are inspected, routes without
//! the WAF and route exclusions let the same request through, detect-only mode forwards and
//! writes the audit log, and a broken rule file is refused with its file:line.

mod support;

use std::{net::SocketAddr, path::Path, time::Duration};

use gateway::{config::Config, proxy::server::Proxy};
use support::backend::Backend;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const RULES: &str = r#"
SecDefaultAction "phase:2,log,pass"
SecRule ARGS "@contains attack" \
    "id:100,phase:2,deny,status:403,t:none,t:lowercase,msg:'attack word in %{MATCHED_VAR_NAME}',\
    tag:'demo'"
SecRule REQUEST_HEADERS:X-Probe "@streq yes" "id:101,phase:1,pass,log,msg:'probe header'"
"#;

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("gateway-waf-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn yaml(backend: &Backend, dir: &Path, mode: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams:
  echo: {{ endpoints: ["{}"] }}
routes:
  - {{ name: open, match: {{ prefix: /open }}, upstream: echo }}
  - name: excluded
    match: {{ prefix: /excluded }}
    upstream: echo
    waf: {{ exclusions: [{{ ids: ["100"], targets: ["ARGS:q"] }}] }}
  - {{ name: api, match: {{ prefix: / }}, upstream: echo, waf: on }}
waf:
  rules: ["{}/*.conf"]
  mode: {mode}
  audit_log: "{}/audit.jsonl"
"#,
        backend.url(),
        dir.display(),
        dir.display()
    )
}

async fn start(yaml: &str) -> Proxy {
    let config = Config::parse(Path::new("waf.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    Proxy::start(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn send(addr: SocketAddr, request: String) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(target: &str, id: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn blocks_with_a_problem_and_spares_routes_without_the_waf() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("own.conf"), RULES).expect("rules");
    let backend = Backend::start("echo").await;
    let proxy = start(&yaml(&backend, &dir.0, "block")).await;
    let addr = proxy.addr("main").expect("listener");

    let (status, text) = send(addr, get("/api/x?q=An%20ATTACK", "r-1")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("\"code\":\"waf_blocked\""), "{text}");
    assert!(text.contains("\"request_id\":\"r-1\""), "{text}");
    assert!(
        !text.contains("attack word") && !text.contains("100"),
        "internals leaked: {text}"
    );
    assert_eq!(backend.hits(), 0);

    // A JSON body is inspected as ARGS:json.*.
    let body = r#"{"note":{"text":"attack"}}"#;
    let post = format!(
        "POST /api/notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = send(addr, post).await;
    assert_eq!(status, 403, "{text}");

    // The same request on a route without the WAF, and on a route that excludes ARGS:q for 100.
    let (status, text) = send(addr, get("/open/x?q=attack", "r-2")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = send(addr, get("/excluded/x?q=attack", "r-3")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = send(addr, get("/excluded/x?other=attack", "r-4")).await;
    assert_eq!(status, 403, "{text}");
    let (status, _) = send(addr, get("/api/x?q=fine", "r-5")).await;
    assert_eq!(status, 200);

    let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).expect("audit log");
    let line = audit
        .lines()
        .find(|l| l.contains("\"request_id\":\"r-1\""))
        .unwrap_or_else(|| panic!("r-1 audited: {audit}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["rule_ids"], serde_json::json!([100]));
    assert_eq!(v["blocked_by"], 100);
    assert_eq!(v["matches"][0]["variable"], "ARGS:q");
    assert_eq!(v["matches"][0]["msg"], "attack word in ARGS:q");
    assert!(
        !audit.contains("\"r-2\"") && !audit.contains("\"r-5\""),
        "{audit}"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn detect_mode_forwards_and_audits() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("own.conf"), RULES).expect("rules");
    let backend = Backend::start("echo").await;
    let proxy = start(&yaml(&backend, &dir.0, "detect")).await;
    let addr = proxy.addr("main").expect("listener");
    let req = "GET /api/x?q=attack HTTP/1.1\r\nHost: t\r\nX-Probe: yes\r\nX-Request-Id: d-1\r\nConnection: close\r\n\r\n";
    let (status, text) = send(addr, req.to_owned()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(backend.hits(), 1);
    let audit = std::fs::read_to_string(dir.0.join("audit.jsonl")).expect("audit log");
    let v: serde_json::Value =
        serde_json::from_str(audit.lines().next().expect("a line")).expect("json");
    assert_eq!(v["request_id"], "d-1");
    assert_eq!(v["rule_ids"], serde_json::json!([101, 100]));
    assert_eq!(v["blocked_by"], serde_json::Value::Null);
    proxy.shutdown(Duration::from_secs(2)).await;
}

/// A URL-encoded POST of `body` to `/api/form`, closing the connection.
fn form_post(body: &str) -> String {
    format!(
        "POST /api/form HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Under `limit` (a `waf:` setting), with each `body_limit_action`: `over` is refused with 413
/// `code` (`reject`) or passes with only part of it inspected (`partial`); bodies within the
/// limit are inspected whole (`attack` refused with 403, `fine` passed).
async fn over_limit_is_refused_or_inspected_partially(
    limit: &str,
    over: &str,
    code: &str,
    attack: &str,
    fine: &str,
) {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("own.conf"), RULES).expect("rules");
    let backend = Backend::start("echo").await;
    for (action, over_status) in [("reject", 413), ("partial", 200)] {
        let cfg = yaml(&backend, &dir.0, "block")
            + &format!("  {limit}\n  body_limit_action: {action}\n");
        let proxy = start(&cfg).await;
        let addr = proxy.addr("main").expect("listener");
        let (status, text) = send(addr, form_post(over)).await;
        assert_eq!(status, over_status, "{action}: {text}");
        if action == "reject" {
            assert!(text.contains(&format!("\"code\":\"{code}\"")), "{text}");
        }
        let (status, text) = send(addr, form_post(attack)).await;
        assert_eq!(status, 403, "{action}: {text}");
        let (status, text) = send(addr, form_post(fine)).await;
        assert_eq!(status, 200, "{action}: {text}");
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

/// A body past `waf.body_limit` is refused before any rule runs (CPU per request is linear in
/// what is inspected); with `partial` only its start is inspected, so an attack past the limit
/// passes and one inside it is still caught.
#[tokio::test]
async fn bodies_over_the_inspection_limit_are_refused_or_inspected_partially() {
    let over = format!("a={}&b=attack", "x".repeat(1500));
    over_limit_is_refused_or_inspected_partially(
        "body_limit: 1KiB",
        &over,
        "waf_body_too_large",
        "q=attack",
        "q=fine",
    )
    .await;
}

/// A body with more arguments than `waf.max_args` is refused with `reject`; with `partial`
/// only the first arguments are inspected (an attack in the fourth of four passes, one in the
/// third is caught), so a body of many tiny arguments cannot buy unbounded rule work.
#[tokio::test]
async fn bodies_over_the_argument_limit_are_refused_or_inspected_partially() {
    over_limit_is_refused_or_inspected_partially(
        "max_args: 3",
        "a=1&b=2&c=3&q=attack",
        "waf_too_many_arguments",
        "a=1&b=2&q=attack",
        "a=1&b=2&q=fine",
    )
    .await;
}

#[tokio::test]
async fn a_broken_rule_file_is_refused_with_file_and_line() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("bad.conf"),
        "# fine\nSecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\nSecRuleScript /x.lua\n",
    )
    .expect("rules");
    let backend = Backend::start("echo").await;
    let config = Config::parse(Path::new("waf.yaml"), &yaml(&backend, &dir.0, "block"))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = match Proxy::start(&config).await {
        Ok(_) => panic!("a broken rule file must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("bad.conf:3:"), "{err}");
    assert!(err.contains("SecRuleScript"), "{err}");
}
