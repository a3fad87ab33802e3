//! The `iptables-restore` documents `weft-init` applies, and the analysis
//! of existing state they are computed from.
//!
//! [`Existing::analyze`] classifies what `iptables-save -t nat` shows into
//! data: which Weft chains exist, how many of Weft's jump rules are already
//! installed, and whether any *other* rule refers to a Weft chain.
//! [`install_document`] and [`cleanup_document`] then render the complete
//! transaction, applied with `iptables-restore --noflush` so that the rest
//! of the table is left alone:
//!
//! * a chain declaration (`:WEFT_OUTPUT - [0:0]`) creates the chain, or
//!   flushes it when it exists, so re-running replaces Weft's rules instead
//!   of appending a second copy;
//! * a jump is appended only when it is missing, and surplus copies (from
//!   some earlier tool) are deleted, so exactly one of each remains;
//! * the whole document is one transaction: either all of it is applied or
//!   none of it.

use super::config::Family;
use super::ruleset::{jumps, Rule, Ruleset, WEFT_CHAINS};
use super::save::{tokenize, NatTable, SavedRule};

/// Existing state that Weft will not change on its own.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Rules that Weft did not write refer to Weft's chains.
    #[error(
        "unexpected {family} nat rules refer to Weft's chains: {}; \
         remove them, or run `weft-init --cleanup` (which deletes them) and then weft-init again",
        lines.join(" | ")
    )]
    ForeignReferences {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The offending rules, as `iptables-save` prints them.
        lines: Vec<String>,
    },
}

/// What of Weft's is already in a `nat` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Weft chains that exist.
    pub chains: Vec<String>,
    /// Number of rules inside Weft's chains (replaced on install).
    pub rules_in_chains: usize,
    /// Copies of Weft's own jump rules (exactly as Weft writes them, in the
    /// right built-in chain).
    pub jumps: Vec<SavedRule>,
    /// Any other rule, outside Weft's chains, that jumps or goes to a Weft
    /// chain.
    pub foreign: Vec<SavedRule>,
}

impl Existing {
    /// Classifies a parsed `nat` table.
    pub fn analyze(table: &NatTable) -> Self {
        let ours: Vec<(&'static str, Vec<String>)> = jumps()
            .iter()
            .map(|jump| (jump.chain, tokenize(&jump.spec()).unwrap_or_default()))
            .collect();
        let mut existing = Existing {
            chains: WEFT_CHAINS
                .iter()
                .filter(|chain| table.has_chain(chain))
                .map(|chain| (*chain).to_owned())
                .collect(),
            ..Existing::default()
        };
        for rule in &table.rules {
            if WEFT_CHAINS.contains(&rule.chain.as_str()) {
                existing.rules_in_chains += 1;
                continue;
            }
            let Some(target) = rule.target() else {
                continue;
            };
            if !WEFT_CHAINS.contains(&target) {
                continue;
            }
            if ours
                .iter()
                .any(|(chain, args)| rule.chain == *chain && rule.args == *args)
            {
                existing.jumps.push(rule.clone());
            } else {
                existing.foreign.push(rule.clone());
            }
        }
        existing
    }

    /// How many copies of `jump` are installed.
    pub fn count(&self, jump: &Rule) -> usize {
        let args = tokenize(&jump.spec()).unwrap_or_default();
        self.jumps
            .iter()
            .filter(|rule| rule.chain == jump.chain && rule.args == args)
            .count()
    }

    /// Whether there is nothing of Weft's at all.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty() && self.foreign.is_empty()
    }
}

