//! Downloads in progress: the one writer of `ingest/`.
//!
//! A blob being downloaded lives in `ingest/sha256-<hex>.partial`, beside a sidecar
//! `sha256-<hex>.json` ([`PartialInfo`]) and a lock `sha256-<hex>.lock` held by the process
//! writing it. [`Ingest`] is the only code that writes them: it opens or resumes a partial file
//! under its lock, writes bytes appended in order or at any offset, records which ranges are
//! complete, and commits the blob into `blobs/` only once every byte is there and the whole
//! file hashes to its digest. Garbage collection and `rpull check` remove abandoned partials
//! through [`remove_unused`] and judge them with [`inspect`].
//!
//! The sidecar's `ranges` tell what is complete. Without them (a download written in order, or
//! a sidecar of an older rpull) the file's length is the complete prefix. With them (a download
//! of several concurrent ranges) the file may hold bytes beyond the prefix that are not yet
//! complete; only the listed ranges are trusted. The digest always follows the contiguous
//! prefix from byte 0, reading back what the ranges wrote, so nothing is held in memory.
//!
//! Opening a partial file re-hashes its prefix, completing a range hashes what became
//! contiguous and committing fsyncs the blob: each may take seconds on a large blob, so async
//! callers run them on a blocking thread. The re-hashing stops, [`StoreError::Cancelled`],
//! once the token given to [`Ingest::try_open`] is cancelled (it is checked between reads).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{sync_dir, unique_name, FileLock, Store, StoreError, TMP_PREFIX};
use crate::digest::{Digest, Sha256Hasher};

/// What the sidecar of a partial download records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialInfo {
    /// The digest the finished download must have.
    pub digest: Digest,
    /// The size the descriptor declared.
    pub size: u64,
    /// The completed byte ranges (`[start, end)`, sorted, disjoint), when the download is
    /// written out of order; `None`: the file's length is the completed prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<[u64; 2]>>,
}

impl PartialInfo {
    /// The sidecar of a download of `size` bytes written in order.
    pub fn sequential(digest: &Digest, size: u64) -> PartialInfo {
        PartialInfo {
            digest: digest.clone(),
            size,
            ranges: None,
        }
    }

    /// Why this sidecar cannot describe a partial file of `len` bytes, if it cannot.
    pub fn problem(&self, len: u64) -> Option<&'static str> {
        match &self.ranges {
            None if len > self.size => Some("partial download longer than the blob it should become"),
            None => None,
            Some(ranges) => {
                let mut last = 0;
                for (i, [start, end]) in ranges.iter().copied().enumerate() {
                    if start >= end || (i > 0 && start <= last) || end > self.size {
                        return Some("sidecar lists ranges out of order or beyond the blob");
                    }
                    if end > len {
                        return Some("sidecar lists ranges the partial download does not hold");
                    }
                    last = end;
                }
                if len > self.size {
                    return Some("partial download longer than the blob it should become");
                }
                None
            }
        }
    }
}

/// Sorted, disjoint, non-adjacent `[start, end)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Adds `[start, end)`, merging it with what it touches.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.0 = out;
    }

    /// The length of the range starting at 0 (0 when there is none).
    pub fn prefix(&self) -> u64 {
        match self.0.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    /// The gaps within `[0, size)`.
    pub fn missing(&self, size: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for &(a, b) in &self.0 {
            if a > at {
                gaps.push((at, a.min(size)));
            }
            at = at.max(b);
        }
        if at < size {
            gaps.push((at, size));
        }
        gaps
    }

    /// Bytes covered.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }

    fn to_sidecar(&self) -> Vec<[u64; 2]> {
        self.0.iter().map(|&(a, b)| [a, b]).collect()
    }
}

/// What [`Ingest::try_open`] found.
pub enum Opened {
    /// The blob is already in the store.
    Stored,
    /// Another process holds the download's lock.
    Busy,
    /// The download, resumed where an earlier run left it when it could be.
    Open(Box<Ingest>),
}

/// What [`Ingest::commit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// The blob is in `blobs/`.
    Done,
    /// The bytes did not hash to the digest; the partial file was emptied.
    Mismatch,
}

