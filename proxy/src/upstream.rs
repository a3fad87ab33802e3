//! The server side of HTTP forwarding: connections to targets, reused across requests, and
//! for Services the balancing, retries and timeouts.
//!
//! [`Pool`] keeps upstream HTTP connections to one target: one multiplexed HTTP/2
//! connection, or idle HTTP/1 connections that come back to the pool when a response body
//! has been read to its end. [`Upstream`] sends a request either to the route's single
//! target or, for a Service, to an endpoint chosen per request by the [`Balancer`], retrying
//! idempotent requests within the route's policy and budget.

use crate::balance::{Balancer, EndpointState};
use crate::detect::Protocol;
use crate::proxy::{connect_route, ProxyError, Shared};
use crate::retry::{self, Attempt};
use crate::route::Route;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1 as client1, http2 as client2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A response from upstream.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<Incoming>,
    /// The HTTP/1 connection to give back to its pool once the body has been read.
    pub checkout: Option<Checkout>,
    /// The Service endpoint that answered, when it was reached over mTLS: the metrics name
    /// the identity it verified ([`EndpointState::server_tls`]).
    pub meshed_endpoint: Option<Arc<EndpointState>>,
}

impl Forwarded {
    fn new((response, checkout): (Response<Incoming>, Option<Checkout>)) -> Self {
        Forwarded {
            response,
            checkout,
            meshed_endpoint: None,
        }
    }
}

/// Idle HTTP/1 connections kept per target: enough for every concurrent client connection
/// of a busy pod, so connections (and their mTLS handshakes) are reused, not churned.
const MAX_IDLE_HTTP1: usize = 256;

/// A request body: the client's, streamed, or a buffered copy that can be sent again.
#[derive(Debug)]
pub enum ReqBody {
    Streaming(Incoming),
    Buffered(Option<Bytes>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Streaming(b) => b.is_end_stream(),
            ReqBody::Buffered(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Streaming(b) => b.size_hint(),
            ReqBody::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

type H1 = client1::SendRequest<ReqBody>;
type H2 = client2::SendRequest<ReqBody>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A response, the connection to give back when it has been read, and the time from
/// sending the request to its response headers.
pub type Sent = (Response<Incoming>, Option<Checkout>, Duration);

/// Upstream connections to one target.
#[derive(Debug, Default)]
pub struct Pool {
    idle_http1: Mutex<Vec<H1>>,
    http2: tokio::sync::Mutex<Option<H2>>,
}

/// Gives an HTTP/1 connection back to its pool once the response has been read.
#[derive(Debug)]
pub struct Checkout {
    pool: Arc<Pool>,
    sender: Option<H1>,
}

impl Checkout {
    /// The response ended cleanly: the connection can serve another request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            if !sender.is_closed() {
                let mut idle = lock(&self.pool.idle_http1);
                if idle.len() < MAX_IDLE_HTTP1 {
                    idle.push(sender);
                }
            }
        }
    }
}

impl Pool {
    /// Sends `req` to `route`'s target over a pooled or new connection.
    pub async fn send(
        self: &Arc<Self>,
        shared: &Shared,
        route: &Route,
        protocol: Protocol,
        req: Request<ReqBody>,
        upgrade: bool,
    ) -> Result<Sent, ProxyError> {
        match protocol {
            Protocol::Http2 => {
                let mut sender = {
                    let mut slot = self.http2.lock().await;
                    match slot.as_ref() {
                        Some(s) if !s.is_closed() => s.clone(),
                        _ => {
                            let s = connect_http2(shared, route).await?;
                            *slot = Some(s.clone());
                            s
                        }
                    }
                };
                sender.ready().await?;
                let sent = Instant::now();
                let rsp = sender.send_request(req).await?;
                Ok((rsp, None, sent.elapsed()))
            }
            _ => {
                let mut sender = loop {
                    let idle = lock(&self.idle_http1).pop();
                    match idle {
                        Some(mut s) if !s.is_closed() => {
                            if s.ready().await.is_ok() {
                                break s;
                            }
                        }
                        Some(_) => continue,
                        None => break connect_http1(shared, route).await?,
                    }
                };
                let sent = Instant::now();
                let rsp = sender.send_request(req).await?;
                let rtt = sent.elapsed();
                // An upgraded connection is the tunnel's now; never reuse it.
                let checkout = (!upgrade).then(|| Checkout {
                    pool: self.clone(),
                    sender: Some(sender),
                });
                Ok((rsp, checkout, rtt))
            }
        }
    }
}

async fn connect_http1(shared: &Shared, route: &Route) -> Result<H1, ProxyError> {
    let io = connect_route(shared, route, Protocol::Http1).await?;
    let (sender, conn) = client1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream HTTP/1 connection ended: {e}");
        }
    });
    Ok(sender)
}

async fn connect_http2(shared: &Shared, route: &Route) -> Result<H2, ProxyError> {
    let io = connect_route(shared, route, Protocol::Http2).await?;
    let (sender, conn) = client2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}

