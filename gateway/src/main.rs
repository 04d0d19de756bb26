//! `gateway`: the daemon and the operator commands, one binary.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of glibc malloc: the request path allocates and frees per request (hyper's
/// header maps, request parts, pool bookkeeping), and glibc's malloc/free/consolidate took ~9% of
/// the proxy's CPU in a `perf record` of `cargo xtask bench l7`'s load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = gateway::cli::Cli::parse();
    // Before anything could decode a token: jsonwebtoken fixes its crypto on first use.
    gateway::auth::jwt_crypto::install();
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
