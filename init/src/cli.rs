//! Command-line parsing shared by both binaries.
//!
//! `argh::from_env` exits with status 1 on a bad command line; Weft's
//! programs document sysexits codes instead, so this module parses with
//! [`argh::FromArgs::from_args`] and maps the outcome itself: `--help` prints
//! to stdout and exits 0, a parse error prints to stderr and exits
//! [`crate::exit::USAGE`].
//!
//! argh only understands `--name value`; Kubernetes manifests usually say
//! `--name=value` (Linkerd's own hook is `linkerd-await --timeout=2m`).
//! [`split_equals`] rewrites the latter into the former, for the program's
//! own option names only and never after a `--`, so a wrapped command's
//! arguments are left alone.

use std::ffi::OsString;

use argh::TopLevelCommand;

use crate::exit;

/// Why a command line could not be turned into arguments.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// The process was started without even a program name.
    #[error("no program name: argv is empty")]
    EmptyArgv,
    /// An argument is not valid UTF-8 (argh only handles UTF-8).
    #[error("argument is not valid UTF-8: {0}")]
    NotUtf8(String),
}

/// What parsing decided: run with these arguments, or exit now.
#[derive(Debug)]
pub enum Parsed<T> {
    /// Arguments were parsed; run the program.
    Run(T),
    /// Exit immediately with `code` after printing `output` (to stdout when
    /// `code` is 0, i.e. `--help`, else to stderr).
    Exit {
        /// Text to print.
        output: String,
        /// Process exit code.
        code: i32,
    },
}

/// Rewrites `--name=value` as `--name value` for the option names in
/// `options` (written with their dashes), up to the first `--`. Pure.
pub fn split_equals(argv: &[String], options: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 4);
    let mut done = false;
    for (index, arg) in argv.iter().enumerate() {
        if index > 0 && !done {
            if arg == "--" {
                done = true;
            } else if let Some((name, value)) = arg.split_once('=') {
                if options.contains(&name) {
                    out.push(name.to_owned());
                    out.push(value.to_owned());
                    continue;
                }
            }
        }
        out.push(arg.clone());
    }
    out
}

/// Parses `argv` (program name first) into `T`. Pure: no printing, no exit.
pub fn parse<T: TopLevelCommand>(argv: &[String]) -> Parsed<T> {
    let Some((program, rest)) = argv.split_first() else {
        return Parsed::Exit {
            output: CliError::EmptyArgv.to_string(),
            code: exit::USAGE,
        };
    };
    let name = program.rsplit('/').next().unwrap_or(program.as_str());
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match T::from_args(&[name], &rest) {
        Ok(args) => Parsed::Run(args),
        Err(early) => match early.status {
            Ok(()) => Parsed::Exit {
                output: early.output,
                code: exit::OK,
            },
            Err(()) => Parsed::Exit {
                output: format!("{}\nRun {name} --help for more information.", early.output),
                code: exit::USAGE,
            },
        },
    }
}

/// Converts OS arguments to UTF-8 strings.
pub fn utf8_args(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, CliError> {
    args.into_iter()
        .map(|arg| {
            arg.into_string()
                .map_err(|bad| CliError::NotUtf8(bad.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Parses the process's own arguments (accepting `--name=value` for the
/// names in `options`), printing and exiting on `--help` or on a bad
/// command line. For use in `main` only.
pub fn from_env_or_exit<T: TopLevelCommand>(options: &[&str]) -> T {
    let argv = match utf8_args(std::env::args_os()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(exit::USAGE);
        }
    };
    match parse::<T>(&split_equals(&argv, options)) {
        Parsed::Run(args) => args,
        Parsed::Exit { output, code } => {
            if code == exit::OK {
                println!("{output}");
            } else {
                eprintln!("{output}");
            }
            std::process::exit(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    /// Test command.
    #[derive(FromArgs, Debug, PartialEq)]
    struct Demo {
        /// a number
        #[argh(option, default = "1")]
        n: u32,
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parse_outcomes() {
        match parse::<Demo>(&argv(&["/usr/bin/demo", "--n", "5"])) {
            Parsed::Run(demo) => assert_eq!(demo, Demo { n: 5 }),
            Parsed::Exit { output, .. } => panic!("unexpected exit: {output}"),
        }
        match parse::<Demo>(&argv(&["demo", "--help"])) {
            Parsed::Exit { output, code } => {
                assert_eq!(code, exit::OK);
                assert!(output.contains("Usage: demo"), "{output}");
            }
            Parsed::Run(_) => panic!("--help must exit"),
        }
        match parse::<Demo>(&argv(&["demo", "--bogus"])) {
            Parsed::Exit { output, code } => {
                assert_eq!(code, exit::USAGE);
                assert!(output.contains("--bogus"), "{output}");
                assert!(output.contains("Run demo --help"), "{output}");
            }
            Parsed::Run(_) => panic!("bad flag must exit"),
        }
        match parse::<Demo>(&[]) {
            Parsed::Exit { code, .. } => assert_eq!(code, exit::USAGE),
            Parsed::Run(_) => panic!("empty argv must exit"),
        }
    }

    #[test]
    fn split_equals_table() {
        let options = ["--port", "--timeout"];
        let cases: &[(&[&str], &[&str])] = &[
            (&["p"], &["p"]),
            (&["p", "--port=1"], &["p", "--port", "1"]),
            (
                &["p", "--timeout=2m", "--port", "3"],
                &["p", "--timeout", "2m", "--port", "3"],
            ),
            (&["p", "--port="], &["p", "--port", ""]),
            (&["p", "--other=1"], &["p", "--other=1"]),
            (&["p", "--", "--port=1"], &["p", "--", "--port=1"]),
            (&["p", "--port=a=b"], &["p", "--port", "a=b"]),
            (&["--port=1"], &["--port=1"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                split_equals(&argv(input), &options),
                argv(want),
                "{input:?}"
            );
        }
    }

    #[test]
    fn utf8_conversion() {
        use std::os::unix::ffi::OsStringExt;
        assert_eq!(
            utf8_args([OsString::from("a"), OsString::from("b")]),
            Ok(argv(&["a", "b"]))
        );
        let bad = OsString::from_vec(vec![0x66, 0xff]);
        assert!(matches!(utf8_args([bad]), Err(CliError::NotUtf8(_))));
    }
}
