//! `weft inject` and `weft uninject`: pipe-friendly rewriting of YAML manifests.
//!
//! Input is one or more YAML documents (`---`), each a resource or a `List` of them. For
//! Pods, Deployments, DaemonSets, StatefulSets, ReplicaSets, ReplicationControllers, Jobs
//! and CronJobs the pod template is changed; everything else passes through unchanged.
//! Output is YAML on stdout (key order kept, comments lost), one summary line per resource
//! on stderr. Injection runs the same [`decide`] as the webhook, so whatever the webhook
//! would refuse (hostNetwork, invalid `config.weft.dev/*` values, the system namespaces) is
//! reported and left unchanged.

use super::annotations as ann;
use super::containers::VOLUMES;
use super::decide::{decide, Decision, Mode, PodInput};
use super::patch::{apply, PatchError};
use super::{InjectConfig, INIT_CONTAINER, PROXY_CONTAINER};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// What to do to each workload.
#[derive(Debug, Clone)]
pub enum Action {
    /// Add `weft.dev/inject: <mode>` to the template; with `manual`, also the containers.
    Inject {
        mode: Mode,
        manual: bool,
        config: Box<InjectConfig>,
    },
    /// Remove everything injection adds.
    Uninject,
}

/// Why a manifest could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("document {doc} is not valid YAML: {source}")]
    Yaml {
        doc: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{resource}: the pod template cannot be read as JSON: {reason}")]
    Template { resource: String, reason: String },
    #[error("{resource}: cannot apply the injection patch: {source}")]
    Patch {
        resource: String,
        #[source]
        source: PatchError,
    },
    #[error("cannot write YAML: {0}")]
    Write(serde_yaml::Error),
}

/// The rewritten documents and one summary line per resource.
#[derive(Debug, Default)]
pub struct Outcome {
    pub output: String,
    pub summary: Vec<String>,
}

/// Rewrites every document of `input`.
pub fn rewrite(input: &str, action: &Action) -> Result<Outcome, ManifestError> {
    let mut out = Outcome::default();
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let mut v =
            Value::deserialize(doc).map_err(|source| ManifestError::Yaml { doc: i + 1, source })?;
        if v.is_null() {
            continue;
        }
        process(&mut v, action, &mut out.summary)?;
        docs.push(serde_yaml::to_string(&v).map_err(ManifestError::Write)?);
    }
    out.output = docs.join("---\n");
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(*k)?;
    }
    cur.as_str()
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for k in path {
        cur = cur.get_mut(*k)?;
    }
    Some(cur)
}

/// Where each workload kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn process(
    obj: &mut Value,
    action: &Action,
    summary: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let kind = str_at(obj, &["kind"]).unwrap_or("").to_string();
    if kind == "List" || (kind.ends_with("List") && obj.get("items").is_some()) {
        if let Some(Value::Sequence(items)) = obj.get_mut("items") {
            for item in items {
                process(item, action, summary)?;
            }
        }
        return Ok(());
    }
    let name = str_at(obj, &["metadata", "name"])
        .or_else(|| str_at(obj, &["metadata", "generateName"]))
        .unwrap_or("<unnamed>")
        .to_string();
    let label = if kind.is_empty() {
        format!("document {name:?}")
    } else {
        format!("{} {name:?}", kind.to_lowercase())
    };
    let Some(path) = template_path(&kind) else {
        summary.push(format!("{label} skipped: not a workload"));
        return Ok(());
    };
    let namespace = str_at(obj, &["metadata", "namespace"])
        .unwrap_or("default")
        .to_string();
    let is_pod = path.is_empty();
    let Some(template) = get_mut(obj, path).filter(|t| t.is_mapping()) else {
        summary.push(format!(
            "{label} skipped: no pod template at {}",
            path.join(".")
        ));
        return Ok(());
    };
    let line = match action {
        Action::Inject {
            mode,
            manual,
            config,
        } => inject(template, &label, &kind, &namespace, *mode, *manual, config)?,
        Action::Uninject => uninject(template, is_pod),
    };
    summary.push(format!("{label} {line}"));
    Ok(())
}

