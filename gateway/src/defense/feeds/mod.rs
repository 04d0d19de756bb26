//! Reputation feeds and geo lists in the kernel denylist. Each source (a feed `feed:<name>` or
//! a country `geo:<CC>`) has its entry set kept under the state directory, so the next apply
//! (also after a restart) knows what left the source and removes it. One journal record per
//! apply that changed something, with the counts; never one per entry.
//!
//! Ownership: an entry another origin already holds (an analyst's block, the file's static
//! list) is left alone and never removed by a feed; an entry two sources list stays until both
//! dropped it. The allowlist and management addresses win in the kernel whatever a feed says;
//! entries entirely inside an allowlisted prefix are not even written.

mod fetch;
mod parse;
mod runner;

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gateway_common::{DenyValue, origin, reason};
use ipnet::IpNet;

pub use fetch::FeedError;
pub use parse::{Format, Parsed, parse};
pub use runner::FeedTasks;

use super::{Action, Defense, DefenseError, Record};
use crate::xdp::{BootClock, XdpError};

/// What one apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedReport {
    pub added: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Inside an allowlisted prefix: never written.
    pub allowlisted: usize,
    /// Held by another origin (an analyst's block, the static list): left alone.
    pub held_elsewhere: usize,
    pub took: Duration,
}

impl Defense {
    /// Makes the kernel denylist hold exactly `entries` for source `tag` (`feed:<name>` or
    /// `geo:<CC>`): adds what is new, removes what left, journals the counts once.
    pub fn apply_feed(&self, tag: &str, entries: &[IpNet]) -> Result<FeedReport, DefenseError> {
        let started = Instant::now();
        let _lock = self.pins().lock()?;
        let dir = self.feeds_dir();
        let old = read_state(&dir, tag);
        let others = other_sources(&dir, tag);
        let mut maps = self.maps()?;
        let current: HashMap<IpNet, DenyValue> = maps
            .denied()
            .into_iter()
            .map(|e| (e.net, e.value))
            .collect();
        let allowed: Vec<IpNet> = maps.allowed().into_iter().map(|(n, _)| n).collect();

        let mut report = FeedReport::default();
        let mut want: Vec<IpNet> = Vec::with_capacity(entries.len());
        let mut add = Vec::new();
        let clock = BootClock::now();
        let value = DenyValue {
            expires_ns: 0,
            created_unix: clock.unix_s,
            reason: if tag.starts_with("geo:") {
                reason::GEO
            } else {
                reason::REPUTATION
            },
            origin: origin::FEED,
            _pad: [0; 5],
        };
        for net in entries {
            let net = net.trunc();
            if allowed
                .iter()
                .any(|a| a.prefix_len() <= net.prefix_len() && a.contains(&net.network()))
            {
                report.allowlisted += 1;
                continue;
            }
            want.push(net);
            match current.get(&net) {
                Some(v) if v.origin == origin::FEED && v.is_active(clock.boot_ns) => {
                    report.unchanged += 1;
                }
                Some(v) if v.origin != origin::FEED && v.is_active(clock.boot_ns) => {
                    report.held_elsewhere += 1;
                }
                _ => add.push((net, value)),
            }
        }
        let keep: HashSet<IpNet> = want.iter().copied().collect();
        let remove: Vec<IpNet> = old
            .into_iter()
            .filter(|n| !keep.contains(n) && !others.contains(n))
            .filter(|n| current.get(n).is_some_and(|v| v.origin == origin::FEED))
            .collect();
        report.added = add.len();
        report.removed = remove.len();
        if report.added + report.removed > 0 {
            self.journal_feed(tag, &report)?;
        }
        if !add.is_empty() {
            maps.deny_many(add)?;
        }
        if !remove.is_empty() {
            maps.undeny_many(remove)?;
        }
        drop(maps);
        write_state(&dir, tag, &want).map_err(|source| XdpError::Io {
            what: "writing feed state",
            path: dir.clone(),
            source,
        })?;
        report.took = started.elapsed();
        Ok(report)
    }

