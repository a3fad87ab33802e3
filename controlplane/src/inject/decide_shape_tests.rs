//! The exact containers, volumes and resources injection writes, and how each
//! `config.weft.dev/*` annotation changes them (tables next to [`super::tests`]).

use super::tests::{config, container, env_of, injected, pod, run_with};
use super::*;
use crate::inject::patch::apply_json;
use crate::inject::ProxyResources;
use serde_json::json;

#[test]
fn the_proxy_container_exactly() {
    let out = injected(&pod(&[("weft.dev/inject", "enabled")]));
    let mut proxy = container(&out, "initContainers", "weft-proxy").clone();
    let obj = proxy.as_object_mut().unwrap();
    obj.remove("restartPolicy");
    obj.remove("startupProbe");
    let field = |p: &str| json!({"name": "", "valueFrom": {"fieldRef": {"fieldPath": p}}});
    let mut want_env = vec![
        field("metadata.name"),
        field("metadata.namespace"),
        field("spec.serviceAccountName"),
        field("status.podIP"),
        field("status.podIPs"),
    ];
    for (e, n) in want_env.iter_mut().zip([
        "WEFT_PROXY_POD_NAME",
        "WEFT_PROXY_POD_NAMESPACE",
        "WEFT_PROXY_POD_SERVICE_ACCOUNT",
        "WEFT_PROXY_POD_IP",
        "WEFT_PROXY_POD_IPS",
    ]) {
        e["name"] = json!(n);
    }
    for (n, v) in [
        ("WEFT_PROXY_LOG_LEVEL", "info"),
        (
            "WEFT_PROXY_IDENTITY_NAME",
            "$(WEFT_PROXY_POD_SERVICE_ACCOUNT).$(WEFT_PROXY_POD_NAMESPACE).serviceaccount.identity.weft.cluster.local",
        ),
        ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", "/var/run/weft/identity/ca-bundle.crt"),
        ("WEFT_PROXY_IDENTITY_TOKEN_FILE", "/var/run/weft/identity/token"),
        ("WEFT_PROXY_IDENTITY_CONTROLLER_ADDR", "weft-controller.weft.svc:8086"),
        (
            "WEFT_PROXY_IDENTITY_CONTROLLER_NAME",
            "weft-controller.weft.serviceaccount.identity.weft.cluster.local",
        ),
    ] {
        want_env.push(json!({"name": n, "value": v}));
    }
    assert_eq!(
        proxy,
        json!({
            "name": "weft-proxy",
            "image": "example/weft:1.2.3",
            "imagePullPolicy": "IfNotPresent",
            "ports": [
                {"name": "weft-proxy", "containerPort": 4143, "protocol": "TCP"},
                {"name": "weft-admin", "containerPort": 4191, "protocol": "TCP"},
            ],
            "env": want_env,
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "1", "memory": "64Mi"},
            },
            "livenessProbe": {"httpGet": {"path": "/live", "port": 4191}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 4191}},
            "securityContext": {
                "runAsUser": 2102,
                "runAsGroup": 2102,
                "runAsNonRoot": true,
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"name": "weft-identity", "mountPath": "/var/run/weft/identity", "readOnly": true},
            ],
        })
    );
    // The identity name the proxy will see once Kubernetes expands $(…) parses as one.
    let expanded = "web.apps.serviceaccount.identity.weft.cluster.local";
    assert!(weft_api::IdentityName::parse(expanded).is_ok());
}

#[test]
fn the_init_container_and_volumes_exactly() {
    let out = injected(&pod(&[("weft.dev/inject", "enabled")]));
    assert_eq!(
        container(&out, "initContainers", "weft-init"),
        &json!({
            "name": "weft-init",
            "image": "example/weft:1.2.3",
            "imagePullPolicy": "IfNotPresent",
            "command": ["weft-init"],
            "args": ["--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140", "--proxy-uid", "2102"],
            "resources": {
                "requests": {"cpu": "10m", "memory": "10Mi"},
                "limits": {"cpu": "100m", "memory": "32Mi"},
            },
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": false,
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "weft-xtables-lock", "mountPath": "/run"}],
        })
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([
            {"name": "data", "emptyDir": {}},
            {"name": "weft-identity", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "identity.weft.dev", "expirationSeconds": 86400, "path": "token"}},
                {"configMap": {"name": "weft-identity-trust-roots", "items": [{"key": "ca-bundle.crt", "path": "ca-bundle.crt"}]}},
            ]}},
            {"name": "weft-xtables-lock", "emptyDir": {}},
        ])
    );
    let ann = annotations_of(&out);
    assert_eq!(
        ann.get("weft.dev/proxy-version").map(String::as_str),
        Some("1.2.3")
    );
    assert_eq!(
        ann.get("weft.dev/injected-by").map(String::as_str),
        Some("weft-test 0")
    );
    assert!(!ann.contains_key("weft.dev/job"));
}

