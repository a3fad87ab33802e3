//! The file backend: `workloads:` and `services:` in the controller's YAML config file
//! (the same file as `tokens:`), checked and turned into the index's [`State`], and the
//! watcher that applies every good edit without a restart.
//!
//! The schema is documented with an example in `docs/discovery.md` and
//! `docs/examples/weft-config.yaml`. Checking happens in two layers: serde refuses what is
//! malformed (a wrong type, an unknown field — with line and column), then [`build_state`]
//! refuses what is inconsistent (a duplicate address, a split backend that does not
//! exist, …), naming the entry (`services[1] (apps/web): split[0]: …`).
//!
//! The watcher polls: every [`POLL_INTERVAL`] it compares the file's size, modification
//! time and inode with the last look, and reads it only when they moved (or while the
//! modification time is under two seconds old, for file systems with coarse timestamps);
//! content identical to the last read is ignored. New content is used only once the file
//! has stayed still for [`SETTLE`], so a file caught half-written (an in-place write
//! truncates first) is not applied; an empty file is never applied either. Polling was
//! chosen over inotify because it needs no dependency, works the same for in-place
//! writes, editors that rename, and Kubernetes ConfigMap volumes (which swap a symlink),
//! and costs one `stat` per half second; an edit lands within about 0.6 s. An edit that
//! does not load is logged with what is wrong and where, and the last good state stays in
//! force.

use super::index::{IndexConfig, SharedIndex};
use super::metrics::DiscoveryMetrics;
use super::model::{
    EndpointEntry, EndpointTarget, Members, ObjectKey, Owner, Service, ServicePort, SplitBackend,
    State, Workload, DEFAULT_INBOUND_PORT,
};
use crate::controller::config::{ConfigFileError, FileConfig};
use crate::identity::tokens::{TokenEntry, TokenRegistry, TokensError};
use crate::shutdown::ShutdownSignal;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{error, info, warn};
use weft_api::destination::{ProtocolHint, RetryOn, RouteConfig};
use weft_api::IdentityName;

/// How often the watcher looks at the file.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A file modified less than this long ago is read on every poll, in case a second edit
/// kept its size and (coarse) modification time.
pub const COARSE_MTIME: Duration = Duration::from_secs(2);
/// New content is used only if the file has not moved this long after it was read.
pub const SETTLE: Duration = Duration::from_millis(100);
/// The namespace and service account of entries that do not name one, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

// === the schema ===

/// One `workloads:` entry: a pod, or a process on a host, that may run a Weft proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_namespace")]
    pub service_account: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: Option<OwnerSpec>,
    #[serde(default = "yes")]
    pub meshed: bool,
    #[serde(default = "default_inbound_port")]
    pub inbound_port: u16,
    #[serde(default)]
    pub opaque_ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerSpec {
    pub kind: String,
    pub name: String,
}

/// One `services:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub endpoints: Option<Vec<EndpointSpec>>,
    #[serde(default)]
    pub route: RouteSpec,
    #[serde(default)]
    pub split: Vec<SplitSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<ProtocolHint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    pub address: IpAddr,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub service_port: Option<u16>,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub workload: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default)]
    pub retry_on: Vec<RetryOn>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplitSpec {
    pub service: String,
    pub weight: u32,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn default_inbound_port() -> u16 {
    DEFAULT_INBOUND_PORT
}

// === checking ===

/// An inconsistency in `workloads:` or `services:`: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SchemaError {
    /// The entry, e.g. `services[1] (apps/web): split[0]`.
    pub at: String,
    pub message: String,
}

/// Why the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Unreadable, not YAML, or not the schema (serde's message carries line and column).
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    #[error("config file {path}: {source}")]
    Tokens {
        path: PathBuf,
        #[source]
        source: TokensError,
    },
    #[error("config file {path}: {source}")]
    Schema {
        path: PathBuf,
        #[source]
        source: SchemaError,
    },
    /// An edit left the file empty (perhaps half-written); it is not applied.
    #[error("config file {path} is empty (to remove every workload and service, write `workloads: []` and `services: []`)")]
    Empty { path: PathBuf },
}

/// A file that loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub tokens: TokenRegistry,
    pub token_entries: Vec<TokenEntry>,
    pub state: State,
    pub unknown_keys: Vec<String>,
}

