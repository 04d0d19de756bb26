//! `cargo xtask bench <target>`: benchmarks, never timed tests. Each compares its peers in one
//! invocation, as medians of several runs, and writes JSON and markdown under `target/bench/`.

mod auth;
mod harness;
mod l7;
mod waf;

use std::process::Command;

use crate::exec;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to benchmark.
    #[arg(value_enum)]
    pub target: Target,
    /// Options for the benchmark program itself, after `--`
    /// (xdp: `cargo xtask bench xdp -- --help`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Packets per second dropped from a flood on a veth pair: kernel stack, iptables raw, nft
    /// ingress, bare XDP_DROP and the gateway's XDP program (denylist, rate cap).
    Xdp,
    /// The L7 proxy against nginx and haproxy.
    L7,
    /// Request validation per request: a ~2 KB JSON body against its schema, next to parsing
    /// it alone (in process; `-- --iterations N --runs N`).
    Validate,
    /// Rate-limit decisions per second and memory with 1M distinct keys, through the
    /// per-client stage (in process; `-- --keys N --decisions N --threads N`).
    Ratelimit,
    /// Latency added per request by authentication (JWT RS256/ES256/EdDSA with warm keys, JWT
    /// from a JWKS URL, API key, HMAC signing) through the gateway, against a route without
    /// auth, and the auth stage's cost in process (settings: AUTH_BENCH_* variables).
    Auth,
    /// The WAF (OWASP CRS v4, paranoia 1) against nginx + ModSecurity v3 with the same rules,
    /// on benign and attack requests with JSON bodies of 100 B, 2 KB and 20 KB.
    Waf,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match args.target {
        Target::Xdp => xdp(&args.extra),
        Target::L7 => {
            if !args.extra.is_empty() {
                anyhow::bail!("`bench l7` takes no extra options");
            }
            l7::run()
        }
        Target::Validate => in_process("validate_bench", &args.extra),
        Target::Ratelimit => in_process("ratelimit_bench", &args.extra),
        Target::Auth => {
            if !args.extra.is_empty() {
                anyhow::bail!(
                    "`bench auth` takes no extra options (settings: AUTH_BENCH_* variables)"
                );
            }
            auth::run()
        }
        Target::Waf => {
            if !args.extra.is_empty() {
                anyhow::bail!(
                    "`bench waf` takes no extra options (settings: WAF_BENCH_* variables)"
                );
            }
            waf::run()
        }
    }
}

/// Builds and runs an in-process benchmark of the tests crate (`validate_bench`,
/// `ratelimit_bench`; no privileges).
fn in_process(bin: &str, extra: &[String]) -> anyhow::Result<()> {
    exec::run(exec::cargo().args(["build", "--release", "-p", "tests", "--bin", bin]))?;
    let root = exec::workspace_root();
    let mut cmd = Command::new(root.join("target/release").join(bin));
    cmd.arg("--out").arg(root.join("target/bench")).args(extra);
    exec::run(&mut cmd)
}

/// Builds `xdp_bench` (it lives in the `tests` crate, which links the gateway and its eBPF
/// object; xtask itself must build before the BPF toolchain exists) and runs it as root.
fn xdp(extra: &[String]) -> anyhow::Result<()> {
    exec::run(exec::cargo().args(["build", "--release", "-p", "tests", "--bin", "xdp_bench"]))?;
    let root = exec::workspace_root();
    let mut cmd = Command::new(root.join("target/release/xdp_bench"));
    cmd.arg("--out").arg(root.join("target/bench")).args(extra);
    if !exec::is_root() {
        anyhow::bail!(
            "bench xdp creates network namespaces, attaches XDP programs and runs BPF_PROG_RUN: \
             run it as root (`sudo -E cargo xtask bench xdp`), or run the built binary as root: \
             sudo {}",
            exec::render(&cmd)
        );
    }
    eprintln!(
        "bench xdp: reproduce with `cargo xtask bench xdp{}` or, once built, `{}`",
        if extra.is_empty() {
            String::new()
        } else {
            format!(" -- {}", extra.join(" "))
        },
        exec::render(&cmd)
    );
    exec::run(&mut cmd)
}
