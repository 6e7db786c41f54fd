//! Fetching a blob once for many pullers that share a mirror: the hook a front end (the fleet
//! agent) gives the pull to coordinate its blob fetches with other nodes'.
//!
//! Before a pull fetches a blob (a layer or the config) from a mirror, it asks the
//! [`BlobGate`] for a claim on that mirror and digest. The first puller to ask holds the claim
//! ([`Claim::Held`]) and fetches at once; the others wait until the holder has fetched it and
//! the mirror serves it from its own storage, then fetch it from there ([`Claim::Free`]). A
//! holder whose fetch fails drops its claim, which releases it to the next. Pulls from a
//! registry itself (no mirror) are not coordinated: there is no cache to warm.
//!
//! "Served from its own storage" is the point for a pull-through cache such as distribution's
//! registry in proxy mode (2.8: `registry/proxy/proxyblobstore.go`): while it is still storing a
//! blob it lacks, every request for it is streamed from the origin again. So a holder's fetch
//! ends with [`settle`]: a one-byte range request after a grace, repeated with backoff a few
//! times, until the mirror answers it as a range (`206`), which the proxy's origin stream never
//! does (it sends the whole blob with `200`) and its storage does (`http.ServeContent`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::PullError;
use crate::digest::Digest;
use crate::registry::Registry;

/// A boxed, sendable future (the gate's methods are called through `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Coordinates blob fetches from mirrors between pullers (see the module docs).
pub trait BlobGate: Send + Sync {
    /// Waits until this pull may fetch `digest` from the mirror `endpoint` (`host[:port]`):
    /// at once when it is the first to ask, else when the holder is done, gave up or died.
    /// `None` when `cancel` fired first. It never fails: when the coordination itself fails,
    /// the answer is [`Claim::Free`] and the pull fetches as if alone.
    fn claim<'a>(
        &'a self,
        endpoint: &'a str,
        digest: &'a Digest,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Option<Claim>>;
}

/// What [`BlobGate::claim`] decided.
pub enum Claim {
    /// This pull is the first: it fetches the blob, then reports with [`HeldClaim::fetched`];
    /// dropping the claim without that (a failed or cancelled fetch) releases it.
    Held(Box<dyn HeldClaim>),
    /// Fetch it now (from the warm mirror, or alone when coordination is unavailable).
    Free,
}

/// A claim this pull holds.
pub trait HeldClaim: Send {
    /// The blob was fetched; `settled` resolves once the mirror serves it from its own
    /// storage. The claim is kept (and refreshed) until then, and the others are told after.
    fn fetched(self: Box<Self>, settled: BoxFuture<'static, ()>);
}

/// The first probe of [`settle`] comes this long after the fetch, at least...
const SETTLE_GRACE_MIN: Duration = Duration::from_millis(100);
/// ...and at most.
const SETTLE_GRACE_MAX: Duration = Duration::from_secs(3);
/// Probes before the holder tells the others anyway.
const SETTLE_PROBES: u32 = 5;

/// The grace before the first probe after a fetch that took `fetch`: an eighth of it, within
/// [`SETTLE_GRACE_MIN`, `SETTLE_GRACE_MAX`]. A pull-through cache stores the blob with its
/// own fetch from the origin, started when the holder's began and running beside it.
pub fn settle_grace(fetch: Duration) -> Duration {
    (fetch / 8).clamp(SETTLE_GRACE_MIN, SETTLE_GRACE_MAX)
}

/// Resolves once `registry` answers a one-byte range of the blob as a range (from its
/// storage), or after [`SETTLE_PROBES`] probes `grace`, 2×`grace`, … apart. A probe the cache
/// answers from the origin (whole blob, `200`) is dropped at its headers: it costs the origin
/// one request and what its buffers held, which the grace is there to avoid.
pub async fn settle(registry: Arc<Registry>, repo: String, digest: Digest, size: u64, grace: Duration) {
    if size == 0 {
        return;
    }
    let mut wait = grace;
    for _ in 0..SETTLE_PROBES {
        tokio::time::sleep(wait).await;
        if registry.blob_range(&repo, &digest, size, 0, 1, 0).await.is_ok() {
            return;
        }
        wait *= 2;
    }
}

/// A pull's gate and the mirror it fetches from, as the pull's steps use them.
#[derive(Clone)]
pub(super) struct Gated {
    pub(super) gate: Arc<dyn BlobGate>,
    /// The mirror's `host[:port]`.
    pub(super) endpoint: String,
}

impl Gated {
    /// Claims `digest`: the held claim when this pull is the first, `None` when it may fetch
    /// now; [`PullError::Cancelled`] when `cancel` fired while waiting.
    pub(super) async fn claim(
        &self,
        digest: &Digest,
        cancel: &CancellationToken,
    ) -> Result<Option<Box<dyn HeldClaim>>, PullError> {
        match self.gate.claim(&self.endpoint, digest, cancel).await {
            Some(Claim::Held(held)) => Ok(Some(held)),
            Some(Claim::Free) => Ok(None),
            None => Err(PullError::Cancelled),
        }
    }

    /// Reports a held claim's blob fetched, settling on `registry` (see [`settle`]) after
    /// a fetch that took `took`.
    pub(super) fn fetched(
        held: Option<Box<dyn HeldClaim>>,
        registry: &Arc<Registry>,
        repo: &str,
        digest: &Digest,
        size: u64,
        took: Duration,
    ) {
        if let Some(held) = held {
            let settled = settle(
                registry.clone(),
                repo.to_string(),
                digest.clone(),
                size,
                settle_grace(took),
            );
            held.fetched(Box::pin(settled));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_is_an_eighth_of_the_fetch_within_bounds() {
        assert_eq!(settle_grace(Duration::ZERO), SETTLE_GRACE_MIN);
        assert_eq!(settle_grace(Duration::from_secs(8)), Duration::from_secs(1));
        assert_eq!(settle_grace(Duration::from_secs(600)), SETTLE_GRACE_MAX);
    }
}
