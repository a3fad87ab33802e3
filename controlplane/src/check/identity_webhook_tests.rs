//! Table tests of the `weft-identity` and `weft-webhook` checks: expiry, chaining, the
//! caBundle compared with the Secret's anchor, failure policy, Service and endpoints.

use super::checks_tests::*;
use super::facts::*;
use super::Mode;
use std::time::Duration;
use time::OffsetDateTime;

const ANCHOR: &str = "weft-identity: the trust anchor is valid for at least 60 days";
const ISSUER: &str = "weft-identity: the issuer certificate is valid for at least 60 days";
const LOADS: &str = "weft-identity: the issuer loads as the controller loads it (a CA signed by the trust anchor, with its key)";
const BUNDLE: &str = "weft-webhook: its webhooks' caBundle is the trust anchor (ca.crt of Secret weft-identity-issuer)";

fn with_issuer(
    now: OffsetDateTime,
    at: OffsetDateTime,
    anchor_days: u64,
    issuer_days: u64,
) -> Facts {
    let g = issuer(at, anchor_days, issuer_days);
    let mut f = healthy(now);
    f.secret = Lookup::Found(secret_data(&g));
    f.webhook = Lookup::Found(vec![hook("inject.weft.dev", &g.anchor_pem)]);
    f
}

#[test]
fn check_identity_expiry_table() {
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let e = |s: &str| format!("{s}: Error");
    let w = |s: &str| format!("{s}: Warning");
    let cases: Vec<(&str, OffsetDateTime, u64, u64, Vec<String>)> = vec![
        ("fresh", now, 3650, 365, vec![]),
        ("issuer 59 days", now, 3650, 59, vec![w(ISSUER)]),
        ("issuer 61 days", now, 3650, 61, vec![]),
        (
            "anchor and issuer 30 days",
            now,
            30,
            30,
            vec![w(ANCHOR), w(ISSUER)],
        ),
        // Made 400 days ago with a 1-year issuer: expired; the loader refuses it too.
        (
            "issuer expired",
            now - day * 400,
            3650,
            365,
            vec![e(ISSUER), e(LOADS)],
        ),
        (
            "both expired",
            now - day * 400,
            365,
            365,
            vec![e(ANCHOR), e(ISSUER), e(LOADS)],
        ),
        // Made "tomorrow": a clock problem.
        (
            "not yet valid",
            now + day,
            3650,
            365,
            vec![e(ANCHOR), e(ISSUER), e(LOADS)],
        ),
    ];
    for (name, at, anchor_days, issuer_days, want) in cases {
        let f = with_issuer(now, at, anchor_days, issuer_days);
        let cats = run(&f, now, Mode::Default);
        assert_eq!(problems(&cats), want, "{name}");
    }
    let f = with_issuer(now, now - day * 400, 3650, 365);
    let cats = run(&f, now, Mode::Default);
    assert!(
        hint_of(&cats, "the issuer certificate").starts_with("the issuer certificate expired on "),
        "{}",
        hint_of(&cats, "the issuer certificate")
    );
    assert!(fix_of(&cats, "the issuer certificate").starts_with("weft identity generate --out weft-id && kubectl -n weft create secret generic weft-identity-issuer --type=kubernetes.io/tls"));
    assert!(hint_of(&cats, "the issuer loads").contains("expired on"));
    let f = with_issuer(now, now + day, 3650, 365);
    assert!(hint_of(&run(&f, now, Mode::Default), "the trust anchor").contains("clock"));
    // Days in the detail.
    let f = with_issuer(now, now, 3650, 100);
    let cats = run(&f, now, Mode::Default);
    let detail = cats[4].checks[2].detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("expires ") && detail.ends_with("(99 days)")
            || detail.ends_with("(100 days)"),
        "{detail}"
    );
}

