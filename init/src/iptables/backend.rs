//! Which iptables backend to program: nf_tables (`iptables-nft-*`) or the
//! legacy xtables API (`iptables-legacy-*`).
//!
//! Both backends can be present in one kernel, and rules written with one
//! are invisible to the other's tools, so the redirect must be written with
//! the backend the node's networking already uses. `--iptables-mode auto`
//! ([`Mode::Auto`]) decides with [`choose`], from two probes: the number of
//! rules each backend's `iptables-save` shows (all tables, so probing loads
//! no kernel table). The backend with more rules wins; on a tie — typically
//! a fresh pod namespace where both are empty — `nft` is used, matching the
//! modern default of Debian, Alpine, k3s and Linkerd. If only one backend's
//! tools work, that one is used.

use std::fmt;
use std::str::FromStr;

use super::config::Family;

/// The `--iptables-mode` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Detect the backend the node uses (see [`choose`]).
    #[default]
    Auto,
    /// Always use nf_tables.
    Nft,
    /// Always use legacy xtables.
    Legacy,
}

/// An unknown `--iptables-mode` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid iptables mode {0:?}: expected auto, nft or legacy")]
pub struct ModeError(pub String);

impl FromStr for Mode {
    type Err = ModeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Mode::Auto),
            "nft" => Ok(Mode::Nft),
            "legacy" => Ok(Mode::Legacy),
            _ => Err(ModeError(text.to_owned())),
        }
    }
}

/// A concrete backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nf_tables through `iptables-nft-*`.
    Nft,
    /// Legacy xtables through `iptables-legacy-*`.
    Legacy,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

/// Which of a backend's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `…-save`: print the ruleset.
    Save,
    /// `…-restore`: apply a document.
    Restore,
}

/// The program name for a backend, family and tool, e.g.
/// `ip6tables-legacy-restore`.
pub fn binary(backend: Backend, family: Family, tool: Tool) -> &'static str {
    match (family, backend, tool) {
        (Family::V4, Backend::Nft, Tool::Save) => "iptables-nft-save",
        (Family::V4, Backend::Nft, Tool::Restore) => "iptables-nft-restore",
        (Family::V4, Backend::Legacy, Tool::Save) => "iptables-legacy-save",
        (Family::V4, Backend::Legacy, Tool::Restore) => "iptables-legacy-restore",
        (Family::V6, Backend::Nft, Tool::Save) => "ip6tables-nft-save",
        (Family::V6, Backend::Nft, Tool::Restore) => "ip6tables-nft-restore",
        (Family::V6, Backend::Legacy, Tool::Save) => "ip6tables-legacy-save",
        (Family::V6, Backend::Legacy, Tool::Restore) => "ip6tables-legacy-restore",
    }
}

/// What probing one backend's `iptables-save` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The save command worked and printed this many rules.
    Rules(usize),
    /// The save command is missing or failed (no kernel support, no
    /// permission).
    Unusable,
}

/// The chosen backend and a sentence saying why, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend to use.
    pub backend: Backend,
    /// Why.
    pub reason: String,
}

/// Decides the backend. Pure; the probes are only consulted in
/// [`Mode::Auto`].
pub fn choose(mode: Mode, legacy: Probe, nft: Probe) -> Choice {
    let chosen = |backend, reason: &str| Choice {
        backend,
        reason: reason.to_owned(),
    };
    match mode {
        Mode::Nft => chosen(Backend::Nft, "--iptables-mode nft"),
        Mode::Legacy => chosen(Backend::Legacy, "--iptables-mode legacy"),
        Mode::Auto => match (legacy, nft) {
            (Probe::Rules(l), Probe::Rules(n)) if l > n => Choice {
                backend: Backend::Legacy,
                reason: format!("auto: legacy has {l} rules, nft has {n}"),
            },
            (Probe::Rules(l), Probe::Rules(n)) if n > l => Choice {
                backend: Backend::Nft,
                reason: format!("auto: nft has {n} rules, legacy has {l}"),
            },
            (Probe::Rules(l), Probe::Rules(_)) => Choice {
                backend: Backend::Nft,
                reason: format!("auto: both backends have {l} rules; nft is the default"),
            },
            (Probe::Rules(_), Probe::Unusable) => chosen(
                Backend::Legacy,
                "auto: only the legacy backend's iptables-save works",
            ),
            (Probe::Unusable, Probe::Rules(_)) => chosen(
                Backend::Nft,
                "auto: only the nft backend's iptables-save works",
            ),
            (Probe::Unusable, Probe::Unusable) => chosen(
                Backend::Nft,
                "auto: neither backend's iptables-save works; trying the default, nft",
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mode() {
        let cases: &[(&str, Result<Mode, ModeError>)] = &[
            ("auto", Ok(Mode::Auto)),
            ("nft", Ok(Mode::Nft)),
            (" Legacy ", Ok(Mode::Legacy)),
            ("plain", Err(ModeError("plain".into()))),
            ("", Err(ModeError("".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(&input.parse::<Mode>(), want, "{input:?}");
        }
        assert_eq!(Mode::default(), Mode::Auto);
    }

    #[test]
    fn choose_table() {
        use Backend::*;
        use Probe::*;
        let cases: &[(Mode, Probe, Probe, Backend)] = &[
            (Mode::Nft, Rules(100), Rules(0), Nft),
            (Mode::Legacy, Rules(0), Rules(100), Legacy),
            (Mode::Legacy, Unusable, Unusable, Legacy),
            (Mode::Auto, Rules(0), Rules(0), Nft),
            (Mode::Auto, Rules(3), Rules(3), Nft),
            (Mode::Auto, Rules(1), Rules(0), Legacy),
            (Mode::Auto, Rules(0), Rules(1), Nft),
            (Mode::Auto, Rules(40), Rules(12), Legacy),
            (Mode::Auto, Rules(0), Unusable, Legacy),
            (Mode::Auto, Unusable, Rules(0), Nft),
            (Mode::Auto, Unusable, Unusable, Nft),
        ];
        for (mode, legacy, nft, want) in cases {
            let choice = choose(*mode, *legacy, *nft);
            assert_eq!(choice.backend, *want, "{mode:?} {legacy:?} {nft:?}");
            assert!(!choice.reason.is_empty());
        }
        assert_eq!(
            choose(Mode::Auto, Rules(40), Rules(12)).reason,
            "auto: legacy has 40 rules, nft has 12"
        );
    }

    #[test]
    fn binaries() {
        assert_eq!(
            binary(Backend::Nft, Family::V4, Tool::Save),
            "iptables-nft-save"
        );
        assert_eq!(
            binary(Backend::Legacy, Family::V6, Tool::Restore),
            "ip6tables-legacy-restore"
        );
        assert_eq!(Backend::Legacy.to_string(), "legacy");
    }
}
