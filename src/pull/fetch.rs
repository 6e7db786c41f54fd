//! One layer's task: wait for a download slot, fetch the blob into `ingest/` through the
//! store's [`Ingest`] writer (resuming a partial file, retrying transient failures with
//! docker's countdown), publish it, then hand it to [`super::extract`] and report
//! `Pull complete` in manifest order.
//!
//! A blob of at least `parallel-download-threshold` bytes is fetched as concurrent ranges
//! ([`RangeSettings`]): the missing ranges of the ingest file are split into chunks, taken by
//! up to `connections-per-blob` workers (each request holds one of the pull's
//! `max-connections`), and written at their offsets; the ingest records each completed range
//! in its sidecar and hashes the contiguous prefix, which the streaming extractor follows. The
//! first range probes the server alone. A range refused or answered wrongly, or failing three
//! times, ends the ranged download: the blob goes on as one stream from the completed prefix.
//!
//! The hashing and syncing that may take seconds on a large blob run on a blocking thread, not
//! on an async worker: opening the ingest (re-hashing a resumed partial, which the pull's
//! cancellation stops), completing a range (hashing what became contiguous), committing (the
//! fsync) and deleting a failed download. Truncating a partial to start over
//! (`restart`, `to_sequential`) and appending one chunk still run inline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::extract::{extract, max_layer_bytes, StreamExtractor};
use super::gate::Gated;
use super::{blocking, OrderedCompletion, PullError, RetryPolicy, PROGRESS_STEP};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::progress::{Event, LayerStatus, Phase, Reporter};
use crate::registry::blob::BlobError;
use crate::registry::{Registry, RegistryError};
use crate::settings::RangeSettings;
use crate::store::ingest::Committed;
use crate::store::{Ingest, Opened, RangeWriter, Store, StoreError};

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
    /// How large blobs are fetched in concurrent ranges.
    pub(super) ranges: RangeSettings,
    /// Open blob connections of the pull (every request holds one while it reads).
    pub(super) connections: Arc<Semaphore>,
    /// The coordination of fetches from a mirror with other pullers, if any.
    pub(super) gate: Option<Gated>,
}

/// How a ranged download ended when it did not complete the blob.
enum RangesEnd {
    /// The server cannot serve ranges (or kept failing them): go on with one stream.
    Fallback(String),
    /// A failure that one stream would meet as well.
    Failed(PullError),
}

/// What a range worker tells the download.
enum RangeMsg {
    /// The worker's first range is being served: the server answers ranges.
    Served,
    /// `[start, end)` is written (a whole range or a part of one).
    Done(u64, u64),
    /// The worker stopped.
    Failed(BlobError),
    /// Writing to the ingest file failed.
    Store(crate::store::StoreError),
}

/// Why a range worker stopped.
enum WorkerError {
    Blob(BlobError),
    Store(crate::store::StoreError),
}

impl From<BlobError> for WorkerError {
    fn from(e: BlobError) -> Self {
        WorkerError::Blob(e)
    }
}

