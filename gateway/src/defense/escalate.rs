//! The defense loop: violations from every stage are scored per source; a source crossing the
//! threshold is blocked for its rung of the TTL ladder, in the kernel (XDP denylist, origin `l7`)
//! when the kernel can see it, in the proxy otherwise. Allowlisted and management addresses are
//! never blocked. Every block is journaled before it is applied, like an analyst's.

use std::{net::IpAddr, sync::Arc, time::Instant};

use gateway_common::{origin, reason};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Block, Defense, L7Blocks, Scorer, Violation, score::Escalation};
use crate::config::DefenseSection;

/// The request path's handle on the loop: cheap to clone, never blocks (a full queue drops the
/// report, which under a flood loses nothing the next report will not say again).
#[derive(Clone)]
pub struct ViolationSink {
    tx: mpsc::Sender<Violation>,
    section: Arc<DefenseSection>,
}

impl ViolationSink {
    /// Reports `reason` against `source`; reasons of weight 0 are not sent at all.
    pub fn report(&self, source: IpNet, behind_proxy: bool, reason: &'static str) {
        self.report_weighted(source, behind_proxy, reason, None);
    }

    /// Like [`Self::report`], with a weight the stage computed (a WAF anomaly score) in place
    /// of the table's, unless the operator set one for `reason` in `defense.weights`.
    pub fn report_weighted(
        &self,
        source: IpNet,
        behind_proxy: bool,
        reason: &'static str,
        weight: Option<f64>,
    ) {
        let weight = self.weight_of(reason, weight);
        if weight > 0.0 {
            let _ = self.tx.try_send(Violation {
                source,
                behind_proxy,
                reason,
                weight,
            });
        }
    }
}

impl ViolationSink {
    /// The weight `reason` counts with: the operator's, else the stage's, else the table's.
    pub fn weight_of(&self, reason: &str, stage_weight: Option<f64>) -> f64 {
        match stage_weight {
            Some(w) if !self.section.weights.contains_key(reason) => w,
            _ => self.section.weight(reason),
        }
    }
}

/// Where escalations go.
pub struct Enforcement {
    /// The kernel maps and journal, when XDP runs.
    pub kernel: Option<Arc<Defense>>,
    pub l7: Arc<L7Blocks>,
    /// Never blocked (management and allow lists of the file; the kernel allowlist is checked
    /// too when XDP runs).
    pub never: Vec<IpNet>,
    /// Security events for escalations that are not journaled (dry run, allowlisted, no XDP).
    pub events: Option<crate::telemetry::events::EventSink>,
}

/// Starts the loop; returns the sink stages report to.
pub fn spawn(section: DefenseSection, enforcement: Enforcement) -> ViolationSink {
    let (tx, mut rx) = mpsc::channel::<Violation>(16_384);
    let section = Arc::new(section);
    let mut scorer = Scorer::new(section.policy());
    let dry_run = section.dry_run;
    let enforcement = Arc::new(enforcement);
    let mut aggregator = section
        .aggregate
        .clone()
        .map(|a| super::aggregate::Aggregator::new(a, section.policy()));
    tokio::spawn(async move {
        while let Some(v) = rx.recv().await {
            let Some(e) = scorer.record(&v, Instant::now()) else {
                continue;
            };
            let (source, ttl, reason) = (e.source, e.ttl, e.reason);
            let en = Arc::clone(&enforcement);
            // Map writes and the journal's fsync are blocking syscalls.
            let in_kernel = tokio::task::spawn_blocking(move || act(&en, &e, dry_run))
                .await
                .unwrap_or(false);
            if in_kernel
                && let Some(agg) = &mut aggregator
                && let Some(p) = agg.record(source, ttl, Instant::now())
            {
                let en = Arc::clone(&enforcement);
                let _ = tokio::task::spawn_blocking(move || {
                    super::aggregate::block_prefix(&en, &p, reason)
                })
                .await;
            }
        }
    });
    ViolationSink { tx, section }
}

fn allowlisted(enforcement: &Enforcement, net: IpNet) -> bool {
    let addr: IpAddr = net.addr();
    if enforcement.never.iter().any(|n| n.contains(&addr)) {
        return true;
    }
    enforcement
        .kernel
        .as_ref()
        .is_some_and(|d| d.is_allowlisted(net).unwrap_or(false))
}

