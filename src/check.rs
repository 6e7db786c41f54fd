//! `rpull check`: verifies a whole store and, when asked, repairs it so that a re-pull can
//! finish the job.
//!
//! What is verified:
//! * `oci-layout` and `index.json` parse;
//! * every blob under `blobs/<alg>/` hashes to its name;
//! * every `index.json` entry's manifest is present with its declared size and parses, and so
//!   are its config, its layer blobs and (from the config's DiffIDs) its unpacked layers; the
//!   index the reference resolved through is present too;
//! * every directory under `layers/sha256/` has its completeness marker `layer.json`, naming
//!   the same DiffID, and a `rootfs/`;
//! * partial downloads in `ingest/` have a sidecar and are no longer than it declares; the
//!   completed ranges a sidecar lists are in order, within the blob and held by the file.
//!
//! What is found falls in two classes. A [`Finding`] that is a *problem* means visible content
//! is wrong or missing; any problem left makes the check fail. *Leftovers* (temporary files of
//! a dead writer, unusable partial downloads) are harmless, are reported, and are removed by
//! `--repair`. Repair removes corrupt blobs, incomplete layers and leftovers; it keeps
//! `index.json` entries whose content is missing and says which image to pull again.
//!
//! Temporary files of a process that is still running are left alone, so a check may run
//! beside a pull.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest, Sha256Hasher};
use crate::manifest::{ImageConfig, Manifest};
use crate::store::{self, list_dir, LayerMeta, LayoutIndex, Store, StoreError, LAYER_JSON};

/// Why the check could not run at all (problems in the store are [`Finding`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Visible content is wrong or missing.
    Problem,
    /// Harmless debris of an interrupted run.
    Leftover,
}

/// One thing the check found.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Problem or leftover.
    pub severity: Severity,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What is wrong, in words.
    pub message: String,
    /// Whether `--repair` fixed it (removed the file, or found nothing left to do).
    pub repaired: bool,
}

/// What a check found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// Everything found, in the order found.
    pub findings: Vec<Finding>,
    /// Blobs whose digest was verified.
    pub blobs: usize,
    /// Unpacked layers whose marker was verified.
    pub layers: usize,
    /// `index.json` entries checked.
    pub images: usize,
    /// Partial downloads kept for resuming.
    pub partials: usize,
    /// References to pull again to complete the store.
    pub repull: BTreeSet<String>,
}

impl Report {
    /// Problems not repaired: the store is not intact while any remain.
    pub fn open_problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem && !f.repaired)
    }

    /// Whether the store is intact (leftovers allowed).
    pub fn is_ok(&self) -> bool {
        self.open_problems().next().is_none()
    }
}

struct Checker<'a> {
    store: &'a Store,
    repair: bool,
    report: Report,
}

/// Checks the store; with `repair`, removes what is corrupt or left over.
pub fn check(store: &Store, repair: bool) -> Result<Report, CheckError> {
    let mut c = Checker {
        store,
        repair,
        report: Report::default(),
    };
    c.layout();
    c.blobs()?;
    c.layers()?;
    c.index()?;
    c.ingest()?;
    Ok(c.report)
}

fn remove_any(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            store::remove_tree(path);
            !path.exists()
        }
        Ok(_) => fs::remove_file(path).is_ok(),
        Err(_) => true,
    }
}

/// Hashes a file with `algorithm`, streaming.
fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    match algorithm {
        Algorithm::Sha256 => {
            let mut f = File::open(path)?;
            let mut h = Sha256Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(h.finish())
        }
        Algorithm::Sha512 => {
            use sha2::Digest as _;
            let bytes = fs::read(path)?;
            let out = sha2::Sha512::digest(&bytes);
            let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
            Digest::parse(&format!("sha512:{hex}")).map_err(io::Error::other)
        }
    }
}

