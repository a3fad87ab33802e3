//! Protocol detection: HTTP/2 preface, HTTP/1 request line, or opaque TCP.
//!
//! [`classify`] is a pure function over the bytes read so far; [`detect`] reads from the
//! socket until `classify` decides or the detection timeout passes. A client that says
//! nothing before the timeout (a server-speaks-first protocol on a port nobody marked as
//! opaque) is treated as opaque TCP, never failed. Whatever was read is handed on, to be
//! replayed by [`crate::io::PrefixedIo`].

use bytes::BytesMut;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes read before a plausible-but-unfinished HTTP/1 request line is handed to the HTTP
/// server anyway (which answers 414 if the line is really that long).
pub const MAX_DETECT_BYTES: usize = 8 * 1024;

/// Longest method token we accept as plausibly HTTP.
const MAX_METHOD_LEN: usize = 20;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    Opaque,
}

/// What [`classify`] concluded from the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Found(Protocol),
    NeedMore,
}

/// How detection ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Http1,
    Http2,
    /// The bytes are not HTTP.
    Opaque,
    /// The port is configured as opaque: nothing was read.
    OpaquePort,
    /// No decision before the timeout: forwarded as opaque.
    Timeout,
    /// The client closed before sending anything decisive: forwarded as opaque.
    Closed,
}

impl Outcome {
    pub fn protocol(self) -> Protocol {
        match self {
            Outcome::Http1 => Protocol::Http1,
            Outcome::Http2 => Protocol::Http2,
            _ => Protocol::Opaque,
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Http1 => "http1",
            Outcome::Http2 => "http2",
            Outcome::Opaque => "opaque",
            Outcome::OpaquePort => "opaque_port",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
        }
    }
}

/// Decides from the first bytes of a connection.
pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Found(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
            if is_http1_request_line(line) {
                Verdict::Found(Protocol::Http1)
            } else {
                Verdict::Found(Protocol::Opaque)
            }
        }
        None if !could_be_request_line(buf) => Verdict::Found(Protocol::Opaque),
        // Plausibly HTTP but very long: let the HTTP server judge it (and say 414).
        None if buf.len() >= MAX_DETECT_BYTES => Verdict::Found(Protocol::Http1),
        None => Verdict::NeedMore,
    }
}

/// `METHOD SP request-target SP HTTP/1.x`
fn is_http1_request_line(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_method(method)
        && !target.is_empty()
        && target.iter().all(|b| b.is_ascii_graphic())
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

fn is_method(m: &[u8]) -> bool {
    !m.is_empty()
        && m.len() <= MAX_METHOD_LEN
        && m.iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
}

/// Could these bytes (no newline yet) still become an HTTP/1 request line?
fn could_be_request_line(buf: &[u8]) -> bool {
    let (method, rest) = match buf.iter().position(|&b| b == b' ') {
        Some(sp) => (&buf[..sp], Some(&buf[sp + 1..])),
        None => (buf, None),
    };
    if method.len() > MAX_METHOD_LEN
        || !method
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
    {
        return false;
    }
    match rest {
        None => true,
        Some(rest) => {
            !method.is_empty()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r')
        }
    }
}

/// Reads from `io` until the protocol is known, the peer closes, or `timeout` passes.
/// Returns the outcome and every byte read (to be replayed).
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> io::Result<(Outcome, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let read_until_decided = async {
        loop {
            if buf.len() >= MAX_DETECT_BYTES {
                // classify() decides at this length; this guards the loop regardless.
                return Ok::<Outcome, io::Error>(Outcome::Opaque);
            }
            buf.reserve(1024);
            let n = io.read_buf(&mut buf).await?;
            if n == 0 {
                return Ok(Outcome::Closed);
            }
            match classify(&buf) {
                Verdict::Found(Protocol::Http1) => return Ok(Outcome::Http1),
                Verdict::Found(Protocol::Http2) => return Ok(Outcome::Http2),
                Verdict::Found(Protocol::Opaque) => return Ok(Outcome::Opaque),
                Verdict::NeedMore => {}
            }
        }
    };
    let outcome = match tokio::time::timeout(timeout, read_until_decided).await {
        Ok(res) => res?,
        Err(_) => Outcome::Timeout,
    };
    Ok((outcome, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classify_table() {
        use Protocol::*;
        use Verdict::*;
        let long_uri = format!("GET /{} ", "a".repeat(MAX_DETECT_BYTES));
        let cases: Vec<(&[u8], Verdict)> = vec![
            (b"", NeedMore),
            (b"G", NeedMore),
            (b"GET", NeedMore),
            (b"GET /index.html HTTP/1.1", NeedMore),
            (b"GET /index.html HTTP/1.1\r\n", Found(Http1)),
            (b"POST /api HTTP/1.0\r\nHost: x\r\n\r\n", Found(Http1)),
            (b"M-SEARCH * HTTP/1.1\n", Found(Http1)),
            (b"CONNECT example.org:443 HTTP/1.1\r\n", Found(Http1)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Found(Http2)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
                Found(Http2),
            ),
            (b"PRI * HTTP/2.0\r\n", NeedMore),
            (b"PRI", NeedMore),
            // Redis inline command: a line, but not a request line.
            (b"PING\r\n", Found(Opaque)),
            (b"GET key\r\n", Found(Opaque)),
            (b"get / HTTP/1.1\r\n", Found(Opaque)),
            (b"GET / HTTP/2.0\r\n", Found(Opaque)),
            (b"GET  / HTTP/1.1\r\n", Found(Opaque)),
            // TLS ClientHello and other binary protocols are opaque at once.
            (b"\x16\x03\x01\x02\x00\x01", Found(Opaque)),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", Found(Opaque)),
            (b"hello", Found(Opaque)),
            (b"SSH-2.0-OpenSSH_9.2", Found(Opaque)),
            (long_uri.as_bytes(), Found(Http1)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                classify(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test]
    async fn detect_reads_across_segments() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            client.write_all(b"GET / HT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .write_all(b"TP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            client
        });
        let (outcome, buf) = detect(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(outcome, Outcome::Http1);
        assert!(buf.starts_with(b"GET / HTTP/1.1\r\n"));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_to_opaque() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (outcome, buf) = detect(&mut server, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Timeout);
        assert!(buf.is_empty());
        assert_eq!(outcome.protocol(), Protocol::Opaque);
    }

    #[tokio::test]
    async fn close_before_data_is_closed() {
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let (outcome, buf) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
        assert_eq!((outcome, buf.len()), (Outcome::Closed, 0));
    }
}
