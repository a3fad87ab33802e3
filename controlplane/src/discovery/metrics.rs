//! Discovery's metrics, in Prometheus text format: config reloads, and the size of the
//! index (read from it when rendered).

use super::index::SharedIndex;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct DiscoveryMetrics {
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload: AtomicI64,
}

impl DiscoveryMetrics {
    /// Counts a configuration applied at `unix` (seconds), at start or on an edit.
    pub fn reloaded(&self, unix: i64) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.last_reload.store(unix, Ordering::Relaxed);
    }

    /// Counts an edit that was refused.
    pub fn reload_failed(&self) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the metrics; the gauges come from `index`.
    pub fn render(&self, index: &SharedIndex, out: &mut String) -> std::fmt::Result {
        let (workloads, services) = {
            let index = index.lock();
            (index.workload_count(), index.service_count())
        };
        writeln!(
            out,
            "# HELP discovery_config_reloads_total Configurations loaded from the config file, by result (ok includes the one at start)."
        )?;
        writeln!(out, "# TYPE discovery_config_reloads_total counter")?;
        writeln!(
            out,
            "discovery_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "discovery_config_reloads_total{{result=\"error\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "# HELP discovery_config_last_reload_success_timestamp_seconds When the configuration in force was loaded (Unix time)."
        )?;
        writeln!(
            out,
            "# TYPE discovery_config_last_reload_success_timestamp_seconds gauge"
        )?;
        writeln!(
            out,
            "discovery_config_last_reload_success_timestamp_seconds {}",
            self.last_reload.load(Ordering::Relaxed)
        )?;
        for (name, help, v) in [
            ("discovery_workloads", "Workloads in the index.", workloads),
            ("discovery_services", "Services in the index.", services),
        ] {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} gauge")?;
            writeln!(out, "{name} {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::index::tests::{config, service, workload};
    use crate::discovery::index::Index;
    use crate::discovery::model::State;

    #[test]
    fn renders() {
        let index = SharedIndex::new(Index::new(config()));
        index.lock().reset(State {
            workloads: vec![workload("apps", "web-1", &["198.18.0.1"], "web")],
            services: vec![
                service("apps", "web", &["198.19.0.1"], 80, 8080),
                service("apps", "db", &[], 80, 8080),
            ],
        });
        let m = DiscoveryMetrics::default();
        m.reloaded(1_800_000_000);
        m.reload_failed();
        m.reload_failed();
        let mut out = String::new();
        m.render(&index, &mut out).unwrap();
        for line in [
            "discovery_config_reloads_total{result=\"ok\"} 1",
            "discovery_config_reloads_total{result=\"error\"} 2",
            "discovery_config_last_reload_success_timestamp_seconds 1800000000",
            "discovery_workloads 1",
            "discovery_services 2",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
