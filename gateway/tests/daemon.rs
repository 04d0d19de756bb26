//! The `gateway` binary as operators run it, L7 only (no XDP, no root): serves from the file,
//! reloads when the file changes, keeps serving when the new file is bad, drains on SIGTERM.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use support::backend::Backend;

struct Gateway {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn start(config: &std::path::Path) -> Self {
        Self::start_with_stdout(config, Stdio::null())
    }

    /// Started and ready, its stdout (the access log) going to `stdout`.
    fn start_with_stdout(config: &std::path::Path, stdout: Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let g = Self { child, logs };
        g.wait_for("gateway ready");
        g
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in logs: {:?}",
                self.logs.lock()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and how the process ended (within 10 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn backend_of(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["backend"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<no backend: {buf}>"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reloads_on_file_change_rejects_bad_files_and_drains_on_sigterm() {
    daemon_lifecycle("").await;
}

/// One worker runs on a single-threaded runtime: the same lifecycle must hold there (file
/// watching, reload, drain and exit all share the one thread with the connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_reloads_and_drains_on_a_single_thread() {
    daemon_lifecycle("workers: 1\n").await;
}

async fn daemon_lifecycle(workers: &str) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "gw-daemon-{}-{}",
        std::process::id(),
        workers.len()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.yaml");
    let n = workers.len();
    let yaml = |target: &Backend| {
        format!(
            "instance: daemon-test-{n}\n{workers}state_dir: {}\nlisteners: [{{ name: main, address: \"127.0.0.1:{port}\" }}]\n\
             access_log: off\nupstreams: {{ u: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ match: {{ prefix: / }}, upstream: u }}]\n",
            dir.display(),
            target.url()
        )
    };
    std::fs::write(&file, yaml(&a)).expect("write");
    let gw = Gateway::start(&file);
    assert_eq!(backend_of(port).await, "a");

    // Edit the file: picked up without a signal.
    std::fs::write(&file, yaml(&b)).expect("write");
    let deadline = Instant::now() + Duration::from_secs(6);
    while backend_of(port).await != "b" {
        assert!(Instant::now() < deadline, "file change not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file: rejected with file:line, the running config keeps serving.
    std::fs::write(&file, yaml(&a).replace("prefix: /", "prefix: nope")).expect("write");
    let line = gw.wait_for("reload rejected");
    assert!(line.contains("gateway.yaml:"), "{line}");
    assert_eq!(backend_of(port).await, "b");

    // SIGTERM: clean exit.
    let mut gw = gw;
    let status = gw.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(gw.count("stopped"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The access log as an operator reads it: the binary's stdout, one JSON line per request
/// (buffered, so read within its flush interval), secrets redacted, and every request's line
/// there when SIGTERM stops the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_a_json_line_per_request_on_stdout_and_survives_sigterm() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let backend = Backend::start("a").await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("gw-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "instance: access-log-test\nworkers: 1\nstate_dir: {}\nlisteners: [{{ name: main, address: \"127.0.0.1:{port}\" }}]\n\
             access_log: stdout\nupstreams: {{ u: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ name: all, match: {{ prefix: / }}, upstream: u }}]\n",
            dir.display(),
            backend.url()
        ),
    )
    .expect("write");
    let mut gw = Gateway::start_with_stdout(&file, Stdio::piped());
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let stdout = gw.child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let local = conn.local_addr().expect("local");
    let mut ask = async |id: &str| {
        let req = format!(
            "GET /orders/7?page=2&token=s3cret HTTP/1.1\r\nHost: a\r\nX-Request-Id: {id}\r\nUser-Agent: \"quoted\" agent\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // The backend's answer is JSON: read until its closing brace.
        while !got.ends_with(b"}") {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    };
    ask("first-request").await;
    // Within the flush interval, without more traffic.
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        if let Some(l) = lines.lock().unwrap_or_else(|p| p.into_inner()).first() {
            break l.clone();
        }
        assert!(Instant::now() < deadline, "no access-log line on stdout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let j: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(j["http"]["request"]["id"], "first-request");
    assert_eq!(j["http"]["request"]["method"], "GET");
    assert_eq!(j["http"]["response"]["status_code"], 200);
    assert_eq!(j["url"]["path"], "/orders/7");
    assert_eq!(j["url"]["query"], "page=2&token=REDACTED");
    assert_eq!(j["source"]["ip"], "127.0.0.1");
    assert_eq!(j["client"]["address"], local.to_string());
    assert_eq!(j["user_agent"]["original"], "\"quoted\" agent");
    assert_eq!(j["gateway"]["route"], "all");
    assert!(!first.contains("s3cret"), "{first}");

    // A burst and SIGTERM at once: every request's line is written, in order, before the
    // process exits (the writer's interval, a flush at shutdown and the last handle dropped
    // all write what waits; the unit tests pin the last two).
    for i in 0..50 {
        ask(&format!("burst-{i}")).await;
    }
    let status = gw.terminate();
    assert!(status.success(), "{status}");
    reader.join().expect("reader");
    let lines = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            j["http"]["request"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = std::iter::once("first-request".to_owned())
        .chain((0..50).map(|i| format!("burst-{i}")))
        .collect();
    assert_eq!(ids, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
