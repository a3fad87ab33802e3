//! What happens to one accepted connection, in either direction.
//!
//! `inbound.rs` and `outbound.rs` accept, find the original destination and decide the
//! [`Route`]; then [`serve`] detects the protocol and [`forward`]s, or, for a meshed
//! connection arriving at the inbound port, [`serve_mesh`] terminates mTLS first. Both end
//! in [`forward`], which counts the connection, hands it to [`crate::http`] or
//! [`crate::tcp`], and logs its outcome once, when it ends.

use crate::config::Config;
use crate::detect::{self, Outcome, Protocol};
use crate::discovery::Discovery;
use crate::drain;
use crate::io::{CountingIo, PrefixedIo};
use crate::metrics::{DetectLabels, Direction, Metrics, TcpCloseLabels, TcpLabels, TlsLabels};
use crate::route::{self, Known, Refused, Route};
use crate::tls::{TlsContext, TlsError};
use bytes::{Bytes, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
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
    #[error("mTLS to {target} ({identity}) failed: {source}")]
    MeshConnect {
        target: SocketAddr,
        identity: String,
        source: TlsError,
    },
    #[error("no endpoints available for {0}")]
    NoEndpoints(String),
    #[error("request timed out after {0:?}")]
    RequestTimeout(Duration),
    #[error("reading the request body failed: {0}")]
    Body(String),
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
    /// Present when this proxy has an identity and can speak mTLS.
    pub tls: Option<Arc<TlsContext>>,
    /// Present when the proxy asks the controller about destinations.
    pub discovery: Option<Arc<Discovery>>,
}

impl Shared {
    /// What is known about an original destination: statically configured meshed
    /// endpoints first, then the controller.
    pub async fn known(&self, orig_dst: SocketAddr) -> Known {
        if let Some(ep) = self.config.meshed_endpoints.get(&orig_dst) {
            return Known::Meshed(ep.clone());
        }
        match &self.discovery {
            Some(d) => d.resolve(orig_dst).await,
            None => Known::Unknown,
        }
    }
}

/// Any stream the proxy reads and writes.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

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