/// The transaction that installs `ruleset` over `existing`.
pub fn install_document(ruleset: &Ruleset, existing: &Existing) -> Result<String, DocumentError> {
    if !existing.foreign.is_empty() {
        return Err(DocumentError::ForeignReferences {
            family: ruleset.family.name(),
            lines: existing.foreign.iter().map(SavedRule::line).collect(),
        });
    }
    let mut doc = String::from("*nat\n");
    for chain in WEFT_CHAINS {
        doc.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for rule in &ruleset.rules {
        doc.push_str(&rule.append_line());
        doc.push('\n');
    }
    for jump in jumps() {
        match existing.count(&jump) {
            0 => {
                doc.push_str(&jump.append_line());
                doc.push('\n');
            }
            n => {
                for _ in 1..n {
                    doc.push_str(&format!("-D {} {}\n", jump.chain, jump.spec()));
                }
            }
        }
    }
    doc.push_str("COMMIT\n");
    Ok(doc)
}

/// The transaction that removes every trace of Weft from a `nat` table:
/// all rules referring to Weft's chains (Weft's jumps and any foreign
/// ones), then the chains themselves. `None` when there is nothing to do.
pub fn cleanup_document(existing: &Existing) -> Option<String> {
    if existing.is_empty() {
        return None;
    }
    let mut doc = String::from("*nat\n");
    for rule in existing.jumps.iter().chain(&existing.foreign) {
        doc.push_str(&format!("-D {}\n", rule.line().trim_start_matches("-A ")));
    }
    for chain in &existing.chains {
        doc.push_str(&format!("-F {chain}\n"));
    }
    for chain in &existing.chains {
        doc.push_str(&format!("-X {chain}\n"));
    }
    doc.push_str("COMMIT\n");
    Some(doc)
}

/// A header line for printing a document for humans (`--dry-run`); it is
/// an `iptables-restore` comment, so the output stays valid input.
pub fn header(family: Family, what: &str) -> String {
    let tool = match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    };
    format!(
        "# weft-init {what} for {} (apply with: {tool} --noflush)\n",
        family.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::cidr::CidrList;
    use crate::iptables::config::RedirectConfig;
    use crate::iptables::ports::PortList;
    use crate::iptables::ruleset::plan;
    use crate::iptables::save::parse_nat;

    fn existing(save: &str) -> Existing {
        Existing::analyze(&parse_nat(save).expect("valid save output in test"))
    }

    const FRESH_SAVE: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

    /// The table as it looks after a default install.
    const INSTALLED_SAVE: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:WEFT_OUTPUT - [0:0]
:WEFT_PREROUTING - [0:0]
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
-A WEFT_PREROUTING -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
COMMIT
"#;

    // ---- golden install documents ------------------------------------

    #[test]
    fn golden_default_fresh() {
        let doc = install_document(
            &plan(&RedirectConfig::default(), Family::V4),
            &existing(FRESH_SAVE),
        );
        assert_eq!(
            doc.as_deref(),
            Ok(r#"*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
COMMIT
"#)
        );
    }

    #[test]
    fn golden_custom_ports_and_subnets() {
        let config = RedirectConfig {
            incoming_proxy_port: 5143,
            outgoing_proxy_port: 5140,
            proxy_uid: 1337,
            inbound_ports_to_ignore: "22,8000-8100".parse::<PortList>().expect("valid").0,
            outbound_ports_to_ignore: "443,6443,25,3306-3307"
                .parse::<PortList>()
                .expect("valid")
                .0,
            subnets_to_ignore: "10.96.0.0/12,169.254.169.254"
                .parse::<CidrList>()
                .expect("valid")
                .0,
            ipv6: false,
        };
        let doc = install_document(&plan(&config, Family::V4), &Existing::default());
        assert_eq!(
            doc.as_deref(),
            Ok(r#"*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -m multiport --dports 22,4190,4191,8000:8100 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 5143
-A WEFT_OUTPUT -m owner --uid-owner 1337 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -p tcp -m multiport --dports 25,443,3306:3307,6443 -m comment --comment "weft/ignore-outbound-ports" -j RETURN
-A WEFT_OUTPUT -d 10.96.0.0/12 -m comment --comment "weft/ignore-subnet" -j RETURN
-A WEFT_OUTPUT -d 169.254.169.254/32 -m comment --comment "weft/ignore-subnet" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 5140
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
COMMIT
"#)
        );
    }

    #[test]
    fn golden_many_ports_split_into_multiport_chunks() {
        let config = RedirectConfig {
            outbound_ports_to_ignore: "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,20-30"
                .parse::<PortList>()
                .expect("valid")
                .0,
            ..RedirectConfig::default()
        };
        let doc = install_document(&plan(&config, Family::V4), &Existing::default())
            .expect("no foreign rules");
        let chunks: Vec<&str> = doc
            .lines()
            .filter(|line| line.contains("ignore-outbound-ports"))
            .collect();
        assert_eq!(
            chunks,
            [
                r#"-A WEFT_OUTPUT -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -m comment --comment "weft/ignore-outbound-ports" -j RETURN"#,
                r#"-A WEFT_OUTPUT -p tcp -m multiport --dports 16,20:30 -m comment --comment "weft/ignore-outbound-ports" -j RETURN"#,
            ]
        );
    }

    #[test]
    fn golden_ipv6() {
        let config = RedirectConfig {
            subnets_to_ignore: "10.0.0.0/8,fd00:10::/64"
                .parse::<CidrList>()
                .expect("valid")
                .0,
            ipv6: true,
            ..RedirectConfig::default()
        };
        let doc = install_document(&plan(&config, Family::V6), &Existing::default());
        assert_eq!(
            doc.as_deref(),
            Ok(r#"*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d ::1/128 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -d fd00:10::/64 -m comment --comment "weft/ignore-subnet" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
COMMIT
"#)
        );
    }

    #[test]
    fn golden_rerun_keeps_existing_jumps() {
        let before = existing(INSTALLED_SAVE);
        assert_eq!(before.chains, ["WEFT_PREROUTING", "WEFT_OUTPUT"]);
        assert_eq!(before.rules_in_chains, 5);
        assert_eq!(before.jumps.len(), 2);
        assert!(before.foreign.is_empty());
        let doc = install_document(&plan(&RedirectConfig::default(), Family::V4), &before);
        assert_eq!(
            doc.as_deref(),
            Ok(r#"*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
COMMIT
"#)
        );
    }

    #[test]
    fn golden_duplicate_jumps_are_trimmed_to_one() {
        let save = "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m comment --comment weft/install-prerouting -j WEFT_PREROUTING
-A OUTPUT -m comment --comment \"weft/install-output\" -j WEFT_OUTPUT
-A OUTPUT -m comment --comment \"weft/install-output\" -j WEFT_OUTPUT
-A OUTPUT -m comment --comment \"weft/install-output\" -j WEFT_OUTPUT
COMMIT
";
        let before = existing(save);
        // Unquoted comments (older iptables-save) are recognised too.
        assert_eq!(before.count(&jumps()[0]), 1);
        assert_eq!(before.count(&jumps()[1]), 3);
        let doc = install_document(&plan(&RedirectConfig::default(), Family::V4), &before)
            .expect("no foreign rules");
        let tail: Vec<&str> = doc.lines().skip(8).collect();
        assert_eq!(
            tail,
            [
                r#"-D OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT"#,
                r#"-D OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT"#,
                "COMMIT",
            ]
        );
    }

    #[test]
    fn foreign_references_refuse_install() {
        let cases: &[(&str, &str)] = &[
            // A jump with extra matches.
            (
                "-A OUTPUT -p tcp -j WEFT_OUTPUT",
                "-A OUTPUT -p tcp -j WEFT_OUTPUT",
            ),
            // Weft's jump, but in the wrong built-in chain.
            (
                r#"-A INPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT"#,
                r#"-A INPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT"#,
            ),
            // A goto from a user chain.
            (
                "-A KUBE-X -g WEFT_PREROUTING",
                "-A KUBE-X -g WEFT_PREROUTING",
            ),
        ];
        for (rule, line) in cases {
            let save = format!("*nat\n:OUTPUT ACCEPT [0:0]\n{rule}\nCOMMIT\n");
            let before = existing(&save);
            assert_eq!(before.foreign.len(), 1, "{rule}");
            assert_eq!(
                install_document(&plan(&RedirectConfig::default(), Family::V4), &before),
                Err(DocumentError::ForeignReferences {
                    family: "IPv4",
                    lines: vec![(*line).to_owned()]
                }),
                "{rule}"
            );
        }
        // Rules inside Weft's own chains are replaced, never "foreign".
        let inside =
            existing("*nat\n:WEFT_OUTPUT - [0:0]\n-A WEFT_OUTPUT -j WEFT_PREROUTING\nCOMMIT\n");
        assert!(inside.foreign.is_empty());
        assert_eq!(inside.rules_in_chains, 1);
    }

    #[test]
    fn foreign_error_message_names_the_rules() {
        let error = DocumentError::ForeignReferences {
            family: "IPv4",
            lines: vec!["-A OUTPUT -p tcp -j WEFT_OUTPUT".into()],
        };
        let message = error.to_string();
        assert!(
            message.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT"),
            "{message}"
        );
        assert!(message.contains("--cleanup"), "{message}");
    }

    // ---- golden cleanup documents ------------------------------------

    #[test]
    fn golden_cleanup_after_install() {
        assert_eq!(
            cleanup_document(&existing(INSTALLED_SAVE)).as_deref(),
            Some(
                r#"*nat
-D PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-D OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-F WEFT_PREROUTING
-F WEFT_OUTPUT
-X WEFT_PREROUTING
-X WEFT_OUTPUT
COMMIT
"#
            )
        );
    }

    #[test]
    fn golden_cleanup_partial_and_foreign() {
        let save = "*nat
:OUTPUT ACCEPT [0:0]
:WEFT_OUTPUT - [0:0]
-A OUTPUT -p tcp -j WEFT_OUTPUT
-A OUTPUT -j ACCEPT
COMMIT
";
        assert_eq!(
            cleanup_document(&existing(save)).as_deref(),
            Some("*nat\n-D OUTPUT -p tcp -j WEFT_OUTPUT\n-F WEFT_OUTPUT\n-X WEFT_OUTPUT\nCOMMIT\n")
        );
    }

    #[test]
    fn cleanup_of_clean_table_is_nothing() {
        assert_eq!(cleanup_document(&existing(FRESH_SAVE)), None);
        assert_eq!(cleanup_document(&Existing::default()), None);
    }

    #[test]
    fn header_is_a_restore_comment() {
        assert_eq!(
            header(Family::V6, "install"),
            "# weft-init install for IPv6 (apply with: ip6tables-restore --noflush)\n"
        );
    }
}
