//! `rpull rmi` and `rpull prune`: removing references from `index.json`, and collecting the
//! blobs and unpacked layers nothing refers to any more.
//!
//! [`remove_refs`] follows the daemon's `ImageDelete`: a reference untags (and, when it was the
//! repository's last tag of that image, also untags the repository's digest references); an
//! image ID removes every reference to the image, but only when they all belong to one
//! repository with at most one tag, unless forced. A tag entry's `dev.rpull.resolved.digest`
//! counts as the repo digest docker keeps beside each tag (`name@sha256:…`). Only `index.json`
//! changes; the space is given back by [`collect`].
//!
//! [`collect`] is a mark and sweep. Everything reachable from `index.json` is marked (image
//! manifests, the index blobs named by `dev.rpull.resolved.digest`, configs, layer blobs, and the
//! unpacked layers named by the configs' DiffIDs); unmarked blobs, layer directories,
//! abandoned downloads in `ingest/` and temporary directories in `layers/tmp/` are deleted.
//!
//! Safety against a concurrent pull:
//! * the `index.json` lock is held from mark to sweep, so no reference can be added meanwhile;
//! * anything created or changed less than [`CollectOptions::grace`] ago (one hour by default,
//!   judged by the later of mtime and ctime, since unpacking restores old mtimes) is kept: a
//!   pull writes its blobs and layers before it records the reference;
//! * a partial download is only removed when its `.lock` can be taken;
//! * operations that read or write blobs outside the index lock hold a shared [`StoreGuard`]
//!   (`gc.lock`), and [`collect`] takes it exclusively, so it never runs beside them. The engine
//!   takes it for a whole pull, save and `rootfs`, which also closes the window where a pull
//!   finds a blob present, a prune deletes it, and the pull records a reference to it. With
//!   that guard held nothing can be written meanwhile, so [`CollectOptions::immediate`] (what
//!   `rpull prune`, `rpull rmi` and the CRI's image removal use) spares nothing for being recent.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::images::lookup::{image_id, is_lower_hex};
use crate::reference::{Reference, ReferenceError};
use crate::store::{
    self, dir_size, list_dir, FileLock, LayerMeta, LayoutIndex, RefEntry, Store, StoreError, LAYER_JSON,
    RESOLVED_DIGEST,
};

pub use crate::store::{StoreGuard, GC_LOCK};
/// How recent a change must be for [`collect`] to leave the file alone by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);

/// Why a removal or a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing matches the name; docker's text (the CLI adds `Error response from daemon: `).
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// An image ID names an image referenced from several repositories (12-hex ID inside).
    #[error(
        "conflict: unable to delete {0} (must be forced) - image is referenced in multiple repositories"
    )]
    Conflict(String),
    /// The name is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Another command holds the store guard and waiting was not asked for.
    #[error("another rpull command is using the store; try again when it has finished")]
    Busy,
    /// A referenced manifest is corrupt, so what it refers to cannot be known.
    #[error("image {name} is damaged ({reason}); remove it with `rpull rmi {name}` and prune again")]
    Damaged {
        /// The reference whose manifest is damaged.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// One line of `rpull rmi` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A reference was removed (familiar form, `debian:bookworm` or `debian@sha256:…`).
    Untagged(String),
    /// The image (config digest) has no reference left.
    Deleted(Digest),
}

impl fmt::Display for Removed {
    /// docker's lines: `Untagged: debian:bookworm`, `Deleted: sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removed::Untagged(r) => write!(f, "Untagged: {r}"),
            Removed::Deleted(d) => write!(f, "Deleted: {d}"),
        }
    }
}

/// What happened to one name given to [`remove_refs`].
#[derive(Debug)]
pub struct RemoveOutcome {
    /// The name as given.
    pub name: String,
    /// The lines to print, or why this name failed (docker goes on with the next name).
    pub result: Result<Vec<Removed>, GcError>,
}

