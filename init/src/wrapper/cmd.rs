//! The `weft-await` program: flags, the decision of what to do ([`plan`],
//! pure and table-tested), and the sequence that does it ([`run`]).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use argh::FromArgs;

use super::child::{self, signal_name};
use super::duration::{format_duration, parse_flag};
use super::env::{disabled_reason, Lookup};
use super::http::{self, Method};
use super::ready::{wait_ready, DEFAULT_BACKOFF};
use crate::exit;

/// The proxy's admin port.
pub const DEFAULT_PORT: u16 = 4191;
/// How long to wait for `/ready` by default (as Linkerd's injector does).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The proxy's shutdown path.
pub const SHUTDOWN_PATH: &str = "/shutdown";
/// Time allowed for the shutdown request.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait until the Weft proxy is ready, then run a command. With --shutdown,
/// supervise the command (forwarding SIGTERM, SIGINT, SIGHUP and SIGQUIT),
/// then ask the proxy to shut down, and exit with the command's status.
/// Set WEFT_AWAIT_DISABLED to any non-empty value to just run the command.
#[derive(FromArgs, Debug, Clone, PartialEq)]
pub struct AwaitArgs {
    /// proxy admin port on 127.0.0.1 (default 4191)
    #[argh(option, default = "DEFAULT_PORT")]
    pub port: u16,

    /// give up waiting for /ready after this long, e.g. 500ms, 30s, 2m, 1h (default 2m)
    #[argh(option, default = "DEFAULT_TIMEOUT", from_str_fn(parse_flag))]
    pub timeout: Duration,

    /// after the command exits, POST /shutdown to the proxy admin port
    #[argh(switch)]
    pub shutdown: bool,

    /// the command to run and its arguments (put them after --)
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

/// Every option of [`AwaitArgs`] that takes a value, so `--name=value` is
/// accepted too (see [`crate::cli::split_equals`]).
pub const VALUE_OPTIONS: &[&str] = &["--port", "--timeout"];

/// How the command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// No command: only wait.
    Nothing,
    /// Replace this process with the command (nothing left to supervise).
    Exec,
    /// Run it as a child, forward signals, and continue afterwards.
    Supervise,
}

/// What `weft-await` will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Poll `/ready` first.
    pub wait: bool,
    /// How the command runs.
    pub run: RunMode,
    /// POST `/shutdown` at the end.
    pub shutdown: bool,
    /// Why waiting is disabled, if it is.
    pub disabled: Option<String>,
}

/// Flags that make no sense together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    /// `--shutdown` without a command.
    #[error("--shutdown needs a command to run: weft-await --shutdown -- CMD [ARGS...]")]
    ShutdownWithoutCommand,
}

/// Decides what to do. Pure.
pub fn plan(args: &AwaitArgs, disabled: Option<String>) -> Result<Plan, UsageError> {
    let has_command = !args.command.is_empty();
    if args.shutdown && !has_command {
        return Err(UsageError::ShutdownWithoutCommand);
    }
    let run = match (has_command, args.shutdown && disabled.is_none()) {
        (false, _) => RunMode::Nothing,
        (true, false) => RunMode::Exec,
        (true, true) => RunMode::Supervise,
    };
    Ok(Plan {
        wait: disabled.is_none(),
        run,
        shutdown: args.shutdown && disabled.is_none(),
        disabled,
    })
}

