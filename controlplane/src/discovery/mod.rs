//! Discovery: what every destination address is, kept in an in-memory index that a
//! backend feeds and the destination API ([`crate::destination`]) reads.
//!
//! - [`model`]: the core's objects (workloads, services), plain data with no I/O.
//! - [`index`]: the synchronous index: apply/delete objects, look addresses up, subscribe
//!   to an address and get a watch channel shared with every other subscriber.
//! - [`split`]: traffic-split weights flattened into endpoint weights.
//! - [`file`]: the file backend — the `workloads:` / `services:` schema of the config file
//!   and the watcher that applies edits without a restart.
//! - `kubernetes` (cargo feature `kubernetes`, on by default): the Kubernetes backend —
//!   kube-rs reflectors on Namespaces, Pods, Services and EndpointSlices.
//! - [`metrics`]: reload counters and index sizes.
//!
//! The flow: backend → `Index::reset`/`apply_*` → per-address `watch::Sender<Snapshot>`
//! (only when the snapshot changed) → one destination stream per proxy, which turns
//! snapshot changes into `weft_api::destination::diff` lines. See `docs/discovery.md`.

pub mod file;
pub mod index;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod metrics;
pub mod model;
pub mod split;

use std::str::FromStr;

/// Where discovery learns about workloads and services (`--discovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The `workloads:` and `services:` of the `--config` file, watched for edits.
    File,
    /// The Kubernetes API (Services, EndpointSlices, Pods, Namespaces).
    Kubernetes,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "file" => Ok(Backend::File),
            "kubernetes" | "k8s" => Ok(Backend::Kubernetes),
            other => Err(format!(
                "unknown discovery backend {other:?}: use file (the --config file) or kubernetes"
            )),
        }
    }
}

/// argh's parser for `--discovery`.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends() {
        for (s, want) in [
            ("file", Ok(Backend::File)),
            ("kubernetes", Ok(Backend::Kubernetes)),
            ("k8s", Ok(Backend::Kubernetes)),
        ] {
            assert_eq!(parse_backend(s), want, "{s}");
        }
        let err = parse_backend("file:/etc/weft.yaml").unwrap_err();
        assert!(
            err.contains("use file (the --config file) or kubernetes"),
            "{err}"
        );
    }
}