/// The writer of one partial download (see the module docs). Holds the download's lock while
/// it lives.
pub struct Ingest {
    store: Store,
    digest: Digest,
    size: u64,
    path: PathBuf,
    file: Arc<File>,
    _lock: FileLock,
    done: RangeSet,
    /// Whether the sidecar lists ranges (the file may hold bytes beyond the prefix).
    sparse: bool,
    hasher: Sha256Hasher,
    hashed: u64,
    /// Whether the bytes at the start came from an earlier run.
    resumed: bool,
    /// Stops the re-hashing of the prefix (see the module docs).
    cancel: CancellationToken,
}

impl Ingest {
    /// Opens the download of `digest` (`size` bytes): `Busy` when another process writes it,
    /// `Stored` when the blob is already there. A partial file left by an earlier run is
    /// resumed when its sidecar describes it (its prefix re-hashed, which `cancel` stops: the
    /// partial is kept for the next run), and discarded otherwise. Blocking.
    pub fn try_open(
        store: &Store,
        digest: &Digest,
        size: u64,
        cancel: &CancellationToken,
    ) -> Result<Opened, StoreError> {
        let path = store.ingest_path(digest);
        let Some(lock) = FileLock::try_acquire(&store.ingest_lock_path(digest))? else {
            return Ok(Opened::Busy);
        };
        if store.has_blob(digest, Some(size)) {
            return Ok(Opened::Stored);
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        let len = file.metadata().map_err(StoreError::io("stat", &path))?.len();
        let mut done = RangeSet::default();
        let mut sparse = false;
        match store.read_partial_info(digest) {
            Some(info) if info.digest == *digest && info.size == size && info.problem(len).is_none() => {
                match info.ranges {
                    None => done.insert(0, len),
                    Some(ranges) => {
                        sparse = true;
                        for [a, b] in ranges {
                            done.insert(a, b);
                        }
                    }
                }
            }
            _ => file.set_len(0).map_err(StoreError::io("truncate", &path))?,
        }
        let mut ingest = Ingest {
            store: store.clone(),
            digest: digest.clone(),
            size,
            path,
            file: Arc::new(file),
            _lock: lock,
            done,
            sparse,
            hasher: Sha256Hasher::new(),
            hashed: 0,
            resumed: false,
            cancel: cancel.clone(),
        };
        ingest.write_sidecar()?;
        ingest.catch_up()?;
        ingest.resumed = ingest.done.total() > 0;
        Ok(Opened::Open(Box::new(ingest)))
    }

    /// The digest the download must have.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size it must have.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The partial file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The partial file, shared with readers following the prefix.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Whether bytes from an earlier run or an earlier request are part of the download.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Records that the download went on from the prefix with another request.
    pub fn note_resumed(&mut self) {
        self.resumed = self.prefix() > 0;
    }

    /// The completed bytes from byte 0 on: what may be hashed, unpacked and resumed from.
    pub fn prefix(&self) -> u64 {
        self.done.prefix()
    }

    /// Bytes completed anywhere.
    pub fn completed(&self) -> u64 {
        self.done.total()
    }

    /// The ranges still to fetch.
    pub fn missing(&self) -> Vec<(u64, u64)> {
        self.done.missing(self.size)
    }

    /// Appends `bytes` at the end of the prefix (a download written in order).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let at = self.prefix();
        if at + bytes.len() as u64 > self.size {
            return Err(StoreError::Verification(format!(
                "blob {} is longer than the {} bytes its descriptor declares",
                self.digest, self.size
            )));
        }
        write_at(&self.file, &self.path, at, bytes)?;
        self.done.insert(at, at + bytes.len() as u64);
        if self.hashed == at {
            self.hasher.update(bytes);
            self.hashed += bytes.len() as u64;
        }
        Ok(())
    }

    /// Switches the download to ranges written out of order: the sidecar lists the completed
    /// ranges from now on (before any byte is written beyond the prefix, so that a kill never
    /// leaves bytes that a later run would take for a complete prefix). Returns the writer the
    /// ranges are written with; [`Ingest::complete`] then marks them complete.
    pub fn begin_ranges(&mut self) -> Result<RangeWriter, StoreError> {
        if !self.sparse {
            self.sparse = true;
            self.write_sidecar()?;
        }
        Ok(RangeWriter {
            file: self.file.clone(),
            path: self.path.clone(),
        })
    }

