//! HTTP/1 and HTTP/2 proxying with hyper: requests are received on the accepted
//! connection, forwarded to the route's target over a connection of the same protocol, and
//! streamed back. Bodies are never buffered whole.
//!
//! Per request: count it, strip hop-by-hop headers (RFC 9110 §7.6.1), add
//! `X-Forwarded-For` on inbound, send upstream, pass `101 Switching Protocols` upgrades
//! (WebSocket) through as a byte tunnel, and record the response when its body ends.
//! Errors reaching the target become `502`/`504` responses with a `weft-proxy-error` header.

use crate::detect::Protocol;
use crate::drain;
use crate::ingress;
use crate::metrics::{Direction, HttpSeries, HttpSeriesCache, TlsLabels};
use crate::proxy::{ProxyError, Shared};
use crate::route::{self, Route};
use crate::upstream::{Checkout, Forwarded, Upstream};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1 as server1, http2 as server2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// Serves HTTP on an accepted connection until the client is done or a drain finishes it.
/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub client: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    pub direction: Direction,
    pub tls: TlsLabels,
}

pub async fn serve<T>(
    shared: &Arc<Shared>,
    io: T,
    route: &Route,
    protocol: Protocol,
    peer: Peer,
    drain: drain::Watch,
) -> Result<(), ProxyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let target_addr = match &route.tls {
        // Label meshed traffic by the application's address, not the peer proxy's port.
        Some(mesh) => SocketAddr::new(route.target.ip(), mesh.app_port),
        None => route.target,
    };
    let Peer {
        client,
        local,
        direction,
        tls,
    } = peer;
    let ctx = Arc::new(Forwarder {
        upstream: Upstream::new(shared.clone(), route.clone(), protocol),
        client,
        local,
        direction,
        protocol,
        series: HttpSeriesCache::new(shared.metrics.clone(), direction, target_addr),
        tls,
        shared: shared.clone(),
        overrides: tokio::sync::Mutex::new(HashMap::new()),
        drain: drain.clone(),
    });
    let service = hyper::service::service_fn(move |req| ctx.clone().forward(req));
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http2 => {
            let conn = server2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res?,
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await?
                }
            }
        }
        _ => {
            let conn = server1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_read_timeout)
                .max_buf_size(config.max_header_bytes)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res?,
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await?
                }
            }
        }
    }
    Ok(())
}

/// Per-connection forwarding state.
struct Forwarder {
    upstream: Upstream,
    client: SocketAddr,
    local: SocketAddr,
    direction: Direction,
    protocol: Protocol,
    /// This connection's metric handles, by authority and `tls`.
    series: HttpSeriesCache,
    tls: TlsLabels,
    shared: Arc<Shared>,
    /// Ingress mode: upstreams for the destinations override headers named.
    overrides: tokio::sync::Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    drain: drain::Watch,
}

impl Forwarder {
    async fn forward(
        self: Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        // Counted once the request's fate (and, for a Service, its endpoint) is known.
        let series = self.series.get(authority_of(&req), &self.tls);

        let upgrade = upgrade_protocol(&req);
        let server_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        strip_hop_by_hop(req.headers_mut());
        if let Some(proto) = &upgrade {
            req.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            req.headers_mut().insert(header::UPGRADE, proto.clone());
        }
        if self.direction == Direction::Inbound {
            append_forwarded_for(req.headers_mut(), self.client.ip());
        }

        let mut routed = None;
        if self.direction == Direction::Outbound && self.shared.config.ingress_mode {
            match ingress::take_override(req.headers_mut()) {
                None => {}
                Some(Err(e)) => {
                    series.count_request();
                    let recorder = Recorder::new(series, StatusCode::BAD_REQUEST, started);
                    return Ok(error_response(
                        StatusCode::BAD_REQUEST,
                        &e.to_string(),
                        recorder,
                    ));
                }
                Some(Ok(o)) => match self.override_upstream(o).await {
                    Ok(u) => routed = Some(u),
                    Err(e) => {
                        series.count_request();
                        let recorder = Recorder::new(series, StatusCode::BAD_GATEWAY, started);
                        return Ok(error_response(StatusCode::BAD_GATEWAY, &e, recorder));
                    }
                },
            }
        }
        let upstream = routed.as_deref().unwrap_or(&self.upstream);
        let Forwarded {
            response: mut rsp,
            checkout,
            meshed_endpoint,
        } = match upstream.send(req, upgrade.is_some()).await {
            Ok(forwarded) => forwarded,
            Err(e) => {
                let status = match e {
                    ProxyError::ConnectTimeout(_) | ProxyError::RequestTimeout(_) => {
                        StatusCode::GATEWAY_TIMEOUT
                    }
                    ProxyError::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                tracing::warn!(client = %self.client, target = %self.series.target_addr(), "request failed: {e}");
                series.count_request();
                let recorder = Recorder::new(series, status, started);
                return Ok(error_response(status, &e.to_string(), recorder));
            }
        };

        // A Service's endpoint reached over mTLS names the identity it verified.
        let series = match meshed_endpoint.as_ref().and_then(|ep| ep.server_tls()) {
            Some(tls) => self.series.get(series.raw_authority(), tls),
            None => series,
        };
        series.count_request();
        let status = rsp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(server_upgrade) = server_upgrade {
                let client_upgrade = hyper::upgrade::on(&mut rsp);
                tokio::spawn(tunnel(server_upgrade, client_upgrade, self.drain.clone()));
            }
            // Keep Connection/Upgrade on a 101: they are the point of it.
        } else {
            strip_hop_by_hop(rsp.headers_mut());
        }
        let recorder = Recorder::new(series, status, started);
        Ok(rsp.map(|body| ProxyBody::Proxied {
            inner: body,
            recorder: Some(recorder),
            checkout,
        }))
    }
}

