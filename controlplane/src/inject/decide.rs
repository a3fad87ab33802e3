//! The injection decision: a pure function from a pod (as JSON), its workload's template
//! annotations, its namespace and the [`InjectConfig`] to "leave it alone, because …" or
//! "inject, with this JSON patch".
//!
//! Order of the checks: the system namespaces (the control plane's own; kube-system, except
//! for a pod whose own or template annotation asks for ingress mode — k3s runs its bundled
//! Traefik there), a
//! proxy already present, `weft.dev/inject` (pod, else template, else namespace),
//! hostNetwork, then the `config.weft.dev/*` values — all before any patch is built, so a
//! pod is injected completely or not at all.

use super::annotations::{self as ann, quantity_value, InvalidAnnotation};
use super::containers::{self, Plan};
use super::patch::{escape, JsonPatchOp};
use super::{InjectConfig, KUBE_SYSTEM, PROXY_CONTAINER};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// How a pod is meshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enabled,
    /// For ingress controllers: outbound HTTP is routed by `weft-dst-override`.
    Ingress,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enabled => "enabled",
            Mode::Ingress => "ingress",
        }
    }
}

/// Where a `weft.dev/inject` value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Pod,
    Template,
    Namespace(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Pod => f.write_str("the pod"),
            Source::Template => f.write_str("the workload's pod template"),
            Source::Namespace(ns) => write!(f, "namespace {ns:?}"),
        }
    }
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("pods in {0} are never injected (except ingress controllers that ask for `weft.dev/inject: ingress` on the pod itself)")]
    SystemNamespace(String),
    #[error("pods in the control plane's namespace {0:?} are never injected")]
    ControlPlaneNamespace(String),
    #[error("the pod already has a {PROXY_CONTAINER} container")]
    AlreadyInjected,
    #[error("no weft.dev/inject annotation on the pod, its workload or namespace {0:?}")]
    NotRequested(String),
    #[error("weft.dev/inject is disabled on {0}")]
    Disabled(Source),
    #[error("weft.dev/inject on {origin}: {value:?} is not enabled, ingress or disabled")]
    BadInjectValue { origin: Source, value: String },
    #[error("hostNetwork pods are not injected: the proxy's iptables rules would redirect the whole node's traffic")]
    HostNetwork,
    #[error("{0}")]
    InvalidAnnotation(#[from] InvalidAnnotation),
    #[error("{request_annotation} {request:?} is more than {limit_annotation} {limit:?}")]
    RequestOverLimit {
        request_annotation: &'static str,
        request: String,
        limit_annotation: &'static str,
        limit: String,
    },
}

impl Skip {
    /// The pod asked for the mesh and did not get it: the webhook says why in a
    /// `weft.dev/inject-skipped` annotation (and the controller in an Event).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Skip::HostNetwork
                | Skip::BadInjectValue { .. }
                | Skip::InvalidAnnotation(_)
                | Skip::RequestOverLimit { .. }
        )
    }
}

/// The outcome for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Leave { reason: Skip },
    Inject { mode: Mode, patch: Vec<JsonPatchOp> },
}

/// One pod, as the webhook or `weft inject --manual` sees it.
#[derive(Debug, Clone, Copy)]
pub struct PodInput<'a> {
    /// The Pod object (`metadata`, `spec`); a pod template works too.
    pub pod: &'a Value,
    /// The annotations of the owning workload's pod template, if known.
    pub template_annotations: Option<&'a BTreeMap<String, String>>,
    /// The pod's namespace (the admission request's, as a new pod's metadata may lack it).
    pub namespace: &'a str,
    pub namespace_annotations: &'a BTreeMap<String, String>,
    /// The kind of the workload the template belongs to, when the pod's owner references
    /// cannot say (`weft inject --manual` on a Job or CronJob).
    pub workload_kind: Option<&'a str>,
}

/// The string annotations of an object (non-string values are ignored).
pub fn annotations_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn has_container(spec: &Value, list: &str, name: &str) -> bool {
    spec.get(list)
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c.get("name") == Some(&json!(name))))
}

/// Whether the pod belongs to a Job: a controller owner reference of kind Job.
pub fn owned_by_job(pod: &Value) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("kind") == Some(&json!("Job"))
                    && r.get("controller")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
            })
        })
}

