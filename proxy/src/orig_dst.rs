//! The original destination of a connection that iptables redirected to the proxy.
//!
//! In a pod, `weft-init`'s `REDIRECT` rules send every connection to the proxy's listeners and
//! the kernel remembers where it was going; `SO_ORIGINAL_DST` (IPv4) and
//! `IP6T_SO_ORIGINAL_DST` (IPv6) read it back. Behind the [`OrigDst`] trait so that tests and
//! `weft demo` can run the whole proxy on loopback without root.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use tokio::net::TcpStream;

/// Finds where an accepted connection was originally headed.
pub trait OrigDst: Send + Sync + 'static {
    fn orig_dst(&self, socket: &TcpStream) -> io::Result<SocketAddr>;
}

/// The kernel's answer, for connections redirected by iptables `REDIRECT`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoOriginalDst;

/// Always the same address: for tests and for `weft demo`, where nothing is redirected.
#[derive(Debug, Clone, Copy)]
pub struct FixedOrigDst(pub SocketAddr);

impl OrigDst for FixedOrigDst {
    fn orig_dst(&self, _: &TcpStream) -> io::Result<SocketAddr> {
        Ok(self.0)
    }
}

/// The address the connection arrived at: what the kernel reports for a connection nobody
/// redirected. For tests and `weft demo`, where meshed peers dial the inbound port directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotRedirected;

impl OrigDst for NotRedirected {
    fn orig_dst(&self, socket: &TcpStream) -> io::Result<SocketAddr> {
        socket.local_addr()
    }
}

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>.
const SO_ORIGINAL_DST: libc::c_int = 80;
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

impl OrigDst for SoOriginalDst {
    fn orig_dst(&self, socket: &TcpStream) -> io::Result<SocketAddr> {
        let fd = socket.as_raw_fd();
        let local = socket.local_addr()?;
        let res = match local {
            SocketAddr::V4(_) => original_dst_v4(fd),
            SocketAddr::V6(l) => {
                // An IPv4 peer on a dual-stack socket is still redirected by iptables (v4).
                if l.ip().to_ipv4_mapped().is_some() {
                    original_dst_v4(fd)
                } else {
                    original_dst_v6(fd)
                }
            }
        };
        match res {
            // No NAT entry: nothing redirected this connection, so it was sent here directly
            // (a meshed peer dialling the inbound port). ENOPROTOOPT: no netfilter support
            // (or qemu-user, which does not emulate the option); the same holds.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOPROTOOPT)
                ) =>
            {
                Ok(local)
            }
            other => other,
        }
    }
}

fn original_dst_v4(fd: libc::c_int) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_in is plain old data; zeroed is a valid value and getsockopt writes at
    // most `len` bytes into it.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: fd is a live socket owned by the caller; the pointers are valid for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            &mut addr as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(addr.sin_port),
    )))
}

fn original_dst_v6(fd: libc::c_int) -> io::Result<SocketAddr> {
    // SAFETY: as above, for sockaddr_in6.
    let mut addr: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: fd is a live socket owned by the caller; the pointers are valid for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IPV6,
            IP6T_SO_ORIGINAL_DST,
            &mut addr as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(addr.sin6_addr.s6_addr),
        u16::from_be(addr.sin6_port),
        addr.sin6_flowinfo,
        addr.sin6_scope_id,
    )))
}
