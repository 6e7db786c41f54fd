//! The agents' [`BlobGate`]: one claim per mirror and blob in the `blob-claims` bucket, so
//! that when every agent pulls through one pull-through cache, one of them fetches each blob
//! the cache lacks and the others fetch it once the cache holds it.
//!
//! A claim is the key `claims.<mirror>.<algorithm>.<hex>`. The first agent to `create` it
//! holds it and fetches; it rewrites the value every [`CLAIM_REFRESH`] while it fetches and
//! while the cache settles, then writes `done`. A failed or cancelled fetch deletes the claim
//! (the next agent takes it). The others watch the key until it says `done` or goes away;
//! a claim not rewritten for [`CLAIM_TTL`] (its holder died) is taken over with a
//! compare-and-set on the revision they last saw. No clock is compared across machines:
//! staleness is measured on the waiter's own clock from the last change it saw.
//!
//! Waiting is cancellable and bounded ([`WAIT_LIMIT`]); every NATS call is bounded
//! ([`NATS_CALL`]), and any failure of NATS answers [`Claim::Free`]: the pull then fetches
//! as it would alone, never failing or hanging for want of coordination.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation};
use futures_util::StreamExt as _;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::digest::Digest;
use crate::pull::gate::{BlobGate, BoxFuture, Claim, HeldClaim};

/// A claim not rewritten for this long belongs to a holder that died.
pub const CLAIM_TTL: Duration = Duration::from_secs(10);
/// How often a holder rewrites its claim.
pub const CLAIM_REFRESH: Duration = Duration::from_secs(3);
/// How long a waiter waits for a live holder before fetching anyway.
pub const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// How long a holder waits for the cache to settle before saying `done` anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// The bound on one call to NATS.
pub const NATS_CALL: Duration = Duration::from_secs(3);
/// The value of a claim whose blob is in the cache.
const DONE: &[u8] = b"done";

/// The key of the claim on `digest` from the mirror `endpoint` (`host[:port]`).
pub fn claim_key(endpoint: &str, digest: &Digest) -> String {
    let token = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "claims.{}.{}.{}",
        token(endpoint),
        token(digest.algorithm().name()),
        token(digest.hex())
    )
}

/// The gate of one agent, over the claims bucket.
#[derive(Clone)]
pub struct NatsGate {
    claims: kv::Store,
    /// What a held claim says (`claimed <hostname>`).
    value: Vec<u8>,
}

impl NatsGate {
    /// The gate of the agent `hostname` over `claims`.
    pub fn new(claims: kv::Store, hostname: &str) -> NatsGate {
        NatsGate {
            claims,
            value: format!("claimed {hostname}").into_bytes(),
        }
    }

    /// The claim on `key` as [`BlobGate::claim`] answers it.
    async fn decide(&self, key: String, cancel: &CancellationToken) -> Option<Claim> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            match bounded(self.claims.create(&key, self.value.clone().into()), cancel).await? {
                Some(Ok(revision)) => return Some(self.held(key, revision, cancel)),
                Some(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {}
                _ => return Some(Claim::Free),
            }
            // Watch first, then read: no change between the two is missed.
            let Some(Ok(mut watch)) = bounded(self.claims.watch(&key), cancel).await? else {
                return Some(Claim::Free);
            };
            let (mut revision, mut seen) = match bounded(self.claims.entry(&key), cancel).await? {
                Some(Ok(Some(e))) if e.operation == Operation::Put => {
                    if e.value.as_ref() == DONE {
                        return Some(Claim::Free);
                    }
                    (e.revision, Instant::now())
                }
                // Gone since the create: try again.
                Some(Ok(_)) => continue,
                _ => return Some(Claim::Free),
            };
            // Wait for `done`, a release, or the holder's silence.
            loop {
                let stale = seen + CLAIM_TTL;
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep_until(stale.min(deadline)) => {
                        if Instant::now() >= deadline {
                            return Some(Claim::Free);
                        }
                        let update = self.claims.update(&key, self.value.clone().into(), revision);
                        match bounded(update, cancel).await? {
                            Some(Ok(revision)) => return Some(self.held(key, revision, cancel)),
                            // Changed meanwhile: look again.
                            Some(Err(_)) => break,
                            None => return Some(Claim::Free),
                        }
                    }
                    change = watch.next() => match change {
                        Some(Ok(e)) if e.operation == Operation::Put => {
                            if e.value.as_ref() == DONE {
                                return Some(Claim::Free);
                            }
                            (revision, seen) = (e.revision, Instant::now());
                        }
                        // Released: race for it.
                        Some(Ok(_)) => break,
                        _ => return Some(Claim::Free),
                    }
                }
            }
        }
    }

    /// A held claim at `revision`, refreshed from now on; `cancel` (the pull's) releases it.
    fn held(&self, key: String, revision: u64, cancel: &CancellationToken) -> Claim {
        let revision = Arc::new(AtomicU64::new(revision));
        let stop = CancellationToken::new();
        tokio::spawn({
            let (claims, key, value) = (self.claims.clone(), key.clone(), self.value.clone());
            let (revision, stop) = (Arc::clone(&revision), stop.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(CLAIM_REFRESH) => {}
                        _ = stop.cancelled() => return,
                    }
                    let update = claims.update(&key, value.clone().into(), revision.load(Ordering::SeqCst));
                    match timeout(NATS_CALL, update).await {
                        Ok(Ok(r)) => revision.store(r, Ordering::SeqCst),
                        // Taken over (we were silent too long): not ours any more.
                        Ok(Err(_)) => return,
                        // NATS is slow: try again at the next beat.
                        Err(_) => {}
                    }
                }
            }
        });
        Claim::Held(Box::new(Held {
            claims: self.claims.clone(),
            key,
            revision,
            stop,
            cancel: cancel.clone(),
            fetched: false,
        }))
    }
}

