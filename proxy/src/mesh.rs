//! The mesh hop between two proxies: how an outbound proxy reaches a meshed peer.
//!
//! A meshed connection always goes to the peer pod's inbound port (4143), never to the
//! application port, over mutual TLS. ALPN says what is inside ([`ALPN_HTTP1`],
//! [`ALPN_HTTP2`], [`ALPN_OPAQUE`]); the first bytes inside the TLS stream are a
//! [`Header`] naming the application port and the client's identity. Because meshed
//! traffic is recognised by where it was sent (the inbound port itself) rather than by
//! sniffing bytes, no application port ever waits for protocol detection — server-speaks-
//! first protocols included — and non-mesh TLS to the app passes through untouched.
//!
//! The client's identity in the header is a claim; the inbound proxy accepts it only if
//! the client's verified certificate is valid for exactly that name.

use crate::detect::Protocol;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const ALPN_HTTP1: &[u8] = b"weft.dev/http1";
pub const ALPN_HTTP2: &[u8] = b"weft.dev/http2";
pub const ALPN_OPAQUE: &[u8] = b"weft.dev/opaque";

const MAGIC: &[u8; 4] = b"WEFT";
const VERSION: u8 = 1;
/// An identity name is a DNS name: at most 253 bytes.
const MAX_IDENTITY_LEN: usize = 253;

pub fn alpn_for(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::Http1 => ALPN_HTTP1,
        Protocol::Http2 => ALPN_HTTP2,
        Protocol::Opaque => ALPN_OPAQUE,
    }
}

pub fn protocol_for(alpn: Option<&[u8]>) -> Option<Protocol> {
    match alpn? {
        a if a == ALPN_HTTP1 => Some(Protocol::Http1),
        a if a == ALPN_HTTP2 => Some(Protocol::Http2),
        a if a == ALPN_OPAQUE => Some(Protocol::Opaque),
        _ => None,
    }
}

/// What a meshed connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The application port on the peer pod.
    pub port: u16,
    /// The client proxy's identity (a claim, checked against its certificate).
    pub client_identity: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a weft mesh header (bad magic)")]
    Magic,
    #[error("unsupported mesh header version {0}")]
    Version(u8),
    #[error("mesh header names port 0")]
    Port,
    #[error("mesh header identity is {0} bytes (at most 253)")]
    IdentityLength(usize),
    #[error("mesh header identity is not ASCII")]
    IdentityEncoding,
}

impl Header {
    /// `WEFT` · version (1) · port (u16 BE) · identity length (u8) · identity.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let id = self.client_identity.as_bytes();
        if id.len() > MAX_IDENTITY_LEN {
            return Err(HeaderError::IdentityLength(id.len()));
        }
        let mut out = Vec::with_capacity(8 + id.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        Ok(out)
    }

    /// Parses the fixed part: returns the port and how many identity bytes follow.
    pub fn decode_fixed(b: &[u8; 8]) -> Result<(u16, usize), HeaderError> {
        if &b[..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[4] != VERSION {
            return Err(HeaderError::Version(b[4]));
        }
        let port = u16::from_be_bytes([b[5], b[6]]);
        if port == 0 {
            return Err(HeaderError::Port);
        }
        let len = b[7] as usize;
        if len > MAX_IDENTITY_LEN {
            return Err(HeaderError::IdentityLength(len));
        }
        Ok((port, len))
    }

    /// Reads a header from the start of a (TLS) stream.
    pub async fn read<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Result<Header, HeaderError>> {
        let mut fixed = [0u8; 8];
        io.read_exact(&mut fixed).await?;
        let (port, len) = match Header::decode_fixed(&fixed) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let mut id = vec![0u8; len];
        io.read_exact(&mut id).await?;
        if !id.is_ascii() {
            return Ok(Err(HeaderError::IdentityEncoding));
        }
        let client_identity = String::from_utf8_lossy(&id).into_owned();
        Ok(Ok(Header {
            port,
            client_identity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn header_round_trips() {
        let h = Header {
            port: 5432,
            client_identity: "web.apps.serviceaccount.identity.weft.cluster.local".into(),
        };
        let bytes = h.encode().unwrap();
        assert_eq!(&bytes[..8], b"WEFT\x01\x15\x38\x33");
        let mut r = &bytes[..];
        assert_eq!(Header::read(&mut r).await.unwrap(), Ok(h));
    }

    #[test]
    fn bad_headers_are_named() {
        let cases: [(&[u8; 8], HeaderError); 4] = [
            (b"HTTP/1.1", HeaderError::Magic),
            (b"WEFT\x02\x00\x50\x00", HeaderError::Version(2)),
            (b"WEFT\x01\x00\x00\x00", HeaderError::Port),
            (b"WEFT\x01\x00\x50\xff", HeaderError::IdentityLength(255)),
        ];
        for (input, expected) in cases {
            assert_eq!(Header::decode_fixed(input), Err(expected));
        }
        let long = Header {
            port: 1,
            client_identity: "a".repeat(254),
        };
        assert_eq!(long.encode(), Err(HeaderError::IdentityLength(254)));
    }

    #[test]
    fn alpn_maps_both_ways() {
        for p in [Protocol::Http1, Protocol::Http2, Protocol::Opaque] {
            assert_eq!(protocol_for(Some(alpn_for(p))), Some(p));
        }
        assert_eq!(protocol_for(Some(b"h2")), None);
        assert_eq!(protocol_for(None), None);
    }
}