/// Parses and checks the whole file: tokens, workloads and services.
pub fn parse(path: &Path, text: &str, config: &IndexConfig) -> Result<Loaded, FileError> {
    let file = FileConfig::parse(text).map_err(|message| ConfigFileError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    let tokens = TokenRegistry::new(
        &file.tokens,
        &config.control_plane_namespace,
        &config.trust_domain,
    )
    .map_err(|source| FileError::Tokens {
        path: path.to_path_buf(),
        source,
    })?;
    let state = build_state(&file.workloads, &file.services, config).map_err(|source| {
        FileError::Schema {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(Loaded {
        tokens,
        token_entries: file.tokens,
        state,
        unknown_keys: file.unknown_keys,
    })
}

/// Checks `workloads:` and `services:` and builds the index's state.
pub fn build_state(
    workloads: &[WorkloadSpec],
    services: &[ServiceSpec],
    config: &IndexConfig,
) -> Result<State, SchemaError> {
    let mut state = State::default();
    let mut keys: HashMap<ObjectKey, usize> = HashMap::new();
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    for (i, w) in workloads.iter().enumerate() {
        let here = format!("workloads[{i}] ({}/{})", w.namespace, w.name);
        let err = |message: String| SchemaError {
            at: here.clone(),
            message,
        };
        check_subdomain("name", &w.name).map_err(err)?;
        check_identity(&w.service_account, &w.namespace, config).map_err(err)?;
        let key = ObjectKey::new(&w.namespace, &w.name);
        if let Some(first) = keys.insert(key.clone(), i) {
            return Err(err(format!(
                "workloads[{first}] already has this namespace and name"
            )));
        }
        let mut seen = HashSet::new();
        for ip in &w.addresses {
            let ip = ip.to_canonical();
            if !seen.insert(ip) {
                return Err(err(format!("address {ip} is listed twice")));
            }
            if let Some(other) = owners.insert(ip, here.clone()) {
                return Err(err(format!("address {ip} is already {other}'s")));
            }
        }
        if w.inbound_port == 0 {
            return Err(err("inboundPort 0 is not a port".into()));
        }
        if w.opaque_ports.contains(&0) {
            return Err(err("opaquePorts: 0 is not a port".into()));
        }
        let owner = match &w.owner {
            Some(o) => {
                if o.kind.is_empty() || !o.kind.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(err(format!(
                        "owner.kind {:?} must be a kind such as Deployment (letters and digits)",
                        o.kind
                    )));
                }
                if o.name.is_empty() {
                    return Err(err("owner.name is empty".into()));
                }
                Some(Owner {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                })
            }
            None => None,
        };
        state.workloads.push(Workload {
            key,
            service_account: w.service_account.clone(),
            addresses: w.addresses.iter().map(|ip| ip.to_canonical()).collect(),
            labels: w.labels.clone(),
            owner,
            meshed: w.meshed,
            inbound_port: w.inbound_port,
            opaque_ports: w.opaque_ports.iter().copied().collect::<BTreeSet<u16>>(),
            finished: false,
        });
    }

    let service_keys: HashMap<ObjectKey, usize> = services
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (ObjectKey::new(&s.namespace, &s.name), i))
        .collect();
    let mut vips: HashMap<SocketAddr, String> = HashMap::new();
    for (i, s) in services.iter().enumerate() {
        let here = format!("services[{i}] ({}/{})", s.namespace, s.name);
        let err = |message: String| SchemaError {
            at: here.clone(),
            message,
        };
        check_label("name", &s.name).map_err(err)?;
        check_label("namespace", &s.namespace).map_err(err)?;
        let key = ObjectKey::new(&s.namespace, &s.name);
        if let Some(first) = service_keys.get(&key).filter(|first| **first != i) {
            return Err(err(format!(
                "services[{first}] already has this namespace and name"
            )));
        }
        if s.ports.is_empty() {
            return Err(err(
                "ports: at least one port is needed ({port: 80, targetPort: 8080})".into(),
            ));
        }
        let mut ports: Vec<ServicePort> = Vec::with_capacity(s.ports.len());
        for (j, p) in s.ports.iter().enumerate() {
            if p.port == 0 || p.target_port == Some(0) {
                return Err(err(format!("ports[{j}]: 0 is not a port")));
            }
            if ports.iter().any(|q| q.port == p.port) {
                return Err(err(format!("ports[{j}]: port {} is listed twice", p.port)));
            }
            ports.push(ServicePort {
                port: p.port,
                target_port: p.target_port.unwrap_or(p.port),
                protocol: p.protocol,
            });
        }
        let mut seen = HashSet::new();
        for ip in &s.cluster_ips {
            let ip = ip.to_canonical();
            if !seen.insert(ip) {
                return Err(err(format!("clusterIPs: {ip} is listed twice")));
            }
            if let Some(owner) = owners.get(&ip) {
                return Err(err(format!(
                    "clusterIPs: {ip} is {owner}'s address; a virtual address must not be a workload's"
                )));
            }
            for p in &ports {
                let vip = SocketAddr::new(ip, p.port);
                if let Some(other) = vips.insert(vip, here.clone()) {
                    return Err(err(format!("{vip} is already {other}'s")));
                }
            }
        }
        let members = match (&s.selector, &s.endpoints) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "give either selector (workloads by label) or endpoints (a list), not both"
                        .into(),
                ))
            }
            (Some(selector), None) => {
                if selector.is_empty() {
                    return Err(err(
                        "selector is empty; it would select nothing (leave it out, or list endpoints)"
                            .into(),
                    ));
                }
                Members::Selector(selector.clone())
            }
            (None, Some(list)) => {
                Members::Explicit(explicit_endpoints(s, list, &ports, &keys, config).map_err(
                    |(at, message)| SchemaError {
                        at: format!("{here}: {at}"),
                        message,
                    },
                )?)
            }
            (None, None) => Members::Explicit(Vec::new()),
        };
        let timeout_ms = match &s.route.timeout {
            Some(t) => {
                let d = crate::duration::parse_duration(t)
                    .map_err(|e| err(format!("route.timeout: {e}")))?;
                Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            None => None,
        };
        let mut retry_on: Vec<RetryOn> = Vec::new();
        for r in &s.route.retry_on {
            if !retry_on.contains(r) {
                retry_on.push(*r);
            }
        }
        let mut split: Vec<SplitBackend> = Vec::with_capacity(s.split.len());
        for (j, b) in s.split.iter().enumerate() {
            let at = |message: String| SchemaError {
                at: format!("{here}: split[{j}]"),
                message,
            };
            let Some(&bi) = service_keys.get(&ObjectKey::new(&s.namespace, &b.service)) else {
                return Err(at(format!(
                    "no service {:?} in namespace {}",
                    b.service, s.namespace
                )));
            };
            if split.iter().any(|x| x.service == b.service) {
                return Err(at(format!("{:?} is listed twice", b.service)));
            }
            if !services[bi]
                .ports
                .iter()
                .any(|bp| ports.iter().any(|p| p.port == bp.port))
            {
                return Err(at(format!(
                    "service {:?} has none of this service's ports; a backend serves the same port numbers",
                    b.service
                )));
            }
            split.push(SplitBackend {
                service: b.service.clone(),
                weight: b.weight,
            });
        }
        if !split.is_empty() && split.iter().all(|b| b.weight == 0) {
            return Err(err(
                "split: every weight is 0; at least one backend needs a share".into(),
            ));
        }
        state.services.push(Service {
            key,
            addresses: s.cluster_ips.iter().map(|ip| ip.to_canonical()).collect(),
            ports,
            members,
            route: RouteConfig {
                retry_on,
                timeout_ms,
            },
            split,
        });
    }
    Ok(state)
}

