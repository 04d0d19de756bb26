//! The single writer of the kernel maps: blocks and allowlist changes from operators (and, later,
//! from L7 detections) go through here, journal first, then the maps.

mod aggregate;
mod escalate;
pub mod feeds;
mod journal;
mod l7;
mod score;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use gateway_common::{DenyValue, origin, reason};
use ipnet::IpNet;

pub use escalate::{Enforcement, ViolationSink, escalation_counts, spawn};
pub use journal::{Action, Journal, JournalError, Record};
pub use l7::L7Blocks;
pub use score::{Escalation, Policy, Scorer, Violation};

use crate::{
    config::XdpSection,
    xdp::{BootClock, Maps, PinDir, XdpError, ensure_pinned, unix_now},
};

#[derive(Debug, thiserror::Error)]
pub enum DefenseError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    JournalFirst,
    KernelFirst,
}

/// A block to apply.
#[derive(Clone, Debug)]
pub struct Block {
    pub net: IpNet,
    /// `None` = permanent.
    pub ttl: Option<Duration>,
    pub reason: u16,
    pub origin: u8,
    pub note: Option<String>,
    pub actor: String,
}

/// A deny entry joined with the analyst's note from the journal.
#[derive(Clone, Debug)]
pub struct BlockView {
    pub net: IpNet,
    pub value: DenyValue,
    pub note: Option<String>,
    pub actor: Option<String>,
}

/// What a start-up replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub restored: usize,
    pub expired: usize,
    pub present: usize,
}

pub struct Defense {
    pins: PinDir,
    journal: Journal,
    /// Opened once: an escalation must not pay for opening nine pinned maps.
    maps: std::sync::Mutex<Maps>,
}

impl Defense {
    /// Opens the instance's maps (creating them if no daemon has run yet) and its journal.
    pub fn open(bpffs: &Path, instance: &str, state_dir: &Path) -> Result<Self, DefenseError> {
        let pins = ensure_pinned(bpffs, instance)?;
        let journal = Journal::open(&state_dir.join(instance))?;
        let maps = std::sync::Mutex::new(Maps::open(&pins)?);
        Ok(Self {
            pins,
            journal,
            maps,
        })
    }

