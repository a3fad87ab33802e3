//! Command-line arguments, parsed with argh. Each subcommand's flags live here so `--help`
//! is the reference; the behaviour lives in the subcommand's module.

use crate::duration::parse_duration;
use argh::FromArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_api::identity::{DEFAULT_CONTROL_PLANE_NAMESPACE, DEFAULT_TRUST_DOMAIN};

/// Weft: a lightweight service mesh for edge Kubernetes.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Controller(ControllerArgs),
    Demo(DemoArgs),
    Identity(IdentityArgs),
    Version(VersionArgs),
}

/// Run the control plane. Today: the identity service, which signs a short-lived
/// certificate for every proxy that presents a valid token (see docs/identity.md).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "controller")]
pub struct ControllerArgs {
    /// directory holding ca.crt plus issuer.crt and issuer.key (from `weft identity
    /// generate`), or a cert-manager Secret's ca.crt, tls.crt and tls.key
    #[argh(option)]
    pub identity_dir: PathBuf,
    /// the file backend's config (YAML): the token registry (`tokens:`); see docs/identity.md
    #[argh(option)]
    pub config: PathBuf,
    /// where proxies reach the controller over HTTP/2 + TLS (default 0.0.0.0:8086; port 0
    /// picks a free port, printed at start)
    #[argh(option, default = "default_proxy_api_addr()")]
    pub proxy_api_addr: SocketAddr,
    /// plain-HTTP admin server with /metrics, /live and /ready, e.g. 0.0.0.0:9990 (off
    /// unless given)
    #[argh(option)]
    pub admin_addr: Option<SocketAddr>,
    /// lifetime of the certificates issued to proxies and of the controller's own (default
    /// 24h; units ms, s, m, h, d)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(24 * 3600)"
    )]
    pub leaf_lifetime: Duration,
    /// trust domain, the last part of every identity name (default cluster.local)
    #[argh(option, default = "DEFAULT_TRUST_DOMAIN.to_string()")]
    pub trust_domain: String,
    /// the namespace the control plane runs in (default weft)
    #[argh(option, default = "DEFAULT_CONTROL_PLANE_NAMESPACE.to_string()")]
    pub control_plane_namespace: String,
    /// how long shutdown waits for requests in flight (default 10s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(10)"
    )]
    pub shutdown_grace_period: Duration,
    /// log level: error, warn, info, debug, trace, or per target such as `warn,weft=debug`
    /// (default info)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,
}

fn default_proxy_api_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], weft_api::certify::DEFAULT_PROXY_API_PORT))
}

/// Manage the mesh's identity certificates.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "identity")]
pub struct IdentityArgs {
    #[argh(subcommand)]
    pub command: IdentityCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum IdentityCommand {
    Generate(GenerateArgs),
}

/// Create a trust anchor (ca.crt) and an issuer (issuer.crt, issuer.key) signed by it, the
/// files `weft controller --identity-dir` reads. ECDSA P-256; the anchor's key is not kept.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "generate")]
pub struct GenerateArgs {
    /// directory to write ca.crt, issuer.crt and issuer.key to (created if missing)
    #[argh(option)]
    pub out: PathBuf,
    /// trust domain (default cluster.local)
    #[argh(option, default = "DEFAULT_TRUST_DOMAIN.to_string()")]
    pub trust_domain: String,
    /// the namespace the control plane runs in (default weft)
    #[argh(option, default = "DEFAULT_CONTROL_PLANE_NAMESPACE.to_string()")]
    pub control_plane_namespace: String,
    /// lifetime of the trust anchor (default 87600h, ten years)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(87_600 * 3600)"
    )]
    pub anchor_lifetime: Duration,
    /// lifetime of the issuer (default 8760h, one year)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(8_760 * 3600)"
    )]
    pub issuer_lifetime: Duration,
    /// replace existing files
    #[argh(switch)]
    pub force: bool,
}

/// Run a local demo mesh on loopback: a client proxy and a server proxy in front of a demo
/// web app, with live traffic and golden metrics. Needs no cluster and no root.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// stop after this many requests (default: run until Ctrl-C)
    #[argh(option)]
    pub requests: Option<u64>,
    /// requests per second sent by the demo client (default 5)
    #[argh(option, default = "5")]
    pub rate: u32,
    /// seconds between golden-metrics summaries (default 5)
    #[argh(option, default = "5")]
    pub report_every: u64,
}

/// Print the version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}
