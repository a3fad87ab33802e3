//! The proxy's configuration: read once from `WEFT_PROXY_*` environment variables into a plain
//! struct, validated once, logged once at start.
//!
//! Nothing else in the proxy reads the environment. Tests build a [`Config`] from a map
//! through the [`Lookup`] trait instead of touching the process environment.

use crate::route::MeshEndpoint;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const ENV_INBOUND_LISTEN_ADDR: &str = "WEFT_PROXY_INBOUND_LISTEN_ADDR";
pub const ENV_OUTBOUND_LISTEN_ADDR: &str = "WEFT_PROXY_OUTBOUND_LISTEN_ADDR";
pub const ENV_ADMIN_LISTEN_ADDR: &str = "WEFT_PROXY_ADMIN_LISTEN_ADDR";
pub const ENV_OPAQUE_PORTS: &str = "WEFT_PROXY_OPAQUE_PORTS";
pub const ENV_DETECT_TIMEOUT: &str = "WEFT_PROXY_DETECT_TIMEOUT";
pub const ENV_CONNECT_TIMEOUT: &str = "WEFT_PROXY_CONNECT_TIMEOUT";
pub const ENV_HEADER_READ_TIMEOUT: &str = "WEFT_PROXY_HEADER_READ_TIMEOUT";
pub const ENV_MAX_HEADER_BYTES: &str = "WEFT_PROXY_MAX_HEADER_BYTES";
pub const ENV_MAX_CONNECTIONS: &str = "WEFT_PROXY_MAX_CONNECTIONS";
pub const ENV_MAX_TARGET_LABELS: &str = "WEFT_PROXY_MAX_TARGET_LABELS";
pub const ENV_SHUTDOWN_GRACE_PERIOD: &str = "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD";
pub const ENV_SHUTDOWN_ENDPOINT_ENABLED: &str = "WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED";
pub const ENV_INBOUND_FORWARD: &str = "WEFT_PROXY_INBOUND_FORWARD";
pub const ENV_LOG_LEVEL: &str = "WEFT_PROXY_LOG_LEVEL";
pub const ENV_WORKER_THREADS: &str = "WEFT_PROXY_WORKER_THREADS";
pub const ENV_IDENTITY_NAME: &str = "WEFT_PROXY_IDENTITY_NAME";
pub const ENV_IDENTITY_TRUST_ANCHORS: &str = "WEFT_PROXY_IDENTITY_TRUST_ANCHORS";
pub const ENV_IDENTITY_TOKEN_FILE: &str = "WEFT_PROXY_IDENTITY_TOKEN_FILE";
pub const ENV_IDENTITY_CONTROLLER_ADDR: &str = "WEFT_PROXY_IDENTITY_CONTROLLER_ADDR";
pub const ENV_IDENTITY_CONTROLLER_NAME: &str = "WEFT_PROXY_IDENTITY_CONTROLLER_NAME";
pub const ENV_MESHED_ENDPOINTS: &str = "WEFT_PROXY_MESHED_ENDPOINTS";
pub const ENV_TLS_HANDSHAKE_TIMEOUT: &str = "WEFT_PROXY_TLS_HANDSHAKE_TIMEOUT";
pub const ENV_DISCOVERY_ENABLED: &str = "WEFT_PROXY_DISCOVERY_ENABLED";
pub const ENV_INGRESS_MODE: &str = "WEFT_PROXY_INGRESS_MODE";
/// `true`: exit once the controller says every app container of this pod has finished.
pub const ENV_EXIT_WITH_WORKLOAD: &str = "WEFT_PROXY_EXIT_WITH_WORKLOAD";
/// This pod's IP (the injector sets it from the downward API).
pub const ENV_POD_IP: &str = "WEFT_PROXY_POD_IP";
pub const ENV_DISCOVERY_TIMEOUT: &str = "WEFT_PROXY_DISCOVERY_TIMEOUT";

