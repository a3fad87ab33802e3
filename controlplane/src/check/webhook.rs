//! The `weft-webhook` checks, pure like the others: the MutatingWebhookConfiguration
//! exists, its webhooks call the controller's Service on 443, their `caBundle` is the
//! trust anchor of the issuer Secret (compared certificate by certificate, not byte by
//! byte), their failure policy is `Ignore`, and the Service has port 443 and ready
//! endpoints. `weft check` does not call the webhook over TLS itself (docs/check.md).

use super::checks::{controller_logs, lookup_error, reapply, Category, Check};
use super::facts::{Facts, Lookup, WebhookFacts};
use super::Options;
use crate::controller::injector::CA_BUNDLE_RESYNC;
use crate::install::{CONTROLLER, ISSUER_SECRET, WEBHOOK_CONFIG};

/// The `weft-webhook` category.
pub fn webhook(facts: &Facts, _opts: &Options) -> Category {
    let ns = &facts.control_plane_namespace;
    let mut checks = Vec::new();
    let exists = format!("the MutatingWebhookConfiguration {WEBHOOK_CONFIG} exists");
    let get = format!("kubectl get mutatingwebhookconfiguration {WEBHOOK_CONFIG} -o yaml");
    let hooks = match &facts.webhook {
        Lookup::Found(h) if !h.is_empty() => {
            checks.push(Check::ok(exists).detail(format!("{} webhooks", h.len())));
            Some(h)
        }
        Lookup::Found(_) => {
            checks.push(Check::fail(
                exists,
                "it has no webhooks: the API server never calls the injector",
                reapply(ns),
            ));
            None
        }
        Lookup::Missing => {
            checks.push(Check::fail(exists, "without it the API server never calls the injector, so new pods are not meshed. Re-create it from the external-issuer output (no Secret, no caBundle): the running controller writes the caBundle within a minute", reapply(ns)));
            None
        }
        other => {
            checks.push(Check::fail(
                exists,
                format!("cannot read it: {}", lookup_error(other).unwrap_or("?")),
                get.clone(),
            ));
            None
        }
    };
    if let Some(hooks) = hooks {
        checks.push(webhook_target(hooks, ns, &get));
        checks.push(ca_bundle(facts, hooks, ns));
        checks.push(failure_policy(hooks));
    }
    let svc = format!("the Service {CONTROLLER} has port 443 for the injector");
    checks.push(match &facts.service {
        Lookup::Found(s) if s.ports.iter().any(|(_, p)| *p == 443) => Check::ok(svc),
        Lookup::Found(s) => Check::fail(
            svc,
            format!("its ports are {:?}: the webhook calls port 443", s.ports.iter().map(|(_, p)| *p).collect::<Vec<_>>()),
            reapply(ns),
        ),
        Lookup::Missing => Check::fail(svc, format!("Service {ns}/{CONTROLLER} not found: the API server cannot reach the injector (pods start unmeshed) and proxies cannot reach the controller"), reapply(ns)),
        other => Check::fail(svc, format!("cannot read it: {}", lookup_error(other).unwrap_or("?")), format!("kubectl -n {ns} get service {CONTROLLER}")),
    });
    let reach = format!("the injector is reachable: Service {CONTROLLER} has ready endpoints");
    checks.push(match &facts.endpoints {
        Lookup::Found(e) => {
            let counts = format!("{} ready, {} not ready, in {} EndpointSlices", e.ready, e.not_ready, e.slices);
            if e.ready > 0 {
                Check::ok(reach).detail(counts)
            } else {
                Check::fail(reach, format!("{counts}: no controller pod is ready to answer the API server's webhook calls, so new pods start unmeshed"), controller_logs(ns)).detail(counts)
            }
        }
        other => Check::fail(reach, format!("cannot list its EndpointSlices: {}", lookup_error(other).unwrap_or("?")), format!("kubectl -n {ns} get endpointslices -l {}={CONTROLLER}", super::facts::SERVICE_NAME_LABEL)),
    });
    Category::new("weft-webhook", checks)
}

