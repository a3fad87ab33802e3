//! Shared helpers for the integration tests of `weft-init` and `weft-await`.
//!
//! * [`bin`] runs a binary of this package, through `qemu-<arch>-static`
//!   when the tests themselves run under qemu-user (cross-compiled for
//!   aarch64): without binfmt_misc the kernel cannot exec a foreign binary.
//! * [`skip`] prints a loud line straight to the process's stderr (libtest
//!   captures `eprintln!`, not writes to the stderr handle), so a skipped
//!   tier is visible in CI logs.
//! * [`Netns`] is a throwaway network namespace, deleted on drop even when
//!   the test panics.
//!
//! Network tests only use loopback and addresses they assign inside their
//! own namespaces, in 198.18.0.0/15.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prints a loud skip line that libtest does not capture.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!! SKIPPED: {reason} — {test} did not run !!!!!!!!!!\n"
    );
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|fields| fields.split_whitespace().nth(1))
                .map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// Finds a program on PATH, as an absolute path.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The command prefix needed to run this package's binaries: empty
/// natively, `[/usr/bin/qemu-aarch64-static]` under cross-arch emulation.
pub fn runner_prefix() -> Vec<String> {
    let host = Command::new("uname")
        .arg("-m")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let target = std::env::consts::ARCH;
    if host.is_empty() || host == target {
        return Vec::new();
    }
    let qemu = format!("qemu-{target}-static");
    match which(&qemu) {
        Some(path) => vec![path.to_string_lossy().into_owned()],
        None => vec![qemu],
    }
}

/// `[prefix…, path-to-binary]` for one of this package's binaries.
pub fn bin_argv(path: &str) -> Vec<String> {
    let mut argv = runner_prefix();
    argv.push(path.to_owned());
    argv
}

/// A `Command` for one of this package's binaries.
pub fn bin(path: &str) -> Command {
    let argv = bin_argv(path);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// Runs a command to completion, panicking if it cannot start.
pub fn output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn must(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique suffix per call: pid, counter and clock.
pub fn unique() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 0xfffff
    )
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `weft-init-test-<unique>` with `lo` up.
    pub fn new() -> Self {
        let name = format!("weft-init-test-{}", unique());
        must(Command::new("ip").args(["netns", "add", &name]));
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// Runs `ip -n NS args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        must(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command running `argv` inside the namespace.
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]);
        command.args(argv.iter().map(AsRef::as_ref));
        command
    }

    /// Runs `argv` inside the namespace to completion.
    pub fn run<S: AsRef<str>>(&self, argv: &[S]) -> Output {
        output(&mut self.command(argv))
    }

    /// Runs `argv` inside the namespace; it must succeed.
    pub fn must<S: AsRef<str>>(&self, argv: &[S]) -> String {
        must(&mut self.command(argv))
    }

    /// Adds an interface holding `addresses` (CIDR notation) whose subnets
    /// are on-link but lead nowhere: one end of a veth pair whose other end
    /// (`<interface>p`) stays in the namespace without addresses. (A
    /// `dummy` device would do, but not every kernel has the module.)
    pub fn stub_link(&self, interface: &str, addresses: &[&str]) {
        let peer = format!("{interface}p");
        self.ip(&[
            "link", "add", interface, "type", "veth", "peer", "name", &peer,
        ]);
        for address in addresses {
            self.ip(&["addr", "add", address, "dev", interface]);
        }
        self.ip(&["link", "set", &peer, "up"]);
        self.ip(&["link", "set", interface, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(deleted, Ok(status) if status.success()) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not delete network namespace {}",
                self.name
            );
        }
    }
}

/// `iptables-save` output reduced to what the tests compare: no comment
/// lines, no packet counters.
pub fn normalize_save(text: &str) -> String {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match line.rfind(" [") {
            Some(at) if line.starts_with(':') => &line[..at],
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The system python3, preferring /usr/bin (it must be runnable by other
/// uids, which a per-user pyenv shim is not).
pub fn python3() -> Option<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        return Some(system.to_path_buf());
    }
    which("python3")
}

/// A TCP server run by python3 inside a namespace. Every listener answers
/// each connection with `<label> <original destination>\n` (the original
/// destination from SO_ORIGINAL_DST, `-` when the connection was not
/// NATed) and closes it. Killed on drop.
pub struct Listeners {
    child: Child,
}

const SERVER: &str = r#"
import selectors, socket, struct, sys
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    label, host, port = spec.split(",")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ, label)
print("READY", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        try:
            raw = conn.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
            port = struct.unpack("!H", raw[2:4])[0]
            orig = "%s:%d" % (socket.inet_ntoa(raw[4:8]), port)
        except OSError:
            orig = "-"
        try:
            conn.sendall(("%s %s\n" % (key.data, orig)).encode())
        finally:
            conn.close()
"#;

const CLIENT: &str = r#"
import os, socket, sys
uid, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
try:
    s = socket.create_connection((host, port), timeout=5)
    data = b""
    while True:
        chunk = s.recv(256)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip())
except OSError as error:
    print("ERROR %s" % error)
"#;

impl Listeners {
    /// Starts listeners `(label, host, port)` inside `netns` and waits
    /// until all are bound.
    pub fn start(netns: &Netns, python: &Path, listeners: &[(&str, &str, u16)]) -> Self {
        let mut argv: Vec<String> = vec![
            python.to_string_lossy().into_owned(),
            "-I".into(),
            "-c".into(),
            SERVER.into(),
        ];
        argv.extend(
            listeners
                .iter()
                .map(|(label, host, port)| format!("{label},{host},{port}")),
        );
        let mut child = netns
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the python listeners: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let listeners = Listeners { child };
        assert_eq!(line.trim(), "READY", "python listeners did not start");
        listeners
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects from inside `netns` as `uid` to `host:port` and returns the
/// line the listener answered (or `ERROR …`).
pub fn connect_as(netns: &Netns, python: &Path, uid: u32, host: &str, port: u16) -> String {
    let python = python.to_string_lossy().into_owned();
    let out = netns.run(&[
        python.as_str(),
        "-I",
        "-c",
        CLIENT,
        &uid.to_string(),
        host,
        &port.to_string(),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until `path` exists or `timeout` passes.
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", unique()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
