//! The real `weft-init` binary's command line, exit codes and `--dry-run`
//! output. Nothing here touches iptables, so no root is needed.

mod support;

use support::{bin, output};

const WEFT_INIT: &str = env!("CARGO_BIN_EXE_weft-init");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = output(bin(WEFT_INIT).args(args));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_help_lists_every_flag() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--incoming-proxy-port",
        "--outgoing-proxy-port",
        "--proxy-uid",
        "--inbound-ports-to-ignore",
        "--outbound-ports-to-ignore",
        "--subnets-to-ignore",
        "--iptables-mode",
        "--ipv6",
        "--dry-run",
        "--cleanup",
        "--validate",
        "--validate-addr",
    ] {
        assert!(stdout.contains(flag), "--help lists {flag}:\n{stdout}");
    }
}

#[test]
fn init_bad_command_lines_exit_64() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "Unrecognized argument: --bogus"),
        (
            &["--inbound-ports-to-ignore", "22,abc"],
            "invalid port \"abc\"",
        ),
        (&["--subnets-to-ignore", "10.0.0.0/40"], "prefix length"),
        (
            &["--iptables-mode", "plain"],
            "expected auto, nft or legacy",
        ),
        (&["--proxy-uid", "0", "--dry-run"], "--proxy-uid 0"),
        (&["--outgoing-proxy-port", "4143", "--dry-run"], "both 4143"),
        (
            &["--subnets-to-ignore", "fd00::/8", "--dry-run"],
            "--ipv6 is not set",
        ),
        (&["--cleanup", "--validate"], "cannot be combined"),
    ];
    for (args, needle) in cases {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn init_dry_run_prints_the_exact_document() {
    let (code, stdout, stderr) = run(&[
        "--dry-run",
        "--inbound-ports-to-ignore",
        "8000-8100,22",
        "--outbound-ports-to-ignore",
        "5432",
        "--subnets-to-ignore",
        "198.18.2.0/24",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        r#"# weft-init install for IPv4 (apply with: iptables-restore --noflush)
*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -m multiport --dports 22,4190,4191,8000:8100 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -p tcp -m multiport --dports 5432 -m comment --comment "weft/ignore-outbound-ports" -j RETURN
-A WEFT_OUTPUT -d 198.18.2.0/24 -m comment --comment "weft/ignore-subnet" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
COMMIT
"#
    );
    assert_eq!(stderr, "", "dry run logs nothing");
}

#[test]
fn init_accepts_name_equals_value_flags() {
    let (code, stdout, stderr) = run(&[
        "--dry-run",
        "--proxy-uid=1337",
        "--outgoing-proxy-port=5140",
        "--inbound-ports-to-ignore=22",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("--uid-owner 1337"), "{stdout}");
    assert!(stdout.contains("--to-ports 5140"), "{stdout}");
    assert!(stdout.contains("--dports 22,4190,4191"), "{stdout}");
}
