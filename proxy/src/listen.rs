//! The accept loop shared by the inbound and outbound listeners.
//!
//! It takes a connection permit for each accepted socket (so at most `max_connections` are
//! served at once across all listeners; the rest wait in the kernel's backlog), spawns one task per connection holding a
//! drain watch, and stops accepting as soon as a drain starts.

use crate::drain;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Binds a listening socket with `SO_REUSEADDR`, so a restarted proxy can bind at once.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts until `drain` fires, handing each connection to `handle`.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    drain: drain::Watch,
    name: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, drain::Watch) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (socket, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = name, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.signaled() => break,
        };
        // At the limit, this listener stops accepting (holding at most this one socket)
        // until a connection ends; the kernel backlog queues the rest.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // the semaphore was closed: shutting down
            },
            _ = drain.signaled() => break,
        };
        let fut = handle(socket, peer, drain.clone());
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
    tracing::debug!(listener = name, "stopped accepting");
}

/// The accepted socket's local address and its original destination, or `None` (logged)
/// when either cannot be read.
pub fn addresses(
    socket: &tokio::net::TcpStream,
    orig_dst: &dyn crate::orig_dst::OrigDst,
    client: std::net::SocketAddr,
    direction: &str,
) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    match (socket.local_addr(), orig_dst.orig_dst(socket)) {
        (Ok(local), Ok(dst)) => Some((local, dst)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(%client, "{direction}: {}", crate::proxy::ProxyError::OrigDst(e));
            None
        }
    }
}
