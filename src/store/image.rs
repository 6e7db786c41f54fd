//! The store's read side that every command shares: an entry's manifest and config, read and
//! checked ([`read_image`]), and the size of an unpacked tree ([`dir_size`]).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{RefEntry, Store, StoreError};
use crate::digest::Digest;
use crate::manifest::{ImageConfig, ImageManifest};

/// An entry's manifest and config, read from the store and checked.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest bytes as stored.
    pub manifest_bytes: Vec<u8>,
    /// The parsed image manifest.
    pub manifest: ImageManifest,
    /// The config bytes as stored.
    pub config_bytes: Vec<u8>,
    /// The parsed config (its DiffIDs match the manifest's layers one for one).
    pub config: ImageConfig,
}

impl StoredImage {
    /// The image ID (the config digest).
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }
}

/// Reads the image manifest `entry` points at and its config, verifying both digests.
pub fn read_image(store: &Store, entry: &RefEntry) -> Result<StoredImage, StoreError> {
    let name = entry
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| entry.digest.to_string());
    let damaged = |reason: String| StoreError::Damaged {
        name: name.clone(),
        reason,
    };
    let manifest_bytes = store
        .read_blob(&entry.digest)
        .map_err(|e| damaged(format!("manifest {}: {e}", entry.digest)))?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| damaged(format!("manifest {}: {e}", entry.digest)))?;
    let config_bytes = store
        .read_blob_sized(&manifest.config.digest, manifest.config.size)
        .map_err(|e| damaged(format!("config {}: {e}", manifest.config.digest)))?;
    let config = ImageConfig::parse(&config_bytes, manifest.layers.len())
        .map_err(|e| damaged(format!("config {}: {e}", manifest.config.digest)))?;
    Ok(StoredImage {
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    })
}

/// The size of a directory tree the way moby's `directory.Size` counts it: every non-directory
/// entry's `st_size` (symlinks count their target length), each inode once. Unreadable parts
/// are skipped.
pub fn dir_size(path: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for entry in rd.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&entry.path(), seen, total);
                continue;
            }
            if meta.len() == 0 || !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            *total += meta.len();
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(path, &mut seen, &mut total);
    total
}
