//! Table tests of the pure checks: a healthy install's [`Facts`], then one thing broken at
//! a time, asserting exactly which lines are not ok (and that each has a hint and a fix).

use super::checks::{checks, image_version, Category, Outcome};
use super::facts::*;
use super::{Mode, Options};
use crate::identity::ca::{generate, Generated};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

const DAY: Duration = Duration::from_secs(86_400);

pub(super) fn issuer(at: OffsetDateTime, anchor_days: u64, issuer_days: u64) -> Generated {
    generate(
        "cluster.local",
        "weft",
        DAY * anchor_days as u32,
        DAY * issuer_days as u32,
        at,
    )
    .unwrap()
}

pub(super) fn secret_data(g: &Generated) -> BTreeMap<String, Vec<u8>> {
    [
        ("ca.crt", &g.anchor_pem),
        ("tls.crt", &g.issuer_pem),
        ("tls.key", &g.issuer_key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect()
}

pub(super) fn hook(name: &str, bundle: &str) -> WebhookFacts {
    WebhookFacts {
        name: name.into(),
        ca_bundle: Some(bundle.as_bytes().to_vec()),
        failure_policy: Some("Ignore".into()),
        service: Some((
            "weft".into(),
            "weft-controller".into(),
            443,
            Some("/inject-pods".into()),
        )),
        url: None,
    }
}

pub(super) fn container(name: &str, image: &str, ready: bool, restarts: i32) -> ContainerFacts {
    ContainerFacts {
        name: name.into(),
        image: image.into(),
        ready,
        restarts,
        state: if ready {
            "running"
        } else {
            "waiting: CrashLoopBackOff"
        }
        .into(),
    }
}

pub(super) fn pod(ns: &str, name: &str, proxy: Option<(bool, i32, &str)>) -> PodFacts {
    let mut p = PodFacts {
        namespace: ns.into(),
        name: name.into(),
        phase: "Running".into(),
        owner: Some((
            "ReplicaSet".into(),
            format!("{}-5d8f7c9b6", name.split('-').next().unwrap_or(name)),
        )),
        containers: vec![container("app", "example/app:1", true, 0)],
        ..PodFacts::default()
    };
    if let Some((ready, restarts, version)) = proxy {
        p.init_containers.push(container(
            "weft-proxy",
            "ghcr.io/weft-mesh/weft-proxy:x",
            ready,
            restarts,
        ));
        p.annotations
            .insert("weft.dev/proxy-version".into(), version.into());
    }
    p
}

pub(super) fn ns(name: &str, inject: Option<&str>) -> NamespaceFacts {
    NamespaceFacts {
        name: name.into(),
        annotations: inject
            .map(|v| [("weft.dev/inject".to_string(), v.to_string())].into())
            .unwrap_or_default(),
        ..NamespaceFacts::default()
    }
}

pub(super) const V: &str = env!("CARGO_PKG_VERSION");

pub(super) fn healthy(now: OffsetDateTime) -> Facts {
    let g = issuer(now, 3650, 365);
    let mut controller = pod("weft", "weft-controller-1", None);
    controller.containers = vec![container(
        "weft",
        &format!("ghcr.io/weft-mesh/weft:{V}"),
        true,
        0,
    )];
    Facts {
        control_plane_namespace: "weft".into(),
        server: Some(Ok(ServerVersion {
            major: "1".into(),
            minor: "31".into(),
            git_version: "v1.31.4+k3s1".into(),
        })),
        namespace: Lookup::Found(NamespaceFacts {
            name: "weft".into(),
            labels: [("weft.dev/control-plane-ns".to_string(), "weft".to_string())].into(),
            annotations: BTreeMap::new(),
        }),
        gateway_api: GatewayApi::Installed,
        deployment: Lookup::Found(DeploymentFacts {
            desired: 1,
            ready: 1,
            available: 1,
        }),
        controller_pods: Lookup::Found(vec![controller]),
        secret: Lookup::Found(secret_data(&g)),
        webhook: Lookup::Found(vec![
            hook("inject.weft.dev", &g.anchor_pem),
            hook("ingress.inject.weft.dev", &g.anchor_pem),
        ]),
        service: Lookup::Found(ServiceFacts {
            ports: vec![
                (Some("proxy-api".into()), 8086),
                (Some("injector".into()), 443),
            ],
        }),
        endpoints: Lookup::Found(EndpointFacts {
            slices: 1,
            ready: 1,
            not_ready: 0,
        }),
        access: PRE_ACCESS
            .iter()
            .map(|(g, r)| Access {
                group: g.to_string(),
                resource: r.to_string(),
                allowed: Lookup::Found(true),
                reason: None,
            })
            .collect(),
        namespaces: Lookup::Found(vec![
            ns("weft", Some("disabled")),
            ns("apps", Some("enabled")),
            ns("kube-system", None),
        ]),
        pods: Lookup::Found(vec![
            pod("apps", "web-1", Some((true, 0, V))),
            pod("apps", "db-1", Some((true, 0, V))),
        ]),
    }
}

pub(super) fn opts(mode: Mode) -> Options {
    Options {
        mode,
        pods_namespace: None,
        cli_version: V.into(),
    }
}

/// Every line that is not a success, as `category: description: outcome`; and every such
/// line must carry a hint and a fix.
pub(super) fn problems(cats: &[Category]) -> Vec<String> {
    let mut out = Vec::new();
    for cat in cats {
        for c in &cat.checks {
            if c.result != Outcome::Success {
                assert!(
                    c.hint.as_deref().is_some_and(|h| !h.is_empty()),
                    "{c:?} has no hint"
                );
                assert!(
                    c.fix.as_deref().is_some_and(|f| !f.is_empty()),
                    "{c:?} has no fix"
                );
                out.push(format!("{}: {}: {:?}", cat.name, c.description, c.result));
            }
        }
    }
    out
}

pub(super) fn run(f: &Facts, now: OffsetDateTime, mode: Mode) -> Vec<Category> {
    checks(f, now, &opts(mode))
}

pub(super) fn names(cats: &[Category]) -> Vec<&str> {
    cats.iter().map(|c| c.name.as_str()).collect()
}

pub(super) fn hint_of<'a>(cats: &'a [Category], desc_prefix: &str) -> &'a str {
    cats.iter()
        .flat_map(|c| &c.checks)
        .find(|c| c.description.starts_with(desc_prefix))
        .and_then(|c| c.hint.as_deref())
        .unwrap_or_else(|| panic!("no hint for {desc_prefix}"))
}

