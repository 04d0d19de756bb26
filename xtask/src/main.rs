//! `cargo xtask`: the project's own automation. `setup` installs what a fresh machine lacks; every
//! other command runs it first, so two commands (`cargo xtask demo`, `cargo xtask test`) take a
//! fresh clone to a working demo and a green test run.

mod bench;
mod build;
mod demo;
mod exec;
mod fuzz;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Set up, build, test, demo and benchmark the gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install prerequisites (LLVM 22, nightly rust-src, bpf-linker, iproute2, ...) if missing.
    Setup,
    /// Build the gateway (with its eBPF object) in release mode.
    Build,
    /// fmt check, clippy (eBPF crate in its own pass), unit, integration and end-to-end tests.
    Test,
    /// Show floods dropped in XDP while a client is served, in network namespaces.
    Demo,
    /// Benchmarks; results as JSON and a markdown table.
    Bench(bench::BenchArgs),
    /// The cargo-fuzz targets of `gateway/fuzz`, each for a bounded time (nightly, sanitizers).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build => {
            setup::run()?;
            build::release()
        }
        Command::Test => {
            setup::run()?;
            test::run()
        }
        Command::Demo => {
            setup::run()?;
            demo::run()
        }
        Command::Bench(args) => {
            setup::run()?;
            bench::run(&args)
        }
        Command::Fuzz(args) => {
            setup::run()?;
            fuzz::run(&args)
        }
    }
}
