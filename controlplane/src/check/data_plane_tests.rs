//! Table tests of `--pre` (pre-install) and `--proxy` (weft-data-plane).

use super::checks_tests::*;
use super::data_plane::restart_command;
use super::facts::*;
use super::Mode;
use time::OffsetDateTime;

#[test]
fn check_pre_install_table() {
    let now = OffsetDateTime::now_utc();
    let exists = "pre-install: the control-plane namespace weft does not exist yet: Warning";
    let roles = "pre-install: can create clusterroles (rbac.authorization.k8s.io)";
    let hooks =
        "pre-install: can create mutatingwebhookconfigurations (admissionregistration.k8s.io)";
    let access = |allowed: [Lookup<bool>; 2]| -> Vec<Access> {
        PRE_ACCESS
            .iter()
            .zip(allowed)
            .map(|((g, r), allowed)| Access {
                group: g.to_string(),
                resource: r.to_string(),
                allowed,
                reason: Some("RBAC: denied".into()),
            })
            .collect()
    };
    let yes = || Lookup::Found(true);
    let cases: Vec<(Lookup<NamespaceFacts>, Vec<Access>, Vec<String>)> = vec![
        (Lookup::Missing, access([yes(), yes()]), vec![]),
        (
            Lookup::Found(NamespaceFacts::default()),
            access([yes(), yes()]),
            vec![exists.to_string()],
        ),
        (
            Lookup::Failed("forbidden".into()),
            access([yes(), yes()]),
            vec![exists.to_string()],
        ),
        (
            Lookup::Missing,
            access([Lookup::Found(false), yes()]),
            vec![format!("{roles}: Error")],
        ),
        (
            Lookup::Missing,
            access([yes(), Lookup::Found(false)]),
            vec![format!("{hooks}: Error")],
        ),
        (
            Lookup::Missing,
            access([Lookup::Failed("404".into()), yes()]),
            vec![format!("{roles}: Warning")],
        ),
        (
            Lookup::Missing,
            vec![],
            vec![format!("{roles}: Warning"), format!("{hooks}: Warning")],
        ),
    ];
    for (namespace, access, want) in cases {
        let mut f = healthy(now);
        f.namespace = namespace.clone();
        f.access = access.clone();
        assert_eq!(
            problems(&run(&f, now, Mode::Pre)),
            want,
            "{namespace:?} {access:?}"
        );
    }
    let mut f = healthy(now);
    f.namespace = Lookup::Missing;
    f.access = access([yes(), Lookup::Found(false)]);
    let cats = run(&f, now, Mode::Pre);
    assert!(hint_of(&cats, "can create mutatingwebhookconfigurations")
        .contains("you may not: RBAC: denied."));
    assert_eq!(
        fix_of(&cats, "can create mutatingwebhookconfigurations"),
        "kubectl auth can-i create mutatingwebhookconfigurations.admissionregistration.k8s.io"
    );
}

const READY: &str =
    "weft-data-plane: meshed pods' proxies are ready (ready means they hold a certificate)";
const RESTARTS: &str = "weft-data-plane: meshed pods' proxies have not restarted: Warning";
const UNMESHED: &str = "weft-data-plane: pods in namespaces annotated weft.dev/inject: enabled or ingress have a proxy: Warning";

fn version() -> String {
    format!("weft-data-plane: meshed pods' proxies run this CLI's version ({V}): Warning")
}

