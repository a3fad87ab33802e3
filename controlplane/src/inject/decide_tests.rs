//! Decision-table tests of [`decide`]: precedence, refusals, native vs classic, ingress,
//! every config annotation, Jobs, and the exact patch shapes.

use super::*;
use crate::inject::patch::apply_json;
use serde_json::json;

pub(super) fn config() -> InjectConfig {
    let mut c = InjectConfig::new("weft", "cluster.local", "example/weft:1.2.3", "weft-test 0");
    c.proxy_version = "1.2.3".into();
    c
}

pub(super) fn pod(annotations: &[(&str, &str)]) -> Value {
    let ann: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "apps", "annotations": ann},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "example/migrate"}],
            "containers": [{"name": "app", "image": "example/web"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })
}

pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn run_with(
    pod: &Value,
    ns: &str,
    ns_ann: &[(&str, &str)],
    cfg: &InjectConfig,
) -> Decision {
    let ns_ann = map(ns_ann);
    decide(
        &PodInput {
            pod,
            template_annotations: None,
            namespace: ns,
            namespace_annotations: &ns_ann,
            workload_kind: None,
        },
        cfg,
    )
}

/// Decides in namespace `apps` with the default config and applies the patch.
pub(super) fn injected(pod: &Value) -> Value {
    match run_with(pod, "apps", &[], &config()) {
        Decision::Inject { patch, .. } => apply_json(pod, &patch).unwrap(),
        Decision::Leave { reason } => panic!("left alone: {reason}"),
    }
}

pub(super) fn leave_reason(d: Decision) -> Skip {
    match d {
        Decision::Leave { reason } => reason,
        Decision::Inject { .. } => panic!("injected"),
    }
}

pub(super) fn names(v: &Value, list: &str) -> Vec<String> {
    v["spec"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn container<'a>(v: &'a Value, list: &str, name: &str) -> &'a Value {
    v["spec"][list]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == json!(name)))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

pub(super) fn env_of(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn annotation_precedence_pod_then_template_then_namespace() {
    use Source::*;
    let en = Ok(Mode::Enabled);
    let ing = Ok(Mode::Ingress);
    let dis = |s| Err(Skip::Disabled(s));
    let ns = || Namespace("apps".into());
    type Want = Result<Mode, Skip>;
    /// (pod, template, namespace) values of weft.dev/inject, and the outcome.
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Want,
    );
    let cases: Vec<Case> = vec![
        (None, None, None, Err(Skip::NotRequested("apps".into()))),
        (None, None, Some("enabled"), en.clone()),
        (None, None, Some("ingress"), ing.clone()),
        (None, None, Some("disabled"), dis(ns())),
        (None, Some("enabled"), None, en.clone()),
        (None, Some("disabled"), Some("enabled"), dis(Template)),
        (None, Some("ingress"), Some("disabled"), ing.clone()),
        (Some("enabled"), None, Some("disabled"), en.clone()),
        (Some("disabled"), Some("enabled"), Some("enabled"), dis(Pod)),
        (Some("ingress"), Some("disabled"), Some("enabled"), ing),
        (Some(" enabled "), None, None, en),
        (
            Some("yes"),
            None,
            Some("enabled"),
            Err(Skip::BadInjectValue {
                origin: Pod,
                value: "yes".into(),
            }),
        ),
        (
            None,
            None,
            Some("Enabled"),
            Err(Skip::BadInjectValue {
                origin: ns(),
                value: "Enabled".into(),
            }),
        ),
    ];
    for (p, t, n, want) in cases {
        let p_ann: Vec<(&str, &str)> = p.map(|v| ("weft.dev/inject", v)).into_iter().collect();
        let the_pod = pod(&p_ann);
        let t_ann = t.map(|v| map(&[("weft.dev/inject", v)]));
        let n_ann = n
            .map(|v| map(&[("weft.dev/inject", v)]))
            .unwrap_or_default();
        let d = decide(
            &PodInput {
                pod: &the_pod,
                template_annotations: t_ann.as_ref(),
                namespace: "apps",
                namespace_annotations: &n_ann,
                workload_kind: None,
            },
            &config(),
        );
        let got = match d {
            Decision::Inject { mode, .. } => Ok(mode),
            Decision::Leave { reason } => Err(reason),
        };
        assert_eq!(got, want, "pod={p:?} template={t:?} namespace={n:?}");
    }
}

