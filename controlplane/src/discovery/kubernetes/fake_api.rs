//! A small fake Kubernetes API server, for tests: plain HTTP/1.1 on 127.0.0.1, so the
//! real kube-rs client and watcher code runs against it unchanged.
//!
//! What it does:
//!
//! - Namespaces, Pods, Services, ServiceAccounts and Secrets (`/api/v1`) and
//!   EndpointSlices (`/apis/discovery.k8s.io/v1`), cluster-wide and per namespace.
//! - Events (`/api/v1`, namespaced), stored like any object.
//! - MutatingWebhookConfigurations (`/apis/admissionregistration.k8s.io/v1`, cluster-wide).
//! - Deployments (`/apis/apps/v1`), stored like any object: nothing rolls them out, so a
//!   test writes their `status` (and their pods) itself.
//! - `GET /version`: `1.31` unless [`FakeApi::set_version`] says otherwise.
//! - HTTPRoutes (`/apis/gateway.networking.k8s.io/v1`), only after
//!   [`FakeApi::install_gateway_api`] (before, `404` as on a cluster without the CRDs).
//! - `TokenReview` (`POST /apis/authentication.k8s.io/v1/tokenreviews`) against tokens the
//!   test registers with [`FakeApi::add_token`], answering like the real server: the
//!   user and the audiences it shares with the review's `spec.audiences`, or
//!   `authenticated` unset with an `error` for unknown, expired or other-audience tokens.
//! - `SelfSubjectAccessReview` (`POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`):
//!   `allowed: true` for everything, except the resources a test denies with
//!   [`FakeApi::deny_access`] (`allowed: false` with a reason). Only the resource is
//!   looked at, not the verb, group, namespace or name.
//! - Objects kept in memory as JSON, each write bumping one global `resourceVersion`
//!   (set on the object, with a `uid` and a `creationTimestamp` on create).
//! - `GET` of one object or a list (`metadata.resourceVersion` set to the current one).
//! - Watches (`?watch=true&resourceVersion=N`): every recorded event after `N`, then live
//!   events, as newline-delimited `{"type": ADDED|MODIFIED|DELETED, "object": …}`;
//!   `BOOKMARK` events every [`BOOKMARK_INTERVAL`] when `allowWatchBookmarks=true`; the
//!   stream ends after `timeoutSeconds`. A watch from a version older than the last
//!   [`FakeApi::expire`] gets a `410 Expired` ERROR event, which makes a client relist.
//! - `POST` (create, with `generateName` honoured; `409` if it exists, `404` if its
//!   namespace does not; Services get a ClusterIP from 198.19.0.0/16 unless they bring
//!   one or are headless), `PATCH` with a
//!   JSON merge patch (also accepted for strategic merge patches), on the object or its
//!   `/status`, and `DELETE` (a namespace takes its objects with it, at once).
//! - Errors as `Status` objects with the usual `reason` and `code`.
//!
//! What it does not do (so tests must not rely on it): authentication and RBAC (access
//! reviews answer from the deny list above, and nothing is ever refused with `403`),
//! admission and validation (any JSON is stored as given), label and field selectors
//! (ignored: everything is returned), pagination (`limit` is ignored and there is never a
//! `continue` token), `resourceVersionMatch` and consistent reads, server-side apply,
//! JSON patch, `PUT`, strategic-merge semantics (lists are replaced, not merged),
//! graceful deletion, finalizers and owner-reference garbage collection, controllers
//! (nothing creates EndpointSlices, schedules Pods or rolls out Deployments: tests write
//! them), RBAC objects (ClusterRoles, Roles and their bindings: `404`), streaming lists
//! (`sendInitialEvents`), HTTP/2, TLS, and any other resource or API group (`404`).

use crate::shutdown::{Shutdown, ShutdownSignal};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How often open watches that asked for bookmarks get one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_millis(200);

type Body = BoxBody<Bytes, Infallible>;

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeApiError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
}

