//! The destination API: a proxy asks "what is this address?" and gets a stream of answers.
//!
//! Transport: HTTP/2 over TLS to the controller's proxy API, `GET`
//! [`DESTINATION_PATH`]`?addr=IP:PORT` (a Service's virtual address or a pod's address).
//! The response body is newline-delimited JSON, one [`Update`] per line: first a
//! [`Update::Snapshot`] with the complete state, then [`Update::Add`] /
//! [`Update::Remove`] / [`Update::Route`] as things change, and a [`Update::Snapshot`]
//! again whenever the controller cannot express a change as a diff. The stream stays open
//! until either side closes it; a proxy that loses it reconnects and starts from a new
//! snapshot, and keeps using what it knew meanwhile.
//!
//! Traffic splits are flattened by the controller: endpoints of every backend arrive in
//! one set with weights that already carry the split's proportions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Where proxies subscribe.
pub const DESTINATION_PATH: &str = "/weft.destination.v1/get";

/// What a destination address is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A Service's virtual address: balance over its endpoints.
    Service,
    /// A meshed (or at least known) pod's own address.
    Pod,
    /// Nothing the controller knows: pass through.
    Unknown,
}

/// The protocol an endpoint's port speaks, when declared (opaque ports skip detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProtocolHint {
    Opaque,
    Http1,
    Http2,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Relative weight; 0 receives no traffic. With a traffic split, the weights of each
    /// backend's endpoints sum to that backend's share.
    pub weight: u32,
    /// The traffic-split backend (a Service name) this endpoint belongs to, if the
    /// destination is split; balancing picks a backend by weight first, then an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The endpoint's proxy identity when it is meshed: reach it over mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The port its proxy accepts meshed connections on (4143).
    #[serde(default = "default_inbound_port")]
    pub inbound_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_hint: Option<ProtocolHint>,
    /// Metric labels: `namespace`, `pod`, `serviceaccount`, `<owner kind>` …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_inbound_port() -> u16 {
    4143
}

/// Which failures a route retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryOn {
    /// The connection to the endpoint could not be made.
    Connect,
    /// The endpoint answered 5xx.
    #[serde(rename = "5xx")]
    ServerError,
}

/// Per-route behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    /// Retry idempotent requests on these failures (empty: no retries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// A request (to its response headers) taking longer fails with 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The complete state of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub kind: Kind,
    /// `name.namespace` of the Service, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub route: RouteConfig,
    /// For a pod: every application container has terminated and will not restart (a
    /// finished Job pod whose proxy is a classic sidecar); that pod's own proxy exits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workload_done: bool,
}

/// One line of a destination stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Update {
    Snapshot(Snapshot),
    /// Endpoints added, or changed (same address, new weight, identity or labels).
    Add {
        endpoints: Vec<Endpoint>,
    },
    Remove {
        addrs: Vec<SocketAddr>,
    },
    Route {
        route: RouteConfig,
    },
}

/// The diff that turns `old` into `new`, or a fresh snapshot when the kind, the service or
/// `workload_done` changed. Empty when nothing changed.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Update> {
    if old.kind != new.kind || old.service != new.service || old.workload_done != new.workload_done
    {
        return vec![Update::Snapshot(new.clone())];
    }
    let mut out = Vec::new();
    let before: BTreeMap<SocketAddr, &Endpoint> =
        old.endpoints.iter().map(|e| (e.addr, e)).collect();
    let after: BTreeMap<SocketAddr, &Endpoint> =
        new.endpoints.iter().map(|e| (e.addr, e)).collect();
    let removed: Vec<SocketAddr> = before
        .keys()
        .filter(|a| !after.contains_key(a))
        .copied()
        .collect();
    let added: Vec<Endpoint> = after
        .iter()
        .filter(|(a, e)| before.get(a) != Some(e))
        .map(|(_, e)| (*e).clone())
        .collect();
    if !removed.is_empty() {
        out.push(Update::Remove { addrs: removed });
    }
    if !added.is_empty() {
        out.push(Update::Add { endpoints: added });
    }
    if old.route != new.route {
        out.push(Update::Route {
            route: new.route.clone(),
        });
    }
    out
}

