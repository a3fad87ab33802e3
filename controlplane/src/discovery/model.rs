//! The discovery core's objects: workloads (pods) and services, as every backend describes
//! them to the [`Index`](super::index::Index).
//!
//! Plain data with no I/O and no Kubernetes or YAML types: the file backend
//! ([`super::file`]) builds these from its YAML file, the Kubernetes backend from Pods,
//! Services and EndpointSlices. The index computes what proxies see from them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use weft_api::destination::{ProtocolHint, RouteConfig};

/// The port a meshed workload's proxy accepts mTLS connections on.
pub const DEFAULT_INBOUND_PORT: u16 = 4143;

/// `namespace/name` of a workload or service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What runs a workload (a Deployment, a StatefulSet, …): becomes a metric label
/// `<kind lowercased>: <name>` on its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// A pod, or a process on a plain Linux host: something with addresses that may run a
/// Weft proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub key: ObjectKey,
    pub service_account: String,
    pub addresses: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<Owner>,
    /// It runs a Weft proxy: reach it over mTLS with its identity.
    pub meshed: bool,
    /// Where its proxy accepts meshed connections.
    pub inbound_port: u16,
    /// Ports that speak a server-first or otherwise opaque protocol.
    pub opaque_ports: BTreeSet<u16>,
    /// Every application container has terminated and will not be restarted (Kubernetes
    /// only): a finished Job pod, whose classic-sidecar proxy should now exit.
    pub finished: bool,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port on the service's virtual addresses.
    pub port: u16,
    /// The port selected workloads listen on.
    pub target_port: u16,
    /// The protocol, when declared; otherwise the workload's opaque ports decide.
    pub protocol: Option<ProtocolHint>,
}

/// One explicitly listed endpoint of a service port (the file's `endpoints:`, or an
/// EndpointSlice entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Which [`ServicePort::port`] it serves.
    pub service_port: u16,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Where its identity and labels come from.
    pub target: EndpointTarget,
}

/// Who is behind an explicit endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointTarget {
    /// A known workload: its identity (if meshed), inbound port and labels.
    Workload(ObjectKey),
    /// A meshed proxy running as this service account in the service's namespace.
    ServiceAccount(String),
    /// Not meshed: plain TCP, no labels beyond the service's.
    None,
}

/// How a service finds its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Every workload in the service's namespace carrying all these labels, at each
    /// port's `target_port`. Never empty (an empty selector selects nothing).
    Selector(BTreeMap<String, String>),
    /// Exactly these.
    Explicit(Vec<EndpointEntry>),
}

/// One backend of a traffic split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBackend {
    /// A service in the same namespace (it may be the split service itself).
    pub service: String,
    pub weight: u32,
}

/// A service: virtual addresses and ports in front of a set of endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    /// Virtual addresses (ClusterIPs). Empty for a service only used as a split backend.
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub members: Members,
    pub route: RouteConfig,
    /// When non-empty, traffic to this service goes to these backends by weight, and its
    /// own members serve only if it lists itself.
    pub split: Vec<SplitBackend>,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// Everything a backend knows at once (the file backend's whole file, a relist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
}
