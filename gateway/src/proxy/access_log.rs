//! One JSON line per request (ECS field names where one fits), written by a background task so a
//! slow stdout never stalls a request. Query values under sensitive keys are redacted; headers
//! (credentials, cookies) are never logged.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use tokio::sync::mpsc;

/// Query parameters whose values never reach the log.
const SECRET_KEYS: [&str; 12] = [
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "signature",
    "sig",
    "code",
];

#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Vec<u8>>>,
}

/// What one access-log line says, borrowed from the request that finished.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub path: &'a str,
    /// Already redacted ([`redact_query`]).
    pub query: Option<&'a str>,
    /// The client as every stage saw it.
    pub source_ip: IpAddr,
    /// The transport peer.
    pub client: SocketAddr,
    pub user_agent: Option<&'a str>,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl AccessLog {
    /// Starts the writer task (stdout) or a no-op logger.
    pub fn start(enabled: bool) -> Self {
        if !enabled {
            return Self { tx: None };
        }
        Self::to_writer(std::io::stdout())
    }

    /// Starts a writer task that writes the lines to `out`.
    pub fn to_writer(mut out: impl std::io::Write + Send + 'static) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8192);
        tokio::spawn(async move {
            while let Some(mut batch) = rx.recv().await {
                // What queued meanwhile goes out in the same write (stdout is line-buffered:
                // line by line, every record would be a system call of its own).
                while let Ok(next) = rx.try_recv() {
                    batch.extend_from_slice(&next);
                }
                let _ = out.write_all(&batch);
                let _ = out.flush();
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues a record; drops it (and counts nothing) when the writer is saturated rather than
    /// slowing requests down.
    pub fn log(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else {
            return;
        };
        // Serialised here, straight from borrowed fields: a `serde_json::Value` tree (a map
        // with owned keys per object) cost more than proxying the request.
        let mut source = [0u8; 64];
        let mut client = [0u8; 64];
        let line = Line {
            timestamp: Timestamp(std::time::SystemTime::now()),
            event: Event {
                duration: u64::try_from(entry.duration.as_nanos()).unwrap_or(u64::MAX),
                dataset: "gateway.access",
            },
            http: Http {
                request: HttpRequest {
                    id: entry.request_id,
                    method: entry.method,
                },
                response: HttpResponse {
                    status_code: entry.status,
                },
            },
            url: Url {
                path: entry.path,
                query: entry.query,
            },
            source: Source {
                ip: super::headers::format_addr(&mut source, entry.source_ip, None),
            },
            client: Client {
                address: super::headers::format_addr(
                    &mut client,
                    entry.client.ip(),
                    Some(entry.client.port()),
                ),
            },
            user_agent: UserAgent {
                original: entry.user_agent,
            },
            gateway: GatewayFields {
                listener: entry.listener,
                route: entry.route,
                upstream: entry.upstream,
                reason: entry.reason,
            },
        };
        let mut out = Vec::with_capacity(384);
        if serde_json::to_writer(&mut out, &line).is_ok() {
            out.push(b'\n');
            let _ = tx.try_send(out);
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
}

/// The line's shape: ECS field names.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: Timestamp,
    event: Event,
    http: Http<'a>,
    url: Url<'a>,
    source: Source<'a>,
    client: Client<'a>,
    user_agent: UserAgent<'a>,
    gateway: GatewayFields<'a>,
}

/// RFC 3339 with milliseconds, UTC.
struct Timestamp(std::time::SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

#[derive(Serialize)]
struct Event {
    /// Nanoseconds, as ECS wants.
    duration: u64,
    dataset: &'static str,
}

#[derive(Serialize)]
struct Http<'a> {
    request: HttpRequest<'a>,
    response: HttpResponse,
}

#[derive(Serialize)]
struct HttpRequest<'a> {
    id: &'a str,
    method: &'a str,
}

#[derive(Serialize)]
struct HttpResponse {
    status_code: u16,
}

#[derive(Serialize)]
struct Url<'a> {
    path: &'a str,
    query: Option<&'a str>,
}

#[derive(Serialize)]
struct Source<'a> {
    ip: &'a str,
}

#[derive(Serialize)]
struct Client<'a> {
    address: &'a str,
}

#[derive(Serialize)]
struct UserAgent<'a> {
    original: Option<&'a str>,
}

#[derive(Serialize)]
struct GatewayFields<'a> {
    listener: &'a str,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    reason: Option<&'a str>,
}

/// The query string with secret values replaced by `REDACTED`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                format!("{k}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        net::IpAddr,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::{AccessLog, Entry};

    #[test]
    fn secrets_in_queries_are_redacted() {
        assert_eq!(
            super::redact_query("a=1&access_token=xyz&API_KEY=k&b"),
            "a=1&access_token=REDACTED&API_KEY=REDACTED&b"
        );
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_request_is_one_json_line_with_ecs_fields() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone());
        let query = super::redact_query("page=2&access_token=secret");
        for (i, ip) in ["198.51.100.7", "2001:db8::7"].into_iter().enumerate() {
            let source_ip: IpAddr = ip.parse().expect("ip");
            log.log(&Entry {
                request_id: "req-1",
                method: "GET",
                status: 403,
                duration: Duration::from_micros(1500),
                path: "/orders/\"7\"",
                query: (i == 0).then_some(query.as_str()),
                source_ip,
                client: "10.0.0.2:51000".parse().expect("addr"),
                user_agent: Some("curl/8"),
                listener: "main",
                route: Some("orders"),
                upstream: None,
                reason: Some("waf_blocked"),
            });
        }
        let mut text = String::new();
        for _ in 0..100 {
            tokio::task::yield_now().await;
            text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
            if text.lines().count() == 2 {
                break;
            }
        }
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["http"]["request"]["id"], "req-1");
        assert_eq!(first["http"]["request"]["method"], "GET");
        assert_eq!(first["http"]["response"]["status_code"], 403);
        assert_eq!(first["event"]["duration"], 1_500_000);
        assert_eq!(first["event"]["dataset"], "gateway.access");
        assert_eq!(first["url"]["path"], "/orders/\"7\"");
        assert_eq!(first["url"]["query"], "page=2&access_token=REDACTED");
        assert_eq!(first["source"]["ip"], "198.51.100.7");
        assert_eq!(first["client"]["address"], "10.0.0.2:51000");
        assert_eq!(first["user_agent"]["original"], "curl/8");
        assert_eq!(first["gateway"]["route"], "orders");
        assert_eq!(first["gateway"]["upstream"], serde_json::Value::Null);
        assert_eq!(first["gateway"]["reason"], "waf_blocked");
        let stamp = first["@timestamp"].as_str().expect("timestamp");
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert_eq!(lines[1]["source"]["ip"], "2001:db8::7");
        assert_eq!(lines[1]["url"]["query"], serde_json::Value::Null);
        assert!(!text.contains("secret"));
    }
}
