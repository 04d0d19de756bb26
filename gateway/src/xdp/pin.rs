//! The per-instance pin directory under bpffs, and the writers' lock on it.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use fs2::FileExt as _;

use super::XdpError;

/// Where bpffs lives unless told otherwise.
pub const BPFFS: &str = "/sys/fs/bpf";

/// `/sys/fs/bpf/gateway/<instance>`: the maps of one gateway instance.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub instance: String,
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(bpffs: &Path, instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            path: bpffs.join("gateway").join(instance),
        }
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether maps were pinned for this instance (by a daemon, or by a CLI writer).
    pub fn exists(&self) -> bool {
        self.map_path(gateway_common::map_names::LAYOUT).exists()
    }

    pub fn not_pinned(&self) -> XdpError {
        XdpError::NotPinned {
            instance: self.instance.clone(),
            dir: self.path.clone(),
        }
    }

    /// Mounts bpffs at `bpffs` if nothing is mounted there, then creates the directory.
    pub fn create(&self, bpffs: &Path) -> Result<(), XdpError> {
        ensure_bpffs(bpffs)?;
        std::fs::create_dir_all(&self.path).map_err(|source| XdpError::Io {
            what: "creating",
            path: self.path.clone(),
            source,
        })
    }

    /// Takes the writers' lock (`flock` on the directory), waiting for another writer.
    pub fn lock(&self) -> Result<PinLock, XdpError> {
        let file = File::open(&self.path).map_err(|source| XdpError::Io {
            what: "opening",
            path: self.path.clone(),
            source,
        })?;
        file.lock_exclusive().map_err(|source| XdpError::Io {
            what: "locking",
            path: self.path.clone(),
            source,
        })?;
        Ok(PinLock { _file: file })
    }

    /// Removes every pinned map of the instance (`gateway maps reset`).
    pub fn remove(&self) -> Result<(), XdpError> {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(XdpError::Io {
                what: "removing",
                path: self.path.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Held while writing maps; released on drop.
pub struct PinLock {
    _file: File,
}

fn ensure_bpffs(bpffs: &Path) -> Result<(), XdpError> {
    let statfs = nix::sys::statfs::statfs(bpffs);
    if statfs.is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC) {
        return Ok(());
    }
    std::fs::create_dir_all(bpffs).map_err(|source| XdpError::Io {
        what: "creating",
        path: bpffs.to_owned(),
        source,
    })?;
    nix::mount::mount(
        Some("bpf"),
        bpffs,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| XdpError::Mount {
        path: bpffs.to_owned(),
        source,
    })?;
    tracing::info!(path = %bpffs.display(), "mounted bpffs");
    Ok(())
}
