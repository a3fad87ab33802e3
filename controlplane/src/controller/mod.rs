//! `weft controller`: the control plane, one process.
//!
//! Today it runs the identity service, discovery (the file backend) and the destination
//! API; policy, the injector and stats join as modules wired here. This module only
//! wires: it reads the flags into a [`Config`], loads the files, starts each part
//! ([`start`] returns a [`Controller`] with the bound addresses, so tests can use port 0,
//! and [`Controller::shutdown`]), and waits for SIGTERM/SIGINT.

pub mod admin;
pub mod config;
pub mod injector;
pub mod sources;

use crate::cli::ControllerArgs;
use crate::destination::metrics::DestinationMetrics;
use crate::destination::server::DestinationService;
use crate::discovery::file::{FileError, FileSource, FileWatch, ReloadStatus, POLL_INTERVAL};
use crate::discovery::index::{Index, IndexConfig, SharedIndex};
use crate::discovery::metrics::DiscoveryMetrics;
use crate::discovery::Backend;
use crate::duration::date_time;
use crate::identity::ca::CaError;
use crate::identity::metrics::IdentityMetrics;
use crate::identity::server::{
    run_identity_server, IdentityServer, IdentityServerConfig, ServerError,
};
use crate::shutdown::Shutdown;
use admin::AdminMetrics;
use sources::{IdentitySource, SourceError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// Exit code for a bad flag or file (sysexits `EX_CONFIG`, as the proxy uses).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when a port cannot be bound (sysexits `EX_OSERR`).
pub const EXIT_OS: u8 = 71;
/// Exit code when a part of the controller stopped by itself (sysexits `EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;

/// An issuer closer than this to its expiry is warned about at start.
pub const ISSUER_EXPIRY_WARNING: time::Duration = time::Duration::days(30);

/// Everything `weft controller` needs, from its flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the trust anchors and the issuer come from.
    pub identity: IdentitySource,
    /// The config file; optional with `--discovery kubernetes`.
    pub config_file: Option<PathBuf>,
    pub discovery: Backend,
    /// With `--discovery kubernetes`: a kubeconfig to use instead of the defaults.
    pub kubeconfig: Option<PathBuf>,
    /// The admission webhook, when `--injector-addr` is given.
    pub injector: Option<injector::InjectorSettings>,
    pub proxy_api_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub leaf_lifetime: Duration,
    pub trust_domain: String,
    pub control_plane_namespace: String,
    pub shutdown_grace: Duration,
}

impl TryFrom<&ControllerArgs> for Config {
    type Error = ControllerError;

    /// Checks the flags that only make sense together.
    fn try_from(a: &ControllerArgs) -> Result<Self, ControllerError> {
        let identity = match (&a.identity_dir, &a.identity_secret) {
            (Some(dir), None) => IdentitySource::Dir(dir.clone()),
            (None, Some(name)) => IdentitySource::Secret(name.clone()),
            (Some(_), Some(_)) => {
                return Err(ControllerError::Flags(
                    "--identity-dir and --identity-secret are alternatives; give one".into(),
                ))
            }
            (None, None) => {
                return Err(ControllerError::Flags(
                    "give --identity-dir DIR (files) or --identity-secret NAME (a Secret in the control-plane namespace)".into(),
                ))
            }
        };
        if a.config.is_none() && a.discovery == Backend::File {
            return Err(ControllerError::Flags(
                "--config FILE is required with --discovery file (it lists the tokens, workloads and services)".into(),
            ));
        }
        Ok(Self {
            identity,
            config_file: a.config.clone(),
            discovery: a.discovery,
            kubeconfig: a.kubeconfig.clone(),
            injector: a.injector_addr.map(|addr| injector::InjectorSettings {
                addr,
                proxy_image: a
                    .proxy_image
                    .clone()
                    .unwrap_or_else(injector::default_proxy_image),
                native_sidecars: a.native_sidecars,
                webhook_config: a.webhook_config.clone(),
            }),
            proxy_api_addr: a.proxy_api_addr,
            admin_addr: a.admin_addr,
            leaf_lifetime: a.leaf_lifetime,
            trust_domain: a.trust_domain.clone(),
            control_plane_namespace: a.control_plane_namespace.clone(),
            shutdown_grace: a.shutdown_grace_period,
        })
    }
}

