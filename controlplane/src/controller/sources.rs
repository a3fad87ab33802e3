//! Where the controller's inputs come from, chosen by its flags: the issuer (a directory or
//! a Kubernetes Secret), who tokens belong to (the config file's registry with `--discovery
//! file`, TokenReview with `--discovery kubernetes`), and the one Kubernetes client they
//! share when any of them needs the API server.

use super::Config;
use crate::discovery::file::Loaded;
use crate::discovery::Backend;
use crate::identity::ca::{Ca, CaError, IdentityFiles};
use crate::identity::tokens::Authenticator;
use std::path::PathBuf;
use time::OffsetDateTime;
use tracing::{info, warn};

/// Where the trust anchors and the issuer are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `--identity-dir`: `ca.crt` plus `issuer.crt`/`issuer.key` or `tls.crt`/`tls.key`.
    Dir(PathBuf),
    /// `--identity-secret`: a Secret with the same keys, in the control-plane namespace.
    Secret(String),
}

/// The Kubernetes client, when built with the `kubernetes` feature.
#[cfg(feature = "kubernetes")]
pub type KubeClient = kube::Client;
/// Without the `kubernetes` feature there is never a client.
#[cfg(not(feature = "kubernetes"))]
pub type KubeClient = std::convert::Infallible;

/// Why an input could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Ca(#[from] CaError),
    #[cfg(feature = "kubernetes")]
    #[error("--identity-secret: {0}")]
    Secret(#[from] crate::identity::secret::SecretError),
    #[cfg(feature = "kubernetes")]
    #[error("Kubernetes client: {0}")]
    Kubernetes(#[from] Box<crate::discovery::kubernetes::KubernetesError>),
    #[error("{0} needs the kubernetes feature, and this weft was built without it")]
    NoKubernetes(&'static str),
}

/// A Kubernetes client if `--discovery kubernetes` or `--identity-secret` asks for one.
pub async fn kube_client(config: &Config) -> Result<Option<KubeClient>, SourceError> {
    let needed = config.discovery == Backend::Kubernetes
        || matches!(config.identity, IdentitySource::Secret(_));
    if !needed {
        if let Some(path) = &config.kubeconfig {
            warn!(
                "--kubeconfig {} is only used with --discovery kubernetes or --identity-secret",
                path.display()
            );
        }
        return Ok(None);
    }
    #[cfg(feature = "kubernetes")]
    {
        let client = crate::discovery::kubernetes::client(config.kubeconfig.as_deref())
            .await
            .map_err(Box::new)?;
        Ok(Some(client))
    }
    #[cfg(not(feature = "kubernetes"))]
    Err(SourceError::NoKubernetes(
        "--discovery kubernetes or --identity-secret",
    ))
}

/// Loads and checks the issuer; also says where it came from, for the log.
pub async fn load_ca(
    config: &Config,
    kube: Option<&KubeClient>,
    now: OffsetDateTime,
) -> Result<(Ca, String), SourceError> {
    match &config.identity {
        IdentitySource::Dir(dir) => {
            let files = IdentityFiles::in_dir(dir)?;
            let ca = Ca::load(&files, now)?;
            Ok((ca, files.issuer_cert.display().to_string()))
        }
        #[cfg(feature = "kubernetes")]
        IdentitySource::Secret(name) => {
            let ns = &config.control_plane_namespace;
            let Some(client) = kube else {
                return Err(SourceError::NoKubernetes("--identity-secret"));
            };
            let ca = crate::identity::secret::load(client.clone(), ns, name, now).await?;
            Ok((ca, format!("Secret {ns}/{name}")))
        }
        #[cfg(not(feature = "kubernetes"))]
        IdentitySource::Secret(_) => {
            let _ = kube;
            Err(SourceError::NoKubernetes("--identity-secret"))
        }
    }
}

/// Who tokens belong to: the config file's `tokens:` with the file backend, the API server
/// with the Kubernetes backend.
pub fn authenticator(
    config: &Config,
    kube: Option<&KubeClient>,
    file: Option<&Loaded>,
) -> Result<Authenticator, SourceError> {
    let registry = file.map(|f| f.tokens.clone()).unwrap_or_default();
    match config.discovery {
        Backend::File => {
            if registry.is_empty() {
                warn!("the config file lists no tokens: every certificate request will be refused");
            } else {
                info!(tokens = registry.len(), "loaded the token registry");
            }
            Ok(Authenticator::Registry(registry))
        }
        Backend::Kubernetes => {
            if !registry.is_empty() {
                warn!(
                    tokens = registry.len(),
                    "config file tokens: are ignored with --discovery kubernetes; proxies' service-account tokens are checked with TokenReview"
                );
            }
            reviewer(config, kube)
        }
    }
}

#[cfg(feature = "kubernetes")]
fn reviewer(config: &Config, kube: Option<&KubeClient>) -> Result<Authenticator, SourceError> {
    let Some(client) = kube else {
        return Err(SourceError::NoKubernetes("TokenReview"));
    };
    info!(
        audience = weft_api::certify::TOKEN_AUDIENCE,
        "proxies' tokens are checked with TokenReview"
    );
    Ok(Authenticator::TokenReview(
        crate::identity::token_review::TokenReviewer::new(
            client.clone(),
            &config.control_plane_namespace,
            &config.trust_domain,
        ),
    ))
}

#[cfg(not(feature = "kubernetes"))]
fn reviewer(_: &Config, _: Option<&KubeClient>) -> Result<Authenticator, SourceError> {
    Err(SourceError::NoKubernetes("--discovery kubernetes"))
}
