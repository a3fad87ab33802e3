//! `weft inject` and `weft uninject`, run as the real binary on the fixtures in
//! `tests/fixtures/inject/`: the output parsed back and checked structurally, the summary
//! lines checked exactly, and `uninject(inject(x)) == x` for every fixture and mode.

use serde::Deserialize;
use serde_yaml::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inject")
        .join(name)
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn weft(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(WEFT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weft");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait for weft");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn docs(s: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(s)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture")
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for k in path {
        cur = cur.get(*k).unwrap_or_else(|| panic!("no {k} in {path:?}"));
    }
    cur
}

fn template(v: &Value) -> &Value {
    match v["kind"].as_str() {
        Some("Pod") => v,
        Some("CronJob") => at(v, &["spec", "jobTemplate", "spec", "template"]),
        _ => at(v, &["spec", "template"]),
    }
}

fn annotation<'a>(t: &'a Value, key: &str) -> Option<&'a str> {
    t.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

fn names(t: &Value, list: &str) -> Vec<String> {
    t["spec"]
        .get(list)
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

const WORKLOADS_SUMMARY: &str = "\
deployment \"web\" injected
service \"web\" skipped: not a workload
daemonset \"agent\" injected
statefulset \"db\" injected
replicaset \"legacy\" injected
job \"migrate\" injected
cronjob \"report\" injected
pod \"debug\" injected
daemonset \"node-exporter\" skipped: hostNetwork pods are not injected: the proxy's iptables rules would redirect the whole node's traffic
configmap \"settings\" skipped: not a workload
";

#[test]
fn inject_annotates_every_workload_kind() {
    let r = weft(
        &["inject", fixture("workloads.yaml").to_str().unwrap()],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stderr, WORKLOADS_SUMMARY);
    let input = docs(&read("workloads.yaml"));
    let out = docs(&r.stdout);
    assert_eq!(out.len(), input.len());
    for (before, after) in input.iter().zip(&out) {
        let kind = before["kind"].as_str().unwrap();
        let name = before["metadata"]["name"].as_str().unwrap();
        match (kind, name) {
            ("Service" | "ConfigMap", _) | ("DaemonSet", "node-exporter") => {
                assert_eq!(before, after, "{kind} {name} must pass through unchanged")
            }
            _ => {
                let t = template(after);
                assert_eq!(annotation(t, "weft.dev/inject"), Some("enabled"), "{kind}");
                // Only the annotation: no containers added.
                assert_eq!(
                    names(t, "containers"),
                    names(template(before), "containers")
                );
                assert_eq!(
                    names(t, "initContainers"),
                    names(template(before), "initContainers")
                );
                // Everything else is untouched.
                let mut stripped = after.clone();
                let t = match kind {
                    "Pod" => &mut stripped,
                    "CronJob" => &mut stripped["spec"]["jobTemplate"]["spec"]["template"],
                    _ => &mut stripped["spec"]["template"],
                };
                let ann = t["metadata"]["annotations"].as_mapping_mut().unwrap();
                ann.remove("weft.dev/inject");
                if ann.is_empty() {
                    t["metadata"]
                        .as_mapping_mut()
                        .unwrap()
                        .remove("annotations");
                }
                if t["metadata"].as_mapping().is_some_and(|m| m.is_empty()) {
                    t.as_mapping_mut().unwrap().remove("metadata");
                }
                assert_eq!(&stripped, before, "{kind} {name}");
            }
        }
    }
    // Key order of the user's documents is kept.
    assert!(r
        .stdout
        .starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"));
}

#[test]
fn inject_ingress_on_a_list_from_stdin() {
    let r = weft(&["inject", "--ingress", "-"], Some(&read("list.yaml")));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "deployment \"traefik\" injected (ingress mode)\n\
         serviceaccount \"traefik\" skipped: not a workload\n\
         deployment \"coredns\" skipped: pods in kube-system are never injected (except ingress controllers that ask for `weft.dev/inject: ingress` on the pod itself)\n"
    );
    let out = docs(&r.stdout);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["kind"].as_str(), Some("List"));
    let items = out[0]["items"].as_sequence().unwrap();
    assert_eq!(
        annotation(template(&items[0]), "weft.dev/inject"),
        Some("ingress")
    );
    let input = docs(&read("list.yaml"));
    assert_eq!(items[1], input[0]["items"][1]);
    assert_eq!(items[2], input[0]["items"][2]);
}

