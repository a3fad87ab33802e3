//! The `weft-data-plane` checks of `weft check --proxy`, pure like the others: meshed
//! pods' proxies are ready (a proxy is ready only once it holds a certificate, so ready
//! means certified), have not restarted, run this CLI's version (`weft.dev/proxy-version`),
//! and no pod of a namespace annotated `weft.dev/inject: enabled|ingress` runs without a
//! proxy (created while the injector was down, or before the annotation).

use super::checks::{lookup_error, Category, Check};
use super::facts::{Facts, Lookup, PodFacts};
use super::Options;
use crate::inject::annotations::{INJECT, INJECT_SKIPPED, PROXY_VERSION};
use crate::inject::{KUBE_SYSTEM, PROXY_CONTAINER};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many pods are named in one hint.
pub const MAX_LISTED: usize = 10;

/// The proxy container of a pod (a regular container, or a native sidecar init container).
fn proxy(p: &PodFacts) -> Option<&super::facts::ContainerFacts> {
    p.containers
        .iter()
        .chain(&p.init_containers)
        .find(|c| c.name == PROXY_CONTAINER)
}

/// `a, b, c and 4 more`.
fn listed(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_LISTED {
        s.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    s
}

/// What re-creates a pod through its workload: `kubectl rollout restart` of the
/// Deployment (from the ReplicaSet's name), StatefulSet or DaemonSet; else delete the pod.
pub fn restart_command(p: &PodFacts) -> String {
    let ns = &p.namespace;
    match &p.owner {
        Some((kind, rs)) if kind == "ReplicaSet" => match rs.rsplit_once('-') {
            Some((deploy, _)) => format!("kubectl -n {ns} rollout restart deployment/{deploy}"),
            None => format!("kubectl -n {ns} delete pod {}", p.name),
        },
        Some((kind, name)) if kind == "StatefulSet" || kind == "DaemonSet" => {
            format!(
                "kubectl -n {ns} rollout restart {}/{name}",
                kind.to_lowercase()
            )
        }
        Some((kind, name)) => {
            format!(
                "kubectl -n {ns} delete pod {}   # {kind} {name} re-creates it",
                p.name
            )
        }
        None => format!(
            "kubectl -n {ns} delete pod {}   # not owned by a workload: create it again yourself",
            p.name
        ),
    }
}

/// The distinct restart commands for these pods, one per line.
fn restarts(pods: &[&PodFacts]) -> String {
    let set: BTreeSet<String> = pods.iter().map(|p| restart_command(p)).collect();
    set.into_iter().collect::<Vec<_>>().join("\n")
}

fn key(p: &PodFacts) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The `weft-data-plane` category.
pub fn data_plane(facts: &Facts, opts: &Options) -> Category {
    let scope = match &opts.pods_namespace {
        Some(n) => format!("namespace {n}"),
        None => "all namespaces".to_string(),
    };
    let name = "weft-data-plane".to_string();
    let pods = match &facts.pods {
        Lookup::Found(p) => p,
        other => {
            let c = Check::fail(
                format!("can list pods in {scope}"),
                format!("cannot list pods: {}", lookup_error(other).unwrap_or("?")),
                "kubectl auth can-i list pods --all-namespaces",
            );
            return Category {
                name,
                checks: vec![c],
            };
        }
    };
    let live: Vec<&PodFacts> = pods
        .iter()
        .filter(|p| p.phase != "Succeeded" && p.phase != "Failed")
        .collect();
    let meshed: Vec<&PodFacts> = live
        .iter()
        .copied()
        .filter(|p| proxy(p).is_some())
        .collect();
    let mut checks = Vec::new();

    let ready_desc = "meshed pods' proxies are ready (ready means they hold a certificate)";
    let running: Vec<&PodFacts> = meshed
        .iter()
        .copied()
        .filter(|p| p.phase == "Running")
        .collect();
    let not_ready: Vec<&PodFacts> = running
        .iter()
        .copied()
        .filter(|p| proxy(p).is_some_and(|c| !c.ready))
        .collect();
    let counts = format!(
        "{} meshed pods in {scope}: {} running, {} not ready, {} pending",
        meshed.len(),
        running.len(),
        not_ready.len(),
        meshed.len() - running.len()
    );
    checks.push(if meshed.is_empty() {
        Check::warn(
            ready_desc,
            format!("no meshed pods in {scope} (no pod has a {PROXY_CONTAINER} container)"),
            "kubectl annotate namespace NAMESPACE weft.dev/inject=enabled && kubectl -n NAMESPACE rollout restart deploy",
        )
    } else if not_ready.is_empty() {
        Check::ok(ready_desc).detail(counts)
    } else {
        let names: Vec<String> = not_ready
            .iter()
            .map(|p| {
                let state = proxy(p).map_or("", |c| c.state.as_str());
                format!("{} ({state})", key(p))
            })
            .collect();
        let first = not_ready[0];
        Check::fail(
            ready_desc,
            format!("not ready: {}. A proxy is ready once the controller has given it a certificate: it cannot reach the controller, or the controller refuses it (the controller's logs say why)", listed(&names)),
            format!(
                "kubectl -n {} logs {} -c {PROXY_CONTAINER}; kubectl -n {} logs deploy/{}",
                first.namespace,
                first.name,
                facts.control_plane_namespace,
                crate::install::CONTROLLER
            ),
        )
        .detail(counts)
    });

    let restart_desc = "meshed pods' proxies have not restarted";
    let restarted: Vec<&PodFacts> = meshed
        .iter()
        .copied()
        .filter(|p| proxy(p).is_some_and(|c| c.restarts > 0))
        .collect();
    checks.push(if restarted.is_empty() {
        Check::ok(restart_desc)
    } else {
        let names: Vec<String> = restarted
            .iter()
            .map(|p| format!("{} ({} restarts)", key(p), proxy(p).map_or(0, |c| c.restarts)))
            .collect();
        let first = restarted[0];
        Check::warn(
            restart_desc,
            format!("{}: the previous run's log says why (OOMKilled: raise config.weft.dev/proxy-memory-limit)", listed(&names)),
            format!("kubectl -n {} logs {} -c {PROXY_CONTAINER} --previous", first.namespace, first.name),
        )
    });

    let cli = &opts.cli_version;
    let version_desc = format!("meshed pods' proxies run this CLI's version ({cli})");
    let skewed: Vec<&PodFacts> = meshed
        .iter()
        .copied()
        .filter(|p| p.annotations.get(PROXY_VERSION) != Some(cli))
        .collect();
    checks.push(if skewed.is_empty() {
        Check::ok(version_desc)
    } else {
        let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
        for p in &skewed {
            let v = p.annotations.get(PROXY_VERSION).cloned().unwrap_or_else(|| "unknown".into());
            *by_version.entry(v).or_default() += 1;
        }
        let shown: Vec<String> = by_version.iter().map(|(v, n)| format!("{n} at {v}")).collect();
        Check::warn(
            version_desc,
            format!("{} of {} meshed pods run another proxy version ({}; from {PROXY_VERSION}): {}. Pods get the controller's proxy when they are created, so restart them after upgrading the control plane", skewed.len(), meshed.len(), shown.join(", "), listed(&skewed.iter().map(|p| key(p)).collect::<Vec<_>>())),
            restarts(&skewed),
        )
    });

    let unmeshed_desc =
        format!("pods in namespaces annotated {INJECT}: enabled or ingress have a proxy");
    checks.push(match &facts.namespaces {
        Lookup::Found(nss) => {
            let meshing: BTreeSet<&str> = nss
                .iter()
                .filter(|n| {
                    matches!(n.annotations.get(INJECT).map(String::as_str), Some("enabled" | "ingress"))
                        && n.name != KUBE_SYSTEM
                        && n.name != facts.control_plane_namespace
                })
                .map(|n| n.name.as_str())
                .collect();
            let missing: Vec<&PodFacts> = live
                .iter()
                .copied()
                .filter(|p| {
                    meshing.contains(p.namespace.as_str())
                        && proxy(p).is_none()
                        && !p.host_network
                        && p.annotations.get(INJECT).map(String::as_str) != Some("disabled")
                        && !p.annotations.contains_key(INJECT_SKIPPED)
                })
                .collect();
            if missing.is_empty() {
                Check::ok(unmeshed_desc).detail(format!("{} meshed namespaces", meshing.len()))
            } else {
                Check::warn(
                    unmeshed_desc,
                    format!("no proxy: {}. They were created while the injector was down or unreachable (failurePolicy Ignore lets them through), or before the namespace was annotated; pods are injected only when created", listed(&missing.iter().map(|p| key(p)).collect::<Vec<_>>())),
                    restarts(&missing),
                )
            }
        }
        other => Check::warn(
            unmeshed_desc,
            format!("cannot list namespaces: {}", lookup_error(other).unwrap_or("?")),
            "kubectl auth can-i list namespaces",
        ),
    });
    Category { name, checks }
}
