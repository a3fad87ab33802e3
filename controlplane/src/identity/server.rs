//! The identity service on the controller's proxy API: HTTP/2 over TLS 1.3.
//!
//! Two halves:
//!
//! - [`IdentityService`] answers `POST /weft.identity.v1/certify`: JSON in, [`verify`] decides,
//!   the [`Ca`] signs, JSON out. Every answer is logged once and counted.
//! - The listener ([`run_identity_server`]) accepts TCP, completes a TLS 1.3 handshake
//!   (ALPN `h2`) with the controller's own certificate, and serves HTTP/2. The serving
//!   certificate names the controller's identity
//!   (`weft-controller.<cp-ns>.serviceaccount.identity.<cp-ns>.<trust-domain>`), is issued
//!   by the same issuer at start, and is renewed in place at 70 % of its lifetime.
//!
//! The listener is the whole proxy API: the router in [`route`] sends
//! `GET /weft.destination.v1/get` to the destination API
//! ([`crate::destination::server`]) and everything else to the identity service; the
//! policy API joins it the same way. HTTP/2 keep-alive pings find proxies that vanished
//! without closing (a Pi losing power), so their destination streams are released.

use super::ca::{whole_seconds, Ca, CaError, CLOCK_SKEW};
use super::metrics::{IdentityMetrics, BAD_REQUEST};
use super::tokens::Authenticator;
use super::verify::{verify, IssueDecision, Refusal, VerifyConfig};
use crate::destination::server::{ApiBody, DestinationService};
use crate::duration::date_time;
use crate::json_http::{error_response, json_response};
use crate::shutdown::{Shutdown, ShutdownSignal};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};
use weft_api::certify::{CertifyRequest, CertifyResponse, CERTIFY_PATH};
use weft_api::destination::DESTINATION_PATH;
use weft_api::IdentityName;

/// The largest request body read (a CSR is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client that has not finished its TLS handshake in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections, and how long an answer may take before the
/// connection (and its destination streams) is dropped.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot issue the controller's own certificate: {0}")]
    ServingCert(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl From<CaError> for ServerError {
    fn from(e: CaError) -> Self {
        ServerError::ServingCert(e.to_string())
    }
}

/// What the identity server needs.
#[derive(Debug, Clone)]
pub struct IdentityServerConfig {
    /// Where to listen; port 0 picks a free port (see [`IdentityServer::addr`]).
    pub listen_addr: SocketAddr,
    pub ca: Arc<Ca>,
    pub tokens: Arc<Authenticator>,
    /// Lifetime of issued leaves, and of the controller's own certificate.
    pub leaf_lifetime: Duration,
    /// The name the controller's serving certificate carries.
    pub controller_identity: IdentityName,
    /// More DNS names for that certificate (the Service names the admission webhook is
    /// called by), after the identity.
    pub serving_names: Vec<String>,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    pub metrics: Arc<IdentityMetrics>,
    /// The destination API, served on the same listener.
    pub destination: DestinationService,
}

/// A running identity server; it stops when the [`Shutdown`] it was started with fires.
#[derive(Debug)]
pub struct IdentityServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// The controller's serving certificate (renewed in place), also served by the
    /// injector's listener.
    pub serving: Arc<ServingCert>,
}

impl IdentityServer {
    /// The bound address (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has stopped (after a trigger and the drain).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds, issues the controller's serving certificate and starts serving. Returns once the
/// listener is bound, so the address can be handed to clients at once. `shutdown.trigger()`
/// stops accepting, lets requests in flight finish (up to the grace period), and ends it.
pub async fn run_identity_server(
    config: IdentityServerConfig,
    shutdown: &Shutdown,
) -> Result<IdentityServer, ServerError> {
    let serving = Arc::new(ServingCert::issue(
        &config.ca,
        &config.controller_identity,
        &config.serving_names,
        config.leaf_lifetime,
    )?);
    config
        .metrics
        .set_serving_expiry(serving.not_after().unix_timestamp());
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(serving.clone());
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen_addr,
        source,
    })?;

    tokio::spawn(renew_serving_cert(
        serving.clone(),
        config.ca.clone(),
        config.controller_identity.clone(),
        config.serving_names.clone(),
        config.leaf_lifetime,
        config.metrics.clone(),
        shutdown.signal(),
    ));
    let service = Arc::new(ProxyApi {
        identity: IdentityService {
            ca: config.ca,
            tokens: config.tokens,
            leaf_lifetime: config.leaf_lifetime,
            metrics: config.metrics.clone(),
        },
        destination: config.destination,
    });
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        service,
        config.metrics,
        shutdown.signal(),
        config.shutdown_grace,
    ));
    Ok(IdentityServer {
        addr,
        task,
        serving,
    })
}