/// `endpoints:` of one service, one entry per service port served.
fn explicit_endpoints(
    s: &ServiceSpec,
    list: &[EndpointSpec],
    ports: &[ServicePort],
    workloads: &HashMap<ObjectKey, usize>,
    config: &IndexConfig,
) -> Result<Vec<EndpointEntry>, (String, String)> {
    let mut out: Vec<EndpointEntry> = Vec::new();
    for (k, e) in list.iter().enumerate() {
        let at = format!("endpoints[{k}]");
        let fail = |message: String| (at.clone(), message);
        let target = match (&e.workload, &e.service_account) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "give workload or serviceAccount, not both (a workload has its own)".into(),
                ))
            }
            (Some(w), None) => {
                let key = ObjectKey::new(&s.namespace, w);
                if !workloads.contains_key(&key) {
                    return Err(fail(format!(
                        "workload {w:?}: no such workload in namespace {}",
                        s.namespace
                    )));
                }
                EndpointTarget::Workload(key)
            }
            (None, Some(sa)) => {
                check_identity(sa, &s.namespace, config).map_err(fail)?;
                EndpointTarget::ServiceAccount(sa.clone())
            }
            (None, None) => EndpointTarget::None,
        };
        if e.port == Some(0) {
            return Err(fail("port 0 is not a port".into()));
        }
        let served: Vec<&ServicePort> = match e.service_port {
            Some(sp) => match ports.iter().find(|p| p.port == sp) {
                Some(p) => vec![p],
                None => {
                    return Err(fail(format!(
                        "servicePort {sp} is not one of the service's ports"
                    )))
                }
            },
            None if e.port.is_some() && ports.len() > 1 => return Err(fail(
                "the service has several ports: say which one this port serves with servicePort"
                    .into(),
            )),
            None => ports.iter().collect(),
        };
        for p in served {
            let addr = SocketAddr::new(e.address.to_canonical(), e.port.unwrap_or(p.target_port));
            if out
                .iter()
                .any(|x| x.service_port == p.port && x.addr == addr)
            {
                return Err(fail(format!(
                    "{addr} is listed twice for service port {}",
                    p.port
                )));
            }
            out.push(EndpointEntry {
                service_port: p.port,
                addr,
                weight: e.weight,
                target: target.clone(),
            });
        }
    }
    Ok(out)
}

