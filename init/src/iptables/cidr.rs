//! IPv4/IPv6 subnets (`10.0.0.0/8`, `fd00::/8`) for `--subnets-to-ignore`.
//!
//! Parsing normalises host bits away (`10.1.2.3/8` becomes `10.0.0.0/8`),
//! exactly as iptables itself does, so the rendered rule is what
//! `iptables-save` prints back. A bare address is a host route (`/32` or
//! `/128`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::config::Family;

/// Why a subnet could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("invalid subnet {input:?}: {address:?} is not an IP address")]
    InvalidAddress {
        /// The whole input.
        input: String,
        /// The address part.
        address: String,
    },
    /// The prefix length is not a number within the family's range.
    #[error("invalid subnet {input:?}: prefix length must be a number from 0 to {max}")]
    InvalidPrefix {
        /// The whole input.
        input: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

/// A subnet with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a subnet, clearing host bits. Returns `None` when `prefix` is
    /// too long for the address family.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let network = match address {
            IpAddr::V4(v4) => {
                if prefix > 32 {
                    return None;
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                if prefix > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Some(Self { network, prefix })
    }

    /// The loopback destinations of a family: the whole IPv4 loopback
    /// block `127.0.0.0/8` (every `127.x` address is host-local by
    /// definition) and `::1/128`.
    pub fn loopback(family: Family) -> Self {
        match family {
            Family::V4 => Self {
                network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            Family::V6 => Self {
                network: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// IPv4 or IPv6.
    pub fn family(&self) -> Family {
        match self.network {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether this is the whole address space (`0.0.0.0/0`, `::/0`);
    /// iptables omits such a `-d` match entirely.
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }
}

/// Renders as `iptables-save` does: `10.0.0.0/8`, `fd00::/8`.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        let (address_text, prefix_text) = match trimmed.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (trimmed, None),
        };
        let address: IpAddr = address_text
            .parse()
            .map_err(|_| CidrError::InvalidAddress {
                input: input.to_owned(),
                address: address_text.to_owned(),
            })?;
        let max = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_text {
            None => max,
            Some(text) => {
                let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                text.parse::<u8>()
                    .ok()
                    .filter(|prefix| valid && *prefix <= max)
                    .ok_or_else(|| CidrError::InvalidPrefix {
                        input: input.to_owned(),
                        max,
                    })?
            }
        };
        Self::new(address, prefix).ok_or_else(|| CidrError::InvalidPrefix {
            input: input.to_owned(),
            max,
        })
    }
}

/// A comma-separated list of subnets, as given to `--subnets-to-ignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

/// Parses `10.0.0.0/8,192.168.0.0/16`. An empty string is the empty list.
impl FromStr for CidrList {
    type Err = CidrError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        if list.trim().is_empty() {
            return Ok(Self::default());
        }
        list.split(',')
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok: &[(&str, &str, Family)] = &[
            ("10.0.0.0/8", "10.0.0.0/8", Family::V4),
            ("10.1.2.3/8", "10.0.0.0/8", Family::V4),
            (" 10.1.2.3/24 ", "10.1.2.0/24", Family::V4),
            ("192.168.1.7", "192.168.1.7/32", Family::V4),
            ("0.0.0.0/0", "0.0.0.0/0", Family::V4),
            ("198.18.0.1/31", "198.18.0.0/31", Family::V4),
            ("fd00::1/8", "fd00::/8", Family::V6),
            ("2001:db8::1", "2001:db8::1/128", Family::V6),
            ("::/0", "::/0", Family::V6),
        ];
        for (input, want, family) in ok {
            let cidr: Cidr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(cidr.to_string(), *want, "{input}");
            assert_eq!(cidr.family(), *family, "{input}");
        }
        let bad_address = ["", "/8", "10.0.0/8", "example.com", "10.0.0.256/8"];
        for input in bad_address {
            assert!(
                matches!(input.parse::<Cidr>(), Err(CidrError::InvalidAddress { .. })),
                "{input:?}"
            );
        }
        let bad_prefix = [
            ("10.0.0.0/33", 32),
            ("10.0.0.0/", 32),
            ("10.0.0.0/-1", 32),
            ("10.0.0.0/+8", 32),
            ("10.0.0.0/8/8", 32),
            ("fd00::/129", 128),
            ("fd00::/x", 128),
        ];
        for (input, max) in bad_prefix {
            assert_eq!(
                input.parse::<Cidr>(),
                Err(CidrError::InvalidPrefix {
                    input: input.into(),
                    max
                }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn everything_and_accessors() {
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.is_everything());
        let net: Cidr = "10.9.8.7/16".parse().expect("valid");
        assert!(!net.is_everything());
        assert_eq!(net.prefix(), 16);
        assert_eq!(net.network(), IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)));
        assert_eq!(Cidr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 33), None);
        assert_eq!(Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 129), None);
    }

    #[test]
    fn list_table() {
        assert_eq!("".parse::<CidrList>(), Ok(CidrList::default()));
        let list: CidrList = "10.0.0.0/8, fd00::/8".parse().expect("valid");
        let rendered: Vec<String> = list.0.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, ["10.0.0.0/8", "fd00::/8"]);
        assert!("10.0.0.0/8,,".parse::<CidrList>().is_err());
    }
}
