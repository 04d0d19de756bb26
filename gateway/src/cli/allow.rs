//! `gateway allow add|rm|list`: sources that skip the denylist and caps.

use clap::Subcommand;
use gateway_common::origin;
use ipnet::IpNet;

use http::Method;

use super::{Instance, UsageError, actor, daemon_error, net_arg, table};
use crate::admin::client::Client;

#[derive(Debug, Subcommand)]
pub enum AllowCommand {
    /// Allowlist an address or CIDR.
    Add {
        #[arg(value_parser = net_arg)]
        target: IpNet,
        /// Why, for the audit journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove an allowlist entry.
    Rm {
        #[arg(value_parser = net_arg)]
        target: IpNet,
        /// Why, for the audit journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List allowlist entries and where they came from (`config` = management/allow in the file).
    List {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn execute(instance: &Instance, cmd: AllowCommand) -> anyhow::Result<()> {
    match instance.daemon()? {
        Some(daemon) => through_daemon(&daemon, cmd),
        None => direct(instance, cmd),
    }
}

/// Through the running daemon: it journals with this user as the actor and applies.
fn through_daemon(daemon: &Client, cmd: AllowCommand) -> anyhow::Result<()> {
    match cmd {
        AllowCommand::Add { target, reason } => {
            let body = serde_json::json!({"target": target.to_string(), "reason": reason});
            daemon
                .call(Method::POST, "/v1/allowlist", Some(body))
                .map_err(daemon_error)?;
            println!("allowlisted {target}");
        }
        AllowCommand::Rm { target, reason } => {
            let body = serde_json::json!({"target": target.to_string(), "reason": reason});
            daemon
                .call(Method::DELETE, "/v1/allowlist", Some(body))
                .map_err(daemon_error)?;
            println!("removed {target} from the allowlist");
        }
        AllowCommand::List { json } => {
            let rows = daemon
                .call(Method::GET, "/v1/allowlist", None)
                .map_err(daemon_error)?;
            let rows = rows.as_array().cloned().unwrap_or_default();
            print_rows(&rows, json)?;
        }
    }
    Ok(())
}

/// On the pinned maps (no daemon, or `--direct`).
fn direct(instance: &Instance, cmd: AllowCommand) -> anyhow::Result<()> {
    match cmd {
        AllowCommand::Add { target, reason } => {
            instance.defense()?.allow(target, &actor(), reason)?;
            println!("allowlisted {target}");
        }
        AllowCommand::Rm { target, reason } => {
            if !instance
                .defense_existing()?
                .disallow(target, &actor(), reason)?
            {
                return Err(UsageError(format!("{target} is not allowlisted")).into());
            }
            println!("removed {target} from the allowlist");
        }
        AllowCommand::List { json } => {
            let mut entries = instance.defense_existing()?.maps()?.allowed();
            entries.sort_by_key(|(n, _)| (n.addr().is_ipv6(), *n));
            let rows: Vec<_> = entries
                .iter()
                .map(|(n, o)| serde_json::json!({"address": n.to_string(), "origin": origin::name(*o)}))
                .collect();
            print_rows(&rows, json)?;
        }
    }
    Ok(())
}

fn print_rows(rows: &[serde_json::Value], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r["address"].as_str().unwrap_or_default().to_owned(),
                    r["origin"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        print!("{}", table::render(&["ADDRESS", "ORIGIN"], &rows));
    }
    Ok(())
}
