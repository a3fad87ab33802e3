//! `weft`: one binary for the control plane (`weft controller`, as it lands) and the CLI.
//! Thin: parse arguments with argh, hand off to the subcommand's module.

mod cli;
mod controller;
mod demo;
mod destination;
mod discovery;
mod duration;
mod identity;
mod lab;
mod shutdown;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: cli::Cli = argh::from_env();
    match cli.command {
        cli::Command::Controller(args) => controller::main(args),
        cli::Command::Demo(args) if args.loopback => demo::main(args),
        cli::Command::Demo(args) => lab::demo::main(args),
        cli::Command::LabApp(args) => lab::apps::main(args),
        cli::Command::Identity(args) => match args.command {
            cli::IdentityCommand::Generate(args) => identity::generate::main(args),
        },
        cli::Command::Version(_) => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
