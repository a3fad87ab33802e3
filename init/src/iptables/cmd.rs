//! The `weft-init` program: flags, and the sequence that runs them.
//!
//! `src/bin/weft-init.rs` only parses [`InitArgs`] and calls [`run`] with
//! the real system; everything here takes its dependencies as arguments so
//! `--dry-run` output and flag handling are unit-tested without root.

use std::io::{self, Write};
use std::net::SocketAddr;

use argh::FromArgs;

use super::apply::{self, ApplyError};
use super::backend::{Backend, Mode};
use super::caps::{self, Capability, CapsError};
use super::cidr::CidrList;
use super::config::{
    ConfigError, RedirectConfig, DEFAULT_INCOMING_PROXY_PORT, DEFAULT_OUTGOING_PROXY_PORT,
    DEFAULT_PROXY_UID,
};
use super::document::{self, Existing};
use super::ports::PortList;
use super::ruleset::{jumps, plan, WEFT_CHAINS};
use super::runner::Runner;
use super::save::{tokenize, SavedRule};
use super::validate::{self, ValidateError};
use crate::exit;

/// Install Weft's iptables redirect in the current network namespace (run
/// as the pod's init container, with NET_ADMIN and NET_RAW). Inbound TCP is
/// redirected to the proxy's inbound port, outbound TCP to its outbound
/// port. Re-running is safe: the rules are replaced, never duplicated.
#[derive(FromArgs, Debug, Clone, PartialEq)]
pub struct InitArgs {
    /// proxy port that inbound TCP is redirected to (default 4143)
    #[argh(option, default = "DEFAULT_INCOMING_PROXY_PORT")]
    pub incoming_proxy_port: u16,

    /// proxy port that outbound TCP is redirected to (default 4140)
    #[argh(option, default = "DEFAULT_OUTGOING_PROXY_PORT")]
    pub outgoing_proxy_port: u16,

    /// uid the proxy runs as; its connections are never redirected (default 2102)
    #[argh(option, default = "DEFAULT_PROXY_UID")]
    pub proxy_uid: u32,

    /// inbound ports not to redirect, e.g. 22,8000-8100 (4190 and 4191 are always skipped)
    #[argh(option, default = "PortList::default()")]
    pub inbound_ports_to_ignore: PortList,

    /// outbound destination ports not to redirect, e.g. 443,6443
    #[argh(option, default = "PortList::default()")]
    pub outbound_ports_to_ignore: PortList,

    /// outbound destination subnets not to redirect, e.g. 10.96.0.0/12,169.254.169.254/32
    #[argh(option, default = "CidrList::default()")]
    pub subnets_to_ignore: CidrList,

    /// iptables backend: auto (default; the one the node uses), nft or legacy
    #[argh(option, default = "Mode::Auto")]
    pub iptables_mode: Mode,

    /// also program IPv6 with ip6tables
    #[argh(switch)]
    pub ipv6: bool,

    /// print the iptables-restore documents for a fresh namespace and change nothing
    #[argh(switch)]
    pub dry_run: bool,

    /// remove Weft's chains and the rules jumping to them instead of installing
    #[argh(switch)]
    pub cleanup: bool,

    /// after installing, prove that an outbound connection lands on the outgoing proxy port
    #[argh(switch)]
    pub validate: bool,

    /// address --validate connects to (default 192.0.2.2:1404)
    #[argh(option, default = "default_marker()")]
    pub validate_addr: SocketAddr,
}

/// Every option of [`InitArgs`] that takes a value, so `--name=value` is
/// accepted too (see [`crate::cli::split_equals`]).
pub const VALUE_OPTIONS: &[&str] = &[
    "--incoming-proxy-port",
    "--outgoing-proxy-port",
    "--proxy-uid",
    "--inbound-ports-to-ignore",
    "--outbound-ports-to-ignore",
    "--subnets-to-ignore",
    "--iptables-mode",
    "--validate-addr",
];

