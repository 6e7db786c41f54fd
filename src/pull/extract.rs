//! Unpacking a layer: decompress, hash the tar stream (the DiffID), unpack it into a fresh
//! directory, check the DiffID against the config and publish the directory.
//!
//! Two ways in. [`StreamExtractor`] unpacks *while the blob is still arriving*: the download
//! loop tees every chunk into a bounded channel read by a blocking thread, so inflate, DiffID
//! and untar overlap the network and the blob is never read back. Its directory is published
//! only after both the blob digest and the DiffID verified. When streaming is not possible (a
//! partial download left by an earlier run, a server that restarts from byte 0, a blob already
//! in the store) or it failed for any reason, [`extract`] unpacks the stored blob afterwards.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fetch::PROGRESS_STEP;
use super::PullError;
use crate::compression;
use crate::digest::{Digest, Sha256Hasher};
use crate::manifest::{Descriptor, ManifestError};
use crate::progress::{Event, Phase, Reporter};
use crate::store::{self, Store, StoreError};
use crate::unpack::{self, UnpackOptions};

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
        inner: decoded,
        hasher: Sha256Hasher::new(),
    };
    let tmp = store.new_layer_tmp()?;
    let opts = UnpackOptions {
        is_root: is_root(),
        max_bytes: None,
    };
    let result = unpack::unpack(&mut hashing, &tmp.join("rootfs"), &opts, &|| {
        cancel.is_cancelled()
    });
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            store::remove_tree(&tmp);
            return Err(e.into());
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
    let meta = layer_meta(diff_id, desc, &stats);
    if let Err(e) = store.commit_layer(&tmp, diff_id, &meta) {
        store::remove_tree(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// Chunks in flight between the download loop and a streaming extractor. hyper hands out chunks
/// of at most ~400 KiB (usually 16–64 KiB), so this bounds the memory held per layer to a few
/// MiB; when the extractor falls behind, the download waits (backpressure) instead of buffering.
const STREAM_CHANNEL_CHUNKS: usize = 16;

enum Msg {
    Data(Bytes),
    /// Every byte of the blob was sent.
    End,
}

/// The extractor's side of the channel: a zero-copy `BufRead` over the received chunks.
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    cur: Bytes,
    ended: bool,
    abort: Arc<AtomicBool>,
}

impl ChannelReader {
    fn aborted() -> io::Error {
        io::Error::other("download aborted; the layer will be unpacked from the stored blob")
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.is_empty() && !self.ended {
            if self.abort.load(Ordering::Relaxed) {
                return Err(Self::aborted());
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(b)) => self.cur = b,
                Some(Msg::End) => self.ended = true,
                None => return Err(Self::aborted()),
            }
        }
        Ok(&self.cur)
    }

    fn consume(&mut self, n: usize) {
        self.cur.advance(n);
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// What a streaming extraction produced, not yet published.
struct Unpacked {
    tmp: PathBuf,
    diff_id: Digest,
    stats: unpack::UnpackStats,
}

/// Unpacks a layer from the bytes of its blob as they are downloaded (see the module docs).
///
/// Dropping it without [`StreamExtractor::finish`] aborts the extraction and removes its
/// temporary directory.
pub(super) struct StreamExtractor {
    tx: Option<mpsc::Sender<Msg>>,
    abort: Arc<AtomicBool>,
    handle: Option<tokio::task::JoinHandle<Result<Unpacked, PullError>>>,
    /// Bytes sent so far: the offset in the blob the next chunk must start at.
    fed: u64,
}

impl StreamExtractor {
    /// Starts the extractor thread for `desc`, unless the layer is already unpacked.
    pub(super) fn start(
        store: &Store,
        cancel: &CancellationToken,
        diff_id: &Digest,
    ) -> Option<StreamExtractor> {
        if store.has_layer(diff_id) {
            return None;
        }
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_CHUNKS);
        let abort = Arc::new(AtomicBool::new(false));
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            ended: false,
            abort: abort.clone(),
        };
        let store = store.clone();
        let cancel = cancel.clone();
        let abort2 = abort.clone();
        let handle = tokio::task::spawn_blocking(move || {
            unpack_stream(&store, reader, &|| {
                cancel.is_cancelled() || abort2.load(Ordering::Relaxed)
            })
        });
        Some(StreamExtractor {
            tx: Some(tx),
            abort,
            handle: Some(handle),
            fed: 0,
        })
    }

    /// Bytes of the blob sent to the extractor so far.
    pub(super) fn fed(&self) -> u64 {
        self.fed
    }

    /// Sends the next chunk of the blob (it must start at [`StreamExtractor::fed`]); waits while
    /// the extractor is behind. Returns false when the extractor has stopped (it failed): the
    /// caller drops it and the layer is unpacked from the blob later.
    pub(super) async fn feed(&mut self, chunk: Bytes) -> bool {
        let len = chunk.len() as u64;
        match &self.tx {
            Some(tx) if tx.send(Msg::Data(chunk)).await.is_ok() => {
                self.fed += len;
                true
            }
            _ => false,
        }
    }

    /// Ends the stream once the whole blob (`size` bytes, digest verified and published) was
    /// fed, waits for the extractor, checks the DiffID and publishes the layer. Returns false
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
        let complete = self.fed == desc.size;
        if let Some(tx) = self.tx.take() {
            if complete {
                let _ = tx.send(Msg::End).await;
            } else {
                self.abort.store(true, Ordering::Relaxed);
            }
        }
        let handle = self.handle.take().expect("extractor handle");
        let result = handle.await.map_err(|e| PullError::Internal(e.to_string()))?;
        let unpacked = match result {
            Ok(u) if complete => u,
            Ok(u) => {
                store::remove_tree(&u.tmp);
                return Ok(false);
            }
            Err(e) if e.is_cancelled() && !self.abort.load(Ordering::Relaxed) => return Err(e),
            Err(_) => return Ok(false),
        };
        if &unpacked.diff_id != expected {
            // The blob verified, so the fallback would compute the same DiffID and fail the
            // same way; let it, so that both paths report the error identically.
            store::remove_tree(&unpacked.tmp);
            return Ok(false);
        }
        let store = store.clone();
        let meta = layer_meta(expected, desc, &unpacked.stats);
        let diff = expected.clone();
        tokio::task::spawn_blocking(move || {
            let r = store.commit_layer(&unpacked.tmp, &diff, &meta);
            if r.is_err() {
                store::remove_tree(&unpacked.tmp);
            }
            r
        })
        .await
        .map_err(|e| PullError::Internal(e.to_string()))??;
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
        // Aborting: the thread sees the closed channel (or the flag), fails, and removes its
        // temporary directory itself.
        self.abort.store(true, Ordering::Relaxed);
        self.tx = None;
    }
}

