//! HTTP through the real proxy on loopback: HTTP/1 keep-alive and chunked bodies, HTTP/2
//! with trailers, WebSocket upgrades, X-Forwarded-For, hop-by-hop headers, errors, and the
//! metrics those requests leave behind.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn http1_keepalive_reuses_one_upstream_connection_and_counts_exactly() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let mut client = h1_client(proxy.addrs.outbound).await;
    for _ in 0..3 {
        let rsp = client.send_request(get("/hello")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(body_string(rsp).await, "hello");
    }
    let rsp = client.send_request(get("/fail")).await.unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(body_string(rsp).await, "unavailable");
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let text = proxy.metrics.encode();
    let target = format!("target_addr=\"{}\"", server.addr);
    let out = "direction=\"outbound\"";
    let auth = "authority=\"web.apps:80\"";
    assert_eq!(
        metric(
            &text,
            "request_total",
            &[out, auth, &target, "tls=\"no_identity\""]
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "response_total",
            &[
                out,
                &target,
                "status_code=\"200\"",
                "classification=\"success\""
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "response_total",
            &[
                out,
                &target,
                "status_code=\"503\"",
                "classification=\"failure\""
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "response_latency_ms_count",
            &[out, "status_code=\"200\""]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "tcp_open_total", &[out, "peer=\"src\"", &target]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tcp_open_connections", &[out, &target]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "tcp_detect_total", &[out, "result=\"http1\""]),
        Some(1.0)
    );
    let read = metric(&text, "tcp_read_bytes_total", &[out, &target]).unwrap();
    let written = metric(&text, "tcp_write_bytes_total", &[out, &target]).unwrap();
    // The bytes the client wrote, exactly; responses carry a date header, so only bound them.
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: web.apps:80\r\n\r\n").len();
    assert_eq!(
        read,
        (3 * request("/hello") + request("/fail")) as f64,
        "{text}"
    );
    assert!(written > (3 * "hello".len() + "unavailable".len()) as f64);

    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(&text, "tcp_open_connections", &[out, &target]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "tcp_close_total",
            &[out, &target, "classification=\"success\""]
        ),
        Some(1.0)
    );
}

/// A body of `chunks` chunks of `size` bytes, produced on the fly (no length known up front).
struct Generated {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

#[tokio::test]
async fn http1_chunked_request_and_response_stream_through() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let mut client = h1_client(proxy.addrs.outbound).await;
    let body = Generated {
        left: 10,
        chunk: Bytes::from(vec![b'x'; 1000]),
    };
    let req = Request::post("/echo")
        .header("host", "web.apps:80")
        .body(body.boxed())
        .unwrap();
    let rsp = client.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    // The echoed response has no length either: it is chunked end to end.
    assert_eq!(rsp.headers().get("transfer-encoding").unwrap(), "chunked");
    let got = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 10_000);
    assert!(got.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn raw_chunked_request_is_reframed_for_the_server() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let req = b"POST /count HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let rsp = raw_exchange(proxy.addrs.outbound, req, Duration::from_secs(5)).await;
    assert!(rsp.starts_with("HTTP/1.1 200 OK\r\n"), "{rsp}");
    assert!(rsp.ends_with("\r\n\r\n11"), "{rsp}");
}

