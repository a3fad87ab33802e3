//! Ingress mode, for Traefik, ingress-nginx and other ingress controllers meshed with
//! `weft.dev/inject: ingress`: each HTTP request goes where its `weft-dst-override` header
//! (or Linkerd's `l5d-dst-override`, so existing Traefik middlewares keep working) says,
//! else where the connection was going; the header is removed before forwarding.
//! Non-HTTP traffic — Traefik's own TLS calls to the Kubernetes API on 443, say — is
//! detected as opaque and passes through untouched, so no `skip-outbound-ports` is needed.

use http::header::{HeaderMap, HeaderName};
use std::net::SocketAddr;

pub const WEFT_DST_OVERRIDE: &str = "weft-dst-override";
pub const L5D_DST_OVERRIDE: &str = "l5d-dst-override";

/// Where an override header sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// An address: resolved through discovery as is.
    Addr(SocketAddr),
    /// A name (e.g. `web.apps.svc.cluster.local`) and port: resolved with DNS first.
    Name(String, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} value {value:?}: expected HOST:PORT or IP:PORT")]
pub struct OverrideError {
    pub header: &'static str,
    pub value: String,
}

/// Reads (and removes) the override headers. `weft-dst-override` wins over
/// `l5d-dst-override`; both are always stripped.
pub fn take_override(headers: &mut HeaderMap) -> Option<Result<Override, OverrideError>> {
    let weft = headers.remove(HeaderName::from_static(WEFT_DST_OVERRIDE));
    let l5d = headers.remove(HeaderName::from_static(L5D_DST_OVERRIDE));
    let (header, value) = match (weft, l5d) {
        (Some(v), _) => (WEFT_DST_OVERRIDE, v),
        (None, Some(v)) => (L5D_DST_OVERRIDE, v),
        (None, None) => return None,
    };
    let err = |value: String| OverrideError { header, value };
    let Ok(text) = value.to_str() else {
        return Some(Err(err(
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        )));
    };
    Some(parse(text.trim()).ok_or_else(|| err(text.to_string())))
}

/// `10.43.0.10:8080`, `[fd00::1]:80`, `web.apps.svc.cluster.local:80`, or a bare name
/// (port 80).
pub fn parse(s: &str) -> Option<Override> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(Override::Addr(addr));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (s, 80),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then(|| Override::Name(host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn parse_table() {
        let cases = [
            (
                "10.43.0.10:8080",
                Some(Override::Addr("10.43.0.10:8080".parse().unwrap())),
            ),
            (
                "[fd00::1]:80",
                Some(Override::Addr("[fd00::1]:80".parse().unwrap())),
            ),
            (
                "web.apps.svc.cluster.local:80",
                Some(Override::Name("web.apps.svc.cluster.local".into(), 80)),
            ),
            (
                "Web.Apps.svc.cluster.local",
                Some(Override::Name("web.apps.svc.cluster.local".into(), 80)),
            ),
            ("web:0", None),
            ("web:http", None),
            ("", None),
            ("we b:80", None),
            ("web..apps:80", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), expected, "{input:?}");
        }
    }

    #[test]
    fn weft_wins_and_both_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            L5D_DST_OVERRIDE,
            HeaderValue::from_static("a.b.svc.cluster.local:80"),
        );
        h.insert(
            WEFT_DST_OVERRIDE,
            HeaderValue::from_static("10.43.0.1:9090"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert_eq!(
            take_override(&mut h),
            Some(Ok(Override::Addr("10.43.0.1:9090".parse().unwrap())))
        );
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert(
            L5D_DST_OVERRIDE,
            HeaderValue::from_static("web.apps.svc.cluster.local:8080"),
        );
        assert_eq!(
            take_override(&mut h),
            Some(Ok(Override::Name(
                "web.apps.svc.cluster.local".into(),
                8080
            )))
        );
        assert!(h.is_empty());
        let mut h = HeaderMap::new();
        h.insert(L5D_DST_OVERRIDE, HeaderValue::from_static("bad value:80"));
        assert_eq!(
            take_override(&mut h).unwrap().unwrap_err().to_string(),
            "invalid l5d-dst-override value \"bad value:80\": expected HOST:PORT or IP:PORT"
        );
        assert_eq!(take_override(&mut HeaderMap::new()), None);
    }
}
