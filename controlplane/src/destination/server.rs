//! `GET /weft.destination.v1/get?addr=IP:PORT` (or `?authority=NAME.NAMESPACE[.svc…]:PORT`,
//! a Service by name): one destination stream.
//!
//! The request is checked first ([`parse_query`]); anything malformed is answered at once
//! with `400 {"error": "…"}`, never with a stream that hangs. A good request subscribes to
//! the discovery index (sharing the address's watch channel with every other proxy asking
//! about it) and answers `200` with a body that stays open: one JSON [`Update`] per line,
//! first a [`Update::Snapshot`], then whatever [`diff`] says turns the last state sent into
//! the new one. An address the index does not know gets a `kind: unknown` snapshot and
//! keeps streaming, because it may become known later.
//!
//! Each stream is one small task that owns the watch receiver and writes lines into a
//! channel the response body reads ([`LineBody`]). The task ends, and the body with it,
//! when the proxy goes away (the body is dropped), or when the controller shuts down: the
//! body then ends cleanly and HTTP/2's graceful shutdown can finish.

use super::metrics::{DestinationMetrics, StreamGuard};
use crate::discovery::index::{SharedIndex, Target};
use crate::discovery::model::ObjectKey;
use crate::shutdown::ShutdownSignal;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};
use weft_api::destination::{diff, Snapshot, Update, DESTINATION_PATH};
use weft_api::identity::is_dns_label;

/// Lines buffered per stream before the writer waits for the proxy to read. The watch
/// channel coalesces changes meanwhile, so a slow reader gets fewer, larger diffs.
pub const STREAM_BUFFER: usize = 16;

/// The body type of every answer on the proxy API.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// Why a destination request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{DESTINATION_PATH} takes GET")]
    Method,
    #[error("missing the addr parameter: ask GET {DESTINATION_PATH}?addr=IP:PORT (or ?authority=NAME.NAMESPACE.svc.cluster.local:PORT)")]
    MissingAddr,
    #[error("the addr parameter is given more than once")]
    RepeatedAddr,
    #[error("give addr or authority, not both")]
    AddrAndAuthority,
    #[error("authority {0:?} is not NAME.NAMESPACE[.svc[.CLUSTER-DOMAIN]]:PORT with DNS-1123 labels (such as web.apps.svc.cluster.local:80)")]
    BadAuthority(String),
    #[error("addr {0:?} is not an IP:PORT address (such as 10.43.0.10:80 or [fd00::a]:80)")]
    BadAddr(String),
    #[error("addr {0}: port 0 is not a destination")]
    PortZero(SocketAddr),
}

/// What a query asks about: `addr` or `authority`. Other parameters are ignored, so that
/// newer proxies can add some.
pub fn parse_query(query: Option<&str>) -> Result<Target, RequestError> {
    let mut found: Option<&str> = None;
    let mut authority: Option<&str> = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "addr" => &mut found,
            "authority" => &mut authority,
            _ => continue,
        };
        if slot.is_some() {
            return Err(RequestError::RepeatedAddr);
        }
        *slot = Some(value);
    }
    match (found, authority) {
        (Some(_), Some(_)) => Err(RequestError::AddrAndAuthority),
        (None, Some(raw)) => parse_authority(raw),
        (Some(raw), None) => parse_addr(raw).map(Target::Addr),
        (None, None) => Err(RequestError::MissingAddr),
    }
}

/// `web.apps:80`, `web.apps.svc:80`, `web.apps.svc.cluster.local:80` → Service `apps/web`,
/// port 80.
fn parse_authority(raw: &str) -> Result<Target, RequestError> {
    let bad = || RequestError::BadAuthority(raw.to_string());
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    let (host, port) = decoded.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let mut labels = host.split('.');
    let (Some(name), Some(namespace)) = (labels.next(), labels.next()) else {
        return Err(bad());
    };
    let rest: Vec<&str> = labels.collect();
    if !is_dns_label(name)
        || !is_dns_label(namespace)
        || !(rest.is_empty() || rest[0] == "svc")
        || !rest.iter().all(|l| is_dns_label(l))
    {
        return Err(bad());
    }
    Ok(Target::Authority {
        service: ObjectKey::new(namespace, name),
        port,
    })
}

