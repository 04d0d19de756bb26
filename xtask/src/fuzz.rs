//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the cargo-fuzz targets of `gateway/fuzz` for a
//! bounded time each, one after the other. libFuzzer exits non-zero on a crash, a leak, an input
//! slower than `--timeout` or memory over 2 GB, and leaves the input in
//! `gateway/fuzz/artifacts/<target>/`; the command then fails, naming the target.

use std::process::Command;

use anyhow::bail;
use clap::Args;

use crate::exec;

/// Every target of `gateway/fuzz/Cargo.toml`.
const TARGETS: [&str; 5] = ["transform", "body", "seclang", "libinjection", "http1"];

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing per target (the sanitizer build before the first one is not counted).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Seconds one input may take before it counts as a hang.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Targets to run (default: all of them).
    targets: Vec<String>,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    if let Some(t) = targets.iter().find(|t| !TARGETS.contains(t)) {
        bail!("no fuzz target `{t}` (there are: {})", TARGETS.join(", "));
    }
    if !exec::succeeds(rustup_cargo().args(["fuzz", "--version"])) {
        exec::run(rustup_cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = exec::workspace_root().join("gateway/fuzz");
    let mut failed = Vec::new();
    for t in targets {
        let mut cmd = rustup_cargo();
        cmd.current_dir(&dir)
            .args(["+nightly", "fuzz", "run", t, "--"])
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-timeout={}", args.timeout))
            .arg("-rss_limit_mb=2048");
        if t == "seclang" {
            cmd.arg("-max_len=4096");
        }
        if t == "http1" {
            // Requests, not random bytes, from the start; each input runs hyper too.
            cmd.arg("-dict=http1.dict").arg("-max_len=2048");
        }
        if let Err(e) = exec::run(&mut cmd) {
            eprintln!("fuzz {t}: {e:#}");
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets found problems: {} (inputs in gateway/fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// rustup's `cargo` (which understands `+nightly`), not the toolchain's own binary `cargo
/// xtask` runs under, and without the stable toolchain's variables.
fn rustup_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
