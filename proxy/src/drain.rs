//! Graceful shutdown: stop accepting, let in-flight work finish, give up at a deadline.
//!
//! [`Signal`] is held by the app; every listener and connection task holds a [`Watch`].
//! `Signal::drain` tells all watches to wind down and then waits until every watch has been
//! dropped (each connection task drops its own when it ends), or the grace period passes.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Held by the owner; starts the drain.
#[derive(Debug)]
pub struct Signal {
    tx: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

/// Held by every task that must finish before the process exits.
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every task finished within the grace period.
    Complete,
    /// The grace period passed with tasks still running.
    TimedOut,
}

pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    let (alive, done) = mpsc::channel(1);
    (Signal { tx, done }, Watch { rx, _alive: alive })
}

impl Signal {
    /// Tells every watch to wind down, then waits for all of them up to `grace`.
    pub async fn drain(mut self, grace: Duration) -> Drained {
        let _ = self.tx.send(true);
        // recv() returns None once every Watch (every mpsc sender) is gone.
        match tokio::time::timeout(grace, self.done.recv()).await {
            Ok(_) => Drained::Complete,
            Err(_) => Drained::TimedOut,
        }
    }
}

impl Watch {
    /// Completes once a drain has started.
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        // An error means the Signal was dropped without draining: treat it as a drain too.
        let _ = rx.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_watches() {
        let (signal, watch) = channel();
        let w2 = watch.clone();
        let task = tokio::spawn(async move {
            w2.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(w2);
        });
        drop(watch);
        let started = std::time::Instant::now();
        assert_eq!(
            signal.drain(Duration::from_secs(5)).await,
            Drained::Complete
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_grace() {
        let (signal, watch) = channel();
        let held = watch.clone();
        drop(watch);
        assert_eq!(
            signal.drain(Duration::from_secs(3)).await,
            Drained::TimedOut
        );
        assert!(held.is_draining());
    }
}
