//! What `weft install` is asked for: the flags, the `--set key=value` overrides, and the
//! checks on both, resolved into one [`Options`] before any manifest is built.
//!
//! The `--set` keys are a small fixed list ([`SET_KEYS`]); an unknown key is refused with
//! the list, so a typo never silently installs the default.

use crate::cli::InstallArgs;
use crate::inject::annotations::quantity_value;
use crate::inject::KUBE_SYSTEM;

/// Where the images come from unless `--registry` says otherwise.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/weft-mesh";
/// Controller replicas with `--ha` (and the fewest `--ha` accepts).
pub const HA_REPLICAS: u32 = 3;
const HA_MIN_REPLICAS: u32 = 2;

/// The `--set` keys, with what they take; listed in errors and in docs/install.md.
pub const SET_KEYS: &[(&str, &str)] = &[
    (
        "controller.replicas",
        "a whole number, 1 or more (default 1; 3 with --ha)",
    ),
    (
        "controller.logLevel",
        "the controller's --log-level, e.g. debug or warn,weft=debug (default info)",
    ),
    (
        "controller.image",
        "the controller's image (default <registry>/weft:<version>)",
    ),
    (
        "controller.imagePullPolicy",
        "IfNotPresent, Always or Never (default IfNotPresent)",
    ),
    (
        "controller.resources.requests.cpu",
        "a quantity (default 20m)",
    ),
    (
        "controller.resources.requests.memory",
        "a quantity (default 32Mi)",
    ),
    (
        "controller.resources.limits.cpu",
        "a quantity (default: no limit)",
    ),
    (
        "controller.resources.limits.memory",
        "a quantity (default 128Mi)",
    ),
    (
        "proxy.image",
        "the image the injector gives meshed pods (default <registry>/weft-proxy:<version>)",
    ),
];

/// Why the flags cannot be turned into manifests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("--namespace {0:?} is not a valid namespace name (a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)")]
    Namespace(String),
    #[error("--namespace {0}: Weft needs a namespace of its own (`weft uninstall` deletes it, and the webhook never sees it); default and kube-* are refused")]
    SharedNamespace(String),
    #[error("--registry {0:?} is not an image registry such as ghcr.io/weft-mesh or registry.local:5000/weft")]
    Registry(String),
    #[error("--version {0:?} is not an image tag usable as a label value (letters, digits, '_', '.', '-'; at most 63; starting and ending with a letter or digit)")]
    Version(String),
    #[error("--set {0:?}: expected key=value")]
    SetSyntax(String),
    #[error("--set {key}: unknown key; the known keys are: {known}")]
    UnknownKey { key: String, known: String },
    #[error("--set {key}={value}: expected {expected}")]
    SetValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("--ha with controller.replicas={0}: high availability needs at least {HA_MIN_REPLICAS} replicas (the PodDisruptionBudget keeps one up)")]
    HaReplicas(u32),
    #[error(
        "controller.resources: the memory request {request} is above the memory limit {limit}"
    )]
    MemoryRequestOverLimit { request: String, limit: String },
    #[error("controller.resources: the CPU request {request} is above the CPU limit {limit}")]
    CpuRequestOverLimit { request: String, limit: String },
}

/// The controller container's requests and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    /// The controller idles at a few MiB (budget ≤ 24 MiB at 100 pods): 32Mi requested,
    /// 128Mi as the ceiling; no CPU limit, so a burst at start (listing every pod) is not
    /// throttled.
    fn default() -> Self {
        Self {
            cpu_request: "20m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: None,
            memory_limit: Some("128Mi".into()),
        }
    }
}

/// Everything the manifests depend on, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub namespace: String,
    pub ha: bool,
    pub external_issuer: bool,
    /// The image tag, recorded as `app.kubernetes.io/version` too.
    pub version: String,
    pub replicas: u32,
    /// `None`: the controller's default (`info`), and no `--log-level` argument.
    pub log_level: Option<String>,
    pub controller_image: String,
    pub proxy_image: String,
    pub image_pull_policy: String,
    pub resources: Resources,
}

