//! A minimal blocking HTTP/1.1 client for the proxy's loopback admin port.
//!
//! `weft-await` makes exactly two kinds of request — `GET /ready` and
//! `POST /shutdown` — to Weft's own admin server on `127.0.0.1`, and only
//! needs the status code back. That is a few dozen lines over
//! [`std::net::TcpStream`]; an HTTP library and an async runtime would
//! multiply the size of a binary that is copied into job images (see
//! `docs/init.md`, "Why weft-await has its own HTTP client"). What this
//! client must still get right, and is tested for: timeouts on every step,
//! a status line that is missing, truncated, overlong or malformed is an
//! error value (never a panic), and the response is drained so the server
//! does not see a reset.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest status line accepted.
pub const MAX_STATUS_LINE: usize = 1024;
/// At most this much of the rest of a response is read and discarded.
pub const MAX_DRAIN: usize = 64 * 1024;

/// Request methods used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST` (with an empty body).
    Post,
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The status code, 100–599.
    pub code: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
}

impl Status {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No TCP connection (typically: the proxy is not listening yet).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The request or response took too long.
    #[error("no response from {addr} within {timeout:?}")]
    TimedOut {
        /// The admin address.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// Reading or writing failed.
    #[error("talking to {addr} failed: {source}")]
    Io {
        /// The admin address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The connection closed before a status line arrived.
    #[error("{addr} closed the connection without a response")]
    Empty {
        /// The admin address.
        addr: SocketAddr,
    },
    /// The status line is not `HTTP/1.x NNN reason`.
    #[error("malformed HTTP status line {line:?}")]
    Malformed {
        /// The line (lossily decoded).
        line: String,
    },
    /// No end of line within [`MAX_STATUS_LINE`] bytes.
    #[error("HTTP status line longer than {MAX_STATUS_LINE} bytes")]
    TooLong,
}

/// The request bytes. `Connection: close` keeps the exchange to one
/// request per connection.
pub fn render_request(method: Method, path: &str, host: &str) -> String {
    let (name, body_headers) = match method {
        Method::Get => ("GET", ""),
        Method::Post => ("POST", "Content-Length: 0\r\n"),
    };
    format!(
        "{name} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weft-await/{}\r\n{body_headers}Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses a status line (without its line ending). Pure.
pub fn parse_status_line(line: &[u8]) -> Result<Status, HttpError> {
    let malformed = || HttpError::Malformed {
        line: String::from_utf8_lossy(line).into_owned(),
    };
    let text = std::str::from_utf8(line).map_err(|_| malformed())?;
    let rest = text.strip_prefix("HTTP/1.").ok_or_else(malformed)?;
    let mut chars = rest.chars();
    if !matches!(chars.next(), Some('0' | '1')) || chars.next() != Some(' ') {
        return Err(malformed());
    }
    let rest = chars.as_str();
    let (code, reason) = match rest.split_once(' ') {
        Some((code, reason)) => (code, reason),
        None => (rest, ""),
    };
    let valid_code = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.as_bytes()[0], b'1'..=b'5');
    if !valid_code {
        return Err(malformed());
    }
    let code: u16 = code.parse().map_err(|_| malformed())?;
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(malformed());
    }
    Ok(Status {
        code,
        reason: reason.to_owned(),
    })
}

/// Reads up to the first `\n`; returns the line without `\r\n`.
fn read_status_line(
    stream: &mut TcpStream,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    let mut buffer: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            buffer.truncate(end);
            if buffer.last() == Some(&b'\r') {
                buffer.pop();
            }
            return Ok(buffer);
        }
        if buffer.len() > MAX_STATUS_LINE {
            return Err(HttpError::TooLong);
        }
        set_read_deadline(stream, deadline, addr, timeout)?;
        match stream.read(&mut chunk) {
            Ok(0) if buffer.is_empty() => return Err(HttpError::Empty { addr }),
            Ok(0) => {
                return Err(HttpError::Malformed {
                    line: String::from_utf8_lossy(&buffer).into_owned(),
                })
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(classify_io(error, addr, timeout)),
        }
    }
}

fn set_read_deadline(
    stream: &TcpStream,
    deadline: Instant,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), HttpError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(HttpError::TimedOut { addr, timeout });
    }
    stream
        .set_read_timeout(Some(remaining))
        .map_err(|source| HttpError::Io { addr, source })
}

fn classify_io(error: io::Error, addr: SocketAddr, timeout: Duration) -> HttpError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            HttpError::TimedOut { addr, timeout }
        }
        _ => HttpError::Io {
            addr,
            source: error,
        },
    }
}

