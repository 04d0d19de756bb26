//! The operator interface: one verb per file, tables for people, `--json` for scripts. Bad input
//! exits with code 2 and changes nothing; other failures exit with 1.

mod allow;
mod audit;
mod block;
mod check;
mod docs;
mod maps;
mod openapi;
mod run;
mod stats;
mod table;
mod top;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{config::Config, defense::Defense, telemetry::LogFormat, xdp::PinDir};

/// Bad operator input (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "API security gateway with an XDP fast path",
    long_about = "API security gateway whose fast path runs in the kernel (XDP): denylisted and \
                  over-cap sources are dropped before the network stack spends anything on them.\n\n\
                  Operator commands work on the pinned maps of an instance whether the daemon runs or not."
)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    /// Log format of the daemon and of warnings.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Which instance a command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Configuration file; operator commands take the instance, state directory and bpffs path
    /// from it.
    #[arg(long, short = 'c', global = true, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Instance name (pin directory /sys/fs/bpf/gateway/<instance>). Overrides the config file.
    #[arg(long, global = true, env = "GATEWAY_INSTANCE")]
    pub instance: Option<String>,
    /// State directory holding `<instance>/journal.jsonl`. Overrides the config file.
    #[arg(long, global = true, env = "GATEWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where bpffs is mounted. Overrides the config file.
    #[arg(long, global = true, env = "GATEWAY_BPFFS")]
    pub bpffs: Option<PathBuf>,
    /// The daemon's admin socket (default: `admin.socket` of the config file, else
    /// `<state_dir>/<instance>/admin.sock`).
    #[arg(long, global = true, env = "GATEWAY_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// `block`, `allow` and `stats` talk to the running daemon over its admin socket (so the
    /// audit trail stays in one place) and fall back to the pinned maps, with a warning, when no
    /// daemon answers. `--direct` skips the daemon and works on the pinned maps.
    #[arg(long, global = true)]
    pub direct: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway daemon: load and attach the XDP program, apply the config, report
    /// over-cap sources, reload on SIGHUP, detach on SIGTERM (maps stay pinned).
    Run,
    /// Validate a configuration file; prints `file:line: reason` and exits 1 when it is wrong.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Block sources in the kernel (add, rm, list).
    #[command(subcommand)]
    Block(block::BlockCommand),
    /// Allowlist sources: they skip the denylist and the caps (add, rm, list).
    #[command(subcommand)]
    Allow(allow::AllowCommand),
    /// Packet and byte counters of the XDP program by verdict and reason, summed over CPUs.
    Stats(stats::StatsArgs),
    /// The audit journal: every block, unblock and allowlist change, with who and why.
    Audit(audit::AuditArgs),
    /// Live view for SOC analysts: drops by reason, requests/s, blocked sources, escalations as
    /// they happen (`--once` for one frame).
    Top(top::TopArgs),
    /// Inspect the instance's pinned maps (list, dump, reset).
    #[command(subcommand)]
    Maps(maps::MapsCommand),
    /// Routes from an OpenAPI spec (import), and what logged traffic it would reject (diff).
    #[command(subcommand)]
    Openapi(openapi::OpenapiCommand),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
    /// Print the JSON Schema of the configuration file (for editors; also in docs/).
    Schema,
}

/// The instance a command works on, resolved from flags and the config file.
pub(crate) struct Instance {
    pub name: String,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub admin_socket: PathBuf,
    pub direct: bool,
}

