//! The local content store: a standard OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) that other tools can read, plus rpull's own areas beside it:
//! `ingest/` for downloads in progress and `layers/sha256/<diff_id>/` for unpacked layers.
//!
//! Nothing becomes visible half-written: blobs are verified, fsynced and renamed into place;
//! layers are unpacked into a temporary directory, synced, and renamed as a whole (under a
//! per-layer lock, so concurrent pulls of the same layer cannot remove each other's work);
//! `index.json` is rewritten through a temporary file under a lock. Every rename is followed by
//! an fsync of the directory. Temporary names carry the writer's pid, so [`crate::check`] can tell
//! a dead writer's leftovers from a live one's work in progress.
//!
//! Downloads in progress go through one writer, [`Ingest`] (see [`ingest`]): a partial file
//! `ingest/sha256-<hex>.partial`, its sidecar `sha256-<hex>.json` ([`PartialInfo`]: digest,
//! expected size, completed ranges) and a `sha256-<hex>.lock` held while a process writes it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

mod image;
pub mod ingest;
mod layer_meta;
mod lock;

pub use image::{dir_size, read_image, StoredImage};
pub use ingest::{Ingest, Opened, PartialInfo, RangeWriter};
pub use layer_meta::{LayerMeta, LAYER_JSON};
pub use lock::{FileLock, StoreGuard, GC_LOCK};

use crate::digest::Digest;
use crate::manifest::{media_type, PlatformSpec};

/// Annotation holding the full reference an index entry was pulled as.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's name annotation, set to the same full reference.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The digest the reference resolved to at the registry (the index for multi-platform images).
pub const RESOLVED_DIGEST: &str = "dev.rpull.resolved.digest";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `index.json` or `oci-layout` is not what the layout requires.
    #[error("{} is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Content did not match its digest or its descriptor's size.
    #[error("{0}")]
    Verification(String),
    /// An entry's manifest or config is missing or unreadable.
    #[error("image {name} is damaged: {reason}")]
    Damaged {
        /// The entry's full reference (or manifest digest when unnamed).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob read whole into memory is larger than any manifest, index or config may be.
    #[error("{} is {size} bytes, more than the {limit} bytes a manifest or config may have", path.display())]
    TooLarge {
        /// The blob.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`MAX_SMALL_BLOB_BYTES`].
        limit: u64,
    },
    /// A long operation (re-hashing a resumed download) stopped because the caller cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl StoreError {
    pub(crate) fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// `index.json` of an OCI image layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The OCI index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One entry per pulled reference.
    #[serde(default)]
    pub manifests: Vec<RefEntry>,
}

/// One pulled reference: the descriptor of its image manifest, annotated with its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefEntry {
    /// The image manifest's media type.
    pub media_type: String,
    /// The image manifest's digest.
    pub digest: Digest,
    /// The image manifest's size.
    pub size: u64,
    /// The image's platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Name and resolution annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl RefEntry {
    /// The full reference this entry is named by.
    pub fn name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    /// The digest the reference resolved to at the registry.
    pub fn resolved_digest(&self) -> Option<&str> {
        self.annotations.get(RESOLVED_DIGEST).map(String::as_str)
    }
}

