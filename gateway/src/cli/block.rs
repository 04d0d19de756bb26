//! `gateway block add|rm|list`: what SOC analysts use to block and unblock, with reasons and
//! expiry. Every change goes to the audit journal first.

use std::time::Duration;

use clap::Subcommand;
use gateway_common::{origin, reason};
use ipnet::IpNet;

use super::{Instance, UsageError, actor, duration_arg, net_arg, table};
use crate::{
    defense::Block,
    xdp::{BootClock, deny_row},
};

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Block an address or CIDR (IPv4 or IPv6) in the kernel.
    Add {
        /// Address or CIDR, e.g. 203.0.113.7 or 203.0.113.0/24 or 2001:db8::/48.
        #[arg(value_parser = net_arg)]
        target: IpNet,
        /// How long the block lasts (30s, 10m, 24h); permanent when absent.
        #[arg(long, value_parser = duration_arg)]
        ttl: Option<Duration>,
        /// Why, for the audit journal and `block list`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a block at once.
    Rm {
        /// The address or CIDR exactly as blocked.
        #[arg(value_parser = net_arg)]
        target: IpNet,
        /// Why, for the audit journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List blocks: address, origin, reason, created, remaining TTL.
    List {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn execute(instance: &Instance, cmd: BlockCommand) -> anyhow::Result<()> {
    match cmd {
        BlockCommand::Add {
            target,
            ttl,
            reason: note,
        } => {
            if ttl.is_some_and(|t| t.is_zero()) {
                return Err(UsageError("--ttl must be longer than zero".into()).into());
            }
            let defense = instance.defense()?;
            defense.block(&Block {
                net: target,
                ttl,
                reason: reason::OPERATOR,
                origin: origin::MANUAL,
                note,
                actor: actor(),
            })?;
            match ttl {
                Some(t) => println!("blocked {target} for {}", table::human_duration(t)),
                None => println!("blocked {target} (permanent)"),
            }
        }
        BlockCommand::Rm {
            target,
            reason: note,
        } => {
            let defense = instance.defense_existing()?;
            if defense.unblock(target, &actor(), note)? {
                println!("unblocked {target}");
            } else {
                return Err(UsageError(format!(
                    "{target} is not blocked (see `gateway block list`)"
                ))
                .into());
            }
        }
        BlockCommand::List { json } => {
            let defense = instance.defense_existing()?;
            let blocks = defense.blocks()?;
            let clock = BootClock::now();
            if json {
                let rows: Vec<_> = blocks
                    .iter()
                    .map(|b| {
                        let mut row = deny_row(&clock, b.net, &b.value);
                        row["note"] = serde_json::json!(b.note);
                        row["actor"] = serde_json::json!(b.actor);
                        row
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows: Vec<Vec<String>> = blocks
                    .iter()
                    .map(|b| {
                        vec![
                            b.net.to_string(),
                            origin::name(b.value.origin).into(),
                            reason::name(b.value.reason).into(),
                            table::timestamp(b.value.created_unix),
                            match clock.remaining(b.value.expires_ns) {
                                None => "permanent".into(),
                                Some(d) if d.is_zero() => "expired".into(),
                                Some(d) => table::human_duration(d),
                            },
                            b.note.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(
                        &[
                            "ADDRESS",
                            "ORIGIN",
                            "REASON",
                            "CREATED",
                            "EXPIRES IN",
                            "NOTE"
                        ],
                        &rows
                    )
                );
            }
        }
    }
    Ok(())
}
