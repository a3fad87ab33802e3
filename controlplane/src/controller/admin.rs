//! The controller's admin server (plain HTTP/1, off unless `--admin-addr` is given):
//! `/live`, `/ready` and `/metrics`, for probes and Prometheus.

use crate::destination::metrics::DestinationMetrics;
use crate::discovery::index::SharedIndex;
use crate::discovery::metrics::DiscoveryMetrics;
use crate::identity::metrics::IdentityMetrics;
use crate::shutdown::ShutdownSignal;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

/// Every part's metrics, rendered together on `/metrics`.
#[derive(Debug, Clone)]
pub struct AdminMetrics {
    pub identity: Arc<IdentityMetrics>,
    pub destination: Arc<DestinationMetrics>,
    pub discovery: Arc<DiscoveryMetrics>,
    pub index: SharedIndex,
    /// True once discovery has its first complete state (`/ready` waits for it).
    pub discovery_ready: tokio::sync::watch::Receiver<bool>,
}

impl AdminMetrics {
    /// All metrics, in Prometheus text format.
    pub fn render_to_string(&self) -> String {
        let mut out = self.identity.render_to_string();
        let _ = self.discovery.render(&self.index, &mut out);
        let _ = self.destination.render(&self.index, &mut out);
        out
    }
}

/// Binds and serves until shutdown. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<AdminMetrics>,
    mut shutdown: ShutdownSignal,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        let metrics = metrics.clone();
                        let mut shutdown = shutdown.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let metrics = metrics.clone();
                                async move { Ok::<_, Infallible>(handle(&req, &metrics)) }
                            });
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc);
                            tokio::pin!(conn);
                            tokio::select! {
                                r = conn.as_mut() => {
                                    if let Err(e) = r {
                                        debug!("admin: connection ended: {e}");
                                    }
                                }
                                _ = shutdown.wait() => {
                                    conn.as_mut().graceful_shutdown();
                                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                                }
                            }
                        });
                    }
                    Err(e) => {
                        warn!("admin: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        conns.abort_all();
    });
    Ok((bound, task))
}

/// Routes one admin request.
pub fn handle(req: &Request<Incoming>, metrics: &AdminMetrics) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), metrics)
}

fn route(method: &Method, path: &str, metrics: &AdminMetrics) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_string());
    }
    match path {
        "/live" => text(StatusCode::OK, "live\n".to_string()),
        "/ready" if *metrics.discovery_ready.borrow() => {
            text(StatusCode::OK, "ready\n".to_string())
        }
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: discovery has not synced yet\n".to_string(),
        ),
        "/metrics" => {
            let mut rsp = text(StatusCode::OK, metrics.render_to_string());
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            rsp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready or /metrics\n".to_string(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = AdminMetrics {
            identity: Arc::default(),
            destination: Arc::default(),
            discovery: Arc::default(),
            index: SharedIndex::new(crate::discovery::index::Index::new(
                crate::discovery::index::tests::config(),
            )),
            discovery_ready: tokio::sync::watch::channel(true).1,
        };
        m.identity.issued();
        let cases = [
            (Method::GET, "/live", 200, "live"),
            (Method::GET, "/ready", 200, "ready"),
            (
                Method::GET,
                "/metrics",
                200,
                "identity_certificates_issued_total 1",
            ),
            (
                Method::GET,
                "/metrics",
                200,
                "\ndestination_streams_active 0\n",
            ),
            (Method::GET, "/metrics", 200, "\ndiscovery_services 0\n"),
            (Method::GET, "/nope", 404, "not found"),
            (Method::POST, "/metrics", 405, "GET only"),
        ];
        for (method, path, status, body) in cases {
            let rsp = route(&method, path, &m);
            assert_eq!(rsp.status().as_u16(), status, "{method} {path}");
            let bytes = futures_body(rsp);
            assert!(bytes.contains(body), "{method} {path}: {bytes}");
        }
        // Until discovery has synced, not ready (but live).
        let syncing = AdminMetrics {
            discovery_ready: tokio::sync::watch::channel(false).1,
            ..m
        };
        let rsp = route(&Method::GET, "/ready", &syncing);
        assert_eq!(rsp.status().as_u16(), 503);
        assert_eq!(
            futures_body(rsp),
            "not ready: discovery has not synced yet\n"
        );
        assert_eq!(
            route(&Method::GET, "/live", &syncing).status().as_u16(),
            200
        );
    }

    fn futures_body(rsp: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(rsp.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
