//! Unpacking a layer: decompress, hash the tar stream (the DiffID), unpack it into a fresh
//! directory, check the DiffID against the config and publish the directory.
//!
//! Two ways in. [`StreamExtractor`] unpacks *while the blob is still arriving*: a blocking
//! thread follows the ingest file as the download loop appends to it (reading it back from the
//! page cache, never from the disk), so inflate, DiffID and untar overlap the network, the
//! download never waits for them and no layer is held in memory. Its directory is published
//! only after both the blob digest and the DiffID verified. When streaming is not possible (a
//! partial download left by an earlier run, a server that restarts from byte 0, a blob already
//! in the store) or it failed for any reason, [`extract`] unpacks the stored blob afterwards.
//!
//! Decompression bombs are bounded on both ways in: the uncompressed stream may not exceed
//! [`max_layer_bytes`] (by default 100 × the compressed size + 1 GiB; `RPULL_MAX_LAYER_BYTES`
//! sets an absolute bound instead). OCI declares no uncompressed size, so a ratio is the best
//! bound available; real layers rarely expand more than 10×.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex};

use tokio_util::sync::CancellationToken;

use super::PROGRESS_STEP;
use super::{blocking, PullError};
use crate::compression;
use crate::digest::{Digest, Sha256Hasher};
use crate::manifest::{Descriptor, ManifestError};
use crate::progress::{Event, Phase, Reporter};
use crate::store::{self, LayerMeta, Store, StoreError};
use crate::unpack::{self, UnpackError, UnpackOptions};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A reader that reports how many bytes went through it.
struct Counting<R, F: FnMut(u64)> {
    inner: R,
    count: u64,
    last: u64,
    on_progress: F,
}

impl<R: Read, F: FnMut(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count - self.last >= PROGRESS_STEP {
            self.last = self.count;
            (self.on_progress)(self.count);
        }
        Ok(n)
    }
}

/// Ratio of uncompressed to compressed bytes a layer may reach (plus [`EXPANSION_SLACK`]).
pub const EXPANSION_RATIO: u64 = 100;
/// Uncompressed bytes every layer may reach whatever its compressed size.
pub const EXPANSION_SLACK: u64 = 1 << 30;
/// The most uncompressed bytes a layer of `compressed` bytes may expand to: `fixed` (the
/// settings' `RPULL_MAX_LAYER_BYTES`) when set, else [`EXPANSION_RATIO`] × compressed +
/// [`EXPANSION_SLACK`].
pub fn max_layer_bytes(compressed: u64, fixed: Option<u64>) -> u64 {
    fixed.unwrap_or_else(|| {
        compressed
            .saturating_mul(EXPANSION_RATIO)
            .saturating_add(EXPANSION_SLACK)
    })
}

/// A reader that fails once more than `limit` bytes went through it.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(format!(
                "layer expands beyond {} bytes, the bound for its compressed size (set {} to change it)",
                self.limit,
                crate::settings::env::MAX_LAYER_BYTES
            )));
        }
        Ok(n)
    }
}

