//! A test double of the controller: a real CA (rcgen) and a destination table behind a
//! real HTTP/2-over-TLS server speaking the certify and destination APIs, on 127.0.0.1:0.
//! It records every CSR's public key so tests can tell renewals and restarts apart, and
//! streams destination updates (snapshot, then diffs) as a test changes the table. It can
//! be stopped to show proxies surviving a controller outage. The real controller is tested
//! against the real proxy in the workspace end-to-end suite.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_api::certify::{CertifyRequest, CertifyResponse, ErrorResponse};
use weft_api::destination::{self, Kind, Snapshot, Update};

/// The destination table: address → its current state.
pub type Destinations = Arc<Mutex<HashMap<SocketAddr, watch::Sender<Snapshot>>>>;

pub const CONTROLLER_ID: &str = "weft-controller.weft.serviceaccount.identity.weft.cluster.local";

pub fn identity(sa: &str) -> String {
    format!("{sa}.apps.serviceaccount.identity.weft.cluster.local")
}

/// (identity, public key) of every certificate request, in order.
pub type Issued = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub struct TestCa {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    anchor_pem: String,
    issuer_pem: String,
    issuer: Arc<Issuer<'static, KeyPair>>,
    /// Every public key that asked for a certificate, in order, with its identity.
    pub issued: Issued,
    pub destinations: Destinations,
    server: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

struct State {
    destinations: Destinations,
    issuer: Arc<Issuer<'static, KeyPair>>,
    issuer_pem: String,
    tokens: HashMap<String, String>,
    lifetime: Duration,
    issued: Issued,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

pub fn leaf_params(name: &str, lifetime: Duration) -> CertificateParams {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(1);
    p.not_after = now + time::Duration::try_from(lifetime).unwrap();
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p
}

/// A self-contained CA with no server: for foreign certificates.
pub struct BareCa {
    pub anchor_pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

impl BareCa {
    pub fn new(name: &str) -> BareCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        BareCa {
            anchor_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `name` with its key, as rustls wants them.
    pub fn leaf(
        &self,
        name: &str,
        lifetime: Duration,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = leaf_params(name, lifetime)
            .signed_by(&key, &self.issuer)
            .unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

impl TestCa {
    /// Starts the CA. `tokens` maps token → service account (namespace `apps`).
    pub async fn start(tokens: &[(&str, &str)], lifetime: Duration) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "weft-ca-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let anchor_params = ca_params("weft test trust anchor");
        let anchor_cert = anchor_params.self_signed(&anchor_key).unwrap();
        let anchor = Issuer::new(anchor_params, anchor_key);
        let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer_params = ca_params("weft test issuer");
        let issuer_cert = issuer_params.signed_by(&issuer_key, &anchor).unwrap();
        let issuer = Arc::new(Issuer::new(issuer_params, issuer_key));
        std::fs::write(dir.join("ca.crt"), anchor_cert.pem()).unwrap();
        for (token, sa) in tokens {
            std::fs::write(dir.join(format!("{sa}.token")), token).unwrap();
        }

        // The controller's own serving certificate.
        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let server_cert = leaf_params(CONTROLLER_ID, Duration::from_secs(3600))
            .signed_by(&server_key, &*issuer)
            .unwrap();
        let chain = vec![server_cert.der().clone(), issuer_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(weft_proxy::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let issued = Arc::new(Mutex::new(Vec::new()));
        let destinations: Destinations = Arc::default();
        let state = Arc::new(State {
            destinations: destinations.clone(),
            issuer: issuer.clone(),
            issuer_pem: issuer_cert.pem(),
            tokens: tokens
                .iter()
                .map(|(t, sa)| (t.to_string(), identity(sa)))
                .collect(),
            lifetime,
            issued: issued.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let tracked = conns.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = state.clone();
                let conn = tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| route(req, state.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
                tracked.lock().unwrap().push(conn);
            }
        });
        TestCa {
            dir,
            addr,
            anchor_pem: anchor_cert.pem(),
            issuer_pem: issuer_cert.pem(),
            issuer,
            issued,
            destinations,
            server,
            conns,
        }
    }

    /// Sets what `addr` is; subscribers get the change.
    pub fn set_destination(&self, addr: SocketAddr, snapshot: Snapshot) {
        let mut table = self.destinations.lock().unwrap();
        match table.get(&addr) {
            Some(tx) => {
                tx.send_replace(snapshot);
            }
            None => {
                table.insert(addr, watch::channel(snapshot).0);
            }
        }
    }

    /// Stops the controller: closes the listener and every connection.
    pub fn stop(&self) {
        self.server.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Proxy configuration for a workload with service account `sa` (its token file must
    /// exist, i.e. `sa` was given to [`TestCa::start`], unless testing a missing token).
    pub fn proxy_env(&self, sa: &str) -> Vec<(String, String)> {
        vec![
            ("WEFT_PROXY_IDENTITY_NAME".into(), identity(sa)),
            (
                "WEFT_PROXY_IDENTITY_TRUST_ANCHORS".into(),
                self.dir.join("ca.crt").display().to_string(),
            ),
            (
                "WEFT_PROXY_IDENTITY_TOKEN_FILE".into(),
                self.dir.join(format!("{sa}.token")).display().to_string(),
            ),
            (
                "WEFT_PROXY_IDENTITY_CONTROLLER_ADDR".into(),
                self.addr.to_string(),
            ),
            (
                "WEFT_PROXY_IDENTITY_CONTROLLER_NAME".into(),
                CONTROLLER_ID.into(),
            ),
        ]
    }

    pub fn anchor_pem(&self) -> &str {
        &self.anchor_pem
    }

    /// A leaf signed by this CA's issuer (chain: leaf, issuer), for hand-made clients.
    pub fn leaf(
        &self,
        name: &str,
        lifetime: Duration,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = leaf_params(name, lifetime)
            .signed_by(&key, &*self.issuer)
            .unwrap();
        let issuer =
            rustls_pki_types::pem::PemObject::from_pem_slice(self.issuer_pem.as_bytes()).unwrap();
        (
            vec![cert.der().clone(), issuer],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    pub fn issued_count(&self, sa: &str) -> usize {
        self.issued
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| *id == identity(sa))
            .count()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type ApiBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn route(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<ApiBody>, hyper::Error> {
    if req.uri().path() == weft_api::destination::DESTINATION_PATH {
        return Ok(destination_stream(req, &state));
    }
    Ok(certify(req, state).await?.map(|b| b.boxed()))
}

/// Streams NDJSON updates for `?addr=`: a snapshot, then diffs as the table changes.
fn destination_stream(req: Request<Incoming>, state: &State) -> Response<ApiBody> {
    let addr: Option<SocketAddr> = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("addr="))
        .and_then(|a| a.parse().ok());
    let Some(addr) = addr else {
        let mut rsp =
            Response::new(Full::new(Bytes::from_static(b"{\"error\":\"bad addr\"}")).boxed());
        *rsp.status_mut() = StatusCode::BAD_REQUEST;
        return rsp;
    };
    let mut rx = {
        let mut table = state.destinations.lock().unwrap();
        table
            .entry(addr)
            .or_insert_with(|| {
                watch::channel(Snapshot {
                    kind: Kind::Unknown,
                    service: None,
                    endpoints: vec![],
                    route: Default::default(),
                    workload_done: false,
                })
                .0
            })
            .subscribe()
    };
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let line = |u: &Update| Bytes::from(format!("{}\n", serde_json::to_string(u).unwrap()));
        let mut last = rx.borrow_and_update().clone();
        if tx
            .send(line(&Update::Snapshot(last.clone())))
            .await
            .is_err()
        {
            return;
        }
        while rx.changed().await.is_ok() {
            let next = rx.borrow_and_update().clone();
            for u in destination::diff(&last, &next) {
                if tx.send(line(&u)).await.is_err() {
                    return;
                }
            }
            last = next;
        }
    });
    let stream = http_body_util::StreamBody::new(ReceiverStream(body_rx));
    Response::new(stream.boxed())
}

/// An mpsc receiver as a stream of body frames.
struct ReceiverStream(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn certify(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let answer = match serde_json::from_slice::<CertifyRequest>(&body) {
        Err(e) => Err((StatusCode::BAD_REQUEST, e.to_string())),
        Ok(req) => sign(&req, &state),
    };
    let (status, json) = match answer {
        Ok(rsp) => (StatusCode::OK, serde_json::to_vec(&rsp).unwrap()),
        Err((status, error)) => (
            status,
            serde_json::to_vec(&ErrorResponse { error }).unwrap(),
        ),
    };
    let mut rsp = Response::new(Full::new(Bytes::from(json)));
    *rsp.status_mut() = status;
    Ok(rsp)
}

fn sign(req: &CertifyRequest, state: &State) -> Result<CertifyResponse, (StatusCode, String)> {
    let Some(allowed) = state.tokens.get(&req.token) else {
        return Err((StatusCode::UNAUTHORIZED, "unknown token".into()));
    };
    if *allowed != req.identity {
        return Err((
            StatusCode::FORBIDDEN,
            format!("token is for {allowed}, not {}", req.identity),
        ));
    }
    let csr = CertificateSigningRequestParams::from_pem(&req.csr_pem)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad CSR: {e}")))?;
    state
        .issued
        .lock()
        .unwrap()
        .push((req.identity.clone(), csr.public_key.der_bytes().to_vec()));
    let params = leaf_params(&req.identity, state.lifetime);
    let leaf = params
        .signed_by(&csr.public_key, &*state.issuer)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let valid_until = SystemTime::now() + state.lifetime;
    Ok(CertifyResponse {
        chain_pem: format!("{}{}", leaf.pem(), state.issuer_pem),
        valid_until_unix: valid_until.duration_since(UNIX_EPOCH).unwrap().as_secs(),
    })
}