// === the certify service ===

/// Answers certify requests.
#[derive(Debug)]
pub struct IdentityService {
    pub ca: Arc<Ca>,
    pub tokens: Arc<Authenticator>,
    pub leaf_lifetime: Duration,
    pub metrics: Arc<IdentityMetrics>,
}

/// Why no certificate came out of a well-formed request.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Sign(#[from] CaError),
}

impl IdentityService {
    /// The whole decision for one request: authenticate the token, verify, then sign.
    pub async fn certify(
        &self,
        req: &CertifyRequest,
        now: OffsetDateTime,
    ) -> Result<(IssueDecision, CertifyResponse), CertifyError> {
        let config = VerifyConfig {
            leaf_lifetime: self.leaf_lifetime,
            issuer_not_after: self.ca.issuer_not_after(),
        };
        let identity = self.tokens.authenticate(&req.token).await?;
        let decision = verify(req, &identity, now, &config)?;
        let leaf = self.ca.sign_leaf(
            &decision.public_key,
            &decision.identity,
            decision.not_before,
            decision.not_after,
        )?;
        let response = CertifyResponse {
            chain_pem: self.ca.chain_pem(&leaf),
            valid_until_unix: u64::try_from(leaf.not_after.unix_timestamp()).unwrap_or(0),
        };
        Ok((decision, response))
    }

    /// One HTTP request, answered and logged.
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if req.uri().path() != CERTIFY_PATH {
            self.metrics.refused(BAD_REQUEST);
            debug!(%peer, path = req.uri().path(), "not found");
            return error_response(
                StatusCode::NOT_FOUND,
                format!("no such path; the identity API is POST {CERTIFY_PATH}"),
            );
        }
        if req.method() != Method::POST {
            self.metrics.refused(BAD_REQUEST);
            let mut rsp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{CERTIFY_PATH} takes POST"),
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
                let total = self.metrics.refused(BAD_REQUEST);
                let (status, msg) = if e.downcast_ref::<LengthLimitError>().is_some() {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body larger than {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}"),
                    )
                };
                warn!(%peer, refused_total = total, "refused certificate request: {msg}");
                return error_response(status, msg);
            }
        };
        let creq: CertifyRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                let total = self.metrics.refused(BAD_REQUEST);
                let msg = format!(
                    "the body is not a JSON certify request ({{\"identity\", \"token\", \"csrPem\"}}): {e}"
                );
                warn!(%peer, refused_total = total, "refused certificate request: {msg}");
                return error_response(StatusCode::BAD_REQUEST, msg);
            }
        };
        match self.certify(&creq, OffsetDateTime::now_utc()).await {
            Ok((decision, rsp)) => {
                let total = self.metrics.issued();
                info!(
                    identity = %decision.identity,
                    not_after = %date_time(decision.not_after),
                    %peer,
                    issued_total = total,
                    "issued certificate"
                );
                json_response(StatusCode::OK, &rsp)
            }
            Err(CertifyError::Refused(r)) => {
                let total = self.metrics.refused(r.reason());
                // `?`: the requested identity is the requester's string, quoted and escaped.
                warn!(
                    identity = ?creq.identity,
                    reason = %r.reason(),
                    %peer,
                    refused_total = total,
                    "refused certificate: {r}"
                );
                let status =
                    StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                error_response(status, r.to_string())
            }
            Err(CertifyError::Sign(e)) => {
                error!(identity = ?creq.identity, %peer, "cannot sign: {e}");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the controller could not sign the certificate; see its log".to_string(),
                )
            }
        }
    }
}

/// Everything the proxy API serves.
#[derive(Debug)]
pub struct ProxyApi {
    pub identity: IdentityService,
    pub destination: DestinationService,
}

/// Routes one request on the proxy API.
async fn route(api: &ProxyApi, req: Request<Incoming>, peer: SocketAddr) -> Response<ApiBody> {
    if req.uri().path() == DESTINATION_PATH {
        return api.destination.handle(req.method(), req.uri(), peer);
    }
    api.identity.handle(req, peer).await.map(BodyExt::boxed)
}

