//! The mutating admission webhook: HTTPS (rustls), `POST /inject-pods` with an
//! `admission.k8s.io/v1` AdmissionReview about a Pod, answered with the same uid,
//! `allowed: true` always (the mesh never blocks a pod), and a base64 JSON Patch when the
//! pod is injected — or when it is refused, recording why in `weft.dev/inject-skipped`.
//!
//! The namespace's annotations come from a [`NamespaceLookup`] (the controller backs it with
//! its namespace watcher; tests with a fixed map). The serving certificate is the caller's:
//! [`serve`] takes a ready `rustls::ServerConfig` (see [`server_config`]).
//!
//! Wiring (in the controller):
//!
//! ```ignore
//! let webhook = Arc::new(inject::webhook::Webhook::new(inject_config, namespaces));
//! let tls = inject::webhook::server_config(cert_chain, key)?;
//! let listener = tokio::net::TcpListener::bind(addr).await?;
//! let task = inject::webhook::serve(webhook, listener, tls, shutdown.signal(), grace);
//! ```

use super::decide::{decide, skipped_patch, Decision, PodInput, Skip};
use super::InjectConfig;
use crate::json_http::{error_response, json_response};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::shutdown::ShutdownSignal;

/// The path the MutatingWebhookConfiguration points at.
pub const INJECT_PATH: &str = "/inject-pods";
/// The API server sends whole pods; 3 MiB is its own request limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// A client that has not finished its TLS handshake in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`NamespaceLookup::annotations`] returns.
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BTreeMap<String, String>, String>> + Send + 'a>>;

/// Finds a namespace's annotations (the controller: from its watcher's cache).
pub trait NamespaceLookup: Send + Sync {
    /// The annotations of `namespace`; an unknown namespace has none. `Err` says why the
    /// answer is not known (the pod is then decided on its own annotations, with a warning).
    fn annotations<'a>(&'a self, namespace: &'a str) -> LookupFuture<'a>;
}

/// A fixed map, for tests and for clusters without a namespace watcher.
impl NamespaceLookup for BTreeMap<String, BTreeMap<String, String>> {
    fn annotations<'a>(&'a self, namespace: &'a str) -> LookupFuture<'a> {
        let found = self.get(namespace).cloned().unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }
}

/// A pod that asked for the mesh and was refused, for the controller to turn into an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub namespace: String,
    /// The pod's name, or its `generateName` prefix (pods from workloads have no name yet).
    pub pod: String,
    /// The controlling owner, as `(kind, name)`, e.g. `("ReplicaSet", "web-5d9c")`.
    pub owner: Option<(String, String)>,
    pub reason: String,
}

/// Called for every refusal; must not block.
pub type RefusalHook = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// A request the webhook cannot answer: 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("expected an admission.k8s.io/v1 AdmissionReview, got apiVersion {api_version:?} kind {kind:?}")]
    NotAdmissionReview { api_version: String, kind: String },
    #[error("the AdmissionReview has no request.uid")]
    NoUid,
    #[error("the AdmissionReview about a Pod has no request.object")]
    NoObject,
}

/// Why the server could not be set up.
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The webhook's state: the injector configuration and where namespaces come from.
pub struct Webhook {
    config: InjectConfig,
    namespaces: Arc<dyn NamespaceLookup>,
    on_refusal: Option<RefusalHook>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn new(config: InjectConfig, namespaces: Arc<dyn NamespaceLookup>) -> Self {
        Self {
            config,
            namespaces,
            on_refusal: None,
        }
    }

    /// Calls `hook` for every pod that asked for the mesh and was refused.
    pub fn on_refusal(mut self, hook: RefusalHook) -> Self {
        self.on_refusal = Some(hook);
        self
    }