#[test]
fn check_identity_secret_contents() {
    let now = OffsetDateTime::now_utc();
    let a = issuer(now, 3650, 365);
    let b = issuer(now, 3650, 365);
    let mut f = healthy(now);
    f.secret = Lookup::Missing;
    let cats = run(&f, now, Mode::Default);
    assert_eq!(
        problems(&cats),
        [
            "weft-identity: the issuer Secret weft-identity-issuer exists: Error".to_string(),
            format!("{BUNDLE}: Warning"),
        ]
    );
    // The issuer of one pair with the anchor of another: does not chain.
    let mut data = secret_data(&a);
    data.insert("ca.crt".into(), b.anchor_pem.as_bytes().to_vec());
    let mut f = healthy(now);
    f.secret = Lookup::Found(data);
    f.webhook = Lookup::Found(vec![hook("inject.weft.dev", &b.anchor_pem)]);
    let cats = run(&f, now, Mode::Default);
    assert_eq!(problems(&cats), [format!("{LOADS}: Error")]);
    assert!(hint_of(&cats, "the issuer loads").contains("is not signed by any trust anchor"));
    // The key of another issuer.
    let mut data = secret_data(&a);
    data.insert("tls.key".into(), b.issuer_key_pem.as_bytes().to_vec());
    f.secret = Lookup::Found(data);
    f.webhook = Lookup::Found(vec![hook("inject.weft.dev", &a.anchor_pem)]);
    let cats = run(&f, now, Mode::Default);
    assert_eq!(problems(&cats), [format!("{LOADS}: Error")]);
    assert!(hint_of(&cats, "the issuer loads").contains("does not match the issuer certificate"));
    // weft identity generate's names (issuer.crt/issuer.key) load too.
    let mut data = secret_data(&a);
    let crt = data.remove("tls.crt").unwrap_or_default();
    let key = data.remove("tls.key").unwrap_or_default();
    data.insert("issuer.crt".into(), crt);
    data.insert("issuer.key".into(), key);
    f.secret = Lookup::Found(data);
    assert_eq!(problems(&run(&f, now, Mode::Default)), Vec::<String>::new());
    // Not PEM.
    let mut data = secret_data(&a);
    data.insert("ca.crt".into(), b"junk".to_vec());
    f.secret = Lookup::Found(data);
    let got = problems(&run(&f, now, Mode::Default));
    assert_eq!(
        got,
        [
            format!("{ANCHOR}: Error"),
            format!("{LOADS}: Error"),
            format!("{BUNDLE}: Warning")
        ]
    );
}