fn requested_mode(input: &PodInput) -> Result<Mode, Skip> {
    let pod = annotations_of(input.pod);
    let found = pod
        .get(ann::INJECT)
        .map(|v| (Source::Pod, v.clone()))
        .or_else(|| {
            input
                .template_annotations
                .and_then(|t| t.get(ann::INJECT))
                .map(|v| (Source::Template, v.clone()))
        })
        .or_else(|| {
            input
                .namespace_annotations
                .get(ann::INJECT)
                .map(|v| (Source::Namespace(input.namespace.to_string()), v.clone()))
        });
    match found {
        None => Err(Skip::NotRequested(input.namespace.to_string())),
        Some((source, v)) => match v.trim() {
            "enabled" => Ok(Mode::Enabled),
            "ingress" => Ok(Mode::Ingress),
            "disabled" => Err(Skip::Disabled(source)),
            _ => Err(Skip::BadInjectValue {
                origin: source,
                value: v,
            }),
        },
    }
}

/// Whether the pod (or its template), not its namespace, asks for ingress mode: the one way
/// into kube-system, for k3s' bundled Traefik (docs/ingress.md).
fn asks_for_ingress_itself(input: &PodInput) -> bool {
    let pod = annotations_of(input.pod);
    if pod.contains_key(ann::INJECT) {
        asks_for_ingress(&pod)
    } else {
        input.template_annotations.is_some_and(asks_for_ingress)
    }
}

/// Whether these annotations say `weft.dev/inject: ingress`.
pub fn asks_for_ingress(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(ann::INJECT).map(|v| v.trim()) == Some("ingress")
}

/// Decides for one pod. Never fails: everything that stops injection is a [`Skip`].
pub fn decide(input: &PodInput, config: &InjectConfig) -> Decision {
    match plan_and_patch(input, config) {
        Ok((mode, patch)) => Decision::Inject { mode, patch },
        Err(reason) => Decision::Leave { reason },
    }
}

fn plan_and_patch(
    input: &PodInput,
    config: &InjectConfig,
) -> Result<(Mode, Vec<JsonPatchOp>), Skip> {
    if input.namespace == KUBE_SYSTEM && !asks_for_ingress_itself(input) {
        return Err(Skip::SystemNamespace(KUBE_SYSTEM.into()));
    }
    if input.namespace == config.control_plane_namespace {
        return Err(Skip::ControlPlaneNamespace(input.namespace.into()));
    }
    let empty = json!({});
    let spec = input.pod.get("spec").unwrap_or(&empty);
    if has_container(spec, "containers", PROXY_CONTAINER)
        || has_container(spec, "initContainers", PROXY_CONTAINER)
    {
        return Err(Skip::AlreadyInjected);
    }
    let mode = requested_mode(input)?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(Skip::HostNetwork);
    }
    let pod_annotations = annotations_of(input.pod);
    // Config annotations: the pod's own win over the template's.
    let mut merged = input.template_annotations.cloned().unwrap_or_default();
    merged.extend(pod_annotations.clone());
    let overrides = ann::overrides(&merged)?;
    let job = owned_by_job(input.pod) || matches!(input.workload_kind, Some("Job" | "CronJob"));
    let plan = resolve(config, mode, overrides, job)?;
    Ok((mode, build_patch(input.pod, spec, &pod_annotations, &plan)))
}

/// Resolves requests and limits: a request given alone above the default limit raises that
/// limit to the request; a request above an explicit limit is refused.
fn resolve(
    config: &InjectConfig,
    mode: Mode,
    overrides: ann::Overrides,
    job: bool,
) -> Result<Plan<'_>, Skip> {
    let r = &config.resources;
    let (cpu_request, cpu_limit) = pair(
        (
            ann::PROXY_CPU_REQUEST,
            &overrides.cpu_request,
            &r.cpu_request,
        ),
        (ann::PROXY_CPU_LIMIT, &overrides.cpu_limit, &r.cpu_limit),
    )?;
    let (memory_request, memory_limit) = pair(
        (
            ann::PROXY_MEMORY_REQUEST,
            &overrides.memory_request,
            &r.memory_request,
        ),
        (
            ann::PROXY_MEMORY_LIMIT,
            &overrides.memory_limit,
            &r.memory_limit,
        ),
    )?;
    Ok(Plan {
        config,
        mode,
        native: overrides.native_sidecar.unwrap_or(config.native_sidecars),
        overrides,
        job,
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    })
}

type Setting<'a, T> = (&'static str, &'a Option<String>, &'a T);

