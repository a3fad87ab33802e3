//! Wire types shared by `weft-proxy` and the `weft` control plane.
//!
//! This crate stays small on purpose: no Kubernetes types and no I/O, so that the proxy can
//! depend on it without growing. Today it holds identity naming (the DNS-like name every
//! meshed workload's certificate carries) the identity API's messages and the destination API's;
//! the policy messages join it when that API lands.

pub mod certify;
pub mod destination;
pub mod identity;

pub use identity::{IdentityError, IdentityName};
