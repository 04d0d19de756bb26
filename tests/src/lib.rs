//! Harness for the end-to-end tests: network namespaces and veth pairs behind drop guards, the
//! real `gateway` binary started inside a namespace, and the privilege rule (under `CI=true`
//! these tests must run, so missing root is a failure; elsewhere they skip loudly).

pub mod authbench;
pub mod daemon;
pub mod frames;
pub mod netns;
pub mod raw;
pub mod topo;

/// `true` when the test may run. Under `CI=true` a missing privilege panics (a skipped
/// end-to-end test in CI would hide a broken fast path); elsewhere it prints why it skips.
pub fn privileged(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (CAP_NET_ADMIN, CAP_BPF) and CI=true: refusing to skip");
    }
    eprintln!(
        "\n!!! SKIPPED {test}: end-to-end tests need root; run `sudo -E cargo xtask test` !!!\n"
    );
    false
}