    /// Removes the entries of every source not in `keep` (a feed taken out of the file, a
    /// country no longer blocked) and forgets them.
    pub fn retire_feeds(&self, keep: &[String]) -> Result<Vec<(String, FeedReport)>, DefenseError> {
        let mut out = Vec::new();
        for tag in sources(&self.feeds_dir()) {
            if !keep.contains(&tag) {
                let report = self.apply_feed(&tag, &[])?;
                let _ = std::fs::remove_file(state_path(&self.feeds_dir(), &tag));
                out.push((tag, report));
            }
        }
        Ok(out)
    }

    /// `net` -> `feed:<name>` for every entry a source holds, for `block list`.
    pub fn feed_tags(&self) -> HashMap<IpNet, String> {
        let dir = self.feeds_dir();
        let mut out = HashMap::new();
        for tag in sources(&dir) {
            for net in read_state(&dir, &tag) {
                out.entry(net).or_insert_with(|| tag.clone());
            }
        }
        out
    }

    fn feeds_dir(&self) -> PathBuf {
        self.journal_path()
            .parent()
            .map_or_else(|| PathBuf::from("feeds"), |d| d.join("feeds"))
    }

    fn journal_feed(&self, tag: &str, r: &FeedReport) -> Result<(), DefenseError> {
        let reason = if tag.starts_with("geo:") {
            reason::GEO
        } else {
            reason::REPUTATION
        };
        self.journal.append(&Record {
            ts: crate::xdp::unix_now(),
            action: Action::Feed,
            target: tag.to_owned(),
            origin: origin::name(origin::FEED).into(),
            reason: reason::name(reason).into(),
            note: Some(format!(
                "added {}, removed {}, unchanged {}, inside the allowlist {}, held by other origins {}",
                r.added, r.removed, r.unchanged, r.allowlisted, r.held_elsewhere
            )),
            expires: None,
            actor: format!("auto:{}", tag.split(':').next().unwrap_or("feed")),
        })?;
        Ok(())
    }
}

/// `feed:spamhaus` -> `<dir>/feed-spamhaus.txt`; names are validated to file-safe characters.
fn state_path(dir: &Path, tag: &str) -> PathBuf {
    dir.join(format!("{}.txt", tag.replacen(':', "-", 1)))
}

/// Every source with a state file.
fn sources(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".txt")?;
            let (kind, rest) = stem.split_once('-')?;
            matches!(kind, "feed" | "geo").then(|| format!("{kind}:{rest}"))
        })
        .collect();
    out.sort();
    out
}

fn read_state(dir: &Path, tag: &str) -> Vec<IpNet> {
    std::fs::read_to_string(state_path(dir, tag))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Entries every other source holds: not ours alone to remove.
fn other_sources(dir: &Path, tag: &str) -> HashSet<IpNet> {
    sources(dir)
        .into_iter()
        .filter(|t| t != tag)
        .flat_map(|t| read_state(dir, &t))
        .collect()
}

/// Written to a temporary file and renamed: a crash leaves the old state or the new one.
fn write_state(dir: &Path, tag: &str, nets: &[IpNet]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = state_path(dir, tag);
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for n in nets {
        writeln!(f, "{n}")?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_round_trip_and_name_their_sources() {
        let dir = std::env::temp_dir().join(format!("gw-feeds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nets: Vec<IpNet> = ["192.0.2.0/24", "2001:db8::1/128"]
            .iter()
            .map(|s| s.parse().expect("net"))
            .collect();
        write_state(&dir, "feed:drop", &nets).expect("write");
        write_state(&dir, "geo:CN", &nets[..1]).expect("write");
        assert_eq!(read_state(&dir, "feed:drop"), nets);
        assert_eq!(sources(&dir), ["feed:drop", "geo:CN"]);
        assert_eq!(
            other_sources(&dir, "feed:drop"),
            nets[..1].iter().copied().collect()
        );
        assert!(read_state(&dir, "feed:none").is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
