//! Checking up front that the process may program iptables.
//!
//! Without `CAP_NET_ADMIN` the iptables tools fail with messages that vary
//! by backend and version (the legacy `iptables-restore` even reports
//! "unable to initialize table", which reads like a kernel problem). So
//! `weft-init` reads its capability sets from `/proc/self/status` first.
//! nf_tables needs `NET_ADMIN`; the legacy backend also opens a raw socket,
//! which needs `NET_RAW`.
//!
//! Two sets matter, and they are judged differently:
//!
//! * **bounding** (`CapBnd`): a capability missing here can never be gained
//!   by anything in the container, so that is a hard error, reported before
//!   touching iptables;
//! * **effective** (`CapEff`): a capability missing here may still be held
//!   by the iptables programs themselves. Kubernetes' `capabilities.add`
//!   reaches a non-root container's bounding set but not its effective set,
//!   and images that run the init container as non-root give the xtables
//!   binaries file capabilities instead. So this is only noted; if the
//!   iptables programs are then refused, that error is reported (exit 77).

use std::fmt;

use super::backend::Backend;

/// A Linux capability `weft-init` may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `CAP_NET_ADMIN` (bit 12).
    NetAdmin,
    /// `CAP_NET_RAW` (bit 13).
    NetRaw,
}

impl Capability {
    fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
        }
    }
}

/// Kubernetes spelling, as in `securityContext.capabilities.add`.
impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::NetAdmin => "NET_ADMIN",
            Capability::NetRaw => "NET_RAW",
        })
    }
}

/// Capability check failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    /// Required capabilities are not even in the bounding set.
    #[error(
        "missing capabilit{plural} {list} needed for the {backend} iptables backend; add \
         securityContext.capabilities.add: [NET_ADMIN, NET_RAW] to the init container",
        plural = if missing.len() == 1 { "y" } else { "ies" },
        list = list(missing)
    )]
    Missing {
        /// The missing capabilities.
        missing: Vec<Capability>,
        /// The backend they are needed for.
        backend: Backend,
    },
    /// `/proc/self/status` has no parseable capability line.
    #[error("could not read the capabilities from /proc/self/status: {0}")]
    Unreadable(String),
}

fn list(caps: &[Capability]) -> String {
    caps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The capability sets of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    /// `CapEff`: what the process can use now.
    pub effective: u64,
    /// `CapBnd`: the most anything started from it can ever have.
    pub bounding: u64,
}

/// The capabilities a backend needs.
pub fn required(backend: Backend) -> &'static [Capability] {
    match backend {
        Backend::Nft => &[Capability::NetAdmin],
        Backend::Legacy => &[Capability::NetAdmin, Capability::NetRaw],
    }
}

fn field(status: &str, name: &str) -> Result<u64, CapsError> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .ok_or_else(|| CapsError::Unreadable(format!("no {name} line")))?
        .trim();
    u64::from_str_radix(value, 16)
        .map_err(|_| CapsError::Unreadable(format!("{name} is not hexadecimal: {value:?}")))
}

/// Extracts the effective and bounding sets from the text of
/// `/proc/self/status`. Pure.
pub fn parse(status: &str) -> Result<CapSets, CapsError> {
    Ok(CapSets {
        effective: field(status, "CapEff:")?,
        bounding: field(status, "CapBnd:")?,
    })
}

fn missing(set: u64, backend: Backend) -> Vec<Capability> {
    required(backend)
        .iter()
        .copied()
        .filter(|cap| set & (1u64 << cap.bit()) == 0)
        .collect()
}

/// Checks `sets` for `backend`. Pure. `Err` when a required capability is
/// outside the bounding set; otherwise the required capabilities missing
/// from the effective set (empty when all is in place), which the iptables
/// programs may still hold as file capabilities.
pub fn check(sets: CapSets, backend: Backend) -> Result<Vec<Capability>, CapsError> {
    let impossible = missing(sets.bounding, backend);
    if !impossible.is_empty() {
        return Err(CapsError::Missing {
            missing: impossible,
            backend,
        });
    }
    Ok(missing(sets.effective, backend))
}

