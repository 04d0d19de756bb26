//! Reading rate-cap reports from the `events` ring buffer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Map, MapData, RingBuf};
use gateway_common::{RateEvent, map_names, stat};
use ipnet::IpNet;
use tokio::io::unix::AsyncFd;

use super::XdpError;

/// A source the kernel reported for going over a cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEvent {
    /// The source (a /32, or the IPv6 aggregation prefix).
    pub source: IpNet,
    /// `pps-cap` or `syn-cap`.
    pub cap: &'static str,
    /// Packets dropped since the previous report for this source.
    pub dropped: u64,
}

pub struct RateEvents {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RateEvents {
    pub(super) fn new(map: Map) -> Result<Self, XdpError> {
        let ring = RingBuf::try_from(map).map_err(XdpError::map(map_names::EVENTS))?;
        // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| XdpError::Io {
                what: "polling",
                path: map_names::EVENTS.into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(Self { fd })
    }

    /// Waits for and returns the next batch of events.
    pub async fn next_batch(&mut self) -> Result<Vec<SourceEvent>, XdpError> {
        loop {
            let mut guard = self
                .fd
                .readable_mut()
                .await
                .map_err(|source| XdpError::Io {
                    what: "polling",
                    path: map_names::EVENTS.into(),
                    source,
                })?;
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(event) = decode(&item) {
                    batch.push(event);
                }
            }
            guard.clear_ready();
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Option<SourceEvent> {
    if bytes.len() < size_of::<RateEvent>() {
        return None;
    }
    // SAFETY: length checked; RateEvent is plain old data, read unaligned.
    let e: RateEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let addr = match e.family {
        4 => IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3])),
        6 => IpAddr::V6(Ipv6Addr::from(e.addr)),
        _ => return None,
    };
    let source = IpNet::new(addr, e.prefix_len).ok()?;
    let cap = if u32::from(e.kind) == stat::DROP_SYN_CAP {
        "syn-cap"
    } else {
        "pps-cap"
    };
    Some(SourceEvent {
        source,
        cap,
        dropped: e.dropped,
    })
}
