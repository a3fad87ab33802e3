//! The real `weft-proxy` binary in a real network namespace with real iptables `REDIRECT`
//! rules (root only): `SO_ORIGINAL_DST` for IPv4 and IPv6, the admin server refusing
//! `/shutdown` and `/proxy-log-level` to a non-loopback peer on another "pod", and SIGTERM
//! draining an in-flight request before exiting 0.
//!
//! Addresses: 198.18.0.0/15 and 2001:2::/48 (the benchmarking ranges), only inside
//! namespaces this test creates and deletes.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SERVER_V4: &str = "198.18.10.1";
const SERVER_V6: &str = "2001:2::10";
const PROXY_NODE: &str = "198.18.20.1";
const OTHER_POD: &str = "198.18.20.2";

const SERVER_PY: &str = r#"
import http.server, socket, sys, threading, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(1.5)
        body = ("path=%s xff=%s" % (self.path, self.headers.get("x-forwarded-for"))).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class V6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
s4 = http.server.ThreadingHTTPServer((sys.argv[1], 8080), H)
s6 = V6((sys.argv[2], 8080), H)
threading.Thread(target=s6.serve_forever, daemon=True).start()
s4.serve_forever()
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace deleted on drop, even when the test fails.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-px-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", self.0.as_str()];
        all.extend_from_slice(args);
        sh(&all)
    }
    fn curl(&self, args: &[&str]) -> String {
        let mut all = vec!["curl", "-sS", "--max-time", "10"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&self.run(&all).stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy_command(ns: &Netns) -> Command {
    let bin = env!("CARGO_BIN_EXE_weft-proxy");
    let mut args = vec![
        "setpriv",
        "--reuid",
        "2102",
        "--regid",
        "2102",
        "--clear-groups",
    ];
    // Under qemu-user (aarch64 tests on an x86_64 host) the proxy binary is aarch64 too and
    // the kernel cannot run it directly: run it through qemu explicitly.
    if cfg!(target_arch = "aarch64") && !host_is_aarch64() {
        args.push("qemu-aarch64-static");
    }
    args.push(bin);
    let mut c = ns.exec(&args);
    c.env("WEFT_PROXY_ADMIN_LISTEN_ADDR", "0.0.0.0:4191")
        .env("WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")
        .env("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "10s")
        .env("WEFT_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143")
        .env("WEFT_PROXY_OUTBOUND_LISTEN_ADDR", "[::]:4140")
        .stdout(Stdio::null());
    c
}

/// The proxy's log, printed if the test fails.
struct ProxyLog(std::path::PathBuf);
impl Drop for ProxyLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- weft-proxy log ---\n{log}");
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

fn host_is_aarch64() -> bool {
    Command::new("uname")
        .arg("-m")
        .output()
        .map(|o| o.stdout.starts_with(b"aarch64"))
        .unwrap_or(false)
}

fn wait_ready(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ns
            .exec(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:4191/ready",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "200" {
            return;
        }
        assert!(Instant::now() < deadline, "proxy never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn real_iptables_redirect_admin_scope_and_sigterm_drain() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (real iptables in network namespaces)");
        return;
    }
    for tool in ["ip", "iptables", "ip6tables", "curl", "python3", "setpriv"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            panic!("{tool} is missing: run scripts/install-deps");
        }
    }
    if cfg!(target_arch = "aarch64") && !host_is_aarch64() {
        // qemu-user does not emulate getsockopt(SOL_IP, SO_ORIGINAL_DST) (it answers
        // ENOPROTOOPT), so a redirected connection cannot be proxied under emulation. On real
        // ARM hardware this test runs like on x86_64.
        eprintln!("SKIPPED: SO_ORIGINAL_DST is not emulated by qemu-user");
        return;
    }
    let pod = Netns::new("pod");
    let other = Netns::new("other");
    // The "server" listens on extra addresses inside the pod's namespace.
    pod.run(&["ip", "addr", "add", &format!("{SERVER_V4}/32"), "dev", "lo"]);
    pod.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{SERVER_V6}/128"),
        "dev",
        "lo",
        "nodad",
    ]);
    // Another pod, joined by a veth pair, to reach the admin port from a non-loopback address.
    sh(&[
        "ip", "link", "add", "va", "netns", &pod.0, "type", "veth", "peer", "name", "vb", "netns",
        &other.0,
    ]);
    pod.run(&[
        "ip",
        "addr",
        "add",
        &format!("{PROXY_NODE}/24"),
        "dev",
        "va",
    ]);
    pod.run(&["ip", "link", "set", "va", "up"]);
    other.run(&["ip", "addr", "add", &format!("{OTHER_POD}/24"), "dev", "vb"]);
    other.run(&["ip", "link", "set", "vb", "up"]);
    // Redirect the app's connections to port 8080 to the outbound proxy, except the proxy's own.
    for ipt in ["iptables", "ip6tables"] {
        pod.run(&[
            ipt,
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "owner",
            "--uid-owner",
            "2102",
            "-j",
            "RETURN",
        ]);
        pod.run(&[
            ipt,
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-j",
            "REDIRECT",
            "--to-ports",
            "4140",
        ]);
    }

    let _server = Killed(
        pod.exec(&["python3", "-c", SERVER_PY, SERVER_V4, SERVER_V6])
            .spawn()
            .unwrap(),
    );
    let log =
        ProxyLog(std::env::temp_dir().join(format!("weft-proxy-netns-{}.log", std::process::id())));
    let log_file = std::fs::File::create(&log.0).unwrap();
    let mut proxy = Killed(proxy_command(&pod).stderr(log_file).spawn().unwrap());
    wait_ready(&pod);
    // Wait for the Python server to listen on both addresses.
    let deadline = Instant::now() + Duration::from_secs(20);
    while String::from_utf8_lossy(&pod.run(&["ss", "-Hltn", "sport", "=", ":8080"]).stdout)
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "test server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }

    // IPv4 and IPv6: the app dials the server; iptables sends it to the proxy, which finds
    // the original destination with SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST.
    assert_eq!(
        pod.curl(&[&format!("http://{SERVER_V4}:8080/v4")]),
        "path=/v4 xff=None"
    );
    assert_eq!(
        pod.curl(&[&format!("http://[{SERVER_V6}]:8080/v6")]),
        "path=/v6 xff=None"
    );
    let metrics = pod.curl(&["http://127.0.0.1:4191/metrics"]);
    for target in [format!("{SERVER_V4}:8080"), format!("[{SERVER_V6}]:8080")] {
        let line = "direction=\"outbound\",authority=\"";
        let found = metrics.lines().any(|l| {
            l.starts_with("request_total{")
                && l.contains(line)
                && l.contains(&format!("target_addr=\"{target}\""))
                && l.ends_with(" 1")
        });
        assert!(found, "no request_total for {target} in:\n{metrics}");
    }

    // From another pod: the admin server answers /ready but refuses the loopback-only endpoints.
    let admin = format!("http://{PROXY_NODE}:4191");
    assert_eq!(other.curl(&[&format!("{admin}/ready")]), "ready\n");
    assert_eq!(
        other.curl(&["-X", "POST", &format!("{admin}/shutdown")]),
        "shutdown is only allowed from loopback\n"
    );
    assert_eq!(
        other.curl(&["-w", " %{http_code}", &format!("{admin}/proxy-log-level")]),
        "log level is only available from loopback\n 403"
    );

    // SIGTERM while a slow request is in flight: the request completes, then the proxy exits 0.
    let slow = pod
        .exec(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            &format!("http://{SERVER_V4}:8080/slow"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(proxy.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let slow = slow.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "path=/slow xff=None");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = proxy.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "proxy did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
