//! `weft install` and `weft uninstall`, run as the real binary: the YAML stream parsed back
//! and checked object by object (kinds, names, order, RBAC rules exactly, the controller's
//! arguments, the webhook, and the generated certificates: the `caBundle` is a CA
//! certificate and the Secret's issuer chains to it), for the default install, `--ha`,
//! `--identity-external-issuer`, `--namespace`, `--registry`/`--version` and `--set`; then
//! every variant validated against the Kubernetes 1.26–1.33 schemas by
//! `scripts/validate-manifests` (kubernetes-validate, strict). Without that tool the
//! validation test fails under `CI=true` and skips loudly otherwise.

use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn weft(args: &[&str]) -> Run {
    let out = Command::new(WEFT).args(args).output().expect("run weft");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// Runs `weft install ARGS`, which must succeed, and parses the stream.
fn install(args: &[&str]) -> (Vec<Value>, String) {
    let mut all = vec!["install"];
    all.extend_from_slice(args);
    let run = weft(&all);
    assert_eq!(run.code, Some(0), "weft {all:?} failed: {}", run.stderr);
    (docs(&run.stdout), run.stderr)
}

fn docs(s: &str) -> Vec<Value> {
    assert!(s.starts_with("---\n"), "a stream starts with ---: {s:.40}");
    serde_yaml::Deserializer::from_str(s)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn ids(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            let ns = d["metadata"]["namespace"]
                .as_str()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            format!(
                "{} {}{}",
                d["kind"].as_str().unwrap_or("?"),
                ns,
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind} {name} in {:?}",
        ids(docs)
    );
    found[0]
}

fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", char::from(c)),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (val(*c) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn b64_text(v: &Value) -> String {
    String::from_utf8(unbase64(v.as_str().expect("a base64 string"))).expect("PEM is text")
}

/// The DER of every certificate in a PEM text.
fn certs(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| {
            let p = p.expect("PEM block");
            assert_eq!(p.label, "CERTIFICATE");
            p.contents
        })
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

const DEFAULT_OBJECTS: [&str; 11] = [
    "Namespace weft",
    "ServiceAccount weft/weft-controller",
    "ClusterRole weft-controller",
    "ClusterRoleBinding weft-controller",
    "Role weft/weft-controller",
    "RoleBinding weft/weft-controller",
    "Secret weft/weft-identity-issuer",
    "Service weft/weft-controller",
    "Service weft/weft-controller-admin",
    "MutatingWebhookConfiguration weft-proxy-injector",
    "Deployment weft/weft-controller",
];

#[test]
fn default_install_objects_rbac_and_controller() {
    let (docs, stderr) = install(&[]);
    assert_eq!(ids(&docs), DEFAULT_OBJECTS);

    let ns = find(&docs, "Namespace", "weft");
    assert_eq!(
        ns["metadata"]["labels"]["weft.dev/control-plane-ns"],
        "weft"
    );
    assert_eq!(ns["metadata"]["annotations"]["weft.dev/inject"], "disabled");

    // RBAC, exactly.
    let cr = find(&docs, "ClusterRole", "weft-controller");
    assert_eq!(
        cr["rules"],
        json!([
            {"apiGroups": [""], "resources": ["namespaces", "pods", "services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
             "resourceNames": ["weft-proxy-injector"], "verbs": ["get", "patch"]},
        ])
    );
    let role = find(&docs, "Role", "weft-controller");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["weft-identity-issuer"], "verbs": ["get"]},
        ])
    );
    let subject =
        json!([{"kind": "ServiceAccount", "name": "weft-controller", "namespace": "weft"}]);
    let crb = find(&docs, "ClusterRoleBinding", "weft-controller");
    assert_eq!(
        crb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "weft-controller"})
    );
    assert_eq!(crb["subjects"], subject);
    let rb = find(&docs, "RoleBinding", "weft-controller");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "weft-controller"})
    );
    assert_eq!(rb["subjects"], subject);

    // The controller.
    let d = find(&docs, "Deployment", "weft-controller");
    assert_eq!(d["spec"]["replicas"], 1);
    let pod = &d["spec"]["template"];
    for (k, v) in d["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &pod["metadata"]["labels"][k], v,
            "the selector matches the pods"
        );
    }
    assert_eq!(
        pod["metadata"]["annotations"]["weft.dev/inject"],
        "disabled"
    );
    assert_eq!(
        pod["metadata"]["labels"]["weft.dev/control-plane-ns"],
        "weft"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "weft-controller");
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert!(spec.get("affinity").is_none());
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "weft");
    assert_eq!(c["image"], format!("ghcr.io/weft-mesh/weft:{VERSION}"));
    let proxy_image = format!("ghcr.io/weft-mesh/weft-proxy:{VERSION}");
    assert_eq!(
        strings(&c["args"]),
        [
            "controller",
            "--identity-secret",
            "weft-identity-issuer",
            "--discovery",
            "kubernetes",
            "--control-plane-namespace",
            "weft",
            "--admin-addr",
            "0.0.0.0:9990",
            "--injector-addr",
            "0.0.0.0:8443",
            "--proxy-image",
            proxy_image.as_str(),
        ]
    );
    assert_eq!(
        c["ports"],
        json!([
            {"name": "proxy-api", "containerPort": 8086, "protocol": "TCP"},
            {"name": "injector", "containerPort": 8443, "protocol": "TCP"},
            {"name": "admin", "containerPort": 9990, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/live", "port": 9990})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": 9990})
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"], json!({"type": "RuntimeDefault"}));
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
    );

    // The Services.
    let svc = find(&docs, "Service", "weft-controller");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"name": "proxy-api", "port": 8086, "targetPort": 8086, "protocol": "TCP"},
            {"name": "injector", "port": 443, "targetPort": 8443, "protocol": "TCP"},
        ])
    );
    let admin = find(&docs, "Service", "weft-controller-admin");
    assert_eq!(
        admin["spec"]["ports"],
        json!([{"name": "admin", "port": 9990, "targetPort": 9990, "protocol": "TCP"}])
    );
    assert_eq!(
        admin["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );

    // Every object says what it belongs to.
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/part-of"], "weft",
            "{doc}"
        );
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/version"], VERSION,
            "{doc}"
        );
    }

    assert!(
        stderr.contains("WARNING: the trust anchor expires on "),
        "{stderr}"
    );
    assert!(
        stderr.contains("WARNING: the issuer certificate expires on "),
        "{stderr}"
    );
    assert!(
        stderr.contains("holds the issuer's private key"),
        "{stderr}"
    );
}