/// Sends one request and returns the response status. Every step shares
/// one `timeout`.
pub fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<Status, HttpError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|source| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            HttpError::TimedOut { addr, timeout }
        } else {
            HttpError::Connect { addr, source }
        }
    })?;
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream
        .set_write_timeout(Some(remaining))
        .map_err(|source| HttpError::Io { addr, source })?;
    stream
        .write_all(render_request(method, path, &addr.to_string()).as_bytes())
        .map_err(|error| classify_io(error, addr, timeout))?;
    let line = read_status_line(&mut stream, addr, deadline, timeout)?;
    let status = parse_status_line(&line)?;
    drain(&mut stream, deadline);
    Ok(status)
}

/// Reads and discards the rest of the response (bounded in size and time)
/// so closing the socket does not reset the server's side mid-write.
fn drain(stream: &mut TcpStream, deadline: Instant) {
    let mut chunk = [0u8; 1024];
    let mut total = 0;
    while total < MAX_DRAIN {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::thread;

    #[test]
    fn status_line_table() {
        let ok: &[(&str, u16, &str)] = &[
            ("HTTP/1.1 200 OK", 200, "OK"),
            (
                "HTTP/1.0 503 Service Unavailable",
                503,
                "Service Unavailable",
            ),
            ("HTTP/1.1 204 ", 204, ""),
            ("HTTP/1.1 204", 204, ""),
            ("HTTP/1.1 404 Not\tFound", 404, "Not\tFound"),
            ("HTTP/1.1 100 Continue", 100, "Continue"),
        ];
        for (line, code, reason) in ok {
            let status =
                parse_status_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!((status.code, status.reason.as_str()), (*code, *reason));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b"HTTP/2 200 OK",
            b"HTTP/1.2 200 OK",
            b"http/1.1 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 600 Weird",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 +20 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 200 O\x00K",
            b"HTTP/1.1 200 \xff\xfe",
            b"SSH-2.0-OpenSSH_9.6",
            b"<html>",
        ];
        for line in bad {
            assert!(
                matches!(parse_status_line(line), Err(HttpError::Malformed { .. })),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(Status {
            code: 299,
            reason: String::new()
        }
        .is_success());
        assert!(!Status {
            code: 301,
            reason: String::new()
        }
        .is_success());
    }

    #[test]
    fn rendered_requests() {
        let get = render_request(Method::Get, "/ready", "127.0.0.1:4191");
        assert!(get.starts_with("GET /ready HTTP/1.1\r\nHost: 127.0.0.1:4191\r\n"));
        assert!(get.ends_with("Connection: close\r\n\r\n"));
        assert!(!get.contains("Content-Length"));
        let post = render_request(Method::Post, "/shutdown", "127.0.0.1:4191");
        assert!(post.starts_with("POST /shutdown HTTP/1.1\r\n"));
        assert!(post.contains("Content-Length: 0\r\n"));
    }

    /// Serves one connection: reads the request head, then writes `reply`
    /// (unless `None`: then it keeps the connection open silently).
    fn serve_once(reply: Option<Vec<u8>>) -> (SocketAddr, thread::JoinHandle<String>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return String::new();
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            match reply {
                Some(reply) => {
                    let _ = stream.write_all(&reply);
                }
                None => thread::sleep(Duration::from_millis(500)),
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, handle)
    }

    #[test]
    fn request_against_canned_servers() {
        let long_line = [b'x'; 2000].to_vec();
        let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
            (
                Some(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n".to_vec()),
                "200",
            ),
            (
                Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n".to_vec()),
                "503",
            ),
            (Some(b"HTTP/1.0 204 No Content\n\n".to_vec()), "204"),
            (Some(Vec::new()), "empty"),
            (Some(b"HTTP/1.1 200".to_vec()), "malformed"),
            (Some(b"nonsense\r\n".to_vec()), "malformed"),
            (Some(long_line), "too long"),
            (None, "timed out"),
        ];
        for (reply, want) in cases {
            let (addr, server) = serve_once(reply.clone());
            let result = request(addr, Method::Get, "/ready", Duration::from_millis(300));
            let got = match &result {
                Ok(status) => status.code.to_string(),
                Err(HttpError::Empty { .. }) => "empty".into(),
                Err(HttpError::Malformed { .. }) => "malformed".into(),
                Err(HttpError::TooLong) => "too long".into(),
                Err(HttpError::TimedOut { .. }) => "timed out".into(),
                Err(other) => format!("other: {other}"),
            };
            assert_eq!(
                got,
                want,
                "{:?}",
                reply.map(|r| String::from_utf8_lossy(&r).into_owned())
            );
            let head = server.join().expect("server thread");
            assert!(head.starts_with("GET /ready HTTP/1.1\r\n"), "{head}");
        }
    }

    #[test]
    fn connection_refused_is_a_connect_error() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let result = request(addr, Method::Post, "/shutdown", Duration::from_millis(300));
        assert!(
            matches!(result, Err(HttpError::Connect { .. })),
            "{result:?}"
        );
        let message = result.map(|_| ()).expect_err("refused").to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
    }
}
