//! Golden metrics from proxies' `/metrics` pages: success rate, requests, latency
//! quantiles per pod, and the edges between identities. Parsing and arithmetic only, so
//! everything here is tested on fixed pages.

use serde::Serialize;
use std::collections::BTreeMap;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus/OpenMetrics text page (comments skipped; a
/// malformed line is skipped, never fatal).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"")?;
                let end = after.find('"')?;
                labels.insert(
                    key.trim_start_matches(',').to_string(),
                    after[..end].to_string(),
                );
                rest = after[end + 1..].trim_start_matches(',');
            }
            (name.to_string(), labels)
        }
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Golden metrics of one direction of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Golden {
    pub requests: u64,
    pub success_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub tcp_connections: u64,
}

fn matches(s: &Sample, name: &str, want: &[(&str, &str)]) -> bool {
    s.name == name
        && want
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
}

fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| matches(s, name, want))
        .map(|s| s.value)
        .sum()
}

/// Quantile `q` from cumulative buckets (upper bound, count), interpolated linearly inside
/// the bucket as Prometheus's `histogram_quantile` does.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, count);
    }
    prev.0
}

impl Golden {
    pub fn from_samples(samples: &[Sample], direction: &str) -> Golden {
        let dir = [("direction", direction)];
        let ok = sum(
            samples,
            "response_total",
            &[("direction", direction), ("classification", "success")],
        );
        let all = sum(samples, "response_total", &dir);
        let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| matches(s, "response_latency_ms_bucket", &dir))
        {
            let le = match s.labels.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(v) => v.parse().unwrap_or(f64::INFINITY),
                None => continue,
            };
            *buckets.entry(le.to_bits()).or_default() += s.value;
        }
        let mut b: Vec<(f64, f64)> = buckets
            .into_iter()
            .map(|(k, v)| (f64::from_bits(k), v))
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        Golden {
            requests: sum(samples, "request_total", &dir) as u64,
            success_rate: if all > 0.0 { ok / all } else { 0.0 },
            p50_ms: quantile(&b, 0.5),
            p95_ms: quantile(&b, 0.95),
            p99_ms: quantile(&b, 0.99),
            tcp_connections: sum(samples, "tcp_open_total", &dir) as u64,
        }
    }
}

/// Meshed traffic into a proxy: client identity → (requests, TCP connections).
pub fn inbound_edges(samples: &[Sample]) -> BTreeMap<String, (u64, u64)> {
    let mut edges: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for s in samples {
        let Some(client) = s.labels.get("client_id") else {
            continue;
        };
        if s.labels.get("direction").map(String::as_str) != Some("inbound") {
            continue;
        }
        let e = edges.entry(client.clone()).or_default();
        match s.name.as_str() {
            "request_total" => e.0 += s.value as u64,
            "tcp_open_total" => e.1 += s.value as u64,
            _ => {}
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE request counter
request_total{direction=\"inbound\",authority=\"web\",target_addr=\"198.18.0.11:8080\",tls=\"true\",client_id=\"load.apps.serviceaccount.identity.weft.cluster.local\"} 40
request_total{direction=\"outbound\",authority=\"x\",target_addr=\"y\",tls=\"no_identity\"} 5
response_total{status_code=\"200\",classification=\"success\",direction=\"inbound\"} 38
response_total{status_code=\"503\",classification=\"failure\",direction=\"inbound\"} 2
response_latency_ms_bucket{le=\"1.0\",status_code=\"200\",direction=\"inbound\"} 10
response_latency_ms_bucket{le=\"2.0\",status_code=\"200\",direction=\"inbound\"} 30
response_latency_ms_bucket{le=\"+Inf\",status_code=\"200\",direction=\"inbound\"} 38
response_latency_ms_bucket{le=\"1.0\",status_code=\"503\",direction=\"inbound\"} 2
response_latency_ms_bucket{le=\"2.0\",status_code=\"503\",direction=\"inbound\"} 2
response_latency_ms_bucket{le=\"+Inf\",status_code=\"503\",direction=\"inbound\"} 2
tcp_open_total{direction=\"inbound\",peer=\"src\",target_addr=\"198.18.0.11:8080\",tls=\"true\",client_id=\"load.apps.serviceaccount.identity.weft.cluster.local\"} 3
garbage line without value
";

    #[test]
    fn parses_labels_and_values() {
        let s = parse("a_total{x=\"1\",y=\"two words\"} 3\nb 4.5\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["y"], "two words");
        assert_eq!(
            (s[0].value, s[1].name.as_str(), s[1].value),
            (3.0, "b", 4.5)
        );
    }

    #[test]
    fn golden_from_a_page() {
        let g = Golden::from_samples(&parse(PAGE), "inbound");
        assert_eq!(g.requests, 40);
        assert_eq!(g.success_rate, 0.95);
        assert_eq!(g.tcp_connections, 3);
        // 40 in all: rank 20 falls in (1, 2] which holds 20 of them, 12 → 1 + 8/20.
        assert!((g.p50_ms - 1.4).abs() < 1e-9, "{}", g.p50_ms);
        // rank 38 is the last in (1, 2]: 2.0; rank 39.6 is in +Inf → the last finite bound.
        assert!((g.p95_ms - 2.0).abs() < 1e-9, "{}", g.p95_ms);
        assert_eq!(g.p99_ms, 2.0);
    }

    #[test]
    fn edges_by_client_identity() {
        let e = inbound_edges(&parse(PAGE));
        assert_eq!(
            e.into_iter().collect::<Vec<_>>(),
            vec![(
                "load.apps.serviceaccount.identity.weft.cluster.local".to_string(),
                (40, 3)
            )]
        );
    }

    #[test]
    fn quantile_edges() {
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), 0.0);
        assert_eq!(quantile(&[(10.0, 4.0), (f64::INFINITY, 4.0)], 0.5), 5.0);
    }
}
