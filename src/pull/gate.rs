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
//! registry in proxy mode (2.8: `registry/proxy/proxyblobstore.go`, `ServeBlob`): a request for
//! a blob it lacks starts its own fetch from the origin to store it *and* streams the answer
//! from the origin with a second fetch, and every request that comes while that store runs is
//! streamed from the origin again. Only the store is needed. So the holder [`warm`]s the mirror
//! before fetching: a one-byte range request, dropped at its headers, which starts the
//! cache's store and stops its second stream at once; then the same probe with backoff until
//! the mirror answers it as a range (`206`), which the proxy's origin stream never does (it
//! sends the whole blob with `200`) and its storage does (`http.ServeContent`). The holder
//! then fetches from the cache's storage like the others. A mirror that is no cache answers
//! the first probe with `206` and costs one tiny request; one that never answers a range is
//! remembered and not probed again. What a dropped probe still costs the origin is what the
//! socket buffers held when the cache noticed (up to a few MiB), against a whole second copy.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::PullError;
use crate::digest::Digest;
use crate::registry::blob::BlobError;
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
        if probe(&registry, &repo, &digest, size).await == Some(true) {
            return;
        }
        wait *= 2;
    }
}

/// The first re-probe of [`warm`] comes this long after the probe that started the store...
const WARM_FIRST_POLL: Duration = Duration::from_millis(200);
/// ...and the wait doubles up to this.
const WARM_MAX_POLL: Duration = Duration::from_secs(4);

/// How long [`warm`] waits for the mirror's store of `size` bytes at most: what 5 MB/s would
/// take, within 10 s and 10 min. A mirror past it is taken to never answer ranges.
pub fn warm_limit(size: u64) -> Duration {
    Duration::from_secs(size / 5_000_000).clamp(Duration::from_secs(10), Duration::from_secs(600))
}

/// Mirrors that never answered a range in [`warm_limit`]: they are not probed again.
static NO_RANGES: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// Whether one byte of the blob comes from `registry` as a range (`206`): the probe's answer
/// is dropped at its headers. `None` when the request failed otherwise (the fetch that
/// follows reports it).
async fn probe(registry: &Registry, repo: &str, digest: &Digest, size: u64) -> Option<bool> {
    match registry.blob_range(repo, digest, size, 0, 1, 0).await {
        Ok(_) => Some(true),
        Err(BlobError::RangeRefused(_)) => Some(false),
        Err(_) => None,
    }
}

/// Makes the mirror `endpoint` (`registry`) store the blob and waits, with backoff and at most
/// [`warm_limit`], until it serves it from its storage (see the module docs). True when it
/// does; false when it is unknown (the mirror never answers ranges, a probe failed, or
/// `cancel` fired), and the holder then fetches as if alone.
pub async fn warm(
    registry: &Registry,
    endpoint: &str,
    repo: &str,
    digest: &Digest,
    size: u64,
    cancel: &CancellationToken,
) -> bool {
    if size == 0 || NO_RANGES.lock().expect("lock").contains(endpoint) {
        return false;
    }
    let deadline = Instant::now() + warm_limit(size);
    let mut wait = WARM_FIRST_POLL;
    loop {
        let answer = tokio::select! {
            a = probe(registry, repo, digest, size) => a,
            _ = cancel.cancelled() => return false,
        };
        match answer {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
        if Instant::now() + wait > deadline {
            NO_RANGES.lock().expect("lock").insert(endpoint.to_string());
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return false,
        }
        wait = (wait * 2).min(WARM_MAX_POLL);
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
    /// Runs `fetch`, the download of `digest` (`size` bytes) from `registry`, once `gate` (if
    /// any) lets this pull: at once when it is the first (after warming the mirror), else after
    /// another node fetched it into the mirror. A held claim is reported fetched afterwards;
    /// a failed fetch drops it, which releases it.
    pub(super) async fn around<T>(
        gate: Option<&Gated>,
        registry: &Arc<Registry>,
        repo: &str,
        digest: &Digest,
        size: u64,
        cancel: &CancellationToken,
        fetch: impl Future<Output = Result<T, PullError>>,
    ) -> Result<T, PullError> {
        let holding = match gate {
            Some(gate) => gate.claim(registry, repo, digest, size, cancel).await?,
            None => None,
        };
        let started = Instant::now();
        let value = fetch.await?;
        Gated::fetched(holding, registry, repo, digest, size, started.elapsed());
        Ok(value)
    }

    /// Claims `digest`: the held claim when this pull is the first, `None` when it may fetch
    /// now; [`PullError::Cancelled`] when `cancel` fired while waiting.
    /// When this pull is the first, also [`warm`]s the mirror before it fetches.
    async fn claim(
        &self,
        registry: &Registry,
        repo: &str,
        digest: &Digest,
        size: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<Holding>, PullError> {
        match self.gate.claim(&self.endpoint, digest, cancel).await {
            Some(Claim::Held(held)) => {
                let warmed = warm(registry, &self.endpoint, repo, digest, size, cancel).await;
                if cancel.is_cancelled() {
                    return Err(PullError::Cancelled);
                }
                Ok(Some(Holding { held, warmed }))
            }
            Some(Claim::Free) => Ok(None),
            None => Err(PullError::Cancelled),
        }
    }

    /// Reports a held claim's blob fetched: at once when the mirror was warmed, else after
    /// settling on `registry` (see [`settle`]) after a fetch that took `took`.
    fn fetched(
        holding: Option<Holding>,
        registry: &Arc<Registry>,
        repo: &str,
        digest: &Digest,
        size: u64,
        took: Duration,
    ) {
        let Some(Holding { held, warmed }) = holding else {
            return;
        };
        if warmed {
            held.fetched(Box::pin(async {}));
        } else {
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

/// A claim this pull holds, and whether the mirror already serves the blob from its storage.
pub(super) struct Holding {
    held: Box<dyn HeldClaim>,
    warmed: bool,
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

    #[test]
    fn the_warm_limit_is_5_mb_per_second_within_bounds() {
        assert_eq!(warm_limit(0), Duration::from_secs(10));
        assert_eq!(warm_limit(500_000_000), Duration::from_secs(100));
        assert_eq!(warm_limit(u64::MAX), Duration::from_secs(600));
    }
}