/// Runs `weft-await` and returns the process exit code. Progress and errors
/// go to `log`. In [`RunMode::Exec`] this only returns if `exec` fails.
pub fn run(args: &AwaitArgs, env: &dyn Lookup, log: &mut dyn Write) -> i32 {
    let plan = match plan(args, disabled_reason(env)) {
        Ok(plan) => plan,
        Err(error) => {
            let _ = writeln!(log, "weft-await: error: {error}");
            return exit::USAGE;
        }
    };
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));

    if let Some(reason) = &plan.disabled {
        let _ = writeln!(
            log,
            "weft-await: {reason}: not waiting for the proxy and not shutting it down"
        );
    }
    if plan.wait {
        match wait_ready(admin, args.timeout, DEFAULT_BACKOFF, log) {
            Ok(ready) => {
                let _ = writeln!(
                    log,
                    "weft-await: proxy ready after {} ({} attempt{})",
                    format_duration(Duration::from_millis(
                        u64::try_from(ready.waited.as_millis()).unwrap_or(u64::MAX)
                    )),
                    ready.attempts,
                    if ready.attempts == 1 { "" } else { "s" }
                );
            }
            Err(error) => {
                let _ = writeln!(log, "weft-await: error: {error}; not running the command");
                if plan.shutdown {
                    shutdown(admin, log);
                }
                return exit::UNAVAILABLE;
            }
        }
    }

    let code = match plan.run {
        RunMode::Nothing => exit::OK,
        RunMode::Exec => {
            let error = child::exec(&args.command);
            let _ = writeln!(log, "weft-await: error: {error}");
            error.exit_code()
        }
        RunMode::Supervise => {
            let mut forwarded = |signal| {
                let _ = writeln!(
                    log,
                    "weft-await: forwarded {} to the command",
                    signal_name(signal)
                );
            };
            match child::run_forwarding(&args.command, &mut forwarded) {
                Ok(status) => status.exit_code(),
                Err(error) => {
                    let _ = writeln!(log, "weft-await: error: {error}");
                    error.exit_code()
                }
            }
        }
    };

    if plan.shutdown {
        shutdown(admin, log);
    }
    code
}

