//! One layer's task: wait for a download slot, fetch the blob into `ingest/` (resuming a
//! partial file, retrying transient failures with docker's countdown), publish it, then hand
//! it to [`super::extract`] and report `Pull complete` in manifest order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::extract::{extract, max_layer_bytes, StreamExtractor};
use super::{OrderedCompletion, PullError, RetryPolicy, PROGRESS_STEP};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::progress::{Event, LayerStatus, Phase, Reporter};
use crate::registry::blob::BlobError;
use crate::registry::{Registry, RegistryError};
use crate::store::ingest::Committed;
use crate::store::{Ingest, Opened, Store};

/// How a layer task gets its download slot.
pub(super) enum Slot {
    /// The blob is already in the store.
    NotNeeded,
    /// A slot was free at once.
    Held(OwnedSemaphorePermit),
    /// The layer said `Waiting`; its slot arrives in manifest order.
    Queued(tokio::sync::oneshot::Receiver<OwnedSemaphorePermit>),
}

/// Everything one layer's download-and-unpack task needs.
pub(super) struct LayerTask {
    pub(super) store: Store,
    pub(super) registry: Arc<Registry>,
    pub(super) repo: String,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) cancel: CancellationToken,
    pub(super) retry: RetryPolicy,
    /// The settings' absolute bound on a layer's uncompressed size, if any.
    pub(super) max_layer_bytes: Option<u64>,
    pub(super) completion: Arc<OrderedCompletion>,
    /// Extractors given up during the download (the file restarted); closed before the task
    /// ends so that their temporary directories are gone when the pull returns.
    pub(super) retired: std::sync::Mutex<Vec<StreamExtractor>>,
}

impl LayerTask {
    fn report(&self, id: &str, status: LayerStatus) {
        self.reporter.report(Event::Layer {
            id: id.to_string(),
            status,
        });
    }

    pub(super) async fn run(
        self,
        order: usize,
        desc: Descriptor,
        diff_id: Digest,
        slot: Slot,
    ) -> Result<(), PullError> {
        let id = desc.digest.short().to_string();
        let permit = match slot {
            Slot::NotNeeded => None,
            Slot::Held(p) => Some(p),
            Slot::Queued(rx) => tokio::select! {
                p = rx => Some(p.map_err(|_| PullError::Cancelled)?),
                _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
            },
        };
        // Unpack while downloading; the blob is re-read only when streaming did not work out.
        let mut tee = None;
        if let Some(permit) = permit {
            let limit = max_layer_bytes(desc.size, self.max_layer_bytes);
            tee = StreamExtractor::start(&self.store, &self.cancel, &diff_id, limit);
            let downloaded = self.download(&id, &desc, &mut tee).await;
            if downloaded.is_err() {
                self.retire(&mut tee);
            }
            let retired = std::mem::take(&mut *self.retired.lock().expect("lock"));
            for t in retired {
                t.close().await;
            }
            downloaded?;
            // The slot is given up as soon as the download ends; unpacking does not hold it.
            drop(permit);
        }
        self.report(&id, LayerStatus::DownloadComplete);
        if let Some(tee) = tee {
            if tee
                .finish(&self.store, &*self.reporter, &id, &desc, &diff_id)
                .await?
            {
                self.completion.done(order, &*self.reporter);
                return Ok(());
            }
        }

        let store = self.store.clone();
        let reporter = self.reporter.clone();
        let cancel = self.cancel.clone();
        let id2 = id.clone();
        let desc2 = desc.clone();
        let diff2 = diff_id.clone();
        let limit = max_layer_bytes(desc.size, self.max_layer_bytes);
        tokio::task::spawn_blocking(move || {
            extract(&store, &*reporter, &cancel, &id2, &desc2, &diff2, limit)
        })
        .await
        .map_err(|e| PullError::Internal(e.to_string()))??;
        self.completion.done(order, &*self.reporter);
        Ok(())
    }

    /// Gives up the stream extractor, if any (its thread is stopped; see `retired`).
    fn retire(&self, tee: &mut Option<StreamExtractor>) {
        if let Some(t) = tee.take() {
            t.abort();
            self.retired.lock().expect("lock").push(t);
        }
    }

