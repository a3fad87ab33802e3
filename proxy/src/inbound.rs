//! The inbound listener (`0.0.0.0:4143`): connections to the pod, redirected here by
//! iptables. Reads the original destination (the pod's own IP and port) and forwards
//! there, or to localhost for apps bound only to 127.0.0.1. Connections addressed to this
//! port itself come from meshed peers and are terminated as mTLS (`mesh.rs`).

use crate::config::InboundForward;
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

pub struct Inbound {
    listener: TcpListener,
    shared: Arc<Shared>,
    orig_dst: Arc<dyn OrigDst>,
    limit: Arc<Semaphore>,
}

impl Inbound {
    /// Binds the listener; fails at once if the address is taken.
    pub fn new(
        addr: SocketAddr,
        shared: Arc<Shared>,
        orig_dst: Arc<dyn OrigDst>,
        limit: Arc<Semaphore>,
    ) -> io::Result<Self> {
        Ok(Inbound {
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
        let Inbound {
            listener,
            shared,
            orig_dst,
            limit,
        } = self;
        listen::accept_loop(
            listener,
            limit,
            drain,
            "inbound",
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
    let Some((local, dst)) = listen::addresses(&socket, orig_dst.as_ref(), client, "inbound")
    else {
        return;
    };
    let forward: InboundForward = shared.config.inbound_forward;
    let conn = Accepted {
        socket,
        client,
        local,
        orig_dst: dst,
        direction: Direction::Inbound,
    };
    // Sent to the inbound port itself (not redirected from an app port): a meshed peer.
    if dst == local {
        if let Some(tls) = shared.tls.clone() {
            return proxy::serve_mesh(shared, tls, conn, drain).await;
        }
    }
    let route = route::inbound(dst, local, forward);
    proxy::serve(shared, conn, route, drain).await
}
