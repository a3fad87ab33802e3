//! The checks of `weft check`, as pure functions of the [`Facts`] read from the cluster,
//! the time and the options: no I/O, so every outcome is table-tested
//! (`check/checks_tests.rs`). Each non-success carries a hint (why, what it means) and a
//! fix (a command to run). Three categories have their own files: [`super::identity`],
//! [`super::webhook`] and the data plane of `--proxy`, [`super::data_plane`].

use super::facts::{Facts, GatewayApi, Lookup, ServerVersion, PRE_ACCESS};
use super::{Mode, Options};
use crate::controller::injector::has_native_sidecars;
use crate::install::{CONTROLLER, CONTROL_PLANE_NS_LABEL};
use serde::Serialize;
use time::OffsetDateTime;

/// The oldest Kubernetes minor version Weft supports (its manifests are validated against
/// 1.26 to 1.33).
pub const MIN_MINOR: u32 = 26;
/// Certificates expiring sooner than this are a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 60;
/// Where the Gateway API's standard CRDs come from, in the fix for a missing HTTPRoute.
pub const GATEWAY_API_CRDS: &str =
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml";

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub description: String,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    pub fn ok(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            result: Outcome::Success,
            hint: None,
            fix: None,
            detail: None,
        }
    }
    pub fn warn(
        description: impl Into<String>,
        hint: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            result: Outcome::Warning,
            hint: Some(hint.into()),
            fix: Some(fix.into()),
            ..Self::ok(description)
        }
    }
    pub fn fail(
        description: impl Into<String>,
        hint: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            result: Outcome::Error,
            ..Self::warn(description, hint, fix)
        }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A group of checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Category {
    pub name: String,
    pub checks: Vec<Check>,
}

impl Category {
    pub fn new(name: &str, checks: Vec<Check>) -> Self {
        Self {
            name: name.to_string(),
            checks,
        }
    }
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.result == Outcome::Error)
    }
}

/// Every check for `opts.mode`, in order. An unreachable API server, or (after install) a
/// missing control-plane namespace, ends the report there: everything after would fail the
/// same way.
pub fn checks(facts: &Facts, now: OffsetDateTime, opts: &Options) -> Vec<Category> {
    let api = kubernetes_api(facts);
    let reachable = !api.failed();
    let mut out = vec![api];
    if !reachable {
        return out;
    }
    if opts.mode == Mode::Pre {
        out.push(pre_install(facts));
        out.push(gateway_api(facts, opts));
        return out;
    }
    let ns = namespace(facts, opts);
    let stop = ns.failed();
    out.push(ns);
    if stop {
        return out;
    }
    out.push(gateway_api(facts, opts));
    out.push(controller(facts, opts));
    out.push(super::identity::identity(facts, now, opts));
    out.push(super::webhook::webhook(facts, opts));
    if opts.mode == Mode::Proxy {
        out.push(super::data_plane::data_plane(facts, opts));
    }
    out
}

/// `(major, minor)` as numbers, ignoring a provider's suffix (`29+`).
pub fn version_numbers(v: &ServerVersion) -> Option<(u32, u32)> {
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    Some((digits(&v.major)?, digits(&v.minor)?))
}

fn kubernetes_api(facts: &Facts) -> Category {
    const NAME: &str = "kubernetes-api";
    let reach = "can reach the API server";
    let v = match &facts.server {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            let c = Check::fail(
                reach,
                format!("{e}. weft check uses --kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster service account"),
                "kubectl version   # does kubectl reach the cluster with the same kubeconfig?",
            );
            return Category::new(NAME, vec![c]);
        }
        None => {
            let c = Check::fail(
                reach,
                "the API server was not asked",
                "weft check --kubeconfig FILE",
            );
            return Category::new(NAME, vec![c]);
        }
    };
    let shown = if v.git_version.is_empty() {
        format!("{}.{}", v.major, v.minor)
    } else {
        v.git_version.clone()
    };
    let mut checks = vec![Check::ok(reach).detail(format!("Kubernetes {shown}"))];
    let supported = format!("the API server's version is supported (1.{MIN_MINOR} or newer)");
    checks.push(match version_numbers(v) {
        Some((major, minor)) if major > 1 || minor >= MIN_MINOR => Check::ok(supported).detail(shown.clone()),
        Some(_) => Check::warn(
            supported,
            format!("Kubernetes {shown} is older than 1.{MIN_MINOR}: Weft's manifests are validated against 1.{MIN_MINOR}-1.33 only, and older releases are out of support"),
            "upgrade the cluster (k3s: https://docs.k3s.io/upgrades)",
        ),
        None => Check::warn(
            supported,
            format!("cannot read a version from major {:?}, minor {:?}", v.major, v.minor),
            "kubectl version",
        ),
    });
    checks.push(match has_native_sidecars(&v.major, &v.minor) {
        Some(true) => Check::ok("native sidecars are available (Kubernetes 1.29 or newer): proxies start before the app and Jobs complete"),
        Some(false) => Check::ok("native sidecars are not available (Kubernetes older than 1.29): proxies run as classic sidecars, and the controller ends Jobs' proxies")
            .detail(shown),
        None => Check::warn(
            "native sidecars are available (Kubernetes 1.29 or newer)",
            "the version cannot be read, so the injector uses classic sidecars (--native-sidecars auto)",
            "kubectl version",
        ),
    });
    Category::new(NAME, checks)
}