impl Target {
    pub(crate) fn resolve(&self) -> anyhow::Result<Instance> {
        let file = match &self.config {
            Some(path) => Some(Config::load(path)?),
            None => None,
        };
        let name = self
            .instance
            .clone()
            .or_else(|| file.as_ref().map(|c| c.instance.clone()))
            .unwrap_or_else(|| "default".into());
        let state_dir = self
            .state_dir
            .clone()
            .or_else(|| file.as_ref().map(|c| c.state_dir.clone()))
            .unwrap_or_else(|| PathBuf::from("/var/lib/gateway"));
        let admin_socket = self.admin_socket.clone().unwrap_or_else(|| match &file {
            Some(c) if self.state_dir.is_none() && self.instance.is_none() => {
                c.admin.socket_path(&c.state_dir, &c.instance)
            }
            _ => crate::config::default_socket(&state_dir, &name),
        });
        Ok(Instance {
            admin_socket,
            direct: self.direct,
            name,
            state_dir,
            bpffs: self
                .bpffs
                .clone()
                .or_else(|| file.as_ref().map(|c| c.bpffs.clone()))
                .unwrap_or_else(|| PathBuf::from(crate::xdp::pin::BPFFS)),
        })
    }
}

impl Instance {
    /// For writers: creates the maps if no daemon made them yet.
    pub(crate) fn defense(&self) -> anyhow::Result<Defense> {
        Ok(Defense::open(&self.bpffs, &self.name, &self.state_dir)?)
    }

    /// For readers: never creates anything.
    pub(crate) fn defense_existing(&self) -> anyhow::Result<Defense> {
        Ok(Defense::open_existing(
            &self.bpffs,
            &self.name,
            &self.state_dir,
        )?)
    }

    pub(crate) fn pins(&self) -> PinDir {
        PinDir::new(&self.bpffs, &self.name)
    }

    /// The running daemon's admin API, unless `--direct`; `None` (with a warning on stderr)
    /// when no daemon answers on the socket, so the caller works on the maps directly.
    pub(crate) fn daemon(&self) -> anyhow::Result<Option<crate::admin::client::Client>> {
        use crate::admin::client::{Client, ClientError};
        if self.direct {
            return Ok(None);
        }
        let client = Client::new(self.admin_socket.clone(), actor());
        match client.call(http::Method::GET, "/live", None) {
            Ok(_) => Ok(Some(client)),
            Err(ClientError::Unreachable { socket, reason }) => {
                eprintln!(
                    "gateway: no daemon answers on {} ({reason}): working directly on the pinned \
                     maps of instance `{}` (use --direct to skip this check)",
                    socket.display(),
                    self.name
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A daemon's refusal of bad input exits 2 like the same mistake made directly.
pub(crate) fn daemon_error(e: crate::admin::client::ClientError) -> anyhow::Error {
    match e {
        crate::admin::client::ClientError::Refused { status, message }
            if status.is_client_error() =>
        {
            UsageError(message).into()
        }
        other => other.into(),
    }
}

/// Who is acting, for the audit journal.
pub(crate) fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid:{}", nix::unistd::getuid()));
    format!("cli:{user}")
}

pub fn execute(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init(cli.log_format);
    match cli.command {
        Command::Run => {
            let path = cli
                .target
                .config
                .clone()
                .ok_or_else(|| UsageError("`gateway run` needs --config FILE".into()))?;
            run::run(&path)
        }
        Command::Check { file } => check::check(&file),
        Command::Block(cmd) => block::execute(&cli.target.resolve()?, cmd),
        Command::Allow(cmd) => allow::execute(&cli.target.resolve()?, cmd),
        Command::Stats(args) => stats::execute(&cli.target.resolve()?, &args),
        Command::Maps(cmd) => maps::execute(&cli.target.resolve()?, cmd),
        Command::Audit(args) => audit::execute(&cli.target.resolve()?, &args),
        Command::Openapi(cmd) => openapi::execute(cmd),
        Command::Top(args) => top::execute(&cli.target.resolve()?, &args),
        Command::Completions { shell } => {
            docs::completions(shell);
            Ok(())
        }
        Command::Man => docs::man(),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::config::json_schema())?
            );
            Ok(())
        }
    }
}

/// clap value parser for addresses and CIDRs.
pub(crate) fn net_arg(s: &str) -> Result<ipnet::IpNet, String> {
    crate::config::parse_net(s)
}

/// clap value parser for durations.
pub(crate) fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}
