//! Security events: one JSON object per blocking or flagging decision, with Elastic Common
//! Schema field names, to a file or stdout and optionally to syslog. Off the request path:
//! callers pay a token-bucket check and a `try_send`; a writer task formats and writes. A flood
//! is cut per event class, and what was cut is reported in periodic `suppressed` records, so
//! the disk fills with counts, not copies.

mod ecs;
mod limit;
mod syslog;

use std::{
    io::Write as _,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::mpsc;

pub use ecs::RequestInfo;
pub use limit::{Class, Limiter};
pub use syslog::{SyslogError, format_5424};

use self::syslog::Syslog;
use crate::{
    config::{DefenseSection, EventsConfig},
    defense::{Record, ViolationSink},
    proxy::{problem::Problem, stage::Finding},
};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("telemetry.events.file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Syslog(#[from] SyslogError),
}

/// One event on its way to the writer.
struct Queued {
    /// `event.action`: also the syslog MSGID.
    action: &'static str,
    /// Syslog severity (4 warning, 5 notice, 6 info).
    severity: u8,
    record: Value,
}

/// The handle every producer holds: cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Queued>,
    limiter: Arc<Limiter>,
}

impl EventSink {
    /// Opens the outputs and starts the writer task (needs a tokio runtime). A file that
    /// cannot be opened or a bad CA bundle is an error here, not a silent loss later.
    pub fn start(config: &EventsConfig) -> Result<Self, EventsError> {
        let file = match &config.file {
            Some(path) => Some((path.clone(), open_file(path)?)),
            None => None,
        };
        let syslog = match &config.syslog {
            Some(s) => Some(Syslog::new(s.clone())?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(config.queue);
        let limiter = Arc::new(Limiter::new(config.rate, config.burst));
        let writer = Writer {
            file,
            stdout: config.stdout,
            syslog,
            limiter: Arc::clone(&limiter),
        };
        tokio::spawn(writer.run(rx, config.summary_interval));
        Ok(Self { tx, limiter })
    }

    /// Queues an event of `class` unless its bucket is empty or the queue full (both counted).
    /// `build` runs only for events that will be written.
    fn emit(
        &self,
        class: Class,
        action: &'static str,
        severity: u8,
        build: impl FnOnce() -> Value,
    ) {
        if !self.limiter.allow(class, Instant::now()) {
            return;
        }
        let queued = Queued {
            action,
            severity,
            record: build(),
        };
        if self.tx.try_send(queued).is_err() {
            self.limiter.suppress(class);
        }
    }

    /// A rejected request, if it is a security decision: the client's fault by the defense
    /// weights (the built-in table when there is no defense loop), or with a stage's evidence.
    pub fn on_rejected(
        &self,
        req: &RequestInfo<'_>,
        problem: &Problem,
        violations: Option<&ViolationSink>,
    ) {
        let stage_weight = problem.evidence.as_ref().and_then(|e| e.weight);
        let weight = weight_of(violations, problem.code, stage_weight);
        if weight > 0.0 || problem.evidence.is_some() {
            self.rejected(req, problem, weight);
        }
    }

    /// A finding: always an event.
    pub fn on_finding(
        &self,
        req: &RequestInfo<'_>,
        finding: &Finding,
        violations: Option<&ViolationSink>,
    ) {
        let weight = weight_of(violations, finding.code, finding.evidence.weight);
        self.flagged(req, finding, weight);
    }

    /// A request rejected for something the client did (`weight` is its defense-loop weight).
    pub fn rejected(&self, req: &RequestInfo<'_>, problem: &Problem, weight: f64) {
        self.emit(Class::Rejected, ecs::REJECTED, 4, || {
            ecs::rejected(req, problem, weight)
        });
    }

    /// Something a stage noticed without rejecting.
    pub fn flagged(&self, req: &RequestInfo<'_>, finding: &Finding, weight: f64) {
        self.emit(Class::Finding, ecs::FLAGGED, 5, || {
            ecs::flagged(req, finding, weight)
        });
    }

    /// An audit journal record (block, unblock, allowlist change, feed apply) as it is written.
    pub fn audit(&self, record: &Record) {
        let (action, severity) = ecs::audit_action(record);
        self.emit(Class::Change, action, severity, || {
            ecs::audit(record, action)
        });
    }

    /// A timed block that ran out and was swept from the maps.
    pub fn expired(&self, target: ipnet::IpNet, origin: &str, reason: &str) {
        self.emit(Class::Change, ecs::EXPIRED, 6, || {
            ecs::expired(target, origin, reason)
        });
    }

    /// An escalation the defense loop decided not to apply: `dry_run` or an allowlisted source.
    pub fn escalation_not_applied(
        &self,
        source: ipnet::IpNet,
        reason: &str,
        score: f64,
        ttl: Duration,
        dry_run: bool,
    ) {
        let action = if dry_run {
            ecs::SIMULATED
        } else {
            ecs::SKIPPED
        };
        self.emit(Class::Escalation, action, 5, || {
            ecs::not_applied(action, source, reason, score, ttl)
        });
    }
}

/// Where the events go, owned by the writer task.
struct Writer {
    /// The path too: a rotated file (renamed or removed by logrotate) is reopened.
    file: Option<(std::path::PathBuf, std::fs::File)>,
    stdout: bool,
    syslog: Option<Syslog>,
    limiter: Arc<Limiter>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>, every: Duration) {
        let mut summary = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                q = rx.recv() => {
                    let Some(first) = q else { break };
                    let mut batch = vec![first];
                    while batch.len() < 256 && let Ok(q) = rx.try_recv() {
                        batch.push(q);
                    }
                    self.write(batch).await;
                }
                _ = summary.tick() => {
                    self.reopen_if_rotated();
                    self.summarise().await;
                }
            }
        }
        self.summarise().await;
    }

    /// When the path no longer names the open file (logrotate renamed or removed it), opens a
    /// new one there; checked every summary interval, so no signal is needed.
    fn reopen_if_rotated(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let Some((path, file)) = &mut self.file else {
            return;
        };
        let same = match (std::fs::metadata(&*path), file.metadata()) {
            (Ok(on_disk), Ok(open)) => on_disk.dev() == open.dev() && on_disk.ino() == open.ino(),
            _ => false,
        };
        if !same {
            match open_file(path) {
                Ok(f) => *file = f,
                Err(e) => tracing::warn!(error = %e, "reopening the events file"),
            }
        }
    }

    async fn summarise(&mut self) {
        if let Some(counts) = self.limiter.take_suppressed() {
            self.write(vec![Queued {
                action: ecs::SUPPRESSED,
                severity: 6,
                record: ecs::suppressed(&counts),
            }])
            .await;
        }
    }

    async fn write(&mut self, batch: Vec<Queued>) {
        let mut lines = Vec::with_capacity(batch.len() * 512);
        for q in &batch {
            let _ = serde_json::to_writer(&mut lines, &q.record);
            lines.push(b'\n');
        }
        if let Some((_, f)) = &mut self.file
            && let Err(e) = f.write_all(&lines)
        {
            tracing::warn!(error = %e, "writing security events");
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&lines);
            let _ = out.flush();
        }
        if let Some(s) = &mut self.syslog {
            for q in batch {
                let json = q.record.to_string();
                if !s.send(q.action, q.severity, &json).await {
                    self.limiter.suppress(class_of(q.action));
                }
            }
        }
    }
}

fn weight_of(violations: Option<&ViolationSink>, code: &str, stage: Option<f64>) -> f64 {
    static DEFAULTS: std::sync::LazyLock<DefenseSection> =
        std::sync::LazyLock::new(DefenseSection::default);
    match violations {
        Some(v) => v.weight_of(code, stage),
        None => stage.unwrap_or_else(|| DEFAULTS.weight(code)),
    }
}

fn class_of(action: &str) -> Class {
    match action {
        ecs::REJECTED => Class::Rejected,
        ecs::FLAGGED => Class::Finding,
        ecs::SIMULATED | ecs::SKIPPED => Class::Escalation,
        _ => Class::Change,
    }
}

fn open_file(path: &Path) -> Result<std::fs::File, EventsError> {
    let err = |source| EventsError::File {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)
}

/// Whether `ip` is a host address worth putting in `source.ip` (ECS wants an address there).
fn host_ip(net: &ipnet::IpNet) -> Option<IpAddr> {
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}