fn default_marker() -> SocketAddr {
    // A constant that always parses; the fallback only guards edits.
    validate::DEFAULT_MARKER
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([192, 0, 2, 2], 1404)))
}

impl InitArgs {
    /// The ruleset configuration these flags describe.
    pub fn config(&self) -> RedirectConfig {
        RedirectConfig {
            incoming_proxy_port: self.incoming_proxy_port,
            outgoing_proxy_port: self.outgoing_proxy_port,
            proxy_uid: self.proxy_uid,
            inbound_ports_to_ignore: self.inbound_ports_to_ignore.0.clone(),
            outbound_ports_to_ignore: self.outbound_ports_to_ignore.0.clone(),
            subnets_to_ignore: self.subnets_to_ignore.0.clone(),
            ipv6: self.ipv6,
        }
    }
}

/// Why `weft-init` failed; each variant has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Flags that cannot work together.
    #[error("{0}")]
    Usage(String),
    /// An impossible configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Missing capabilities.
    #[error(transparent)]
    Caps(#[from] CapsError),
    /// Installing or removing failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// `--validate` failed.
    #[error(transparent)]
    Validate(#[from] ValidateError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

impl InitError {
    /// The process exit code (see [`crate::exit`] and `docs/init.md`).
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::Usage(_) | InitError::Config(_) => exit::USAGE,
            InitError::Caps(CapsError::Missing { .. }) => exit::NO_PERM,
            InitError::Caps(CapsError::Unreadable(_)) => exit::OS_ERR,
            InitError::Apply(error) => error.exit_code(),
            InitError::Validate(error) => error.exit_code(),
            InitError::Output(_) => exit::OS_ERR,
        }
    }
}

/// What [`run`] needs from the system.
pub struct System<'a> {
    /// Runs the iptables programs.
    pub runner: &'a dyn Runner,
    /// Checks the process's capabilities for a backend; returns those
    /// missing only from the effective set (see [`super::caps::check`]).
    pub check_caps: &'a dyn Fn(Backend) -> Result<Vec<Capability>, CapsError>,
    /// Runs `--validate`.
    pub validate: &'a dyn Fn(SocketAddr, u16, u32) -> Result<(), ValidateError>,
}

/// Runs `weft-init`: documents go to `out`, progress to `log`.
pub fn run(
    args: &InitArgs,
    system: &System<'_>,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<(), InitError> {
    let config = args.config();
    config.validate()?;
    if args.cleanup && args.validate {
        return Err(InitError::Usage(
            "--validate checks an installed redirect; it cannot be combined with --cleanup"
                .to_owned(),
        ));
    }

    if args.dry_run {
        for family in config.families() {
            if args.cleanup {
                out.write_all(document::header(family, "cleanup").as_bytes())?;
                let text = document::cleanup_document(&everything_installed()).unwrap_or_default();
                out.write_all(text.as_bytes())?;
            } else {
                out.write_all(document::header(family, "install").as_bytes())?;
                let text = document::install_document(&plan(&config, family), &Existing::default())
                    .map_err(ApplyError::from)?;
                out.write_all(text.as_bytes())?;
            }
        }
        return Ok(());
    }

    let choice = apply::select_backend(system.runner, args.iptables_mode);
    writeln!(
        log,
        "weft-init: using the {} iptables backend ({})",
        choice.backend, choice.reason
    )?;
    if let Some(note) = caps::note(&(system.check_caps)(choice.backend)?) {
        writeln!(log, "weft-init: note: {note}")?;
    }

    for family in config.families() {
        if args.cleanup {
            let cleaned = apply::cleanup(system.runner, choice.backend, family)?;
            if cleaned.chains.is_empty() && cleaned.references.is_empty() {
                writeln!(log, "weft-init: {}: nothing to clean up", family.name())?;
            } else {
                for line in &cleaned.references {
                    writeln!(log, "weft-init: {}: deleted `{line}`", family.name())?;
                }
                writeln!(
                    log,
                    "weft-init: {}: deleted chains {}",
                    family.name(),
                    cleaned.chains.join(", ")
                )?;
            }
        } else {
            let installed = apply::install(system.runner, choice.backend, &config, family)?;
            writeln!(
                log,
                "weft-init: {}: installed {} rules in {} (replaced {}, jumps added {}, duplicate jumps removed {})",
                family.name(),
                installed.rules,
                WEFT_CHAINS.join(" and "),
                installed.replaced,
                installed.jumps_added,
                installed.duplicates_removed
            )?;
            for warning in &installed.warnings {
                writeln!(log, "weft-init: {}: warning: {warning}", family.name())?;
            }
        }
    }

    if args.validate {
        (system.validate)(
            args.validate_addr,
            config.outgoing_proxy_port,
            config.proxy_uid,
        )?;
        writeln!(
            log,
            "weft-init: validated: a connection to {} landed on 127.0.0.1:{}",
            args.validate_addr, config.outgoing_proxy_port
        )?;
    }
    Ok(())
}

