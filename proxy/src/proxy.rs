//! What happens to one accepted connection, in either direction.
//!
//! `inbound.rs` and `outbound.rs` accept and find the original destination, then call
//! [`serve`] with their routing decision. Here: decide whether to detect, detect, route,
//! count the connection, and hand it to [`crate::http`] or [`crate::tcp`]. Each
//! connection's outcome is logged once, when it ends.

use crate::config::Config;
use crate::detect::{self, Outcome, Protocol};
use crate::drain;
use crate::io::{CountingIo, PrefixedIo};
use crate::metrics::{
    DetectLabels, Direction, Metrics, TcpCloseLabels, TcpLabels, TLS_NO_IDENTITY,
};
use crate::route::{self, Refused, Route};
use bytes::BytesMut;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why a proxied connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the original destination failed (was the connection redirected by weft-init?): {0}")]
    OrigDst(io::Error),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("connecting to {target} failed: {source}")]
    Connect {
        target: SocketAddr,
        source: io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
}

/// State shared by every connection of every listener.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

/// An accepted connection and what is known about it before reading a byte.
#[derive(Debug)]
pub struct Accepted {
    pub socket: TcpStream,
    pub client: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    pub orig_dst: SocketAddr,
    pub direction: Direction,
}

/// Serves one connection to completion. `decide` is the listener's routing decision.
pub async fn serve(
    shared: Arc<Shared>,
    conn: Accepted,
    decide: impl FnOnce(Protocol) -> Result<Route, Refused>,
    drain: drain::Watch,
) {
    let started = Instant::now();
    let Accepted {
        socket,
        client,
        orig_dst,
        direction,
        ..
    } = conn;
    let metrics = &shared.metrics;
    let _ = socket.set_nodelay(true);
    let tcp = TcpLabels {
        direction: direction.as_str(),
        peer: "src",
        target_addr: metrics.target_label(direction, orig_dst),
        tls: TLS_NO_IDENTITY,
    };
    let mut io = CountingIo::new(
        socket,
        metrics.tcp_read_bytes_total.get_or_create(&tcp).clone(),
        metrics.tcp_write_bytes_total.get_or_create(&tcp).clone(),
    );

    let (outcome, prefix) = match route::detection(orig_dst, &shared.config.opaque_ports) {
        route::Detection::SkipOpaque => (Outcome::OpaquePort, BytesMut::new()),
        route::Detection::Detect => {
            match detect::detect(&mut io, shared.config.detect_timeout).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(%client, %orig_dst, error = %e, "connection failed during protocol detection");
                    return;
                }
            }
        }
    };
    metrics
        .tcp_detect_total
        .get_or_create(&DetectLabels {
            direction: direction.as_str(),
            result: outcome.as_str(),
        })
        .inc();

    let route = match decide(outcome.protocol()) {
        Ok(route) => route,
        Err(refused) => {
            tracing::warn!(%client, %orig_dst, direction = direction.as_str(), "refused: {refused}");
            return;
        }
    };

    metrics.tcp_open_total.get_or_create(&tcp).inc();
    metrics.tcp_open_connections.get_or_create(&tcp).inc();
    let io = PrefixedIo::new(prefix.freeze(), io);
    let result = match route.protocol {
        Protocol::Http1 | Protocol::Http2 => {
            crate::http::serve(&shared, io, &route, client, direction, drain).await
        }
        Protocol::Opaque => {
            crate::tcp::forward(io, &route, shared.config.connect_timeout, drain).await
        }
    };
    metrics.tcp_open_connections.get_or_create(&tcp).dec();
    let classification = if result.is_ok() { "success" } else { "failure" };
    metrics
        .tcp_close_total
        .get_or_create(&TcpCloseLabels {
            tcp,
            classification,
        })
        .inc();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(()) => tracing::debug!(
            direction = direction.as_str(), %client, %orig_dst, target = %route.target,
            detect = outcome.as_str(), reason = route.reason, elapsed_ms, "connection closed"
        ),
        Err(e) => tracing::warn!(
            direction = direction.as_str(), %client, %orig_dst, target = %route.target,
            detect = outcome.as_str(), elapsed_ms, "connection failed: {e}"
        ),
    }
}

/// Connects to `target`, bounded by `timeout`.
pub async fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(ProxyError::Connect { target, source }),
        Err(_) => Err(ProxyError::ConnectTimeout(target)),
    }
}
