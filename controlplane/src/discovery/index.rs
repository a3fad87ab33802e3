//! The discovery index: what every destination address is, computed from the workloads
//! and services a backend applies, and pushed to subscribers.
//!
//! It is a plain synchronous struct, with no I/O: a backend calls [`Index::reset`] with
//! everything it knows (the file backend on every good edit, the Kubernetes backend on a
//! relist) or [`Index::apply_workload`] / [`Index::delete_service`] / … per object; the
//! destination API calls [`Index::subscribe`] and gets a [`watch::Receiver`] holding the
//! address's current [`Snapshot`]. Every proxy asking about the same address shares one
//! channel, so each change is computed once per address, not once per proxy; a change
//! that leaves an address's snapshot as it was does not wake its subscribers.
//!
//! What an address is ([`Index::lookup`]):
//!
//! 1. a service's virtual address and one of its ports → [`Kind::Service`], with the
//!    service's endpoints (selected workloads at the port's `targetPort`, or the listed
//!    endpoints), or with every split backend's endpoints flattened by weight
//!    ([`super::split`]), and the service's route config;
//! 2. a workload's address, any port → [`Kind::Pod`] with that one endpoint;
//! 3. anything else → [`Kind::Unknown`] with no endpoints (the proxy passes it through).
//!
//! Endpoints are sorted by address and carry the workload's identity when it is meshed,
//! its inbound port, a protocol hint (the service port's `protocol`, else `opaque` when
//! the workload lists the port as opaque) and metric labels (`namespace`, `pod`,
//! `serviceaccount`, and `<owner kind>: <owner name>`). A service answers on an IPv4
//! virtual address with IPv4 endpoints only, and on IPv6 with IPv6 only.

use super::model::{
    EndpointEntry, EndpointTarget, Members, ObjectKey, Service, ServicePort, State, Workload,
};
use super::split;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use tokio::sync::watch;
use weft_api::destination::{Endpoint, Kind, ProtocolHint, RouteConfig, Snapshot};
use weft_api::identity::IdentityName;

/// What the index needs to know about the mesh to name identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    pub control_plane_namespace: String,
    pub trust_domain: String,
}

/// The index. Share it as [`SharedIndex`].
#[derive(Debug)]
pub struct Index {
    config: IndexConfig,
    workloads: BTreeMap<ObjectKey, Workload>,
    services: BTreeMap<ObjectKey, Service>,
    /// Service virtual address and port → the service (the first by key on a clash).
    by_vip: HashMap<SocketAddr, ObjectKey>,
    /// Workload address → the workload (the first by key on a clash).
    by_ip: HashMap<IpAddr, ObjectKey>,
    /// One channel per watched address or authority, shared by all its subscribers.
    subscribers: HashMap<Target, watch::Sender<Snapshot>>,
}

/// What a proxy subscribes to: an address, or a Service by name and port (an authority,
/// `web.apps.svc.cluster.local:80`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    Authority { service: ObjectKey, port: u16 },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Authority { service, port } => {
                write!(f, "{}.{}.svc:{port}", service.name, service.namespace)
            }
        }
    }
}

/// The snapshot of an address nobody knows.
pub fn unknown() -> Snapshot {
    Snapshot {
        kind: Kind::Unknown,
        service: None,
        endpoints: Vec::new(),
        route: RouteConfig::default(),
        workload_done: false,
    }
}

impl Index {
    pub fn new(config: IndexConfig) -> Self {
        Self {
            config,
            workloads: BTreeMap::new(),
            services: BTreeMap::new(),
            by_vip: HashMap::new(),
            by_ip: HashMap::new(),
            subscribers: HashMap::new(),
        }
    }

    /// Replaces everything with `state` (objects are keyed by namespace/name; a later
    /// duplicate replaces an earlier one).
    pub fn reset(&mut self, state: State) {
        self.workloads = state
            .workloads
            .into_iter()
            .map(|w| (w.key.clone(), w))
            .collect();
        self.services = state
            .services
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        self.changed();
    }