    /// Answers one AdmissionReview (the body of `POST /inject-pods`).
    pub async fn review(&self, body: &[u8]) -> Result<Value, BadRequest> {
        let review: Value =
            serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))?;
        let text = |p: &str| review.pointer(p).and_then(Value::as_str).unwrap_or("");
        if text("/apiVersion") != "admission.k8s.io/v1" || text("/kind") != "AdmissionReview" {
            return Err(BadRequest::NotAdmissionReview {
                api_version: text("/apiVersion").to_string(),
                kind: text("/kind").to_string(),
            });
        }
        let uid = review
            .pointer("/request/uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or(BadRequest::NoUid)?;
        let mut response = json!({"uid": uid, "allowed": true});
        let is_pod = text("/request/kind/group").is_empty() && text("/request/kind/kind") == "Pod";
        let operation = text("/request/operation");
        if !is_pod || !(operation.is_empty() || operation == "CREATE") {
            debug!(
                uid,
                kind = text("/request/kind/kind"),
                operation,
                "not a pod creation; allowed"
            );
            return Ok(envelope(response));
        }
        let pod = review
            .pointer("/request/object")
            .filter(|o| o.is_object())
            .ok_or(BadRequest::NoObject)?;
        let namespace = [
            text("/request/namespace"),
            text("/request/object/metadata/namespace"),
        ]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or("default");
        let mut warnings = Vec::new();
        let ns_annotations = match self.namespaces.annotations(namespace).await {
            Ok(a) => a,
            Err(e) => {
                warn!(namespace, "cannot read the namespace's annotations: {e}");
                warnings.push(format!(
                    "weft: the annotations of namespace {namespace:?} could not be read ({e}); only the pod's own were considered"
                ));
                BTreeMap::new()
            }
        };
        let pod_name = pod_label(pod);
        let decision = decide(
            &PodInput {
                pod,
                template_annotations: None,
                namespace,
                namespace_annotations: &ns_annotations,
                workload_kind: None,
            },
            &self.config,
        );
        let patch = match decision {
            Decision::Inject { mode, patch } => {
                info!(namespace, pod = %pod_name, mode = mode.as_str(), "injected the proxy");
                Some(patch)
            }
            Decision::Leave { reason } if reason.is_refusal() => {
                warn!(namespace, pod = %pod_name, "not injected: {reason}");
                warnings.push(format!("weft: not injected: {reason}"));
                self.report(pod, namespace, &pod_name, &reason);
                Some(skipped_patch(pod, &reason))
            }
            Decision::Leave { reason } => {
                debug!(namespace, pod = %pod_name, "left alone: {reason}");
                None
            }
        };
        if let Some(patch) = patch {
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64(&bytes));
        }
        if !warnings.is_empty() {
            response["warnings"] = json!(warnings);
        }
        Ok(envelope(response))
    }

    fn report(&self, pod: &Value, namespace: &str, name: &str, reason: &Skip) {
        let Some(hook) = &self.on_refusal else { return };
        let owner = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            })
            .map(|r| {
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (s("kind"), s("name"))
            });
        hook(&Refusal {
            namespace: namespace.to_string(),
            pod: name.to_string(),
            owner,
            reason: reason.to_string(),
        });
    }
}

fn pod_label(pod: &Value) -> String {
    let s = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    s("/metadata/name")
        .map(str::to_string)
        .or_else(|| s("/metadata/generateName").map(|g| format!("{g}*")))
        .unwrap_or_else(|| "<unnamed>".to_string())
}

fn envelope(response: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Standard base64 with padding (RFC 4648 §4), as the AdmissionReview `patch` field wants.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

// === HTTP ===

/// One HTTP request.
pub async fn handle(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != INJECT_PATH {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no such path; the injector is POST {INJECT_PATH}"),
        );
    }
    if req.method() != Method::POST {
        let mut rsp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{INJECT_PATH} takes POST"),
        );
        rsp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return rsp;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body (at most {MAX_BODY_BYTES} bytes): {e}"),
            )
        }
    };
    match webhook.review(&body).await {
        Ok(review) => json_response(StatusCode::OK, &review),
        Err(e) => {
            warn!("injector: bad request: {e}");
            error_response(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// A TLS configuration for the webhook: TLS 1.2 and 1.3 (the API server speaks both), ALPN
/// `h2` and `http/1.1`, ring as everywhere in Weft. (The controller serves its own
/// renewed certificate instead: `controller/injector.rs`.)
#[cfg(test)]
pub fn server_config(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Serves the webhook on `listener` until `shutdown` fires, then lets requests in flight
/// finish for up to `grace`. HTTP/2 when ALPN says so, else HTTP/1.1.
pub fn serve(
    webhook: Arc<Webhook>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: ShutdownSignal,
    grace: Duration,
) -> JoinHandle<()> {
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        conns.spawn(connection(tcp, peer, acceptor.clone(), webhook.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        warn!("injector: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let drained =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            conns.abort_all();
        }
        info!("injector: stopped");
    })
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    webhook: Arc<Webhook>,
    mut shutdown: ShutdownSignal,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            info!(%peer, "injector: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            info!(%peer, "injector: TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let svc = hyper::service::service_fn(move |req| {
        let webhook = webhook.clone();
        async move { Ok::<_, Infallible>(handle(&webhook, req).await) }
    });
    let io = TokioIo::new(tls);
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => if let Err(e) = r { debug!(%peer, "injector: connection ended: {e}") },
            _ = shutdown.wait() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HANDSHAKE_TIMEOUT)
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => if let Err(e) = r { debug!(%peer, "injector: connection ended: {e}") },
            _ = shutdown.wait() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
        }
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
pub(crate) mod tests;
