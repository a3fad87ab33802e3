//! Kubernetes objects ([`super::objects`]) → the discovery core's objects, as pure
//! functions; and the metadata trimming applied to every object before it is cached.
//!
//! - A **Pod** becomes a [`Workload`]: its IPs, service account, labels, controlling
//!   owner (a ReplicaSet with a `pod-template-hash` is reported as its Deployment), whether
//!   it runs a container named `weft-proxy`, and its opaque ports (the pod's
//!   `config.weft.dev/opaque-ports` annotation, else its namespace's). Host-network pods
//!   (their IP is the node's) and finished pods (their IP is reused) are not workloads.
//! - A **Service** and its **EndpointSlices** (`kubernetes.io/service-name`) become a
//!   [`Service`]: its ClusterIPs, TCP ports, the ready endpoints of every slice, the route
//!   from the `retry.weft.dev/http` and `timeout.weft.dev/request` annotations, and protocol
//!   hints (`config.weft.dev/opaque-ports` on the service or its namespace, `appProtocol:
//!   kubernetes.io/h2c`). ExternalName services have no endpoints and are skipped.
//!
//! An object missing what it needs is refused with a [`ConvertError`] (the caller logs it
//! and skips the object); a malformed annotation or entry is reported as a warning and
//! left out, and the rest of the object is used.

use super::objects::{self, EndpointSlice};
use crate::discovery::model::{
    EndpointEntry, EndpointTarget, Members, ObjectKey, Owner, Service, ServicePort, Workload,
    DEFAULT_INBOUND_PORT,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use weft_api::destination::{ProtocolHint, RetryOn, RouteConfig};

/// Ports that speak an opaque (server-first, non-HTTP) protocol: on a pod or namespace,
/// pod ports; on a service, service ports. `25,587,3306-3310,metrics` (names are the
/// pod's container port names or the service's port names).
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.weft.dev/opaque-ports";
/// On a Service: which failures proxies retry, `5xx`, `connect` or both (`5xx,connect`).
pub const RETRY_ANNOTATION: &str = "retry.weft.dev/http";
/// On a Service: the request timeout, `2s`, `500ms` …
pub const TIMEOUT_ANNOTATION: &str = "timeout.weft.dev/request";
/// A pod with a container (or native-sidecar init container) of this name is meshed.
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The most opaque ports one annotation may expand to (ranges included).
pub const MAX_OPAQUE_PORTS: usize = 4096;

/// Annotation prefixes kept on cached objects; every other annotation is dropped.
const KEPT_ANNOTATIONS: [&str; 3] = ["config.weft.dev/", "retry.weft.dev/", "timeout.weft.dev/"];

/// Why an object was not used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("metadata.{0} is missing")]
    MissingMetadata(&'static str),
    #[error("the {label} label is missing")]
    MissingLabel { label: &'static str },
}

/// A converted object (or `None`: deliberately not one) and what was left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted<T> {
    pub value: Option<T>,
    pub warnings: Vec<String>,
}

/// `namespace/name` of any object.
pub fn key(meta: &ObjectMeta) -> Result<ObjectKey, ConvertError> {
    let name = meta
        .name
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(ConvertError::MissingMetadata("name"))?;
    let namespace = meta
        .namespace
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(ConvertError::MissingMetadata("namespace"))?;
    Ok(ObjectKey::new(namespace, name))
}

/// The Service an EndpointSlice belongs to.
pub fn slice_service(slice: &EndpointSlice) -> Result<ObjectKey, ConvertError> {
    let key = key(&slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .ok_or(ConvertError::MissingLabel {
            label: SERVICE_NAME_LABEL,
        })?;
    Ok(ObjectKey::new(&key.namespace, service))
}

/// A pod as a workload. `namespace_annotations`: its namespace's, for defaults.
pub fn workload(
    pod: &objects::Pod,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Result<Converted<Workload>, ConvertError> {
    let key = key(&pod.metadata)?;
    let mut warnings = Vec::new();
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if finished || spec.and_then(|s| s.host_network) == Some(true) {
        return Ok(Converted {
            value: None,
            warnings,
        });
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    let listed: Vec<&str> = match status.and_then(|s| s.pod_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().map(|p| p.ip.as_str()).collect(),
        _ => status
            .and_then(|s| s.pod_ip.as_deref())
            .into_iter()
            .collect(),
    };
    for ip in listed {
        match ip.parse::<IpAddr>() {
            Ok(ip) if !addresses.contains(&ip.to_canonical()) => addresses.push(ip.to_canonical()),
            Ok(_) => {}
            Err(_) => warnings.push(format!("status.podIPs: {ip:?} is not an IP address")),
        }
    }
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let meshed = containers.clone().any(|c| c.name == PROXY_CONTAINER);
    let app_finished = spec.is_some_and(|s| apps_finished(s, status));
    let named_port = |name: &str| -> Option<u16> {
        containers
            .clone()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
    };
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION))
        .or_else(|| namespace_annotations.and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION)));
    let opaque_ports = match annotation {
        Some(value) => {
            let (ports, problems) = parse_ports(value, named_port);
            warnings.extend(
                problems
                    .into_iter()
                    .map(|p| format!("annotation {OPAQUE_PORTS_ANNOTATION}: {p}")),
            );
            ports
        }
        None => BTreeSet::new(),
    };
    Ok(Converted {
        value: Some(Workload {
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            addresses,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owner: owner(&pod.metadata),
            meshed,
            inbound_port: DEFAULT_INBOUND_PORT,
            opaque_ports,
            finished: app_finished,
            key,
        }),
        warnings,
    })
}