pub const DEFAULT_INBOUND_LISTEN_ADDR: &str = "0.0.0.0:4143";
pub const DEFAULT_OUTBOUND_LISTEN_ADDR: &str = "127.0.0.1:4140";
pub const DEFAULT_ADMIN_LISTEN_ADDR: &str = "0.0.0.0:4191";
/// Server-speaks-first protocols: SMTP, submission, MySQL, Galera, PostgreSQL, Redis,
/// Elasticsearch transport, memcached. Linkerd's list, kept so its users find no surprise.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";
/// Far shorter than Linkerd's 10 s: a client that has said nothing after a second is almost
/// certainly waiting for the server to speak first.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_TARGET_LABELS: usize = 500;
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Where the inbound proxy sends accepted connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundForward {
    /// To the original destination (the pod's own IP and port): apps bound to the pod IP work.
    OriginalDst,
    /// To 127.0.0.1 on the original port, for apps that listen only on localhost.
    Localhost,
}

/// `WEFT_PROXY_IDENTITY_TRUST_ANCHORS`: a path, or the PEM text itself (what the
/// injector sets, so no ConfigMap has to exist in the pod's namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAnchorsSource {
    File(PathBuf),
    Pem(String),
}

impl TrustAnchorsSource {
    /// A value starting with `-----BEGIN` is PEM; anything else is a path.
    pub fn parse(value: &str) -> Self {
        if value.trim_start().starts_with("-----BEGIN") {
            TrustAnchorsSource::Pem(value.to_string())
        } else {
            TrustAnchorsSource::File(PathBuf::from(value))
        }
    }
}

/// Where the proxy gets its certificate. Absent: the proxy runs without identity
/// (plaintext only, ready as soon as it listens), which is only for tests and demos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// This proxy's identity, e.g. `web.apps.serviceaccount.identity.weft.cluster.local`.
    pub name: String,
    /// The trust anchors: a PEM file, or the PEM itself.
    pub trust_anchors: TrustAnchorsSource,
    /// The service-account token presented to the controller (re-read at each renewal).
    pub token_file: PathBuf,
    /// `host:port` of the controller's proxy API.
    pub controller_addr: String,
    /// The identity the controller's certificate must carry.
    pub controller_name: String,
}

/// The whole configuration of one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub inbound_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Ports whose traffic is never inspected (no protocol detection).
    pub opaque_ports: BTreeSet<u16>,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    /// A client that has not sent complete HTTP/1 headers in this time is disconnected.
    pub header_read_timeout: Duration,
    /// Largest HTTP/1 head (request line plus headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Accepted connections in flight across all listeners; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Distinct `target_addr` label values per direction before they fold into `overflow`.
    pub max_target_labels: usize,
    pub shutdown_grace_period: Duration,
    pub shutdown_endpoint_enabled: bool,
    pub inbound_forward: InboundForward,
    pub log_level: String,
    /// 1 runs a single-threaded runtime (the default, smallest footprint).
    pub worker_threads: usize,
    pub identity: Option<IdentityConfig>,
    /// Meshed endpoints known statically (an interim source until the destination API).
    pub meshed_endpoints: BTreeMap<SocketAddr, MeshEndpoint>,
    pub tls_handshake_timeout: Duration,
    /// Ask the controller (the identity controller) about destinations.
    pub discovery_enabled: bool,
    /// Route outbound HTTP requests by `weft-dst-override` / `l5d-dst-override`.
    pub ingress_mode: bool,
    /// How long a connection to a new destination waits for the controller's answer.
    pub discovery_timeout: Duration,
    /// With `WEFT_PROXY_EXIT_WITH_WORKLOAD=true`: this pod's IP, watched through the
    /// destination API until the controller says its app containers have all finished
    /// (a Job pod on a cluster without native sidecars); then the proxy drains and exits.
    pub exit_with_workload: Option<std::net::IpAddr>,
}

/// A bad configuration value; the message names the variable and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {var}={value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// Reads configuration values by name. Production uses the process environment.
pub trait Lookup {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Lookup for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).map(|v| v.to_string())
    }
}

