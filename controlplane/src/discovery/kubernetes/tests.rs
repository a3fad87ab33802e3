//! The Kubernetes backend's tests, in three tiers:
//!
//! 1. [`Cluster`] over reflector stores fed by hand: no server at all.
//! 2. The real kube-rs watchers and reflectors ([`run`]) against the in-project
//!    [`FakeApi`] over HTTP: a scenario of creates, patches and deletes, then broken
//!    watches (`410 Gone` → relist; dropped connections → resume).
//! 3. The same scenario against a real API server, `#[ignore]`d:
//!    `KUBECONFIG=~/.kube/config cargo test -p weft-controlplane -- --ignored real_api_server`
//!    (see docs/discovery.md for what it needs and leaves behind).

use super::fake_api::{FakeApi, Resource};
use super::*;
use crate::discovery::index::tests::config;
use crate::shutdown::Shutdown;
// Writes go through k8s-openapi's complete (serializable) types; the backend reads its own.
use k8s_openapi::api::core::v1 as full;
use k8s_openapi::api::discovery::v1 as full_discovery;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::Event;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use weft_api::destination::{Kind, ProtocolHint, RetryOn, Snapshot};

fn obj<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).unwrap()
}

fn pod_json(ns: &str, name: &str, ip: Option<&str>) -> serde_json::Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "web",
            // Nothing schedules it on a real cluster either: its status is the test's.
            "schedulerName": "weft-test-no-such-scheduler",
            "containers": [
                {"name": "app", "image": "registry.invalid/weft-test:0", "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "weft-proxy", "image": "registry.invalid/weft-proxy:0"}
            ]
        }
    });
    if let Some(ip) = ip {
        p["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]});
    }
    p
}

fn identity(ns: &str) -> Option<String> {
    Some(format!(
        "web.{ns}.serviceaccount.identity.weft.cluster.local"
    ))
}

// === tier 1: the stores, by hand ===