fn pre_install(facts: &Facts) -> Category {
    let ns = &facts.control_plane_namespace;
    let absent = format!("the control-plane namespace {ns} does not exist yet");
    let mut checks = vec![match &facts.namespace {
        Lookup::Missing => Check::ok(absent),
        Lookup::Found(_) => Check::warn(
            absent,
            format!("namespace {ns} exists: Weft may already be installed (weft install would update it and replace its trust anchor), or it is left over"),
            format!("weft check --namespace {ns}   # or, if it is left over: kubectl delete namespace {ns}"),
        ),
        Lookup::Failed(e) => Check::warn(absent, format!("cannot read namespace {ns}: {e}"), format!("kubectl get namespace {ns}")),
        Lookup::NotRead => Check::warn(absent, "not read", format!("kubectl get namespace {ns}")),
    }];
    for (group, resource) in PRE_ACCESS {
        let desc = format!("can create {resource} ({group})");
        let fix = format!("kubectl auth can-i create {resource}.{group}");
        let found = facts.access.iter().find(|a| a.resource == resource);
        checks.push(match found.map(|a| (&a.allowed, &a.reason)) {
            Some((Lookup::Found(true), _)) => Check::ok(desc),
            Some((Lookup::Found(false), reason)) => Check::fail(
                desc,
                format!(
                    "weft install creates cluster-scoped objects (a ClusterRole, its binding and a MutatingWebhookConfiguration); the API server says you may not{}. Use a cluster-admin kubeconfig (k3s: /etc/rancher/k3s/k3s.yaml)",
                    reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
                ),
                fix,
            ),
            Some((Lookup::Failed(e), _)) => Check::warn(desc, format!("cannot ask the API server (SelfSubjectAccessReview): {e}"), fix),
            _ => Check::warn(desc, "not asked", fix),
        });
    }
    Category::new("pre-install", checks)
}

fn gateway_api(facts: &Facts, opts: &Options) -> Category {
    let desc = "the Gateway API HTTPRoute CRD is installed (for traffic splits)";
    let restart = if opts.mode == Mode::Pre {
        String::new()
    } else {
        format!(
            " && kubectl -n {} rollout restart deploy/{CONTROLLER}",
            facts.control_plane_namespace
        )
    };
    let fix = format!("kubectl apply -f {GATEWAY_API_CRDS}{restart}");
    let check = match &facts.gateway_api {
        GatewayApi::Installed => Check::ok(desc),
        GatewayApi::Absent => Check::warn(
            desc,
            "listing httproutes.gateway.networking.k8s.io answered 404: without the CRD there are no HTTPRoute traffic splits (everything else works). The controller looks once, at start: restart it after installing the CRD",
            fix,
        ),
        GatewayApi::Unknown(e) => Check::warn(desc, format!("cannot list HTTPRoutes: {e}"), "kubectl get crd httproutes.gateway.networking.k8s.io"),
        GatewayApi::NotRead => Check::warn(desc, "not read", "kubectl get crd httproutes.gateway.networking.k8s.io"),
    };
    Category::new("gateway-api", vec![check])
}

/// The command that (re)creates the control plane's objects without touching the issuer
/// Secret: the external-issuer output has no Secret and no caBundle (the controller writes
/// it within a minute).
pub fn reapply(ns: &str) -> String {
    let flag = if ns == weft_api::identity::DEFAULT_CONTROL_PLANE_NAMESPACE {
        String::new()
    } else {
        format!(" --namespace {ns}")
    };
    format!("weft install --identity-external-issuer{flag} | kubectl apply -f -")
}

