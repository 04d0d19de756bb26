//! Blocks enforced in the proxy instead of the kernel: for clients behind a trusted proxy (the
//! kernel only sees the proxy's address, which must never be blocked) and for machines where XDP
//! is unavailable. Checked first thing per request; free when empty.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use ipnet::IpNet;

#[derive(Debug, Default)]
pub struct L7Blocks {
    nets: RwLock<HashMap<IpNet, Instant>>,
    len: AtomicUsize,
}

impl L7Blocks {
    /// Whether `ip` is blocked now.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let now = Instant::now();
        let nets = self.nets.read().unwrap_or_else(|p| p.into_inner());
        nets.iter()
            .any(|(net, until)| *until > now && net.contains(&ip))
    }

    pub fn insert(&self, net: IpNet, until: Instant) {
        let mut nets = self.nets.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        nets.retain(|_, u| *u > now);
        nets.insert(net, until);
        self.len.store(nets.len(), Ordering::Relaxed);
    }

    /// Lifts a block at once (an operator's unblock); `false` when there was none.
    pub fn remove(&self, net: IpNet) -> bool {
        let mut nets = self.nets.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let found = nets.remove(&net).is_some_and(|until| until > now);
        nets.retain(|_, u| *u > now);
        self.len.store(nets.len(), Ordering::Relaxed);
        found
    }

    /// Current entries with their remaining time.
    pub fn list(&self) -> Vec<(IpNet, std::time::Duration)> {
        let now = Instant::now();
        let nets = self.nets.read().unwrap_or_else(|p| p.into_inner());
        nets.iter()
            .filter(|(_, u)| **u > now)
            .map(|(n, u)| (*n, u.duration_since(now)))
            .collect()
    }
}
