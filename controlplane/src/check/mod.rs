//! `weft check [--pre] [--proxy] [-n NS] [-o short|wide|json]`: is Weft installed and
//! working, like `linkerd check` (docs/check.md).
//!
//! Three steps, kept apart so the decisions are table-tested without a server:
//!
//! 1. [`facts::gather`] reads everything from the API server (kube-rs) into a plain
//!    [`facts::Facts`];
//! 2. [`checks::checks`] — pure — turns the facts, the time and the options into
//!    categories of checks, each success, warning or error with a hint and a fix
//!    ([`identity`], [`webhook`] and [`data_plane`] hold three of the categories);
//! 3. [`output::render`] prints them.
//!
//! Exit code: 0 without failures (warnings allowed), 1 with any, 2 for bad usage.

pub mod checks;
pub mod data_plane;
pub mod facts;
pub mod identity;
pub mod output;
pub mod webhook;

#[cfg(test)]
mod checks_tests;
#[cfg(test)]
mod data_plane_tests;
#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod identity_webhook_tests;

use crate::cli::CheckArgs;
use std::process::ExitCode;

/// Which checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// After install: the control plane.
    Default,
    /// `--pre`: before install.
    Pre,
    /// `--proxy`: the control plane and the data plane.
    Proxy,
}

/// What the checks need besides the facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `-n`: the namespace whose pods `--proxy` checks (all when `None`).
    pub pods_namespace: Option<String>,
    /// This CLI's version, compared with the controller's and the proxies'.
    pub cli_version: String,
}

/// A combination of flags that makes no sense (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("--pre and --proxy cannot be combined: --pre is for before install, --proxy checks a running mesh")]
    PreAndProxy,
    #[error("-n {0} chooses the pods --proxy checks; add --proxy (the control plane's namespace is --namespace)")]
    NamespaceWithoutProxy(String),
}

impl Options {
    pub fn from_args(args: &CheckArgs) -> Result<Self, UsageError> {
        let mode = match (args.pre, args.proxy) {
            (true, true) => return Err(UsageError::PreAndProxy),
            (true, false) => Mode::Pre,
            (false, true) => Mode::Proxy,
            (false, false) => Mode::Default,
        };
        if let (Some(ns), false) = (&args.proxy_namespace, args.proxy) {
            return Err(UsageError::NamespaceWithoutProxy(ns.clone()));
        }
        Ok(Self {
            mode,
            pods_namespace: args.proxy_namespace.clone(),
            cli_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}

/// Runs the checks and returns the report and the exit code (0, 1, or 2 with the report
/// being the usage error).
pub async fn run(args: &CheckArgs) -> (String, u8) {
    let opts = match Options::from_args(args) {
        Ok(o) => o,
        Err(e) => return (format!("weft check: {e}\n"), 2),
    };
    let facts = match crate::discovery::kubernetes::client(args.kubeconfig.as_deref()).await {
        Ok(client) => {
            facts::gather(
                &client,
                opts.mode,
                &args.namespace,
                opts.pods_namespace.as_deref(),
            )
            .await
        }
        Err(e) => facts::Facts {
            control_plane_namespace: args.namespace.clone(),
            server: Some(Err(facts::describe(&e))),
            ..facts::Facts::default()
        },
    };
    let categories = checks::checks(&facts, time::OffsetDateTime::now_utc(), &opts);
    let code = if output::success(&categories) { 0 } else { 1 };
    (output::render(&categories, args.output), code)
}

/// `weft check`: the report on stdout (a usage error on stderr).
pub fn main(args: CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weft check: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (report, code) = runtime.block_on(run(&args));
    if code == 2 {
        eprint!("{report}");
    } else {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(report.as_bytes());
        let _ = out.flush();
    }
    ExitCode::from(code)
}