    /// Opens existing maps only: for readers that must not create anything.
    pub fn open_existing(
        bpffs: &Path,
        instance: &str,
        state_dir: &Path,
    ) -> Result<Self, DefenseError> {
        let pins = PinDir::new(bpffs, instance);
        if !pins.exists() {
            return Err(pins.not_pinned().into());
        }
        let journal = Journal::open(&state_dir.join(instance))?;
        let maps = std::sync::Mutex::new(Maps::open(&pins)?);
        Ok(Self {
            pins,
            journal,
            maps,
        })
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Every audit record from now on is also a security event.
    pub fn set_events(&self, events: crate::telemetry::events::EventSink) {
        self.journal.set_events(events);
    }

    pub fn journal_path(&self) -> PathBuf {
        self.journal.path().to_owned()
    }

    /// The instance's maps (held open; the guard serialises users within this process, the pin
    /// directory lock serialises writers across processes).
    pub fn maps(&self) -> Result<std::sync::MutexGuard<'_, Maps>, DefenseError> {
        Ok(self.maps.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether an allowlist entry covers `net`'s address.
    pub fn is_allowlisted(&self, net: IpNet) -> Result<bool, DefenseError> {
        let addr = net.addr();
        Ok(self
            .maps()?
            .allowed()
            .iter()
            .any(|(n, _)| n.contains(&addr)))
    }

    /// Journals, then applies, a block.
    pub fn block(&self, block: &Block) -> Result<(), DefenseError> {
        self.apply_block(block, Order::JournalFirst)
    }

    /// An automatic escalation: the kernel entry first, then the journal record. A journal
    /// fsync can wait hundreds of milliseconds behind other dirty data (ext4 ordered mode);
    /// the drop must not. What a crash in between can lose is an automatic block on a reboot,
    /// which the evidence re-creates; an analyst's action is always journaled first.
    pub fn block_automatic(&self, block: &Block) -> Result<(), DefenseError> {
        self.apply_block(block, Order::KernelFirst)
    }

    fn apply_block(&self, block: &Block, order: Order) -> Result<(), DefenseError> {
        let _lock = self.pins.lock()?;
        let clock = BootClock::now();
        let record = Record {
            ts: clock.unix_s,
            action: Action::Block,
            target: block.net.to_string(),
            origin: origin::name(block.origin).into(),
            reason: reason::name(block.reason).into(),
            note: block.note.clone(),
            expires: block.ttl.map(|t| clock.unix_s + t.as_secs()),
            actor: block.actor.clone(),
        };
        let value = DenyValue {
            expires_ns: clock.expiry_after(block.ttl),
            created_unix: clock.unix_s,
            reason: block.reason,
            origin: block.origin,
            _pad: [0; 5],
        };
        if order == Order::JournalFirst {
            self.journal.append(&record)?;
        }
        self.maps()?.deny(block.net, value)?;
        if order == Order::KernelFirst {
            self.journal.append(&record)?;
        }
        Ok(())
    }

    /// Journals a block enforced in the proxy (a client behind a trusted proxy): same record as
    /// a kernel block, marked in its note, nothing written to the maps.
    pub fn journal_l7(&self, block: &Block) -> Result<(), DefenseError> {
        self.journal.append(&journal_record_l7(block))?;
        Ok(())
    }

    /// Journals, then removes, a block; `false` when there was none (nothing is journaled).
    pub fn unblock(
        &self,
        net: IpNet,
        actor: &str,
        note: Option<String>,
    ) -> Result<bool, DefenseError> {
        let _lock = self.pins.lock()?;
        let mut maps = self.maps()?;
        let Some(old) = maps.deny_get(net)? else {
            return Ok(false);
        };
        self.journal.append(&Record {
            ts: unix_now(),
            action: Action::Unblock,
            target: net.trunc().to_string(),
            origin: origin::name(old.origin).into(),
            reason: reason::name(old.reason).into(),
            note,
            expires: None,
            actor: actor.into(),
        })?;
        maps.undeny(net)?;
        Ok(true)
    }

    pub fn allow(&self, net: IpNet, actor: &str, note: Option<String>) -> Result<(), DefenseError> {
        let _lock = self.pins.lock()?;
        self.journal
            .append(&allowlist_record(Action::Allow, net, note, actor))?;
        self.maps()?.allow(net, origin::MANUAL)?;
        Ok(())
    }

    pub fn disallow(
        &self,
        net: IpNet,
        actor: &str,
        note: Option<String>,
    ) -> Result<bool, DefenseError> {
        let _lock = self.pins.lock()?;
        let mut maps = self.maps()?;
        if !maps.allowed().iter().any(|(n, _)| *n == net.trunc()) {
            return Ok(false);
        }
        self.journal
            .append(&allowlist_record(Action::Disallow, net, note, actor))?;
        maps.disallow(net).map_err(DefenseError::from)
    }

    /// Every deny entry in the maps, with the note and actor of the journal record that made it.
    pub fn blocks(&self) -> Result<Vec<BlockView>, DefenseError> {
        let latest = self.latest_blocks()?;
        let tags = self.feed_tags();
        let mut out: Vec<BlockView> = self
            .maps()?
            .denied()
            .into_iter()
            .map(|e| {
                let rec = latest.get(&e.net.to_string());
                BlockView {
                    net: e.net,
                    value: e.value,
                    // Feed entries are tagged with their source (`feed:<name>`, `geo:<CC>`).
                    note: match tags.get(&e.net) {
                        Some(tag) if e.value.origin == origin::FEED => Some(tag.clone()),
                        _ => rec.and_then(|r| r.note.clone()),
                    },
                    actor: rec.map(|r| r.actor.clone()),
                }
            })
            .collect();
        out.sort_by_key(|b| (b.net.addr().is_ipv6(), b.net));
        Ok(out)
    }

    /// The journal folded to the last block record per target still standing.
    fn latest_blocks(&self) -> Result<HashMap<String, Record>, DefenseError> {
        let mut latest = HashMap::new();
        for r in self.journal.read()? {
            match r.action {
                Action::Block => {
                    latest.insert(r.target.clone(), r);
                }
                Action::Unblock => {
                    latest.remove(&r.target);
                }
                Action::Allow | Action::Disallow | Action::Feed => {}
            }
        }
        Ok(latest)
    }

    /// Puts back what the journal says should be there and is not (after a reboot wiped bpffs,
    /// or maps were reset): operator blocks not expired, and allowlist entries.
    pub fn replay(&self) -> Result<Replay, DefenseError> {
        let _lock = self.pins.lock()?;
        let mut maps = self.maps()?;
        let clock = BootClock::now();
        let mut report = Replay::default();
        let mut allowed: HashMap<String, Record> = HashMap::new();
        let mut blocks: HashMap<String, Record> = HashMap::new();
        for r in self.journal.read()? {
            match r.action {
                Action::Block => {
                    blocks.insert(r.target.clone(), r);
                }
                Action::Unblock => {
                    blocks.remove(&r.target);
                }
                Action::Allow => {
                    allowed.insert(r.target.clone(), r);
                }
                Action::Disallow => {
                    allowed.remove(&r.target);
                }
                // Feed entries are restored from the feed's own state (see `feeds`).
                Action::Feed => {}
            }
        }
        let mut restore = Vec::new();
        for r in blocks.values() {
            // Proxy-enforced blocks (clients behind a trusted proxy) never go to the kernel.
            if r.origin == "l7-proxy" {
                continue;
            }
            let Ok(net) = r.target.parse::<IpNet>() else {
                continue;
            };
            if r.expires.is_some_and(|e| e <= clock.unix_s) {
                report.expired += 1;
                continue;
            }
            if maps.deny_get(net)?.is_some() {
                report.present += 1;
                continue;
            }
            restore.push((
                net,
                DenyValue {
                    expires_ns: r.expires.map_or(0, |e| clock.expiry_at_unix(e)),
                    created_unix: r.ts,
                    reason: reason_code(&r.reason),
                    origin: origin::parse(&r.origin).unwrap_or(origin::MANUAL),
                    _pad: [0; 5],
                },
            ));
        }
        report.restored = restore.len();
        if !restore.is_empty() {
            maps.deny_many(restore)?;
        }
        let present: Vec<IpNet> = maps.allowed().into_iter().map(|(n, _)| n).collect();
        for r in allowed.values() {
            if let Ok(net) = r.target.parse::<IpNet>()
                && !present.contains(&net)
            {
                maps.allow(net, origin::MANUAL)?;
                report.restored += 1;
            }
        }
        Ok(report)
    }

    /// Makes the maps match the file: caps, ports, and the `config`-origin allow and deny
    /// entries (added, and removed when they left the file). Entries of other origins are
    /// untouched. Not journaled: the file is its own record.
    pub fn apply_config(&self, xdp: &XdpSection) -> Result<(), DefenseError> {
        let _lock = self.pins.lock()?;
        let mut maps = self.maps()?;
        maps.set_ports(&xdp.ports())?;
        maps.set_config(xdp.kernel_config())?;

        let want_allow: Vec<IpNet> = xdp
            .management
            .iter()
            .chain(&xdp.allow)
            .map(|n| n.0.trunc())
            .collect();
        for (net, o) in maps.allowed() {
            if o == origin::CONFIG && !want_allow.contains(&net) {
                maps.disallow(net)?;
            }
        }
        for net in &want_allow {
            maps.allow(*net, origin::CONFIG)?;
        }

        let want_deny: Vec<IpNet> = xdp.deny.iter().map(|n| n.0.trunc()).collect();
        for e in maps.denied() {
            if e.value.origin == origin::CONFIG && !want_deny.contains(&e.net) {
                maps.undeny(e.net)?;
            }
        }
        let now = unix_now();
        let mut add = Vec::new();
        for net in &want_deny {
            if maps.deny_get(*net)?.is_none() {
                add.push((
                    *net,
                    DenyValue {
                        expires_ns: 0,
                        created_unix: now,
                        reason: reason::STATIC_LIST,
                        origin: origin::CONFIG,
                        _pad: [0; 5],
                    },
                ));
            }
        }
        if !add.is_empty() {
            maps.deny_many(add)?;
        }
        Ok(())
    }

    /// Removes expired entries from the maps (the kernel already ignores them); each is a
    /// `block_expired` security event (not journaled: the block's record had its deadline).
    pub fn sweep(&self) -> Result<usize, DefenseError> {
        let _lock = self.pins.lock()?;
        let clock = BootClock::now();
        let mut maps = self.maps()?;
        let expired: Vec<_> = maps
            .denied()
            .into_iter()
            .filter(|e| !e.value.is_active(clock.boot_ns))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        maps.undeny_many(expired.iter().map(|e| e.net))?;
        if let Some(events) = self.journal.events() {
            for e in &expired {
                events.expired(
                    e.net,
                    origin::name(e.value.origin),
                    reason::name(e.value.reason),
                );
            }
        }
        Ok(expired.len())
    }
}

/// The record of a block enforced in the proxy (origin `l7-proxy`).
fn journal_record_l7(block: &Block) -> Record {
    let now = unix_now();
    Record {
        ts: now,
        action: Action::Block,
        target: block.net.to_string(),
        origin: "l7-proxy".into(),
        reason: reason::name(block.reason).into(),
        note: block.note.clone(),
        expires: block.ttl.map(|t| now + t.as_secs()),
        actor: block.actor.clone(),
    }
}

/// The journal record of an operator's allowlist change.
fn allowlist_record(action: Action, net: IpNet, note: Option<String>, actor: &str) -> Record {
    Record {
        ts: unix_now(),
        action,
        target: net.trunc().to_string(),
        origin: origin::name(origin::MANUAL).into(),
        reason: reason::name(reason::OPERATOR).into(),
        note,
        expires: None,
        actor: actor.into(),
    }
}

fn reason_code(name: &str) -> u16 {
    (0..=u16::from(u8::MAX))
        .find(|c| reason::name(*c) == name)
        .unwrap_or(reason::UNSPECIFIED)
}
