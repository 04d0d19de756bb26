//! `gateway allow add|rm|list`: sources that skip the denylist and caps.

use clap::Subcommand;
use gateway_common::origin;
use ipnet::IpNet;

use super::{Instance, UsageError, actor, net_arg, table};

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
            if json {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|(n, o)| serde_json::json!({"address": n.to_string(), "origin": origin::name(*o)}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|(n, o)| vec![n.to_string(), origin::name(*o).into()])
                    .collect();
                print!("{}", table::render(&["ADDRESS", "ORIGIN"], &rows));
            }
        }
    }
    Ok(())
}
