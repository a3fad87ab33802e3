//! The webhook end to end: AdmissionReview fixtures (`tests/fixtures/inject/review-*.json`)
//! posted through the real HTTPS server on 127.0.0.1 by a hyper + rustls client that trusts
//! a test CA (rcgen), the answers decoded and the JSON Patch compared op by op.

use super::*;
use crate::inject::patch::apply_json;
use crate::shutdown::Shutdown;
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Mutex;
use tokio_rustls::TlsConnector;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inject/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

fn config() -> InjectConfig {
    let mut c = InjectConfig::new(
        "weft",
        "cluster.local",
        "example/weft:1.2.3",
        "weft-controller 1.2.3",
    );
    c.proxy_version = "1.2.3".into();
    c
}

fn namespaces() -> Arc<dyn NamespaceLookup> {
    let apps = BTreeMap::from([("weft.dev/inject".to_string(), "enabled".to_string())]);
    Arc::new(BTreeMap::from([("apps".to_string(), apps)]))
}

/// A CA, and a serving certificate for `localhost` signed by it.
fn certs() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    certs_for(&["localhost"])
}

/// A test CA and a server configuration for a leaf naming `names` (DNS names or IPs).
pub(crate) fn certs_for(names: &[&str]) -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_key = KeyPair::generate_for(alg).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "weft webhook test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate_for(alg).unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let tls = server_config(vec![leaf.der().clone()], key).unwrap();
    (ca_cert.der().clone(), tls)
}

struct Server {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

async fn start(webhook: Webhook) -> Server {
    let (ca, tls) = certs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = serve(
        Arc::new(webhook),
        listener,
        tls,
        shutdown.signal(),
        Duration::from_secs(1),
    );
    Server {
        addr,
        ca,
        shutdown,
        task,
    }
}

/// One request over a fresh TLS connection; HTTP/2 if `h2`, else HTTP/1.1.
async fn call(
    s: &Server,
    method: Method,
    path: &str,
    body: Vec<u8>,
    h2: bool,
) -> (StatusCode, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.ca.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
    }
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol() == Some(b"h2"), h2);
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let rsp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = rsp.status();
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn unbase64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("valid base64")
}

pub(crate) fn decoded_patch(review: &Value) -> Value {
    assert_eq!(review["response"]["patchType"], json!("JSONPatch"));
    let b64 = review["response"]["patch"].as_str().expect("a patch");
    serde_json::from_slice(&unbase64(b64)).expect("the patch is JSON")
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc);
        assert_eq!(unbase64(enc), plain.as_bytes());
    }
}

#[tokio::test]
async fn deployment_pod_in_an_annotated_namespace_is_injected() {
    let s = start(Webhook::new(config(), namespaces())).await;
    for h2 in [false, true] {
        let (status, review) = call(
            &s,
            Method::POST,
            INJECT_PATH,
            fixture("review-deployment-pod.json"),
            h2,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["apiVersion"], json!("admission.k8s.io/v1"));
        assert_eq!(review["kind"], json!("AdmissionReview"));
        assert_eq!(
            review["response"]["uid"],
            json!("705ab4f5-6393-11e8-b7cc-42010a800002")
        );
        assert_eq!(review["response"]["allowed"], json!(true));
        assert!(review["response"].get("warnings").is_none());
        let patch = decoded_patch(&review);
        let want: Value =
            serde_json::from_slice(&fixture("review-deployment-pod.patch.json")).unwrap();
        let (got_ops, want_ops) = (patch.as_array().unwrap(), want.as_array().unwrap());
        assert_eq!(got_ops.len(), want_ops.len(), "{patch:#}");
        for (i, (g, w)) in got_ops.iter().zip(want_ops).enumerate() {
            assert_eq!(g, w, "op {i}");
        }
        // And the patch applies to the pod it was computed for.
        let pod: Value = serde_json::from_slice(&fixture("review-deployment-pod.json")).unwrap();
        let ops: Vec<JsonPatchOp> = serde_json::from_value(patch).unwrap();
        let out = apply_json(&pod["request"]["object"], &ops).unwrap();
        assert_eq!(
            out["spec"]["initContainers"][1]["name"],
            json!("weft-proxy")
        );
    }
    s.shutdown.trigger();
    s.task.await.unwrap();
}

use crate::inject::patch::JsonPatchOp;