/// Serves a plaintext (redirected) connection: detect the protocol, then forward.
pub async fn serve(
    shared: Arc<Shared>,
    conn: Accepted,
    route: Result<Route, Refused>,
    drain: drain::Watch,
) {
    let Accepted {
        socket,
        client,
        local,
        orig_dst,
        direction,
    } = conn;
    let route = match route {
        Ok(route) => route,
        Err(refused) => {
            tracing::warn!(%client, %orig_dst, direction = direction.as_str(), "refused: {refused}");
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    let tls = match &route.tls {
        Some(mesh) => TlsLabels::Server(mesh.identity.clone()),
        None => TlsLabels::NoIdentity,
    };
    let tcp = tcp_labels(&shared.metrics, direction, orig_dst, tls.clone());
    let mut io = counting(&shared.metrics, &tcp, socket);
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
    count_detection(&shared.metrics, direction, outcome);
    let io = PrefixedIo::new(prefix.freeze(), io);
    let conn = Conn {
        client,
        local,
        orig_dst,
        direction,
        detect: outcome.as_str(),
    };
    forward(
        &shared,
        io,
        route,
        outcome.protocol(),
        tcp,
        tls,
        conn,
        drain,
    )
    .await
}

/// Serves a meshed connection that arrived at the inbound port: terminate mTLS, learn the
/// client's identity and the app port, then forward.
pub async fn serve_mesh(
    shared: Arc<Shared>,
    tls: Arc<TlsContext>,
    conn: Accepted,
    drain: drain::Watch,
) {
    let Accepted {
        socket,
        client,
        local,
        direction,
        ..
    } = conn;
    let _ = socket.set_nodelay(true);
    let (stream, protocol, header) = match tls.accept(socket).await {
        Ok(accepted) => accepted,
        Err(e) => {
            shared.metrics.mesh_tls_failure(direction, &e);
            tracing::warn!(%client, "meshed connection refused: {e}");
            return;
        }
    };
    let route = match route::inbound_mesh(local, header.port, shared.config.inbound_forward) {
        Ok(route) => route,
        Err(refused) => {
            tracing::warn!(%client, client_id = %header.client_identity, "refused: {refused}");
            return;
        }
    };
    let orig_dst = std::net::SocketAddr::new(local.ip(), header.port);
    let labels = TlsLabels::Client(header.client_identity);
    let tcp = tcp_labels(&shared.metrics, direction, orig_dst, labels.clone());
    let io = PrefixedIo::new(Bytes::new(), counting(&shared.metrics, &tcp, stream));
    let conn = Conn {
        client,
        local,
        orig_dst,
        direction,
        detect: "mesh",
    };
    forward(&shared, io, route, protocol, tcp, labels, conn, drain).await
}

/// Facts about a connection for its one log line.
struct Conn {
    client: SocketAddr,
    local: SocketAddr,
    orig_dst: SocketAddr,
    direction: Direction,
    detect: &'static str,
}

fn tcp_labels(
    metrics: &Metrics,
    direction: Direction,
    orig_dst: SocketAddr,
    tls: TlsLabels,
) -> TcpLabels {
    TcpLabels {
        direction: direction.as_str(),
        peer: "src",
        target_addr: metrics.target_label(direction, orig_dst),
        tls,
    }
}

fn counting<T>(metrics: &Metrics, tcp: &TcpLabels, io: T) -> CountingIo<T> {
    CountingIo::new(
        io,
        metrics.tcp_read_bytes_total.get_or_create(tcp).clone(),
        metrics.tcp_write_bytes_total.get_or_create(tcp).clone(),
    )
}

fn count_detection(metrics: &Metrics, direction: Direction, outcome: Outcome) {
    metrics
        .tcp_detect_total
        .get_or_create(&DetectLabels {
            direction: direction.as_str(),
            result: outcome.as_str(),
        })
        .inc();
}

#[allow(clippy::too_many_arguments)]
async fn forward<T: Io>(
    shared: &Arc<Shared>,
    io: T,
    route: Route,
    protocol: Protocol,
    tcp: TcpLabels,
    tls: TlsLabels,
    conn: Conn,
    drain: drain::Watch,
) {
    let started = Instant::now();
    let metrics = &shared.metrics;
    metrics.tcp_open_total.get_or_create(&tcp).inc();
    metrics.tcp_open_connections.get_or_create(&tcp).inc();
    let result = match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            let peer = crate::http::Peer {
                client: conn.client,
                local: conn.local,
                direction: conn.direction,
                tls,
            };
            crate::http::serve(shared, io, &route, protocol, peer, drain).await
        }
        Protocol::Opaque => crate::tcp::forward(shared, io, &route, drain).await,
    };
    metrics.tcp_open_connections.get_or_create(&tcp).dec();
    let classification = if result.is_ok() { "success" } else { "failure" };
    metrics
        .tcp_close_total
        .get_or_create(&TcpCloseLabels {
            classification,
            tcp,
        })
        .inc();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let Conn {
        client,
        orig_dst,
        direction,
        detect,
        ..
    } = conn;
    match result {
        Ok(()) => tracing::debug!(
            direction = direction.as_str(), %client, %orig_dst, target = %route.target,
            detect, reason = route.reason, elapsed_ms, "connection closed"
        ),
        Err(e) => tracing::warn!(
            direction = direction.as_str(), %client, %orig_dst, target = %route.target,
            detect, elapsed_ms, "connection failed: {e}"
        ),
    }
}

/// Opens the connection a route asks for: plain TCP, or mTLS to a peer proxy.
pub async fn connect_route(
    shared: &Shared,
    route: &Route,
    protocol: Protocol,
) -> Result<Box<dyn Io>, ProxyError> {
    let tcp = connect(route.target, shared.config.connect_timeout).await?;
    match (&route.tls, &shared.tls) {
        (Some(mesh), Some(tls)) => {
            let stream = tls
                .connect(tcp, &mesh.identity, protocol, mesh.app_port)
                .await
                .map_err(|source| {
                    shared
                        .metrics
                        .mesh_tls_failure(Direction::Outbound, &source);
                    ProxyError::MeshConnect {
                        target: route.target,
                        identity: mesh.identity.clone(),
                        source,
                    }
                })?;
            // The server side of the hop, named by the identity it proved.
            let app = SocketAddr::new(route.target.ip(), mesh.app_port);
            let dst = TcpLabels {
                direction: Direction::Outbound.as_str(),
                peer: "dst",
                target_addr: shared.metrics.target_label(Direction::Outbound, app),
                tls: TlsLabels::Server(mesh.identity.clone()),
            };
            shared.metrics.tcp_open_total.get_or_create(&dst).inc();
            Ok(Box::new(stream))
        }
        _ => Ok(Box::new(tcp)),
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
