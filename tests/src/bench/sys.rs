//! The machinery around a measurement: commands, the two network namespaces and their veth pair,
//! drop guards for everything the bench adds to the system (namespaces, pinned maps, iptables and
//! nft rules, the blackhole route), CPU accounting from `/proc/stat` and interface counters.
//!
//! Unlike `tests::netns`, which panics (fine in a test), every step here returns an error, so a
//! failed setup still unwinds through the guards and leaves nothing behind.

use std::{
    ffi::OsStr,
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, CpuSet, sched_setaffinity, setns};
use serde_json::Value;

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Turns SIGINT and SIGTERM into an error at the next check, so that an interrupted bench
/// unwinds through its guards (namespaces, pins, rules, routes) instead of dying with them in
/// place. A second signal while a flood runs still waits for the current `BPF_PROG_RUN` call.
pub fn catch_interrupts() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

/// Fails once SIGINT or SIGTERM arrived.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs `cmd`, failing with the command line and its stderr unless it exits 0; returns stdout.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("spawning {}", render(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            render(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `ip args...` in the root namespace.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// A network namespace this process created, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> anyhow::Result<Self> {
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn file(&self) -> anyhow::Result<File> {
        let path = format!("/run/netns/{}", self.name);
        File::open(&path).with_context(|| format!("opening {path}"))
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside this namespace's network namespace only (the mount namespace,
    /// and with it bpffs, stays the caller's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> anyhow::Result<Command> {
        let file = self.file()?;
        let mut cmd = Command::new(program);
        // SAFETY: only async-signal-safe work between fork and exec: one setns syscall on an fd
        // the closure owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a new thread that entered this namespace and, if `cpu` is given, is pinned to
    /// that CPU. Interface names and indexes that `f` uses resolve inside the namespace.
    pub fn run_on<T: Send>(
        &self,
        cpu: Option<usize>,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let file = self.file()?;
        let name = &self.name;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering netns {name}"))?;
                if let Some(cpu) = cpu {
                    pin_current_thread(cpu)?;
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("a thread inside netns {name} panicked"))
        })
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> anyhow::Result<()> {
        setns(&self.file()?, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {}", self.name))
    }

    /// Sets a sysctl inside the namespace (`/proc/sys/net` is per network namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        run(self
            .command("sysctl")?
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// Makes the calling thread `SCHED_FIFO` at `priority`: ordinary tasks (a build running next to
/// the bench) then cannot preempt the generator. The kernel's RT throttling still leaves them
/// 5% of each second (`kernel.sched_rt_runtime_us`).
pub fn realtime_current_thread(priority: i32) -> anyhow::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setscheduler(SCHED_FIFO)");
    }
    Ok(())
}

pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning a thread to CPU {cpu}"))
}

/// One end of the veth pair as seen from inside its namespace.
#[derive(Clone, Debug)]
pub struct Port {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl Port {
    pub fn read(ns: &Netns, name: &str) -> anyhow::Result<Self> {
        let out = ns.ip(&["-j", "link", "show", "dev", name])?;
        let v: Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
        let link = v
            .get(0)
            .with_context(|| format!("no link {name} in {}", ns.name))?;
        let ifindex = link
            .get("ifindex")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("no ifindex for {name}"))?;
        let mac = link
            .get("address")
            .and_then(Value::as_str)
            .and_then(parse_mac)
            .with_context(|| format!("no MAC address for {name}"))?;
        Ok(Self { ifindex, mac })
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Adds the blackhole routes for the benchmark ranges in the root namespace and removes on drop
/// the ones it added (a route the operator already had stays). Other test runs on the machine
/// add and remove the same routes, so [`Blackhole::ensure`] puts them back before every flood.
pub struct Blackhole {
    added: std::sync::Mutex<Vec<&'static str>>,
}

impl Blackhole {
    pub const RANGES: [&'static str; 2] = ["198.18.0.0/15", "2001:db8::/32"];

    pub fn add() -> anyhow::Result<Self> {
        let guard = Self {
            added: std::sync::Mutex::new(Vec::new()),
        };
        guard.ensure()?;
        Ok(guard)
    }

    /// Adds whichever of the routes is missing.
    pub fn ensure(&self) -> anyhow::Result<()> {
        let mut added = self.added.lock().unwrap_or_else(|p| p.into_inner());
        for r in Self::RANGES {
            let family = if r.contains(':') { "-6" } else { "-4" };
            let existing = ip(&[family, "route", "show", "exact", r, "type", "blackhole"])?;
            if existing.trim().is_empty() {
                ip(&[family, "route", "replace", "blackhole", r])?;
                if !added.contains(&r) {
                    added.push(r);
                }
            }
        }
        Ok(())
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let added = self.added.get_mut().unwrap_or_else(|p| p.into_inner());
        for r in added.drain(..) {
            let family = if r.contains(':') { "-6" } else { "-4" };
            let still =
                ip(&[family, "route", "show", "exact", r, "type", "blackhole"]).unwrap_or_default();
            if still.trim().is_empty() {
                continue;
            }
            if let Err(e) = ip(&[family, "route", "del", "blackhole", r]) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

/// A command to run on drop (removing a rule, a table, a directory through a tool).
pub struct Undo {
    what: String,
    cmd: Option<Command>,
}

impl Undo {
    pub fn new(what: impl Into<String>, cmd: Command) -> Self {
        Self {
            what: what.into(),
            cmd: Some(cmd),
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(mut cmd) = self.cmd.take()
            && let Err(e) = run(&mut cmd)
        {
            eprintln!("cleanup ({}): {e:#}", self.what);
        }
    }
}

/// The bench instance's pin directory, removed (with every map pinned in it) on drop.
pub struct PinGuard {
    pub path: PathBuf,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("cleanup: removing {}: {e}", self.path.display());
            }
            _ => {}
        }
    }
}

/// Per-CPU time from `/proc/stat`, in USER_HZ ticks.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes {
    /// Per CPU: (softirq, system, busy, total).
    pub cpus: Vec<CpuTicks>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    pub softirq: u64,
    pub system: u64,
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    pub fn read() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let mut cpus = Vec::new();
        for line in stat.lines() {
            let Some(rest) = line.strip_prefix("cpu") else {
                continue;
            };
            // `cpu ` is the sum line; `cpuN` are the CPUs, in order.
            if rest.starts_with(' ') {
                continue;
            }
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let get = |i: usize| fields.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest times are inside user).
            let total: u64 = (0..8).map(get).sum();
            let idle = get(3) + get(4);
            cpus.push(CpuTicks {
                softirq: get(6),
                system: get(2),
                busy: total - idle,
                total,
            });
        }
        if cpus.is_empty() {
            bail!("no per-CPU lines in /proc/stat");
        }
        Ok(Self { cpus })
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn delta(&self, later: &Self) -> Self {
        let cpus = self
            .cpus
            .iter()
            .zip(&later.cpus)
            .map(|(a, b)| CpuTicks {
                softirq: b.softirq.saturating_sub(a.softirq),
                system: b.system.saturating_sub(a.system),
                busy: b.busy.saturating_sub(a.busy),
                total: b.total.saturating_sub(a.total),
            })
            .collect();
        Self { cpus }
    }

