//! `cargo xtask demo`: builds the release gateway and the demo driver (which lives in the `tests`
//! crate beside the namespace harness it uses), then runs the driver as root.

use crate::{build, exec};

pub fn run() -> anyhow::Result<()> {
    build::release()?;
    exec::run(exec::cargo().args(["build", "--release", "-p", "tests", "--bin", "demo"]))?;
    if !exec::is_root() {
        anyhow::bail!(
            "the demo creates network namespaces and attaches XDP: run it as root (sudo -E cargo xtask demo)"
        );
    }
    exec::run(
        std::process::Command::new(exec::workspace_root().join("target/release/demo"))
            .env("GATEWAY_BIN", build::release_binary()),
    )
}
