//! The configurations: how each one is set up, flooded and counted, and the rounds that run
//! them. Each round runs every configuration once, so the runs of all configurations are spread
//! over the same stretch of time and a change in machine load hits them alike.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, RingBuf},
    programs::{Program, Xdp, XdpMode, xdp::XdpLink},
};
use gateway::{
    config::XdpSection,
    xdp::{Maps, PinDir, open_object, pin::BPFFS, programs},
};
use gateway_common::{DenyValue, RateState, map_names, origin, reason, stat};
use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};

use super::{
    Args,
    generator::{FRAME_LEN, Flood, Generator, Sent, Udp4},
    report::{Pattern, Report, Run, Scenario},
    sys::{
        Blackhole, CpuTimes, LinkStats, Netns, PinGuard, Port, Undo, ethtool_stats, ethtool_sum,
        ip, run as run_cmd,
    },
};

const GEN_IF: &str = "gen0";
const RCV_IF: &str = "rcv0";
/// The idle veth pair (in the generator's namespace) the generator's programs stay attached to.
const HOLD_IF: [&str; 2] = ["hold0", "hold1"];
const GEN_ADDR: &str = "198.18.0.1/30";
const RCV_ADDR: &str = "198.18.0.2/30";
const RCV_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The single-source floods come from here (a spoofed address, not on the link).
const FLOOD_SRC: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The spoofed flood's 65,536 sources: 198.19.0.0/16 (FLOOD_SRC is one of them).
const SPOOF_BASE: u32 = u32::from_be_bytes([198, 19, 0, 0]);
pub const SPOOF_SOURCES: u32 = 65_536;
/// UDP discard: nothing listens on it in the receiving namespace.
const DPORT: u16 = 9;
/// The rate cap of the spoofed-flood configuration: 10 packets/s per source, burst 1, so a
/// source's first packet passes and the rest of its share of the flood drops as `pps-cap`.
const CAP_PPS: u64 = 10;
const CAP_BURST: u64 = 1;

/// How a configuration drops (or what it measures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The generator alone, running `bench_drop_all`: nothing leaves it.
    GeneratorLoop,
    KernelDrop,
    Iptables(&'static str),
    NftIngress,
    XdpDropAll,
    /// The gateway's program with the maps of this instance (index into [`INSTANCES`]).
    Gateway(usize),
}

/// The gateway instances, each with its own pinned maps, so that every configuration keeps its
/// maps between rounds: (name, deny entries besides the flood sources, spoofed sources
/// denylisted too, rate cap).
const INSTANCES: [(&str, u32, bool, bool); 4] = [
    ("ratecap", 0, false, true),
    ("deny-1k", 1_000, false, false),
    ("deny-100k", 100_000, false, false),
    ("deny-1m", 1_000_000, true, false),
];

/// Every configuration, in report and run order.
pub const CONFIGS: [(&str, Pattern); 14] = [
    ("generator-loop", Pattern::Single),
    ("kernel-drop", Pattern::Single),
    ("iptables-raw", Pattern::Single),
    ("iptables-legacy-raw", Pattern::Single),
    ("nft-ingress", Pattern::Single),
    ("xdp-drop-all", Pattern::Single),
    ("gateway-deny-1k", Pattern::Single),
    ("gateway-deny-100k", Pattern::Single),
    ("gateway-deny-1m", Pattern::Single),
    ("generator-loop-65k", Pattern::Spoofed),
    ("iptables-raw-65k", Pattern::Spoofed),
    ("xdp-drop-all-65k", Pattern::Spoofed),
    ("gateway-ratecap-65k", Pattern::Spoofed),
    ("gateway-deny-1m-65k", Pattern::Spoofed),
];

fn kind_of(id: &str) -> Option<Kind> {
    Some(match id {
        "generator-loop" | "generator-loop-65k" => Kind::GeneratorLoop,
        "kernel-drop" => Kind::KernelDrop,
        "iptables-raw" | "iptables-raw-65k" => Kind::Iptables("iptables"),
        "iptables-legacy-raw" => Kind::Iptables("iptables-legacy"),
        "nft-ingress" => Kind::NftIngress,
        "xdp-drop-all" | "xdp-drop-all-65k" => Kind::XdpDropAll,
        "gateway-ratecap-65k" => Kind::Gateway(0),
        "gateway-deny-1k" => Kind::Gateway(1),
        "gateway-deny-100k" => Kind::Gateway(2),
        "gateway-deny-1m" | "gateway-deny-1m-65k" => Kind::Gateway(3),
        _ => return None,
    })
}

