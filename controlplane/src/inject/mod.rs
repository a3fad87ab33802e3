//! The proxy injector: whether a pod joins the mesh, and the JSON patch that adds the
//! `weft-init` init container and the `weft-proxy` sidecar (docs/injection.md).
//!
//! - [`decide`]: the whole decision as a pure function of the pod, its workload's template
//!   annotations, its namespace and the injector's [`InjectConfig`] (table-tested, no I/O);
//! - [`containers`]: what the added containers, volumes and annotations look like;
//! - [`annotations`]: the annotation names and the validation of `config.weft.dev/*`;
//! - [`patch`]: RFC 6902 JSON Patch operations and an applier;
//! - [`manifest`]: `weft inject` / `weft uninject` over YAML manifests;
//! - [`webhook`]: the mutating admission webhook (HTTPS, `POST /inject-pods`).

pub mod annotations;
pub mod containers;
pub mod decide;
pub mod manifest;
pub mod patch;
pub mod webhook;

pub use decide::Mode;

/// The proxy's uid: weft-init's iptables rules let this uid's connections through.
pub const PROXY_UID: i64 = 2102;
/// The proxy's inbound listener (iptables PREROUTING redirects here).
pub const INBOUND_PORT: u16 = 4143;
/// The proxy's outbound listener on 127.0.0.1 (iptables OUTPUT redirects here).
pub const OUTBOUND_PORT: u16 = 4140;
/// The proxy's admin port: `/live`, `/ready`, `/metrics`, `/shutdown`.
pub const ADMIN_PORT: u16 = 4191;
/// The name of the proxy container.
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// The name of the iptables init container.
pub const INIT_CONTAINER: &str = "weft-init";
/// The ConfigMap (in the pod's namespace) holding the trust anchors, and its key.
pub const TRUST_ROOTS_CONFIGMAP: &str = "weft-identity-trust-roots";
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// The namespace never injected besides the control plane's own.
pub const KUBE_SYSTEM: &str = "kube-system";

/// Requests and limits of the proxy container (each overridable per pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyResources {
    pub cpu_request: String,
    pub cpu_limit: Option<String>,
    pub memory_request: String,
    pub memory_limit: Option<String>,
}

impl Default for ProxyResources {
    /// 10m / 16Mi requested (an idle proxy uses ≈ 4 MiB); limits 1 CPU (the proxy runs one
    /// worker thread, so this never throttles it, but it satisfies quotas that demand a
    /// limit) and 64Mi.
    fn default() -> Self {
        Self {
            cpu_request: "10m".into(),
            cpu_limit: Some("1".into()),
            memory_request: "16Mi".into(),
            memory_limit: Some("64Mi".into()),
        }
    }
}

/// Everything the injector needs to know besides the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    pub proxy_image: String,
    pub init_image: String,
    pub image_pull_policy: String,
    pub control_plane_namespace: String,
    pub trust_domain: String,
    /// `host:port` of the controller's proxy API (identity and destination).
    pub controller_addr: String,
    /// Recorded in `weft.dev/proxy-version`.
    pub proxy_version: String,
    /// Recorded in `weft.dev/injected-by`.
    pub injected_by: String,
    /// Whether the proxy becomes a native sidecar (Kubernetes ≥ 1.29) unless a pod says
    /// otherwise with `config.weft.dev/native-sidecar`.
    pub native_sidecars: bool,
    pub resources: ProxyResources,
    pub log_level: String,
    /// The trust anchors' PEM, set inline in the proxy's environment. `None` (`weft inject
    /// --manual` without the cluster's anchors): read from the `weft-identity-trust-roots`
    /// ConfigMap in the pod's namespace instead.
    pub trust_anchors_pem: Option<String>,
}

impl InjectConfig {
    /// A configuration for a control plane in `namespace`, with one image for proxy and init.
    pub fn new(namespace: &str, trust_domain: &str, image: &str, injected_by: &str) -> Self {
        Self {
            proxy_image: image.to_string(),
            init_image: image.to_string(),
            image_pull_policy: "IfNotPresent".into(),
            control_plane_namespace: namespace.to_string(),
            trust_domain: trust_domain.to_string(),
            controller_addr: format!(
                "weft-controller.{namespace}.svc:{}",
                weft_api::certify::DEFAULT_PROXY_API_PORT
            ),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            injected_by: injected_by.to_string(),
            native_sidecars: true,
            resources: ProxyResources::default(),
            log_level: weft_proxy::config::DEFAULT_LOG_LEVEL.to_string(),
            trust_anchors_pem: None,
        }
    }
}

/// The image holding weft-proxy, weft-init and weft-await, tagged with the version.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/weft-mesh/weft-proxy";
