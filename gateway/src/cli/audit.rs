//! `gateway audit`: the audit journal as SOC analysts read it: who blocked or allowed what,
//! when, why, for how long.

use std::time::Duration;

use clap::Args;

use super::{Instance, duration_arg, table};
use crate::{defense::Journal, xdp::unix_now};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records newer than this (e.g. 1h, 7d).
    #[arg(long, value_parser = duration_arg)]
    since: Option<Duration>,
    /// JSON lines, as stored.
    #[arg(long)]
    json: bool,
}

pub(super) fn execute(instance: &Instance, args: &AuditArgs) -> anyhow::Result<()> {
    let journal = Journal::open(&instance.state_dir.join(&instance.name))?;
    let cutoff = args
        .since
        .map_or(0, |d| unix_now().saturating_sub(d.as_secs()));
    let records: Vec<_> = journal
        .read()?
        .into_iter()
        .filter(|r| r.ts >= cutoff)
        .collect();
    if args.json {
        for r in &records {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                table::timestamp(r.ts),
                serde_json::to_value(r.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.target.clone(),
                r.origin.clone(),
                r.reason.clone(),
                r.expires.map_or("-".into(), table::timestamp),
                r.actor.clone(),
                r.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "TIME", "ACTION", "TARGET", "ORIGIN", "REASON", "EXPIRES", "ACTOR", "NOTE"
            ],
            &rows
        )
    );
    Ok(())
}
