//! Retries: which requests may be retried, and the budget that stops retries from
//! multiplying load on a failing service.
//!
//! A request is retried only when its route says so (`retryOn`), its method is idempotent,
//! and its body is known to be at most [`MAX_RETRY_BODY`] bytes (so it can be replayed).
//! The budget allows retries up to 20 % of requests plus 10 per second, counted over a
//! sliding 10-second window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};
use weft_api::destination::RetryOn;

/// Bodies larger than this are never buffered for a retry.
pub const MAX_RETRY_BODY: u64 = 64 * 1024;
/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: usize = 3;
const WINDOW: Duration = Duration::from_secs(10);
const RATIO: f64 = 0.2;
const MIN_PER_SECOND: f64 = 10.0;

/// Idempotent methods (RFC 9110 §9.2.2).
pub fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

/// May this request be retried at all? `body_upper` is the body's known maximum length.
pub fn retryable(retry_on: &[RetryOn], method: &http::Method, body_upper: Option<u64>) -> bool {
    !retry_on.is_empty() && idempotent(method) && body_upper.is_some_and(|n| n <= MAX_RETRY_BODY)
}

/// What one attempt produced, for deciding on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    ConnectFailed,
    Status(u16),
}

/// Should `attempt` be retried under `retry_on`?
pub fn should_retry(retry_on: &[RetryOn], attempt: Attempt) -> bool {
    match attempt {
        Attempt::ConnectFailed => retry_on.contains(&RetryOn::Connect),
        Attempt::Status(s) => (500..600).contains(&s) && retry_on.contains(&RetryOn::ServerError),
    }
}

/// Requests and retries per second over the last ten seconds.
#[derive(Debug)]
pub struct Budget {
    /// (second index, requests, retries), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    origin: Instant,
}

impl Budget {
    pub fn new(now: Instant) -> Self {
        Budget {
            buckets: VecDeque::new(),
            origin: now,
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0 + WINDOW.as_secs() <= sec)
        {
            self.buckets.pop_front();
        }
        if self.buckets.back().map(|b| b.0) != Some(sec) {
            self.buckets.push_back((sec, 0, 0));
        }
        match self.buckets.back_mut() {
            Some(b) => b,
            None => unreachable!("a bucket was just pushed"),
        }
    }

    pub fn record_request(&mut self, now: Instant) {
        self.bucket(now).1 += 1;
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.bucket(now);
        let (requests, retries) = self
            .buckets
            .iter()
            .fold((0u64, 0u64), |(q, r), b| (q + b.1, r + b.2));
        let allowed = RATIO * requests as f64 + MIN_PER_SECOND * WINDOW.as_secs_f64();
        if (retries as f64) < allowed {
            self.bucket(now).2 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn retryable_table() {
        let both = [RetryOn::ServerError, RetryOn::Connect];
        let cases = [
            (&both[..], Method::GET, Some(0), true),
            (&both[..], Method::PUT, Some(MAX_RETRY_BODY), true),
            (&both[..], Method::PUT, Some(MAX_RETRY_BODY + 1), false),
            (&both[..], Method::GET, None, false),
            (&both[..], Method::POST, Some(0), false),
            (&[][..], Method::GET, Some(0), false),
        ];
        for (on, m, body, expected) in cases {
            assert_eq!(retryable(on, &m, body), expected, "{on:?} {m} {body:?}");
        }
    }

    #[test]
    fn should_retry_table() {
        let five = [RetryOn::ServerError];
        let conn = [RetryOn::Connect];
        assert!(should_retry(&five, Attempt::Status(503)));
        assert!(!should_retry(&five, Attempt::Status(404)));
        assert!(!should_retry(&five, Attempt::ConnectFailed));
        assert!(should_retry(&conn, Attempt::ConnectFailed));
        assert!(!should_retry(&conn, Attempt::Status(500)));
    }

    #[test]
    fn budget_is_twenty_percent_plus_ten_per_second() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        // 1,000 requests in one second, every one failing and wanting a retry.
        let mut granted = 0;
        for _ in 0..1000 {
            b.record_request(t0);
            if b.try_retry(t0) {
                granted += 1;
            }
        }
        // Allowed: 20 % of 1,000 + 10/s over the 10 s window = 300.
        assert_eq!(granted, 300);
        // The window slides: ten seconds later the old requests and retries are gone.
        let later = t0 + Duration::from_secs(10);
        let mut granted = 0;
        for _ in 0..200 {
            if b.try_retry(later) {
                granted += 1;
            }
        }
        assert_eq!(granted, 100, "only the 10/s floor remains");
    }
}