impl Checker<'_> {
    fn find(&mut self, severity: Severity, path: &Path, message: String, fix: impl FnOnce() -> bool) {
        let repaired = self.repair && fix();
        self.report.findings.push(Finding {
            severity,
            path: path.to_path_buf(),
            message,
            repaired,
        });
    }

    /// A finding that `--repair` removes (file or directory).
    fn find_removable(&mut self, severity: Severity, path: &Path, message: &str) {
        self.find(severity, path, message.to_string(), || remove_any(path));
    }

    fn problem(&mut self, path: &Path, message: String) {
        self.report.findings.push(Finding {
            severity: Severity::Problem,
            path: path.to_path_buf(),
            message,
            repaired: false,
        });
    }

    fn layout(&mut self) {
        let path = self.store.root().join("oci-layout");
        let ok = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.get("imageLayoutVersion").is_some_and(|v| v.is_string()));
        if !ok {
            let fix = || store::write_atomic(&path, br#"{"imageLayoutVersion":"1.0.0"}"#).is_ok();
            self.find(
                Severity::Problem,
                &path,
                "oci-layout is missing or damaged".into(),
                fix,
            );
        }
    }

    /// Temporary entries: leftovers when their writer is dead, skipped while it runs.
    fn temp_entry(&mut self, name: &str, path: &Path) {
        if !store::temp_owner_alive(name) {
            self.find_removable(Severity::Leftover, path, "temporary file of an interrupted run");
        }
    }

    fn blobs(&mut self) -> Result<(), StoreError> {
        let blobs = self.store.root().join("blobs");
        for (alg, alg_dir) in list_dir(&blobs)? {
            if !alg_dir.is_dir() {
                self.find_removable(Severity::Problem, &alg_dir, "unexpected file in blobs/");
                continue;
            }
            for (name, path) in list_dir(&alg_dir)? {
                if name.starts_with(store::TMP_PREFIX) {
                    self.temp_entry(&name, &path);
                    continue;
                }
                let digest = match Digest::parse(&format!("{alg}:{name}")) {
                    Ok(d) if path.is_file() => d,
                    _ => {
                        self.find_removable(
                            Severity::Problem,
                            &path,
                            "not a blob (its name is not a digest, or it is not a file)",
                        );
                        continue;
                    }
                };
                match hash_file(&path, digest.algorithm()) {
                    Ok(got) if got == digest => self.report.blobs += 1,
                    Ok(got) => self.find(
                        Severity::Problem,
                        &path,
                        format!("blob {digest} is corrupt: its content hashes to {got}"),
                        || fs::remove_file(&path).is_ok(),
                    ),
                    Err(e) => self.problem(&path, format!("cannot read blob {digest}: {e}")),
                }
            }
        }
        Ok(())
    }

    fn layers(&mut self) -> Result<(), StoreError> {
        let root = self.store.root().join("layers");
        for (name, path) in list_dir(&root.join("tmp"))? {
            self.temp_entry(&name, &path);
        }
        let sha = root.join("sha256");
        for (name, path) in list_dir(&sha)? {
            let Ok(diff_id) = Digest::parse(&format!("sha256:{name}")) else {
                self.find_removable(Severity::Problem, &path, "unexpected entry in layers/sha256/");
                continue;
            };
            let marker = path.join(LAYER_JSON);
            let meta = LayerMeta::read(&marker).ok();
            let why = match &meta {
                None if !marker.exists() => Some("has no layer.json: it is incomplete".to_string()),
                None => Some("has an unreadable layer.json".to_string()),
                Some(m) if m.diff_id != diff_id.to_string() => {
                    Some("has a layer.json for another layer".to_string())
                }
                Some(_) if !path.join("rootfs").is_dir() => Some("has no rootfs/".to_string()),
                Some(_) => None,
            };
            match why {
                None => self.report.layers += 1,
                Some(why) => {
                    let store = self.store;
                    self.find(
                        Severity::Problem,
                        &path,
                        format!("unpacked layer {diff_id} {why}"),
                        || store.remove_layer(&diff_id).is_ok(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether the blob is present, intact (verified above: corrupt ones were reported) and of
    /// `size` bytes; reports the reference for a re-pull when not.
    fn need_blob(&mut self, name: &str, digest: &Digest, size: Option<u64>, what: &str) -> bool {
        let path = self.store.blob_path(digest);
        let ok = match fs::metadata(&path) {
            Ok(m) => size.is_none_or(|s| s == m.len()) && m.is_file(),
            Err(_) => false,
        };
        // A blob the scan found corrupt and repair removed is missing now; one found corrupt
        // and kept (no repair) is reported once, there.
        if !ok {
            let present = path.exists();
            let message = if present {
                format!("{name}: {what} {digest} does not have the declared size {size:?}")
            } else {
                format!("{name}: {what} {digest} is missing")
            };
            self.problem(&path, message);
            self.report.repull.insert(name.to_string());
        }
        ok
    }

    fn index(&mut self) -> Result<(), StoreError> {
        let path = self.store.root().join("index.json");
        let index: LayoutIndex = match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(i) => i,
            Err(e) => {
                self.problem(&path, format!("index.json is damaged: {e}"));
                return Ok(());
            }
        };
        for entry in &index.manifests {
            self.report.images += 1;
            let name = entry
                .name()
                .map(str::to_string)
                .unwrap_or_else(|| entry.digest.to_string());
            if let Some(resolved) = entry.resolved_digest().and_then(|d| Digest::parse(d).ok()) {
                if resolved != entry.digest {
                    self.need_blob(&name, &resolved, None, "index");
                }
            }
            if !self.need_blob(&name, &entry.digest, Some(entry.size), "manifest") {
                continue;
            }
            let Ok(bytes) = self.store.read_blob(&entry.digest) else {
                continue; // corrupt: reported by the blob scan
            };
            let image = match Manifest::parse(&entry.media_type, &bytes, &name) {
                Ok(Manifest::Image(m)) => m,
                Ok(Manifest::Index(_)) => {
                    self.problem(
                        &path,
                        format!("{name}: entry names an index, not an image manifest"),
                    );
                    continue;
                }
                Err(e) => {
                    self.problem(
                        &path,
                        format!("{name}: manifest {} does not parse: {e}", entry.digest),
                    );
                    continue;
                }
            };
            if !self.need_blob(&name, &image.config.digest, Some(image.config.size), "config") {
                continue;
            }
            let Ok(config_bytes) = self.store.read_blob(&image.config.digest) else {
                continue;
            };
            let config = match ImageConfig::parse(&config_bytes, image.layers.len()) {
                Ok(c) => c,
                Err(e) => {
                    self.problem(
                        &path,
                        format!("{name}: config {} is unusable: {e}", image.config.digest),
                    );
                    continue;
                }
            };
            for (layer, diff_id) in image.layers.iter().zip(config.diff_ids()) {
                self.need_blob(&name, &layer.digest, Some(layer.size), "layer");
                if !self.store.has_layer(diff_id) {
                    self.problem(
                        &self.store.layer_dir(diff_id),
                        format!("{name}: layer {diff_id} is not unpacked"),
                    );
                    self.report.repull.insert(name.clone());
                }
            }
        }
        Ok(())
    }

    fn ingest(&mut self) -> Result<(), StoreError> {
        let dir = self.store.root().join("ingest");
        let entries = list_dir(&dir)?;
        let names: BTreeSet<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        for (name, path) in &entries {
            if name.starts_with(store::TMP_PREFIX) {
                self.temp_entry(name, path);
                continue;
            }
            let (stem, ext) = match name.rsplit_once('.') {
                Some(x) => x,
                None => (name.as_str(), ""),
            };
            let digest = stem
                .split_once('-')
                .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok());
            let Some(digest) = digest else {
                self.find_removable(Severity::Leftover, path, "unexpected file in ingest/");
                continue;
            };
            match ext {
                "lock" => {} // lock files are cheap and shared; garbage collection prunes them
                "json" if names.contains(format!("{stem}.partial").as_str()) => {}
                "json" => self.leftover_partial(&digest, path, "sidecar without a partial download"),
                "partial" => {
                    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    match store::ingest::inspect(self.store, &digest, len) {
                        None => self.report.partials += 1,
                        Some(why) => self.leftover_partial(&digest, path, why),
                    }
                }
                _ => self.find_removable(Severity::Leftover, path, "unexpected file in ingest/"),
            }
        }
        Ok(())
    }

    /// An unusable partial download (or its sidecar): removed under its lock, never while
    /// another process downloads it.
    fn leftover_partial(&mut self, digest: &Digest, path: &Path, why: &str) {
        let store = self.store;
        self.find(Severity::Leftover, path, why.to_string(), || {
            matches!(store::ingest::remove_unused(store, digest), Ok(Some(_)))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::testutil::temp_store;

    #[test]
    fn empty_store_is_ok() {
        let (_t, s) = temp_store();
        let r = check(&s, false).unwrap();
        assert!(r.is_ok(), "{:?}", r.findings);
        assert!(r.findings.is_empty());
    }

    #[test]
    fn corrupt_blob_is_found_and_removed() {
        let (_t, s) = temp_store();
        let d = Digest::sha256_of(b"hello");
        s.write_blob(&d, b"hello").unwrap();
        fs::write(s.blob_path(&d), b"jello").unwrap();
        let r = check(&s, false).unwrap();
        assert!(!r.is_ok());
        assert!(s.blob_path(&d).exists());
        let r = check(&s, true).unwrap();
        assert!(r.is_ok(), "{:?}", r.findings);
        assert!(!s.blob_path(&d).exists());
        assert!(check(&s, false).unwrap().findings.is_empty());
    }

    #[test]
    fn incomplete_layer_and_dead_leftovers() {
        let (_t, s) = temp_store();
        let diff = Digest::sha256_of(b"layer");
        fs::create_dir_all(s.layer_dir(&diff).join("rootfs")).unwrap();
        // A temp dir of a pid that cannot exist, and a temp blob of the same.
        let dead = s.root().join("layers/tmp/999999999-0-0");
        fs::create_dir_all(&dead).unwrap();
        let dead_blob = s.root().join("blobs/sha256/.tmp-999999999-0-0");
        fs::write(&dead_blob, b"x").unwrap();
        // Our own temp files are in use and left alone.
        let live = s.new_layer_tmp().unwrap();
        let r = check(&s, false).unwrap();
        assert!(!r.is_ok());
        assert_eq!(r.findings.len(), 3, "{:?}", r.findings);
        let r = check(&s, true).unwrap();
        assert!(r.is_ok());
        assert!(!s.layer_dir(&diff).exists() && !dead.exists() && !dead_blob.exists());
        assert!(live.exists());
    }

    #[test]
    fn partials_need_a_sidecar() {
        let (_t, s) = temp_store();
        let d = Digest::sha256_of(b"something big");
        fs::write(s.ingest_path(&d), b"some").unwrap();
        let r = check(&s, false).unwrap();
        assert!(r.is_ok());
        assert_eq!(r.findings.len(), 1);
        let sidecar = |info: &store::PartialInfo| {
            fs::write(s.ingest_info_path(&d), serde_json::to_vec(info).unwrap()).unwrap();
        };
        sidecar(&store::PartialInfo::sequential(&d, 13));
        fs::write(s.ingest_path(&d), b"some").unwrap();
        let r = check(&s, true).unwrap();
        assert_eq!(r.partials, 1, "{:?}", r.findings);
        // Completed ranges: in order, within the blob, held by the file.
        fs::write(s.ingest_path(&d), b"some big").unwrap();
        let ranged = |ranges: Vec<[u64; 2]>| store::PartialInfo {
            ranges: Some(ranges),
            ..store::PartialInfo::sequential(&d, 13)
        };
        sidecar(&ranged(vec![[0, 2], [4, 8]]));
        let r = check(&s, false).unwrap();
        assert_eq!((r.partials, r.findings.len()), (1, 0), "{:?}", r.findings);
        for bad in [vec![[4, 8], [0, 2]], vec![[0, 9]], vec![[8, 14]], vec![[3, 3]]] {
            sidecar(&ranged(bad.clone()));
            let r = check(&s, false).unwrap();
            assert_eq!(
                (r.partials, r.findings.len()),
                (0, 1),
                "{bad:?}: {:?}",
                r.findings
            );
        }
        let r = check(&s, true).unwrap();
        assert_eq!(r.findings.len(), 1);
        assert!(!s.ingest_path(&d).exists() && !s.ingest_info_path(&d).exists());
    }

    #[test]
    fn index_references_are_followed() {
        let (_t, s) = temp_store();
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(store::REF_NAME.to_string(), "x:1".to_string());
        let m = Digest::sha256_of(b"{}");
        s.set_ref(store::RefEntry {
            media_type: crate::manifest::media_type::OCI_MANIFEST.into(),
            digest: m,
            size: 2,
            platform: None,
            annotations,
        })
        .unwrap();
        let r = check(&s, true).unwrap();
        assert!(!r.is_ok());
        assert!(r.repull.contains("x:1"));
    }
}
