//! A shutdown trigger shared by every server in the controller.

use std::sync::Arc;
use tokio::sync::watch;

/// Triggers shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

/// Waits for shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self { tx: Arc::new(tx) }
    }

    /// Starts shutting down everything that holds a signal from this trigger.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown has been triggered (or every trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|down| *down).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_signal() {
        let s = Shutdown::new();
        let mut a = s.signal();
        let mut b = s.clone().signal();
        s.trigger();
        a.wait().await;
        b.wait().await;
        // A signal taken after the trigger is already done.
        s.signal().wait().await;
    }
}
