//! `weft-init --validate`: prove that outbound redirection really works.
//!
//! Installed rules are not the same as working rules (a CNI plugin may
//! rewrite the namespace, the backend chosen may not be the one the kernel
//! consults, …). So after installing, `weft-init --validate` binds a
//! listener on `127.0.0.1:<outgoing proxy port>` — the proxy is not running
//! yet during the init container — connects to a marker address that
//! nothing answers on (default `192.0.2.2:1404`, in TEST-NET-1, reserved for
//! documentation and never routed), and expects that connection to land on
//! its own listener and read back a random token. If it does not, the
//! redirect is not effective and the pod must not start.
//!
//! The check only makes sense when the process is not the proxy uid (whose
//! traffic is exempt by design), and covers IPv4 outbound redirection.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::exit;

/// Where `--validate` connects to unless `--validate-addr` says otherwise.
pub const DEFAULT_MARKER: &str = "192.0.2.2:1404";

/// How long the whole check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Validation failures.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The process runs as the proxy uid, whose traffic is never redirected.
    #[error("cannot validate while running as uid {uid}, the --proxy-uid whose connections are exempt from redirection; run weft-init as another user (e.g. 65534)")]
    RunningAsProxyUid {
        /// The uid.
        uid: u32,
    },
    /// The outgoing proxy port could not be bound (something already uses it).
    #[error("cannot listen on 127.0.0.1:{port} to validate the redirect: {source}")]
    Bind {
        /// The outgoing proxy port.
        port: u16,
        /// The OS error.
        source: io::Error,
    },
    /// The marker connection did not reach the listener.
    #[error("outbound redirect is not working: a connection to {marker} did not arrive at 127.0.0.1:{port} ({reason})")]
    NotRedirected {
        /// The marker address.
        marker: SocketAddr,
        /// The outgoing proxy port.
        port: u16,
        /// What happened instead.
        reason: String,
    },
    /// `/proc/self/status` could not be read for the current uid.
    #[error("cannot determine the current uid: {0}")]
    Uid(String),
}

impl ValidateError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ValidateError::RunningAsProxyUid { .. } => exit::USAGE,
            ValidateError::Bind { .. } | ValidateError::Uid(_) => exit::OS_ERR,
            ValidateError::NotRedirected { .. } => exit::CONFIG,
        }
    }
}

/// The effective uid from the text of `/proc/self/status` (the second
/// field of the `Uid:` line). Pure.
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|fields| fields.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

fn random_token() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    format!("weft-validate-{:016x}", hasher.finish())
}

/// Runs the check: see the module documentation.
pub fn validate(
    marker: SocketAddr,
    outgoing_port: u16,
    proxy_uid: u32,
    timeout: Duration,
) -> Result<(), ValidateError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| ValidateError::Uid(error.to_string()))?;
    let uid = effective_uid(&status)
        .ok_or_else(|| ValidateError::Uid("no Uid line in /proc/self/status".to_owned()))?;
    if uid == proxy_uid {
        return Err(ValidateError::RunningAsProxyUid { uid });
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, outgoing_port)).map_err(|source| {
        ValidateError::Bind {
            port: outgoing_port,
            source,
        }
    })?;
    let not_redirected = |reason: String| ValidateError::NotRedirected {
        marker,
        port: outgoing_port,
        reason,
    };
    let deadline = Instant::now() + timeout;
    let client = TcpStream::connect_timeout(&marker, timeout)
        .map_err(|error| not_redirected(format!("connect: {error}")))?;
    let (mut accepted, _) = accept_until(&listener, deadline)
        .map_err(|error| not_redirected(format!("accept: {error}")))?
        .ok_or_else(|| not_redirected("the connection went somewhere else".to_owned()))?;
    let token = random_token();
    accepted
        .set_nonblocking(false)
        .and_then(|()| accepted.write_all(token.as_bytes()))
        .map_err(|error| not_redirected(format!("write: {error}")))?;
    drop(accepted);
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    let mut received = String::new();
    client
        .set_read_timeout(Some(remaining))
        .and_then(|()| client.take(256).read_to_string(&mut received))
        .map_err(|error| not_redirected(format!("read: {error}")))?;
    if received == token {
        Ok(())
    } else {
        Err(not_redirected(format!(
            "read {received:?} instead of the token"
        )))
    }
}

/// Accepts one connection, polling until `deadline`; `Ok(None)` on timeout.
fn accept_until(
    listener: &TcpListener,
    deadline: Instant,
) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok(pair) => return Ok(Some(pair)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_table() {
        let cases: &[(&str, Option<u32>)] = &[
            ("Name:\tx\nUid:\t1000\t2102\t2102\t2102\n", Some(2102)),
            ("Uid:\t0\t0\t0\t0\n", Some(0)),
            ("Uid:\t0\n", None),
            ("Uid:\tx\ty\n", None),
            ("Gid:\t0\t0\n", None),
        ];
        for (status, want) in cases {
            assert_eq!(effective_uid(status), *want, "{status:?}");
        }
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
        assert!(random_token().starts_with("weft-validate-"));
    }

    #[test]
    fn listener_reachable_directly_validates() {
        // Without iptables, connecting straight to the listener's own
        // address exercises the accept/token path.
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let marker = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let uid = effective_uid(&std::fs::read_to_string("/proc/self/status").expect("procfs"))
            .expect("uid");
        let result = validate(marker, port, uid.wrapping_add(1), Duration::from_secs(2));
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn refuses_to_run_as_proxy_uid() {
        let uid = effective_uid(&std::fs::read_to_string("/proc/self/status").expect("procfs"))
            .expect("uid");
        let error = validate(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            1,
            uid,
            Duration::from_millis(100),
        )
        .expect_err("proxy uid");
        assert_eq!(error.exit_code(), exit::USAGE);
    }

    #[test]
    fn unreachable_marker_fails_with_config_code() {
        // Bind the "proxy port", then connect to a loopback port nobody
        // listens on: refused, so not redirected.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let uid = effective_uid(&std::fs::read_to_string("/proc/self/status").expect("procfs"))
            .expect("uid");
        let error = validate(
            SocketAddr::from((Ipv4Addr::LOCALHOST, closed_port)),
            port,
            uid.wrapping_add(1),
            Duration::from_millis(500),
        )
        .expect_err("refused");
        assert!(
            matches!(error, ValidateError::NotRedirected { .. }),
            "{error}"
        );
        assert_eq!(error.exit_code(), exit::CONFIG);
    }
}
