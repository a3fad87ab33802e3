//! `weft controller`: the control plane, one process.
//!
//! Today it runs the identity service, discovery (the file backend) and the destination
//! API; policy, the injector and stats join as modules wired here. This module only
//! wires: it reads the flags into a [`Config`], loads the files, starts each part
//! ([`start`] returns a [`Controller`] with the bound addresses, so tests can use port 0,
//! and [`Controller::shutdown`]), and waits for SIGTERM/SIGINT.

pub mod admin;
pub mod config;

use crate::cli::ControllerArgs;
use crate::destination::metrics::DestinationMetrics;
use crate::destination::server::DestinationService;
use crate::discovery::file::{FileError, FileSource, FileWatch, ReloadStatus, POLL_INTERVAL};
use crate::discovery::index::{Index, IndexConfig, SharedIndex};
use crate::discovery::metrics::DiscoveryMetrics;
use crate::discovery::Backend;
use crate::duration::date_time;
use crate::identity::ca::{Ca, CaError, IdentityFiles};
use crate::identity::metrics::IdentityMetrics;
use crate::identity::server::{
    run_identity_server, IdentityServer, IdentityServerConfig, ServerError,
};
use crate::shutdown::Shutdown;
use admin::AdminMetrics;
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
    pub identity_dir: PathBuf,
    pub config_file: PathBuf,
    pub discovery: Backend,
    /// With `--discovery kubernetes`: a kubeconfig to use instead of the defaults.
    pub kubeconfig: Option<PathBuf>,
    pub proxy_api_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub leaf_lifetime: Duration,
    pub trust_domain: String,
    pub control_plane_namespace: String,
    pub shutdown_grace: Duration,
}

impl From<&ControllerArgs> for Config {
    fn from(a: &ControllerArgs) -> Self {
        Self {
            identity_dir: a.identity_dir.clone(),
            config_file: a.config.clone(),
            discovery: a.discovery,
            kubeconfig: a.kubeconfig.clone(),
            proxy_api_addr: a.proxy_api_addr,
            admin_addr: a.admin_addr,
            leaf_lifetime: a.leaf_lifetime,
            trust_domain: a.trust_domain.clone(),
            control_plane_namespace: a.control_plane_namespace.clone(),
            shutdown_grace: a.shutdown_grace_period,
        }
    }
}

