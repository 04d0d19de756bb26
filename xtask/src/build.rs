//! `cargo xtask build`.

use crate::exec;

/// Builds the release `gateway` binary (with its embedded eBPF object).
pub fn release() -> anyhow::Result<()> {
    exec::run(exec::cargo().args(["build", "--release", "-p", "gateway", "--bin", "gateway"]))
}

/// Path of the release binary.
pub fn release_binary() -> std::path::PathBuf {
    exec::workspace_root().join("target/release/gateway")
}
