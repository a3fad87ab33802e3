//! TLS settings shared by every server and client in the controller.

use std::sync::Arc;

/// The crypto provider: ring, as in the proxy. rustls 0.23.48 deprecates it because ring
/// has no post-quantum key exchange; Weft keeps it on purpose for now, because aws-lc-rs
/// costs 0.8–1.8 MiB more per static ARM binary (docs/benchmarks.md). Revisit with the
/// proxy.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