/// A reference in the index: an entry's own name, or the repo digest implied by a tag entry.
#[derive(Debug, Clone)]
struct Ref {
    /// Normalized: `name:tag` or `name@digest` (never both).
    reference: Reference,
    /// The entry it comes from.
    entry: usize,
    /// Whether it is the implied repo digest of a tag entry.
    implicit: bool,
}

/// The index with each entry's reference and image ID.
struct View {
    refs: Vec<Ref>,
    /// Image ID per entry (`None` when its manifest cannot be read).
    images: Vec<Option<Digest>>,
}

fn entry_key(entry: &RefEntry) -> Option<Reference> {
    let r = Reference::parse_normalized(entry.name()?).ok()?;
    Some(match r.digest() {
        Some(d) => r.name_only().with_digest(d.clone()),
        None => r.with_default_tag().0,
    })
}

impl View {
    fn build(store: &Store, index: &LayoutIndex, cache: &mut HashMap<Digest, Option<Digest>>) -> View {
        let mut refs = Vec::new();
        let mut images = Vec::new();
        for (i, entry) in index.manifests.iter().enumerate() {
            images.push(
                cache
                    .entry(entry.digest.clone())
                    .or_insert_with(|| image_id(store, entry))
                    .clone(),
            );
            let Some(key) = entry_key(entry) else { continue };
            if key.digest().is_none() {
                if let Some(d) = entry.resolved_digest().and_then(|d| Digest::parse(d).ok()) {
                    refs.push(Ref {
                        reference: key.name_only().with_digest(d),
                        entry: i,
                        implicit: true,
                    });
                }
            }
            refs.push(Ref {
                reference: key,
                entry: i,
                implicit: false,
            });
        }
        View { refs, images }
    }

    /// The distinct references to `image`, sorted like docker's reference store.
    fn refs_of(&self, image: &Digest) -> Vec<Reference> {
        let mut out: Vec<Reference> = Vec::new();
        for r in &self.refs {
            if self.images[r.entry].as_ref() == Some(image) && !out.contains(&r.reference) {
                out.push(r.reference.clone());
            }
        }
        out.sort_by_key(|r| r.to_string());
        out
    }
}

/// docker's `isSingleReference`: at most one tag, and every reference in that tag's repository.
fn is_single_reference(refs: &[Reference]) -> bool {
    if refs.len() <= 1 {
        return refs.len() == 1;
    }
    let mut single: Option<&Reference> = None;
    let mut canonical = HashSet::new();
    for r in refs {
        if r.digest().is_some() {
            canonical.insert(r.name());
        } else if single.is_none() {
            single = Some(r);
        } else {
            return false;
        }
    }
    let single = single.unwrap_or(&refs[0]);
    canonical.len() == 1 && canonical.contains(&single.name())
}

enum Target {
    Name(Reference),
    Id(Digest),
}

fn resolve(name: &str, view: &View) -> Result<Target, GcError> {
    let has_image = |id: &Digest| view.images.iter().any(|i| i.as_ref() == Some(id));
    let full = if name.len() == 64 && is_lower_hex(name) {
        Digest::parse(&format!("sha256:{name}")).ok()
    } else if name.starts_with("sha256:") {
        Digest::parse(name).ok()
    } else {
        None
    };
    if let Some(id) = full {
        return if has_image(&id) {
            Ok(Target::Id(id))
        } else {
            Err(GcError::NoSuchImage(id.to_string()))
        };
    }
    let parsed = Reference::parse_normalized(name)?;
    let key = match parsed.digest() {
        Some(d) => parsed.name_only().with_digest(d.clone()),
        None => parsed.clone().with_default_tag().0,
    };
    if view.refs.iter().any(|r| r.reference == key) {
        return Ok(Target::Name(key));
    }
    // An image ID prefix (at least 3 hex characters), unambiguous.
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 3 && is_lower_hex(hex) {
        let mut found: Vec<&Digest> = view
            .images
            .iter()
            .flatten()
            .filter(|d| d.algorithm().name() == "sha256" && d.hex().starts_with(hex))
            .collect();
        found.sort();
        found.dedup();
        if let [one] = found[..] {
            return Ok(Target::Id(one.clone()));
        }
    }
    Err(GcError::NoSuchImage(
        parsed.with_default_tag().0.familiar_string(),
    ))
}

