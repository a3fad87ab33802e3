//! The admin server (`:4191`): `/live`, `/ready`, `/metrics`, `/shutdown` and
//! `/proxy-log-level`.
//!
//! Routing is a plain function of (method, path, peer, state) so it is tested without
//! sockets; the listener below only moves bytes. `/shutdown` and `/proxy-log-level` answer
//! only loopback peers, and `/shutdown` only when `WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED=true`.

use crate::logging::LogHandle;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Largest body accepted by `PUT /proxy-log-level`.
const MAX_LOG_LEVEL_BODY: usize = 1024;

/// Readiness as the admin server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Shared, settable readiness.
#[derive(Debug, Clone, Default)]
pub struct ReadyState(Arc<AtomicU8>);

impl ReadyState {
    pub fn set(&self, r: Readiness) {
        self.0.store(r as u8, Ordering::SeqCst);
    }
    pub fn get(&self) -> Readiness {
        match self.0.load(Ordering::SeqCst) {
            1 => Readiness::Ready,
            2 => Readiness::Draining,
            _ => Readiness::Starting,
        }
    }
}

/// Asks the app to shut down gracefully.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle(Arc<Notify>);

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.0.notify_one();
    }
    pub async fn requested(&self) {
        self.0.notified().await
    }
}

/// Everything the admin endpoints read or change.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: ReadyState,
    pub shutdown: ShutdownHandle,
    pub shutdown_enabled: bool,
    pub log: Option<LogHandle>,
}

/// The answer to an admin request, before it becomes an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Respond(StatusCode, String),
    Metrics,
    Shutdown,
    GetLogLevel,
    SetLogLevel,
}

