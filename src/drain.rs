//! Shutdown: the signals that start it, and the drain that carries it out.
//!
//! A drain has one [`Trigger`] and any number of [`Watcher`]s. Whatever must finish before the
//! drain completes holds a watcher (a listener, each of its connections, the admin server, each
//! exporter's worker), asks it whether a drain began, and drops it once it has finished.
//! [`Trigger::drain`] tells every watcher at once and waits, up to a deadline, for the last one
//! to be dropped. `run` drains in stages, each with its own trigger: the data path first (its
//! requests still record spans), then the exporters (they flush those spans), then the admin
//! server (it answers until the end).

use std::time::Duration;

use tokio::sync::watch;

/// Starts a drain, once.
pub(crate) struct Trigger {
    tx: watch::Sender<bool>,
}

/// Told when a drain begins; the drain waits for every clone to be dropped.
#[derive(Clone)]
pub(crate) struct Watcher {
    rx: watch::Receiver<bool>,
}

/// A trigger and the first of its watchers.
pub(crate) fn channel() -> (Trigger, Watcher) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Watcher { rx })
}

impl Trigger {
    /// A new watcher of this trigger, e.g. for a worker started after the first.
    pub(crate) fn watcher(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    /// Tells every watcher to finish and waits until all are dropped, at most `deadline`.
    /// Returns whether everything finished in time.
    pub(crate) async fn drain(self, deadline: Duration) -> bool {
        let _ = self.tx.send(true);
        tokio::time::timeout(deadline, self.tx.closed())
            .await
            .is_ok()
    }
}

impl Watcher {
    /// Whether a drain began.
    pub(crate) fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once a drain begins (at once if it has).
    pub(crate) async fn draining(&mut self) {
        // An error means the trigger is gone: nothing will wait for this watcher any more,
        // which ends it just the same.
        let _ = self.rx.wait_for(|d| *d).await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops tracecar");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
