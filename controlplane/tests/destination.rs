//! Discovery and the destination API end to end: the real `weft` binary generates a CA and
//! runs the controller with the file backend on a free loopback port; this test connects
//! like a proxy (rustls checking the controller's identity, HTTP/2 with hyper), subscribes
//! to addresses, edits the config file, and reads exactly what a proxy would.
//!
//! Every address in the config is made up (198.18.0.0/15) and only ever data: nothing
//! connects to it.

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use weft_api::certify::ErrorResponse;
use weft_api::destination::DESTINATION_PATH;

const CONTROLLER: &str = "weft-controller.weft.serviceaccount.identity.weft.cluster.local";

const TOKENS: &str = "\
tokens:
  - token: token-web
    serviceAccount: web
    namespace: apps
";

const WORKLOADS: &str = "\
workloads:
  - name: web-2
    namespace: apps
    serviceAccount: web
    addresses: [198.18.0.2]
    labels: {app: web}
    owner: {kind: Deployment, name: web}
  - name: web-1
    namespace: apps
    serviceAccount: web
    addresses: [198.18.0.1]
    labels: {app: web}
    owner: {kind: Deployment, name: web}
";

// (No leading `\` continuation here: it would eat the indentation.)
const WEB_3: &str = "  - name: web-3
    namespace: apps
    serviceAccount: web
    addresses: [198.18.0.3]
    labels: {app: web}
    owner: {kind: Deployment, name: web}
";

const SERVICES: &str = "\
services:
  - name: web
    namespace: apps
    clusterIPs: [198.19.0.10]
    ports: [{port: 80, targetPort: 8080}]
    selector: {app: web}
    route: {retryOn: [5xx], timeout: 2s}
";

fn config(extra_workloads: &str) -> String {
    format!("{TOKENS}{WORKLOADS}{extra_workloads}{SERVICES}")
}

fn endpoint_json(n: u8) -> String {
    format!(
        r#"{{"addr":"198.18.0.{n}:8080","weight":1,"identity":"web.apps.serviceaccount.identity.weft.cluster.local","inboundPort":4143,"labels":{{"deployment":"web","namespace":"apps","pod":"web-{n}","serviceaccount":"web"}}}}"#
    )
}

// === helpers (as in tests/identity.rs) ===

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "weft-destination-{name}-{}-{nanos}",
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

