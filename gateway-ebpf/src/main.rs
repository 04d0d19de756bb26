//! The XDP fast path. Per packet: parse Ethernet (up to two VLAN tags), IPv4 or IPv6, then
//! denylist (exact, then CIDR), then the per-source packet-rate cap; the allowlist overrides any
//! drop. Everything it does not understand passes: a gateway must not black-hole traffic on a
//! parser corner case, and the kernel stack behind it drops what is truly malformed.
#![no_std]
#![no_main]

mod packet;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The gateway's filter.
#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    verdict::run(&ctx)
}

/// Drops everything: the baseline `cargo xtask bench xdp` compares against (the cost of the
/// path itself, no filter work).
#[xdp]
pub fn bench_drop_all(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Sends every frame back out of its interface: the program `cargo xtask bench xdp` runs with
/// `BPF_F_TEST_XDP_LIVE_FRAMES` to generate floods faster than the filter can drop them.
#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic, so this cannot run.
    unsafe { core::hint::unreachable_unchecked() }
}
