//! Test helpers: a real proxy on loopback with a faked original destination, small real
//! HTTP/1, HTTP/2 and TCP servers, and HTTP clients built on hyper.
#![allow(dead_code)]

pub mod ca;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weft_proxy::admin::ShutdownHandle;
use weft_proxy::config::Config;
use weft_proxy::metrics::Metrics;
use weft_proxy::orig_dst::FixedOrigDst;
use weft_proxy::{Addrs, App, Deps, Drained};

pub type TestBody = BoxBody<Bytes, hyper::Error>;

pub fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).map_err(|n| match n {}).boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|n| match n {}).boxed()
}

/// A running proxy whose both listeners send everything to `target`.
pub struct Proxy {
    pub addrs: Addrs,
    pub metrics: Arc<Metrics>,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<Drained>,
}

pub fn loopback_config(env: &[(&str, &str)]) -> Config {
    let mut map: HashMap<&str, &str> = HashMap::from([
        ("WEFT_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
    ]);
    map.extend(env.iter().copied());
    Config::from_lookup(&map).expect("test config")
}

pub async fn start_proxy(target: SocketAddr, env: &[(&str, &str)]) -> Proxy {
    start_proxy_with(
        Arc::new(FixedOrigDst(target)),
        Arc::new(FixedOrigDst(target)),
        env,
    )
}

/// A proxy with its own original-destination fakes.
pub fn start_proxy_with(
    inbound_orig_dst: Arc<dyn weft_proxy::orig_dst::OrigDst>,
    outbound_orig_dst: Arc<dyn weft_proxy::orig_dst::OrigDst>,
    env: &[(&str, &str)],
) -> Proxy {
    let deps = Deps {
        inbound_orig_dst,
        outbound_orig_dst,
        log: None,
    };
    let app = App::bind(loopback_config(env), deps).expect("bind proxy");
    let addrs = app.addrs();
    let metrics = app.metrics();
    let shutdown = app.shutdown_handle();
    let task = tokio::spawn(app.run());
    Proxy {
        addrs,
        metrics,
        shutdown,
        task,
    }
}

/// A small HTTP server with fixed routes, counting connections.
pub struct Server {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Proto {
    H1,
    H2,
}

pub async fn http_server(proto: Proto) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let conns = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, peer)) = listener.accept().await else {
                return;
            };
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| routes(req, peer));
                let io = TokioIo::new(socket);
                let _ = match proto {
                    Proto::H1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .with_upgrades()
                            .await
                    }
                    Proto::H2 => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    }
                };
            });
        }
    });
    Server { addr, connections }
}

async fn routes(
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<TestBody>, hyper::Error> {
    let path = req.uri().path().to_string();
    let rsp = match path.as_str() {
        "/hello" => Response::new(full("hello")),
        "/peer" => Response::new(full(peer.ip().to_string())),
        "/echo" => Response::new(req.into_body().boxed()),
        "/count" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame?.into_data() {
                    n += d.len() as u64;
                }
            }
            Response::new(full(n.to_string()))
        }
        "/headers" => {
            let mut names: Vec<String> = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{}={}", k, v.to_str().unwrap_or("?")))
                .collect();
            names.sort();
            Response::new(full(names.join("\n")))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Response::new(full("slow done"))
        }
        "/fail" => Response::builder()
            .status(503)
            .body(full("unavailable"))
            .unwrap(),
        "/trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "fine".parse().unwrap());
            Response::new(TwoFrames::new(Bytes::from_static(b"payload"), trailers).boxed())
        }
        "/grpc-fail" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "13".parse().unwrap());
            Response::new(TwoFrames::new(Bytes::from_static(b""), trailers).boxed())
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(empty())
                .unwrap()
        }
        _ => Response::builder().status(404).body(empty()).unwrap(),
    };
    Ok(rsp)
}

/// A stream of one data frame then trailers.
pub struct TwoFrames {
    frames: std::collections::VecDeque<http_body::Frame<Bytes>>,
}

impl TwoFrames {
    pub fn new(data: Bytes, trailers: http::HeaderMap) -> Self {
        Self {
            frames: [
                http_body::Frame::data(data),
                http_body::Frame::trailers(trailers),
            ]
            .into(),
        }
    }
}

impl http_body::Body for TwoFrames {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(self.frames.pop_front().map(Ok))
    }
}

/// An HTTP/1 client connection to `addr`.
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn get(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", "web.apps:80")
        .body(empty())
        .unwrap()
}

pub async fn body_string(rsp: Response<Incoming>) -> String {
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one sample line in a metrics page, matched by its name and label substring.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        })
        .reduce(|a, b| a + b)
}

pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_request(addr, "GET", path, "").await
}

pub async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut client = h1_client(addr).await;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(full(body.to_string()))
        .unwrap();
    let rsp = client.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    (status, body_string(rsp).await)
}
