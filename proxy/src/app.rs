//! Wiring: bind every listener (failing fast), then run until asked to stop, then drain.
//!
//! [`App::bind`] returns the bound addresses, so tests and `weft demo` configure port 0 and
//! read the real ports back. [`App::run`] marks the proxy ready, waits for a shutdown
//! request (signal in `main`, or `POST /shutdown`), stops accepting, and lets in-flight
//! connections finish within the grace period.

use crate::admin::{Admin, AdminState, Readiness, ReadyState, ShutdownHandle};
use crate::config::{Config, TrustAnchorsSource};
use crate::discovery::{Controller, Discovery};
use crate::drain::{self, Drained};
use crate::identity::{Certifier, Store};
use crate::inbound::Inbound;
use crate::logging::LogHandle;
use crate::metrics::Metrics;
use crate::orig_dst::{OrigDst, SoOriginalDst};
use crate::outbound::Outbound;
use crate::proxy::Shared;
use crate::tls::{TlsContext, TrustAnchors};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {listener} address {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("identity: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("identity: invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
}

/// What the proxy needs from its surroundings.
pub struct Deps {
    pub inbound_orig_dst: Arc<dyn OrigDst>,
    pub outbound_orig_dst: Arc<dyn OrigDst>,
    pub log: Option<LogHandle>,
}

impl Deps {
    /// The real thing: original destinations from iptables.
    pub fn system(log: Option<LogHandle>) -> Self {
        Deps {
            inbound_orig_dst: Arc::new(SoOriginalDst),
            outbound_orig_dst: Arc::new(SoOriginalDst),
            log,
        }
    }
}

/// A proxy whose listeners are bound.
pub struct App {
    config: Arc<Config>,
    inbound: Inbound,
    outbound: Outbound,
    admin: Admin,
    metrics: Arc<Metrics>,
    ready: ReadyState,
    shutdown: ShutdownHandle,
    addrs: Addrs,
    identity: Option<(Certifier, Arc<Store>)>,
    discovery: Option<Arc<Discovery>>,
}

/// The addresses the listeners actually bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

impl App {
    pub fn bind(config: Config, deps: Deps) -> Result<App, AppError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new(config.max_target_labels));
        let mut discovery = None;
        let (tls, identity) = match &config.identity {
            Some(id) => {
                let trust = match &id.trust_anchors {
                    TrustAnchorsSource::File(path) => TrustAnchors::from_file(path)?,
                    TrustAnchorsSource::Pem(pem) => TrustAnchors::from_pem(
                        pem.as_bytes(),
                        crate::config::ENV_IDENTITY_TRUST_ANCHORS,
                    )?,
                };
                if config.discovery_enabled {
                    discovery = Some(Discovery::new(
                        Controller {
                            addr: id.controller_addr.clone(),
                            name: id.controller_name.clone(),
                            tls: crate::tls::controller_client_config(&trust)?,
                        },
                        config.discovery_timeout,
                    ));
                }
                let store = Store::new();
                let tls = TlsContext::new(
                    id.name.clone(),
                    &trust,
                    store.clone(),
                    config.tls_handshake_timeout,
                )?;
                let certifier = Certifier::new(id.clone(), &trust, store.clone(), metrics.clone())?;
                (Some(Arc::new(tls)), Some((certifier, store)))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            config: config.clone(),
            metrics: metrics.clone(),
            tls,
            discovery: discovery.clone(),
        });
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let bind_err = |listener, addr| {
            move |source| AppError::Bind {
                listener,
                addr,
                source,
            }
        };
        let inbound = Inbound::new(
            config.inbound_addr,
            shared.clone(),
            deps.inbound_orig_dst,
            limit.clone(),
        )
        .map_err(bind_err("inbound", config.inbound_addr))?;
        let outbound = Outbound::new(config.outbound_addr, shared, deps.outbound_orig_dst, limit)
            .map_err(bind_err("outbound", config.outbound_addr))?;
        let ready = ReadyState::default();
        let shutdown = ShutdownHandle::default();
        let admin = Admin::new(
            config.admin_addr,
            AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                shutdown: shutdown.clone(),
                shutdown_enabled: config.shutdown_endpoint_enabled,
                log: deps.log,
            },
        )
        .map_err(bind_err("admin", config.admin_addr))?;
        let addrs = Addrs {
            inbound: inbound
                .address()
                .map_err(bind_err("inbound", config.inbound_addr))?,
            outbound: outbound
                .address()
                .map_err(bind_err("outbound", config.outbound_addr))?,
            admin: admin
                .address()
                .map_err(bind_err("admin", config.admin_addr))?,
        };
        Ok(App {
            config,
            inbound,
            outbound,
            admin,
            metrics,
            ready,
            shutdown,
            addrs,
            identity,
            discovery,
        })
    }

    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Triggers a graceful shutdown, as SIGTERM does.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shutdown is requested, then drains. Returns how the drain ended.
    pub async fn run(self) -> Drained {
        let App {
            config,
            inbound,
            outbound,
            admin,
            ready,
            shutdown,
            addrs,
            identity,
            discovery,
            ..
        } = self;
        let (signal, watch) = drain::channel();
        let admin_task = tokio::spawn(admin.run());
        let inbound_task = tokio::spawn(inbound.run(watch.clone()));
        let outbound_task = tokio::spawn(outbound.run(watch));
        // Ready once listening and, with an identity, once the first certificate is held.
        let mut background = Vec::new();
        if let Some(d) = discovery {
            if let Some(ip) = config.exit_with_workload {
                // Any port of the pod's address names the pod; the admin port is stable.
                let mut done = d.watch_workload_done(SocketAddr::new(ip, addrs.admin.port()));
                let shutdown = shutdown.clone();
                background.push(tokio::spawn(async move {
                    if done.wait_for(|d| *d).await.is_ok() {
                        tracing::info!(
                            pod = %ip,
                            "every application container of this pod has finished; shutting down"
                        );
                        shutdown.trigger();
                    }
                }));
            }
            background.push(tokio::spawn(d.run_evictor()));
        }
        let started = std::time::Instant::now();
        let announce = move || {
            tracing::info!(
                inbound = %addrs.inbound, outbound = %addrs.outbound, admin = %addrs.admin,
                elapsed_ms = started.elapsed().as_millis() as u64, "weft-proxy ready"
            )
        };
        match identity {
            Some((certifier, store)) => {
                background.push(tokio::spawn(certifier.run()));
                let ready = ready.clone();
                background.push(tokio::spawn(async move {
                    store.ready().await;
                    if ready.get() == Readiness::Starting {
                        ready.set(Readiness::Ready);
                        announce();
                    }
                }));
            }
            None => {
                ready.set(Readiness::Ready);
                announce();
            }
        }

        shutdown.requested().await;
        ready.set(Readiness::Draining);
        tracing::info!(grace = ?config.shutdown_grace_period, "draining");
        let drained = signal.drain(config.shutdown_grace_period).await;
        let _ = tokio::join!(inbound_task, outbound_task);
        match drained {
            Drained::Complete => tracing::info!("drained; exiting"),
            Drained::TimedOut => tracing::warn!(
                grace = ?config.shutdown_grace_period,
                "graceful shutdown did not complete within the grace period; exiting anyway"
            ),
        }
        admin_task.abort();
        for task in background {
            task.abort();
        }
        drained
    }
}
