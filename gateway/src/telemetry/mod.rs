//! Logs and security events, all through `tracing`: human-readable by default, JSON lines for
//! machines (`--log-format json`). Security events use the `security` target so they can be
//! routed apart from operational logs.

pub mod events;
pub mod metrics;

use std::sync::OnceLock;

use tracing_subscriber::{EnvFilter, Registry, fmt, prelude::*, reload};

/// Changes the running filter (`PUT /v1/log-level` on the admin API) without a restart.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Replaces the log filter (`info`, `debug`, `gateway=debug,hyper=warn`, ...); returns the
/// filter now in force.
pub fn set_log_filter(directives: &str) -> Result<String, String> {
    let filter = EnvFilter::try_new(directives).map_err(|e| format!("`{directives}`: {e}"))?;
    let handle = FILTER
        .get()
        .ok_or_else(|| "logging is not initialised in this process".to_owned())?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(log_filter().unwrap_or_default())
}

/// The log filter in force.
pub fn log_filter() -> Option<String> {
    FILTER.get()?.with_current(|f| f.to_string()).ok()
}

/// Output format of logs and events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides the default level
/// (`info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(true))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    if result.is_ok() {
        let _ = FILTER.set(handle);
    }
}
