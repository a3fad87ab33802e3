//! The admin server over real HTTP, and graceful drain of in-flight requests.

mod support;

use std::time::{Duration, Instant};
use support::*;
use weft_proxy::logging::LogHandle;
use weft_proxy::orig_dst::FixedOrigDst;
use weft_proxy::{App, Deps, Drained};

#[tokio::test]
async fn live_ready_and_metrics() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let admin = proxy.addrs.admin;
    assert_eq!(admin_get(admin, "/live").await, (200, "live\n".into()));
    assert_eq!(admin_get(admin, "/ready").await, (200, "ready\n".into()));
    let (status, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE request counter"), "{text}");
    assert!(
        text.contains("# TYPE response_latency_ms histogram"),
        "{text}"
    );
    assert!(metric(&text, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(metric(&text, "process_open_fds", &[]).unwrap() > 0.0);
    assert!(metric(&text, "process_start_time_seconds", &[]).unwrap() > 1.7e9);
    assert!(text.trim_end().ends_with("# EOF"));
    assert_eq!(admin_request(admin, "POST", "/live", "").await.0, 405);
    assert_eq!(admin_get(admin, "/nothing").await.0, 404);
}

#[tokio::test]
async fn shutdown_endpoint_is_off_by_default() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    let rsp = admin_request(proxy.addrs.admin, "POST", "/shutdown", "").await;
    assert_eq!(rsp, (404, "shutdown endpoint is not enabled\n".into()));
    assert_eq!(admin_get(proxy.addrs.admin, "/ready").await.0, 200);
    assert!(!proxy.task.is_finished());
}

#[tokio::test]
async fn shutdown_endpoint_drains_in_flight_requests_then_exits() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(
        server.addr,
        &[
            ("WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true"),
            ("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "5s"),
        ],
    )
    .await;
    let mut client = h1_client(proxy.addrs.outbound).await;
    // Start a slow request (the server takes 800 ms), then ask the proxy to shut down.
    let slow = tokio::spawn(async move {
        let rsp = client.send_request(get("/slow")).await.unwrap();
        (rsp.status().as_u16(), body_string(rsp).await)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(
        admin_request(proxy.addrs.admin, "POST", "/shutdown", "").await,
        (200, "shutdown\n".into())
    );
    // Draining: not ready, and no new connections accepted.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        admin_get(proxy.addrs.admin, "/ready").await,
        (503, "draining\n".into())
    );
    let refused = tokio::net::TcpStream::connect(proxy.addrs.outbound)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(slow.await.unwrap(), (200, "slow done".to_string()));
    let drained = tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(drained, Drained::Complete);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn drain_gives_up_at_the_grace_period() {
    // An opaque connection that never ends holds the drain until the grace period.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let ports = target.port().to_string();
    let proxy = start_proxy(
        target,
        &[
            ("WEFT_PROXY_OPAQUE_PORTS", &ports),
            ("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "400ms"),
        ],
    )
    .await;
    let _conn = tokio::net::TcpStream::connect(proxy.addrs.outbound)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    proxy.shutdown.trigger();
    let drained = tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(drained, Drained::TimedOut);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn log_level_can_be_read_and_changed_from_loopback() {
    let (log, _layer) = LogHandle::new("info").unwrap();
    let target: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let deps = Deps {
        inbound_orig_dst: std::sync::Arc::new(FixedOrigDst(target)),
        outbound_orig_dst: std::sync::Arc::new(FixedOrigDst(target)),
        log: Some(log.clone()),
    };
    let app = App::bind(loopback_config(&[]), deps).unwrap();
    let admin = app.addrs().admin;
    let _task = tokio::spawn(app.run());
    assert_eq!(
        admin_get(admin, "/proxy-log-level").await,
        (200, "info\n".into())
    );
    assert_eq!(
        admin_request(admin, "PUT", "/proxy-log-level", "warn,weft_proxy=debug").await,
        (200, "warn,weft_proxy=debug\n".into())
    );
    assert_eq!(log.current(), "warn,weft_proxy=debug");
    let (status, body) = admin_request(admin, "PUT", "/proxy-log-level", "weft_proxy=shouty").await;
    assert_eq!(status, 400);
    assert!(
        body.starts_with("invalid log level \"weft_proxy=shouty\""),
        "{body}"
    );
    assert_eq!(
        admin_get(admin, "/proxy-log-level").await,
        (200, "warn,weft_proxy=debug\n".into())
    );
}

#[tokio::test]
async fn a_taken_port_fails_fast_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let config = loopback_config(&[("WEFT_PROXY_ADMIN_LISTEN_ADDR", &addr)]);
    let target: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let deps = Deps {
        inbound_orig_dst: std::sync::Arc::new(FixedOrigDst(target)),
        outbound_orig_dst: std::sync::Arc::new(FixedOrigDst(target)),
        log: None,
    };
    let err = App::bind(config, deps)
        .err()
        .expect("bind must fail")
        .to_string();
    assert!(
        err.starts_with(&format!("cannot listen on admin address {addr}: ")),
        "{err}"
    );
}
