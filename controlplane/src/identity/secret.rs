//! The issuer from a Kubernetes Secret (`weft controller --identity-secret NAME`), read from
//! the control-plane namespace at start: the same three items as a directory — `ca.crt`,
//! plus `issuer.crt`/`issuer.key` (`weft identity generate`'s names) or `tls.crt`/`tls.key`
//! (a `kubernetes.io/tls` Secret, as `weft install` and cert-manager write it).
//!
//! Errors name the Secret and the key, e.g. `trust anchors file Secret
//! weft/weft-identity-issuer key ca.crt is not PEM: …`. The Secret is read once, at start:
//! after rotating the issuer, restart the controller (`kubectl rollout restart`).

use super::ca::{
    Ca, CaError, IdentityFiles, ANCHORS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE, TLS_CERT_FILE,
    TLS_KEY_FILE,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::path::PathBuf;
use time::OffsetDateTime;

/// Why the Secret gave no issuer.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} has no {missing}: expected {ANCHORS_FILE} plus {ISSUER_CERT_FILE} and {ISSUER_KEY_FILE} (`weft install`) or {TLS_CERT_FILE} and {TLS_KEY_FILE} (cert-manager); it has {found}")]
    MissingKey {
        namespace: String,
        name: String,
        missing: &'static str,
        found: String,
    },
    #[error("{0}")]
    Ca(#[from] CaError),
}

/// Reads the Secret and loads the issuer from it.
pub async fn load(
    client: Client,
    namespace: &str,
    name: &str,
    now: OffsetDateTime,
) -> Result<Ca, SecretError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = api.get(name).await.map_err(|source| SecretError::Get {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source: Box::new(source),
    })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    from_data(&data, namespace, name, now)
}

/// The issuer from a Secret's decoded `data`.
pub fn from_data(
    data: &BTreeMap<String, Vec<u8>>,
    namespace: &str,
    name: &str,
    now: OffsetDateTime,
) -> Result<Ca, SecretError> {
    let (cert_key, key_key) = if data.contains_key(ISSUER_CERT_FILE) {
        (ISSUER_CERT_FILE, ISSUER_KEY_FILE)
    } else {
        (TLS_CERT_FILE, TLS_KEY_FILE)
    };
    let get = |key: &'static str| {
        data.get(key).ok_or_else(|| SecretError::MissingKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            missing: key,
            found: if data.is_empty() {
                "no data".to_string()
            } else {
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    };
    let anchors = get(ANCHORS_FILE)?;
    let cert = get(cert_key)?;
    let key = get(key_key)?;
    let label = |key: &str| PathBuf::from(format!("Secret {namespace}/{name} key {key}"));
    let files = IdentityFiles {
        anchors: label(ANCHORS_FILE),
        issuer_cert: label(cert_key),
        issuer_key: label(key_key),
    };
    Ok(Ca::from_pem(&files, anchors, cert, key, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca::tests::generated;

    fn data(items: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn loads_both_layouts_and_names_what_is_missing() {
        let g = generated();
        let now = OffsetDateTime::now_utc();
        for (cert, key) in [("issuer.crt", "issuer.key"), ("tls.crt", "tls.key")] {
            let d = data(&[
                ("ca.crt", &g.anchor_pem),
                (cert, &g.issuer_pem),
                (key, &g.issuer_key_pem),
            ]);
            let ca = from_data(&d, "weft", "weft-identity-issuer", now).unwrap();
            assert_eq!(ca.issuer_subject(), "CN=identity.weft.cluster.local");
        }
        let err = from_data(
            &data(&[("ca.crt", &g.anchor_pem), ("tls.crt", &g.issuer_pem)]),
            "weft",
            "issuer",
            now,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Secret weft/issuer has no tls.key: expected ca.crt plus issuer.crt and issuer.key (`weft install`) or tls.crt and tls.key (cert-manager); it has ca.crt, tls.crt"
        );
        let err = from_data(&BTreeMap::new(), "weft", "issuer", now).unwrap_err();
        assert!(err.to_string().ends_with("it has no data"), "{err}");
        let err = from_data(
            &data(&[
                ("ca.crt", "junk"),
                ("tls.crt", &g.issuer_pem),
                ("tls.key", &g.issuer_key_pem),
            ]),
            "weft",
            "issuer",
            now,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("trust anchors file Secret weft/issuer key ca.crt is not PEM"),
            "{err}"
        );
    }
}
