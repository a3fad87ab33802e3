//! The `weft-identity` checks: the issuer Secret exists, its trust anchor and issuer are
//! valid (warning under [`EXPIRY_WARNING_DAYS`] days, failure once expired), and it loads
//! the way the controller loads it ([`crate::identity::secret::from_data`]: the issuer is
//! a CA signed by the anchor, and the key is the issuer's). Pure, like the other checks.

use super::checks::{lookup_error, Category, Check, EXPIRY_WARNING_DAYS};
use super::facts::{Facts, Lookup};
use super::Options;
use crate::duration::date;
use crate::identity::ca::{ANCHORS_FILE, ISSUER_CERT_FILE, TLS_CERT_FILE};
use crate::install::{CONTROLLER, ISSUER_SECRET};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// The DER of every certificate in a PEM bundle (anything else is skipped).
pub fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The validity of a DER certificate, or `None` if it does not parse.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(Validity {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// The command that makes a new trust anchor and issuer and puts them in the Secret.
pub fn replace_issuer(ns: &str) -> String {
    format!(
        "weft identity generate --out weft-id && kubectl -n {ns} create secret generic {ISSUER_SECRET} --type=kubernetes.io/tls --from-file=ca.crt=weft-id/ca.crt --from-file=tls.crt=weft-id/issuer.crt --from-file=tls.key=weft-id/issuer.key --dry-run=client -o yaml | kubectl apply -f - && kubectl -n {ns} rollout restart deploy/{CONTROLLER}"
    )
}

const NEW_ANCHOR: &str = "A new anchor means restarting every meshed workload afterwards; docs/identity.md (Rotation) rotates without downtime, and with cert-manager the issuer renews itself (then restart the controller)";

/// One certificate's expiry as a check.
fn expiry(desc: String, what: &str, v: Option<Validity>, now: OffsetDateTime, ns: &str) -> Check {
    let Some(v) = v else {
        return Check::fail(
            desc,
            format!("the {what} is not a readable PEM certificate"),
            replace_issuer(ns),
        );
    };
    let days = (v.not_after - now).whole_days();
    let shown = format!("expires {} ({days} days)", date(v.not_after));
    if v.not_before > now {
        return Check::fail(
            desc,
            format!(
                "the {what} is not valid before {}: is this machine's clock, or the cluster's, right?",
                date(v.not_before)
            ),
            "date -u; timedatectl status",
        );
    }
    if v.not_after <= now {
        return Check::fail(
            desc,
            format!(
                "the {what} expired on {}: no proxy can get a certificate, and mTLS fails as proxies' certificates run out. {NEW_ANCHOR}",
                date(v.not_after)
            ),
            replace_issuer(ns),
        )
        .detail(shown);
    }
    if days < EXPIRY_WARNING_DAYS {
        return Check::warn(
            desc,
            format!(
                "the {what} expires on {} (in {days} days); replace it before then. {NEW_ANCHOR}",
                date(v.not_after)
            ),
            replace_issuer(ns),
        )
        .detail(shown);
    }
    Check::ok(desc).detail(shown)
}

/// The `weft-identity` category.
pub fn identity(facts: &Facts, now: OffsetDateTime, _opts: &Options) -> Category {
    let ns = &facts.control_plane_namespace;
    let name = "weft-identity";
    let exists = format!("the issuer Secret {ISSUER_SECRET} exists");
    let data = match &facts.secret {
        Lookup::Found(d) => d,
        Lookup::Missing => {
            let c = Check::fail(
                exists,
                format!("Secret {ns}/{ISSUER_SECRET} not found: the controller reads the trust anchor and issuer from it at start (--identity-secret) and crash-loops without it. weft install --identity-external-issuer leaves it to cert-manager or you (docs/install.md)"),
                replace_issuer(ns),
            );
            return Category {
                name: name.into(),
                checks: vec![c],
            };
        }
        other => {
            let c = Check::fail(
                exists,
                format!(
                    "cannot read Secret {ns}/{ISSUER_SECRET}: {}",
                    lookup_error(other).unwrap_or("?")
                ),
                format!("kubectl -n {ns} get secret {ISSUER_SECRET}"),
            );
            return Category {
                name: name.into(),
                checks: vec![c],
            };
        }
    };
    let mut checks = vec![Check::ok(exists)];
    let days = EXPIRY_WARNING_DAYS;
    // With several anchors (a rotation), the one that expires first.
    let anchor = data
        .get(ANCHORS_FILE)
        .map(|pem| pem_certs(pem))
        .unwrap_or_default()
        .iter()
        .filter_map(|der| validity(der))
        .min_by_key(|v| v.not_after);
    checks.push(expiry(
        format!("the trust anchor is valid for at least {days} days"),
        "trust anchor",
        anchor,
        now,
        ns,
    ));
    let issuer_key = if data.contains_key(ISSUER_CERT_FILE) {
        ISSUER_CERT_FILE
    } else {
        TLS_CERT_FILE
    };
    let issuer = data
        .get(issuer_key)
        .map(|pem| pem_certs(pem))
        .unwrap_or_default()
        .first()
        .and_then(|der| validity(der));
    checks.push(expiry(
        format!("the issuer certificate is valid for at least {days} days"),
        "issuer certificate",
        issuer,
        now,
        ns,
    ));
    let loads = "the issuer loads as the controller loads it (a CA signed by the trust anchor, with its key)";
    checks.push(
        match crate::identity::secret::from_data(data, ns, ISSUER_SECRET, now) {
            Ok(ca) => Check::ok(loads).detail(ca.issuer_subject().to_string()),
            Err(e) => Check::fail(
                loads,
                format!("the controller would refuse it: {e}"),
                replace_issuer(ns),
            ),
        },
    );
    Category {
        name: name.into(),
        checks,
    }
}