/// Removes one name from `index`; returns the lines to print.
fn remove_one(
    store: &Store,
    index: &mut LayoutIndex,
    cache: &mut HashMap<Digest, Option<Digest>>,
    name: &str,
    force: bool,
) -> Result<Vec<Removed>, GcError> {
    let view = View::build(store, index, cache);
    let mut records = Vec::new();
    // Entries to drop, and tag entries whose implied repo digest is untagged.
    let mut drop_entries: HashSet<usize> = HashSet::new();
    let mut strip_resolved: HashSet<usize> = HashSet::new();
    let image = match resolve(name, &view)? {
        Target::Name(key) => {
            let matching: Vec<&Ref> = view.refs.iter().filter(|r| r.reference == key).collect();
            let image = view.images[matching[0].entry].clone();
            for r in &matching {
                if r.implicit {
                    strip_resolved.insert(r.entry);
                } else {
                    drop_entries.insert(r.entry);
                }
            }
            records.push(Removed::Untagged(key.familiar_string()));
            if key.digest().is_none() {
                // The repository's last tag of this image takes its digest references along.
                let same_repo = |r: &&Ref| {
                    r.reference.name() == key.name()
                        && (view.images[r.entry] == image && image.is_some()
                            || drop_entries.contains(&r.entry))
                };
                let tags_left = view
                    .refs
                    .iter()
                    .filter(same_repo)
                    .any(|r| r.reference.digest().is_none() && !drop_entries.contains(&r.entry));
                if !tags_left {
                    let mut digests: Vec<&Ref> = view
                        .refs
                        .iter()
                        .filter(same_repo)
                        .filter(|r| r.reference.digest().is_some())
                        .collect();
                    digests.sort_by_key(|r| r.reference.to_string());
                    let mut seen = HashSet::new();
                    for r in digests {
                        if !r.implicit {
                            drop_entries.insert(r.entry);
                        }
                        if seen.insert(r.reference.to_string()) {
                            records.push(Removed::Untagged(r.reference.familiar_string()));
                        }
                    }
                }
            }
            image
        }
        Target::Id(id) => {
            let refs = view.refs_of(&id);
            if !force && !is_single_reference(&refs) {
                return Err(GcError::Conflict(id.short().to_string()));
            }
            for r in &refs {
                records.push(Removed::Untagged(r.familiar_string()));
            }
            for (i, img) in view.images.iter().enumerate() {
                if img.as_ref() == Some(&id) {
                    drop_entries.insert(i);
                }
            }
            Some(id)
        }
    };
    for i in &strip_resolved {
        index.manifests[*i].annotations.remove(RESOLVED_DIGEST);
    }
    let mut i = 0;
    index.manifests.retain(|_| {
        i += 1;
        !drop_entries.contains(&(i - 1))
    });
    if let Some(id) = image {
        let left = index
            .manifests
            .iter()
            .any(|e| cache.get(&e.digest).cloned().flatten().as_ref() == Some(&id));
        if !left {
            records.push(Removed::Deleted(id));
        }
    }
    Ok(records)
}

