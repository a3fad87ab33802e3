//! What injection adds to a pod, as JSON: the `weft-init` init container, the `weft-proxy`
//! container, their volumes. Pure builders from the resolved [`Plan`]; the order of
//! environment variables matters (`$(VAR)` references earlier ones).

use super::annotations::Overrides;
use super::{
    InjectConfig, Mode, ADMIN_PORT, INBOUND_PORT, INIT_CONTAINER, OUTBOUND_PORT, PROXY_CONTAINER,
    PROXY_UID, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY,
};
use serde_json::{json, Value};
use weft_proxy::config as env;

/// The projected volume with the service-account token and the trust anchors.
pub const IDENTITY_VOLUME: &str = "weft-identity";
/// Where [`IDENTITY_VOLUME`] is mounted in the proxy.
pub const IDENTITY_DIR: &str = "/var/run/weft/identity";
/// The emptyDir weft-init needs for `/run/xtables.lock` (its root filesystem is read-only).
pub const XTABLES_VOLUME: &str = "weft-xtables-lock";
/// Lifetime asked for the projected token; the kubelet refreshes it at 80 %.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

/// Every volume injection adds (removed again by `weft uninject`).
pub const VOLUMES: [&str; 2] = [IDENTITY_VOLUME, XTABLES_VOLUME];

/// The resolved settings for one pod.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub config: &'a InjectConfig,
    pub mode: Mode,
    pub native: bool,
    pub overrides: Overrides,
    /// The pod belongs to a Job (or a CronJob's Job).
    pub job: bool,
    pub cpu_request: String,
    pub cpu_limit: Option<String>,
    pub memory_request: String,
    pub memory_limit: Option<String>,
}

/// The iptables init container. Root (uid 0) with exactly NET_ADMIN and NET_RAW: the
/// simplest setup that works with every iptables backend (docs/init.md, Requirements).
pub fn init_container(plan: &Plan) -> Value {
    let mut args = vec![
        "--incoming-proxy-port".to_string(),
        INBOUND_PORT.to_string(),
        "--outgoing-proxy-port".to_string(),
        OUTBOUND_PORT.to_string(),
        "--proxy-uid".to_string(),
        PROXY_UID.to_string(),
    ];
    if let Some(p) = &plan.overrides.skip_inbound_ports {
        args.extend(["--inbound-ports-to-ignore".to_string(), p.clone()]);
    }
    if let Some(p) = &plan.overrides.skip_outbound_ports {
        args.extend(["--outbound-ports-to-ignore".to_string(), p.clone()]);
    }
    json!({
        "name": INIT_CONTAINER,
        "image": plan.config.init_image,
        "imagePullPolicy": plan.config.image_pull_policy,
        "command": ["weft-init"],
        "args": args,
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
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}],
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn value_env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn probe(path: &str) -> Value {
    json!({"httpGet": {"path": path, "port": ADMIN_PORT}})
}

/// The proxy container: uid 2102, read-only root filesystem, no capabilities, no privilege
/// escalation; identity from a projected token and the trust-roots ConfigMap.
pub fn proxy_container(plan: &Plan) -> Value {
    let c = plan.config;
    let identity_name = format!(
        "$(WEFT_PROXY_POD_SERVICE_ACCOUNT).$(WEFT_PROXY_POD_NAMESPACE).serviceaccount.identity.{}.{}",
        c.control_plane_namespace, c.trust_domain
    );
    let controller_name = format!(
        "{}.{ns}.serviceaccount.identity.{ns}.{}",
        weft_api::certify::CONTROLLER_SERVICE_ACCOUNT,
        c.trust_domain,
        ns = c.control_plane_namespace,
    );
    let log_level = plan.overrides.log_level.as_deref().unwrap_or(&c.log_level);
    let mut envs = vec![
        field_env("WEFT_PROXY_POD_NAME", "metadata.name"),
        field_env("WEFT_PROXY_POD_NAMESPACE", "metadata.namespace"),
        field_env("WEFT_PROXY_POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("WEFT_PROXY_POD_IP", "status.podIP"),
        field_env("WEFT_PROXY_POD_IPS", "status.podIPs"),
        value_env(env::ENV_LOG_LEVEL, log_level),
        value_env(env::ENV_IDENTITY_NAME, &identity_name),
        value_env(
            env::ENV_IDENTITY_TRUST_ANCHORS,
            &c.trust_anchors_pem
                .clone()
                .unwrap_or_else(|| format!("{IDENTITY_DIR}/{TRUST_ROOTS_KEY}")),
        ),
        value_env(
            env::ENV_IDENTITY_TOKEN_FILE,
            &format!("{IDENTITY_DIR}/token"),
        ),
        value_env(env::ENV_IDENTITY_CONTROLLER_ADDR, &c.controller_addr),
        value_env(env::ENV_IDENTITY_CONTROLLER_NAME, &controller_name),
    ];
    if let Some(p) = &plan.overrides.opaque_ports {
        envs.push(value_env(env::ENV_OPAQUE_PORTS, p));
    }
    if plan.mode == Mode::Ingress {
        envs.push(value_env(env::ENV_INGRESS_MODE, "true"));
    }
    if plan.job && !plan.native {
        // The proxy exits by itself once the controller sees every app container finished
        // (it watches its own pod, WEFT_PROXY_POD_IP, through the destination API);
        // `weft-await --shutdown` can also stop it.
        envs.push(value_env(env::ENV_EXIT_WITH_WORKLOAD, "true"));
        envs.push(value_env(env::ENV_SHUTDOWN_ENDPOINT_ENABLED, "true"));
    }
    let mut requests = serde_json::Map::new();
    requests.insert("cpu".into(), json!(plan.cpu_request));
    requests.insert("memory".into(), json!(plan.memory_request));
    let mut limits = serde_json::Map::new();
    if let Some(l) = &plan.cpu_limit {
        limits.insert("cpu".into(), json!(l));
    }
    if let Some(l) = &plan.memory_limit {
        limits.insert("memory".into(), json!(l));
    }
    let mut resources = json!({"requests": requests});
    if !limits.is_empty() {
        resources["limits"] = Value::Object(limits);
    }
    let mut container = json!({
        "name": PROXY_CONTAINER,
        "image": c.proxy_image,
        "imagePullPolicy": c.image_pull_policy,
        "ports": [
            {"name": "weft-proxy", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "weft-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": envs,
        "resources": resources,
        "livenessProbe": probe("/live"),
        "readinessProbe": probe("/ready"),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR, "readOnly": true},
        ],
    });
    if plan.native {
        container["restartPolicy"] = json!("Always");
        // Up to two minutes for the first certificate; the app starts only after this.
        let mut startup = probe("/ready");
        startup["periodSeconds"] = json!(1);
        startup["failureThreshold"] = json!(120);
        container["startupProbe"] = startup;
    }
    container
}

/// The volumes injection adds: the projected token (and the trust-roots ConfigMap when the
/// anchors are not set inline).
pub fn volumes(config: &InjectConfig) -> Vec<Value> {
    let mut sources = vec![json!({"serviceAccountToken": {
        "audience": weft_api::certify::TOKEN_AUDIENCE,
        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
        "path": "token",
    }})];
    if config.trust_anchors_pem.is_none() {
        sources.push(json!({"configMap": {
            "name": TRUST_ROOTS_CONFIGMAP,
            "items": [{"key": TRUST_ROOTS_KEY, "path": TRUST_ROOTS_KEY}],
        }}));
    }
    vec![
        json!({"name": IDENTITY_VOLUME, "projected": {"sources": sources}}),
        json!({"name": XTABLES_VOLUME, "emptyDir": {}}),
    ]
}
