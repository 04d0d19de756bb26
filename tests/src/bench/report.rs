//! Results: per run, per configuration (medians), ratios, targets; as JSON and as markdown.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    Args,
    sys::{CpuTimes, Netns, run as run_cmd},
};

/// One recorded flood.
#[derive(Clone, Debug)]
pub struct Run {
    /// Frames the generator built and ran its program on.
    pub sent: u64,
    /// `BPF_PROG_RUN` calls.
    pub calls: u64,
    pub seconds: f64,
    /// Packets the configuration counted as dropped.
    pub dropped: u64,
    /// Packets the gateway's program let through (its pass slots); 0 elsewhere.
    pub passed: u64,
    /// rx packets of the receiving interface.
    pub rx_packets: u64,
    /// Frames the generator's veth could not hand to the peer (xdp_xmit_errors + tx dropped).
    pub not_delivered: u64,
    /// `ethtool -S` counters of both ends that moved during the run.
    pub ethtool: std::collections::BTreeMap<String, u64>,
    pub cpu: CpuTimes,
    /// Share of all CPUs busy just before the run (while the bench idled), and whether the run
    /// had to start on a busy machine.
    pub busy_before: f64,
    pub busy_machine: bool,
    pub gen_cpu: usize,
    pub hz: u64,
}

impl Run {
    pub fn mpps(&self) -> f64 {
        self.dropped as f64 / self.seconds.max(1e-9) / 1e6
    }

    /// Softirq time over all CPUs' time, in percent.
    pub fn softirq_pct(&self) -> f64 {
        let s = self.cpu.sum();
        100.0 * s.softirq as f64 / (s.total as f64).max(1.0)
    }

    fn gen_cpu_pct(&self, f: impl Fn(&super::sys::CpuTicks) -> u64) -> f64 {
        self.cpu
            .cpus
            .get(self.gen_cpu)
            .map_or(0.0, |c| 100.0 * f(c) as f64 / (c.total as f64).max(1.0))
    }

    /// Softirq time (all CPUs) per dropped packet, in ns: the receiver's cost per packet.
    pub fn softirq_ns_per_packet(&self) -> f64 {
        let ticks = self.cpu.sum().softirq as f64;
        ticks * 1e9 / self.hz as f64 / (self.dropped as f64).max(1.0)
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        format!(
            "{:.2} Mpps: {} dropped, {} passed, {} sent, {} rx, {} undelivered, softirq {:.0}% ({:.0} ns/packet), other CPUs {:.0}% busy",
            self.mpps(),
            self.dropped,
            self.passed,
            self.sent,
            self.rx_packets,
            self.not_delivered,
            self.softirq_pct(),
            self.softirq_ns_per_packet(),
            self.other_busy_pct()
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "sent": self.sent,
            "bpf_prog_run_calls": self.calls,
            "seconds": round(self.seconds, 4),
            "dropped": self.dropped,
            "passed": self.passed,
            "mpps": round(self.mpps(), 3),
            "rx_packets_rcv0": self.rx_packets,
            "not_delivered": self.not_delivered,
            "ethtool_deltas": self.ethtool,
            "softirq_cpu_pct_all": round(self.softirq_pct(), 1),
            "generator_cpu": {
                "cpu": self.gen_cpu,
                "softirq_pct": round(self.gen_cpu_pct(|c| c.softirq), 1),
                "system_pct": round(self.gen_cpu_pct(|c| c.system), 1),
                "busy_pct": round(self.gen_cpu_pct(|c| c.busy), 1),
            },
            "other_cpus_busy_pct": round(self.other_busy_pct(), 1),
            "busy_before_pct": round(self.busy_before * 100.0, 1),
            "busy_machine": self.busy_machine,
            "softirq_ns_per_packet": round(self.softirq_ns_per_packet(), 1),
        })
    }

    /// How busy the CPUs other than the generator's were (another build, the event reader).
    fn other_busy_pct(&self) -> f64 {
        let (busy, total) = self
            .cpu
            .cpus
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.gen_cpu)
            .fold((0u64, 0u64), |(b, t), (_, c)| (b + c.busy, t + c.total));
        100.0 * busy as f64 / (total as f64).max(1.0)
    }
}