#[test]
fn never_injected_namespaces_and_pods() {
    let enabled = [("weft.dev/inject", "enabled")];
    let cases: Vec<(Value, &str, Skip, &str)> = vec![
        (
            pod(&enabled),
            "kube-system",
            Skip::SystemNamespace("kube-system".into()),
            "pods in kube-system are never injected (except ingress controllers that ask for `weft.dev/inject: ingress` on the pod itself)",
        ),
        (
            pod(&enabled),
            "weft",
            Skip::ControlPlaneNamespace("weft".into()),
            "pods in the control plane's namespace \"weft\" are never injected",
        ),
        (
            injected(&pod(&enabled)),
            "apps",
            Skip::AlreadyInjected,
            "the pod already has a weft-proxy container",
        ),
        (
            {
                let mut c = config();
                c.native_sidecars = false;
                let p = pod(&enabled);
                match run_with(&p, "apps", &[], &c) {
                    Decision::Inject { patch, .. } => apply_json(&p, &patch).unwrap(),
                    other => panic!("{other:?}"),
                }
            },
            "apps",
            Skip::AlreadyInjected,
            "the pod already has a weft-proxy container",
        ),
        (
            {
                let mut p = pod(&enabled);
                p["spec"]["hostNetwork"] = json!(true);
                p
            },
            "apps",
            Skip::HostNetwork,
            "hostNetwork pods are not injected: the proxy's iptables rules would redirect the whole node's traffic",
        ),
    ];
    for (p, ns, want, msg) in cases {
        let got = leave_reason(run_with(
            &p,
            ns,
            &[("weft.dev/inject", "enabled")],
            &config(),
        ));
        assert_eq!(got, want);
        assert_eq!(got.to_string(), msg);
    }
    // hostNetwork without a request is just "not requested", not a refusal.
    let mut p = pod(&[]);
    p["spec"]["hostNetwork"] = json!(true);
    let r = leave_reason(run_with(&p, "apps", &[], &config()));
    assert_eq!(r, Skip::NotRequested("apps".into()));
    assert!(!r.is_refusal());
    assert!(Skip::HostNetwork.is_refusal());
}

#[test]
fn native_sidecar_goes_first_among_init_containers() {
    let out = injected(&pod(&[("weft.dev/inject", "enabled")]));
    assert_eq!(
        names(&out, "initContainers"),
        ["weft-init", "weft-proxy", "migrate"]
    );
    assert_eq!(names(&out, "containers"), ["app"]);
    assert_eq!(
        names(&out, "volumes"),
        ["data", "weft-identity", "weft-xtables-lock"]
    );
    let proxy = container(&out, "initContainers", "weft-proxy");
    assert_eq!(proxy["restartPolicy"], json!("Always"));
    assert_eq!(
        proxy["startupProbe"],
        json!({"httpGet": {"path": "/ready", "port": 4191}, "periodSeconds": 1, "failureThreshold": 120})
    );
}

#[test]
fn classic_sidecar_is_the_first_container() {
    let mut cfg = config();
    cfg.native_sidecars = false;
    let p = pod(&[("weft.dev/inject", "enabled")]);
    let Decision::Inject { patch, .. } = run_with(&p, "apps", &[], &cfg) else {
        panic!("not injected")
    };
    let out = apply_json(&p, &patch).unwrap();
    assert_eq!(names(&out, "initContainers"), ["weft-init", "migrate"]);
    assert_eq!(names(&out, "containers"), ["weft-proxy", "app"]);
    let proxy = container(&out, "containers", "weft-proxy");
    assert!(proxy.get("restartPolicy").is_none());
    assert!(proxy.get("startupProbe").is_none());
}

