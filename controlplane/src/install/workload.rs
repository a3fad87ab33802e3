//! The control plane's own objects: its Namespace, the `weft-controller` Deployment (and
//! with `--ha` its PodDisruptionBudget), and the two Services in front of it.
//!
//! The controller listens on three ports: 8086 for proxies (identity and destination,
//! HTTP/2 over TLS), 8443 for the API server (the injector webhook, HTTPS) and 9990 for the
//! kubelet and Prometheus (admin: `/live`, `/ready`, `/metrics`, plain HTTP).

use super::options::Options;
use super::{
    labels, object, ADMIN_SERVICE, CONTROLLER, CONTROL_PLANE_NS_LABEL, INJECT_ANNOTATION,
    ISSUER_SECRET,
};
use serde_json::{json, Value};
use weft_api::certify::DEFAULT_PROXY_API_PORT;

/// The injector's HTTPS port on the pod (the Service exposes it as 443).
pub const INJECTOR_PORT: u16 = 8443;
/// The admin port: `/live`, `/ready`, `/metrics`.
pub const ADMIN_PORT: u16 = 9990;
/// The uid and gid the controller runs as (the conventional "nonroot" of distroless images;
/// the image is `FROM scratch`, so any unprivileged id works).
pub const CONTROLLER_UID: i64 = 65532;

/// The label selecting the controller's pods (Deployment, PDB, Services, anti-affinity).
fn selector() -> Value {
    json!({"app.kubernetes.io/name": CONTROLLER})
}