#[test]
fn inject_manual_writes_the_containers() {
    let r = weft(
        &[
            "inject",
            "--manual",
            fixture("workloads.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        WORKLOADS_SUMMARY.replace(" injected\n", " injected (manual)\n")
    );
    let out = docs(&r.stdout);
    let by_name = |kind: &str, name: &str| -> &Value {
        out.iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let web = template(by_name("Deployment", "web"));
    assert_eq!(names(web, "initContainers"), ["weft-init", "weft-proxy"]);
    assert_eq!(names(web, "containers"), ["web"]);
    assert_eq!(
        names(web, "volumes"),
        ["weft-identity", "weft-xtables-lock"]
    );
    assert_eq!(annotation(web, "weft.dev/inject"), Some("enabled"));
    assert!(annotation(web, "weft.dev/proxy-version").is_some());
    assert!(annotation(web, "weft.dev/injected-by").is_some_and(|s| s.starts_with("weft-cli ")));
    assert_eq!(annotation(web, "weft.dev/job"), None);

    // The workload's own init containers run after the proxy; its volumes stay first; its
    // config annotation reached weft-init.
    let agent = template(by_name("DaemonSet", "agent"));
    assert_eq!(
        names(agent, "initContainers"),
        ["weft-init", "weft-proxy", "setup"]
    );
    assert_eq!(
        names(agent, "volumes"),
        ["cache", "weft-identity", "weft-xtables-lock"]
    );
    let args = &agent["spec"]["initContainers"][0]["args"];
    let args: Vec<&str> = args
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args[args.len() - 2..],
        ["--outbound-ports-to-ignore", "443"]
    );

    for (kind, name) in [("Job", "migrate"), ("CronJob", "report")] {
        let t = template(by_name(kind, name));
        assert_eq!(annotation(t, "weft.dev/job"), Some("true"), "{kind}");
        assert_eq!(names(t, "initContainers"), ["weft-init", "weft-proxy"]);
    }
    let pod = by_name("Pod", "debug");
    assert_eq!(names(pod, "initContainers"), ["weft-init", "weft-proxy"]);
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"].as_str(), Some("Always"));
    assert_eq!(proxy["securityContext"]["runAsUser"].as_u64(), Some(2102));
    // Added mappings read naturally: `name` first.
    assert!(r
        .stdout
        .contains("initContainers:\n      - name: weft-init\n"));
}

#[test]
fn inject_manual_classic_sidecar() {
    let r = weft(
        &[
            "inject",
            "--manual",
            "--classic-sidecar",
            "--proxy-image",
            "registry.local/weft:dev",
            fixture("workloads.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    let out = docs(&r.stdout);
    let job = template(&out[5]);
    assert_eq!(out[5]["kind"].as_str(), Some("Job"));
    assert_eq!(names(job, "initContainers"), ["weft-init"]);
    assert_eq!(names(job, "containers"), ["weft-proxy", "migrate"]);
    let proxy = &job["spec"]["containers"][0];
    assert_eq!(proxy["image"].as_str(), Some("registry.local/weft:dev"));
    assert_eq!(
        job["spec"]["initContainers"][0]["image"].as_str(),
        Some("registry.local/weft:dev")
    );
    let env = proxy["env"].as_sequence().unwrap();
    assert!(env.iter().any(
        |e| e["name"].as_str() == Some("WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED")
            && e["value"].as_str() == Some("true")
    ));
    assert!(proxy.get("restartPolicy").is_none());
}

#[test]
fn invalid_config_is_reported_and_left_unchanged() {
    let r = weft(
        &[
            "inject",
            "--manual",
            fixture("invalid-config.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "deployment \"bad\" skipped: config.weft.dev/proxy-memory-limit: \"64MB\" is not a resource quantity such as 100m, 0.5, 64Mi or 1G\n"
    );
    assert_eq!(docs(&r.stdout), docs(&read("invalid-config.yaml")));
}

#[test]
fn uninject_reverses_inject_for_every_fixture_and_mode() {
    let modes: [&[&str]; 5] = [
        &[],
        &["--ingress"],
        &["--manual"],
        &["--manual", "--ingress"],
        &["--manual", "--classic-sidecar"],
    ];
    for f in ["workloads.yaml", "list.yaml", "invalid-config.yaml"] {
        let original = read(f);
        for mode in modes {
            let mut args = vec!["inject"];
            args.extend_from_slice(mode);
            args.push("-");
            let injected = weft(&args, Some(&original));
            assert!(injected.ok, "{f} {mode:?}: {}", injected.stderr);
            let un = weft(&["uninject", "-"], Some(&injected.stdout));
            assert!(un.ok, "{f} {mode:?}: {}", un.stderr);
            assert_eq!(docs(&un.stdout), docs(&original), "{f} {mode:?}");
        }
    }
}

#[test]
fn uninject_summary() {
    let injected = weft(&["inject", "--manual", "-"], Some(&read("workloads.yaml")));
    let un = weft(&["uninject", "-"], Some(&injected.stdout));
    assert_eq!(
        un.stderr,
        "deployment \"web\" uninjected\n\
         service \"web\" skipped: not a workload\n\
         daemonset \"agent\" uninjected\n\
         statefulset \"db\" uninjected\n\
         replicaset \"legacy\" uninjected\n\
         job \"migrate\" uninjected\n\
         cronjob \"report\" uninjected\n\
         pod \"debug\" uninjected\n\
         daemonset \"node-exporter\" skipped: not injected\n\
         configmap \"settings\" skipped: not a workload\n"
    );
}

#[test]
fn errors_name_the_problem() {
    let r = weft(&["inject", "-"], Some("kind: Pod\n---\nkind: [unclosed\n"));
    assert!(!r.ok);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("weft inject: document 2 is not valid YAML: "),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");

    let r = weft(&["uninject", "/nonexistent/x.yaml"], None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("weft uninject: cannot read /nonexistent/x.yaml: "),
        "{}",
        r.stderr
    );
}

/// The HelmChartConfig in docs/ingress.md, as a user would drop it on a k3s server: its
/// values, applied to a Traefik Deployment in kube-system the way the Traefik chart renders
/// `deployment.podAnnotations` and `deployment.podLabels`, make Traefik injected in ingress
/// mode. (No Traefik runs here; this checks the documented values do what the page says.)
#[test]
fn the_k3s_traefik_helmchartconfig_meshes_traefik_in_ingress_mode() {
    let page = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ingress.md"),
    )
    .expect("docs/ingress.md");
    let block = page
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("kind: HelmChartConfig"))
        .expect("a HelmChartConfig example");
    let hcc: Value = serde_yaml::from_str(block).expect("the example is YAML");
    assert_eq!(at(&hcc, &["metadata", "name"]).as_str(), Some("traefik"));
    assert_eq!(
        at(&hcc, &["metadata", "namespace"]).as_str(),
        Some("kube-system")
    );
    let values: Value = serde_yaml::from_str(
        at(&hcc, &["spec", "valuesContent"])
            .as_str()
            .expect("valuesContent is a string"),
    )
    .expect("valuesContent is YAML");
    let annotations = at(&values, &["deployment", "podAnnotations"]).clone();
    let labels = at(&values, &["deployment", "podLabels"]).clone();
    assert_eq!(
        labels["weft.dev/inject"].as_str(),
        Some("ingress"),
        "the webhook's objectSelector label"
    );

    let mut deployment: Value = serde_yaml::from_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: traefik, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app.kubernetes.io/name: traefik}}\n  template:\n    metadata:\n      labels: {app.kubernetes.io/name: traefik}\n    spec:\n      serviceAccountName: traefik\n      containers:\n        - name: traefik\n          image: rancher/mirrored-library-traefik:3.3.6\n          ports: [{name: web, containerPort: 8000}, {name: websecure, containerPort: 8443}]\n",
    )
    .unwrap();
    deployment["spec"]["template"]["metadata"]["annotations"] = annotations;
    for (k, v) in labels.as_mapping().expect("podLabels is a map") {
        deployment["spec"]["template"]["metadata"]["labels"][k] = v.clone();
    }
    let input = serde_yaml::to_string(&deployment).unwrap();
    let out = weft(&["inject", "--manual", "-"], Some(&input));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "deployment \"traefik\" injected (manual, ingress mode)\n"
    );
    let injected = &docs(&out.stdout)[0];
    let spec = at(injected, &["spec", "template", "spec"]);
    let proxy = spec["initContainers"]
        .as_sequence()
        .expect("init containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("weft-proxy"))
        .expect("weft-proxy as a native sidecar");
    let ingress = proxy["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("WEFT_PROXY_INGRESS_MODE"))
        .map(|e| e["value"].as_str());
    assert_eq!(ingress, Some(Some("true")));

    // Without the annotation, kube-system stays alone whatever `weft inject` is asked.
    deployment["spec"]["template"]["metadata"]
        .as_mapping_mut()
        .unwrap()
        .remove("annotations");
    let input = serde_yaml::to_string(&deployment).unwrap();
    let out = weft(&["inject", "--ingress", "-"], Some(&input));
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("deployment \"traefik\" skipped: pods in kube-system are never injected"),
        "{}",
        out.stderr
    );
}
