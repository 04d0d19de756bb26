//! One JSON line per request (ECS field names where one fits). Query values under sensitive
//! keys are redacted; headers (credentials, cookies) are never logged.
//!
//! Lines are formatted per thread and appended to one buffer, which a thread of its own writes
//! out at the latest every [`FLUSH_EVERY`] (sooner once [`WAKE_AT`] bytes wait), as nginx's
//! `access_log ... buffer= flush=` does: a request costs the formatting and a copy, never a
//! system call, and a slow stdout blocks that thread, not a worker (the writer used to be a task
//! on a worker's runtime doing blocking writes). Past [`MAX_PENDING`] bytes waiting, lines are
//! dropped and counted.
//!
//! The line is written by hand, not through serde: the shape is fixed, the keys need no
//! escaping, and serde_json's per-byte escaping of keys and values made the line cost ~9,000
//! instructions per request (callgrind, `gateway+access_log` of `cargo xtask bench l7`), 43 %
//! more than proxying the request.

use std::{
    io::Write,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

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

/// Longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffered bytes that wake the writer before its time.
const WAKE_AT: usize = 64 * 1024;
/// Buffered bytes past which lines are dropped (the writer is stuck).
const MAX_PENDING: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct AccessLog {
    sink: Option<Arc<Sink>>,
}

/// The buffer, the output and the writer thread's handle.
struct Sink {
    /// Lines not written yet.
    pending: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
    writer: std::thread::Thread,
    dropped: AtomicU64,
}

/// A thread's line being formatted, and the timestamp's text for the current second: the
/// shared buffer's lock is held for the copy only, so workers do not queue behind each other's
/// formatting.
struct Scratch {
    line: Vec<u8>,
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    stamp: [u8; 19],
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch {
            line: Vec::new(),
            second: u64::MAX,
            stamp: [0; 19],
        })
    };
}

/// What one access-log line says, borrowed from the request that finished.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub path: &'a str,
    /// As the client sent it: the log redacts it ([`redact_query`]).
    pub query: Option<&'a str>,
    /// The client as every stage saw it.
    pub source_ip: &'a str,
    /// The transport peer, `ip:port` (`[ip]:port` for IPv6).
    pub client: &'a str,
    pub user_agent: Option<&'a str>,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl AccessLog {
    /// Starts the writer (stdout) or a no-op logger.
    pub fn start(enabled: bool) -> Self {
        if !enabled {
            return Self { sink: None };
        }
        Self::to_writer(std::io::stdout())
    }

    /// Starts a writer thread that writes the lines to `out`. If the thread cannot be started,
    /// lines are written by [`AccessLog::flush`] only.
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Weak<Sink>>(1);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let Ok(sink) = rx.recv() else { return };
                // Holds the sink only while writing: the last handle dropped ends the thread.
                loop {
                    std::thread::park_timeout(FLUSH_EVERY);
                    match sink.upgrade() {
                        Some(sink) => sink.write_pending(),
                        None => return,
                    }
                }
            });
        let writer = match &spawned {
            Ok(handle) => handle.thread().clone(),
            Err(e) => {
                tracing::error!(error = %e, "access log: no writer thread");
                std::thread::current()
            }
        };
        let sink = Arc::new(Sink {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            out: Mutex::new(Box::new(out)),
            writer,
            dropped: AtomicU64::new(0),
        });
        let _ = tx.send(Arc::downgrade(&sink));
        Self { sink: Some(sink) }
    }

    /// Buffers a record; drops it (and counts it) when the writer is that far behind rather
    /// than slowing requests down.
    pub fn log(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let now = SystemTime::now();
        // A thread being torn down has no scratch left: its line is dropped.
        let _ = SCRATCH.try_with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                line,
                second,
                stamp,
            } = &mut *scratch;
            line.clear();
            write_line(line, (second, stamp), now, entry);
            let mut pending = sink.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_PENDING {
                drop(pending);
                let dropped = sink.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Said, not per line: at 1, 2, 4, 8, ... lines.
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "access log: output too slow, lines dropped");
                }
                return;
            }
            pending.extend_from_slice(line);
            let wake = pending.len() >= WAKE_AT;
            drop(pending);
            if wake {
                sink.writer.unpark();
            }
        });
    }

    /// Writes what is buffered now (shutdown).
    pub fn flush(&self) {
        if let Some(sink) = &self.sink {
            sink.write_pending();
        }
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Lines dropped because the output did not keep up.
    pub fn dropped(&self) -> u64 {
        self.sink
            .as_ref()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }
}

impl Sink {
    /// Takes the buffer (the loggers go on with an empty one) and writes it out.
    fn write_pending(&self) {
        // The output first: two writers (the thread and a flush) keep the lines in order.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.is_empty() {
                return;
            }
            let capacity = pending.capacity();
            std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
        };
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.write_pending();
    }
}

