//! The identity API between proxies and the controller: a proxy sends a CSR and a token,
//! and gets back a short-lived certificate naming its service account.
//!
//! Transport: HTTP/2 over TLS (the controller's certificate names
//! [`controller_identity`]), `POST` [`CERTIFY_PATH`] with a JSON [`CertifyRequest`];
//! `200` with a JSON [`CertifyResponse`], or a 4xx/5xx with a JSON [`ErrorResponse`]
//! whose `error` says exactly what was wrong.

use crate::identity::{IdentityError, IdentityName};
use serde::{Deserialize, Serialize};

/// Where proxies ask for certificates.
pub const CERTIFY_PATH: &str = "/weft.identity.v1/certify";
/// The controller's proxy API port (identity today; destination and policy later).
pub const DEFAULT_PROXY_API_PORT: u16 = 8086;
/// The service account the controller runs as.
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "weft-controller";
/// The audience Weft's projected service-account tokens carry.
pub const TOKEN_AUDIENCE: &str = "identity.weft.dev";

/// A proxy asks for a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertifyRequest {
    /// The identity requested; must match the token's service account exactly.
    pub identity: String,
    /// The service-account token (a projected token in Kubernetes, a registry token with
    /// the file backend).
    pub token: String,
    /// A PKCS#10 CSR in PEM, signed by the proxy's key, with `identity` as its only DNS SAN.
    pub csr_pem: String,
}

/// The certificate the controller issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertifyResponse {
    /// The leaf first, then the issuer: the chain to present in handshakes.
    pub chain_pem: String,
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    pub valid_until_unix: u64,
}

/// A refusal, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
}

/// The controller's own identity, checked by proxies when they connect to it.
pub fn controller_identity(
    control_plane_namespace: &str,
    trust_domain: &str,
) -> Result<IdentityName, IdentityError> {
    IdentityName::new(
        CONTROLLER_SERVICE_ACCOUNT,
        control_plane_namespace,
        control_plane_namespace,
        trust_domain,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_camel_case_json() {
        let req = CertifyRequest {
            identity: "web.apps.serviceaccount.identity.weft.cluster.local".into(),
            token: "t".into(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"identity":"web.apps.serviceaccount.identity.weft.cluster.local","token":"t","csrPem":"-----BEGIN CERTIFICATE REQUEST-----"}"#
        );
        let rsp: CertifyResponse =
            serde_json::from_str(r#"{"chainPem":"x","validUntilUnix":1700000000}"#).unwrap();
        assert_eq!(rsp.valid_until_unix, 1_700_000_000);
    }

    #[test]
    fn controller_identity_name() {
        assert_eq!(
            controller_identity("weft", "cluster.local")
                .unwrap()
                .to_string(),
            "weft-controller.weft.serviceaccount.identity.weft.cluster.local"
        );
    }
}
