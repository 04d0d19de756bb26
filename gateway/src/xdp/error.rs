//! Errors of the fast path, each saying what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(
        "no pinned maps for instance `{instance}` at {dir}: start `gateway run` for it, or check --instance"
    )]
    NotPinned { instance: String, dir: PathBuf },
    #[error(
        "pinned maps at {dir} have layout {found}, this build uses {expected}; they were made by another \
         gateway version. Run `gateway maps reset --instance {instance}` to remove them (this drops \
         every block held in the kernel; the audit journal replays manual blocks at the next start)"
    )]
    LayoutMismatch {
        instance: String,
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error("mounting bpffs at {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another writer holds the lock on {0}")]
    Locked(PathBuf),
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("unknown map `{0}`; `gateway maps list` shows the names")]
    UnknownMap(String),
    #[error("attaching to {iface}: {reason}")]
    Attach { iface: String, reason: String },
}

impl XdpError {
    pub(crate) fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map { name, source }
    }
}