fn pattern_of(id: &str) -> Pattern {
    CONFIGS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(Pattern::Single, |(_, p)| *p)
}

/// The receiver-side counters a configuration is judged by, read before and after a run.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    dropped: u64,
    passed: u64,
}

/// One loaded copy of the gateway's filter and the maps pinned for it.
struct Gateway<'a> {
    filter: &'a mut Xdp,
    maps: Maps,
    /// The rate map, emptied before each run of a rate-cap configuration.
    rate: Option<BpfHashMap<MapData, [u8; 4], RateState>>,
    /// How the denylist was filled: (entries inserted, seconds).
    fill: Option<(u32, Duration)>,
}

impl Gateway<'_> {
    fn counts(&self) -> anyhow::Result<Counts> {
        let mut c = Counts::default();
        for (slot, counter) in self.maps.stats()?.iter().enumerate() {
            if (stat::DROP_DENY as usize..stat::COUNT as usize).contains(&slot) {
                c.dropped += counter.packets;
            } else {
                c.passed += counter.packets;
            }
        }
        Ok(c)
    }
}

/// Everything the configurations share while they run.
struct Bench<'a> {
    args: &'a Args,
    blackhole: &'a Blackhole,
    cpu: usize,
    ncpu: usize,
    hz: u64,
    gen_ns: &'a Netns,
    rcv_ns: &'a Netns,
    gen_port: &'a Port,
    tx: &'a Xdp,
    /// One flood source, one frame.
    single: [[u8; FRAME_LEN]; 1],
    /// One frame per spoofed source.
    spoofed: Vec<[u8; FRAME_LEN]>,
    /// What is left of the time the bench may wait for a quiet machine, in ms.
    wait_budget_ms: AtomicU64,
}

