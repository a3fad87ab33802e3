//! `weft-init`: installs Weft's iptables redirect in the pod's network
//! namespace. All logic lives in [`weft_init::iptables`]; this only wires
//! the real system in and maps errors to exit codes (see `docs/init.md`).

use std::io::{self, Write};

use weft_init::cli;
use weft_init::iptables::cmd::{self, InitArgs, System};
use weft_init::iptables::{caps, runner::SystemRunner, validate};

fn main() {
    let args: InitArgs = cli::from_env_or_exit(cmd::VALUE_OPTIONS);
    let system = System {
        runner: &SystemRunner,
        check_caps: &caps::check_current,
        validate: &|marker, port, uid| {
            validate::validate(marker, port, uid, validate::DEFAULT_TIMEOUT)
        },
    };
    let result = cmd::run(&args, &system, &mut io::stdout().lock(), &mut io::stderr());
    let code = match result {
        Ok(()) => weft_init::exit::OK,
        Err(error) => {
            let _ = writeln!(io::stderr(), "weft-init: error: {error}");
            error.exit_code()
        }
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}