/// The kinds of object it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Namespaces,
    Pods,
    Services,
    ServiceAccounts,
    Secrets,
    Events,
    EndpointSlices,
    HttpRoutes,
    MutatingWebhookConfigurations,
    Deployments,
}

impl Resource {
    fn parse(segment: &str) -> Option<Self> {
        Some(match segment {
            "namespaces" => Resource::Namespaces,
            "pods" => Resource::Pods,
            "services" => Resource::Services,
            "serviceaccounts" => Resource::ServiceAccounts,
            "secrets" => Resource::Secrets,
            "events" => Resource::Events,
            "endpointslices" => Resource::EndpointSlices,
            "httproutes" => Resource::HttpRoutes,
            "mutatingwebhookconfigurations" => Resource::MutatingWebhookConfigurations,
            "deployments" => Resource::Deployments,
            _ => return None,
        })
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Pods => "Pod",
            Resource::Services => "Service",
            Resource::ServiceAccounts => "ServiceAccount",
            Resource::Secrets => "Secret",
            Resource::Events => "Event",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::HttpRoutes => "HTTPRoute",
            Resource::MutatingWebhookConfigurations => "MutatingWebhookConfiguration",
            Resource::Deployments => "Deployment",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            Resource::HttpRoutes => "gateway.networking.k8s.io/v1",
            Resource::MutatingWebhookConfigurations => "admissionregistration.k8s.io/v1",
            Resource::Deployments => "apps/v1",
            _ => "v1",
        }
    }

    /// The API group ("" for the core group).
    fn group(self) -> &'static str {
        match self.api_version().split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(
            self,
            Resource::Namespaces | Resource::MutatingWebhookConfigurations
        )
    }
}

/// One stored object's address: resource, namespace ("" for namespaces), name.
type Key = (Resource, String, String);

struct Watch {
    resource: Resource,
    namespace: Option<String>,
    bookmarks: bool,
    deadline: Instant,
    tx: mpsc::Sender<Bytes>,
}

struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, resource, namespace, event line) since the last expiry.
    history: Vec<(u64, Resource, String, Bytes)>,
    /// Watches from a resourceVersion below this get 410.
    oldest: u64,
    watches: Vec<Watch>,
    next_cluster_ip: u32,
    /// `METHOD path?query` of every request, oldest first.
    requests: Vec<String>,
    /// Tokens TokenReview knows.
    tokens: BTreeMap<String, FakeToken>,
    /// Whether the Gateway API CRDs are installed (HTTPRoutes served).
    gateway_api: bool,
    /// `(major, minor)` for `GET /version`.
    version: (String, String),
    /// Resources SelfSubjectAccessReviews deny (plural, e.g. `clusterroles`).
    denied: std::collections::BTreeSet<String>,
}

/// A token the fake's TokenReview recognises.
#[derive(Debug, Clone)]
struct FakeToken {
    username: String,
    audiences: Vec<String>,
    expired: bool,
}

/// The TokenReview endpoint.
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The SelfSubjectAccessReview endpoint.
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// A running fake API server; it stops when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    stop: Shutdown,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

