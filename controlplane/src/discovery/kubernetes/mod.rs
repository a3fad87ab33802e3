//! The Kubernetes backend: kube-rs reflectors on Namespaces, Pods, Services,
//! EndpointSlices (`discovery.k8s.io/v1`) and, when the Gateway API CRDs are installed,
//! HTTPRoutes (`gateway.networking.k8s.io/v1`, for traffic splits: [`routes`]),
//! cluster-wide, feeding the same index as the file backend.
//!
//! Objects are read into small structs holding only the fields discovery uses
//! ([`objects`]: no images, env, probes, volumes or conditions are ever allocated), and
//! each watch runs through a reflector whose store keeps them with their metadata trimmed
//! ([`convert::trim_pod`] and friends drop managed fields and all but Weft's
//! annotations), so memory stays small on a Pi. One task reads the four event streams;
//! [`Cluster`] turns the stores into the index's objects:
//!
//! - until every kind has listed once, nothing reaches the index (the destination API
//!   answers `unknown` meanwhile and the controller's `/ready` says not ready); then the
//!   whole state is applied at once;
//! - afterwards each event updates just the objects it concerns (a Pod its workload, an
//!   EndpointSlice its Service, a Namespace everything in it, an HTTPRoute the Services of
//!   its namespace);
//! - a relist (after a `410 Gone`, or any broken watch that cannot resume) replaces the
//!   whole state again, so objects deleted while the watch was down disappear too. The
//!   index only wakes subscribers whose answer actually changed.
//!
//! A watch error is logged and retried with kube-rs's default backoff; an object missing
//! what it needs is logged and skipped, never a crash.

pub mod convert;
#[cfg(test)]
pub mod fake_api;
pub mod objects;
pub mod routes;
#[cfg(test)]
pub(crate) mod tests;

use super::index::{Index, SharedIndex};
use super::model::{ObjectKey, Service, State, Workload};
use crate::shutdown::ShutdownSignal;
use futures_util::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use objects::{EndpointSlice, HttpRoute, Namespace, Pod, Service as KubeService};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(
        "cannot make a Kubernetes client from KUBECONFIG, ~/.kube/config or the in-cluster service account: {0}"
    )]
    Client(#[source] kube::Error),
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {path}: {source}")]
    KubeconfigClient {
        path: std::path::PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// A client from `kubeconfig` when given, else from `KUBECONFIG` / `~/.kube/config` if
/// there is one, else from the in-cluster service account. Nothing is contacted yet.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, KubernetesError> {
    let Some(path) = kubeconfig else {
        return Client::try_default().await.map_err(KubernetesError::Client);
    };
    let bad = |source| KubernetesError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let file = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(bad)?;
    Client::try_from(config).map_err(|source| KubernetesError::KubeconfigClient {
        path: path.to_path_buf(),
        source,
    })
}

/// What an event concerns, in the index's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Pod(ObjectKey),
    Service(ObjectKey),
    Namespace(String),
    /// An HTTPRoute in this namespace changed: its services' splits may have.
    Routes(String),
}

/// The kinds watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Watched {
    Namespaces,
    Pods,
    Services,
    EndpointSlices,
    HttpRoutes,
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Watched::Namespaces => "namespaces",
            Watched::Pods => "pods",
            Watched::Services => "services",
            Watched::EndpointSlices => "endpointslices",
            Watched::HttpRoutes => "httproutes",
        })
    }
}

/// The reflectors' stores, read as the index's objects.
#[derive(Clone)]
pub struct Cluster {
    pub pods: Store<Pod>,
    pub services: Store<KubeService>,
    pub slices: Store<EndpointSlice>,
    pub namespaces: Store<Namespace>,
    /// `None` when the Gateway API's HTTPRoute is not installed.
    pub routes: Option<Store<HttpRoute>>,
}