pub(super) fn fix_of<'a>(cats: &'a [Category], desc_prefix: &str) -> &'a str {
    cats.iter()
        .flat_map(|c| &c.checks)
        .find(|c| c.description.starts_with(desc_prefix))
        .and_then(|c| c.fix.as_deref())
        .unwrap_or_else(|| panic!("no fix for {desc_prefix}"))
}

#[test]
fn check_healthy_install_is_all_success_in_every_mode() {
    let now = OffsetDateTime::now_utc();
    let f = healthy(now);
    let cats = run(&f, now, Mode::Default);
    assert_eq!(
        names(&cats),
        [
            "kubernetes-api",
            "weft-namespace",
            "gateway-api",
            "weft-controller",
            "weft-identity",
            "weft-webhook"
        ]
    );
    assert_eq!(problems(&cats), Vec::<String>::new());
    assert_eq!(
        cats.iter().map(|c| c.checks.len()).sum::<usize>(),
        3 + 2 + 1 + 2 + 4 + 6
    );
    let cats = run(&f, now, Mode::Proxy);
    assert_eq!(names(&cats).last(), Some(&"weft-data-plane"));
    assert_eq!(problems(&cats), Vec::<String>::new());
    let mut pre = f.clone();
    pre.namespace = Lookup::Missing;
    let cats = run(&pre, now, Mode::Pre);
    assert_eq!(
        names(&cats),
        ["kubernetes-api", "pre-install", "gateway-api"]
    );
    assert_eq!(problems(&cats), Vec::<String>::new());
}

