//! The redirect ruleset as plain data, computed by a pure function.
//!
//! [`plan`] turns a [`RedirectConfig`] into the rules of Weft's two `nat`
//! chains for one address family; [`jumps`] are the two rules that hook
//! those chains into the built-in `PREROUTING` and `OUTPUT` chains. Every
//! rule renders ([`Rule::spec`]) in exactly the canonical form
//! `iptables-save` prints it back in, so what is installed can be compared
//! with what is read back token for token.
//!
//! The chains, in order:
//!
//! ```text
//! WEFT_PREROUTING (jumped to from PREROUTING: traffic arriving at the pod)
//!   1. RETURN   tcp to an ignored inbound port (4190, 4191 + --inbound-ports-to-ignore)
//!   2. REDIRECT tcp to the proxy's inbound port (4143)
//!
//! WEFT_OUTPUT (jumped to from OUTPUT: connections opened inside the pod)
//!   1. RETURN   anything from the proxy's own uid (2102)
//!   2. RETURN   anything to a loopback address over lo (127.0.0.0/8, ::1)
//!   3. RETURN   tcp to an ignored outbound port (--outbound-ports-to-ignore)
//!   4. RETURN   anything to an ignored subnet (--subnets-to-ignore)
//!   5. REDIRECT tcp to the proxy's outbound port (4140)
//! ```
//!
//! Rule 2 of `WEFT_OUTPUT` deliberately matches only loopback
//! *destinations*, not everything leaving through `lo`: a connection from
//! the app to its own pod IP also leaves through `lo`, and it must reach the
//! outbound proxy like any other connection (see `docs/init.md`, "Loopback
//! and the pod's own IP").

use std::fmt::Write as _;

use super::cidr::Cidr;
use super::config::{Family, RedirectConfig, ALWAYS_IGNORED_INBOUND_PORTS};
use super::ports::{self, PortRange};

/// Weft's chain for traffic arriving at the pod.
pub const PREROUTING_CHAIN: &str = "WEFT_PREROUTING";
/// Weft's chain for connections opened inside the pod.
pub const OUTPUT_CHAIN: &str = "WEFT_OUTPUT";
/// Both of Weft's chains, in the order they are declared.
pub const WEFT_CHAINS: [&str; 2] = [PREROUTING_CHAIN, OUTPUT_CHAIN];

/// Comment prefix that marks every rule Weft writes (`-m comment`).
pub const COMMENT_PREFIX: &str = "weft/";

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Leave this chain; the packet is not redirected.
    Return,
    /// Rewrite the destination to this port on the local host.
    Redirect {
        /// The proxy port.
        to_port: u16,
    },
    /// Continue in another chain.
    Jump(&'static str),
}

/// A `-m` match of a rule (besides the comment, which every rule has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `-m multiport --dports …` (at most [`ports::MULTIPORT_SLOTS`] slots).
    DestinationPorts(Vec<PortRange>),
    /// `-m owner --uid-owner …`.
    UidOwner(u32),
}

/// One rule of the `nat` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain the rule is appended to.
    pub chain: &'static str,
    /// `-d`: destination subnet.
    pub destination: Option<Cidr>,
    /// `-o`: outgoing interface.
    pub out_interface: Option<&'static str>,
    /// `-p tcp`.
    pub tcp: bool,
    /// Further matches, in order.
    pub matches: Vec<Match>,
    /// Comment without the [`COMMENT_PREFIX`], e.g. `redirect-outbound`.
    pub comment: &'static str,
    /// What to do on a match.
    pub target: Target,
}

impl Rule {
    fn new(chain: &'static str, comment: &'static str, target: Target) -> Self {
        Self {
            chain,
            destination: None,
            out_interface: None,
            tcp: false,
            matches: Vec::new(),
            comment,
            target,
        }
    }