/// `call` bounded by [`NATS_CALL`]: `None` (outer) when cancelled, `Some(None)` on timeout.
async fn bounded<T>(
    call: impl std::future::Future<Output = T>,
    cancel: &CancellationToken,
) -> Option<Option<T>> {
    tokio::select! {
        r = timeout(NATS_CALL, call) => Some(r.ok()),
        _ = cancel.cancelled() => None,
    }
}

impl BlobGate for NatsGate {
    fn claim<'a>(
        &'a self,
        endpoint: &'a str,
        digest: &'a Digest,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Option<Claim>> {
        Box::pin(self.decide(claim_key(endpoint, digest), cancel))
    }
}

/// A claim this agent holds; dropped unfetched, it is released.
struct Held {
    claims: kv::Store,
    key: String,
    revision: Arc<AtomicU64>,
    /// Stops the refresher.
    stop: CancellationToken,
    /// The pull's: cancelled while the cache settles, the claim is released.
    cancel: CancellationToken,
    fetched: bool,
}

impl Held {
    /// Stops refreshing and writes `value` (`done`), or deletes the claim, if still ours.
    async fn finish(
        claims: kv::Store,
        key: String,
        revision: Arc<AtomicU64>,
        stop: CancellationToken,
        done: bool,
    ) {
        stop.cancel();
        let revision = revision.load(Ordering::SeqCst);
        let _ = if done {
            timeout(NATS_CALL, claims.update(&key, DONE.to_vec().into(), revision))
                .await
                .map(|r| r.map(drop).map_err(|e| e.to_string()))
        } else {
            timeout(NATS_CALL, claims.delete_expect_revision(&key, Some(revision)))
                .await
                .map(|r| r.map_err(|e| e.to_string()))
        };
    }
}

impl HeldClaim for Held {
    fn fetched(mut self: Box<Self>, settled: BoxFuture<'static, ()>) {
        self.fetched = true;
        let (claims, key, revision, stop) = (
            self.claims.clone(),
            self.key.clone(),
            Arc::clone(&self.revision),
            self.stop.clone(),
        );
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let done = tokio::select! {
                _ = timeout(SETTLE_LIMIT, settled) => true,
                _ = cancel.cancelled() => false,
            };
            Held::finish(claims, key, revision, stop, done).await;
        });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.fetched {
            return;
        }
        let (claims, key, revision, stop) = (
            self.claims.clone(),
            std::mem::take(&mut self.key),
            Arc::clone(&self.revision),
            self.stop.clone(),
        );
        stop.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Held::finish(claims, key, revision, stop, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_mirror_and_the_blob_in_nats_key_characters() {
        let d = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert_eq!(
            claim_key("127.0.0.1:5000", &d),
            format!("claims.127_0_0_1_5000.sha256.{}", "ab".repeat(32))
        );
        assert_eq!(
            claim_key("cache.lan", &d),
            format!("claims.cache_lan.sha256.{}", "ab".repeat(32))
        );
    }
}