/// A reader that hashes what goes through it (the DiffID of the uncompressed tar).
struct Hashing<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks a stored layer blob into its own directory, checking its DiffID.
pub(super) fn extract(
    store: &Store,
    reporter: &dyn Reporter,
    cancel: &CancellationToken,
    id: &str,
    desc: &Descriptor,
    diff_id: &Digest,
    limit: u64,
) -> Result<(), PullError> {
    if store.has_layer(diff_id) {
        return Ok(());
    }
    let blob = store.blob_path(&desc.digest);
    let file = File::open(&blob).map_err(|e| StoreError::Io {
        action: "open",
        path: blob.clone(),
        source: e,
    })?;
    let total = desc.size;
    let counting = Counting {
        inner: file,
        count: 0,
        last: 0,
        on_progress: |n| {
            reporter.report(Event::Progress {
                id: id.to_string(),
                phase: Phase::Extracting,
                current: n,
                total,
            })
        },
    };
    let decoded = compression::decoder(BufReader::with_capacity(1 << 20, counting))
        .map_err(|e| ManifestError::Unsupported(e.to_string()))?;
    let mut hashing = Hashing {
        inner: Bounded {
            inner: decoded,
            read: 0,
            limit,
        },
        hasher: Sha256Hasher::new(),
    };
    let tmp = store.new_layer_tmp()?;
    let opts = UnpackOptions {
        is_root: is_root(),
        max_bytes: Some(limit),
        max_path_len: Some(store.max_layer_entry_path()),
    };
    let result = unpack::unpack(&mut hashing, &tmp.join("rootfs"), &opts, &|| {
        cancel.is_cancelled()
    });
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            store::remove_tree(&tmp);
            return Err(match e {
                // A store-side failure (a full disk, above all) says what the OS said.
                unpack::UnpackError::Io { path, source } => StoreError::Io {
                    action: "unpack",
                    path,
                    source,
                }
                .into(),
                e => e.into(),
            });
        }
    };
    reporter.report(Event::Progress {
        id: id.to_string(),
        phase: Phase::Extracting,
        current: total,
        total,
    });
    let got = std::mem::take(&mut hashing.hasher).finish();
    if &got != diff_id {
        store::remove_tree(&tmp);
        return Err(ManifestError::RootfsMismatch.into());
    }
    let meta = layer_meta(diff_id, desc, &stats, UnpackedFrom::Blob);
    if let Err(e) = store.commit_layer(&tmp, diff_id, &meta) {
        store::remove_tree(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// How the download loop and a streaming extractor share the growing ingest file.
#[derive(Default)]
struct Shared {
    /// The ingest file (a clone of the download's handle; read with `pread`, so the two never
    /// share an offset), once the download attached it.
    file: Option<File>,
    /// Bytes of the blob written so far.
    available: u64,
    /// Every byte of the blob was written and its digest verified.
    ended: bool,
    /// The stream can no longer be the blob from byte 0: stop.
    aborted: bool,
}

type SharedState = Arc<(Mutex<Shared>, Condvar)>;

/// The extractor's side: reads the ingest file up to what the download has written, waiting for
/// more. The data comes back from the page cache, so the download never waits for the
/// extractor (no backpressure on the network, its slot is released as soon as it ends) and no
/// chunk is held in memory.
struct TailReader {
    state: SharedState,
    file: Option<File>,
    pos: u64,
}

impl Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().expect("lock");
        loop {
            if st.aborted {
                return Err(io::Error::other(
                    "download restarted; the layer will be unpacked from the stored blob",
                ));
            }
            if self.file.is_none() {
                self.file = st.file.as_ref().map(File::try_clone).transpose()?;
            }
            if self.pos < st.available || st.ended {
                break;
            }
            st = cvar.wait(st).expect("lock");
        }
        let left = st.available - self.pos;
        drop(st);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("ingest file missing"))?;
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ingest file shorter than written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The read size of the extractor: large reads, few syscalls and lock round-trips.
const TAIL_BUF_LEN: usize = 256 * 1024;

/// Streaming extractions running at once in this process. Each uses two threads (decode, unpack)
/// and a few MiB of buffers (more for zstd's window), so this keeps the peak memory and the
/// thread count flat however many layers an image has, while keeping 2 cores busy.
const EXTRACT_SLOTS: usize = 3;

static SLOTS_IN_USE: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// One of the [`EXTRACT_SLOTS`], given back on drop.
struct ExtractSlot;

impl ExtractSlot {
    /// Waits for a slot; `None` when `stop` says to give up first.
    fn acquire(stop: &dyn Fn() -> bool) -> Option<ExtractSlot> {
        let mut used = SLOTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop() {
                return None;
            }
            if *used < EXTRACT_SLOTS {
                *used += 1;
                return Some(ExtractSlot);
            }
            used = SLOT_FREED
                .wait_timeout(used, std::time::Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for ExtractSlot {
    fn drop(&mut self) {
        let mut used = SLOTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

/// What a streaming extraction produced, not yet published.
struct Unpacked {
    tmp: PathBuf,
    diff_id: Digest,
    stats: unpack::UnpackStats,
}

/// Unpacks a layer from its ingest file while the blob is being downloaded into it (see the
/// module docs).
///
/// Dropping it without [`StreamExtractor::finish`] aborts the extraction and removes its
/// temporary directory.
pub(super) struct StreamExtractor {
    state: SharedState,
    handle: Option<tokio::task::JoinHandle<Result<Unpacked, PullError>>>,
}

impl StreamExtractor {
    /// Starts the extractor thread for a layer, unless it is already unpacked. It waits for
    /// [`StreamExtractor::attach`].
    pub(super) fn start(
        store: &Store,
        cancel: &CancellationToken,
        diff_id: &Digest,
        limit: u64,
    ) -> Option<StreamExtractor> {
        if store.has_layer(diff_id) {
            return None;
        }
        let state: SharedState = Arc::default();
        let reader = TailReader {
            state: state.clone(),
            file: None,
            pos: 0,
        };
        let store = store.clone();
        let cancel = cancel.clone();
        let state2 = state.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let stop = || cancel.is_cancelled() || state2.0.lock().map(|s| s.aborted).unwrap_or(true);
            // Waiting for a slot costs nothing: the download goes on into the ingest file, and
            // the extraction catches up from the page cache once it starts.
            let _slot = ExtractSlot::acquire(&stop).ok_or(PullError::Cancelled)?;
            unpack_stream(
                &store,
                BufReader::with_capacity(TAIL_BUF_LEN, reader),
                limit,
                &stop,
            )
        });
        Some(StreamExtractor {
            state,
            handle: Some(handle),
        })
    }

    /// Hands over the ingest file, empty: the extractor reads it as it grows.
    pub(super) fn attach(&self, file: &File) -> io::Result<()> {
        let clone = file.try_clone()?;
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().expect("lock");
        st.file = Some(clone);
        cvar.notify_all();
        Ok(())
    }

    /// Bytes of the blob written so far (and visible to the extractor).
    pub(super) fn fed(&self) -> u64 {
        self.state.0.lock().expect("lock").available
    }

    /// Tells the extractor that `len` more bytes were appended to the ingest file.
    pub(super) fn feed(&self, len: u64) {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().expect("lock");
        st.available += len;
        cvar.notify_all();
    }

    /// Stops the extractor and waits until its thread has removed its temporary directory, so
    /// that nothing is left behind when the pull ends right after (an error, a cancel).
    pub(super) async fn close(mut self) {
        self.abort();
        if let Some(handle) = self.handle.take() {
            if let Ok(Ok(unpacked)) = handle.await {
                store::remove_tree(&unpacked.tmp);
            }
        }
    }

    pub(super) fn abort(&self) {
        let (lock, cvar) = &*self.state;
        if let Ok(mut st) = lock.lock() {
            st.aborted = true;
            cvar.notify_all();
        }
    }

    /// Ends the stream once the whole blob (`size` bytes, digest verified and published) was
    /// written, waits for the extractor, checks the DiffID and publishes the layer. Returns false
    /// when the layer must still be unpacked from the stored blob (the stream was incomplete or
    /// the extractor failed); errors only for cancellation.
    pub(super) async fn finish(
        mut self,
        store: &Store,
        reporter: &dyn Reporter,
        id: &str,
        desc: &Descriptor,
        expected: &Digest,
    ) -> Result<bool, PullError> {
        let complete = {
            let (lock, cvar) = &*self.state;
            let mut st = lock.lock().expect("lock");
            let complete = st.file.is_some() && st.available == desc.size && !st.aborted;
            if complete {
                st.ended = true;
            } else {
                st.aborted = true;
            }
            cvar.notify_all();
            complete
        };
        let handle = self.handle.take().expect("extractor handle");
        let result = handle.await.map_err(|e| PullError::Internal(e.to_string()))?;
        let unpacked = match result {
            Ok(u) if complete => u,
            Ok(u) => {
                store::remove_tree(&u.tmp);
                return Ok(false);
            }
            Err(e) if e.is_cancelled() && complete => return Err(e),
            Err(_) => return Ok(false),
        };
        if &unpacked.diff_id != expected {
            // The blob verified, so the fallback would compute the same DiffID and fail the
            // same way; let it, so that both paths report the error identically.
            store::remove_tree(&unpacked.tmp);
            return Ok(false);
        }
        let store = store.clone();
        let meta = layer_meta(expected, desc, &unpacked.stats, UnpackedFrom::Stream);
        let diff = expected.clone();
        blocking(move || {
            let r = store.commit_layer(&unpacked.tmp, &diff, &meta);
            if r.is_err() {
                store::remove_tree(&unpacked.tmp);
            }
            r
        })
        .await??;
        reporter.report(Event::Progress {
            id: id.to_string(),
            phase: Phase::Extracting,
            current: desc.size,
            total: desc.size,
        });
        Ok(true)
    }
}

impl Drop for StreamExtractor {
    fn drop(&mut self) {
        // Aborting (a no-op after finish): the thread's next read fails, it stops and removes
        // its temporary directory itself.
        if self.handle.is_some() {
            self.abort();
        }
    }
}

/// Bytes of tar handed from the decoding thread to the unpacking thread at a time.
const STAGE_BUF_LEN: usize = 256 * 1024;
/// Hand-offs in flight between the two (with the recycled ones, ~2 MiB per layer at most).
const STAGE_BUFS: usize = 4;

/// The unpacking thread's side of the hand-off: the tar stream as decoded buffers arrive. The
/// end of the channel is the end of the stream; whether the decoder finished cleanly is checked
/// after unpacking, from its thread's result.
struct StageReader {
    rx: mpsc::Receiver<Vec<u8>>,
    recycle: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for StageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.cur, next);
                    let _ = self.recycle.send(done);
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The extractor: decode and hash (the DiffID) on one thread, unpack on this one, so that the
/// two halves of a layer's work overlap on two cores: a single layer, or the last one of an
/// image, is not limited to one core.
fn unpack_stream<R: BufRead + Send>(
    store: &Store,
    reader: R,
    limit: u64,
    stop: &dyn Fn() -> bool,
) -> Result<Unpacked, PullError> {
    let tmp = store.new_layer_tmp()?;
    let opts = UnpackOptions {
        is_root: is_root(),
        max_bytes: Some(limit),
        max_path_len: Some(store.max_layer_entry_path()),
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(STAGE_BUFS);
    let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
    let (unpacked, decoded) = std::thread::scope(|s| {
        let decoder = s.spawn(move || -> Result<Digest, PullError> {
            let mut decoded = Bounded {
                inner: compression::decoder(reader).map_err(|e| ManifestError::Unsupported(e.to_string()))?,
                read: 0,
                limit,
            };
            let mut hasher = Sha256Hasher::new();
            loop {
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.resize(STAGE_BUF_LEN, 0);
                let n = read_full(&mut decoded, &mut buf).map_err(UnpackError::Read)?;
                if n == 0 {
                    return Ok(hasher.finish());
                }
                buf.truncate(n);
                hasher.update(&buf);
                if tx.send(buf).is_err() {
                    // The unpacking side stopped; its error is the one reported.
                    return Err(UnpackError::Cancelled.into());
                }
            }
        });
        let stage = StageReader {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
        };
        // unpack() takes the reader by value: when it returns, early or not, the channel closes
        // and the decoding thread stops at its next hand-off.
        let unpacked = unpack::unpack(stage, &tmp.join("rootfs"), &opts, stop);
        let decoded = decoder
            .join()
            .unwrap_or_else(|_| Err(PullError::Internal("layer decoder panicked".into())));
        (unpacked, decoded)
    });
    match (unpacked, decoded) {
        (Ok(stats), Ok(diff_id)) => Ok(Unpacked { tmp, diff_id, stats }),
        (Err(e), _) => {
            store::remove_tree(&tmp);
            Err(e.into())
        }
        (Ok(_), Err(e)) => {
            store::remove_tree(&tmp);
            Err(e)
        }
    }
}

/// The `layer.json` written next to an unpacked layer's `rootfs/`.
/// How a layer came to be unpacked, recorded in its `layer.json` as `unpackedFrom`.
#[derive(Debug, Clone, Copy)]
enum UnpackedFrom {
    /// Followed the download as it was written (the usual path).
    Stream,
    /// Read from the stored blob afterwards (a restart, a partial, a failed stream).
    Blob,
}

fn layer_meta(
    diff_id: &Digest,
    desc: &Descriptor,
    stats: &unpack::UnpackStats,
    from: UnpackedFrom,
) -> LayerMeta {
    let from = match from {
        UnpackedFrom::Stream => "stream",
        UnpackedFrom::Blob => "blob",
    };
    LayerMeta {
        unpacked_from: from.to_string(),
        diff_id: diff_id.to_string(),
        blob: desc.digest.to_string(),
        media_type: desc.media_type.clone(),
        entries: stats.entries,
        file_bytes: stats.file_bytes,
        skipped_devices: stats.skipped_devices,
        external_hardlinks: (stats.external_hardlinks.iter())
            .map(|(l, t)| (l.to_string_lossy().into_owned(), t.to_string_lossy().into_owned()))
            .collect(),
        size: None,
    }
}
