//! `gateway`: the daemon and the operator commands, one binary.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = gateway::cli::Cli::parse();
    match gateway::cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            if e.downcast_ref::<gateway::cli::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