pub fn run(args: &Args) -> anyhow::Result<Report> {
    let selected = select(args.only.as_deref())?;
    let ncpu = CpuTimes::read()?.cpus.len();
    let cpu = args.cpu.unwrap_or(ncpu - 1);
    if cpu >= ncpu {
        bail!("--cpu {cpu}: this machine has CPUs 0..{}", ncpu - 1);
    }
    let mut report = Report::new(args, cpu, ncpu);

    // Guards are dropped in reverse order of declaration: links and programs first, then the
    // pinned maps, the namespaces, and last the blackhole route.
    let blackhole = Blackhole::add()?;
    let pid = std::process::id();
    let gen_ns = Netns::create(format!("xb-gen-{pid}"))?;
    let rcv_ns = Netns::create(format!("xb-rcv-{pid}"))?;
    ip(&[
        "link",
        "add",
        GEN_IF,
        "netns",
        &gen_ns.name,
        "type",
        "veth",
        "peer",
        "name",
        RCV_IF,
        "netns",
        &rcv_ns.name,
    ])?;
    gen_ns.ip(&["addr", "add", GEN_ADDR, "dev", GEN_IF])?;
    rcv_ns.ip(&["addr", "add", RCV_ADDR, "dev", RCV_IF])?;
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
        &format!("net.ipv4.conf.{RCV_IF}.rp_filter"),
    ] {
        rcv_ns.sysctl(key, "0")?;
    }
    // veth hands XDP_TX frames only to a peer that has NAPI, which it enables for an XDP
    // program or for GRO; without either it discards them and no counter moves (measured: 0 of
    // 2M frames arrived). GRO lets the configurations without XDP receive the flood without a
    // dummy XDP_PASS program in front of the stack.
    run_cmd(rcv_ns.command("ethtool")?.args(["-K", RCV_IF, "gro", "on"]))?;
    gen_ns.ip(&["link", "set", GEN_IF, "up"])?;
    rcv_ns.ip(&["link", "set", RCV_IF, "up"])?;
    gen_ns.ip(&[
        "link", "add", HOLD_IF[0], "type", "veth", "peer", "name", HOLD_IF[1],
    ])?;
    let gen_port = Port::read(&gen_ns, GEN_IF)?;
    let rcv_port = Port::read(&rcv_ns, RCV_IF)?;
    report.environment(&rcv_ns)?;

    // One copy of the object per gateway instance; the first also provides the generator's
    // programs.
    let mut pin_guards = Vec::new();
    let mut objects: Vec<(PinDir, Ebpf)> = Vec::new();
    for (name, ..) in INSTANCES {
        let instance = format!("bench-{pid}-{name}");
        pin_guards.push(PinGuard {
            path: Path::new(BPFFS).join("gateway").join(&instance),
        });
        objects.push(
            open_object(Path::new(BPFFS), &instance)
                .with_context(|| format!("loading the gateway's eBPF object ({instance})"))?,
        );
    }
    let events = objects[0]
        .1
        .take_map(map_names::EVENTS)
        .context("the object has no events map")?;
    let events = RingBuf::try_from(events).context("events map")?;

    let mut objects = objects.iter_mut();
    let (first_pins, first) = objects.next().context("no eBPF object")?;
    let mut found: BTreeMap<&str, &mut Program> = first.programs_mut().collect();
    let mut take = |name: &str| -> anyhow::Result<&mut Xdp> {
        let program: &mut Xdp = found
            .remove(name)
            .with_context(|| format!("no program {name} in the eBPF object"))?
            .try_into()?;
        program.load().with_context(|| format!("loading {name}"))?;
        Ok(program)
    };
    let tx = take(programs::BENCH_TX)?;
    let drop_all = take(programs::BENCH_DROP_ALL)?;
    let mut filters = vec![(&*first_pins, take(programs::FILTER)?)];
    for (pins, ebpf) in objects {
        let program: &mut Xdp = ebpf
            .program_mut(programs::FILTER)
            .context("no filter program in the eBPF object")?
            .try_into()?;
        program.load().context("loading the filter")?;
        filters.push((&*pins, program));
    }
    let mut gateways = Vec::new();
    for ((pins, filter), (name, deny, deny_spoofed, cap)) in filters.into_iter().zip(INSTANCES) {
        gateways.push(setup_gateway(name, pins, filter, deny, deny_spoofed, cap)?);
    }

    // `BPF_PROG_RUN` with repeat > 1 puts the program into the kernel's XDP dispatcher for the
    // call and takes it out after; each change rewrites the dispatcher under a global mutex and
    // waits for an RCU grace period: ~25 ms per call here, which would cap the many-source
    // flood (one call per source) at ~40 calls/s. A program attached somewhere stays in the
    // dispatcher (refcounted) and a call then costs ~15 us, so the generator's programs stay
    // attached to an idle pair that carries no traffic.
    let _hold = [
        attach(&gen_ns, tx, HOLD_IF[0])?,
        attach(&gen_ns, drop_all, HOLD_IF[1])?,
    ];

    let frame = |src: Ipv4Addr| {
        Udp4 {
            src_mac: gen_port.mac,
            dst_mac: rcv_port.mac,
            src,
            dst: RCV_IP,
            sport: 4321,
            dport: DPORT,
        }
        .frame()
    };
    let bench = Bench {
        args,
        blackhole: &blackhole,
        cpu,
        ncpu,
        hz: super::sys::clock_ticks_per_second(),
        gen_ns: &gen_ns,
        rcv_ns: &rcv_ns,
        gen_port: &gen_port,
        tx,
        single: [frame(FLOOD_SRC)],
        spoofed: (0..SPOOF_SOURCES)
            .map(|i| frame(Ipv4Addr::from(SPOOF_BASE + i)))
            .collect(),
        wait_budget_ms: AtomicU64::new(u64::try_from(args.max_wait.as_millis()).unwrap_or(0)),
    };

    // The daemon reads the rate-cap reports off the ring buffer; so does the bench, on the
    // other CPU, or a full ring would make every over-cap packet retry a reservation.
    let stop = AtomicBool::new(false);
    let reports = AtomicU64::new(0);
    let other_cpu = (cpu + 1) % ncpu;
    let mut scenarios: BTreeMap<&str, Scenario> = BTreeMap::new();
    std::thread::scope(|s| {
        s.spawn(|| drain_events(events, other_cpu, &stop, &reports));
        let result = (|| -> anyhow::Result<()> {
            for round in 1..=args.runs {
                for &id in &selected {
                    super::sys::check_interrupted()?;
                    eprintln!("== round {round}/{}: {id}", args.runs);
                    let Some(run) = bench.run_once(id, drop_all, &mut gateways)? else {
                        continue;
                    };
                    eprintln!("   {}", run.summary());
                    scenarios
                        .entry(id)
                        .or_insert_with(|| bench.describe(id, &gateways))
                        .runs
                        .push(run);
                }
            }
            // A separate pass with the kernel's per-program run-time statistics on (they cost
            // two clock reads per packet, so they stay off while Mpps are measured): what the
            // XDP program itself costs per packet, without the driver around it.
            let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    eprintln!("BPF_ENABLE_STATS failed ({e}): no XDP program run times");
                    None
                }
            };
            for &id in selected.iter().filter(|_| stats.is_some()) {
                let program_of = |gateways: &[Gateway<'_>], drop_all: &Xdp| match kind_of(id) {
                    Some(Kind::XdpDropAll) => drop_all.info().ok(),
                    Some(Kind::Gateway(i)) => gateways.get(i).and_then(|g| g.filter.info().ok()),
                    _ => None,
                };
                let Some(before) = program_of(&gateways, drop_all) else {
                    continue;
                };
                eprintln!("== program run time: {id}");
                if bench.run_once(id, drop_all, &mut gateways)?.is_none() {
                    continue;
                }
                let Some(after) = program_of(&gateways, drop_all) else {
                    continue;
                };
                let runs = after.run_count().saturating_sub(before.run_count());
                let ns = after
                    .run_time()
                    .saturating_sub(before.run_time())
                    .as_nanos();
                if let Some(s) = scenarios.get_mut(id)
                    && runs > 0
                {
                    s.program_ns = Some(ns as f64 / runs as f64);
                    eprintln!(
                        "   {:.1} ns per packet over {runs} runs",
                        ns as f64 / runs as f64
                    );
                }
            }
            drop(stats);
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    for s in scenarios.into_values() {
        report.push(s);
    }
    report.set_events(reports.load(Ordering::Relaxed));
    Ok(report)
}

/// The configurations to run; with `--only`, the ratio baselines of the selected floods'
/// patterns are added.
fn select(only: Option<&[String]>) -> anyhow::Result<Vec<&'static str>> {
    let all = CONFIGS.map(|(id, _)| id);
    let Some(only) = only else {
        return Ok(all.to_vec());
    };
    for id in only {
        if !all.contains(&id.as_str()) {
            bail!("unknown configuration `{id}`; known: {}", all.join(", "));
        }
    }
    let wanted = |id: &str| only.iter().any(|o| o == id);
    let spoofed = only.iter().any(|o| pattern_of(o) == Pattern::Spoofed);
    Ok(all
        .into_iter()
        .filter(|id| {
            wanted(id)
                || matches!(*id, "iptables-raw" | "xdp-drop-all")
                || (spoofed && matches!(*id, "iptables-raw-65k" | "xdp-drop-all-65k"))
        })
        .collect())
}