// === the listener ===

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    service: Arc<ProxyApi>,
    metrics: Arc<IdentityMetrics>,
    mut shutdown: ShutdownSignal,
    grace: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    conns.spawn(serve_connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        service.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    warn!("proxy API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let in_flight = conns.len();
    if in_flight > 0 {
        info!(connections = in_flight, "proxy API: draining");
    }
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            connections = conns.len(),
            "proxy API: grace period over; closing the remaining connections"
        );
        conns.abort_all();
    }
    info!("proxy API: stopped");
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: Arc<ProxyApi>,
    metrics: Arc<IdentityMetrics>,
    mut shutdown: ShutdownSignal,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics.handshake_failed();
            info!(%peer, "proxy API: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            metrics.handshake_failed();
            info!(%peer, "proxy API: TLS handshake timed out");
            return;
        }
    };
    let svc = hyper::service::service_fn(move |req| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(route(&service, req, peer).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, "proxy API: connection ended: {e}");
            }
        }
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

// === the controller's own certificate ===

/// The controller's serving certificate, swapped in place when renewed.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<(Arc<CertifiedKey>, OffsetDateTime)>,
}

impl ServingCert {
    /// Issues a fresh key and certificate for the controller.
    pub fn issue(
        ca: &Ca,
        identity: &IdentityName,
        names: &[String],
        lifetime: Duration,
    ) -> Result<Self, ServerError> {
        let (key, not_after) = issue_serving_key(ca, identity, names, lifetime)?;
        Ok(Self {
            current: RwLock::new((key, not_after)),
        })
    }

    pub fn not_after(&self) -> OffsetDateTime {
        match self.current.read() {
            Ok(c) => c.1,
            Err(poisoned) => poisoned.into_inner().1,
        }
    }

    fn replace(&self, key: Arc<CertifiedKey>, not_after: OffsetDateTime) {
        match self.current.write() {
            Ok(mut c) => *c = (key, not_after),
            Err(poisoned) => *poisoned.into_inner() = (key, not_after),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn issue_serving_key(
    ca: &Ca,
    identity: &IdentityName,
    names: &[String],
    lifetime: Duration,
) -> Result<(Arc<CertifiedKey>, OffsetDateTime), ServerError> {
    let now = whole_seconds(OffsetDateTime::now_utc());
    if now >= ca.issuer_not_after() {
        return Err(ServerError::ServingCert(format!(
            "the issuer certificate expired on {}",
            date_time(ca.issuer_not_after())
        )));
    }
    let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX);
    let not_after = now
        .checked_add(lifetime)
        .map_or(ca.issuer_not_after(), |t| t.min(ca.issuer_not_after()));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ServerError::ServingCert(e.to_string()))?;
    let leaf = ca.sign_leaf_with_names(&key, identity, names, now - CLOCK_SKEW, not_after)?;
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))?;
    let certified = CertifiedKey::new(ca.chain_der(&leaf), signing);
    Ok((Arc::new(certified), not_after))
}

/// When to renew a certificate issued at `issued` that expires at `not_after`: at 70 % of
/// its lifetime, and never sooner than a second from now.
pub fn renew_in(issued: OffsetDateTime, not_after: OffsetDateTime) -> Duration {
    let lifetime = (not_after - issued).max(time::Duration::ZERO);
    let wait = lifetime * 0.7;
    Duration::try_from(wait)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1))
}

