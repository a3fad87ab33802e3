//! Whether to sign: a pure decision from the request, the identity its token stands for
//! (authentication comes first: [`super::tokens::Authenticator`]), the time and the
//! configuration. No I/O, so every refusal is table-tested.
//!
//! In order (the first failure is the answer):
//!
//! | check | refusal |
//! |---|---|
//! | the token is known (file backend) or the API server vouches for it (Kubernetes, [`super::token_review`]) | `401` unknown token / token rejected, `403` not a service account, `503` review unavailable |
//! | the issuer has not expired | `503` issuer expired |
//! | the token's identity is exactly the requested identity | `403`, naming both |
//! | the CSR is PEM PKCS#10 and its signature verifies with its own key | `400` invalid CSR |
//! | the CSR's only SAN is the identity, as a DNS name | `400`, naming what it had |
//! | the CSR's key is ECDSA P-256 | `400`, naming the key type |
//!
//! Only the CSR's public key is used: the leaf's names, usages and lifetime are the
//! controller's, never the requester's.

use super::ca::{whole_seconds, CLOCK_SKEW};
use crate::duration::date_time;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use std::time::Duration;
use time::OffsetDateTime;
use weft_api::certify::CertifyRequest;
use weft_api::IdentityName;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

/// What the verifier needs besides the request.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// How long leaves live (capped at the issuer's own expiry).
    pub leaf_lifetime: Duration,
    /// When the issuer expires.
    pub issuer_not_after: OffsetDateTime,
}

/// Sign this key for this identity, valid in this window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueDecision {
    pub identity: IdentityName,
    pub public_key: rcgen::SubjectPublicKeyInfo,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Why a request was refused. The message is what the requester reads (and what is logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// The TokenReview refusals only occur with the kubernetes feature.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub enum Refusal {
    #[error("unknown token")]
    UnknownToken,
    #[error("the token is for identity {allowed:?}, not {requested:?}")]
    IdentityMismatch { requested: String, allowed: String },
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    #[error("the CSR must name exactly {expected:?} as its only subject alternative name (a DNS name); it had {}", describe_names(.found))]
    CsrNameMismatch {
        expected: String,
        found: Vec<String>,
    },
    #[error("the CSR's key must be ECDSA P-256; it is {0}")]
    CsrKeyType(String),
    #[error(
        "the issuer certificate expired on {0}; no certificate can be issued until it is replaced"
    )]
    IssuerExpired(String),
    #[error("token rejected by the Kubernetes API server: {0}")]
    TokenRejected(String),
    #[error("the token belongs to {0:?}, not to a service account")]
    NotServiceAccount(String),
    #[error("cannot check the token with the Kubernetes API server (TokenReview): {0}")]
    TokenReviewUnavailable(String),
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::UnknownToken | Refusal::TokenRejected(_) => 401,
            Refusal::IdentityMismatch { .. } | Refusal::NotServiceAccount(_) => 403,
            Refusal::InvalidCsr(_) | Refusal::CsrNameMismatch { .. } | Refusal::CsrKeyType(_) => {
                400
            }
            Refusal::IssuerExpired(_) | Refusal::TokenReviewUnavailable(_) => 503,
        }
    }

    /// A short stable name, for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownToken => "unknown_token",
            Refusal::IdentityMismatch { .. } => "identity_mismatch",
            Refusal::InvalidCsr(_) => "invalid_csr",
            Refusal::CsrNameMismatch { .. } => "csr_name_mismatch",
            Refusal::CsrKeyType(_) => "csr_key_type",
            Refusal::IssuerExpired(_) => "issuer_expired",
            Refusal::TokenRejected(_) => "token_rejected",
            Refusal::NotServiceAccount(_) => "not_a_service_account",
            Refusal::TokenReviewUnavailable(_) => "token_review_unavailable",
        }
    }

    /// Every reason, for metrics that list all of them from the start.
    pub const REASONS: [&'static str; 9] = [
        "unknown_token",
        "identity_mismatch",
        "invalid_csr",
        "csr_name_mismatch",
        "csr_key_type",
        "issuer_expired",
        "token_rejected",
        "not_a_service_account",
        "token_review_unavailable",
    ];
}

fn describe_names(found: &[String]) -> String {
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    }
}