/// `rpull rmi NAME…`: removes each name (a reference, normalized with the default tag, or an
/// image ID: full, `sha256:`-prefixed, or an unambiguous prefix of at least 3 hex characters)
/// from `index.json`, as the daemon's `ImageDelete` does. The names are handled in order under
/// the index lock and `index.json` is rewritten once. The outer error is a store failure; each
/// name's own failure is in its [`RemoveOutcome`].
pub fn remove_refs(store: &Store, names: &[String], force: bool) -> Result<Vec<RemoveOutcome>, GcError> {
    let _lock = FileLock::acquire(&store.root().join("index.json.lock"))?;
    let mut index = store.read_index()?;
    let mut cache = HashMap::new();
    let mut changed = false;
    let mut out = Vec::new();
    for name in names {
        let result = remove_one(store, &mut index, &mut cache, name, force);
        changed |= matches!(&result, Ok(r) if !r.is_empty());
        out.push(RemoveOutcome {
            name: name.clone(),
            result,
        });
    }
    if changed {
        let bytes = serde_json::to_vec_pretty(&index).expect("json");
        store::write_atomic(&store.root().join("index.json"), &bytes)?;
    }
    Ok(out)
}

/// Settings of [`collect_with`].
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Files changed more recently than this are kept.
    pub grace: Duration,
    /// Wait for commands holding the [`StoreGuard`] instead of failing with [`GcError::Busy`].
    pub wait: bool,
}

impl CollectOptions {
    /// No grace, and [`GcError::Busy`] instead of waiting: what `rpull prune`, `rpull rmi` and
    /// the CRI's image removal collect with.
    pub fn immediate() -> CollectOptions {
        CollectOptions {
            grace: Duration::ZERO,
            wait: false,
        }
    }
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            grace: DEFAULT_GRACE,
            wait: false,
        }
    }
}

/// What [`collect`] removed and left.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Unreferenced blobs deleted, with their sizes.
    pub deleted_blobs: Vec<(Digest, u64)>,
    /// Unreferenced unpacked layers (by DiffID) deleted, with their sizes.
    pub deleted_layers: Vec<(Digest, u64)>,
    /// Abandoned partial downloads (and their lock files) removed, with their sizes.
    pub removed_partials: Vec<(PathBuf, u64)>,
    /// Stale temporary files and directories removed, with their sizes.
    pub removed_temp: Vec<(PathBuf, u64)>,
    /// Unreferenced but recently changed paths that were kept.
    pub kept_recent: Vec<PathBuf>,
    /// Partial downloads kept because a pull holds their lock.
    pub in_use: Vec<PathBuf>,
    /// Things noticed on the way (missing manifests or configs).
    pub warnings: Vec<String>,
}

impl GcReport {
    /// Total bytes given back.
    pub fn reclaimed_bytes(&self) -> u64 {
        self.deleted_blobs.iter().map(|d| d.1).sum::<u64>()
            + self.deleted_layers.iter().map(|d| d.1).sum::<u64>()
            + self.removed_partials.iter().map(|d| d.1).sum::<u64>()
            + self.removed_temp.iter().map(|d| d.1).sum::<u64>()
    }

    /// The digests of everything deleted (blobs, then layers), for `Deleted: sha256:…` lines.
    pub fn deleted(&self) -> impl Iterator<Item = &Digest> {
        self.deleted_blobs
            .iter()
            .chain(&self.deleted_layers)
            .map(|d| &d.0)
    }
}

/// `rpull prune` with the default options (one hour of grace, fail when busy).
pub fn collect(store: &Store) -> Result<GcReport, GcError> {
    collect_with(store, &CollectOptions::default())
}

struct Marks {
    blobs: HashSet<Digest>,
    layers: HashSet<Digest>,
}

fn json_digest(v: &serde_json::Value) -> Option<Digest> {
    v.as_str().and_then(|s| Digest::parse(s).ok())
}

