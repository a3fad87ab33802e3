//! Identity: the CA in the controller that gives every proxy a short-lived certificate.
//!
//! - [`ca`]: trust anchors and the issuer (loaded from files, or generated), and leaf signing.
//! - [`tokens`]: who a token stands for: the file backend's token registry, or
//!   [`token_review`] (TokenReview against the Kubernetes API server).
//! - [`secret`]: the issuer read from a Kubernetes Secret instead of files.
//! - [`verify`]: the decision, as a pure function, table-tested.
//! - [`server`]: the certify endpoint on the controller's proxy API (HTTP/2 over TLS 1.3).
//! - [`metrics`]: counts of issued and refused certificates, expiry gauges.
//! - [`generate`]: `weft identity generate`.
//!
//! See `docs/identity.md` for the operator's view.

pub mod ca;
pub mod generate;
pub mod metrics;
#[cfg(feature = "kubernetes")]
pub mod secret;
pub mod server;
#[cfg(feature = "kubernetes")]
pub mod token_review;
pub mod tokens;
pub mod verify;
