//! A Service through the real proxy, with endpoints from a controller double speaking the
//! real destination API: load spreads by weight, a backend killed mid-run costs no
//! idempotent request, an added endpoint gets traffic within a second, traffic keeps
//! flowing when the controller stops, and route timeouts answer 504.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::ca::TestCa;
use support::*;
use tokio::net::TcpListener;
use weft_api::destination::{Endpoint, Kind, RetryOn, RouteConfig, Snapshot};
use weft_proxy::orig_dst::FixedOrigDst;

/// The Service's virtual address: on loopback, so a pass-through by mistake stays local.
fn vip() -> SocketAddr {
    "127.0.0.200:80".parse().unwrap()
}

/// A backend that answers its name, counts requests, and can be killed (listener and every
/// open connection).
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Backend {
    async fn start(name: &'static str, delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (h, t) = (hits.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let h = h.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let h = h.clone();
                        async move {
                            tokio::time::sleep(delay).await;
                            h.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(http::Response::new(full(name)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                        .await;
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Backend { addr, hits, tasks }
    }

    fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn endpoint(addr: SocketAddr, weight: u32) -> Endpoint {
    Endpoint {
        addr,
        weight,
        backend: None,
        identity: None,
        inbound_port: 4143,
        protocol_hint: None,
        labels: BTreeMap::new(),
    }
}

fn service(endpoints: Vec<Endpoint>, route: RouteConfig) -> Snapshot {
    Snapshot {
        kind: Kind::Service,
        service: Some("web.apps".into()),
        endpoints,
        route,
        workload_done: false,
    }
}

/// A client pod's proxy whose app always dials the Service.
async fn client_proxy(ca: &TestCa) -> Proxy {
    let e = ca.proxy_env("client");
    let env: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = start_proxy_with(
        Arc::new(FixedOrigDst(vip())),
        Arc::new(FixedOrigDst(vip())),
        &env,
    );
    let started = Instant::now();
    while admin_get(p.addrs.admin, "/ready").await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p
}

/// One request on a fresh connection; the body (the backend's name) or the status.
async fn call(proxy: &Proxy, path: &str) -> Result<String, u16> {
    let mut c = h1_client(proxy.addrs.outbound).await;
    let rsp = c.send_request(get(path)).await.unwrap();
    let status = rsp.status().as_u16();
    let body = body_string(rsp).await;
    if status == 200 {
        Ok(body)
    } else {
        Err(status)
    }
}

#[tokio::test]
async fn every_endpoint_serves_and_a_split_holds_by_weight() {
    let ca = TestCa::start(&[("tok-client", "client")], Duration::from_secs(3600)).await;
    let a = Backend::start("a", Duration::ZERO).await;
    let b = Backend::start("b", Duration::ZERO).await;
    let c = Backend::start("c", Duration::ZERO).await;
    // A plain Service: per request over all three (how they share depends on their
    // latencies; the weights' exact effect among alike endpoints is unit-tested in
    // balance.rs, because here scheduler noise on a busy machine would decide).
    ca.set_destination(
        vip(),
        service(
            vec![
                endpoint(a.addr, 2),
                endpoint(b.addr, 1),
                endpoint(c.addr, 1),
            ],
            RouteConfig::default(),
        ),
    );
    let proxy = client_proxy(&ca).await;
    // Many requests on one keep-alive connection: balanced per request, not per connection.
    let mut client = h1_client(proxy.addrs.outbound).await;
    for _ in 0..300 {
        let rsp = client.send_request(get("/")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        let _ = body_string(rsp).await;
    }
    let (ha, hb, hc) = (a.hits(), b.hits(), c.hits());
    assert_eq!(ha + hb + hc, 300);
    assert!(ha > 0 && hb > 0 && hc > 0, "a {ha} b {hb} c {hc}");

    // A traffic split, 80/20 between two backends: the split is drawn by weight before any
    // latency is looked at, so it holds exactly, whatever the machine is doing.
    let split = |addr, backend: &str, weight| Endpoint {
        backend: Some(backend.into()),
        ..endpoint(addr, weight)
    };
    ca.set_destination(
        vip(),
        service(
            vec![
                split(a.addr, "web-stable", 80),
                split(b.addr, "web-canary", 20),
            ],
            RouteConfig::default(),
        ),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..1000 {
        let rsp = client.send_request(get("/")).await.unwrap();
        assert_eq!(rsp.status(), 200);
        let _ = body_string(rsp).await;
    }
    let (sa, sb) = (a.hits() - a0, b.hits() - b0);
    assert_eq!(sa + sb, 1000, "c no longer receives anything");
    // 800 ± 4 standard deviations (σ ≈ 12.6).
    assert!((750..=850).contains(&sa), "stable {sa} canary {sb}");
}

#[tokio::test]
async fn a_backend_killed_mid_run_costs_no_idempotent_request() {
    let ca = TestCa::start(&[("tok-client", "client")], Duration::from_secs(3600)).await;
    let a = Backend::start("a", Duration::ZERO).await;
    let b = Backend::start("b", Duration::ZERO).await;
    let c = Backend::start("c", Duration::ZERO).await;
    let route = RouteConfig {
        retry_on: vec![RetryOn::Connect, RetryOn::ServerError],
        timeout_ms: None,
    };
    ca.set_destination(
        vip(),
        service(
            vec![
                endpoint(a.addr, 1),
                endpoint(b.addr, 1),
                endpoint(c.addr, 1),
            ],
            route,
        ),
    );
    let proxy = client_proxy(&ca).await;
    let mut client = h1_client(proxy.addrs.outbound).await;
    let mut failures = 0;
    let mut killed = None;
    for i in 0..600 {
        // At request 100 kill whichever backend has served the most so far (at least 34 of
        // the 100): from then on every request that would go to it must be rescued.
        if i == 100 {
            let busiest = [&a, &b, &c]
                .into_iter()
                .max_by_key(|x| x.hits())
                .expect("three backends");
            busiest.kill();
            killed = Some((busiest, busiest.hits()));
        }
        let rsp = client.send_request(get("/")).await.unwrap();
        if rsp.status() != 200 {
            failures += 1;
        }
        let _ = body_string(rsp).await;
    }
    assert_eq!(failures, 0);
    let (victim, served_before) = killed.expect("killed at request 100");
    assert!(
        served_before >= 34,
        "the busiest served {served_before} of 100"
    );
    assert_eq!(
        victim.hits(),
        served_before,
        "nothing reached it after it died"
    );
    assert_eq!(a.hits() + b.hits() + c.hits(), 600);
    let text = proxy.metrics.encode();
    assert_eq!(
        metric(&text, "response_total", &["classification=\"success\""]),
        Some(600.0)
    );
}

#[tokio::test]
async fn an_added_endpoint_gets_traffic_within_a_second_and_the_controller_can_go_away() {
    let ca = TestCa::start(&[("tok-client", "client")], Duration::from_secs(3600)).await;
    let a = Backend::start("a", Duration::ZERO).await;
    let d = Backend::start("d", Duration::ZERO).await;
    ca.set_destination(
        vip(),
        service(vec![endpoint(a.addr, 1)], RouteConfig::default()),
    );
    let proxy = client_proxy(&ca).await;
    assert_eq!(call(&proxy, "/").await, Ok("a".into()));

    ca.set_destination(
        vip(),
        service(
            vec![endpoint(a.addr, 1), endpoint(d.addr, 1)],
            RouteConfig::default(),
        ),
    );
    let changed = Instant::now();
    loop {
        let _ = call(&proxy, "/").await;
        if d.hits() > 0 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "d got nothing within a second"
        );
    }

    // The controller goes away; known services keep working on what was last known.
    ca.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = a.hits() + d.hits();
    for _ in 0..50 {
        assert!(matches!(
            call(&proxy, "/").await.as_deref(),
            Ok("a") | Ok("d")
        ));
    }
    assert_eq!(a.hits() + d.hits(), before + 50);
}

#[tokio::test]
async fn route_timeouts_answer_504_and_no_endpoints_503() {
    let ca = TestCa::start(&[("tok-client", "client")], Duration::from_secs(3600)).await;
    let slow = Backend::start("slow", Duration::from_millis(2000)).await;
    let route = RouteConfig {
        retry_on: vec![],
        timeout_ms: Some(200),
    };
    ca.set_destination(vip(), service(vec![endpoint(slow.addr, 1)], route));
    let proxy = client_proxy(&ca).await;
    let started = Instant::now();
    assert_eq!(call(&proxy, "/").await, Err(504));
    let took = started.elapsed();
    assert!(
        // The upper bound leaves room for a loaded machine or qemu; the slow backend
        // alone would take 2 s.
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    ca.set_destination(vip(), service(vec![], RouteConfig::default()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(&proxy, "/").await, Err(503));
}

/// A Job pod's proxy (classic sidecar) exits once the controller says every app container
/// of its pod has finished, and not before.
#[tokio::test]
async fn a_job_proxy_exits_when_its_workload_is_done() {
    let ca = TestCa::start(&[("tok-client", "client")], Duration::from_secs(3600)).await;
    let mut e = ca.proxy_env("client");
    e.push(("WEFT_PROXY_EXIT_WITH_WORKLOAD".into(), "true".into()));
    e.push(("WEFT_PROXY_POD_IP".into(), "198.18.0.77".into()));
    let env: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = start_proxy_with(
        Arc::new(FixedOrigDst(vip())),
        Arc::new(FixedOrigDst(vip())),
        &env,
    );
    let started = Instant::now();
    while admin_get(p.addrs.admin, "/ready").await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let own: SocketAddr = SocketAddr::new("198.18.0.77".parse().unwrap(), p.addrs.admin.port());
    let pod = |done: bool| Snapshot {
        kind: Kind::Pod,
        service: None,
        endpoints: vec![endpoint("198.18.0.77:8080".parse().unwrap(), 1)],
        route: RouteConfig::default(),
        workload_done: done,
    };
    // Running: the proxy stays.
    ca.set_destination(own, pod(false));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!p.task.is_finished(), "exited while the job still runs");
    assert_eq!(admin_get(p.addrs.admin, "/ready").await.0, 200);
    // Done: it drains and exits by itself.
    ca.set_destination(own, pod(true));
    let drained = tokio::time::timeout(Duration::from_secs(10), p.task)
        .await
        .expect("the proxy exits within 10 s of the workload finishing")
        .unwrap();
    assert_eq!(drained, weft_proxy::drain::Drained::Complete);
}
