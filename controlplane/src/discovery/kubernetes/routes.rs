//! Gateway API `HTTPRoute`s → traffic splits, the GAMMA way (as Linkerd reads them): a
//! route whose `parentRefs` names a Service (`group: ""` or `core`, `kind: Service`)
//! splits that Service's traffic over the route's `backendRefs` by weight.
//!
//! ```yaml
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: {name: web-canary, namespace: apps}
//! spec:
//!   parentRefs: [{group: "", kind: Service, name: web, port: 80}]
//!   rules:
//!     - backendRefs:
//!         - {name: web-stable, port: 80, weight: 90}
//!         - {name: web-canary, port: 80, weight: 10}
//! ```
//!
//! Weft splits whole services (every request and every connection to the parent, on each
//! of its ports), so of the route's rules only the first that matches every request is
//! used: one without `matches`, or whose only match is the path prefix `/`. Narrower rules
//! are reported and ignored. Also reported and skipped: backends in another namespace
//! (they would need a ReferenceGrant), backends that are not Services, and weights outside
//! 0–1,000,000. A backend serves the parent's port number (as in the file backend). When
//! several routes name the same Service, the oldest wins (then the first by name), as the
//! Gateway API specifies for conflicts; the others are reported. Everything here is a pure
//! function of the objects, table-tested below.

use super::objects::{HttpRoute, HttpRouteMatch, RouteRef};
use crate::discovery::model::{ObjectKey, SplitBackend};

/// The largest weight the Gateway API allows.
pub const MAX_WEIGHT: i32 = 1_000_000;

/// Whether a `parentRefs` or `backendRefs` entry names a Service in `namespace`.
fn is_service(r: &RouteRef, namespace: &str) -> bool {
    matches!(r.group.as_deref(), None | Some("") | Some("core"))
        && matches!(r.kind.as_deref(), None | Some("Service"))
        && r.namespace.as_deref().is_none_or(|ns| ns == namespace)
}

/// Whether a route's `parentRefs` include a Service (kind given explicitly, as GAMMA
/// requires: a parentRef without a kind means a Gateway).
fn is_service_parent(r: &RouteRef, namespace: &str) -> bool {
    r.kind.as_deref() == Some("Service") && is_service(r, namespace)
}