/// Loads one gateway instance's maps: the denylist (the single flood's source first, then
/// addresses from 10.0.0.0/8, plus the spoofed sources if asked), or the rate cap.
fn setup_gateway<'a>(
    name: &str,
    pins: &PinDir,
    filter: &'a mut Xdp,
    deny: u32,
    deny_spoofed: bool,
    cap: bool,
) -> anyhow::Result<Gateway<'a>> {
    let mut maps = Maps::open(pins)?;
    let mut fill = None;
    if deny > 0 {
        let value = deny_value();
        let base = u32::from_be_bytes([10, 0, 0, 0]);
        let hosts = (0..deny).map(|i| {
            if i == 0 {
                FLOOD_SRC
            } else {
                Ipv4Addr::from(base + i)
            }
        });
        let spoofed = (0..if deny_spoofed { SPOOF_SOURCES } else { 0 })
            .map(|i| Ipv4Addr::from(SPOOF_BASE + i))
            .filter(|a| *a != FLOOD_SRC);
        let entries: Vec<(IpNet, DenyValue)> = hosts
            .chain(spoofed)
            .map(|a| (IpNet::V4(Ipv4Net::from(a)), value))
            .collect();
        let n = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let start = Instant::now();
        maps.deny_many(entries)?;
        let took = start.elapsed();
        eprintln!(
            "gateway instance {name}: {n} deny entries inserted in {:.2} s",
            took.as_secs_f64()
        );
        fill = Some((n, took));
    }
    let section = if cap {
        json!({ "interfaces": [RCV_IF], "rate_cap": { "pps": CAP_PPS, "burst": CAP_BURST } })
    } else {
        json!({ "interfaces": [RCV_IF] })
    };
    let section: XdpSection =
        serde_json::from_value(section).context("building the xdp config section")?;
    maps.set_config(section.kernel_config())?;
    Ok(Gateway {
        filter,
        maps,
        rate: if cap { Some(rate_map(pins)?) } else { None },
        fill,
    })
}