/// Why the controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    Flags(String),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("invalid --trust-domain or --control-plane-namespace: {0}")]
    Naming(#[from] weft_api::IdentityError),
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("{0}")]
    File(#[from] FileError),
    #[cfg(not(feature = "kubernetes"))]
    #[error("--discovery kubernetes: this weft was built without the kubernetes feature; use --discovery file (see docs/discovery.md)")]
    KubernetesUnavailable,
    #[error("proxy API: {0}")]
    Server(#[from] ServerError),
    #[error("injector: {0}")]
    Injector(#[from] injector::InjectorError),
    #[error("admin server: cannot listen on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ControllerError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ControllerError::Server(ServerError::Bind { .. })
            | ControllerError::Admin { .. }
            | ControllerError::Injector(injector::InjectorError::Bind { .. }) => EXIT_OS,
            _ => EXIT_CONFIG,
        }
    }
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    /// Where the proxy API (identity today) listens.
    pub proxy_api_addr: SocketAddr,
    /// Where the admin server listens, if it was asked for.
    pub admin_addr: Option<SocketAddr>,
    /// Where the injector's webhook listens, if it was asked for.
    pub injector_addr: Option<SocketAddr>,
    pub metrics: Arc<IdentityMetrics>,
    pub destination_metrics: Arc<DestinationMetrics>,
    /// The discovery index the destination API serves from (read by in-process tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub index: SharedIndex,
    /// What the config-file watcher has applied or refused (read by in-process tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub discovery_status: watch::Receiver<ReloadStatus>,
    shutdown: Shutdown,
    identity: IdentityServer,
    /// The backend's task (the file watcher, or the Kubernetes watches).
    discovery: Option<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
    injector: Option<JoinHandle<()>>,
}

impl Controller {
    /// Stops accepting, ends destination streams, drains requests in flight (up to the
    /// grace period), and returns.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        self.identity.wait().await;
        if let Some(discovery) = self.discovery {
            let _ = discovery.await;
        }
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
        if let Some(injector) = self.injector {
            let _ = injector.await;
        }
    }

    /// Resolves if the discovery backend stops on its own (it only should at shutdown).
    pub async fn discovery_stopped(&mut self) {
        match self.discovery.as_mut() {
            Some(task) => {
                let _ = task.await;
                self.discovery = None;
            }
            None => std::future::pending().await,
        }
    }
}