impl FakeApi {
    /// Listens on 127.0.0.1 (a free port) and serves until dropped.
    pub async fn start() -> Result<Self, FakeApiError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Mutex::new(Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            oldest: 0,
            watches: Vec::new(),
            next_cluster_ip: 1,
            requests: Vec::new(),
            tokens: BTreeMap::new(),
            gateway_api: false,
            version: ("1".into(), "31".into()),
            denied: Default::default(),
        }));
        let stop = Shutdown::new();
        tokio::spawn(accept(listener, store.clone(), stop.signal()));
        tokio::spawn(bookmarks(store.clone(), stop.signal()));
        Ok(Self { addr, store, stop })
    }

    /// What `GET /version` says from now on, e.g. `("1", "28")`.
    pub fn set_version(&self, major: &str, minor: &str) {
        self.store().version = (major.to_string(), minor.to_string());
    }

    /// From now on SelfSubjectAccessReviews about `resource` (plural, such as
    /// `mutatingwebhookconfigurations`) answer `allowed: false`.
    pub fn deny_access(&self, resource: &str) {
        self.store().denied.insert(resource.to_string());
    }

    /// Serves HTTPRoutes from now on, as if the Gateway API CRDs were installed.
    pub fn install_gateway_api(&self) {
        self.store().gateway_api = true;
    }

    /// Makes TokenReview accept `token` as `username` (e.g.
    /// `system:serviceaccount:apps:web`) for these audiences.
    pub fn add_token(&self, token: &str, username: &str, audiences: &[&str]) {
        self.store().tokens.insert(
            token.to_string(),
            FakeToken {
                username: username.to_string(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expired: false,
            },
        );
    }

    /// From now on TokenReview says `token` has expired.
    pub fn expire_token(&self, token: &str) {
        if let Some(t) = self.store().tokens.get_mut(token) {
            t.expired = true;
        }
    }

    /// How many TokenReviews were asked for.
    pub fn token_reviews(&self) -> usize {
        self.store()
            .requests
            .iter()
            .filter(|r| r.starts_with(&format!("POST {TOKEN_REVIEWS}")))
            .count()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for it.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().unwrap_or_default();
        let config = kube::Config::new(url);
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Forgets the event history (as etcd compaction does) and ends every open watch with
    /// `410 Expired`: clients must relist.
    pub fn expire(&self) {
        let mut s = self.store();
        s.oldest = s.rv + 1;
        s.history.clear();
        let gone = error_event(410, "Expired", "too old resource version");
        for w in s.watches.drain(..) {
            let _ = w.tx.try_send(gone.clone());
        }
    }

    /// Ends every open watch without an error (a dropped connection): clients watch
    /// again from the last version they saw.
    pub fn drop_watches(&self) {
        self.store().watches.clear();
    }

    /// How many list requests (not watches) were made for `resource`.
    pub fn lists(&self, resource: Resource) -> usize {
        let plural = match resource {
            Resource::Namespaces => "/namespaces",
            Resource::Pods => "/pods",
            Resource::Services => "/services",
            Resource::ServiceAccounts => "/serviceaccounts",
            Resource::Secrets => "/secrets",
            Resource::Events => "/events",
            Resource::EndpointSlices => "/endpointslices",
            Resource::HttpRoutes => "/httproutes",
            Resource::MutatingWebhookConfigurations => "/mutatingwebhookconfigurations",
            Resource::Deployments => "/deployments",
        };
        self.store()
            .requests
            .iter()
            .filter(|r| {
                let path = r.split('?').next().unwrap_or("");
                r.starts_with("GET ") && path.ends_with(plural) && !r.contains("watch=true")
            })
            .count()
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        self.store()
            .watches
            .iter()
            .filter(|w| !w.tx.is_closed())
            .count()
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    match store.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn accept(listener: TcpListener, store: Arc<Mutex<Store>>, mut stop: ShutdownSignal) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let store = store.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(&store, req).await) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.wait() => {}
            }
        });
    }
}

/// Sends bookmarks and ends watches past their timeout.
async fn bookmarks(store: Arc<Mutex<Store>>, mut stop: ShutdownSignal) {
    loop {
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(BOOKMARK_INTERVAL) => {}
        }
        let mut s = lock(&store);
        let now = Instant::now();
        let rv = s.rv;
        s.watches.retain(|w| w.deadline > now && !w.tx.is_closed());
        for w in &s.watches {
            if w.bookmarks {
                let line = event_line(
                    "BOOKMARK",
                    &json!({
                        "kind": w.resource.kind(),
                        "apiVersion": w.resource.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}
                    }),
                );
                let _ = w.tx.try_send(line);
            }
        }
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        resource: Resource,
        namespace: String,
        name: String,
        status: bool,
    },
}