    /// Downloads the blob into `ingest/` through the store's [`Ingest`] writer (which resumes
    /// a partial file and verifies size and digest before it commits), retrying transient
    /// failures with docker's countdown.
    /// `tee` follows the ingest file as it grows; it is dropped (aborting it) whenever the
    /// file can no longer be the blob from byte 0.
    async fn download(
        &self,
        id: &str,
        desc: &Descriptor,
        tee: &mut Option<StreamExtractor>,
    ) -> Result<(), PullError> {
        let digest = &desc.digest;
        let mut ingest = loop {
            match Ingest::try_open(&self.store, digest, desc.size)? {
                Opened::Stored => return Ok(()),
                Opened::Open(i) => break *i,
                // Another rpull is fetching the same blob: wait for it, then use its result.
                Opened::Busy => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
                },
            }
        };
        if ingest.prefix() > 0 {
            // Resuming an earlier run's partial file: the extractor never saw its head.
            self.retire(tee);
        } else if let Some(t) = tee.as_ref() {
            if t.attach(ingest.file()).is_err() {
                self.retire(tee);
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.stream_into(id, desc, &mut ingest, tee).await;
            let err = match result {
                Ok(()) => {
                    self.report(id, LayerStatus::VerifyingChecksum);
                    let resumed = ingest.resumed();
                    if ingest.commit()? == Committed::Done {
                        return Ok(());
                    }
                    self.retire(tee);
                    if !resumed {
                        ingest.abandon();
                        return Err(PullError::LayerVerification(digest.clone()));
                    }
                    RegistryError::Verification(format!("digest mismatch after resuming {digest}"))
                }
                Err(PullError::Registry(e)) => e,
                Err(other) => return Err(other),
            };
            if !err.is_retryable() && !matches!(err, RegistryError::Verification(_))
                || attempt >= self.retry.attempts
            {
                return Err(err.into());
            }
            let mut wait = self.retry.delay_after(attempt);
            if let Some(s) = err.retry_after() {
                wait = wait.max(Duration::from_secs(s));
            }
            self.countdown(id, wait).await?;
        }
    }

    /// Shows docker's `Retrying in N seconds` countdown while waiting.
    async fn countdown(&self, id: &str, wait: Duration) -> Result<(), PullError> {
        let mut left = wait;
        while !left.is_zero() {
            let secs = left.as_secs_f64().ceil() as u64;
            self.report(id, LayerStatus::Retrying { seconds: secs });
            let step = left.min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
            }
            left -= step;
        }
        Ok(())
    }

    /// One attempt: requests the blob from the end of the completed prefix and appends what
    /// arrives.
    async fn stream_into(
        &self,
        id: &str,
        desc: &Descriptor,
        ingest: &mut Ingest,
        tee: &mut Option<StreamExtractor>,
    ) -> Result<(), PullError> {
        let offset = ingest.prefix();
        if offset == desc.size {
            return Ok(());
        }
        let opened = tokio::select! {
            r = self.registry.blob_stream(&self.repo, &desc.digest, desc.size, offset) => r,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        };
        let mut stream = opened.map_err(RegistryError::from)?;
        if stream.start() < offset {
            // The server ignored the range: start over.
            ingest.restart()?;
            self.retire(tee);
        } else if offset > 0 {
            ingest.note_resumed();
        }
        let mut last_report = 0u64;
        self.reporter.report(Event::Progress {
            id: id.to_string(),
            phase: Phase::Downloading,
            current: ingest.prefix(),
            total: desc.size,
        });
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
            };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(BlobError::Overrun(text)) => {
                    ingest.restart()?;
                    self.retire(tee);
                    return Err(RegistryError::Body(text).into());
                }
                Err(e) => return Err(RegistryError::from(e).into()),
            };
            let bytes = bytes.as_ref();
            let at = ingest.prefix();
            ingest.append(bytes)?;
            match tee.as_ref() {
                Some(t) if t.fed() == at => t.feed(bytes.len() as u64),
                Some(_) => self.retire(tee),
                None => {}
            }
            let now = ingest.prefix();
            if now - last_report >= PROGRESS_STEP || now == desc.size {
                last_report = now;
                self.reporter.report(Event::Progress {
                    id: id.to_string(),
                    phase: Phase::Downloading,
                    current: now,
                    total: desc.size,
                });
            }
        }
        Ok(())
    }
}
