//! A 64 MiB body streams through the proxy without the process's peak memory growing by
//! anything like 64 MiB. Alone in its own test binary so no other test's allocations count.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use support::*;

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 1024; // 64 MiB

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
        // A fresh allocation per chunk, as a real client would produce.
        let chunk = Bytes::copy_from_slice(&self.chunk);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_64_mib_body_streams_with_bounded_memory() {
    let server = http_server(Proto::H1).await;
    let proxy = start_proxy(server.addr, &[]).await;
    // Warm up: one small request so every lazy allocation has happened.
    let mut client = h1_client(proxy.addrs.outbound).await;
    let rsp = client.send_request(get("/hello")).await.unwrap();
    assert_eq!(body_string(rsp).await, "hello");

    // Reset the peak-RSS watermark (VmHWM), then stream.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let baseline = status_kib("VmHWM:");
    let body = Generated {
        left: CHUNKS,
        chunk: Bytes::from(vec![7u8; CHUNK]),
    };
    let req = Request::post("/count")
        .header("host", "big")
        .body(body.boxed())
        .unwrap();
    let rsp = client.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(body_string(rsp).await, (CHUNK * CHUNKS).to_string());
    let peak = status_kib("VmHWM:");
    let growth_mib = (peak.saturating_sub(baseline)) as f64 / 1024.0;
    println!(
        "baseline {baseline} KiB, peak {peak} KiB, growth {growth_mib:.1} MiB for 64 MiB streamed"
    );
    assert!(
        growth_mib < 16.0,
        "peak RSS grew by {growth_mib:.1} MiB while streaming 64 MiB"
    );

    let text = proxy.metrics.encode();
    let read = metric(&text, "tcp_read_bytes_total", &["direction=\"outbound\""]).unwrap();
    assert!(
        read > (CHUNK * CHUNKS) as f64,
        "the proxy read the whole body: {read}"
    );
}
