//! Running the wrapped command: `exec` when there is nothing to supervise,
//! otherwise spawn it, forward termination signals, and reap it.
//!
//! Signal handling uses no handlers at all: before spawning, the signals to
//! forward (and `SIGCHLD`) are *blocked* in this single-threaded process and
//! then taken synchronously with `sigwait(3)`. A signal that arrives at any
//! moment after that — even between spawning and waiting — stays pending
//! until it is taken, so none is lost and there is no signal handler whose
//! async-signal-safety could be wrong. A blocked mask is inherited across
//! `fork` and `exec`, and `std::process::Command` does not reset it, so the
//! child restores the original mask itself just before `exec` (otherwise a
//! forwarded SIGTERM would stay pending in the child forever).
//!
//! Because `weft-await` may run as PID 1 of a container, the wait loop reaps
//! every exited child (`waitpid(-1)`), not only the command, so orphaned
//! grandchildren never linger as zombies.
//!
//! This is the only module of the crate with `unsafe` code: thin calls to
//! libc signal and wait functions, each with its safety argument.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use libc::c_int;

use crate::exit;

/// Signals forwarded to the command.
pub const FORWARDED: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ChildStatus {
    /// The exit code to pass on: the child's code, or 128 + the signal
    /// number when it was killed (shell convention). Pure.
    pub fn exit_code(self) -> i32 {
        match self {
            ChildStatus::Exited(code) => code,
            ChildStatus::Signaled(signal) => exit::SIGNAL_BASE + signal,
        }
    }

    /// Decodes a raw `waitpid` status; `None` for stopped/continued. Pure.
    pub fn from_wait_status(status: c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ChildStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ChildStatus::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// The command could not be run or supervised.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// No command was given.
    #[error("no command given")]
    Empty,
    /// The program does not exist.
    #[error("{program}: command not found")]
    NotFound {
        /// The program.
        program: String,
    },
    /// The program exists but cannot be executed.
    #[error("{program}: cannot execute: {source}")]
    NotExecutable {
        /// The program.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// Spawning failed for another reason.
    #[error("{program}: cannot start: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// Signal masking or waiting failed.
    #[error("supervising the command failed: {what}: {source}")]
    Supervise {
        /// The failing call.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl ChildError {
    /// The process exit code (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ChildError::Empty => exit::USAGE,
            ChildError::NotFound { .. } => exit::COMMAND_NOT_FOUND,
            ChildError::NotExecutable { .. } | ChildError::Spawn { .. } => exit::CANNOT_EXECUTE,
            ChildError::Supervise { .. } => exit::OS_ERR,
        }
    }

    /// Classifies an error from starting `program`. Pure.
    pub fn from_spawn(program: &str, source: io::Error) -> Self {
        let program = program.to_owned();
        match source.kind() {
            io::ErrorKind::NotFound => ChildError::NotFound { program },
            io::ErrorKind::PermissionDenied => ChildError::NotExecutable { program, source },
            _ => match source.raw_os_error() {
                Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
                    ChildError::NotExecutable { program, source }
                }
                _ => ChildError::Spawn { program, source },
            },
        }
    }
}

/// Replaces this process with the command. Returns only on failure.
pub fn exec(argv: &[String]) -> ChildError {
    let Some((program, args)) = argv.split_first() else {
        return ChildError::Empty;
    };
    let error = Command::new(program).args(args).exec();
    ChildError::from_spawn(program, error)
}

/// A set of signals blocked in this thread, restored on drop.
struct BlockedSignals {
    set: libc::sigset_t,
    previous: libc::sigset_t,
}

