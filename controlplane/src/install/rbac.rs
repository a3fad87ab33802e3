//! The controller's ServiceAccount and least-privilege RBAC: one ClusterRole for what it
//! must see or do across the cluster, one Role for what it touches in its own namespace,
//! and their bindings. Each rule says in a comment which part of the controller needs it;
//! docs/install.md ("Permissions") is the operator's version of the same table.

use super::{labels, object, CONTROLLER, ISSUER_SECRET, WEBHOOK_CONFIG};
use serde_json::{json, Value};

/// The ServiceAccount the controller runs as; its name is part of the controller's identity
/// (`weft-controller.<ns>.serviceaccount.identity.<ns>.<trust-domain>`).
pub fn service_account(namespace: &str, version: &str) -> Value {
    object(
        "v1",
        "ServiceAccount",
        CONTROLLER,
        Some(namespace),
        labels("controller", version),
        json!({}),
    )
}

/// One RBAC rule.
fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// One RBAC rule restricted to named objects.
fn named_rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "resourceNames": names, "verbs": verbs})
}

/// The cluster-wide rules.
pub fn cluster_rules() -> Vec<Value> {
    vec![
        // Discovery (docs/discovery.md): reflectors on Namespaces (opaque-ports defaults,
        // the injector's namespace annotations), Pods and Services.
        rule(
            &[""],
            &["namespaces", "pods", "services"],
            &["get", "list", "watch"],
        ),
        // Discovery: the endpoints of every Service.
        rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &["get", "list", "watch"],
        ),
        // Discovery: GAMMA traffic splits; harmless when the Gateway API is not installed.
        rule(
            &["gateway.networking.k8s.io"],
            &["httproutes"],
            &["get", "list", "watch"],
        ),
        // Identity: every proxy's token is checked with a TokenReview (docs/identity.md).
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        // The injector reports pods it left alone (hostNetwork, bad annotations) as a
        // core/v1 Warning Event on their owner (controller/injector.rs `record_event`).
        rule(&[""], &["events"], &["create"]),
        // The injector keeps its own webhook's caBundle equal to the trust anchors, at
        // start (controller/injector.rs `sync_ca_bundle`): only that one object.
        named_rule(
            &["admissionregistration.k8s.io"],
            &["mutatingwebhookconfigurations"],
            &[WEBHOOK_CONFIG],
            &["get", "patch"],
        ),
    ]
}

/// The rules in the control plane's namespace.
pub fn namespace_rules() -> Vec<Value> {
    vec![
        // Identity: the issuer, read once at start (--identity-secret); nothing else.
        // No Lease: with several replicas each writes the same caBundle (they read the
        // same issuer), so no writer is elected (controller/injector.rs).
        named_rule(&[""], &["secrets"], &[ISSUER_SECRET], &["get"]),
    ]
}

pub fn cluster_role(version: &str) -> Value {
    object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        CONTROLLER,
        None,
        labels("controller", version),
        json!({"rules": cluster_rules()}),
    )
}

pub fn cluster_role_binding(namespace: &str, version: &str) -> Value {
    object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        CONTROLLER,
        None,
        labels("controller", version),
        binding_body("ClusterRole", namespace),
    )
}

pub fn role(namespace: &str, version: &str) -> Value {
    object(
        "rbac.authorization.k8s.io/v1",
        "Role",
        CONTROLLER,
        Some(namespace),
        labels("controller", version),
        json!({"rules": namespace_rules()}),
    )
}

pub fn role_binding(namespace: &str, version: &str) -> Value {
    object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        CONTROLLER,
        Some(namespace),
        labels("controller", version),
        binding_body("Role", namespace),
    )
}

fn binding_body(role_kind: &str, namespace: &str) -> Value {
    json!({
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": CONTROLLER,
        },
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": namespace}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (group, resource, name, verb) granted, flattened, so a test sees exactly what is
    /// allowed whatever the rules' grouping.
    fn grants(rules: &[Value]) -> Vec<String> {
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for r in rules {
            let names = strs(&r["resourceNames"]);
            let names = if names.is_empty() {
                vec!["*".to_string()]
            } else {
                names
            };
            for g in strs(&r["apiGroups"]) {
                for res in strs(&r["resources"]) {
                    for n in &names {
                        for v in strs(&r["verbs"]) {
                            out.push(format!("{g}/{res}/{n}:{v}"));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn install_cluster_role_grants_exactly_this() {
        let mut want = vec![];
        for res in [
            "/namespaces",
            "/pods",
            "/services",
            "discovery.k8s.io/endpointslices",
            "gateway.networking.k8s.io/httproutes",
        ] {
            for v in ["get", "list", "watch"] {
                want.push(format!("{res}/*:{v}"));
            }
        }
        want.push("authentication.k8s.io/tokenreviews/*:create".into());
        want.push("/events/*:create".into());
        for v in ["get", "patch"] {
            want.push(format!(
                "admissionregistration.k8s.io/mutatingwebhookconfigurations/weft-proxy-injector:{v}"
            ));
        }
        want.sort();
        assert_eq!(grants(&cluster_rules()), want);
    }

    #[test]
    fn install_role_grants_exactly_this() {
        assert_eq!(
            grants(&namespace_rules()),
            ["/secrets/weft-identity-issuer:get"]
        );
        let no_wildcards = cluster_rules()
            .iter()
            .chain(namespace_rules().iter())
            .all(|r| !r.to_string().contains("\"*\""));
        assert!(no_wildcards);
    }

    #[test]
    fn install_bindings_name_the_service_account() {
        let b = cluster_role_binding("mesh", "0.1.0");
        assert_eq!(b["roleRef"]["kind"], "ClusterRole");
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "weft-controller", "namespace": "mesh"}])
        );
        let b = role_binding("mesh", "0.1.0");
        assert_eq!(b["metadata"]["namespace"], "mesh");
        assert_eq!(b["roleRef"]["kind"], "Role");
    }
}