async fn renew_serving_cert(
    serving: Arc<ServingCert>,
    ca: Arc<Ca>,
    identity: IdentityName,
    names: Vec<String>,
    lifetime: Duration,
    metrics: Arc<IdentityMetrics>,
    mut shutdown: ShutdownSignal,
) {
    let mut wait = renew_in(OffsetDateTime::now_utc(), serving.not_after());
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = match issue_serving_key(&ca, &identity, &names, lifetime) {
            Ok((key, not_after)) => {
                serving.replace(key, not_after);
                metrics.set_serving_expiry(not_after.unix_timestamp());
                info!(
                    identity = %identity,
                    not_after = %date_time(not_after),
                    "renewed the controller's serving certificate"
                );
                renew_in(OffsetDateTime::now_utc(), not_after)
            }
            Err(e) => {
                error!("cannot renew the controller's serving certificate (retrying in 10s): {e}");
                Duration::from_secs(10)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca::tests::{generated, load};
    use crate::identity::verify::tests::{csr, registry, request, WEB};
    use rustls::client::danger::ServerCertVerifier;
    use x509_parser::extensions::GeneralName;

    fn service(leaf_lifetime: Duration) -> (IdentityService, crate::identity::ca::Generated) {
        let g = generated();
        let ca = load(&g).unwrap();
        (
            IdentityService {
                ca: Arc::new(ca),
                tokens: Arc::new(Authenticator::Registry(registry())),
                leaf_lifetime,
                metrics: Arc::default(),
            },
            g,
        )
    }

    fn certs(pem: &str) -> Vec<Vec<u8>> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn issued_leaf_has_exactly_the_expected_properties() {
        let (svc, g) = service(Duration::from_secs(24 * 3600));
        let now = whole_seconds(OffsetDateTime::now_utc());
        let (decision, rsp) = svc
            .certify(&request(WEB, "t-web", csr(&[WEB])), now)
            .await
            .unwrap();
        assert_eq!(decision.identity.to_string(), WEB);

        let chain = certs(&rsp.chain_pem);
        assert_eq!(chain.len(), 2, "leaf then issuer");
        assert_eq!(chain[1], certs(&g.issuer_pem)[0]);
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();

        // Signed by the issuer, named by it.
        assert!(leaf.verify_signature(Some(issuer.public_key())).is_ok());
        assert_eq!(leaf.issuer(), issuer.subject());
        // The identity is the only SAN, as a DNS name.
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names, vec![GeneralName::DNSName(WEB)]);
        // serverAuth and clientAuth, nothing else; not a CA; digitalSignature only.
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any && !eku.code_signing && eku.other.is_empty());
        let bc = leaf.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        assert!(!leaf.is_ca());
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        // P-256.
        assert_eq!(
            leaf.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        // Validity: now - 1 min .. now + 24 h.
        let v = leaf.validity();
        assert_eq!(v.not_before.timestamp(), now.unix_timestamp() - 60);
        assert_eq!(v.not_after.timestamp(), now.unix_timestamp() + 24 * 3600);
        assert_eq!(rsp.valid_until_unix as i64, v.not_after.timestamp());
        // Subject left empty (the SAN carries the name).
        assert_eq!(leaf.subject().iter().count(), 0);

        // A second leaf gets another serial.
        let (_, rsp2) = svc
            .certify(&request(WEB, "t-web", csr(&[WEB])), now)
            .await
            .unwrap();
        let second = certs(&rsp2.chain_pem);
        let (_, leaf2) = x509_parser::parse_x509_certificate(&second[0]).unwrap();
        assert_ne!(leaf.raw_serial(), leaf2.raw_serial());
    }

    #[tokio::test]
    async fn issued_chain_verifies_for_the_identity_with_webpki() {
        let (svc, g) = service(Duration::from_secs(3600));
        let (_, rsp) = svc
            .certify(
                &request(WEB, "t-web", csr(&[WEB])),
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        let chain: Vec<_> = certs(&rsp.chain_pem)
            .into_iter()
            .map(rustls_pki_types::CertificateDer::from)
            .collect();
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&g.anchor_pem) {
            roots.add(c.into()).unwrap();
        }
        let roots = Arc::new(roots);
        let provider = crate::tls::provider();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        let name = rustls_pki_types::ServerName::try_from(WEB).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
            .unwrap();
        let other = rustls_pki_types::ServerName::try_from(
            "db.apps.serviceaccount.identity.weft.cluster.local",
        )
        .unwrap();
        assert!(verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], now)
            .is_err());
        // And as a client certificate (mTLS between proxies).
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        client
            .verify_client_cert(&chain[0], &chain[1..], now)
            .unwrap();
    }

    #[test]
    fn serving_certificate_names_the_controller() {
        let (svc, _) = service(Duration::from_secs(3600));
        let id = weft_api::certify::controller_identity("weft", "cluster.local").unwrap();
        let names = ["weft-controller.weft.svc".to_string()];
        let serving = ServingCert::issue(&svc.ca, &id, &names, Duration::from_secs(3600)).unwrap();
        let key = serving.current();
        assert_eq!(key.cert.len(), 2);
        let (_, leaf) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![
                GeneralName::DNSName(
                    "weft-controller.weft.serviceaccount.identity.weft.cluster.local"
                ),
                GeneralName::DNSName("weft-controller.weft.svc"),
            ]
        );
        let before = serving.not_after();
        let (k2, after) =
            issue_serving_key(&svc.ca, &id, &names, Duration::from_secs(7200)).unwrap();
        serving.replace(k2, after);
        assert!(serving.not_after() > before);
    }

    #[test]
    fn renews_at_seventy_percent() {
        let t = OffsetDateTime::now_utc();
        assert_eq!(
            renew_in(t, t + time::Duration::hours(24)),
            Duration::from_secs(24 * 3600 * 7 / 10)
        );
        assert_eq!(
            renew_in(t, t + time::Duration::seconds(10)),
            Duration::from_secs(7)
        );
        assert_eq!(renew_in(t, t), Duration::from_secs(1));
        assert_eq!(
            renew_in(t, t - time::Duration::hours(1)),
            Duration::from_secs(1)
        );
    }
}