fn generate(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["identity", "generate", "--out", dir.to_str().unwrap()])
        .output()
        .expect("run weft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `weft controller` child process on 127.0.0.1:0, with an admin server.
struct Controller {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Controller {
    fn start(identity_dir: &Path, config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "controller",
                "--identity-dir",
                identity_dir.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--discovery",
                "file",
                "--proxy-api-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weft controller");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
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
        let mut addr = None;
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the controller did not report its addresses\nstderr:\n{}",
                    stderr.lock().unwrap()
                );
            };
            if let Some(a) = line.strip_prefix("weft controller: proxy API listening on ") {
                addr = a.parse().ok();
            }
            if let Some(a) = line.strip_prefix("weft controller: admin listening on ") {
                admin = a.parse().ok();
            }
        }
        Controller {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the controller ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

#[allow(deprecated)] // ring, as in the proxy (see controlplane/src/tls.rs)
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// Connects like a proxy: TLS 1.3 to the controller's identity, ALPN h2.
async fn connect(addr: SocketAddr, ca_crt: &Path) -> Sender {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_crt).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from(CONTROLLER).unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(send: &mut Sender, query: &str) -> http::Response<Incoming> {
    let req = http::Request::get(format!("https://{CONTROLLER}{DESTINATION_PATH}?{query}"))
        .body(Empty::new())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .expect("response headers within 5s")
        .unwrap()
}

/// Reads a streaming body line by line.
struct Lines {
    body: Incoming,
    buf: BytesMut,
}

impl Lines {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
        }
    }

    /// The next line (without its newline); `None` when the stream ended.
    async fn next(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                return Some(String::from_utf8(line[..nl].to_vec()).unwrap());
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no line within {within:?}"));
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Asserts nothing arrives for `d` (and the stream stays open).
    async fn quiet_for(&mut self, d: Duration) {
        assert!(self.buf.is_empty(), "unexpected {:?}", self.buf);
        if let Ok(frame) = tokio::time::timeout(d, self.body.frame()).await {
            panic!("expected silence, got {frame:?}");
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Replaces the file's content in place, as `echo … > file` or most editors do.
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_a_service_through_file_edits() {
    let dir = TempDir::new("e2e");
    generate(dir.path());
    let file = dir.path().join("weft.yaml");
    write(&file, &config(""));
    let mut controller = Controller::start(dir.path(), &file);
    let mut send = connect(controller.addr, &dir.path().join("ca.crt")).await;

    // The service's virtual address: a snapshot, endpoints sorted by address.
    let rsp = get(&mut send, "addr=198.19.0.10:80").await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["content-type"], "application/x-ndjson");
    let mut web = Lines::new(rsp.into_body());
    let first = web.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        first,
        format!(
            r#"{{"type":"snapshot","kind":"service","service":"web.apps","endpoints":[{},{}],"route":{{"retryOn":["5xx"],"timeoutMs":2000}}}}"#,
            endpoint_json(1),
            endpoint_json(2)
        )
    );

    // The same service by name (an authority): the same snapshot, and it follows edits.
    let rsp = get(&mut send, "authority=web.apps.svc.cluster.local:80").await;
    assert_eq!(rsp.status(), 200);
    let mut by_name = Lines::new(rsp.into_body());
    assert_eq!(by_name.next(Duration::from_secs(2)).await.unwrap(), first);
    // A name that is no Service, or a port it does not have: unknown, stream open.
    let mut unknown_names = Vec::new();
    for query in ["authority=nope.apps:80", "authority=web.apps:81"] {
        let rsp = get(&mut send, query).await;
        assert_eq!(rsp.status(), 200, "{query}");
        let mut lines = Lines::new(rsp.into_body());
        assert_eq!(
            lines.next(Duration::from_secs(2)).await.unwrap(),
            r#"{"type":"snapshot","kind":"unknown","endpoints":[],"route":{}}"#,
            "{query}"
        );
        unknown_names.push(lines);
    }

    // An unknown address: a snapshot saying so, and the stream stays open.
    let rsp = get(&mut send, "addr=198.18.100.1:443").await;
    assert_eq!(rsp.status(), 200);
    let mut unknown = Lines::new(rsp.into_body());
    assert_eq!(
        unknown.next(Duration::from_secs(2)).await.unwrap(),
        r#"{"type":"snapshot","kind":"unknown","endpoints":[],"route":{}}"#
    );

    // A pod's own address.
    let rsp = get(&mut send, "addr=198.18.0.2:8080").await;
    let mut pod = Lines::new(rsp.into_body());
    assert_eq!(
        pod.next(Duration::from_secs(2)).await.unwrap(),
        format!(
            r#"{{"type":"snapshot","kind":"pod","endpoints":[{}],"route":{{}}}}"#,
            endpoint_json(2)
        )
    );

    // Malformed requests are answered at once, never with a hung stream.
    for (query, error) in [
        (
            "addr=nonsense",
            r#"addr "nonsense" is not an IP:PORT address (such as 10.43.0.10:80 or [fd00::a]:80)"#,
        ),
        (
            "adr=198.19.0.10:80",
            "missing the addr parameter: ask GET /weft.destination.v1/get?addr=IP:PORT (or ?authority=NAME.NAMESPACE.svc.cluster.local:PORT)",
        ),
    ] {
        let rsp = get(&mut send, query).await;
        assert_eq!(rsp.status(), 400, "{query}");
        let body = tokio::time::timeout(Duration::from_secs(2), rsp.into_body().collect())
            .await
            .expect("a complete body")
            .unwrap()
            .to_bytes();
        let err: ErrorResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(err.error, error, "{query}");
    }

    // An edit adding a workload: the next line is exactly the addition, within a second.
    let started = Instant::now();
    write(&file, &config(WEB_3));
    let next = web.next(Duration::from_secs(1)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        next,
        format!(r#"{{"type":"add","endpoints":[{}]}}"#, endpoint_json(3))
    );
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(by_name.next(Duration::from_secs(1)).await.unwrap(), next);
    // The others were not concerned.
    unknown.quiet_for(Duration::from_millis(300)).await;
    pod.quiet_for(Duration::from_millis(10)).await;

    // An invalid edit: logged with its line and column; proxies see nothing.
    let broken = config(WEB_3).replace(
        "ports: [{port: 80, targetPort: 8080}]",
        "ports: [{port: eighty}]",
    );
    let line = broken.lines().position(|l| l.contains("eighty")).unwrap() + 1;
    write(&file, &broken);
    let deadline = Instant::now() + Duration::from_secs(2);
    let want = format!(
        "config file {}: services[0].ports[0].port: invalid type: string \"eighty\", expected u16 at line {line} column 20; keeping the last good configuration",
        file.display()
    );
    while !controller.stderr().contains(&want) {
        assert!(
            Instant::now() < deadline,
            "no error naming the line within 2s; want\n{want}\nstderr:\n{}",
            controller.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    web.quiet_for(Duration::from_millis(700)).await;

    // Removing a workload after the fix: exactly one removal.
    write(
        &file,
        &config("").replace(
            "addresses: [198.18.0.2]",
            "addresses: [198.18.0.2]\n    meshed: false",
        ),
    );
    assert_eq!(
        web.next(Duration::from_secs(1)).await.unwrap(),
        format!(r#"{{"type":"remove","addrs":["198.18.0.3:8080"]}}"#)
    );
    assert_eq!(
        web.next(Duration::from_secs(1)).await.unwrap(),
        r#"{"type":"add","endpoints":[{"addr":"198.18.0.2:8080","weight":1,"inboundPort":4143,"labels":{"deployment":"web","namespace":"apps","pod":"web-2","serviceaccount":"web"}}]}"#
    );
    // The pod stream sees its workload lose its identity.
    assert_eq!(
        pod.next(Duration::from_secs(1)).await.unwrap(),
        r#"{"type":"add","endpoints":[{"addr":"198.18.0.2:8080","weight":1,"inboundPort":4143,"labels":{"deployment":"web","namespace":"apps","pod":"web-2","serviceaccount":"web"}}]}"#
    );

    let metrics = http_get(controller.admin, "/metrics").await;
    for line in [
        // web by address and by name, two unknown names, an unknown address, a pod.
        "destination_streams_active 6",
        "destination_streams_total 6",
        "destination_watched_addresses 6",
        "destination_bad_requests_total 2",
        "destination_updates_total{type=\"snapshot\"} 6",
        "destination_updates_total{type=\"add\"} 5",
        "destination_updates_total{type=\"remove\"} 2",
        "discovery_config_reloads_total{result=\"ok\"} 3",
        "discovery_config_reloads_total{result=\"error\"} 1",
        "discovery_workloads 2",
        "discovery_services 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }

    // The name stream saw exactly what the address stream saw, in the same order.
    let [mut nope, mut web81] = <[Lines; 2]>::try_from(unknown_names).ok().unwrap();
    assert_eq!(
        by_name.next(Duration::from_secs(1)).await.unwrap(),
        r#"{"type":"remove","addrs":["198.18.0.3:8080"]}"#
    );
    assert!(by_name
        .next(Duration::from_secs(1))
        .await
        .unwrap()
        .starts_with(r#"{"type":"add","endpoints":[{"addr":"198.18.0.2:8080""#));

    // SIGTERM: every stream ends cleanly, and the controller exits 0.
    controller.terminate();
    for (name, lines) in [
        ("by name", &mut by_name),
        ("nope.apps:80", &mut nope),
        ("web.apps:81", &mut web81),
        ("web", &mut web),
        ("unknown", &mut unknown),
        ("pod", &mut pod),
    ] {
        assert_eq!(
            lines.next(Duration::from_secs(5)).await,
            None,
            "the {name} stream ends on shutdown"
        );
    }
    let status = controller.wait().await;
    let stderr = controller.stderr();
    assert!(status.success(), "exit {status}\n{stderr}");
    assert!(stderr.contains("destination_streams_total=6"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_load_stops_the_controller_with_its_line() {
    let dir = TempDir::new("bad-start");
    generate(dir.path());
    let file = dir.path().join("weft.yaml");
    let cases = [
        (
            format!("{TOKENS}services:\n  - name: web\n    ports: [{{port: 80, protocol: grpc}}]\n"),
            "services[0].ports[0].protocol: unknown variant `grpc`, expected one of `opaque`, `http1`, `http2` at line 7 column".to_string(),
        ),
        (
            format!("{TOKENS}{SERVICES}    split: [{{service: web-v2, weight: 10}}]\n"),
            "services[0] (apps/web): split[0]: no service \"web-v2\" in namespace apps".to_string(),
        ),
    ];
    for (text, want) in cases {
        write(&file, &text);
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "controller",
                "--identity-dir",
                dir.path().to_str().unwrap(),
                "--config",
                file.to_str().unwrap(),
                "--proxy-api-addr",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "weft controller: config file {}: {want}",
                file.display()
            )),
            "want {want}\n{stderr}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "controller",
            "--identity-dir",
            dir.path().to_str().unwrap(),
            "--config",
            file.to_str().unwrap(),
            "--discovery",
            "consul",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "unknown discovery backend \"consul\": use file (the --config file) or kubernetes"
        ),
        "{stderr}"
    );
}

/// The real proxy's discovery client (`weft_proxy::discovery`) against the real
/// controller: what the proxy builds from the stream follows file edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_discovery_client_follows_the_controller() {
    use weft_proxy::discovery::{Controller as ControllerAddr, Discovery};
    use weft_proxy::route::Known;

    let dir = TempDir::new("proxy");
    generate(dir.path());
    let file = dir.path().join("weft.yaml");
    write(&file, &config(""));
    let controller = Controller::start(dir.path(), &file);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.path().join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let discovery = Discovery::new(
        ControllerAddr {
            addr: controller.addr.to_string(),
            name: CONTROLLER.to_string(),
            tls: Arc::new(tls),
        },
        Duration::from_secs(2),
    );

    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let Known::Service(balanced) = discovery.resolve(vip).await else {
        panic!("the VIP is a service")
    };
    let addrs = |b: &weft_proxy::route::Balanced| -> Vec<String> {
        let mut a: Vec<String> = b.0.addrs().iter().map(|a| a.to_string()).collect();
        a.sort();
        a
    };
    assert_eq!(addrs(&balanced), ["198.18.0.1:8080", "198.18.0.2:8080"]);
    match discovery.resolve("198.18.0.1:8080".parse().unwrap()).await {
        Known::Meshed(m) => {
            assert_eq!(
                m.identity,
                "web.apps.serviceaccount.identity.weft.cluster.local"
            );
            assert_eq!(m.inbound_port, 4143);
        }
        other => panic!("a meshed pod, not {other:?}"),
    }
    assert!(matches!(
        discovery.resolve("198.18.100.1:80".parse().unwrap()).await,
        Known::Unknown
    ));

    // An edit reaches the proxy's balancer within a second.
    write(&file, &config(WEB_3));
    let deadline = Instant::now() + Duration::from_secs(1);
    while addrs(&balanced).len() != 3 {
        assert!(
            Instant::now() < deadline,
            "the balancer still has {:?}",
            addrs(&balanced)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        addrs(&balanced),
        ["198.18.0.1:8080", "198.18.0.2:8080", "198.18.0.3:8080"]
    );
}
