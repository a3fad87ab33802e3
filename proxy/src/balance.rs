//! Load balancing over a destination's endpoints: power of two choices over peak-EWMA
//! latency with pending requests counted (HTTP, per request) or over active connections
//! (opaque TCP, per connection), weights honoured, and failure accrual that ejects
//! endpoints which keep failing and re-admits them by probing after a backoff.
//!
//! The choices are plain functions over numbers ([`choose`], [`PeakEwma`], [`Accrual`]) and
//! are table-tested; [`Balancer`] only holds the state.

use crate::metrics::TlsLabels;
use crate::route::{self, Route};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use weft_api::destination::{Endpoint, RouteConfig, Snapshot};

/// Latency assumed for an endpoint before it has answered anything.
pub const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// How fast old latency observations fade.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Consecutive failures that eject an endpoint.
pub const FAILURES_TO_EJECT: u32 = 5;
pub const EJECT_MIN: Duration = Duration::from_secs(1);
pub const EJECT_MAX: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Peak-sensitive exponentially weighted moving average of latency: a slow answer counts at
/// once, good answers pull the estimate down gradually.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// Milliseconds.
    pub value: f64,
    last: Instant,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        Self::starting_at(DEFAULT_RTT.as_secs_f64() * 1000.0, now)
    }

    /// An estimate that starts at `value_ms` (a new endpoint starts where its peers are).
    pub fn starting_at(value_ms: f64, now: Instant) -> Self {
        PeakEwma {
            value: value_ms,
            last: now,
        }
    }

    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        if rtt_ms > self.value {
            self.value = rtt_ms;
        } else {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            let w = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
            self.value = self.value * w + rtt_ms * (1.0 - w);
        }
        self.last = now;
    }

    /// The estimate as of `now`: without new answers it decays toward zero, so an endpoint
    /// shunned after one slow answer is tried again (and re-measured) instead of starving.
    pub fn at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.value * (-elapsed / EWMA_DECAY.as_secs_f64()).exp()
    }
}

/// Where an endpoint stands after its recent results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accrual {
    /// Serving; the count of consecutive failures so far.
    Healthy(u32),
    /// Taken out until `until`; the next ejection lasts `next`.
    Ejected { until: Instant, next: Duration },
    /// Back on probation after an ejection: one success heals, one failure re-ejects.
    Probing { next: Duration },
}

impl Accrual {
    pub fn new() -> Self {
        Accrual::Healthy(0)
    }

    /// May this endpoint be chosen now? (An ejected one past its time turns to probing.)
    pub fn available(&mut self, now: Instant) -> bool {
        match *self {
            Accrual::Healthy(_) | Accrual::Probing { .. } => true,
            Accrual::Ejected { until, next } if now >= until => {
                *self = Accrual::Probing { next };
                true
            }
            Accrual::Ejected { .. } => false,
        }
    }

    pub fn record(&mut self, success: bool, now: Instant) {
        *self = match (*self, success) {
            (_, true) => Accrual::Healthy(0),
            (Accrual::Healthy(n), false) if n + 1 < FAILURES_TO_EJECT => Accrual::Healthy(n + 1),
            (Accrual::Healthy(_), false) => Accrual::Ejected {
                until: now + EJECT_MIN,
                next: (EJECT_MIN * 2).min(EJECT_MAX),
            },
            (Accrual::Probing { next }, false) | (Accrual::Ejected { next, .. }, false) => {
                Accrual::Ejected {
                    until: now + next,
                    next: (next * 2).min(EJECT_MAX),
                }
            }
        };
    }
}

impl Default for Accrual {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`choose`] needs to know about one endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Which traffic-split backend it belongs to (0 for a plain Service).
    pub group: usize,
    pub weight: u32,
    /// Lower is better: latency × (pending + 1) for HTTP, active connections for TCP.
    pub load: f64,
    pub available: bool,
}