impl Default for Config {
    fn default() -> Self {
        // Parsing the empty environment cannot fail: the defaults are constants checked by a test.
        match Config::from_lookup(&HashMap::new()) {
            Ok(c) => c,
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }
}

impl Config {
    /// Reads and validates every variable; the first bad one is reported.
    pub fn from_lookup(env: &dyn Lookup) -> Result<Self, ConfigError> {
        let cfg = Config {
            inbound_addr: parse(
                env,
                ENV_INBOUND_LISTEN_ADDR,
                DEFAULT_INBOUND_LISTEN_ADDR,
                |s| s.parse::<SocketAddr>().map_err(|e| e.to_string()),
            )?,
            outbound_addr: parse(
                env,
                ENV_OUTBOUND_LISTEN_ADDR,
                DEFAULT_OUTBOUND_LISTEN_ADDR,
                |s| s.parse::<SocketAddr>().map_err(|e| e.to_string()),
            )?,
            admin_addr: parse(env, ENV_ADMIN_LISTEN_ADDR, DEFAULT_ADMIN_LISTEN_ADDR, |s| {
                s.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?,
            opaque_ports: parse(env, ENV_OPAQUE_PORTS, DEFAULT_OPAQUE_PORTS, parse_ports)?,
            detect_timeout: parse(env, ENV_DETECT_TIMEOUT, "1s", parse_duration)?,
            connect_timeout: parse(env, ENV_CONNECT_TIMEOUT, "3s", parse_duration)?,
            header_read_timeout: parse(env, ENV_HEADER_READ_TIMEOUT, "10s", parse_duration)?,
            max_header_bytes: parse(env, ENV_MAX_HEADER_BYTES, "65536", |s| {
                parse_range(s, 8192, 1 << 20)
            })?,
            max_connections: parse(env, ENV_MAX_CONNECTIONS, "4096", |s| {
                parse_range(s, 1, 1_000_000)
            })?,
            max_target_labels: parse(env, ENV_MAX_TARGET_LABELS, "500", |s| {
                parse_range(s, 1, 100_000)
            })?,
            shutdown_grace_period: parse(env, ENV_SHUTDOWN_GRACE_PERIOD, "30s", parse_duration)?,
            shutdown_endpoint_enabled: parse(
                env,
                ENV_SHUTDOWN_ENDPOINT_ENABLED,
                "false",
                parse_bool,
            )?,
            inbound_forward: parse(env, ENV_INBOUND_FORWARD, "original-dst", |s| match s {
                "original-dst" => Ok(InboundForward::OriginalDst),
                "localhost" => Ok(InboundForward::Localhost),
                _ => Err("expected original-dst or localhost".to_string()),
            })?,
            log_level: parse(env, ENV_LOG_LEVEL, DEFAULT_LOG_LEVEL, |s| {
                crate::logging::parse_filter(s).map(|_| s.to_string())
            })?,
            worker_threads: parse(env, ENV_WORKER_THREADS, "1", |s| parse_range(s, 1, 64))?,
            identity: identity_config(env)?,
            meshed_endpoints: parse(env, ENV_MESHED_ENDPOINTS, "", parse_meshed_endpoints)?,
            tls_handshake_timeout: parse(env, ENV_TLS_HANDSHAKE_TIMEOUT, "5s", parse_duration)?,
            discovery_enabled: parse(env, ENV_DISCOVERY_ENABLED, "true", parse_bool)?,
            ingress_mode: parse(env, ENV_INGRESS_MODE, "false", parse_bool)?,
            discovery_timeout: parse(env, ENV_DISCOVERY_TIMEOUT, "2s", parse_duration)?,
            exit_with_workload: exit_with_workload(env)?,
        };
        if cfg.exit_with_workload.is_some() && (cfg.identity.is_none() || !cfg.discovery_enabled) {
            return Err(ConfigError::Invalid {
                var: ENV_EXIT_WITH_WORKLOAD,
                value: "true".into(),
                reason: format!(
                    "needs the destination API: set {ENV_IDENTITY_NAME} and leave {ENV_DISCOVERY_ENABLED} on"
                ),
            });
        }
        Ok(cfg)
    }
}

fn parse<T>(
    env: &dyn Lookup,
    var: &'static str,
    default: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = env.get(var);
    let raw = value.as_deref().map(str::trim).unwrap_or(default);
    f(raw).map_err(|reason| ConfigError::Invalid {
        var,
        value: raw.to_string(),
        reason,
    })
}

fn exit_with_workload(env: &dyn Lookup) -> Result<Option<std::net::IpAddr>, ConfigError> {
    if !parse(env, ENV_EXIT_WITH_WORKLOAD, "false", parse_bool)? {
        return Ok(None);
    }
    parse(env, ENV_POD_IP, "", |s| {
        if s.is_empty() {
            return Err(format!("required when {ENV_EXIT_WITH_WORKLOAD} is true"));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Some(ip.to_canonical()))
            .map_err(|_| "not an IP address".to_string())
    })
}

fn identity_config(env: &dyn Lookup) -> Result<Option<IdentityConfig>, ConfigError> {
    let name = parse(env, ENV_IDENTITY_NAME, "", check_identity)?;
    if name.is_empty() {
        return Ok(None);
    }
    let required = |var: &'static str| -> Result<String, ConfigError> {
        parse(env, var, "", |s| {
            if s.is_empty() {
                Err(format!("required when {ENV_IDENTITY_NAME} is set"))
            } else {
                Ok(s.to_string())
            }
        })
    };
    let controller_name = required(ENV_IDENTITY_CONTROLLER_NAME)?;
    parse(env, ENV_IDENTITY_CONTROLLER_NAME, "", check_identity)?;
    Ok(Some(IdentityConfig {
        name,
        trust_anchors: TrustAnchorsSource::parse(&required(ENV_IDENTITY_TRUST_ANCHORS)?),
        token_file: PathBuf::from(required(ENV_IDENTITY_TOKEN_FILE)?),
        controller_addr: required(ENV_IDENTITY_CONTROLLER_ADDR)?,
        controller_name,
    }))
}

fn check_identity(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    weft_api::IdentityName::parse(s)
        .map(|id| id.to_string())
        .map_err(|e| e.to_string())
}

/// Parses `198.18.0.2:8080=web.apps.serviceaccount.identity.weft.cluster.local[@4143],…`.
pub fn parse_meshed_endpoints(s: &str) -> Result<BTreeMap<SocketAddr, MeshEndpoint>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (addr, rest) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not ADDR=IDENTITY[@INBOUND_PORT]"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP:port"))?;
        let (identity, inbound_port) = match rest.split_once('@') {
            Some((id, port)) => (
                id,
                port.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{port:?} is not a port"))?,
            ),
            None => (rest, crate::route::DEFAULT_INBOUND_PORT),
        };
        let identity = check_identity(identity.trim())?;
        if identity.is_empty() {
            return Err(format!("{item:?} has an empty identity"));
        }
        out.insert(
            addr,
            MeshEndpoint {
                identity,
                inbound_port,
            },
        );
    }
    Ok(out)
}