fn drain_events(mut ring: RingBuf<MapData>, cpu: usize, stop: &AtomicBool, seen: &AtomicU64) {
    let _ = super::sys::pin_current_thread(cpu);
    while !stop.load(Ordering::Relaxed) {
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        seen.fetch_add(n, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Attaches `program` in driver mode to `iface` from inside `ns`; the returned link detaches on
/// drop.
fn attach(ns: &Netns, program: &mut Xdp, iface: &str) -> anyhow::Result<XdpLink> {
    ns.run_on(None, || {
        let id = program
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching XDP (driver mode) to {iface}"))?;
        program.take_link(id).context("taking the XDP link")
    })
}

/// Whatever a configuration put in place on the receiver, undone on drop.
#[derive(Default)]
struct Installed {
    _rule: Option<Undo>,
    _link: Option<XdpLink>,
}

impl Installed {
    fn rule(undo: Undo) -> Self {
        Self {
            _rule: Some(undo),
            _link: None,
        }
    }

    fn link(link: XdpLink) -> Self {
        Self {
            _rule: None,
            _link: Some(link),
        }
    }
}

impl Bench<'_> {
    fn generator(&self) -> Generator<'_> {
        Generator {
            program: self.tx,
            ifindex: self.gen_port.ifindex,
            batch: self.args.batch,
        }
    }

    fn flood(&self, pattern: Pattern) -> Flood<'_> {
        match pattern {
            Pattern::Single => Flood {
                frames: &self.single,
                per_frame: 1 << 20,
                packets: self.args.packets,
                max_time: self.args.max_time,
            },
            Pattern::Spoofed => Flood {
                frames: &self.spoofed,
                per_frame: self.args.per_source,
                packets: u64::from(SPOOF_SOURCES) * u64::from(self.args.per_source),
                max_time: self.args.max_time,
            },
        }
    }

    fn send(&self, generator: &Generator<'_>, flood: &Flood<'_>) -> anyhow::Result<Sent> {
        let enter = || -> anyhow::Result<()> {
            self.gen_ns.enter()?;
            super::sys::pin_current_thread(self.cpu)?;
            if self.args.realtime {
                super::sys::realtime_current_thread(50)?;
            }
            Ok(())
        };
        generator.send(flood, &enter)
    }

    /// Sets up configuration `id`, floods it once after a short unrecorded warm-up, reads its
    /// counters and takes it down again. `None` when the configuration is not available here.
    fn run_once(
        &self,
        id: &str,
        drop_all: &mut Xdp,
        gateways: &mut [Gateway<'_>],
    ) -> anyhow::Result<Option<Run>> {
        let kind = kind_of(id).with_context(|| format!("no configuration {id}"))?;
        let ns = self.rcv_ns;
        self.blackhole.ensure()?;
        let mut budget = Duration::from_millis(self.wait_budget_ms.load(Ordering::Relaxed));
        let (busy_before, busy_machine) = super::sys::wait_quiet(&mut budget)?;
        self.wait_budget_ms.store(
            u64::try_from(budget.as_millis()).unwrap_or(0),
            Ordering::Relaxed,
        );
        if busy_machine {
            eprintln!(
                "   measuring on a busy machine ({:.0}% busy; waited long enough)",
                busy_before * 100.0
            );
        }
        let _installed = match kind {
            Kind::GeneratorLoop | Kind::KernelDrop => Installed::default(),
            Kind::Iptables(tool) => {
                if !super::sys::have(tool) {
                    if tool == "iptables" {
                        bail!(
                            "iptables not found: `apt-get install -y iptables` (cargo xtask setup)"
                        );
                    }
                    eprintln!("   {tool} not installed: skipped");
                    return Ok(None);
                }
                run_cmd(
                    ns.command(tool)?
                        .args(["-t", "raw", "-A", "PREROUTING", "-j", "DROP"]),
                )?;
                let mut undo = ns.command(tool)?;
                undo.args(["-t", "raw", "-D", "PREROUTING", "-j", "DROP"]);
                Installed::rule(Undo::new(format!("{tool} raw rule"), undo))
            }
            Kind::NftIngress => {
                if !super::sys::have("nft") {
                    bail!("nft not found: `apt-get install -y nftables` (cargo xtask setup)");
                }
                let file =
                    std::env::temp_dir().join(format!("xdp-bench-{}.nft", std::process::id()));
                std::fs::write(&file, NFT_TABLE)
                    .with_context(|| format!("writing {}", file.display()))?;
                let added = run_cmd(ns.command("nft")?.arg("-f").arg(&file));
                let _ = std::fs::remove_file(&file);
                added?;
                let mut undo = ns.command("nft")?;
                undo.args(["delete", "table", "netdev", "xdpbench"]);
                Installed::rule(Undo::new("nft table", undo))
            }
            Kind::XdpDropAll => Installed::link(attach(ns, drop_all, RCV_IF)?),
            Kind::Gateway(i) => {
                let gw = gateways.get_mut(i).context("gateway instance")?;
                Installed::link(attach(ns, gw.filter, RCV_IF)?)
            }
        };
        let generator = match kind {
            Kind::GeneratorLoop => Generator {
                program: drop_all,
                ..self.generator()
            },
            _ => self.generator(),
        };
        let flood = self.flood(pattern_of(id));
        let warmup = Flood {
            packets: (flood.packets / 10).clamp(1, 1_000_000),
            ..flood
        };
        self.send(&generator, &warmup)?;
        if let Kind::Gateway(i) = kind
            && let Some(rate) = gateways.get_mut(i).and_then(|g| g.rate.as_mut())
        {
            // Every run starts from an empty rate map: 65,536 sources new to the filter.
            clear(rate)?;
        }
        let count = || -> anyhow::Result<Counts> {
            Ok(match kind {
                // The generator's own count is the measure (set below).
                Kind::GeneratorLoop => Counts::default(),
                Kind::KernelDrop => Counts {
                    dropped: LinkStats::read(ns, RCV_IF)?.rx_packets,
                    passed: 0,
                },
                Kind::Iptables(tool) => {
                    let out = run_cmd(ns.command(tool)?.args([
                        "-t",
                        "raw",
                        "-L",
                        "PREROUTING",
                        "-v",
                        "-x",
                        "-n",
                    ]))?;
                    Counts {
                        dropped: iptables_drop_count(&out)?,
                        passed: 0,
                    }
                }
                Kind::NftIngress => {
                    let out = run_cmd(
                        ns.command("nft")?
                            .args(["-j", "list", "table", "netdev", "xdpbench"]),
                    )?;
                    let v: Value =
                        serde_json::from_str(&out).context("parsing `nft -j list table`")?;
                    Counts {
                        dropped: nft_counter(&v).context("no counter in the nft table")?,
                        passed: 0,
                    }
                }
                Kind::XdpDropAll => Counts {
                    dropped: ethtool_sum(&ethtool_stats(ns, RCV_IF)?, "xdp_drops"),
                    passed: 0,
                },
                Kind::Gateway(i) => gateways.get(i).context("gateway instance")?.counts()?,
            })
        };

        let c0 = count()?;
        let rx0 = LinkStats::read(ns, RCV_IF)?;
        let e0 = ethtool_stats(self.gen_ns, GEN_IF)?;
        let r0 = ethtool_stats(ns, RCV_IF)?;
        let sent = self.send(&generator, &flood)?;
        // Everything was delivered and dropped inside the generator's syscalls; the pause only
        // lets counters that are read through slower paths settle.
        std::thread::sleep(Duration::from_millis(50));
        let c1 = count()?;
        let rx = rx0.delta(&LinkStats::read(ns, RCV_IF)?);
        let e1 = ethtool_stats(self.gen_ns, GEN_IF)?;
        let r1 = ethtool_stats(ns, RCV_IF)?;
        let mut ethtool = BTreeMap::new();
        for (dev, before, after) in [(GEN_IF, &e0, &e1), (RCV_IF, &r0, &r1)] {
            for (k, v) in after {
                let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
                if d != 0 && k != "peer_ifindex" {
                    ethtool.insert(format!("{dev}.{k}"), d);
                }
            }
        }
        // gen0's tx_queue_*_xdp_xmit counts the frames the peer's ring accepted.
        let accepted = ethtool_sum(&e1, "_xdp_xmit").saturating_sub(ethtool_sum(&e0, "_xdp_xmit"));
        let generator_only = kind == Kind::GeneratorLoop;
        Ok(Some(Run {
            sent: sent.packets,
            calls: sent.calls,
            seconds: sent.elapsed.as_secs_f64(),
            dropped: if generator_only {
                sent.packets
            } else {
                c1.dropped.saturating_sub(c0.dropped)
            },
            passed: c1.passed.saturating_sub(c0.passed),
            rx_packets: rx.rx_packets,
            not_delivered: if generator_only {
                0
            } else {
                sent.packets.saturating_sub(accepted)
            },
            ethtool,
            cpu: sent.cpu,
            busy_before,
            busy_machine,
            gen_cpu: self.cpu,
            hz: self.hz,
        }))
    }

    /// The configuration's row: what it is, how it is counted, notes.
    fn describe(&self, id: &'static str, gateways: &[Gateway<'_>]) -> Scenario {
        let pattern = pattern_of(id);
        let kind = kind_of(id).unwrap_or(Kind::KernelDrop);
        let version = |tool: &str, flag: &str| {
            run_cmd(Command::new(tool).arg(flag))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let (label, counted_by, notes): (String, &str, Vec<String>) = match kind {
            Kind::GeneratorLoop => (
                "generator alone: live frames dropped inside the generator, nothing sent".into(),
                "frames the generator ran",
                vec![],
            ),
            Kind::KernelDrop => (
                "no filter: the kernel stack drops them (UDP, no listener)".into(),
                "rx packets of rcv0 (ip -s link)",
                vec![format!(
                    "UDP to {RCV_IP}:{DPORT}, nothing listening; rcv0 has GRO on and no XDP program"
                )],
            ),
            Kind::Iptables(tool) => (
                format!("`{tool} -t raw -A PREROUTING -j DROP`"),
                "the rule's packet counter",
                vec![version(tool, "-V")],
            ),
            Kind::NftIngress => (
                "nft netdev ingress `counter drop` on rcv0".into(),
                "the rule's counter",
                vec![version("nft", "-v")],
            ),
            Kind::XdpDropAll => (
                "bare XDP_DROP (`bench_drop_all`)".into(),
                "veth rx_queue_*_xdp_drops (ethtool -S rcv0)",
                vec![],
            ),
            Kind::Gateway(i) => {
                let (name, deny, deny_spoofed, _) = INSTANCES[i.min(INSTANCES.len() - 1)];
                let fill = gateways.get(i).and_then(|g| g.fill);
                let mut notes = Vec::new();
                if let Some((n, took)) = fill {
                    notes.push(format!(
                        "instance {name}: {n} exact IPv4 deny entries, inserted in {:.2} s before the rounds (`Maps::deny_many`, one bpf syscall each: {:.1} us per entry); permanent entries, so no clock read per packet; no rate cap",
                        took.as_secs_f64(),
                        took.as_secs_f64() * 1e6 / f64::from(n.max(1))
                    ));
                }
                let label = match (pattern, deny_spoofed) {
                    (Pattern::Spoofed, _) if deny == 0 => {
                        notes.push(format!(
                            "empty denylist; the rate map is emptied before each run, so each source's first packet passes (`passed` in the JSON) and the rest drop as pps-cap; one ring-buffer report per source, read by the bench on CPU {} as the daemon would",
                            (self.cpu + 1) % self.ncpu
                        ));
                        format!(
                            "gateway: 65,536 spoofed sources over a {CAP_PPS} pps/source cap (burst {CAP_BURST})"
                        )
                    }
                    (Pattern::Spoofed, _) => format!(
                        "gateway: the 65,536 sources denylisted among {} entries",
                        fill.map_or_else(String::new, |(n, _)| human(n))
                    ),
                    (Pattern::Single, _) => format!(
                        "gateway: the flood's source denylisted among {}",
                        fill.map_or_else(|| human(deny), |(n, _)| human(n))
                    ),
                };
                (label, "gateway stats map: drop slots", notes)
            }
        };
        let mut s = Scenario::new(id, pattern, &label, counted_by, Vec::new());
        for n in notes {
            s.note(n);
        }
        s
    }
}

const NFT_TABLE: &str = "table netdev xdpbench {
  chain ingress {
    type filter hook ingress device \"rcv0\" priority -500; policy accept;
    counter drop
  }
}
";

