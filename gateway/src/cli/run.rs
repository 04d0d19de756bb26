//! `gateway run`: the daemon. Loads and attaches the XDP filter, applies the file, replays the
//! audit journal, then serves events, expiry sweeps and signals until SIGTERM.

use std::{path::Path, sync::Arc};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, XdpMode, XdpSection},
    defense::{self, Defense, Enforcement, L7Blocks, ViolationSink, feeds::FeedTasks},
    proxy::server::{DefenseHooks, Proxy},
    telemetry::events::EventSink,
    xdp::{Fastpath, RateEvents, XdpError},
};

pub(super) fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // One worker per usable CPU: more only adds cross-thread wake-ups on the request path.
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // One worker: a single-threaded runtime, as nginx runs one process per worker. A one-worker
    // work-stealing runtime pays for synchronisation nobody needs (measured: about a fifth of
    // the proxy's CPU per request, `cargo xtask bench l7`).
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(daemon(path, config))
}

/// The running fast path: the attached program, the map writer and the event stream.
struct Running {
    fastpath: Fastpath,
    defense: Arc<Defense>,
    events: RateEvents,
    xdp: XdpSection,
    /// Reputation feeds and geo lists (they write the kernel denylist, so they need XDP).
    feeds: FeedTasks,
}

async fn daemon(path: &Path, config: Config) -> anyhow::Result<()> {
    tracing::info!(instance = %config.instance, config = %path.display(), "starting");
    // Security events: every audit record, every security decision of the proxy. Opened before
    // the fast path starts, so the first feed applies and journal replays are events too.
    let events = match &config.telemetry.events {
        Some(c) => Some(EventSink::start(c)?),
        None => None,
    };
    let mut running = match config.xdp.clone() {
        Some(xdp) if xdp.mode != XdpMode::Off => match start(&config, xdp, events.as_ref()) {
            Ok(r) => Some(r),
            Err(e) if recoverable(&e, config.xdp.as_ref()) => {
                tracing::error!(error = %format!("{e:#}"), "XDP FAST PATH UNAVAILABLE: running without kernel filtering");
                None
            }
            Err(e) => return Err(e),
        },
        _ => {
            tracing::warn!("xdp is off in the config: no kernel filtering");
            None
        }
    };
    if running.is_none()
        && config
            .defense
            .as_ref()
            .is_some_and(|d| !d.feeds.is_empty() || d.geo.is_some())
    {
        tracing::error!("defense.feeds and defense.geo need the XDP fast path: not applied");
    }

    let metrics = crate::telemetry::metrics::Metrics::new();

    // The defense loop: evidence from the proxy and the kernel's rate-cap reports in, timed
    // blocks out (kernel when XDP runs, proxy otherwise).
    let blocked = Arc::new(L7Blocks::default());
    let violations: Option<ViolationSink> = config.defense.clone().map(|section| {
        let mut never: Vec<ipnet::IpNet> = config.trusted_proxies.iter().map(|n| n.0).collect();
        if let Some(x) = &config.xdp {
            never.extend(x.management.iter().chain(&x.allow).map(|n| n.0));
        }
        tracing::info!(
            threshold = section.threshold,
            dry_run = section.dry_run,
            "defense loop on"
        );
        defense::spawn(
            section,
            Enforcement {
                kernel: running.as_ref().map(|r| Arc::clone(&r.defense)),
                l7: Arc::clone(&blocked),
                never,
                events: events.clone(),
            },
        )
    });
    let proxy = if config.listeners.is_empty() {
        None
    } else {
        let hooks = DefenseHooks {
            blocked: Arc::clone(&blocked),
            violations: violations.clone(),
            events: events.clone(),
            metrics: Some(metrics.proxy()),
        };
        Some(Proxy::start_with(&config, hooks).await?)
    };
    let (admin, mut reloads) = start_admin(
        &config,
        metrics,
        running.as_ref().map(|r| Arc::clone(&r.defense)),
        &blocked,
        proxy.as_ref(),
        events.as_ref(),
    )
    .await;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let sweep_every = running
        .as_ref()
        .map_or(std::time::Duration::from_secs(1), |r| r.xdp.sweep_interval);
    let mut sweep = tokio::time::interval(sweep_every);
    // The file is watched too (mtime and size, every 2 s): editing it reloads like SIGHUP.
    let mut watch = tokio::time::interval(std::time::Duration::from_secs(2));
    let mut stamp = file_stamp(path);
    let mut current = config.clone();
    tracing::info!(
        instance = %config.instance,
        xdp = running.is_some(),
        listeners = proxy.as_ref().map_or(0, |p| p.listeners().len()),
        "gateway ready"
    );

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                stamp = file_stamp(path);
                let _ = reload(path, &mut current, running.as_mut(), proxy.as_ref());
            }
            Some(reply) = reloads.recv() => {
                stamp = file_stamp(path);
                let _ = reply.send(reload(path, &mut current, running.as_mut(), proxy.as_ref()));
            }
            _ = watch.tick() => {
                let now = file_stamp(path);
                if now != stamp {
                    stamp = now;
                    tracing::info!(config = %path.display(), "configuration file changed");
                    let _ = reload(path, &mut current, running.as_mut(), proxy.as_ref());
                }
            }
            batch = next_events(running.as_mut()) => match batch {
                Ok(events) => for e in events {
                    if let Some(sink) = &violations {
                        sink.report(e.source, false, e.cap);
                    }
                    tracing::warn!(
                        target: "security",
                        source = %e.source,
                        cap = e.cap,
                        dropped = e.dropped,
                        "source over its packet-rate cap: dropping in XDP"
                    );
                },
                Err(e) => tracing::error!(error = %e, "reading XDP events"),
            },
            _ = sweep.tick() => if let Some(r) = &running {
                match r.defense.sweep() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired deny entries swept"),
                    Err(e) => tracing::warn!(error = %e, "sweeping expired entries"),
                }
            },
        }
    }
    // No more operator changes once stopping; the socket file goes with it.
    drop(admin);
    if let Some(proxy) = proxy {
        tracing::info!(timeout = ?current.shutdown_timeout, "draining connections");
        proxy.shutdown(current.shutdown_timeout).await;
    }
    if let Some(mut r) = running {
        r.fastpath.detach_all();
        tracing::info!(pins = %r.defense.pins().path.display(), "detached; maps stay pinned");
    }
    tracing::info!("stopped");
    Ok(())
}