#[test]
fn check_webhook_ca_bundle_and_policy() {
    let now = OffsetDateTime::now_utc();
    let other = issuer(now, 3650, 365);
    let base = healthy(now);
    let anchor = match &base.secret {
        Lookup::Found(d) => String::from_utf8(d["ca.crt"].clone()).unwrap_or_default(),
        _ => unreachable!(),
    };
    let exists = "weft-webhook: the MutatingWebhookConfiguration weft-proxy-injector exists: Error"
        .to_string();
    let bundle_err = format!("{BUNDLE}: Error");
    let policy = "weft-webhook: its webhooks' failurePolicy is Ignore (a controller outage never blocks pod creation): Warning".to_string();
    let target = "weft-webhook: its webhooks call Service weft/weft-controller on port 443: Error"
        .to_string();
    let mut tampered = hook("ingress.inject.weft.dev", &other.anchor_pem);
    let mut no_bundle = hook("ingress.inject.weft.dev", "");
    no_bundle.ca_bundle = None;
    // The same certificate, written differently (CRLF, text around it): still equal.
    let reformatted = format!("subject=CN=root\r\n{}", anchor.replace('\n', "\r\n"));
    let mut fail_policy = hook("inject.weft.dev", &anchor);
    fail_policy.failure_policy = Some("Fail".into());
    let mut unset_policy = hook("ingress.inject.weft.dev", &anchor);
    unset_policy.failure_policy = None;
    let mut elsewhere = hook("inject.weft.dev", &anchor);
    elsewhere.service = Some(("mesh".into(), "weft-controller".into(), 443, None));
    let mut by_url = hook("ingress.inject.weft.dev", &anchor);
    by_url.service = None;
    by_url.url = Some("https://127.0.0.1:8443/inject-pods".into());
    type Case = (&'static str, Lookup<Vec<WebhookFacts>>, Vec<String>);
    let cases: Vec<Case> = vec![
        ("missing", Lookup::Missing, vec![exists.clone()]),
        (
            "forbidden",
            Lookup::Failed("forbidden".into()),
            vec![exists.clone()],
        ),
        ("no webhooks", Lookup::Found(vec![]), vec![exists.clone()]),
        (
            "tampered",
            Lookup::Found(vec![hook("inject.weft.dev", &anchor), tampered.clone()]),
            vec![bundle_err.clone()],
        ),
        (
            "no caBundle",
            Lookup::Found(vec![no_bundle.clone()]),
            vec![bundle_err.clone()],
        ),
        (
            "empty caBundle",
            Lookup::Found(vec![hook("inject.weft.dev", "")]),
            vec![bundle_err.clone()],
        ),
        (
            "reformatted",
            Lookup::Found(vec![hook("inject.weft.dev", &reformatted)]),
            vec![],
        ),
        (
            "policies",
            Lookup::Found(vec![fail_policy, unset_policy]),
            vec![policy.clone()],
        ),
        (
            "elsewhere",
            Lookup::Found(vec![elsewhere, by_url]),
            vec![target.clone()],
        ),
    ];
    for (name, webhook, want) in cases {
        let mut f = base.clone();
        f.webhook = webhook;
        assert_eq!(problems(&run(&f, now, Mode::Default)), want, "{name}");
    }
    let mut f = base.clone();
    tampered.name = "inject.weft.dev".into();
    f.webhook = Lookup::Found(vec![tampered, no_bundle]);
    let cats = run(&f, now, Mode::Default);
    let hint = hint_of(&cats, "its webhooks' caBundle");
    assert!(hint.starts_with("inject.weft.dev has a different certificate; ingress.inject.weft.dev has no caBundle. "), "{hint}");
    assert!(hint.contains("every 60 s"), "{hint}");
    assert_eq!(fix_of(&cats, "its webhooks' caBundle"), "kubectl -n weft logs deploy/weft-controller | grep -i cabundle; kubectl -n weft rollout restart deploy/weft-controller");
    let mut f = base.clone();
    let mut a = hook("inject.weft.dev", &anchor);
    a.failure_policy = Some("Fail".into());
    f.webhook = Lookup::Found(vec![hook("x", &anchor), a]);
    assert_eq!(
        fix_of(&run(&f, now, Mode::Default), "its webhooks' failurePolicy"),
        r#"kubectl patch mutatingwebhookconfiguration weft-proxy-injector --type=json -p '[{"op":"replace","path":"/webhooks/1/failurePolicy","value":"Ignore"}]'"#
    );
}

#[test]
fn check_webhook_service_and_endpoints() {
    let now = OffsetDateTime::now_utc();
    let svc = "weft-webhook: the Service weft-controller has port 443 for the injector: Error";
    let reach = "weft-webhook: the injector is reachable: Service weft-controller has ready endpoints: Error";
    let cases: Vec<(Lookup<ServiceFacts>, Lookup<EndpointFacts>, Vec<&str>)> = vec![
        (
            Lookup::Missing,
            Lookup::Found(EndpointFacts::default()),
            vec![svc, reach],
        ),
        (
            Lookup::Found(ServiceFacts {
                ports: vec![(None, 8443)],
            }),
            Lookup::Found(EndpointFacts {
                slices: 1,
                ready: 1,
                not_ready: 0,
            }),
            vec![svc],
        ),
        (
            Lookup::Found(ServiceFacts {
                ports: vec![(None, 443)],
            }),
            Lookup::Found(EndpointFacts {
                slices: 1,
                ready: 0,
                not_ready: 2,
            }),
            vec![reach],
        ),
        (
            Lookup::Found(ServiceFacts {
                ports: vec![(None, 443)],
            }),
            Lookup::Failed("forbidden".into()),
            vec![reach],
        ),
        (
            Lookup::Found(ServiceFacts {
                ports: vec![(None, 443)],
            }),
            Lookup::Found(EndpointFacts {
                slices: 2,
                ready: 1,
                not_ready: 1,
            }),
            vec![],
        ),
    ];
    for (service, endpoints, want) in cases {
        let mut f = healthy(now);
        f.service = service.clone();
        f.endpoints = endpoints.clone();
        assert_eq!(
            problems(&run(&f, now, Mode::Default)),
            want,
            "{service:?} {endpoints:?}"
        );
    }
    let _ = Duration::ZERO;
}