/// Checks the current process (see [`check`]).
pub fn check_current(backend: Backend) -> Result<Vec<Capability>, CapsError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| CapsError::Unreadable(error.to_string()))?;
    check(parse(&status)?, backend)
}

/// A log note for capabilities missing only from the effective set.
pub fn note(missing: &[Capability]) -> Option<String> {
    (!missing.is_empty()).then(|| {
        format!(
            "this process lacks {}; relying on the iptables programs' own file capabilities",
            list(missing)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = 0x0000_01ff_ffff_ffff;
    const NO_NET_RAW: u64 = ROOT & !(1 << 13);
    const NO_NET_ADMIN: u64 = ROOT & !(1 << 12);

    fn sets(effective: u64, bounding: u64) -> CapSets {
        CapSets {
            effective,
            bounding,
        }
    }

    #[test]
    fn parse_table() {
        let status = "Name:\tweft-init\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(parse(status), Ok(sets(0, ROOT)));
        assert!(matches!(parse("Name: x\n"), Err(CapsError::Unreadable(_))));
        assert!(matches!(
            parse("CapEff:\t0\n"),
            Err(CapsError::Unreadable(m)) if m.contains("CapBnd")
        ));
        assert!(matches!(
            parse("CapEff:\tzz\nCapBnd:\t0\n"),
            Err(CapsError::Unreadable(_))
        ));
    }

    #[test]
    fn check_table() {
        use Capability::*;
        type Case = (CapSets, Backend, Result<Vec<Capability>, Vec<Capability>>);
        let cases: &[Case] = &[
            (sets(ROOT, ROOT), Backend::Nft, Ok(vec![])),
            (sets(ROOT, ROOT), Backend::Legacy, Ok(vec![])),
            (sets(1 << 12, 1 << 12), Backend::Nft, Ok(vec![])),
            (sets(1 << 12, ROOT), Backend::Legacy, Ok(vec![NetRaw])),
            (sets(NO_NET_RAW, NO_NET_RAW), Backend::Nft, Ok(vec![])),
            (
                sets(NO_NET_RAW, NO_NET_RAW),
                Backend::Legacy,
                Err(vec![NetRaw]),
            ),
            (
                sets(NO_NET_ADMIN, NO_NET_ADMIN),
                Backend::Nft,
                Err(vec![NetAdmin]),
            ),
            // Non-root with capabilities only in the bounding set (Kubernetes
            // `capabilities.add` for runAsUser != 0): proceed, noted.
            (sets(0, ROOT), Backend::Legacy, Ok(vec![NetAdmin, NetRaw])),
            (sets(0, 0), Backend::Legacy, Err(vec![NetAdmin, NetRaw])),
        ];
        for (caps, backend, want) in cases {
            let got = check(*caps, *backend);
            let want = want.clone().map_err(|missing| CapsError::Missing {
                missing,
                backend: *backend,
            });
            assert_eq!(got, want, "{caps:x?} {backend}");
        }
    }

    #[test]
    fn messages() {
        let one = check(sets(0, 0), Backend::Nft).expect_err("missing");
        assert_eq!(
            one.to_string(),
            "missing capability NET_ADMIN needed for the nft iptables backend; add \
             securityContext.capabilities.add: [NET_ADMIN, NET_RAW] to the init container"
        );
        let two = check(sets(0, 0), Backend::Legacy).expect_err("missing");
        assert!(two
            .to_string()
            .starts_with("missing capabilities NET_ADMIN and NET_RAW"));
        assert_eq!(note(&[]), None);
        assert_eq!(
            note(&[Capability::NetAdmin]).as_deref(),
            Some("this process lacks NET_ADMIN; relying on the iptables programs' own file capabilities")
        );
    }

    #[test]
    fn current_process_is_readable() {
        // Whatever the test runs as, the status file must parse.
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        assert!(parse(&status).is_ok());
    }
}
