//! The mesh for real (root only): `weft demo` builds the controller and five pods in
//! network namespaces with weft-init's iptables rules and proxies running as uid 2102, runs
//! traffic, and reports what it saw; these tests assert the report. A second run takes the
//! data plane (weft-proxy, weft-init, weft-await) from the aarch64 build, run under
//! qemu-aarch64-static.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn weft() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// One lab at a time: they share the 198.18.0.0/16 plan, and the leftover check below
/// must see only its own run.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn demo(extra: &[&str], tag: &str) -> Value {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("weft-lab-test-{tag}-{}", std::process::id()));
    let report = dir.with_extension("json");
    let bin_dir = weft().parent().map(Path::to_path_buf).unwrap_or_default();
    for b in ["weft-proxy", "weft-init", "weft-await"] {
        assert!(
            bin_dir.join(b).exists(),
            "{b} is not built beside weft: run the workspace tests (`cargo test --workspace`), which build it"
        );
    }
    let out = Command::new(weft())
        .args(["demo", "--duration", "3s", "--rate", "20", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .output()
        .expect("run weft demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "weft demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&report).expect("report written");
    let _ = std::fs::remove_file(&report);
    // Nothing is left behind: no namespace of this run.
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!ns.contains("wd"), "namespaces left behind: {ns}");
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&text).expect("report is JSON")
}

fn id(sa: &str) -> String {
    format!("{sa}.apps.serviceaccount.identity.weft.cluster.local")
}

fn assert_mesh_works(r: &Value) {
    // Every pod got its certificate; readiness waited for it.
    for (pod, sa) in [
        ("load-1", "load"),
        ("web-1", "web"),
        ("web-2", "web"),
        ("db-0", "db"),
        ("job-1", "job"),
    ] {
        assert_eq!(r["pods"][pod]["identity"], id(sa), "{r}");
    }
    // Traffic to the Service's virtual address: all answered, spread over both backends.
    let load = &r["load"];
    let sent = load["sent"].as_u64().unwrap();
    assert!(sent >= 40, "{load}");
    assert_eq!(load["failed"], 0, "{load}");
    assert_eq!(load["ok"].as_u64().unwrap(), sent);
    let (w1, w2) = (
        load["by_server"]["web-1"].as_u64().unwrap_or(0),
        load["by_server"]["web-2"].as_u64().unwrap_or(0),
    );
    assert_eq!(w1 + w2, sent, "{load}");
    assert!(w1 > 0 && w2 > 0, "both backends serve: {load}");
    // The app saw the client pod's address, not the proxy's.
    let sample = load["sample"].as_str().unwrap();
    assert!(sample.contains("path=/orders xff=198.18.0.10 "), "{sample}");
    // On web-1's veth: TLS records, none of the app's plaintext.
    let wire = &r["wire"];
    assert_eq!(wire["tls_records"], true, "{wire}");
    assert_eq!(wire["plaintext_seen"], false, "{wire}");
    assert!(wire["bytes"].as_u64().unwrap() > 1000, "{wire}");
    // By the pod's own address too, and the client proxy verified whom it spoke to.
    assert_eq!(
        r["direct"],
        "web-1 path=/direct xff=198.18.0.10 peer=198.18.0.11"
    );
    assert_eq!(r["server_ids"], serde_json::json!([id("db"), id("web")]));
    // The server-speaks-first database answered through the mesh at once.
    assert_eq!(r["banner"]["text"], "220 db-0 ready");
    // The Job: the command's exit code came back, and the proxy exited 0 on its own.
    assert_eq!(r["job"]["exit_code"], 3);
    assert_eq!(r["job"]["proxy_exit_code"], 0);
    // Identities on both sides of the edges.
    let edges = r["edges"].as_array().unwrap();
    let edge = |client: &str, server: &str| {
        edges
            .iter()
            .find(|e| e["client"] == client && e["server"] == server)
            .cloned()
    };
    let (to1, to2) = (
        edge(&id("load"), "web-1").unwrap(),
        edge(&id("load"), "web-2").unwrap(),
    );
    // The load, plus the one request to web-1's pod address.
    assert_eq!(
        to1["requests"].as_u64().unwrap() + to2["requests"].as_u64().unwrap(),
        sent + 1
    );
    assert!(edge(&id("load"), "db-0").unwrap()["tcp"].as_u64().unwrap() >= 1);
    assert_eq!(
        edge(&id("job"), "web-1")
            .or_else(|| edge(&id("job"), "web-2"))
            .unwrap()["requests"],
        1
    );
    // Golden metrics of the client's outbound side count exactly what was sent.
    assert_eq!(
        r["golden"]["load-1"]["outbound"]["requests"]
            .as_u64()
            .unwrap(),
        sent + 1
    );
    assert_eq!(r["golden"]["load-1"]["outbound"]["success_rate"], 1.0);
}

#[test]
fn a_mesh_in_namespaces() {
    if !is_root() {
        eprintln!("!!! SKIPPED: needs root (network namespaces and iptables)");
        return;
    }
    let r = demo(&[], "x86");
    assert_mesh_works(&r);
    assert!(
        r["banner"]["ms"].as_f64().unwrap() < 500.0,
        "{}",
        r["banner"]
    );
}

#[test]
fn a_mesh_with_the_aarch64_data_plane_under_qemu() {
    if !is_root() {
        eprintln!("!!! SKIPPED: needs root (network namespaces and iptables)");
        return;
    }
    let target_dir = weft()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let arm = target_dir.join("aarch64-unknown-linux-musl/debug");
    if !arm.join("weft-proxy").exists() {
        let msg = format!(
            "aarch64 binaries not built in {} (scripts/test builds them first)",
            arm.display()
        );
        assert!(std::env::var_os("WEFT_REQUIRE_ARM").is_none(), "{msg}");
        eprintln!("!!! SKIPPED: {msg}");
        return;
    }
    let r = demo(
        &[
            "--runner",
            "qemu-aarch64-static",
            "--bin-dir",
            arm.to_str().unwrap(),
        ],
        "arm",
    );
    assert_mesh_works(&r);
}