/// Whether every application container (every container but a classic `weft-proxy`) has
/// terminated for good: with `restartPolicy: Never`, terminated at all; with `OnFailure`,
/// terminated with exit code 0; with `Always` (the default), never. A pod whose proxy is a
/// native sidecar is never "finished" here: the kubelet stops that proxy by itself.
pub fn apps_finished(spec: &objects::PodSpec, status: Option<&objects::PodStatus>) -> bool {
    let must_succeed = match spec.restart_policy.as_deref() {
        Some("Never") => false,
        Some("OnFailure") => true,
        _ => return false,
    };
    let apps: Vec<&str> = spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| *n != PROXY_CONTAINER)
        .collect();
    if apps.len() == spec.containers.len() || apps.is_empty() {
        return false;
    }
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    apps.iter().all(|name| {
        statuses
            .iter()
            .find(|s| s.name == *name)
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| !must_succeed || t.exit_code == 0)
    })
}

/// The controlling owner; a Deployment's pods name the Deployment, not its ReplicaSet.
fn owner(meta: &ObjectMeta) -> Option<Owner> {
    let r = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))?;
    if r.kind == "ReplicaSet" {
        let hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        if let Some(deployment) = hash.and_then(|h| r.name.strip_suffix(&format!("-{h}"))) {
            return Some(Owner {
                kind: "Deployment".into(),
                name: deployment.into(),
            });
        }
    }
    Some(Owner {
        kind: r.kind.clone(),
        name: r.name.clone(),
    })
}

