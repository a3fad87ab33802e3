//! Command-line arguments, parsed with argh. Each subcommand's flags live here so `--help`
//! is the reference; the behaviour lives in the subcommand's module.

use crate::discovery::{parse_backend, Backend};
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
    // Without the `kubernetes` feature, `weft check` only says it is not built in.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    Check(CheckArgs),
    Controller(Box<ControllerArgs>),
    Demo(DemoArgs),
    Identity(IdentityArgs),
    Inject(InjectArgs),
    Install(InstallArgs),
    LabApp(LabAppArgs),
    Uninject(UninjectArgs),
    Uninstall(UninstallArgs),
    Version(VersionArgs),
}

/// Run the control plane: the identity service, which signs a short-lived certificate for
/// every proxy that presents a valid token (docs/identity.md), and the destination API,
/// which tells proxies what each address is (docs/discovery.md).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "controller")]
pub struct ControllerArgs {
    /// directory holding ca.crt plus issuer.crt and issuer.key (from `weft identity
    /// generate`), or a cert-manager Secret's ca.crt, tls.crt and tls.key
    #[argh(option)]
    pub identity_dir: Option<PathBuf>,
    /// instead of --identity-dir: the name of a Secret in the control-plane namespace with
    /// the same keys, read through the Kubernetes API at start
    #[argh(option)]
    pub identity_secret: Option<String>,
    /// the config file (YAML): the token registry (`tokens:`) and, with `--discovery
    /// file`, the `workloads:` and `services:`; edits to the latter apply without a
    /// restart (docs/identity.md, docs/discovery.md). Required with `--discovery file`;
    /// with `--discovery kubernetes` tokens are checked with TokenReview instead
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// where workloads and services come from: `file` (the --config file, watched) or
    /// `kubernetes` (default file)
    #[argh(option, from_str_fn(parse_backend), default = "Backend::File")]
    pub discovery: Backend,
    /// with `--discovery kubernetes` or `--identity-secret`: the kubeconfig to use
    /// (default: $KUBECONFIG or ~/.kube/config if there is one, else the in-cluster
    /// service account)
    #[argh(option)]
    pub kubeconfig: Option<PathBuf>,
    /// where proxies reach the controller over HTTP/2 + TLS (default 0.0.0.0:8086; port 0
    /// picks a free port, printed at start)
    #[argh(option, default = "default_proxy_api_addr()")]
    pub proxy_api_addr: SocketAddr,
    /// the proxy injector's admission webhook (HTTPS, POST /inject-pods), e.g.
    /// 0.0.0.0:8443 (off unless given; docs/injection.md)
    #[argh(option)]
    pub injector_addr: Option<SocketAddr>,
    /// the image injected proxies run, holding weft-proxy and weft-init (default
    /// ghcr.io/weft-mesh/weft-proxy:<this version>)
    #[argh(option)]
    pub proxy_image: Option<String>,
    /// whether injected proxies are native sidecars: auto (when the API server is 1.29 or
    /// newer), true or false (default auto)
    #[argh(
        option,
        from_str_fn(crate::controller::injector::parse_native_sidecars),
        default = "crate::controller::injector::NativeSidecars::Auto"
    )]
    pub native_sidecars: crate::controller::injector::NativeSidecars,
    /// the MutatingWebhookConfiguration whose caBundle the controller keeps equal to the
    /// trust anchors (default weft-proxy-injector)
    #[argh(
        option,
        default = "crate::controller::injector::DEFAULT_WEBHOOK_CONFIG.to_string()"
    )]
    pub webhook_config: String,
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