/// The store at one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether the process that made the temporary name `name` (see [`unique_name`]) is alive.
/// Names that do not parse count as alive, so they are never removed by mistake.
pub fn temp_owner_alive(name: &str) -> bool {
    let digits: String = name
        .trim_start_matches(".tmp-")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let Ok(pid) = digits.parse::<i32>() else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    if pid as u32 == std::process::id() {
        return true;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The most bytes [`Store::read_blob`] reads into memory: the largest config (manifests are
/// smaller still).
pub const MAX_SMALL_BLOB_BYTES: u64 = crate::manifest::MAX_CONFIG_BYTES as u64;

/// Prefix of temporary files written beside their final name.
pub const TMP_PREFIX: &str = ".tmp-";

/// A name no other writer (thread or process) will pick: `<prefix><pid>-<n>-<nanos>`.
fn unique_name(prefix: &str) -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{n}-{nanos}", std::process::id())
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(unique_name(TMP_PREFIX));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
        f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
        f.sync_all().map_err(StoreError::io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(StoreError::io("rename into", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory, so that a rename in it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync", dir))
}

impl Store {
    /// Opens the store at `root`, creating the layout when it is not there yet.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [
            store.root.join("blobs/sha256"),
            store.root.join("ingest"),
            store.root.join("layers/sha256"),
            store.root.join("layers/tmp"),
        ] {
            fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.root.join("index.json");
        if !index.exists() {
            let _lock = FileLock::acquire(&store.root.join("index.json.lock"))?;
            if !index.exists() {
                store.write_index(&LayoutIndex {
                    schema_version: 2,
                    media_type: Some(media_type::OCI_INDEX.into()),
                    manifests: Vec::new(),
                })?;
            }
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Whether the blob is present with the expected size (`None` skips the size check).
    pub fn has_blob(&self, digest: &Digest, size: Option<u64>) -> bool {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Reads a small blob (a manifest, index or config: at most [`MAX_SMALL_BLOB_BYTES`],
    /// checked before reading) and checks it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.read_small_blob(digest, None)
    }

    /// [`Store::read_blob`] for a descriptor: the blob must also be `size` bytes.
    pub fn read_blob_sized(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError> {
        self.read_small_blob(digest, Some(size))
    }

    fn read_small_blob(&self, digest: &Digest, size: Option<u64>) -> Result<Vec<u8>, StoreError> {
        use std::io::Read as _;
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(StoreError::io("read", &path))?;
        let len = file.metadata().map_err(StoreError::io("read", &path))?.len();
        if let Some(want) = size.filter(|&s| s != len) {
            return Err(StoreError::Verification(format!(
                "{} is {len} bytes, its descriptor says {want}",
                path.display()
            )));
        }
        let too_large = |size| StoreError::TooLarge {
            path: path.clone(),
            size,
            limit: MAX_SMALL_BLOB_BYTES,
        };
        if len > MAX_SMALL_BLOB_BYTES {
            return Err(too_large(len));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_SMALL_BLOB_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("read", &path))?;
        if bytes.len() as u64 > MAX_SMALL_BLOB_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        if !digest.verify(&bytes) {
            return Err(StoreError::Verification(format!(
                "{} does not match its digest {digest}",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Stores a small blob held in memory, after checking it against `digest`.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if !digest.verify(bytes) {
            return Err(StoreError::Verification(format!(
                "content does not match its digest {digest}"
            )));
        }
        if self.has_blob(digest, Some(bytes.len() as u64)) {
            return Ok(());
        }
        write_atomic(&self.blob_path(digest), bytes)
    }

    /// Where the unpacked layer with `diff_id` lives (`rootfs/` and `layer.json` inside).
    /// The longest path, in bytes, an entry of an unpacked layer may have below its `rootfs/`
    /// so that its full path (`<root>/layers/sha256/<hex>/rootfs/<entry>`, the root made
    /// absolute) stays within PATH_MAX, which every command that reads layers relies on.
    pub fn max_layer_entry_path(&self) -> usize {
        let layers = self.root.join("layers/sha256");
        let layers = fs::canonicalize(&layers)
            .or_else(|_| std::path::absolute(&layers))
            .unwrap_or(layers);
        // "<layers>/<64 hex>/rootfs/" and the terminating NUL.
        let prefix = layers.as_os_str().len() + 1 + 64 + "/rootfs/".len() + 1;
        (libc::PATH_MAX as usize).saturating_sub(prefix)
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(diff_id.algorithm().name())
            .join(diff_id.hex())
    }

    /// Whether the layer is unpacked (the directory only appears once complete).
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).join(LAYER_JSON).is_file()
    }

    /// A fresh directory to unpack into, with an empty `rootfs/` inside.
    pub fn new_layer_tmp(&self) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("layers/tmp").join(unique_name(""));
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(StoreError::io("create", &rootfs))?;
        Ok(dir)
    }

    /// Where layers are locked while one is published (`layers/sha256/<hex>.lock` would look
    /// like a layer to other tools, so the locks live apart).
    fn layer_lock_path(&self, diff_id: &Digest) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("layers/locks");
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        Ok(dir.join(format!("{}-{}.lock", diff_id.algorithm().name(), diff_id.hex())))
    }

    /// Publishes an unpacked layer: writes `layer.json`, syncs the unpacked files to disk and
    /// renames the directory into place, all under the layer's lock. When another process
    /// published the same layer first, ours is discarded.
    pub fn commit_layer(&self, tmp: &Path, diff_id: &Digest, meta: &LayerMeta) -> Result<(), StoreError> {
        let meta_bytes = meta.to_bytes();
        let meta_path = tmp.join(LAYER_JSON);
        let mut f = File::create(&meta_path).map_err(StoreError::io("create", &meta_path))?;
        f.write_all(&meta_bytes)
            .map_err(StoreError::io("write", &meta_path))?;
        drop(f);
        // One syncfs flushes every file the unpack wrote (cheaper than an fsync per file), so a
        // power loss after the rename cannot leave a published layer with empty files.
        sync_filesystem(tmp)?;
        let _lock = FileLock::acquire(&self.layer_lock_path(diff_id)?)?;
        if self.has_layer(diff_id) {
            remove_tree(tmp);
            return Ok(());
        }
        let dest = self.layer_dir(diff_id);
        if dest.exists() {
            // Left over from an interrupted removal (no layer.json): never trusted. Move it
            // out of the way atomically, then delete it.
            let trash = self.root.join("layers/tmp").join(unique_name(""));
            fs::rename(&dest, &trash).map_err(StoreError::io("move aside", &dest))?;
            remove_tree(&trash);
        }
        fs::rename(tmp, &dest).map_err(StoreError::io("rename into", &dest))?;
        sync_dir(dest.parent().expect("layers dir"))
    }

    /// Removes an unpacked layer: renamed into `layers/tmp` first, so it stops being visible
    /// at once, then deleted.
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<(), StoreError> {
        let _lock = FileLock::acquire(&self.layer_lock_path(diff_id)?)?;
        let dest = self.layer_dir(diff_id);
        if !dest.exists() {
            return Ok(());
        }
        let trash = self.root.join("layers/tmp").join(unique_name(""));
        fs::rename(&dest, &trash).map_err(StoreError::io("move aside", &dest))?;
        remove_tree(&trash);
        Ok(())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Reads `index.json`.
    pub fn read_index(&self) -> Result<LayoutIndex, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(StoreError::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &LayoutIndex) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).expect("json");
        write_atomic(&self.index_path(), &bytes)
    }

    /// The entry recorded for the full reference `name`.
    pub fn find_ref(&self, name: &str) -> Result<Option<RefEntry>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .find(|e| e.name() == Some(name)))
    }

    /// Records `entry` under its name, replacing an older entry of the same name.
    pub fn set_ref(&self, entry: RefEntry) -> Result<(), StoreError> {
        let _lock = FileLock::acquire(&self.root.join("index.json.lock"))?;
        let mut index = self.read_index()?;
        let name = entry.name().map(str::to_string);
        index.manifests.retain(|e| e.name().map(str::to_string) != name);
        index.manifests.push(entry);
        self.write_index(&index)
    }
}

/// Flushes the filesystem holding `path` to disk (`syncfs`).
fn sync_filesystem(path: &Path) -> Result<(), StoreError> {
    let dir = File::open(path).map_err(StoreError::io("open", path))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(StoreError::io("sync", path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Removes a directory tree, making read-only directories writable first if needed.
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn make_writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        make_writable(&e.path());
                    }
                }
            }
        }
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

/// The entries of a store directory as (name, path), sorted by name; none when it does not
/// exist (the walks of the collection and of `rpull check`).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(StoreError::io("list", dir))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

/// A store in a new temporary directory, for unit tests; the directory lives as long as the
/// returned guard.
#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    (tmp, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_refs() {
        let (tmp, store) = temp_store();
        assert!(tmp.path().join("oci-layout").is_file());
        assert_eq!(store.read_index().unwrap().manifests.len(), 0);
        let blob = b"hello";
        let d = Digest::sha256_of(blob);
        store.write_blob(&d, blob).unwrap();
        assert!(store.has_blob(&d, Some(5)));
        assert!(!store.has_blob(&d, Some(6)));
        assert_eq!(store.read_blob(&d).unwrap(), blob);
        assert!(store.write_blob(&d, b"other").is_err());
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME.to_string(), "docker.io/library/x:latest".to_string());
        let entry = RefEntry {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: d.clone(),
            size: 5,
            platform: None,
            annotations,
        };
        store.set_ref(entry.clone()).unwrap();
        store.set_ref(entry.clone()).unwrap();
        assert_eq!(store.read_index().unwrap().manifests.len(), 1);
        assert_eq!(store.find_ref("docker.io/library/x:latest").unwrap(), Some(entry));
        assert_eq!(store.find_ref("nope").unwrap(), None);
    }

    #[test]
    fn layers_publish_atomically() {
        let (_tmp, store) = temp_store();
        let diff = Digest::sha256_of(b"layer");
        let t = store.new_layer_tmp().unwrap();
        fs::write(t.join("rootfs/f"), b"x").unwrap();
        assert!(!store.has_layer(&diff));
        store.commit_layer(&t, &diff, &LayerMeta::default()).unwrap();
        assert!(store.has_layer(&diff));
        assert!(store.layer_dir(&diff).join("rootfs/f").is_file());
        let t2 = store.new_layer_tmp().unwrap();
        store.commit_layer(&t2, &diff, &LayerMeta::default()).unwrap();
        assert!(!t2.exists());
    }

    #[test]
    fn concurrent_commits_of_one_layer_leave_one_copy() {
        let (tmp, store) = temp_store();
        let diff = Digest::sha256_of(b"shared layer");
        // A leftover without its marker is replaced, never trusted.
        fs::create_dir_all(store.layer_dir(&diff).join("rootfs")).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                let diff = diff.clone();
                std::thread::spawn(move || {
                    let t = store.new_layer_tmp().unwrap();
                    fs::write(t.join("rootfs/f"), format!("{i}")).unwrap();
                    let meta = LayerMeta {
                        diff_id: diff.to_string(),
                        ..LayerMeta::default()
                    };
                    store.commit_layer(&t, &diff, &meta).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(store.has_layer(&diff));
        assert!(store.layer_dir(&diff).join("rootfs/f").is_file());
        assert_eq!(fs::read_dir(tmp.path().join("layers/tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(tmp.path().join("layers/sha256")).unwrap().count(), 1);
        store.remove_layer(&diff).unwrap();
        assert!(!store.layer_dir(&diff).exists());
    }

    #[test]
    fn temp_owners() {
        assert!(temp_owner_alive(&unique_name(TMP_PREFIX)));
        assert!(temp_owner_alive(&unique_name("")));
        assert!(temp_owner_alive("not-a-temp-name"));
        assert!(!temp_owner_alive(".tmp-999999999-0-0"));
        assert!(!temp_owner_alive("999999999-0-0"));
    }
}
