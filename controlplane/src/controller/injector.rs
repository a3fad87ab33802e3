//! The proxy injector inside `weft controller` (`--injector-addr`): the admission webhook
//! of [`crate::inject::webhook`] served over HTTPS with the controller's own serving
//! certificate, which also names the Service (`weft-controller.<ns>.svc`) the API server
//! calls. That certificate chains to the trust anchors, so the webhook's `caBundle` is just
//! the anchors: at start, and every minute after, the controller writes them into the
//! MutatingWebhookConfiguration (`--webhook-config`, default `weft-proxy-injector`) if they
//! differ. Every replica writes
//! the same bytes (they all read the same issuer), so no Lease is needed to elect a writer.
//!
//! Native sidecars (`--native-sidecars auto`) are used when the API server is 1.29 or
//! newer, read from `/version` at start.

use super::sources::KubeClient;
use crate::identity::ca::Ca;
use crate::identity::server::ServingCert;
#[cfg(feature = "kubernetes")]
use crate::inject::webhook::LookupFuture;
use crate::inject::webhook::{self, NamespaceLookup, Webhook};
use crate::inject::{InjectConfig, DEFAULT_IMAGE_REPOSITORY};
use crate::shutdown::Shutdown;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The MutatingWebhookConfiguration `weft install` creates.
pub const DEFAULT_WEBHOOK_CONFIG: &str = "weft-proxy-injector";
/// How often the `caBundle` is checked again after start.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub const CA_BUNDLE_RESYNC: Duration = Duration::from_secs(60);
/// The first Kubernetes minor version with native sidecars on by default.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub const NATIVE_SIDECARS_SINCE: u32 = 29;

/// Whether injected proxies become native sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeSidecars {
    /// When the API server is 1.29 or newer.
    Auto,
    Always,
    Never,
}

/// Parses `--native-sidecars`.
pub fn parse_native_sidecars(s: &str) -> Result<NativeSidecars, String> {
    match s {
        "auto" => Ok(NativeSidecars::Auto),
        "true" | "always" => Ok(NativeSidecars::Always),
        "false" | "never" => Ok(NativeSidecars::Never),
        _ => Err(format!("{s:?}: expected auto, true or false")),
    }
}

/// The injector's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorSettings {
    pub addr: SocketAddr,
    pub proxy_image: String,
    pub native_sidecars: NativeSidecars,
    pub webhook_config: String,
}

/// The default proxy image: `ghcr.io/weft-mesh/weft-proxy:<this version>`.
pub fn default_proxy_image() -> String {
    format!("{DEFAULT_IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// Why the injector did not start.
#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running injector.
#[derive(Debug)]
pub struct Injector {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// The DNS names the API server may call the webhook by.
pub fn service_names(namespace: &str) -> Vec<String> {
    vec![
        format!("weft-controller.{namespace}.svc"),
        format!("weft-controller.{namespace}.svc.cluster.local"),
    ]
}

/// Whether `minor` (from `/version`, such as `29` or `29+`) has native sidecars.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub fn has_native_sidecars(major: &str, minor: &str) -> Option<bool> {
    let digits = |s: &str| -> Option<u32> {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    let (major, minor) = (digits(major)?, digits(minor)?);
    Some(major > 1 || (major == 1 && minor >= NATIVE_SIDECARS_SINCE))
}

/// Binds and starts the webhook; syncs the `caBundle` when there is a cluster.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    settings: &InjectorSettings,
    ca: &Ca,
    serving: Arc<ServingCert>,
    kube: Option<&KubeClient>,
    control_plane_namespace: &str,
    trust_domain: &str,
    shutdown: &Shutdown,
    grace: Duration,
) -> Result<Injector, InjectorError> {
    let native = match settings.native_sidecars {
        NativeSidecars::Always => true,
        NativeSidecars::Never => false,
        NativeSidecars::Auto => detect_native_sidecars(kube).await,
    };
    let mut config = InjectConfig::new(
        control_plane_namespace,
        trust_domain,
        &settings.proxy_image,
        &format!("weft-controller {}", env!("CARGO_PKG_VERSION")),
    );
    config.native_sidecars = native;
    config.trust_anchors_pem = Some(ca.anchors_pem().to_string());
    let namespaces: Arc<dyn NamespaceLookup> = match kube {
        #[cfg(feature = "kubernetes")]
        Some(client) => Arc::new(KubeNamespaces(client.clone())),
        _ => Arc::new(BTreeMap::<String, BTreeMap<String, String>>::new()),
    };
    #[cfg(feature = "kubernetes")]
    let events = kube.cloned();
    let hook: webhook::RefusalHook = Arc::new(move |r: &webhook::Refusal| {
        warn!(
            namespace = %r.namespace,
            pod = %r.pod,
            owner = ?r.owner,
            "injector: left the pod alone: {}",
            r.reason
        );
        #[cfg(feature = "kubernetes")]
        if let Some(client) = &events {
            tokio::spawn(record_event(client.clone(), r.clone()));
        }
    });
    let webhook = Arc::new(Webhook::new(config, namespaces).on_refusal(hook));
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(serving);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener =
        TcpListener::bind(settings.addr)
            .await
            .map_err(|source| InjectorError::Bind {
                addr: settings.addr,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| InjectorError::Bind {
            addr: settings.addr,
            source,
        })?;
    #[cfg(feature = "kubernetes")]
    if let Some(client) = kube {
        sync_ca_bundle(client, &settings.webhook_config, ca.anchors_pem()).await;
        // And again every minute: the configuration may be created (or overwritten by a
        // re-applied `weft install`) after the controller started.
        let (client, name, pem) = (
            client.clone(),
            settings.webhook_config.clone(),
            ca.anchors_pem().to_string(),
        );
        let mut stop = shutdown.signal();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = tokio::time::sleep(CA_BUNDLE_RESYNC) => {}
                }
                sync_ca_bundle(&client, &name, &pem).await;
            }
        });
    }
    let task = webhook::serve(webhook, listener, Arc::new(tls), shutdown.signal(), grace);
    info!(
        %addr,
        native_sidecars = native,
        image = %settings.proxy_image,
        "injector: admission webhook listening (POST {})",
        webhook::INJECT_PATH
    );
    Ok(Injector { addr, task })
}

