//! The destination API: proxies ask what an address is and get a stream of answers.
//!
//! - [`server`]: `GET /weft.destination.v1/get?addr=IP:PORT` on the controller's proxy API
//!   (the same HTTP/2 + TLS listener as the identity API): checks the request, subscribes
//!   to the discovery index, and streams newline-delimited JSON updates — a snapshot first,
//!   then diffs — until the proxy goes away or the controller shuts down.
//! - [`metrics`]: open streams, updates sent, refused requests.
//!
//! The wire types and `diff` are `weft_api::destination`'s; the data comes from
//! [`crate::discovery`]. See `docs/discovery.md`.

pub mod metrics;
pub mod server;