fn deny_value() -> DenyValue {
    DenyValue {
        expires_ns: 0,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        reason: reason::STATIC_LIST,
        origin: origin::FEED,
        _pad: [0; 5],
    }
}

fn rate_map(pins: &PinDir) -> anyhow::Result<BpfHashMap<MapData, [u8; 4], RateState>> {
    let data = MapData::from_pin(pins.map_path(map_names::RATE_V4)).context("rate_v4 pin")?;
    let map = Map::from_map_data(data).context("rate_v4")?;
    BpfHashMap::try_from(map).context("rate_v4 as a hash map")
}

fn clear(map: &mut BpfHashMap<MapData, [u8; 4], RateState>) -> anyhow::Result<()> {
    let keys: Vec<[u8; 4]> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        match map.remove(&k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("emptying rate_v4"),
        }
    }
    Ok(())
}

fn human(n: u32) -> String {
    match n {
        1_000_000.. if n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        1_000.. if n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        _ => {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
    }
}

/// The packet count of the first DROP rule in `iptables -L -v -x -n` output.
fn iptables_drop_count(out: &str) -> anyhow::Result<u64> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pkts = f.next()?.parse::<u64>().ok()?;
            let _bytes = f.next()?;
            (f.next()? == "DROP").then_some(pkts)
        })
        .next()
        .context("no DROP rule with counters in iptables output")
}