    /// The rule specification (everything after `-A CHAIN`), in the order
    /// and quoting `iptables-save` uses.
    pub fn spec(&self) -> String {
        let mut spec = String::new();
        // `-d 0.0.0.0/0` matches everything and iptables omits it.
        if let Some(destination) = self.destination.filter(|d| !d.is_everything()) {
            let _ = write!(spec, "-d {destination} ");
        }
        if let Some(interface) = self.out_interface {
            let _ = write!(spec, "-o {interface} ");
        }
        if self.tcp {
            spec.push_str("-p tcp ");
        }
        for item in &self.matches {
            match item {
                Match::DestinationPorts(ranges) => {
                    let _ = write!(
                        spec,
                        "-m multiport --dports {} ",
                        ports::render_dports(ranges)
                    );
                }
                Match::UidOwner(uid) => {
                    let _ = write!(spec, "-m owner --uid-owner {uid} ");
                }
            }
        }
        let _ = write!(
            spec,
            "-m comment --comment \"{COMMENT_PREFIX}{}\" ",
            self.comment
        );
        match &self.target {
            Target::Return => spec.push_str("-j RETURN"),
            Target::Redirect { to_port } => {
                let _ = write!(spec, "-j REDIRECT --to-ports {to_port}");
            }
            Target::Jump(chain) => {
                let _ = write!(spec, "-j {chain}");
            }
        }
        spec
    }

    /// `-A CHAIN spec`.
    pub fn append_line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec())
    }
}

/// The rules of Weft's two chains for one family (the chains' contents, not
/// the jumps into them; see [`jumps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The family this ruleset is for.
    pub family: Family,
    /// `WEFT_PREROUTING` rules followed by `WEFT_OUTPUT` rules.
    pub rules: Vec<Rule>,
}

impl Ruleset {
    /// How many rules go into `chain`.
    pub fn rules_in(&self, chain: &str) -> usize {
        self.rules.iter().filter(|rule| rule.chain == chain).count()
    }
}

/// The two rules hooking Weft's chains into the built-in chains.
pub fn jumps() -> [Rule; 2] {
    [
        Rule::new(
            "PREROUTING",
            "install-prerouting",
            Target::Jump(PREROUTING_CHAIN),
        ),
        Rule::new("OUTPUT", "install-output", Target::Jump(OUTPUT_CHAIN)),
    ]
}

/// The loopback destinations that are never redirected (see
/// [`Cidr::loopback`]).
pub fn loopback(family: Family) -> Cidr {
    Cidr::loopback(family)
}

