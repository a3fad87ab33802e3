//! Routing decisions, computed as plain data before any I/O happens.
//!
//! Each accepted connection goes through two decisions:
//! 1. [`detection`]: inspect the first bytes, or skip detection for opaque ports;
//! 2. [`outbound`] / [`inbound`]: where to connect and how to speak to it.
//!
//! The listeners then carry out the returned [`Route`]. What discovery knows about a
//! destination arrives as [`Known`]; today nothing is known and every destination passes
//! through as addressed. The destination API fills it in later without changing this shape.

use crate::balance::Balancer;
use crate::config::InboundForward;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use weft_api::destination::Endpoint;

/// Whether to look at a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    Detect,
    /// An opaque port: forward at once, so server-speaks-first protocols never wait.
    SkipOpaque,
}

/// The inbound port meshed peers listen on, unless discovery says otherwise.
pub const DEFAULT_INBOUND_PORT: u16 = 4143;

/// A meshed pod: its proxy's identity and inbound port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshEndpoint {
    pub identity: String,
    pub inbound_port: u16,
}

/// A destination's balancer, compared by identity.
#[derive(Debug, Clone)]
pub struct Balanced(pub Arc<Balancer>);

impl PartialEq for Balanced {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Balanced {}

/// What discovery knows about an original destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Not a known service or meshed pod: pass through.
    Unknown,
    /// A meshed pod.
    Meshed(MeshEndpoint),
    /// A Service: balance over its endpoints.
    Service(Balanced),
}

/// The mTLS part of a route: who the server must be and which app port it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTarget {
    pub identity: String,
    pub app_port: u16,
}

/// Where a connection goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The address to connect to.
    pub target: SocketAddr,
    /// Mutual TLS to a peer proxy, or `None` for plaintext.
    pub tls: Option<MeshTarget>,
    /// For a Service: pick an endpoint per request (HTTP) or per connection (TCP), each
    /// reached as [`endpoint`] says; `target` is then the Service's own address.
    pub balancer: Option<Balanced>,
    /// Why this route was chosen (logged at debug).
    pub reason: &'static str,
}

/// A connection that must not be proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The original destination is the address the proxy accepted the connection on: it was
    /// not redirected by iptables, and forwarding it would loop back to the proxy.
    #[error(
        "original destination {0} is the proxy's own listener (connection was not redirected)"
    )]
    Loop(SocketAddr),
}

pub fn detection(orig_dst: SocketAddr, opaque_ports: &BTreeSet<u16>) -> Detection {
    if opaque_ports.contains(&orig_dst.port()) {
        Detection::SkipOpaque
    } else {
        Detection::Detect
    }
}

/// The outbound decision: from the original destination, what discovery knows, and
/// whether this proxy holds an identity (can speak mTLS). The protocol, detected
/// separately, is spoken the same on both sides.
pub fn outbound(
    orig_dst: SocketAddr,
    local: SocketAddr,
    known: &Known,
    has_identity: bool,
) -> Result<Route, Refused> {
    if is_self(orig_dst, local) {
        return Err(Refused::Loop(orig_dst));
    }
    let route = match known {
        Known::Unknown => Route {
            target: orig_dst,
            tls: None,
            balancer: None,
            reason: "unknown destination: pass through",
        },
        Known::Meshed(ep) if has_identity => Route {
            target: SocketAddr::new(orig_dst.ip(), ep.inbound_port),
            tls: Some(MeshTarget {
                identity: ep.identity.clone(),
                app_port: orig_dst.port(),
            }),
            balancer: None,
            reason: "meshed endpoint: mTLS to its proxy",
        },
        Known::Service(b) => Route {
            target: orig_dst,
            tls: None,
            balancer: Some(b.clone()),
            reason: "service: balance over its endpoints",
        },
        Known::Meshed(_) => Route {
            target: orig_dst,
            tls: None,
            balancer: None,
            reason: "meshed endpoint, but this proxy has no identity: plaintext",
        },
    };
    Ok(route)
}

/// How to reach one endpoint of a Service: mTLS to its proxy when it is meshed and this
/// proxy has an identity, else plaintext to the endpoint itself.
pub fn endpoint(ep: &Endpoint, has_identity: bool) -> Route {
    match &ep.identity {
        Some(identity) if has_identity => Route {
            target: SocketAddr::new(ep.addr.ip(), ep.inbound_port),
            tls: Some(MeshTarget {
                identity: identity.clone(),
                app_port: ep.addr.port(),
            }),
            balancer: None,
            reason: "meshed endpoint: mTLS to its proxy",
        },
        _ => Route {
            target: ep.addr,
            tls: None,
            balancer: None,
            reason: "unmeshed endpoint: plaintext",
        },
    }
}

/// The inbound decision for a meshed connection: the app port named in its header, on the
/// pod's own address (or localhost).
pub fn inbound_mesh(
    local: SocketAddr,
    app_port: u16,
    forward: InboundForward,
) -> Result<Route, Refused> {
    let app = SocketAddr::new(local.ip(), app_port);
    if app_port == local.port() {
        return Err(Refused::Loop(app));
    }
    let mut route = inbound(app, local, forward)?;
    route.reason = "meshed connection: mTLS terminated";
    Ok(route)
}