impl Options {
    /// The flags, then every `--set` in order (a later one wins), then the cross-checks.
    pub fn from_args(args: &InstallArgs) -> Result<Self, OptionsError> {
        check_namespace(&args.namespace)?;
        let registry = args.registry.as_deref().unwrap_or(DEFAULT_REGISTRY);
        let registry = registry.strip_suffix('/').unwrap_or(registry);
        if !is_registry(registry) {
            return Err(OptionsError::Registry(registry.to_string()));
        }
        let version = args
            .version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        if !is_tag(&version) {
            return Err(OptionsError::Version(version));
        }
        let mut opts = Options {
            namespace: args.namespace.clone(),
            ha: args.ha,
            external_issuer: args.identity_external_issuer,
            replicas: if args.ha { HA_REPLICAS } else { 1 },
            log_level: None,
            controller_image: format!("{registry}/weft:{version}"),
            proxy_image: format!("{registry}/weft-proxy:{version}"),
            image_pull_policy: "IfNotPresent".into(),
            resources: Resources::default(),
            version,
        };
        for set in &args.set {
            opts.set(set)?;
        }
        if opts.ha && opts.replicas < HA_MIN_REPLICAS {
            return Err(OptionsError::HaReplicas(opts.replicas));
        }
        let r = &opts.resources;
        if let Some(limit) = &r.memory_limit {
            if exceeds(&r.memory_request, limit) {
                return Err(OptionsError::MemoryRequestOverLimit {
                    request: r.memory_request.clone(),
                    limit: limit.clone(),
                });
            }
        }
        if let Some(limit) = &r.cpu_limit {
            if exceeds(&r.cpu_request, limit) {
                return Err(OptionsError::CpuRequestOverLimit {
                    request: r.cpu_request.clone(),
                    limit: limit.clone(),
                });
            }
        }
        Ok(opts)
    }

