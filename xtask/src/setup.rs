//! `cargo xtask setup`: installs, idempotently, what building and testing need. Each step checks
//! first and says what it does; as non-root it prints the commands instead of running them.

use std::process::Command;

use crate::exec;

/// Debian packages: LLVM 22 to build bpf-linker against (nightly's LLVM), iproute2 for network
/// namespaces, iptables/nftables as benchmark peers, ethtool for driver counters, g++ for
/// libFuzzer (built when the fuzz targets are checked).
const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("g++", "/usr/bin/g++"),
    ("iproute2", "/usr/sbin/ip"),
    ("iptables", "/usr/sbin/iptables"),
    ("nftables", "/usr/sbin/nft"),
    ("ethtool", "/usr/sbin/ethtool"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    let root = exec::is_root();
    let mut todo: Vec<(String, Command)> = Vec::new();

    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| !std::path::Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        todo.push(("refresh Debian package lists".into(), update));
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        todo.push((format!("install {}", missing.join(" ")), install));
    }

    if !exec::succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        let mut cmd = Command::new("rustup");
        cmd.args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]);
        todo.push((
            "install the nightly toolchain (eBPF build only)".into(),
            cmd,
        ));
    } else {
        let installed = exec::output(Command::new("rustup").args([
            "+nightly",
            "component",
            "list",
            "--installed",
        ]))
        .unwrap_or_default();
        for component in ["rust-src", "clippy"] {
            if !installed.lines().any(|l| l.starts_with(component)) {
                let mut cmd = Command::new("rustup");
                cmd.args(["component", "add", component, "--toolchain", "nightly"]);
                todo.push((
                    format!("add {component} to nightly (build-std / eBPF clippy)"),
                    cmd,
                ));
            }
        }
    }

    if !exec::succeeds(Command::new("bpf-linker").arg("--version")) {
        let mut cmd = Command::new("cargo");
        cmd.args([
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22");
        todo.push((
            format!("build bpf-linker {BPF_LINKER_VERSION} against LLVM 22"),
            cmd,
        ));
    }

    if todo.is_empty() {
        eprintln!("setup: everything is installed");
        return Ok(());
    }
    if !root {
        eprintln!("setup: not root; run these as root, then try again:");
        for (why, cmd) in &todo {
            eprintln!("  # {why}\n  {}", exec::render(cmd));
        }
        anyhow::bail!("prerequisites missing");
    }
    for (why, mut cmd) in todo {
        eprintln!("setup: {why}");
        exec::run(&mut cmd)?;
    }
    Ok(())
}
