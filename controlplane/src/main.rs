//! `weft`: one binary for the control plane (`weft controller`, as it lands) and the CLI.
//! Thin: parse arguments with argh, hand off to the subcommand's module.

#[cfg(feature = "kubernetes")]
mod check;
mod cli;
mod controller;
mod demo;
mod destination;
mod discovery;
mod duration;
mod identity;
mod inject;
mod install;
mod json_http;
mod lab;
mod shutdown;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: cli::Cli = parse_args();
    match cli.command {
        #[cfg(feature = "kubernetes")]
        cli::Command::Check(args) => check::main(args),
        #[cfg(not(feature = "kubernetes"))]
        cli::Command::Check(_) => {
            eprintln!("weft check: this weft was built without the `kubernetes` feature, so it cannot talk to a cluster; use a build with the default features (cargo build -p weft-controlplane)");
            ExitCode::from(1)
        }
        cli::Command::Controller(args) => controller::main(*args),
        cli::Command::Demo(args) if args.loopback => demo::main(args),
        cli::Command::Demo(args) => lab::demo::main(args),
        cli::Command::LabApp(args) => lab::apps::main(args),
        cli::Command::Identity(args) => match args.command {
            cli::IdentityCommand::Generate(args) => identity::generate::main(args),
        },
        cli::Command::Inject(args) => inject::manifest::main_inject(args),
        cli::Command::Install(args) => install::main_install(args),
        cli::Command::Uninstall(args) => install::main_uninstall(args),
        cli::Command::Uninject(args) => {
            inject::manifest::main(&args.file, inject::manifest::Action::Uninject, "uninject")
        }
        cli::Command::Version(_) => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// `argh::from_env`, except that a bare `-` (stdin, as in `weft inject -`) is accepted: argh
/// would take it for a flag, so it is passed after `--`.
fn parse_args() -> cli::Cli {
    use argh::FromArgs;
    let args: Vec<String> = std::env::args().collect();
    let args = inject::manifest::dash_as_positional(args);
    let cmd = args.first().map(String::as_str).unwrap_or("weft");
    let cmd = std::path::Path::new(cmd)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("weft");
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    cli::Cli::from_args(&[cmd], &rest).unwrap_or_else(|early| match early.status {
        Ok(()) => {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", early.output);
            std::process::exit(0)
        }
        Err(()) => {
            eprintln!("{}\nRun {cmd} --help for more information.", early.output);
            // `weft check` follows `linkerd check`: 2 for bad usage (1 means a check failed).
            let check = rest.first() == Some(&"check");
            std::process::exit(if check { 2 } else { 1 })
        }
    })
}