#[test]
fn native_sidecar_annotation_overrides_the_default() {
    for (default, ann, native) in [
        (true, None, true),
        (false, None, false),
        (true, Some("false"), false),
        (false, Some("true"), true),
        (true, Some("true"), true),
        (false, Some("false"), false),
    ] {
        let mut cfg = config();
        cfg.native_sidecars = default;
        let mut a = vec![("weft.dev/inject", "enabled")];
        if let Some(v) = ann {
            a.push(("config.weft.dev/native-sidecar", v));
        }
        let p = pod(&a);
        let Decision::Inject { patch, .. } = run_with(&p, "apps", &[], &cfg) else {
            panic!("not injected")
        };
        let out = apply_json(&p, &patch).unwrap();
        assert_eq!(
            names(&out, "initContainers").contains(&"weft-proxy".to_string()),
            native,
            "default={default} annotation={ann:?}"
        );
        assert_eq!(
            names(&out, "containers").contains(&"weft-proxy".to_string()),
            !native
        );
    }
}

#[test]
fn template_config_annotations_apply_and_the_pod_wins() {
    let p = pod(&[("config.weft.dev/proxy-log-level", "debug")]);
    let t = map(&[
        ("weft.dev/inject", "enabled"),
        ("config.weft.dev/proxy-log-level", "warn"),
        ("config.weft.dev/opaque-ports", "9000"),
    ]);
    let d = decide(
        &PodInput {
            pod: &p,
            template_annotations: Some(&t),
            namespace: "apps",
            namespace_annotations: &BTreeMap::new(),
            workload_kind: None,
        },
        &config(),
    );
    let Decision::Inject { patch, .. } = d else {
        panic!("{d:?}")
    };
    let out = apply_json(&p, &patch).unwrap();
    let env = env_of(container(&out, "initContainers", "weft-proxy"));
    assert_eq!(env["WEFT_PROXY_LOG_LEVEL"], json!("debug"));
    assert_eq!(env["WEFT_PROXY_OPAQUE_PORTS"], json!("9000"));
}

#[test]
fn invalid_config_leaves_the_pod_alone_naming_the_annotation() {
    let cases = [
        ("config.weft.dev/skip-inbound-ports", "ssh", "config.weft.dev/skip-inbound-ports: \"ssh\" is not a list of ports and ranges like 25,8000-8100: \"ssh\" is not a port (1-65535)"),
        ("config.weft.dev/proxy-memory-limit", "64MB", "config.weft.dev/proxy-memory-limit: \"64MB\" is not a resource quantity such as 100m, 0.5, 64Mi or 1G"),
        ("config.weft.dev/native-sidecar", "maybe", "config.weft.dev/native-sidecar: \"maybe\" is not true or false"),
    ];
    for (k, v, msg) in cases {
        let r = leave_reason(run_with(
            &pod(&[("weft.dev/inject", "enabled"), (k, v)]),
            "apps",
            &[],
            &config(),
        ));
        assert!(r.is_refusal());
        assert_eq!(r.to_string(), msg);
    }
}

#[test]
fn job_pods_are_marked_and_classic_ones_exit_with_their_workload() {
    let mut p = pod(&[("weft.dev/inject", "enabled")]);
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate", "uid": "u", "controller": true}]);
    for native in [true, false] {
        let mut cfg = config();
        cfg.native_sidecars = native;
        let Decision::Inject { patch, .. } = run_with(&p, "apps", &[], &cfg) else {
            panic!()
        };
        let out = apply_json(&p, &patch).unwrap();
        assert_eq!(
            annotations_of(&out).get("weft.dev/job").map(String::as_str),
            Some("true")
        );
        let list = if native {
            "initContainers"
        } else {
            "containers"
        };
        let env = env_of(container(&out, list, "weft-proxy"));
        let want = if native { None } else { Some(json!("true")) };
        assert_eq!(
            env.get("WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED").cloned(),
            want,
            "native={native}"
        );
        // Classic: the proxy exits by itself when the controller sees the job finished.
        assert_eq!(
            env.get("WEFT_PROXY_EXIT_WITH_WORKLOAD").cloned(),
            want,
            "native={native}"
        );
    }
    // A non-controller owner reference of kind Job does not count.
    let mut q = pod(&[]);
    q["metadata"]["ownerReferences"] = json!([{"kind": "Job", "name": "x"}]);
    assert!(!owned_by_job(&q));
}

