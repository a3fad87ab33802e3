//! Ingress mode: requests follow `weft-dst-override` / `l5d-dst-override` (stripped before
//! forwarding), else the original destination; non-HTTP bytes pass through untouched.

mod support;

use http::Request;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn requests_follow_the_override_header_which_is_stripped() {
    let a = http_server(Proto::H1).await; // where the connection was going
    let b = http_server(Proto::H1).await; // where the header sends it
    let proxy = start_proxy(a.addr, &[("WEFT_PROXY_INGRESS_MODE", "true")]).await;
    let mut c = h1_client(proxy.addrs.outbound).await;
    // On one keep-alive connection: routed per request.
    for (header, target) in [
        (Some(("l5d-dst-override", b.addr.to_string())), "b"),
        (None, "a"),
        (Some(("weft-dst-override", b.addr.to_string())), "b"),
        (
            Some(("l5d-dst-override", format!("localhost:{}", b.addr.port()))),
            "b by name",
        ),
    ] {
        let mut req = Request::get("/headers").header("host", "web.example");
        if let Some((k, v)) = &header {
            req = req.header(*k, v.as_str());
        }
        let rsp = c.send_request(req.body(empty()).unwrap()).await.unwrap();
        assert_eq!(rsp.status(), 200, "{target}");
        // The upstream never sees the override header.
        assert_eq!(body_string(rsp).await, "host=web.example", "{target}");
    }
    let text = proxy.metrics.encode();
    // Three requests reached b over one reused connection (the name resolved to b's
    // address), one reached a.
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        metric(&text, "request_total", &["direction=\"outbound\""]),
        Some(4.0)
    );

    let bad = Request::get("/hello")
        .header("host", "x")
        .header("l5d-dst-override", "not a host")
        .body(empty())
        .unwrap();
    let rsp = c.send_request(bad).await.unwrap();
    assert_eq!(rsp.status(), 400);
    assert_eq!(
        rsp.headers()["weft-proxy-error"],
        "invalid l5d-dst-override value \"not a host\": expected HOST:PORT or IP:PORT"
    );
}

#[tokio::test]
async fn without_ingress_mode_the_header_is_just_a_header() {
    let a = http_server(Proto::H1).await;
    let b = http_server(Proto::H1).await;
    let proxy = start_proxy(a.addr, &[]).await;
    let mut c = h1_client(proxy.addrs.outbound).await;
    let req = Request::get("/headers")
        .header("host", "x")
        .header("l5d-dst-override", b.addr.to_string())
        .body(empty())
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    assert_eq!(
        body_string(rsp).await,
        format!("host=x\nl5d-dst-override={}", b.addr)
    );
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn tls_from_the_ingress_controller_passes_through_untouched() {
    // Traefik talking TLS to the Kubernetes API: opaque bytes, forwarded as they are.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"\x16\x03\x03reply").await.unwrap();
        buf
    });
    let proxy = start_proxy(api, &[("WEFT_PROXY_INGRESS_MODE", "true")]).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addrs.outbound)
        .await
        .unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00\x01").await.unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"\x16\x03\x03reply");
    assert_eq!(got.await.unwrap(), b"\x16\x03\x01\x02\x00\x01");
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(&text, "tcp_detect_total", &["result=\"opaque\""]),
        Some(1.0)
    );
}