#[test]
fn cluster_turns_stores_into_index_objects() {
    let (namespaces, mut ns_w) = reflector::store::<Namespace>();
    let (pods, mut pod_w) = reflector::store::<Pod>();
    let (services, mut svc_w) = reflector::store::<KubeService>();
    let (slices, mut slice_w) = reflector::store::<EndpointSlice>();
    let cluster = Cluster {
        pods,
        services,
        slices,
        namespaces,
        routes: None,
    };
    ns_w.apply_watcher_event(&Event::Apply(obj(json!({
        "metadata": {"name": "apps", "annotations": {"config.weft.dev/opaque-ports": "5432"}}
    }))));
    pod_w.apply_watcher_event(&Event::Apply(obj(pod_json(
        "apps",
        "web-1",
        Some("198.18.0.1"),
    ))));
    svc_w.apply_watcher_event(&Event::Apply(obj(json!({
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"clusterIP": "198.19.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))));
    let slice = |addresses: &[&str]| -> EndpointSlice {
        obj(json!({
            "metadata": {"name": "web-a", "namespace": "apps", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": addresses.iter().map(|a| json!({
                "addresses": [a], "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "apps"}
            })).collect::<Vec<_>>()
        }))
    };
    slice_w.apply_watcher_event(&Event::Apply(slice(&["198.18.0.1"])));

    let mut index = Index::new(config());
    index.reset(cluster.state());
    let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
    let mut rx = index.subscribe(vip);
    let snap = rx.borrow_and_update().clone();
    assert_eq!(snap.kind, Kind::Service);
    assert_eq!(snap.service.as_deref(), Some("web.apps"));
    assert_eq!(snap.endpoints.len(), 1);
    assert_eq!(snap.endpoints[0].identity, identity("apps"));
    let pod = index.lookup("198.18.0.1:5432".parse().unwrap());
    assert_eq!(pod.endpoints[0].protocol_hint, Some(ProtocolHint::Opaque));

    // A slice event updates its service; an unrelated pod event changes nothing.
    slice_w.apply_watcher_event(&Event::Apply(slice(&["198.18.0.1", "198.18.0.2"])));
    cluster.update(&Changed::Service(ObjectKey::new("apps", "web")), &mut index);
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().endpoints.len(), 2);
    pod_w.apply_watcher_event(&Event::Apply(obj(pod_json(
        "apps",
        "db-0",
        Some("198.18.0.9"),
    ))));
    cluster.update(&Changed::Pod(ObjectKey::new("apps", "db-0")), &mut index);
    assert!(!rx.has_changed().unwrap());

    // The namespace loses its annotation: its pods lose their opaque port.
    ns_w.apply_watcher_event(&Event::Apply(obj(json!({"metadata": {"name": "apps"}}))));
    cluster.update(&Changed::Namespace("apps".into()), &mut index);
    let pod = index.lookup("198.18.0.1:5432".parse().unwrap());
    assert_eq!(pod.endpoints[0].protocol_hint, None);

    // Deleting the pod: its address is unknown; the service endpoint loses its identity.
    let gone: Pod = obj(pod_json("apps", "web-1", Some("198.18.0.1")));
    pod_w.apply_watcher_event(&Event::Delete(gone));
    cluster.update(&Changed::Pod(ObjectKey::new("apps", "web-1")), &mut index);
    assert_eq!(
        index.lookup("198.18.0.1:8080".parse().unwrap()).kind,
        Kind::Unknown
    );
    assert_eq!(rx.borrow_and_update().endpoints[0].identity, None);
}

#[test]
fn steps() {
    let pod: Pod = obj(pod_json("apps", "web-1", None));
    let key = |p: &Pod| convert::key(&p.metadata).ok().map(Changed::Pod);
    let changed = Step::Changed(Changed::Pod(ObjectKey::new("apps", "web-1")));
    type Item = Option<Result<Event<Pod>, watcher::Error>>;
    let cases: Vec<(Item, Step)> = vec![
        (None, Step::Ended(Watched::Pods)),
        (Some(Ok(Event::Init)), Step::Nothing),
        (Some(Ok(Event::InitApply(pod.clone()))), Step::Nothing),
        (Some(Ok(Event::InitDone)), Step::Synced(Watched::Pods)),
        (Some(Ok(Event::Apply(pod.clone()))), changed),
        (
            Some(Ok(Event::Delete(pod))),
            Step::Changed(Changed::Pod(ObjectKey::new("apps", "web-1"))),
        ),
        (Some(Err(watcher::Error::NoResourceVersion)), Step::Nothing),
    ];
    for (item, want) in cases {
        let name = format!("{item:?}");
        assert_eq!(step(Watched::Pods, item, key), want, "{name}");
    }
}

// === tiers 2 and 3: the real watchers against an API server ===

struct Running {
    index: SharedIndex,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

async fn start(client: Client) -> Running {
    let index = SharedIndex::new(Index::new(config()));
    let (tx, mut ready) = watch::channel(false);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(client, index.clone(), tx, shutdown.signal()));
    tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|r| *r))
        .await
        .expect("the backend syncs within 20s")
        .unwrap();
    Running {
        index,
        shutdown,
        task,
    }
}

/// Waits (10 s at most) until `addr`'s snapshot satisfies `f`.
async fn until(
    index: &SharedIndex,
    addr: SocketAddr,
    what: &str,
    f: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let mut rx = index.lock().subscribe(addr);
    let got = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| f(s)))
        .await
        .ok()
        .and_then(|r| r.ok().map(|s| s.clone()));
    match got {
        Some(s) => s,
        None => panic!("{what}: {addr} is still {:?}", *rx.borrow()),
    }
}

fn addrs(s: &Snapshot) -> Vec<String> {
    s.endpoints.iter().map(|e| e.addr.to_string()).collect()
}

/// Creates a pod and gives it an address through its status, as a kubelet would.
async fn add_pod(pods: &Api<full::Pod>, ns: &str, name: &str, ip: &str) {
    pods.create(
        &PostParams::default(),
        &obj::<full::Pod>(pod_json(ns, name, None)),
    )
    .await
    .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("patch pod {name} status: {e}"));
}

fn slice_json(ns: &str, endpoints: &[(&str, &str, bool)]) -> serde_json::Value {
    json!({
        "metadata": {
            "name": "web-a", "namespace": ns,
            "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "weft-test"}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(ip, pod, ready)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}
        })).collect::<Vec<_>>()
    })
}

