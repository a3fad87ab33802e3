//! What `weft check` reads from the API server, as plain data, and the one async function
//! that reads it ([`gather`]). Nothing here decides anything: the checks are pure
//! functions of a [`Facts`] ([`super::checks`]), so they are table-tested without a server.
//!
//! Every read is a [`Lookup`]: found, missing (`404`), or failed with the API server's
//! message (`403` from RBAC, a timeout …). Nothing the API server sends is unwrapped.

use super::Mode;
use crate::install::{CONTROLLER, ISSUER_SECRET, WEBHOOK_CONFIG};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;

/// The label that selects the controller's pods (docs/install.md).
pub const CONTROLLER_POD_SELECTOR: (&str, &str) = ("app.kubernetes.io/name", CONTROLLER);
/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One read: the object, `404`, or an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lookup<T> {
    Found(T),
    Missing,
    Failed(String),
    /// Not read in this mode (or the API server was unreachable).
    #[default]
    NotRead,
}

/// An error with its causes: `ServiceError: client error (Connect): tcp connect error:
/// Connection refused (os error 111)`, where kube-rs alone says only the first part.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

impl<T> Lookup<T> {
    fn from_opt(r: Result<Option<T>, kube::Error>) -> Self {
        match r {
            Ok(Some(t)) => Lookup::Found(t),
            Ok(None) => Lookup::Missing,
            Err(e) => Lookup::Failed(describe(&e)),
        }
    }
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerVersion {
    pub major: String,
    pub minor: String,
    pub git_version: String,
}

/// Whether the Gateway API's HTTPRoute is served.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GatewayApi {
    Installed,
    /// Listing HTTPRoutes answered `404`, as the controller's probe reads it.
    Absent,
    Unknown(String),
    #[default]
    NotRead,
}

/// A Namespace's labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The controller Deployment's replica counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeploymentFacts {
    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub desired: i32,
    pub ready: i32,
    pub available: i32,
}

/// One container of a pod, with its status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerFacts {
    pub name: String,
    pub image: String,
    pub ready: bool,
    pub restarts: i32,
    /// `running`, `waiting: CrashLoopBackOff`, `terminated: Completed`, or `unknown`.
    pub state: String,
}

/// A pod: what the checks read of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    /// `Running`, `Pending`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub host_network: bool,
    /// The first owner reference: (kind, name).
    pub owner: Option<(String, String)>,
    pub containers: Vec<ContainerFacts>,
    pub init_containers: Vec<ContainerFacts>,
}

/// One webhook of the MutatingWebhookConfiguration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookFacts {
    pub name: String,
    pub ca_bundle: Option<Vec<u8>>,
    pub failure_policy: Option<String>,
    /// `clientConfig.service`: namespace, name, port (443 when unset), path.
    pub service: Option<(String, String, i32, Option<String>)>,
    pub url: Option<String>,
}

/// The webhook Service's ports: (name, port).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceFacts {
    pub ports: Vec<(Option<String>, i32)>,
}

/// The webhook Service's EndpointSlices, summed up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointFacts {
    pub slices: usize,
    /// Endpoints whose `conditions.ready` is not false and that have an address.
    pub ready: usize,
    pub not_ready: usize,
}

/// A SelfSubjectAccessReview: may the caller `create` this resource?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub group: String,
    pub resource: String,
    pub allowed: Lookup<bool>,
    /// The authorizer's reason, when it gave one.
    pub reason: Option<String>,
}

/// Everything the checks look at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    pub control_plane_namespace: String,
    /// `Err` with the client's message when the API server could not be reached.
    pub server: Option<Result<ServerVersion, String>>,
    pub namespace: Lookup<NamespaceFacts>,
    pub gateway_api: GatewayApi,
    pub deployment: Lookup<DeploymentFacts>,
    pub controller_pods: Lookup<Vec<PodFacts>>,
    /// The issuer Secret's decoded `data`.
    pub secret: Lookup<BTreeMap<String, Vec<u8>>>,
    pub webhook: Lookup<Vec<WebhookFacts>>,
    pub service: Lookup<ServiceFacts>,
    pub endpoints: Lookup<EndpointFacts>,
    /// `--pre`: create on ClusterRoles and MutatingWebhookConfigurations.
    pub access: Vec<Access>,
    /// `--proxy`: every namespace (for their `weft.dev/inject` annotation) …
    pub namespaces: Lookup<Vec<NamespaceFacts>>,
    /// … and the pods of the namespace asked for, or of all.
    pub pods: Lookup<Vec<PodFacts>>,
}