impl Cluster {
    fn namespace_annotations(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| ns.metadata.annotations.clone())
    }

    fn convert_pod(&self, pod: &Pod) -> Option<Workload> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        match convert::workload(pod, self.namespace_annotations(ns).as_ref()) {
            Ok(c) => {
                for w in &c.warnings {
                    warn!(pod = %format_args!("{ns}/{name}"), "kubernetes: {w}");
                }
                c.value
            }
            Err(e) => {
                warn!(pod = %format_args!("{ns}/{name}"), "kubernetes: pod skipped: {e}");
                None
            }
        }
    }

    fn convert_service(&self, svc: &KubeService, slices: &[&EndpointSlice]) -> Option<Service> {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        match convert::service(svc, slices, self.namespace_annotations(ns).as_ref()) {
            Ok(c) => {
                for w in &c.warnings {
                    warn!(service = %format_args!("{ns}/{name}"), "kubernetes: {w}");
                }
                c.value.map(|mut s| {
                    s.split = self.split(&s.key);
                    s
                })
            }
            Err(e) => {
                warn!(service = %format_args!("{ns}/{name}"), "kubernetes: service skipped: {e}");
                None
            }
        }
    }

    /// The traffic split HTTPRoutes give `key` (empty: none).
    fn split(&self, key: &ObjectKey) -> Vec<crate::discovery::model::SplitBackend> {
        let Some(store) = &self.routes else {
            return Vec::new();
        };
        let in_ns: Vec<Arc<HttpRoute>> = store
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(key.namespace.as_str()))
            .collect();
        let refs: Vec<&HttpRoute> = in_ns.iter().map(Arc::as_ref).collect();
        let (split, warnings) = routes::split_for(key, &refs);
        for w in &warnings {
            warn!(service = %key, "kubernetes: {w}");
        }
        split
    }

    /// The workload a pod is now, if any.
    pub fn workload(&self, key: &ObjectKey) -> Option<Workload> {
        let pod = self
            .pods
            .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
        self.convert_pod(&pod)
    }

    /// The service now, with the endpoints of its slices, if any.
    pub fn service(&self, key: &ObjectKey) -> Option<Service> {
        let svc = self
            .services
            .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
        let slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|s| convert::slice_service(s).is_ok_and(|k| k == *key))
            .collect();
        let slices: Vec<&EndpointSlice> = slices.iter().map(Arc::as_ref).collect();
        self.convert_service(&svc, &slices)
    }

    /// Everything, for a full reset of the index.
    pub fn state(&self) -> State {
        let mut by_service: HashMap<ObjectKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
        for s in self.slices.state() {
            if let Ok(k) = convert::slice_service(&s) {
                by_service.entry(k).or_default().push(s);
            }
        }
        State {
            workloads: self
                .pods
                .state()
                .iter()
                .filter_map(|p| self.convert_pod(p))
                .collect(),
            services: self
                .services
                .state()
                .iter()
                .filter_map(|svc| {
                    let key = convert::key(&svc.metadata).ok()?;
                    let slices: Vec<&EndpointSlice> = by_service
                        .get(&key)
                        .map(|v| v.iter().map(Arc::as_ref).collect())
                        .unwrap_or_default();
                    self.convert_service(svc, &slices)
                })
                .collect(),
        }
    }

    /// Brings the index up to date with one change.
    pub fn update(&self, changed: &Changed, index: &mut Index) {
        match changed {
            Changed::Pod(key) => match self.workload(key) {
                Some(w) => index.apply_workload(w),
                None => index.delete_workload(key),
            },
            Changed::Service(key) => match self.service(key) {
                Some(s) => index.apply_service(s),
                None => index.delete_service(key),
            },
            Changed::Routes(ns) => {
                for key in self
                    .services
                    .state()
                    .iter()
                    .filter_map(|s| convert::key(&s.metadata).ok())
                    .filter(|k| k.namespace == *ns)
                {
                    self.update(&Changed::Service(key), index);
                }
            }
            Changed::Namespace(ns) => {
                let in_ns = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                    convert::key(meta).ok().filter(|k| k.namespace == *ns)
                };
                for key in self.pods.state().iter().filter_map(|p| in_ns(&p.metadata)) {
                    self.update(&Changed::Pod(key), index);
                }
                for key in self
                    .services
                    .state()
                    .iter()
                    .filter_map(|s| in_ns(&s.metadata))
                {
                    self.update(&Changed::Service(key), index);
                }
            }
        }
    }
}

/// What one watch item means for the loop.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    Synced(Watched),
    Changed(Changed),
    Ended(Watched),
}

fn step<K>(
    kind: Watched,
    item: Option<Result<watcher::Event<K>, watcher::Error>>,
    changed: impl Fn(&K) -> Option<Changed>,
) -> Step {
    match item {
        None => Step::Ended(kind),
        Some(Err(e)) => {
            warn!("kubernetes: watching {kind}: {e}; retrying with backoff");
            Step::Nothing
        }
        Some(Ok(watcher::Event::InitDone)) => Step::Synced(kind),
        Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => Step::Nothing,
        Some(Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj))) => {
            changed(&obj).map_or(Step::Nothing, Step::Changed)
        }
    }
}

