//! Applying and removing the ruleset: read, decide, apply, verify.
//!
//! Each operation is the same four steps for one address family:
//!
//! 1. read the `nat` table with `iptables-save -t nat` and parse it
//!    ([`super::save`]);
//! 2. decide, as data, what to write ([`super::document`]);
//! 3. apply the whole document in one `iptables-restore --noflush`
//!    transaction;
//! 4. read the table again and check the result is what was intended
//!    ([`verify_installed`]), so a silent no-op can never pass as success.
//!
//! All process execution goes through a [`Runner`], so the sequence is
//! unit-tested here with a scripted fake; the real binaries are exercised
//! by the network-namespace tests in `init/tests/`.

use super::backend::{self, binary, Backend, Choice, Mode, Probe, Tool};
use super::config::{Family, RedirectConfig};
use super::document::{cleanup_document, install_document, DocumentError, Existing};
use super::ruleset::{jumps, plan, Ruleset, WEFT_CHAINS};
use super::runner::{run_checked, CommandError, Runner};
use super::save::{self, parse_nat, tokenize, NatTable, SaveError};
use crate::exit;

/// How long `iptables-restore` waits for the xtables lock (legacy backend;
/// nft ignores it). The lock is a file, so processes in other network
/// namespaces sharing `/run` can hold it briefly.
pub const LOCK_WAIT: &str = "--wait=5";

/// Why installing or removing the ruleset failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// An iptables program failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `iptables-save` printed something unparseable.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// Existing rules that Weft will not change on its own.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The table read back after applying is not what was applied.
    #[error("{family} nat table after applying is not as intended: {detail}")]
    Verify {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// What differs.
        detail: String,
    },
}

impl ApplyError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ApplyError::Command(CommandError::NotPermitted { .. }) => exit::NO_PERM,
            ApplyError::Command(CommandError::NotFound { .. })
            | ApplyError::Command(CommandError::Unavailable { .. }) => exit::UNAVAILABLE,
            ApplyError::Command(CommandError::Failed { .. })
            | ApplyError::Command(CommandError::Io { .. }) => exit::OS_ERR,
            ApplyError::Save(_) | ApplyError::Document(_) => exit::DATA_ERR,
            ApplyError::Verify { .. } => exit::SOFTWARE,
        }
    }
}

/// What an install did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The family.
    pub family: Family,
    /// Rules now in Weft's chains.
    pub rules: usize,
    /// Rules that were in Weft's chains before and were replaced.
    pub replaced: usize,
    /// Jumps that were added (0 on a re-run).
    pub jumps_added: usize,
    /// Surplus duplicate jumps that were deleted.
    pub duplicates_removed: usize,
    /// Rules that read back differently from how they were written
    /// (harmless spelling differences of some iptables versions).
    pub warnings: Vec<String>,
}

/// What a cleanup did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The family.
    pub family: Family,
    /// Weft chains deleted.
    pub chains: Vec<String>,
    /// Rules deleted outside Weft's chains (Weft's jumps and foreign rules
    /// that referred to Weft's chains), as they were printed.
    pub references: Vec<String>,
}

/// Picks the backend; only [`Mode::Auto`] runs the probes.
pub fn select_backend(runner: &dyn Runner, mode: Mode) -> Choice {
    match mode {
        Mode::Auto => backend::choose(
            mode,
            probe(runner, Backend::Legacy),
            probe(runner, Backend::Nft),
        ),
        _ => backend::choose(mode, Probe::Unusable, Probe::Unusable),
    }
}

/// Counts a backend's IPv4 rules in all tables (no `-t`, so nothing is
/// loaded into the kernel by asking).
pub fn probe(runner: &dyn Runner, backend: Backend) -> Probe {
    match run_checked(runner, binary(backend, Family::V4, Tool::Save), &[], None) {
        Ok(output) => Probe::Rules(save::count_rules(&output)),
        Err(_) => Probe::Unusable,
    }
}

/// Reads and parses the `nat` table.
pub fn read_nat(
    runner: &dyn Runner,
    backend: Backend,
    family: Family,
) -> Result<NatTable, ApplyError> {
    let output = run_checked(
        runner,
        binary(backend, family, Tool::Save),
        &["-t", "nat"],
        None,
    )?;
    Ok(parse_nat(&output)?)
}

fn restore(
    runner: &dyn Runner,
    backend: Backend,
    family: Family,
    document: &str,
) -> Result<(), ApplyError> {
    run_checked(
        runner,
        binary(backend, family, Tool::Restore),
        &["--noflush", LOCK_WAIT],
        Some(document),
    )?;
    Ok(())
}