    pub fn sum(&self) -> CpuTicks {
        self.cpus.iter().fold(CpuTicks::default(), |a, c| CpuTicks {
            softirq: a.softirq + c.softirq,
            system: a.system + c.system,
            busy: a.busy + c.busy,
            total: a.total + c.total,
        })
    }
}

/// `ethtool -S <dev>` inside `ns`, as name -> value.
pub fn ethtool_stats(
    ns: &Netns,
    dev: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let out = run(ns.command("ethtool")?.args(["-S", dev]))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Interface counters from `ip -s -j link show dev` (the kernel's `rtnl_link_stats64`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl LinkStats {
    pub fn read(ns: &Netns, dev: &str) -> anyhow::Result<Self> {
        let out = ns.ip(&["-s", "-j", "link", "show", "dev", dev])?;
        let v: Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
        let stats = v
            .get(0)
            .and_then(|l| l.get("stats64"))
            .with_context(|| format!("no stats64 for {dev}"))?;
        let field = |dir: &str, k: &str| {
            stats
                .get(dir)
                .and_then(|d| d.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Ok(Self {
            rx_packets: field("rx", "packets"),
            rx_dropped: field("rx", "dropped"),
            tx_packets: field("tx", "packets"),
            tx_dropped: field("tx", "dropped"),
        })
    }

    pub fn delta(&self, later: &Self) -> Self {
        Self {
            rx_packets: later.rx_packets.saturating_sub(self.rx_packets),
            rx_dropped: later.rx_dropped.saturating_sub(self.rx_dropped),
            tx_packets: later.tx_packets.saturating_sub(self.tx_packets),
            tx_dropped: later.tx_dropped.saturating_sub(self.tx_dropped),
        }
    }
}

/// The sum of the `ethtool -S` counters whose names end with `suffix` (one per queue).
pub fn ethtool_sum(stats: &std::collections::BTreeMap<String, u64>, suffix: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| k.ends_with(suffix))
        .map(|(_, v)| v)
        .sum()
}

/// USER_HZ: the unit of `/proc/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

/// Load generators of the other benchmark (`cargo xtask bench l7`): while one runs, the machine
/// is not ours to measure on.
const OTHER_BENCH: [&str; 2] = ["wrk", "bench_load"];

/// Share of all CPUs above which the machine counts as busy (measured while the bench idles).
pub const BUSY_THRESHOLD: f64 = 0.15;

fn other_bench_running() -> Option<String> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let comm = comm.trim();
        OTHER_BENCH.contains(&comm).then(|| comm.to_owned())
    })
}

/// Waits, out of a shared `budget`, until the machine is quiet: no other benchmark running and
/// all CPUs together less than [`BUSY_THRESHOLD`] busy over half a second. Returns the busy
/// share last seen and whether the budget ran out first (the run is then measured anyway, and
/// flagged).
pub fn wait_quiet(budget: &mut std::time::Duration) -> anyhow::Result<(f64, bool)> {
    use std::time::{Duration, Instant};
    let mut said = Instant::now() - Duration::from_secs(60);
    loop {
        check_interrupted()?;
        let before = CpuTimes::read()?;
        std::thread::sleep(Duration::from_millis(500));
        let d = before.delta(&CpuTimes::read()?).sum();
        let busy = d.busy as f64 / (d.total as f64).max(1.0);
        let other = other_bench_running();
        if other.is_none() && busy < BUSY_THRESHOLD {
            return Ok((busy, false));
        }
        if budget.is_zero() {
            return Ok((busy, true));
        }
        if said.elapsed() >= Duration::from_secs(30) {
            eprintln!(
                "   waiting for a quiet machine ({}; {} s of waiting left)",
                other.map_or_else(
                    || format!("{:.0}% busy", busy * 100.0),
                    |o| format!("{o} is running")
                ),
                budget.as_secs()
            );
            said = Instant::now();
        }
        let step = Duration::from_secs(2).min(*budget);
        std::thread::sleep(step);
        *budget = budget.saturating_sub(step + Duration::from_millis(500));
    }
}

/// Whether a path names an existing executable (for optional peers such as iptables-legacy).
pub fn have(program: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}