/// Decides whether to sign.
pub fn verify(
    req: &CertifyRequest,
    identity: &IdentityName,
    now: OffsetDateTime,
    config: &VerifyConfig,
) -> Result<IssueDecision, Refusal> {
    let now = whole_seconds(now);
    if now >= config.issuer_not_after {
        return Err(Refusal::IssuerExpired(date_time(config.issuer_not_after)));
    }
    let expected = identity.to_string();
    if req.identity != expected {
        return Err(Refusal::IdentityMismatch {
            requested: req.identity.clone(),
            allowed: expected,
        });
    }
    let csr = Csr::parse(&req.csr_pem)?;
    if csr.names != [format!("DNS:{expected}")] {
        return Err(Refusal::CsrNameMismatch {
            expected,
            found: csr.names,
        });
    }
    if let Some(other) = csr.key_type_if_not_p256 {
        return Err(Refusal::CsrKeyType(other));
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki)
        .map_err(|e| Refusal::InvalidCsr(format!("unusable public key: {e}")))?;

    let lifetime = time::Duration::try_from(config.leaf_lifetime).unwrap_or(time::Duration::MAX);
    let not_after = now
        .checked_add(lifetime)
        .map_or(config.issuer_not_after, |t| t.min(config.issuer_not_after));
    Ok(IssueDecision {
        identity: identity.clone(),
        public_key,
        not_before: now - CLOCK_SKEW,
        not_after: whole_seconds(not_after),
    })
}

/// The parts of a CSR the decision looks at.
struct Csr {
    spki: Vec<u8>,
    /// Subject alternative names as `DNS:…`, `IP:…`, `URI:…`, `email:…`.
    names: Vec<String>,
    key_type_if_not_p256: Option<String>,
}

impl Csr {
    fn parse(pem: &str) -> Result<Self, Refusal> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            Refusal::InvalidCsr(
                "csrPem is not a PEM \"-----BEGIN CERTIFICATE REQUEST-----\" block".to_string(),
            )
        })?;
        let csr = match X509CertificationRequest::from_der(&der) {
            Ok(([], csr)) => csr,
            Ok(_) => {
                return Err(Refusal::InvalidCsr(
                    "trailing bytes after the certification request".to_string(),
                ))
            }
            Err(e) => {
                return Err(Refusal::InvalidCsr(format!(
                    "not a PKCS#10 certification request: {e}"
                )))
            }
        };
        if csr.verify_signature().is_err() {
            return Err(Refusal::InvalidCsr(
                "its signature does not verify with the key it carries".to_string(),
            ));
        }
        let mut names = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                names.extend(san.general_names.iter().map(describe_general_name));
            }
        }
        let spki = &csr.certification_request_info.subject_pki;
        let key_type_if_not_p256 = key_type(
            &spki.algorithm.algorithm,
            spki.algorithm.parameters.as_ref(),
        );
        Ok(Self {
            spki: spki.raw.to_vec(),
            names,
            key_type_if_not_p256,
        })
    }
}

/// `None` for ECDSA P-256, else a description of the key.
fn key_type(
    alg: &Oid<'_>,
    params: Option<&x509_parser::der_parser::asn1_rs::Any<'_>>,
) -> Option<String> {
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = params.and_then(|p| Oid::try_from(p).ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => None,
            Some(c) if c == OID_NIST_EC_P384 => Some("ECDSA P-384".to_string()),
            Some(c) if c == OID_NIST_EC_P521 => Some("ECDSA P-521".to_string()),
            Some(c) => Some(format!("ECDSA on curve {c}")),
            None => Some("ECDSA without a named curve".to_string()),
        };
    }
    Some(if *alg == OID_PKCS1_RSAENCRYPTION {
        "RSA".to_string()
    } else if *alg == OID_SIG_ED25519 {
        "Ed25519".to_string()
    } else {
        format!("a key of type {alg}")
    })
}

