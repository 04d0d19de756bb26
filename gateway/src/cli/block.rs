//! `gateway block add|rm|list`: what SOC analysts use to block and unblock, with reasons and
//! expiry. Every change goes to the audit journal first.

use std::time::Duration;

use clap::Subcommand;
use gateway_common::{origin, reason};
use ipnet::IpNet;

use http::Method;

use super::{Instance, UsageError, actor, daemon_error, duration_arg, net_arg, table};
use crate::{
    admin::client::Client,
    defense::{Block, L7Blocks},
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
    if let BlockCommand::Add { ttl: Some(t), .. } = &cmd
        && t.is_zero()
    {
        return Err(UsageError("--ttl must be longer than zero".into()).into());
    }
    match instance.daemon()? {
        Some(daemon) => through_daemon(&daemon, cmd),
        None => direct(instance, cmd),
    }
}

/// Through the running daemon: it journals with this user as the actor and applies.
fn through_daemon(daemon: &Client, cmd: BlockCommand) -> anyhow::Result<()> {
    match cmd {
        BlockCommand::Add {
            target,
            ttl,
            reason: note,
        } => {
            let body = serde_json::json!({
                "target": target.to_string(),
                "ttl": ttl.map(|t| humantime::format_duration(t).to_string()),
                "reason": note,
            });
            daemon
                .call(Method::POST, "/v1/blocks", Some(body))
                .map_err(daemon_error)?;
            print_blocked(target, ttl);
        }
        BlockCommand::Rm {
            target,
            reason: note,
        } => {
            let body = serde_json::json!({"target": target.to_string(), "reason": note});
            daemon
                .call(Method::DELETE, "/v1/blocks", Some(body))
                .map_err(daemon_error)?;
            println!("unblocked {target}");
        }
        BlockCommand::List { json } => {
            let rows = daemon
                .call(Method::GET, "/v1/blocks", None)
                .map_err(daemon_error)?;
            print_rows(rows.as_array().map_or(&[][..], Vec::as_slice), json)?;
        }
    }
    Ok(())
}

fn print_blocked(target: IpNet, ttl: Option<Duration>) {
    match ttl {
        Some(t) => println!("blocked {target} for {}", table::human_duration(t)),
        None => println!("blocked {target} (permanent)"),
    }
}

/// On the pinned maps (no daemon, or `--direct`).
fn direct(instance: &Instance, cmd: BlockCommand) -> anyhow::Result<()> {
    match cmd {
        BlockCommand::Add {
            target,
            ttl,
            reason: note,
        } => {
            let defense = instance.defense()?;
            defense.block(&Block {
                net: target,
                ttl,
                reason: reason::OPERATOR,
                origin: origin::MANUAL,
                note,
                actor: actor(),
            })?;
            print_blocked(target, ttl);
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
            let rows = crate::admin::block_rows(Some(&defense), &L7Blocks::default())
                .map_err(anyhow::Error::msg)?;
            print_rows(&rows, json)?;
        }
    }
    Ok(())
}

/// `block list` output from the rows of `--json` (the same rows the admin API answers).
fn print_rows(rows: &[serde_json::Value], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                text(&r["address"]),
                text(&r["origin"]),
                text(&r["reason"]),
                r["created"]
                    .as_u64()
                    .map_or_else(|| "-".into(), table::timestamp),
                match r["ttl_seconds"].as_u64() {
                    None => "permanent".into(),
                    Some(0) => "expired".into(),
                    Some(s) => table::human_duration(Duration::from_secs(s)),
                },
                text(&r["note"]),
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
    Ok(())
}