/// What `--pre` asks a SelfSubjectAccessReview about: (group, resource).
pub const PRE_ACCESS: [(&str, &str); 2] = [
    ("rbac.authorization.k8s.io", "clusterroles"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
];

/// Reads everything `mode` needs (`--proxy` reads what the default mode reads, plus every
/// namespace and the pods). If `/version` fails, nothing else is read.
pub async fn gather(
    client: &Client,
    mode: Mode,
    control_plane_namespace: &str,
    pods_namespace: Option<&str>,
) -> Facts {
    let ns = control_plane_namespace;
    let mut facts = Facts {
        control_plane_namespace: ns.to_string(),
        ..Facts::default()
    };
    let version = client.apiserver_version().await;
    facts.server = Some(
        version
            .map(|v| ServerVersion {
                major: v.major,
                minor: v.minor,
                git_version: v.git_version,
            })
            .map_err(|e| describe(&e)),
    );
    if matches!(facts.server, Some(Err(_))) {
        return facts;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    facts.namespace = Lookup::from_opt(namespaces.get_opt(ns).await).map(namespace_facts);
    facts.gateway_api = gateway_api(client).await;
    if mode == Mode::Pre {
        for (group, resource) in PRE_ACCESS {
            facts.access.push(access(client, group, resource).await);
        }
        return facts;
    }
    if mode == Mode::Proxy {
        facts.namespaces = match namespaces.list(&ListParams::default()).await {
            Ok(l) => Lookup::Found(l.items.into_iter().map(namespace_facts).collect()),
            Err(e) => Lookup::Failed(describe(&e)),
        };
        let pods: Api<Pod> = match pods_namespace {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        };
        facts.pods = list_pods(&pods, &ListParams::default(), None).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    facts.deployment = Lookup::from_opt(deployments.get_opt(CONTROLLER).await).map(|d| {
        let status = d.status.unwrap_or_default();
        DeploymentFacts {
            desired: d.spec.and_then(|s| s.replicas).unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
        }
    });
    let (key, value) = CONTROLLER_POD_SELECTOR;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{key}={value}");
    facts.controller_pods = list_pods(
        &pods,
        &ListParams::default().labels(&selector),
        Some((key, value)),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    facts.secret = Lookup::from_opt(secrets.get_opt(ISSUER_SECRET).await).map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    });
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    facts.webhook = Lookup::from_opt(mwcs.get_opt(WEBHOOK_CONFIG).await).map(webhook_facts);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    facts.service = Lookup::from_opt(services.get_opt(CONTROLLER).await).map(|s| ServiceFacts {
        ports: s
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.port))
            .collect(),
    });
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let selector = format!("{SERVICE_NAME_LABEL}={CONTROLLER}");
    facts.endpoints = match slices.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => Lookup::Found(endpoint_facts(&l.items)),
        Err(e) => Lookup::Failed(describe(&e)),
    };
    facts
}

impl<T> Lookup<T> {
    /// Maps the found value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(t) => Lookup::Found(f(t)),
            Lookup::Missing => Lookup::Missing,
            Lookup::Failed(e) => Lookup::Failed(e),
            Lookup::NotRead => Lookup::NotRead,
        }
    }
}

/// Lists HTTPRoutes the way the controller's probe does: `404` means the CRD is absent.
async fn gateway_api(client: &Client) -> GatewayApi {
    use crate::discovery::kubernetes::objects::HttpRoute;
    let api: Api<HttpRoute> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => GatewayApi::Installed,
        Err(kube::Error::Api(e)) if e.code == 404 => GatewayApi::Absent,
        Err(e) => GatewayApi::Unknown(describe(&e)),
    }
}