/// Picks an endpoint. First a split backend, with probability proportional to its total
/// weight (so a 90/10 split stays 90/10 whatever the latencies); then, inside it, power of
/// two choices: two different endpoints drawn in proportion to weight, and the second wins
/// only if it is clearly (20 %) less loaded, so alike endpoints share by weight. `draws`
/// are three numbers in [0, 1). Ejected endpoints are never drawn unless every endpoint is ejected, in which case all are eligible again
/// (fail open: a guess beats a certain failure).
pub fn choose(candidates: &[Candidate], draws: (f64, f64, f64)) -> Option<usize> {
    let any_available = candidates.iter().any(|c| c.weight > 0 && c.available);
    let usable = |i: usize| {
        let c = &candidates[i];
        c.weight > 0 && (c.available || !any_available)
    };
    // Draws an index for which `pool` holds, with probability proportional to weight.
    // (Two passes over the candidates rather than collected index lists: this runs for
    // every request.)
    let draw = |x: f64, pool: &dyn Fn(usize) -> bool| -> Option<usize> {
        let weight = |i: usize| u64::from(candidates[i].weight);
        let total: u64 = (0..candidates.len()).filter(|&i| pool(i)).map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut target = (x.clamp(0.0, 0.999_999) * total as f64) as u64;
        let mut last = None;
        for i in (0..candidates.len()).filter(|&i| pool(i)) {
            let w = weight(i);
            if target < w {
                return Some(i);
            }
            target -= w;
            last = Some(i);
        }
        last
    };
    let group = candidates[draw(draws.0, &usable)?].group;
    let member = |i: usize| usable(i) && candidates[i].group == group;
    let a = draw(draws.1, &member)?;
    let Some(b) = draw(draws.2, &|i| member(i) && i != a) else {
        return Some(a);
    };
    // Loads within 20 % of each other are equal: measurement noise must not override the
    // weights between endpoints that perform alike.
    Some(
        if candidates[b].load < candidates[a].load * CLEARLY_BETTER {
            b
        } else {
            a
        },
    )
}

/// How much lower a load must be to beat the first draw.
const CLEARLY_BETTER: f64 = 0.8;

/// The live state of one endpoint, shared by every connection that uses it.
#[derive(Debug)]
pub struct EndpointState {
    pub endpoint: Endpoint,
    /// How to reach it in plaintext, and over mTLS when it has an identity: worked out
    /// once here, not for every request.
    plain: Route,
    meshed: Option<(Route, TlsLabels)>,
    ewma: Mutex<PeakEwma>,
    pending: AtomicUsize,
    active: AtomicUsize,
    accrual: Mutex<Accrual>,
    /// Upstream HTTP connections to this endpoint, reused across client connections.
    pub pool: Arc<crate::upstream::Pool>,
}

impl EndpointState {
    fn new(endpoint: Endpoint, ewma: PeakEwma) -> Self {
        let meshed = endpoint.identity.as_ref().map(|id| {
            (
                route::endpoint(&endpoint, true),
                TlsLabels::Server(id.clone()),
            )
        });
        EndpointState {
            plain: route::endpoint(&endpoint, false),
            meshed,
            endpoint,
            ewma: Mutex::new(ewma),
            pending: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            accrual: Mutex::new(Accrual::new()),
            pool: Arc::default(),
        }
    }

    /// How to reach this endpoint ([`route::endpoint`]): over mTLS when it is meshed and
    /// this proxy has an identity, else plaintext.
    pub fn route(&self, has_identity: bool) -> &Route {
        match &self.meshed {
            Some((route, _)) if has_identity => route,
            _ => &self.plain,
        }
    }

    /// The `tls` metric labels of responses from this endpoint over mTLS.
    pub fn server_tls(&self) -> Option<&TlsLabels> {
        self.meshed.as_ref().map(|(_, tls)| tls)
    }

    /// Marks one request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::Relaxed);
        Pending { ep: self.clone() }
    }

    /// Marks one connection open until the guard drops.
    pub fn start_connection(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    pub fn record(&self, success: bool) {
        lock(&self.accrual).record(success, Instant::now());
    }

    pub fn latency_ms(&self) -> f64 {
        lock(&self.ewma).at(Instant::now())
    }
}

/// An HTTP request in flight to an endpoint.
#[derive(Debug)]
pub struct Pending {
    ep: Arc<EndpointState>,
}