fn mark_manifest(
    store: &Store,
    name: &str,
    digest: &Digest,
    depth: usize,
    marks: &mut Marks,
    report: &mut GcReport,
) -> Result<(), GcError> {
    marks.blobs.insert(digest.clone());
    if !store.has_blob(digest, None) {
        report
            .warnings
            .push(format!("{name}: manifest {digest} is missing"));
        return Ok(());
    }
    let damaged = |reason: String| GcError::Damaged {
        name: name.to_string(),
        reason,
    };
    let bytes = store.read_blob(digest).map_err(|e| damaged(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| damaged(format!("manifest {digest}: {e}")))?;
    if let Some(children) = v.get("manifests").and_then(|m| m.as_array()) {
        for child in children {
            let d = json_digest(&child["digest"]).ok_or_else(|| damaged(format!("index {digest}")))?;
            if depth < 4 {
                mark_manifest(store, name, &d, depth + 1, marks, report)?;
            }
        }
    }
    if let Some(config) = v.get("config") {
        let d = json_digest(&config["digest"]).ok_or_else(|| damaged(format!("manifest {digest}")))?;
        marks.blobs.insert(d.clone());
        let diff_ids = store
            .read_blob(&d)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| c["rootfs"]["diff_ids"].as_array().cloned());
        match diff_ids {
            Some(ids) => marks.layers.extend(ids.iter().filter_map(json_digest)),
            None => report
                .warnings
                .push(format!("{name}: config {d} is missing or unreadable")),
        }
    }
    if let Some(layers) = v.get("layers").and_then(|l| l.as_array()) {
        for l in layers {
            let d = json_digest(&l["digest"]).ok_or_else(|| damaged(format!("manifest {digest}")))?;
            marks.blobs.insert(d);
        }
    }
    Ok(())
}

/// When `meta` last changed: the later of mtime and ctime.
fn changed_at(meta: &fs::Metadata) -> i64 {
    meta.mtime().max(meta.ctime())
}

/// Whether anything in the tree at `path` changed after `cutoff` (Unix seconds).
fn tree_changed_since(path: &Path, cutoff: i64) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if changed_at(&meta) > cutoff {
        return true;
    }
    if meta.is_dir() {
        if let Ok(rd) = fs::read_dir(path) {
            return rd.flatten().any(|e| tree_changed_since(&e.path(), cutoff));
        }
    }
    false
}

fn remove_dir_tree(path: &Path) -> Result<(), GcError> {
    store::remove_tree(path);
    if path.exists() {
        return Err(GcError::Store(StoreError::Io {
            action: "remove",
            path: path.to_path_buf(),
            source: io::Error::other("could not remove the whole tree"),
        }));
    }
    Ok(())
}

