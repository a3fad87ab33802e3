//! Mutual TLS between proxies and TLS to the controller: TLS 1.3 only, rustls with ring.
//!
//! - [`TlsContext::connect`]: the outbound side of a meshed hop. Presents this proxy's
//!   certificate, requires the server's certificate to name exactly the identity discovery
//!   expects, negotiates ALPN for the protocol inside, then writes the [`mesh::Header`].
//! - [`TlsContext::accept`]: the inbound side. Requires a client certificate chained to the
//!   trust anchors, requires the SNI to be this proxy's own identity, reads the header and
//!   accepts the client's identity claim only if its certificate is valid for that name.

use crate::detect::Protocol;
use crate::identity::Store;
use crate::mesh::{self, Header, HeaderError};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Why a meshed handshake failed. Nothing of the application's passes on any of these.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read trust anchors {path}: {reason}")]
    Anchors { path: String, reason: String },
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("client asked for {0:?}, not this proxy's identity")]
    WrongSni(Option<String>),
    #[error("no usable ALPN protocol was negotiated")]
    Alpn,
    #[error("bad mesh header: {0}")]
    Header(#[from] HeaderError),
    #[error("client certificate is not valid for its claimed identity {0}")]
    IdentityMismatch(String),
    #[error("client presented no certificate")]
    NoClientCert,
    #[error("I/O error on the mesh connection: {0}")]
    Io(#[from] io::Error),
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl TlsError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::Anchors { .. } | TlsError::Rustls(_) | TlsError::Verifier(_) => "config",
            TlsError::Handshake(_) => "handshake",
            TlsError::Timeout => "timeout",
            TlsError::WrongSni(_) => "wrong_sni",
            TlsError::Alpn => "alpn",
            TlsError::Header(_) => "header",
            TlsError::IdentityMismatch(_) => "identity_mismatch",
            TlsError::NoClientCert => "no_client_cert",
            TlsError::Io(_) => "io",
        }
    }
}

/// The crypto provider: ring. rustls 0.23.48 deprecates it because ring has no
/// post-quantum key exchange; Weft keeps it on purpose for now, because aws-lc-rs costs
/// 0.8–1.8 MiB more per static ARM binary (docs/benchmarks.md). Revisit when the size
/// budget allows.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors every identity chains to.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
}

impl TrustAnchors {
    pub fn from_pem(pem: &[u8], path: &str) -> Result<Self, TlsError> {
        let err = |reason: String| TlsError::Anchors {
            path: path.to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(err("no certificates found".into()));
        }
        let mut roots = RootCertStore::empty();
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
        Ok(TrustAnchors {
            roots: Arc::new(roots),
        })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, TlsError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| TlsError::Anchors {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&pem, &shown)
    }
}

/// Client configuration for talking to the controller (server auth only, ALPN h2).
pub fn controller_client_config(trust: &TrustAnchors) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(trust.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Everything a proxy with an identity needs for meshed hops.
#[derive(Debug)]
pub struct TlsContext {
    pub local_identity: String,
    pub store: Arc<Store>,
    server: Arc<ServerConfig>,
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
    opaque: Arc<ClientConfig>,
    handshake_timeout: Duration,
}

impl TlsContext {
    pub fn new(
        local_identity: String,
        trust: &TrustAnchors,
        store: Arc<Store>,
        handshake_timeout: Duration,
    ) -> Result<Self, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(trust.roots.clone(), provider()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(store.clone());
        server.alpn_protocols = vec![
            mesh::ALPN_HTTP2.to_vec(),
            mesh::ALPN_HTTP1.to_vec(),
            mesh::ALPN_OPAQUE.to_vec(),
        ];
        let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, TlsError> {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(trust.roots.clone())
                .with_client_cert_resolver(store.clone());
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(TlsContext {
            local_identity,
            http1: client(mesh::ALPN_HTTP1)?,
            http2: client(mesh::ALPN_HTTP2)?,
            opaque: client(mesh::ALPN_OPAQUE)?,
            server: Arc::new(server),
            store,
            handshake_timeout,
        })
    }

    /// Opens a meshed connection to `target` (a peer's inbound port), requiring the server
    /// to be `server_identity`, for `protocol` traffic to the peer's `app_port`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        server_identity: &str,
        protocol: Protocol,
        app_port: u16,
    ) -> Result<client::TlsStream<TcpStream>, TlsError> {
        let config = match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
            Protocol::Opaque => &self.opaque,
        };
        let name = ServerName::try_from(server_identity.to_string())
            .map_err(|_| TlsError::WrongSni(Some(server_identity.to_string())))?;
        let handshake = TlsConnector::from(config.clone()).connect(name, tcp);
        let mut tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(TlsError::Handshake(e)),
            Err(_) => return Err(TlsError::Timeout),
        };
        let header = Header {
            port: app_port,
            client_identity: self.local_identity.clone(),
        }
        .encode()?;
        tls.write_all(&header).await?;
        Ok(tls)
    }

    /// Terminates a meshed connection: returns the stream, the protocol inside, the
    /// application port and the client's verified identity.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(server::TlsStream<TcpStream>, Protocol, Header), TlsError> {
        let accepted = async {
            let mut tls = TlsAcceptor::from(self.server.clone())
                .accept(tcp)
                .await
                .map_err(TlsError::Handshake)?;
            let (_, conn) = tls.get_ref();
            let sni = conn.server_name().map(str::to_string);
            if sni.as_deref() != Some(self.local_identity.as_str()) {
                return Err(TlsError::WrongSni(sni));
            }
            let protocol = mesh::protocol_for(conn.alpn_protocol()).ok_or(TlsError::Alpn)?;
            let leaf = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned()
                .ok_or(TlsError::NoClientCert)?;
            let header = Header::read(&mut tls).await??;
            verify_identity(&leaf, &header.client_identity)?;
            Ok((tls, protocol, header))
        };
        match tokio::time::timeout(self.handshake_timeout, accepted).await {
            Ok(res) => res,
            Err(_) => Err(TlsError::Timeout),
        }
    }
}

/// Checks that a (chain-verified) certificate is valid for `identity`.
pub fn verify_identity(leaf: &CertificateDer<'_>, identity: &str) -> Result<(), TlsError> {
    let mismatch = || TlsError::IdentityMismatch(identity.to_string());
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|_| mismatch())?;
    let name = ServerName::try_from(identity).map_err(|_| mismatch())?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| mismatch())
}
