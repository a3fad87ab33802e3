//! Prometheus metrics with Linkerd-compatible names and labels, so existing Grafana
//! dashboards and PodMonitors keep working: `request_total`, `response_total`,
//! `response_latency_ms`, `tcp_open_total`, `tcp_open_connections`, `tcp_read_bytes_total`,
//! `tcp_write_bytes_total`, `tcp_close_total`, plus `tcp_detect_total` and process metrics.
//!
//! Label cardinality is bounded: each direction keeps at most `max_target_labels` distinct
//! `target_addr` values (authorities likewise); later ones are counted under `overflow`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Linkerd's `response_latency_ms` buckets.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// The value folded labels take once the budget is spent.
pub const OVERFLOW: &str = "overflow";

/// The `tls` label of a connection: Linkerd's `tls="true"` with `client_id` (inbound) or
/// `server_id` (outbound), else `tls="no_identity"`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum TlsLabels {
    NoIdentity,
    /// Inbound mTLS: the client's verified identity.
    Client(String),
    /// Outbound mTLS: the server's verified identity.
    Server(String),
}

impl EncodeLabelSet for TlsLabels {
    fn encode(&self, mut encoder: LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            TlsLabels::NoIdentity => ("tls", "no_identity").encode(encoder.encode_label()),
            TlsLabels::Client(id) => {
                ("tls", "true").encode(encoder.encode_label())?;
                ("client_id", id.as_str()).encode(encoder.encode_label())
            }
            TlsLabels::Server(id) => {
                ("tls", "true").encode(encoder.encode_label())?;
                ("server_id", id.as_str()).encode(encoder.encode_label())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Labels shared by every HTTP metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub direction: &'static str,
    pub authority: String,
    pub target_addr: String,
    #[prometheus(flatten)]
    pub tls: TlsLabels,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub status_code: u16,
    pub classification: &'static str,
    // The derive requires the flattened set last.
    #[prometheus(flatten)]
    pub http: HttpLabels,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub status_code: u16,
    #[prometheus(flatten)]
    pub http: HttpLabels,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: &'static str,
    pub peer: &'static str,
    pub target_addr: String,
    #[prometheus(flatten)]
    pub tls: TlsLabels,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpCloseLabels {
    pub classification: &'static str,
    #[prometheus(flatten)]
    pub tcp: TcpLabels,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectLabels {
    pub direction: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    pub direction: &'static str,
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

/// Every metric the proxy exports, plus the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub request_total: Family<HttpLabels, Counter>,
    pub response_total: Family<ResponseLabels, Counter>,
    pub response_latency_ms: HistogramFamily<LatencyLabels>,
    pub tcp_open_total: Family<TcpLabels, Counter>,
    pub tcp_open_connections: Family<TcpLabels, Gauge>,
    pub tcp_read_bytes_total: Family<TcpLabels, Counter>,
    pub tcp_write_bytes_total: Family<TcpLabels, Counter>,
    pub tcp_close_total: Family<TcpCloseLabels, Counter>,
    pub tcp_detect_total: Family<DetectLabels, Counter>,
    pub identity_cert_refresh_total: Family<ResultLabels, Counter>,
    pub identity_cert_expiration_timestamp_seconds: Gauge,
    pub mesh_tls_failure_total: Family<TlsFailureLabels, Counter>,
    targets: LabelBudget,
    authorities: LabelBudget,
}

impl Metrics {
    pub fn new(max_target_labels: usize) -> Self {
        let mut registry = Registry::default();
        let request_total = Family::<HttpLabels, Counter>::default();
        let response_total = Family::<ResponseLabels, Counter>::default();
        let response_latency_ms: HistogramFamily<LatencyLabels> =
            Family::new_with_constructor(latency_histogram);
        let tcp_open_total = Family::<TcpLabels, Counter>::default();
        let tcp_open_connections = Family::<TcpLabels, Gauge>::default();
        let tcp_read_bytes_total = Family::<TcpLabels, Counter>::default();
        let tcp_write_bytes_total = Family::<TcpLabels, Counter>::default();
        let tcp_close_total = Family::<TcpCloseLabels, Counter>::default();
        let tcp_detect_total = Family::<DetectLabels, Counter>::default();
        let identity_cert_refresh_total = Family::<ResultLabels, Counter>::default();
        let identity_cert_expiration_timestamp_seconds = Gauge::default();
        let mesh_tls_failure_total = Family::<TlsFailureLabels, Counter>::default();
        registry.register("request", "HTTP requests received", request_total.clone());
        registry.register(
            "response",
            "HTTP responses sent, by status and classification",
            response_total.clone(),
        );
        registry.register(
            "response_latency_ms",
            "Time from receiving a request to its response headers, in milliseconds",
            response_latency_ms.clone(),
        );
        registry.register("tcp_open", "TCP connections opened", tcp_open_total.clone());
        registry.register(
            "tcp_open_connections",
            "TCP connections currently open",
            tcp_open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Bytes read from TCP peers",
            tcp_read_bytes_total.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to TCP peers",
            tcp_write_bytes_total.clone(),
        );
        registry.register(
            "tcp_close",
            "TCP connections closed",
            tcp_close_total.clone(),
        );
        registry.register(
            "tcp_detect",
            "Protocol detection outcomes",
            tcp_detect_total.clone(),
        );
        registry.register(
            "identity_cert_refresh",
            "Certificate requests to the controller, by result",
            identity_cert_refresh_total.clone(),
        );
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "When the current certificate expires, in seconds since the Unix epoch (0: none yet)",
            identity_cert_expiration_timestamp_seconds.clone(),
        );
        registry.register(
            "mesh_tls_failure",
            "Meshed connections whose mTLS handshake failed, by reason; no application byte passed",
            mesh_tls_failure_total.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector::new()));
        Metrics {
            registry,
            request_total,
            response_total,
            response_latency_ms,
            tcp_open_total,
            tcp_open_connections,
            tcp_read_bytes_total,
            tcp_write_bytes_total,
            tcp_close_total,
            tcp_detect_total,
            identity_cert_refresh_total,
            identity_cert_expiration_timestamp_seconds,
            mesh_tls_failure_total,
            targets: LabelBudget::new(max_target_labels),
            authorities: LabelBudget::new(max_target_labels),
        }
    }

    /// Renders everything in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    pub fn identity_refresh(&self, result: &'static str) {
        self.identity_cert_refresh_total
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn identity_expiry(&self, unix_seconds: u64) {
        self.identity_cert_expiration_timestamp_seconds
            .set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    }

    pub fn mesh_tls_failure(&self, direction: Direction, error: &crate::tls::TlsError) {
        self.mesh_tls_failure_total
            .get_or_create(&TlsFailureLabels {
                direction: direction.as_str(),
                reason: error.reason(),
            })
            .inc();
    }

    /// The `target_addr` label for an address, within the label budget.
    pub fn target_label(&self, direction: Direction, addr: SocketAddr) -> String {
        self.targets.admit(direction, addr.to_string())
    }

    /// The `authority` label for an HTTP authority, within the label budget.
    pub fn authority_label(&self, direction: Direction, authority: &str) -> String {
        self.authorities
            .admit(direction, authority.to_ascii_lowercase())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Label sets a connection keeps handles for; more (a client sending many `Host`s) are
/// still counted, through the families, just not cached.
const MAX_SERIES_PER_CONNECTION: usize = 8;
/// Status codes a label set keeps handles for; likewise.
const MAX_STATUSES_PER_SERIES: usize = 8;

/// One connection's HTTP metric handles. A request looks its label set up here (a short
/// scan comparing its authority and `tls`) instead of building owned label structs and
/// hashing them into three families: with keep-alive, the families are hashed once per
/// connection and label set, not once per request (docs/performance.md).
///
/// What is exported is unchanged: handles are the families' own metrics, created by
/// `get_or_create` at the moment they are first counted, as before.
#[derive(Debug)]
pub struct HttpSeriesCache {
    metrics: Arc<Metrics>,
    direction: Direction,
    /// The connection's `target_addr` label (already within the label budget).
    target_addr: String,
    series: Mutex<Vec<Arc<HttpSeries>>>,
}

impl HttpSeriesCache {
    pub fn new(metrics: Arc<Metrics>, direction: Direction, target_addr: SocketAddr) -> Self {
        let target_addr = metrics.target_label(direction, target_addr);
        HttpSeriesCache {
            metrics,
            direction,
            target_addr,
            series: Mutex::new(Vec::new()),
        }
    }

    /// The `target_addr` label of this connection.
    pub fn target_addr(&self) -> &str {
        &self.target_addr
    }

    /// The series for requests to `authority` (as the client wrote it) with `tls`.
    pub fn get(&self, authority: &str, tls: &TlsLabels) -> Arc<HttpSeries> {
        let mut cached = lock(&self.series);
        if let Some(s) = cached
            .iter()
            .find(|s| s.raw_authority == authority && s.labels.tls == *tls)
        {
            return s.clone();
        }
        let labels = HttpLabels {
            direction: self.direction.as_str(),
            authority: self.metrics.authority_label(self.direction, authority),
            target_addr: self.target_addr.clone(),
            tls: tls.clone(),
        };
        let series = Arc::new(HttpSeries {
            metrics: self.metrics.clone(),
            raw_authority: authority.to_string(),
            requests: OnceLock::new(),
            labels,
            statuses: Mutex::new(Vec::new()),
        });
        if cached.len() < MAX_SERIES_PER_CONNECTION {
            cached.push(series.clone());
        }
        series
    }
}

/// The HTTP metrics of one label set: `request_total`, and per status code
/// `response_latency_ms` and `response_total` by classification.
#[derive(Debug)]
pub struct HttpSeries {
    metrics: Arc<Metrics>,
    /// The authority as received (the label is lower-cased and budgeted).
    raw_authority: String,
    pub labels: HttpLabels,
    /// Created when first counted: a label set looked up but never counted (an outbound
    /// request is relabelled with the identity of the endpoint that answered) exports nothing.
    requests: OnceLock<Counter>,
    statuses: Mutex<Vec<StatusSeries>>,
}

#[derive(Debug)]
struct StatusSeries {
    status_code: u16,
    latency: Histogram,
    success: Option<Counter>,
    failure: Option<Counter>,
}

impl HttpSeries {
    /// The authority this series was looked up with, as the client wrote it.
    pub fn raw_authority(&self) -> &str {
        &self.raw_authority
    }

    pub fn count_request(&self) {
        self.requests
            .get_or_init(|| {
                self.metrics
                    .request_total
                    .get_or_create(&self.labels)
                    .clone()
            })
            .inc();
    }

    fn latency_labels(&self, status_code: u16) -> LatencyLabels {
        LatencyLabels {
            status_code,
            http: self.labels.clone(),
        }
    }

    fn response_labels(&self, status_code: u16, failure: bool) -> ResponseLabels {
        ResponseLabels {
            status_code,
            classification: if failure { "failure" } else { "success" },
            http: self.labels.clone(),
        }
    }

    /// Records the time to response headers, in milliseconds.
    pub fn observe_latency(&self, status_code: u16, ms: f64) {
        let mut statuses = lock(&self.statuses);
        if let Some(s) = statuses.iter().find(|s| s.status_code == status_code) {
            s.latency.observe(ms);
            return;
        }
        let latency = self
            .metrics
            .response_latency_ms
            .get_or_create(&self.latency_labels(status_code))
            .clone();
        latency.observe(ms);
        if statuses.len() < MAX_STATUSES_PER_SERIES {
            statuses.push(StatusSeries {
                status_code,
                latency,
                success: None,
                failure: None,
            });
        }
    }

    /// Counts a finished response.
    pub fn count_response(&self, status_code: u16, failure: bool) {
        let mut statuses = lock(&self.statuses);
        let Some(s) = statuses.iter_mut().find(|s| s.status_code == status_code) else {
            drop(statuses);
            self.metrics
                .response_total
                .get_or_create(&self.response_labels(status_code, failure))
                .inc();
            return;
        };
        let slot = if failure {
            &mut s.failure
        } else {
            &mut s.success
        };
        slot.get_or_insert_with(|| {
            self.metrics
                .response_total
                .get_or_create(&self.response_labels(status_code, failure))
                .clone()
        })
        .inc();
    }
}

/// Admits at most `max` distinct values per direction; the rest become [`OVERFLOW`].
#[derive(Debug)]
struct LabelBudget {
    max: usize,
    seen: Mutex<HashSet<(Direction, String)>>,
}

impl LabelBudget {
    fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn admit(&self, direction: Direction, value: String) -> String {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let key = (direction, value);
        if seen.contains(&key) {
            return key.1;
        }
        let count = seen.iter().filter(|(d, _)| *d == direction).count();
        if count >= self.max {
            return OVERFLOW.to_string();
        }
        let value = key.1.clone();
        seen.insert(key);
        value
    }
}

/// `process_*` metrics read from `/proc/self` at scrape time.
#[derive(Debug)]
struct ProcessCollector {
    start_time_seconds: f64,
}

impl ProcessCollector {
    fn new() -> Self {
        let start_time_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self { start_time_seconds }
    }
}

/// Process figures read from `/proc/self`; `None` where the kernel does not tell.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|k| k * 1024)
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        ProcessStats {
            resident_memory_bytes: kib("VmRSS:"),
            virtual_memory_bytes: kib("VmSize:"),
            open_fds,
            cpu_seconds: cpu_seconds(),
        }
    }
}

/// utime + stime from `/proc/self/stat`, assuming the usual 100 clock ticks per second.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let g = ConstGauge::new(v);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)
        };
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            self.start_time_seconds,
        )?;
        if let Some(v) = stats.resident_memory_bytes {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                v as f64,
            )?;
        }
        if let Some(v) = stats.virtual_memory_bytes {
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                v as f64,
            )?;
        }
        if let Some(v) = stats.open_fds {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                v as f64,
            )?;
        }
        if let Some(v) = stats.cpu_seconds {
            let c = ConstCounter::new(v);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_budget_folds_overflow() {
        let m = Metrics::new(2);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        assert_eq!(m.target_label(Direction::Outbound, a), "10.0.0.1:80");
        assert_eq!(m.target_label(Direction::Outbound, b), "10.0.0.2:80");
        assert_eq!(m.target_label(Direction::Outbound, c), OVERFLOW);
        assert_eq!(m.target_label(Direction::Outbound, a), "10.0.0.1:80");
        // The budget is per direction.
        assert_eq!(m.target_label(Direction::Inbound, c), "10.0.0.3:80");
    }

    #[test]
    fn series_cache_counts_like_the_families() {
        let m = Arc::new(Metrics::new(10));
        let cache = HttpSeriesCache::new(
            m.clone(),
            Direction::Inbound,
            "10.0.0.1:80".parse().unwrap(),
        );
        let tls = TlsLabels::Client("web.apps".into());
        for _ in 0..3 {
            let s = cache.get("Web.Apps:80", &tls);
            s.count_request();
            s.observe_latency(200, 2.5);
            s.count_response(200, false);
        }
        // Looked up, never counted: not exported.
        cache.get("Web.Apps:80", &TlsLabels::Server("db.apps".into()));
        let other = cache.get("Web.Apps:80", &TlsLabels::NoIdentity);
        other.count_request();
        other.observe_latency(503, 1.0);
        other.count_response(503, true);
        // More status codes than are cached still count.
        for code in 400..420 {
            other.observe_latency(code, 1.0);
            other.count_response(code, true);
        }
        let http = HttpLabels {
            direction: "inbound",
            authority: "web.apps:80".into(),
            target_addr: "10.0.0.1:80".into(),
            tls: tls.clone(),
        };
        assert_eq!(m.request_total.get_or_create(&http).get(), 3);
        let ok = ResponseLabels {
            status_code: 200,
            classification: "success",
            http: http.clone(),
        };
        assert_eq!(m.response_total.get_or_create(&ok).get(), 3);
        let failed = |code| ResponseLabels {
            status_code: code,
            classification: "failure",
            http: HttpLabels {
                tls: TlsLabels::NoIdentity,
                ..http.clone()
            },
        };
        assert_eq!(m.response_total.get_or_create(&failed(503)).get(), 1);
        assert_eq!(m.response_total.get_or_create(&failed(419)).get(), 1);
        let text = m.encode();
        // Only what was counted is exported: no zero `failure` series for the 200s.
        assert!(
            !text.contains("status_code=\"200\",classification=\"failure\"")
                && !text.contains("db.apps"),
            "{text}"
        );
        assert!(text.contains("response_latency_ms_count{status_code=\"200\",direction=\"inbound\",authority=\"web.apps:80\""), "{text}");
    }

    #[test]
    fn renders_linkerd_names() {
        let m = Metrics::new(10);
        let http = HttpLabels {
            direction: "outbound",
            authority: "web.apps:80".into(),
            target_addr: "10.0.0.1:80".into(),
            tls: TlsLabels::NoIdentity,
        };
        m.request_total.get_or_create(&http).inc();
        m.response_latency_ms
            .get_or_create(&LatencyLabels {
                http: http.clone(),
                status_code: 200,
            })
            .observe(7.0);
        let text = m.encode();
        assert!(text.contains(
            "request_total{direction=\"outbound\",authority=\"web.apps:80\",target_addr=\"10.0.0.1:80\",tls=\"no_identity\"} 1"
        ), "{text}");
        assert!(text.contains("response_latency_ms_bucket{le=\"10.0\",status_code=\"200\",direction=\"outbound\",authority=\"web.apps:80\",target_addr=\"10.0.0.1:80\",tls=\"no_identity\"} 1"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
    }
}
