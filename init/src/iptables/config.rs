//! What `weft-init` should install: ports, the proxy's uid, what to skip.
//!
//! [`RedirectConfig`] is the whole input of the pure ruleset planner
//! ([`super::ruleset::plan`]); it is built from the command line by
//! [`super::cmd`] and checked once by [`RedirectConfig::validate`].

use super::cidr::Cidr;
use super::ports::PortRange;

/// Proxy inbound port (the REDIRECT target in `WEFT_PREROUTING`).
pub const DEFAULT_INCOMING_PROXY_PORT: u16 = 4143;
/// Proxy outbound port (the REDIRECT target in `WEFT_OUTPUT`).
pub const DEFAULT_OUTGOING_PROXY_PORT: u16 = 4140;
/// The uid the proxy runs as; its own connections are never redirected.
pub const DEFAULT_PROXY_UID: u32 = 2102;
/// Inbound ports that are never redirected, whatever the flags say: the
/// proxy's tap port (4190) and admin port (4191, which serves the kubelet's
/// probes of the proxy itself).
pub const ALWAYS_IGNORED_INBOUND_PORTS: [u16; 2] = [4190, 4191];

/// An address family: each has its own iptables binaries and ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4, programmed with `iptables-*`.
    V4,
    /// IPv6, programmed with `ip6tables-*`.
    V6,
}

impl Family {
    /// Human name for messages: `IPv4` / `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A configuration that can never produce a working redirect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A proxy port of 0.
    #[error("--{flag} must be a port from 1 to 65535, not 0")]
    ZeroPort {
        /// The flag name without dashes.
        flag: &'static str,
    },
    /// Inbound and outbound redirect to the same port.
    #[error("--incoming-proxy-port and --outgoing-proxy-port are both {port}; the proxy needs two different ports")]
    SamePorts {
        /// The shared port.
        port: u16,
    },
    /// uid 0 as the proxy uid would exempt every root process in the pod.
    #[error("--proxy-uid 0 would exempt every process running as root from the mesh; run the proxy as its own uid (default 2102)")]
    RootProxyUid,
    /// An IPv6 subnet while only IPv4 is programmed.
    #[error("--subnets-to-ignore contains the IPv6 subnet {cidr} but --ipv6 is not set")]
    Ipv6SubnetWithoutIpv6 {
        /// The subnet.
        cidr: Cidr,
    },
}

/// Everything the ruleset depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    /// REDIRECT target for inbound TCP.
    pub incoming_proxy_port: u16,
    /// REDIRECT target for outbound TCP.
    pub outgoing_proxy_port: u16,
    /// Connections made by this uid (the proxy) are not redirected.
    pub proxy_uid: u32,
    /// Extra inbound destination ports to leave alone, in addition to
    /// [`ALWAYS_IGNORED_INBOUND_PORTS`].
    pub inbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound destination ports to leave alone.
    pub outbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound destination subnets to leave alone (any protocol).
    pub subnets_to_ignore: Vec<Cidr>,
    /// Also program IPv6 (ip6tables).
    pub ipv6: bool,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            incoming_proxy_port: DEFAULT_INCOMING_PROXY_PORT,
            outgoing_proxy_port: DEFAULT_OUTGOING_PROXY_PORT,
            proxy_uid: DEFAULT_PROXY_UID,
            inbound_ports_to_ignore: Vec::new(),
            outbound_ports_to_ignore: Vec::new(),
            subnets_to_ignore: Vec::new(),
            ipv6: false,
        }
    }
}

impl RedirectConfig {
    /// Rejects configurations that cannot work (see [`ConfigError`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.incoming_proxy_port == 0 {
            return Err(ConfigError::ZeroPort {
                flag: "incoming-proxy-port",
            });
        }
        if self.outgoing_proxy_port == 0 {
            return Err(ConfigError::ZeroPort {
                flag: "outgoing-proxy-port",
            });
        }
        if self.incoming_proxy_port == self.outgoing_proxy_port {
            return Err(ConfigError::SamePorts {
                port: self.incoming_proxy_port,
            });
        }
        if self.proxy_uid == 0 {
            return Err(ConfigError::RootProxyUid);
        }
        if !self.ipv6 {
            if let Some(cidr) = self
                .subnets_to_ignore
                .iter()
                .find(|cidr| cidr.family() == Family::V6)
            {
                return Err(ConfigError::Ipv6SubnetWithoutIpv6 { cidr: *cidr });
            }
        }
        Ok(())
    }

    /// The families to program, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_table() {
        let v6: Cidr = "fd00::/8".parse().expect("valid");
        let v4: Cidr = "10.0.0.0/8".parse().expect("valid");
        let base = RedirectConfig::default();
        let cases: Vec<(RedirectConfig, Result<(), ConfigError>)> = vec![
            (base.clone(), Ok(())),
            (
                RedirectConfig {
                    incoming_proxy_port: 0,
                    ..base.clone()
                },
                Err(ConfigError::ZeroPort {
                    flag: "incoming-proxy-port",
                }),
            ),
            (
                RedirectConfig {
                    outgoing_proxy_port: 0,
                    ..base.clone()
                },
                Err(ConfigError::ZeroPort {
                    flag: "outgoing-proxy-port",
                }),
            ),
            (
                RedirectConfig {
                    outgoing_proxy_port: 4143,
                    ..base.clone()
                },
                Err(ConfigError::SamePorts { port: 4143 }),
            ),
            (
                RedirectConfig {
                    proxy_uid: 0,
                    ..base.clone()
                },
                Err(ConfigError::RootProxyUid),
            ),
            (
                RedirectConfig {
                    subnets_to_ignore: vec![v4, v6],
                    ..base.clone()
                },
                Err(ConfigError::Ipv6SubnetWithoutIpv6 { cidr: v6 }),
            ),
            (
                RedirectConfig {
                    subnets_to_ignore: vec![v4, v6],
                    ipv6: true,
                    ..base.clone()
                },
                Ok(()),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(config.validate(), want, "{config:?}");
        }
    }

    #[test]
    fn families() {
        assert_eq!(RedirectConfig::default().families(), vec![Family::V4]);
        let both = RedirectConfig {
            ipv6: true,
            ..RedirectConfig::default()
        };
        assert_eq!(both.families(), vec![Family::V4, Family::V6]);
        assert_eq!(Family::V6.name(), "IPv6");
    }
}
