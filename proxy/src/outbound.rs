//! The outbound listener (`127.0.0.1:4140`): connections the app makes, redirected here by
//! iptables. Reads the original destination, asks [`crate::route::outbound`] where to go,
//! and proxies.

use crate::drain;
use crate::listen;
use crate::metrics::Direction;
use crate::orig_dst::OrigDst;
use crate::proxy::{self, Accepted, Shared};
use crate::route;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub struct Outbound {
    listener: TcpListener,
    shared: Arc<Shared>,
    orig_dst: Arc<dyn OrigDst>,
    limit: Arc<Semaphore>,
}

impl Outbound {
    /// Binds the listener; fails at once if the address is taken.
    pub fn new(
        addr: SocketAddr,
        shared: Arc<Shared>,
        orig_dst: Arc<dyn OrigDst>,
        limit: Arc<Semaphore>,
    ) -> io::Result<Self> {
        Ok(Outbound {
            listener: listen::bind(addr)?,
            shared,
            orig_dst,
            limit,
        })
    }

    pub fn address(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, drain: drain::Watch) {
        let Outbound {
            listener,
            shared,
            orig_dst,
            limit,
        } = self;
        listen::accept_loop(
            listener,
            limit,
            drain,
            "outbound",
            move |socket, client, drain| {
                handle(shared.clone(), orig_dst.clone(), socket, client, drain)
            },
        )
        .await
    }
}

async fn handle(
    shared: Arc<Shared>,
    orig_dst: Arc<dyn OrigDst>,
    socket: TcpStream,
    client: SocketAddr,
    drain: drain::Watch,
) {
    let Some((local, dst)) = listen::addresses(&socket, orig_dst.as_ref(), client, "outbound")
    else {
        return;
    };
    let conn = Accepted {
        socket,
        client,
        local,
        orig_dst: dst,
        direction: Direction::Outbound,
    };
    let known = shared.known(dst).await;
    let route = route::outbound(dst, local, &known, shared.tls.is_some());
    proxy::serve(shared, conn, route, drain).await
}