#[tokio::test]
async fn host_network_pod_is_allowed_with_the_reason_recorded() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let hook: RefusalHook = Arc::new(move |r: &Refusal| hook_seen.lock().unwrap().push(r.clone()));
    let s = start(Webhook::new(config(), namespaces()).on_refusal(hook)).await;
    let (status, review) = call(
        &s,
        Method::POST,
        INJECT_PATH,
        fixture("review-hostnetwork-pod.json"),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let reason = "hostNetwork pods are not injected: the proxy's iptables rules would redirect the whole node's traffic";
    assert_eq!(
        review["response"],
        json!({
            "uid": "b2f7c1de-0001-4a4e-9d7c-3f1e2d3c4b5a",
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": review["response"]["patch"],
            "warnings": [format!("weft: not injected: {reason}")],
        })
    );
    assert_eq!(
        decoded_patch(&review),
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"weft.dev/inject-skipped": reason}}])
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Refusal {
            namespace: "apps".into(),
            pod: "node-exporter-*".into(),
            owner: Some(("DaemonSet".into(), "node-exporter".into())),
            reason: reason.into(),
        }]
    );
    s.shutdown.trigger();
}

#[tokio::test]
async fn pods_left_alone_and_other_kinds_get_a_bare_allow() {
    let s = start(Webhook::new(config(), namespaces())).await;
    for (file, uid) in [
        (
            "review-job-pod-kube-system.json",
            "c3a8d2ef-0002-4b5f-8e6d-4a2f3e4d5c6b",
        ),
        (
            "review-service.json",
            "d4b9e3f0-0003-4c6a-9f7e-5b3a4f5e6d7c",
        ),
    ] {
        let (status, review) = call(&s, Method::POST, INJECT_PATH, fixture(file), true).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(
            review,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": uid, "allowed": true}}),
            "{file}"
        );
    }
    // A pod in a namespace nobody annotated.
    let mut other: Value = serde_json::from_slice(&fixture("review-deployment-pod.json")).unwrap();
    other["request"]["namespace"] = json!("other");
    let (_, review) = call(
        &s,
        Method::POST,
        INJECT_PATH,
        serde_json::to_vec(&other).unwrap(),
        false,
    )
    .await;
    assert_eq!(
        review["response"],
        json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true})
    );
    s.shutdown.trigger();
}

#[tokio::test]
async fn a_failed_namespace_lookup_still_honours_the_pod_and_warns() {
    struct Broken;
    impl NamespaceLookup for Broken {
        fn annotations<'a>(&'a self, _: &'a str) -> LookupFuture<'a> {
            Box::pin(async { Err("the namespace cache is not synced yet".to_string()) })
        }
    }
    let s = start(Webhook::new(config(), Arc::new(Broken))).await;
    let mut review: Value = serde_json::from_slice(&fixture("review-deployment-pod.json")).unwrap();
    review["request"]["object"]["metadata"]["annotations"]["weft.dev/inject"] = json!("ingress");
    let (_, answer) = call(
        &s,
        Method::POST,
        INJECT_PATH,
        serde_json::to_vec(&review).unwrap(),
        false,
    )
    .await;
    assert_eq!(
        answer["response"]["warnings"],
        json!(["weft: the annotations of namespace \"apps\" could not be read (the namespace cache is not synced yet); only the pod's own were considered"])
    );
    let ops = decoded_patch(&answer);
    let env = &ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["path"] == json!("/spec/initContainers"))
        .unwrap()["value"][1]["env"];
    assert!(env
        .as_array()
        .unwrap()
        .contains(&json!({"name": "WEFT_PROXY_INGRESS_MODE", "value": "true"})));
    s.shutdown.trigger();
}

#[tokio::test]
async fn bad_requests_get_400_with_a_message() {
    let s = start(Webhook::new(config(), namespaces())).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "the body is not JSON: expected ident at line 1 column 2"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion \"admission.k8s.io/v1beta1\" kind \"AdmissionReview\"",
        ),
        (
            br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion \"v1\" kind \"Pod\"",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#.to_vec(),
            "the AdmissionReview has no request.uid",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#.to_vec(),
            "the AdmissionReview about a Pod has no request.object",
        ),
    ];
    for (body, msg) in cases {
        let (status, answer) = call(&s, Method::POST, INJECT_PATH, body, false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
        assert_eq!(answer, json!({ "error": msg }));
    }
    let (status, answer) = call(&s, Method::GET, INJECT_PATH, Vec::new(), false).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer, json!({"error": "/inject-pods takes POST"}));
    let (status, answer) = call(&s, Method::POST, "/mutate", Vec::new(), true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer,
        json!({"error": "no such path; the injector is POST /inject-pods"})
    );
    s.shutdown.trigger();
}