/// Where a connection's requests go.
pub enum Upstream {
    /// Everything to one target (a pod, or an address discovery does not know).
    Single {
        shared: Arc<Shared>,
        route: Route,
        protocol: Protocol,
        pool: Arc<Pool>,
    },
    /// A Service: an endpoint per request.
    Balanced {
        shared: Arc<Shared>,
        balancer: Arc<Balancer>,
        protocol: Protocol,
    },
}

impl Upstream {
    pub fn new(shared: Arc<Shared>, route: Route, protocol: Protocol) -> Self {
        match route.balancer.clone() {
            Some(b) => Upstream::Balanced {
                shared,
                balancer: b.0,
                protocol,
            },
            None => Upstream::Single {
                shared,
                route,
                protocol,
                pool: Arc::default(),
            },
        }
    }

    pub async fn send(
        &self,
        req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Forwarded, ProxyError> {
        match self {
            Upstream::Single {
                shared,
                route,
                protocol,
                pool,
            } => {
                let (rsp, checkout, _) = pool
                    .send(
                        shared,
                        route,
                        *protocol,
                        req.map(ReqBody::Streaming),
                        upgrade,
                    )
                    .await?;
                Ok(Forwarded::new((rsp, checkout)))
            }
            Upstream::Balanced {
                shared,
                balancer,
                protocol,
            } => {
                let config = balancer.route();
                let attempts =
                    send_balanced(shared, balancer, *protocol, req, upgrade, &config.retry_on);
                match config.timeout_ms.map(Duration::from_millis) {
                    Some(t) => tokio::time::timeout(t, attempts)
                        .await
                        .unwrap_or(Err(ProxyError::RequestTimeout(t))),
                    None => attempts.await,
                }
            }
        }
    }
}

/// Sends to balanced endpoints, retrying when the route and budget allow.
async fn send_balanced(
    shared: &Arc<Shared>,
    balancer: &Arc<Balancer>,
    protocol: Protocol,
    req: Request<Incoming>,
    upgrade: bool,
    retry_on: &[weft_api::destination::RetryOn],
) -> Result<Forwarded, ProxyError> {
    let has_identity = shared.tls.is_some();
    if let Ok(mut b) = balancer.budget.lock() {
        b.record_request(Instant::now());
    }
    let body_upper = req.body().size_hint().upper();
    if upgrade || !retry::retryable(retry_on, req.method(), body_upper) {
        let ep = balancer
            .pick_request(&[])
            .ok_or_else(|| ProxyError::NoEndpoints(balancer.name.clone()))?;
        return attempt(
            shared,
            &ep,
            protocol,
            req.map(ReqBody::Streaming),
            upgrade,
            has_identity,
        )
        .await;
    }

    // Buffer the (small) body so it can be sent again.
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, retry::MAX_RETRY_BODY as usize)
        .collect()
        .await
        .map_err(|e| ProxyError::Body(e.to_string()))?
        .to_bytes();
    let mut last_err = None;
    let mut tried = Vec::with_capacity(retry::MAX_ATTEMPTS);
    for n in 0..retry::MAX_ATTEMPTS {
        let ep = balancer
            .pick_request(&tried)
            .ok_or_else(|| ProxyError::NoEndpoints(balancer.name.clone()))?;
        tried.push(ep.endpoint.addr);
        let mut req = Request::from_parts(parts.clone(), ReqBody::Buffered(Some(bytes.clone())));
        *req.extensions_mut() = http::Extensions::new();
        let last = n + 1 == retry::MAX_ATTEMPTS;
        let outcome = attempt(shared, &ep, protocol, req, false, has_identity).await;
        let observed = match &outcome {
            Ok(f) => Attempt::Status(f.response.status().as_u16()),
            Err(_) => Attempt::ConnectFailed,
        };
        let retry = !last
            && retry::should_retry(retry_on, observed)
            && balancer
                .budget
                .lock()
                .map(|mut b| b.try_retry(Instant::now()))
                .unwrap_or(false);
        if !retry {
            return match outcome {
                Ok(ok) => Ok(ok),
                Err(e) => Err(last_err.unwrap_or(e)),
            };
        }
        tracing::debug!(service = %balancer.name, endpoint = %ep.endpoint.addr, ?observed, "retrying");
        if let Err(e) = outcome {
            last_err = Some(e);
        }
    }
    Err(last_err.unwrap_or_else(|| ProxyError::NoEndpoints(balancer.name.clone())))
}

/// One request to one endpoint, with its latency and outcome recorded for balancing.
async fn attempt(
    shared: &Shared,
    ep: &Arc<EndpointState>,
    protocol: Protocol,
    req: Request<ReqBody>,
    upgrade: bool,
    has_identity: bool,
) -> Result<Forwarded, ProxyError> {
    let pending = ep.start_request();
    let route = ep.route(has_identity);
    match ep.pool.send(shared, route, protocol, req, upgrade).await {
        Ok((response, checkout, rtt)) => {
            pending.responded(rtt);
            ep.record(!response.status().is_server_error());
            Ok(Forwarded {
                response,
                checkout,
                meshed_endpoint: route.tls.is_some().then(|| ep.clone()),
            })
        }
        Err(e) => {
            ep.record(false);
            Err(e)
        }
    }
}