#[test]
fn default_install_webhook_and_certificates() {
    let (docs, _) = install(&[]);
    let mwc = find(&docs, "MutatingWebhookConfiguration", "weft-proxy-injector");
    let hooks = mwc["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 2);
    // The second: kube-system pods labelled for ingress mode only (k3s' Traefik).
    let k = &hooks[1];
    assert_eq!(k["name"], "ingress.inject.weft.dev");
    assert_eq!(
        k["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system"]}]})
    );
    assert_eq!(
        k["objectSelector"],
        json!({"matchLabels": {"weft.dev/inject": "ingress"}})
    );
    assert_eq!(k["clientConfig"], hooks[0]["clientConfig"]);
    let h = &hooks[0];
    assert_eq!(h["name"], "inject.weft.dev");
    assert_eq!(
        h["clientConfig"]["service"],
        json!({"name": "weft-controller", "namespace": "weft", "path": "/inject-pods", "port": 443})
    );
    assert_eq!(
        h["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(h["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(h["sideEffects"], "None");
    assert_eq!(h["failurePolicy"], "Ignore");
    assert_eq!(h["timeoutSeconds"], 5);
    assert_eq!(h["reinvocationPolicy"], "Never");
    assert_eq!(
        h["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "weft"]}]})
    );
    assert_eq!(
        h["objectSelector"],
        json!({"matchExpressions": [{"key": "weft.dev/control-plane-ns", "operator": "DoesNotExist"}]})
    );

    // caBundle: one PEM certificate, a CA: the trust anchor.
    let bundle = b64_text(&h["clientConfig"]["caBundle"]);
    let anchors = certs(&bundle);
    assert_eq!(anchors.len(), 1, "{bundle}");
    let (_, anchor) = x509_parser::parse_x509_certificate(&anchors[0]).expect("anchor parses");
    let bc = anchor
        .basic_constraints()
        .expect("one basicConstraints")
        .expect("basicConstraints present");
    assert!(bc.value.ca, "the caBundle certificate is a CA");
    anchor
        .verify_signature(None)
        .expect("the anchor is self-signed");

    // The Secret: the same anchor, an issuer that chains to it, and the issuer's key.
    let secret = find(&docs, "Secret", "weft-identity-issuer");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = secret["data"].as_object().expect("data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    assert_eq!(
        b64_text(&data["ca.crt"]),
        bundle,
        "ca.crt is the caBundle's anchor"
    );
    let issuer_pem = b64_text(&data["tls.crt"]);
    let issuer_der = certs(&issuer_pem);
    assert_eq!(issuer_der.len(), 1);
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der[0]).expect("issuer parses");
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("tls.crt is signed by the trust anchor");
    assert_eq!(issuer.issuer(), anchor.subject());
    let ibc = issuer.basic_constraints().expect("one").expect("present");
    assert!(
        ibc.value.ca && ibc.value.path_len_constraint == Some(0),
        "the issuer is a CA with pathlen 0"
    );
    assert!(issuer.validity().is_valid());
    let key =
        rcgen::KeyPair::from_pem(&b64_text(&data["tls.key"])).expect("tls.key is a private key");
    assert_eq!(
        key.public_key_raw(),
        &issuer.public_key().subject_public_key.data[..],
        "tls.key is tls.crt's key"
    );
    let cn = issuer
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    assert_eq!(cn, Some("identity.weft.cluster.local"));

    // Each run makes a new anchor.
    let (again, _) = install(&[]);
    let other = find(
        &again,
        "MutatingWebhookConfiguration",
        "weft-proxy-injector",
    );
    assert_ne!(
        other["webhooks"][0]["clientConfig"]["caBundle"],
        h["clientConfig"]["caBundle"]
    );
}

#[test]
fn ha_install() {
    let (docs, _) = install(&["--ha"]);
    let mut want: Vec<String> = DEFAULT_OBJECTS.iter().map(|s| s.to_string()).collect();
    want.push("PodDisruptionBudget weft/weft-controller".into());
    assert_eq!(ids(&docs), want);
    let d = find(&docs, "Deployment", "weft-controller");
    assert_eq!(d["spec"]["replicas"], 3);
    let selector = &d["spec"]["selector"]["matchLabels"];
    assert_eq!(
        d["spec"]["template"]["spec"]["affinity"],
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"},
        }]}})
    );
    let pdb = find(&docs, "PodDisruptionBudget", "weft-controller");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(
        pdb["spec"],
        json!({"minAvailable": 1, "selector": {"matchLabels": selector}})
    );

    let run = weft(&["install", "--ha", "--set", "controller.replicas=1"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr
            .starts_with("weft install: --ha with controller.replicas=1"),
        "{}",
        run.stderr
    );
}

