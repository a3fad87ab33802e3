//! `weft install` and `weft uninstall`: the control plane's manifests, printed as one
//! multi-document YAML stream in apply order, for `weft install | kubectl apply -f -`
//! (docs/install.md).
//!
//! Every object is built as data (`serde_json::Value`), never from text templates, then
//! written as YAML with `apiVersion`, `kind` and `metadata` first. The parts:
//!
//! - [`options`]: the flags and the `--set key=value` overrides, checked;
//! - [`rbac`]: the ServiceAccount and the least-privilege ClusterRole, Role and bindings;
//! - [`identity`]: the issuer Secret, generated with `weft identity generate`'s generator;
//! - [`workload`]: the Namespace, the controller's Deployment, PodDisruptionBudget and
//!   Services;
//! - [`webhook`]: the MutatingWebhookConfiguration for the proxy injector;
//! - [`uninstall`]: what to delete.
//!
//! Weft defines no CustomResourceDefinitions yet, so there is no `--crds` (docs/install.md
//! says why: an empty stream makes `kubectl apply` fail).

pub mod identity;
pub mod options;
pub mod rbac;
pub mod uninstall;
pub mod webhook;
pub mod workload;

use crate::cli::{InstallArgs, UninstallArgs};
use crate::identity::ca::{CaError, Generated};
use options::{Options, OptionsError};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::process::ExitCode;
use time::OffsetDateTime;

/// The controller's name: Deployment, ServiceAccount, RBAC, Service.
pub const CONTROLLER: &str = weft_api::certify::CONTROLLER_SERVICE_ACCOUNT;
/// The Service for the admin port.
pub const ADMIN_SERVICE: &str = "weft-controller-admin";
/// The Secret holding the trust anchor and the issuer.
pub const ISSUER_SECRET: &str = "weft-identity-issuer";
/// The MutatingWebhookConfiguration.
pub const WEBHOOK_CONFIG: &str = "weft-proxy-injector";
/// On the control plane's Namespace and pods; its value is the namespace's name.
pub const CONTROL_PLANE_NS_LABEL: &str = "weft.dev/control-plane-ns";
/// The injection annotation (docs/injection.md).
pub const INJECT_ANNOTATION: &str = "weft.dev/inject";

/// Why nothing was printed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Options(#[from] OptionsError),
    #[error("cannot generate the identity issuer: {0}")]
    Identity(#[from] CaError),
    #[error("cannot write the manifests as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("cannot write to stdout: {0}")]
    Write(#[from] std::io::Error),
}

/// The labels every object carries: `app.kubernetes.io/name` is `weft-<component>` (the
/// controller's pods are selected by `app.kubernetes.io/name: weft-controller`).
pub fn labels(component: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "app.kubernetes.io/name".into(),
        json!(format!("weft-{component}")),
    );
    m.insert("app.kubernetes.io/part-of".into(), json!("weft"));
    m.insert("app.kubernetes.io/component".into(), json!(component));
    m.insert("app.kubernetes.io/version".into(), json!(version));
    m
}

/// An object: `apiVersion`, `kind`, `metadata` (name, namespace when namespaced, labels)
/// and the fields of `body`.
pub fn object(
    api_version: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    labels: Map<String, Value>,
    body: Value,
) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    if !labels.is_empty() {
        metadata["labels"] = Value::Object(labels);
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata});
    if let Value::Object(fields) = body {
        for (k, v) in fields {
            obj[k] = v;
        }
    }
    obj
}

/// Every object `weft install` prints, in apply order. `issuer` is the generated anchor and
/// issuer, `None` with `--identity-external-issuer`.
pub fn render(o: &Options, issuer: Option<&Generated>) -> Vec<Value> {
    let (ns, v) = (o.namespace.as_str(), o.version.as_str());
    let mut docs = vec![
        workload::namespace(ns, v),
        rbac::service_account(ns, v),
        rbac::cluster_role(v),
        rbac::cluster_role_binding(ns, v),
        rbac::role(ns, v),
        rbac::role_binding(ns, v),
    ];
    if let Some(g) = issuer {
        docs.push(identity::secret(ns, v, g));
    }
    docs.push(workload::service(o));
    docs.push(workload::admin_service(o));
    // The webhook before the controller: the controller writes the caBundle once, at
    // start, if the configuration exists (controller/injector.rs), so with an external
    // issuer it must exist by then. Meanwhile `failurePolicy: Ignore` lets pods through.
    docs.push(webhook::configuration(
        ns,
        v,
        issuer.map(|g| g.anchor_pem.as_str()),
    ));
    docs.push(workload::deployment(o));
    if o.ha {
        docs.push(workload::pod_disruption_budget(o));
    }
    docs
}

/// The objects as a YAML stream: each document starts with `---`.
pub fn to_yaml_stream(docs: &[Value]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&ordered(d))?);
    }
    Ok(out)
}

