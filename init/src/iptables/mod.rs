//! `weft-init`: the iptables redirect installed in a pod's network namespace.
//!
//! The flow, one module per step:
//!
//! | step | module |
//! |---|---|
//! | flags → [`RedirectConfig`] | [`cmd`], [`config`], [`ports`], [`cidr`] |
//! | config → chains and rules, as data | [`ruleset`] |
//! | pick nft or legacy | [`backend`] |
//! | check `NET_ADMIN`/`NET_RAW` | [`caps`] |
//! | read the `nat` table | [`save`] (parse), [`runner`] (execute) |
//! | existing state → `iptables-restore` document | [`document`] |
//! | apply atomically, read back, verify | [`apply`] |
//! | prove traffic is redirected (`--validate`) | [`validate`] |
//!
//! Everything up to the document is pure and table-tested; [`apply`] talks
//! to the system only through [`runner::Runner`].

pub mod apply;
pub mod backend;
pub mod caps;
pub mod cidr;
pub mod cmd;
pub mod config;
pub mod document;
pub mod ports;
pub mod ruleset;
pub mod runner;
pub mod save;
pub mod validate;

pub use config::{Family, RedirectConfig};