/// Computes Weft's chains for `family`. Pure: the same config always gives
/// the same rules. Subnets of the other family are skipped.
pub fn plan(config: &RedirectConfig, family: Family) -> Ruleset {
    let mut rules = Vec::new();

    let inbound_ignored = ports::normalize(
        ALWAYS_IGNORED_INBOUND_PORTS
            .iter()
            .filter_map(|port| PortRange::single(*port))
            .chain(config.inbound_ports_to_ignore.iter().copied()),
    );
    for chunk in ports::multiport_chunks(&inbound_ignored) {
        rules.push(Rule {
            tcp: true,
            matches: vec![Match::DestinationPorts(chunk)],
            ..Rule::new(PREROUTING_CHAIN, "ignore-inbound-ports", Target::Return)
        });
    }
    rules.push(Rule {
        tcp: true,
        ..Rule::new(
            PREROUTING_CHAIN,
            "redirect-inbound",
            Target::Redirect {
                to_port: config.incoming_proxy_port,
            },
        )
    });

    rules.push(Rule {
        matches: vec![Match::UidOwner(config.proxy_uid)],
        ..Rule::new(OUTPUT_CHAIN, "ignore-proxy-uid", Target::Return)
    });
    rules.push(Rule {
        destination: Some(loopback(family)),
        out_interface: Some("lo"),
        ..Rule::new(OUTPUT_CHAIN, "ignore-loopback", Target::Return)
    });
    let outbound_ignored = ports::normalize(config.outbound_ports_to_ignore.iter().copied());
    for chunk in ports::multiport_chunks(&outbound_ignored) {
        rules.push(Rule {
            tcp: true,
            matches: vec![Match::DestinationPorts(chunk)],
            ..Rule::new(OUTPUT_CHAIN, "ignore-outbound-ports", Target::Return)
        });
    }
    let mut subnets: Vec<Cidr> = Vec::new();
    for cidr in &config.subnets_to_ignore {
        if cidr.family() == family && !subnets.contains(cidr) {
            subnets.push(*cidr);
        }
    }
    for cidr in subnets {
        rules.push(Rule {
            destination: Some(cidr),
            ..Rule::new(OUTPUT_CHAIN, "ignore-subnet", Target::Return)
        });
    }
    rules.push(Rule {
        tcp: true,
        ..Rule::new(
            OUTPUT_CHAIN,
            "redirect-outbound",
            Target::Redirect {
                to_port: config.outgoing_proxy_port,
            },
        )
    });

    Ruleset { family, rules }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(ruleset: &Ruleset) -> Vec<String> {
        ruleset.rules.iter().map(Rule::append_line).collect()
    }

    #[test]
    fn default_v4_plan() {
        let ruleset = plan(&RedirectConfig::default(), Family::V4);
        assert_eq!(
            lines(&ruleset),
            [
                r#"-A WEFT_PREROUTING -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft/ignore-inbound-ports" -j RETURN"#,
                r#"-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143"#,
                r#"-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN"#,
                r#"-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN"#,
                r#"-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140"#,
            ]
        );
        assert_eq!(ruleset.rules_in(PREROUTING_CHAIN), 2);
        assert_eq!(ruleset.rules_in(OUTPUT_CHAIN), 3);
    }

    #[test]
    fn default_v6_plan_uses_ipv6_loopback() {
        let ruleset = plan(&RedirectConfig::default(), Family::V6);
        assert_eq!(
            ruleset.rules[3].append_line(),
            r#"-A WEFT_OUTPUT -d ::1/128 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN"#
        );
        assert_eq!(ruleset.family, Family::V6);
    }

    #[test]
    fn always_ignored_inbound_ports_merge_with_user_ports() {
        let config = RedirectConfig {
            inbound_ports_to_ignore: "4191,22,4000-4200"
                .parse::<ports::PortList>()
                .expect("valid")
                .0,
            ..RedirectConfig::default()
        };
        let ruleset = plan(&config, Family::V4);
        assert_eq!(
            ruleset.rules[0].spec(),
            r#"-p tcp -m multiport --dports 22,4000:4200 -m comment --comment "weft/ignore-inbound-ports" -j RETURN"#
        );
    }

    #[test]
    fn subnets_are_per_family_and_deduplicated() {
        let config = RedirectConfig {
            subnets_to_ignore: "10.0.0.0/8,fd00::/8,10.1.0.0/8,0.0.0.0/0"
                .parse::<super::super::cidr::CidrList>()
                .expect("valid")
                .0,
            ipv6: true,
            ..RedirectConfig::default()
        };
        let v4: Vec<String> = plan(&config, Family::V4)
            .rules
            .iter()
            .filter(|rule| rule.comment == "ignore-subnet")
            .map(Rule::spec)
            .collect();
        assert_eq!(
            v4,
            [
                r#"-d 10.0.0.0/8 -m comment --comment "weft/ignore-subnet" -j RETURN"#,
                r#"-m comment --comment "weft/ignore-subnet" -j RETURN"#,
            ]
        );
        let v6: Vec<String> = plan(&config, Family::V6)
            .rules
            .iter()
            .filter(|rule| rule.comment == "ignore-subnet")
            .map(Rule::spec)
            .collect();
        assert_eq!(
            v6,
            [r#"-d fd00::/8 -m comment --comment "weft/ignore-subnet" -j RETURN"#]
        );
    }

    #[test]
    fn jump_rules() {
        let [prerouting, output] = jumps();
        assert_eq!(
            prerouting.append_line(),
            r#"-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING"#
        );
        assert_eq!(
            output.append_line(),
            r#"-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT"#
        );
    }

    #[test]
    fn loopback_per_family() {
        assert_eq!(loopback(Family::V4).to_string(), "127.0.0.0/8");
        assert_eq!(loopback(Family::V6).to_string(), "::1/128");
    }
}