/// Add the mesh to workloads in YAML manifests: by default the `weft.dev/inject`
/// annotation on each pod template (the webhook does the rest when pods are created);
/// `--manual` writes the proxy and init containers themselves. Pods, Deployments,
/// DaemonSets, StatefulSets, ReplicaSets, Jobs and CronJobs; multi-document YAML and
/// `kind: List`. Output on stdout, one line per resource on stderr (docs/injection.md).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "inject")]
pub struct InjectArgs {
    /// the manifest to read, or - for stdin
    #[argh(positional)]
    pub file: PathBuf,
    /// ingress mode (`weft.dev/inject: ingress`), for Traefik and ingress-nginx
    #[argh(switch)]
    pub ingress: bool,
    /// write the containers and volumes instead of only the annotation
    #[argh(switch)]
    pub manual: bool,
    /// with --manual: put the proxy among the regular containers, for clusters older than
    /// Kubernetes 1.29 (default: a native sidecar init container)
    #[argh(switch)]
    pub classic_sidecar: bool,
    /// with --manual: the proxy image (default ghcr.io/weft-mesh/weft-proxy:<version>)
    #[argh(option)]
    pub proxy_image: Option<String>,
    /// with --manual: the weft-init image (default: the proxy image)
    #[argh(option)]
    pub init_image: Option<String>,
    /// the namespace the control plane runs in (default weft)
    #[argh(option, default = "DEFAULT_CONTROL_PLANE_NAMESPACE.to_string()")]
    pub control_plane_namespace: String,
    /// trust domain (default cluster.local)
    #[argh(option, default = "DEFAULT_TRUST_DOMAIN.to_string()")]
    pub trust_domain: String,
}

/// Remove what `weft inject` added: the annotations, the proxy and init containers and
/// their volumes. Same input and output as `weft inject`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "uninject")]
pub struct UninjectArgs {
    /// the manifest to read, or - for stdin
    #[argh(positional)]
    pub file: PathBuf,
}

/// Check that Weft is installed and working, like `linkerd check`: the API server, the
/// control plane's objects, the controller, the identity issuer and the injector's webhook
/// (docs/check.md). Exit code 0 without failures (warnings allowed), 1 with any, 2 for bad
/// usage.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub struct CheckArgs {
    /// before installing: can Weft be installed on this cluster?
    #[argh(switch)]
    pub pre: bool,
    /// also check the data plane: meshed pods' proxies, and pods that should have one
    #[argh(switch)]
    pub proxy: bool,
    /// with --proxy: only the pods of this namespace (default: all namespaces)
    #[argh(option, short = 'n')]
    pub proxy_namespace: Option<String>,
    /// output: short, wide (with versions, expiry dates and counts) or json (default
    /// short)
    #[argh(
        option,
        short = 'o',
        default = "CheckFormat::Short",
        from_str_fn(parse_check_format)
    )]
    pub output: CheckFormat,
    /// the control plane's namespace (default weft)
    #[argh(option, default = "DEFAULT_CONTROL_PLANE_NAMESPACE.to_string()")]
    pub namespace: String,
    /// the kubeconfig to use (default: $KUBECONFIG or ~/.kube/config if there is one, else
    /// the in-cluster service account)
    #[argh(option)]
    pub kubeconfig: Option<PathBuf>,
}

/// `weft check -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFormat {
    Short,
    Wide,
    Json,
}

fn parse_check_format(s: &str) -> Result<CheckFormat, String> {
    match s {
        "short" => Ok(CheckFormat::Short),
        "wide" => Ok(CheckFormat::Wide),
        "json" => Ok(CheckFormat::Json),
        _ => Err(format!("{s:?}: expected short, wide or json")),
    }
}

/// Print the manifests that install Weft's control plane, in apply order, as one YAML
/// stream: `weft install | kubectl apply -f -` (docs/install.md). A new trust anchor and
/// issuer are generated each time unless --identity-external-issuer.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "install")]
pub struct InstallArgs {
    /// the control plane's namespace, created by the output (default weft)
    #[argh(option, default = "DEFAULT_CONTROL_PLANE_NAMESPACE.to_string()")]
    pub namespace: String,
    /// high availability: 3 controller replicas spread over nodes, and a
    /// PodDisruptionBudget keeping at least one
    #[argh(switch)]
    pub ha: bool,
    /// do not generate the issuer: the Secret weft-identity-issuer (ca.crt, tls.crt,
    /// tls.key) is provided by cert-manager or by you (docs/identity.md)
    #[argh(switch)]
    pub identity_external_issuer: bool,
    /// where the images come from (default ghcr.io/weft-mesh): <registry>/weft:<version>
    /// and <registry>/weft-proxy:<version>
    #[argh(option)]
    pub registry: Option<String>,
    /// the image tag (default: this weft's version)
    #[argh(option)]
    pub version: Option<String>,
    /// override one setting, key=value; repeatable (docs/install.md lists the keys)
    #[argh(option)]
    pub set: Vec<String>,
}