/// The shape of a flood. Configurations are compared with the baselines of the same pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// One frame (one source), ~1M packets per `BPF_PROG_RUN` call.
    Single,
    /// 65,536 sources in turn, `--per-source` packets each per call: `bench_tx` cannot vary the
    /// source within a call, so each call sends one source's frame.
    Spoofed,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "single-source",
            Self::Spoofed => "65k-sources",
        }
    }

    /// (iptables raw, bare XDP_DROP) baseline ids.
    fn baselines(self) -> (&'static str, &'static str) {
        match self {
            Self::Single => ("iptables-raw", "xdp-drop-all"),
            Self::Spoofed => ("iptables-raw-65k", "xdp-drop-all-65k"),
        }
    }
}

/// One configuration and its runs.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: &'static str,
    pub pattern: Pattern,
    pub label: String,
    pub counted_by: &'static str,
    pub runs: Vec<Run>,
    pub notes: Vec<String>,
    pub setup: Option<Value>,
    /// The XDP program's own run time per packet (kernel bpf_stats, separate pass).
    pub program_ns: Option<f64>,
}

impl Scenario {
    pub fn new(
        id: &'static str,
        pattern: Pattern,
        label: &str,
        counted_by: &'static str,
        runs: Vec<Run>,
    ) -> Self {
        Self {
            id,
            pattern,
            label: label.to_owned(),
            counted_by,
            runs,
            notes: Vec::new(),
            setup: None,
            program_ns: None,
        }
    }

    pub fn note(&mut self, note: String) {
        if !note.is_empty() {
            self.notes.push(note);
        }
    }

    fn median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        let mut v: Vec<f64> = self.runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn mpps(&self) -> f64 {
        self.median(Run::mpps)
    }
}

/// The targets the gateway's configurations are held to (ids by prefix), against the baselines
/// of their own flood pattern.
#[derive(Clone, Copy, Debug)]
struct Target {
    id_prefix: &'static str,
    vs_iptables: f64,
    vs_xdp_drop: Option<f64>,
}

const TARGETS: [Target; 2] = [
    Target {
        id_prefix: "gateway-deny-",
        vs_iptables: 3.0,
        vs_xdp_drop: Some(0.6),
    },
    Target {
        id_prefix: "gateway-ratecap-",
        vs_iptables: 2.0,
        vs_xdp_drop: None,
    },
];

pub struct Report {
    args: Value,
    environment: Value,
    scenarios: Vec<Scenario>,
    events: u64,
}

impl Report {
    pub fn new(args: &Args, cpu: usize, ncpu: usize) -> Self {
        Self {
            args: json!({
                "runs": args.runs,
                "packets_per_run": args.packets,
                "max_seconds_per_run": args.max_time.as_secs(),
                "per_source": args.per_source,
                "batch": args.batch,
                "generator_cpu": cpu,
                "generator_sched_fifo": args.realtime,
                "cpus": ncpu,
            }),
            environment: Value::Null,
            scenarios: Vec::new(),
            events: 0,
        }
    }

    /// Kernel, CPU, load and tool versions, for whoever reads the numbers later.
    pub fn environment(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let gro = run_cmd(ns.command("ethtool")?.args(["-k", "rcv0"]))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("generic-receive-offload"))
            .unwrap_or("")
            .to_owned();
        self.environment = json!({
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cpu_model": model,
            "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "rcv0": gro.trim(),
            "started_unix": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        Ok(())
    }

    /// Adds a configuration's results, keeping the report order of `scenario::CONFIGS`.
    pub fn push(&mut self, s: Scenario) {
        self.scenarios.push(s);
        self.scenarios.sort_by_key(|s| {
            super::scenario::CONFIGS
                .iter()
                .position(|(id, _)| *id == s.id)
                .unwrap_or(usize::MAX)
        });
    }

    pub fn set_events(&mut self, n: u64) {
        self.events = n;
    }

    fn get(&self, id: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.id == id)
    }

    fn ratio_to(&self, s: &Scenario, base: &str) -> Option<f64> {
        let b = self.get(base)?.mpps();
        (b > 0.0).then(|| s.mpps() / b)
    }

    /// Against iptables raw with the same flood pattern.
    fn vs_iptables(&self, s: &Scenario) -> Option<f64> {
        self.ratio_to(s, s.pattern.baselines().0)
    }