#[test]
fn patch_shapes_for_a_bare_pod_and_a_full_one() {
    // Nothing to append to: whole lists and the annotation map are added.
    let bare = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "app"}]}});
    let Decision::Inject { patch, .. } =
        run_with(&bare, "apps", &[("weft.dev/inject", "enabled")], &config())
    else {
        panic!()
    };
    let paths: Vec<(&str, &str)> = patch
        .iter()
        .map(|op| match op {
            JsonPatchOp::Add { path, .. } => ("add", path.as_str()),
            JsonPatchOp::Replace { path, .. } => ("replace", path.as_str()),
            JsonPatchOp::Remove { path } => ("remove", path.as_str()),
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("add", "/metadata/annotations"),
            ("add", "/spec/initContainers"),
            ("add", "/spec/volumes"),
        ]
    );
    // Existing lists and annotations: entries are inserted, and the pointer escapes '/'.
    let mut full = pod(&[
        ("weft.dev/inject", "enabled"),
        ("weft.dev/proxy-version", "0.0.1"),
    ]);
    full["metadata"]["annotations"]["weft.dev/injected-by"] = json!("someone");
    let mut cfg = config();
    cfg.native_sidecars = false;
    let Decision::Inject { patch, .. } = run_with(&full, "apps", &[], &cfg) else {
        panic!()
    };
    let paths: Vec<String> = patch
        .iter()
        .map(|op| serde_json::to_value(op).unwrap())
        .map(|v| {
            format!(
                "{} {}",
                v["op"].as_str().unwrap(),
                v["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "replace /metadata/annotations/weft.dev~1proxy-version",
            "replace /metadata/annotations/weft.dev~1injected-by",
            "add /spec/initContainers/0",
            "add /spec/containers/0",
            "add /spec/volumes/-",
            "add /spec/volumes/-",
        ]
    );
}

#[test]
fn skipped_patch_records_the_reason() {
    let p = json!({"metadata": {"name": "x"}, "spec": {}});
    assert_eq!(
        serde_json::to_value(skipped_patch(&p, &Skip::HostNetwork)).unwrap(),
        json!([{"op": "add", "path": "/metadata/annotations", "value": {
            "weft.dev/inject-skipped": Skip::HostNetwork.to_string()
        }}])
    );
    let p = pod(&[("weft.dev/inject", "enabled")]);
    assert_eq!(
        serde_json::to_value(skipped_patch(&p, &Skip::HostNetwork)).unwrap(),
        json!([{"op": "add", "path": "/metadata/annotations/weft.dev~1inject-skipped",
                "value": Skip::HostNetwork.to_string()}])
    );
}

#[test]
fn kube_system_admits_only_an_ingress_controller_that_asks_itself() {
    let cfg = config();
    // k3s' bundled Traefik, annotated through a HelmChartConfig: injected in ingress mode.
    let traefik = pod(&[("weft.dev/inject", "ingress")]);
    assert!(matches!(
        run_with(&traefik, "kube-system", &[], &cfg),
        Decision::Inject {
            mode: Mode::Ingress,
            ..
        }
    ));
    // Anything else in kube-system stays alone, even with the namespace annotated.
    for (p, ns_ann) in [
        (pod(&[("weft.dev/inject", "enabled")]), vec![]),
        (pod(&[]), vec![("weft.dev/inject", "ingress")]),
        (pod(&[]), vec![("weft.dev/inject", "enabled")]),
    ] {
        assert!(
            matches!(
                run_with(&p, "kube-system", &ns_ann, &cfg),
                Decision::Leave {
                    reason: Skip::SystemNamespace(_)
                }
            ),
            "{p} {ns_ann:?}"
        );
    }
}