/// Print the objects `weft install` created that must be deleted to remove Weft:
/// `weft uninstall | kubectl delete -f -` (docs/install.md).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "uninstall")]
pub struct UninstallArgs {
    /// the control plane's namespace (default weft)
    #[argh(option, default = "DEFAULT_CONTROL_PLANE_NAMESPACE.to_string()")]
    pub namespace: String,
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

/// Build a real mesh on this machine and show it working: the controller and five pods in
/// network namespaces, weft-init's iptables rules, proxies with certificates, a Service
/// balanced over two backends, a server-speaks-first database, a Job; then golden metrics
/// and the identities behind every edge. Needs root; `--loopback` runs a smaller version
/// (two proxies on loopback, no iptables) without it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// how long to send traffic (default 10s)
    #[argh(
        option,
        default = "std::time::Duration::from_secs(10)",
        from_str_fn(duration)
    )]
    pub duration: std::time::Duration,
    /// requests per second sent by the demo client (default 20)
    #[argh(option, default = "20")]
    pub rate: u32,
    /// write everything the demo saw as JSON to this file
    #[argh(option)]
    pub report: Option<std::path::PathBuf>,
    /// run the proxy, init and app binaries through this program (e.g. qemu-aarch64-static
    /// for aarch64 builds)
    #[argh(option)]
    pub runner: Option<String>,
    /// take weft, weft-proxy, weft-init and weft-await from this directory (with --runner:
    /// e.g. target/aarch64-unknown-linux-musl/debug)
    #[argh(option)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// work directory for certificates, config and logs (default: a new one under /tmp)
    #[argh(option)]
    pub dir: Option<std::path::PathBuf>,
    /// the no-root version: two proxies on loopback with fixed destinations
    #[argh(switch)]
    pub loopback: bool,
    /// with --loopback: stop after this many requests (default: run until Ctrl-C)
    #[argh(option)]
    pub requests: Option<u64>,
    /// with --loopback: seconds between golden-metrics summaries (default 5)
    #[argh(option, default = "5")]
    pub report_every: u64,
}

/// Apps for `weft demo` and the end-to-end tests, run inside the lab's pods.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "lab-app")]
pub struct LabAppArgs {
    #[argh(subcommand)]
    pub app: LabApp,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum LabApp {
    Http(LabHttp),
    Banner(LabBanner),
    Load(LabLoad),
    Probe(LabProbe),
}

/// An HTTP server answering `NAME path=… xff=… peer=…`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "http")]
pub struct LabHttp {
    /// the name it answers with
    #[argh(option)]
    pub name: String,
    /// address to listen on
    #[argh(option)]
    pub listen: std::net::SocketAddr,
}

/// A server that speaks first: a banner line on connect, then one echo.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "banner")]
pub struct LabBanner {
    /// the banner
    #[argh(option)]
    pub text: String,
    /// address to listen on
    #[argh(option)]
    pub listen: std::net::SocketAddr,
}

/// Sends GETs at a steady rate and prints a JSON report.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "load")]
pub struct LabLoad {
    /// http://IP:PORT/path
    #[argh(option)]
    pub url: String,
    /// requests per second
    #[argh(option, default = "20")]
    pub rate: u32,
    /// how long
    #[argh(
        option,
        default = "std::time::Duration::from_secs(5)",
        from_str_fn(duration)
    )]
    pub duration: std::time::Duration,
}

/// Connects, prints the first line the server sends, exits.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "probe")]
pub struct LabProbe {
    /// IP:PORT
    #[argh(option)]
    pub addr: std::net::SocketAddr,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_duration(s)
}

/// Print the version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}