    /// Adds or replaces one workload.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub fn apply_workload(&mut self, workload: Workload) {
        if self.workloads.get(&workload.key) != Some(&workload) {
            self.workloads.insert(workload.key.clone(), workload);
            self.changed();
        }
    }

    /// Removes one workload. (The per-object methods serve the Kubernetes backend.)
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub fn delete_workload(&mut self, key: &ObjectKey) {
        if self.workloads.remove(key).is_some() {
            self.changed();
        }
    }

    /// Adds or replaces one service.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub fn apply_service(&mut self, service: Service) {
        if self.services.get(&service.key) != Some(&service) {
            self.services.insert(service.key.clone(), service);
            self.changed();
        }
    }

    /// Removes one service.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub fn delete_service(&mut self, key: &ObjectKey) {
        if self.services.remove(key).is_some() {
            self.changed();
        }
    }

    /// A receiver holding `addr`'s current snapshot (already marked seen) that changes
    /// whenever the snapshot does.
    #[cfg(test)]
    pub fn subscribe(&mut self, addr: SocketAddr) -> watch::Receiver<Snapshot> {
        self.subscribe_target(Target::Addr(addr))
    }

    /// Subscribes to an address or an authority.
    pub fn subscribe_target(&mut self, target: Target) -> watch::Receiver<Snapshot> {
        let target = match target {
            Target::Addr(a) => Target::Addr(canonical(a)),
            t => t,
        };
        if let Some(tx) = self.subscribers.get(&target) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(self.lookup_target(&target));
        self.subscribers.insert(target, tx);
        rx
    }

    /// What a target is now.
    pub fn lookup_target(&self, target: &Target) -> Snapshot {
        match target {
            Target::Addr(addr) => self.lookup(*addr),
            Target::Authority { service, port } => self.lookup_authority(service, *port),
        }
    }

    /// A Service by name, on one of its ports: what its virtual address on that port would
    /// answer (IPv4 endpoints unless the Service only has IPv6 addresses). Unknown when the
    /// Service or the port does not exist.
    pub fn lookup_authority(&self, service: &ObjectKey, port: u16) -> Snapshot {
        match self.services.get(service) {
            Some(svc) => match svc.port(port) {
                Some(p) => {
                    let v4 = svc.addresses.is_empty() || svc.addresses.iter().any(IpAddr::is_ipv4);
                    self.service_snapshot(svc, p, v4)
                }
                None => unknown(),
            },
            None => unknown(),
        }
    }

    /// How many addresses have at least one subscriber (after [`Index::forget_unwatched`]).
    pub fn watched(&self) -> usize {
        self.subscribers.len()
    }

    /// Drops the channels of addresses nobody subscribes to any more.
    pub fn forget_unwatched(&mut self) {
        self.subscribers.retain(|_, tx| !tx.is_closed());
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// What `addr` is now.
    pub fn lookup(&self, addr: SocketAddr) -> Snapshot {
        let addr = canonical(addr);
        if let Some(svc) = self.by_vip.get(&addr).and_then(|k| self.services.get(k)) {
            if let Some(port) = svc.port(addr.port()) {
                return self.service_snapshot(svc, port, addr.is_ipv4());
            }
        }
        if let Some(w) = self
            .by_ip
            .get(&addr.ip())
            .and_then(|k| self.workloads.get(k))
        {
            return Snapshot {
                kind: Kind::Pod,
                service: None,
                endpoints: vec![self.workload_endpoint(w, addr, 1, None)],
                route: RouteConfig::default(),
                workload_done: w.finished,
            };
        }
        unknown()
    }

    /// Rebuilds the address maps and republishes every watched address.
    fn changed(&mut self) {
        self.by_vip.clear();
        for svc in self.services.values() {
            for ip in &svc.addresses {
                for port in &svc.ports {
                    self.by_vip
                        .entry(SocketAddr::new(ip.to_canonical(), port.port))
                        .or_insert_with(|| svc.key.clone());
                }
            }
        }
        self.by_ip.clear();
        for w in self.workloads.values() {
            for ip in &w.addresses {
                self.by_ip
                    .entry(ip.to_canonical())
                    .or_insert_with(|| w.key.clone());
            }
        }
        self.forget_unwatched();
        for (target, tx) in &self.subscribers {
            let next = self.lookup_target(target);
            tx.send_if_modified(|current| {
                if *current == next {
                    false
                } else {
                    *current = next;
                    true
                }
            });
        }
    }

    fn service_snapshot(&self, svc: &Service, port: &ServicePort, v4: bool) -> Snapshot {
        let endpoints = if svc.split.is_empty() {
            self.members(svc, port, None, v4)
        } else {
            let mut groups: Vec<(u32, Vec<Endpoint>)> = Vec::with_capacity(svc.split.len());
            for b in &svc.split {
                let key = ObjectKey::new(&svc.key.namespace, &b.service);
                // A backend serves the split service's port number; without it, nothing.
                let mut eps = self
                    .services
                    .get(&key)
                    .and_then(|backend| backend.port(port.port).map(|bp| (backend, bp)))
                    .map(|(backend, bp)| self.members(backend, bp, Some(port), v4))
                    .unwrap_or_default();
                for e in &mut eps {
                    e.backend = Some(b.service.clone());
                }
                groups.push((b.weight, eps));
            }
            let shapes: Vec<(u32, Vec<u32>)> = groups
                .iter()
                .map(|(share, eps)| (*share, eps.iter().map(|e| e.weight).collect()))
                .collect();
            let weights = split::flatten(&shapes);
            groups
                .into_iter()
                .zip(weights)
                .flat_map(|((_, eps), ws)| {
                    eps.into_iter().zip(ws).map(|(mut e, w)| {
                        e.weight = w;
                        e
                    })
                })
                .collect()
        };
        // One endpoint per address (the first wins), sorted by address.
        let mut unique: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
        for e in endpoints {
            unique.entry(e.addr).or_insert(e);
        }
        Snapshot {
            kind: Kind::Service,
            service: Some(format!("{}.{}", svc.key.name, svc.key.namespace)),
            endpoints: unique.into_values().collect(),
            route: svc.route.clone(),
            workload_done: false,
        }
    }

    /// The endpoints `svc` itself has for `port` (`apex`: the port of the split service
    /// this is a backend of, whose protocol applies when `port` declares none).
    fn members(
        &self,
        svc: &Service,
        port: &ServicePort,
        apex: Option<&ServicePort>,
        v4: bool,
    ) -> Vec<Endpoint> {
        let declared = port.protocol.or(apex.and_then(|a| a.protocol));
        match &svc.members {
            Members::Selector(selector) => self
                .workloads
                .values()
                .filter(|w| w.key.namespace == svc.key.namespace && selects(selector, w))
                .flat_map(|w| {
                    w.addresses
                        .iter()
                        .filter(|ip| ip.to_canonical().is_ipv4() == v4)
                        .map(move |ip| {
                            let addr = SocketAddr::new(ip.to_canonical(), port.target_port);
                            self.workload_endpoint(w, addr, 1, declared)
                        })
                })
                .collect(),
            Members::Explicit(entries) => entries
                .iter()
                .filter(|e| {
                    e.service_port == port.port && e.addr.ip().to_canonical().is_ipv4() == v4
                })
                .map(|e| self.explicit_endpoint(svc, e, declared))
                .collect(),
        }
    }

    fn explicit_endpoint(
        &self,
        svc: &Service,
        e: &EndpointEntry,
        declared: Option<ProtocolHint>,
    ) -> Endpoint {
        let addr = canonical(e.addr);
        match &e.target {
            EndpointTarget::Workload(key) => match self.workloads.get(key) {
                Some(w) => self.workload_endpoint(w, addr, e.weight, declared),
                None => bare(addr, e.weight, declared),
            },
            EndpointTarget::ServiceAccount(sa) => Endpoint {
                identity: self.identity(sa, &svc.key.namespace),
                labels: BTreeMap::from([
                    ("namespace".to_string(), svc.key.namespace.clone()),
                    ("serviceaccount".to_string(), sa.clone()),
                ]),
                ..bare(addr, e.weight, declared)
            },
            EndpointTarget::None => bare(addr, e.weight, declared),
        }
    }

    fn workload_endpoint(
        &self,
        w: &Workload,
        addr: SocketAddr,
        weight: u32,
        declared: Option<ProtocolHint>,
    ) -> Endpoint {
        let opaque = w
            .opaque_ports
            .contains(&addr.port())
            .then_some(ProtocolHint::Opaque);
        let mut labels = BTreeMap::from([
            ("namespace".to_string(), w.key.namespace.clone()),
            ("pod".to_string(), w.key.name.clone()),
            ("serviceaccount".to_string(), w.service_account.clone()),
        ]);
        if let Some(owner) = &w.owner {
            labels
                .entry(owner.kind.to_ascii_lowercase())
                .or_insert_with(|| owner.name.clone());
        }
        Endpoint {
            addr,
            weight,
            backend: None,
            identity: if w.meshed {
                self.identity(&w.service_account, &w.key.namespace)
            } else {
                None
            },
            inbound_port: w.inbound_port,
            protocol_hint: declared.or(opaque),
            labels,
        }
    }

    fn identity(&self, service_account: &str, namespace: &str) -> Option<String> {
        IdentityName::new(
            service_account,
            namespace,
            &self.config.control_plane_namespace,
            &self.config.trust_domain,
        )
        .ok()
        .map(|id| id.to_string())
    }
}

