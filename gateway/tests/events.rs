//! Security events end to end in process: a real proxy rejecting real requests, events written
//! to a file with ECS names and secrets redacted, delivered to real syslog receivers (UDP, TCP
//! and TLS sockets opened by the test, RFC 5424 frames parsed here), and a flood cut by the rate
//! limit with the suppressed count reported.

mod support;

use std::{path::Path, sync::Arc, time::Duration};

use gateway::{
    config::{Config, EventsConfig, SyslogConfig, SyslogTransport},
    defense::{Action, L7Blocks, Record},
    proxy::server::{DefenseHooks, Proxy},
    telemetry::events::EventSink,
};
use support::{backend::Backend, pki::Pki};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
};

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("gw-events-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A parsed RFC 5424 message: PRI, MSGID and the JSON message.
#[derive(Debug)]
struct Frame {
    pri: u8,
    app: String,
    msgid: String,
    json: serde_json::Value,
}

fn parse_5424(text: &str) -> Frame {
    let rest = text.strip_prefix('<').expect("starts with <PRI>");
    let (pri, rest) = rest.split_once('>').expect("PRI closes");
    let mut fields = rest.splitn(8, ' ');
    assert_eq!(fields.next(), Some("1"), "VERSION in {text}");
    let ts = fields.next().expect("TIMESTAMP");
    assert!(
        humantime::parse_rfc3339(ts).is_ok(),
        "bad timestamp `{ts}` in {text}"
    );
    let _host = fields.next().expect("HOSTNAME");
    let app = fields.next().expect("APP-NAME").to_owned();
    let procid = fields.next().expect("PROCID");
    assert!(procid.parse::<u32>().is_ok(), "PROCID {procid}");
    let msgid = fields.next().expect("MSGID").to_owned();
    assert_eq!(fields.next(), Some("-"), "no structured data in {text}");
    let msg = fields.next().expect("MSG");
    Frame {
        pri: pri.parse().expect("PRI number"),
        app,
        msgid,
        json: serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {msg}")),
    }
}

/// Reads octet-counted frames (`LEN SP MSG`) off a stream into a channel.
async fn read_counted(stream: impl tokio::io::AsyncRead + Unpin, tx: mpsc::UnboundedSender<Frame>) {
    let mut r = BufReader::new(stream);
    loop {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).await.unwrap_or(0) == 0 {
            return;
        }
        let n: usize = std::str::from_utf8(&len[..len.len() - 1])
            .expect("ascii length")
            .parse()
            .expect("octet count");
        let mut msg = vec![0; n];
        r.read_exact(&mut msg).await.expect("frame body");
        let _ = tx.send(parse_5424(std::str::from_utf8(&msg).expect("utf-8")));
    }
}

fn events_config(file: Option<&Path>, syslog: Option<SyslogConfig>) -> EventsConfig {
    EventsConfig {
        file: file.map(Path::to_owned),
        syslog,
        ..EventsConfig::default()
    }
}

fn syslog(address: String, transport: SyslogTransport) -> SyslogConfig {
    SyslogConfig {
        address,
        transport,
        facility: gateway::config::Facility::Local0,
        app_name: "gw-test".into(),
        ca: None,
        server_name: None,
    }
}

fn record(i: u32) -> Record {
    Record {
        ts: 1_700_000_000,
        action: Action::Block,
        target: format!("192.0.2.{i}/32"),
        origin: "manual".into(),
        reason: "operator".into(),
        note: Some("scanner".into()),
        expires: Some(1_700_000_600),
        actor: "cli:alice".into(),
    }
}

