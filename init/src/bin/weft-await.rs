//! `weft-await`: waits for the Weft proxy to be ready, runs a command, and
//! optionally shuts the proxy down afterwards. All logic lives in
//! [`weft_init::wrapper`]; this only wires the process environment in and
//! exits with the code it returns (see `docs/init.md`).

use std::io::{self, Write};

use weft_init::cli;
use weft_init::wrapper::cmd::{self, AwaitArgs};
use weft_init::wrapper::env::ProcessEnv;

fn main() {
    let args: AwaitArgs = cli::from_env_or_exit(cmd::VALUE_OPTIONS);
    let code = cmd::run(&args, &ProcessEnv, &mut io::stderr());
    let _ = io::stderr().flush();
    std::process::exit(code);
}