/// Loads everything, binds every listener and starts serving.
pub async fn start(config: &Config) -> Result<Controller, ControllerError> {
    let controller_identity = weft_api::certify::controller_identity(
        &config.control_plane_namespace,
        &config.trust_domain,
    )?;
    let now = OffsetDateTime::now_utc();
    let kube = sources::kube_client(config).await?;
    let (ca, issuer_from) = sources::load_ca(config, kube.as_ref(), now).await?;
    info!(
        issuer = ca.issuer_subject(),
        from = %issuer_from,
        issuer_expires = %date_time(ca.issuer_not_after()),
        trust_anchor_expires = %date_time(ca.anchor_not_after()),
        "loaded the identity issuer"
    );
    if ca.issuer_not_after() - now < ISSUER_EXPIRY_WARNING {
        warn!(
            "the issuer certificate ({issuer_from}) expires on {}; rotate it soon (see docs/identity.md)",
            date_time(ca.issuer_not_after())
        );
    }

    let index_config = IndexConfig {
        control_plane_namespace: config.control_plane_namespace.clone(),
        trust_domain: config.trust_domain.clone(),
    };
    let (file, source) = match &config.config_file {
        Some(path) => {
            let mut source = FileSource::new(path);
            let file = crate::discovery::file::load(&mut source, &index_config).await?;
            if !file.unknown_keys.is_empty() {
                debug!(keys = ?file.unknown_keys, "config file: keys this controller does not read yet");
            }
            (Some(file), Some(source))
        }
        None => (None, None),
    };
    let authenticator = sources::authenticator(config, kube.as_ref(), file.as_ref())?;

    let metrics = Arc::new(IdentityMetrics::default());
    metrics.set_issuer_expiry(ca.issuer_not_after().unix_timestamp());
    metrics.set_anchor_expiry(ca.anchor_not_after().unix_timestamp());

    // Discovery: the index, fed by the chosen backend from here on.
    let index = SharedIndex::new(Index::new(index_config.clone()));
    let discovery_metrics = Arc::new(DiscoveryMetrics::default());
    let shutdown = Shutdown::new();
    let (status_tx, discovery_status) = watch::channel(ReloadStatus::default());
    let (ready_tx, discovery_ready) = watch::channel(false);
    let watcher = match (config.discovery, file, source) {
        (Backend::File, Some(file), Some(source)) => {
            if let Some(path) = &config.kubeconfig {
                warn!(
                    "--kubeconfig {} is only used with --discovery kubernetes",
                    path.display()
                );
            }
            info!(
                workloads = file.state.workloads.len(),
                services = file.state.services.len(),
                file = %source.path().display(),
                "discovery: file backend loaded; watching the file for edits"
            );
            index.lock().reset(file.state);
            discovery_metrics.reloaded(now.unix_timestamp());
            ready_tx.send_replace(true);
            tokio::spawn(
                FileWatch {
                    source,
                    config: index_config,
                    interval: POLL_INTERVAL,
                    index: index.clone(),
                    metrics: discovery_metrics.clone(),
                    tokens: file.token_entries,
                    status: status_tx,
                }
                .run(shutdown.signal()),
            )
        }
        (Backend::File, _, _) => {
            return Err(ControllerError::Flags(
                "--config FILE is required with --discovery file".into(),
            ))
        }
        #[cfg(feature = "kubernetes")]
        (Backend::Kubernetes, file, _) => {
            use crate::discovery::kubernetes;
            if let Some(file) = file {
                if !file.state.workloads.is_empty() || !file.state.services.is_empty() {
                    warn!("config file: workloads: and services: are ignored with --discovery kubernetes");
                }
            }
            let Some(client) = kube.clone() else {
                return Err(ControllerError::Flags(
                    "--discovery kubernetes needs a Kubernetes client".into(),
                ));
            };
            info!("discovery: kubernetes backend; watching namespaces, pods, services and endpointslices");
            tokio::spawn(kubernetes::run(
                client,
                index.clone(),
                ready_tx,
                shutdown.signal(),
            ))
        }
        #[cfg(not(feature = "kubernetes"))]
        (Backend::Kubernetes, _, _) => return Err(ControllerError::KubernetesUnavailable),
    };
    let destination_metrics = Arc::new(DestinationMetrics::default());
    let destination = DestinationService {
        index: index.clone(),
        metrics: destination_metrics.clone(),
        shutdown: shutdown.signal(),
    };

    let ca = Arc::new(ca);
    let identity = match run_identity_server(
        IdentityServerConfig {
            listen_addr: config.proxy_api_addr,
            ca: ca.clone(),
            tokens: Arc::new(authenticator),
            leaf_lifetime: config.leaf_lifetime,
            controller_identity: controller_identity.clone(),
            serving_names: injector::service_names(&config.control_plane_namespace),
            shutdown_grace: config.shutdown_grace,
            metrics: metrics.clone(),
            destination,
        },
        &shutdown,
    )
    .await
    {
        Ok(server) => server,
        Err(e) => {
            shutdown.trigger();
            let _ = watcher.await;
            return Err(e.into());
        }
    };
    let injector = match &config.injector {
        Some(settings) => match injector::start(
            settings,
            &ca,
            identity.serving.clone(),
            kube.as_ref(),
            &config.control_plane_namespace,
            &config.trust_domain,
            &shutdown,
            config.shutdown_grace,
        )
        .await
        {
            Ok(i) => Some(i),
            Err(e) => {
                shutdown.trigger();
                identity.wait().await;
                let _ = watcher.await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let admin_metrics = Arc::new(AdminMetrics {
        identity: metrics.clone(),
        destination: destination_metrics.clone(),
        discovery: discovery_metrics.clone(),
        index: index.clone(),
        discovery_ready,
    });
    let (admin_addr, admin) = match config.admin_addr {
        Some(addr) => match admin::serve(addr, admin_metrics, shutdown.signal()).await {
            Ok((bound, task)) => (Some(bound), Some(task)),
            Err(source) => {
                shutdown.trigger();
                identity.wait().await;
                let _ = watcher.await;
                return Err(ControllerError::Admin { addr, source });
            }
        },
        None => (None, None),
    };
    info!(
        addr = %identity.addr(),
        identity = %controller_identity,
        leaf_lifetime = %crate::duration::format_duration(config.leaf_lifetime),
        "proxy API listening"
    );
    Ok(Controller {
        proxy_api_addr: identity.addr(),
        admin_addr,
        injector_addr: injector.as_ref().map(|i| i.addr),
        metrics,
        destination_metrics,
        index,
        discovery_status,
        shutdown,
        identity,
        discovery: Some(watcher),
        admin,
        injector: injector.map(|i| i.task),
    })
}

/// `weft controller`.
pub fn main(args: ControllerArgs) -> ExitCode {
    if let Err(e) = init_logging(&args.log_level) {
        eprintln!("weft controller: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft controller: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    let config = match Config::try_from(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft controller: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    runtime.block_on(async move {
        let mut controller = match start(&config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("weft controller: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
        println!(
            "weft controller: proxy API listening on {}",
            controller.proxy_api_addr
        );
        if let Some(addr) = controller.admin_addr {
            println!("weft controller: admin listening on {addr}");
        }
        if let Some(addr) = controller.injector_addr {
            println!("weft controller: injector listening on {addr}");
        }
        // A discovery backend that stops on its own would leave proxies with a frozen
        // view: exit (non-zero) so that the controller is restarted instead.
        let (signal, code) = tokio::select! {
            signal = wait_for_signal() => (signal, ExitCode::SUCCESS),
            _ = controller.discovery_stopped() => {
                error!("discovery stopped unexpectedly; shutting down so the controller is restarted");
                ("discovery stopped", ExitCode::from(EXIT_SOFTWARE))
            }
        };
        info!(signal, "shutting down");
        let metrics = controller.metrics.clone();
        let destination = controller.destination_metrics.clone();
        controller.shutdown().await;
        info!(
            issued_total = metrics.issued_total(),
            refused_total = metrics.refused_total(),
            destination_streams_total = destination.streams_total(),
            "stopped"
        );
        code
    })
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// Plain-text logs on stderr; `level` is a `Targets` filter (`info`, `warn,weft=debug`).
fn init_logging(level: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    use std::str::FromStr;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::filter::Targets::from_str(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
