//! The daemon's feed schedule: one task per source (feed or country), fetching, parsing and
//! applying on its refresh interval; map writes on the blocking pool. A source that fails to
//! fetch or parse keeps its entries (a feed server outage must not unblock a list of botnets).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::task::JoinHandle;

use super::{Format, fetch::Fetcher, parse};
use crate::{
    config::{FeedConfig, GeoConfig},
    defense::Defense,
};

#[derive(Clone, Debug, PartialEq)]
enum Location {
    File(PathBuf),
    Url(String),
}

#[derive(Clone, Debug, PartialEq)]
struct Source {
    tag: String,
    location: Location,
    format: Format,
    refresh: Duration,
}

/// The running feed tasks; dropping stops them.
#[derive(Default)]
pub struct FeedTasks {
    sources: Vec<Source>,
    tasks: Vec<JoinHandle<()>>,
}

impl FeedTasks {
    /// Retires sources no longer configured, then starts one task per configured source.
    pub fn start(defense: &Arc<Defense>, feeds: &[FeedConfig], geo: Option<&GeoConfig>) -> Self {
        let sources = sources(feeds, geo);
        let keep: Vec<String> = sources.iter().map(|s| s.tag.clone()).collect();
        let d = Arc::clone(defense);
        let retire = tokio::task::spawn_blocking(move || match d.retire_feeds(&keep) {
            Ok(retired) => {
                for (tag, r) in retired {
                    tracing::info!(source = %tag, removed = r.removed, "feed no longer configured: its entries removed");
                }
            }
            Err(e) => tracing::error!(error = %e, "retiring feeds"),
        });
        let fetcher = Arc::new(Fetcher::new());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = retire.await;
        })];
        for s in &sources {
            tasks.push(tokio::spawn(run(
                s.clone(),
                Arc::clone(defense),
                Arc::clone(&fetcher),
            )));
        }
        if !sources.is_empty() {
            tracing::info!(sources = sources.len(), "reputation feeds on");
        }
        Self { sources, tasks }
    }

    /// After a reload: restarts the tasks when the feeds or the geo section changed.
    pub fn update(
        &mut self,
        defense: &Arc<Defense>,
        feeds: &[FeedConfig],
        geo: Option<&GeoConfig>,
    ) {
        if sources(feeds, geo) != self.sources {
            *self = Self::start(defense, feeds, geo);
        }
    }
}

impl Drop for FeedTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn sources(feeds: &[FeedConfig], geo: Option<&GeoConfig>) -> Vec<Source> {
    let mut out: Vec<Source> = feeds
        .iter()
        .map(|f| Source {
            tag: format!("feed:{}", f.name),
            location: match (&f.url, &f.file) {
                (Some(u), _) => Location::Url(u.clone()),
                (None, Some(p)) => Location::File(p.clone()),
                // Validation requires one of them.
                (None, None) => Location::File(PathBuf::new()),
            },
            format: Format::Feed(f.format),
            refresh: f.refresh,
        })
        .collect();
    if let Some(g) = geo {
        for cc in &g.block {
            let cc = cc.to_ascii_uppercase();
            out.push(Source {
                tag: format!("geo:{cc}"),
                location: Location::File(g.file.clone()),
                format: Format::Geo(cc),
                refresh: g.refresh,
            });
        }
    }
    out
}

async fn run(source: Source, defense: Arc<Defense>, fetcher: Arc<Fetcher>) {
    // A file that has not changed since its last good apply is not applied again.
    let mut applied_stamp: Option<(SystemTime, u64)> = None;
    loop {
        let mut wait = source.refresh;
        let stamp = match &source.location {
            Location::File(p) => std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len()))),
            Location::Url(_) => None,
        };
        if stamp.is_none() || stamp != applied_stamp {
            let text = match &source.location {
                Location::File(p) => super::fetch::read_file(p).await,
                Location::Url(u) => fetcher.get(u).await,
            };
            match text {
                Ok(text) => {
                    if apply(&source, &defense, &text).await {
                        applied_stamp = stamp;
                    } else {
                        wait = wait.min(Duration::from_secs(60));
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %source.tag, error = %e, "feed unavailable: its entries stay as they are");
                    wait = wait.min(Duration::from_secs(60));
                }
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Parses and applies; `false` when nothing was applied.
async fn apply(source: &Source, defense: &Arc<Defense>, text: &str) -> bool {
    let parsed = parse(&source.format, text);
    for (line, why) in parsed.bad.iter().take(10) {
        tracing::warn!(source = %source.tag, line, reason = %why, "feed line skipped");
    }
    if parsed.bad.len() > 10 {
        tracing::warn!(source = %source.tag, more = parsed.bad.len() - 10, "more feed lines skipped");
    }
    // Nothing usable and something unreadable: an error page, not an empty list.
    if parsed.entries.is_empty() && !parsed.bad.is_empty() {
        tracing::error!(source = %source.tag, bad_lines = parsed.bad.len(), "feed has no valid entry: not applied, its entries stay");
        return false;
    }
    let tag = source.tag.clone();
    let d = Arc::clone(defense);
    let entries = parsed.entries;
    let count = entries.len();
    match tokio::task::spawn_blocking(move || d.apply_feed(&tag, &entries)).await {
        Ok(Ok(r)) => {
            tracing::info!(
                source = %source.tag,
                entries = count,
                added = r.added,
                removed = r.removed,
                unchanged = r.unchanged,
                allowlisted = r.allowlisted,
                held_elsewhere = r.held_elsewhere,
                bad_lines = parsed.bad.len(),
                took_ms = r.took.as_millis() as u64,
                "feed applied"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::error!(source = %source.tag, error = %e, "applying feed");
            false
        }
        Err(e) => {
            tracing::error!(source = %source.tag, error = %e, "feed task");
            false
        }
    }
}