/// The Services a route splits (same namespace only: a route is attached to parents in
/// its own namespace).
pub fn parents(route: &HttpRoute) -> Vec<ObjectKey> {
    let Some(ns) = route.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let mut out: Vec<ObjectKey> = Vec::new();
    for r in route.spec.parent_refs.iter().flatten() {
        if is_service_parent(r, ns) && !r.name.is_empty() {
            let key = ObjectKey {
                namespace: ns.to_string(),
                name: r.name.clone(),
            };
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

fn route_name(route: &HttpRoute) -> &str {
    route.metadata.name.as_deref().unwrap_or("")
}

/// Whether a rule's matches select every request.
fn matches_everything(matches: Option<&Vec<HttpRouteMatch>>) -> bool {
    let Some(matches) = matches else {
        return true;
    };
    matches.is_empty()
        || matches.iter().any(|m| {
            let path_all = match &m.path {
                None => true,
                Some(p) => {
                    matches!(p.type_.as_deref(), None | Some("PathPrefix"))
                        && matches!(p.value.as_deref(), None | Some("/"))
                }
            };
            path_all
                && m.headers.as_ref().is_none_or(Vec::is_empty)
                && m.query_params.as_ref().is_none_or(Vec::is_empty)
                && m.method.is_none()
        })
}

/// The split for `service` from the routes in its namespace (empty: no split), and what
/// was ignored on the way.
pub fn split_for(service: &ObjectKey, routes: &[&HttpRoute]) -> (Vec<SplitBackend>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut attached: Vec<&HttpRoute> = routes
        .iter()
        .copied()
        .filter(|r| parents(r).contains(service))
        .collect();
    attached.sort_by(|a, b| {
        let t = |r: &HttpRoute| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| route_name(a).cmp(route_name(b)))
    });
    let Some(route) = attached.first() else {
        return (Vec::new(), warnings);
    };
    let name = route_name(route);
    for other in &attached[1..] {
        warnings.push(format!(
            "HTTPRoute {} also names this service; HTTPRoute {name} (older) is used",
            route_name(other)
        ));
    }
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    let mut chosen = None;
    for (i, rule) in rules.iter().enumerate() {
        if matches_everything(rule.matches.as_ref()) {
            if chosen.is_none() {
                chosen = Some((i, rule));
            } else {
                warnings.push(format!("HTTPRoute {name}: rules[{i}] ignored: an earlier rule already matches every request"));
            }
        } else {
            warnings.push(format!("HTTPRoute {name}: rules[{i}] ignored: it matches only some requests, and Weft splits whole services"));
        }
    }
    let Some((i, rule)) = chosen else {
        warnings.push(format!(
            "HTTPRoute {name}: no rule matches every request; no split"
        ));
        return (Vec::new(), warnings);
    };
    let mut backends: Vec<SplitBackend> = Vec::new();
    for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
        let at = format!("HTTPRoute {name}: rules[{i}].backendRefs[{j}]");
        if !is_service(b, &service.namespace) {
            warnings.push(format!(
                "{at} skipped: only Services in namespace {} can be backends",
                service.namespace
            ));
            continue;
        }
        if b.name.is_empty() {
            warnings.push(format!("{at} skipped: no name"));
            continue;
        }
        let weight = b.weight.unwrap_or(1);
        let Some(weight) = u32::try_from(weight)
            .ok()
            .filter(|w| *w <= MAX_WEIGHT as u32)
        else {
            warnings.push(format!(
                "{at} skipped: weight {weight} is outside 0-{MAX_WEIGHT}"
            ));
            continue;
        };
        match backends.iter_mut().find(|x| x.service == b.name) {
            Some(x) => x.weight = x.weight.saturating_add(weight),
            None => backends.push(SplitBackend {
                service: b.name.clone(),
                weight,
            }),
        }
    }
    if backends.is_empty() {
        warnings.push(format!(
            "HTTPRoute {name}: rules[{i}] has no usable backendRefs; no split"
        ));
    }
    (backends, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(name: &str, created: &str, spec: serde_json::Value) -> HttpRoute {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn web() -> ObjectKey {
        ObjectKey {
            namespace: "apps".into(),
            name: "web".into(),
        }
    }

    fn split(pairs: &[(&str, u32)]) -> Vec<SplitBackend> {
        pairs
            .iter()
            .map(|(s, w)| SplitBackend {
                service: s.to_string(),
                weight: *w,
            })
            .collect()
    }

    const PARENT: &str = r#"[{"group": "", "kind": "Service", "name": "web", "port": 80}]"#;
    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-02T00:00:00Z";

    fn canary(rules: serde_json::Value) -> serde_json::Value {
        json!({"parentRefs": serde_json::from_str::<serde_json::Value>(PARENT).unwrap(), "rules": rules})
    }

    #[test]
    fn split_table() {
        let stable_canary = json!([{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": 90},
            {"name": "web-canary", "port": 80, "weight": 10}
        ]}]);
        type Case = (
            &'static str,
            Vec<HttpRoute>,
            Vec<SplitBackend>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a 90/10 split",
                vec![route("r", T0, canary(stable_canary.clone()))],
                split(&[("web-stable", 90), ("web-canary", 10)]),
                vec![],
            ),
            (
                "no routes, no split",
                vec![],
                vec![],
                vec![],
            ),
            (
                "a route for another service",
                vec![route("r", T0, json!({"parentRefs": [{"kind": "Service", "name": "db"}], "rules": stable_canary}))],
                vec![],
                vec![],
            ),
            (
                "a parentRef without kind is a Gateway, not this service",
                vec![route("r", T0, json!({"parentRefs": [{"name": "web"}], "rules": stable_canary}))],
                vec![],
                vec![],
            ),
            (
                "a parent in another namespace is not attached",
                vec![route("r", T0, json!({"parentRefs": [{"kind": "Service", "name": "web", "namespace": "other"}], "rules": stable_canary}))],
                vec![],
                vec![],
            ),
            (
                "weight defaults to 1, the parent may list itself, repeats add up",
                vec![route("r", T0, canary(json!([{"backendRefs": [
                    {"name": "web"}, {"name": "web-canary", "weight": 2}, {"name": "web", "weight": 3}
                ]}])))],
                split(&[("web", 4), ("web-canary", 2)]),
                vec![],
            ),
            (
                "a path prefix / matches everything; narrower rules are ignored",
                vec![route("r", T0, canary(json!([
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "api"}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"name": "web-stable"}]},
                    {"backendRefs": [{"name": "web-other"}]}
                ])))],
                split(&[("web-stable", 1)]),
                vec![
                    "HTTPRoute r: rules[0] ignored: it matches only some requests, and Weft splits whole services",
                    "HTTPRoute r: rules[2] ignored: an earlier rule already matches every request",
                ],
            ),
            (
                "header matches are narrower",
                vec![route("r", T0, canary(json!([
                    {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}], "backendRefs": [{"name": "web-canary"}]}
                ])))],
                vec![],
                vec![
                    "HTTPRoute r: rules[0] ignored: it matches only some requests, and Weft splits whole services",
                    "HTTPRoute r: no rule matches every request; no split",
                ],
            ),
            (
                "bad backends are skipped, the rest split",
                vec![route("r", T0, canary(json!([{"backendRefs": [
                    {"name": "far", "namespace": "other"},
                    {"group": "example.com", "kind": "Bucket", "name": "b"},
                    {"name": "heavy", "weight": 1000001},
                    {"name": "negative", "weight": -1},
                    {"name": ""},
                    {"name": "web-stable", "weight": 0},
                    {"name": "web-canary", "weight": 5, "namespace": "apps", "kind": "Service", "group": "core"}
                ]}])))],
                split(&[("web-stable", 0), ("web-canary", 5)]),
                vec![
                    "HTTPRoute r: rules[0].backendRefs[0] skipped: only Services in namespace apps can be backends",
                    "HTTPRoute r: rules[0].backendRefs[1] skipped: only Services in namespace apps can be backends",
                    "HTTPRoute r: rules[0].backendRefs[2] skipped: weight 1000001 is outside 0-1000000",
                    "HTTPRoute r: rules[0].backendRefs[3] skipped: weight -1 is outside 0-1000000",
                    "HTTPRoute r: rules[0].backendRefs[4] skipped: no name",
                ],
            ),
            (
                "no usable backends, no split",
                vec![route("r", T0, canary(json!([{"backendRefs": []}])))],
                vec![],
                vec!["HTTPRoute r: rules[0] has no usable backendRefs; no split"],
            ),
            (
                "two routes: the older wins",
                vec![
                    route("newer", T1, canary(json!([{"backendRefs": [{"name": "b"}]}]))),
                    route("older", T0, canary(json!([{"backendRefs": [{"name": "a"}]}]))),
                ],
                split(&[("a", 1)]),
                vec!["HTTPRoute newer also names this service; HTTPRoute older (older) is used"],
            ),
            (
                "two routes of the same age: the first by name wins",
                vec![
                    route("b", T0, canary(json!([{"backendRefs": [{"name": "b"}]}]))),
                    route("a", T0, canary(json!([{"backendRefs": [{"name": "a"}]}]))),
                ],
                split(&[("a", 1)]),
                vec!["HTTPRoute b also names this service; HTTPRoute a (older) is used"],
            ),
        ];
        for (what, routes, want, want_warnings) in cases {
            let refs: Vec<&HttpRoute> = routes.iter().collect();
            let (got, warnings) = split_for(&web(), &refs);
            assert_eq!(got, want, "{what}");
            assert_eq!(warnings, want_warnings, "{what}");
        }
    }

    #[test]
    fn parents_are_same_namespace_services() {
        let r = route(
            "r",
            T0,
            json!({"parentRefs": [
                {"kind": "Service", "name": "web"},
                {"kind": "Service", "name": "web", "port": 8080},
                {"group": "core", "kind": "Service", "name": "db"},
                {"kind": "Service", "name": "x", "namespace": "other"},
                {"name": "gateway"},
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
            ]}),
        );
        let names: Vec<String> = parents(&r).into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["web", "db"]);
    }
}
