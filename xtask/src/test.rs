//! `cargo xtask test`: every check CI runs, failures collected and reported together.

use crate::exec;

pub fn run() -> anyhow::Result<()> {
    let steps: Vec<(&str, std::process::Command)> = vec![
        ("fmt", {
            let mut c = exec::cargo();
            c.args(["fmt", "--all", "--check"]);
            c
        }),
        ("clippy (host crates)", {
            let mut c = exec::cargo();
            c.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
            c
        }),
        // The eBPF crate in its own pass: nightly, BPF target, build-std.
        ("clippy (eBPF crate)", {
            // Through rustup: `$CARGO` is the stable cargo binary itself, which knows no `+nightly`.
            let mut c = std::process::Command::new("rustup");
            c.current_dir(exec::workspace_root());
            c.env_remove("RUSTC").env_remove("RUSTUP_TOOLCHAIN");
            c.args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "gateway-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]);
            c
        }),
        ("build gateway binary", {
            let mut c = exec::cargo();
            c.args(["build", "-p", "gateway", "--bin", "gateway"]);
            c
        }),
        // Unit, in-process integration and end-to-end tests (the latter need root; under
        // CI=true they fail rather than skip without it).
        ("tests", {
            let mut c = exec::cargo();
            c.args(["test", "--no-fail-fast"]);
            c.env(
                "GATEWAY_BIN",
                exec::workspace_root().join("target/debug/gateway"),
            );
            c
        }),
    ];
    let mut failed = Vec::new();
    for (name, mut cmd) in steps {
        eprintln!("\n=== {name}");
        if let Err(e) = exec::run(&mut cmd) {
            eprintln!("=== {name}: FAILED: {e:#}");
            failed.push(name);
        }
    }
    if failed.is_empty() {
        eprintln!("\nall checks passed");
        Ok(())
    } else {
        anyhow::bail!("failed: {}", failed.join(", "))
    }
}