/// In `auto` mode a machine without XDP still gets a running gateway (loudly); a layout
/// mismatch or a forced mode that fails is the operator's to fix, so it stops the start.
fn recoverable(e: &anyhow::Error, xdp: Option<&XdpSection>) -> bool {
    let auto = xdp.is_some_and(|x| x.mode == XdpMode::Auto);
    let layout = matches!(
        e.downcast_ref::<XdpError>(),
        Some(XdpError::LayoutMismatch { .. })
    ) || matches!(
        e.downcast_ref::<crate::defense::DefenseError>(),
        Some(crate::defense::DefenseError::Xdp(
            XdpError::LayoutMismatch { .. }
        ))
    );
    auto && !layout
}

fn start(config: &Config, xdp: XdpSection, events: Option<&EventSink>) -> anyhow::Result<Running> {
    let mut fastpath = Fastpath::load(&config.bpffs, &config.instance)?;
    let defense = Arc::new(Defense::open(
        &config.bpffs,
        &config.instance,
        &config.state_dir,
    )?);
    if let Some(ev) = events {
        defense.set_events(ev.clone());
    }
    defense.apply_config(&xdp)?;
    let replay = defense.replay()?;
    tracing::info!(
        restored = replay.restored,
        already_present = replay.present,
        expired = replay.expired,
        journal = %defense.journal_path().display(),
        "audit journal replayed"
    );
    let (feeds, geo) = feed_sources(config);
    let feeds = FeedTasks::start(&defense, feeds, geo);
    let events = fastpath.take_events()?;
    if let Some(mode) = xdp.mode.attach_mode() {
        for iface in &xdp.interfaces {
            let used = fastpath.attach(iface, mode)?;
            tracing::info!(iface, mode = used, pins = %fastpath.pins().path.display(), "XDP filter attached");
        }
    }
    Ok(Running {
        fastpath,
        defense,
        events,
        xdp,
        feeds,
    })
}

async fn next_events(
    running: Option<&mut Running>,
) -> Result<Vec<crate::xdp::SourceEvent>, XdpError> {
    match running {
        Some(r) => r.events.next_batch().await,
        None => std::future::pending().await,
    }
}