#[tokio::test]
async fn http2_prior_knowledge_with_trailers() {
    let server = http_server(Proto::H2).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let mut client = h2_client(proxy.addrs.outbound).await;
    let req = Request::post("http://grpc.apps:8080/trailers")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full("request"))
        .unwrap();
    let rsp = client.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers must arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"payload"));

    // Several concurrent streams share one upstream connection.
    let mut handles = Vec::new();
    for _ in 0..5 {
        let mut c = client.clone();
        handles.push(tokio::spawn(async move {
            let rsp = c
                .send_request(
                    Request::get("http://grpc.apps:8080/hello")
                        .body(empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            body_string(rsp).await
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), "hello");
    }
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(&text, "request_total", &["authority=\"grpc.apps:8080\""]),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tcp_detect_total", &["result=\"http2\""]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "response_total",
            &[
                "status_code=\"200\"",
                "classification=\"success\"",
                "grpc.apps"
            ]
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn grpc_error_in_trailers_is_a_failure() {
    let server = http_server(Proto::H2).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let mut client = h2_client(proxy.addrs.outbound).await;
    let rsp = client
        .send_request(
            Request::get("http://grpc.apps:8080/grpc-fail")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let collected = rsp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "13");
    let rsp = client
        .send_request(
            Request::get("http://grpc.apps:8080/fail")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    let _ = body_string(rsp).await;
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(
            &text,
            "response_total",
            &["status_code=\"200\"", "classification=\"failure\""]
        ),
        Some(1.0),
        "grpc-status 13 in the trailers makes a 200 a failure"
    );
    assert_eq!(
        metric(
            &text,
            "response_total",
            &["status_code=\"503\"", "classification=\"failure\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "response_total", &["classification=\"success\""]),
        None
    );
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let mut s = TcpStream::connect(proxy.addrs.outbound).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: ws.apps\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    for msg in [
        &b"ping"[..],
        b"frames are just bytes now",
        &[0u8, 159, 255, 1],
    ] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test]
async fn inbound_adds_x_forwarded_for_and_strips_hop_by_hop() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let mut client = h1_client(proxy.addrs.inbound).await;
    let req = Request::get("/headers")
        .header("host", "web.apps")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-keep", "yes")
        .body(empty())
        .unwrap();
    let rsp = client.send_request(req).await.unwrap();
    let seen = body_string(rsp).await;
    assert_eq!(
        seen, "host=web.apps\nx-forwarded-for=203.0.113.7, 127.0.0.1\nx-keep=yes",
        "the server saw exactly these headers"
    );
    // Outbound does not add X-Forwarded-For.
    let mut client = h1_client(proxy.addrs.outbound).await;
    let rsp = client.send_request(get("/headers")).await.unwrap();
    assert_eq!(body_string(rsp).await, "host=web.apps:80");
}

#[tokio::test]
async fn unreachable_target_is_a_502_with_a_reason() {
    // Bind then drop to get a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(closed, &[]).await;
    let mut client = h1_client(proxy.addrs.outbound).await;
    let rsp = client.send_request(get("/hello")).await.unwrap();
    assert_eq!(rsp.status(), 502);
    let reason = rsp.headers()["weft-proxy-error"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with(&format!("connecting to {closed} failed")),
        "{reason}"
    );
    assert_eq!(body_string(rsp).await, format!("weft-proxy: {reason}\n"));
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(
            &text,
            "response_total",
            &["status_code=\"502\"", "classification=\"failure\""]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_4xx() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[("WEFT_PROXY_MAX_HEADER_BYTES", "16384")]).await;
    let addr = proxy.addrs.outbound;
    let t = Duration::from_secs(5);

    let bad_header = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
        t,
    )
    .await;
    assert!(
        bad_header.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{bad_header:?}"
    );

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let rsp = raw_exchange(addr, huge.as_bytes(), t).await;
    assert!(
        rsp.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{rsp:?}"
    );

    // A URI over hyper's 64 KiB URI limit, inside a head limit large enough to hold it.
    let roomy = start_proxy(server.addr, &[("WEFT_PROXY_MAX_HEADER_BYTES", "131072")]).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(70_000));
    let rsp = raw_exchange(roomy.addrs.outbound, long_uri.as_bytes(), t).await;
    assert!(
        rsp.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
        "{:?}",
        &rsp[..rsp.len().min(80)]
    );

    // Nothing reached the server.
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn slow_headers_are_timed_out() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[("WEFT_PROXY_HEADER_READ_TIMEOUT", "300ms")]).await;
    let mut s = TcpStream::connect(proxy.addrs.outbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        n.is_ok(),
        "the proxy must close a client that never finishes its headers"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
