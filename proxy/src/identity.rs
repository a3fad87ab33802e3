//! The proxy's workload identity: a P-256 key generated in memory at start (never written
//! anywhere), a certificate for it obtained from the controller with the service-account
//! token, and renewal at 70 % of the certificate's lifetime, with backoff and jitter when
//! the controller cannot be reached.
//!
//! [`Store`] holds the current certificate and hands it to rustls for every handshake, so a
//! renewal takes effect on the next connection without rebuilding any TLS configuration.
//! `/ready` waits for the first certificate ([`Store::ready`]).

use crate::config::IdentityConfig;
use crate::metrics::Metrics;
use crate::tls;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_api::certify::{CertifyRequest, CertifyResponse, ErrorResponse, CERTIFY_PATH};

/// Largest certify response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Renew when this fraction of the remaining lifetime has passed.
const REFRESH_FRACTION: f64 = 0.7;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the service-account token {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot generate a key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("cannot reach the controller at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with the controller failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP/2 with the controller failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the controller refused the certificate request ({status}): {reason}")]
    Refused { status: StatusCode, reason: String },
    #[error("the controller's answer is unusable: {0}")]
    BadResponse(String),
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The current certificate, shared with rustls.
#[derive(Debug)]
pub struct Store {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    ready: watch::Sender<bool>,
}

impl Store {
    pub fn new() -> Arc<Self> {
        Arc::new(Store {
            current: RwLock::new(None),
            ready: watch::channel(false).0,
        })
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut g) => *g = Some(key),
            Err(p) => *p.into_inner() = Some(key),
        }
        self.ready.send_replace(true);
    }

    /// Completes once the first certificate is held.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}

impl ResolvesClientCert for Store {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Store {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// When to renew a certificate valid until `valid_until`, seen at `now`.
pub fn refresh_in(now: SystemTime, valid_until: SystemTime) -> Duration {
    let remaining = valid_until.duration_since(now).unwrap_or(Duration::ZERO);
    remaining.mul_f64(REFRESH_FRACTION)
}

/// How long to wait after `failures` consecutive failures; `jitter` in [0, 1) spreads
/// retries of many proxies over up to +25 %.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX);
    base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
}

/// A cheap jitter source: the clock's sub-second nanoseconds.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Obtains and renews the proxy's certificate for as long as the process runs.
pub struct Certifier {
    config: IdentityConfig,
    key: rcgen::KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    controller: Arc<rustls::ClientConfig>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl Certifier {
    pub fn new(
        config: IdentityConfig,
        trust: &tls::TrustAnchors,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = tls::provider().key_provider.load_private_key(der)?;
        let controller = tls::controller_client_config(trust)?;
        Ok(Certifier {
            config,
            key,
            signing_key,
            controller,
            store,
            metrics,
        })
    }

    /// Renews forever: at 70 % of each certificate's lifetime, or with backoff after a failure.
    pub async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            let wait = match self.certify().await {
                Ok(valid_until) => {
                    failures = 0;
                    self.metrics.identity_refresh("success");
                    let wait = refresh_in(SystemTime::now(), valid_until);
                    tracing::info!(identity = %self.config.name, renew_in = ?wait, "certificate issued");
                    wait
                }
                Err(e) => {
                    self.metrics.identity_refresh("failure");
                    let wait = backoff(failures, jitter());
                    failures = failures.saturating_add(1);
                    tracing::warn!(identity = %self.config.name, retry_in = ?wait, "certificate request failed: {e}");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One certificate request; on success the store holds the new certificate.
    async fn certify(&self) -> Result<SystemTime, IdentityError> {
        // A few hundred bytes from a local (projected) file: a blocking read is fine.
        let token = std::fs::read_to_string(&self.config.token_file).map_err(|source| {
            IdentityError::Token {
                path: self.config.token_file.display().to_string(),
                source,
            }
        })?;
        let params = rcgen::CertificateParams::new(vec![self.config.name.clone()])?;
        let csr_pem = params.serialize_request(&self.key)?.pem()?;
        let body = serde_json::to_vec(&CertifyRequest {
            identity: self.config.name.clone(),
            token: token.trim().to_string(),
            csr_pem,
        })
        .map_err(|e| IdentityError::BadResponse(e.to_string()))?;

        let rsp = self.post(Bytes::from(body)).await?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(rsp.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| IdentityError::BadResponse(format!("chain is not PEM: {e}")))?;
        if chain.is_empty() {
            return Err(IdentityError::BadResponse("empty certificate chain".into()));
        }
        let valid_until = UNIX_EPOCH + Duration::from_secs(rsp.valid_until_unix);
        self.store
            .set(Arc::new(CertifiedKey::new(chain, self.signing_key.clone())));
        self.metrics.identity_expiry(rsp.valid_until_unix);
        Ok(valid_until)
    }

    async fn post(&self, body: Bytes) -> Result<CertifyResponse, IdentityError> {
        let addr = &self.config.controller_addr;
        let tcp = tokio::net::TcpStream::connect(addr.as_str())
            .await
            .map_err(|source| IdentityError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let name = ServerName::try_from(self.config.controller_name.clone())
            .map_err(|e| IdentityError::BadResponse(format!("controller name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.controller.clone())
            .connect(name, tcp)
            .await
            .map_err(IdentityError::Tls)?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::post(format!(
            "https://{}{}",
            self.config.controller_name, CERTIFY_PATH
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| IdentityError::BadResponse(e.to_string()))?;
        let rsp = sender.send_request(req).await?;
        let status = rsp.status();
        let bytes = Limited::new(rsp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| IdentityError::BadResponse(format!("reading the body: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let reason = serde_json::from_slice::<ErrorResponse>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(IdentityError::Refused { status, reason });
        }
        serde_json::from_slice(&bytes).map_err(|e| IdentityError::BadResponse(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_seventy_percent() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cases = [
            (Duration::from_secs(86_400), Duration::from_secs(60_480)),
            (Duration::from_secs(10), Duration::from_secs(7)),
            (Duration::ZERO, Duration::ZERO),
        ];
        for (lifetime, expected) in cases {
            assert_eq!(refresh_in(now, now + lifetime), expected, "{lifetime:?}");
        }
        // Already expired: renew at once.
        assert_eq!(
            refresh_in(now, now - Duration::from_secs(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        let cases = [
            (0, 0.0, Duration::from_millis(200)),
            (1, 0.0, Duration::from_millis(400)),
            (3, 0.0, Duration::from_millis(1600)),
            (20, 0.0, BACKOFF_MAX),
            (0, 1.0, Duration::from_millis(250)),
            (20, 0.5, BACKOFF_MAX.mul_f64(1.125)),
        ];
        for (failures, j, expected) in cases {
            assert_eq!(backoff(failures, j), expected, "{failures} {j}");
        }
    }
}
