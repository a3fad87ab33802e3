//! The identity service's counters and expiry gauges, in Prometheus text format.
//!
//! Served on the controller's admin `/metrics` when `--admin-addr` is set; the counts are
//! also written in every issuance/refusal log line.

use super::verify::Refusal;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Refused for not being a well-formed request at all (wrong path, method, body).
pub const BAD_REQUEST: &str = "bad_request";

const REFUSAL_REASONS: usize = Refusal::REASONS.len() + 1;

#[derive(Debug, Default)]
pub struct IdentityMetrics {
    issued: AtomicU64,
    refused: [AtomicU64; REFUSAL_REASONS],
    handshake_failures: AtomicU64,
    issuer_expiry: AtomicI64,
    anchor_expiry: AtomicI64,
    serving_expiry: AtomicI64,
}

impl IdentityMetrics {
    /// Counts an issued certificate; returns the new total.
    pub fn issued(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a refusal by reason ([`Refusal::reason`] or [`BAD_REQUEST`]); returns the
    /// new total of all refusals.
    pub fn refused(&self, reason: &str) -> u64 {
        let i = Refusal::REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REFUSAL_REASONS - 1);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
        self.refused_total()
    }

    pub fn issued_total(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_issuer_expiry(&self, unix: i64) {
        self.issuer_expiry.store(unix, Ordering::Relaxed);
    }

    pub fn set_anchor_expiry(&self, unix: i64) {
        self.anchor_expiry.store(unix, Ordering::Relaxed);
    }

    pub fn set_serving_expiry(&self, unix: i64) {
        self.serving_expiry.store(unix, Ordering::Relaxed);
    }

    /// The metrics in Prometheus text format.
    pub fn render_to_string(&self) -> String {
        let mut out = String::new();
        let _ = self.render_inner(&mut out);
        out
    }

    fn render_inner(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP identity_certificates_issued_total Leaf certificates issued to proxies."
        )?;
        writeln!(out, "# TYPE identity_certificates_issued_total counter")?;
        writeln!(
            out,
            "identity_certificates_issued_total {}",
            self.issued_total()
        )?;
        writeln!(
            out,
            "# HELP identity_certify_refused_total Certificate requests refused, by reason."
        )?;
        writeln!(out, "# TYPE identity_certify_refused_total counter")?;
        let reasons = Refusal::REASONS.iter().copied().chain([BAD_REQUEST]);
        for (reason, n) in reasons.zip(&self.refused) {
            writeln!(
                out,
                "identity_certify_refused_total{{reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP identity_tls_handshake_failures_total TLS handshakes on the proxy API that failed."
        )?;
        writeln!(out, "# TYPE identity_tls_handshake_failures_total counter")?;
        writeln!(
            out,
            "identity_tls_handshake_failures_total {}",
            self.handshake_failures.load(Ordering::Relaxed)
        )?;
        for (name, help, v) in [
            (
                "identity_issuer_expiration_timestamp_seconds",
                "When the issuer certificate expires (Unix time).",
                &self.issuer_expiry,
            ),
            (
                "identity_trust_anchor_expiration_timestamp_seconds",
                "When the trust anchor the issuer chains to expires (Unix time).",
                &self.anchor_expiry,
            ),
            (
                "identity_controller_cert_expiration_timestamp_seconds",
                "When the controller's own serving certificate expires (Unix time).",
                &self.serving_expiry,
            ),
        ] {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} gauge")?;
            writeln!(out, "{name} {}", v.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = IdentityMetrics::default();
        assert_eq!(m.issued(), 1);
        assert_eq!(m.issued(), 2);
        assert_eq!(m.refused("unknown_token"), 1);
        assert_eq!(m.refused("unknown_token"), 2);
        assert_eq!(m.refused(BAD_REQUEST), 3);
        assert_eq!(m.refused("something new"), 4);
        m.set_issuer_expiry(1_800_000_000);
        let out = m.render_to_string();
        for line in [
            "identity_certificates_issued_total 2",
            "identity_certify_refused_total{reason=\"unknown_token\"} 2",
            "identity_certify_refused_total{reason=\"identity_mismatch\"} 0",
            "identity_certify_refused_total{reason=\"bad_request\"} 2",
            "identity_tls_handshake_failures_total 0",
            "identity_issuer_expiration_timestamp_seconds 1800000000",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
