//! Process exit codes shared by `weft-init` and `weft-await`.
//!
//! The values follow BSD `sysexits.h` (see `man 3 sysexits`) so that an
//! operator reading `kubectl describe pod` can tell a usage mistake from a
//! missing capability or an unavailable proxy without reading logs. The two
//! shell conventions [`CANNOT_EXECUTE`] and [`COMMAND_NOT_FOUND`] are used by
//! `weft-await` for the wrapped command, like `env(1)` and `timeout(1)` do.
//! `docs/init.md` lists which program uses which code for what.

/// Success.
pub const OK: i32 = 0;
/// `EX_USAGE`: the command line was wrong (unknown flag, bad value).
pub const USAGE: i32 = 64;
/// `EX_DATAERR`: existing iptables state that Weft will not silently change
/// (for example a foreign rule jumping into a Weft chain), or
/// `iptables-save` output that could not be understood.
pub const DATA_ERR: i32 = 65;
/// `EX_UNAVAILABLE`: a required service is unavailable — the iptables
/// binaries or the kernel's table support (`weft-init`), or the proxy never
/// became ready before `--timeout` (`weft-await`).
pub const UNAVAILABLE: i32 = 69;
/// `EX_SOFTWARE`: an internal invariant was violated (a bug in Weft).
pub const SOFTWARE: i32 = 70;
/// `EX_OSERR`: an operating-system call failed (spawning a process, waiting
/// for a child, signal handling, an iptables command failing for a reason
/// not covered by a more specific code).
pub const OS_ERR: i32 = 71;
/// `EX_NOPERM`: not permitted — typically the init container lacks the
/// `NET_ADMIN` (and, for the legacy backend, `NET_RAW`) capability.
pub const NO_PERM: i32 = 77;
/// `EX_CONFIG`: `weft-init --validate` found that the rules are installed
/// but traffic is not actually redirected.
pub const CONFIG: i32 = 78;
/// Shell convention: the wrapped command exists but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// Shell convention: the wrapped command was not found.
pub const COMMAND_NOT_FOUND: i32 = 127;
/// Offset added to a signal number when the wrapped command was killed by a
/// signal (shell convention: SIGTERM → 143).
pub const SIGNAL_BASE: i32 = 128;
