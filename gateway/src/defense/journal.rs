//! The audit journal: one JSON line per block, unblock and allowlist change, appended and
//! fsync'd before the change is applied, replayed into the maps at start.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("audit journal {}: {source}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Block,
    Unblock,
    Allow,
    Disallow,
    /// A reputation feed (or geo list) applied: one record per apply, counts in the note.
    Feed,
}

/// One change, as SOC analysts read it back with `gateway audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unix seconds.
    pub ts: u64,
    pub action: Action,
    /// Address or CIDR.
    pub target: String,
    pub origin: String,
    /// Stable reason code name (`operator`, `pps-cap`, ...).
    pub reason: String,
    /// Free text from the analyst (`--reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Unix seconds; absent means permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Who: the CLI user, or the automatic rule.
    pub actor: String,
}

pub struct Journal {
    path: PathBuf,
    /// Every record written also becomes a security event (set by the daemon).
    events: std::sync::OnceLock<crate::telemetry::events::EventSink>,
}

impl Journal {
    /// The journal at `dir/journal.jsonl`, creating `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            path: dir.join("journal.jsonl"),
            events: std::sync::OnceLock::new(),
        })
    }

    /// Where records also go as security events, when set.
    pub fn events(&self) -> Option<&crate::telemetry::events::EventSink> {
        self.events.get()
    }

    /// Sends every record appended from now on to `events` too.
    pub fn set_events(&self, events: crate::telemetry::events::EventSink) {
        let _ = self.events.set(events);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and fsyncs one record; returns only once it is on disk.
    pub fn append(&self, record: &Record) -> Result<(), JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| err(e.into()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        file.write_all(&line).map_err(err)?;
        file.sync_data().map_err(err)?;
        if let Some(events) = self.events.get() {
            events.audit(record);
        }
        Ok(())
    }

    /// Every record in order. A torn last line (a crash mid-write) is skipped, as is any line
    /// that does not parse; neither stops the replay.
    pub fn read(&self) -> Result<Vec<Record>, JournalError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(JournalError {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })?;
            match serde_json::from_str::<Record>(&line) {
                Ok(r) => out.push(r),
                Err(e) if !line.trim().is_empty() => {
                    tracing::warn!(journal = %self.path.display(), line = n + 1, error = %e, "skipping unreadable journal line");
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: Action, target: &str) -> Record {
        Record {
            ts: 1,
            action,
            target: target.into(),
            origin: "manual".into(),
            reason: "operator".into(),
            note: Some("scanner".into()),
            expires: None,
            actor: "alice".into(),
        }
    }

    #[test]
    fn appends_and_reads_back_skipping_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("gw-journal-{}", std::process::id()));
        let j = Journal::open(&dir).expect("open");
        j.append(&record(Action::Block, "192.0.2.1/32"))
            .expect("append");
        j.append(&record(Action::Unblock, "192.0.2.1/32"))
            .expect("append");
        // A crash in the middle of a write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(j.path())
            .expect("open");
        f.write_all(b"{\"ts\":3,\"act").expect("write");
        let records = j.read().expect("read");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].action, Action::Block);
        assert_eq!(records[1].action, Action::Unblock);
    }
}