#[test]
fn check_unreachable_api_server_stops_the_report() {
    let now = OffsetDateTime::now_utc();
    let mut f = healthy(now);
    f.server = Some(Err("tcp connect error: Connection refused".into()));
    for mode in [Mode::Default, Mode::Pre, Mode::Proxy] {
        let cats = run(&f, now, mode);
        assert_eq!(
            problems(&cats),
            ["kubernetes-api: can reach the API server: Error"]
        );
        assert_eq!(cats.len(), 1);
        assert!(hint_of(&cats, "can reach").starts_with("tcp connect error: Connection refused."));
    }
}

#[test]
fn check_api_server_versions() {
    let now = OffsetDateTime::now_utc();
    let supported =
        "kubernetes-api: the API server's version is supported (1.26 or newer): Warning";
    let native =
        "kubernetes-api: native sidecars are available (Kubernetes 1.29 or newer): Warning";
    let cases: [(&str, &str, &[&str], Option<bool>); 7] = [
        ("1", "25", &[supported], Some(false)),
        ("1", "26", &[], Some(false)),
        ("1", "28", &[], Some(false)),
        ("1", "29", &[], Some(true)),
        ("1", "33+", &[], Some(true)),
        ("2", "0", &[], Some(true)),
        ("1", "", &[supported, native], None),
    ];
    for (major, minor, want, has_native) in cases {
        let mut f = healthy(now);
        f.server = Some(Ok(ServerVersion {
            major: major.into(),
            minor: minor.into(),
            git_version: String::new(),
        }));
        let cats = run(&f, now, Mode::Default);
        assert_eq!(problems(&cats), want, "{major}.{minor}");
        let line = &cats[0].checks[2].description;
        match has_native {
            Some(true) => assert!(line.starts_with("native sidecars are available"), "{line}"),
            Some(false) => assert!(
                line.starts_with("native sidecars are not available"),
                "{line}"
            ),
            None => {}
        }
    }
}

#[test]
fn check_control_plane_namespace() {
    let now = OffsetDateTime::now_utc();
    let mut f = healthy(now);
    f.namespace = Lookup::Missing;
    let cats = run(&f, now, Mode::Default);
    assert_eq!(
        problems(&cats),
        ["weft-namespace: the control-plane namespace weft exists: Error"]
    );
    assert_eq!(
        names(&cats),
        ["kubernetes-api", "weft-namespace"],
        "nothing after a missing namespace"
    );
    f.namespace = Lookup::Failed("namespaces \"weft\" is forbidden".into());
    let cats = run(&f, now, Mode::Default);
    assert!(hint_of(&cats, "the control-plane").contains("forbidden"));
    let mut f = healthy(now);
    f.namespace = Lookup::Found(NamespaceFacts {
        name: "weft".into(),
        ..NamespaceFacts::default()
    });
    let cats = run(&f, now, Mode::Default);
    assert_eq!(
        problems(&cats),
        ["weft-namespace: namespace weft is labelled weft.dev/control-plane-ns=weft: Warning"]
    );
    assert_eq!(
        fix_of(&cats, "namespace weft is labelled"),
        "kubectl label namespace weft --overwrite weft.dev/control-plane-ns=weft"
    );
}