impl Forwarder {
    /// The upstream for an ingress override: resolved (DNS for names), then routed like any
    /// outbound destination, and kept for the rest of the connection.
    async fn override_upstream(&self, o: ingress::Override) -> Result<Arc<Upstream>, String> {
        let addr = match o {
            ingress::Override::Addr(a) => a,
            ingress::Override::Name(name, port) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .next()
                .ok_or_else(|| format!("{name} has no address"))?,
        };
        let mut overrides = self.overrides.lock().await;
        if let Some(u) = overrides.get(&addr) {
            return Ok(u.clone());
        }
        let known = self.shared.known(addr).await;
        let route = route::outbound(addr, self.local, &known, self.shared.tls.is_some())
            .map_err(|e| e.to_string())?;
        let upstream = Arc::new(Upstream::new(self.shared.clone(), route, self.protocol));
        overrides.insert(addr, upstream.clone());
        Ok(upstream)
    }
}

/// Copies bytes between the upgraded client and server connections.
async fn tunnel(
    server_side: hyper::upgrade::OnUpgrade,
    client_side: hyper::upgrade::OnUpgrade,
    _drain: drain::Watch,
) {
    match tokio::try_join!(server_side, client_side) {
        Ok((downstream, upstream)) => {
            let mut downstream = TokioIo::new(downstream);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                tracing::debug!("upgraded connection ended: {e}");
            }
        }
        Err(e) => tracing::warn!("upgrade failed: {e}"),
    }
}

/// The authority a request was addressed to: the URI's, else the Host header, else "".
fn authority_of<B>(req: &Request<B>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// The protocol an HTTP/1 request asks to upgrade to (`Connection: upgrade` + `Upgrade`).
pub fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let connection_says_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if connection_says_upgrade {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes connection-specific headers (RFC 9110 §7.6.1): those named in `Connection`, and
/// `Connection`, `Proxy-Connection`, `Keep-Alive`, `TE` (except `TE: trailers`, which gRPC
/// needs end to end), `Transfer-Encoding` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names, instead of a lookup for
    // each, settles it (this runs twice per request).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Whether `strip_hop_by_hop` has anything to look at for a header of this name.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "proxy-connection"
        || name.as_str() == "keep-alive"
}

/// Appends the client's address to `X-Forwarded-For`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client}"),
        _ => client.to_string(),
    };
    // The previous value came from a valid header and an IP address is plain ASCII.
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

fn error_response(status: StatusCode, message: &str, recorder: Recorder) -> Response<ProxyBody> {
    let mut rsp = Response::new(ProxyBody::Error {
        data: Some(Bytes::from(format!("weft-proxy: {message}\n"))),
        recorder: Some(recorder),
    });
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(message) {
        headers.insert(HeaderName::from_static("weft-proxy-error"), v);
    }
    rsp
}

/// Records a response's metrics once: latency at the headers, the outcome at the end.
struct Recorder {
    series: Arc<HttpSeries>,
    status: StatusCode,
    grpc_failure: bool,
}

impl Recorder {
    fn new(series: Arc<HttpSeries>, status: StatusCode, started: Instant) -> Self {
        series.observe_latency(status.as_u16(), started.elapsed().as_secs_f64() * 1000.0);
        Recorder {
            series,
            status,
            grpc_failure: false,
        }
    }