fn namespace(facts: &Facts, _opts: &Options) -> Category {
    let ns = &facts.control_plane_namespace;
    let exists = format!("the control-plane namespace {ns} exists");
    let labelled = format!("namespace {ns} is labelled {CONTROL_PLANE_NS_LABEL}={ns}");
    let checks = match &facts.namespace {
        Lookup::Found(n) => vec![
            Check::ok(exists),
            if n.labels.get(CONTROL_PLANE_NS_LABEL) == Some(ns) {
                Check::ok(labelled)
            } else {
                Check::warn(
                    labelled,
                    format!("weft install labels its namespace so that tools (and the injector) recognise the control plane; it has {}",
                        n.labels.get(CONTROL_PLANE_NS_LABEL).map_or("no such label".to_string(), |v| format!("{CONTROL_PLANE_NS_LABEL}={v}"))),
                    format!("kubectl label namespace {ns} --overwrite {CONTROL_PLANE_NS_LABEL}={ns}"),
                )
            },
        ],
        Lookup::Missing => vec![Check::fail(
            exists,
            format!("Weft is not installed in namespace {ns} (use --namespace if it was installed elsewhere)"),
            "weft check --pre && weft install | kubectl apply -f -",
        )],
        other => vec![Check::fail(
            exists,
            format!("cannot read namespace {ns}: {}", lookup_error(other).unwrap_or("?")),
            format!("kubectl get namespace {ns}"),
        )],
    };
    Category::new("weft-namespace", checks)
}

/// The error of a read that did not find or miss the object.
pub fn lookup_error<T>(l: &Lookup<T>) -> Option<&str> {
    match l {
        Lookup::Failed(e) => Some(e),
        Lookup::NotRead => Some("not read"),
        _ => None,
    }
}

/// `kubectl describe` and `logs` of the controller: where its problems show.
pub fn controller_logs(ns: &str) -> String {
    format!(
        "kubectl -n {ns} describe deploy/{CONTROLLER}; kubectl -n {ns} logs deploy/{CONTROLLER}"
    )
}

/// The version in an image reference's tag: `ghcr.io/weft-mesh/weft:0.1.0` → `0.1.0`
/// (a leading `v` dropped); `None` for a digest-only or untagged reference.
pub fn image_version(image: &str) -> Option<String> {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = last.split_once(':')?.1;
    Some(tag.strip_prefix('v').unwrap_or(tag).to_string()).filter(|t| !t.is_empty())
}

fn controller(facts: &Facts, opts: &Options) -> Category {
    let ns = &facts.control_plane_namespace;
    let desc = format!("the controller Deployment {CONTROLLER} is available");
    let mut checks = vec![match &facts.deployment {
        Lookup::Found(d) => {
            let counts = format!("{}/{} replicas ready", d.ready, d.desired);
            if d.ready >= 1 && d.ready >= d.desired {
                Check::ok(desc).detail(counts)
            } else if d.ready >= 1 {
                Check::warn(desc, format!("{counts}: the mesh works, with less headroom (a node is down, or a replica is crashing or pending)"), controller_logs(ns)).detail(counts)
            } else {
                Check::fail(
                    desc,
                    format!("{counts}: proxies cannot get or renew certificates nor learn endpoints, and new pods start unmeshed (failurePolicy Ignore). The controller crash-loops without a loadable issuer Secret, and is ready once discovery has synced"),
                    controller_logs(ns),
                )
                .detail(counts)
            }
        }
        Lookup::Missing => Check::fail(
            desc,
            format!("Deployment {ns}/{CONTROLLER} not found: there is no control plane"),
            reapply(ns),
        ),
        other => Check::fail(
            desc,
            format!(
                "cannot read Deployment {ns}/{CONTROLLER}: {}",
                lookup_error(other).unwrap_or("?")
            ),
            format!("kubectl -n {ns} get deploy/{CONTROLLER}"),
        ),
    }];
    let cli = &opts.cli_version;
    let desc = format!("the controller runs this CLI's version ({cli})");
    let (key, value) = super::facts::CONTROLLER_POD_SELECTOR;
    let list = format!("kubectl -n {ns} get pods -l {key}={value} -o wide");
    checks.push(match &facts.controller_pods {
        Lookup::Found(pods) if pods.is_empty() => Check::warn(desc, format!("no controller pods (label {key}={value}) in namespace {ns}"), controller_logs(ns)),
        Lookup::Found(pods) => {
            let mut versions = std::collections::BTreeSet::new();
            for p in pods {
                let c = p.containers.iter().find(|c| c.name == "weft").or(p.containers.first());
                let v = c.and_then(|c| image_version(&c.image)).unwrap_or_else(|| "unknown".into());
                versions.insert(v);
            }
            let shown = versions.iter().cloned().collect::<Vec<_>>().join(", ");
            if versions.len() == 1 && versions.contains(cli) {
                Check::ok(desc).detail(format!("pods: {}, version {shown}", pods.len()))
            } else {
                Check::warn(
                    desc,
                    format!("the controller's pods run {shown} (from their image tags); this CLI is {cli}. Upgrade the control plane to this CLI's version (docs/install.md, Upgrading; the external-issuer output keeps the trust anchor), or use a weft CLI of the controller's version"),
                    reapply(ns),
                )
                .detail(format!("pods: {}, versions {shown}", pods.len()))
            }
        }
        other => Check::warn(desc, format!("cannot list the controller's pods: {}", lookup_error(other).unwrap_or("?")), list),
    });
    Category::new("weft-controller", checks)
}
