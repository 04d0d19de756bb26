//! The XDP fast path seen from userspace: the embedded program, its pinned maps (the contract in
//! `gateway-common`), loading and attaching, and the ring buffer of rate-cap events.

mod clock;
mod error;
mod events;
mod loader;
mod maps;
pub mod pin;

pub use clock::{BootClock, boot_ns_now, unix_now};
pub use error::XdpError;
pub use events::{RateEvents, SourceEvent};
pub use loader::{AttachMode, Fastpath, ensure_pinned, open_object};
pub(crate) use maps::deny_row;
pub use maps::{DenyEntry, MapSummary, Maps, PortRule, Protocol, dump_map, list_maps};
pub use pin::{PinDir, PinLock};

/// The compiled `gateway-ebpf` object, built by `build.rs` through aya-build.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

/// Program names inside [`OBJECT`].
pub mod programs {
    /// The gateway's filter.
    pub const FILTER: &str = "gateway_xdp";
    /// Drops everything: the benchmark's baseline.
    pub const BENCH_DROP_ALL: &str = "bench_drop_all";
    /// Returns `XDP_TX`: the benchmark's live-frames flood generator.
    pub const BENCH_TX: &str = "bench_tx";
}