#[test]
fn check_data_plane_table() {
    let now = OffsetDateTime::now_utc();
    let mut pending = pod("apps", "new-1", Some((false, 0, V)));
    pending.phase = "Pending".into();
    let mut done = pod("apps", "job-1", None);
    done.phase = "Succeeded".into();
    let mut host = pod("apps", "exporter-1", None);
    host.host_network = true;
    let mut opted_out = pod("apps", "legacy-1", None);
    opted_out
        .annotations
        .insert("weft.dev/inject".into(), "disabled".into());
    let mut refused = pod("apps", "bad-1", None);
    refused.annotations.insert(
        "weft.dev/inject-skipped".into(),
        "hostNetwork pods are not injected".into(),
    );
    let mut classic = pod("apps", "classic-1", None);
    classic
        .containers
        .push(container("weft-proxy", "p", true, 0));
    classic
        .annotations
        .insert("weft.dev/proxy-version".into(), V.into());
    let ok = || pod("apps", "web-1", Some((true, 0, V)));
    let cases: Vec<(&str, Vec<PodFacts>, Vec<String>)> = vec![
        (
            "healthy, with pods the checks ignore",
            vec![
                ok(),
                pending.clone(),
                done,
                host,
                opted_out,
                refused,
                classic,
                pod("kube-system", "coredns-1", None),
                pod("other", "x-1", None),
            ],
            vec![],
        ),
        (
            "not ready",
            vec![ok(), pod("apps", "api-1", Some((false, 0, V)))],
            vec![format!("{READY}: Error")],
        ),
        (
            "restarted",
            vec![pod("apps", "api-1", Some((true, 3, V)))],
            vec![RESTARTS.into()],
        ),
        (
            "old proxy",
            vec![pod("apps", "api-1", Some((true, 0, "0.0.1")))],
            vec![version()],
        ),
        (
            "unmeshed in a meshed namespace",
            vec![ok(), pod("apps", "api-1", None)],
            vec![UNMESHED.into()],
        ),
        (
            "no meshed pods",
            vec![pod("other", "x-1", None)],
            vec![format!("{READY}: Warning")],
        ),
        ("only pending", vec![pending], vec![]),
    ];
    for (name, pods, want) in cases {
        let mut f = healthy(now);
        f.pods = Lookup::Found(pods);
        assert_eq!(problems(&run(&f, now, Mode::Proxy)), want, "{name}");
    }
    let mut f = healthy(now);
    f.pods = Lookup::Found(vec![
        pod("apps", "api-1", None),
        pod("apps", "api-2", None),
        pod("apps", "web-1", Some((false, 1, "0.0.1"))),
    ]);
    let cats = run(&f, now, Mode::Proxy);
    assert_eq!(
        problems(&cats),
        [
            format!("{READY}: Error"),
            RESTARTS.into(),
            version(),
            UNMESHED.into()
        ]
    );
    assert!(hint_of(&cats, "meshed pods' proxies are ready")
        .starts_with("not ready: apps/web-1 (waiting: CrashLoopBackOff). "));
    assert_eq!(
        fix_of(&cats, "meshed pods' proxies are ready"),
        "kubectl -n apps logs web-1 -c weft-proxy; kubectl -n weft logs deploy/weft-controller"
    );
    assert_eq!(
        fix_of(&cats, "meshed pods' proxies have not"),
        "kubectl -n apps logs web-1 -c weft-proxy --previous"
    );
    assert!(hint_of(&cats, "meshed pods' proxies run")
        .starts_with("1 of 1 meshed pods run another proxy version (1 at 0.0.1; "));
    assert!(hint_of(&cats, "pods in namespaces").starts_with("no proxy: apps/api-1, apps/api-2. "));
    // One restart per workload, not per pod.
    assert_eq!(
        fix_of(&cats, "pods in namespaces"),
        "kubectl -n apps rollout restart deployment/api"
    );
    // Unreadable pods or namespaces.
    f.namespaces = Lookup::Failed("forbidden".into());
    assert_eq!(
        problems(&run(&f, now, Mode::Proxy))
            .last()
            .map(String::as_str),
        Some(UNMESHED)
    );
    f.pods = Lookup::Failed("forbidden".into());
    assert_eq!(
        problems(&run(&f, now, Mode::Proxy)),
        ["weft-data-plane: can list pods in all namespaces: Error"]
    );
}

#[test]
fn check_data_plane_lists_at_most_ten() {
    let now = OffsetDateTime::now_utc();
    let mut f = healthy(now);
    f.pods = Lookup::Found(
        (0..12)
            .map(|i| pod("apps", &format!("api{i}-1"), None))
            .collect(),
    );
    let cats = run(&f, now, Mode::Proxy);
    assert!(
        hint_of(&cats, "pods in namespaces").contains("apps/api9-1 and 2 more. "),
        "{}",
        hint_of(&cats, "pods in namespaces")
    );
    assert_eq!(fix_of(&cats, "pods in namespaces").lines().count(), 12);
}

#[test]
fn check_restart_commands() {
    let with_owner = |kind: &str, name: &str| {
        let mut p = pod("apps", "p-1", None);
        p.owner = (!kind.is_empty()).then(|| (kind.to_string(), name.to_string()));
        p
    };
    let cases = [
        (
            "ReplicaSet",
            "web-api-5d8f7c9b6",
            "kubectl -n apps rollout restart deployment/web-api",
        ),
        (
            "StatefulSet",
            "db",
            "kubectl -n apps rollout restart statefulset/db",
        ),
        (
            "DaemonSet",
            "agent",
            "kubectl -n apps rollout restart daemonset/agent",
        ),
        (
            "Job",
            "backup-29",
            "kubectl -n apps delete pod p-1   # Job backup-29 re-creates it",
        ),
        (
            "",
            "",
            "kubectl -n apps delete pod p-1   # not owned by a workload: create it again yourself",
        ),
    ];
    for (kind, name, want) in cases {
        assert_eq!(restart_command(&with_owner(kind, name)), want, "{kind}");
    }
}