fn pair(
    request: Setting<String>,
    limit: Setting<Option<String>>,
) -> Result<(String, Option<String>), Skip> {
    let req = request.1.clone().unwrap_or_else(|| request.2.clone());
    let lim = limit.1.clone().or_else(|| limit.2.clone());
    let over = match (&lim, quantity_value(&req)) {
        (Some(l), Some(rv)) => quantity_value(l).is_some_and(|lv| rv > lv),
        _ => false,
    };
    if !over {
        return Ok((req, lim));
    }
    if limit.1.is_none() && request.1.is_some() {
        return Ok((req.clone(), Some(req)));
    }
    Err(Skip::RequestOverLimit {
        request_annotation: request.0,
        request: req,
        limit_annotation: limit.0,
        limit: lim.unwrap_or_default(),
    })
}

fn build_patch(
    pod: &Value,
    spec: &Value,
    pod_annotations: &BTreeMap<String, String>,
    plan: &Plan,
) -> Vec<JsonPatchOp> {
    let mut ops = Vec::new();
    // Annotations first: metadata may be missing entirely in a pod template.
    let mut added: Vec<(&str, String)> = vec![
        (ann::PROXY_VERSION, plan.config.proxy_version.clone()),
        (ann::INJECTED_BY, plan.config.injected_by.clone()),
    ];
    if plan.job {
        added.push((ann::JOB, "true".into()));
    }
    if pod.get("metadata").is_none() {
        ops.push(JsonPatchOp::add("/metadata", json!({})));
    }
    if pod.pointer("/metadata/annotations").is_none() {
        let map: Map<String, Value> = added
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        ops.push(JsonPatchOp::add(
            "/metadata/annotations",
            Value::Object(map),
        ));
    } else {
        for (k, v) in added {
            let path = format!("/metadata/annotations/{}", escape(k));
            ops.push(if pod_annotations.contains_key(k) {
                JsonPatchOp::Replace {
                    path,
                    value: json!(v),
                }
            } else {
                JsonPatchOp::add(path, json!(v))
            });
        }
    }
    if spec.is_null() || pod.get("spec").is_none() {
        ops.push(JsonPatchOp::add("/spec", json!({})));
    }

    let init = containers::init_container(plan);
    let proxy = containers::proxy_container(plan);
    let mut first_inits = vec![init];
    let classic_proxy = if plan.native {
        first_inits.push(proxy);
        None
    } else {
        Some(proxy)
    };
    if spec
        .get("initContainers")
        .and_then(Value::as_array)
        .is_some()
    {
        for (i, c) in first_inits.into_iter().enumerate() {
            ops.push(JsonPatchOp::add(format!("/spec/initContainers/{i}"), c));
        }
    } else {
        ops.push(JsonPatchOp::add(
            "/spec/initContainers",
            Value::Array(first_inits),
        ));
    }
    if let Some(proxy) = classic_proxy {
        if spec.get("containers").and_then(Value::as_array).is_some() {
            ops.push(JsonPatchOp::add("/spec/containers/0", proxy));
        } else {
            ops.push(JsonPatchOp::add("/spec/containers", json!([proxy])));
        }
    }
    if spec.get("volumes").and_then(Value::as_array).is_some() {
        for v in containers::volumes(plan.config) {
            ops.push(JsonPatchOp::add("/spec/volumes/-", v));
        }
    } else {
        ops.push(JsonPatchOp::add(
            "/spec/volumes",
            Value::Array(containers::volumes(plan.config)),
        ));
    }
    ops
}

/// The patch for a refused pod: records the reason in `weft.dev/inject-skipped`.
pub fn skipped_patch(pod: &Value, reason: &Skip) -> Vec<JsonPatchOp> {
    let mut ops = Vec::new();
    if pod.get("metadata").is_none() {
        ops.push(JsonPatchOp::add("/metadata", json!({})));
    }
    if pod.pointer("/metadata/annotations").is_none() {
        ops.push(JsonPatchOp::add(
            "/metadata/annotations",
            json!({ann::INJECT_SKIPPED: reason.to_string()}),
        ));
    } else {
        let path = format!("/metadata/annotations/{}", escape(ann::INJECT_SKIPPED));
        let value = json!(reason.to_string());
        ops.push(if annotations_of(pod).contains_key(ann::INJECT_SKIPPED) {
            JsonPatchOp::Replace { path, value }
        } else {
            JsonPatchOp::add(path, value)
        });
    }
    ops
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decide_shape_tests.rs"]
mod shape_tests;