async fn access(client: &Client, group: &str, resource: &str) -> Access {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                verb: Some("create".to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let (allowed, reason) = match api.create(&PostParams::default(), &review).await {
        Ok(r) => match r.status {
            Some(s) => (Lookup::Found(s.allowed), s.reason.filter(|r| !r.is_empty())),
            None => (Lookup::Failed("the answer has no status".into()), None),
        },
        Err(e) => (Lookup::Failed(describe(&e)), None),
    };
    Access {
        group: group.to_string(),
        resource: resource.to_string(),
        allowed,
        reason,
    }
}

/// Lists pods; `label` filters on this side too, for servers that ignore selectors.
async fn list_pods(
    api: &Api<Pod>,
    params: &ListParams,
    label: Option<(&str, &str)>,
) -> Lookup<Vec<PodFacts>> {
    match api.list(params).await {
        Ok(l) => Lookup::Found(
            l.items
                .into_iter()
                .map(pod_facts)
                .filter(|p| {
                    label.is_none_or(|(k, v)| p.labels.get(k).map(String::as_str) == Some(v))
                })
                .collect(),
        ),
        Err(e) => Lookup::Failed(describe(&e)),
    }
}

fn namespace_facts(ns: Namespace) -> NamespaceFacts {
    NamespaceFacts {
        name: ns.metadata.name.unwrap_or_default(),
        labels: ns.metadata.labels.unwrap_or_default(),
        annotations: ns.metadata.annotations.unwrap_or_default(),
    }
}

/// A pod's metadata, spec and container statuses, as [`PodFacts`].
pub fn pod_facts(pod: Pod) -> PodFacts {
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let containers = |specs: Vec<k8s_openapi::api::core::v1::Container>,
                      statuses: Option<Vec<ContainerStatus>>| {
        let statuses = statuses.unwrap_or_default();
        specs
            .into_iter()
            .map(|c| {
                let st = statuses.iter().find(|s| s.name == c.name);
                ContainerFacts {
                    image: c.image.unwrap_or_default(),
                    ready: st.is_some_and(|s| s.ready),
                    restarts: st.map_or(0, |s| s.restart_count),
                    state: st.map_or_else(|| "unknown".into(), container_state),
                    name: c.name,
                }
            })
            .collect()
    };
    PodFacts {
        namespace: pod.metadata.namespace.unwrap_or_default(),
        name: pod.metadata.name.unwrap_or_default(),
        phase: status.phase.clone().unwrap_or_else(|| "Unknown".into()),
        labels: pod.metadata.labels.unwrap_or_default(),
        annotations: pod.metadata.annotations.unwrap_or_default(),
        host_network: spec.host_network.unwrap_or(false),
        owner: pod
            .metadata
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|o| (o.kind, o.name)),
        containers: containers(spec.containers, status.container_statuses),
        init_containers: containers(
            spec.init_containers.unwrap_or_default(),
            status.init_container_statuses,
        ),
    }
}

fn container_state(s: &ContainerStatus) -> String {
    let Some(state) = &s.state else {
        return "unknown".into();
    };
    if state.running.is_some() {
        "running".into()
    } else if let Some(w) = &state.waiting {
        format!("waiting: {}", w.reason.as_deref().unwrap_or("unknown"))
    } else if let Some(t) = &state.terminated {
        format!("terminated: {}", t.reason.as_deref().unwrap_or("unknown"))
    } else {
        "unknown".into()
    }
}

fn webhook_facts(c: MutatingWebhookConfiguration) -> Vec<WebhookFacts> {
    c.webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| WebhookFacts {
            name: w.name,
            ca_bundle: w.client_config.ca_bundle.map(|b| b.0),
            failure_policy: w.failure_policy,
            service: w
                .client_config
                .service
                .map(|s| (s.namespace, s.name, s.port.unwrap_or(443), s.path)),
            url: w.client_config.url,
        })
        .collect()
}

/// Counts ready endpoints: `conditions.ready` unset counts as ready, as the API says.
pub fn endpoint_facts(slices: &[EndpointSlice]) -> EndpointFacts {
    let ours: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|n| n == CONTROLLER)
        })
        .collect();
    let mut f = EndpointFacts {
        slices: ours.len(),
        ..EndpointFacts::default()
    };
    for e in ours.iter().flat_map(|s| s.endpoints.iter()) {
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if ready && !e.addresses.is_empty() {
            f.ready += 1;
        } else {
            f.not_ready += 1;
        }
    }
    f
}