fn parse_addr(raw: &str) -> Result<SocketAddr, RequestError> {
    let decoded = percent_decode(raw).ok_or_else(|| RequestError::BadAddr(raw.to_string()))?;
    let addr: SocketAddr = decoded
        .parse()
        .map_err(|_| RequestError::BadAddr(decoded.clone()))?;
    if addr.port() == 0 {
        return Err(RequestError::PortZero(addr));
    }
    Ok(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// `%5B` → `[`; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Answers destination requests.
#[derive(Debug, Clone)]
pub struct DestinationService {
    pub index: SharedIndex,
    pub metrics: Arc<DestinationMetrics>,
    /// Ends every stream when the controller shuts down.
    pub shutdown: ShutdownSignal,
}

impl DestinationService {
    /// One request on [`DESTINATION_PATH`].
    pub fn handle(&self, method: &Method, uri: &Uri, peer: SocketAddr) -> Response<ApiBody> {
        let target = if method == Method::GET {
            parse_query(uri.query())
        } else {
            Err(RequestError::Method)
        };
        match target {
            Ok(target) => self.open_stream(target, peer),
            Err(e) => {
                self.metrics.bad_request();
                debug!(%peer, query = ?uri.query(), "refused destination request: {e}");
                let status = if e == RequestError::Method {
                    StatusCode::METHOD_NOT_ALLOWED
                } else {
                    StatusCode::BAD_REQUEST
                };
                let mut rsp = error_response(status, e.to_string());
                if e == RequestError::Method {
                    rsp.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET"));
                }
                rsp
            }
        }
    }

    fn open_stream(&self, target: Target, peer: SocketAddr) -> Response<ApiBody> {
        let rx = self.index.lock().subscribe_target(target.clone());
        let (tx, lines) = mpsc::channel(STREAM_BUFFER);
        let guard = self.metrics.stream_opened();
        debug!(%peer, %target, "destination stream opened");
        tokio::spawn(stream_updates(
            Stream {
                target,
                peer,
                index: self.index.clone(),
                metrics: self.metrics.clone(),
                _guard: guard,
            },
            rx,
            tx,
            self.shutdown.clone(),
        ));
        let mut rsp = Response::new(LineBody::new(lines).boxed());
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        rsp
    }
}

/// What a stream task holds besides its channels.
struct Stream {
    target: Target,
    peer: SocketAddr,
    index: SharedIndex,
    metrics: Arc<DestinationMetrics>,
    _guard: StreamGuard,
}

/// Writes the snapshot, then diffs, until the proxy leaves or the controller stops.
async fn stream_updates(
    stream: Stream,
    mut rx: watch::Receiver<Snapshot>,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: ShutdownSignal,
) {
    let mut last = rx.borrow_and_update().clone();
    let mut ended = send(&tx, &Update::Snapshot(last.clone()), &stream, &mut shutdown).await;
    while ended.is_none() {
        tokio::select! {
            _ = shutdown.wait() => ended = Some("the controller is shutting down"),
            _ = tx.closed() => ended = Some("the proxy went away"),
            changed = rx.changed() => {
                if changed.is_err() {
                    ended = Some("the index is gone");
                    break;
                }
                let next = rx.borrow_and_update().clone();
                for update in diff(&last, &next) {
                    ended = send(&tx, &update, &stream, &mut shutdown).await;
                    if ended.is_some() {
                        break;
                    }
                }
                last = next;
            }
        }
    }
    drop(rx);
    stream.index.lock().forget_unwatched();
    debug!(
        peer = %stream.peer,
        target = %stream.target,
        "destination stream ended: {}",
        ended.unwrap_or("")
    );
}

/// Sends one line; `Some(reason)` when the stream must end.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    update: &Update,
    stream: &Stream,
    shutdown: &mut ShutdownSignal,
) -> Option<&'static str> {
    let mut line = match serde_json::to_vec(update) {
        Ok(line) => line,
        Err(e) => {
            warn!(target = %stream.target, "cannot encode a destination update: {e}");
            return Some("an update could not be encoded");
        }
    };
    line.push(b'\n');
    tokio::select! {
        sent = tx.send(Bytes::from(line)) => match sent {
            Ok(()) => {
                stream.metrics.sent(update);
                None
            }
            Err(_) => Some("the proxy went away"),
        },
        _ = shutdown.wait() => Some("the controller is shutting down"),
    }
}

/// A response body made of the lines a stream task sends; it ends when the task does.
#[derive(Debug)]
pub struct LineBody {
    lines: mpsc::Receiver<Bytes>,
}

impl LineBody {
    /// A body of the lines `lines` receives.
    pub fn new(lines: mpsc::Receiver<Bytes>) -> Self {
        Self { lines }
    }
}