/// `serde_json` sorts keys; put `apiVersion`, `kind`, `metadata` first at the top, and
/// `name`, `namespace` first in `metadata`, as people write them. The rest stays sorted.
fn ordered(doc: &Value) -> serde_yaml::Value {
    fn first(
        obj: &Map<String, Value>,
        keys: &[&str],
        nested: Option<(&str, &[&str])>,
    ) -> serde_yaml::Mapping {
        let mut m = serde_yaml::Mapping::new();
        let order = keys
            .iter()
            .copied()
            .filter(|k| obj.contains_key(*k))
            .chain(obj.keys().map(String::as_str).filter(|k| !keys.contains(k)));
        for k in order {
            let Some(v) = obj.get(k) else { continue };
            let value = match (nested, v) {
                (Some((key, inner)), Value::Object(o)) if key == k => {
                    serde_yaml::Value::Mapping(first(o, inner, None))
                }
                _ => serde_yaml::to_value(v).unwrap_or(serde_yaml::Value::Null),
            };
            m.insert(serde_yaml::Value::String(k.to_string()), value);
        }
        m
    }
    match doc {
        Value::Object(o) => serde_yaml::Value::Mapping(first(
            o,
            &["apiVersion", "kind", "metadata"],
            Some(("metadata", &["name", "namespace", "labels", "annotations"])),
        )),
        other => serde_yaml::to_value(other).unwrap_or(serde_yaml::Value::Null),
    }
}

fn install(args: &InstallArgs) -> Result<(String, Vec<String>), InstallError> {
    let opts = Options::from_args(args)?;
    let (generated, notes) = if opts.external_issuer {
        (None, identity::external_notes(&opts.namespace))
    } else {
        let g = identity::generate(&opts.namespace, OffsetDateTime::now_utc())?;
        let notes = identity::generated_notes(&g);
        (Some(g), notes)
    };
    let yaml = to_yaml_stream(&render(&opts, generated.as_ref()))?;
    Ok((yaml, notes))
}

/// `weft install`: the stream on stdout, notes on stderr; on any error nothing on stdout.
pub fn main_install(args: InstallArgs) -> ExitCode {
    let result = install(&args).and_then(|(yaml, notes)| {
        let mut out = std::io::stdout().lock();
        out.write_all(yaml.as_bytes())?;
        out.flush()?;
        Ok(notes)
    });
    match result {
        Ok(notes) => {
            let mut err = std::io::stderr().lock();
            for n in notes {
                let _ = writeln!(err, "{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft install: {e}");
            ExitCode::from(1)
        }
    }
}

/// `weft uninstall`.
pub fn main_uninstall(args: UninstallArgs) -> ExitCode {
    let result = options::check_namespace(&args.namespace)
        .map_err(InstallError::from)
        .and_then(|()| Ok(to_yaml_stream(&uninstall::objects(&args.namespace))?))
        .and_then(|yaml| {
            let mut out = std::io::stdout().lock();
            out.write_all(yaml.as_bytes())?;
            out.flush()?;
            Ok(())
        });
    match result {
        Ok(()) => {
            eprintln!("{}", uninstall::note(&args.namespace));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft uninstall: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(flags: &[&str]) -> Options {
        use argh::FromArgs;
        Options::from_args(&InstallArgs::from_args(&["install"], flags).unwrap()).unwrap()
    }

    fn kinds(docs: &[Value]) -> Vec<String> {
        docs.iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn install_renders_in_apply_order() {
        let g = identity::generate("weft", OffsetDateTime::now_utc()).unwrap();
        let docs = render(&opts(&[]), Some(&g));
        assert_eq!(
            kinds(&docs),
            [
                "Namespace/weft",
                "ServiceAccount/weft-controller",
                "ClusterRole/weft-controller",
                "ClusterRoleBinding/weft-controller",
                "Role/weft-controller",
                "RoleBinding/weft-controller",
                "Secret/weft-identity-issuer",
                "Service/weft-controller",
                "Service/weft-controller-admin",
                "MutatingWebhookConfiguration/weft-proxy-injector",
                "Deployment/weft-controller",
            ]
        );
        let docs = render(&opts(&["--ha", "--identity-external-issuer"]), None);
        let k = kinds(&docs);
        assert_eq!(
            k.last().map(String::as_str),
            Some("PodDisruptionBudget/weft-controller")
        );
        assert!(!k.iter().any(|k| k.starts_with("Secret/")));
    }

    #[test]
    fn install_yaml_puts_api_version_kind_metadata_first() {
        let docs = render(&opts(&["--identity-external-issuer"]), None);
        let yaml = to_yaml_stream(&docs).unwrap();
        assert!(
            yaml.starts_with(
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft\n  labels:\n"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: weft-controller\n  namespace: weft\n"));
        assert_eq!(yaml.matches("\n---\n").count() + 1, docs.len());
        // It parses back to the same objects.
        use serde::Deserialize;
        let back: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(back, docs);
    }
}
