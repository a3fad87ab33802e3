//! Command-line arguments, parsed with argh. Each subcommand's flags live here so `--help`
//! is the reference; the behaviour lives in the subcommand's module.

use argh::FromArgs;

/// Weft: a lightweight service mesh for edge Kubernetes.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Demo(DemoArgs),
    Version(VersionArgs),
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
