//! The store's locks, all `flock(2)` on small files under the root: [`FileLock`], exclusive,
//! for one entry (`index.json.lock`, an ingest entry's `.lock`, a layer's publish lock), and
//! [`StoreGuard`] on `gc.lock`, shared by every command that uses blobs or layers and
//! exclusive for a collection (see `gc`'s module docs).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Store, StoreError};

/// The file the store guard locks, under the store root.
pub const GC_LOCK: &str = "gc.lock";

/// Opens `path` (creating it) and takes the lock `op`; `None` when `op` has `LOCK_NB` and
/// someone else holds it. A lock file that cannot be created or written because the store is
/// read-only is opened for reading when it exists (`flock` needs no write access), so that
/// commands which only read can still run on a read-only store.
fn flock(path: &Path, op: libc::c_int) -> Result<Option<File>, StoreError> {
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES)) => {
            File::open(path).map_err(|_| StoreError::io("open lock", path)(e))?
        }
        Err(e) => return Err(StoreError::io("open lock", path)(e)),
    };
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is touched.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(Some(file));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(None),
            _ => return Err(StoreError::io("lock", path)(err)),
        }
    }
}

/// An exclusive `flock` held until dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` is ours.
    pub fn acquire(path: &Path) -> Result<FileLock, StoreError> {
        let file = flock(path, libc::LOCK_EX)?.expect("a blocking lock");
        Ok(FileLock { _file: file })
    }

    /// Takes the lock on `path` if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>, StoreError> {
        Ok(flock(path, libc::LOCK_EX | libc::LOCK_NB)?.map(|file| FileLock { _file: file }))
    }
}

/// A `flock` on `gc.lock`: shared for commands using the store, exclusive for a collection.
#[derive(Debug)]
pub struct StoreGuard {
    _file: File,
}

impl StoreGuard {
    /// Takes the shared guard (waits while a collection runs). Hold it while reading or
    /// writing blobs or layers outside the `index.json` lock.
    pub fn shared(store: &Store) -> Result<StoreGuard, StoreError> {
        let file = flock(&store.root().join(GC_LOCK), libc::LOCK_SH)?.expect("a blocking lock");
        Ok(StoreGuard { _file: file })
    }

    /// Takes the shared guard if no collection holds the store, else `None`: for callers that
    /// wait without blocking a thread, and stop waiting when cancelled.
    pub fn try_shared(store: &Store) -> Result<Option<StoreGuard>, StoreError> {
        Ok(flock(&store.root().join(GC_LOCK), libc::LOCK_SH | libc::LOCK_NB)?
            .map(|file| StoreGuard { _file: file }))
    }

    /// Takes the exclusive guard: waits for it when `wait`, else `None` when it is held.
    pub fn exclusive(store: &Store, wait: bool) -> Result<Option<StoreGuard>, StoreError> {
        let op = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        Ok(flock(&store.root().join(GC_LOCK), op)?.map(|file| StoreGuard { _file: file }))
    }
}
