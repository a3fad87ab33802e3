//! `weft demo`: a local mesh on loopback, the quickest way to see Weft work.
//!
//! It starts, in one process: a demo web app; a "server pod" proxy whose inbound listener
//! fronts the app; a "client pod" proxy whose outbound listener sends everything to the
//! server pod; and a client that calls the app through the mesh at a steady rate. Every
//! few seconds it prints golden metrics read from the proxies' real `/metrics` pages.
//!
//! What is simulated: there is no iptables here (no root needed), so each proxy's original
//! destination is fixed instead of read with `SO_ORIGINAL_DST`; and there is no controller
//! yet, so traffic between the proxies is plaintext. Everything else is the real proxy.

use crate::cli::DemoArgs;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::orig_dst::FixedOrigDst;
use weft_proxy::{Addrs, App, Config, Deps};

/// Errors that stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the demo app: {0}")]
    App(std::io::Error),
    #[error("cannot start a proxy: {0}")]
    Proxy(#[from] weft_proxy::AppError),
    #[error("invalid proxy configuration: {0}")]
    Config(#[from] weft_proxy::config::ConfigError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

pub fn main(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft demo: {}", DemoError::Runtime(e));
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failures) => {
            eprintln!("weft demo: {failures} request(s) failed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("weft demo: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: DemoArgs) -> Result<u64, DemoError> {
    let app_addr = start_demo_app().await.map_err(DemoError::App)?;
    let server_pod = start_proxy(app_addr)?;
    let client_pod = start_proxy(server_pod.inbound)?;
    println!("weft demo: a local mesh on loopback");
    println!("  demo app (server pod)      http://{app_addr}");
    println!(
        "  server pod proxy: inbound  {}   admin http://{}/metrics",
        server_pod.inbound, server_pod.admin
    );
    println!(
        "  client pod proxy: outbound {}   admin http://{}/metrics",
        client_pod.outbound, client_pod.admin
    );
    println!("  path: client -> client proxy (outbound) -> server proxy (inbound) -> app");
    println!();

    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let report_every = Duration::from_secs(args.report_every.max(1));
    let mut last_report = Instant::now();
    let mut sent: u64 = 0;
    let mut failures: u64 = 0;
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        sent += 1;
        match call_through_mesh(client_pod.outbound, sent).await {
            Ok(line) => println!("request {sent}: {line}"),
            Err(e) => {
                failures += 1;
                println!("request {sent}: FAILED: {e}");
            }
        }
        let done = args.requests.is_some_and(|n| sent >= n);
        if done || last_report.elapsed() >= report_every {
            report("client pod, outbound", client_pod.admin, "outbound").await;
            report("server pod, inbound", server_pod.admin, "inbound").await;
            last_report = Instant::now();
        }
        if done {
            break;
        }
    }
    Ok(failures)
}

fn start_proxy(target: SocketAddr) -> Result<Addrs, DemoError> {
    let env = HashMap::from([
        ("WEFT_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
    ]);
    let config = Config::from_lookup(&env)?;
    let deps = Deps {
        inbound_orig_dst: Arc::new(FixedOrigDst(target)),
        outbound_orig_dst: Arc::new(FixedOrigDst(target)),
        log: None,
    };
    let app = App::bind(config, deps)?;
    let addrs = app.addrs();
    tokio::spawn(app.run());
    Ok(addrs)
}

async fn start_demo_app() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(demo_app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn demo_app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let body = format!(
        "hello from web (path {}, x-forwarded-for {xff})",
        req.uri().path()
    );
    Ok(Response::new(Full::new(Bytes::from(body))))
}

async fn call_through_mesh(outbound: SocketAddr, n: u64) -> Result<String, String> {
    let tcp = TcpStream::connect(outbound)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(format!("/orders/{n}"))
        .header("host", "web.demo.svc.cluster.local")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(format!(
        "{} {}",
        status.as_u16(),
        String::from_utf8_lossy(&body)
    ))
}

/// Fetches a proxy's `/metrics` page over HTTP and prints its golden metrics.
async fn report(name: &str, admin: SocketAddr, direction: &str) {
    match fetch_metrics(admin).await {
        Ok(text) => {
            let g = Golden::from_metrics(&text, direction);
            println!(
                "  [{name}] requests {}, success rate {:.1}%, p50 <= {} ms, p99 <= {} ms, open TCP {}",
                g.requests, g.success_rate * 100.0, g.p50_ms, g.p99_ms, g.open_connections
            );
        }
        Err(e) => println!("  [{name}] metrics unavailable: {e}"),
    }
}

async fn fetch_metrics(admin: SocketAddr) -> Result<String, String> {
    let tcp = TcpStream::connect(admin).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Golden metrics computed from a Prometheus text page.
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    pub requests: u64,
    pub success_rate: f64,
    /// Upper bound of the bucket holding the median.
    pub p50_ms: String,
    pub p99_ms: String,
    pub open_connections: u64,
}

impl Golden {
    pub fn from_metrics(text: &str, direction: &str) -> Golden {
        let dir = format!("direction=\"{direction}\"");
        let samples = |name: &str| -> Vec<(&str, f64)> {
            text.lines()
                .filter(|l| {
                    l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&dir)
                })
                .filter_map(|l| {
                    let (labels, value) = l.rsplit_once(' ')?;
                    Some((labels, value.parse::<f64>().ok()?))
                })
                .collect()
        };
        let sum = |v: &[(&str, f64)], want: &str| -> f64 {
            v.iter()
                .filter(|(l, _)| l.contains(want))
                .map(|(_, v)| v)
                .sum()
        };
        let responses = samples("response_total");
        let ok = sum(&responses, "classification=\"success\"");
        let total = sum(&responses, "");
        // Aggregate buckets across label sets, by their `le`.
        let mut buckets: Vec<(f64, String, f64)> = Vec::new();
        for (labels, v) in samples("response_latency_ms_bucket") {
            let Some(le) = labels
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            match buckets.iter_mut().find(|(b, _, _)| *b == bound) {
                Some(entry) => entry.2 += v,
                None => buckets.push((bound, le.trim_end_matches(".0").to_string(), v)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.last().map(|b| b.2).unwrap_or(0.0);
        let quantile = |q: f64| -> String {
            if count == 0.0 {
                return "-".into();
            }
            buckets
                .iter()
                .find(|(_, _, c)| *c >= q * count)
                .map(|(_, le, _)| le.clone())
                .unwrap_or_else(|| "-".into())
        };
        Golden {
            requests: sum(&samples("request_total"), "") as u64,
            success_rate: if total > 0.0 { ok / total } else { 0.0 },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            open_connections: sum(&samples("tcp_open_connections"), "") as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_metrics_from_a_page() {
        let page = "\
request_total{direction=\"outbound\",authority=\"a\",target_addr=\"x\",tls=\"no_identity\"} 10
request_total{direction=\"inbound\",authority=\"a\",target_addr=\"x\",tls=\"no_identity\"} 99
response_total{status_code=\"200\",classification=\"success\",direction=\"outbound\"} 9
response_total{status_code=\"503\",classification=\"failure\",direction=\"outbound\"} 1
response_latency_ms_bucket{le=\"1.0\",status_code=\"200\",direction=\"outbound\"} 4
response_latency_ms_bucket{le=\"2.0\",status_code=\"200\",direction=\"outbound\"} 9
response_latency_ms_bucket{le=\"+Inf\",status_code=\"200\",direction=\"outbound\"} 9
response_latency_ms_bucket{le=\"1.0\",status_code=\"503\",direction=\"outbound\"} 0
response_latency_ms_bucket{le=\"2.0\",status_code=\"503\",direction=\"outbound\"} 0
response_latency_ms_bucket{le=\"+Inf\",status_code=\"503\",direction=\"outbound\"} 1
tcp_open_connections{direction=\"outbound\",peer=\"src\"} 2
";
        let g = Golden::from_metrics(page, "outbound");
        assert_eq!(
            g,
            Golden {
                requests: 10,
                success_rate: 0.9,
                p50_ms: "2".into(),
                p99_ms: "+Inf".into(),
                open_connections: 2,
            }
        );
    }
}