/// A Service with the endpoints of its slices.
pub fn service(
    svc: &objects::Service,
    slices: &[&EndpointSlice],
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Result<Converted<Service>, ConvertError> {
    let key = key(&svc.metadata)?;
    let mut warnings = Vec::new();
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Converted {
            value: None,
            warnings: vec!["spec is missing".into()],
        });
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Converted {
            value: None,
            warnings,
        });
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    let listed: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    for ip in listed {
        if ip.is_empty() || ip == "None" {
            continue;
        }
        match ip.parse::<IpAddr>() {
            Ok(ip) if !addresses.contains(&ip.to_canonical()) => addresses.push(ip.to_canonical()),
            Ok(_) => {}
            Err(_) => warnings.push(format!("spec.clusterIPs: {ip:?} is not an IP address")),
        }
    }
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    // (name, port) of every TCP port, for names in annotations and slices.
    let mut named: Vec<(String, ServicePort)> = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
            continue;
        }
        let Ok(port) = u16::try_from(p.port).map_err(|_| ()).and_then(nonzero) else {
            warnings.push(format!("spec.ports[{i}]: port {} is out of range", p.port));
            continue;
        };
        let target_port = match &p.target_port {
            Some(IntOrString::Int(t)) => u16::try_from(*t).ok().filter(|t| *t != 0).unwrap_or(port),
            _ => port,
        };
        let protocol = match p.app_protocol.as_deref() {
            Some("kubernetes.io/h2c") => Some(ProtocolHint::Http2),
            _ => None,
        };
        named.push((
            p.name.clone().unwrap_or_default(),
            ServicePort {
                port,
                target_port,
                protocol,
            },
        ));
    }
    let opaque = annotations
        .get(OPAQUE_PORTS_ANNOTATION)
        .or_else(|| namespace_annotations.and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION)));
    if let Some(value) = opaque {
        let by_name = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, p)| p.port);
        let (opaque, problems) = parse_ports(value, by_name);
        warnings.extend(
            problems
                .into_iter()
                .map(|p| format!("annotation {OPAQUE_PORTS_ANNOTATION}: {p}")),
        );
        for (_, p) in &mut named {
            if opaque.contains(&p.port) {
                p.protocol = Some(ProtocolHint::Opaque);
            }
        }
    }
    let route = route(&annotations, &mut warnings);
    let mut entries: Vec<EndpointEntry> = Vec::new();
    for slice in slices {
        let name = slice.metadata.name.as_deref().unwrap_or("");
        entries_from_slice(slice, &named, &mut entries, &mut |w| {
            warnings.push(format!("EndpointSlice {name}: {w}"))
        });
    }
    Ok(Converted {
        value: Some(Service {
            key,
            addresses,
            ports: named.into_iter().map(|(_, p)| p).collect(),
            members: Members::Explicit(entries),
            route,
            split: Vec::new(),
        }),
        warnings,
    })
}

fn nonzero(p: u16) -> Result<u16, ()> {
    if p == 0 {
        Err(())
    } else {
        Ok(p)
    }
}

/// The ready endpoints of one slice, for each service port it carries.
fn entries_from_slice(
    slice: &EndpointSlice,
    ports: &[(String, ServicePort)],
    out: &mut Vec<EndpointEntry>,
    warn: &mut dyn FnMut(String),
) {
    let v4 = match slice.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        other => {
            if other != "FQDN" {
                warn(format!("addressType {other:?} is not IPv4, IPv6 or FQDN"));
            }
            return;
        }
    };
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    // (service port, endpoint port) for every slice port naming a service port.
    let mut served: Vec<(u16, u16)> = Vec::new();
    for p in slice.ports.iter().flatten() {
        if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
            continue;
        }
        let name = p.name.clone().unwrap_or_default();
        let Some((_, sp)) = ports.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        match p
            .port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
        {
            Some(port) => served.push((sp.port, port)),
            None => warn(format!("port {name:?} has no valid port number")),
        }
    }
    for e in &slice.endpoints {
        // Ready unless said otherwise (an unset condition means ready).
        if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        let target = match &e.target_ref {
            Some(r) if r.kind.as_deref() == Some("Pod") => match &r.name {
                Some(name) => EndpointTarget::Workload(ObjectKey::new(
                    r.namespace.as_deref().unwrap_or(&namespace),
                    name,
                )),
                None => EndpointTarget::None,
            },
            _ => EndpointTarget::None,
        };
        for a in &e.addresses {
            let ip = match a.parse::<IpAddr>() {
                Ok(ip) if ip.to_canonical().is_ipv4() == v4 => ip.to_canonical(),
                _ => {
                    warn(format!(
                        "{a:?} is not an {} address",
                        if v4 { "IPv4" } else { "IPv6" }
                    ));
                    continue;
                }
            };
            for (service_port, port) in &served {
                let addr = SocketAddr::new(ip, *port);
                if !out
                    .iter()
                    .any(|x| x.service_port == *service_port && x.addr == addr)
                {
                    out.push(EndpointEntry {
                        service_port: *service_port,
                        addr,
                        weight: 1,
                        target: target.clone(),
                    });
                }
            }
        }
    }
}