#[test]
fn ingress_mode_sets_the_proxy_variable() {
    let out = injected(&pod(&[("weft.dev/inject", "ingress")]));
    let env = env_of(container(&out, "initContainers", "weft-proxy"));
    assert_eq!(env.get("WEFT_PROXY_INGRESS_MODE"), Some(&json!("true")));
    let out = injected(&pod(&[("weft.dev/inject", "enabled")]));
    let env = env_of(container(&out, "initContainers", "weft-proxy"));
    assert_eq!(env.get("WEFT_PROXY_INGRESS_MODE"), None);
}

#[test]
fn every_config_annotation_takes_effect() {
    let base = ("weft.dev/inject", "enabled");
    let out = injected(&pod(&[
        base,
        ("config.weft.dev/skip-inbound-ports", "22, 8000-8100"),
        ("config.weft.dev/skip-outbound-ports", "443,6443"),
        ("config.weft.dev/opaque-ports", "5432,7000-7001"),
        ("config.weft.dev/proxy-log-level", "warn,weft_proxy=debug"),
        ("config.weft.dev/proxy-cpu-request", "50m"),
        ("config.weft.dev/proxy-cpu-limit", "500m"),
        ("config.weft.dev/proxy-memory-request", "20Mi"),
        ("config.weft.dev/proxy-memory-limit", "40Mi"),
    ]));
    let init = container(&out, "initContainers", "weft-init");
    assert_eq!(
        init["args"],
        json!([
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "22,8000-8100",
            "--outbound-ports-to-ignore",
            "443,6443",
        ])
    );
    let proxy = container(&out, "initContainers", "weft-proxy");
    let env = env_of(proxy);
    assert_eq!(env["WEFT_PROXY_OPAQUE_PORTS"], json!("5432,7000-7001"));
    assert_eq!(env["WEFT_PROXY_LOG_LEVEL"], json!("warn,weft_proxy=debug"));
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "50m", "memory": "20Mi"}, "limits": {"cpu": "500m", "memory": "40Mi"}})
    );
}

#[test]
fn requests_and_limits_stay_consistent() {
    let res = |a: &[(&str, &str)]| -> Result<Value, String> {
        let mut all = vec![("weft.dev/inject", "enabled")];
        all.extend_from_slice(a);
        let p = pod(&all);
        match run_with(&p, "apps", &[], &config()) {
            Decision::Inject { patch, .. } => {
                let out = apply_json(&p, &patch).unwrap();
                Ok(container(&out, "initContainers", "weft-proxy")["resources"].clone())
            }
            Decision::Leave { reason } => Err(reason.to_string()),
        }
    };
    // A request alone above the default limit raises the limit with it.
    assert_eq!(
        res(&[("config.weft.dev/proxy-memory-request", "128Mi")]),
        Ok(
            json!({"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}})
        )
    );
    assert_eq!(
        res(&[("config.weft.dev/proxy-cpu-request", "2")]),
        Ok(
            json!({"requests": {"cpu": "2", "memory": "16Mi"}, "limits": {"cpu": "2", "memory": "64Mi"}})
        )
    );
    // Explicit and contradictory: refused.
    assert_eq!(
        res(&[("config.weft.dev/proxy-cpu-request", "2"), ("config.weft.dev/proxy-cpu-limit", "1")]),
        Err("config.weft.dev/proxy-cpu-request \"2\" is more than config.weft.dev/proxy-cpu-limit \"1\"".into())
    );
    // A limit below the default request is refused too (the request is not lowered).
    assert_eq!(
        res(&[("config.weft.dev/proxy-memory-limit", "8Mi")]),
        Err("config.weft.dev/proxy-memory-request \"16Mi\" is more than config.weft.dev/proxy-memory-limit \"8Mi\"".into())
    );
    // No limits configured at all.
    let mut cfg = config();
    cfg.resources = ProxyResources {
        cpu_limit: None,
        memory_limit: None,
        ..ProxyResources::default()
    };
    let p = pod(&[("weft.dev/inject", "enabled")]);
    let Decision::Inject { patch, .. } = run_with(&p, "apps", &[], &cfg) else {
        panic!()
    };
    let out = apply_json(&p, &patch).unwrap();
    assert_eq!(
        container(&out, "initContainers", "weft-proxy")["resources"],
        json!({"requests": {"cpu": "10m", "memory": "16Mi"}})
    );
}
