//! The real `weft check` binary without a cluster: usage errors exit 2, an unreachable API
//! server is one failing line and exit 1, in text and in JSON. (Against an API server —
//! the in-project fake — it is tested in `controlplane/src/check/fake_tests.rs`.)

use std::process::{Command, Output};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

/// A kubeconfig naming a port nothing listens on.
fn dead_kubeconfig(name: &str) -> std::path::PathBuf {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path = std::env::temp_dir().join(format!("weft-check-{name}-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{{name: x, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\ncontexts: [{{name: x, context: {{cluster: x, user: u}}}}]\nusers: [{{name: u, user: {{}}}}]\n"),
    )
    .unwrap();
    path
}

#[test]
fn check_bad_usage_exits_2() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["check", "-o", "yaml"],
            "\"yaml\": expected short, wide or json",
        ),
        (
            &["check", "--pre", "--proxy"],
            "--pre and --proxy cannot be combined",
        ),
        (
            &["check", "-n", "apps"],
            "-n apps chooses the pods --proxy checks; add --proxy",
        ),
        (&["check", "--crds"], "Unrecognized argument: --crds"),
        (&["check", "extra"], "Unrecognized argument: extra"),
    ];
    for (args, want) in cases {
        let out = weft(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let help = weft(&["check", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--pre",
        "--proxy",
        "-n, --proxy-namespace",
        "-o, --output",
        "--namespace",
        "--kubeconfig",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn check_unreachable_api_server_fails_in_text_and_json() {
    let kubeconfig = dead_kubeconfig("dead");
    let k = kubeconfig.to_str().unwrap();
    for mode in [&[][..], &["--pre"][..], &["--proxy"][..]] {
        let mut args = vec!["check", "--kubeconfig", k];
        args.extend_from_slice(mode);
        let out = weft(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.starts_with(
                "kubernetes-api\n--------------\n✖ can reach the API server\n    hint: "
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains("Connection refused"),
            "the cause is shown: {stdout}"
        );
        assert!(stdout.contains("\n    fix:  kubectl version"), "{stdout}");
        assert!(
            stdout.ends_with("\nStatus check results are ✖ (1 failure, 0 warnings)\n"),
            "{stdout}"
        );
    }
    let out = weft(&["check", "--kubeconfig", k, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["categories"].as_array().map(Vec::len), Some(1));
    let check = &v["categories"][0]["checks"][0];
    assert_eq!(v["categories"][0]["name"], "kubernetes-api");
    assert_eq!(check["description"], "can reach the API server");
    assert_eq!(check["result"], "error");
    assert!(check["hint"]
        .as_str()
        .is_some_and(|h| h.contains("Connection refused")));
    assert!(check["fix"].is_string());
    let _ = std::fs::remove_file(kubeconfig);
}

#[test]
fn check_with_a_missing_kubeconfig_file_fails() {
    let out = weft(&["check", "--kubeconfig", "/nonexistent/kubeconfig"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✖ can reach the API server\n    hint: kubeconfig /nonexistent/kubeconfig"),
        "{stdout}"
    );
}
