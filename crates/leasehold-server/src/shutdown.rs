//! Graceful shutdown: one [`Shutdown`] trigger, many [`ShutdownSignal`]s.
//!
//! Every long-lived task holds a signal and returns when it fires. The
//! trigger fires on [`Shutdown::trigger`] or when it is dropped, so a node
//! that is dropped without an explicit shutdown still stops its tasks.

use tokio::sync::watch;

/// The owning side; fires on `trigger()` or drop.
#[derive(Debug)]
pub struct Shutdown {
    /// Sender whose value flips to `true` once; dropping it also wakes receivers.
    tx: watch::Sender<bool>,
}

/// A cloneable handle that resolves once shutdown began.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    /// Receiver side of the trigger.
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new, untriggered shutdown.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(false);
        Shutdown { tx }
    }

    /// A signal that resolves when this shutdown fires.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }

    /// Fires the shutdown.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.trigger();
    }
}

impl ShutdownSignal {
    /// Resolves when shutdown was triggered (or the trigger dropped).
    pub async fn recv(mut self) {
        // Err means the sender is gone, which also means shut down.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}
