//! `weft-proxy`: Weft's sidecar data plane.
//!
//! A connection's path, file by file:
//! `outbound.rs` / `inbound.rs` (accept, original destination) → `proxy.rs` (detect, route,
//! count) → `route.rs` (the decision, as data) → `http.rs` (HTTP/1, HTTP/2, upgrades) or
//! `tcp.rs` (opaque bytes). `app.rs` wires the listeners and the drain; `admin.rs` serves
//! `/live`, `/ready`, `/metrics`, `/shutdown` and `/proxy-log-level`; `config.rs` is the only
//! place that reads the environment. `identity.rs` obtains and renews the certificate;
//! `tls.rs` and `mesh.rs` make the mutual-TLS hop between two proxies. `discovery.rs`
//! asks the controller what a destination is; `balance.rs`, `retry.rs` and `upstream.rs`
//! send each request of a Service to a good endpoint.

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod detect;
pub mod discovery;
pub mod drain;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod ingress;
pub mod io;
pub mod listen;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod orig_dst;
pub mod outbound;
pub mod proxy;
pub mod retry;
pub mod route;
pub mod tcp;
pub mod tls;
pub mod upstream;

pub use app::{Addrs, App, AppError, Deps};
pub use config::Config;
pub use drain::Drained;
