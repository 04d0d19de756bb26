//! The flood generator: `BPF_PROG_RUN` of `bench_tx` (returns `XDP_TX`) in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`, as xdp-trafficgen does). The kernel builds real `xdp_frame`s
//! from one template frame, runs the program on each and transmits the `XDP_TX` ones out of the
//! interface named by `ingress_ifindex`: out of a veth, that delivers them to the peer's NAPI.
//!
//! Everything runs on the calling thread's CPU: the syscall loops over batches, and at the end of
//! each batch (`local_bh_enable`) the receiver's NAPI poll runs as a softirq on the same CPU. So
//! the generator's cost shows as system time and the receiver's as softirq time on that CPU.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};

use super::sys::CpuTimes;

/// An Ethernet + IPv4 + UDP frame of 60 bytes (64 on the wire with the FCS): the smallest
/// Ethernet frame, the worst case for per-packet cost.
pub const FRAME_LEN: usize = 60;

#[derive(Clone, Copy, Debug)]
pub struct Udp4 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Udp4 {
    pub fn frame(&self) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (FRAME_LEN - 14) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let sum = checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let udp = &mut f[34..42];
        udp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        udp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
        // UDP checksum 0: none (allowed for IPv4).
        f
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What to send: each template frame in turn, `per_frame` copies of it per `BPF_PROG_RUN` call,
/// until `packets` are sent or `max_time` has passed (whichever comes first).
pub struct Flood<'a> {
    pub frames: &'a [[u8; FRAME_LEN]],
    pub per_frame: u32,
    pub packets: u64,
    pub max_time: Duration,
}

/// What one flood did, measured on the generator's thread.
#[derive(Clone, Debug)]
pub struct Sent {
    pub packets: u64,
    pub calls: u64,
    pub elapsed: Duration,
    pub cpu: CpuTimes,
}

/// The live-frames generator: a loaded XDP program (`bench_tx`, or `bench_drop_all` to measure
/// the loop alone) and the interface it transmits out of.
pub struct Generator<'a> {
    pub program: &'a Xdp,
    pub ifindex: u32,
    /// Frames per batch; the kernel flushes transmitted frames (and runs the receiver's NAPI)
    /// after each batch. 64 is NAPI's weight, the default.
    pub batch: u32,
}

impl Generator<'_> {
    /// Sends `flood` from a new thread that first calls `enter`, which must put it into the
    /// namespace that holds `ifindex` (the kernel resolves it in the caller's network namespace)
    /// and pin it to the CPU being measured.
    pub fn send(
        &self,
        flood: &Flood<'_>,
        enter: &(dyn Fn() -> anyhow::Result<()> + Sync),
    ) -> anyhow::Result<Sent> {
        anyhow::ensure!(!flood.frames.is_empty(), "no frames to send");
        std::thread::scope(|s| {
            s.spawn(|| {
                enter()?;
                self.send_here(flood)
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the generator thread panicked")))
        })
    }

    fn send_here(&self, flood: &Flood<'_>) -> anyhow::Result<Sent> {
        let per_frame = flood.per_frame.max(1);
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel wants data = 0 and data_end = the frame length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.ifindex.to_ne_bytes());

        let before = CpuTimes::read()?;
        let start = Instant::now();
        let mut packets = 0u64;
        let mut calls = 0u64;
        for frame in flood.frames.iter().cycle() {
            if packets >= flood.packets || start.elapsed() >= flood.max_time {
                break;
            }
            super::sys::check_interrupted()?;
            let n = u32::try_from((flood.packets - packets).min(u64::from(per_frame)))
                .unwrap_or(per_frame);
            let opts = TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(self.batch),
                ..TestRunOptions::default()
            };
            self.program
                .test_run(opts)
                .context("BPF_PROG_RUN (live frames)")?;
            packets += u64::from(n);
            calls += 1;
        }
        let elapsed = start.elapsed();
        let after = CpuTimes::read()?;
        Ok(Sent {
            packets,
            calls,
            elapsed,
            cpu: before.delta(&after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let f = Udp4 {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(198, 19, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            sport: 1234,
            dport: 9,
        }
        .frame();
        // A header with its checksum in place sums to 0xffff, i.e. checksum() == 0.
        assert_eq!(checksum(&f[14..34]), 0);
        assert_eq!(&f[26..30], &[198, 19, 0, 1]);
    }
}
