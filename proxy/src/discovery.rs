//! Discovery: what an original destination is, asked of the controller's destination API
//! and cached.
//!
//! The first connection to an address subscribes (one HTTP/2 stream on one shared TLS
//! connection to the controller) and waits briefly for the first answer; later connections
//! read the cached answer. The subscription keeps the answer current for as long as the
//! address is in use; an address unused for [`IDLE_TIMEOUT`] is forgotten. When the
//! controller is unreachable the last answer stays in use and the subscription retries
//! with backoff, so working traffic never stops because the control plane restarted. An
//! address with no answer yet (controller down from the start) passes through as
//! addressed — for a Service that still works through kube-proxy.

use crate::balance::Balancer;
use crate::identity::backoff;
use crate::route::{Balanced, Known, MeshEndpoint};
use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use weft_api::destination::{self, Kind, Snapshot, Update, DESTINATION_PATH};

/// How long a first lookup waits for the controller before passing through, while the
/// controller is reachable (`WEFT_PROXY_DISCOVERY_TIMEOUT`). When the last attempt to reach
/// it failed, lookups do not wait at all.
pub const DEFAULT_FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Addresses unused this long are unsubscribed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest update line accepted.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot reach the controller at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with the controller failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP/2 with the controller failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the controller answered {0}")]
    Status(http::StatusCode),
    #[error("bad update from the controller: {0}")]
    Decode(String),
    #[error("the controller closed the stream")]
    Closed,
}

/// How to reach the controller.
#[derive(Debug, Clone)]
pub struct Controller {
    pub addr: String,
    pub name: String,
    pub tls: Arc<rustls::ClientConfig>,
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// What a subscription does with each new state of its address.
type Publish = Box<dyn Fn(&Snapshot, &Option<Arc<Balancer>>) + Send + Sync>;

struct Entry {
    answer: watch::Receiver<Option<Known>>,
    task: tokio::task::JoinHandle<()>,
    last_used: Instant,
}

/// The cache of destinations this proxy uses.
pub struct Discovery {
    controller: Controller,
    first_answer_timeout: Duration,
    /// False after the controller could not be reached, until it can again.
    reachable: std::sync::atomic::AtomicBool,
    conn: tokio::sync::Mutex<Option<Sender>>,
    entries: Mutex<HashMap<SocketAddr, Entry>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("controller", &self.controller.addr)
            .finish()
    }
}