    /// Applies one `key=value`.
    fn set(&mut self, kv: &str) -> Result<(), OptionsError> {
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| OptionsError::SetSyntax(kv.to_string()))?;
        let (key, value) = (key.trim(), value.trim());
        let bad = |expected: &'static str| OptionsError::SetValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        match key {
            "controller.replicas" => {
                self.replicas = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("a whole number, 1 or more"))?;
            }
            "controller.logLevel" => {
                use std::str::FromStr;
                if value.is_empty() || tracing_subscriber::filter::Targets::from_str(value).is_err()
                {
                    return Err(bad("a log level: error, warn, info, debug, trace, or per target such as warn,weft=debug"));
                }
                self.log_level = Some(value.to_string());
            }
            "controller.image" | "proxy.image" => {
                if !is_image(value) {
                    return Err(bad(
                        "an image reference such as ghcr.io/weft-mesh/weft:0.1.0",
                    ));
                }
                if key == "proxy.image" {
                    self.proxy_image = value.to_string();
                } else {
                    self.controller_image = value.to_string();
                }
            }
            "controller.imagePullPolicy" => {
                if !matches!(value, "IfNotPresent" | "Always" | "Never") {
                    return Err(bad("IfNotPresent, Always or Never"));
                }
                self.image_pull_policy = value.to_string();
            }
            "controller.resources.requests.cpu"
            | "controller.resources.requests.memory"
            | "controller.resources.limits.cpu"
            | "controller.resources.limits.memory" => {
                if quantity_value(value).is_none() {
                    return Err(bad("a resource quantity such as 100m, 0.5, 64Mi or 1G"));
                }
                let v = value.to_string();
                let r = &mut self.resources;
                match key {
                    "controller.resources.requests.cpu" => r.cpu_request = v,
                    "controller.resources.requests.memory" => r.memory_request = v,
                    "controller.resources.limits.cpu" => r.cpu_limit = Some(v),
                    _ => r.memory_limit = Some(v),
                }
            }
            _ => {
                return Err(OptionsError::UnknownKey {
                    key: key.to_string(),
                    known: SET_KEYS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
        Ok(())
    }
}

/// A namespace Weft may own: a DNS-1123 label, and not one the cluster or others share.
pub fn check_namespace(ns: &str) -> Result<(), OptionsError> {
    if !is_dns_label(ns) {
        return Err(OptionsError::Namespace(ns.to_string()));
    }
    if ns == KUBE_SYSTEM || ns.starts_with("kube-") || ns == "default" {
        return Err(OptionsError::SharedNamespace(ns.to_string()));
    }
    Ok(())
}

fn exceeds(request: &str, limit: &str) -> bool {
    matches!((quantity_value(request), quantity_value(limit)), (Some(r), Some(l)) if r > l)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `host[:port][/path…]`: lowercase-insensitive characters registries accept, no
/// whitespace, no tag or digest.
fn is_registry(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains("//")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/".contains(&b))
        && !s
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') && s.contains('/'))
}

/// An image tag that is also a label value (it becomes `app.kubernetes.io/version`): at most
/// 63 of `A-Za-z0-9_.-`, starting and ending with a letter or digit.
fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Loosely an image reference: no whitespace or control characters, not empty. The
/// container runtime has the last word.
fn is_image(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(['/', ':', '@']) && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> InstallArgs {
        use argh::FromArgs;
        InstallArgs::from_args(&["install"], flags).expect("valid flags")
    }

    fn opts(flags: &[&str]) -> Result<Options, OptionsError> {
        Options::from_args(&args(flags))
    }

    #[test]
    fn install_defaults() {
        let o = opts(&[]).unwrap();
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(o.namespace, "weft");
        assert_eq!(o.replicas, 1);
        assert_eq!(o.controller_image, format!("ghcr.io/weft-mesh/weft:{v}"));
        assert_eq!(o.proxy_image, format!("ghcr.io/weft-mesh/weft-proxy:{v}"));
        assert_eq!(o.log_level, None);
        assert_eq!(o.resources, Resources::default());
        assert!(!o.ha && !o.external_issuer);
    }

    #[test]
    fn install_registry_version_ha() {
        let o = opts(&[
            "--registry",
            "registry.local:5000/edge/",
            "--version",
            "dev-1",
            "--ha",
        ])
        .unwrap();
        assert_eq!(o.controller_image, "registry.local:5000/edge/weft:dev-1");
        assert_eq!(o.proxy_image, "registry.local:5000/edge/weft-proxy:dev-1");
        assert_eq!(o.replicas, 3);
        assert_eq!(o.version, "dev-1");
    }

    #[test]
    fn install_set_keys() {
        let o = opts(&[
            "--set",
            "controller.replicas=2",
            "--set",
            "controller.logLevel=warn,weft=debug",
            "--set",
            "proxy.image=example.com/p:1",
            "--set",
            "controller.image=example.com/c@sha256:abcd",
            "--set",
            "controller.imagePullPolicy=Always",
            "--set",
            "controller.resources.requests.cpu=50m",
            "--set",
            "controller.resources.requests.memory=64Mi",
            "--set",
            "controller.resources.limits.cpu=1",
            "--set",
            "controller.resources.limits.memory=256Mi",
        ])
        .unwrap();
        assert_eq!(o.replicas, 2);
        assert_eq!(o.log_level.as_deref(), Some("warn,weft=debug"));
        assert_eq!(o.proxy_image, "example.com/p:1");
        assert_eq!(o.controller_image, "example.com/c@sha256:abcd");
        assert_eq!(o.image_pull_policy, "Always");
        assert_eq!(
            o.resources,
            Resources {
                cpu_request: "50m".into(),
                memory_request: "64Mi".into(),
                cpu_limit: Some("1".into()),
                memory_limit: Some("256Mi".into()),
            }
        );
        // Later wins.
        let o = opts(&[
            "--set",
            "controller.replicas=2",
            "--set",
            "controller.replicas=5",
        ])
        .unwrap();
        assert_eq!(o.replicas, 5);
    }

    #[test]
    fn install_refusals() {
        let err = |flags: &[&str]| opts(flags).unwrap_err().to_string();
        let e = err(&["--set", "controller.replica=2"]);
        assert!(e.starts_with("--set controller.replica: unknown key; the known keys are: controller.replicas, controller.logLevel,"), "{e}");
        assert!(e.ends_with("proxy.image"), "{e}");
        assert_eq!(
            err(&["--set", "controller.replicas"]),
            "--set \"controller.replicas\": expected key=value"
        );
        assert_eq!(
            err(&["--set", "controller.replicas=0"]),
            "--set controller.replicas=0: expected a whole number, 1 or more"
        );
        assert!(err(&["--set", "controller.logLevel=weft=loud"])
            .starts_with("--set controller.logLevel=weft=loud: expected a log level"));
        assert!(err(&["--set", "controller.resources.limits.memory=64MB"])
            .contains("expected a resource quantity"));
        assert!(err(&["--set", "controller.imagePullPolicy=always"])
            .contains("IfNotPresent, Always or Never"));
        assert!(err(&["--set", "proxy.image=a b"]).contains("expected an image reference"));
        assert_eq!(
            err(&["--set", "controller.resources.requests.memory=256Mi"]),
            "controller.resources: the memory request 256Mi is above the memory limit 128Mi"
        );
        assert!(err(&["--set", "controller.resources.limits.cpu=10m"])
            .contains("CPU request 20m is above the CPU limit 10m"));
        assert!(err(&["--ha", "--set", "controller.replicas=1"])
            .starts_with("--ha with controller.replicas=1"));
        assert!(err(&["--namespace", "Weft"]).contains("not a valid namespace name"));
        assert!(err(&["--namespace", "kube-system"]).contains("needs a namespace of its own"));
        assert!(err(&["--namespace", "default"]).contains("needs a namespace of its own"));
        assert!(err(&["--registry", "ghcr.io/x:1.0"]).starts_with("--registry \"ghcr.io/x:1.0\""));
        assert!(err(&["--registry", "a b"]).starts_with("--registry"));
        assert!(err(&["--version", "-rc"]).starts_with("--version \"-rc\""));
        assert!(err(&["--version", "1.0/x"]).starts_with("--version"));
    }

    #[test]
    fn install_registry_shapes() {
        for ok in [
            "ghcr.io/weft-mesh",
            "localhost:5000",
            "registry.local:5000/a/b",
            "docker.io/library",
        ] {
            assert!(is_registry(ok), "{ok}");
        }
        for bad in ["", "/x", "a//b", "ghcr.io/x:1", "a b", "x/y@sha"] {
            assert!(!is_registry(bad), "{bad}");
        }
    }
}