/// Installs (or re-installs) the ruleset for one family.
pub fn install(
    runner: &dyn Runner,
    backend: Backend,
    config: &RedirectConfig,
    family: Family,
) -> Result<Installed, ApplyError> {
    let before = Existing::analyze(&read_nat(runner, backend, family)?);
    let ruleset = plan(config, family);
    let document = install_document(&ruleset, &before)?;
    restore(runner, backend, family, &document)?;
    let after = read_nat(runner, backend, family)?;
    let warnings = verify_installed(&ruleset, &after)?;
    let [prerouting, output] = jumps();
    let counts = [before.count(&prerouting), before.count(&output)];
    Ok(Installed {
        family,
        rules: ruleset.rules.len(),
        replaced: before.rules_in_chains,
        jumps_added: counts.iter().filter(|count| **count == 0).count(),
        duplicates_removed: counts.iter().map(|count| count.saturating_sub(1)).sum(),
        warnings,
    })
}

/// Checks a table read back after installing `ruleset`: both chains exist,
/// each jump is there exactly once, nothing foreign refers to Weft's
/// chains, and each chain holds as many rules as planned. Returns warnings
/// for rules whose arguments read back differently (some iptables versions
/// spell options differently); a structural difference is an error.
pub fn verify_installed(ruleset: &Ruleset, table: &NatTable) -> Result<Vec<String>, ApplyError> {
    let family = ruleset.family.name();
    let fail = |detail: String| ApplyError::Verify { family, detail };
    let existing = Existing::analyze(table);
    for chain in WEFT_CHAINS {
        if !table.has_chain(chain) {
            return Err(fail(format!("chain {chain} is missing")));
        }
    }
    for jump in jumps() {
        let count = existing.count(&jump);
        if count != 1 {
            return Err(fail(format!(
                "expected exactly one `{}`, found {count}",
                jump.append_line()
            )));
        }
    }
    if let Some(rule) = existing.foreign.first() {
        return Err(fail(format!("unexpected rule `{}`", rule.line())));
    }
    let mut warnings = Vec::new();
    for chain in WEFT_CHAINS {
        let planned: Vec<_> = ruleset.rules.iter().filter(|r| r.chain == chain).collect();
        let actual: Vec<_> = table.rules.iter().filter(|r| r.chain == chain).collect();
        if planned.len() != actual.len() {
            return Err(fail(format!(
                "chain {chain} has {} rules, expected {}",
                actual.len(),
                planned.len()
            )));
        }
        for (want, got) in planned.iter().zip(actual) {
            if tokenize(&want.spec()).ok().as_ref() != Some(&got.args) {
                warnings.push(format!(
                    "wrote `{}` but {chain} reads back `{}`",
                    want.append_line(),
                    got.line()
                ));
            }
        }
    }
    Ok(warnings)
}