fn webhook_target(hooks: &[WebhookFacts], ns: &str, get: &str) -> Check {
    let desc = format!("its webhooks call Service {ns}/{CONTROLLER} on port 443");
    let wrong: Vec<String> = hooks
        .iter()
        .filter(|w| !matches!(&w.service, Some((n, s, 443, _)) if n == ns && s == CONTROLLER))
        .map(|w| match (&w.service, &w.url) {
            (Some((n, s, p, _)), _) => format!("{} calls {n}/{s}:{p}", w.name),
            (None, Some(u)) => format!("{} calls {u}", w.name),
            (None, None) => format!("{} has no service", w.name),
        })
        .collect();
    if wrong.is_empty() {
        Check::ok(desc)
    } else {
        Check::fail(desc, format!("{}: the injector is not where the API server looks (edited by hand, or installed with another --namespace?)", wrong.join("; ")), get.to_string())
    }
}

fn ca_bundle(facts: &Facts, hooks: &[WebhookFacts], ns: &str) -> Check {
    use super::identity::pem_certs;
    use crate::identity::ca::ANCHORS_FILE;
    let desc = format!(
        "its webhooks' caBundle is the trust anchor ({ANCHORS_FILE} of Secret {ISSUER_SECRET})"
    );
    let fix = format!("kubectl -n {ns} logs deploy/{CONTROLLER} | grep -i cabundle; kubectl -n {ns} rollout restart deploy/{CONTROLLER}");
    let anchors = match &facts.secret {
        Lookup::Found(data) => data
            .get(ANCHORS_FILE)
            .map(|a| pem_certs(a))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if anchors.is_empty() {
        return Check::warn(desc, format!("not compared: Secret {ns}/{ISSUER_SECRET} has no readable {ANCHORS_FILE} (see weft-identity)"), format!("kubectl -n {ns} get secret {ISSUER_SECRET}"));
    }
    let bad: Vec<String> = hooks
        .iter()
        .filter_map(|w| match &w.ca_bundle {
            None => Some(format!("{} has no caBundle", w.name)),
            Some(b) if b.is_empty() => Some(format!("{} has no caBundle", w.name)),
            Some(b) if pem_certs(b) != anchors => {
                Some(format!("{} has a different certificate", w.name))
            }
            Some(_) => None,
        })
        .collect();
    if bad.is_empty() {
        return Check::ok(desc);
    }
    Check::fail(
        desc,
        format!(
            "{}. The API server checks the injector's certificate with the caBundle, so webhook calls fail and, by failurePolicy Ignore, new pods start unmeshed. The controller writes the trust anchor into every caBundle at start and every {} s: if it runs, its logs say why it cannot (RBAC: get and patch on {WEBHOOK_CONFIG}); if the Secret was replaced since it started, it still holds the old issuer, so restart it",
            bad.join("; "),
            CA_BUNDLE_RESYNC.as_secs()
        ),
        fix,
    )
}

fn failure_policy(hooks: &[WebhookFacts]) -> Check {
    let desc =
        "its webhooks' failurePolicy is Ignore (a controller outage never blocks pod creation)";
    let strict: Vec<(usize, String)> = hooks
        .iter()
        .enumerate()
        .filter(|(_, w)| w.failure_policy.as_deref() != Some("Ignore"))
        .map(|(i, w)| {
            (
                i,
                format!(
                    "{}: {}",
                    w.name,
                    w.failure_policy.as_deref().unwrap_or("unset (Fail)")
                ),
            )
        })
        .collect();
    if strict.is_empty() {
        return Check::ok(desc);
    }
    let ops: Vec<String> = strict
        .iter()
        .map(|(i, _)| {
            format!(r#"{{"op":"replace","path":"/webhooks/{i}/failurePolicy","value":"Ignore"}}"#)
        })
        .collect();
    Check::warn(
        desc,
        format!(
            "{}: while the controller is down or unreachable, the pods these webhooks select cannot be created at all",
            strict.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("; ")
        ),
        format!("kubectl patch mutatingwebhookconfiguration {WEBHOOK_CONFIG} --type=json -p '[{}]'", ops.join(",")),
    )
}
