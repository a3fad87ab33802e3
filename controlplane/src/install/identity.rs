//! The identity issuer in `weft install`'s output: a fresh trust anchor and issuer made by
//! the same generator as `weft identity generate` (`identity::ca::generate`, ECDSA P-256,
//! anchor 10 years, issuer 1 year), stored as the `kubernetes.io/tls` Secret
//! `weft-identity-issuer` that `weft controller --identity-secret` reads (`ca.crt`,
//! `tls.crt`, `tls.key`), and the anchor that becomes the webhook's `caBundle`.
//!
//! With `--identity-external-issuer` nothing is generated: cert-manager or the operator
//! provides that Secret (docs/identity.md, docs/install.md).

use super::{labels, object, ISSUER_SECRET};
use crate::duration::date;
use crate::identity::ca::{self, Generated, ANCHORS_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use crate::inject::webhook::base64;
use serde_json::{json, Value};
use std::time::Duration;
use time::OffsetDateTime;
use weft_api::identity::DEFAULT_TRUST_DOMAIN;

/// The trust anchor's lifetime, as `weft identity generate`'s default (87600h).
pub const ANCHOR_LIFETIME: Duration = Duration::from_secs(87_600 * 3600);
/// The issuer's lifetime, as `weft identity generate`'s default (8760h).
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(8_760 * 3600);

/// A new anchor and issuer for a control plane in `namespace` (trust domain cluster.local).
pub fn generate(namespace: &str, now: OffsetDateTime) -> Result<Generated, ca::CaError> {
    ca::generate(
        DEFAULT_TRUST_DOMAIN,
        namespace,
        ANCHOR_LIFETIME,
        ISSUER_LIFETIME,
        now,
    )
}

/// The Secret holding the issuer: `ca.crt` (the anchor), `tls.crt` (the issuer),
/// `tls.key` (its private key).
pub fn secret(namespace: &str, version: &str, g: &Generated) -> Value {
    object(
        "v1",
        "Secret",
        ISSUER_SECRET,
        Some(namespace),
        labels("identity", version),
        json!({
            "type": "kubernetes.io/tls",
            "data": {
                ANCHORS_FILE: base64(g.anchor_pem.as_bytes()),
                TLS_CERT_FILE: base64(g.issuer_pem.as_bytes()),
                TLS_KEY_FILE: base64(g.issuer_key_pem.as_bytes()),
            },
        }),
    )
}

/// What the operator must know about a generated issuer, for stderr: the expiry warnings
/// `weft identity generate` prints, and that the output holds a private key.
pub fn generated_notes(g: &Generated) -> Vec<String> {
    vec![
        format!(
            "WARNING: the trust anchor expires on {}; replace it before then (see docs/identity.md)",
            date(g.anchor_not_after)
        ),
        format!(
            "WARNING: the issuer certificate expires on {}; rotate it before then (see docs/identity.md)",
            date(g.issuer_not_after)
        ),
        format!(
            "weft install: the output holds the issuer's private key (Secret {ISSUER_SECRET}); do not commit it. \
             Each run makes a new trust anchor: re-applying a new output to a running mesh replaces the anchor, \
             so restart every meshed workload afterwards (docs/install.md, \"Upgrading\")"
        ),
    ]
}

/// For stderr with `--identity-external-issuer`.
pub fn external_notes(namespace: &str) -> Vec<String> {
    vec![
        format!(
            "weft install: --identity-external-issuer: no Secret {ISSUER_SECRET} in the output; before the controller can start, \
             cert-manager or you must create it in namespace {namespace} with {ANCHORS_FILE} (the trust anchor), \
             {TLS_CERT_FILE} (the issuer, a CA signed by that anchor) and {TLS_KEY_FILE} (its key): see docs/identity.md"
        ),
        "weft install: --identity-external-issuer: the webhook has no caBundle; the controller fills it in at start \
         from the Secret's ca.crt"
            .to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_secret_holds_the_generated_issuer() {
        let now = OffsetDateTime::now_utc();
        let g = generate("weft", now).unwrap();
        let s = secret("weft", "0.1.0", &g);
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert_eq!(s["metadata"]["name"], "weft-identity-issuer");
        assert_eq!(s["metadata"]["namespace"], "weft");
        let data = s["data"].as_object().unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["ca.crt", "tls.crt", "tls.key"]
        );
        assert_eq!(data["tls.key"], base64(g.issuer_key_pem.as_bytes()));
        // The issuer loads as the controller would load it.
        let dir = std::env::temp_dir().join(format!("weft-install-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), &g.anchor_pem).unwrap();
        std::fs::write(dir.join("tls.crt"), &g.issuer_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &g.issuer_key_pem).unwrap();
        let files = ca::IdentityFiles::in_dir(&dir).unwrap();
        ca::Ca::load(&files, now).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let notes = generated_notes(&g);
        assert!(notes[0].starts_with("WARNING: the trust anchor expires on "));
        assert!(notes[1].starts_with("WARNING: the issuer certificate expires on "));
    }

    #[test]
    fn install_generate_refuses_a_bad_namespace() {
        assert!(generate("Not_A_Label", OffsetDateTime::now_utc()).is_err());
    }
}