/// The control plane's namespace: labelled so the webhook's object selector and `weft
/// check` can recognise it, annotated so that nothing in it is injected, and held to the
/// `restricted` Pod Security profile, which the controller meets.
pub fn namespace(ns: &str, version: &str) -> Value {
    let mut labels = labels("control-plane", version);
    labels.insert(CONTROL_PLANE_NS_LABEL.into(), json!(ns));
    labels.insert(
        "pod-security.kubernetes.io/enforce".into(),
        json!("restricted"),
    );
    let mut ns_obj = object("v1", "Namespace", ns, None, labels, json!({}));
    ns_obj["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "disabled"});
    ns_obj
}

/// `weft controller`'s arguments, exactly.
pub fn controller_args(o: &Options) -> Vec<String> {
    let mut args: Vec<String> = [
        "controller",
        "--identity-secret",
        ISSUER_SECRET,
        "--discovery",
        "kubernetes",
        "--control-plane-namespace",
        o.namespace.as_str(),
        "--admin-addr",
        format!("0.0.0.0:{ADMIN_PORT}").as_str(),
        "--injector-addr",
        format!("0.0.0.0:{INJECTOR_PORT}").as_str(),
        "--proxy-image",
        o.proxy_image.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(level) = &o.log_level {
        args.extend(["--log-level".to_string(), level.clone()]);
    }
    args
}

fn resources(o: &Options) -> Value {
    let r = &o.resources;
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = &r.cpu_limit {
        limits.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &r.memory_limit {
        limits.insert("memory".into(), json!(memory));
    }
    let mut out = json!({"requests": {"cpu": r.cpu_request, "memory": r.memory_request}});
    if !limits.is_empty() {
        out["limits"] = Value::Object(limits);
    }
    out
}

fn probe(path: &str, period: u32, failures: u32) -> Value {
    json!({
        "httpGet": {"path": path, "port": ADMIN_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    })
}

/// The controller's pod template.
fn pod_template(o: &Options) -> Value {
    let mut pod_labels = labels("controller", &o.version);
    // The webhook's objectSelector skips pods with this label: the controller never waits
    // on itself, even if the namespace selector were edited.
    pod_labels.insert(CONTROL_PLANE_NS_LABEL.into(), json!(o.namespace));
    let mut spec = json!({
        "serviceAccountName": CONTROLLER,
        "automountServiceAccountToken": true,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": CONTROLLER_UID,
            "runAsGroup": CONTROLLER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "weft",
            "image": o.controller_image,
            "imagePullPolicy": o.image_pull_policy,
            "args": controller_args(o),
            "ports": [
                {"name": "proxy-api", "containerPort": DEFAULT_PROXY_API_PORT, "protocol": "TCP"},
                {"name": "injector", "containerPort": INJECTOR_PORT, "protocol": "TCP"},
                {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            ],
            "livenessProbe": probe("/live", 10, 3),
            "readinessProbe": probe("/ready", 5, 3),
            "resources": resources(o),
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": CONTROLLER_UID,
                "runAsGroup": CONTROLLER_UID,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
    });
    if o.ha {
        spec["affinity"] = json!({
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector()},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }],
            },
        });
    }
    json!({
        "metadata": {
            "labels": pod_labels,
            "annotations": {INJECT_ANNOTATION: "disabled"},
        },
        "spec": spec,
    })
}

pub fn deployment(o: &Options) -> Value {
    object(
        "apps/v1",
        "Deployment",
        CONTROLLER,
        Some(&o.namespace),
        labels("controller", &o.version),
        json!({"spec": {
            "replicas": o.replicas,
            "selector": {"matchLabels": selector()},
            "template": pod_template(o),
        }}),
    )
}

/// With `--ha`: voluntary disruptions (node drains, upgrades) keep one controller running.
pub fn pod_disruption_budget(o: &Options) -> Value {
    object(
        "policy/v1",
        "PodDisruptionBudget",
        CONTROLLER,
        Some(&o.namespace),
        labels("controller", &o.version),
        json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": selector()}}}),
    )
}

/// `weft-controller`: proxies (8086) and the API server's webhook calls (443 → 8443).
pub fn service(o: &Options) -> Value {
    object(
        "v1",
        "Service",
        CONTROLLER,
        Some(&o.namespace),
        labels("controller", &o.version),
        json!({"spec": {
            "type": "ClusterIP",
            "selector": selector(),
            "ports": [
                {"name": "proxy-api", "port": DEFAULT_PROXY_API_PORT, "targetPort": DEFAULT_PROXY_API_PORT, "protocol": "TCP"},
                {"name": "injector", "port": 443, "targetPort": INJECTOR_PORT, "protocol": "TCP"},
            ],
        }}),
    )
}

/// `weft-controller-admin`: metrics and health, kept apart so a NetworkPolicy or a
/// ServiceMonitor can single it out.
pub fn admin_service(o: &Options) -> Value {
    object(
        "v1",
        "Service",
        ADMIN_SERVICE,
        Some(&o.namespace),
        labels("controller", &o.version),
        json!({"spec": {
            "type": "ClusterIP",
            "selector": selector(),
            "ports": [{"name": "admin", "port": ADMIN_PORT, "targetPort": ADMIN_PORT, "protocol": "TCP"}],
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::InstallArgs;

    fn opts(flags: &[&str]) -> Options {
        use argh::FromArgs;
        Options::from_args(&InstallArgs::from_args(&["install"], flags).unwrap()).unwrap()
    }

    /// The arguments are ones `weft controller` of this build accepts, meaning what we mean:
    /// a renamed or removed controller flag fails here, not in a CrashLoopBackOff.
    #[test]
    fn install_controller_args_parse_as_weft_controller() {
        use argh::FromArgs;
        let o = opts(&[
            "--namespace",
            "mesh",
            "--set",
            "proxy.image=example.com/p:1",
            "--set",
            "controller.logLevel=warn,weft=debug",
        ]);
        let args = controller_args(&o);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cli = crate::cli::Cli::from_args(&["weft"], &args)
            .unwrap_or_else(|e| panic!("weft controller refuses {args:?}: {}", e.output));
        let crate::cli::Command::Controller(c) = cli.command else {
            panic!("not the controller subcommand")
        };
        assert_eq!(c.identity_secret.as_deref(), Some("weft-identity-issuer"));
        assert!(c.identity_dir.is_none() && c.config.is_none());
        assert!(matches!(c.discovery, crate::discovery::Backend::Kubernetes));
        assert_eq!(c.control_plane_namespace, "mesh");
        assert_eq!(c.admin_addr, Some(([0, 0, 0, 0], ADMIN_PORT).into()));
        assert_eq!(c.injector_addr, Some(([0, 0, 0, 0], INJECTOR_PORT).into()));
        assert_eq!(c.proxy_api_addr.port(), DEFAULT_PROXY_API_PORT);
        assert_eq!(c.proxy_image.as_deref(), Some("example.com/p:1"));
        assert_eq!(c.webhook_config, super::super::WEBHOOK_CONFIG);
        assert_eq!(c.log_level, "warn,weft=debug");
    }

    #[test]
    fn install_controller_args_exactly() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            controller_args(&opts(&["--namespace", "mesh"])),
            [
                "controller",
                "--identity-secret",
                "weft-identity-issuer",
                "--discovery",
                "kubernetes",
                "--control-plane-namespace",
                "mesh",
                "--admin-addr",
                "0.0.0.0:9990",
                "--injector-addr",
                "0.0.0.0:8443",
                "--proxy-image",
                &format!("ghcr.io/weft-mesh/weft-proxy:{v}"),
            ]
        );
        let args = controller_args(&opts(&["--set", "controller.logLevel=debug"]));
        assert_eq!(args[args.len() - 2..], ["--log-level", "debug"]);
    }

    #[test]
    fn install_deployment_shape() {
        let d = deployment(&opts(&[]));
        assert_eq!(d["spec"]["replicas"], 1);
        let pod = &d["spec"]["template"];
        assert_eq!(
            pod["metadata"]["annotations"]["weft.dev/inject"],
            "disabled"
        );
        assert_eq!(
            pod["metadata"]["labels"]["weft.dev/control-plane-ns"],
            "weft"
        );
        assert!(pod["spec"].get("affinity").is_none());
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({"path": "/live", "port": 9990})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/ready", "port": 9990})
        );
        // The selector matches the template's labels.
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&pod["metadata"]["labels"][k], v);
        }

        let d = deployment(&opts(&["--ha"]));
        assert_eq!(d["spec"]["replicas"], 3);
        let term = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            term["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
    }

    #[test]
    fn install_namespace_is_marked() {
        let n = namespace("weft", "0.1.0");
        assert_eq!(n["metadata"]["labels"]["weft.dev/control-plane-ns"], "weft");
        assert_eq!(n["metadata"]["annotations"]["weft.dev/inject"], "disabled");
        assert!(n["metadata"].get("namespace").is_none());
    }
}