impl From<RegistryError> for WorkerError {
    fn from(e: RegistryError) -> Self {
        WorkerError::Blob(e.into())
    }
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
            // The gate (if any) lets this pull fetch the blob at once when it is the first,
            // else after another node fetched it into the mirror; a claim held is released
            // when the fetch fails.
            if self.gate.is_some() {
                // Until its bytes come, the layer waits for its turn at the mirror (another
                // node's claim, or the mirror warming): not stalled, as a progress timeout
                // sees it.
                self.report(&id, LayerStatus::Waiting);
            }
            let fetch = self.fetch_blob(&id, &desc, &mut tee);
            let (gate, repo, digest) = (self.gate.as_ref(), &self.repo, &desc.digest);
            let cancel = &self.cancel;
            let downloaded =
                Gated::around(gate, &self.registry, repo, digest, desc.size, cancel, fetch).await;
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
        blocking(move || extract(&store, &*reporter, &cancel, &id2, &desc2, &diff2, limit)).await??;
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
    async fn fetch_blob(
        &self,
        id: &str,
        desc: &Descriptor,
        tee: &mut Option<StreamExtractor>,
    ) -> Result<(), PullError> {
        let digest = &desc.digest;
        let mut waited = false;
        let mut ingest = loop {
            match open_ingest(&self.store, digest, desc.size, &self.cancel).await? {
                Opened::Stored => return Ok(()),
                Opened::Open(i) => break *i,
                // Another rpull is fetching the same blob: wait for it, then use its result.
                // The layer says `Waiting`, as docker's does meanwhile.
                Opened::Busy => {
                    if !std::mem::replace(&mut waited, true) {
                        self.report(id, LayerStatus::Waiting);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
                    }
                }
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
        if desc.size >= self.ranges.threshold.max(1) && self.ranges.connections_per_blob > 1 {
            let (back, ranged) = self.fetch_ranges(id, desc, ingest, tee).await;
            ingest = back;
            match ranged {
                Ok(()) => match self.verify_and_commit(id, ingest, tee, digest).await? {
                    None => return Ok(()),
                    // An earlier run's bytes were wrong: fetch it again, in one stream.
                    Some(again) => ingest = again,
                },
                Err(RangesEnd::Failed(e)) => return Err(e),
                Err(RangesEnd::Fallback(_why)) => {
                    // Only the completed prefix is kept; the rest comes in order.
                    ingest.to_sequential()?;
                }
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.stream_into(id, desc, &mut ingest, tee).await;
            let err = match result {
                Ok(()) => match self.verify_and_commit(id, ingest, tee, digest).await? {
                    None => return Ok(()),
                    Some(again) => {
                        ingest = again;
                        RegistryError::Verification(format!("digest mismatch after resuming {digest}"))
                    }
                },
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

    /// Reports `Downloading` progress every [`PROGRESS_STEP`] bytes and at the end.
    fn report_downloaded(&self, id: &str, now: u64, total: u64, last_report: &mut u64) {
        if now - *last_report >= PROGRESS_STEP || now == total {
            *last_report = now;
            self.report_downloading(id, now, total);
        }
    }

    /// `Downloading` progress of layer `id`: `current` of `total` bytes.
    fn report_downloading(&self, id: &str, current: u64, total: u64) {
        self.reporter.report(Event::Progress {
            id: id.to_string(),
            phase: Phase::Downloading,
            current,
            total,
        });
    }

    /// Verifies the downloaded blob and commits it: `None` once it is in the store; the ingest
    /// back, emptied, when the bytes an earlier run left were wrong (fetch again); a
    /// verification error, the partial dropped, when this run's own bytes do not match.
    async fn verify_and_commit(
        &self,
        id: &str,
        ingest: Ingest,
        tee: &mut Option<StreamExtractor>,
        digest: &Digest,
    ) -> Result<Option<Ingest>, PullError> {
        self.report(id, LayerStatus::VerifyingChecksum);
        let resumed = ingest.resumed();
        let (ingest, committed) = on_blocking_thread(ingest, Ingest::commit).await;
        if committed? == Committed::Done {
            return Ok(None);
        }
        self.retire(tee);
        if !resumed {
            // Unlinking a large file takes a while too.
            blocking(move || ingest.abandon()).await?;
            return Err(PullError::LayerVerification(digest.clone()));
        }
        Ok(Some(ingest))
    }

    /// Fetches the missing ranges of the blob over up to `connections_per_blob` connections,
    /// writing each at its offset. The completed prefix is hashed and handed to the streaming
    /// extractor as it grows. The first range is asked for alone: only once it is served as a
    /// range do the other connections start. The ingest comes back with the outcome.
    async fn fetch_ranges(
        &self,
        id: &str,
        desc: &Descriptor,
        mut ingest: Ingest,
        tee: &mut Option<StreamExtractor>,
    ) -> (Ingest, Result<(), RangesEnd>) {
        let queue = Chunks::new(ingest.missing(), self.ranges.chunk_size);
        if queue.is_empty() {
            return (ingest, Ok(()));
        }
        let workers = queue.at_most(self.ranges.connections_per_blob).max(1);
        let writer = match ingest.begin_ranges() {
            Ok(w) => w,
            Err(e) => return (ingest, Err(RangesEnd::Failed(e.into()))),
        };
        let queue = Arc::new(Mutex::new(queue));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = self.cancel.child_token();
        let mut set = tokio::task::JoinSet::new();
        let spawn = |set: &mut tokio::task::JoinSet<()>| {
            let worker = RangeWorker {
                registry: self.registry.clone(),
                repo: self.repo.clone(),
                digest: desc.digest.clone(),
                size: desc.size,
                writer: writer.clone(),
                queue: queue.clone(),
                connections: self.connections.clone(),
                stop: stop.clone(),
                tx: tx.clone(),
            };
            set.spawn(worker.run());
        };
        spawn(&mut set);
        // The first connection alone until it shows whether more would help (see
        // `more_connections_help`): `Some(served at, bytes since)` while that is open.
        let mut probing: Option<(tokio::time::Instant, u64)> = None;
        let mut started = workers == 1;
        let mut last_report = 0u64;
        self.report_downloading(id, ingest.completed(), desc.size);
        let result = loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = self.cancel.cancelled() => break Err(RangesEnd::Failed(PullError::Cancelled)),
            };
            // A fast first connection: the rest comes as one stream from the completed prefix
            // (the ranged machinery would only add requests, CPU and buffers).
            let mut alone = false;
            if let (Some((at, bytes)), Some(RangeMsg::Done(a, b))) = (probing.as_mut(), &msg) {
                *bytes += b - a;
                let fast = self.ranges.fast_connection;
                if let Some(help) = more_connections_help(*bytes, at.elapsed(), fast) {
                    probing = None;
                    started = true;
                    if help {
                        for _ in 1..workers {
                            spawn(&mut set);
                        }
                    } else {
                        alone = true;
                    }
                }
            }
            match msg {
                Some(RangeMsg::Served) if !started && probing.is_none() => {
                    probing = Some((tokio::time::Instant::now(), 0));
                }
                Some(RangeMsg::Served) => {}
                Some(RangeMsg::Done(a, b)) => {
                    let (back, completed) = on_blocking_thread(ingest, move |i| i.complete(a, b)).await;
                    ingest = back;
                    let prefix = match completed {
                        Ok(p) => p,
                        Err(e) => break Err(RangesEnd::Failed(e)),
                    };
                    if let Some(t) = tee.as_ref() {
                        let fed = t.fed();
                        if prefix > fed {
                            t.feed(prefix - fed);
                        }
                    }
                    let now = ingest.completed();
                    self.report_downloaded(id, now, desc.size, &mut last_report);
                    if now == desc.size {
                        break Ok(());
                    }
                }
                Some(RangeMsg::Failed(BlobError::Registry(e))) if !e.is_retryable() => {
                    break Err(RangesEnd::Failed(e.into()))
                }
                Some(RangeMsg::Failed(e)) => break Err(RangesEnd::Fallback(e.to_string())),
                Some(RangeMsg::Store(e)) => break Err(RangesEnd::Failed(e.into())),
                None => break Err(RangesEnd::Fallback("range workers stopped".into())),
            }
            if alone {
                break Err(RangesEnd::Fallback("one connection is fast enough".into()));
            }
        };
        // Every worker is stopped before the file is touched again.
        stop.cancel();
        set.abort_all();
        while set.join_next().await.is_some() {}
        (ingest, result)
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
        let _connection = tokio::select! {
            p = self.connections.clone().acquire_owned() => p.map_err(|_| PullError::Cancelled)?,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        };
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
        self.report_downloading(id, ingest.prefix(), desc.size);
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
            self.report_downloaded(id, now, desc.size, &mut last_report);
        }
        Ok(())
    }
}

/// Opens the download of `digest` on a blocking thread: resuming a partial re-hashes its prefix
/// (GBs at worst), which must not hold an async worker; `cancel` stops it.
async fn open_ingest(
    store: &Store,
    digest: &Digest,
    size: u64,
    cancel: &CancellationToken,
) -> Result<Opened, PullError> {
    let (store, digest, cancel) = (store.clone(), digest.clone(), cancel.clone());
    blocking(move || Ingest::try_open(&store, &digest, size, &cancel))
        .await?
        .map_err(store_error)
}

/// Runs `work` on the ingest on a blocking thread (hashing what became contiguous, fsyncing the
/// blob: seconds on a large one) and hands the ingest back with the outcome. A panic there is
/// this task's.
async fn on_blocking_thread<T: Send + 'static>(
    mut ingest: Ingest,
    work: impl FnOnce(&mut Ingest) -> Result<T, StoreError> + Send + 'static,
) -> (Ingest, Result<T, PullError>) {
    let done = tokio::task::spawn_blocking(move || {
        let outcome = work(&mut ingest);
        (ingest, outcome)
    })
    .await;
    match done {
        Ok((ingest, outcome)) => (ingest, outcome.map_err(store_error)),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A store failure as the pull's: a re-hash stopped by the cancellation is the pull cancelled.
fn store_error(e: StoreError) -> PullError {
    match e {
        StoreError::Cancelled => PullError::Cancelled,
        e => PullError::Store(e),
    }
}

/// The ranges still to fetch, cut into chunks of at most `chunk` bytes in order as the
/// connections take them: only the holes are held, so memory does not grow with the size a
/// descriptor declares.
#[derive(Debug)]
struct Chunks {
    holes: VecDeque<(u64, u64)>,
    chunk: u64,
}

impl Chunks {
    /// The chunks of `holes` (sorted, disjoint `[start, end)` ranges).
    fn new(holes: Vec<(u64, u64)>, chunk: u64) -> Chunks {
        Chunks {
            holes: holes.into_iter().filter(|(a, b)| a < b).collect(),
            chunk: chunk.max(1),
        }
    }

    fn is_empty(&self) -> bool {
        self.holes.is_empty()
    }

    /// How many chunks are left, counted up to `limit`.
    fn at_most(&self, limit: usize) -> usize {
        let mut n = 0usize;
        for (a, b) in &self.holes {
            if n >= limit {
                break;
            }
            let here = (b - a).div_ceil(self.chunk);
            n = n.saturating_add(usize::try_from(here).unwrap_or(usize::MAX));
        }
        n.min(limit)
    }

    /// The next chunk: the first `chunk` bytes of the first hole.
    fn next_chunk(&mut self) -> Option<(u64, u64)> {
        let hole = self.holes.front_mut()?;
        let (a, b) = *hole;
        let e = a + (b - a).min(self.chunk);
        if e == b {
            self.holes.pop_front();
        } else {
            hole.0 = e;
        }
        Some((a, e))
    }
}

/// One connection of a ranged download: takes ranges from the shared queue, fetches each (a
/// cut range is re-requested from where it stopped, and retried twice), writes it at its offset.
struct RangeWorker {
    registry: Arc<Registry>,
    repo: String,
    digest: Digest,
    size: u64,
    writer: RangeWriter,
    queue: Arc<Mutex<Chunks>>,
    connections: Arc<Semaphore>,
    stop: CancellationToken,
    tx: tokio::sync::mpsc::UnboundedSender<RangeMsg>,
}

/// The first connection of a ranged download is judged over its first bytes, or its first
/// moments, whichever come first...
const PROBE_BYTES: u64 = 4 << 20;
const PROBE_TIME: Duration = Duration::from_millis(100);

/// Whether the other connections of a ranged download should open, now that the first,
/// served `elapsed` ago, has delivered `bytes` (asked at each completed part it reports):
/// yes when it is slower than `fast` bytes a second; `None` while it is too early to tell
/// (under [`PROBE_BYTES`] and [`PROBE_TIME`]). On loopback or a fast link one connection
/// is not what limits the download and more would only add CPU and buffers, so after a fast
/// first connection the rest of the blob comes as one stream from the completed prefix.
fn more_connections_help(bytes: u64, elapsed: Duration, fast: u64) -> Option<bool> {
    if bytes >= PROBE_BYTES || elapsed >= PROBE_TIME {
        Some((bytes as f64) < fast as f64 * elapsed.as_secs_f64())
    } else {
        None
    }
}

/// Silent re-requests of a range cut short, and retries of a range that failed.
const RANGE_RESUMES: u32 = 2;
const RANGE_ATTEMPTS: u32 = 3;
/// Bytes of a range after which its completed part is recorded in the sidecar.
const RANGE_PROGRESS: u64 = 1 << 20;

impl RangeWorker {
    async fn run(self) {
        let mut served = false;
        loop {
            let Some((a, b)) = self.queue.lock().expect("lock").next_chunk() else {
                return;
            };
            let mut attempt = 0;
            // What is not yet recorded complete: a retry goes on from there.
            let mut from = a;
            let outcome = loop {
                attempt += 1;
                let r = tokio::select! {
                    r = self.fetch(&mut from, b, &mut served) => r,
                    _ = self.stop.cancelled() => return,
                };
                match r {
                    Err(WorkerError::Blob(BlobError::Registry(e)))
                        if e.is_retryable() && attempt < RANGE_ATTEMPTS =>
                    {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(250 << attempt)) => {}
                            _ = self.stop.cancelled() => return,
                        }
                    }
                    other => break other,
                }
            };
            let msg = match outcome {
                Ok(()) => continue,
                Err(WorkerError::Blob(e)) => RangeMsg::Failed(e),
                Err(WorkerError::Store(e)) => RangeMsg::Store(e),
            };
            let _ = self.tx.send(msg);
            return;
        }
    }

    /// Fetches `[*from, b)`, sending `Done` for each completed part and moving `*from` on.
    async fn fetch(&self, from: &mut u64, b: u64, served: &mut bool) -> Result<(), WorkerError> {
        let a = *from;
        let _connection = self
            .connections
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RegistryError::Cancelled)?;
        let mut stream = self
            .registry
            .blob_range(&self.repo, &self.digest, self.size, a, b, RANGE_RESUMES)
            .await?;
        if !*served {
            *served = true;
            let _ = self.tx.send(RangeMsg::Served);
        }
        let mut at = a;
        let mut reported = a;
        while let Some(bytes) = stream.next().await? {
            let bytes = bytes.as_ref();
            // A local failure: one stream would meet it too, so it is not a fallback.
            self.writer.write_at(at, bytes).map_err(WorkerError::Store)?;
            at += bytes.len() as u64;
            // Completed parts of a range are recorded as they come, so a kill loses at most
            // this much per connection.
            if at - reported >= RANGE_PROGRESS {
                let _ = self.tx.send(RangeMsg::Done(reported, at));
                reported = at;
                *from = at;
            }
        }
        if at > reported {
            let _ = self.tx.send(RangeMsg::Done(reported, at));
            *from = at;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn resuming_a_large_partial_leaves_the_worker_free_and_stops_when_cancelled() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (_tmp, store) = crate::store::temp_store();
        let size = 1 << 40;
        let digest = Digest::sha256_of(b"a large blob");
        let fresh = CancellationToken::new();
        let opened = open_ingest(&store, &digest, size, &fresh).await;
        assert!(matches!(opened, Ok(Opened::Open(_))));
        drop(opened);
        // An earlier run left 16 GiB (sparse here): re-hashing them takes many seconds.
        std::fs::OpenOptions::new()
            .write(true)
            .open(store.ingest_path(&digest))
            .unwrap()
            .set_len(16 << 30)
            .unwrap();
        // Another task on the one worker thread: it ticks only while the re-hash runs
        // elsewhere, and after 20 ticks cancels the pull.
        let cancel = CancellationToken::new();
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let (cancel, ticks) = (cancel.clone(), ticks.clone());
            async move {
                while ticks.fetch_add(1, Ordering::SeqCst) < 20 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                cancel.cancel();
            }
        });
        let opened = open_ingest(&store, &digest, size, &cancel).await;
        ticker.abort();
        assert!(ticks.load(Ordering::SeqCst) > 20, "the worker was blocked");
        assert!(matches!(opened, Err(PullError::Cancelled)), "not stopped");
    }

