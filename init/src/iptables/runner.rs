//! Running the iptables programs, and turning their failures into errors
//! that name the problem.
//!
//! [`Runner`] is the only place `weft-init` touches the system's iptables:
//! production uses [`SystemRunner`]; unit tests of the apply logic use a
//! scripted fake. [`classify`] maps a failed command's stderr to "not
//! permitted", "backend unavailable" or "other", table-tested against the
//! messages real iptables 1.8 prints.

use std::io::{self, Write};
use std::process::{Command, Stdio};

/// How a finished command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs a program to completion.
pub trait Runner {
    /// Runs `program args…`, feeding `stdin` if given. `Err` only when the
    /// program could not be run at all.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output>;
}

/// Runs real processes found on `PATH`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A program that exits early closes the pipe; its exit status
            // and stderr explain why, so a write error is not the story.
            if let Err(error) = pipe.write_all(input.as_bytes()) {
                if error.kind() != io::ErrorKind::BrokenPipe {
                    return Err(error);
                }
            }
        }
        let output = child.wait_with_output()?;
        Ok(Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// A failed iptables command, classified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The program is not installed.
    #[error(
        "{program} not found on PATH: the weft-init image must contain the iptables tools \
         (both the nft and legacy variants), or choose the installed one with --iptables-mode"
    )]
    NotFound {
        /// The program.
        program: String,
    },
    /// The kernel refused: the container lacks `NET_ADMIN` / `NET_RAW`.
    #[error(
        "{program} was not permitted to change the network namespace ({detail}); \
         the init container needs the NET_ADMIN and NET_RAW capabilities"
    )]
    NotPermitted {
        /// The program.
        program: String,
        /// The first line of its stderr.
        detail: String,
    },
    /// The backend cannot be used in this kernel (module missing).
    #[error(
        "{program} cannot use the kernel's nat table ({detail}); this node may not support \
         this iptables backend: try --iptables-mode nft or --iptables-mode legacy"
    )]
    Unavailable {
        /// The program.
        program: String,
        /// The first line of its stderr.
        detail: String,
    },
    /// Any other failure.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// `exit code N` or `killed by a signal`.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// The program could not be started or talked to.
    #[error("could not run {program}: {message}")]
    Io {
        /// The program.
        program: String,
        /// The OS error.
        message: String,
    },
}

/// The class of an iptables failure, decided from its stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Missing capability.
    NotPermitted,
    /// Kernel lacks support for the table/backend.
    Unavailable,
    /// Anything else.
    Other,
}