/// Appends `entry` as one JSON line (the same fields, in the same order, as the serde
/// structure it replaces). `(second, stamp)`: the cached text of the current second.
fn write_line(
    out: &mut Vec<u8>,
    (second, stamp): (&mut u64, &mut [u8; 19]),
    now: SystemTime,
    entry: &Entry<'_>,
) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    if since.as_secs() != *second {
        *second = since.as_secs();
        // `YYYY-MM-DDTHH:MM:SSZ`: the part before the `Z` is what each line repeats.
        let text = humantime::format_rfc3339_seconds(now).to_string();
        if let Some(head) = text.as_bytes().get(..19) {
            stamp.copy_from_slice(head);
        }
    }
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"@timestamp\":\"");
    out.extend_from_slice(stamp);
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
    out.extend_from_slice(b"\",\"event\":{\"duration\":");
    let nanos = u64::try_from(entry.duration.as_nanos()).unwrap_or(u64::MAX);
    out.extend_from_slice(num.format(nanos).as_bytes());
    out.extend_from_slice(b",\"dataset\":\"gateway.access\"},\"http\":{\"request\":{\"id\":");
    json_str(out, entry.request_id);
    out.extend_from_slice(b",\"method\":");
    json_str(out, entry.method);
    out.extend_from_slice(b"},\"response\":{\"status_code\":");
    out.extend_from_slice(num.format(entry.status).as_bytes());
    out.extend_from_slice(b"}},\"url\":{\"path\":");
    json_str(out, entry.path);
    out.extend_from_slice(b",\"query\":");
    match entry.query {
        Some(query) => {
            out.push(b'"');
            for (i, piece) in redacted(query).enumerate() {
                if i > 0 {
                    out.push(b'&');
                }
                match piece {
                    Piece::Kept(pair) => json_str_contents(out, pair),
                    Piece::Redacted(key) => {
                        json_str_contents(out, key);
                        out.extend_from_slice(b"=REDACTED");
                    }
                }
            }
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"},\"source\":{\"ip\":");
    json_str(out, entry.source_ip);
    out.extend_from_slice(b"},\"client\":{\"address\":");
    json_str(out, entry.client);
    out.extend_from_slice(b"},\"user_agent\":{\"original\":");
    json_opt(out, entry.user_agent);
    out.extend_from_slice(b"},\"gateway\":{\"listener\":");
    json_str(out, entry.listener);
    out.extend_from_slice(b",\"route\":");
    json_opt(out, entry.route);
    out.extend_from_slice(b",\"upstream\":");
    json_opt(out, entry.upstream);
    out.extend_from_slice(b",\"reason\":");
    json_opt(out, entry.reason);
    out.extend_from_slice(b"}}\n");
}

fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_str_contents(out, s);
    out.push(b'"');
}