    /// Records `[start, end)` as complete (written with a [`RangeWriter`]) in the sidecar and
    /// hashes what became contiguous (blocking; stopped by the cancellation); returns the new
    /// prefix.
    pub fn complete(&mut self, start: u64, end: u64) -> Result<u64, StoreError> {
        if !self.sparse || end > self.size || start > end {
            return Err(StoreError::Verification(format!(
                "range {start}-{end} is outside blob {} of {} bytes",
                self.digest, self.size
            )));
        }
        self.done.insert(start, end);
        self.sparse = true;
        self.write_sidecar()?;
        self.catch_up()?;
        Ok(self.prefix())
    }

    /// Drops everything beyond the prefix (bytes of ranges never completed included), so the
    /// download can go on in order from there.
    pub fn to_sequential(&mut self) -> Result<(), StoreError> {
        let prefix = self.prefix();
        self.file
            .set_len(prefix)
            .map_err(StoreError::io("truncate", &self.path))?;
        self.done = RangeSet::default();
        self.done.insert(0, prefix);
        self.sparse = false;
        self.write_sidecar()
    }

    /// Empties the file: the download starts again from byte 0.
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(StoreError::io("truncate", &self.path))?;
        self.done = RangeSet::default();
        self.sparse = false;
        self.hasher = Sha256Hasher::new();
        self.hashed = 0;
        self.resumed = false;
        self.write_sidecar()
    }

    /// Publishes the blob when every byte is there and the whole hashes to the digest: fsync,
    /// rename into `blobs/`, drop the sidecar. On a mismatch the file is emptied. Blocking.
    pub fn commit(&mut self) -> Result<Committed, StoreError> {
        self.catch_up()?;
        if self.hashed != self.size {
            return Err(StoreError::Verification(format!(
                "blob {} is incomplete: {} of {} bytes",
                self.digest,
                self.prefix(),
                self.size
            )));
        }
        let got = std::mem::take(&mut self.hasher).finish();
        if got != self.digest {
            self.restart()?;
            return Ok(Committed::Mismatch);
        }
        self.file.sync_all().map_err(StoreError::io("sync", &self.path))?;
        let dest = self.store.blob_path(&self.digest);
        fs::rename(&self.path, &dest).map_err(StoreError::io("rename into", &dest))?;
        sync_dir(dest.parent().expect("blob dir"))?;
        let _ = fs::remove_file(self.store.ingest_info_path(&self.digest));
        Ok(Committed::Done)
    }

    /// Gives the download up for good: the partial file and its sidecar are removed.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(self.store.ingest_info_path(&self.digest));
    }

    /// Hashes the completed bytes after what was hashed, reading them back from the file; stops
    /// between reads once cancelled (what was hashed stays hashed).
    fn catch_up(&mut self) -> Result<(), StoreError> {
        let prefix = self.prefix();
        if self.hashed >= prefix {
            return Ok(());
        }
        let mut buf = vec![0u8; (1 << 20).min((prefix - self.hashed) as usize)];
        while self.hashed < prefix {
            if self.cancel.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            let want = buf.len().min((prefix - self.hashed) as usize);
            let n = self
                .file
                .read_at(&mut buf[..want], self.hashed)
                .map_err(StoreError::io("read", &self.path))?;
            if n == 0 {
                // Shorter than its sidecar says (it was checked on open): start over.
                return self.restart();
            }
            self.hasher.update(&buf[..n]);
            self.hashed += n as u64;
        }
        Ok(())
    }

    /// Rewrites the sidecar. Not fsynced: a sidecar that outlives its data after a power loss
    /// only costs a digest mismatch and a fresh download, and an fsync per range would flush
    /// the whole download on ext4.
    fn write_sidecar(&self) -> Result<(), StoreError> {
        let info = PartialInfo {
            digest: self.digest.clone(),
            size: self.size,
            ranges: self.sparse.then(|| self.done.to_sidecar()),
        };
        let path = self.store.ingest_info_path(&self.digest);
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(unique_name(TMP_PREFIX));
        let result = (|| {
            let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
            f.write_all(&serde_json::to_vec(&info).expect("json"))
                .map_err(StoreError::io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(StoreError::io("rename into", &path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Writes ranges of a download at their offsets, from any number of tasks at once (see
/// [`Ingest::begin_ranges`]).
#[derive(Clone)]
pub struct RangeWriter {
    file: Arc<File>,
    path: PathBuf,
}

impl RangeWriter {
    /// Writes `bytes` at `offset`, without marking them complete.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        write_at(&self.file, &self.path, offset, bytes)
    }
}

fn write_at(file: &File, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
    file.write_all_at(bytes, offset)
        .map_err(StoreError::io("write", path))
}

/// Removes the partial download of `digest` (file, sidecar, lock) unless a process is writing
/// it; returns the partial file's size when something was removed.
pub fn remove_unused(store: &Store, digest: &Digest) -> Result<Option<u64>, StoreError> {
    remove_unused_at(&store.ingest_path(digest))
}

/// [`remove_unused`] for a partial file found by name (`<alg>-<hex>.partial`).
pub fn remove_unused_at(partial: &Path) -> Result<Option<u64>, StoreError> {
    let lock_path = partial.with_extension("lock");
    let Some(lock) = FileLock::try_acquire(&lock_path)? else {
        return Ok(None);
    };
    let size = fs::symlink_metadata(partial).map_or(0, |m| m.len());
    match fs::remove_file(partial) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("remove", partial)(e)),
    }
    let _ = fs::remove_file(partial.with_extension("json"));
    let _ = fs::remove_file(&lock_path);
    drop(lock);
    Ok(Some(size))
}

/// Why the partial download of `digest` (`len` bytes on disk) can never be resumed, if so.
pub fn inspect(store: &Store, digest: &Digest, len: u64) -> Option<&'static str> {
    if store.has_blob(digest, None) {
        return Some("the blob is already stored");
    }
    match store.read_partial_info(digest) {
        None => Some("partial download without a readable sidecar"),
        Some(info) if info.digest != *digest => Some("sidecar names another digest"),
        Some(info) => info.problem(len),
    }
}

impl Store {
    /// The partial download of `digest` (kept across runs so the next pull can resume).
    pub fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.root()
            .join("ingest")
            .join(format!("{}-{}.partial", digest.algorithm().name(), digest.hex()))
    }

    /// The sidecar describing the partial download of `digest` ([`PartialInfo`]).
    pub fn ingest_info_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_path(digest).with_extension("json")
    }

    /// The lock held while a process writes the partial download of `digest`.
    pub fn ingest_lock_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_path(digest).with_extension("lock")
    }

    /// The sidecar of the partial download of `digest`, if present and readable.
    pub fn read_partial_info(&self, digest: &Digest) -> Option<PartialInfo> {
        let bytes = fs::read(self.ingest_info_path(digest)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store;

    fn open(store: &Store, d: &Digest, size: u64) -> Ingest {
        match Ingest::try_open(store, d, size, &CancellationToken::new()).unwrap() {
            Opened::Open(i) => *i,
            _ => panic!("not opened"),
        }
    }

    #[test]
    fn range_sets_merge_and_report_gaps() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.prefix(), 0);
        assert_eq!(r.missing(50), vec![(0, 10), (20, 30), (40, 50)]);
        r.insert(0, 10);
        assert_eq!(r.prefix(), 20);
        r.insert(15, 35);
        assert_eq!(r.prefix(), 40);
        assert_eq!(r.missing(50), vec![(40, 50)]);
        assert_eq!(r.total(), 40);
    }

    #[test]
    fn an_in_order_download_resumes_and_commits() {
        let (_tmp, store) = temp_store();
        let blob = b"hello, ingest";
        let d = Digest::sha256_of(blob);
        let mut i = open(&store, &d, blob.len() as u64);
        assert!(matches!(
            Ingest::try_open(&store, &d, 13, &CancellationToken::new()).unwrap(),
            Opened::Busy
        ));
        i.append(&blob[..5]).unwrap();
        drop(i);
        let mut i = open(&store, &d, blob.len() as u64);
        assert!(i.resumed());
        assert_eq!(i.prefix(), 5);
        assert!(i.append(&[0u8; 20]).is_err(), "longer than declared");
        i.append(&blob[5..]).unwrap();
        assert_eq!(i.commit().unwrap(), Committed::Done);
        drop(i);
        assert!(store.has_blob(&d, Some(13)));
        assert!(store.read_partial_info(&d).is_none());
        assert!(matches!(
            Ingest::try_open(&store, &d, 13, &CancellationToken::new()).unwrap(),
            Opened::Stored
        ));
    }

    #[test]
    fn ranges_out_of_order_resume_with_holes() {
        let (_tmp, store) = temp_store();
        let blob: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let d = Digest::sha256_of(&blob);
        let mut i = open(&store, &d, 1000);
        assert!(i.complete(0, 10).is_err(), "ranges need begin_ranges");
        let w = i.begin_ranges().unwrap();
        // Written but not completed: never taken for a prefix after a kill.
        w.write_at(0, &blob[..100]).unwrap();
        drop(i);
        assert_eq!(store.read_partial_info(&d).unwrap().ranges, Some(vec![]));
        let mut i = open(&store, &d, 1000);
        assert_eq!((i.prefix(), i.resumed()), (0, false));
        let w = i.begin_ranges().unwrap();
        w.write_at(600, &blob[600..800]).unwrap();
        assert_eq!(i.complete(600, 800).unwrap(), 0);
        // Written but never completed: not trusted after a restart.
        w.write_at(200, &blob[200..300]).unwrap();
        drop(i);
        let info = store.read_partial_info(&d).unwrap();
        assert_eq!(info.ranges, Some(vec![[600, 800]]));
        assert_eq!(info.problem(800), None);
        assert!(info.problem(700).is_some());
        let mut i = open(&store, &d, 1000);
        assert_eq!(i.missing(), vec![(0, 600), (800, 1000)]);
        let w = i.begin_ranges().unwrap();
        w.write_at(0, &blob[..600]).unwrap();
        assert_eq!(i.complete(0, 600).unwrap(), 800);
        w.write_at(800, &blob[800..]).unwrap();
        assert_eq!(i.complete(800, 1000).unwrap(), 1000);
        assert_eq!(i.commit().unwrap(), Committed::Done);
        assert!(store.has_blob(&d, Some(1000)));
    }

    #[test]
    fn a_cancelled_re_hash_of_a_resumed_partial_stops_and_keeps_it() {
        let (_tmp, store) = temp_store();
        let size = 1 << 40;
        let d = Digest::sha256_of(b"a large blob");
        drop(open(&store, &d, size));
        // An earlier run left 16 GiB (sparse here): re-hashing them all takes many seconds.
        let kept = 16u64 << 30;
        let partial = OpenOptions::new()
            .write(true)
            .open(store.ingest_path(&d))
            .unwrap();
        partial.set_len(kept).unwrap();
        let cancel = CancellationToken::new();
        let stopper = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                cancel.cancel();
            })
        };
        let opened = Ingest::try_open(&store, &d, size, &cancel);
        stopper.join().unwrap();
        assert!(matches!(opened, Err(StoreError::Cancelled)), "not stopped");
        // The partial stays as it was, for the next run to resume.
        assert_eq!(fs::metadata(store.ingest_path(&d)).unwrap().len(), kept);
        assert_eq!(
            store.read_partial_info(&d),
            Some(PartialInfo::sequential(&d, size))
        );
        assert!(matches!(
            Ingest::try_open(&store, &d, size, &cancel),
            Err(StoreError::Cancelled)
        ));
    }

    #[test]
    fn a_mismatch_is_never_committed() {
        let (_tmp, store) = temp_store();
        let d = Digest::sha256_of(b"right");
        let mut i = open(&store, &d, 5);
        assert!(i.commit().is_err(), "incomplete");
        i.append(b"wrong").unwrap();
        assert_eq!(i.commit().unwrap(), Committed::Mismatch);
        assert_eq!(i.prefix(), 0);
        assert!(!store.has_blob(&d, None));
        i.abandon();
        assert!(!store.ingest_path(&d).exists());
        assert!(store.read_partial_info(&d).is_none());
    }

    #[test]
    fn another_size_discards_the_partial_and_unused_ones_are_removed() {
        let (_tmp, store) = temp_store();
        let d = Digest::sha256_of(b"blob");
        let mut i = open(&store, &d, 4);
        i.append(b"bl").unwrap();
        drop(i);
        let i = open(&store, &d, 5);
        assert_eq!(i.prefix(), 0, "another size: the partial is dropped");
        assert_eq!(remove_unused(&store, &d).unwrap(), None, "in use");
        drop(i);
        assert_eq!(remove_unused(&store, &d).unwrap(), Some(0));
        assert!(!store.ingest_path(&d).exists());
        assert!(inspect(&store, &d, 0).is_some());
    }
}