    fn observe_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = trailers.get("grpc-status") {
            self.grpc_failure = code.as_bytes() != b"0";
        }
    }

    fn finish(self, stream_failed: bool) {
        let failure = stream_failed || self.grpc_failure || self.status.is_server_error();
        self.series.count_response(self.status.as_u16(), failure);
    }
}

/// The response body: the upstream's, streamed, or a short error message.
enum ProxyBody {
    Proxied {
        inner: Incoming,
        recorder: Option<Recorder>,
        /// The upstream HTTP/1 connection, returned to its pool when the body ends.
        checkout: Option<Checkout>,
    },
    Error {
        data: Option<Bytes>,
        recorder: Option<Recorder>,
    },
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Proxied {
                inner,
                recorder,
                checkout,
            } => {
                let polled = Pin::new(inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(trailers), Some(r)) = (frame.trailers_ref(), recorder.as_mut())
                        {
                            r.observe_trailers(trailers);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(r) = recorder.take() {
                            r.finish(true);
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(r) = recorder.take() {
                            r.finish(false);
                        }
                        if let Some(c) = checkout.take() {
                            c.release();
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
            ProxyBody::Error { data, recorder } => {
                if let Some(r) = recorder.take() {
                    r.finish(false);
                }
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Proxied { inner, .. } => inner.is_end_stream(),
            ProxyBody::Error { data, .. } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Proxied { inner, .. } => inner.size_hint(),
            ProxyBody::Error { data, .. } => {
                SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0))
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body nobody read to the end (HEAD, 204, a client that left) is recorded here.
        let recorder = match self {
            ProxyBody::Proxied {
                recorder,
                checkout,
                inner,
            } => {
                // An empty body hyper never polled (HEAD, 204, 304) still ended cleanly.
                if inner.is_end_stream() {
                    if let Some(c) = checkout.take() {
                        c.release();
                    }
                }
                recorder.take()
            }
            ProxyBody::Error { recorder, .. } => recorder.take(),
        };
        if let Some(r) = recorder {
            r.finish(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_table() {
        type Case = (Vec<(&'static str, &'static str)>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                vec![
                    ("connection", "keep-alive, x-secret"),
                    ("keep-alive", "timeout=5"),
                    ("x-secret", "1"),
                    ("host", "a"),
                ],
                vec!["host: a"],
            ),
            (
                vec![("te", "trailers"), ("content-type", "application/grpc")],
                vec!["content-type: application/grpc", "te: trailers"],
            ),
            (vec![("te", "gzip, trailers")], vec![]),
            (
                vec![
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "websocket"),
                    ("proxy-connection", "x"),
                    ("trailer", "grpc-status"),
                ],
                vec!["trailer: grpc-status"],
            ),
            (
                vec![("x-forwarded-for", "1.2.3.4")],
                vec!["x-forwarded-for: 1.2.3.4"],
            ),
            // Each one alone is enough to be looked at.
            (
                vec![("keep-alive", "timeout=5"), ("host", "a")],
                vec!["host: a"],
            ),
            (
                vec![("proxy-connection", "close"), ("host", "a")],
                vec!["host: a"],
            ),
            (vec![("te", "gzip")], vec![]),
        ];
        for (input, expected) in cases {
            let mut h = headers(&input);
            strip_hop_by_hop(&mut h);
            assert_eq!(names(&h), expected, "{input:?}");
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let ip: IpAddr = "198.18.0.7".parse().unwrap();
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, ip);
        assert_eq!(h["x-forwarded-for"], "198.18.0.7");
        let mut h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        append_forwarded_for(&mut h, ip);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.18.0.7");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "fd00::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "fd00::1");
    }

    #[test]
    fn upgrade_detection() {
        let req = |conn: &str, up: Option<&str>, v: Version| {
            let mut b = Request::builder().version(v).header("connection", conn);
            if let Some(u) = up {
                b = b.header("upgrade", u);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            upgrade_protocol(&req("Upgrade", Some("websocket"), Version::HTTP_11)).unwrap(),
            "websocket"
        );
        assert_eq!(
            upgrade_protocol(&req("keep-alive, upgrade", Some("h2c"), Version::HTTP_11)).unwrap(),
            "h2c"
        );
        assert!(
            upgrade_protocol(&req("keep-alive", Some("websocket"), Version::HTTP_11)).is_none()
        );
        assert!(upgrade_protocol(&req("upgrade", None, Version::HTTP_11)).is_none());
        assert!(upgrade_protocol(&req("upgrade", Some("websocket"), Version::HTTP_10)).is_none());
    }
}
