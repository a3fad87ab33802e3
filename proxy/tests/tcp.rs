//! Opaque TCP through the real proxy: server-speaks-first protocols on opaque ports answer
//! at once, silence on other ports falls back to TCP after the detection timeout, and
//! half-closed connections keep flowing the other way.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that speaks first (like SMTP, MySQL, PostgreSQL's SSL-less banner): it writes a
/// greeting the moment a client connects, then echoes one line.
async fn banner_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"220 weft-test ESMTP ready\r\n").await;
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await {
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    });
    addr
}

/// Echoes everything until the client half-closes, then sends a trailer and closes.
async fn echo_until_eof_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s.write_all(&all).await;
                let _ = s
                    .write_all(format!("|{} bytes after your FIN", all.len()).as_bytes())
                    .await;
            });
        }
    });
    addr
}

async fn read_banner(addr: SocketAddr) -> (String, Duration, TcpStream) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 27];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    (String::from_utf8(buf).unwrap(), started.elapsed(), s)
}

#[tokio::test]
async fn server_speaks_first_on_an_opaque_port_without_delay() {
    let server = banner_server().await;
    // A long detection timeout proves the opaque port skips detection entirely.
    let ports = server.port().to_string();
    let proxy = start_proxy(
        server,
        &[
            ("WEFT_PROXY_OPAQUE_PORTS", &ports),
            ("WEFT_PROXY_DETECT_TIMEOUT", "10s"),
        ],
    )
    .await;
    let (banner, waited, mut s) = read_banner(proxy.addrs.outbound).await;
    assert_eq!(banner, "220 weft-test ESMTP ready\r\n");
    assert!(
        waited < Duration::from_millis(500),
        "banner took {waited:?}"
    );
    s.write_all(b"EHLO pi\r\n").await.unwrap();
    let mut echo = [0u8; 9];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"EHLO pi\r\n");
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(&text, "tcp_detect_total", &["result=\"opaque_port\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tcp_detect_total", &["result=\"timeout\""]),
        None
    );
}

#[tokio::test]
async fn silence_on_a_detected_port_falls_back_to_tcp_after_the_timeout() {
    let server = banner_server().await;
    let proxy = start_proxy(
        server,
        &[
            ("WEFT_PROXY_OPAQUE_PORTS", ""),
            ("WEFT_PROXY_DETECT_TIMEOUT", "300ms"),
        ],
    )
    .await;
    let (banner, waited, _s) = read_banner(proxy.addrs.outbound).await;
    assert_eq!(banner, "220 weft-test ESMTP ready\r\n");
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(
            &text,
            "tcp_detect_total",
            &["direction=\"outbound\"", "result=\"timeout\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn non_http_bytes_are_forwarded_as_opaque_with_half_close() {
    let server = echo_until_eof_server().await;
    let proxy = start_proxy(server, &[("WEFT_PROXY_OPAQUE_PORTS", "")]).await;
    let mut s = TcpStream::connect(proxy.addrs.outbound).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap(); // half-close: we are done sending, still reading
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    let trailer = b"|200000 bytes after your FIN";
    assert_eq!(back.len(), payload.len() + trailer.len());
    assert_eq!(&back[..payload.len()], &payload[..]);
    assert_eq!(&back[payload.len()..], trailer);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = proxy.metrics.encode();
    let target = format!("target_addr=\"{server}\"");
    assert_eq!(
        metric(&text, "tcp_detect_total", &["result=\"opaque\""]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tcp_read_bytes_total", &[&target]),
        Some(payload.len() as f64)
    );
    assert_eq!(
        metric(&text, "tcp_write_bytes_total", &[&target]),
        Some((payload.len() + trailer.len()) as f64)
    );
    assert_eq!(
        metric(
            &text,
            "tcp_close_total",
            &[&target, "classification=\"success\""]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "tcp_open_connections", &[&target]), Some(0.0));
}

#[tokio::test]
async fn connection_limit_queues_extra_connections() {
    let server = banner_server().await;
    let ports = server.port().to_string();
    let proxy = start_proxy(
        server,
        &[
            ("WEFT_PROXY_OPAQUE_PORTS", &ports),
            ("WEFT_PROXY_MAX_CONNECTIONS", "1"),
        ],
    )
    .await;
    let (_, _, first) = read_banner(proxy.addrs.outbound).await;
    // The second connection is accepted by the kernel but not served while the first lives.
    let mut second = TcpStream::connect(proxy.addrs.outbound).await.unwrap();
    let mut buf = [0u8; 27];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut buf)).await;
    assert!(early.is_err(), "second connection must wait for a permit");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"220 weft-test ESMTP ready\r\n");
}

#[tokio::test]
async fn inbound_localhost_mode_forwards_to_127_0_0_1() {
    let server = banner_server().await;
    // The original destination is the pod IP (not bound here); localhost mode ignores it.
    let pod_ip = std::net::SocketAddr::new("198.18.0.77".parse().unwrap(), server.port());
    let ports = server.port().to_string();
    let proxy = start_proxy(
        pod_ip,
        &[
            ("WEFT_PROXY_OPAQUE_PORTS", &ports),
            ("WEFT_PROXY_INBOUND_FORWARD", "localhost"),
        ],
    )
    .await;
    let (banner, _, _s) = read_banner(proxy.addrs.inbound).await;
    assert_eq!(banner, "220 weft-test ESMTP ready\r\n");
    let text = proxy.metrics.encode();
    // Metrics still name the original destination.
    assert_eq!(
        metric(
            &text,
            "tcp_open_total",
            &["direction=\"inbound\"", "target_addr=\"198.18.0.77:"]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_resetting_mid_body_frees_the_connection() {
    let server = support::http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let s = TcpStream::connect(proxy.addrs.outbound).await.unwrap();
    let mut s = s;
    s.write_all(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[1u8; 10_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Reset, not a clean close.
    s.set_zero_linger().unwrap();
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = proxy.metrics.encode();
        let open = metric(&text, "tcp_open_connections", &["direction=\"outbound\""]);
        let closed = metric(&text, "tcp_close_total", &["direction=\"outbound\""]);
        if open == Some(0.0) && closed == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "connection not released: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_nobody_redirected_reports_its_own_address() {
    use weft_proxy::orig_dst::{OrigDst, SoOriginalDst};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    // No NAT entry (or no netfilter): the original destination is where it arrived.
    assert_eq!(SoOriginalDst.orig_dst(&accepted).unwrap(), addr);
}
