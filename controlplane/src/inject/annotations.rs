//! The annotations the injector reads and writes, and the validation of the
//! `config.weft.dev/*` values.
//!
//! Every value is checked before anything is injected: a bad one leaves the pod alone with a
//! reason naming the annotation and the value, never a half-configured proxy.

use std::collections::BTreeMap;

/// `enabled | ingress | disabled`, on the pod, its workload's template or its namespace.
pub const INJECT: &str = "weft.dev/inject";
/// Written by the webhook when it refuses a pod that asked for injection (hostNetwork,
/// invalid configuration).
pub const INJECT_SKIPPED: &str = "weft.dev/inject-skipped";
/// The proxy version that was injected.
pub const PROXY_VERSION: &str = "weft.dev/proxy-version";
/// Who injected: `weft-controller <version>` or `weft-cli <version>`.
pub const INJECTED_BY: &str = "weft.dev/injected-by";
/// `"true"` on injected pods that belong to a Job (or a CronJob's Job).
pub const JOB: &str = "weft.dev/job";

pub const SKIP_INBOUND_PORTS: &str = "config.weft.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "config.weft.dev/skip-outbound-ports";
pub const OPAQUE_PORTS: &str = "config.weft.dev/opaque-ports";
pub const PROXY_LOG_LEVEL: &str = "config.weft.dev/proxy-log-level";
pub const PROXY_CPU_REQUEST: &str = "config.weft.dev/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "config.weft.dev/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "config.weft.dev/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "config.weft.dev/proxy-memory-limit";
pub const NATIVE_SIDECAR: &str = "config.weft.dev/native-sidecar";

/// Every annotation the injector writes, which `weft uninject` removes.
pub const WRITTEN: [&str; 5] = [INJECT, INJECT_SKIPPED, PROXY_VERSION, INJECTED_BY, JOB];

/// A configuration annotation with a value the injector cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{annotation}: {value:?} {why}")]
pub struct InvalidAnnotation {
    pub annotation: &'static str,
    pub value: String,
    pub why: String,
}

/// The validated `config.weft.dev/*` values (absent ones are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Normalised port list (`22,8000-8100`), for weft-init.
    pub skip_inbound_ports: Option<String>,
    pub skip_outbound_ports: Option<String>,
    /// Replaces the proxy's default opaque ports; may be empty (no opaque ports).
    pub opaque_ports: Option<String>,
    pub log_level: Option<String>,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    pub native_sidecar: Option<bool>,
}

/// Reads and validates the configuration annotations of a pod (or pod template).
pub fn overrides(annotations: &BTreeMap<String, String>) -> Result<Overrides, InvalidAnnotation> {
    let get = |k: &str| annotations.get(k).map(|v| v.trim().to_string());
    let check = |key: &'static str,
                 f: &dyn Fn(&str) -> Result<String, String>|
     -> Result<Option<String>, InvalidAnnotation> {
        match get(key) {
            None => Ok(None),
            Some(v) => f(&v).map(Some).map_err(|why| InvalidAnnotation {
                annotation: key,
                value: v,
                why,
            }),
        }
    };
    Ok(Overrides {
        skip_inbound_ports: check(SKIP_INBOUND_PORTS, &non_empty_ports)?,
        skip_outbound_ports: check(SKIP_OUTBOUND_PORTS, &non_empty_ports)?,
        opaque_ports: check(OPAQUE_PORTS, &ports)?,
        log_level: check(PROXY_LOG_LEVEL, &log_level)?,
        cpu_request: check(PROXY_CPU_REQUEST, &quantity)?,
        cpu_limit: check(PROXY_CPU_LIMIT, &quantity)?,
        memory_request: check(PROXY_MEMORY_REQUEST, &quantity)?,
        memory_limit: check(PROXY_MEMORY_LIMIT, &quantity)?,
        native_sidecar: check(NATIVE_SIDECAR, &|s| match s {
            "true" | "false" => Ok(s.to_string()),
            _ => Err("is not true or false".to_string()),
        })?
        .map(|s| s == "true"),
    })
}

/// A port list as weft-init and the proxy take it: `25,587,8000-8100`. Returned normalised
/// (items trimmed, joined by commas).
fn ports(s: &str) -> Result<String, String> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err("has an empty item; expected ports and ranges like 25,8000-8100".to_string());
    }
    weft_proxy::config::parse_ports(s)
        .map_err(|e| format!("is not a list of ports and ranges like 25,8000-8100: {e}"))?;
    Ok(items.join(","))
}