    /// Against bare XDP_DROP with the same flood pattern.
    fn vs_xdp_drop(&self, s: &Scenario) -> Option<f64> {
        self.ratio_to(s, s.pattern.baselines().1)
    }

    /// The receiver's cost ratio: baseline softirq ns/packet over this configuration's, i.e.
    /// how many times more packets the receiving CPU could drop if it did nothing else (no
    /// generator sharing it).
    fn cost_ratio(&self, s: &Scenario, base: &str) -> Option<f64> {
        let b = self.get(base)?.median(Run::softirq_ns_per_packet);
        let own = s.median(Run::softirq_ns_per_packet);
        (own > 0.0 && b > 0.0).then(|| b / own)
    }

    /// Target verdicts: (scenario id, text, met). The verdict is on Mpps as measured; the
    /// receiver-cost ratio is given beside it.
    fn targets(&self) -> Vec<(&'static str, String, bool)> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            let Some(t) = TARGETS.iter().find(|t| s.id.starts_with(t.id_prefix)) else {
                continue;
            };
            let (ipt, xdp) = s.pattern.baselines();
            let cost = |base: &str| {
                self.cost_ratio(s, base).map_or_else(String::new, |c| {
                    format!(" (receiver cost, softirq ns/packet: {c:.2}x)")
                })
            };
            if let Some(r) = self.vs_iptables(s) {
                out.push((
                    s.id,
                    format!(
                        ">= {:.0}x `{ipt}` in Mpps: {r:.2}x{}",
                        t.vs_iptables,
                        cost(ipt)
                    ),
                    r >= t.vs_iptables,
                ));
            }
            if let Some(min) = t.vs_xdp_drop
                && let Some(r) = self.vs_xdp_drop(s)
            {
                out.push((
                    s.id,
                    format!(
                        ">= {:.0}% of `{xdp}` in Mpps: {:.0}%{}",
                        min * 100.0,
                        r * 100.0,
                        self.cost_ratio(s, xdp)
                            .map_or_else(String::new, |c| format!(
                                " (receiver cost: {:.0}%)",
                                c * 100.0
                            ))
                    ),
                    r >= min,
                ));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let scenarios: Vec<Value> = self
            .scenarios
            .iter()
            .map(|s| {
                let (ipt, xdp) = s.pattern.baselines();
                json!({
                    "id": s.id,
                    "flood": s.pattern.name(),
                    "label": s.label,
                    "counted_by": s.counted_by,
                    "median": {
                        "mpps": round(s.mpps(), 3),
                        "softirq_cpu_pct_all": round(s.median(Run::softirq_pct), 1),
                        "softirq_ns_per_packet": round(s.median(Run::softirq_ns_per_packet), 1),
                        "passed": s.median(|r| r.passed as f64),
                    },
                    "xdp_program_ns_per_packet": s.program_ns.map(|n| round(n, 1)),
                    "ratio_vs_iptables_raw": self.vs_iptables(s).map(|r| round(r, 3)),
                    "ratio_vs_iptables_raw_baseline": ipt,
                    "ratio_vs_xdp_drop_all": self.vs_xdp_drop(s).map(|r| round(r, 3)),
                    "ratio_vs_xdp_drop_all_baseline": xdp,
                    "receiver_cost_ratio_vs_iptables_raw": self.cost_ratio(s, ipt).map(|r| round(r, 3)),
                    "receiver_cost_ratio_vs_xdp_drop_all": self.cost_ratio(s, xdp).map(|r| round(r, 3)),
                    "notes": s.notes,
                    "setup": s.setup,
                    "runs": s.runs.iter().map(Run::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(id, text, met)| json!({"id": id, "target": text, "met": met}))
            .collect();
        json!({
            "benchmark": "xdp",
            "args": self.args,
            "environment": self.environment,
            "rate_cap_reports_read": self.events,
            "scenarios": scenarios,
            "targets": targets,
        })
    }

    pub fn markdown(&self) -> String {
        let arg = |k: &str| self.args.get(k).and_then(Value::as_u64).unwrap_or(0);
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### XDP drop benchmark: medians of {} runs (kernel {}, {} CPUs; generator and receiver share CPU {})\n",
            arg("runs"),
            self.environment
                .get("kernel")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            arg("cpus"),
            arg("generator_cpu"),
        );
        for pattern in [Pattern::Single, Pattern::Spoofed] {
            let rows: Vec<&Scenario> = self
                .scenarios
                .iter()
                .filter(|s| s.pattern == pattern)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = match pattern {
                Pattern::Single => writeln!(
                    md,
                    "**Single-source flood**: one 60-byte UDP frame, {} packets per run, ~1M per `BPF_PROG_RUN` call\n",
                    arg("packets_per_run")
                ),
                Pattern::Spoofed => writeln!(
                    md,
                    "**65,536-source flood**: 198.19.0.0/16 in turn, {} packets per source and `BPF_PROG_RUN` call ({} packets per run; `bench_tx` cannot vary the source within a call)\n",
                    arg("per_source"),
                    u64::from(super::scenario::SPOOF_SOURCES) * arg("per_source")
                ),
            };
            let (ipt, xdp) = pattern.baselines();
            let _ = writeln!(
                md,
                "| configuration | dropped Mpps | vs `{ipt}` | vs `{xdp}` | softirq CPU % (all CPUs) | softirq ns/packet | XDP program ns/packet | runs, Mpps | counted by |"
            );
            let _ = writeln!(
                md,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
            );
            for s in rows {
                let fmt = |r: Option<f64>, pct: bool| match r {
                    Some(r) if pct => format!("{:.0}%", r * 100.0),
                    Some(r) => format!("{r:.2}x"),
                    None => "-".into(),
                };
                let runs: Vec<String> = s.runs.iter().map(|r| format!("{:.2}", r.mpps())).collect();
                let _ = writeln!(
                    md,
                    "| {} (`{}`) | {:.2} | {} | {} | {:.1} | {:.0} | {} | {} | {} |",
                    s.label,
                    s.id,
                    s.mpps(),
                    fmt(self.vs_iptables(s), false),
                    fmt(self.vs_xdp_drop(s), true),
                    s.median(Run::softirq_pct),
                    s.median(Run::softirq_ns_per_packet),
                    s.program_ns
                        .map_or_else(|| "-".into(), |n| format!("{n:.0}")),
                    runs.join(" / "),
                    s.counted_by,
                );
            }
            let _ = writeln!(md);
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(
                md,
                "**Targets** (against the baselines of the same flood)\n"
            );
            for (id, text, met) in targets {
                let _ = writeln!(
                    md,
                    "- `{id}` {text}: {}",
                    if met { "met" } else { "NOT met" }
                );
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "**Notes**\n");
        let _ = writeln!(
            md,
            "- Mpps = packets the configuration counted as dropped / the generator's wall time. The generator (live-frames `BPF_PROG_RUN` of `bench_tx`) and the receiver's NAPI run on the same CPU, one after the other for each 64-frame batch, so Mpps = 1 / (generator ns + receiver ns per packet); `generator-loop*` rows are the generator alone, `xdp-drop-all*` rows the ceiling of the whole path.\n- softirq ns/packet = softirq time of all CPUs (/proc/stat, tick-sampled) / packets dropped: the receiving side's whole cost (veth NAPI, frame return, the filter), independent of the generator.\n- XDP program ns/packet: the program's own run time per packet from the kernel's bpf_stats (`BPF_ENABLE_STATS`), in one extra run per XDP configuration after the measured rounds (the statistics cost two clock reads per packet, so they are off while Mpps are measured). The bare XDP_DROP row is the floor of this measurement (mostly the statistics' own clock reads): subtract it for the filter's work.\n- Receiver cost ratio (in the targets) = the baseline's softirq ns/packet / the configuration's: the ratio of drop rates if the receiving CPU did not also run the generator, as on a real NIC."
        );
        let all: Vec<&Run> = self.scenarios.iter().flat_map(|s| &s.runs).collect();
        let busy = all.iter().filter(|r| r.busy_machine).count();
        if busy > 0 {
            let _ = writeln!(
                md,
                "- **{busy} of {} runs started on a busy machine** (other work used more than {:.0}% of the CPUs and the wait budget ran out): their numbers are less reliable; see `busy_machine` and `other_cpus_busy_pct` in xdp.json.",
                all.len(),
                super::sys::BUSY_THRESHOLD * 100.0
            );
        }
        for s in &self.scenarios {
            for n in &s.notes {
                let _ = writeln!(md, "- `{}`: {n}", s.id);
            }
        }
        md
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