fn check_identity(sa: &str, ns: &str, config: &IndexConfig) -> Result<(), String> {
    IdentityName::new(
        sa,
        ns,
        &config.control_plane_namespace,
        &config.trust_domain,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn check_label(what: &str, value: &str) -> Result<(), String> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} is not a valid DNS-1123 label (lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit)"
        ))
    }
}

fn check_subdomain(what: &str, value: &str) -> Result<(), String> {
    if !value.is_empty() && value.len() <= 253 && value.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} is not a valid DNS-1123 name (dot-separated labels of lowercase letters, digits and '-')"
        ))
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

// === watching ===

/// What the watcher has done, for tests and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Good edits applied since start.
    pub applied: u64,
    /// Why the newest edit was not applied; `None` once a good edit is.
    pub last_error: Option<String>,
}

/// What a look at the file sees without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// Should the file be read, given the last look and this one? When anything moved, or
/// while the modification time is too recent to trust (or unknown).
pub fn needs_read(last: Option<&Stamp>, now_stamp: &Stamp, now: SystemTime) -> bool {
    if last != Some(now_stamp) {
        return true;
    }
    match now_stamp.modified {
        Some(m) => now.duration_since(m).map_or(true, |age| age < COARSE_MTIME),
        None => true,
    }
}

fn content_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The file as last read.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    stamp: Option<Stamp>,
    hash: Option<u64>,
    settle: Duration,
}

impl FileSource {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            stamp: None,
            hash: None,
            settle: SETTLE,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text when it differs from the last read and has settled; `None` when
    /// it is unchanged, or still moving (the next poll looks again).
    pub async fn poll(&mut self, now: SystemTime) -> std::io::Result<Option<String>> {
        let stamp = Stamp::of(&tokio::fs::metadata(&self.path).await?);
        if !needs_read(self.stamp.as_ref(), &stamp, now) {
            return Ok(None);
        }
        let text = tokio::fs::read_to_string(&self.path).await?;
        // The stamp taken before reading: a write that lands after it moves the stamp again.
        self.stamp = Some(stamp);
        let hash = content_hash(&text);
        if self.hash == Some(hash) {
            return Ok(None);
        }
        if !self.settle.is_zero() {
            tokio::time::sleep(self.settle).await;
            if Stamp::of(&tokio::fs::metadata(&self.path).await?) != stamp {
                return Ok(None);
            }
        }
        self.hash = Some(hash);
        Ok(Some(text))
    }
}

/// Reads and checks the file at start: any problem stops the controller.
pub async fn load(source: &mut FileSource, config: &IndexConfig) -> Result<Loaded, FileError> {
    let read_error = |source: std::io::Error, path: &Path| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = match source.poll(SystemTime::now()).await {
        Ok(Some(text)) => text,
        Ok(None) => tokio::fs::read_to_string(source.path())
            .await
            .map_err(|e| read_error(e, source.path()))?,
        Err(e) => return Err(read_error(e, source.path()).into()),
    };
    parse(source.path(), &text, config)
}

/// The watcher: applies every good edit to `index` until shutdown.
pub struct FileWatch {
    pub source: FileSource,
    pub config: IndexConfig,
    pub interval: Duration,
    pub index: SharedIndex,
    pub metrics: Arc<DiscoveryMetrics>,
    /// The tokens in force (the identity service reads them once, at start).
    pub tokens: Vec<TokenEntry>,
    pub status: watch::Sender<ReloadStatus>,
}

