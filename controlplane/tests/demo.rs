//! `weft demo` end to end: the real binary, real proxies, real requests.

use std::process::Command;

#[test]
fn demo_serves_requests_through_two_proxies() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["demo", "--loopback", "--requests", "6", "--rate", "50"])
        .output()
        .expect("run weft demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in 1..=6 {
        let line = format!(
            "request {n}: 200 hello from web (path /orders/{n}, x-forwarded-for 127.0.0.1)"
        );
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("[client pod, outbound] requests 6, success rate 100.0%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[server pod, inbound] requests 6, success rate 100.0%"),
        "{stdout}"
    );
}

#[test]
fn unknown_subcommand_is_refused_with_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Unrecognized argument: frobnicate"), "{text}");
}