/// The inbound decision: the pod's own address, or localhost for apps bound only there.
pub fn inbound(
    orig_dst: SocketAddr,
    local: SocketAddr,
    forward: InboundForward,
) -> Result<Route, Refused> {
    if is_self(orig_dst, local) {
        return Err(Refused::Loop(orig_dst));
    }
    let route = match forward {
        InboundForward::OriginalDst => Route {
            target: orig_dst,
            tls: None,
            balancer: None,
            reason: "forward to the original destination",
        },
        InboundForward::Localhost => {
            let ip = match orig_dst {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            };
            Route {
                target: SocketAddr::new(ip, orig_dst.port()),
                tls: None,
                balancer: None,
                reason: "forward to localhost",
            }
        }
    };
    Ok(route)
}

/// True when the original destination is the address the connection was accepted on: the
/// kernel reports that when nothing redirected the connection.
fn is_self(dst: SocketAddr, local: SocketAddr) -> bool {
    dst == local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn detection_skips_opaque_ports() {
        let opaque: BTreeSet<u16> = [25, 3306, 5432].into();
        let cases = [
            ("10.0.0.5:5432", Detection::SkipOpaque),
            ("10.0.0.5:25", Detection::SkipOpaque),
            ("10.0.0.5:80", Detection::Detect),
            ("[fd00::1]:3306", Detection::SkipOpaque),
        ];
        for (dst, expected) in cases {
            assert_eq!(detection(addr(dst), &opaque), expected, "{dst}");
        }
    }

    #[test]
    fn outbound_table() {
        let local = addr("127.0.0.1:4140");
        let cases = [
            ("10.43.0.10:80", Ok(addr("10.43.0.10:80"))),
            ("[fd00::7]:9000", Ok(addr("[fd00::7]:9000"))),
            ("127.0.0.1:4140", Err(Refused::Loop(addr("127.0.0.1:4140")))),
        ];
        for (dst, expected) in cases {
            let got = outbound(addr(dst), local, &Known::Unknown, true);
            assert_eq!(
                got.as_ref().map(|r| r.target).map_err(|e| *e),
                expected,
                "{dst}"
            );
            if let Ok(r) = got {
                assert_eq!(r.tls, None);
            }
        }
    }

    #[test]
    fn outbound_meshed_endpoints_get_mtls_to_the_peer_proxy() {
        let local = addr("127.0.0.1:4140");
        let id = "web.apps.serviceaccount.identity.weft.cluster.local";
        let known = Known::Meshed(MeshEndpoint {
            identity: id.into(),
            inbound_port: 4143,
        });
        let r = outbound(addr("10.42.0.9:8080"), local, &known, true).unwrap();
        assert_eq!(
            r,
            Route {
                target: addr("10.42.0.9:4143"),
                tls: Some(MeshTarget {
                    identity: id.into(),
                    app_port: 8080
                }),
                balancer: None,
                reason: "meshed endpoint: mTLS to its proxy",
            }
        );
        // Without an identity of its own the proxy cannot do mTLS: plaintext, as addressed.
        let r = outbound(addr("10.42.0.9:8080"), local, &known, false).unwrap();
        assert_eq!((r.target, r.tls), (addr("10.42.0.9:8080"), None));
    }

    #[test]
    fn endpoint_routes() {
        let id = "web.apps.serviceaccount.identity.weft.cluster.local";
        let mut ep = Endpoint {
            addr: addr("10.42.0.9:8080"),
            weight: 1,
            backend: None,
            identity: Some(id.into()),
            inbound_port: 4143,
            protocol_hint: None,
            labels: Default::default(),
        };
        let r = endpoint(&ep, true);
        assert_eq!(
            (r.target, r.tls.map(|t| (t.identity, t.app_port))),
            (addr("10.42.0.9:4143"), Some((id.to_string(), 8080)))
        );
        assert_eq!(
            (endpoint(&ep, false).target, endpoint(&ep, false).tls),
            (addr("10.42.0.9:8080"), None)
        );
        ep.identity = None;
        assert_eq!(
            (endpoint(&ep, true).target, endpoint(&ep, true).tls),
            (addr("10.42.0.9:8080"), None)
        );
    }

    #[test]
    fn inbound_mesh_table() {
        let local = addr("10.42.0.9:4143");
        let cases = [
            (
                8080,
                InboundForward::OriginalDst,
                Ok(addr("10.42.0.9:8080")),
            ),
            (5432, InboundForward::Localhost, Ok(addr("127.0.0.1:5432"))),
            (
                4143,
                InboundForward::OriginalDst,
                Err(Refused::Loop(addr("10.42.0.9:4143"))),
            ),
        ];
        for (port, fwd, expected) in cases {
            let got = inbound_mesh(local, port, fwd).map(|r| r.target);
            assert_eq!(got, expected, "{port} {fwd:?}");
        }
    }

    #[test]
    fn inbound_table() {
        let local = addr("10.42.1.7:4143");
        let cases = [
            (
                "10.42.1.7:8080",
                InboundForward::OriginalDst,
                Ok(addr("10.42.1.7:8080")),
            ),
            (
                "10.42.1.7:8080",
                InboundForward::Localhost,
                Ok(addr("127.0.0.1:8080")),
            ),
            (
                "[fd00::7]:8080",
                InboundForward::Localhost,
                Ok(addr("[::1]:8080")),
            ),
            (
                "10.42.1.7:4143",
                InboundForward::OriginalDst,
                Err(Refused::Loop(addr("10.42.1.7:4143"))),
            ),
            (
                "10.42.1.8:4143",
                InboundForward::OriginalDst,
                Ok(addr("10.42.1.8:4143")),
            ),
        ];
        for (dst, fwd, expected) in cases {
            let got = inbound(addr(dst), local, fwd).map(|r| r.target);
            assert_eq!(got, expected, "{dst} {fwd:?}");
        }
    }
}
