//! Integration tests of the real `weft-await` binary against a fake proxy
//! admin server on 127.0.0.1:0 (no root needed).

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::{bin, wait_for_file, TempDir};

const WEFT_AWAIT: &str = env!("CARGO_BIN_EXE_weft-await");

/// One request the fake admin server received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    /// For POST /shutdown: whether the marker file existed at that moment.
    marker_existed: bool,
}

/// What the fake server answers to the n-th GET /ready (0-based).
type ReadyScript = Box<dyn Fn(usize) -> Vec<u8> + Send>;

/// A fake proxy admin server: scripted `/ready`, records everything.
struct FakeAdmin {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn respond(status: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

impl FakeAdmin {
    fn start(ready: ReadyScript, marker: Option<PathBuf>) -> Self {
        Self::with_shutdown_status(ready, marker, "200 OK")
    }

    fn with_shutdown_status(
        ready: ReadyScript,
        marker: Option<PathBuf>,
        shutdown_status: &'static str,
    ) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fake admin");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut ready_count = 0;
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            serve(
                                stream,
                                &ready,
                                &mut ready_count,
                                shutdown_status,
                                marker.as_deref(),
                                &seen,
                            );
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakeAdmin {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    ready: &ReadyScript,
    ready_count: &mut usize,
    shutdown_status: &str,
    marker: Option<&Path>,
    seen: &Mutex<Vec<Seen>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let path = words.next().unwrap_or_default().to_owned();
    let reply = match (method.as_str(), path.as_str()) {
        ("GET", "/ready") => {
            let reply = ready(*ready_count);
            *ready_count += 1;
            reply
        }
        ("POST", "/shutdown") => respond(shutdown_status),
        _ => respond("404 Not Found"),
    };
    if let Ok(mut seen) = seen.lock() {
        seen.push(Seen {
            marker_existed: method == "POST" && marker.is_some_and(Path::exists),
            method,
            path,
        });
    }
    let _ = stream.write_all(&reply);
}

fn run_await(args: &[&str], envs: &[(&str, &str)]) -> (Output, Duration) {
    let mut command = bin(WEFT_AWAIT);
    command.args(args).env_remove("WEFT_AWAIT_DISABLED");
    for (key, value) in envs {
        command.env(key, value);
    }
    let started = Instant::now();
    let out = support::output(&mut command);
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn await_polls_until_ready_runs_command_and_shuts_down() {
    let dir = TempDir::new("weft-await-test");
    let marker = dir.path.join("ran");
    let admin = FakeAdmin::start(
        Box::new(|n| {
            if n < 3 {
                respond("503 Service Unavailable")
            } else {
                respond("200 OK")
            }
        }),
        Some(marker.clone()),
    );
    let script = format!("touch '{}'; exit 7", marker.display());
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--shutdown",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert!(marker.exists(), "the command ran");
    let seen = admin.seen();
    let readies = admin.count("GET", "/ready");
    assert_eq!(readies, 4, "polled until the first 200: {seen:?}");
    assert_eq!(admin.count("POST", "/shutdown"), 1, "{seen:?}");
    let last = seen.last().expect("requests were made");
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/shutdown")
    );
    assert!(
        last.marker_existed,
        "shutdown was posted after the command ran"
    );
    let log = stderr(&out);
    assert!(log.contains("proxy not ready yet: HTTP 503"), "{log}");
    assert!(log.contains("asked the proxy to shut down"), "{log}");
}

#[test]
fn await_timeout_never_runs_the_command() {
    let dir = TempDir::new("weft-await-test");
    let marker = dir.path.join("ran");
    let admin = FakeAdmin::start(Box::new(|_| respond("503 Service Unavailable")), None);
    let script = format!("touch '{}'", marker.display());
    let (out, elapsed) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--timeout",
            "300ms",
            "--shutdown",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(69),
        "EX_UNAVAILABLE; stderr: {}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the command must not run");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(admin.count("GET", "/ready") >= 2);
    // With --shutdown the proxy is still asked to stop, so the pod ends.
    assert_eq!(admin.count("POST", "/shutdown"), 1);
    let log = stderr(&out);
    assert!(log.contains("not ready after 300ms"), "{log}");
    assert!(log.contains("not running the command"), "{log}");
}

#[test]
fn await_disabled_skips_wait_and_shutdown() {
    let dir = TempDir::new("weft-await-test");
    let marker = dir.path.join("ran");
    let admin = FakeAdmin::start(Box::new(|_| respond("503 Service Unavailable")), None);
    let script = format!("touch '{}'; exit 5", marker.display());
    let (out, _) = run_await(
        &[
            // The `--name=value` form is accepted too.
            &format!("--port={}", admin.port),
            "--timeout=10s",
            "--shutdown",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("WEFT_AWAIT_DISABLED", "1")],
    );
    assert_eq!(out.status.code(), Some(5), "stderr: {}", stderr(&out));
    assert!(marker.exists());
    assert!(
        admin.seen().is_empty(),
        "no request at all: {:?}",
        admin.seen()
    );
    assert!(stderr(&out).contains("WEFT_AWAIT_DISABLED=1"));
}

#[test]
fn await_empty_disabled_value_does_not_disable() {
    let admin = FakeAdmin::start(Box::new(|_| respond("200 OK")), None);
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
        &[("WEFT_AWAIT_DISABLED", "")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(admin.count("GET", "/ready"), 1);
}

#[test]
fn await_keeps_polling_through_malformed_responses() {
    let admin = FakeAdmin::start(
        Box::new(|n| match n {
            0 => b"garbage\r\n\r\n".to_vec(),
            1 => Vec::new(),
            2 => b"HTTP/1.1 2000 Weird\r\n\r\n".to_vec(),
            _ => respond("200 OK"),
        }),
        None,
    );
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(admin.count("GET", "/ready"), 4);
    let log = stderr(&out);
    assert!(log.contains("malformed HTTP status line"), "{log}");
    assert!(
        log.contains("closed the connection without a response"),
        "{log}"
    );
}

/// Starts weft-await with a command that traps SIGTERM (exit 3) after
/// announcing itself via a file, sends SIGTERM to weft-await, and returns
/// its exit code.
fn sigterm_case(extra: &[&str], admin: &FakeAdmin) -> (Option<i32>, String) {
    let dir = TempDir::new("weft-await-test");
    let started = dir.path.join("started");
    let script = format!(
        "trap 'exit 3' TERM; touch '{}'; while :; do sleep 0.05; done",
        started.display()
    );
    let port = admin.port.to_string();
    let mut args: Vec<&str> = vec!["--port", &port];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    let mut child = bin(WEFT_AWAIT)
        .args(&args)
        .env_remove("WEFT_AWAIT_DISABLED")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft-await");
    assert!(
        wait_for_file(&started, Duration::from_secs(20)),
        "the command never started"
    );
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: sending SIGTERM to a child process this test spawned.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weft-await did not exit after SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    (status.code(), log)
}

#[test]
fn await_forwards_sigterm_to_the_command() {
    let admin = FakeAdmin::start(Box::new(|_| respond("200 OK")), None);
    let (code, log) = sigterm_case(&["--shutdown"], &admin);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("forwarded SIGTERM"), "{log}");
    assert_eq!(admin.count("POST", "/shutdown"), 1);
}

#[test]
fn await_without_shutdown_execs_so_signals_reach_the_command() {
    let admin = FakeAdmin::start(Box::new(|_| respond("200 OK")), None);
    let (code, log) = sigterm_case(&[], &admin);
    assert_eq!(code, Some(3), "{log}");
    assert_eq!(admin.count("POST", "/shutdown"), 0);
}

#[test]
fn await_reports_death_by_signal_as_128_plus_signal() {
    let admin = FakeAdmin::start(Box::new(|_| respond("200 OK")), None);
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--shutdown",
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(143), "stderr: {}", stderr(&out));
    assert_eq!(admin.count("POST", "/shutdown"), 1);
}

#[test]
fn await_missing_command_exits_127_and_still_shuts_down() {
    let admin = FakeAdmin::start(Box::new(|_| respond("200 OK")), None);
    // A PATH of readable directories only: an unreadable PATH entry turns
    // "not found" into EACCES (execvp semantics), i.e. 126.
    let path = [("PATH", "/usr/local/bin:/usr/bin:/bin")];
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--shutdown",
            "--",
            "weft-no-such-command-xyz",
        ],
        &path,
    );
    assert_eq!(out.status.code(), Some(127), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("weft-no-such-command-xyz: command not found"));
    assert_eq!(admin.count("POST", "/shutdown"), 1);

    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--",
            "weft-no-such-command-xyz",
        ],
        &path,
    );
    assert_eq!(
        out.status.code(),
        Some(127),
        "exec path; stderr: {}",
        stderr(&out)
    );
}

