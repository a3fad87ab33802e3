//! `weft check` end to end against the in-project fake API server
//! (`discovery/kubernetes/fake_api.rs`), through [`super::run`] — what `weft check` runs
//! once its flags are parsed — with a kubeconfig naming the fake. The cluster is `weft
//! install`'s own output, created object by object through the kube client, plus what a
//! cluster's controllers would add (the Deployment's status, a ready controller pod, an
//! EndpointSlice). Then one thing is broken at a time, and the exact failing line and the
//! exit code are checked. (The real binary's exit codes, usage errors and JSON shape
//! without a cluster are in `controlplane/tests/check.rs`.)

use super::checks_tests::V;
use crate::cli::{CheckArgs, InstallArgs};
use crate::discovery::kubernetes::fake_api::FakeApi;
use crate::identity::ca::{generate, Generated};
use argh::FromArgs;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use time::OffsetDateTime;

struct Cluster {
    fake: FakeApi,
    dir: PathBuf,
    kubeconfig: PathBuf,
    docs: Vec<Value>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates any object through the kube client: the collection's path from its
/// `apiVersion`, `kind` and namespace.
async fn create(client: &kube::Client, doc: &Value) -> Value {
    let api_version = doc["apiVersion"].as_str().unwrap_or("v1");
    let plural = format!("{}s", doc["kind"].as_str().unwrap_or("").to_lowercase());
    let base = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    let path = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    };
    let req = http::Request::post(&path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(doc).unwrap())
        .unwrap();
    client
        .request::<Value>(req)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// The fake does not serve RBAC objects (nothing checks them); everything else of `weft
/// install`'s output is created.
const NOT_SERVED: [&str; 4] = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

async fn cluster(name: &str, issuer: &Generated) -> Cluster {
    let fake = FakeApi::start().await.unwrap();
    fake.install_gateway_api();
    let dir = std::env::temp_dir().join(format!("weft-check-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters: [{{name: fake, cluster: {{server: '{}'}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: nobody}}}}]\nusers: [{{name: nobody, user: {{}}}}]\n",
            fake.url()
        ),
    )
    .unwrap();
    // `weft install`'s output as YAML, parsed back, as `kubectl apply -f -` would.
    let opts = crate::install::options::Options::from_args(
        &InstallArgs::from_args(&["install"], &[]).unwrap(),
    )
    .unwrap();
    let yaml =
        crate::install::to_yaml_stream(&crate::install::render(&opts, Some(issuer))).unwrap();
    use serde::Deserialize;
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    Cluster {
        fake,
        dir,
        kubeconfig,
        docs,
    }
}

/// Applies the install and plays the cluster's controllers: a ready Deployment, its
/// ready pod, and the Service's EndpointSlice.
async fn install(c: &Cluster) {
    let client = c.fake.client();
    let mut skipped = Vec::new();
    for doc in &c.docs {
        let kind = doc["kind"].as_str().unwrap_or("");
        if NOT_SERVED.contains(&kind) {
            skipped.push(kind.to_string());
        } else {
            create(&client, doc).await;
        }
    }
    assert_eq!(skipped, NOT_SERVED);
    set_ready_replicas(c, 1).await;
    create(
        &client,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "weft-controller-5d8f7c9b6-x2x9q", "namespace": "weft",
                "labels": {"app.kubernetes.io/name": "weft-controller", "weft.dev/control-plane-ns": "weft"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "weft-controller-5d8f7c9b6", "uid": "1"}]},
            "spec": {"containers": [{"name": "weft", "image": format!("ghcr.io/weft-mesh/weft:{V}")}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "weft", "image": format!("ghcr.io/weft-mesh/weft:{V}"), "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
        }),
    )
    .await;
    create(
        &client,
        &json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "weft-controller-abcde", "namespace": "weft", "labels": {"kubernetes.io/service-name": "weft-controller"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.7"], "conditions": {"ready": true}}],
            "ports": [{"name": "injector", "port": 8443, "protocol": "TCP"}]
        }),
    )
    .await;
}