/// A namespace `ns` with one meshed pod (198.18.0.1) behind a service `web` (port 80 →
/// 8080); returns the service's virtual address.
pub(crate) async fn web_service_with_one_pod(client: &Client, ns: &str) -> SocketAddr {
    let pp = PostParams::default();
    Api::<full::Namespace>::all(client.clone())
        .create(&pp, &obj(json!({"metadata": {"name": ns}})))
        .await
        .expect("create the namespace");
    add_pod(
        &Api::namespaced(client.clone(), ns),
        ns,
        "web-1",
        "198.18.0.1",
    )
    .await;
    let svc: full::Service = obj(json!({
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }));
    let svc = Api::<full::Service>::namespaced(client.clone(), ns)
        .create(&pp, &svc)
        .await
        .expect("create the service");
    Api::<full_discovery::EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &obj(slice_json(ns, &[("198.18.0.1", "web-1", true)])))
        .await
        .expect("create the EndpointSlice");
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("a ClusterIP");
    SocketAddr::new(ip, 80)
}

/// The shared scenario: objects made through the API, the index checked after each
/// step. Leaves the namespace `ns` behind; the caller deletes it.
async fn scenario(client: &Client, index: &SharedIndex, ns: &str) {
    let pp = PostParams::default();
    let namespace: full::Namespace = obj(json!({
        "metadata": {"name": ns, "annotations": {"config.weft.dev/opaque-ports": "5432"}}
    }));
    Api::<full::Namespace>::all(client.clone())
        .create(&pp, &namespace)
        .await
        .expect("create the test namespace");
    let sa: full::ServiceAccount = obj(json!({"metadata": {"name": "web", "namespace": ns}}));
    Api::<full::ServiceAccount>::namespaced(client.clone(), ns)
        .create(&pp, &sa)
        .await
        .expect("create the service account");
    let pods: Api<full::Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<full::Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<full_discovery::EndpointSlice> = Api::namespaced(client.clone(), ns);

    add_pod(&pods, ns, "web-1", "198.18.0.1").await;
    // No selector: nothing but this test writes the service's EndpointSlices.
    let svc: full::Service = obj(json!({
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }));
    let svc = services
        .create(&pp, &svc)
        .await
        .expect("create the service");
    let vip: std::net::IpAddr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("the service got a ClusterIP");
    let vip = SocketAddr::new(vip, 80);
    slices
        .create(&pp, &obj(slice_json(ns, &[("198.18.0.1", "web-1", true)])))
        .await
        .expect("create the EndpointSlice");

    let s = until(index, vip, "the service with one endpoint", |s| {
        s.endpoints.len() == 1
    })
    .await;
    assert_eq!(s.kind, Kind::Service);
    assert_eq!(s.service, Some(format!("web.{ns}")));
    assert_eq!(addrs(&s), ["198.18.0.1:8080"]);
    assert_eq!(s.endpoints[0].identity, identity(ns));
    assert_eq!(s.endpoints[0].labels["pod"], "web-1");
    assert_eq!(s.endpoints[0].labels["namespace"], ns);

    // A second pod joins the slice.
    add_pod(&pods, ns, "web-2", "198.18.0.2").await;
    let two = slice_json(
        ns,
        &[("198.18.0.1", "web-1", true), ("198.18.0.2", "web-2", true)],
    );
    slices
        .patch("web-a", &PatchParams::default(), &Patch::Merge(&two))
        .await
        .expect("patch the slice");
    until(index, vip, "two endpoints", |s| {
        addrs(s) == ["198.18.0.1:8080", "198.18.0.2:8080"]
    })
    .await;

    // The first stops being ready.
    let one = slice_json(
        ns,
        &[
            ("198.18.0.1", "web-1", false),
            ("198.18.0.2", "web-2", true),
        ],
    );
    slices
        .patch("web-a", &PatchParams::default(), &Patch::Merge(&one))
        .await
        .expect("patch the slice");
    until(index, vip, "only the ready endpoint", |s| {
        addrs(s) == ["198.18.0.2:8080"]
    })
    .await;

    // Route annotations on the service.
    let route = json!({"metadata": {"annotations": {"retry.weft.dev/http": "5xx", "timeout.weft.dev/request": "1500ms"}}});
    services
        .patch("web", &PatchParams::default(), &Patch::Merge(&route))
        .await
        .expect("annotate the service");
    until(index, vip, "the route", |s| {
        s.route.retry_on == [RetryOn::ServerError] && s.route.timeout_ms == Some(1500)
    })
    .await;

    // A pod's own address, with the namespace's opaque port (the namespace and pod
    // watches are separate streams: the pod may be indexed first, then updated).
    let pod = until(index, "198.18.0.2:5432".parse().unwrap(), "the pod", |s| {
        s.kind == Kind::Pod && s.endpoints[0].protocol_hint == Some(ProtocolHint::Opaque)
    })
    .await;
    assert_eq!(pod.endpoints[0].protocol_hint, Some(ProtocolHint::Opaque));
    assert_eq!(pod.endpoints[0].identity, identity(ns));

    // The pod goes: its address is unknown, and the service's endpoint loses its identity
    // (the slice still lists it: in a cluster the EndpointSlice controller would drop it).
    pods.delete("web-2", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete the pod");
    until(
        index,
        "198.18.0.2:8080".parse().unwrap(),
        "the pod gone",
        |s| s.kind == Kind::Unknown,
    )
    .await;
    until(index, vip, "the endpoint without identity", |s| {
        s.endpoints.len() == 1 && s.endpoints[0].identity.is_none()
    })
    .await;

    // The service goes.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete the service");
    until(index, vip, "the service gone", |s| s.kind == Kind::Unknown).await;
}

/// Waits (5 s at most) until `n` watches are open on the fake.
async fn watching(fake: &FakeApi, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.open_watches() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} watches open, not {n}",
            fake.open_watches()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn splits_traffic_by_httproute() {
    let fake = FakeApi::start().await.unwrap();
    fake.install_gateway_api();
    let client = fake.client();
    let running = start(client.clone()).await;
    split_scenario(&client, &running.index, "apps").await;
    running.shutdown.trigger();
}

/// A service `web` with one pod, a canary service with another, and an HTTPRoute that
/// splits `web` 90/10, then 0/1, then is deleted. Leaves the namespace `ns` behind.
async fn split_scenario(client: &Client, index: &SharedIndex, ns: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let vip = web_service_with_one_pod(client, ns).await;
    let pp = PostParams::default();
    // The canary: its own pod, service and slice.
    let pods: Api<full::Pod> = Api::namespaced(client.clone(), ns);
    add_pod(&pods, ns, "web-canary-1", "198.18.0.9").await;
    Api::<full::Service>::namespaced(client.clone(), ns)
        .create(&pp, &obj(json!({
            "metadata": {"name": "web-canary", "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        })))
        .await
        .expect("create the canary service");
    let mut canary_slice = slice_json(ns, &[("198.18.0.9", "web-canary-1", true)]);
    canary_slice["metadata"]["name"] = json!("web-canary-a");
    canary_slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("web-canary");
    Api::<full_discovery::EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &obj(canary_slice))
        .await
        .expect("create the canary slice");

    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let route = |stable: u32, canary: u32| -> DynamicObject {
        obj(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web-split", "namespace": ns},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                "rules": [{"backendRefs": [
                    {"name": "web", "port": 80, "weight": stable},
                    {"name": "web-canary", "port": 80, "weight": canary}
                ]}]
            }
        }))
    };
    let weights = |s: &Snapshot| -> Vec<(String, u32)> {
        s.endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.weight))
            .collect()
    };
    routes
        .create(&pp, &route(90, 10))
        .await
        .expect("create the route");
    let s = until(index, vip, "the 90/10 split", |s| s.endpoints.len() == 2).await;
    assert_eq!(
        weights(&s),
        [
            ("198.18.0.1:8080".to_string(), 9),
            ("198.18.0.9:8080".to_string(), 1)
        ]
    );
    assert_eq!(s.endpoints[1].identity, identity(ns));

    routes
        .patch(
            "web-split",
            &PatchParams::default(),
            &Patch::Merge(&route(0, 1)),
        )
        .await
        .expect("patch the route");
    let s = until(index, vip, "all to the canary", |s| {
        s.endpoints.iter().any(|e| e.weight == 0)
    })
    .await;
    assert_eq!(
        weights(&s),
        [
            ("198.18.0.1:8080".to_string(), 0),
            ("198.18.0.9:8080".to_string(), 1)
        ]
    );

    routes
        .delete("web-split", &DeleteParams::default())
        .await
        .expect("delete the route");
    let s = until(index, vip, "no split", |s| s.endpoints.len() == 1).await;
    assert_eq!(weights(&s), [("198.18.0.1:8080".to_string(), 1)]);
}

