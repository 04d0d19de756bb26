//! Network namespaces and veth pairs for tests, removed on drop (also when a test panics).

use std::{
    fs::File,
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`, panicking with the command and its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace named `<prefix>-<pid>-<n>`, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`, for `setns`.
    pub fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("opening netns {}: {e}", self.name))
    }

    /// Runs `f` on a thread that entered this namespace (sockets it makes live there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.file();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A command that will run inside this namespace's network (and only network) namespace:
    /// unlike `ip netns exec`, the mount namespace stays, so bpffs pins are shared.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let file = self.file();
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
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair with one end in each namespace (deleted with the namespaces).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Blackhole routes in the root namespace for the test ranges while any guard lives, so nothing a
/// test sends (spoofed sources included) can leave the machine. Routes that were already there
/// (another suite, the operator) are left in place on drop: only what this process added goes.
pub struct Blackhole {
    _private: (),
}

/// (guards alive, ranges this process added)
static BLACKHOLE: Mutex<(usize, Vec<&'static str>)> = Mutex::new((0, Vec::new()));
const RANGES: [&str; 2] = ["198.18.0.0/15", "2001:db8::/32"];

fn blackhole_present(range: &str) -> bool {
    Command::new("ip")
        .args(["route", "show", "type", "blackhole", range])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

impl Blackhole {
    pub fn new() -> Self {
        let mut state = BLACKHOLE.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 == 0 {
            for r in RANGES {
                if !blackhole_present(r)
                    && Command::new("ip")
                        .args(["route", "add", "blackhole", r])
                        .status()
                        .is_ok_and(|s| s.success())
                {
                    state.1.push(r);
                }
            }
        }
        state.0 += 1;
        Self { _private: () }
    }
}

impl Default for Blackhole {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let mut state = BLACKHOLE.lock().unwrap_or_else(|p| p.into_inner());
        state.0 -= 1;
        if state.0 == 0 {
            for r in state.1.drain(..) {
                let _ = Command::new("ip")
                    .args(["route", "del", "blackhole", r])
                    .status();
            }
        }
    }
}
