//! `gateway maps list|dump|reset`: the kernel maps as ops see them.

use clap::Subcommand;

use super::{Instance, UsageError, table};
use crate::xdp::{XdpError, dump_map, list_maps};

#[derive(Debug, Subcommand)]
pub enum MapsCommand {
    /// Every pinned map of the instance: type, sizes, capacity, entries.
    List {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The entries of one map (addresses rendered, expiries as remaining time).
    Dump {
        /// Map name, as `gateway maps list` shows it.
        name: String,
        /// JSON (the default output is JSON too, indented).
        #[arg(long)]
        json: bool,
    },
    /// Remove every pinned map of the instance (stop the daemon first). Drops every block held
    /// in the kernel; the audit journal restores manual blocks at the next start.
    Reset {
        /// Required: this is destructive.
        #[arg(long)]
        yes: bool,
    },
}

pub(super) fn execute(instance: &Instance, cmd: MapsCommand) -> anyhow::Result<()> {
    let pins = instance.pins();
    match cmd {
        MapsCommand::List { json } => {
            let maps = list_maps(&pins)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&maps)?);
            } else {
                let rows: Vec<Vec<String>> = maps
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.to_string(),
                            m.kind.clone(),
                            m.key_size.to_string(),
                            m.value_size.to_string(),
                            m.max_entries.to_string(),
                            m.entries.map_or("-".into(), |e| e.to_string()),
                        ]
                    })
                    .collect();
                println!("pinned at {}", pins.path.display());
                print!(
                    "{}",
                    table::render(&["NAME", "TYPE", "KEY", "VALUE", "MAX", "ENTRIES"], &rows)
                );
            }
        }
        MapsCommand::Dump { name, json } => {
            let value = match dump_map(&pins, &name) {
                Err(XdpError::UnknownMap(n)) => {
                    return Err(UsageError(format!(
                        "unknown map `{n}`; maps are: {}",
                        gateway_common::map_names::ALL.join(", ")
                    ))
                    .into());
                }
                other => other?,
            };
            if json {
                println!("{}", serde_json::to_string(&value)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
        }
        MapsCommand::Reset { yes } => {
            if !yes {
                return Err(UsageError(
                    "`maps reset` drops every kernel block of the instance; add --yes".into(),
                )
                .into());
            }
            pins.remove()?;
            println!("removed {}", pins.path.display());
        }
    }
    Ok(())
}