impl FileWatch {
    pub async fn run(mut self, mut shutdown: ShutdownSignal) {
        let mut read_error: Option<String> = None;
        let mut seen_tokens = self.tokens.clone();
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let path = self.source.path().display().to_string();
            let polled = self.source.poll(SystemTime::now()).await;
            let text = match polled {
                Ok(Some(text)) => text,
                Ok(None) => {
                    read_error = None;
                    continue;
                }
                Err(e) => {
                    let msg = e.to_string();
                    // Once per distinct problem, not every half second.
                    if read_error.as_deref() != Some(msg.as_str()) {
                        warn!("cannot read config file {path}: {msg}; keeping the last good configuration");
                        read_error = Some(msg);
                    }
                    continue;
                }
            };
            read_error = None;
            let parsed = if text.trim().is_empty() {
                Err(FileError::Empty {
                    path: self.source.path().to_path_buf(),
                })
            } else {
                parse(self.source.path(), &text, &self.config)
            };
            match parsed {
                Ok(loaded) => {
                    let (workloads, services) =
                        (loaded.state.workloads.len(), loaded.state.services.len());
                    self.index.lock().reset(loaded.state);
                    self.metrics.reloaded(unix_now());
                    self.status.send_modify(|s| {
                        s.applied += 1;
                        s.last_error = None;
                    });
                    info!(workloads, services, "config file {path}: applied the edit");
                    if loaded.token_entries != seen_tokens {
                        warn!("config file {path}: tokens changed; the identity service reads them at start, so restart the controller to apply them");
                        seen_tokens = loaded.token_entries;
                    }
                }
                Err(e) => {
                    self.metrics.reload_failed();
                    error!("{e}; keeping the last good configuration");
                    let msg = e.to_string();
                    self.status.send_modify(|s| s.last_error = Some(msg));
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::index::tests::config;
    use crate::discovery::index::Index;
    use weft_api::destination::Kind;

    const EXAMPLE: &str = include_str!("../../../docs/examples/weft-config.yaml");

    fn state(text: &str) -> Result<State, String> {
        parse(Path::new("weft.yaml"), text, &config())
            .map(|l| l.state)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_loads() {
        let loaded = parse(Path::new("weft.yaml"), EXAMPLE, &config()).unwrap();
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        assert!(!loaded.state.workloads.is_empty());
        assert!(!loaded.state.services.is_empty());
        let mut index = Index::new(config());
        index.reset(loaded.state);
        // Every service address answers as a service.
        for s in &index_services(EXAMPLE) {
            assert_eq!(index.lookup(*s).kind, Kind::Service, "{s}");
        }
    }

    fn index_services(text: &str) -> Vec<SocketAddr> {
        state(text)
            .unwrap()
            .services
            .iter()
            .flat_map(|s| {
                s.addresses
                    .iter()
                    .flat_map(|ip| s.ports.iter().map(move |p| SocketAddr::new(*ip, p.port)))
            })
            .collect()
    }

    #[test]
    fn builds_the_model_with_defaults() {
        let s = state(
            r#"
workloads:
  - name: web-1
    addresses: [198.18.0.1]
    labels: {app: web}
services:
  - name: web
    clusterIPs: [198.19.0.1]
    ports: [{port: 80}]
    selector: {app: web}
  - name: ext
    clusterIPs: [198.19.0.2]
    ports: [{port: 443, targetPort: 8443, protocol: opaque}]
    endpoints:
      - {address: 198.18.9.1}
      - {address: 198.18.9.2, port: 9443, weight: 3, serviceAccount: edge}
    route: {retryOn: [connect, 5xx, connect], timeout: 1500ms}
"#,
        )
        .unwrap();
        assert_eq!(
            s.workloads,
            vec![Workload {
                key: ObjectKey::new("default", "web-1"),
                service_account: "default".into(),
                addresses: vec!["198.18.0.1".parse().unwrap()],
                labels: BTreeMap::from([("app".into(), "web".into())]),
                owner: None,
                meshed: true,
                inbound_port: 4143,
                opaque_ports: BTreeSet::new(),
                finished: false,
            }]
        );
        assert_eq!(s.services[0].ports[0].target_port, 80);
        assert_eq!(
            s.services[1],
            Service {
                key: ObjectKey::new("default", "ext"),
                addresses: vec!["198.19.0.2".parse().unwrap()],
                ports: vec![ServicePort {
                    port: 443,
                    target_port: 8443,
                    protocol: Some(ProtocolHint::Opaque),
                }],
                members: Members::Explicit(vec![
                    EndpointEntry {
                        service_port: 443,
                        addr: "198.18.9.1:8443".parse().unwrap(),
                        weight: 1,
                        target: EndpointTarget::None,
                    },
                    EndpointEntry {
                        service_port: 443,
                        addr: "198.18.9.2:9443".parse().unwrap(),
                        weight: 3,
                        target: EndpointTarget::ServiceAccount("edge".into()),
                    },
                ]),
                route: RouteConfig {
                    retry_on: vec![RetryOn::Connect, RetryOn::ServerError],
                    timeout_ms: Some(1500),
                },
                split: vec![],
            }
        );
    }

    #[test]
    fn multi_port_endpoints() {
        let s = state(
            r#"
services:
  - name: two
    clusterIPs: [198.19.0.1]
    ports: [{port: 80, targetPort: 8080}, {port: 443, targetPort: 8443}]
    endpoints:
      - {address: 198.18.0.1}
      - {address: 198.18.0.2, servicePort: 443, port: 9443}
"#,
        )
        .unwrap();
        let Members::Explicit(entries) = &s.services[0].members else {
            panic!("explicit")
        };
        let got: Vec<(u16, String)> = entries
            .iter()
            .map(|e| (e.service_port, e.addr.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (80, "198.18.0.1:8080".to_string()),
                (443, "198.18.0.1:8443".to_string()),
                (443, "198.18.0.2:9443".to_string()),
            ]
        );
    }

    #[test]
    fn refusals_name_what_and_where() {
        let w = "workloads:\n  - {name: web-1, namespace: apps, addresses: [198.18.0.1], labels: {app: web}}\n";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "a wrong type, with its line",
                "workloads:\n  - name: web-1\n    addresses: [198.18.0.1]\n    inboundPort: lots\n"
                    .into(),
                "config file weft.yaml: workloads[0].inboundPort: invalid type: string \"lots\", expected u16 at line 4 column 18",
            ),
            (
                "a typo in a field",
                "services:\n  - name: web\n    ports: [{port: 80}]\n    selectr: {app: web}\n".into(),
                "unknown field `selectr`",
            ),
            (
                "not an address",
                "workloads:\n  - name: web-1\n    addresses: [198.18.0.300]\n".into(),
                "line 3",
            ),
            (
                "an unknown protocol",
                "services:\n  - name: web\n    ports: [{port: 80, protocol: grpc}]\n".into(),
                "unknown variant `grpc`, expected one of `opaque`, `http1`, `http2`",
            ),
            (
                "an unknown retry condition",
                "services:\n  - name: web\n    ports: [{port: 80}]\n    route: {retryOn: [4xx]}\n".into(),
                "unknown variant `4xx`, expected `connect` or `5xx`",
            ),
            (
                "a bad name",
                "workloads:\n  - {name: Web, addresses: [198.18.0.1]}\n".into(),
                "config file weft.yaml: workloads[0] (default/Web): name \"Web\" is not a valid DNS-1123 name",
            ),
            (
                "a bad service account",
                "workloads:\n  - {name: web, serviceAccount: web_sa}\n".into(),
                "workloads[0] (default/web): service account \"web_sa\" is not a valid DNS-1123 label",
            ),
            (
                "a duplicate workload",
                format!("{w}  - {{name: web-1, namespace: apps}}\n"),
                "workloads[1] (apps/web-1): workloads[0] already has this namespace and name",
            ),
            (
                "a shared address",
                format!("{w}  - {{name: web-2, namespace: apps, addresses: [198.18.0.1]}}\n"),
                "workloads[1] (apps/web-2): address 198.18.0.1 is already workloads[0] (apps/web-1)'s",
            ),
            (
                "a bad owner kind",
                "workloads:\n  - {name: web, owner: {kind: apps/v1, name: web}}\n".into(),
                "owner.kind \"apps/v1\" must be a kind such as Deployment",
            ),
            (
                "no ports",
                "services:\n  - {name: web, ports: []}\n".into(),
                "services[0] (default/web): ports: at least one port is needed",
            ),
            (
                "a duplicate port",
                "services:\n  - {name: web, ports: [{port: 80}, {port: 80, targetPort: 81}]}\n".into(),
                "services[0] (default/web): ports[1]: port 80 is listed twice",
            ),
            (
                "a duplicate service",
                "services:\n  - {name: web, ports: [{port: 80}]}\n  - {name: web, ports: [{port: 81}]}\n".into(),
                "services[1] (default/web): services[0] already has this namespace and name",
            ),
            (
                "a VIP that is a workload's address",
                format!("{w}services:\n  - {{name: web, namespace: apps, clusterIPs: [198.18.0.1], ports: [{{port: 80}}]}}\n"),
                "services[0] (apps/web): clusterIPs: 198.18.0.1 is workloads[0] (apps/web-1)'s address",
            ),
            (
                "two services on one VIP and port",
                "services:\n  - {name: a, clusterIPs: [198.19.0.1], ports: [{port: 80}]}\n  - {name: b, clusterIPs: [198.19.0.1], ports: [{port: 80}]}\n".into(),
                "services[1] (default/b): 198.19.0.1:80 is already services[0] (default/a)'s",
            ),
            (
                "selector and endpoints",
                "services:\n  - {name: web, ports: [{port: 80}], selector: {app: web}, endpoints: []}\n".into(),
                "services[0] (default/web): give either selector (workloads by label) or endpoints (a list), not both",
            ),
            (
                "an empty selector",
                "services:\n  - {name: web, ports: [{port: 80}], selector: {}}\n".into(),
                "selector is empty",
            ),
            (
                "an endpoint naming a missing workload",
                "services:\n  - {name: web, ports: [{port: 80}], endpoints: [{address: 198.18.0.1, workload: web-9}]}\n".into(),
                "services[0] (default/web): endpoints[0]: workload \"web-9\": no such workload in namespace default",
            ),
            (
                "an endpoint with both workload and serviceAccount",
                format!("{w}services:\n  - {{name: web, namespace: apps, ports: [{{port: 80}}], endpoints: [{{address: 198.18.0.1, workload: web-1, serviceAccount: web}}]}}\n"),
                "endpoints[0]: give workload or serviceAccount, not both",
            ),
            (
                "an endpoint port without servicePort on a multi-port service",
                "services:\n  - {name: web, ports: [{port: 80}, {port: 81}], endpoints: [{address: 198.18.0.1, port: 9000}]}\n".into(),
                "endpoints[0]: the service has several ports: say which one this port serves with servicePort",
            ),
            (
                "an endpoint for a port the service lacks",
                "services:\n  - {name: web, ports: [{port: 80}], endpoints: [{address: 198.18.0.1, servicePort: 81}]}\n".into(),
                "endpoints[0]: servicePort 81 is not one of the service's ports",
            ),
            (
                "a duplicate endpoint",
                "services:\n  - {name: web, ports: [{port: 80}], endpoints: [{address: 198.18.0.1}, {address: 198.18.0.1, port: 80}]}\n".into(),
                "endpoints[1]: 198.18.0.1:80 is listed twice for service port 80",
            ),
            (
                "a bad timeout",
                "services:\n  - {name: web, ports: [{port: 80}], route: {timeout: 2 seconds}}\n".into(),
                "services[0] (default/web): route.timeout: \"2 seconds\": unknown unit \" seconds\"",
            ),
            (
                "a split to a missing service",
                "services:\n  - {name: web, ports: [{port: 80}], split: [{service: web-v3, weight: 10}]}\n".into(),
                "services[0] (default/web): split[0]: no service \"web-v3\" in namespace default",
            ),
            (
                "a split listing a backend twice",
                "services:\n  - {name: web, ports: [{port: 80}], split: [{service: web, weight: 1}, {service: web, weight: 2}]}\n".into(),
                "split[1]: \"web\" is listed twice",
            ),
            (
                "a split to a backend without the port",
                "services:\n  - {name: web, ports: [{port: 80}], split: [{service: b, weight: 1}]}\n  - {name: b, ports: [{port: 81}]}\n".into(),
                "split[0]: service \"b\" has none of this service's ports",
            ),
            (
                "a split with no share",
                "services:\n  - {name: web, ports: [{port: 80}], split: [{service: web, weight: 0}]}\n".into(),
                "split: every weight is 0",
            ),
            (
                "tokens are checked too",
                "tokens:\n  - {token: a, serviceAccount: Web, namespace: apps}\n".into(),
                "config file weft.yaml: tokens[0]: service account \"Web\"",
            ),
        ];
        for (name, text, want) in cases {
            let err = state(&text).unwrap_err();
            assert!(err.contains(want), "{name}:\n  got  {err}\n  want {want}");
        }
    }

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("weft-file-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn web_file(extra_workloads: &str) -> String {
        format!(
            "services:
  - name: web
    namespace: apps
    clusterIPs: [198.19.0.10]
    ports: [{{port: 80, targetPort: 8080}}]
    selector: {{app: web}}
workloads:
  - {{name: web-1, namespace: apps, serviceAccount: web, addresses: [198.18.0.1], labels: {{app: web}}}}
{extra_workloads}"
        )
    }

    async fn wait_for_error(status: &mut watch::Receiver<ReloadStatus>, part: &str) -> String {
        let s = tokio::time::timeout(
            Duration::from_secs(1),
            status.wait_for(|s| s.last_error.as_deref().is_some_and(|e| e.contains(part))),
        )
        .await
        .unwrap_or_else(|_| panic!("no error naming {part:?} within 1s"))
        .unwrap();
        s.last_error.clone().unwrap_or_default()
    }

    #[tokio::test]
    async fn edits_apply_within_a_second_and_bad_edits_keep_the_last_state() {
        let dir = TempDir::new("watch");
        let path = dir.0.join("weft.yaml");
        std::fs::write(&path, web_file("")).unwrap();
        let mut source = FileSource::new(&path);
        let loaded = load(&mut source, &config()).await.unwrap();
        let index = SharedIndex::new(Index::new(config()));
        index.lock().reset(loaded.state);
        let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
        let mut rx = index.lock().subscribe(vip);
        let addrs = |s: &weft_api::destination::Snapshot| -> Vec<String> {
            s.endpoints.iter().map(|e| e.addr.to_string()).collect()
        };
        assert_eq!(addrs(&rx.borrow()), ["198.18.0.1:8080"]);

        let shutdown = crate::shutdown::Shutdown::new();
        let (status_tx, mut status) = watch::channel(ReloadStatus::default());
        let metrics = Arc::new(DiscoveryMetrics::default());
        let task = tokio::spawn(
            FileWatch {
                source,
                config: config(),
                interval: POLL_INTERVAL,
                index: index.clone(),
                metrics: metrics.clone(),
                tokens: vec![],
                status: status_tx,
            }
            .run(shutdown.signal()),
        );

        // A good edit, written in place: subscribers see it within a second.
        let started = std::time::Instant::now();
        std::fs::write(
            &path,
            web_file("  - {name: web-2, namespace: apps, serviceAccount: web, addresses: [198.18.0.2], labels: {app: web}}\n"),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("the edit reaches subscribers within 1s")
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(
            addrs(&rx.borrow_and_update()),
            ["198.18.0.1:8080", "198.18.0.2:8080"]
        );
        assert_eq!(status.borrow().applied, 1);
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

        // A bad edit: the error names the entry, the line and the column; nothing changes.
        std::fs::write(&path, web_file("  - name: web-3\n    inboundPort: lots\n")).unwrap();
        let err = wait_for_error(&mut status, "inboundPort").await;
        assert_eq!(
            err,
            format!(
                "config file {}: workloads[1].inboundPort: invalid type: string \"lots\", expected u16 at line 10 column 18",
                path.display()
            )
        );
        // An inconsistent edit is named by its entry.
        std::fs::write(
            &path,
            web_file("  - {name: web-1, namespace: apps, addresses: [198.18.0.9]}\n"),
        )
        .unwrap();
        let err = wait_for_error(&mut status, "already").await;
        assert!(
            err.ends_with(
                "workloads[1] (apps/web-1): workloads[0] already has this namespace and name"
            ),
            "{err}"
        );
        // An empty file is not applied either.
        std::fs::write(&path, "").unwrap();
        wait_for_error(&mut status, "is empty").await;
        // Nor is a missing one.
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(POLL_INTERVAL + POLL_INTERVAL / 2).await;
        assert!(!rx.has_changed().unwrap(), "the last good state stays");
        assert_eq!(
            addrs(&index.lock().lookup(vip)),
            ["198.18.0.1:8080", "198.18.0.2:8080"]
        );
        assert_eq!(status.borrow().applied, 1);

        // A good edit again, renamed into place as editors do.
        let tmp = dir.0.join("weft.yaml.tmp");
        std::fs::write(&tmp, web_file("")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("within 1s")
            .unwrap();
        assert_eq!(addrs(&rx.borrow_and_update()), ["198.18.0.1:8080"]);
        assert_eq!(
            *status.borrow(),
            ReloadStatus {
                applied: 2,
                last_error: None
            }
        );
        let mut out = String::new();
        metrics.render(&index, &mut out).unwrap();
        assert!(
            out.contains("discovery_config_reloads_total{result=\"ok\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("discovery_config_reloads_total{result=\"error\"} 3\n"),
            "{out}"
        );

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the watcher stops on shutdown")
            .unwrap();
    }

    #[test]
    fn when_to_read() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stamp = |len, secs: u64, inode| Stamp {
            len,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
            inode,
        };
        let old = stamp(10, 999_000, 1);
        let cases = [
            ("first look", None, old, true),
            ("nothing moved, old mtime", Some(old), old, false),
            ("size moved", Some(old), stamp(11, 999_000, 1), true),
            ("mtime moved", Some(old), stamp(10, 999_001, 1), true),
            (
                "inode moved (rename, symlink swap)",
                Some(old),
                stamp(10, 999_000, 2),
                true,
            ),
            (
                "recent mtime is not trusted",
                Some(stamp(10, 999_999, 1)),
                stamp(10, 999_999, 1),
                true,
            ),
            (
                "mtime in the future",
                Some(stamp(10, 1_000_100, 1)),
                stamp(10, 1_000_100, 1),
                true,
            ),
            (
                "no mtime at all",
                Some(Stamp {
                    modified: None,
                    ..old
                }),
                Stamp {
                    modified: None,
                    ..old
                },
                true,
            ),
        ];
        for (name, last, now_stamp, want) in cases {
            assert_eq!(needs_read(last.as_ref(), &now_stamp, t0), want, "{name}");
        }
    }
}
