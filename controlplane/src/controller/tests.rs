//! The controller started in-process: real TLS, real HTTP/2, the file backend and the
//! Kubernetes backend against the fake API server.

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
            identity: IdentitySource::Dir(dir.clone()),
            config_file: Some(config_file),
            discovery: Backend::File,
            kubeconfig: None,
            injector: None,
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
            .find_map(|l| l.strip_prefix("identity_controller_cert_expiration_timestamp_seconds "))
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
        f.config.config_file.as_ref().unwrap(),
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
    std::fs::write(f.config.config_file.as_ref().unwrap(), "tokens: []\n").unwrap();
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
    std::fs::write(f.config.config_file.as_ref().unwrap(), service).unwrap();
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
    std::fs::write(
        f.config.config_file.as_ref().unwrap(),
        format!("{service}{workload}"),
    )
    .unwrap();
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
    let kubeconfig = fake_kubeconfig(&f.dir, &fake.url());
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
            "Kubernetes client: kubeconfig {}: ",
            kubeconfig.display()
        )),
        "{err}"
    );
}

/// A kubeconfig for the fake API server (plain HTTP, no credentials).
#[cfg(feature = "kubernetes")]
fn fake_kubeconfig(dir: &std::path::Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: nobody}}}}]\nusers: [{{name: nobody, user: {{}}}}]\n"
        ),
    )
    .unwrap();
    path
}

#[cfg(feature = "kubernetes")]
#[tokio::test]
async fn certifies_with_token_review_and_an_issuer_from_a_secret() {
    use crate::discovery::kubernetes::fake_api::FakeApi;
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use k8s_openapi::ByteString;
    use kube::api::{Api, PostParams};
    use weft_api::certify::TOKEN_AUDIENCE;

    let fake = FakeApi::start().await.unwrap();
    let client = fake.client();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "weft"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    // A cert-manager style Secret: ca.crt, tls.crt, tls.key. The files in the fixture's
    // directory are a different issuer, so a leaf from the Secret's proves where it came from.
    let g = generated();
    let mut secret = Secret::default();
    secret.metadata.name = Some("weft-identity-issuer".into());
    secret.data = Some(
        [
            ("ca.crt", &g.anchor_pem),
            ("tls.crt", &g.issuer_pem),
            ("tls.key", &g.issuer_key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect(),
    );
    Api::<Secret>::namespaced(client.clone(), "weft")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    fake.add_token(
        "sa-web",
        "system:serviceaccount:apps:web",
        &[TOKEN_AUDIENCE],
    );
    fake.add_token("sa-db", "system:serviceaccount:apps:db", &[TOKEN_AUDIENCE]);
    fake.add_token(
        "sa-web-api-audience",
        "system:serviceaccount:apps:web",
        &["https://kubernetes.default.svc.cluster.local"],
    );
    fake.add_token("alice", "alice", &[TOKEN_AUDIENCE]);

    let f = fixture("token-review", Duration::from_secs(3600));
    let mut config = f.config.clone();
    config.discovery = Backend::Kubernetes;
    config.kubeconfig = Some(fake_kubeconfig(&f.dir, &fake.url()));
    config.identity = IdentitySource::Secret("weft-identity-issuer".into());
    // The config file's tokens (t-web) mean nothing in Kubernetes mode.
    let controller = start(&config).await.unwrap();
    let mut send = connect(controller.proxy_api_addr, &g.anchor_pem, CONTROLLER)
        .await
        .unwrap();
    let certify = |token: &str| {
        serde_json::to_vec(&CertifyRequest {
            identity: WEB.into(),
            token: token.into(),
            csr_pem: csr(&[WEB]),
        })
        .unwrap()
    };

    let (status, body) = post(&mut send, certify("sa-web")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rsp: CertifyResponse = serde_json::from_slice(&body).unwrap();
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(rsp.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let issuer = CertificateDer::from_pem_slice(g.issuer_pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], issuer, "signed by the Secret's issuer");

    let cases: &[(&str, u16, &str)] = &[
        ("t-web", 401, "token rejected by the Kubernetes API server: [invalid bearer token, token lookup failed]"),
        ("sa-web-api-audience", 401, "token rejected by the Kubernetes API server: [invalid bearer token, token audiences [\"https://kubernetes.default.svc.cluster.local\"] is invalid for the target audiences [\"identity.weft.dev\"]]"),
        ("sa-db", 403, "the token is for identity \"db.apps.serviceaccount.identity.weft.cluster.local\", not \"web.apps.serviceaccount.identity.weft.cluster.local\""),
        ("alice", 403, "the token belongs to \"alice\", not to a service account"),
        ("", 401, "token rejected by the Kubernetes API server: the token is empty"),
    ];
    for (token, want_status, want) in cases {
        let (status, body) = post(&mut send, certify(token)).await;
        let err: ErrorResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, err.error.as_str()),
            (*want_status, *want),
            "token {token:?}"
        );
    }
    fake.expire_token("sa-web");
    let (status, body) = post(&mut send, certify("sa-web")).await;
    let err: ErrorResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, err.error.as_str()),
        (401, "token rejected by the Kubernetes API server: [invalid bearer token, service account token has expired]")
    );
    // Every non-empty token went to the API server exactly once.
    assert_eq!(fake.token_reviews(), 6);
    let metrics = http_get(controller.admin_addr.unwrap(), "/metrics").await;
    for line in [
        "identity_certificates_issued_total 1\n",
        "identity_certify_refused_total{reason=\"token_rejected\"} 4\n",
        "identity_certify_refused_total{reason=\"identity_mismatch\"} 1\n",
        "identity_certify_refused_total{reason=\"not_a_service_account\"} 1\n",
        "identity_certify_refused_total{reason=\"unknown_token\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
    controller.shutdown().await;

    // The API server going away answers 503, and says why.
    let controller = start(&config).await.unwrap();
    let mut send = connect(controller.proxy_api_addr, &g.anchor_pem, CONTROLLER)
        .await
        .unwrap();
    drop(fake);
    let (status, body) = post(&mut send, certify("sa-db")).await;
    let err: ErrorResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 503, "{}", err.error);
    assert!(
        err.error
            .starts_with("cannot check the token with the Kubernetes API server (TokenReview): "),
        "{}",
        err.error
    );
    controller.shutdown().await;
}