fn describe_general_name(n: &GeneralName<'_>) -> String {
    match n {
        // Escaped: these strings come from the requester and end up in logs.
        GeneralName::DNSName(s) => format!("DNS:{}", s.escape_debug()),
        GeneralName::URI(s) => format!("URI:{}", s.escape_debug()),
        GeneralName::RFC822Name(s) => format!("email:{}", s.escape_debug()),
        GeneralName::IPAddress(b) => match b.len() {
            4 => {
                let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                format!("IP:{}", std::net::Ipv4Addr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                format!("IP:{}", std::net::Ipv6Addr::from(a))
            }
            _ => "IP:(malformed)".to_string(),
        },
        GeneralName::OtherName(oid, _) => format!("otherName:{oid}"),
        GeneralName::DirectoryName(dn) => format!("dirName:{}", dn.to_string().escape_debug()),
        GeneralName::RegisteredID(oid) => format!("registeredID:{oid}"),
        GeneralName::X400Address(_) => "x400Address".to_string(),
        GeneralName::EDIPartyName(_) => "ediPartyName".to_string(),
        GeneralName::Invalid(_, _) => "(invalid name)".to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::tokens::{TokenEntry, TokenRegistry};
    use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};

    pub(crate) const WEB: &str = "web.apps.serviceaccount.identity.weft.cluster.local";
    pub(crate) const DB: &str = "db.apps.serviceaccount.identity.weft.cluster.local";

    /// Authentication through the registry, then the decision: what the service does.
    fn verify_with(
        req: &CertifyRequest,
        reg: &TokenRegistry,
        now: OffsetDateTime,
        config: &VerifyConfig,
    ) -> Result<IssueDecision, Refusal> {
        let id = reg.identity_for(&req.token).ok_or(Refusal::UnknownToken)?;
        verify(req, id, now, config)
    }

    pub(crate) fn registry() -> TokenRegistry {
        let e = |t: &str, sa: &str| TokenEntry {
            token: t.into(),
            service_account: sa.into(),
            namespace: "apps".into(),
        };
        TokenRegistry::new(
            &[e("t-web", "web"), e("t-db", "db")],
            "weft",
            "cluster.local",
        )
        .unwrap()
    }

    pub(crate) fn csr_with(alg: &'static SignatureAlgorithm, names: &[&str]) -> String {
        let key = KeyPair::generate_for(alg).unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    pub(crate) fn csr(names: &[&str]) -> String {
        csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, names)
    }

    pub(crate) fn request(identity: &str, token: &str, csr_pem: String) -> CertifyRequest {
        CertifyRequest {
            identity: identity.into(),
            token: token.into(),
            csr_pem,
        }
    }

    fn tampered_csr() -> String {
        let pem = csr(&[WEB]);
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        crate::identity::ca::pem_encode("CERTIFICATE REQUEST", &der)
    }

    fn config(now: OffsetDateTime) -> VerifyConfig {
        VerifyConfig {
            leaf_lifetime: Duration::from_secs(24 * 3600),
            issuer_not_after: now + time::Duration::days(365),
        }
    }

    #[test]
    fn refusals() {
        let now = whole_seconds(OffsetDateTime::now_utc());
        let cases: Vec<(&str, CertifyRequest, u16, String)> = vec![
            (
                "unknown token",
                request(WEB, "t-nobody", csr(&[WEB])),
                401,
                "unknown token".into(),
            ),
            (
                "empty token",
                request(WEB, "", csr(&[WEB])),
                401,
                "unknown token".into(),
            ),
            (
                "token for another service account",
                request(WEB, "t-db", csr(&[WEB])),
                403,
                format!("the token is for identity {DB:?}, not {WEB:?}"),
            ),
            (
                "identity that is not even a name",
                request("web", "t-web", csr(&[WEB])),
                403,
                format!("the token is for identity {WEB:?}, not \"web\""),
            ),
            (
                "garbage CSR",
                request(WEB, "t-web", "hello".into()),
                400,
                "invalid CSR: csrPem is not a PEM \"-----BEGIN CERTIFICATE REQUEST-----\" block"
                    .into(),
            ),
            (
                "PEM that is not a CSR",
                request(
                    WEB,
                    "t-web",
                    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                        .into(),
                ),
                400,
                "invalid CSR: not a PKCS#10 certification request".into(),
            ),
            (
                "signature does not verify",
                request(WEB, "t-web", tampered_csr()),
                400,
                "invalid CSR: its signature does not verify with the key it carries".into(),
            ),
            (
                "CSR for another name",
                request(WEB, "t-web", csr(&[DB])),
                400,
                format!("the CSR must name exactly {WEB:?} as its only subject alternative name (a DNS name); it had DNS:{DB}"),
            ),
            (
                "CSR with an extra name",
                request(WEB, "t-web", csr(&[WEB, "evil.example.com"])),
                400,
                format!("the CSR must name exactly {WEB:?} as its only subject alternative name (a DNS name); it had DNS:{WEB}, DNS:evil.example.com"),
            ),
            (
                "CSR with no names",
                request(WEB, "t-web", csr(&[])),
                400,
                format!("the CSR must name exactly {WEB:?} as its only subject alternative name (a DNS name); it had none"),
            ),
            (
                "CSR with an IP name",
                request(WEB, "t-web", csr(&["10.0.0.1"])),
                400,
                format!("the CSR must name exactly {WEB:?} as its only subject alternative name (a DNS name); it had IP:10.0.0.1"),
            ),
            (
                "CSR whose name would forge a log line",
                request(WEB, "t-web", csr(&["x\n2026-01-01 INFO issued"])),
                400,
                format!("the CSR must name exactly {WEB:?} as its only subject alternative name (a DNS name); it had DNS:x\\n2026-01-01 INFO issued"),
            ),
            (
                "P-384 key",
                request(WEB, "t-web", csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, &[WEB])),
                400,
                "the CSR's key must be ECDSA P-256; it is ECDSA P-384".into(),
            ),
            (
                "Ed25519 key",
                request(WEB, "t-web", csr_with(&rcgen::PKCS_ED25519, &[WEB])),
                400,
                "the CSR's key must be ECDSA P-256; it is Ed25519".into(),
            ),
        ];
        let reg = registry();
        for (name, req, status, message) in cases {
            let r = verify_with(&req, &reg, now, &config(now)).unwrap_err();
            assert_eq!(r.status(), status, "{name}: {r}");
            assert!(
                r.to_string().starts_with(&message),
                "{name}:\n got: {r}\nwant: {message}"
            );
        }
    }

    #[test]
    fn expired_issuer_refuses_everything() {
        let now = whole_seconds(OffsetDateTime::now_utc());
        let config = VerifyConfig {
            leaf_lifetime: Duration::from_secs(3600),
            issuer_not_after: now - time::Duration::seconds(1),
        };
        let r = verify_with(
            &request(WEB, "t-web", csr(&[WEB])),
            &registry(),
            now,
            &config,
        )
        .unwrap_err();
        assert_eq!(r.status(), 503);
        assert_eq!(r.reason(), "issuer_expired");
        assert!(
            r.to_string()
                .starts_with("the issuer certificate expired on "),
            "{r}"
        );
    }

    #[test]
    fn accepts_a_good_request() {
        let now = whole_seconds(OffsetDateTime::now_utc());
        let pem = csr(&[WEB]);
        let d = verify_with(
            &request(WEB, "t-web", pem.clone()),
            &registry(),
            now,
            &config(now),
        )
        .unwrap();
        assert_eq!(d.identity.to_string(), WEB);
        assert_eq!(d.not_before, now - time::Duration::minutes(1));
        assert_eq!(d.not_after, now + time::Duration::hours(24));
        // The key is the CSR's.
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, parsed) = X509CertificationRequest::from_der(&der).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::der_bytes(&d.public_key),
            parsed
                .certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref()
        );
    }

    #[test]
    fn leaf_lifetime_is_capped_at_the_issuer_expiry() {
        let now = whole_seconds(OffsetDateTime::now_utc());
        let config = VerifyConfig {
            leaf_lifetime: Duration::from_secs(24 * 3600),
            issuer_not_after: now + time::Duration::hours(2),
        };
        let d = verify_with(
            &request(WEB, "t-web", csr(&[WEB])),
            &registry(),
            now,
            &config,
        )
        .unwrap();
        assert_eq!(d.not_after, now + time::Duration::hours(2));
        let config = VerifyConfig {
            leaf_lifetime: Duration::MAX,
            ..config
        };
        let d = verify_with(
            &request(WEB, "t-web", csr(&[WEB])),
            &registry(),
            now,
            &config,
        )
        .unwrap();
        assert_eq!(d.not_after, now + time::Duration::hours(2));
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            Refusal::UnknownToken,
            Refusal::IdentityMismatch {
                requested: String::new(),
                allowed: String::new(),
            },
            Refusal::InvalidCsr(String::new()),
            Refusal::CsrNameMismatch {
                expected: String::new(),
                found: vec![],
            },
            Refusal::CsrKeyType(String::new()),
            Refusal::IssuerExpired(String::new()),
            Refusal::TokenRejected(String::new()),
            Refusal::NotServiceAccount(String::new()),
            Refusal::TokenReviewUnavailable(String::new()),
        ];
        let reasons: Vec<_> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
    }
}