/// Classifies a failed command's stderr. Pure.
pub fn classify(stderr: &str) -> Failure {
    let text = stderr.to_ascii_lowercase();
    const NOT_PERMITTED: [&str; 3] = [
        "permission denied",
        "operation not permitted",
        "you must be root",
    ];
    const UNAVAILABLE: [&str; 6] = [
        "table does not exist",
        "can't initialize iptables table",
        "unable to initialize table",
        "protocol not supported",
        "address family not supported",
        "no such file or directory (you may need to insmod",
    ];
    if NOT_PERMITTED.iter().any(|needle| text.contains(needle)) {
        Failure::NotPermitted
    } else if UNAVAILABLE.iter().any(|needle| text.contains(needle)) {
        Failure::Unavailable
    } else {
        Failure::Other
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no error output")
        .to_owned()
}

/// Runs `program` and returns its stdout, or a classified error.
pub fn run_checked(
    runner: &dyn Runner,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CommandError> {
    let output = runner
        .run(program, args, stdin)
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => CommandError::NotFound {
                program: program.to_owned(),
            },
            io::ErrorKind::PermissionDenied => CommandError::NotPermitted {
                program: program.to_owned(),
                detail: error.to_string(),
            },
            _ => CommandError::Io {
                program: program.to_owned(),
                message: error.to_string(),
            },
        })?;
    if output.success() {
        return Ok(output.stdout);
    }
    let program = program.to_owned();
    Err(match classify(&output.stderr) {
        Failure::NotPermitted => CommandError::NotPermitted {
            program,
            detail: first_line(&output.stderr),
        },
        Failure::Unavailable => CommandError::Unavailable {
            program,
            detail: first_line(&output.stderr),
        },
        Failure::Other => CommandError::Failed {
            program,
            status: match output.code {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_owned(),
            },
            stderr: output.stderr.trim().to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_real_messages() {
        // Messages captured from iptables v1.8.9 in a fresh network namespace.
        let cases: &[(&str, Failure)] = &[
            (
                "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
                Failure::NotPermitted,
            ),
            (
                "iptables-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)",
                Failure::NotPermitted,
            ),
            (
                "Failed to list table names in /proc/net/ip_tables_names: Permission denied",
                Failure::NotPermitted,
            ),
            (
                "Fatal: can't open lock file /run/xtables.lock: Permission denied",
                Failure::NotPermitted,
            ),
            // Read-only root filesystem without a writable /run: not a
            // capability problem; the message is shown as is.
            (
                "Fatal: can't open lock file /run/xtables.lock: Read-only file system",
                Failure::Other,
            ),
            (
                "iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat'\nError occurred at line: 1",
                Failure::Unavailable,
            ),
            (
                "iptables v1.8.4 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)",
                Failure::Unavailable,
            ),
            (
                "iptables-nft-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\nError occurred at line: 4",
                Failure::Other,
            ),
            ("", Failure::Other),
        ];
        for (stderr, want) in cases {
            assert_eq!(classify(stderr), *want, "{stderr:?}");
        }
    }

    struct Fixed(io::Result<Output>);

    impl Runner for Fixed {
        fn run(&self, _: &str, _: &[&str], _: Option<&str>) -> io::Result<Output> {
            match &self.0 {
                Ok(output) => Ok(output.clone()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            }
        }
    }

    fn output(code: Option<i32>, stdout: &str, stderr: &str) -> io::Result<Output> {
        Ok(Output {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        })
    }

    #[test]
    fn run_checked_table() {
        let p = "iptables-nft-save";
        let ok = run_checked(&Fixed(output(Some(0), "*nat\n", "")), p, &[], None);
        assert_eq!(ok, Ok("*nat\n".to_owned()));
        let missing = run_checked(
            &Fixed(Err(io::Error::from(io::ErrorKind::NotFound))),
            p,
            &[],
            None,
        );
        assert_eq!(
            missing,
            Err(CommandError::NotFound {
                program: p.to_owned()
            })
        );
        let denied = run_checked(
            &Fixed(output(
                Some(4),
                "",
                "x: Permission denied (you must be root)\n",
            )),
            p,
            &[],
            None,
        );
        assert!(matches!(denied, Err(CommandError::NotPermitted { .. })));
        let other = run_checked(&Fixed(output(Some(2), "", " bad rule \n")), p, &[], None);
        assert_eq!(
            other,
            Err(CommandError::Failed {
                program: p.to_owned(),
                status: "exit code 2".to_owned(),
                stderr: "bad rule".to_owned(),
            })
        );
        let killed = run_checked(&Fixed(output(None, "", "")), p, &[], None);
        assert!(
            matches!(killed, Err(CommandError::Failed { ref status, .. }) if status == "killed by a signal")
        );
    }

    #[test]
    fn error_messages_name_the_fix() {
        let not_permitted = CommandError::NotPermitted {
            program: "iptables-nft-restore".into(),
            detail: "Permission denied".into(),
        }
        .to_string();
        assert!(not_permitted.contains("NET_ADMIN"), "{not_permitted}");
        let missing = CommandError::NotFound {
            program: "iptables-legacy-save".into(),
        }
        .to_string();
        assert!(
            missing.contains("iptables-legacy-save not found"),
            "{missing}"
        );
    }

    #[test]
    fn system_runner_runs_real_processes() {
        let out = SystemRunner
            .run("sh", &["-c", "cat; echo err >&2; exit 3"], Some("hello"))
            .expect("sh runs");
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "err\n");
        assert!(!out.success());
        let missing = SystemRunner.run("weft-no-such-program-xyz", &[], None);
        assert_eq!(
            missing.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::NotFound)
        );
    }
}