/// `s` escaped as RFC 8259 requires (and as serde_json does): `"`, `\` and control characters;
/// runs without any are copied whole, found eight bytes at a time.
fn json_str_contents(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8)
            && !any_needs_escape(u64::from_le_bytes(
                <[u8; 8]>::try_from(chunk).unwrap_or_default(),
            ))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        i += 1;
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[start..i - 1]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether one of the eight bytes of `x` is a control character, `"` or `\` (exact: the
/// classic "has a byte less than n" and "has a zero byte" word tests).
fn any_needs_escape(x: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    below(x, 0x20) || zero(x ^ (ONES * u64::from(b'"'))) || zero(x ^ (ONES * u64::from(b'\\')))
}

/// A piece of a query string as the log shows it.
enum Piece<'a> {
    Kept(&'a str),
    /// A secret's key; its value is not shown.
    Redacted(&'a str),
}

/// The `&`-separated pairs of `query`, those with a secret key redacted.
fn redacted(query: &str) -> impl Iterator<Item = Piece<'_>> {
    query.split('&').map(|pair| match pair.split_once('=') {
        Some((k, _)) if SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) => Piece::Redacted(k),
        _ => Piece::Kept(pair),
    })
}

/// The query string with secret values replaced by `REDACTED`.
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, piece) in redacted(query).enumerate() {
        if i > 0 {
            out.push('&');
        }
        match piece {
            Piece::Kept(pair) => out.push_str(pair),
            Piece::Redacted(key) => {
                out.push_str(key);
                out.push_str("=REDACTED");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
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

    #[test]
    fn each_request_is_one_json_line_with_ecs_fields() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone());
        let query = super::redact_query("page=2&access_token=secret");
        for (i, source_ip) in ["198.51.100.7", "2001:db8::7"].into_iter().enumerate() {
            log.log(&Entry {
                request_id: "req-1",
                method: "GET",
                status: 403,
                duration: Duration::from_micros(1500),
                path: "/orders/\"7\"",
                query: (i == 0).then_some(query.as_str()),
                source_ip,
                client: "10.0.0.2:51000",
                user_agent: Some("curl/8"),
                listener: "main",
                route: Some("orders"),
                upstream: None,
                reason: Some("waf_blocked"),
            });
        }
        // The writer thread writes within FLUSH_EVERY; waiting for it is part of the test.
        let mut text = String::new();
        for _ in 0..200 {
            text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
            if text.lines().count() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
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

    #[test]
    fn any_text_in_a_field_comes_back_as_it_was() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone());
        let nasty = "q\"uo\\te \n\r\t\u{8}\u{c}\u{1}\u{1f} é 漢字 😀 </script>";
        let query = format!("a={nasty}&token=s3cret&b");
        log.log(&Entry {
            request_id: nasty,
            method: "PATCH",
            status: 200,
            duration: Duration::from_nanos(7),
            path: nasty,
            query: Some(&query),
            source_ip: "::1",
            client: "[::1]:8443",
            user_agent: None,
            listener: nasty,
            route: None,
            upstream: Some(nasty),
            reason: None,
        });
        log.flush();
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        let line: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(line["http"]["request"]["id"], nasty);
        assert_eq!(line["url"]["path"], nasty);
        assert_eq!(line["gateway"]["listener"], nasty);
        assert_eq!(line["gateway"]["upstream"], nasty);
        assert_eq!(line["url"]["query"], format!("a={nasty}&token=REDACTED&b"));
        assert_eq!(line["url"]["query"], super::redact_query(&query));
        assert_eq!(line["client"]["address"], "[::1]:8443");
        assert_eq!(line["event"]["duration"], 7);
        assert_eq!(line["user_agent"]["original"], serde_json::Value::Null);
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn lines_stop_being_buffered_when_the_output_is_stuck_and_none_is_lost_before() {
        /// An output that blocks until the test lets it go.
        struct Stuck(Arc<Mutex<()>>, Captured);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _gate = self.0.lock().expect("gate");
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("gate");
        let captured = Captured::default();
        let log = AccessLog::to_writer(Stuck(Arc::clone(&gate), captured.clone()));
        let path = "/".repeat(4096);
        let entry = Entry {
            request_id: "r",
            method: "GET",
            status: 200,
            duration: Duration::ZERO,
            path: &path,
            query: None,
            source_ip: "192.0.2.1",
            client: "192.0.2.1:1",
            user_agent: None,
            listener: "main",
            route: None,
            upstream: None,
            reason: None,
        };
        // Logging never waits for the stuck output; past the cap lines are counted as dropped.
        let lines = 2 * super::MAX_PENDING / path.len() + 100;
        let started = std::time::Instant::now();
        for _ in 0..lines {
            log.log(&entry);
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(log.dropped() > 0, "some lines were dropped");
        drop(held);
        log.flush();
        let written = captured.0.lock().expect("lock").clone();
        let kept = written
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        assert_eq!(
            kept + log.dropped(),
            lines as u64,
            "every line written or counted"
        );
    }

    #[test]
    fn the_word_test_agrees_with_the_byte_rule() {
        let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for b in 0..=255u8 {
            for pos in 0..8 {
                // The byte among plain ones, and among bytes >= 0x80 (UTF-8).
                for fill in [b'a', 0xC3, 0xFF, b'~'] {
                    let mut w = [fill; 8];
                    w[pos] = b;
                    assert_eq!(
                        super::any_needs_escape(u64::from_le_bytes(w)),
                        needs(b) || needs(fill),
                        "{b:#x} at {pos} among {fill:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flush_or_the_last_handle_dropped_writes_what_waits_at_once() {
        let out = Captured::default();
        let log = AccessLog::to_writer(out.clone());
        let entry = |id| Entry {
            request_id: id,
            method: "GET",
            status: 200,
            duration: Duration::ZERO,
            path: "/",
            query: None,
            source_ip: "192.0.2.1",
            client: "192.0.2.1:1",
            user_agent: None,
            listener: "main",
            route: None,
            upstream: None,
            reason: None,
        };
        let ids = || {
            let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
            text.lines()
                .map(|l| {
                    let j: serde_json::Value = serde_json::from_str(l).expect("JSON");
                    j["http"]["request"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect::<Vec<_>>()
        };
        // Checked right after, well within the writer's interval (shutdown, process exit).
        log.log(&entry("one"));
        log.flush();
        assert_eq!(ids(), ["one"]);
        let other = log.clone();
        log.log(&entry("two"));
        drop(log);
        other.log(&entry("three"));
        drop(other);
        assert_eq!(ids(), ["one", "two", "three"]);
    }
}
