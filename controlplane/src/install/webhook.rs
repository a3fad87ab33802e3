//! The MutatingWebhookConfiguration `weft-proxy-injector`: the API server sends every pod
//! creation (outside kube-system and the control plane's namespace) to the controller's
//! `/inject-pods` through the `weft-controller` Service on port 443.
//!
//! Choices, each explained in docs/install.md ("The webhook"):
//! - `failurePolicy: Ignore`: if the controller is down, pods are created without the proxy
//!   rather than not at all — a mesh outage must never stop a cluster from running pods;
//! - `timeoutSeconds: 5`: the injector answers in milliseconds; a stuck one delays a pod
//!   creation by at most 5 s, not the 10 s default;
//! - `sideEffects: None`, `reinvocationPolicy: Never`: the injector only computes a patch,
//!   and it skips pods that already have the proxy;
//! - a second webhook, `ingress.inject.weft.dev`, for kube-system only and only for pods
//!   labelled `weft.dev/inject: ingress`: k3s' bundled Traefik (docs/ingress.md), and
//!   nothing else of the cluster's own plumbing, ever reaches the injector;
//! - `caBundle`: the trust anchor. The controller's webhook certificate is issued by the
//!   identity issuer, which the anchor signs, so the API server verifies it with the
//!   anchor. With an external issuer the anchor is not known here; the controller fills the
//!   `caBundle` in at start.

use super::{labels, object, CONTROLLER, CONTROL_PLANE_NS_LABEL, WEBHOOK_CONFIG};
use crate::inject::webhook::{base64, INJECT_PATH};
use crate::inject::KUBE_SYSTEM;
use serde_json::{json, Value};

/// The webhook's name inside the configuration (a qualified name, as the API requires).
pub const WEBHOOK_NAME: &str = "inject.weft.dev";
/// The kube-system webhook, for an ingress controller there that asks for the mesh.
pub const INGRESS_WEBHOOK_NAME: &str = "ingress.inject.weft.dev";
/// The label (and annotation) value an ingress controller in kube-system carries.
pub const INGRESS_LABEL: (&str, &str) = ("weft.dev/inject", "ingress");
/// How long the API server waits for the injector.
pub const TIMEOUT_SECONDS: u32 = 5;

/// The configuration; `ca_pem` is the trust anchor, or `None` with an external issuer.
pub fn configuration(namespace: &str, version: &str, ca_pem: Option<&str>) -> Value {
    let mut client_config = json!({
        "service": {
            "name": CONTROLLER,
            "namespace": namespace,
            "path": INJECT_PATH,
            "port": 443,
        },
    });
    if let Some(pem) = ca_pem {
        client_config["caBundle"] = json!(base64(pem.as_bytes()));
    }
    let everywhere_else = entry(
        WEBHOOK_NAME,
        &client_config,
        json!({
            "matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [KUBE_SYSTEM, namespace],
            }],
        }),
        json!({
            "matchExpressions": [{
                "key": CONTROL_PLANE_NS_LABEL,
                "operator": "DoesNotExist",
            }],
        }),
    );
    let kube_system_ingress = entry(
        INGRESS_WEBHOOK_NAME,
        &client_config,
        json!({
            "matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": [KUBE_SYSTEM],
            }],
        }),
        json!({"matchLabels": {INGRESS_LABEL.0: INGRESS_LABEL.1}}),
    );
    object(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        WEBHOOK_CONFIG,
        None,
        labels("injector", version),
        json!({"webhooks": [everywhere_else, kube_system_ingress]}),
    )
}

/// One webhook of the configuration: pods, CREATE, these selectors.
fn entry(name: &str, client_config: &Value, namespaces: Value, objects: Value) -> Value {
    json!({
                "name": name,
                "clientConfig": client_config,
                "rules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": TIMEOUT_SECONDS,
                "reinvocationPolicy": "Never",
                "namespaceSelector": namespaces,
                "objectSelector": objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_webhook_shape() {
        let w = configuration("mesh", "0.1.0", Some("PEM"));
        let h = &w["webhooks"][0];
        assert_eq!(h["name"], "inject.weft.dev");
        assert_eq!(
            h["clientConfig"],
            json!({"caBundle": "UEVN", "service": {"name": "weft-controller", "namespace": "mesh", "path": "/inject-pods", "port": 443}})
        );
        assert_eq!(h["failurePolicy"], "Ignore");
        assert_eq!(
            h["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "mesh"])
        );
        // kube-system: only pods labelled for ingress mode.
        let k = &w["webhooks"][1];
        assert_eq!(k["name"], "ingress.inject.weft.dev");
        assert_eq!(k["clientConfig"], h["clientConfig"]);
        assert_eq!(
            k["namespaceSelector"],
            json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system"]}]})
        );
        assert_eq!(
            k["objectSelector"],
            json!({"matchLabels": {"weft.dev/inject": "ingress"}})
        );
        assert_eq!(k["failurePolicy"], "Ignore");
        assert_eq!(w["webhooks"].as_array().map(Vec::len), Some(2));
        let w = configuration("mesh", "0.1.0", None);
        assert!(w["webhooks"][0]["clientConfig"].get("caBundle").is_none());
        assert!(w["webhooks"][1]["clientConfig"].get("caBundle").is_none());
    }
}
