//! Mutual TLS between two real proxies on loopback, with certificates from a CA speaking
//! the real certify API: readiness waits for the certificate, identities show in both
//! proxies' metrics, the bytes between the proxies are TLS, renewals under traffic lose no
//! request, and every bad peer is refused before any application byte passes.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::ca::{identity, BareCa, TestCa};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::orig_dst::{FixedOrigDst, NotRedirected};

fn env<'a>(pairs: &'a [(String, String)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    v.extend_from_slice(extra);
    v
}

async fn wait_ready(admin: SocketAddr) -> Duration {
    let started = Instant::now();
    loop {
        if admin_get(admin, "/ready").await.0 == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server pod (proxy `web` in front of `app`) and a client pod (proxy `client` whose
/// outbound sends everything to `app`, known as meshed behind `via`).
struct Mesh {
    server: Proxy,
    client: Proxy,
}

async fn mesh(
    ca: &TestCa,
    app: SocketAddr,
    via: SocketAddr,
    server_identity: &str,
    extra: &[(&str, &str)],
) -> Mesh {
    let server_env = ca.proxy_env("web");
    let server = start_proxy_with(
        Arc::new(NotRedirected),
        Arc::new(NotRedirected),
        &env(&server_env, extra),
    );
    let via = if via.port() == 0 {
        server.addrs.inbound
    } else {
        via
    };
    let meshed = format!("{app}={server_identity}@{}", via.port());
    // The client proxy gets its trust anchors as inline PEM (as the injector sets them),
    // the server proxy from a file.
    let mut client_env = ca.proxy_env("client");
    for (k, v) in &mut client_env {
        if k == "WEFT_PROXY_IDENTITY_TRUST_ANCHORS" {
            *v = ca.anchor_pem().to_string();
        }
    }
    let mut e = env(&client_env, extra);
    e.push(("WEFT_PROXY_MESHED_ENDPOINTS", &meshed));
    let client = start_proxy_with(Arc::new(FixedOrigDst(app)), Arc::new(FixedOrigDst(app)), &e);
    Mesh { server, client }
}

fn unset() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn http_over_mtls_with_identities_on_both_sides() {
    let ca = TestCa::start(
        &[("tok-web", "web"), ("tok-client", "client")],
        Duration::from_secs(3600),
    )
    .await;
    let app = http_server(Proto::H1).await;
    let m = mesh(&ca, app.addr, unset(), &identity("web"), &[]).await;
    wait_ready(m.server.addrs.admin).await;
    wait_ready(m.client.addrs.admin).await;

    let mut c = h1_client(m.client.addrs.outbound).await;
    for _ in 0..3 {
        let rsp = c.send_request(get("/peer")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(body_string(rsp).await, "127.0.0.1");
    }
    let out = m.client.metrics.encode();
    let server_id = format!("server_id=\"{}\"", identity("web"));
    let target = format!("target_addr=\"{}\"", app.addr);
    assert_eq!(
        metric(
            &out,
            "request_total",
            &[
                "direction=\"outbound\"",
                "tls=\"true\"",
                &server_id,
                &target
            ]
        ),
        Some(3.0),
        "{out}"
    );
    assert_eq!(
        metric(
            &out,
            "tcp_open_total",
            &[
                "direction=\"outbound\"",
                "peer=\"src\"",
                "tls=\"true\"",
                &server_id
            ]
        ),
        Some(1.0)
    );
    // The mTLS connection to the server's proxy, named by the identity it proved.
    assert_eq!(
        metric(
            &out,
            "tcp_open_total",
            &[
                "direction=\"outbound\"",
                "peer=\"dst\"",
                "tls=\"true\"",
                &server_id,
                &target
            ]
        ),
        Some(1.0)
    );
    let inb = m.server.metrics.encode();
    let client_id = format!("client_id=\"{}\"", identity("client"));
    assert_eq!(
        metric(
            &inb,
            "request_total",
            &["direction=\"inbound\"", "tls=\"true\"", &client_id, &target]
        ),
        Some(3.0),
        "{inb}"
    );
    assert_eq!(
        metric(
            &inb,
            "response_total",
            &[
                "direction=\"inbound\"",
                &client_id,
                "classification=\"success\""
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &inb,
            "tcp_open_total",
            &["direction=\"inbound\"", "tls=\"true\"", &client_id]
        ),
        Some(1.0)
    );
    // Both proxies hold a certificate and say when it expires.
    for text in [&out, &inb] {
        let expiry = metric(text, "identity_cert_expiration_timestamp_seconds", &[]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (expiry - now - 3600.0).abs() < 5.0,
            "expiry {expiry} vs now {now}"
        );
        assert_eq!(
            metric(text, "identity_cert_refresh_total", &["result=\"success\""]),
            Some(1.0)
        );
    }
}

/// A TCP relay that records every byte from the client side.
async fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(to).await.unwrap();
                let (mut ir, mut iw) = inbound.split();
                let (mut or, mut ow) = outbound.split();
                let up = async {
                    let mut buf = [0u8; 8192];
                    loop {
                        let n = ir.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            let _ = ow.shutdown().await;
                            return;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        if ow.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = tokio::io::copy(&mut or, &mut iw);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn the_bytes_between_proxies_are_tls_and_server_first_tcp_works() {
    let ca = TestCa::start(
        &[("tok-web", "web"), ("tok-client", "client")],
        Duration::from_secs(3600),
    )
    .await;
    // A server-speaks-first app on an opaque port.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 secret-banner\r\n").await;
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await {
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    });
    let ports = app.port().to_string();
    let server_env = ca.proxy_env("web");
    let server = start_proxy_with(
        Arc::new(NotRedirected),
        Arc::new(NotRedirected),
        &env(&server_env, &[]),
    );
    let (relay, seen) = recording_relay(server.addrs.inbound).await;
    let meshed = format!("{app}={}@{}", identity("web"), relay.port());
    let client_env = ca.proxy_env("client");
    let mut e = env(&client_env, &[("WEFT_PROXY_OPAQUE_PORTS", &ports)]);
    e.push(("WEFT_PROXY_MESHED_ENDPOINTS", &meshed));
    let client = start_proxy_with(Arc::new(FixedOrigDst(app)), Arc::new(FixedOrigDst(app)), &e);
    wait_ready(server.addrs.admin).await;
    wait_ready(client.addrs.admin).await;

    let started = Instant::now();
    let mut s = TcpStream::connect(client.addrs.outbound).await.unwrap();
    let mut banner = [0u8; 19];
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"220 secret-banner\r\n");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    s.write_all(b"top-secret-payload").await.unwrap();
    let mut echo = [0u8; 18];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"top-secret-payload");

    let wire = seen.lock().unwrap().clone();
    assert_eq!(
        &wire[..3],
        &[0x16, 0x03, 0x01],
        "a TLS ClientHello opens the hop"
    );
    assert!(
        !wire.windows(18).any(|w| w == b"top-secret-payload"),
        "plaintext crossed the wire"
    );
    assert!(
        !wire.windows(4).any(|w| w == b"WEFT"),
        "the mesh header crossed in the clear"
    );
    let inb = server.metrics.encode();
    assert_eq!(
        metric(
            &inb,
            "tcp_open_total",
            &[
                "direction=\"inbound\"",
                &format!("client_id=\"{}\"", identity("client")),
                &format!("target_addr=\"{app}\"")
            ]
        ),
        Some(1.0),
        "{inb}"
    );
}

#[tokio::test]
async fn renewals_under_traffic_lose_no_request() {
    let ca = TestCa::start(
        &[("tok-web", "web"), ("tok-client", "client")],
        Duration::from_secs(2),
    )
    .await;
    let app = http_server(Proto::H1).await;
    let m = mesh(&ca, app.addr, unset(), &identity("web"), &[]).await;
    wait_ready(m.server.addrs.admin).await;
    wait_ready(m.client.addrs.admin).await;
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(4500) {
        // A new connection each time, so each request needs a fresh handshake.
        let mut c = h1_client(m.client.addrs.outbound).await;
        let rsp = c.send_request(get("/hello")).await.unwrap();
        assert_eq!(
            rsp.status(),
            200,
            "request {sent} failed after {:?}",
            started.elapsed()
        );
        assert_eq!(body_string(rsp).await, "hello");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Traffic throughout the renewals (about 200 requests natively; under qemu-user each
    // fresh mTLS handshake is slow, so fewer).
    assert!(sent >= 20, "{sent}");
    // 2 s certificates renewed at 70 %: at least 3 certificates each in 4.5 s.
    assert!(
        ca.issued_count("web") >= 3,
        "web renewed {} times",
        ca.issued_count("web")
    );
    assert!(
        ca.issued_count("client") >= 3,
        "client renewed {} times",
        ca.issued_count("client")
    );
    // The key stays the same across renewals of one process.
    let issued = ca.issued.lock().unwrap().clone();
    let keys: std::collections::HashSet<_> = issued
        .iter()
        .filter(|(id, _)| *id == identity("web"))
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(keys.len(), 1);
    let text = m.client.metrics.encode();
    assert_eq!(
        metric(&text, "response_total", &["classification=\"failure\""]),
        None,
        "{text}"
    );
    assert_eq!(
        metric(&text, "response_total", &["classification=\"success\""]),
        Some(sent as f64)
    );
}

#[tokio::test]
async fn a_restarted_proxy_gets_a_fresh_key() {
    let ca = TestCa::start(&[("tok-web", "web")], Duration::from_secs(3600)).await;
    for _ in 0..2 {
        let e = ca.proxy_env("web");
        let p = start_proxy_with(
            Arc::new(NotRedirected),
            Arc::new(NotRedirected),
            &env(&e, &[]),
        );
        wait_ready(p.addrs.admin).await;
        p.shutdown.trigger();
        let _ = p.task.await;
    }
    let issued = ca.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 2);
    assert_ne!(
        issued[0].1, issued[1].1,
        "each start must generate a new key"
    );
}

#[tokio::test]
async fn an_unknown_token_keeps_the_proxy_unready() {
    let ca = TestCa::start(&[("tok-web", "web")], Duration::from_secs(3600)).await;
    std::fs::write(ca.dir.join("client.token"), "not-a-token").unwrap();
    let e = ca.proxy_env("client");
    let p = start_proxy_with(
        Arc::new(NotRedirected),
        Arc::new(NotRedirected),
        &env(&e, &[]),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        admin_get(p.addrs.admin, "/ready").await,
        (503, "not ready\n".into())
    );
    let text = p.metrics.encode();
    assert!(
        metric(
            &text,
            "identity_cert_refresh_total",
            &["result=\"failure\""]
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "identity_cert_refresh_total",
            &["result=\"success\""]
        ),
        None
    );
    assert_eq!(
        metric(&text, "identity_cert_expiration_timestamp_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(ca.issued.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn a_server_with_the_wrong_identity_is_refused() {
    let ca = TestCa::start(
        &[("tok-web", "web"), ("tok-client", "client")],
        Duration::from_secs(3600),
    )
    .await;
    let app = http_server(Proto::H1).await;
    // The client expects `db`, but the server proxy is `web`.
    let m = mesh(&ca, app.addr, unset(), &identity("db"), &[]).await;
    wait_ready(m.server.addrs.admin).await;
    wait_ready(m.client.addrs.admin).await;
    let mut c = h1_client(m.client.addrs.outbound).await;
    let rsp = c.send_request(get("/hello")).await.unwrap();
    assert_eq!(rsp.status(), 502);
    let reason = rsp.headers()["weft-proxy-error"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&format!("({})", identity("db")))
            && reason.contains("TLS handshake failed"),
        "{reason}"
    );
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        0,
        "no byte reached the app"
    );
    let text = m.client.metrics.encode();
    assert_eq!(
        metric(
            &text,
            "mesh_tls_failure_total",
            &["direction=\"outbound\"", "reason=\"handshake\""]
        ),
        Some(1.0),
        "{text}"
    );
}

/// A hand-made mesh client: TLS with `chain`/`key`, SNI `sni`, ALPN opaque, then a header.
async fn raw_mesh_client(
    to: SocketAddr,
    anchors_pem: &str,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    sni: &str,
    claimed: &str,
    port: u16,
) -> std::io::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(anchors_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(weft_proxy::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![weft_proxy::mesh::ALPN_OPAQUE.to_vec()];
    let tcp = TcpStream::connect(to).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let header = weft_proxy::mesh::Header {
        port,
        client_identity: claimed.into(),
    }
    .encode()
    .unwrap();
    tls.write_all(&header).await?;
    tls.write_all(b"hello?").await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    Ok(out)
}

#[tokio::test]
async fn bad_clients_are_refused_before_any_byte_reaches_the_app() {
    let ca = TestCa::start(&[("tok-web", "web")], Duration::from_secs(3600)).await;
    let app = http_server(Proto::H1).await;
    let e = ca.proxy_env("web");
    let server = start_proxy_with(
        Arc::new(NotRedirected),
        Arc::new(NotRedirected),
        &env(&e, &[]),
    );
    wait_ready(server.addrs.admin).await;
    let to = server.addrs.inbound;
    let web = identity("web");
    let port = app.addr.port();

    // A certificate from a foreign CA.
    let foreign = BareCa::new("someone else");
    let (chain, key) = foreign.leaf(&identity("client"), Duration::from_secs(3600));
    let out = raw_mesh_client(
        to,
        ca.anchor_pem(),
        chain,
        key,
        &web,
        &identity("client"),
        port,
    )
    .await;
    assert!(out.map(|o| o.is_empty()).unwrap_or(true));

    // A valid certificate for `client` claiming to be `admin`.
    let (chain, key) = ca.leaf(&identity("client"), Duration::from_secs(3600));
    let out = raw_mesh_client(
        to,
        ca.anchor_pem(),
        chain,
        key,
        &web,
        &identity("admin"),
        port,
    )
    .await
    .unwrap();
    assert!(out.is_empty());

    // An expired certificate.
    let (chain, key) = ca.leaf(&identity("client"), Duration::from_secs(0));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = raw_mesh_client(
        to,
        ca.anchor_pem(),
        chain,
        key,
        &web,
        &identity("client"),
        port,
    )
    .await;
    assert!(out.map(|o| o.is_empty()).unwrap_or(true));

    // Asking for another identity by SNI.
    let (chain, key) = ca.leaf(&identity("client"), Duration::from_secs(3600));
    let out = raw_mesh_client(
        to,
        ca.anchor_pem(),
        chain,
        key,
        &identity("db"),
        &identity("client"),
        port,
    )
    .await;
    assert!(out.map(|o| o.is_empty()).unwrap_or(true));

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        0,
        "no connection reached the app"
    );
    let text = server.metrics.encode();
    let failures = |reason: &str| {
        metric(
            &text,
            "mesh_tls_failure_total",
            &["direction=\"inbound\"", &format!("reason=\"{reason}\"")],
        )
    };
    // Foreign CA, expired, and the SNI for `db`: the server presents `web`'s certificate,
    // which that client rightly rejects, so the handshake fails there too.
    assert_eq!(failures("handshake"), Some(3.0), "{text}");
    assert_eq!(failures("identity_mismatch"), Some(1.0));
    let total = metric(&text, "mesh_tls_failure_total", &["direction=\"inbound\""]).unwrap();
    assert_eq!(total, 4.0, "{text}");
    assert_eq!(
        metric(&text, "tcp_open_total", &["direction=\"inbound\""]),
        None
    );

    // And a well-behaved client gets through, proving the refusals were not an accident.
    let (chain, key) = ca.leaf(&identity("client"), Duration::from_secs(3600));
    let ok = raw_mesh_client(
        to,
        ca.anchor_pem(),
        chain,
        key,
        &web,
        &identity("client"),
        port,
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&ok).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&ok)
    );
}