#[test]
fn check_gateway_api_is_only_a_warning() {
    let now = OffsetDateTime::now_utc();
    let desc =
        "gateway-api: the Gateway API HTTPRoute CRD is installed (for traffic splits): Warning";
    for (mode, restart) in [(Mode::Default, true), (Mode::Pre, false)] {
        let mut f = healthy(now);
        f.namespace = if mode == Mode::Pre {
            Lookup::Missing
        } else {
            f.namespace
        };
        f.gateway_api = GatewayApi::Absent;
        let cats = run(&f, now, mode);
        assert_eq!(problems(&cats), [desc]);
        let fix = fix_of(&cats, "the Gateway API");
        assert!(fix.starts_with(&format!(
            "kubectl apply -f {}",
            super::checks::GATEWAY_API_CRDS
        )));
        assert_eq!(
            fix.contains("rollout restart deploy/weft-controller"),
            restart,
            "{fix}"
        );
        f.gateway_api = GatewayApi::Unknown("forbidden".into());
        assert_eq!(problems(&run(&f, now, mode)), [desc]);
    }
}

#[test]
fn check_controller_deployment_and_version() {
    let now = OffsetDateTime::now_utc();
    let avail = "weft-controller: the controller Deployment weft-controller is available";
    let cases = [
        (
            Lookup::Found(DeploymentFacts {
                desired: 3,
                ready: 3,
                available: 3,
            }),
            None,
        ),
        (
            Lookup::Found(DeploymentFacts {
                desired: 3,
                ready: 1,
                available: 1,
            }),
            Some("Warning"),
        ),
        (
            Lookup::Found(DeploymentFacts {
                desired: 1,
                ready: 0,
                available: 0,
            }),
            Some("Error"),
        ),
        (
            Lookup::Found(DeploymentFacts {
                desired: 0,
                ready: 0,
                available: 0,
            }),
            Some("Error"),
        ),
        (Lookup::Missing, Some("Error")),
        (Lookup::Failed("forbidden".into()), Some("Error")),
    ];
    for (d, want) in cases {
        let mut f = healthy(now);
        f.deployment = d.clone();
        let got = problems(&run(&f, now, Mode::Default));
        let want: Vec<String> = want.map(|w| format!("{avail}: {w}")).into_iter().collect();
        assert_eq!(got, want, "{d:?}");
    }
    let mut f = healthy(now);
    f.deployment = Lookup::Missing;
    assert_eq!(
        fix_of(&run(&f, now, Mode::Default), "the controller Deployment"),
        "weft install --identity-external-issuer | kubectl apply -f -"
    );
    f.control_plane_namespace = "mesh".into();
    assert_eq!(
        fix_of(&run(&f, now, Mode::Default), "the controller Deployment"),
        "weft install --identity-external-issuer --namespace mesh | kubectl apply -f -"
    );

    let skew = format!("weft-controller: the controller runs this CLI's version ({V}): Warning");
    for (image, ok) in [
        (format!("ghcr.io/weft-mesh/weft:{V}"), true),
        (format!("registry.local:5000/weft/weft:v{V}"), true),
        ("ghcr.io/weft-mesh/weft:0.0.9".to_string(), false),
        ("ghcr.io/weft-mesh/weft@sha256:abcd".to_string(), false),
    ] {
        let mut f = healthy(now);
        if let Lookup::Found(pods) = &mut f.controller_pods {
            pods[0].containers[0].image = image.clone();
        }
        let want: Vec<String> = if ok { vec![] } else { vec![skew.clone()] };
        assert_eq!(problems(&run(&f, now, Mode::Default)), want, "{image}");
    }
    let mut f = healthy(now);
    f.controller_pods = Lookup::Found(vec![]);
    assert_eq!(problems(&run(&f, now, Mode::Default)), [skew]);
}

#[test]
fn check_image_versions() {
    let cases = [
        ("ghcr.io/weft-mesh/weft:0.1.0", Some("0.1.0")),
        ("weft:v1.2.3", Some("1.2.3")),
        ("registry.local:5000/weft/weft:0.2.0", Some("0.2.0")),
        ("registry.local:5000/weft/weft", None),
        ("ghcr.io/weft-mesh/weft:0.1.0@sha256:ab", Some("0.1.0")),
        ("ghcr.io/weft-mesh/weft@sha256:ab", None),
        ("weft:", None),
    ];
    for (image, want) in cases {
        assert_eq!(image_version(image).as_deref(), want, "{image}");
    }
}