/// The state after a full install, used to print the cleanup document in
/// `--dry-run` mode.
fn everything_installed() -> Existing {
    Existing {
        chains: WEFT_CHAINS
            .iter()
            .map(|chain| (*chain).to_owned())
            .collect(),
        rules_in_chains: 0,
        jumps: jumps()
            .iter()
            .map(|jump| SavedRule {
                chain: jump.chain.to_owned(),
                spec: jump.spec(),
                args: tokenize(&jump.spec()).unwrap_or_default(),
            })
            .collect(),
        foreign: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Parsed};
    use crate::iptables::runner::Output;
    use std::cell::RefCell;

    fn args(argv: &[&str]) -> Result<InitArgs, (String, i32)> {
        let argv: Vec<String> = std::iter::once("weft-init")
            .chain(argv.iter().copied())
            .map(str::to_owned)
            .collect();
        match parse::<InitArgs>(&argv) {
            Parsed::Run(args) => Ok(args),
            Parsed::Exit { output, code } => Err((output, code)),
        }
    }

    /// A runner that must not be called.
    struct NoRunner;
    impl Runner for NoRunner {
        fn run(&self, program: &str, _: &[&str], _: Option<&str>) -> io::Result<Output> {
            panic!("dry run must not run {program}");
        }
    }

    fn dry_run(argv: &[&str]) -> Result<String, InitError> {
        let parsed = args(argv).expect("valid flags");
        let system = System {
            runner: &NoRunner,
            check_caps: &|_| panic!("dry run must not check capabilities"),
            validate: &|_, _, _| panic!("dry run must not validate"),
        };
        let mut out = Vec::new();
        let mut log = Vec::new();
        run(&parsed, &system, &mut out, &mut log)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn value_options_match_the_flags() {
        // Every `--x <x>` in the usage line is listed, and nothing else.
        let (usage, _) = args(&["--help"]).expect_err("help exits");
        let mut from_usage: Vec<&str> = usage
            .split('[')
            .filter_map(|part| part.split_once(" <").map(|(name, _)| name))
            .filter(|name| name.starts_with("--"))
            .collect();
        from_usage.sort_unstable();
        let mut listed = VALUE_OPTIONS.to_vec();
        listed.sort_unstable();
        assert_eq!(from_usage, listed);
    }

    #[test]
    fn equals_form_is_accepted() {
        let argv: Vec<String> = [
            "weft-init",
            "--proxy-uid=1337",
            "--inbound-ports-to-ignore=22,80",
            "--dry-run",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        match parse::<InitArgs>(&crate::cli::split_equals(&argv, VALUE_OPTIONS)) {
            Parsed::Run(parsed) => {
                assert_eq!(parsed.proxy_uid, 1337);
                assert_eq!(parsed.inbound_ports_to_ignore.0.len(), 2);
            }
            Parsed::Exit { output, .. } => panic!("{output}"),
        }
    }

    #[test]
    fn defaults() {
        let parsed = args(&[]).expect("no flags is valid");
        assert_eq!(parsed.config(), RedirectConfig::default());
        assert_eq!(parsed.iptables_mode, Mode::Auto);
        assert!(!parsed.dry_run && !parsed.cleanup && !parsed.validate && !parsed.ipv6);
        assert_eq!(parsed.validate_addr.to_string(), "192.0.2.2:1404");
    }

    #[test]
    fn flags_table() {
        let parsed = args(&[
            "--incoming-proxy-port",
            "5143",
            "--outgoing-proxy-port",
            "5140",
            "--proxy-uid",
            "1337",
            "--inbound-ports-to-ignore",
            "22,8000-8100",
            "--outbound-ports-to-ignore",
            "443",
            "--subnets-to-ignore",
            "10.0.0.0/8",
            "--iptables-mode",
            "legacy",
            "--ipv6",
            "--validate",
            "--validate-addr",
            "198.18.0.2:1404",
        ])
        .expect("valid");
        let config = parsed.config();
        assert_eq!(
            (
                config.incoming_proxy_port,
                config.outgoing_proxy_port,
                config.proxy_uid
            ),
            (5143, 5140, 1337)
        );
        assert_eq!(config.inbound_ports_to_ignore.len(), 2);
        assert_eq!(config.outbound_ports_to_ignore.len(), 1);
        assert_eq!(config.subnets_to_ignore.len(), 1);
        assert!(config.ipv6 && parsed.validate);
        assert_eq!(parsed.iptables_mode, Mode::Legacy);
        assert_eq!(parsed.validate_addr.to_string(), "198.18.0.2:1404");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["--inbound-ports-to-ignore", "22,,80"], "empty item"),
            (&["--outbound-ports-to-ignore", "0"], "invalid port"),
            (&["--subnets-to-ignore", "10.0.0.0/33"], "prefix length"),
            (
                &["--iptables-mode", "plain"],
                "expected auto, nft or legacy",
            ),
            (&["--incoming-proxy-port", "70000"], "incoming-proxy-port"),
            (&["--validate-addr", "nowhere"], "validate-addr"),
            (&["--bogus"], "--bogus"),
        ];
        for (argv, needle) in cases {
            let (output, code) = args(argv).expect_err("must be rejected");
            assert_eq!(code, exit::USAGE, "{argv:?}");
            assert!(output.contains(needle), "{argv:?}: {output}");
        }
    }

    #[test]
    fn invalid_config_and_combinations_are_usage_errors() {
        for argv in [
            &["--proxy-uid", "0"][..],
            &["--incoming-proxy-port", "4140"][..],
            &["--subnets-to-ignore", "fd00::/8"][..],
            &["--cleanup", "--validate"][..],
        ] {
            let error = dry_run(argv).expect_err("invalid");
            assert_eq!(error.exit_code(), exit::USAGE, "{argv:?}: {error}");
        }
    }

    #[test]
    fn golden_dry_run_default() {
        assert_eq!(
            dry_run(&["--dry-run"]).expect("dry run"),
            r#"# weft-init install for IPv4 (apply with: iptables-restore --noflush)
*nat
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
"#
        );
    }

    #[test]
    fn golden_dry_run_ipv6_cleanup() {
        assert_eq!(
            dry_run(&["--dry-run", "--cleanup", "--ipv6"]).expect("dry run"),
            r#"# weft-init cleanup for IPv4 (apply with: iptables-restore --noflush)
*nat
-D PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-D OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-F WEFT_PREROUTING
-F WEFT_OUTPUT
-X WEFT_PREROUTING
-X WEFT_OUTPUT
COMMIT
# weft-init cleanup for IPv6 (apply with: ip6tables-restore --noflush)
*nat
-D PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-D OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-F WEFT_PREROUTING
-F WEFT_OUTPUT
-X WEFT_PREROUTING
-X WEFT_OUTPUT
COMMIT
"#
        );
    }

    #[test]
    fn dry_run_ipv6_install_prints_both_families() {
        let out = dry_run(&["--dry-run", "--ipv6"]).expect("dry run");
        assert_eq!(out.matches("*nat").count(), 2);
        assert!(out.contains("-d ::1/128 -o lo"));
        assert!(out.contains("-d 127.0.0.0/8 -o lo"));
    }

    /// A fake system whose iptables state is a string that restores edit.
    struct FakeIptables {
        calls: RefCell<Vec<String>>,
        table: RefCell<String>,
        after_restore: String,
    }

    impl Runner for FakeIptables {
        fn run(&self, program: &str, args: &[&str], _: Option<&str>) -> io::Result<Output> {
            self.calls
                .borrow_mut()
                .push(format!("{program} {}", args.join(" ")).trim().to_owned());
            let stdout = if program.ends_with("-restore") {
                *self.table.borrow_mut() = self.after_restore.clone();
                String::new()
            } else if args.is_empty() {
                String::new()
            } else {
                self.table.borrow().clone()
            };
            Ok(Output {
                code: Some(0),
                stdout,
                stderr: String::new(),
            })
        }
    }

    #[test]
    fn install_then_validate_sequence() {
        let ruleset = plan(&RedirectConfig::default(), crate::iptables::Family::V4);
        let mut installed = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:WEFT_OUTPUT - [0:0]\n:WEFT_PREROUTING - [0:0]\n");
        for rule in jumps().iter().chain(&ruleset.rules) {
            installed.push_str(&rule.append_line());
            installed.push('\n');
        }
        installed.push_str("COMMIT\n");
        let fake = FakeIptables {
            calls: RefCell::new(Vec::new()),
            table: RefCell::new("*nat\nCOMMIT\n".to_owned()),
            after_restore: installed,
        };
        let validated = RefCell::new(None);
        let system = System {
            runner: &fake,
            check_caps: &|backend| {
                assert_eq!(backend, Backend::Nft);
                Ok(vec![Capability::NetAdmin])
            },
            validate: &|marker, port, uid| {
                *validated.borrow_mut() = Some((marker.to_string(), port, uid));
                Ok(())
            },
        };
        let parsed = args(&["--validate", "--validate-addr", "198.18.0.2:1404"]).expect("valid");
        let mut out = Vec::new();
        let mut log = Vec::new();
        run(&parsed, &system, &mut out, &mut log).expect("runs");
        assert!(out.is_empty());
        assert_eq!(
            fake.calls.borrow().as_slice(),
            [
                "iptables-legacy-save",
                "iptables-nft-save",
                "iptables-nft-save -t nat",
                "iptables-nft-restore --noflush --wait=5",
                "iptables-nft-save -t nat",
            ]
        );
        assert_eq!(
            *validated.borrow(),
            Some(("198.18.0.2:1404".to_owned(), 4140, 2102))
        );
        let log = String::from_utf8(log).expect("utf-8");
        assert!(log.contains("using the nft iptables backend"), "{log}");
        assert!(log.contains("note: this process lacks NET_ADMIN"), "{log}");
        assert!(log.contains("IPv4: installed 5 rules"), "{log}");
        assert!(log.contains("validated"), "{log}");
    }

    #[test]
    fn missing_capabilities_stop_before_any_change() {
        let fake = FakeIptables {
            calls: RefCell::new(Vec::new()),
            table: RefCell::new(String::new()),
            after_restore: String::new(),
        };
        let system = System {
            runner: &fake,
            check_caps: &|backend| {
                Err(CapsError::Missing {
                    missing: vec![Capability::NetAdmin],
                    backend,
                })
            },
            validate: &|_, _, _| Ok(()),
        };
        let parsed = args(&["--iptables-mode", "nft"]).expect("valid");
        let error = run(&parsed, &system, &mut Vec::new(), &mut Vec::new()).expect_err("no caps");
        assert_eq!(error.exit_code(), exit::NO_PERM);
        assert!(fake.calls.borrow().is_empty());
    }
}
