//! The progress timeout of a pull (the CRI service's `--progress-timeout`, the agent's): a
//! [`Watchdog`] is the pull's reporter and says when the pull stopped receiving data, and
//! [`guard`] fails a pull that did so for the timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Event, LayerStatus, Phase, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerPhase {
    /// Downloading (or about to): its bytes must keep coming.
    Active,
    /// Queued for one of the service's download slots, which other pulls hold.
    Waiting,
    /// Downloaded (extraction reports its own progress) or already there.
    Done,
}

/// The progress timeout's view of a pull: when it last reported anything (a byte, a layer
/// status) and which layers are downloading. Like containerd's, the timer only runs while a
/// download is active: a pull whose layers all wait for a download slot is not stalled.
#[derive(Debug)]
pub struct Watchdog {
    start: Instant,
    last_ms: AtomicU64,
    layers: Mutex<HashMap<String, LayerPhase>>,
}

impl Default for Watchdog {
    fn default() -> Watchdog {
        Watchdog::new()
    }
}

impl Watchdog {
    /// A watchdog whose timer starts now.
    pub fn new() -> Watchdog {
        Watchdog {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether every layer still to download waits for a slot.
    fn only_queued(&self) -> bool {
        let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        let phases = || layers.values().copied();
        phases().any(|p| p == LayerPhase::Waiting) && !phases().any(|p| p == LayerPhase::Active)
    }

    /// Returns once `timeout` passed with no event while a download was active.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let idle = self.start.elapsed().saturating_sub(last);
            if idle >= timeout {
                if !self.only_queued() {
                    return;
                }
                self.touch();
                continue;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

impl Reporter for Watchdog {
    fn report(&self, event: Event) {
        let phase = match &event {
            Event::Layer { id, status } => match status {
                LayerStatus::PullingFsLayer | LayerStatus::Retrying { .. } => Some((id, LayerPhase::Active)),
                LayerStatus::Waiting => Some((id, LayerPhase::Waiting)),
                LayerStatus::AlreadyExists | LayerStatus::DownloadComplete | LayerStatus::PullComplete => {
                    Some((id, LayerPhase::Done))
                }
                LayerStatus::VerifyingChecksum => None,
            },
            Event::Progress {
                id,
                phase: Phase::Downloading,
                ..
            } => Some((id, LayerPhase::Active)),
            _ => None,
        };
        if let Some((id, phase)) = phase {
            let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
            // Progress events come by the thousand: only a change of phase writes.
            if layers.get(id) != Some(&phase) {
                layers.insert(id.clone(), phase);
            }
        }
        self.touch();
    }
}

/// A pull that received no data for its progress timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no progress for {0:?} (progress timeout)")]
pub struct Stalled(pub Duration);

/// Runs `pull`, whose reporter is `watchdog` and whose cancellation is `cancel`, until it
/// ends, or until it stalled for `timeout` (`None`: never): then it is cancelled, awaited
/// (so that it stops as after CTRL-c, partial blobs kept for the next pull), and
/// [`Stalled`] is the answer.
pub async fn guard<F: Future>(
    watchdog: &Watchdog,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    pull: F,
) -> Result<F::Output, Stalled> {
    let Some(timeout) = timeout else {
        return Ok(pull.await);
    };
    tokio::pin!(pull);
    tokio::select! {
        r = &mut pull => Ok(r),
        () = watchdog.stalled(timeout) => {
            cancel.cancel();
            let _ = pull.await;
            Err(Stalled(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_progress_timer_runs_only_while_a_download_is_active() {
        let t = Duration::from_millis(60);
        let layer = |id: &str, status| Event::Layer {
            id: id.into(),
            status,
        };
        // Nothing reported: stalled after the timeout.
        let w = Watchdog::new();
        let started = Instant::now();
        w.stalled(t).await;
        assert!(started.elapsed() >= t);

        // Every layer queued for a slot: not stalled, however long it waits.
        let w = Watchdog::new();
        w.report(layer("aaa", LayerStatus::PullingFsLayer));
        w.report(layer("bbb", LayerStatus::PullingFsLayer));
        w.report(layer("aaa", LayerStatus::Waiting));
        w.report(layer("bbb", LayerStatus::Waiting));
        assert!(tokio::time::timeout(t * 4, w.stalled(t)).await.is_err());
        // One gets its slot and its bytes stop: stalled.
        w.report(Event::Progress {
            id: "aaa".into(),
            phase: Phase::Downloading,
            current: 10,
            total: 100,
        });
        assert!(!w.only_queued());
        assert!(tokio::time::timeout(t * 4, w.stalled(t)).await.is_ok());
        // Done downloading, the other still queued: the queue does not count.
        w.report(layer("aaa", LayerStatus::DownloadComplete));
        assert!(w.only_queued());
    }

    #[tokio::test]
    async fn a_guarded_pull_that_stalls_is_cancelled_and_awaited() {
        let t = Duration::from_millis(50);
        let w = Watchdog::new();
        let cancel = CancellationToken::new();
        let pull = {
            let cancel = cancel.clone();
            async move {
                cancel.cancelled().await;
                "stopped"
            }
        };
        assert_eq!(guard(&w, Some(t), &cancel, pull).await, Err(Stalled(t)));
        assert!(cancel.is_cancelled());
        // One that ends in time, or has no timeout, is answered as it ended.
        let w = Watchdog::new();
        assert_eq!(guard(&w, Some(t), &cancel, async { 7 }).await, Ok(7));
        assert_eq!(guard(&w, None, &cancel, tokio::time::sleep(t * 2)).await, Ok(()));
        assert_eq!(
            Stalled(Duration::from_secs(1)).to_string(),
            "no progress for 1s (progress timeout)"
        );
    }
}