/// A Job pod with a classic-sidecar proxy: once its app container terminates, the pod's
/// own address says `workload_done`, which tells that proxy to exit.
#[tokio::test]
async fn a_finished_job_pod_is_reported_done() {
    let fake = FakeApi::start().await.unwrap();
    let client = fake.client();
    let running = start(client.clone()).await;
    let pp = PostParams::default();
    Api::<full::Namespace>::all(client.clone())
        .create(&pp, &obj(json!({"metadata": {"name": "jobs"}})))
        .await
        .unwrap();
    let pods: Api<full::Pod> = Api::namespaced(client.clone(), "jobs");
    pods.create(
        &pp,
        &obj(json!({
            "metadata": {"name": "migrate-x7k2p", "namespace": "jobs",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate", "uid": "u1", "controller": true}]},
            "spec": {
                "restartPolicy": "Never",
                "schedulerName": "weft-test-no-such-scheduler",
                "containers": [
                    {"name": "weft-proxy", "image": "registry.invalid/weft-proxy:0"},
                    {"name": "migrate", "image": "registry.invalid/migrate:0"}
                ]
            }
        })),
    )
    .await
    .unwrap();
    let status = |migrate: serde_json::Value| {
        json!({"status": {"phase": "Running", "podIP": "198.18.0.50", "podIPs": [{"ip": "198.18.0.50"}],
        "containerStatuses": [
            {"name": "weft-proxy", "state": {"running": {"startedAt": "2026-12-07T08:00:00Z"}}},
            {"name": "migrate", "state": migrate}
        ]}})
    };
    pods.patch_status(
        "migrate-x7k2p",
        &PatchParams::default(),
        &Patch::Merge(&status(
            json!({"running": {"startedAt": "2026-12-07T08:00:01Z"}}),
        )),
    )
    .await
    .unwrap();
    let own: SocketAddr = "198.18.0.50:4191".parse().unwrap();
    let s = until(&running.index, own, "the job pod", |s| s.kind == Kind::Pod).await;
    assert!(!s.workload_done);
    pods.patch_status(
        "migrate-x7k2p",
        &PatchParams::default(),
        &Patch::Merge(&status(
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        )),
    )
    .await
    .unwrap();
    let s = until(&running.index, own, "the job done", |s| s.workload_done).await;
    assert_eq!(s.kind, Kind::Pod);
    let line = serde_json::to_string(&weft_api::destination::Update::Snapshot(s)).unwrap();
    assert!(line.contains("\"workloadDone\":true"), "{line}");
    running.shutdown.trigger();
}

#[tokio::test]
async fn without_the_gateway_api_there_are_no_route_watches() {
    let fake = FakeApi::start().await.unwrap();
    let client = fake.client();
    let running = start(client.clone()).await;
    let vip = web_service_with_one_pod(&client, "apps").await;
    let s = until(&running.index, vip, "the service", |s| {
        s.endpoints.len() == 1
    })
    .await;
    assert_eq!(s.endpoints[0].weight, 1);
    watching(&fake, 4).await;
    assert_eq!(fake.lists(Resource::HttpRoutes), 1, "the one probe");
    running.shutdown.trigger();
}

#[tokio::test]
async fn follows_the_fake_api_server() {
    let fake = FakeApi::start().await.unwrap();
    let client = fake.client();
    let running = start(client.clone()).await;
    scenario(&client, &running.index, "apps").await;
    assert_eq!(fake.lists(Resource::Pods), 1, "no relist so far");

    // A dropped connection: the watchers resume from the last version, no relist, and
    // what happened meanwhile arrives.
    let pods: Api<full::Pod> = Api::namespaced(client.clone(), "apps");
    watching(&fake, 4).await;
    fake.drop_watches();
    add_pod(&pods, "apps", "web-3", "198.18.0.3").await;
    until(
        &running.index,
        "198.18.0.3:80".parse().unwrap(),
        "a pod added while the watch was down",
        |s| s.kind == Kind::Pod,
    )
    .await;
    assert_eq!(fake.lists(Resource::Pods), 1, "resumed, not relisted");
    watching(&fake, 4).await;

    // 410 Gone: the watchers relist, and a pod deleted meanwhile disappears.
    fake.expire();
    pods.delete("web-3", &DeleteParams::default())
        .await
        .unwrap();
    until(
        &running.index,
        "198.18.0.3:80".parse().unwrap(),
        "a pod deleted across a 410",
        |s| s.kind == Kind::Unknown,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.lists(Resource::Pods) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no relist after 410"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    add_pod(&pods, "apps", "web-4", "198.18.0.4").await;
    until(
        &running.index,
        "198.18.0.4:80".parse().unwrap(),
        "a pod added after the relist",
        |s| s.kind == Kind::Pod,
    )
    .await;

    running.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running.task)
        .await
        .expect("the backend stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn skips_objects_it_cannot_use() {
    let fake = FakeApi::start().await.unwrap();
    let client = fake.client();
    let running = start(client.clone()).await;
    let pp = PostParams::default();
    Api::<full::Namespace>::all(client.clone())
        .create(&pp, &obj(json!({"metadata": {"name": "odd"}})))
        .await
        .unwrap();
    let slices: Api<full_discovery::EndpointSlice> = Api::namespaced(client.clone(), "odd");
    // A slice without its service label, one with an FQDN address type, a service with
    // only UDP ports, and a pod with a garbage IP: all skipped or trimmed, with a log.
    slices
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "orphan"}, "addressType": "IPv4", "endpoints": []})),
        )
        .await
        .unwrap();
    Api::<full::Service>::namespaced(client.clone(), "odd")
        .create(&pp, &obj(json!({"metadata": {"name": "dns"}, "spec": {"clusterIP": "198.19.9.9", "ports": [{"port": 53, "protocol": "UDP"}]}})))
        .await
        .unwrap();
    let pods: Api<full::Pod> = Api::namespaced(client.clone(), "odd");
    pods.create(&pp, &obj::<full::Pod>(pod_json("odd", "bad-ip", None)))
        .await
        .unwrap();
    pods.patch_status(
        "bad-ip",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running", "podIPs": [{"ip": "banana"}, {"ip": "198.18.9.1"}]}})),
    )
    .await
    .unwrap();
    until(
        &running.index,
        "198.18.9.1:80".parse().unwrap(),
        "the usable address",
        |s| s.kind == Kind::Pod,
    )
    .await;
    // The UDP-only service answers nothing on TCP.
    assert_eq!(
        running
            .index
            .lock()
            .lookup("198.19.9.9:53".parse().unwrap())
            .kind,
        Kind::Unknown
    );
    running.shutdown.trigger();
}