fn target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest): (&str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (group, rest),
        _ => return None,
    };
    let core = group.is_empty();
    let allowed = |r: Resource| r.group() == group;
    let t = match rest {
        [res] => Target::Collection {
            resource: Resource::parse(res)?,
            namespace: None,
        },
        ["namespaces", name] if core => Target::Object {
            resource: Resource::Namespaces,
            namespace: String::new(),
            name: name.to_string(),
            status: false,
        },
        [res, name] if *res != "namespaces" => Target::Object {
            resource: Resource::parse(res).filter(|r| !r.namespaced())?,
            namespace: String::new(),
            name: name.to_string(),
            status: false,
        },
        ["namespaces", ns, res] => Target::Collection {
            resource: Resource::parse(res).filter(|r| r.namespaced())?,
            namespace: Some(ns.to_string()),
        },
        ["namespaces", ns, res, name] => Target::Object {
            resource: Resource::parse(res).filter(|r| r.namespaced())?,
            namespace: ns.to_string(),
            name: name.to_string(),
            status: false,
        },
        ["namespaces", ns, res, name, "status"] => Target::Object {
            resource: Resource::parse(res).filter(|r| r.namespaced())?,
            namespace: ns.to_string(),
            name: name.to_string(),
            status: true,
        },
        _ => return None,
    };
    let resource = match &t {
        Target::Collection { resource, .. } | Target::Object { resource, .. } => *resource,
    };
    allowed(resource).then_some(t)
}

fn query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

async fn handle(store: &Arc<Mutex<Store>>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    lock(store).requests.push(format!(
        "{method} {}",
        uri.path_and_query().map_or("", |p| p.as_str())
    ));
    if uri.path() == "/version" && method == Method::GET {
        let (major, minor) = lock(store).version.clone();
        return json_response(
            200,
            &json!({"major": major, "minor": minor, "gitVersion": format!("v{major}.{minor}.0"), "platform": "linux/amd64"}),
        );
    }
    if uri.path() == TOKEN_REVIEWS {
        if method != Method::POST {
            return status(405, "MethodNotAllowed", "tokenreviews only take POST");
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        };
        return match serde_json::from_slice::<Value>(&body) {
            Ok(review) => {
                let answer = lock(store).review(review);
                json_response(201, &answer)
            }
            Err(e) => status(400, "BadRequest", &format!("the body is not JSON: {e}")),
        };
    }
    if uri.path() == ACCESS_REVIEWS {
        if method != Method::POST {
            return status(
                405,
                "MethodNotAllowed",
                "selfsubjectaccessreviews only take POST",
            );
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        };
        return match serde_json::from_slice::<Value>(&body) {
            Ok(mut review) => {
                let resource = review
                    .pointer("/spec/resourceAttributes/resource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let allowed = !lock(store).denied.contains(&resource);
                review["apiVersion"] = json!("authorization.k8s.io/v1");
                review["kind"] = json!("SelfSubjectAccessReview");
                review["metadata"] = json!({"creationTimestamp": null});
                review["status"] = if allowed {
                    json!({"allowed": true, "reason": "the fake API server allows everything"})
                } else {
                    json!({"allowed": false, "reason": format!("the fake API server denies {resource}")})
                };
                json_response(201, &review)
            }
            Err(e) => status(400, "BadRequest", &format!("the body is not JSON: {e}")),
        };
    }
    let target = target(uri.path()).filter(|t| {
        let resource = match t {
            Target::Collection { resource, .. } | Target::Object { resource, .. } => *resource,
        };
        resource != Resource::HttpRoutes || lock(store).gateway_api
    });
    let Some(target) = target else {
        return status(
            404,
            "NotFound",
            &format!("the server could not find {}", uri.path()),
        );
    };
    let params = query(uri.query());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Option<Value> = if method == Method::POST || method == Method::PATCH {
        match req.into_body().collect().await {
            Ok(b) => match serde_json::from_slice(&b.to_bytes()) {
                Ok(v) => Some(v),
                Err(e) => return status(400, "BadRequest", &format!("the body is not JSON: {e}")),
            },
            Err(e) => return status(400, "BadRequest", &e.to_string()),
        }
    } else {
        None
    };
    let mut s = lock(store);
    match (method, target, body) {
        (
            Method::GET,
            Target::Collection {
                resource,
                namespace,
            },
            _,
        ) => {
            if params.get("watch").map(String::as_str) == Some("true") {
                s.watch(resource, namespace, &params)
            } else {
                s.list(resource, namespace.as_deref())
            }
        }
        (
            Method::POST,
            Target::Collection {
                resource,
                namespace,
            },
            Some(obj),
        ) => s.create(resource, namespace.unwrap_or_default(), obj),
        (
            Method::GET,
            Target::Object {
                resource,
                namespace,
                name,
                ..
            },
            _,
        ) => match s.objects.get(&(resource, namespace, name.clone())) {
            Some(obj) => json_response(200, obj),
            None => not_found(resource, &name),
        },
        (
            Method::PATCH,
            Target::Object {
                resource,
                namespace,
                name,
                status: sub,
            },
            Some(patch),
        ) => {
            if !content_type.starts_with("application/merge-patch+json")
                && !content_type.starts_with("application/strategic-merge-patch+json")
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    &format!("the fake API server only takes merge patches, not {content_type:?}"),
                );
            }
            s.patch(resource, namespace, name, patch, sub)
        }
        (
            Method::DELETE,
            Target::Object {
                resource,
                namespace,
                name,
                status: false,
            },
            _,
        ) => s.delete(resource, namespace, name),
        _ => status(
            405,
            "MethodNotAllowed",
            "the fake API server does not do that",
        ),
    }
}