/// Sends an AdmissionReview to the injector over TLS verified against the anchors, for
/// the Service name the API server uses.
#[cfg(feature = "kubernetes")]
async fn admission_review(addr: SocketAddr, anchor_pem: &str, review: &[u8]) -> serde_json::Value {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(anchor_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            ServerName::try_from("weft-controller.weft.svc").unwrap(),
            tcp,
        )
        .await
        .expect("the webhook's certificate verifies for weft-controller.weft.svc");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/inject-pods")
        .header("host", "weft-controller.weft.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(review)))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[cfg(feature = "kubernetes")]
#[tokio::test]
async fn injects_through_the_controller_and_syncs_the_ca_bundle() {
    use crate::discovery::kubernetes::fake_api::FakeApi;
    use crate::inject::webhook::tests::decoded_patch;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};

    let review = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/inject/review-deployment-pod.json"),
    )
    .unwrap();
    for (minor, native) in [("31", true), ("28", false)] {
        let fake = FakeApi::start().await.unwrap();
        fake.set_version("1", minor);
        let client = fake.client();
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "apps", "annotations": {"weft.dev/inject": "enabled"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let mwc: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "weft-proxy-injector"},
            "webhooks": [{
                "name": "inject.weft.dev",
                "clientConfig": {"service": {"name": "weft-controller", "namespace": "weft", "path": "/inject-pods", "port": 443}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore"
            }]
        }))
        .unwrap();
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        mwcs.create(&PostParams::default(), &mwc).await.unwrap();

        let f = fixture(&format!("injector-{minor}"), Duration::from_secs(3600));
        let mut config = f.config.clone();
        config.discovery = Backend::Kubernetes;
        config.kubeconfig = Some(fake_kubeconfig(&f.dir, &fake.url()));
        config.injector = Some(injector::InjectorSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            proxy_image: "registry.example/weft-proxy:test".into(),
            native_sidecars: injector::NativeSidecars::Auto,
            webhook_config: "weft-proxy-injector".into(),
        });
        let controller = start(&config).await.unwrap();

        // The caBundle is the trust anchors, and they verify the webhook's certificate.
        let stored = mwcs.get("weft-proxy-injector").await.unwrap();
        let webhooks = stored.webhooks.unwrap();
        assert_eq!(webhooks.len(), 1);
        assert_eq!(webhooks[0].name, "inject.weft.dev");
        let bundle = webhooks[0].client_config.ca_bundle.clone().unwrap().0;
        assert_eq!(String::from_utf8(bundle).unwrap(), f.anchor_pem);
        assert_eq!(webhooks[0].failure_policy.as_deref(), Some("Ignore"));

        let answer =
            admission_review(controller.injector_addr.unwrap(), &f.anchor_pem, &review).await;
        assert_eq!(
            answer["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(answer["response"]["allowed"], true);
        let patch = decoded_patch(&answer);
        let ops = patch.as_array().unwrap();
        // The proxy: an init container (native) or the first container (classic).
        let proxy_path = if native {
            "/spec/initContainers"
        } else {
            "/spec/containers/0"
        };
        let proxy = ops
            .iter()
            .filter(|op| op["path"] == proxy_path)
            .flat_map(|op| match op["value"].as_array() {
                Some(list) => list.clone(),
                None => vec![op["value"].clone()],
            })
            .find(|c| c["name"] == "weft-proxy")
            .unwrap_or_else(|| panic!("no weft-proxy at {proxy_path} in {patch}"));
        assert_eq!(proxy["image"], "registry.example/weft-proxy:test");
        assert_eq!(proxy.get("restartPolicy").is_some(), native, "{proxy}");
        let env = |name: &str| {
            proxy["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env("WEFT_PROXY_IDENTITY_TRUST_ANCHORS"),
            Some(serde_json::json!(f.anchor_pem)),
            "the anchors travel inline: no ConfigMap needed in the namespace"
        );
        let volumes = serde_json::to_string(&patch).unwrap();
        assert!(!volumes.contains("weft-identity-trust-roots"), "{volumes}");
        assert!(
            volumes.contains("identity.weft.dev"),
            "the projected token's audience"
        );

        // A hostNetwork pod is allowed unchanged but annotated, and a Warning Event on its
        // owner says why.
        let host = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/inject/review-hostnetwork-pod.json"),
        )
        .unwrap();
        let answer =
            admission_review(controller.injector_addr.unwrap(), &f.anchor_pem, &host).await;
        assert_eq!(answer["response"]["allowed"], true);
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(client.clone(), "apps");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let event = loop {
            let list = events.list(&Default::default()).await.unwrap();
            if let Some(e) = list.items.into_iter().next() {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "no Event within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(event.reason.as_deref(), Some("WeftInjectionSkipped"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.involved_object.kind.as_deref(), Some("DaemonSet"));
        assert_eq!(event.involved_object.name.as_deref(), Some("node-exporter"));
        assert_eq!(
            event.message.as_deref(),
            Some("weft: pod node-exporter-* not injected: hostNetwork pods are not injected: the proxy's iptables rules would redirect the whole node's traffic")
        );
        assert_eq!(
            event.source.and_then(|s| s.component).as_deref(),
            Some("weft-injector")
        );
        controller.shutdown().await;
    }
}

#[cfg(feature = "kubernetes")]
#[tokio::test]
async fn a_missing_issuer_secret_stops_the_start_naming_it() {
    use crate::discovery::kubernetes::fake_api::FakeApi;
    let fake = FakeApi::start().await.unwrap();
    let f = fixture("no-secret", Duration::from_secs(3600));
    let mut config = f.config.clone();
    config.discovery = Backend::Kubernetes;
    config.kubeconfig = Some(fake_kubeconfig(&f.dir, &fake.url()));
    config.identity = IdentitySource::Secret("nope".into());
    config.config_file = None;
    let err = start(&config).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_CONFIG);
    assert!(
        err.to_string()
            .starts_with("--identity-secret: cannot read Secret weft/nope: "),
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

/// Against a real API server **on this host** (k3s): a MutatingWebhookConfiguration with
/// `url: https://127.0.0.1:PORT/inject-pods` and a namespace selector on a fresh
/// namespace; a pod created there comes back injected. Cleans up both.
#[cfg(feature = "kubernetes")]
#[tokio::test]
#[ignore = "needs a real API server on this host: KUBECONFIG=… cargo test -p weft-controlplane -- --ignored real_injector"]
async fn real_injector() {
    use crate::inject::webhook::{serve, Webhook};
    use crate::inject::InjectConfig;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, DeleteParams, PostParams};

    let client = kube::Client::try_default()
        .await
        .expect("a client from KUBECONFIG (or ~/.kube/config)");
    let version = client
        .apiserver_version()
        .await
        .expect("the server's version");
    let native = injector::has_native_sidecars(&version.major, &version.minor).unwrap_or(false);
    let (ca, tls) = crate::inject::webhook::tests::certs_for(&["127.0.0.1"]);
    let mut config = InjectConfig::new(
        "weft",
        "cluster.local",
        "registry.invalid/weft-proxy:test",
        "weft-test",
    );
    config.native_sidecars = native;
    let webhook = Arc::new(Webhook::new(
        config,
        Arc::new(injector::KubeNamespaces(client.clone())),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = crate::shutdown::Shutdown::new();
    let _server = serve(
        webhook,
        listener,
        tls,
        shutdown.signal(),
        Duration::from_secs(1),
    );

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ns = format!("weft-test-inject-{nanos}");
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&pp, &serde_json::from_value(serde_json::json!({
            "metadata": {"name": ns, "labels": {"weft-test": ns}, "annotations": {"weft.dev/inject": "enabled"}}
        })).unwrap())
        .await
        .expect("create the namespace");
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        crate::inject::webhook::base64(&ca)
    );
    mwcs.create(&pp, &serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns},
        "webhooks": [{
            "name": "inject.weft.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/inject-pods"), "caBundle": crate::inject::webhook::base64(pem.as_bytes())},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"weft-test": ns}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5
        }]
    })).unwrap())
    .await
    .expect("register the webhook");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods
        .create(
            &pp,
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-1"},
                "spec": {
                    "schedulerName": "weft-test-no-such-scheduler",
                    "containers": [{"name": "web", "image": "registry.invalid/web:0"}]
                }
            }))
            .unwrap(),
        )
        .await;
    let _ = mwcs.delete(&ns, &DeleteParams::default()).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    shutdown.trigger();
    let pod = created.expect("create the pod");
    let spec = pod.spec.expect("a spec");
    let inits: Vec<String> = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    let containers: Vec<String> = spec.containers.into_iter().map(|c| c.name).collect();
    if native {
        assert_eq!(inits, ["weft-init", "weft-proxy"]);
        assert_eq!(containers, ["web"]);
    } else {
        assert_eq!(inits, ["weft-init"]);
        assert_eq!(containers, ["weft-proxy", "web"]);
    }
    let annotations = pod.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("weft.dev/injected-by").map(String::as_str),
        Some("weft-test")
    );
}