impl BlockedSignals {
    fn block(signals: &[c_int]) -> Result<Self, ChildError> {
        let fail = |what| ChildError::Supervise {
            what,
            source: io::Error::last_os_error(),
        };
        // SAFETY: `sigset_t` is a plain C struct for which all-zero bytes are
        // a valid value; it is then initialised by `sigemptyset`.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
        if unsafe { libc::sigemptyset(&mut set) } != 0 {
            return Err(fail("sigemptyset"));
        }
        for signal in signals {
            // SAFETY: `set` is initialised; `signal` is a valid signal number.
            if unsafe { libc::sigaddset(&mut set, *signal) } != 0 {
                return Err(fail("sigaddset"));
            }
        }
        // A SIGCHLD disposition of SIG_IGN (inheritable across exec) would
        // make the kernel reap the child itself and hide its exit status.
        // SAFETY: setting a signal's disposition to the default is always
        // sound; no handler function is installed.
        if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(fail("signal(SIGCHLD, SIG_DFL)"));
        }
        // SAFETY: both pointers refer to valid sigset_t values owned here.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous) };
        if rc != 0 {
            return Err(ChildError::Supervise {
                what: "pthread_sigmask",
                source: io::Error::from_raw_os_error(rc),
            });
        }
        Ok(Self { set, previous })
    }

    /// Takes the next pending signal of the set, waiting for one.
    fn wait(&self) -> Result<c_int, ChildError> {
        let mut signal: c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t and `signal` a valid
        // out-pointer.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        if rc != 0 {
            return Err(ChildError::Supervise {
                what: "sigwait",
                source: io::Error::from_raw_os_error(rc),
            });
        }
        Ok(signal)
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`; a null old-set pointer
        // is allowed.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// Reaps every exited child without blocking; returns the status of `pid`
/// if it is among them.
fn reap(pid: libc::pid_t) -> Result<Option<ChildStatus>, ChildError> {
    loop {
        let mut raw: c_int = 0;
        // SAFETY: `raw` is a valid out-pointer; WNOHANG makes this
        // non-blocking.
        let reaped = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        match reaped {
            0 => return Ok(None),
            -1 => {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ChildError::Supervise {
                    what: "waitpid",
                    source: error,
                });
            }
            other if other == pid => {
                if let Some(status) = ChildStatus::from_wait_status(raw) {
                    return Ok(Some(status));
                }
            }
            _ => {} // an orphan inherited as PID 1: reaped, keep looking
        }
    }
}

/// Runs the command as a child, forwarding [`FORWARDED`] signals to it, and
/// returns how it ended. `on_signal` is told about each forwarded signal.
///
/// Only call this from a single-threaded process (as `weft-await` is): the
/// signals are blocked in the calling thread only, so another thread could
/// consume them, and every exited child of the process is reaped.
pub fn run_forwarding(
    argv: &[String],
    on_signal: &mut dyn FnMut(c_int),
) -> Result<ChildStatus, ChildError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ChildError::Empty);
    };
    let mut watched = FORWARDED.to_vec();
    watched.push(libc::SIGCHLD);
    let blocked = BlockedSignals::block(&watched)?;
    let mut command = Command::new(program);
    command.args(args);
    let unblocked = blocked.previous;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls pthread_sigmask, which is async-signal-safe; `unblocked` is a
    // plain copied value.
    unsafe {
        command.pre_exec(move || {
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &unblocked, std::ptr::null_mut());
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(rc))
            }
        });
    }
    let child = command
        .spawn()
        .map_err(|error| ChildError::from_spawn(program, error))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| ChildError::Supervise {
        what: "child pid out of range",
        source: io::Error::from(io::ErrorKind::InvalidData),
    })?;
    loop {
        if let Some(status) = reap(pid)? {
            drop(blocked);
            return Ok(status);
        }
        let signal = blocked.wait()?;
        if signal != libc::SIGCHLD {
            // SAFETY: sending a signal to our own child's pid. The child is
            // not yet reaped (reap above did not see it), so the pid cannot
            // have been reused.
            unsafe {
                libc::kill(pid, signal);
            }
            on_signal(signal);
        }
    }
}

/// A signal's name for logs.
pub fn signal_name(signal: c_int) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        libc::SIGQUIT => "SIGQUIT".to_owned(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        let cases: &[(ChildStatus, i32)] = &[
            (ChildStatus::Exited(0), 0),
            (ChildStatus::Exited(7), 7),
            (ChildStatus::Exited(255), 255),
            (ChildStatus::Signaled(libc::SIGTERM), 143),
            (ChildStatus::Signaled(libc::SIGKILL), 137),
            (ChildStatus::Signaled(libc::SIGINT), 130),
        ];
        for (status, code) in cases {
            assert_eq!(status.exit_code(), *code, "{status:?}");
        }
    }

    #[test]
    fn wait_status_table() {
        // Linux encoding: exit code in bits 8..16; signal in the low 7 bits;
        // 0x7f in the low byte means stopped.
        let cases: &[(c_int, Option<ChildStatus>)] = &[
            (0, Some(ChildStatus::Exited(0))),
            (7 << 8, Some(ChildStatus::Exited(7))),
            (15, Some(ChildStatus::Signaled(15))),
            (9 | 0x80, Some(ChildStatus::Signaled(9))), // core dumped
            ((19 << 8) | 0x7f, None),                   // stopped
        ];
        for (raw, want) in cases {
            assert_eq!(ChildStatus::from_wait_status(*raw), *want, "{raw:#x}");
        }
    }

    #[test]
    fn spawn_error_table() {
        let cases: Vec<(io::Error, i32)> = vec![
            (
                io::Error::from(io::ErrorKind::NotFound),
                exit::COMMAND_NOT_FOUND,
            ),
            (
                io::Error::from_raw_os_error(libc::ENOENT),
                exit::COMMAND_NOT_FOUND,
            ),
            (
                io::Error::from_raw_os_error(libc::EACCES),
                exit::CANNOT_EXECUTE,
            ),
            (
                io::Error::from_raw_os_error(libc::ENOEXEC),
                exit::CANNOT_EXECUTE,
            ),
            (
                io::Error::from_raw_os_error(libc::E2BIG),
                exit::CANNOT_EXECUTE,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            assert_eq!(
                ChildError::from_spawn("job", error).exit_code(),
                code,
                "{text}"
            );
        }
        assert_eq!(ChildError::Empty.exit_code(), exit::USAGE);
        assert_eq!(
            ChildError::from_spawn("job", io::Error::from(io::ErrorKind::NotFound)).to_string(),
            "job: command not found"
        );
    }

    #[test]
    fn empty_command_is_rejected_before_touching_signals() {
        // The spawning path itself blocks process signals and reaps every
        // child, which is only sound in the single-threaded weft-await
        // process; it is tested through the real binary in tests/await.rs.
        assert!(matches!(
            run_forwarding(&[], &mut |_| {}),
            Err(ChildError::Empty)
        ));
        assert!(matches!(exec(&[]), ChildError::Empty));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(
            signal_name(libc::SIGUSR1),
            format!("signal {}", libc::SIGUSR1)
        );
    }
}