/// Why the controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("invalid --trust-domain or --control-plane-namespace: {0}")]
    Naming(#[from] weft_api::IdentityError),
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("{0}")]
    File(#[from] FileError),
    #[cfg(not(feature = "kubernetes"))]
    #[error("--discovery kubernetes: this weft was built without the kubernetes feature; use --discovery file (see docs/discovery.md)")]
    KubernetesUnavailable,
    #[cfg(feature = "kubernetes")]
    #[error("--discovery kubernetes: {0}")]
    Kubernetes(#[from] crate::discovery::kubernetes::KubernetesError),
    #[error("proxy API: {0}")]
    Server(#[from] ServerError),
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
            ControllerError::Server(ServerError::Bind { .. }) | ControllerError::Admin { .. } => {
                EXIT_OS
            }
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
    let files = IdentityFiles::in_dir(&config.identity_dir)?;
    let now = OffsetDateTime::now_utc();
    let ca = Ca::load(&files, now)?;
    info!(
        issuer = ca.issuer_subject(),
        issuer_file = %files.issuer_cert.display(),
        issuer_expires = %date_time(ca.issuer_not_after()),
        trust_anchor_expires = %date_time(ca.anchor_not_after()),
        "loaded the identity issuer"
    );
    if ca.issuer_not_after() - now < ISSUER_EXPIRY_WARNING {
        warn!(
            "the issuer certificate {} expires on {}; rotate it soon (see docs/identity.md)",
            files.issuer_cert.display(),
            date_time(ca.issuer_not_after())
        );
    }

    let index_config = IndexConfig {
        control_plane_namespace: config.control_plane_namespace.clone(),
        trust_domain: config.trust_domain.clone(),
    };
    let mut source = FileSource::new(&config.config_file);
    let file = crate::discovery::file::load(&mut source, &index_config).await?;
    if !file.unknown_keys.is_empty() {
        debug!(keys = ?file.unknown_keys, "config file: keys this controller does not read yet");
    }
    let tokens = file.tokens;
    if tokens.is_empty() {
        warn!(
            "config file {} lists no tokens: every certificate request will be refused",
            config.config_file.display()
        );
    } else {
        info!(tokens = tokens.len(), "loaded the token registry");
    }

    let metrics = Arc::new(IdentityMetrics::default());
    metrics.set_issuer_expiry(ca.issuer_not_after().unix_timestamp());
    metrics.set_anchor_expiry(ca.anchor_not_after().unix_timestamp());

    // Discovery: the index, fed by the chosen backend from here on.
    let index = SharedIndex::new(Index::new(index_config.clone()));
    let discovery_metrics = Arc::new(DiscoveryMetrics::default());
    let shutdown = Shutdown::new();
    let (status_tx, discovery_status) = watch::channel(ReloadStatus::default());
    let (ready_tx, discovery_ready) = watch::channel(false);
    let watcher = match config.discovery {
        Backend::File => {
            if let Some(path) = &config.kubeconfig {
                warn!(
                    "--kubeconfig {} is only used with --discovery kubernetes",
                    path.display()
                );
            }
            info!(
                workloads = file.state.workloads.len(),
                services = file.state.services.len(),
                file = %config.config_file.display(),
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
        #[cfg(feature = "kubernetes")]
        Backend::Kubernetes => {
            use crate::discovery::kubernetes;
            if !file.state.workloads.is_empty() || !file.state.services.is_empty() {
                warn!(
                    "config file {}: workloads: and services: are ignored with --discovery kubernetes",
                    config.config_file.display()
                );
            }
            let client = kubernetes::client(config.kubeconfig.as_deref()).await?;
            info!("discovery: kubernetes backend; watching namespaces, pods, services and endpointslices");
            tokio::spawn(kubernetes::run(
                client,
                index.clone(),
                ready_tx,
                shutdown.signal(),
            ))
        }
        #[cfg(not(feature = "kubernetes"))]
        Backend::Kubernetes => return Err(ControllerError::KubernetesUnavailable),
    };
    let destination_metrics = Arc::new(DestinationMetrics::default());
    let destination = DestinationService {
        index: index.clone(),
        metrics: destination_metrics.clone(),
        shutdown: shutdown.signal(),
    };

    let identity = match run_identity_server(
        IdentityServerConfig {
            listen_addr: config.proxy_api_addr,
            ca: Arc::new(ca),
            tokens: Arc::new(tokens),
            leaf_lifetime: config.leaf_lifetime,
            controller_identity: controller_identity.clone(),
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
        metrics,
        destination_metrics,
        index,
        discovery_status,
        shutdown,
        identity,
        discovery: Some(watcher),
        admin,
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
    let config = Config::from(&args);
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
mod tests {
    use super::*;
    use crate::identity::ca::tests::generated;
    use crate::identity::verify::tests::{csr, WEB};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use weft_api::certify::{CertifyRequest, CertifyResponse, ErrorResponse, CERTIFY_PATH};

    struct Fixture {
        dir: PathBuf,
        config: Config,
        anchor_pem: String,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str, leaf_lifetime: Duration) -> Fixture {
        let dir = std::env::temp_dir().join(format!("weft-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = generated();
        crate::identity::generate::write_files(&dir, &g, false).unwrap();
        let config_file = dir.join("weft.yaml");
        std::fs::write(
            &config_file,
            "tokens:\n  - token: t-web\n    serviceAccount: web\n    namespace: apps\n",
        )
        .unwrap();
        Fixture {
            config: Config {
                identity_dir: dir.clone(),
                config_file,
                discovery: Backend::File,
                kubeconfig: None,
                proxy_api_addr: "127.0.0.1:0".parse().unwrap(),
                admin_addr: Some("127.0.0.1:0".parse().unwrap()),
                leaf_lifetime,
                trust_domain: "cluster.local".into(),
                control_plane_namespace: "weft".into(),
                shutdown_grace: Duration::from_secs(2),
            },
            dir,
            anchor_pem: g.anchor_pem,
        }
    }

    /// A proxy-like client: TLS 1.3 verified against the anchor for `server_name`, HTTP/2.
    async fn connect(
        addr: SocketAddr,
        anchor_pem: &str,
        server_name: &str,
    ) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(anchor_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(server_name.to_string()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(send)
    }

    async fn post(
        send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
        body: Vec<u8>,
    ) -> (u16, Bytes) {
        let req = http::Request::post(format!("https://weft-controller{CERTIFY_PATH}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let rsp = send.send_request(req).await.unwrap();
        let status = rsp.status().as_u16();
        (status, rsp.into_body().collect().await.unwrap().to_bytes())
    }

    const CONTROLLER: &str = "weft-controller.weft.serviceaccount.identity.weft.cluster.local";

    #[tokio::test]
    async fn serves_certify_over_h2_and_shuts_down() {
        let f = fixture("serve", Duration::from_secs(3600));
        let controller = start(&f.config).await.unwrap();
        assert_ne!(controller.proxy_api_addr.port(), 0);
        let mut send = connect(controller.proxy_api_addr, &f.anchor_pem, CONTROLLER)
            .await
            .unwrap();

        let req = CertifyRequest {
            identity: WEB.into(),
            token: "t-web".into(),
            csr_pem: csr(&[WEB]),
        };
        let (status, body) = post(&mut send, serde_json::to_vec(&req).unwrap()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let rsp: CertifyResponse = serde_json::from_slice(&body).unwrap();
        assert!(rsp.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));

        let (status, body) = post(&mut send, b"{not json".to_vec()).await;
        assert_eq!(status, 400);
        let err: ErrorResponse = serde_json::from_slice(&body).unwrap();
        assert!(
            err.error
                .starts_with("the body is not a JSON certify request"),
            "{}",
            err.error
        );

        let (status, _) = post(&mut send, vec![b' '; MAX_BODY + 1]).await;
        assert_eq!(status, 413);

        let wrong_path = http::Request::get("https://weft-controller/nope")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send.send_request(wrong_path).await.unwrap().status(), 404);
        let wrong_method = http::Request::get(format!("https://weft-controller{CERTIFY_PATH}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send.send_request(wrong_method).await.unwrap().status(), 405);

        // The admin server counts what happened.
        let admin = controller.admin_addr.unwrap();
        let metrics = http_get(admin, "/metrics").await;
        assert!(
            metrics.contains("identity_certificates_issued_total 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("identity_certify_refused_total{reason=\"bad_request\"} 4\n"),
            "{metrics}"
        );
        assert_eq!(http_get(admin, "/ready").await, "ready\n");

        // A client expecting another name fails the handshake, and it is counted.
        let err = connect(controller.proxy_api_addr, &f.anchor_pem, WEB)
            .await
            .unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");

        let addr = controller.proxy_api_addr;
        tokio::time::timeout(Duration::from_secs(5), controller.shutdown())
            .await
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "stopped accepting"
        );
    }

    #[tokio::test]
    async fn renews_its_serving_certificate() {
        let f = fixture("renew", Duration::from_secs(2));
        let controller = start(&f.config).await.unwrap();
        let first = controller.metrics.render_to_string();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let second = controller.metrics.render_to_string();
        let expiry = |s: &str| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("identity_controller_cert_expiration_timestamp_seconds ")
                })
                .unwrap()
                .parse::<i64>()
                .unwrap()
        };
        assert!(expiry(&second) > expiry(&first), "{first}\n{second}");
        // Still serving with the new certificate.
        connect(controller.proxy_api_addr, &f.anchor_pem, CONTROLLER)
            .await
            .unwrap();
        controller.shutdown().await;
    }

    #[tokio::test]
    async fn start_errors_name_the_problem() {
        let f = fixture("errors", Duration::from_secs(3600));
        std::fs::write(
            f.dir.join("issuer.key"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = start(&f.config).await.unwrap_err();
        assert_eq!(err.exit_code(), EXIT_CONFIG);
        assert!(err.to_string().contains("issuer.key"), "{err}");

        let f = fixture("errors2", Duration::from_secs(3600));
        std::fs::write(
            &f.config.config_file,
            "tokens:\n  - token: a\n    serviceAccount: Web\n    namespace: apps\n",
        )
        .unwrap();
        let err = start(&f.config).await.unwrap_err().to_string();
        assert!(
            err.contains("weft.yaml: tokens[0]: service account \"Web\""),
            "{err}"
        );

        let mut config = f.config.clone();
        config.trust_domain = "bad..domain".into();
        let err = start(&config).await.unwrap_err().to_string();
        assert!(err.starts_with("invalid --trust-domain"), "{err}");

        // A port already taken.
        std::fs::write(&f.config.config_file, "tokens: []\n").unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = f.config.clone();
        config.proxy_api_addr = taken.local_addr().unwrap();
        let err = start(&config).await.unwrap_err();
        assert_eq!(err.exit_code(), EXIT_OS);
        assert!(
            err.to_string().starts_with("proxy API: cannot listen on"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn serves_destinations_and_ends_streams_on_shutdown() {
        let f = fixture("destination", Duration::from_secs(3600));
        let service = "services:\n  - {name: web, namespace: apps, clusterIPs: [198.19.0.10], ports: [{port: 80, targetPort: 8080}], selector: {app: web}}\n";
        let workload = "workloads:\n  - {name: web-1, namespace: apps, serviceAccount: web, addresses: [198.18.0.1], labels: {app: web}}\n";
        std::fs::write(&f.config.config_file, service).unwrap();
        let controller = start(&f.config).await.unwrap();
        let mut send = connect(controller.proxy_api_addr, &f.anchor_pem, CONTROLLER)
            .await
            .unwrap();
        let req = http::Request::get(format!(
            "https://weft-controller{}?addr=198.19.0.10:80",
            weft_api::destination::DESTINATION_PATH
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
        let mut body = send.send_request(req).await.unwrap().into_body();
        let line = |frame: Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>| {
            let data = frame.unwrap().unwrap().into_data().unwrap();
            serde_json::from_slice::<weft_api::destination::Update>(&data).unwrap()
        };
        let first = line(body.frame().await);
        let weft_api::destination::Update::Snapshot(snapshot) = first else {
            panic!("{first:?}")
        };
        assert!(snapshot.endpoints.is_empty());
        assert_eq!(controller.index.lock().watched(), 1);
        assert_eq!(controller.destination_metrics.streams_active(), 1);

        // An edit lands in the index and on the stream.
        std::fs::write(&f.config.config_file, format!("{service}{workload}")).unwrap();
        let mut status = controller.discovery_status.clone();
        tokio::time::timeout(Duration::from_secs(1), status.wait_for(|s| s.applied == 1))
            .await
            .unwrap()
            .unwrap();
        let add = line(body.frame().await);
        assert!(
            matches!(&add, weft_api::destination::Update::Add { endpoints } if endpoints.len() == 1),
            "{add:?}"
        );

        // Shutdown ends the stream cleanly and does not wait for the grace period.
        let started = std::time::Instant::now();
        let metrics = controller.destination_metrics.clone();
        let (_, rest) = tokio::join!(controller.shutdown(), body.collect());
        assert!(
            rest.is_ok(),
            "the stream ends with END_STREAM, not an error"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(metrics.streams_active(), 0);
    }

    #[cfg(feature = "kubernetes")]
    #[tokio::test]
    async fn serves_destinations_from_kubernetes() {
        use crate::discovery::kubernetes::fake_api::FakeApi;
        use crate::discovery::kubernetes::tests::web_service_with_one_pod;
        let fake = FakeApi::start().await.unwrap();
        let vip = web_service_with_one_pod(&fake.client(), "apps").await;
        let f = fixture("kubernetes", Duration::from_secs(3600));
        let kubeconfig = f.dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters: [{{name: fake, cluster: {{server: '{}'}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: nobody}}}}]\nusers: [{{name: nobody, user: {{}}}}]\n",
                fake.url()
            ),
        )
        .unwrap();
        let mut config = f.config.clone();
        config.discovery = Backend::Kubernetes;
        config.kubeconfig = Some(kubeconfig.clone());
        let controller = start(&config).await.unwrap();
        let admin = controller.admin_addr.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while http_get(admin, "/ready").await != "ready\n" {
            assert!(std::time::Instant::now() < deadline, "not ready within 10s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut send = connect(controller.proxy_api_addr, &f.anchor_pem, CONTROLLER)
            .await
            .unwrap();
        let req = http::Request::get(format!(
            "https://weft-controller{}?addr={vip}",
            weft_api::destination::DESTINATION_PATH
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
        let mut body = send.send_request(req).await.unwrap().into_body();
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let first: weft_api::destination::Update = serde_json::from_slice(&data).unwrap();
        let weft_api::destination::Update::Snapshot(s) = first else {
            panic!("{first:?}")
        };
        assert_eq!(s.service.as_deref(), Some("web.apps"));
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(
            s.endpoints[0].identity.as_deref(),
            Some("web.apps.serviceaccount.identity.weft.cluster.local")
        );
        controller.shutdown().await;

        // A kubeconfig that does not load stops the start, naming the file.
        std::fs::write(&kubeconfig, "clusters: 3\n").unwrap();
        let err = start(&config).await.unwrap_err();
        assert_eq!(err.exit_code(), EXIT_CONFIG);
        assert!(
            err.to_string().starts_with(&format!(
                "--discovery kubernetes: kubeconfig {}: ",
                kubeconfig.display()
            )),
            "{err}"
        );
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let rsp = send.send_request(req).await.unwrap();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    const MAX_BODY: usize = crate::identity::server::MAX_BODY_BYTES;
}
