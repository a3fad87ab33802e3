//! `weft uninstall`: the objects to delete, as YAML stubs (`apiVersion`, `kind`,
//! `metadata.name`), for `weft uninstall | kubectl delete -f -`.
//!
//! Order: the webhook first, so no pod created meanwhile waits on a controller that is going
//! away; then the Namespace, whose deletion takes everything `weft install` put in it (the
//! Deployment, PodDisruptionBudget, Services, Secret, ServiceAccount, Role and RoleBinding);
//! then the cluster-wide RBAC. The namespaced objects are not listed one by one: some exist
//! only with some flags (the PodDisruptionBudget with `--ha`, the Secret without
//! `--identity-external-issuer`), and `kubectl delete` fails on a listed object that is not
//! there.

use super::{CONTROLLER, WEBHOOK_CONFIG};
use serde_json::{json, Value};

fn stub(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
}

/// What to delete, in order.
pub fn objects(namespace: &str) -> Vec<Value> {
    vec![
        stub(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            WEBHOOK_CONFIG,
        ),
        stub("v1", "Namespace", namespace),
        stub(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            CONTROLLER,
        ),
        stub("rbac.authorization.k8s.io/v1", "ClusterRole", CONTROLLER),
    ]
}

/// For stderr.
pub fn note(namespace: &str) -> String {
    format!(
        "weft uninstall: deleting Namespace {namespace} deletes everything in it, including the identity issuer Secret. \
         Meshed pods keep their proxies until they are restarted, but without the controller those proxies cannot renew \
         their certificates (24 h): remove the weft.dev/inject annotations and restart meshed workloads soon (docs/install.md)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_uninstall_lists_cluster_objects_and_the_namespace() {
        let objs = objects("mesh");
        let got: Vec<String> = objs
            .iter()
            .map(|o| {
                format!(
                    "{} {} {}",
                    o["apiVersion"], o["kind"], o["metadata"]["name"]
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "\"admissionregistration.k8s.io/v1\" \"MutatingWebhookConfiguration\" \"weft-proxy-injector\"",
                "\"v1\" \"Namespace\" \"mesh\"",
                "\"rbac.authorization.k8s.io/v1\" \"ClusterRoleBinding\" \"weft-controller\"",
                "\"rbac.authorization.k8s.io/v1\" \"ClusterRole\" \"weft-controller\"",
            ]
        );
        for o in &objs {
            assert_eq!(o.as_object().map(|m| m.len()), Some(3));
            assert!(o["metadata"].get("namespace").is_none());
        }
    }
}
