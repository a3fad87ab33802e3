//! Identity end to end: the real `weft` binary generates a CA, runs the controller on a free
//! loopback port, and this test acts as a proxy — a P-256 key and CSR made with rcgen, a
//! rustls client that checks the controller's certificate against `ca.crt` and the
//! controller's identity, HTTP/2 with hyper.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use weft_api::certify::{CertifyRequest, CertifyResponse, ErrorResponse, CERTIFY_PATH};

const WEB: &str = "web.apps.serviceaccount.identity.weft.cluster.local";
const DB: &str = "db.apps.serviceaccount.identity.weft.cluster.local";
const CONTROLLER: &str = "weft-controller.weft.serviceaccount.identity.weft.cluster.local";
const TOKENS: &str = "\
# the file backend's token registry
tokens:
  - token: token-web
    serviceAccount: web
    namespace: apps
  - token: token-db
    serviceAccount: db
    namespace: apps
services: []   # read by discovery, later; ignored today
";

// === helpers ===

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "weft-identity-{name}-{}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("run weft")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `weft identity generate --out DIR` into a fresh directory.
fn generate(dir: &Path) -> Output {
    let out = weft(&["identity", "generate", "--out", dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    out
}

fn write_tokens(dir: &Path) -> PathBuf {
    let p = dir.join("weft.yaml");
    std::fs::write(&p, TOKENS).unwrap();
    p
}

/// A `weft controller` child process on 127.0.0.1:0.
struct Controller {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Controller {
    fn start(identity_dir: &Path, config: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "controller",
                "--identity-dir",
                identity_dir.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--proxy-api-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weft controller");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(addr) = line.strip_prefix("weft controller: proxy API listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the controller did not report its address\nstdout:\n{}\nstderr:\n{}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
        };
        Controller {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    /// SIGTERM, then wait for the exit.
    fn stop(mut self) -> (ExitStatus, String, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the controller ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads catch up with the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn anchors(ca_crt: &Path) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_crt).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(roots)
}

#[allow(deprecated)] // ring, as in the proxy (see controlplane/src/tls.rs)
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Connects like a proxy: TLS 1.3, ALPN h2, the controller's certificate checked against
/// `roots` for `server_name`.
async fn connect(
    addr: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    server_name: &str,
) -> Result<Sender, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn certify(send: &mut Sender, req: &CertifyRequest) -> (u16, Bytes) {
    let req = http::Request::post(format!("https://{CONTROLLER}{CERTIFY_PATH}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(req).unwrap())))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    (status, rsp.into_body().collect().await.unwrap().to_bytes())
}

/// A proxy's key and CSR naming `names`.
fn csr(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn request(identity: &str, token: &str, csr_pem: String) -> CertifyRequest {
    CertifyRequest {
        identity: identity.into(),
        token: token.into(),
        csr_pem,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `YYYY-MM-DD` of a certificate's notAfter.
fn not_after_date(pem_file: &Path) -> String {
    let der = CertificateDer::from_pem_file(pem_file).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let t = cert.validity().not_after.to_datetime();
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_then_certify_like_a_proxy() {
    let dir = TempDir::new("e2e");
    let out = generate(dir.path());
    let (stdout, stderr) = text(&out);
    for f in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(
            stdout.contains(&dir.path().join(f).display().to_string()),
            "{f} not listed:\n{stdout}"
        );
    }
    let issuer_date = not_after_date(&dir.path().join("issuer.crt"));
    let anchor_date = not_after_date(&dir.path().join("ca.crt"));
    assert!(
        stderr.contains(&format!(
            "WARNING: the issuer certificate expires on {issuer_date}; rotate it before then (see docs/identity.md)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "WARNING: the trust anchor expires on {anchor_date}; replace it before then"
        )),
        "{stderr}"
    );

    let config = write_tokens(dir.path());
    let controller = Controller::start(dir.path(), &config, &["--leaf-lifetime", "1h"]);
    assert_eq!(controller.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(controller.addr.port(), 0);
    let roots = anchors(&dir.path().join("ca.crt"));
    let mut send = connect(controller.addr, roots.clone(), CONTROLLER)
        .await
        .expect("handshake with the controller");

    // Issued: a chain that verifies against the anchor for exactly the identity.
    let (status, body) = certify(&mut send, &request(WEB, "token-web", csr(&[WEB]))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rsp: CertifyResponse = serde_json::from_slice(&body).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(rsp.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(chain.len(), 2, "leaf then issuer");
    assert_eq!(
        chain[1],
        CertificateDer::from_pem_file(dir.path().join("issuer.crt")).unwrap()
    );
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .unwrap();
    let web = ServerName::try_from(WEB).unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &web, &[], UnixTime::now())
        .expect("the leaf verifies against ca.crt for its identity");
    let db = ServerName::try_from(DB).unwrap();
    assert!(verifier
        .verify_server_cert(&chain[0], &chain[1..], &db, &[], UnixTime::now())
        .is_err());
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .unwrap();
    client_verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .expect("the leaf is good for client auth too");
    let expected = unix_now() + 3600;
    assert!(
        rsp.valid_until_unix.abs_diff(expected) <= 5,
        "validUntilUnix {} vs now+1h {expected}",
        rsp.valid_until_unix
    );
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp() as u64,
        rsp.valid_until_unix
    );

    // Refusals, each with its status and reason.
    let cases: Vec<(&str, CertifyRequest, u16, String)> = vec![
        (
            "unknown token",
            request(WEB, "token-nobody", csr(&[WEB])),
            401,
            "unknown token".to_string(),
        ),
        (
            "token for another service account",
            request(WEB, "token-db", csr(&[WEB])),
            403,
            format!("the token is for identity \"{DB}\", not \"{WEB}\""),
        ),
        (
            "CSR naming another identity",
            request(WEB, "token-web", csr(&[DB])),
            400,
            format!(
                "the CSR must name exactly \"{WEB}\" as its only subject alternative name (a DNS name); it had DNS:{DB}"
            ),
        ),
        (
            "garbage CSR",
            request(WEB, "token-web", "garbage".to_string()),
            400,
            "invalid CSR: csrPem is not a PEM \"-----BEGIN CERTIFICATE REQUEST-----\" block"
                .to_string(),
        ),
    ];
    for (name, req, want_status, want_error) in cases {
        let (status, body) = certify(&mut send, &req).await;
        assert_eq!(
            status,
            want_status,
            "{name}: {}",
            String::from_utf8_lossy(&body)
        );
        let err: ErrorResponse = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{name}: not an ErrorResponse ({e})"));
        assert_eq!(err.error, want_error, "{name}");
    }

    // SIGTERM: a clean exit, with every decision logged.
    let addr = controller.addr;
    let (status, stdout, stderr) = controller.stop();
    assert!(status.success(), "exit {status}\n{stderr}");
    assert_eq!(
        stdout.lines().next(),
        Some(format!("weft controller: proxy API listening on {addr}").as_str()),
        "{stdout}"
    );
    assert!(stderr.contains("issued certificate"), "{stderr}");
    assert!(stderr.contains(&format!("identity={WEB}")), "{stderr}");
    assert_eq!(
        stderr.matches("refused certificate").count(),
        4,
        "one log line per refusal:\n{stderr}"
    );
    assert!(stderr.contains("reason=unknown_token"), "{stderr}");
    assert!(
        stderr.contains("stopped issued_total=1 refused_total=4"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_expecting_another_identity_or_anchor_fails_the_handshake() {
    let dir = TempDir::new("handshake");
    generate(dir.path());
    let config = write_tokens(dir.path());
    let controller = Controller::start(dir.path(), &config, &["--admin-addr", "127.0.0.1:0"]);
    let roots = anchors(&dir.path().join("ca.crt"));

    // Another controller identity (another control-plane namespace).
    let err = connect(
        controller.addr,
        roots.clone(),
        "weft-controller.other.serviceaccount.identity.other.cluster.local",
    )
    .await
    .expect_err("the handshake must fail");
    assert!(err.contains("not valid for name"), "{err}");

    // A workload's name is not the controller's either.
    let err = connect(controller.addr, roots.clone(), WEB)
        .await
        .expect_err("the handshake must fail");
    assert!(err.contains("not valid for name"), "{err}");

    // Another mesh's anchor does not trust this controller.
    let other = TempDir::new("handshake-other");
    generate(other.path());
    let err = connect(
        controller.addr,
        anchors(&other.path().join("ca.crt")),
        CONTROLLER,
    )
    .await
    .expect_err("the handshake must fail");
    // Both anchors are named CN=root.weft.cluster.local, so webpki tries this one and
    // finds the signature wrong; with another name it would be UnknownIssuer.
    assert!(
        err.starts_with("invalid peer certificate: ")
            && (err.contains("BadSignature") || err.contains("UnknownIssuer")),
        "{err}"
    );

    // The right name and anchor still work.
    connect(controller.addr, roots, CONTROLLER).await.unwrap();

    // The failures are counted on the admin server.
    let admin = controller
        .stdout
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("weft controller: admin listening on "))
        .map(|a| a.parse::<SocketAddr>().unwrap())
        .expect("admin address printed");
    let metrics = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("identity_tls_handshake_failures_total 3\n"),
        "{metrics}"
    );
    let (status, _, _) = controller.stop();
    assert!(status.success());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_file_names_are_accepted() {
    let dir = TempDir::new("cert-manager");
    generate(dir.path());
    std::fs::rename(dir.path().join("issuer.crt"), dir.path().join("tls.crt")).unwrap();
    std::fs::rename(dir.path().join("issuer.key"), dir.path().join("tls.key")).unwrap();
    let config = write_tokens(dir.path());
    let controller = Controller::start(dir.path(), &config, &[]);
    let mut send = connect(
        controller.addr,
        anchors(&dir.path().join("ca.crt")),
        CONTROLLER,
    )
    .await
    .unwrap();
    let (status, body) = certify(&mut send, &request(DB, "token-db", csr(&[DB]))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rsp: CertifyResponse = serde_json::from_slice(&body).unwrap();
    let expected = unix_now() + 24 * 3600;
    assert!(
        rsp.valid_until_unix.abs_diff(expected) <= 5,
        "24h by default"
    );
    let (status, _, _) = controller.stop();
    assert!(status.success());
}

#[test]
fn generate_refuses_to_overwrite() {
    let dir = TempDir::new("overwrite");
    generate(dir.path());
    let key = dir.path().join("issuer.key");
    let before = std::fs::read(&key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let out = weft(&[
        "identity",
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.starts_with("weft identity generate: refusing to overwrite "),
        "{stderr}"
    );
    assert!(stderr.contains("pass --force to replace them"), "{stderr}");
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is untouched");

    let out = weft(&[
        "identity",
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--force",
        "--issuer-lifetime",
        "720h",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_ne!(
        std::fs::read(&key).unwrap(),
        before,
        "replaced with --force"
    );
    let der = CertificateDer::from_pem_file(dir.path().join("issuer.crt")).unwrap();
    let (_, issuer) = x509_parser::parse_x509_certificate(&der).unwrap();
    let lifetime = issuer.validity().not_after.timestamp() - unix_now() as i64;
    assert!((lifetime - 720 * 3600).abs() <= 5, "{lifetime}");
}

#[test]
fn generate_refuses_bad_lifetimes() {
    let dir = TempDir::new("lifetimes");
    let d = dir.path().to_str().unwrap();
    for (args, want) in [
        (
            vec!["--anchor-lifetime", "1h", "--issuer-lifetime", "2h"],
            "must not be longer",
        ),
        (vec!["--issuer-lifetime", "24"], "missing unit"),
        (vec!["--trust-domain", "Not..Valid"], "trust domain"),
    ] {
        let mut all = vec!["identity", "generate", "--out", d];
        all.extend(args);
        let out = weft(&all);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{all:?}: {stdout}");
        assert!(stderr.contains(want), "{all:?}: {stderr}");
    }
    assert!(!dir.path().join("issuer.key").exists());
}

#[test]
fn a_controller_with_a_corrupt_issuer_key_exits_naming_the_file() {
    let dir = TempDir::new("corrupt");
    generate(dir.path());
    let key = dir.path().join("issuer.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = write_tokens(dir.path());
    let out = weft(&[
        "controller",
        "--identity-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--proxy-api-addr",
        "127.0.0.1:0",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("weft controller: issuer key {}", key.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("listening"), "{stdout}");

    // A key from another issuer: named as a mismatch.
    let other = TempDir::new("corrupt-other");
    generate(other.path());
    std::fs::copy(other.path().join("issuer.key"), &key).unwrap();
    let out = weft(&[
        "controller",
        "--identity-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--proxy-api-addr",
        "127.0.0.1:0",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "issuer key {} does not match the issuer certificate {}",
            key.display(),
            dir.path().join("issuer.crt").display()
        )),
        "{stderr}"
    );

    // A missing identity directory and a bad config file are named too.
    let out = weft(&[
        "controller",
        "--identity-dir",
        "/nonexistent/weft-identity",
        "--config",
        config.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("/nonexistent/weft-identity"), "{stderr}");

    std::fs::write(&config, "tokens:\n  - token: x\n    serviceAcount: web\n").unwrap();
    let out = weft(&[
        "controller",
        "--identity-dir",
        other.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--proxy-api-addr",
        "127.0.0.1:0",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("config file {}", config.display()))
            && stderr.contains("unknown field `serviceAcount`"),
        "{stderr}"
    );
}