/// Applies an escalation; `true` when the source went into the kernel denylist.
fn act(enforcement: &Enforcement, e: &Escalation, dry_run: bool) -> bool {
    let started = Instant::now();
    let in_kernel = !e.behind_proxy && enforcement.kernel.is_some();
    let where_ = if in_kernel { "xdp" } else { "l7" };
    if allowlisted(enforcement, e.source) {
        tracing::warn!(target: "security", source = %e.source, reason = e.reason, score = e.score,
            "escalation skipped: source is allowlisted");
        if let Some(ev) = &enforcement.events {
            ev.escalation_not_applied(e.source, e.reason, e.score, e.ttl, false);
        }
        count(in_kernel, Outcome::Allowlisted);
        return false;
    }
    if dry_run {
        tracing::warn!(target: "security", source = %e.source, reason = e.reason, ttl = ?e.ttl,
            strike = e.strike, enforcement = where_, "dry run: would block");
        if let Some(ev) = &enforcement.events {
            ev.escalation_not_applied(e.source, e.reason, e.score, e.ttl, true);
        }
        count(in_kernel, Outcome::DryRun);
        return false;
    }
    let note = format!(
        "auto: {} (score {:.1}, strike {}{})",
        e.reason,
        e.score,
        e.strike,
        if e.behind_proxy {
            ", behind a trusted proxy: enforced at L7"
        } else {
            ""
        }
    );
    let block = Block {
        net: e.source,
        ttl: Some(e.ttl),
        reason: reason_code(e.reason),
        origin: origin::L7,
        note: Some(note),
        actor: "auto:defense".into(),
    };
    let result = match (&enforcement.kernel, in_kernel) {
        (Some(defense), true) => defense.block_automatic(&block).map_err(|e| e.to_string()),
        (Some(defense), false) => {
            enforcement.l7.insert(e.source, Instant::now() + e.ttl);
            defense.journal_l7(&block).map_err(|e| e.to_string())
        }
        (None, _) => {
            enforcement.l7.insert(e.source, Instant::now() + e.ttl);
            // No journal without the kernel maps: the event is the record.
            if let Some(ev) = &enforcement.events {
                ev.audit(&super::journal_record_l7(&block));
            }
            Ok(())
        }
    };
    count(
        in_kernel,
        if result.is_ok() {
            Outcome::Blocked
        } else {
            Outcome::Failed
        },
    );
    let in_kernel_ok = in_kernel && result.is_ok();
    match result {
        Ok(()) => tracing::warn!(target: "security", source = %e.source, reason = e.reason,
            ttl_seconds = e.ttl.as_secs(), strike = e.strike, score = e.score, enforcement = where_,
            took_us = started.elapsed().as_micros() as u64, "source blocked"),
        Err(err) => {
            tracing::error!(target: "security", source = %e.source, error = %err, "blocking failed")
        }
    }
    in_kernel_ok
}

/// What became of an escalation, for the metrics.
#[derive(Clone, Copy)]
enum Outcome {
    Blocked,
    DryRun,
    Allowlisted,
    Failed,
}

const OUTCOMES: [&str; 4] = ["blocked", "dry_run", "allowlisted", "failed"];

/// Escalations since start by (enforcement, outcome); process-wide, read at scrape time.
static ESCALATIONS: [std::sync::atomic::AtomicU64; 8] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 8];

fn count(in_kernel: bool, outcome: Outcome) {
    let i = usize::from(!in_kernel) * OUTCOMES.len() + outcome as usize;
    ESCALATIONS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Escalations since the process started, as `((enforcement, outcome), count)`.
pub fn escalation_counts() -> Vec<((&'static str, &'static str), u64)> {
    ESCALATIONS
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let enforcement = if i < OUTCOMES.len() { "xdp" } else { "l7" };
            (
                (enforcement, OUTCOMES[i % OUTCOMES.len()]),
                n.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
        .collect()
}

fn reason_code(reason: &str) -> u16 {
    match reason {
        "pps-cap" => reason::PPS_CAP,
        "syn-cap" => reason::SYN_CAP,
        _ => reason::PROTOCOL_ABUSE,
    }
}