impl Body for LineBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.lines
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// `{"error": "…"}` with `status`.
pub fn error_response(status: StatusCode, error: String) -> Response<ApiBody> {
    crate::json_http::error_response(status, error).map(BodyExt::boxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::index::tests::{config, service, workload};
    use crate::discovery::index::Index;
    use crate::shutdown::Shutdown;
    use std::time::Duration;

    #[test]
    fn queries() {
        let cases: &[(Option<&str>, Result<&str, RequestError>)] = &[
            (Some("addr=10.43.0.10:80"), Ok("10.43.0.10:80")),
            (Some("addr=[fd00::a]:80"), Ok("[fd00::a]:80")),
            (Some("addr=%5Bfd00%3A%3Aa%5D%3A80"), Ok("[fd00::a]:80")),
            (Some("addr=[::ffff:10.0.0.1]:80"), Ok("10.0.0.1:80")),
            (Some("v=2&addr=10.0.0.1:80&x"), Ok("10.0.0.1:80")),
            (None, Err(RequestError::MissingAddr)),
            (Some(""), Err(RequestError::MissingAddr)),
            (Some("address=10.0.0.1:80"), Err(RequestError::MissingAddr)),
            (
                Some("addr=nonsense"),
                Err(RequestError::BadAddr("nonsense".into())),
            ),
            (Some("addr="), Err(RequestError::BadAddr(String::new()))),
            (
                Some("addr=10.0.0.1"),
                Err(RequestError::BadAddr("10.0.0.1".into())),
            ),
            (
                Some("addr=web.apps:80"),
                Err(RequestError::BadAddr("web.apps:80".into())),
            ),
            (Some("addr=%zz"), Err(RequestError::BadAddr("%zz".into()))),
            (Some("addr=%"), Err(RequestError::BadAddr("%".into()))),
            (
                Some("addr=10.0.0.1:0"),
                Err(RequestError::PortZero("10.0.0.1:0".parse().unwrap())),
            ),
            (
                Some("addr=10.0.0.1:80&addr=10.0.0.2:80"),
                Err(RequestError::RepeatedAddr),
            ),
        ];
        for (query, want) in cases {
            let got = parse_query(*query);
            let want = want
                .clone()
                .map(|a| Target::Addr(a.parse::<SocketAddr>().unwrap()));
            assert_eq!(got, want, "{query:?}");
        }
        // Authorities: a Service by name.
        let web80 = |ns: &str| {
            Ok(Target::Authority {
                service: ObjectKey::new(ns, "web"),
                port: 80,
            })
        };
        let bad = |a: &str| Err(RequestError::BadAuthority(a.into()));
        let cases: Vec<(&str, Result<Target, RequestError>)> = vec![
            ("authority=web.apps:80", web80("apps")),
            ("authority=web.apps.svc:80", web80("apps")),
            ("authority=web.apps.svc.cluster.local:80", web80("apps")),
            ("authority=web.apps.svc.cluster.local.:80", web80("apps")),
            ("authority=Web.Apps.svc.edge.lan:80", web80("apps")),
            ("authority=web.apps.svc.cluster.local%3A80", web80("apps")),
            ("authority=web:80", bad("web:80")),
            ("authority=web.apps", bad("web.apps")),
            ("authority=web.apps:0", bad("web.apps:0")),
            ("authority=web.apps:99999", bad("web.apps:99999")),
            (
                "authority=web.apps.cluster.local:80",
                bad("web.apps.cluster.local:80"),
            ),
            ("authority=web_1.apps:80", bad("web_1.apps:80")),
            ("authority=-web.apps:80", bad("-web.apps:80")),
            ("authority=web..apps:80", bad("web..apps:80")),
            ("authority=%zz", bad("%zz")),
            (
                "authority=web.apps:80&addr=10.0.0.1:80",
                Err(RequestError::AddrAndAuthority),
            ),
            (
                "authority=web.apps:80&authority=db.apps:80",
                Err(RequestError::RepeatedAddr),
            ),
        ];
        for (query, want) in cases {
            assert_eq!(parse_query(Some(query)), want, "{query}");
        }
        assert_eq!(
            RequestError::BadAddr("nonsense".into()).to_string(),
            "addr \"nonsense\" is not an IP:PORT address (such as 10.43.0.10:80 or [fd00::a]:80)"
        );
    }

    fn service_for(index: &SharedIndex, shutdown: &Shutdown) -> DestinationService {
        DestinationService {
            index: index.clone(),
            metrics: Arc::default(),
            shutdown: shutdown.signal(),
        }
    }

    async fn next_line(body: &mut ApiBody) -> Option<String> {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("a line within 2s")?;
        let data = frame.unwrap().into_data().unwrap();
        Some(String::from_utf8(data.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn streams_a_snapshot_then_diffs_then_ends_on_shutdown() {
        let index = SharedIndex::new(Index::new(config()));
        index
            .lock()
            .apply_service(service("apps", "web", &["198.19.0.10"], 80, 8080));
        let shutdown = Shutdown::new();
        let svc = service_for(&index, &shutdown);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let uri: Uri = "/weft.destination.v1/get?addr=198.19.0.10:80"
            .parse()
            .unwrap();
        let rsp = svc.handle(&Method::GET, &uri, peer);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
        let mut body = rsp.into_body();
        assert_eq!(
            next_line(&mut body).await.unwrap(),
            "{\"type\":\"snapshot\",\"kind\":\"service\",\"service\":\"web.apps\",\"endpoints\":[],\"route\":{}}\n"
        );
        index
            .lock()
            .apply_workload(workload("apps", "web-1", &["198.18.0.1"], "web"));
        assert_eq!(
            next_line(&mut body).await.unwrap(),
            "{\"type\":\"add\",\"endpoints\":[{\"addr\":\"198.18.0.1:8080\",\"weight\":1,\"identity\":\"web.apps.serviceaccount.identity.weft.cluster.local\",\"inboundPort\":4143,\"labels\":{\"deployment\":\"web\",\"namespace\":\"apps\",\"pod\":\"web-1\",\"serviceaccount\":\"web\"}}]}\n"
        );
        assert_eq!(svc.metrics.streams_active(), 1);
        assert_eq!(index.lock().watched(), 1);
        shutdown.trigger();
        assert_eq!(next_line(&mut body).await, None, "the body ends");
        // The task released its subscription and its gauge.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(svc.metrics.streams_active(), 0);
        assert_eq!(index.lock().watched(), 0);
    }

    #[tokio::test]
    async fn a_proxy_going_away_releases_the_subscription() {
        let index = SharedIndex::new(Index::new(config()));
        let shutdown = Shutdown::new();
        let svc = service_for(&index, &shutdown);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let uri: Uri = "/weft.destination.v1/get?addr=198.18.7.7:80"
            .parse()
            .unwrap();
        let mut a = svc.handle(&Method::GET, &uri, peer).into_body();
        let b = svc.handle(&Method::GET, &uri, peer).into_body();
        assert_eq!(
            next_line(&mut a).await.unwrap(),
            "{\"type\":\"snapshot\",\"kind\":\"unknown\",\"endpoints\":[],\"route\":{}}\n"
        );
        assert_eq!(index.lock().watched(), 1, "two streams share one address");
        assert_eq!(svc.metrics.streams_active(), 2);
        drop(a);
        drop(b);
        // The tasks notice the bodies are gone and end.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(svc.metrics.streams_active(), 0);
        assert_eq!(index.lock().watched(), 0);
    }

    #[tokio::test]
    async fn bad_requests_are_answered_at_once() {
        let index = SharedIndex::new(Index::new(config()));
        let shutdown = Shutdown::new();
        let svc = service_for(&index, &shutdown);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (Method::GET, "/weft.destination.v1/get?addr=nonsense", 400, "addr \"nonsense\" is not an IP:PORT address (such as 10.43.0.10:80 or [fd00::a]:80)"),
            (Method::GET, "/weft.destination.v1/get", 400, "missing the addr parameter: ask GET /weft.destination.v1/get?addr=IP:PORT (or ?authority=NAME.NAMESPACE.svc.cluster.local:PORT)"),
            (Method::POST, "/weft.destination.v1/get?addr=10.0.0.1:80", 405, "/weft.destination.v1/get takes GET"),
        ];
        for (method, uri, status, error) in cases {
            let rsp = svc.handle(&method, &uri.parse().unwrap(), peer);
            assert_eq!(rsp.status().as_u16(), status, "{uri}");
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            let err: weft_api::certify::ErrorResponse = serde_json::from_slice(&body).unwrap();
            assert_eq!(err.error, error, "{uri}");
        }
        assert_eq!(index.lock().watched(), 0);
        assert_eq!(svc.metrics.streams_total(), 0);
    }
}
