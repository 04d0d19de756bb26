//! `gateway run`: the daemon. Loads and attaches the XDP filter, applies the file, replays the
//! audit journal, then serves events, expiry sweeps and signals until SIGTERM.

use std::{path::Path, sync::Arc};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, XdpMode, XdpSection},
    defense::{self, Defense, Enforcement, L7Blocks, ViolationSink},
    proxy::server::{DefenseHooks, Proxy},
    xdp::{Fastpath, RateEvents, XdpError},
};

pub(super) fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // One worker per usable CPU: more only adds cross-thread wake-ups on the request path.
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(daemon(path, config))
}

/// The running fast path: the attached program, the map writer and the event stream.
struct Running {
    fastpath: Fastpath,
    defense: Arc<Defense>,
    events: RateEvents,
    xdp: XdpSection,
}

async fn daemon(path: &Path, config: Config) -> anyhow::Result<()> {
    tracing::info!(instance = %config.instance, config = %path.display(), "starting");
    let mut running = match config.xdp.clone() {
        Some(xdp) if xdp.mode != XdpMode::Off => match start(&config, xdp) {
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
            },
        )
    });
    let proxy = if config.listeners.is_empty() {
        None
    } else {
        let hooks = DefenseHooks {
            blocked: Arc::clone(&blocked),
            violations: violations.clone(),
        };
        Some(Proxy::start_with(&config, hooks).await?)
    };

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
                reload(path, &mut current, running.as_mut(), proxy.as_ref());
            }
            _ = watch.tick() => {
                let now = file_stamp(path);
                if now != stamp {
                    stamp = now;
                    tracing::info!(config = %path.display(), "configuration file changed");
                    reload(path, &mut current, running.as_mut(), proxy.as_ref());
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

fn start(config: &Config, xdp: XdpSection) -> anyhow::Result<Running> {
    let mut fastpath = Fastpath::load(&config.bpffs, &config.instance)?;
    let defense = Arc::new(Defense::open(
        &config.bpffs,
        &config.instance,
        &config.state_dir,
    )?);
    defense.apply_config(&xdp)?;
    let replay = defense.replay()?;
    tracing::info!(
        restored = replay.restored,
        already_present = replay.present,
        expired = replay.expired,
        journal = %defense.journal_path().display(),
        "audit journal replayed"
    );
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

fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// SIGHUP or a file change: parse and validate the whole file, build the new proxy generation,
/// and only then swap it in and apply the XDP section; a bad file changes nothing.
fn reload(path: &Path, current: &mut Config, running: Option<&mut Running>, proxy: Option<&Proxy>) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; the running configuration stays");
            return;
        }
    };
    if let Some(proxy) = proxy
        && let Err(e) = proxy.reload(&new)
    {
        tracing::error!(config = %path.display(), error = %e, "reload rejected; the running configuration stays");
        return;
    }
    if new.instance != current.instance {
        tracing::warn!("reload: the instance name changes at restart");
    }
    if let Some(r) = running {
        apply_xdp(r, new.xdp.clone());
    }
    *current = new;
    tracing::info!("configuration reloaded");
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