/// Runs `scenario` against the API server named by KUBECONFIG in a fresh namespace
/// `<prefix>-<n>`, with the backend running, and deletes the namespace whatever happened.
async fn on_a_real_api_server<F, Fut>(prefix: &str, scenario: F)
where
    F: FnOnce(Client, SharedIndex, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG (or ~/.kube/config)");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ns = format!("{prefix}-{nanos}");
    let running = start(client.clone()).await;
    let outcome = tokio::spawn(scenario(client.clone(), running.index.clone(), ns.clone())).await;
    let _ = Api::<full::Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
    running.shutdown.trigger();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
#[ignore = "needs a real API server: KUBECONFIG=… cargo test -p weft-controlplane -- --ignored real_api_server"]
async fn follows_a_real_api_server() {
    on_a_real_api_server("weft-test", |client, index, ns| async move {
        scenario(&client, &index, &ns).await
    })
    .await;
}

/// The HTTPRoute split scenario against a real API server with the Gateway API CRDs
/// (standard channel, v1) installed.
#[tokio::test]
#[ignore = "needs a real API server with the Gateway API CRDs: KUBECONFIG=… cargo test -p weft-controlplane -- --ignored real_httproute"]
async fn splits_by_a_real_httproute() {
    on_a_real_api_server("weft-test-split", |client, index, ns| async move {
        split_scenario(&client, &index, &ns).await
    })
    .await;
}
