//! The real `weft-init` binary against real iptables, in throwaway network
//! namespaces (tier 3 of the design's test plan). Needs root; without it
//! every test prints a loud `SKIPPED: needs root` line and returns.
//!
//! Each test makes its own namespace(s), named `weft-init-test-<unique>`,
//! deleted by a drop guard even when the test fails. Addresses are only
//! loopback and 198.18.0.0/15 addresses assigned inside those namespaces.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{bin_argv, connect_as, is_root, normalize_save, python3, skip, Listeners, Netns};

const WEFT_INIT: &str = env!("CARGO_BIN_EXE_weft-init");

/// The proxy uid and an ordinary application uid.
const PROXY_UID: u32 = 2102;
const APP_UID: u32 = 1000;

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        true
    } else {
        skip(test, "needs root (network namespaces and iptables)");
        false
    }
}

fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = python3();
    if python.is_none() {
        skip(test, "needs python3 for the helper listeners");
    }
    python
}

/// Runs weft-init inside `netns` with `args`.
fn weft_init(netns: &Netns, args: &[&str]) -> Output {
    let mut argv = bin_argv(WEFT_INIT);
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    netns.run(&argv)
}

/// Runs weft-init and asserts it exits 0; returns its stderr log.
fn weft_init_ok(netns: &Netns, args: &[&str]) -> String {
    let out = weft_init(netns, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "weft-init {args:?} failed:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `<tool> -t nat`, normalised.
fn nat(netns: &Netns, tool: &str) -> String {
    normalize_save(&netns.must(&[tool, "-t", "nat"]))
}

const PRISTINE: &str = "*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
COMMIT
";

/// The table after installing with FLAGS (below), as iptables-save prints it.
const INSTALLED_V4: &str = r#"*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:WEFT_OUTPUT -
:WEFT_PREROUTING -
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -p tcp -m multiport --dports 5432 -m comment --comment "weft/ignore-outbound-ports" -j RETURN
-A WEFT_OUTPUT -d 198.18.2.0/24 -m comment --comment "weft/ignore-subnet" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
-A WEFT_PREROUTING -p tcp -m multiport --dports 22,4190,4191,8000:8100 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
COMMIT
"#;

const FLAGS: &[&str] = &[
    "--inbound-ports-to-ignore",
    "22,8000-8100",
    "--outbound-ports-to-ignore",
    "5432",
    "--subnets-to-ignore",
    "198.18.2.0/24",
];

#[test]
fn netns_install_is_exact_idempotent_and_cleanable() {
    if !root_or_skip("netns_install_is_exact_idempotent_and_cleanable") {
        return;
    }
    let ns = Netns::new();
    assert_eq!(nat(&ns, "iptables-nft-save"), PRISTINE);

    let log = weft_init_ok(&ns, FLAGS);
    assert!(log.contains("using the nft iptables backend"), "{log}");
    assert!(log.contains("jumps added 2"), "{log}");
    assert_eq!(nat(&ns, "iptables-nft-save"), INSTALLED_V4);

    // A second run replaces the chains' rules and adds no second jump.
    let log = weft_init_ok(&ns, FLAGS);
    assert!(log.contains("replaced 7, jumps added 0"), "{log}");
    assert_eq!(nat(&ns, "iptables-nft-save"), INSTALLED_V4);

    // Re-running with other flags replaces the rules.
    weft_init_ok(&ns, &[]);
    let table = nat(&ns, "iptables-nft-save");
    assert!(!table.contains("5432"), "{table}");
    assert_eq!(table.matches("-j WEFT_OUTPUT").count(), 1, "{table}");

    let log = weft_init_ok(&ns, &["--cleanup"]);
    assert!(
        log.contains("deleted chains WEFT_PREROUTING, WEFT_OUTPUT"),
        "{log}"
    );
    assert_eq!(nat(&ns, "iptables-nft-save"), PRISTINE);

    let log = weft_init_ok(&ns, &["--cleanup"]);
    assert!(log.contains("nothing to clean up"), "{log}");
    // The legacy backend was only probed, never loaded with a table.
    assert_eq!(normalize_save(&ns.must(&["iptables-legacy-save"])), "");
}

#[test]
fn netns_legacy_backend_explicit_and_auto_detected() {
    if !root_or_skip("netns_legacy_backend_explicit_and_auto_detected") {
        return;
    }
    // Explicit legacy mode.
    let ns = Netns::new();
    let mut args = vec!["--iptables-mode", "legacy"];
    args.extend_from_slice(FLAGS);
    weft_init_ok(&ns, &args);
    weft_init_ok(&ns, &args);
    assert_eq!(nat(&ns, "iptables-legacy-save"), INSTALLED_V4);
    assert!(!nat(&ns, "iptables-nft-save").contains("WEFT"));
    weft_init_ok(&ns, &["--iptables-mode", "legacy", "--cleanup"]);
    assert_eq!(nat(&ns, "iptables-legacy-save"), PRISTINE);

    // Auto mode follows the backend that already has rules.
    let ns = Netns::new();
    ns.must(&[
        "iptables-legacy",
        "-w",
        "5",
        "-t",
        "filter",
        "-A",
        "INPUT",
        "-s",
        "198.18.3.0/24",
        "-j",
        "ACCEPT",
    ]);
    let log = weft_init_ok(&ns, FLAGS);
    assert!(
        log.contains("using the legacy iptables backend (auto: legacy has 1 rules, nft has 0)"),
        "{log}"
    );
    assert_eq!(nat(&ns, "iptables-legacy-save"), INSTALLED_V4);
    assert!(!nat(&ns, "iptables-nft-save").contains("WEFT"));
    // Auto still picks legacy on re-run and for cleanup.
    weft_init_ok(&ns, FLAGS);
    assert_eq!(nat(&ns, "iptables-legacy-save"), INSTALLED_V4);
    weft_init_ok(&ns, &["--cleanup"]);
    assert_eq!(nat(&ns, "iptables-legacy-save"), PRISTINE);
}

#[test]
fn netns_ipv6_rules() {
    if !root_or_skip("netns_ipv6_rules") {
        return;
    }
    let ns = Netns::new();
    weft_init_ok(
        &ns,
        &[
            "--ipv6",
            "--subnets-to-ignore",
            "198.18.2.0/24,fd00:198:18::/48",
        ],
    );
    weft_init_ok(
        &ns,
        &[
            "--ipv6",
            "--subnets-to-ignore",
            "198.18.2.0/24,fd00:198:18::/48",
        ],
    );
    assert_eq!(
        nat(&ns, "ip6tables-nft-save"),
        r#"*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:WEFT_OUTPUT -
:WEFT_PREROUTING -
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-A WEFT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "weft/ignore-proxy-uid" -j RETURN
-A WEFT_OUTPUT -d ::1/128 -o lo -m comment --comment "weft/ignore-loopback" -j RETURN
-A WEFT_OUTPUT -d fd00:198:18::/48 -m comment --comment "weft/ignore-subnet" -j RETURN
-A WEFT_OUTPUT -p tcp -m comment --comment "weft/redirect-outbound" -j REDIRECT --to-ports 4140
-A WEFT_PREROUTING -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft/ignore-inbound-ports" -j RETURN
-A WEFT_PREROUTING -p tcp -m comment --comment "weft/redirect-inbound" -j REDIRECT --to-ports 4143
COMMIT
"#
    );
    let v4 = nat(&ns, "iptables-nft-save");
    assert!(v4.contains("-d 198.18.2.0/24"), "{v4}");
    assert!(!v4.contains("fd00"), "{v4}");
    weft_init_ok(&ns, &["--ipv6", "--cleanup"]);
    assert_eq!(nat(&ns, "ip6tables-nft-save"), PRISTINE);
    assert_eq!(nat(&ns, "iptables-nft-save"), PRISTINE);
}

#[test]
fn netns_outbound_redirect_for_real() {
    let test = "netns_outbound_redirect_for_real";
    if !root_or_skip(test) {
        return;
    }
    let Some(python) = python_or_skip(test) else {
        return;
    };
    let ns = Netns::new();
    ns.stub_link("weft0", &["198.18.0.1/24", "198.18.2.1/24"]);
    weft_init_ok(&ns, FLAGS);
    let _listeners = Listeners::start(
        &ns,
        &python,
        &[
            ("outbound-proxy", "127.0.0.1", 4140),
            ("server", "198.18.0.1", 80),
            ("db", "198.18.0.1", 5432),
            ("ignored-subnet", "198.18.2.1", 80),
            ("loopback", "127.0.0.1", 9000),
        ],
    );
    let cases: &[(u32, &str, u16, &str)] = &[
        // An application connection to a local non-loopback address (it
        // leaves through lo) reaches the outbound proxy, which can read the
        // original destination.
        (APP_UID, "198.18.0.1", 80, "outbound-proxy 198.18.0.1:80"),
        // A connection routed out of an interface, likewise.
        (APP_UID, "198.18.0.2", 80, "outbound-proxy 198.18.0.2:80"),
        // The proxy's own connections are never redirected.
        (PROXY_UID, "198.18.0.1", 80, "server 198.18.0.1:80"),
        // Loopback destinations, ignored ports and subnets go direct.
        (APP_UID, "127.0.0.1", 9000, "loopback 127.0.0.1:9000"),
        (APP_UID, "198.18.0.1", 5432, "db 198.18.0.1:5432"),
        (APP_UID, "198.18.2.1", 80, "ignored-subnet 198.18.2.1:80"),
    ];
    for (uid, host, port, want) in cases {
        let got = connect_as(&ns, &python, *uid, host, *port);
        assert_eq!(&got, want, "uid {uid} -> {host}:{port}");
    }
}

#[test]
fn netns_inbound_redirect_for_real() {
    let test = "netns_inbound_redirect_for_real";
    if !root_or_skip(test) {
        return;
    }
    let Some(python) = python_or_skip(test) else {
        return;
    };
    let pod = Netns::new();
    let peer = Netns::new();
    pod.ip(&[
        "link", "add", "weft-v0", "type", "veth", "peer", "name", "weft-v1", "netns", &peer.name,
    ]);
    pod.ip(&["addr", "add", "198.18.1.1/30", "dev", "weft-v0"]);
    pod.ip(&["link", "set", "weft-v0", "up"]);
    peer.ip(&["addr", "add", "198.18.1.2/30", "dev", "weft-v1"]);
    peer.ip(&["link", "set", "weft-v1", "up"]);
    weft_init_ok(&pod, FLAGS);
    let _listeners = Listeners::start(
        &pod,
        &python,
        &[
            ("inbound-proxy", "0.0.0.0", 4143),
            ("outbound-proxy", "127.0.0.1", 4140),
            ("app", "198.18.1.1", 9090),
            ("admin", "0.0.0.0", 4191),
            ("ssh", "0.0.0.0", 22),
        ],
    );
    // From the peer "pod": redirected to the inbound proxy, except the
    // always-ignored admin port and the ignored port 22.
    let from_peer: &[(u16, &str)] = &[
        (9090, "inbound-proxy 198.18.1.1:9090"),
        // 8000-8100 is in --inbound-ports-to-ignore: not redirected, and
        // nothing listens there, so the connection is refused.
        (8080, "ERROR [Errno 111] Connection refused"),
        (4191, "admin 198.18.1.1:4191"),
        (22, "ssh 198.18.1.1:22"),
    ];
    for (port, want) in from_peer {
        let got = connect_as(&peer, &python, APP_UID, "198.18.1.1", *port);
        assert_eq!(&got, want, "peer -> 198.18.1.1:{port}");
    }
    // Inside the pod: the proxy forwards to the app at the pod IP directly;
    // the app calling its own pod IP goes through the outbound proxy.
    assert_eq!(
        connect_as(&pod, &python, PROXY_UID, "198.18.1.1", 9090),
        "app 198.18.1.1:9090"
    );
    assert_eq!(
        connect_as(&pod, &python, APP_UID, "198.18.1.1", 9090),
        "outbound-proxy 198.18.1.1:9090"
    );
}

#[test]
fn netns_validate_flag() {
    if !root_or_skip("netns_validate_flag") {
        return;
    }
    let ns = Netns::new();
    ns.stub_link("weft0", &["198.18.0.1/24"]);
    let log = weft_init_ok(&ns, &["--validate", "--validate-addr", "198.18.0.2:1404"]);
    assert!(
        log.contains("validated: a connection to 198.18.0.2:1404 landed on 127.0.0.1:4140"),
        "{log}"
    );

    // Rules that exempt the marker's port: installed, but not effective for
    // that connection, so validation fails with EX_CONFIG.
    let ns = Netns::new();
    ns.stub_link("weft0", &["198.18.0.1/24"]);
    let out = weft_init(
        &ns,
        &[
            "--outbound-ports-to-ignore",
            "1404",
            "--validate",
            "--validate-addr",
            "198.18.0.1:1404",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("outbound redirect is not working"),
        "{stderr}"
    );
}

#[test]
fn netns_not_permitted_exits_77() {
    if !root_or_skip("netns_not_permitted_exits_77") {
        return;
    }
    let ns = Netns::new();
    let variants: &[&[&str]] = &[
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ],
        &[
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-net_admin,-net_raw",
        ],
    ];
    for prefix in variants {
        let mut argv: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
        argv.extend(bin_argv(WEFT_INIT));
        let out = ns.run(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{prefix:?}: {stderr}");
        assert!(stderr.contains("NET_ADMIN"), "{prefix:?}: {stderr}");
    }
    assert_eq!(nat(&ns, "iptables-nft-save"), PRISTINE);
}

#[test]
fn netns_missing_iptables_binaries_exit_69() {
    if !root_or_skip("netns_missing_iptables_binaries_exit_69") {
        return;
    }
    let ns = Netns::new();
    let mut argv: Vec<String> = vec!["env".into(), "PATH=/nonexistent".into()];
    argv.extend(bin_argv(WEFT_INIT));
    let out = ns.run(&argv);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("iptables-nft-save not found on PATH"),
        "{stderr}"
    );
}

#[test]
fn netns_foreign_reference_is_refused_then_cleaned() {
    if !root_or_skip("netns_foreign_reference_is_refused_then_cleaned") {
        return;
    }
    let ns = Netns::new();
    ns.must(&["iptables-nft", "-t", "nat", "-N", "WEFT_OUTPUT"]);
    ns.must(&[
        "iptables-nft",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-j",
        "WEFT_OUTPUT",
    ]);
    let out = weft_init(&ns, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT"),
        "{stderr}"
    );
    assert!(stderr.contains("--cleanup"), "{stderr}");
    // Refusing changed nothing.
    assert!(!nat(&ns, "iptables-nft-save").contains("WEFT_PREROUTING"));

    let log = weft_init_ok(&ns, &["--cleanup"]);
    assert!(
        log.contains("deleted `-A OUTPUT -p tcp -j WEFT_OUTPUT`"),
        "{log}"
    );
    assert_eq!(nat(&ns, "iptables-nft-save"), PRISTINE);
    weft_init_ok(&ns, FLAGS);
    assert_eq!(nat(&ns, "iptables-nft-save"), INSTALLED_V4);
}

#[test]
fn netns_dry_run_changes_nothing() {
    if !root_or_skip("netns_dry_run_changes_nothing") {
        return;
    }
    let ns = Netns::new();
    let out = weft_init(&ns, &["--dry-run", "--ipv6"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("-A OUTPUT -m comment"));
    assert_eq!(nat(&ns, "iptables-nft-save"), PRISTINE);
    assert_eq!(nat(&ns, "ip6tables-nft-save"), PRISTINE);
    assert_eq!(normalize_save(&ns.must(&["iptables-legacy-save"])), "");
}