/// The feeds and geo section of a config (none without a `defense` section).
fn feed_sources(
    config: &Config,
) -> (
    &[crate::config::FeedConfig],
    Option<&crate::config::GeoConfig>,
) {
    config
        .defense
        .as_ref()
        .map_or((&[], None), |d| (d.feeds.as_slice(), d.geo.as_ref()))
}

fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// SIGHUP, a file change or the admin API: parse and validate the whole file, build the new
/// proxy generation, and only then swap it in and apply the XDP section; a bad file changes
/// nothing. The error (`file:line: reason`) goes to the log and back to an API caller.
fn reload(
    path: &Path,
    current: &mut Config,
    running: Option<&mut Running>,
    proxy: Option<&Proxy>,
) -> Result<(), String> {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; the running configuration stays");
            return Err(e.to_string());
        }
    };
    if let Some(proxy) = proxy
        && let Err(e) = proxy.reload(&new)
    {
        tracing::error!(config = %path.display(), error = %e, "reload rejected; the running configuration stays");
        return Err(format!("{}: {e}", path.display()));
    }
    if new.instance != current.instance {
        tracing::warn!("reload: the instance name changes at restart");
    }
    if let Some(r) = running {
        apply_xdp(r, new.xdp.clone());
        let (feeds, geo) = feed_sources(&new);
        r.feeds.update(&r.defense, feeds, geo);
    }
    *current = new;
    tracing::info!("configuration reloaded");
    Ok(())
}

/// Starts the admin API with the metrics read at scrape time. A socket that cannot be bound
/// is logged loudly and the gateway serves on (the CLI then works on the maps directly).
async fn start_admin(
    config: &Config,
    mut metrics: crate::telemetry::metrics::Metrics,
    defense: Option<Arc<Defense>>,
    blocked: &Arc<L7Blocks>,
    proxy: Option<&Proxy>,
    events: Option<&EventSink>,
) -> (
    Option<crate::admin::AdminServer>,
    tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>,
) {
    use crate::telemetry::metrics as m;
    if let Some(p) = proxy {
        metrics.register_collector(m::upstream_collector(p.upstream_health()));
    }
    match defense.as_ref().map(|d| crate::xdp::Maps::open(d.pins())) {
        Some(Ok(maps)) => metrics.register_collector(m::xdp_collector(maps, Arc::clone(blocked))),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot open the maps; XDP counters not exported");
            metrics.register_collector(m::l7_collector(Arc::clone(blocked)));
        }
        None => metrics.register_collector(m::l7_collector(Arc::clone(blocked))),
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let socket = config
        .admin
        .socket_path(&config.state_dir, &config.instance);
    // Proxy-enforced blocks (clients behind a trusted proxy; any block without XDP) come back
    // from the journal with their remaining time.
    let journal = match crate::defense::Journal::open(&config.state_dir.join(&config.instance)) {
        Ok(j) => {
            match crate::admin::restore_l7(&j, blocked) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    restored = n,
                    "proxy-enforced blocks restored from the journal"
                ),
                Err(e) => tracing::warn!(error = %e, "restoring proxy-enforced blocks"),
            }
            if let Some(ev) = events {
                j.set_events(ev.clone());
            }
            Some(Arc::new(j))
        }
        Err(e) => {
            tracing::error!(error = %e, "audit journal unavailable for proxy-enforced blocks");
            None
        }
    };
    let state = crate::admin::AdminState {
        defense,
        l7: Arc::clone(blocked),
        journal,
        metrics: Arc::new(metrics),
        reload: Some(tx),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    match crate::admin::AdminServer::start(&config.admin, &socket, state).await {
        Ok(server) => (Some(server), rx),
        Err(e) => {
            tracing::error!(error = %e, "ADMIN API UNAVAILABLE: the CLI will work on the maps directly");
            (None, rx)
        }
    }
}

fn apply_xdp(r: &mut Running, xdp: Option<XdpSection>) {
    let Some(xdp) = xdp else {
        tracing::warn!("reload: the new file has no xdp section; restart to detach");
        return;
    };
    if xdp.interfaces != r.xdp.interfaces || xdp.mode != r.xdp.mode {
        tracing::warn!("reload: interfaces or mode changed; these take effect at restart");
    }
    match r.defense.apply_config(&xdp) {
        Ok(()) => r.xdp = xdp,
        Err(e) => {
            tracing::error!(error = %e, "reload: applying the xdp section failed; maps may be partly updated")
        }
    }
}