/// Removes every trace of Weft for one family.
pub fn cleanup(
    runner: &dyn Runner,
    backend: Backend,
    family: Family,
) -> Result<Cleaned, ApplyError> {
    let before = Existing::analyze(&read_nat(runner, backend, family)?);
    let cleaned = Cleaned {
        family,
        chains: before.chains.clone(),
        references: before
            .jumps
            .iter()
            .chain(&before.foreign)
            .map(save::SavedRule::line)
            .collect(),
    };
    let Some(document) = cleanup_document(&before) else {
        return Ok(cleaned);
    };
    restore(runner, backend, family, &document)?;
    let after = Existing::analyze(&read_nat(runner, backend, family)?);
    if !after.is_empty() {
        return Err(ApplyError::Verify {
            family: family.name(),
            detail: format!(
                "still present after cleanup: chains {:?}, {} referring rules",
                after.chains,
                after.jumps.len() + after.foreign.len()
            ),
        });
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::runner::Output;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io;

    /// One recorded call: program, arguments, stdin.
    type Call = (String, Vec<String>, Option<String>);

    /// A runner that replays scripted results and records every call.
    #[derive(Default)]
    struct Script {
        replies: RefCell<VecDeque<io::Result<Output>>>,
        calls: RefCell<Vec<Call>>,
    }

    impl Script {
        fn reply(self, code: i32, stdout: &str, stderr: &str) -> Self {
            self.replies.borrow_mut().push_back(Ok(Output {
                code: Some(code),
                stdout: stdout.to_owned(),
                stderr: stderr.to_owned(),
            }));
            self
        }

        fn missing(self) -> Self {
            self.replies
                .borrow_mut()
                .push_back(Err(io::Error::from(io::ErrorKind::NotFound)));
            self
        }

        fn calls(&self) -> Vec<String> {
            self.calls
                .borrow()
                .iter()
                .map(|(program, args, _)| format!("{program} {}", args.join(" ")).trim().to_owned())
                .collect()
        }

        fn stdin_of(&self, index: usize) -> Option<String> {
            self.calls.borrow()[index].2.clone()
        }
    }

    impl Runner for Script {
        fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
            self.calls.borrow_mut().push((
                program.to_owned(),
                args.iter().map(|a| (*a).to_owned()).collect(),
                stdin.map(str::to_owned),
            ));
            self.replies
                .borrow_mut()
                .pop_front()
                .unwrap_or_else(|| Err(io::Error::other("unscripted call")))
        }
    }

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    /// The table after a default install, as iptables-save prints it.
    fn installed() -> String {
        let ruleset = plan(&RedirectConfig::default(), Family::V4);
        let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:WEFT_OUTPUT - [0:0]\n:WEFT_PREROUTING - [0:0]\n");
        for jump in jumps() {
            text.push_str(&jump.append_line());
            text.push('\n');
        }
        for chain in ["WEFT_OUTPUT", "WEFT_PREROUTING"] {
            for rule in ruleset.rules.iter().filter(|r| r.chain == chain) {
                text.push_str(&rule.append_line());
                text.push('\n');
            }
        }
        text.push_str("COMMIT\n");
        text
    }

    #[test]
    fn install_fresh_reads_applies_and_verifies() {
        let script = Script::default()
            .reply(0, EMPTY, "")
            .reply(0, "", "")
            .reply(0, &installed(), "");
        let done = install(
            &script,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect("install succeeds");
        assert_eq!(
            script.calls(),
            [
                "iptables-nft-save -t nat",
                "iptables-nft-restore --noflush --wait=5",
                "iptables-nft-save -t nat",
            ]
        );
        let document = script.stdin_of(1).expect("restore gets a document");
        assert!(document.starts_with("*nat\n:WEFT_PREROUTING - [0:0]\n"));
        assert!(document.contains("-A OUTPUT -m comment"));
        assert_eq!(
            done,
            Installed {
                family: Family::V4,
                rules: 5,
                replaced: 0,
                jumps_added: 2,
                duplicates_removed: 0,
                warnings: vec![],
            }
        );
    }

    #[test]
    fn install_rerun_adds_no_jumps() {
        let script = Script::default()
            .reply(0, &installed(), "")
            .reply(0, "", "")
            .reply(0, &installed(), "");
        let done = install(
            &script,
            Backend::Legacy,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect("install succeeds");
        assert_eq!(done.jumps_added, 0);
        assert_eq!(done.replaced, 5);
        let document = script.stdin_of(1).expect("document");
        assert!(!document.contains("-A OUTPUT"), "{document}");
        assert!(!document.contains("-A PREROUTING"), "{document}");
        assert_eq!(
            script.calls()[1],
            "iptables-legacy-restore --noflush --wait=5"
        );
    }

    #[test]
    fn install_refuses_foreign_references_without_applying() {
        let save = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -j WEFT_OUTPUT\nCOMMIT\n";
        let script = Script::default().reply(0, save, "");
        let error = install(
            &script,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect_err("foreign rule");
        assert!(matches!(error, ApplyError::Document(_)));
        assert_eq!(error.exit_code(), exit::DATA_ERR);
        assert_eq!(script.calls().len(), 1, "nothing applied");
    }

    #[test]
    fn install_detects_a_silent_no_op() {
        let script = Script::default()
            .reply(0, EMPTY, "")
            .reply(0, "", "")
            .reply(0, EMPTY, "");
        let error = install(
            &script,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect_err("verification fails");
        assert_eq!(
            error,
            ApplyError::Verify {
                family: "IPv4",
                detail: "chain WEFT_PREROUTING is missing".into()
            }
        );
        assert_eq!(error.exit_code(), exit::SOFTWARE);
    }

    #[test]
    fn install_error_classes_map_to_exit_codes() {
        let denied = Script::default().reply(
            4,
            "",
            "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
        );
        let error = install(
            &denied,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect_err("denied");
        assert_eq!(error.exit_code(), exit::NO_PERM);

        let missing = Script::default().missing();
        let error = install(
            &missing,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V6,
        )
        .expect_err("missing");
        assert_eq!(
            error,
            ApplyError::Command(CommandError::NotFound {
                program: "ip6tables-nft-save".into()
            })
        );
        assert_eq!(error.exit_code(), exit::UNAVAILABLE);

        let garbage = Script::default().reply(0, "what is this\n", "");
        let error = install(
            &garbage,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect_err("garbage");
        assert_eq!(error.exit_code(), exit::DATA_ERR);

        let rejected =
            Script::default()
                .reply(0, EMPTY, "")
                .reply(2, "", "Error occurred at line: 4");
        let error = install(
            &rejected,
            Backend::Nft,
            &RedirectConfig::default(),
            Family::V4,
        )
        .expect_err("restore fails");
        assert_eq!(error.exit_code(), exit::OS_ERR);
    }

    #[test]
    fn verify_table() {
        let ruleset = plan(&RedirectConfig::default(), Family::V4);
        let table = |text: &str| parse_nat(text).expect("valid");
        assert_eq!(verify_installed(&ruleset, &table(&installed())), Ok(vec![]));

        let doubled = installed().replace(
            "COMMIT",
            "-A OUTPUT -m comment --comment \"weft/install-output\" -j WEFT_OUTPUT\nCOMMIT",
        );
        assert!(matches!(
            verify_installed(&ruleset, &table(&doubled)),
            Err(ApplyError::Verify { detail, .. }) if detail.contains("found 2")
        ));

        let extra = installed().replace("COMMIT", "-A WEFT_OUTPUT -j RETURN\nCOMMIT");
        assert!(matches!(
            verify_installed(&ruleset, &table(&extra)),
            Err(ApplyError::Verify { detail, .. }) if detail.contains("has 4 rules, expected 3")
        ));

        let foreign = installed().replace("COMMIT", "-A INPUT -j WEFT_OUTPUT\nCOMMIT");
        assert!(matches!(
            verify_installed(&ruleset, &table(&foreign)),
            Err(ApplyError::Verify { detail, .. }) if detail.contains("-A INPUT -j WEFT_OUTPUT")
        ));

        // Same structure, different spelling: a warning, not an error.
        let respelled = installed().replace("--to-ports 4140", "--to-ports 4140-4140");
        let warnings = verify_installed(&ruleset, &table(&respelled)).expect("structure ok");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("4140-4140"), "{warnings:?}");
    }

    #[test]
    fn cleanup_removes_and_verifies() {
        let script = Script::default()
            .reply(0, &installed(), "")
            .reply(0, "", "")
            .reply(0, EMPTY, "");
        let done = cleanup(&script, Backend::Nft, Family::V4).expect("cleanup succeeds");
        assert_eq!(done.chains, ["WEFT_PREROUTING", "WEFT_OUTPUT"]);
        assert_eq!(done.references.len(), 2);
        let document = script.stdin_of(1).expect("document");
        assert!(document.contains("-X WEFT_OUTPUT"), "{document}");
    }

    #[test]
    fn cleanup_of_clean_table_applies_nothing() {
        let script = Script::default().reply(0, EMPTY, "");
        let done = cleanup(&script, Backend::Nft, Family::V4).expect("nothing to do");
        assert!(done.chains.is_empty() && done.references.is_empty());
        assert_eq!(script.calls(), ["iptables-nft-save -t nat"]);
    }

    #[test]
    fn cleanup_that_leaves_traces_fails() {
        let script = Script::default()
            .reply(0, &installed(), "")
            .reply(0, "", "")
            .reply(0, &installed(), "");
        assert!(matches!(
            cleanup(&script, Backend::Nft, Family::V4),
            Err(ApplyError::Verify { .. })
        ));
    }

    #[test]
    fn select_backend_probes_only_in_auto() {
        let script = Script::default();
        assert_eq!(
            select_backend(&script, Mode::Legacy).backend,
            Backend::Legacy
        );
        assert!(script.calls().is_empty());

        let script = Script::default()
            .reply(0, "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", "")
            .reply(0, "", "");
        let choice = select_backend(&script, Mode::Auto);
        assert_eq!(choice.backend, Backend::Legacy);
        assert_eq!(
            script.calls(),
            ["iptables-legacy-save", "iptables-nft-save"]
        );

        let script = Script::default().missing().reply(0, "", "");
        assert_eq!(select_backend(&script, Mode::Auto).backend, Backend::Nft);
    }
}
