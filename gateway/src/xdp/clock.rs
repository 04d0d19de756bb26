//! Clocks. Kernel expiry is on CLOCK_BOOTTIME (`bpf_ktime_get_boot_ns`, counts suspend);
//! operators and the journal speak wall-clock time. This converts between them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds on CLOCK_BOOTTIME, the clock the XDP program compares expiries against.
pub fn boot_ns_now() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// Nanoseconds on CLOCK_MONOTONIC: the clock of the rate state (`bpf_ktime_get_coarse_ns`).
pub fn monotonic_ns_now() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every kernel with BPF.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A snapshot of both clocks, to convert kernel expiries to wall-clock and back consistently.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    pub boot_ns: u64,
    pub unix_s: u64,
}

impl BootClock {
    pub fn now() -> Self {
        Self {
            boot_ns: boot_ns_now(),
            unix_s: unix_now(),
        }
    }

    /// The kernel expiry for a TTL from now; `None` means permanent (0 in the map).
    pub fn expiry_after(&self, ttl: Option<Duration>) -> u64 {
        ttl.map_or(0, |ttl| self.boot_ns + ttl.as_nanos() as u64)
    }

    /// The kernel expiry for a wall-clock deadline (journal replay after a reboot).
    pub fn expiry_at_unix(&self, unix_s: u64) -> u64 {
        self.boot_ns + unix_s.saturating_sub(self.unix_s) * 1_000_000_000
    }

    /// Remaining time of a kernel expiry; `None` for permanent, zero once expired.
    pub fn remaining(&self, expires_ns: u64) -> Option<Duration> {
        (expires_ns != 0).then(|| Duration::from_nanos(expires_ns.saturating_sub(self.boot_ns)))
    }

    /// Wall-clock time of a kernel expiry (Unix seconds); `None` for permanent.
    pub fn expires_unix(&self, expires_ns: u64) -> Option<u64> {
        self.remaining(expires_ns)
            .map(|left| self.unix_s + left.as_secs())
    }
}