/// The extractor thread: decode, hash and unpack what arrives into a fresh temporary directory.
fn unpack_stream(
    store: &Store,
    reader: ChannelReader,
    stop: &dyn Fn() -> bool,
) -> Result<Unpacked, PullError> {
    let decoded = compression::decoder(reader).map_err(|e| ManifestError::Unsupported(e.to_string()))?;
    let mut hashing = Hashing {
        inner: decoded,
        hasher: Sha256Hasher::new(),
    };
    let tmp = store.new_layer_tmp()?;
    let opts = UnpackOptions {
        is_root: is_root(),
        max_bytes: None,
    };
    match unpack::unpack(&mut hashing, &tmp.join("rootfs"), &opts, stop) {
        Ok(stats) => Ok(Unpacked {
            tmp,
            diff_id: std::mem::take(&mut hashing.hasher).finish(),
            stats,
        }),
        Err(e) => {
            store::remove_tree(&tmp);
            Err(e.into())
        }
    }
}

/// The `layer.json` written next to an unpacked layer's `rootfs/`.
fn layer_meta(diff_id: &Digest, desc: &Descriptor, stats: &unpack::UnpackStats) -> serde_json::Value {
    serde_json::json!({
        "diffID": diff_id.to_string(),
        "blob": desc.digest.to_string(),
        "mediaType": desc.media_type,
        "entries": stats.entries,
        "fileBytes": stats.file_bytes,
        "skippedDevices": stats.skipped_devices,
        "externalHardlinks": stats.external_hardlinks.iter().map(|(l, t)| serde_json::json!([l, t])).collect::<Vec<_>>(),
    })
}