/// Parses `25,587,8000-8010`. An empty string means no ports.
pub fn parse_ports(s: &str) -> Result<BTreeSet<u16>, String> {
    let mut ports = BTreeSet::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
                Ok(n) => Ok(n),
            }
        };
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("range {item:?} is backwards"));
                }
                ports.extend(lo..=hi);
            }
            None => {
                ports.insert(port(item)?);
            }
        }
    }
    Ok(ports)
}

/// Parses `250ms`, `3s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| "missing unit (ms, s, m or h)".to_string())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number followed by ms, s, m or h".to_string())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(d)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_range(s: &str, min: usize, max: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_conventions() {
        let c = Config::default();
        assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(c.admin_addr, "0.0.0.0:4191".parse().unwrap());
        assert_eq!(
            c.opaque_ports.iter().copied().collect::<Vec<_>>(),
            vec![25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
        );
        assert_eq!(c.detect_timeout, DEFAULT_DETECT_TIMEOUT);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(c.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.max_target_labels, DEFAULT_MAX_TARGET_LABELS);
        assert_eq!(c.shutdown_grace_period, DEFAULT_SHUTDOWN_GRACE_PERIOD);
        assert!(!c.shutdown_endpoint_enabled);
        assert_eq!(c.inbound_forward, InboundForward::OriginalDst);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.worker_threads, 1);
        assert_eq!(c.identity, None);
        assert!(c.meshed_endpoints.is_empty());
        assert_eq!(c.tls_handshake_timeout, Duration::from_secs(5));
        assert!(c.discovery_enabled);
        assert!(!c.ingress_mode);
        assert_eq!(
            c.discovery_timeout,
            crate::discovery::DEFAULT_FIRST_ANSWER_TIMEOUT
        );
    }

    #[test]
    fn identity_needs_every_part() {
        let id = "web.apps.serviceaccount.identity.weft.cluster.local";
        let cp = "weft-controller.weft.serviceaccount.identity.weft.cluster.local";
        let full = HashMap::from([
            (ENV_IDENTITY_NAME, id),
            (ENV_IDENTITY_TRUST_ANCHORS, "/var/run/weft/ca.crt"),
            (ENV_IDENTITY_TOKEN_FILE, "/var/run/secrets/tokens/weft"),
            (
                ENV_IDENTITY_CONTROLLER_ADDR,
                "weft-controller.weft.svc:8086",
            ),
            (ENV_IDENTITY_CONTROLLER_NAME, cp),
        ]);
        let c = Config::from_lookup(&full).unwrap();
        assert_eq!(
            c.identity,
            Some(IdentityConfig {
                name: id.into(),
                trust_anchors: TrustAnchorsSource::File("/var/run/weft/ca.crt".into()),
                token_file: "/var/run/secrets/tokens/weft".into(),
                controller_addr: "weft-controller.weft.svc:8086".into(),
                controller_name: cp.into(),
            })
        );
        for missing in [
            ENV_IDENTITY_TRUST_ANCHORS,
            ENV_IDENTITY_TOKEN_FILE,
            ENV_IDENTITY_CONTROLLER_ADDR,
            ENV_IDENTITY_CONTROLLER_NAME,
        ] {
            let mut env = full.clone();
            env.remove(missing);
            let err = Config::from_lookup(&env).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid {missing}=\"\": required when WEFT_PROXY_IDENTITY_NAME is set")
            );
        }
        // Exiting with the workload needs the pod's IP and the destination API.
        let mut env = full.clone();
        env.insert(ENV_EXIT_WITH_WORKLOAD, "true");
        assert_eq!(
            Config::from_lookup(&env).unwrap_err().to_string(),
            "invalid WEFT_PROXY_POD_IP=\"\": required when WEFT_PROXY_EXIT_WITH_WORKLOAD is true"
        );
        env.insert(ENV_POD_IP, "198.18.0.7");
        assert_eq!(
            Config::from_lookup(&env).unwrap().exit_with_workload,
            Some("198.18.0.7".parse().unwrap())
        );
        env.insert(ENV_POD_IP, "pod-ip");
        assert_eq!(
            Config::from_lookup(&env).unwrap_err().to_string(),
            "invalid WEFT_PROXY_POD_IP=\"pod-ip\": not an IP address"
        );
        env.insert(ENV_POD_IP, "198.18.0.7");
        env.insert(ENV_DISCOVERY_ENABLED, "false");
        assert_eq!(
            Config::from_lookup(&env).unwrap_err().to_string(),
            "invalid WEFT_PROXY_EXIT_WITH_WORKLOAD=\"true\": needs the destination API: set WEFT_PROXY_IDENTITY_NAME and leave WEFT_PROXY_DISCOVERY_ENABLED on"
        );

        // Inline PEM (what the injector sets) instead of a path.
        // (Surrounding whitespace is trimmed, as for every variable.)
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let mut env = full.clone();
        env.insert(ENV_IDENTITY_TRUST_ANCHORS, pem);
        let c = Config::from_lookup(&env).unwrap();
        assert_eq!(
            c.identity.map(|i| i.trust_anchors),
            Some(TrustAnchorsSource::Pem(pem.into()))
        );
        let mut env = full.clone();
        env.insert(ENV_IDENTITY_NAME, "web.apps");
        let err = Config::from_lookup(&env).unwrap_err().to_string();
        assert!(err.starts_with("invalid WEFT_PROXY_IDENTITY_NAME=\"web.apps\": identity \"web.apps\" is not of the form"), "{err}");
    }

    #[test]
    fn meshed_endpoints() {
        let id = "web.apps.serviceaccount.identity.weft.cluster.local";
        let parsed =
            parse_meshed_endpoints(&format!("198.18.0.2:8080={id}, [2001:2::5]:80={id}@14143"))
                .unwrap();
        assert_eq!(
            parsed.into_iter().collect::<Vec<_>>(),
            vec![
                (
                    "198.18.0.2:8080".parse().unwrap(),
                    MeshEndpoint {
                        identity: id.into(),
                        inbound_port: 4143
                    }
                ),
                (
                    "[2001:2::5]:80".parse().unwrap(),
                    MeshEndpoint {
                        identity: id.into(),
                        inbound_port: 14143
                    }
                ),
            ]
        );
        for bad in [
            "198.18.0.2:8080",
            "web:80=x",
            &format!("198.18.0.2:80={id}@0"),
            "198.18.0.2:80=Bad.Name",
        ] {
            assert!(parse_meshed_endpoints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_read() {
        let env = HashMap::from([
            (ENV_OPAQUE_PORTS, "5432, 8000-8002"),
            (ENV_DETECT_TIMEOUT, "250ms"),
            (ENV_SHUTDOWN_GRACE_PERIOD, "2m"),
            (ENV_SHUTDOWN_ENDPOINT_ENABLED, "true"),
            (ENV_INBOUND_FORWARD, "localhost"),
            (ENV_WORKER_THREADS, "2"),
            (ENV_LOG_LEVEL, "warn,weft_proxy=debug"),
            (ENV_ADMIN_LISTEN_ADDR, "[::1]:9991"),
        ]);
        let c = Config::from_lookup(&env).unwrap();
        assert_eq!(
            c.opaque_ports.iter().copied().collect::<Vec<_>>(),
            vec![5432, 8000, 8001, 8002]
        );
        assert_eq!(c.detect_timeout, Duration::from_millis(250));
        assert_eq!(c.shutdown_grace_period, Duration::from_secs(120));
        assert!(c.shutdown_endpoint_enabled);
        assert_eq!(c.inbound_forward, InboundForward::Localhost);
        assert_eq!(c.worker_threads, 2);
        assert_eq!(c.log_level, "warn,weft_proxy=debug");
        assert_eq!(c.admin_addr, "[::1]:9991".parse().unwrap());
    }

    #[test]
    fn bad_values_name_the_variable_and_value() {
        let cases = [
            (
                ENV_INBOUND_LISTEN_ADDR,
                "4143",
                "invalid WEFT_PROXY_INBOUND_LISTEN_ADDR=\"4143\"",
            ),
            (ENV_OPAQUE_PORTS, "25,70000", "\"70000\" is not a port"),
            (ENV_OPAQUE_PORTS, "90-80", "range \"90-80\" is backwards"),
            (ENV_DETECT_TIMEOUT, "10", "missing unit"),
            (ENV_DETECT_TIMEOUT, "10d", "unknown unit \"d\""),
            (
                ENV_SHUTDOWN_ENDPOINT_ENABLED,
                "maybe",
                "expected true or false",
            ),
            (
                ENV_INBOUND_FORWARD,
                "pod-ip",
                "expected original-dst or localhost",
            ),
            (ENV_WORKER_THREADS, "0", "from 1 to 64"),
            (ENV_MAX_HEADER_BYTES, "100", "from 8192 to 1048576"),
            (ENV_LOG_LEVEL, "weft_proxy=loud", "WEFT_PROXY_LOG_LEVEL"),
        ];
        for (var, value, expected) in cases {
            let env = HashMap::from([(var, value)]);
            let err = Config::from_lookup(&env).unwrap_err().to_string();
            assert!(err.contains(expected), "{var}={value}: {err}");
            assert!(err.contains(var), "{err} should name {var}");
        }
    }

    #[test]
    fn durations() {
        let cases = [
            ("0ms", Some(Duration::ZERO)),
            ("1500ms", Some(Duration::from_millis(1500))),
            ("3s", Some(Duration::from_secs(3))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("", None),
            ("s", None),
            ("1.5s", None),
            ("-1s", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input).ok(), expected, "{input:?}");
        }
    }
}
