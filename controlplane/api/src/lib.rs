//! Wire types shared by `weft-proxy` and the `weft` control plane.
//!
//! This crate stays small on purpose: no Kubernetes types and no I/O, so that the proxy can
//! depend on it without growing. Today it holds identity naming (the DNS-like name every
//! meshed workload's certificate carries) and the identity API's messages; the destination
//! and policy messages join it as those APIs land.

pub mod certify;
pub mod identity;

pub use identity::{IdentityError, IdentityName};