#[test]
fn external_issuer_install() {
    let (docs, stderr) = install(&["--identity-external-issuer"]);
    let want: Vec<&str> = DEFAULT_OBJECTS
        .iter()
        .copied()
        .filter(|s| !s.starts_with("Secret"))
        .collect();
    assert_eq!(ids(&docs), want);
    let mwc = find(&docs, "MutatingWebhookConfiguration", "weft-proxy-injector");
    assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    // The controller still reads the (external) Secret.
    let role = find(&docs, "Role", "weft-controller");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        json!(["weft-identity-issuer"])
    );
    assert!(
        stderr.contains("no Secret weft-identity-issuer in the output"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ca.crt (the trust anchor), tls.crt (the issuer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the controller fills it in at start"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("WARNING"),
        "nothing generated, nothing expires: {stderr}"
    );
}

#[test]
fn install_namespace_registry_and_version() {
    let (docs, _) = install(&[
        "--namespace",
        "mesh",
        "--registry",
        "registry.local:5000/edge/",
        "--version",
        "dev-7",
    ]);
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("kind");
        let cluster_scoped = [
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
        ];
        if cluster_scoped.contains(&kind) {
            assert!(doc["metadata"].get("namespace").is_none(), "{doc}");
        } else {
            assert_eq!(doc["metadata"]["namespace"], "mesh", "{doc}");
        }
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/version"],
            "dev-7"
        );
    }
    find(&docs, "Namespace", "mesh");
    let c =
        &find(&docs, "Deployment", "weft-controller")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.local:5000/edge/weft:dev-7");
    let args = strings(&c["args"]);
    assert_eq!(args[6], "mesh");
    assert_eq!(args[12], "registry.local:5000/edge/weft-proxy:dev-7");
    let h = &find(&docs, "MutatingWebhookConfiguration", "weft-proxy-injector")["webhooks"][0];
    assert_eq!(h["clientConfig"]["service"]["namespace"], "mesh");
    assert_eq!(
        h["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "mesh"])
    );
    assert_eq!(
        find(&docs, "ClusterRoleBinding", "weft-controller")["subjects"][0]["namespace"],
        "mesh"
    );

    for bad in [
        &["--namespace", "kube-system"][..],
        &["--namespace", "Mesh"],
        &["--version", "1.0/x"],
        &["--registry", "ghcr.io/x:1"],
    ] {
        let mut args = vec!["install"];
        args.extend_from_slice(bad);
        let run = weft(&args);
        assert_eq!(run.code, Some(1), "{bad:?}");
        assert!(run.stdout.is_empty(), "{bad:?}");
        assert!(
            run.stderr.starts_with("weft install: --"),
            "{bad:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn install_set_overrides() {
    let (docs, _) = install(&[
        "--set",
        "controller.replicas=2",
        "--set",
        "controller.logLevel=warn,weft=debug",
        "--set",
        "controller.image=example.com/weft@sha256:0123",
        "--set",
        "proxy.image=example.com/weft-proxy:canary",
        "--set",
        "controller.imagePullPolicy=Always",
        "--set",
        "controller.resources.requests.cpu=50m",
        "--set",
        "controller.resources.requests.memory=48Mi",
        "--set",
        "controller.resources.limits.cpu=500m",
        "--set",
        "controller.resources.limits.memory=96Mi",
    ]);
    let d = find(&docs, "Deployment", "weft-controller");
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(
        d["spec"]["template"]["spec"].get("affinity").is_none(),
        "replicas alone is not --ha"
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "example.com/weft@sha256:0123");
    assert_eq!(c["imagePullPolicy"], "Always");
    let args = strings(&c["args"]);
    assert_eq!(
        args[11..],
        [
            "--proxy-image",
            "example.com/weft-proxy:canary",
            "--log-level",
            "warn,weft=debug"
        ]
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "48Mi"}, "limits": {"cpu": "500m", "memory": "96Mi"}})
    );

    let run = weft(&["install", "--set", "controller.replica=2"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty(), "nothing printed on error");
    assert_eq!(
        run.stderr.trim_end(),
        "weft install: --set controller.replica: unknown key; the known keys are: controller.replicas, \
         controller.logLevel, controller.image, controller.imagePullPolicy, controller.resources.requests.cpu, \
         controller.resources.requests.memory, controller.resources.limits.cpu, controller.resources.limits.memory, \
         proxy.image"
    );
    let run = weft(&[
        "install",
        "--set",
        "controller.resources.limits.memory=64MB",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("expected a resource quantity such as 100m, 0.5, 64Mi or 1G"),
        "{}",
        run.stderr
    );
}

#[test]
fn uninstall_lists_what_to_delete() {
    let run = weft(&["uninstall", "--namespace", "mesh"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let docs = docs(&run.stdout);
    assert_eq!(
        docs,
        [
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "weft-proxy-injector"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "weft-controller"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "weft-controller"}}),
        ]
    );
    assert!(
        run.stderr.contains(
            "Meshed pods keep their proxies until they are restarted, but without the controller"
        ),
        "{}",
        run.stderr
    );
    // Everything `weft install` creates is either listed or inside the namespace.
    let (installed, _) = install(&["--namespace", "mesh", "--ha"]);
    for obj in &installed {
        let listed = docs
            .iter()
            .any(|d| d["kind"] == obj["kind"] && d["metadata"]["name"] == obj["metadata"]["name"]);
        assert!(
            listed || obj["metadata"]["namespace"] == "mesh",
            "{}",
            obj["kind"]
        );
    }
    let run = weft(&["uninstall", "--namespace", "kube-system"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty());
}

fn validate_tool_available(script: &std::path::Path) -> bool {
    let status = Command::new(script)
        .arg("--available")
        .status()
        .expect("run validate-manifests");
    if status.success() {
        return true;
    }
    let how = "install it with `scripts/validate-manifests --install` (kubernetes-validate from PyPI, in /var/cache/weft-tools/venv)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("kubernetes-validate is not installed, and CI=true forbids skipping the schema validation: {how}");
    }
    eprintln!("\n!!! SKIPPED schema validation of `weft install`: kubernetes-validate is not installed; {how}\n");
    false
}