impl Pending {
    /// The response headers arrived `rtt` after the request was sent (connection setup
    /// excluded: a handshake must not make an endpoint look slow for seconds).
    pub fn responded(&self, rtt: Duration) {
        lock(&self.ep.ewma).observe(rtt, Instant::now());
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.ep.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An opaque connection open to an endpoint.
#[derive(Debug)]
pub struct Active(Arc<EndpointState>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A destination's endpoints and route, kept current by discovery.
#[derive(Debug)]
pub struct Balancer {
    pub name: String,
    endpoints: RwLock<Vec<Arc<EndpointState>>>,
    route: RwLock<RouteConfig>,
    rng: Mutex<fastrand::Rng>,
    pub budget: Mutex<crate::retry::Budget>,
}

impl Balancer {
    pub fn new(name: String, snapshot: &Snapshot) -> Self {
        let b = Balancer {
            name,
            endpoints: RwLock::new(Vec::new()),
            route: RwLock::new(RouteConfig::default()),
            rng: Mutex::new(fastrand::Rng::new()),
            budget: Mutex::new(crate::retry::Budget::new(Instant::now())),
        };
        b.update(snapshot);
        b
    }

    /// Applies a new state, keeping the latency and health of endpoints that stay.
    pub fn update(&self, snapshot: &Snapshot) {
        let now = Instant::now();
        let mut eps = match self.endpoints.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let old: Vec<Arc<EndpointState>> = std::mem::take(&mut *eps);
        // New endpoints start at their peers' mean latency: neither shunned nor stampeded.
        let start = if old.is_empty() {
            DEFAULT_RTT.as_secs_f64() * 1000.0
        } else {
            old.iter().map(|e| e.latency_ms()).sum::<f64>() / old.len() as f64
        };
        for e in &snapshot.endpoints {
            let kept = old.iter().find(|s| s.endpoint == *e).cloned();
            eps.push(kept.unwrap_or_else(|| {
                Arc::new(EndpointState::new(
                    e.clone(),
                    PeakEwma::starting_at(start, now),
                ))
            }));
        }
        drop(eps);
        match self.route.write() {
            Ok(mut g) => *g = snapshot.route.clone(),
            Err(p) => *p.into_inner() = snapshot.route.clone(),
        }
    }

    pub fn route(&self) -> RouteConfig {
        match self.route.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn endpoints(&self) -> Vec<Arc<EndpointState>> {
        match self.endpoints.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Picks an endpoint for one HTTP request, avoiding those already `tried` for it
    /// (unless nothing else is left).
    pub fn pick_request(&self, tried: &[SocketAddr]) -> Option<Arc<EndpointState>> {
        self.pick(tried, |e| {
            e.latency_ms() * (e.pending.load(Ordering::Relaxed) as f64 + 1.0)
        })
    }

    /// Picks an endpoint for one opaque connection.
    pub fn pick_connection(&self, tried: &[SocketAddr]) -> Option<Arc<EndpointState>> {
        self.pick(tried, |e| e.active.load(Ordering::Relaxed) as f64 + 1.0)
    }

    fn pick(
        &self,
        tried: &[SocketAddr],
        load: impl Fn(&EndpointState) -> f64,
    ) -> Option<Arc<EndpointState>> {
        // Read in place (nothing here awaits) rather than cloning the list per request.
        let eps = match self.endpoints.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        let mut groups: Vec<Option<&str>> = Vec::new();
        let candidates: Vec<Candidate> = eps
            .iter()
            .map(|e| Candidate {
                group: {
                    let g = e.endpoint.backend.as_deref();
                    match groups.iter().position(|x| *x == g) {
                        Some(i) => i,
                        None => {
                            groups.push(g);
                            groups.len() - 1
                        }
                    }
                },
                weight: e.endpoint.weight,
                load: load(e),
                available: lock(&e.accrual).available(now) && !tried.contains(&e.endpoint.addr),
            })
            .collect();
        let draws = {
            let mut rng = lock(&self.rng);
            (rng.f64(), rng.f64(), rng.f64())
        };
        choose(&candidates, draws).map(|i| eps[i].clone())
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints().iter().map(|e| e.endpoint.addr).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(weight: u32, load: f64, available: bool) -> Candidate {
        Candidate {
            group: 0,
            weight,
            load,
            available,
        }
    }

    fn g(group: usize, weight: u32, load: f64) -> Candidate {
        Candidate {
            group,
            weight,
            load,
            available: true,
        }
    }

    #[test]
    fn choose_table() {
        type Case = (Vec<Candidate>, (f64, f64, f64), Option<usize>);
        let cases: Vec<Case> = vec![
            (vec![], (0.1, 0.1, 0.9), None),
            (vec![c(0, 1.0, true)], (0.1, 0.1, 0.9), None),
            (vec![c(1, 5.0, true)], (0.1, 0.1, 0.9), Some(0)),
            // Two different endpoints are compared; the less loaded wins.
            (
                vec![c(1, 5.0, true), c(1, 1.0, true)],
                (0.1, 0.1, 0.9),
                Some(1),
            ),
            (
                vec![c(1, 1.0, true), c(1, 5.0, true)],
                (0.1, 0.1, 0.9),
                Some(0),
            ),
            (
                vec![c(1, 9.0, true), c(1, 1.0, true), c(1, 4.0, true)],
                (0.1, 0.1, 0.99),
                Some(2),
            ),
            // A tie, or a difference within 20 %, keeps the first draw.
            (
                vec![c(1, 2.0, true), c(1, 2.0, true)],
                (0.1, 0.9, 0.0),
                Some(1),
            ),
            (
                vec![c(1, 2.0, true), c(1, 1.7, true)],
                (0.1, 0.1, 0.0),
                Some(0),
            ),
            (
                vec![c(1, 2.0, true), c(1, 1.5, true)],
                (0.1, 0.1, 0.0),
                Some(1),
            ),
            // Ejected endpoints are skipped…
            (
                vec![c(1, 1.0, false), c(1, 9.0, true)],
                (0.1, 0.1, 0.2),
                Some(1),
            ),
            // …unless all are ejected: fail open.
            (
                vec![c(1, 1.0, false), c(1, 9.0, false)],
                (0.1, 0.1, 0.9),
                Some(0),
            ),
            // Weight 0 never receives traffic.
            (
                vec![c(0, 0.0, true), c(1, 9.0, true)],
                (0.0, 0.0, 0.0),
                Some(1),
            ),
            // Split groups: the group is drawn by weight first; load never crosses groups.
            (
                vec![g(0, 90, 50.0), g(1, 10, 1.0)],
                (0.5, 0.0, 0.0),
                Some(0),
            ),
            (
                vec![g(0, 90, 50.0), g(1, 10, 1.0)],
                (0.95, 0.0, 0.0),
                Some(1),
            ),
        ];
        for (cands, draws, expected) in cases {
            assert_eq!(choose(&cands, draws), expected, "{cands:?} {draws:?}");
        }
    }

    #[test]
    fn weights_set_the_share_when_loads_are_equal() {
        let cands = [c(3, 1.0, true), c(1, 1.0, true)];
        let mut rng = fastrand::Rng::with_seed(7);
        let first = (0..10_000)
            .filter(|_| choose(&cands, (rng.f64(), rng.f64(), rng.f64())) == Some(0))
            .count();
        // Equal loads keep the first draw: proportional to weight, 75 %.
        assert!((7_300..=7_700).contains(&first), "{first}");
    }

    #[test]
    fn a_split_holds_whatever_the_latencies() {
        // 90/10 between a slow stable backend (2 endpoints) and a fast canary (1 endpoint).
        let cands = [g(0, 45, 50.0), g(0, 45, 50.0), g(1, 10, 1.0)];
        let mut rng = fastrand::Rng::with_seed(3);
        let canary = (0..10_000)
            .filter(|_| choose(&cands, (rng.f64(), rng.f64(), rng.f64())) == Some(2))
            .count();
        assert!((800..=1_200).contains(&canary), "{canary}");
    }

    #[test]
    fn a_fast_endpoint_gets_most_requests() {
        // One endpoint at ~1 ms and one at ~50 ms, as the balancer would see them.
        let now = Instant::now();
        let mut fast = PeakEwma::new(now);
        let mut slow = PeakEwma::new(now);
        // Thirty seconds of answers, ten a second.
        for i in 1..=300 {
            let t = now + Duration::from_millis(100 * i);
            fast.observe(Duration::from_millis(1), t);
            slow.observe(Duration::from_millis(50), t);
        }
        assert!(
            slow.value >= 50.0 - 1e-9 && fast.value < 5.0,
            "{} {}",
            fast.value,
            slow.value
        );
        // With pending requests piling up on whichever is chosen, as under real load.
        let mut pending = [0.0f64, 0.0];
        let mut rng = fastrand::Rng::with_seed(1);
        let mut to_fast = 0;
        for _ in 0..1000 {
            let cands = [
                c(1, fast.value * (pending[0] + 1.0), true),
                c(1, slow.value * (pending[1] + 1.0), true),
            ];
            let i = choose(&cands, (rng.f64(), rng.f64(), rng.f64())).unwrap();
            if i == 0 {
                to_fast += 1;
            }
            // Each request stays pending for a while: decay toward zero.
            pending[i] += 1.0;
            pending = [pending[0] * 0.5, pending[1] * 0.98];
        }
        assert!(to_fast >= 800, "{to_fast}");
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(Duration::from_millis(100), t0 + Duration::from_millis(1));
        assert_eq!(e.value, 100.0);
        // Ten seconds later one 1 ms answer: weight e^-1 on the old value.
        e.observe(Duration::from_millis(1), t0 + Duration::from_millis(10_001));
        let expected = 100.0 * (-1.0f64).exp() + 1.0 * (1.0 - (-1.0f64).exp());
        assert!((e.value - expected).abs() < 1e-6, "{}", e.value);
    }

    #[test]
    fn an_unobserved_peak_decays_so_the_endpoint_is_tried_again() {
        let t0 = Instant::now();
        let mut shunned = PeakEwma::starting_at(1.0, t0);
        shunned.observe(Duration::from_millis(50), t0);
        assert_eq!(shunned.at(t0), 50.0);
        let later = t0 + Duration::from_secs(10);
        assert!((shunned.at(later) - 50.0 * (-1.0f64).exp()).abs() < 1e-9);
        // Against a peer steady at 1 ms, the first draw of the shunned endpoint wins once
        // its estimate is within the 20 % band: 50 e^(-t/10) < 1.25 from t ≈ 36.9 s.
        let peer = c(1, 1.0, true);
        let at = |secs: f64| c(1, shunned.at(t0 + Duration::from_secs_f64(secs)), true);
        assert_eq!(choose(&[at(36.0), peer], (0.0, 0.0, 0.0)), Some(1));
        assert_eq!(choose(&[at(37.5), peer], (0.0, 0.0, 0.0)), Some(0));
    }

    #[test]
    fn accrual_ejects_backs_off_and_probes() {
        let t = Instant::now();
        let mut a = Accrual::new();
        for _ in 0..4 {
            a.record(false, t);
        }
        assert_eq!(a, Accrual::Healthy(4));
        a.record(false, t);
        assert_eq!(
            a,
            Accrual::Ejected {
                until: t + EJECT_MIN,
                next: EJECT_MIN * 2
            }
        );
        assert!(!a.available(t + Duration::from_millis(999)));
        assert!(a.available(t + EJECT_MIN));
        assert_eq!(
            a,
            Accrual::Probing {
                next: EJECT_MIN * 2
            }
        );
        // A failed probe ejects for twice as long.
        let t2 = t + EJECT_MIN;
        a.record(false, t2);
        assert_eq!(
            a,
            Accrual::Ejected {
                until: t2 + EJECT_MIN * 2,
                next: EJECT_MIN * 4
            }
        );
        // A successful probe heals completely.
        assert!(a.available(t2 + EJECT_MIN * 2));
        a.record(true, t2 + EJECT_MIN * 2);
        assert_eq!(a, Accrual::Healthy(0));
        // Backoff is capped.
        let mut a = Accrual::Probing { next: EJECT_MAX };
        a.record(false, t);
        assert_eq!(
            a,
            Accrual::Ejected {
                until: t + EJECT_MAX,
                next: EJECT_MAX
            }
        );
        // A success between failures resets the count.
        let mut a = Accrual::Healthy(3);
        a.record(true, t);
        a.record(false, t);
        assert_eq!(a, Accrual::Healthy(1));
    }
}