fn non_empty_ports(s: &str) -> Result<String, String> {
    let p = ports(s)?;
    if p.is_empty() {
        return Err("is empty; remove the annotation or list ports like 22,8000-8100".into());
    }
    Ok(p)
}

fn log_level(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("is empty; expected a level such as info or warn,weft=debug".into());
    }
    weft_proxy::logging::parse_filter(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("is not a proxy log level: {e}"))
}

/// A Kubernetes resource quantity in the forms people write: `100m`, `0.5`, `64Mi`, `1G`.
/// (The exponent forms like `1e3` are refused: nobody writes them for a sidecar.)
fn quantity(s: &str) -> Result<String, String> {
    quantity_value(s)
        .map(|_| s.to_string())
        .ok_or_else(|| "is not a resource quantity such as 100m, 0.5, 64Mi or 1G".to_string())
}

/// The value of a quantity in base units (cores or bytes), for comparing requests and limits.
pub fn quantity_value(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let valid_number = !num.is_empty()
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.matches('.').count() <= 1;
    if !valid_number {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn absent_means_no_overrides() {
        assert_eq!(overrides(&BTreeMap::new()).unwrap(), Overrides::default());
    }

    #[test]
    fn valid_values_are_normalised() {
        let cases: Vec<(&str, &str, Overrides)> = vec![
            (
                SKIP_INBOUND_PORTS,
                " 22, 8000-8100 ",
                Overrides {
                    skip_inbound_ports: Some("22,8000-8100".into()),
                    ..Default::default()
                },
            ),
            (
                SKIP_OUTBOUND_PORTS,
                "443,6443",
                Overrides {
                    skip_outbound_ports: Some("443,6443".into()),
                    ..Default::default()
                },
            ),
            (
                OPAQUE_PORTS,
                "",
                Overrides {
                    opaque_ports: Some(String::new()),
                    ..Default::default()
                },
            ),
            (
                PROXY_LOG_LEVEL,
                "warn,weft_proxy=debug",
                Overrides {
                    log_level: Some("warn,weft_proxy=debug".into()),
                    ..Default::default()
                },
            ),
            (
                PROXY_CPU_LIMIT,
                "0.5",
                Overrides {
                    cpu_limit: Some("0.5".into()),
                    ..Default::default()
                },
            ),
            (
                PROXY_MEMORY_REQUEST,
                "20Mi",
                Overrides {
                    memory_request: Some("20Mi".into()),
                    ..Default::default()
                },
            ),
            (
                NATIVE_SIDECAR,
                "false",
                Overrides {
                    native_sidecar: Some(false),
                    ..Default::default()
                },
            ),
        ];
        for (k, v, want) in cases {
            assert_eq!(overrides(&with(k, v)).unwrap(), want, "{k}={v}");
        }
    }

    #[test]
    fn invalid_values_name_the_annotation_and_value() {
        let cases = [
            (SKIP_INBOUND_PORTS, "http"),
            (SKIP_INBOUND_PORTS, ""),
            (SKIP_OUTBOUND_PORTS, "443,,80"),
            (SKIP_OUTBOUND_PORTS, "70000"),
            (OPAQUE_PORTS, "9-3"),
            (PROXY_LOG_LEVEL, "weft=loud"),
            (PROXY_CPU_REQUEST, "lots"),
            (PROXY_CPU_LIMIT, "1.5.0"),
            (PROXY_MEMORY_REQUEST, "64MB"),
            (PROXY_MEMORY_LIMIT, ".5Gi"),
            (NATIVE_SIDECAR, "yes"),
        ];
        for (k, v) in cases {
            let e = overrides(&with(k, v)).unwrap_err();
            assert_eq!(e.annotation, k);
            assert_eq!(e.value, v.trim());
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{k}: {:?} ", v.trim())), "{msg}");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_value("100m"), Some(0.1));
        assert_eq!(quantity_value("1"), Some(1.0));
        assert_eq!(quantity_value("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(quantity_value("1G"), Some(1e9));
        for bad in ["", "m", "1.", "1..2", "1x", "-1", "1e3"] {
            assert_eq!(quantity_value(bad), None, "{bad}");
        }
    }
}