impl Discovery {
    pub fn new(controller: Controller, first_answer_timeout: Duration) -> Arc<Self> {
        Arc::new(Discovery {
            controller,
            first_answer_timeout,
            reachable: std::sync::atomic::AtomicBool::new(true),
            conn: tokio::sync::Mutex::new(None),
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// What `addr` is, as far as the controller has said.
    pub async fn resolve(self: &Arc<Self>, addr: SocketAddr) -> Known {
        let mut rx = {
            let mut entries = self.entries();
            let entry = entries.entry(addr).or_insert_with(|| {
                let (tx, rx) = watch::channel(None);
                let publish: Publish = Box::new(move |snapshot, balancer| {
                    tx.send_replace(Some(known(snapshot, balancer)));
                });
                let task = tokio::spawn(self.clone().subscribe(addr, publish));
                Entry {
                    answer: rx,
                    task,
                    last_used: Instant::now(),
                }
            });
            entry.last_used = Instant::now();
            entry.answer.clone()
        };
        if let Some(known) = rx.borrow().clone() {
            return known;
        }
        let wait = if self.reachable.load(std::sync::atomic::Ordering::Relaxed) {
            self.first_answer_timeout
        } else {
            Duration::ZERO
        };
        let answered = tokio::time::timeout(wait, rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|answer| answer.clone()));
        answered.unwrap_or_else(|| {
            tracing::debug!(%addr, "no answer from the controller yet: pass through");
            Known::Unknown
        })
    }

    /// Forgets addresses unused for `idle`. Returns how many were dropped.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|_, e| {
            let keep = e.last_used.elapsed() < idle;
            if !keep {
                e.task.abort();
            }
            keep
        });
        before - entries.len()
    }

    pub fn cached(&self) -> usize {
        self.entries().len()
    }

    /// Evicts idle entries every minute, forever.
    pub async fn run_evictor(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let n = self.evict_idle(IDLE_TIMEOUT);
            if n > 0 {
                tracing::debug!(evicted = n, "forgot idle destinations");
            }
        }
    }

    /// Turns true once the controller says the workload at `pod` (this proxy's own pod) has
    /// finished: every app container terminated for good. Watched for as long as the proxy
    /// lives, reconnecting like any destination.
    pub fn watch_workload_done(self: &Arc<Self>, pod: SocketAddr) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let publish: Publish = Box::new(move |snapshot, _| {
            if snapshot.workload_done {
                tx.send_replace(true);
            }
        });
        tokio::spawn(self.clone().subscribe(pod, publish));
        rx
    }

    /// Publishes every new state of `addr`, reconnecting with backoff, never clearing what
    /// it knew.
    async fn subscribe(self: Arc<Self>, addr: SocketAddr, publish: Publish) {
        let mut state: Option<(Snapshot, Option<Arc<Balancer>>)> = None;
        let mut failures = 0u32;
        loop {
            let result = self.stream(addr, &publish, &mut state, &mut failures).await;
            if let Err(e) = result {
                tracing::warn!(%addr, "destination stream: {e}; keeping the last answer");
                *self.conn.lock().await = None;
            }
            let wait = backoff(failures, fastrand::f64());
            failures = failures.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }

    async fn stream(
        &self,
        addr: SocketAddr,
        publish: &Publish,
        state: &mut Option<(Snapshot, Option<Arc<Balancer>>)>,
        failures: &mut u32,
    ) -> Result<(), DiscoveryError> {
        let sender = self.sender().await;
        self.reachable
            .store(sender.is_ok(), std::sync::atomic::Ordering::Relaxed);
        let mut sender = sender?;
        let req = Request::get(format!(
            "https://{}{}?addr={}",
            self.controller.name, DESTINATION_PATH, addr
        ))
        .body(Empty::new())
        .map_err(|e| DiscoveryError::Decode(e.to_string()))?;
        sender.ready().await?;
        let rsp = sender.send_request(req).await?;
        if !rsp.status().is_success() {
            return Err(DiscoveryError::Status(rsp.status()));
        }
        let mut body: Incoming = rsp.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(nl + 1);
                let update: Update = serde_json::from_slice(&line[..nl])
                    .map_err(|e| DiscoveryError::Decode(e.to_string()))?;
                *failures = 0;
                apply(addr, state, update);
                if let Some((snapshot, balancer)) = state.as_ref() {
                    publish(snapshot, balancer);
                }
            }
            if buf.len() > MAX_LINE {
                return Err(DiscoveryError::Decode("update line too long".into()));
            }
        }
        Err(DiscoveryError::Closed)
    }

    /// The shared HTTP/2 connection to the controller, opened on demand.
    async fn sender(&self) -> Result<Sender, DiscoveryError> {
        let mut conn = self.conn.lock().await;
        if let Some(s) = conn.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let c = &self.controller;
        let tcp = tokio::net::TcpStream::connect(c.addr.as_str())
            .await
            .map_err(|source| DiscoveryError::Connect {
                addr: c.addr.clone(),
                source,
            })?;
        let name = ServerName::try_from(c.name.clone())
            .map_err(|e| DiscoveryError::Decode(format!("controller name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(c.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(DiscoveryError::Tls)?;
        let (sender, driver) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        *conn = Some(sender.clone());
        Ok(sender)
    }
}

/// Folds one update into the state, keeping the balancer (and its endpoint health) alive.
fn apply(addr: SocketAddr, state: &mut Option<(Snapshot, Option<Arc<Balancer>>)>, update: Update) {
    let (snapshot, balancer) = match (state.take(), update) {
        (_, Update::Snapshot(s)) => (s, None),
        (Some((mut s, b)), u) => {
            destination::apply(&mut s, u);
            (s, b)
        }
        (None, u) => {
            tracing::warn!(%addr, ?u, "update before any snapshot: ignored");
            return;
        }
    };
    let balancer = match snapshot.kind {
        Kind::Service => match balancer {
            Some(b) => {
                b.update(&snapshot);
                Some(b)
            }
            None => Some(Arc::new(Balancer::new(
                snapshot.service.clone().unwrap_or_else(|| addr.to_string()),
                &snapshot,
            ))),
        },
        _ => None,
    };
    *state = Some((snapshot, balancer));
}

/// What the routing decision needs from the state.
pub fn known(snapshot: &Snapshot, balancer: &Option<Arc<Balancer>>) -> Known {
    match (&snapshot.kind, balancer) {
        (Kind::Service, Some(b)) => Known::Service(Balanced(b.clone())),
        (Kind::Pod, _) => match snapshot.endpoints.first() {
            Some(ep) => match &ep.identity {
                Some(identity) => Known::Meshed(MeshEndpoint {
                    identity: identity.clone(),
                    inbound_port: ep.inbound_port,
                }),
                None => Known::Unknown,
            },
            None => Known::Unknown,
        },
        _ => Known::Unknown,
    }
}