/// Decides what a request gets, from its method, path and peer only.
pub fn route(method: &Method, path: &str, peer: SocketAddr, state: &AdminState) -> Action {
    let loopback = peer.ip().is_loopback()
        || matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    let text = |s: StatusCode, t: &str| Action::Respond(s, format!("{t}\n"));
    match (path, method) {
        ("/live", &Method::GET) => text(StatusCode::OK, "live"),
        ("/ready", &Method::GET) => match state.ready.get() {
            Readiness::Ready => text(StatusCode::OK, "ready"),
            Readiness::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            Readiness::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining"),
        },
        ("/metrics", &Method::GET) => Action::Metrics,
        ("/shutdown", &Method::POST) if !state.shutdown_enabled => {
            text(StatusCode::NOT_FOUND, "shutdown endpoint is not enabled")
        }
        ("/shutdown", &Method::POST) if !loopback => text(
            StatusCode::FORBIDDEN,
            "shutdown is only allowed from loopback",
        ),
        ("/shutdown", &Method::POST) => Action::Shutdown,
        ("/proxy-log-level", _) if !loopback => text(
            StatusCode::FORBIDDEN,
            "log level is only available from loopback",
        ),
        ("/proxy-log-level", _) if state.log.is_none() => text(
            StatusCode::NOT_FOUND,
            "log level is not managed by this process",
        ),
        ("/proxy-log-level", &Method::GET) => Action::GetLogLevel,
        ("/proxy-log-level", &Method::PUT) => Action::SetLogLevel,
        ("/live" | "/ready" | "/metrics" | "/shutdown" | "/proxy-log-level", _) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: AdminState,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let action = route(req.method(), req.uri().path(), peer, &state);
    let (status, body, content_type) = match action {
        Action::Respond(status, body) => (status, body, "text/plain; charset=utf-8"),
        Action::Metrics => (
            StatusCode::OK,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Action::Shutdown => {
            tracing::info!(%peer, "shutdown requested through the admin endpoint");
            state.shutdown.trigger();
            (
                StatusCode::OK,
                "shutdown\n".into(),
                "text/plain; charset=utf-8",
            )
        }
        Action::GetLogLevel => {
            let level = state.log.as_ref().map(|l| l.current()).unwrap_or_default();
            (
                StatusCode::OK,
                format!("{level}\n"),
                "text/plain; charset=utf-8",
            )
        }
        Action::SetLogLevel => {
            let (status, body) = set_log_level(req, &state).await;
            (status, body, "text/plain; charset=utf-8")
        }
    };
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        rsp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(rsp)
}

async fn set_log_level(req: Request<Incoming>, state: &AdminState) -> (StatusCode, String) {
    let body = match Limited::new(req.into_body(), MAX_LOG_LEVEL_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("could not read body: {e}\n"),
            )
        }
    };
    let Ok(level) = std::str::from_utf8(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "log level must be UTF-8 text\n".into(),
        );
    };
    let Some(log) = &state.log else {
        return (
            StatusCode::NOT_FOUND,
            "log level is not managed by this process\n".into(),
        );
    };
    match log.set(level) {
        Ok(()) => {
            tracing::info!(level = level.trim(), "log level changed");
            (StatusCode::OK, format!("{}\n", level.trim()))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// The admin listener.
pub struct Admin {
    listener: TcpListener,
    state: AdminState,
}

impl Admin {
    pub fn new(addr: SocketAddr, state: AdminState) -> io::Result<Self> {
        Ok(Admin {
            listener: crate::listen::bind(addr)?,
            state,
        })
    }

    pub fn address(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped; admin requests never hold up a drain.
    pub async fn run(self) {
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = self.state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, peer, state.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(socket), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "admin connection error: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(shutdown_enabled: bool, log: bool) -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new(10)),
            ready: ReadyState::default(),
            shutdown: ShutdownHandle::default(),
            shutdown_enabled,
            log: if log {
                // The layer is dropped: only routing is tested here.
                LogHandle::new("info").ok().map(|(h, _)| h)
            } else {
                None
            },
        }
    }

    #[test]
    fn routing_table() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "198.18.0.9:5000".parse().unwrap();
        let on = state(true, true);
        let off = state(false, false);
        let r = |s: StatusCode, t: &str| Action::Respond(s, format!("{t}\n"));
        let cases = [
            (
                Method::GET,
                "/live",
                remote,
                &off,
                r(StatusCode::OK, "live"),
            ),
            (
                Method::GET,
                "/ready",
                remote,
                &off,
                r(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            ),
            (Method::GET, "/metrics", remote, &off, Action::Metrics),
            (
                Method::POST,
                "/shutdown",
                lo,
                &off,
                r(StatusCode::NOT_FOUND, "shutdown endpoint is not enabled"),
            ),
            (
                Method::POST,
                "/shutdown",
                remote,
                &on,
                r(
                    StatusCode::FORBIDDEN,
                    "shutdown is only allowed from loopback",
                ),
            ),
            (Method::POST, "/shutdown", lo, &on, Action::Shutdown),
            (Method::POST, "/shutdown", lo6, &on, Action::Shutdown),
            (Method::POST, "/shutdown", mapped, &on, Action::Shutdown),
            (
                Method::GET,
                "/shutdown",
                lo,
                &on,
                r(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ),
            (
                Method::GET,
                "/proxy-log-level",
                lo,
                &on,
                Action::GetLogLevel,
            ),
            (
                Method::PUT,
                "/proxy-log-level",
                lo,
                &on,
                Action::SetLogLevel,
            ),
            (
                Method::PUT,
                "/proxy-log-level",
                remote,
                &on,
                r(
                    StatusCode::FORBIDDEN,
                    "log level is only available from loopback",
                ),
            ),
            (
                Method::POST,
                "/proxy-log-level",
                lo,
                &on,
                r(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ),
            (
                Method::GET,
                "/proxy-log-level",
                lo,
                &off,
                r(
                    StatusCode::NOT_FOUND,
                    "log level is not managed by this process",
                ),
            ),
            (
                Method::GET,
                "/nope",
                lo,
                &on,
                r(StatusCode::NOT_FOUND, "not found"),
            ),
        ];
        for (method, path, peer, st, expected) in cases {
            assert_eq!(
                route(&method, path, peer, st),
                expected,
                "{method} {path} from {peer}"
            );
        }
    }

    #[test]
    fn readiness_states() {
        let st = state(false, false);
        let remote: SocketAddr = "198.18.0.9:5000".parse().unwrap();
        st.ready.set(Readiness::Ready);
        assert_eq!(
            route(&Method::GET, "/ready", remote, &st),
            Action::Respond(StatusCode::OK, "ready\n".into())
        );
        st.ready.set(Readiness::Draining);
        assert_eq!(
            route(&Method::GET, "/ready", remote, &st),
            Action::Respond(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        );
    }
}