impl Store {
    /// Answers a TokenReview the way kube-apiserver does for service-account tokens.
    fn review(&self, mut review: Value) -> Value {
        let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
        let wanted: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let status = match self.tokens.get(&token) {
            None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
            Some(t) if t.expired => {
                json!({"user": {}, "error": "[invalid bearer token, service account token has expired]"})
            }
            Some(t) => {
                let shared: Vec<&String> = if wanted.is_empty() {
                    t.audiences.iter().collect()
                } else {
                    wanted.iter().filter(|w| t.audiences.contains(w)).collect()
                };
                if shared.is_empty() {
                    json!({"user": {}, "error": format!("[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]", t.audiences, wanted)})
                } else {
                    let ns = t.username.split(':').nth(2).unwrap_or("");
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": t.username,
                            "uid": "00000000-0000-0000-0000-000000000001",
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                        },
                        "audiences": shared,
                    })
                }
            }
        };
        review["apiVersion"] = json!("authentication.k8s.io/v1");
        review["kind"] = json!("TokenReview");
        review["metadata"] = json!({"creationTimestamp": null});
        review["status"] = status;
        review
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn list(&self, resource: Resource, namespace: Option<&str>) -> Response<Body> {
        let items: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
            .collect();
        json_response(
            200,
            &json!({
                "kind": format!("{}List", resource.kind()),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": self.rv.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(
        &mut self,
        resource: Resource,
        namespace: Option<String>,
        params: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::channel(4096);
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.rv);
        if from < self.oldest {
            let _ = tx.try_send(error_event(410, "Expired", "too old resource version"));
            return stream_response(rx);
        }
        for (rv, r, ns, line) in &self.history {
            if *rv > from && *r == resource && namespace.as_deref().is_none_or(|n| n == ns) {
                let _ = tx.try_send(line.clone());
            }
        }
        let timeout = params
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800);
        self.watches.push(Watch {
            resource,
            namespace,
            bookmarks: params.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
            deadline: Instant::now() + Duration::from_secs(timeout),
            tx,
        });
        stream_response(rx)
    }

    /// Records an event and sends it to the watches that want it.
    fn publish(&mut self, rv: u64, resource: Resource, namespace: &str, kind: &str, obj: &Value) {
        let line = event_line(kind, obj);
        self.history
            .push((rv, resource, namespace.to_string(), line.clone()));
        self.watches.retain(|w| {
            if w.resource != resource || w.namespace.as_deref().is_some_and(|n| n != namespace) {
                return true;
            }
            // A watcher that cannot keep up is dropped, as a real server does.
            w.tx.try_send(line.clone()).is_ok()
        });
    }

    fn create(&mut self, resource: Resource, namespace: String, mut obj: Value) -> Response<Body> {
        // `generateName`: the prefix plus the next resourceVersion, unique in this store.
        let generated = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(|prefix| format!("{prefix}{:05}", self.rv + 1));
        let Some(name) = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .or(generated)
        else {
            return status(
                422,
                "Invalid",
                "metadata.name: Required value: name or generateName is required",
            );
        };
        obj["metadata"]["name"] = json!(name);
        if resource.namespaced()
            && !self
                .objects
                .contains_key(&(Resource::Namespaces, String::new(), namespace.clone()))
        {
            return not_found(Resource::Namespaces, &namespace);
        }
        let key = (resource, namespace.clone(), name.clone());
        if self.objects.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!(
                    "{} \"{name}\" already exists",
                    resource.kind().to_lowercase()
                ),
            );
        }
        let rv = self.bump();
        obj["kind"] = json!(resource.kind());
        obj["apiVersion"] = json!(resource.api_version());
        let meta = &mut obj["metadata"];
        if resource.namespaced() {
            meta["namespace"] = json!(namespace);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if resource == Resource::Services {
            let ip = obj
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ip.is_empty() {
                let n = self.next_cluster_ip;
                self.next_cluster_ip += 1;
                let ip = format!("198.19.{}.{}", (n >> 8) & 0xff, n & 0xff);
                obj["spec"]["clusterIP"] = json!(ip);
                obj["spec"]["clusterIPs"] = json!([ip]);
            } else if obj.pointer("/spec/clusterIPs").is_none() {
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        self.publish(rv, resource, &namespace, "ADDED", &obj);
        self.objects.insert(key, obj.clone());
        json_response(201, &obj)
    }

    fn patch(
        &mut self,
        resource: Resource,
        namespace: String,
        name: String,
        patch: Value,
        status_only: bool,
    ) -> Response<Body> {
        let key = (resource, namespace.clone(), name.clone());
        let Some(mut obj) = self.objects.get(&key).cloned() else {
            return not_found(resource, &name);
        };
        let patch = if status_only {
            json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)})
        } else {
            patch
        };
        merge(&mut obj, &patch);
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.publish(rv, resource, &namespace, "MODIFIED", &obj);
        self.objects.insert(key, obj.clone());
        json_response(200, &obj)
    }

    fn delete(&mut self, resource: Resource, namespace: String, name: String) -> Response<Body> {
        let key = (resource, namespace.clone(), name.clone());
        let Some(mut obj) = self.objects.remove(&key) else {
            return not_found(resource, &name);
        };
        if resource == Resource::Namespaces {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|(r, ns, _)| r.namespaced() && *ns == name)
                .cloned()
                .collect();
            for k in inside {
                if let Some(mut o) = self.objects.remove(&k) {
                    let rv = self.bump();
                    o["metadata"]["resourceVersion"] = json!(rv.to_string());
                    self.publish(rv, k.0, &k.1, "DELETED", &o);
                }
            }
        }
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.publish(rv, resource, &namespace, "DELETED", &obj);
        json_response(200, &obj)
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn error_event(code: u16, reason: &str, message: &str) -> Bytes {
    event_line("ERROR", &status_object(code, reason, message))
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_object(code, reason, message))
}

