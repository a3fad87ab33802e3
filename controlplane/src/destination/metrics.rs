//! The destination API's metrics, in Prometheus text format.

use crate::discovery::index::SharedIndex;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weft_api::destination::Update;

/// Update types, in the order they are rendered.
const UPDATE_TYPES: [&str; 4] = ["snapshot", "add", "remove", "route"];

#[derive(Debug, Default)]
pub struct DestinationMetrics {
    streams_total: AtomicU64,
    streams_active: AtomicU64,
    bad_requests: AtomicU64,
    updates: [AtomicU64; UPDATE_TYPES.len()],
}

/// Holds one open stream in the `destination_streams_active` gauge until dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<DestinationMetrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DestinationMetrics {
    /// Counts a stream opened; it counts as active until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.streams_total.fetch_add(1, Ordering::Relaxed);
        self.streams_active.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sent(&self, update: &Update) {
        let i = match update {
            Update::Snapshot(_) => 0,
            Update::Add { .. } => 1,
            Update::Remove { .. } => 2,
            Update::Route { .. } => 3,
        };
        self.updates[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn streams_active(&self) -> u64 {
        self.streams_active.load(Ordering::Relaxed)
    }

    pub fn streams_total(&self) -> u64 {
        self.streams_total.load(Ordering::Relaxed)
    }

    /// Appends the metrics; the watched-addresses gauge comes from `index`.
    pub fn render(&self, index: &SharedIndex, out: &mut String) -> std::fmt::Result {
        let watched = index.lock().watched();
        writeln!(
            out,
            "# HELP destination_streams_active Destination streams open (one per proxy and address)."
        )?;
        writeln!(out, "# TYPE destination_streams_active gauge")?;
        writeln!(out, "destination_streams_active {}", self.streams_active())?;
        writeln!(
            out,
            "# HELP destination_streams_total Destination streams opened."
        )?;
        writeln!(out, "# TYPE destination_streams_total counter")?;
        writeln!(out, "destination_streams_total {}", self.streams_total())?;
        writeln!(
            out,
            "# HELP destination_watched_addresses Distinct addresses with at least one stream; each is computed once per change, however many proxies watch it."
        )?;
        writeln!(out, "# TYPE destination_watched_addresses gauge")?;
        writeln!(out, "destination_watched_addresses {watched}")?;
        writeln!(
            out,
            "# HELP destination_updates_total Updates sent on destination streams, by type."
        )?;
        writeln!(out, "# TYPE destination_updates_total counter")?;
        for (t, n) in UPDATE_TYPES.iter().zip(&self.updates) {
            writeln!(
                out,
                "destination_updates_total{{type=\"{t}\"}} {}",
                n.load(Ordering::Relaxed)
            )?;
        }
        writeln!(
            out,
            "# HELP destination_bad_requests_total Destination requests refused (bad path, method or addr)."
        )?;
        writeln!(out, "# TYPE destination_bad_requests_total counter")?;
        writeln!(
            out,
            "destination_bad_requests_total {}",
            self.bad_requests.load(Ordering::Relaxed)
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::index::tests::config;
    use crate::discovery::index::Index;

    #[test]
    fn counts_and_renders() {
        let index = SharedIndex::new(Index::new(config()));
        let _rx = index.lock().subscribe("198.19.0.1:80".parse().unwrap());
        let m = Arc::new(DestinationMetrics::default());
        let a = m.stream_opened();
        let b = m.stream_opened();
        drop(a);
        m.bad_request();
        m.sent(&Update::Remove { addrs: vec![] });
        m.sent(&Update::Remove { addrs: vec![] });
        let mut out = String::new();
        m.render(&index, &mut out).unwrap();
        for line in [
            "destination_streams_active 1",
            "destination_streams_total 2",
            "destination_watched_addresses 1",
            "destination_updates_total{type=\"snapshot\"} 0",
            "destination_updates_total{type=\"remove\"} 2",
            "destination_bad_requests_total 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        drop(b);
        assert_eq!(m.streams_active(), 0);
    }
}