#[test]
fn install_output_validates_against_kubernetes_1_26_to_1_33() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/validate-manifests");
    if !validate_tool_available(&script) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("weft-install-validate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let variants: [(&str, &[&str]); 5] = [
        ("default", &[]),
        ("ha", &["--ha"]),
        (
            "external",
            &["--identity-external-issuer", "--namespace", "mesh"],
        ),
        (
            "set",
            &[
                "--set",
                "controller.resources.limits.cpu=1",
                "--set",
                "controller.logLevel=debug",
                "--set",
                "controller.imagePullPolicy=Never",
            ],
        ),
        (
            "ha-external-registry",
            &[
                "--ha",
                "--identity-external-issuer",
                "--registry",
                "registry.local:5000",
                "--version",
                "dev",
            ],
        ),
    ];
    let mut files = Vec::new();
    for (name, args) in variants {
        let mut all = vec!["install"];
        all.extend_from_slice(args);
        let run = weft(&all);
        assert_eq!(run.code, Some(0), "{all:?}: {}", run.stderr);
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, &run.stdout).expect("write manifest");
        files.push(file);
    }
    let out = Command::new(&script)
        .args(&files)
        .output()
        .expect("run validate-manifests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schema validation failed:\n{stdout}\n{stderr}"
    );
    for (file, count) in files.iter().zip([11, 12, 10, 11, 11]) {
        let line = format!(
            "ok {}: {count} objects valid against Kubernetes 1.26 to 1.33 (strict)",
            file.display()
        );
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