#[test]
fn await_shutdown_refused_keeps_the_command_status() {
    // The proxy's shutdown endpoint is disabled (404): warn, keep the status.
    let admin =
        FakeAdmin::with_shutdown_status(Box::new(|_| respond("200 OK")), None, "404 Not Found");
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--shutdown",
            "--",
            "sh",
            "-c",
            "exit 4",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(4), "stderr: {}", stderr(&out));
    assert_eq!(admin.count("POST", "/shutdown"), 1);
    let log = stderr(&out);
    assert!(log.contains("answered HTTP 404"), "{log}");
    assert!(log.contains("shutdown endpoint enabled"), "{log}");
}

#[test]
fn await_usage_errors_exit_64() {
    let cases: &[&[&str]] = &[
        &["--shutdown"],
        &["--timeout", "5", "--", "true"],
        &["--port", "0x10", "--", "true"],
        &["--bogus"],
    ];
    for args in cases {
        let (out, _) = run_await(args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    let help = support::output(bin(WEFT_AWAIT).arg("--help"));
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--port", "--timeout", "--shutdown", "WEFT_AWAIT_DISABLED"] {
        assert!(text.contains(flag), "--help mentions {flag}: {text}");
    }
}

#[test]
fn await_without_command_only_waits() {
    let admin = FakeAdmin::start(
        Box::new(|n| {
            if n == 0 {
                respond("503 Service Unavailable")
            } else {
                respond("200 OK")
            }
        }),
        None,
    );
    let (out, _) = run_await(&["--port", &admin.port.to_string()], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(admin.count("GET", "/ready"), 2);
    assert_eq!(admin.count("POST", "/shutdown"), 0);
}

#[test]
fn await_command_starts_with_no_blocked_signals() {
    // weft-await blocks the forwarded signals in itself; the command must
    // not inherit that mask, or a forwarded SIGTERM would never arrive.
    let admin = FakeAdmin::start(Box::new(|_| respond("200 OK")), None);
    let (out, _) = run_await(
        &[
            "--port",
            &admin.port.to_string(),
            "--shutdown",
            "--",
            "grep",
            "^SigBlk:",
            "/proc/self/status",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mask = line.trim_start_matches("SigBlk:").trim();
    let mask = u64::from_str_radix(mask, 16).unwrap_or(u64::MAX);
    let forwarded: u64 = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGCHLD,
    ]
    .iter()
    .map(|signal| 1u64 << (signal - 1))
    .sum();
    assert_eq!(
        mask & forwarded,
        0,
        "child inherited blocked signals: {line}"
    );
}