fn bare(addr: SocketAddr, weight: u32, protocol_hint: Option<ProtocolHint>) -> Endpoint {
    Endpoint {
        addr,
        weight,
        backend: None,
        identity: None,
        inbound_port: super::model::DEFAULT_INBOUND_PORT,
        protocol_hint,
        labels: BTreeMap::new(),
    }
}

fn selects(selector: &BTreeMap<String, String>, w: &Workload) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The index behind a lock, shared by the backend that feeds it, the destination API and
/// the metrics. Every operation is short and synchronous, so a plain mutex serves.
#[derive(Debug, Clone)]
pub struct SharedIndex(std::sync::Arc<std::sync::Mutex<Index>>);

impl SharedIndex {
    pub fn new(index: Index) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(index)))
    }

    /// The index, locked. A panic while it was held does not make it unusable.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::discovery::model::{Owner, SplitBackend, DEFAULT_INBOUND_PORT};
    use std::collections::BTreeSet;
    use weft_api::destination::RetryOn;

    pub fn config() -> IndexConfig {
        IndexConfig {
            control_plane_namespace: "weft".into(),
            trust_domain: "cluster.local".into(),
        }
    }

    fn id(sa: &str, ns: &str) -> Option<String> {
        Some(format!(
            "{sa}.{ns}.serviceaccount.identity.weft.cluster.local"
        ))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn workload(ns: &str, name: &str, ips: &[&str], app: &str) -> Workload {
        Workload {
            key: ObjectKey::new(ns, name),
            service_account: app.into(),
            addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
            labels: labels(&[("app", app)]),
            owner: Some(Owner {
                kind: "Deployment".into(),
                name: app.into(),
            }),
            meshed: true,
            inbound_port: DEFAULT_INBOUND_PORT,
            opaque_ports: BTreeSet::new(),
            finished: false,
        }
    }

    pub fn service(ns: &str, name: &str, vips: &[&str], port: u16, target: u16) -> Service {
        Service {
            key: ObjectKey::new(ns, name),
            addresses: vips.iter().map(|i| i.parse().unwrap()).collect(),
            ports: vec![ServicePort {
                port,
                target_port: target,
                protocol: None,
            }],
            members: Members::Selector(labels(&[("app", name)])),
            route: RouteConfig::default(),
            split: vec![],
        }
    }

    /// The endpoint of a `workload(ns, name, _, app)` at `addr`.
    fn wep(addr: &str, weight: u32, ns: &str, pod: &str, app: &str) -> Endpoint {
        Endpoint {
            addr: sa(addr),
            weight,
            backend: None,
            identity: id(app, ns),
            inbound_port: 4143,
            protocol_hint: None,
            labels: labels(&[
                ("namespace", ns),
                ("pod", pod),
                ("serviceaccount", app),
                ("deployment", app),
            ]),
        }
    }

    fn svc_snap(name: &str, endpoints: Vec<Endpoint>) -> Snapshot {
        Snapshot {
            kind: Kind::Service,
            service: Some(name.into()),
            endpoints,
            route: RouteConfig::default(),
            workload_done: false,
        }
    }

    fn pod_snap(e: Endpoint) -> Snapshot {
        Snapshot {
            kind: Kind::Pod,
            service: None,
            endpoints: vec![e],
            route: RouteConfig::default(),
            workload_done: false,
        }
    }

    /// A small mesh exercising every rule; the lookup table below reads against it.
    fn mesh() -> State {
        let mut plain = workload("apps", "legacy-0", &["198.18.1.9"], "legacy");
        plain.meshed = false;
        plain.owner = None;
        let mut db = workload("data", "db-0", &["198.18.2.1"], "db");
        db.opaque_ports = BTreeSet::from([5432]);
        db.owner = Some(Owner {
            kind: "StatefulSet".into(),
            name: "db".into(),
        });
        let mut dbs = service("data", "db", &["198.19.2.1"], 5432, 5432);
        dbs.route = RouteConfig {
            retry_on: vec![RetryOn::Connect],
            timeout_ms: None,
        };
        let mut web = service("apps", "web", &["198.19.0.10", "fd00::10"], 80, 8080);
        web.route = RouteConfig {
            retry_on: vec![RetryOn::ServerError, RetryOn::Connect],
            timeout_ms: Some(2000),
        };
        web.ports.push(ServicePort {
            port: 81,
            target_port: 8081,
            protocol: Some(ProtocolHint::Http2),
        });
        let mut canary = service("apps", "canary", &["198.19.0.20"], 80, 8080);
        canary.split = vec![
            SplitBackend {
                service: "web".into(),
                weight: 90,
            },
            SplitBackend {
                service: "web-v2".into(),
                weight: 10,
            },
            SplitBackend {
                service: "missing".into(),
                weight: 50,
            },
        ];
        let mut external = service("apps", "external", &["198.19.0.30"], 443, 443);
        external.members = Members::Explicit(vec![
            EndpointEntry {
                service_port: 443,
                addr: sa("198.18.9.2:8443"),
                weight: 3,
                target: EndpointTarget::Workload(ObjectKey::new("apps", "web-1")),
            },
            EndpointEntry {
                service_port: 443,
                addr: sa("198.18.9.1:443"),
                weight: 2,
                target: EndpointTarget::ServiceAccount("edge".into()),
            },
            EndpointEntry {
                service_port: 443,
                addr: sa("198.18.9.3:443"),
                weight: 1,
                target: EndpointTarget::None,
            },
            EndpointEntry {
                service_port: 443,
                addr: sa("198.18.9.4:443"),
                weight: 1,
                target: EndpointTarget::Workload(ObjectKey::new("apps", "gone")),
            },
        ]);
        State {
            workloads: vec![
                workload("apps", "web-2", &["198.18.0.2"], "web"),
                workload("apps", "web-1", &["198.18.0.1", "fd00::1"], "web"),
                workload("apps", "web-v2-1", &["198.18.0.5"], "web-v2"),
                // Same labels, other namespace: never selected by apps/web.
                workload("other", "web-1", &["198.18.3.1"], "web"),
                plain,
                db,
            ],
            services: vec![
                web,
                service("apps", "web-v2", &[], 80, 9090),
                canary,
                external,
                dbs,
            ],
        }
    }

    #[test]
    fn lookup_table() {
        let mut index = Index::new(config());
        index.reset(mesh());
        let web_route = RouteConfig {
            retry_on: vec![RetryOn::ServerError, RetryOn::Connect],
            timeout_ms: Some(2000),
        };
        let mut web_h2 = vec![
            wep("198.18.0.1:8081", 1, "apps", "web-1", "web"),
            wep("198.18.0.2:8081", 1, "apps", "web-2", "web"),
        ];
        for e in &mut web_h2 {
            e.protocol_hint = Some(ProtocolHint::Http2);
        }
        let canary_ep = |addr: &str, weight, pod: &str, app: &str, backend: &str| Endpoint {
            backend: Some(backend.into()),
            ..wep(addr, weight, "apps", pod, app)
        };
        let mut db_ep = wep("198.18.2.1:5432", 1, "data", "db-0", "db");
        db_ep.protocol_hint = Some(ProtocolHint::Opaque);
        db_ep.labels.remove("deployment");
        db_ep.labels.insert("statefulset".into(), "db".into());
        let mut legacy = wep("198.18.1.9:8080", 1, "apps", "legacy-0", "legacy");
        legacy.identity = None;
        legacy.labels.remove("deployment");
        let external_ep = |addr: &str, weight| Endpoint {
            addr: sa(addr),
            weight,
            backend: None,
            identity: None,
            inbound_port: 4143,
            protocol_hint: None,
            labels: BTreeMap::new(),
        };
        let cases: Vec<(&str, &str, Snapshot)> = vec![
            (
                "service VIP: selected workloads at targetPort, sorted, with the route",
                "198.19.0.10:80",
                Snapshot {
                    route: web_route.clone(),
                    ..svc_snap(
                        "web.apps",
                        vec![
                            wep("198.18.0.1:8080", 1, "apps", "web-1", "web"),
                            wep("198.18.0.2:8080", 1, "apps", "web-2", "web"),
                        ],
                    )
                },
            ),
            (
                "second port: its targetPort and its protocol",
                "198.19.0.10:81",
                Snapshot {
                    route: web_route.clone(),
                    ..svc_snap("web.apps", web_h2)
                },
            ),
            (
                "IPv6 VIP: IPv6 endpoints only",
                "[fd00::10]:80",
                Snapshot {
                    route: web_route.clone(),
                    ..svc_snap(
                        "web.apps",
                        vec![wep("[fd00::1]:8080", 1, "apps", "web-1", "web")],
                    )
                },
            ),
            (
                "IPv4-mapped IPv6 is the IPv4 address",
                "[::ffff:198.19.0.10]:80",
                Snapshot {
                    route: web_route.clone(),
                    ..svc_snap(
                        "web.apps",
                        vec![
                            wep("198.18.0.1:8080", 1, "apps", "web-1", "web"),
                            wep("198.18.0.2:8080", 1, "apps", "web-2", "web"),
                        ],
                    )
                },
            ),
            ("VIP, port not served", "198.19.0.10:8080", unknown()),
            (
                "split 90/10 (2 and 1 endpoints), a missing backend takes nothing",
                "198.19.0.20:80",
                svc_snap(
                    "canary.apps",
                    vec![
                        canary_ep("198.18.0.1:8080", 9, "web-1", "web", "web"),
                        canary_ep("198.18.0.2:8080", 9, "web-2", "web", "web"),
                        canary_ep("198.18.0.5:9090", 2, "web-v2-1", "web-v2", "web-v2"),
                    ],
                ),
            ),
            (
                "explicit endpoints: workload, service account, plain, unknown workload",
                "198.19.0.30:443",
                svc_snap(
                    "external.apps",
                    vec![
                        Endpoint {
                            identity: id("edge", "apps"),
                            labels: labels(&[("namespace", "apps"), ("serviceaccount", "edge")]),
                            ..external_ep("198.18.9.1:443", 2)
                        },
                        wep("198.18.9.2:8443", 3, "apps", "web-1", "web"),
                        external_ep("198.18.9.3:443", 1),
                        external_ep("198.18.9.4:443", 1),
                    ],
                ),
            ),
            (
                "opaque port on the workload, owner kind as label",
                "198.19.2.1:5432",
                Snapshot {
                    route: RouteConfig {
                        retry_on: vec![RetryOn::Connect],
                        timeout_ms: None,
                    },
                    ..svc_snap("db.data", vec![db_ep.clone()])
                },
            ),
            (
                "pod address, opaque port",
                "198.18.2.1:5432",
                pod_snap(db_ep),
            ),
            (
                "pod address, any port",
                "198.18.0.2:9999",
                pod_snap(wep("198.18.0.2:9999", 1, "apps", "web-2", "web")),
            ),
            (
                "pod in another namespace",
                "198.18.3.1:80",
                pod_snap(wep("198.18.3.1:80", 1, "other", "web-1", "web")),
            ),
            (
                "unmeshed pod: no identity",
                "198.18.1.9:8080",
                pod_snap(legacy),
            ),
            ("unknown address", "198.18.200.1:80", unknown()),
            ("unknown IPv6 address", "[fd00::99]:80", unknown()),
        ];
        for (name, addr, want) in cases {
            assert_eq!(index.lookup(sa(addr)), want, "{name}");
        }
    }

    /// One step of a subscription table: an operation, then what a receiver subscribed
    /// before it must see (`None`: no change signalled).
    type Step = (&'static str, fn(&mut Index), Option<Snapshot>);

    #[test]
    fn subscribers_see_exactly_the_changes() {
        let web_eps = |n: usize| -> Vec<Endpoint> {
            (1..=n)
                .map(|i| {
                    wep(
                        &format!("198.18.0.{i}:8080"),
                        1,
                        "apps",
                        &format!("web-{i}"),
                        "web",
                    )
                })
                .collect()
        };
        let steps: Vec<Step> = vec![
            (
                "the service appears",
                |i| i.apply_service(service("apps", "web", &["198.19.0.10"], 80, 8080)),
                Some(svc_snap("web.apps", vec![])),
            ),
            (
                "a selected workload appears",
                |i| i.apply_workload(workload("apps", "web-1", &["198.18.0.1"], "web")),
                Some(svc_snap("web.apps", web_eps(1))),
            ),
            (
                "the same workload again: nothing",
                |i| i.apply_workload(workload("apps", "web-1", &["198.18.0.1"], "web")),
                None,
            ),
            (
                "an unrelated workload: nothing",
                |i| i.apply_workload(workload("apps", "db-1", &["198.18.0.7"], "db")),
                None,
            ),
            (
                "an unrelated service: nothing",
                |i| i.apply_service(service("apps", "db", &["198.19.0.7"], 5432, 5432)),
                None,
            ),
            (
                "a second selected workload",
                |i| i.apply_workload(workload("apps", "web-2", &["198.18.0.2"], "web")),
                Some(svc_snap("web.apps", web_eps(2))),
            ),
            (
                "the route changes",
                |i| {
                    let mut s = service("apps", "web", &["198.19.0.10"], 80, 8080);
                    s.route.timeout_ms = Some(500);
                    i.apply_service(s);
                },
                Some(Snapshot {
                    route: RouteConfig {
                        retry_on: vec![],
                        timeout_ms: Some(500),
                    },
                    ..svc_snap("web.apps", web_eps(2))
                }),
            ),
            (
                "a workload is relabelled out",
                |i| {
                    let mut w = workload("apps", "web-1", &["198.18.0.1"], "web");
                    w.labels.insert("app".into(), "other".into());
                    i.apply_workload(w);
                },
                Some(Snapshot {
                    route: RouteConfig {
                        retry_on: vec![],
                        timeout_ms: Some(500),
                    },
                    ..svc_snap(
                        "web.apps",
                        vec![wep("198.18.0.2:8080", 1, "apps", "web-2", "web")],
                    )
                }),
            ),
            (
                "a reset to the same two workloads and the old route",
                |i| {
                    i.reset(State {
                        workloads: vec![
                            workload("apps", "web-1", &["198.18.0.1"], "web"),
                            workload("apps", "web-2", &["198.18.0.2"], "web"),
                        ],
                        services: vec![service("apps", "web", &["198.19.0.10"], 80, 8080)],
                    })
                },
                Some(svc_snap("web.apps", web_eps(2))),
            ),
            (
                "an identical reset: nothing",
                |i| {
                    i.reset(State {
                        workloads: vec![
                            workload("apps", "web-2", &["198.18.0.2"], "web"),
                            workload("apps", "web-1", &["198.18.0.1"], "web"),
                        ],
                        services: vec![service("apps", "web", &["198.19.0.10"], 80, 8080)],
                    })
                },
                None,
            ),
            (
                "deleting a workload nobody has: nothing",
                |i| i.delete_workload(&ObjectKey::new("apps", "web-9")),
                None,
            ),
            (
                "a workload is deleted",
                |i| i.delete_workload(&ObjectKey::new("apps", "web-1")),
                Some(svc_snap(
                    "web.apps",
                    vec![wep("198.18.0.2:8080", 1, "apps", "web-2", "web")],
                )),
            ),
            (
                "the service is deleted: its address is unknown",
                |i| i.delete_service(&ObjectKey::new("apps", "web")),
                Some(unknown()),
            ),
        ];
        let mut index = Index::new(config());
        let mut rx = index.subscribe(sa("198.19.0.10:80"));
        let mut second = index.subscribe(sa("198.19.0.10:80"));
        assert_eq!(*rx.borrow(), unknown());
        assert!(!rx.has_changed().unwrap());
        for (name, op, want) in steps {
            op(&mut index);
            match want {
                Some(want) => {
                    assert!(rx.has_changed().unwrap(), "{name}: a change is signalled");
                    assert_eq!(*rx.borrow_and_update(), want, "{name}");
                    // Every subscriber of the address sees the same value.
                    assert_eq!(*second.borrow_and_update(), want, "{name}");
                }
                None => assert!(!rx.has_changed().unwrap(), "{name}: no change signalled"),
            }
        }
        assert_eq!(index.watched(), 1, "one channel for both subscribers");
    }

    #[test]
    fn pod_subscriptions_follow_the_workload() {
        let mut index = Index::new(config());
        let mut rx = index.subscribe(sa("198.18.0.1:8080"));
        index.apply_workload(workload("apps", "web-1", &["198.18.0.1"], "web"));
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            pod_snap(wep("198.18.0.1:8080", 1, "apps", "web-1", "web"))
        );
        let mut w = workload("apps", "web-1", &["198.18.0.1"], "web");
        w.meshed = false;
        index.apply_workload(w);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().endpoints[0].identity, None);
        index.delete_workload(&ObjectKey::new("apps", "web-1"));
        assert_eq!(*rx.borrow_and_update(), unknown());
    }

    #[test]
    fn a_split_backend_change_reaches_the_split_service() {
        let mut index = Index::new(config());
        index.reset(mesh());
        let mut rx = index.subscribe(sa("198.19.0.20:80"));
        index.apply_workload(workload("apps", "web-v2-2", &["198.18.0.6"], "web-v2"));
        assert!(rx.has_changed().unwrap());
        let weights: Vec<(String, u32)> = rx
            .borrow_and_update()
            .endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.weight))
            .collect();
        // 90/10 over 2 and 2 endpoints: 9, 9 against 1, 1.
        assert_eq!(
            weights,
            [
                ("198.18.0.1:8080".to_string(), 9),
                ("198.18.0.2:8080".to_string(), 9),
                ("198.18.0.5:9090".to_string(), 1),
                ("198.18.0.6:9090".to_string(), 1),
            ]
        );
    }

    #[test]
    fn channels_are_dropped_with_their_last_subscriber() {
        let mut index = Index::new(config());
        let a = index.subscribe(sa("198.19.0.10:80"));
        let b = index.subscribe(sa("198.19.0.10:80"));
        let c = index.subscribe(sa("198.19.0.11:80"));
        assert_eq!(index.watched(), 2);
        drop(a);
        index.forget_unwatched();
        assert_eq!(index.watched(), 2);
        drop(b);
        drop(c);
        index.forget_unwatched();
        assert_eq!(index.watched(), 0);
        // A later change does not resurrect them, and a new subscriber starts fresh.
        index.apply_service(service("apps", "web", &["198.19.0.10"], 80, 8080));
        assert_eq!(index.watched(), 0);
        let rx = index.subscribe(sa("198.19.0.10:80"));
        assert_eq!(*rx.borrow(), svc_snap("web.apps", vec![]));
    }

    #[test]
    fn clashes_resolve_to_the_first_by_key() {
        let mut index = Index::new(config());
        index.reset(State {
            workloads: vec![
                workload("b", "x", &["198.18.0.1"], "bx"),
                workload("a", "y", &["198.18.0.1"], "ay"),
            ],
            services: vec![
                service("b", "s", &["198.19.0.1"], 80, 80),
                service("a", "s", &["198.19.0.1"], 80, 81),
            ],
        });
        assert_eq!(
            index.lookup(sa("198.18.0.1:1")).endpoints[0].labels["pod"],
            "y"
        );
        assert_eq!(
            index.lookup(sa("198.19.0.1:80")).service.as_deref(),
            Some("s.a")
        );
    }
}
