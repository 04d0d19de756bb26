//! Sending hand-made frames on an interface (AF_PACKET), for what ordinary sockets cannot
//! produce here: VLAN tags on a kernel without 802.1Q support, odd header chains.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::netns::NetNs;

/// Sends each frame once on `iface` inside `ns`.
pub fn send(ns: &NetNs, iface: &str, frames: &[Vec<u8>]) {
    ns.run(|| {
        let name = std::ffi::CString::new(iface).expect("iface name");
        // SAFETY: plain syscalls on values we own; the fd is wrapped at once so it closes.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            assert!(ifindex != 0, "no interface {iface} in {}", ns.name);
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            for frame in frames {
                let n = libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::addr_of!(addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    n,
                    frame.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}