/// Watches the cluster and keeps `index` current until shutdown. `ready` turns true
/// once every kind has been listed and applied.
pub async fn run(
    client: Client,
    index: SharedIndex,
    ready: watch::Sender<bool>,
    mut shutdown: ShutdownSignal,
) {
    let config = watcher::Config::default();
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (services, svc_writer) = reflector::store::<KubeService>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let mut ns_events = std::pin::pin!(reflector::reflector(
        ns_writer,
        watcher(Api::<Namespace>::all(client.clone()), config.clone())
            .default_backoff()
            .modify(convert::trim_namespace),
    ));
    let mut pod_events = std::pin::pin!(reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), config.clone())
            .default_backoff()
            .modify(convert::trim_pod),
    ));
    let mut svc_events = std::pin::pin!(reflector::reflector(
        svc_writer,
        watcher(Api::<KubeService>::all(client.clone()), config.clone())
            .default_backoff()
            .modify(convert::trim_service),
    ));
    let mut slice_events = std::pin::pin!(reflector::reflector(
        slice_writer,
        watcher(Api::<EndpointSlice>::all(client.clone()), config.clone())
            .default_backoff()
            .modify(convert::trim_slice),
    ));
    let routes_api = Api::<HttpRoute>::all(client);
    let (routes, mut route_events) = if gateway_api_installed(&routes_api).await {
        let (store, writer) = reflector::store::<HttpRoute>();
        let events = reflector::reflector(
            writer,
            watcher(routes_api, config)
                .default_backoff()
                .modify(convert::trim_route),
        )
        .boxed();
        (Some(store), events)
    } else {
        (None, futures_util::stream::pending().boxed())
    };
    let kinds = if routes.is_some() { 5 } else { 4 };
    let cluster = Cluster {
        pods,
        services,
        slices,
        namespaces,
        routes,
    };
    let mut synced: Vec<Watched> = Vec::with_capacity(kinds);
    loop {
        let step = tokio::select! {
            _ = shutdown.wait() => return,
            e = ns_events.next() => step(Watched::Namespaces, e, |n: &Namespace| {
                n.metadata.name.clone().map(Changed::Namespace)
            }),
            e = pod_events.next() => step(Watched::Pods, e, |p: &Pod| {
                convert::key(&p.metadata).ok().map(Changed::Pod)
            }),
            e = svc_events.next() => step(Watched::Services, e, |s: &KubeService| {
                convert::key(&s.metadata).ok().map(Changed::Service)
            }),
            e = slice_events.next() => step(Watched::EndpointSlices, e, |s: &EndpointSlice| {
                match convert::slice_service(s) {
                    Ok(k) => Some(Changed::Service(k)),
                    Err(e) => {
                        debug!(slice = ?s.metadata.name, "kubernetes: EndpointSlice ignored: {e}");
                        None
                    }
                }
            }),
            e = route_events.next() => step(Watched::HttpRoutes, e, |r: &HttpRoute| {
                r.metadata.namespace.clone().map(Changed::Routes)
            }),
        };
        match step {
            Step::Nothing => {}
            Step::Ended(kind) => {
                error!("kubernetes: the {kind} watch ended; discovery stops here");
                return;
            }
            Step::Synced(kind) => {
                let first = !synced.contains(&kind);
                if first {
                    synced.push(kind);
                }
                if synced.len() == kinds {
                    let state = cluster.state();
                    let (w, s) = (state.workloads.len(), state.services.len());
                    index.lock().reset(state);
                    if ready.send_replace(true) {
                        info!(workloads = w, services = s, "kubernetes: relisted {kind}");
                    } else {
                        info!(
                            workloads = w,
                            services = s,
                            "kubernetes: synced; serving destinations"
                        );
                    }
                }
            }
            Step::Changed(changed) => {
                if synced.len() == kinds {
                    cluster.update(&changed, &mut index.lock());
                }
            }
        }
    }
}

/// Whether the API server serves HTTPRoutes. Without the Gateway API CRDs (k3s does not
/// install them) there are no route-based splits; installing them later takes a
/// controller restart.
async fn gateway_api_installed(api: &Api<HttpRoute>) -> bool {
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => {
            info!("kubernetes: watching Gateway API HTTPRoutes for traffic splits");
            true
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            info!("kubernetes: the Gateway API HTTPRoute CRD is not installed; no HTTPRoute traffic splits (restart the controller after installing it)");
            false
        }
        Err(e) => {
            warn!("kubernetes: cannot list HTTPRoutes ({e}); watching them anyway");
            true
        }
    }
}
