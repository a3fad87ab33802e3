//! The small applications a lab runs inside its pods, as `weft lab-app …` subcommands: an
//! HTTP server that says who it is and who called it, a server-speaks-first banner server,
//! and a load generator that reports what it got. They know nothing of the mesh — exactly
//! like real apps.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `weft lab-app …`: runs one app until killed (servers) or done (load, probe).
pub fn main(args: crate::cli::LabAppArgs) -> std::process::ExitCode {
    use crate::cli::LabApp;
    use std::process::ExitCode;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft lab-app: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    rt.block_on(async move {
        let result = match args.app {
            LabApp::Http(a) => http_server(a.name, a.listen)
                .await
                .map_err(|e| e.to_string()),
            LabApp::Banner(a) => banner_server(a.text, a.listen)
                .await
                .map_err(|e| e.to_string()),
            LabApp::Load(a) => match load(a.url, a.rate, a.duration).await {
                Ok(report) => {
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            LabApp::Probe(a) => match probe(a.addr, Duration::from_secs(5)).await {
                Ok(line) => {
                    println!("{line}");
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft lab-app: {e}");
                ExitCode::from(1)
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bad URL {0:?}: expected http://IP:PORT/path")]
    Url(String),
}

/// Serves `NAME path=/p xff=…` on every request.
pub async fn http_server(name: String, addr: SocketAddr) -> Result<(), AppError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Listen { addr, source })?;
    loop {
        let Ok((socket, peer)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                async move {
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let body = format!(
                        "{name} path={} xff={xff} peer={}",
                        req.uri().path(),
                        peer.ip()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), svc)
                .await;
        });
    }
}

/// Writes `banner` the moment a client connects, then echoes one read.
pub async fn banner_server(banner: String, addr: SocketAddr) -> Result<(), AppError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Listen { addr, source })?;
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let banner = banner.clone();
        tokio::spawn(async move {
            let _ = s.write_all(format!("{banner}\r\n").as_bytes()).await;
            let mut buf = [0u8; 1024];
            if let Ok(n) = s.read(&mut buf).await {
                let _ = s.write_all(&buf[..n]).await;
            }
        });
    }
}

/// What a load run saw.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Responses by the answering server's name (first word of the body).
    pub by_server: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// One full response body, for inspection.
    pub sample: String,
}

/// Sends GETs to `url` at `rate` per second for `duration` and prints a JSON report.
pub async fn load(url: String, rate: u32, duration: Duration) -> Result<LoadReport, AppError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| AppError::Url(url.clone()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.parse().map_err(|_| AppError::Url(url.clone()))?;
    let mut report = LoadReport::default();
    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let started = Instant::now();
    let mut sender = None;
    while started.elapsed() < duration {
        ticker.tick().await;
        report.sent += 1;
        let t = Instant::now();
        match get(&mut sender, addr, authority, path).await {
            Ok(body) => {
                report.ok += 1;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                let server = body.split_whitespace().next().unwrap_or("").to_string();
                *report.by_server.entry(server).or_default() += 1;
                report.sample = body;
            }
            Err(_) => {
                report.failed += 1;
                sender = None;
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    report.p50_ms = q(0.5);
    report.p99_ms = q(0.99);
    Ok(report)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn get(
    sender: &mut Option<Sender>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<String, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let Some(s) = sender.as_mut() else {
        return Err("no connection".into());
    };
    s.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let rsp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Connects to `addr`, reads the first line the server sends (without sending anything),
/// and returns it.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let read = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\n") && buf.len() < 1024 {
            let n = s.read(&mut byte).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("no banner from {addr} within {timeout:?}"))?
}
