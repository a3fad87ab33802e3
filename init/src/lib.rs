//! Pod lifecycle helpers for the Weft mesh.
//!
//! This crate holds the logic of two small programs that run next to the
//! sidecar proxy; their `main`s (in `src/bin/`) only parse flags, call into
//! this library and turn the result into an exit code:
//!
//! * **`weft-init`** ([`iptables`]): the init container that installs the
//!   iptables `nat` redirect in a pod's network namespace, so that inbound
//!   TCP reaches the proxy's inbound port (4143) and outbound TCP reaches its
//!   outbound port (4140). The ruleset is computed as plain data from a
//!   [`iptables::RedirectConfig`], rendered as an `iptables-restore`
//!   document, and applied in one atomic transaction.
//! * **`weft-await`** ([`wrapper`]): the job wrapper. It waits for the
//!   proxy's `/ready`, runs a command, forwards termination signals to it,
//!   optionally posts `/shutdown` to the proxy afterwards, and exits with the
//!   command's status — so Kubernetes Jobs complete.
//!
//! Shared pieces: [`exit`] (sysexits-style exit codes) and [`cli`] (flag
//! parsing with those exit codes). User documentation is `docs/init.md`.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod exit;
pub mod iptables;
pub mod wrapper;