/// Applies one update to the state a proxy holds.
pub fn apply(state: &mut Snapshot, update: Update) {
    match update {
        Update::Snapshot(s) => *state = s,
        Update::Add { endpoints } => {
            for e in endpoints {
                match state.endpoints.iter_mut().find(|x| x.addr == e.addr) {
                    Some(x) => *x = e,
                    None => state.endpoints.push(e),
                }
            }
        }
        Update::Remove { addrs } => state.endpoints.retain(|e| !addrs.contains(&e.addr)),
        Update::Route { route } => state.route = route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, weight: u32) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            weight,
            backend: None,
            identity: Some("web.apps.serviceaccount.identity.weft.cluster.local".into()),
            inbound_port: 4143,
            protocol_hint: None,
            labels: BTreeMap::from([("pod".into(), "web-1".into())]),
        }
    }

    fn svc(endpoints: Vec<Endpoint>) -> Snapshot {
        Snapshot {
            kind: Kind::Service,
            service: Some("web.apps".into()),
            endpoints,
            route: RouteConfig::default(),
            workload_done: false,
        }
    }

    #[test]
    fn wire_format() {
        let u = Update::Remove {
            addrs: vec!["10.42.0.5:8080".parse().unwrap()],
        };
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"type":"remove","addrs":["10.42.0.5:8080"]}"#
        );
        let s = Update::Snapshot(svc(vec![ep("10.42.0.5:8080", 1)]));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"type":"snapshot","kind":"service","service":"web.apps","endpoints":[{"addr":"10.42.0.5:8080","weight":1,"identity":"web.apps.serviceaccount.identity.weft.cluster.local","inboundPort":4143,"labels":{"pod":"web-1"}}],"route":{}}"#
        );
        assert_eq!(serde_json::from_str::<Update>(&json).unwrap(), s);
        let r = Update::Route {
            route: RouteConfig {
                retry_on: vec![RetryOn::ServerError, RetryOn::Connect],
                timeout_ms: Some(2000),
            },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"route","route":{"retryOn":["5xx","connect"],"timeoutMs":2000}}"#
        );
    }

    #[test]
    fn diff_then_apply_reaches_the_new_state() {
        let a = svc(vec![ep("10.42.0.5:8080", 1), ep("10.42.0.6:8080", 1)]);
        let mut b = svc(vec![ep("10.42.0.6:8080", 3), ep("10.42.0.7:8080", 1)]);
        b.route.timeout_ms = Some(500);
        let updates = diff(&a, &b);
        assert_eq!(
            updates,
            vec![
                Update::Remove {
                    addrs: vec!["10.42.0.5:8080".parse().unwrap()]
                },
                Update::Add {
                    endpoints: vec![ep("10.42.0.6:8080", 3), ep("10.42.0.7:8080", 1)]
                },
                Update::Route {
                    route: b.route.clone()
                },
            ]
        );
        let mut state = a.clone();
        for u in updates {
            apply(&mut state, u);
        }
        state.endpoints.sort_by_key(|e| e.addr);
        assert_eq!(state, b);
        assert!(diff(&b, &b).is_empty());
        let pod = Snapshot {
            kind: Kind::Pod,
            ..b.clone()
        };
        assert_eq!(diff(&b, &pod), vec![Update::Snapshot(pod.clone())]);
        // A finished workload is a fresh snapshot too (older proxies ignore the field).
        let done = Snapshot {
            workload_done: true,
            ..pod.clone()
        };
        assert_eq!(diff(&pod, &done), vec![Update::Snapshot(done.clone())]);
        let line = serde_json::to_string(&Update::Snapshot(pod.clone())).unwrap();
        assert!(!line.contains("workloadDone"), "false is left out: {line}");
        let line = serde_json::to_string(&Update::Snapshot(done.clone())).unwrap();
        assert!(line.contains("\"workloadDone\":true"), "{line}");
        let back: Update = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Update::Snapshot(done));
    }
}