/// `rpull prune`: deletes what `index.json` no longer reaches (see the module docs for what is
/// marked and how concurrent pulls are protected).
pub fn collect_with(store: &Store, opts: &CollectOptions) -> Result<GcReport, GcError> {
    let _guard = StoreGuard::exclusive(store, opts.wait)?.ok_or(GcError::Busy)?;
    let _lock = FileLock::acquire(&store.root().join("index.json.lock"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let cutoff = now - opts.grace.as_secs() as i64;
    let mut report = GcReport::default();

    // Mark.
    let index = store.read_index()?;
    let mut marks = Marks {
        blobs: HashSet::new(),
        layers: HashSet::new(),
    };
    for entry in &index.manifests {
        let name = entry
            .name()
            .map(str::to_string)
            .unwrap_or_else(|| entry.digest.to_string());
        if let Some(d) = entry.resolved_digest().and_then(|d| Digest::parse(d).ok()) {
            marks.blobs.insert(d);
        }
        mark_manifest(store, &name, &entry.digest, 0, &mut marks, &mut report)?;
    }

    // Sweep blobs.
    for (alg, alg_dir) in list_dir(&store.root().join("blobs"))? {
        for (name, path) in list_dir(&alg_dir)? {
            let digest = Digest::parse(&format!("{alg}:{name}")).ok();
            if digest.as_ref().is_some_and(|d| marks.blobs.contains(d)) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            if changed_at(&meta) > cutoff {
                report.kept_recent.push(path);
                continue;
            }
            fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            match digest {
                Some(d) => report.deleted_blobs.push((d, meta.len())),
                None => report.removed_temp.push((path, meta.len())),
            }
        }
    }

    // Sweep unpacked layers, keeping those whose blob is still referenced even if a config
    // could not be read.
    for (alg, alg_dir) in list_dir(&store.root().join("layers"))? {
        if alg == "tmp" {
            continue;
        }
        for (name, path) in list_dir(&alg_dir)? {
            let digest = Digest::parse(&format!("{alg}:{name}")).ok();
            if digest.as_ref().is_some_and(|d| marks.layers.contains(d)) {
                continue;
            }
            let blob = LayerMeta::read(&path.join(LAYER_JSON))
                .ok()
                .and_then(|m| Digest::parse(&m.blob).ok());
            if blob.is_some_and(|b| marks.blobs.contains(&b)) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if changed_at(&meta) > cutoff {
                report.kept_recent.push(path);
                continue;
            }
            let size = if meta.is_dir() {
                dir_size(&path)
            } else {
                meta.len()
            };
            if meta.is_dir() {
                remove_dir_tree(&path)?;
            } else {
                fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            }
            match digest {
                Some(d) => report.deleted_layers.push((d, size)),
                None => report.removed_temp.push((path, size)),
            }
        }
    }

    // Unpacking directories left by interrupted pulls.
    for (_, path) in list_dir(&store.root().join("layers/tmp"))? {
        if tree_changed_since(&path, cutoff) {
            report.kept_recent.push(path);
            continue;
        }
        let size = dir_size(&path);
        remove_dir_tree(&path)?;
        report.removed_temp.push((path, size));
    }

    // Partial downloads nobody is resuming right now, then lock files left alone.
    let ingest = list_dir(&store.root().join("ingest"))?;
    for (name, path) in &ingest {
        if !name.ends_with(".partial") {
            continue;
        }
        match crate::store::ingest::remove_unused_at(path)? {
            Some(size) => report.removed_partials.push((path.clone(), size)),
            None => report.in_use.push(path.clone()),
        }
    }
    for (name, path) in &ingest {
        if !name.ends_with(".lock") || path.with_extension("partial").exists() || !path.exists() {
            continue;
        }
        if let Some(lock) = FileLock::try_acquire(path)? {
            let _ = fs::remove_file(path);
            drop(lock);
        }
    }

    // Temporary files of interrupted atomic writes at the root.
    for (name, path) in list_dir(store.root())? {
        if !name.starts_with(".tmp-") {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() && changed_at(&meta) <= cutoff {
            fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            report.removed_temp.push((path, meta.len()));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::testutil::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn lines(outcome: &RemoveOutcome) -> Vec<String> {
        match &outcome.result {
            Ok(r) => r.iter().map(ToString::to_string).collect(),
            Err(e) => vec![format!("error: {e}")],
        }
    }

    fn index_names(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store
            .read_index()
            .unwrap()
            .manifests
            .iter()
            .filter_map(|e| e.name().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rmi_by_name_untags_like_docker() {
        let f = debian_store();
        let out = remove_refs(&f.store, &names(&["debian:bookworm", "nope", "debian"]), false).unwrap();
        assert_eq!(lines(&out[0]), vec!["Untagged: debian:bookworm"]);
        assert_eq!(lines(&out[1]), vec!["error: No such image: nope:latest"]);
        // The last debian tag takes the repo digest along; the image stays (bench/debian).
        assert_eq!(
            lines(&out[2]),
            vec![
                "Untagged: debian:latest".to_string(),
                format!("Untagged: debian@{}", f.resolved),
            ]
        );
        assert_eq!(
            index_names(&f.store),
            vec![
                format!("127.0.0.1:5000/bench/debian@{}", f.m1),
                "docker.io/library/other:1".to_string()
            ]
        );
        let out = remove_refs(
            &f.store,
            &names(&[&format!("127.0.0.1:5000/bench/debian@{}", f.m1)]),
            false,
        )
        .unwrap();
        assert_eq!(
            lines(&out[0]),
            vec![
                format!("Untagged: 127.0.0.1:5000/bench/debian@{}", f.m1),
                format!("Deleted: {}", f.c1),
            ]
        );
    }

    #[test]
    fn rmi_by_id_needs_force_across_repositories() {
        let f = debian_store();
        let short = &f.c1.hex()[..12];
        let out = remove_refs(&f.store, &names(&[short]), false).unwrap();
        assert_eq!(
            lines(&out[0]),
            vec![format!(
                "error: conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
            )]
        );
        assert_eq!(index_names(&f.store).len(), 4);
        let out = remove_refs(&f.store, &names(&[&f.c1.to_string()]), true).unwrap();
        assert_eq!(
            lines(&out[0]),
            vec![
                format!("Untagged: 127.0.0.1:5000/bench/debian@{}", f.m1),
                "Untagged: debian:bookworm".to_string(),
                "Untagged: debian:latest".to_string(),
                format!("Untagged: debian@{}", f.resolved),
                format!("Deleted: {}", f.c1),
            ]
        );
        // A single tag plus its repo digest is removed by ID without force.
        let out = remove_refs(&f.store, &names(&[&f.c2.hex()[..5]]), false).unwrap();
        let m2 = f.store.find_ref("docker.io/library/other:1").unwrap();
        assert!(m2.is_none());
        assert_eq!(lines(&out[0])[0], "Untagged: other:1");
        assert_eq!(lines(&out[0]).last().unwrap(), &format!("Deleted: {}", f.c2));
        assert!(index_names(&f.store).is_empty());
        let out = remove_refs(&f.store, &names(&[f.c2.hex(), "ab"]), false).unwrap();
        assert_eq!(lines(&out[0]), vec![format!("error: No such image: {}", f.c2)]);
        assert_eq!(lines(&out[1]), vec!["error: No such image: ab:latest"]);
    }

    #[test]
    fn rmi_of_an_implied_repo_digest_keeps_the_tag() {
        let f = debian_store();
        let out = remove_refs(&f.store, &names(&[&format!("debian@{}", f.resolved)]), false).unwrap();
        assert_eq!(lines(&out[0]), vec![format!("Untagged: debian@{}", f.resolved)]);
        let e = f
            .store
            .find_ref("docker.io/library/debian:latest")
            .unwrap()
            .unwrap();
        assert_eq!(e.resolved_digest(), None);
        assert_eq!(index_names(&f.store).len(), 4);
        let bad = remove_refs(&f.store, &names(&["Bad:Name"]), false).unwrap();
        assert!(matches!(bad[0].result, Err(GcError::Reference(_))));
    }

    #[test]
    fn single_reference_rule() {
        let r = |s: &str| {
            let p = Reference::parse_normalized(s).unwrap();
            match p.digest() {
                Some(_) => p,
                None => p.with_default_tag().0,
            }
        };
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(is_single_reference(&[r("a:1")]));
        assert!(is_single_reference(&[r("a:1"), r(&format!("a@{d}"))]));
        assert!(!is_single_reference(&[r("a:1"), r("a:2")]));
        assert!(!is_single_reference(&[r("a:1"), r(&format!("b@{d}"))]));
        assert!(is_single_reference(&[r(&format!("b@{d}"))]));
        assert!(!is_single_reference(&[]));
    }

    #[test]
    fn collect_sweeps_only_the_unreachable() {
        let f = debian_store();
        let store = &f.store;
        let opts = CollectOptions::immediate();
        // Nothing is garbage yet (the index blob is kept through the resolved annotation).
        let report = collect_with(store, &opts).unwrap();
        // The fixture's extra layer blobs are all referenced; only nothing is deleted.
        assert!(report.deleted_blobs.is_empty(), "{report:?}");
        assert!(report.deleted_layers.is_empty());
        assert!(store.has_blob(&f.resolved, None));

        // Garbage of every kind.
        let stray = Digest::sha256_of(b"stray");
        store.write_blob(&stray, b"stray").unwrap();
        let orphan = Layer::new(store, "orphan", |r| fs::write(r.join("x"), b"12345").unwrap());
        let tmp_dir = store.new_layer_tmp().unwrap();
        fs::write(tmp_dir.join("rootfs/half"), b"half").unwrap();
        let partial = store.ingest_path(&Digest::sha256_of(b"partial"));
        fs::write(&partial, b"partial data").unwrap();
        let busy = store.ingest_path(&Digest::sha256_of(b"busy"));
        fs::write(&busy, b"busy").unwrap();
        let busy_lock = FileLock::try_acquire(&busy.with_extension("lock"))
            .unwrap()
            .unwrap();

        // With the default grace everything new is kept.
        let report = collect(store).unwrap();
        assert!(report.deleted_blobs.is_empty() && report.deleted_layers.is_empty());
        assert!(report.kept_recent.len() >= 3);
        assert!(store.has_layer(&orphan.diff_id));

        let report = collect_with(store, &opts).unwrap();
        let orphan_blob = Digest::sha256_of(&orphan.blob);
        let mut deleted: Vec<&Digest> = report.deleted_blobs.iter().map(|d| &d.0).collect();
        deleted.sort();
        let mut want = vec![&stray, &orphan_blob];
        want.sort();
        assert_eq!(deleted, want);
        assert_eq!(report.deleted_layers.len(), 1);
        assert_eq!(report.deleted_layers[0].0, orphan.diff_id);
        // The whole directory: the 5-byte file and layer.json.
        assert!(report.deleted_layers[0].1 > 5);
        assert!(!store.has_layer(&orphan.diff_id));
        assert!(!tmp_dir.exists());
        assert!(!partial.exists());
        assert!(busy.exists());
        assert_eq!(report.in_use, vec![busy.clone()]);
        assert_eq!(report.deleted().count(), 3);
        assert!(report.reclaimed_bytes() >= 5 + 12 + 4);
        drop(busy_lock);

        // After rmi, the image's blobs and layers go, shared ones stay.
        remove_refs(store, &names(&["other:1"]), false).unwrap();
        let report = collect_with(store, &opts).unwrap();
        assert!(report.deleted_blobs.iter().any(|d| d.0 == f.c2));
        assert_eq!(report.deleted_layers.len(), 1);
        assert!(store.has_blob(&f.c1, None));
        assert!(!busy.exists());
        for n in [
            "debian:bookworm",
            "debian:latest",
            &format!("127.0.0.1:5000/bench/debian@{}", f.m1),
        ] {
            remove_refs(store, &names(&[n]), false).unwrap();
        }
        collect_with(store, &opts).unwrap();
        let left: Vec<_> = fs::read_dir(store.root().join("blobs/sha256")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            fs::read_dir(store.root().join("layers/sha256")).unwrap().count(),
            0
        );
    }

    #[test]
    fn collect_refuses_while_the_store_is_in_use() {
        let f = debian_store();
        let guard = StoreGuard::shared(&f.store).unwrap();
        assert!(matches!(collect(&f.store), Err(GcError::Busy)));
        drop(guard);
        assert!(collect(&f.store).is_ok());
    }

    #[test]
    fn collect_stops_on_a_damaged_manifest() {
        let f = debian_store();
        fs::write(f.store.blob_path(&f.m1), b"{not json").unwrap();
        let err = collect_with(&f.store, &CollectOptions::immediate()).unwrap_err();
        assert!(matches!(err, GcError::Damaged { .. }), "{err}");
        assert!(f.store.has_blob(&f.c1, None));
    }
}
