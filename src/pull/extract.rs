//! Unpacking a stored layer blob: decompress, hash the tar stream (the DiffID), unpack it
//! into a fresh directory, check the DiffID against the config and publish the directory.
//!
//! Decompression bombs are bounded: the uncompressed stream may not exceed
//! [`max_layer_bytes`] (by default 100 × the compressed size + 1 GiB; `RPULL_MAX_LAYER_BYTES`
//! sets an absolute bound instead). OCI declares no uncompressed size, so a ratio is the best
//! bound available; real layers rarely expand more than 10×.

use std::fs::File;
use std::io::{self, BufReader, Read};

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

/// Ratio of uncompressed to compressed bytes a layer may reach (plus [`EXPANSION_SLACK`]).
pub const EXPANSION_RATIO: u64 = 100;
/// Uncompressed bytes every layer may reach whatever its compressed size.
pub const EXPANSION_SLACK: u64 = 1 << 30;
/// Environment variable that sets an absolute bound on a layer's uncompressed size, in bytes.
pub const MAX_LAYER_BYTES_ENV: &str = "RPULL_MAX_LAYER_BYTES";

/// The most uncompressed bytes a layer of `compressed` bytes may expand to.
pub fn max_layer_bytes(compressed: u64) -> u64 {
    if let Some(n) = std::env::var(MAX_LAYER_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return n;
    }
    compressed
        .saturating_mul(EXPANSION_RATIO)
        .saturating_add(EXPANSION_SLACK)
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
                "layer expands beyond {} bytes, the bound for its compressed size (set {MAX_LAYER_BYTES_ENV} to change it)",
                self.limit
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
    let limit = max_layer_bytes(total);
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
    let meta = serde_json::json!({
        "diffID": diff_id.to_string(),
        "blob": desc.digest.to_string(),
        "mediaType": desc.media_type,
        "entries": stats.entries,
        "fileBytes": stats.file_bytes,
        "skippedDevices": stats.skipped_devices,
        "externalHardlinks": stats.external_hardlinks.iter().map(|(l, t)| serde_json::json!([l, t])).collect::<Vec<_>>(),
    });
    if let Err(e) = store.commit_layer(&tmp, diff_id, &meta) {
        store::remove_tree(&tmp);
        return Err(e.into());
    }
    Ok(())
}