/// `auto`: native sidecars on 1.29+; without a cluster (tests), on; unknown, off.
async fn detect_native_sidecars(kube: Option<&KubeClient>) -> bool {
    #[cfg(feature = "kubernetes")]
    if let Some(client) = kube {
        return match client.apiserver_version().await {
            Ok(v) => match has_native_sidecars(&v.major, &v.minor) {
                Some(native) => {
                    info!(
                        version = %format_args!("{}.{}", v.major, v.minor),
                        native,
                        "injector: API server version read"
                    );
                    native
                }
                None => {
                    warn!(major = %v.major, minor = %v.minor, "injector: cannot read the API server's version; using classic sidecars");
                    false
                }
            },
            Err(e) => {
                warn!(
                    "injector: cannot ask the API server its version ({e}); using classic sidecars"
                );
                false
            }
        };
    }
    let _ = kube;
    true
}

/// Namespace annotations straight from the API server: one GET per admission (pods are
/// created seldom; the answer is never stale).
#[cfg(feature = "kubernetes")]
pub(crate) struct KubeNamespaces(pub(crate) kube::Client);

#[cfg(feature = "kubernetes")]
impl NamespaceLookup for KubeNamespaces {
    fn annotations<'a>(&'a self, namespace: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(self.0.clone());
            match api.get_opt(namespace).await {
                Ok(Some(ns)) => Ok(ns.metadata.annotations.unwrap_or_default()),
                Ok(None) => Ok(BTreeMap::new()),
                Err(e) => Err(format!("cannot read namespace {namespace}: {e}")),
            }
        })
    }
}

/// A Warning Event on the pod's owner (its ReplicaSet, Job …; the pod itself has no name
/// yet when created by a controller), so `kubectl describe` shows why it is not meshed.
#[cfg(feature = "kubernetes")]
async fn record_event(client: kube::Client, r: webhook::Refusal) {
    use k8s_openapi::api::core::v1::Event;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (kind, name) = r
        .owner
        .clone()
        .unwrap_or_else(|| ("Pod".to_string(), r.pod.clone()));
    let event = serde_json::json!({
        "metadata": {"generateName": "weft-injector-", "namespace": r.namespace},
        "involvedObject": {"kind": kind, "name": name, "namespace": r.namespace},
        "reason": "WeftInjectionSkipped",
        "message": format!("weft: pod {} not injected: {}", r.pod, r.reason),
        "type": "Warning",
        "source": {"component": "weft-injector"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let event: Event = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(e) => {
            warn!("injector: cannot build an Event: {e}");
            return;
        }
    };
    let api: kube::Api<Event> = kube::Api::namespaced(client, &r.namespace);
    if let Err(e) = api.create(&kube::api::PostParams::default(), &event).await {
        warn!(namespace = %r.namespace, "injector: cannot record an Event: {e}");
    }
}

/// Writes the anchors into every webhook of the configuration, if they differ.
#[cfg(feature = "kubernetes")]
async fn sync_ca_bundle(client: &kube::Client, name: &str, anchors_pem: &str) {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::ByteString;
    use kube::api::{Patch, PatchParams};
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    let current = match api.get_opt(name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            warn!("injector: MutatingWebhookConfiguration {name} not found: the API server will not call the injector until it exists (weft install creates it)");
            return;
        }
        Err(e) => {
            warn!("injector: cannot read MutatingWebhookConfiguration {name}: {e}");
            return;
        }
    };
    let bundle = ByteString(anchors_pem.as_bytes().to_vec());
    let mut webhooks = current.webhooks.unwrap_or_default();
    if webhooks
        .iter()
        .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle))
    {
        tracing::debug!("injector: {name} caBundle already current");
        return;
    }
    for w in &mut webhooks {
        w.client_config.ca_bundle = Some(bundle.clone());
    }
    let patch = serde_json::json!({ "webhooks": webhooks });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(
            webhooks = webhooks.len(),
            "injector: wrote the trust anchors into {name}'s caBundle"
        ),
        Err(e) => warn!("injector: cannot update {name}'s caBundle: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_from_the_version() {
        let cases = [
            ("1", "28", Some(false)),
            ("1", "29", Some(true)),
            ("1", "29+", Some(true)),
            ("1", "33", Some(true)),
            ("2", "0", Some(true)),
            ("1", "", None),
            ("", "30", None),
        ];
        for (major, minor, want) in cases {
            assert_eq!(has_native_sidecars(major, minor), want, "{major}.{minor}");
        }
        assert_eq!(parse_native_sidecars("auto"), Ok(NativeSidecars::Auto));
        assert_eq!(parse_native_sidecars("false"), Ok(NativeSidecars::Never));
        assert_eq!(
            parse_native_sidecars("maybe"),
            Err("\"maybe\": expected auto, true or false".into())
        );
    }
}