async fn set_ready_replicas(c: &Cluster, ready: i32) {
    let api: Api<Deployment> = Api::namespaced(c.fake.client(), "weft");
    let status = json!({"status": {"replicas": 1, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": 1}});
    api.patch_status(
        "weft-controller",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
}

async fn set_ca_bundle(c: &Cluster, pem: &str) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(c.fake.client());
    let mut current = api.get("weft-proxy-injector").await.unwrap();
    let mut hooks = current.webhooks.take().unwrap_or_default();
    for w in &mut hooks {
        w.client_config.ca_bundle = Some(k8s_openapi::ByteString(pem.as_bytes().to_vec()));
    }
    let patch = json!({"webhooks": hooks});
    api.patch(
        "weft-proxy-injector",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

async fn replace_secret(c: &Cluster, g: &Generated) {
    let api: Api<Secret> = Api::namespaced(c.fake.client(), "weft");
    api.delete("weft-identity-issuer", &DeleteParams::default())
        .await
        .unwrap();
    let ns = "weft";
    let doc = crate::install::identity::secret(ns, V, g);
    create(&c.fake.client(), &doc).await;
}

async fn check(c: &Cluster, flags: &[&str]) -> (String, u8) {
    let kubeconfig = c.kubeconfig.to_string_lossy().to_string();
    let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
    all.extend_from_slice(flags);
    let args = CheckArgs::from_args(&["check"], &all).unwrap();
    tokio::time::timeout(Duration::from_secs(20), super::run(&args))
        .await
        .unwrap()
}

/// The `✖` and `‼` lines of a report.
fn problems(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| l.starts_with('✖') || l.starts_with('‼'))
        .collect()
}

/// What `weft check` prints for a healthy install (short output has no dates or counts,
/// so it is the same every run). docs/check.md shows it.
pub const HEALTHY: &str = "kubernetes-api
--------------
✔ can reach the API server
✔ the API server's version is supported (1.26 or newer)
✔ native sidecars are available (Kubernetes 1.29 or newer): proxies start before the app and Jobs complete

weft-namespace
--------------
✔ the control-plane namespace weft exists
✔ namespace weft is labelled weft.dev/control-plane-ns=weft

gateway-api
-----------
✔ the Gateway API HTTPRoute CRD is installed (for traffic splits)

weft-controller
---------------
✔ the controller Deployment weft-controller is available
✔ the controller runs this CLI's version (0.1.0)

weft-identity
-------------
✔ the issuer Secret weft-identity-issuer exists
✔ the trust anchor is valid for at least 60 days
✔ the issuer certificate is valid for at least 60 days
✔ the issuer loads as the controller loads it (a CA signed by the trust anchor, with its key)

weft-webhook
------------
✔ the MutatingWebhookConfiguration weft-proxy-injector exists
✔ its webhooks call Service weft/weft-controller on port 443
✔ its webhooks' caBundle is the trust anchor (ca.crt of Secret weft-identity-issuer)
✔ its webhooks' failurePolicy is Ignore (a controller outage never blocks pod creation)
✔ the Service weft-controller has port 443 for the injector
✔ the injector is reachable: Service weft-controller has ready endpoints

Status check results are ✔
";

#[tokio::test]
async fn check_against_the_fake_healthy_then_broken_one_at_a_time() {
    let now = OffsetDateTime::now_utc();
    let g = crate::install::identity::generate("weft", now).unwrap();
    let c = cluster("broken", &g).await;
    install(&c).await;

    let (report, code) = check(&c, &[]).await;
    assert_eq!(report, HEALTHY.replace("(0.1.0)", &format!("({V})")));
    assert_eq!(code, 0);

    // The webhook configuration deleted.
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(c.fake.client());
    mwc.delete("weft-proxy-injector", &DeleteParams::default())
        .await
        .unwrap();
    let (report, code) = check(&c, &[]).await;
    assert_eq!(
        problems(&report),
        ["✖ the MutatingWebhookConfiguration weft-proxy-injector exists"],
        "{report}"
    );
    assert!(
        report.contains("    fix:  weft install --identity-external-issuer | kubectl apply -f -\n"),
        "{report}"
    );
    assert_eq!(code, 1);
    let webhook_doc = c
        .docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    create(&c.fake.client(), webhook_doc).await;
    assert_eq!(check(&c, &[]).await.1, 0);

    // Its caBundle tampered with: another anchor.
    let other = crate::install::identity::generate("weft", now).unwrap();
    set_ca_bundle(&c, &other.anchor_pem).await;
    let (report, code) = check(&c, &[]).await;
    assert_eq!(
        problems(&report),
        ["✖ its webhooks' caBundle is the trust anchor (ca.crt of Secret weft-identity-issuer)"],
        "{report}"
    );
    assert!(report.contains("    hint: inject.weft.dev has a different certificate; ingress.inject.weft.dev has a different certificate. The API server"), "{report}");
    assert_eq!(code, 1);
    set_ca_bundle(&c, &g.anchor_pem).await;

    // An expired issuer: made two days ago to live one day. The controller would have
    // written its anchor into the caBundle, so only the issuer fails.
    let day = Duration::from_secs(86_400);
    let expired = generate(
        "cluster.local",
        "weft",
        day * 3650,
        day,
        now - time::Duration::days(2),
    )
    .unwrap();
    replace_secret(&c, &expired).await;
    set_ca_bundle(&c, &expired.anchor_pem).await;
    let (report, code) = check(&c, &[]).await;
    assert_eq!(
        problems(&report),
        [
            "✖ the issuer certificate is valid for at least 60 days",
            "✖ the issuer loads as the controller loads it (a CA signed by the trust anchor, with its key)",
        ],
        "{report}"
    );
    assert_eq!(code, 1);
    // One that expires in 30 days: a warning, exit 0.
    let soon = generate("cluster.local", "weft", day * 3650, day * 30, now).unwrap();
    replace_secret(&c, &soon).await;
    set_ca_bundle(&c, &soon.anchor_pem).await;
    let (report, code) = check(&c, &["-o", "wide"]).await;
    assert_eq!(
        problems(&report)[0].split(" (").next(),
        Some("‼ the issuer certificate is valid for at least 60 days"),
        "{report}"
    );
    assert_eq!(problems(&report).len(), 1, "{report}");
    assert!(report.contains("(expires "), "{report}");
    assert!(
        report.ends_with("\nStatus check results are ‼ (1 warning)\n"),
        "{report}"
    );
    assert_eq!(code, 0);
    replace_secret(&c, &g).await;
    set_ca_bundle(&c, &g.anchor_pem).await;

    // The controller unavailable.
    set_ready_replicas(&c, 0).await;
    let (report, code) = check(&c, &[]).await;
    assert_eq!(
        problems(&report),
        ["✖ the controller Deployment weft-controller is available"],
        "{report}"
    );
    assert_eq!(code, 1);

    // JSON: exactly the documented structure.
    let (report, code) = check(&c, &["-o", "json"]).await;
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&report).unwrap();
    assert_json_shape(&v);
    assert_eq!(v["success"], json!(false));
    let failed: Vec<&Value> = v["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["checks"].as_array().unwrap())
        .filter(|c| c["result"] != "success")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["description"],
        "the controller Deployment weft-controller is available"
    );
    assert_eq!(failed[0]["result"], "error");
    assert_eq!(failed[0]["detail"], "0/1 replicas ready");
    assert_eq!(failed[0]["fix"], "kubectl -n weft describe deploy/weft-controller; kubectl -n weft logs deploy/weft-controller");
    set_ready_replicas(&c, 1).await;
    let (report, code) = check(&c, &["-o", "json"]).await;
    let v: Value = serde_json::from_str(&report).unwrap();
    assert_json_shape(&v);
    assert_eq!((v["success"].clone(), code), (json!(true), 0));
}

/// `{"success": bool, "categories": [{"name", "checks": [{"description", "result",
/// "hint"?, "fix"?, "detail"?}]}]}` and nothing else.
pub fn assert_json_shape(v: &Value) {
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(v), ["categories", "success"]);
    assert!(v["success"].is_boolean());
    for cat in v["categories"].as_array().unwrap() {
        assert_eq!(keys(cat), ["checks", "name"]);
        assert!(cat["name"].is_string());
        for c in cat["checks"].as_array().unwrap() {
            for k in keys(c) {
                assert!(
                    ["description", "result", "hint", "fix", "detail"].contains(&k.as_str()),
                    "{k}"
                );
                assert!(c[&k].is_string(), "{k}");
            }
            assert!(["success", "warning", "error"].contains(&c["result"].as_str().unwrap()));
            assert!(c["description"].is_string());
        }
    }
}

#[tokio::test]
async fn check_pre_and_proxy_against_the_fake() {
    let now = OffsetDateTime::now_utc();
    let g = crate::install::identity::generate("weft", now).unwrap();
    let c = cluster("pre", &g).await;
    // Before install: all fine, then the caller may not create webhooks.
    let (report, code) = check(&c, &["--pre"]).await;
    assert_eq!(problems(&report), Vec::<&str>::new(), "{report}");
    assert_eq!(code, 0);
    c.fake.deny_access("mutatingwebhookconfigurations");
    let (report, code) = check(&c, &["--pre"]).await;
    assert_eq!(
        problems(&report),
        ["✖ can create mutatingwebhookconfigurations (admissionregistration.k8s.io)"],
        "{report}"
    );
    assert!(
        report.contains("the fake API server denies mutatingwebhookconfigurations"),
        "{report}"
    );
    assert_eq!(code, 1);

    install(&c).await;
    let (report, _) = check(&c, &["--pre"]).await;
    assert_eq!(
        problems(&report)[0],
        "‼ the control-plane namespace weft does not exist yet",
        "{report}"
    );

    // --proxy: a meshed namespace with a meshed pod and one created without a proxy.
    let client = c.fake.client();
    create(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "annotations": {"weft.dev/inject": "enabled"}}})).await;
    let pod = |name: &str, meshed: bool| {
        let mut containers = vec![json!({"name": "app", "image": "example/app:1"})];
        let mut statuses = vec![
            json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": true, "restartCount": 0}),
        ];
        if meshed {
            containers
                .push(json!({"name": "weft-proxy", "image": "ghcr.io/weft-mesh/weft-proxy:x"}));
            statuses.push(json!({"name": "weft-proxy", "image": "p", "imageID": "", "ready": true, "restartCount": 0}));
        }
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "apps", "annotations": {"weft.dev/proxy-version": V},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-5d8f7c9b6", name.split('-').next().unwrap_or("")), "uid": "2"}]},
            "spec": {"containers": containers},
            "status": {"phase": "Running", "containerStatuses": statuses}})
    };
    create(&client, &pod("web-5d8f7c9b6-aaaaa", true)).await;
    let (report, code) = check(&c, &["--proxy", "-n", "apps"]).await;
    assert_eq!(problems(&report), Vec::<&str>::new(), "{report}");
    assert!(
        report.contains("\nweft-data-plane\n---------------\n✔ meshed pods' proxies are ready"),
        "{report}"
    );
    assert_eq!(code, 0);
    create(&client, &pod("api-5d8f7c9b6-bbbbb", false)).await;
    let (report, code) = check(&c, &["--proxy"]).await;
    assert_eq!(
        problems(&report),
        ["‼ pods in namespaces annotated weft.dev/inject: enabled or ingress have a proxy"],
        "{report}"
    );
    assert!(
        report.contains("    fix:  kubectl -n apps rollout restart deployment/api\n"),
        "{report}"
    );
    assert_eq!(code, 0, "warnings only");
}
