//! Unpacking a stored layer blob: decompress, hash the tar stream (the DiffID), unpack it
//! into a fresh directory, check the DiffID against the config and publish the directory.

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