async fn wait_for_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "fewer than {n} events in {}: {}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test]
async fn rejected_requests_become_ecs_events_with_secrets_redacted_and_reach_udp_syslog() {
    let dir = TempDir::new("udp");
    let file = dir.0.join("events.json");
    let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let events = EventSink::start(&events_config(
        Some(&file),
        Some(syslog(
            receiver.local_addr().expect("addr").to_string(),
            SyslogTransport::Udp,
        )),
    ))
    .expect("events start");
    let backend = Backend::start("app").await;
    let yaml = format!(
        "listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\naccess_log: off\n\
         upstreams: {{ app: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ match: {{ prefix: / }}, upstream: app }}]\n",
        backend.url()
    );
    let config = Config::parse(Path::new("t.yaml"), &yaml).expect("config");
    let proxy = Proxy::start_with(
        &config,
        DefenseHooks {
            blocked: Arc::new(L7Blocks::default()),
            events: Some(events),
            ..DefenseHooks::default()
        },
    )
    .await
    .expect("proxy");
    let addr = proxy.addr("main").expect("addr");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /files/..%2fetc%2fpasswd?access_token=s3cr3t&page=2 HTTP/1.1\r\nHost: a\r\n\
          Authorization: Bearer t0ken-value\r\nCookie: session=c00kie\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 400"));
    // An ordinary request is no security event.
    let mut ok = TcpStream::connect(addr).await.expect("connect");
    ok.write_all(b"GET /fine HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let _ = ok.read_to_end(&mut Vec::new()).await;

    let lines = wait_for_lines(&file, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = std::fs::read_to_string(&file).expect("file");
    assert_eq!(text.lines().count(), 1, "one event only: {text}");
    let e = &lines[0];
    assert!(
        e["@timestamp"]
            .as_str()
            .is_some_and(|t| humantime::parse_rfc3339(t).is_ok())
    );
    assert_eq!(e["event"]["kind"], "alert");
    assert_eq!(e["event"]["action"], "request_rejected");
    assert_eq!(e["event"]["reason"], "path_encoded_slash");
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(e["event"]["type"][0], "denied");
    assert!(
        e["event"]["category"]
            .as_array()
            .is_some_and(|c| c.contains(&"web".into()))
    );
    assert_eq!(e["source"]["ip"], "127.0.0.1");
    assert_eq!(e["url"]["path"], "/files/..%2fetc%2fpasswd");
    assert_eq!(e["url"]["query"], "access_token=REDACTED&page=2");
    assert_eq!(e["http"]["request"]["method"], "GET");
    assert_eq!(e["http"]["response"]["status_code"], 400);
    assert!(
        e["http"]["request"]["id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(e["rule"]["name"], "path_encoded_slash");
    assert_eq!(e["gateway"]["weight"], 10.0);
    for secret in ["s3cr3t", "t0ken-value", "c00kie"] {
        assert!(!text.contains(secret), "`{secret}` leaked: {text}");
    }

    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(5), receiver.recv(&mut buf))
        .await
        .expect("a datagram")
        .expect("recv");
    let frame = parse_5424(std::str::from_utf8(&buf[..n]).expect("utf-8"));
    // local0 (16) * 8 + warning (4).
    assert_eq!(frame.pri, 132);
    assert_eq!(frame.app, "gw-test");
    assert_eq!(frame.msgid, "request_rejected");
    assert_eq!(frame.json["url"]["query"], "access_token=REDACTED&page=2");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_flood_over_tcp_syslog_is_cut_and_the_suppressed_count_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(read_counted(s, tx.clone()));
        }
    });
    let events = EventSink::start(&EventsConfig {
        rate: 1.0,
        burst: 3,
        summary_interval: Duration::from_millis(300),
        ..events_config(None, Some(syslog(addr, SyslogTransport::Tcp)))
    })
    .expect("events start");
    for i in 0..20 {
        events.audit(&record(i));
    }
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {frames:?}"))
            .expect("frame");
        frames.push(f);
    }
    let blocked: Vec<_> = frames
        .iter()
        .filter(|f| f.msgid == "source_blocked")
        .collect();
    assert_eq!(blocked.len(), 3, "{frames:?}");
    assert_eq!(blocked[0].json["event"]["category"][0], "network");
    assert_eq!(blocked[0].json["source"]["ip"], "192.0.2.0");
    assert_eq!(blocked[0].json["gateway"]["actor"], "cli:alice");
    assert_eq!(blocked[0].json["gateway"]["ttl_seconds"], 600);
    let summary = frames
        .iter()
        .find(|f| f.msgid == "suppressed")
        .unwrap_or_else(|| panic!("no summary in {frames:?}"));
    assert_eq!(summary.json["event"]["action"], "suppressed");
    assert_eq!(summary.json["gateway"]["suppressed"]["change"], 17);
    assert_eq!(summary.json["gateway"]["suppressed_total"], 17);
}

#[tokio::test]
async fn events_reach_a_tls_syslog_collector() {
    let pki = Pki::new();
    let server = pki.server("syslog", &["syslog.test"]);
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![server.der.clone()], server.key_der())
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(s).await {
                tokio::spawn(read_counted(tls, tx.clone()));
            }
        }
    });
    let mut cfg = syslog(addr, SyslogTransport::Tls);
    cfg.ca = Some(pki.ca_pem.clone());
    cfg.server_name = Some("syslog.test".into());
    let events = EventSink::start(&events_config(None, Some(cfg))).expect("events start");
    let mut unblock = record(7);
    unblock.action = Action::Unblock;
    events.audit(&unblock);
    let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a frame over TLS")
        .expect("frame");
    assert_eq!(f.msgid, "source_unblocked");
    assert_eq!(f.json["event"]["type"][0], "deletion");
    assert_eq!(f.json["source"]["ip"], "192.0.2.7");
}

#[tokio::test]
async fn a_rotated_events_file_is_reopened() {
    let dir = TempDir::new("rotate");
    let file = dir.0.join("events.json");
    let events = EventSink::start(&EventsConfig {
        summary_interval: Duration::from_millis(100),
        ..events_config(Some(&file), None)
    })
    .expect("events start");
    events.audit(&record(1));
    wait_for_lines(&file, 1).await;
    // logrotate's default: rename, then the writer must notice and create a new file.
    let rotated = dir.0.join("events.json.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    events.audit(&record(2));
    let lines = wait_for_lines(&file, 1).await;
    assert_eq!(lines[0]["gateway"]["target"], "192.0.2.2/32");
    let old = std::fs::read_to_string(&rotated).expect("rotated");
    assert_eq!(old.lines().count(), 1, "{old}");
}