/// The whole Job path on a cluster without native sidecars, end to end: the controller
/// (Kubernetes backend, TokenReview) against the fake API server, and a real weft-proxy
/// in-process configured as the injector configures a Job pod's classic sidecar. The
/// proxy gets its certificate, then the job's container terminates in the pod's status,
/// and the proxy drains and exits by itself.
#[cfg(feature = "kubernetes")]
#[tokio::test]
async fn a_job_pods_proxy_exits_when_its_container_terminates() {
    use crate::discovery::kubernetes::fake_api::FakeApi;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use std::collections::HashMap;
    use weft_api::certify::TOKEN_AUDIENCE;

    let fake = FakeApi::start().await.unwrap();
    let client = fake.client();
    let pp = PostParams::default();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "jobs"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "jobs");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "migrate-x7k2p", "namespace": "jobs",
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate", "uid": "u1", "controller": true}]},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "migrate",
            "containers": [
                {"name": "weft-proxy", "image": "registry.invalid/weft-proxy:0"},
                {"name": "migrate", "image": "registry.invalid/migrate:0"}
            ]
        }
    }))
    .unwrap();
    pods.create(&pp, &pod).await.unwrap();
    let status = |migrate: serde_json::Value| {
        serde_json::json!({"status": {"phase": "Running", "podIP": "198.18.0.50", "podIPs": [{"ip": "198.18.0.50"}],
        "containerStatuses": [
            {"name": "weft-proxy", "state": {"running": {}}},
            {"name": "migrate", "state": migrate}
        ]}})
    };
    pods.patch_status(
        "migrate-x7k2p",
        &PatchParams::default(),
        &Patch::Merge(&status(serde_json::json!({"running": {}}))),
    )
    .await
    .unwrap();
    fake.add_token(
        "job-token",
        "system:serviceaccount:jobs:migrate",
        &[TOKEN_AUDIENCE],
    );

    let f = fixture("job-exit", Duration::from_secs(3600));
    let mut config = f.config.clone();
    config.discovery = Backend::Kubernetes;
    config.kubeconfig = Some(fake_kubeconfig(&f.dir, &fake.url()));
    let controller = start(&config).await.unwrap();
    let token_file = f.dir.join("job-token");
    std::fs::write(&token_file, "job-token").unwrap();
    let controller_addr = controller.proxy_api_addr.to_string();
    let token_path = token_file.display().to_string();
    let env: HashMap<&str, &str> = HashMap::from([
        ("WEFT_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        (
            "WEFT_PROXY_IDENTITY_NAME",
            "migrate.jobs.serviceaccount.identity.weft.cluster.local",
        ),
        ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", f.anchor_pem.as_str()),
        ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token_path.as_str()),
        (
            "WEFT_PROXY_IDENTITY_CONTROLLER_ADDR",
            controller_addr.as_str(),
        ),
        ("WEFT_PROXY_IDENTITY_CONTROLLER_NAME", CONTROLLER),
        ("WEFT_PROXY_EXIT_WITH_WORKLOAD", "true"),
        ("WEFT_PROXY_POD_IP", "198.18.0.50"),
    ]);
    let proxy_config = weft_proxy::config::Config::from_lookup(&env).unwrap();
    let deps = weft_proxy::Deps {
        inbound_orig_dst: Arc::new(weft_proxy::orig_dst::NotRedirected),
        outbound_orig_dst: Arc::new(weft_proxy::orig_dst::NotRedirected),
        log: None,
    };
    let app = weft_proxy::App::bind(proxy_config, deps).unwrap();
    let admin = app.addrs().admin;
    let proxy = tokio::spawn(app.run());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/ready").await != "ready\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never got its certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The job is still running: the proxy stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!proxy.is_finished(), "the proxy exited while the job ran");

    pods.patch_status(
        "migrate-x7k2p",
        &PatchParams::default(),
        &Patch::Merge(&status(
            serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        )),
    )
    .await
    .unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("the proxy exits within 10 s of the job's container terminating")
        .unwrap();
    assert_eq!(drained, weft_proxy::Drained::Complete);
    controller.shutdown().await;
}