/// The route from a Service's annotations.
fn route(annotations: &BTreeMap<String, String>, warnings: &mut Vec<String>) -> RouteConfig {
    let mut retry_on = Vec::new();
    if let Some(v) = annotations.get(RETRY_ANNOTATION) {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let r = match item {
                "5xx" => RetryOn::ServerError,
                "connect" => RetryOn::Connect,
                other => {
                    warnings.push(format!(
                        "annotation {RETRY_ANNOTATION}: {other:?} is not 5xx or connect"
                    ));
                    continue;
                }
            };
            if !retry_on.contains(&r) {
                retry_on.push(r);
            }
        }
    }
    let timeout_ms = annotations.get(TIMEOUT_ANNOTATION).and_then(|v| {
        match crate::duration::parse_duration(v.trim()) {
            Ok(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Err(e) => {
                warnings.push(format!("annotation {TIMEOUT_ANNOTATION}: {e}"));
                None
            }
        }
    });
    RouteConfig {
        retry_on,
        timeout_ms,
    }
}

/// `25, 587, 3306-3310, metrics` → ports; names through `by_name`. Problems come back
/// as messages and their items are left out.
pub fn parse_ports(
    value: &str,
    by_name: impl Fn(&str) -> Option<u16>,
) -> (BTreeSet<u16>, Vec<String>) {
    let mut ports = BTreeSet::new();
    let mut problems = Vec::new();
    let number = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((a, b)) if number(a).is_some() || number(b).is_some() => {
                match (number(a), number(b)) {
                    (Some(a), Some(b)) if a <= b => a..=b,
                    _ => {
                        problems.push(format!("{item:?} is not a port range"));
                        continue;
                    }
                }
            }
            _ => match number(item).or_else(|| by_name(item)) {
                Some(p) => p..=p,
                None => {
                    problems.push(format!(
                        "{item:?} is not a port number or a known port name"
                    ));
                    continue;
                }
            },
        };
        for p in range {
            if ports.len() >= MAX_OPAQUE_PORTS {
                problems.push(format!(
                    "more than {MAX_OPAQUE_PORTS} ports; the rest are ignored"
                ));
                return (ports, problems);
            }
            ports.insert(p);
        }
    }
    (ports, problems)
}

fn keep_annotations(meta: &mut ObjectMeta) {
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| KEPT_ANNOTATIONS.iter().any(|p| k.starts_with(p)));
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Drops managed fields (often the largest part of an object), finalizers and every
/// annotation but Weft's.
fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.self_link = None;
    keep_annotations(meta);
}

/// Trims a pod's metadata (its spec and status are already only what
/// [`super::objects`] reads).
pub fn trim_pod(pod: &mut objects::Pod) {
    trim_meta(&mut pod.metadata);
}

/// Trims a service's metadata: only Weft's annotations stay.
pub fn trim_service(svc: &mut objects::Service) {
    trim_meta(&mut svc.metadata);
    svc.metadata.labels = None;
    svc.metadata.owner_references = None;
}

/// Trims a slice's metadata: only its service label stays.
pub fn trim_slice(slice: &mut EndpointSlice) {
    trim_meta(&mut slice.metadata);
    slice.metadata.annotations = None;
    slice.metadata.owner_references = None;
    if let Some(labels) = slice.metadata.labels.as_mut() {
        labels.retain(|k, _| k == SERVICE_NAME_LABEL);
    }
}

/// Keeps what a route's split reads: metadata without annotations or labels.
pub fn trim_route(route: &mut objects::HttpRoute) {
    trim_meta(&mut route.metadata);
    route.metadata.annotations = None;
    route.metadata.labels = None;
    route.metadata.owner_references = None;
}