fn annotations_mut(template: &mut Value) -> Option<&mut Mapping> {
    let t = template.as_mapping_mut()?;
    let meta = t
        .entry(Value::from("metadata"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if meta.is_null() {
        *meta = Value::Mapping(Mapping::new());
    }
    let ann = meta
        .as_mapping_mut()?
        .entry(Value::from("annotations"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if ann.is_null() {
        *ann = Value::Mapping(Mapping::new());
    }
    ann.as_mapping_mut()
}

fn inject(
    template: &mut Value,
    label: &str,
    kind: &str,
    namespace: &str,
    mode: Mode,
    manual: bool,
    config: &InjectConfig,
) -> Result<String, ManifestError> {
    // In kube-system only a template that already asks for ingress mode itself is meshed
    // (k3s' Traefik): `weft inject` adding the annotation does not count.
    // It stays in ingress mode whatever `weft inject` was asked.
    let mode = if namespace == super::KUBE_SYSTEM {
        let json = serde_json::to_value(&*template).unwrap_or_default();
        if !super::decide::asks_for_ingress(&super::decide::annotations_of(&json)) {
            let reason = super::decide::Skip::SystemNamespace(super::KUBE_SYSTEM.into());
            return Ok(format!("skipped: {reason}"));
        }
        Mode::Ingress
    } else {
        mode
    };
    let mut candidate = template.clone();
    let Some(annotations) = annotations_mut(&mut candidate) else {
        return Ok("skipped: metadata is not a mapping".into());
    };
    annotations.insert(ann::INJECT.into(), mode.as_str().into());
    let json = serde_json::to_value(&candidate).map_err(|e| ManifestError::Template {
        resource: label.to_string(),
        reason: e.to_string(),
    })?;
    let decision = decide(
        &PodInput {
            pod: &json,
            template_annotations: None,
            namespace,
            namespace_annotations: &BTreeMap::new(),
            workload_kind: Some(kind),
        },
        config,
    );
    match decision {
        Decision::Leave { reason } => Ok(format!("skipped: {reason}")),
        Decision::Inject { patch, .. } => {
            if manual {
                apply(&mut candidate, &patch).map_err(|source| ManifestError::Patch {
                    resource: label.to_string(),
                    source,
                })?;
            }
            *template = candidate;
            Ok(match (manual, mode) {
                (false, Mode::Enabled) => "injected".into(),
                (false, Mode::Ingress) => "injected (ingress mode)".into(),
                (true, Mode::Enabled) => "injected (manual)".into(),
                (true, Mode::Ingress) => "injected (manual, ingress mode)".into(),
            })
        }
    }
}

/// Removes named entries from a list; drops the list if that empties it.
fn remove_named(spec: &mut Mapping, list: &str, names: &[&str]) -> bool {
    let Some(Value::Sequence(items)) = spec.get_mut(list) else {
        return false;
    };
    let before = items.len();
    items.retain(|c| {
        !names
            .iter()
            .any(|n| c.get("name").and_then(Value::as_str) == Some(n))
    });
    let changed = items.len() != before;
    if changed && items.is_empty() {
        spec.remove(list);
    }
    changed
}

fn uninject(template: &mut Value, is_pod: bool) -> String {
    let mut changed = false;
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_mapping_mut) {
        changed |= remove_named(spec, "containers", &[PROXY_CONTAINER]);
        changed |= remove_named(spec, "initContainers", &[INIT_CONTAINER, PROXY_CONTAINER]);
        changed |= remove_named(spec, "volumes", &VOLUMES);
    }
    if let Some(t) = template.as_mapping_mut() {
        if let Some(meta) = t.get_mut("metadata").and_then(Value::as_mapping_mut) {
            if let Some(a) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
                for k in ann::WRITTEN {
                    changed |= a.remove(k).is_some();
                }
                if a.is_empty() {
                    meta.remove("annotations");
                }
            }
            if meta.is_empty() && !is_pod {
                t.remove("metadata");
            }
        }
    }
    if changed {
        "uninjected".into()
    } else {
        "skipped: not injected".into()
    }
}

/// `weft inject` / `weft uninject`: reads FILE or `-`, writes YAML to stdout.
pub fn main(file: &Path, action: Action, command: &str) -> ExitCode {
    let (name, read) = if file == Path::new("-") {
        let mut s = String::new();
        (
            "stdin".to_string(),
            std::io::stdin().read_to_string(&mut s).map(|_| s),
        )
    } else {
        (file.display().to_string(), std::fs::read_to_string(file))
    };
    let result = read
        .map_err(|source| ManifestError::Read { name, source })
        .and_then(|input| rewrite(&input, &action));
    match result {
        Ok(out) => {
            for line in out.summary {
                eprintln!("{line}");
            }
            // Not print!: a reader that stops early (`| head`) is not an error worth a panic.
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(out.output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft {command}: cannot write to stdout: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("weft {command}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `weft inject`: builds the [`Action`] from the flags.
pub fn main_inject(args: crate::cli::InjectArgs) -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let image = args
        .proxy_image
        .unwrap_or_else(|| format!("{}:{version}", super::DEFAULT_IMAGE_REPOSITORY));
    let mut config = InjectConfig::new(
        &args.control_plane_namespace,
        &args.trust_domain,
        &image,
        &format!("weft-cli {version}"),
    );
    if let Some(init) = args.init_image {
        config.init_image = init;
    }
    config.native_sidecars = !args.classic_sidecar;
    let mode = if args.ingress {
        Mode::Ingress
    } else {
        Mode::Enabled
    };
    let action = Action::Inject {
        mode,
        manual: args.manual,
        config: Box::new(config),
    };
    main(&args.file, action, "inject")
}

/// Moves a bare `-` argument of `weft inject` / `weft uninject` behind `--`, where argh
/// takes it as the positional FILE instead of an unknown flag.
pub fn dash_as_positional(mut args: Vec<String>) -> Vec<String> {
    let is_ours = matches!(args.get(1).map(String::as_str), Some("inject" | "uninject"));
    let ended = args.iter().position(|a| a == "--");
    let dash = args.iter().position(|a| a == "-");
    match (is_ours, dash, ended) {
        (true, Some(i), None) => {
            args.remove(i);
            args.extend(["--".to_string(), "-".to_string()]);
            args
        }
        _ => args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dash_moves_behind_double_dash() {
        assert_eq!(
            dash_as_positional(v(&["weft", "inject", "-", "--manual"])),
            v(&["weft", "inject", "--manual", "--", "-"])
        );
        assert_eq!(
            dash_as_positional(v(&["weft", "uninject", "-"])),
            v(&["weft", "uninject", "--", "-"])
        );
        for unchanged in [
            v(&["weft", "inject", "--", "-"]),
            v(&["weft", "inject", "f.yaml"]),
            v(&["weft", "controller", "-"]),
        ] {
            assert_eq!(dash_as_positional(unchanged.clone()), unchanged);
        }
    }
}
