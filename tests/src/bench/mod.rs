//! `xdp_bench`: how many packets per second the receiving side of a veth pair drops from a
//! bounded flood, and the softirq CPU that costs, for the kernel stack, iptables raw (nf_tables
//! and legacy), nft netdev ingress, a bare `XDP_DROP` and the gateway's XDP program (denylist of
//! 1k / 100k / 1M entries, rate cap against 65,536 spoofed sources), all in one invocation, as
//! medians of several runs and as ratios against iptables raw and bare `XDP_DROP`.
//!
//! Topology: namespace `xb-gen-<pid>` holds `gen0`, namespace `xb-rcv-<pid>` holds `rcv0`, a
//! veth pair. The generator ([`generator`]) transmits live frames out of `gen0`; the
//! configuration under test drops them on `rcv0`. Addresses come from 198.18.0.0/15, and a
//! blackhole route for the benchmark ranges sits in the root namespace while the bench runs.
//!
//! [`scenario`] sets the configurations up and runs them in rounds (each round runs every
//! configuration once, after waiting for a quiet machine), [`report`] turns the runs into
//! `xdp.json` and `xdp.md`, [`sys`] holds the guards that undo everything on the way out.

mod generator;
mod report;
mod scenario;
mod sys;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

/// Command-line options (`xdp_bench --help`).
#[derive(Clone, Debug)]
pub struct Args {
    pub runs: usize,
    pub packets: u64,
    pub max_time: Duration,
    pub per_source: u32,
    pub cpu: Option<usize>,
    pub batch: u32,
    /// How long, in all, to wait for a quiet machine before runs.
    pub max_wait: Duration,
    /// Run the generator thread as SCHED_FIFO (see `sys::realtime_current_thread`).
    pub realtime: bool,
    pub out: PathBuf,
    pub only: Option<Vec<String>>,
}

const USAGE: &str = "\
xdp_bench: XDP drop benchmark (run as root; `cargo xtask bench xdp` builds and runs it)

Options:
  --runs N           runs per configuration, the median is reported (default 3)
  --packets N        packets per run (default 10000000)
  --max-seconds S    time bound per run (default 15)
  --per-source N     packets per source and BPF_PROG_RUN call in the 65,536-source flood
                     (default 256: 16.8M packets per run)
  --cpu N            CPU for the generator and the receiver's softirq (default: the last CPU)
  --batch N          live-frames batch size, 1..=256 (default 64, NAPI's weight)
  --max-wait S       before each run, wait for a quiet machine (all CPUs < 15% busy, no
                     `bench l7` load generator running), at most S seconds in all (default
                     900); runs measured on a busy machine are flagged
  --no-realtime      leave the generator thread SCHED_OTHER (default: SCHED_FIFO, so that
                     other work on the machine cannot preempt it mid-run)
  --out DIR          where xdp.json and xdp.md go (default target/bench)
  --only A,B         only these configurations (ids as in the table); the ratio baselines of
                     the same flood (`iptables-raw[-65k]`, `xdp-drop-all[-65k]`) are added
";

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> anyhow::Result<Option<Self>> {
        let mut a = Self {
            runs: 3,
            packets: 10_000_000,
            max_time: Duration::from_secs(15),
            per_source: 256,
            cpu: None,
            batch: 64,
            max_wait: Duration::from_secs(900),
            realtime: true,
            out: PathBuf::from("target/bench"),
            only: None,
        };
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                print!("{USAGE}");
                return Ok(None);
            }
            if flag == "--no-realtime" {
                a.realtime = false;
                continue;
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))?;
            let num = || -> anyhow::Result<u64> {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--runs" => a.runs = usize::try_from(num()?)?.max(1),
                "--packets" => a.packets = num()?.max(1),
                "--max-seconds" => a.max_time = Duration::from_secs(num()?.clamp(1, 120)),
                "--per-source" => a.per_source = u32::try_from(num()?)?.max(1),
                "--cpu" => a.cpu = Some(usize::try_from(num()?)?),
                "--batch" => {
                    a.batch = u32::try_from(num()?)?;
                    if !(1..=256).contains(&a.batch) {
                        bail!("--batch must be 1..=256 (the kernel's TEST_XDP_MAX_BATCH)");
                    }
                }
                "--max-wait" => a.max_wait = Duration::from_secs(num()?),
                "--out" => a.out = PathBuf::from(&value),
                "--only" => a.only = Some(value.split(',').map(str::to_owned).collect()),
                _ => bail!("unknown option {flag}\n\n{USAGE}"),
            }
        }
        Ok(Some(a))
    }
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let Some(args) = Args::parse(std::env::args().skip(1))? else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "xdp_bench needs root (network namespaces, XDP, BPF_PROG_RUN): run `sudo -E cargo xtask bench xdp`"
        );
    }
    sys::catch_interrupts()?;
    let report = scenario::run(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("xdp.json");
    let md_path = args.out.join("xdp.md");
    let json = serde_json::to_string_pretty(&report.to_json()).context("encoding JSON")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = report.markdown();
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}