/// Keeps a namespace's name and Weft annotations only.
pub fn trim_namespace(ns: &mut objects::Namespace) {
    trim_meta(&mut ns.metadata);
    ns.metadata.labels = None;
    ns.metadata.owner_references = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> objects::Pod {
        serde_json::from_value(v).unwrap()
    }

    fn web_pod() -> serde_json::Value {
        json!({
            "metadata": {
                "name": "web-5d9c8f7b6-x2x7q", "namespace": "apps",
                "labels": {"app": "web", "pod-template-hash": "5d9c8f7b6"},
                "annotations": {"config.weft.dev/opaque-ports": "5432, metrics, 9000-9002", "kubectl.kubernetes.io/restartedAt": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c8f7b6", "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {
                "serviceAccountName": "web",
                "containers": [
                    {"name": "app", "image": "web:1", "ports": [{"name": "metrics", "containerPort": 9090}], "env": [{"name": "A", "value": "b"}]},
                    {"name": "weft-proxy", "image": "weft-proxy:1"}
                ]
            },
            "status": {"phase": "Running", "podIP": "198.18.0.1", "podIPs": [{"ip": "198.18.0.1"}, {"ip": "fd00::1"}], "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[test]
    fn finished_apps_table() {
        let spec = |policy: Option<&str>, names: &[&str]| objects::PodSpec {
            containers: names
                .iter()
                .map(|n| objects::Container {
                    name: n.to_string(),
                    ports: None,
                })
                .collect(),
            restart_policy: policy.map(str::to_string),
            ..objects::PodSpec::default()
        };
        let status = |states: &[(&str, Option<i32>)]| objects::PodStatus {
            container_statuses: Some(
                states
                    .iter()
                    .map(|(n, exit)| objects::ContainerStatus {
                        name: n.to_string(),
                        state: Some(objects::ContainerState {
                            terminated: exit
                                .map(|exit_code| objects::ContainerTerminated { exit_code }),
                        }),
                    })
                    .collect(),
            ),
            ..objects::PodStatus::default()
        };
        let job = ["weft-proxy", "job", "helper"];
        let cases = [
            (
                "Never: every app terminated",
                spec(Some("Never"), &job),
                Some(status(&[
                    ("weft-proxy", None),
                    ("job", Some(1)),
                    ("helper", Some(0)),
                ])),
                true,
            ),
            (
                "Never: one app still running",
                spec(Some("Never"), &job),
                Some(status(&[
                    ("weft-proxy", None),
                    ("job", Some(0)),
                    ("helper", None),
                ])),
                false,
            ),
            (
                "Never: an app with no status yet",
                spec(Some("Never"), &job),
                Some(status(&[("weft-proxy", None), ("job", Some(0))])),
                false,
            ),
            (
                "OnFailure: all exited 0",
                spec(Some("OnFailure"), &job),
                Some(status(&[("job", Some(0)), ("helper", Some(0))])),
                true,
            ),
            (
                "OnFailure: a failure will be restarted",
                spec(Some("OnFailure"), &job),
                Some(status(&[("job", Some(2)), ("helper", Some(0))])),
                false,
            ),
            (
                "Always: never finished",
                spec(Some("Always"), &job),
                Some(status(&[("job", Some(0)), ("helper", Some(0))])),
                false,
            ),
            (
                "no policy means Always",
                spec(None, &job),
                Some(status(&[("job", Some(0)), ("helper", Some(0))])),
                false,
            ),
            (
                "no classic proxy (native sidecar or unmeshed)",
                spec(Some("Never"), &["job"]),
                Some(status(&[("job", Some(0))])),
                false,
            ),
            (
                "only the proxy",
                spec(Some("Never"), &["weft-proxy"]),
                Some(status(&[("weft-proxy", None)])),
                false,
            ),
            ("no status at all", spec(Some("Never"), &job), None, false),
        ];
        for (what, spec, status, want) in cases {
            assert_eq!(apps_finished(&spec, status.as_ref()), want, "{what}");
        }
    }

    #[test]
    fn pods_become_workloads() {
        let want = Workload {
            key: ObjectKey::new("apps", "web-5d9c8f7b6-x2x7q"),
            service_account: "web".into(),
            addresses: vec!["198.18.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            labels: BTreeMap::from([
                ("app".into(), "web".into()),
                ("pod-template-hash".into(), "5d9c8f7b6".into()),
            ]),
            owner: Some(Owner {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
            meshed: true,
            inbound_port: 4143,
            opaque_ports: BTreeSet::from([5432, 9000, 9001, 9002, 9090]),
            finished: false,
        };
        let got = workload(&pod(web_pod()), None).unwrap();
        assert_eq!(got.value.as_ref(), Some(&want));
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);

        // Trimming keeps exactly what the conversion reads.
        let mut trimmed = pod(web_pod());
        trim_pod(&mut trimmed);
        assert_eq!(workload(&trimmed, None).unwrap(), got);
        assert_eq!(trimmed.metadata.managed_fields, None);
        assert_eq!(
            trimmed.metadata.annotations.as_ref().map(|a| a.len()),
            Some(1),
            "only Weft's annotation stays"
        );

        type Edit = fn(&mut serde_json::Value);
        let cases: Vec<(&str, Edit, Option<Workload>, Vec<&str>)> = vec![
            ("host network: not a workload", |p| p["spec"]["hostNetwork"] = json!(true), None, vec![]),
            ("finished: not a workload", |p| p["status"]["phase"] = json!("Succeeded"), None, vec![]),
            ("failed: not a workload", |p| p["status"]["phase"] = json!("Failed"), None, vec![]),
            (
                "no proxy: not meshed; no annotation: no opaque ports",
                |p| {
                    p["spec"]["containers"].as_array_mut().unwrap().pop();
                    p["metadata"]["annotations"] = json!({});
                },
                Some(Workload { meshed: false, opaque_ports: BTreeSet::new(), ..want.clone() }),
                vec![],
            ),
            (
                "a native sidecar counts as the proxy",
                |p| {
                    let proxy = p["spec"]["containers"].as_array_mut().unwrap().pop().unwrap();
                    p["spec"]["initContainers"] = json!([proxy]);
                },
                Some(want.clone()),
                vec![],
            ),
            (
                "only podIP; no service account; another owner",
                |p| {
                    p["status"]["podIPs"] = json!(null);
                    p["spec"]["serviceAccountName"] = json!(null);
                    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]);
                },
                Some(Workload {
                    service_account: "default".into(),
                    addresses: vec!["198.18.0.1".parse().unwrap()],
                    owner: Some(Owner { kind: "StatefulSet".into(), name: "db".into() }),
                    ..want.clone()
                }),
                vec![],
            ),
            (
                "pending: no address yet",
                |p| p["status"] = json!({"phase": "Pending"}),
                Some(Workload { addresses: vec![], ..want.clone() }),
                vec![],
            ),
            (
                "bad IP and bad annotation items are left out, with warnings",
                |p| {
                    p["status"]["podIPs"] = json!([{"ip": "198.18.0.1"}, {"ip": "banana"}]);
                    p["metadata"]["annotations"]["config.weft.dev/opaque-ports"] = json!("5432,nope,9-1");
                },
                Some(Workload {
                    addresses: vec!["198.18.0.1".parse().unwrap()],
                    opaque_ports: BTreeSet::from([5432]),
                    ..want.clone()
                }),
                vec![
                    "status.podIPs: \"banana\" is not an IP address",
                    "annotation config.weft.dev/opaque-ports: \"nope\" is not a port number or a known port name",
                    "annotation config.weft.dev/opaque-ports: \"9-1\" is not a port range",
                ],
            ),
            (
                "a ReplicaSet without the hash label stays a ReplicaSet",
                |p| p["metadata"]["labels"] = json!({"app": "web"}),
                Some(Workload {
                    labels: BTreeMap::from([("app".into(), "web".into())]),
                    owner: Some(Owner { kind: "ReplicaSet".into(), name: "web-5d9c8f7b6".into() }),
                    ..want.clone()
                }),
                vec![],
            ),
        ];
        for (name, edit, value, warnings) in cases {
            let mut v = web_pod();
            edit(&mut v);
            let got = workload(&pod(v), None).unwrap();
            assert_eq!(got.value, value, "{name}");
            assert_eq!(got.warnings, warnings, "{name}");
        }

        // The namespace's annotation is the default; the pod's wins.
        let mut v = web_pod();
        v["metadata"]["annotations"] = json!({});
        let ns = BTreeMap::from([(OPAQUE_PORTS_ANNOTATION.to_string(), "25".to_string())]);
        let got = workload(&pod(v), Some(&ns)).unwrap().value.unwrap();
        assert_eq!(got.opaque_ports, BTreeSet::from([25]));
        let got = workload(&pod(web_pod()), Some(&ns)).unwrap().value.unwrap();
        assert!(got.opaque_ports.contains(&5432) && !got.opaque_ports.contains(&25));

        let mut v = web_pod();
        v["metadata"]["namespace"] = json!(null);
        assert_eq!(
            workload(&pod(v), None).unwrap_err(),
            ConvertError::MissingMetadata("namespace")
        );
    }

    fn svc(v: serde_json::Value) -> objects::Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web_service() -> serde_json::Value {
        json!({
            "metadata": {
                "name": "web", "namespace": "apps",
                "annotations": {"retry.weft.dev/http": "5xx, connect", "timeout.weft.dev/request": "2s", "config.weft.dev/opaque-ports": "redis"},
                "labels": {"app": "web"}, "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {
                "type": "ClusterIP", "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10"],
                "selector": {"app": "web"}, "sessionAffinity": "None",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                    {"name": "grpc", "port": 81, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
                    {"name": "redis", "port": 6379},
                    {"name": "dns", "port": 53, "protocol": "UDP"}
                ]
            }
        })
    }

    fn web_slice(name: &str, addresses: &[&str]) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "namespace": "apps", "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "x"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "grpc", "port": 9090}, {"name": "dns", "port": 53, "protocol": "UDP"}],
            "endpoints": addresses.iter().enumerate().map(|(i, a)| json!({
                "addresses": [a],
                "conditions": {"ready": i != 2},
                "targetRef": {"kind": "Pod", "name": format!("web-{i}"), "namespace": "apps", "uid": "u"},
                "nodeName": "node-1", "zone": "z"
            })).collect::<Vec<_>>()
        })
    }

    #[test]
    fn services_and_slices_become_services() {
        let a = slice(web_slice(
            "web-a",
            &["198.18.0.1", "198.18.0.2", "198.18.0.3"],
        ));
        let got = service(&svc(web_service()), &[&a], None).unwrap();
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        let s = got.value.unwrap();
        assert_eq!(s.key, ObjectKey::new("apps", "web"));
        assert_eq!(s.addresses, vec!["198.19.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            s.ports,
            vec![
                ServicePort {
                    port: 80,
                    target_port: 8080,
                    protocol: None
                },
                ServicePort {
                    port: 81,
                    target_port: 81,
                    protocol: Some(ProtocolHint::Http2)
                },
                ServicePort {
                    port: 6379,
                    target_port: 6379,
                    protocol: Some(ProtocolHint::Opaque)
                },
            ]
        );
        assert_eq!(
            s.route,
            RouteConfig {
                retry_on: vec![RetryOn::ServerError, RetryOn::Connect],
                timeout_ms: Some(2000)
            }
        );
        let entry = |sp: u16, addr: &str, pod: &str| EndpointEntry {
            service_port: sp,
            addr: addr.parse().unwrap(),
            weight: 1,
            target: EndpointTarget::Workload(ObjectKey::new("apps", pod)),
        };
        // The third endpoint is not ready; the UDP port is ignored; redis has no slice port.
        assert_eq!(
            s.members,
            Members::Explicit(vec![
                entry(80, "198.18.0.1:8080", "web-0"),
                entry(81, "198.18.0.1:9090", "web-0"),
                entry(80, "198.18.0.2:8080", "web-1"),
                entry(81, "198.18.0.2:9090", "web-1"),
            ])
        );

        // Trimming keeps exactly what the conversion reads.
        let (mut ts, mut ta) = (svc(web_service()), a.clone());
        trim_service(&mut ts);
        trim_slice(&mut ta);
        assert_eq!(
            service(&ts, &[&ta], None).unwrap(),
            service(&svc(web_service()), &[&a], None).unwrap()
        );
        assert_eq!(ts.metadata.managed_fields, None);
        assert_eq!(ts.metadata.labels, None);
        assert_eq!(
            ta.metadata
                .labels
                .as_ref()
                .map(|l| l.keys().collect::<Vec<_>>()),
            Some(vec![&SERVICE_NAME_LABEL.to_string()])
        );

        // Two slices, one of them IPv6 with a duplicate and a wrong-family address.
        let mut b = web_slice("web-b", &["fd00::4", "198.18.0.9"]);
        b["addressType"] = json!("IPv6");
        let got = service(&svc(web_service()), &[&a, &slice(b)], None).unwrap();
        assert_eq!(
            got.warnings,
            ["EndpointSlice web-b: \"198.18.0.9\" is not an IPv6 address"]
        );
        let Members::Explicit(entries) = got.value.unwrap().members else {
            panic!()
        };
        assert_eq!(entries.len(), 6);
        assert!(entries
            .iter()
            .any(|e| e.addr == "[fd00::4]:8080".parse().unwrap()));

        type Edit = fn(&mut serde_json::Value);
        type Check = fn(&Converted<Service>) -> bool;
        let cases: Vec<(&str, Edit, Check, Vec<&str>)> = vec![
            ("ExternalName: skipped", |s| s["spec"]["type"] = json!("ExternalName"), |c| c.value.is_none(), vec![]),
            (
                "headless: no addresses",
                |s| { s["spec"]["clusterIP"] = json!("None"); s["spec"]["clusterIPs"] = json!(["None"]); },
                |c| c.value.as_ref().is_some_and(|s| s.addresses.is_empty()),
                vec![],
            ),
            (
                "bad annotations are warned about and ignored",
                |s| {
                    s["metadata"]["annotations"] = json!({"retry.weft.dev/http": "5xx,4xx", "timeout.weft.dev/request": "soon"});
                },
                |c| c.value.as_ref().is_some_and(|s| s.route == RouteConfig { retry_on: vec![RetryOn::ServerError], timeout_ms: None }),
                vec![
                    "annotation retry.weft.dev/http: \"4xx\" is not 5xx or connect",
                    "annotation timeout.weft.dev/request: \"soon\": expected a number followed by ms, s, m, h or d",
                ],
            ),
            (
                "a port out of range is left out",
                |s| s["spec"]["ports"][0]["port"] = json!(70000),
                |c| c.value.as_ref().is_some_and(|s| s.ports.len() == 2),
                vec!["spec.ports[0]: port 70000 is out of range"],
            ),
            ("no spec", |s| s["spec"] = json!(null), |c| c.value.is_none(), vec!["spec is missing"]),
        ];
        for (name, edit, check, warnings) in cases {
            let mut v = web_service();
            edit(&mut v);
            let got = service(&svc(v), &[], None).unwrap();
            assert!(check(&got), "{name}: {got:?}");
            assert_eq!(got.warnings, warnings, "{name}");
        }

        let mut nameless = slice(web_slice("web-c", &[]));
        nameless.metadata.labels = None;
        assert_eq!(
            slice_service(&nameless).unwrap_err().to_string(),
            "the kubernetes.io/service-name label is missing"
        );
        assert_eq!(slice_service(&a).unwrap(), ObjectKey::new("apps", "web"));
    }

    #[test]
    fn port_lists() {
        let by_name = |n: &str| (n == "http").then_some(8080);
        let cases: &[(&str, &[u16], &[&str])] = &[
            ("25,587, 3306", &[25, 587, 3306], &[]),
            ("4000-4002", &[4000, 4001, 4002], &[]),
            ("http, 22", &[22, 8080], &[]),
            (" , ,", &[], &[]),
            (
                "0,65536,x-y",
                &[],
                &[
                    "\"0\" is not a port number or a known port name",
                    "\"65536\" is not a port number or a known port name",
                    "\"x-y\" is not a port number or a known port name",
                ],
            ),
            ("5-", &[], &["\"5-\" is not a port range"]),
        ];
        for (value, ports, problems) in cases {
            let (got, got_problems) = parse_ports(value, by_name);
            assert_eq!(got.into_iter().collect::<Vec<_>>(), *ports, "{value}");
            assert_eq!(got_problems, *problems, "{value}");
        }
        let (got, problems) = parse_ports("1-65535", |_| None);
        assert_eq!(got.len(), MAX_OPAQUE_PORTS);
        assert_eq!(problems, ["more than 4096 ports; the rest are ignored"]);
    }
}