    #[test]
    fn chunks_are_cut_from_the_holes_in_order() {
        let mut c = Chunks::new(vec![(0, 10), (20, 45), (50, 50), (60, 61)], 10);
        assert_eq!(c.at_most(100), 5);
        assert_eq!(c.at_most(2), 2);
        let mut got = Vec::new();
        while let Some(r) = c.next_chunk() {
            got.push(r);
        }
        assert_eq!(got, vec![(0, 10), (20, 30), (30, 40), (40, 45), (60, 61)]);
        assert!(c.is_empty());
        assert_eq!(c.at_most(4), 0);
        assert!(Chunks::new(vec![], 16).is_empty());
    }

    #[test]
    fn chunks_of_an_absurd_declared_size_are_cut_lazily() {
        // A hostile descriptor's 2^60 bytes are 2^36 chunks of 16 MiB: they are counted and
        // cut one at a time, never listed (which took 1 GiB for 2^50 and ran out of memory
        // for 2^60).
        let chunk = 16 << 20;
        let size = 1u64 << 60;
        let mut c = Chunks::new(vec![(0, size)], chunk);
        assert_eq!(c.at_most(8), 8);
        assert_eq!(c.holes.len(), 1);
        assert_eq!(c.next_chunk(), Some((0, chunk)));
        assert_eq!(c.next_chunk(), Some((chunk, 2 * chunk)));
        // A hole ending at the largest offset there is: no overflow on the last chunk.
        let mut c = Chunks::new(vec![(u64::MAX - 5, u64::MAX)], chunk);
        assert_eq!(c.next_chunk(), Some((u64::MAX - 5, u64::MAX)));
        assert_eq!(c.next_chunk(), None);
    }

    #[test]
    fn more_connections_open_only_for_a_slow_first_connection() {
        let ms = Duration::from_millis;
        let fast = 64_000_000;
        // Too early to tell.
        assert_eq!(more_connections_help(1 << 20, ms(10), fast), None);
        // 4 MiB in 20 ms is 210 MB/s: one connection is enough.
        assert_eq!(more_connections_help(4 << 20, ms(20), fast), Some(false));
        // 4 MiB in 200 ms is 21 MB/s (a far CDN's one connection): open the others.
        assert_eq!(more_connections_help(4 << 20, ms(200), fast), Some(true));
        // 2 MiB when the probe time is up is 21 MB/s; 16 MiB then is 168 MB/s.
        assert_eq!(more_connections_help(2 << 20, PROBE_TIME, fast), Some(true));
        assert_eq!(more_connections_help(16 << 20, PROBE_TIME, fast), Some(false));
        // A lower bar keeps a slower connection alone.
        assert_eq!(more_connections_help(2 << 20, PROBE_TIME, 1), Some(false));
    }
}
