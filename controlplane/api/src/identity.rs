//! Identity names: `<serviceaccount>.<namespace>.serviceaccount.identity.<cp-namespace>.<trust-domain>`.
//!
//! The same convention as Linkerd, so existing dashboards and policies that match on
//! identities keep reading naturally. Parsing and building are both strict: every label
//! must be a valid DNS-1123 label, because the name ends up in a certificate's SAN.

use std::fmt;

/// The default trust domain, as in Linkerd.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The default control-plane namespace.
pub const DEFAULT_CONTROL_PLANE_NAMESPACE: &str = "weft";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A label (service account, namespace, ...) is not a DNS-1123 label.
    #[error("{what} {value:?} is not a valid DNS-1123 label (lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit)")]
    InvalidLabel { what: &'static str, value: String },
    /// The trust domain is not a valid DNS name.
    #[error("trust domain {0:?} is not a valid DNS name")]
    InvalidTrustDomain(String),
    /// A full name did not have the `<sa>.<ns>.serviceaccount.identity.<cp-ns>.<td>` shape.
    #[error("identity {0:?} is not of the form <serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-namespace>.<trust-domain>")]
    Malformed(String),
}

/// A workload identity, as carried in certificates and in metrics labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityName {
    pub service_account: String,
    pub namespace: String,
    pub control_plane_namespace: String,
    pub trust_domain: String,
}

impl IdentityName {
    /// Builds an identity after checking every part.
    pub fn new(
        service_account: &str,
        namespace: &str,
        control_plane_namespace: &str,
        trust_domain: &str,
    ) -> Result<Self, IdentityError> {
        check_label("service account", service_account)?;
        check_label("namespace", namespace)?;
        check_label("control-plane namespace", control_plane_namespace)?;
        if trust_domain.is_empty()
            || trust_domain.len() > 253
            || !trust_domain.split('.').all(is_dns_label)
        {
            return Err(IdentityError::InvalidTrustDomain(trust_domain.to_string()));
        }
        Ok(Self {
            service_account: service_account.to_string(),
            namespace: namespace.to_string(),
            control_plane_namespace: control_plane_namespace.to_string(),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// Parses a full identity name back into its parts.
    pub fn parse(name: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed(name.to_string());
        let mut parts = name.splitn(6, '.');
        let sa = parts.next().ok_or_else(malformed)?;
        let ns = parts.next().ok_or_else(malformed)?;
        if parts.next() != Some("serviceaccount") || parts.next() != Some("identity") {
            return Err(malformed());
        }
        let cp = parts.next().ok_or_else(malformed)?;
        let td = parts.next().ok_or_else(malformed)?;
        Self::new(sa, ns, cp, td)
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.serviceaccount.identity.{}.{}",
            self.service_account, self.namespace, self.control_plane_namespace, self.trust_domain
        )
    }
}

fn check_label(what: &'static str, value: &str) -> Result<(), IdentityError> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(IdentityError::InvalidLabel {
            what,
            value: value.to_string(),
        })
    }
}

/// A DNS-1123 label: 1–63 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_linkerd_compatible_names() {
        let id = IdentityName::new("web", "apps", "weft", "cluster.local").unwrap();
        assert_eq!(
            id.to_string(),
            "web.apps.serviceaccount.identity.weft.cluster.local"
        );
    }

    #[test]
    fn parse_round_trips() {
        let cases = [
            "web.apps.serviceaccount.identity.weft.cluster.local",
            "default.default.serviceaccount.identity.weft.edge.example.org",
            "a.b.serviceaccount.identity.c.d",
        ];
        for name in cases {
            let id = IdentityName::parse(name).unwrap();
            assert_eq!(id.to_string(), name);
        }
    }

    #[test]
    fn refuses_bad_names() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            ("Web", "apps", "weft", "cluster.local", "service account"),
            ("web", "", "weft", "cluster.local", "namespace"),
            ("web", "apps-", "weft", "cluster.local", "namespace"),
            (
                "web",
                "apps",
                "we.ft",
                "cluster.local",
                "control-plane namespace",
            ),
            ("web", "apps", "weft", "cluster..local", "trust domain"),
            ("web", "apps", "weft", "", "trust domain"),
        ];
        for (sa, ns, cp, td, what) in cases {
            let err = IdentityName::new(sa, ns, cp, td).unwrap_err();
            assert!(err.to_string().contains(what), "{err} should name {what}");
        }
        let too_long = "a".repeat(64);
        assert!(IdentityName::new(&too_long, "apps", "weft", "cluster.local").is_err());
    }

    #[test]
    fn parse_refuses_wrong_shape() {
        for name in [
            "web.apps.identity.weft.cluster.local",
            "web.apps.serviceaccount.weft.cluster.local",
            "web",
            "web.apps.serviceaccount.identity.weft",
        ] {
            assert_eq!(
                IdentityName::parse(name),
                Err(IdentityError::Malformed(name.to_string())),
                "{name}"
            );
        }
    }
}