fn not_found(resource: Resource, name: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", resource.kind().to_lowercase()),
    )
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut rsp =
        Response::new(Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())).boxed());
    *rsp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut rsp = Response::new(crate::destination::server::LineBody::new(rx).boxed());
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let ns = |s: &str| Some(s.to_string());
        let cases = [
            (
                "/api/v1/pods",
                Some(Target::Collection {
                    resource: Resource::Pods,
                    namespace: None,
                }),
            ),
            (
                "/api/v1/namespaces",
                Some(Target::Collection {
                    resource: Resource::Namespaces,
                    namespace: None,
                }),
            ),
            (
                "/api/v1/namespaces/apps",
                Some(Target::Object {
                    resource: Resource::Namespaces,
                    namespace: String::new(),
                    name: "apps".into(),
                    status: false,
                }),
            ),
            (
                "/api/v1/namespaces/apps/services",
                Some(Target::Collection {
                    resource: Resource::Services,
                    namespace: ns("apps"),
                }),
            ),
            (
                "/api/v1/namespaces/apps/pods/web-1/status",
                Some(Target::Object {
                    resource: Resource::Pods,
                    namespace: "apps".into(),
                    name: "web-1".into(),
                    status: true,
                }),
            ),
            (
                "/apis/discovery.k8s.io/v1/endpointslices",
                Some(Target::Collection {
                    resource: Resource::EndpointSlices,
                    namespace: None,
                }),
            ),
            (
                "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices/web-a",
                Some(Target::Object {
                    resource: Resource::EndpointSlices,
                    namespace: "apps".into(),
                    name: "web-a".into(),
                    status: false,
                }),
            ),
            ("/api/v1/endpointslices", None),
            ("/apis/discovery.k8s.io/v1/pods", None),
            ("/api/v1/configmaps", None),
            (
                "/apis/apps/v1/namespaces/weft/deployments/weft-controller/status",
                Some(Target::Object {
                    resource: Resource::Deployments,
                    namespace: "weft".into(),
                    name: "weft-controller".into(),
                    status: true,
                }),
            ),
            ("/api/v1/deployments", None),
            ("/apis/apps/v1/statefulsets", None),
            ("/apis/rbac.authorization.k8s.io/v1/clusterroles", None),
        ];
        for (path, want) in cases {
            assert_eq!(target(path), want, "{path}");
        }
    }

    #[tokio::test]
    async fn deployments_and_access_reviews() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
        use kube::api::{Api, Patch, PatchParams, PostParams};
        let fake = FakeApi::start().await.unwrap();
        let client = fake.client();
        let ns = serde_json::from_value(json!({"metadata": {"name": "weft"}})).unwrap();
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), "weft");
        let d = serde_json::from_value(json!({
            "metadata": {"name": "weft-controller"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {}}
        }))
        .unwrap();
        deploys.create(&PostParams::default(), &d).await.unwrap();
        let status = json!({"status": {"readyReplicas": 1}});
        deploys
            .patch_status(
                "weft-controller",
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
        let got = deploys.get("weft-controller").await.unwrap();
        assert_eq!(got.status.and_then(|s| s.ready_replicas), Some(1));
        assert_eq!(fake.lists(Resource::Deployments), 0);

        let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
        let ask = |resource: &str| -> SelfSubjectAccessReview {
            serde_json::from_value(
                json!({"spec": {"resourceAttributes": {"verb": "create", "resource": resource}}}),
            )
            .unwrap()
        };
        let allowed = |r: SelfSubjectAccessReview| r.status.map(|s| (s.allowed, s.reason));
        let r = reviews
            .create(&PostParams::default(), &ask("clusterroles"))
            .await
            .unwrap();
        assert_eq!(allowed(r).map(|a| a.0), Some(true));
        fake.deny_access("clusterroles");
        let r = reviews
            .create(&PostParams::default(), &ask("clusterroles"))
            .await
            .unwrap();
        assert_eq!(
            allowed(r),
            Some((
                false,
                Some("the fake API server denies clusterroles".into())
            ))
        );
        let r = reviews
            .create(&PostParams::default(), &ask("pods"))
            .await
            .unwrap();
        assert_eq!(allowed(r).map(|a| a.0), Some(true));
    }

    #[test]
    fn merge_patch() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(
            &mut v,
            &json!({"a": null, "b": {"c": 4}, "l": [3], "e": "x"}),
        );
        assert_eq!(v, json!({"b": {"c": 4, "d": 3}, "l": [3], "e": "x"}));
    }
}
