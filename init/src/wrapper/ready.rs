//! Waiting for the proxy: poll `GET /ready` with a short backoff until it
//! answers 2xx or the timeout passes.
//!
//! The delay schedule is a pure function ([`Backoff::delay`]) so it is
//! table-tested; the loop itself is exercised against a fake admin server
//! in `init/tests/await.rs`. Log output is kept to one line per *change* of
//! what the proxy answers, so a slow start does not flood the job's log.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::duration::format_duration;
use super::http::{self, Method};

/// The readiness path on the admin port.
pub const READY_PATH: &str = "/ready";
/// Upper bound for one `/ready` request.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

/// 50 ms doubling up to 1 s: a proxy that becomes ready within a few
/// hundred milliseconds (its budget on loopback is 200 ms) costs the job
/// almost nothing, and a slow one is polled once a second.
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_secs(1),
};

impl Backoff {
    /// Delay after failed attempt number `attempt` (0-based). Pure.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The proxy did not become ready in time.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadyError {
    /// Gave up after `timeout`.
    #[error(
        "the proxy at {addr} was not ready after {} ({attempts} attempts; last: {last})",
        format_duration(*timeout)
    )]
    Timeout {
        /// The admin address.
        addr: SocketAddr,
        /// `--timeout`.
        timeout: Duration,
        /// How many requests were made.
        attempts: u32,
        /// The last answer or error.
        last: String,
    },
}

/// How the wait ended successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Requests made (the last one succeeded).
    pub attempts: u32,
    /// Time spent waiting.
    pub waited: Duration,
}

/// Polls `GET /ready` on `addr` until a 2xx, or fails after `timeout`. At
/// least one request is always made.
pub fn wait_ready(
    addr: SocketAddr,
    timeout: Duration,
    backoff: Backoff,
    log: &mut dyn Write,
) -> Result<Ready, ReadyError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts: u32 = 0;
    let mut last = String::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = remaining.clamp(Duration::from_millis(50), ATTEMPT_TIMEOUT);
        attempts = attempts.saturating_add(1);
        let observation = match http::request(addr, Method::Get, READY_PATH, budget) {
            Ok(status) if status.is_success() => {
                return Ok(Ready {
                    attempts,
                    waited: start.elapsed(),
                })
            }
            Ok(status) => format!("HTTP {} {}", status.code, status.reason)
                .trim_end()
                .to_owned(),
            Err(error) => error.to_string(),
        };
        if observation != last {
            let _ = writeln!(log, "weft-await: proxy not ready yet: {observation}");
            last = observation;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ReadyError::Timeout {
                addr,
                timeout,
                attempts,
                last,
            });
        }
        std::thread::sleep(backoff.delay(attempts - 1).min(remaining));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn backoff_table() {
        let cases: &[(u32, u64)] = &[
            (0, 50),
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (6, 1000),
            (31, 1000),
            (32, 1000),
            (u32::MAX, 1000),
        ];
        for (attempt, millis) in cases {
            assert_eq!(
                DEFAULT_BACKOFF.delay(*attempt),
                Duration::from_millis(*millis),
                "attempt {attempt}"
            );
        }
        let huge = Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(5),
        };
        assert_eq!(huge.delay(3), Duration::from_secs(5));
    }

    #[test]
    fn times_out_against_a_closed_port() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let mut log = Vec::new();
        let started = Instant::now();
        let error = wait_ready(addr, Duration::from_millis(200), DEFAULT_BACKOFF, &mut log)
            .expect_err("nothing listens");
        assert!(started.elapsed() < Duration::from_secs(2));
        let ReadyError::Timeout { attempts, last, .. } = &error;
        assert!(*attempts >= 2, "{attempts}");
        assert!(last.contains("cannot connect"), "{last}");
        assert!(
            error.to_string().contains("not ready after 200ms"),
            "{error}"
        );
        let log = String::from_utf8(log).expect("utf-8");
        assert_eq!(
            log.lines().count(),
            1,
            "one line per distinct answer: {log}"
        );
    }
}