/// Asks the proxy to shut down. Failure is reported, not fatal: the exit
/// code stays the command's.
fn shutdown(admin: SocketAddr, log: &mut dyn Write) {
    let message = match http::request(admin, Method::Post, SHUTDOWN_PATH, SHUTDOWN_TIMEOUT) {
        Ok(status) if status.is_success() => "asked the proxy to shut down".to_owned(),
        Ok(status) => format!(
            "warning: the proxy answered HTTP {} {} to POST {SHUTDOWN_PATH}; is its shutdown endpoint enabled?",
            status.code, status.reason
        ),
        Err(error) => format!("warning: could not ask the proxy to shut down: {error}"),
    };
    let _ = writeln!(log, "weft-await: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Parsed};
    use std::collections::HashMap;

    fn args(argv: &[&str]) -> Result<AwaitArgs, (String, i32)> {
        let argv: Vec<String> = std::iter::once("weft-await")
            .chain(argv.iter().copied())
            .map(str::to_owned)
            .collect();
        match parse::<AwaitArgs>(&argv) {
            Parsed::Run(args) => Ok(args),
            Parsed::Exit { output, code } => Err((output, code)),
        }
    }

    #[test]
    fn flags_table() {
        let parsed = args(&[]).expect("no flags");
        assert_eq!(
            parsed,
            AwaitArgs {
                port: 4191,
                timeout: Duration::from_secs(120),
                shutdown: false,
                command: vec![],
            }
        );
        let parsed = args(&[
            "--port",
            "9991",
            "--timeout",
            "300ms",
            "--shutdown",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .expect("valid");
        assert_eq!(parsed.port, 9991);
        assert_eq!(parsed.timeout, Duration::from_millis(300));
        assert!(parsed.shutdown);
        assert_eq!(parsed.command, ["sh", "-c", "exit 7"]);
        // Without `--`, everything from the first positional on is the command.
        let parsed = args(&["sh", "-c", "--timeout"]).expect("valid");
        assert_eq!(parsed.command, ["sh", "-c", "--timeout"]);
        assert_eq!(parsed.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn value_options_match_the_flags() {
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
    fn equals_form_is_accepted_before_the_command_only() {
        let argv: Vec<String> = [
            "weft-await",
            "--timeout=2m",
            "--port=9991",
            "--",
            "job",
            "--port=1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        match parse::<AwaitArgs>(&crate::cli::split_equals(&argv, VALUE_OPTIONS)) {
            Parsed::Run(parsed) => {
                assert_eq!(parsed.timeout, Duration::from_secs(120));
                assert_eq!(parsed.port, 9991);
                assert_eq!(parsed.command, ["job", "--port=1"]);
            }
            Parsed::Exit { output, .. } => panic!("{output}"),
        }
    }

    #[test]
    fn bad_flags_table() {
        let cases: &[(&[&str], &str)] = &[
            (&["--timeout", "5"], "has no unit"),
            (&["--timeout", "2d"], "unknown unit"),
            (&["--port", "65536"], "--port"),
            (&["--bogus"], "--bogus"),
        ];
        for (argv, needle) in cases {
            let (output, code) = args(argv).expect_err("rejected");
            assert_eq!(code, exit::USAGE, "{argv:?}");
            assert!(output.contains(needle), "{argv:?}: {output}");
        }
    }

    #[test]
    fn plan_table() {
        let disabled = || Some("WEFT_AWAIT_DISABLED=1".to_owned());
        type Case = (
            &'static [&'static str],
            Option<String>,
            Result<Plan, UsageError>,
        );
        let cases: Vec<Case> = vec![
            (
                &[],
                None,
                Ok(Plan {
                    wait: true,
                    run: RunMode::Nothing,
                    shutdown: false,
                    disabled: None,
                }),
            ),
            (
                &["--", "job"],
                None,
                Ok(Plan {
                    wait: true,
                    run: RunMode::Exec,
                    shutdown: false,
                    disabled: None,
                }),
            ),
            (
                &["--shutdown", "--", "job"],
                None,
                Ok(Plan {
                    wait: true,
                    run: RunMode::Supervise,
                    shutdown: true,
                    disabled: None,
                }),
            ),
            (
                &["--shutdown"],
                None,
                Err(UsageError::ShutdownWithoutCommand),
            ),
            (
                &["--shutdown"],
                disabled(),
                Err(UsageError::ShutdownWithoutCommand),
            ),
            (
                &["--shutdown", "--", "job"],
                disabled(),
                Ok(Plan {
                    wait: false,
                    run: RunMode::Exec,
                    shutdown: false,
                    disabled: disabled(),
                }),
            ),
            (
                &["--", "job"],
                disabled(),
                Ok(Plan {
                    wait: false,
                    run: RunMode::Exec,
                    shutdown: false,
                    disabled: disabled(),
                }),
            ),
            (
                &[],
                disabled(),
                Ok(Plan {
                    wait: false,
                    run: RunMode::Nothing,
                    shutdown: false,
                    disabled: disabled(),
                }),
            ),
        ];
        for (argv, reason, want) in cases {
            let parsed = args(argv).expect("valid flags");
            assert_eq!(plan(&parsed, reason.clone()), want, "{argv:?} {reason:?}");
        }
    }

    #[test]
    fn usage_error_exits_64_without_waiting() {
        let parsed = args(&["--shutdown"]).expect("valid flags");
        let mut log = Vec::new();
        let env: HashMap<&str, &str> = HashMap::new();
        assert_eq!(run(&parsed, &env, &mut log), exit::USAGE);
        let log = String::from_utf8(log).expect("utf-8");
        assert!(log.contains("--shutdown needs a command"), "{log}");
    }

    #[test]
    fn disabled_without_command_exits_zero_immediately() {
        // Port 1 is never the proxy; if run() tried to wait it would time out.
        let parsed = args(&["--port", "1", "--timeout", "10ms"]).expect("valid flags");
        let env: HashMap<&str, &str> = [("WEFT_AWAIT_DISABLED", "yes")].into_iter().collect();
        let mut log = Vec::new();
        assert_eq!(run(&parsed, &env, &mut log), exit::OK);
        let log = String::from_utf8(log).expect("utf-8");
        assert!(log.contains("WEFT_AWAIT_DISABLED=yes"), "{log}");
    }

    #[test]
    fn timeout_without_command_exits_unavailable() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let parsed = args(&["--port", &port.to_string(), "--timeout", "100ms"]).expect("valid");
        let env: HashMap<&str, &str> = HashMap::new();
        let mut log = Vec::new();
        assert_eq!(run(&parsed, &env, &mut log), exit::UNAVAILABLE);
        let log = String::from_utf8(log).expect("utf-8");
        assert!(log.contains("not ready after 100ms"), "{log}");
    }
}
