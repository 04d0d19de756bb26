//! `cargo xtask bench`: benchmarks, never timed tests. Owned by the bench work in progress.

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to benchmark.
    pub target: String,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("benchmark `{}` is not available yet", args.target)
}
