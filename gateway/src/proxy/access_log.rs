//! One JSON line per request (ECS field names where one fits), written by a background task so a
//! slow stdout never stalls a request. Query values under sensitive keys are redacted; headers
//! (credentials, cookies) are never logged.

use std::io::Write as _;

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
    tx: Option<mpsc::Sender<serde_json::Value>>,
}

impl AccessLog {
    /// Starts the writer task (stdout) or a no-op logger.
    pub fn start(enabled: bool) -> Self {
        if !enabled {
            return Self { tx: None };
        }
        let (tx, mut rx) = mpsc::channel::<serde_json::Value>(8192);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut out = std::io::stdout().lock();
                let _ = serde_json::to_writer(&mut out, &first);
                let _ = out.write_all(b"\n");
                // Drain what queued meanwhile in one locked write.
                while let Ok(next) = rx.try_recv() {
                    let _ = serde_json::to_writer(&mut out, &next);
                    let _ = out.write_all(b"\n");
                }
                let _ = out.flush();
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues a record; drops it (and counts nothing) when the writer is saturated rather than
    /// slowing requests down.
    pub fn log(&self, record: serde_json::Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(record);
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
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
    #[test]
    fn secrets_in_queries_are_redacted() {
        assert_eq!(
            super::redact_query("a=1&access_token=xyz&API_KEY=k&b"),
            "a=1&access_token=REDACTED&API_KEY=REDACTED&b"
        );
    }
}