/// The first `counter` object's packets anywhere in `nft -j` output.
fn nft_counter(v: &Value) -> Option<u64> {
    match v {
        Value::Object(m) => {
            if let Some(c) = m.get("counter")
                && let Some(p) = c.get("packets").and_then(Value::as_u64)
            {
                return Some(p);
            }
            m.values().find_map(nft_counter)
        }
        Value::Array(a) => a.iter().find_map(nft_counter),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iptables_counters() {
        let out = "Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n 1234567 74074020 DROP       all  --  *      *       0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(iptables_drop_count(out).ok(), Some(1_234_567));
    }

    #[test]
    fn reads_nft_counters() {
        let v = json!({"nftables": [{"metainfo": {}}, {"rule": {"expr": [{"counter": {"packets": 42, "bytes": 2520}}, {"drop": null}]}}]});
        assert_eq!(nft_counter(&v), Some(42));
    }

    #[test]
    fn selection_keeps_baselines() {
        let only = vec!["gateway-deny-1k".to_owned()];
        assert_eq!(
            select(Some(&only)).ok(),
            Some(vec!["iptables-raw", "xdp-drop-all", "gateway-deny-1k"])
        );
        let only = vec!["gateway-ratecap-65k".to_owned()];
        assert_eq!(
            select(Some(&only)).ok(),
            Some(vec![
                "iptables-raw",
                "xdp-drop-all",
                "iptables-raw-65k",
                "xdp-drop-all-65k",
                "gateway-ratecap-65k"
            ])
        );
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_000), "1k");
        assert_eq!(human(1_000_000), "1M");
        assert_eq!(human(1_065_535), "1,065,535");
        assert_eq!(human(999), "999");
    }

    #[test]
    fn every_config_has_a_kind() {
        for (id, _) in CONFIGS {
            assert!(kind_of(id).is_some(), "{id}");
        }
        assert!(kind_of("nope").is_none());
    }
}
