//! `rpull images`: the rows docker's `docker images` shows, built from the store's
//! `index.json`, and their rendering as docker's table, `-q` list and `--format json` lines.
//!
//! Rows follow docker's CLI (`imageFormatTaggedAndDigest`): an image is identified by its config
//! digest; every tag gives a row (`REPOSITORY` = familiar name, `TAG`); a repository that only has
//! digest references gives `<none>` rows. Under `--digests` each tag row is repeated for every
//! repo digest of its repository, which for rpull is the digest the reference resolved to at the
//! registry (`dev.rpull.resolved.digest`), exactly what docker records as `RepoDigests`.
//!
//! `SIZE` is docker's: the sum of the layers' unpacked sizes, each computed like moby's
//! `directory.Size` (regular files and symlinks, hardlinks counted once, directories ignored). A
//! `size` number in `layer.json` is used when present; otherwise the unpacked directory is walked.
//! A layer that is not unpacked counts with its compressed size from the manifest.
//!
//! The module's parts: [`render`] (docker's table and JSON lines), [`time`] (RFC 3339 and
//! go-units' relative times), [`pattern`] (Go's `path.Match` for filters), [`lookup`] (a name
//! found as the daemon finds it, for `save` and `rootfs`). The store's read side that other
//! commands share is [`read_image`] and [`dir_size`].

use std::collections::HashMap;

use crate::digest::Digest;
use crate::reference::{Reference, ReferenceError};
use crate::store::{dir_size, read_image, LayerMeta, Store, StoreError, LAYER_JSON};

pub mod lookup;
mod pattern;
mod render;
mod time;

#[cfg(test)]
pub(crate) mod testutil;

pub use lookup::{resolve, Resolved};
pub use pattern::path_match;
pub use render::{render_json, render_table, Columns};
pub use time::{created_since, human_duration_ns, parse_rfc3339};

pub use crate::progress::human_size_precision;

/// Why the image list could not be produced or a name was not found; docker's texts, without
/// the `Error response from daemon: ` prefix the CLI adds.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The filter is not a valid pattern (Go's `path.ErrBadPattern` text).
    #[error("syntax error in pattern")]
    BadPattern,
    /// The name is neither an image ID nor a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Nothing matches the name (familiar form, `latest` when untagged).
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// An image ID prefix names more than one image.
    #[error("No such image: {0} (the ID prefix is ambiguous)")]
    Ambiguous(String),
}

/// One row of `rpull images`, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// Familiar repository name (`debian`, `127.0.0.1:5000/bench/debian`).
    pub repository: String,
    /// The tag, or `<none>` for a repository only referenced by digest.
    pub tag: String,
    /// The repo digest shown under `--digests` (`sha256:…`); `None` renders as `<none>`.
    pub digest: Option<String>,
    /// The image ID: the full config digest (`sha256:…`).
    pub image_id: String,
    /// The config's `created` time (RFC 3339), when it has one.
    pub created: Option<String>,
    /// The image size in bytes, as docker computes it (see the module docs).
    pub size: u64,
}

/// The unpacked size of one layer: `size` from `layer.json` when recorded, else a walk of
/// `rootfs/`; `None` when the layer is not unpacked.
fn layer_size(store: &Store, diff_id: &Digest) -> Option<u64> {
    if !store.has_layer(diff_id) {
        return None;
    }
    let dir = store.layer_dir(diff_id);
    let recorded = LayerMeta::read(&dir.join(LAYER_JSON)).ok().and_then(|m| m.size);
    Some(recorded.unwrap_or_else(|| dir_size(&dir.join("rootfs"))))
}

/// One image (config digest) with the references that name it.
struct ImageRefs {
    id: Digest,
    created: Option<String>,
    size: u64,
    /// Tag references (full, normalized).
    tags: Vec<Reference>,
    /// Digest references: explicit digest entries plus the repo digests of tag entries.
    digests: Vec<Reference>,
}

/// Lists the images in the store, newest first, as docker's `docker images [--digests]
/// [REPOSITORY[:TAG]]` rows. The rows are those of `--digests`; [`render_table`] and
/// [`render_json`] fold them back to docker's rows without `--digests`.
///
/// `filter` is matched like docker's `reference` filter (Go `path.Match` against the familiar
/// reference and the familiar name), and also against the full reference and full name.
/// Entries whose manifest or config cannot be read are left out.
pub fn list(store: &Store, filter: Option<&str>) -> Result<Vec<ImageRow>, ImagesError> {
    if let Some(pattern) = filter {
        // A bad pattern is an error even when nothing is stored.
        path_match(pattern, "")?;
    }
    let index = store.read_index()?;
    let mut images: Vec<ImageRefs> = Vec::new();
    let mut by_id: HashMap<Digest, usize> = HashMap::new();
    let mut read_cache: HashMap<Digest, Option<(Digest, Option<String>, u64)>> = HashMap::new();
    let mut layer_cache: HashMap<Digest, Option<u64>> = HashMap::new();
    for entry in &index.manifests {
        let Some(reference) = entry.name().and_then(|n| Reference::parse_normalized(n).ok()) else {
            continue;
        };
        let info = read_cache
            .entry(entry.digest.clone())
            .or_insert_with(|| {
                let image = read_image(store, entry).ok()?;
                let size = image
                    .manifest
                    .layers
                    .iter()
                    .zip(image.config.diff_ids())
                    .map(|(layer, diff_id)| {
                        layer_cache
                            .entry(diff_id.clone())
                            .or_insert_with(|| layer_size(store, diff_id))
                            .unwrap_or(layer.size)
                    })
                    .fold(0u64, u64::saturating_add);
                Some((image.id().clone(), image.config.created.clone(), size))
            })
            .clone();
        let Some((id, created, size)) = info else { continue };
        let slot = *by_id.entry(id.clone()).or_insert_with(|| {
            images.push(ImageRefs {
                id,
                created,
                size,
                tags: Vec::new(),
                digests: Vec::new(),
            });
            images.len() - 1
        });
        let image = &mut images[slot];
        if let Some(d) = reference.digest() {
            push_unique(&mut image.digests, reference.name_only().with_digest(d.clone()));
        } else if reference.tag().is_some() {
            push_unique(&mut image.tags, reference.clone());
            if let Some(resolved) = entry.resolved_digest().and_then(|d| Digest::parse(d).ok()) {
                push_unique(&mut image.digests, reference.name_only().with_digest(resolved));
            }
        }
    }

    if let Some(pattern) = filter {
        for image in &mut images {
            image.tags.retain(|r| reference_matches(pattern, r));
            image.digests.retain(|r| reference_matches(pattern, r));
        }
        images.retain(|i| !i.tags.is_empty() || !i.digests.is_empty());
    }
    images
        .sort_by_key(|i| std::cmp::Reverse(i.created.as_deref().and_then(parse_rfc3339).unwrap_or(i64::MIN)));

    let mut rows = Vec::new();
    for image in &images {
        // Repositories in order of first appearance, as (familiar name, tags, digests).
        type Repo = (String, Vec<String>, Vec<String>);
        fn slot(repos: &mut Vec<Repo>, name: String) -> &mut Repo {
            let i = match repos.iter().position(|r| r.0 == name) {
                Some(i) => i,
                None => {
                    repos.push((name, Vec::new(), Vec::new()));
                    repos.len() - 1
                }
            };
            &mut repos[i]
        }
        let mut repos: Vec<Repo> = Vec::new();
        for t in &image.tags {
            slot(&mut repos, t.familiar_name())
                .1
                .push(t.tag().unwrap_or_default().to_string());
        }
        for d in &image.digests {
            if let Some(dg) = d.digest() {
                slot(&mut repos, d.familiar_name()).2.push(dg.to_string());
            }
        }
        let row = |repository: &str, tag: &str, digest: Option<&String>| ImageRow {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest: digest.cloned(),
            image_id: image.id.to_string(),
            created: image.created.clone(),
            size: image.size,
        };
        for (repo, tags, digests) in repos.iter().filter(|r| !r.1.is_empty()) {
            for tag in tags {
                if digests.is_empty() {
                    rows.push(row(repo, tag, None));
                }
                for d in digests {
                    rows.push(row(repo, tag, Some(d)));
                }
            }
        }
        for (repo, _, digests) in repos.iter().filter(|r| r.1.is_empty()) {
            for d in digests {
                rows.push(row(repo, NONE, Some(d)));
            }
        }
    }
    Ok(rows)
}

const NONE: &str = "<none>";

fn push_unique(v: &mut Vec<Reference>, r: Reference) {
    if !v.contains(&r) {
        v.push(r);
    }
}

/// docker's `reference.FamiliarMatch`, extended to the full (canonical) forms.
fn reference_matches(pattern: &str, r: &Reference) -> bool {
    [r.familiar_string(), r.familiar_name(), r.to_string(), r.name()]
        .iter()
        .any(|s| path_match(pattern, s).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use std::fs;

    #[test]
    fn lists_store_like_docker() {
        let (_tmp, store) = temp_store();
        let base = Layer::new(&store, "base", |r| {
            fs::write(r.join("a"), vec![0u8; 1000]).unwrap();
            fs::hard_link(r.join("a"), r.join("b")).unwrap();
            std::os::unix::fs::symlink("a", r.join("c")).unwrap();
            fs::create_dir(r.join("d")).unwrap();
            fs::write(r.join("d/e"), vec![0u8; 500]).unwrap();
            fs::write(r.join("d/.wh.gone"), b"").unwrap();
        });
        let (m1, s1, c1) = add_image(&store, &[&base], "2023-11-14T22:13:00Z", "one");
        let (m2, s2, c2) = add_image(&store, &[&base], "2024-01-01T00:00:00Z", "two");
        let index_digest = Digest::sha256_of(b"some index");
        set_debian_refs(&store, (&m1, s1), &index_digest, (&m2, s2));
        // An entry whose manifest is missing is left out.
        let missing = Digest::sha256_of(b"missing");
        store
            .set_ref(entry("docker.io/library/broken:1", &missing, 1, None))
            .unwrap();

        let rows = list(&store, None).unwrap();
        let size = 1000 + 1 + 500; // "a" once (hardlink "b"), symlink "c" (1 byte), "d/e"
        let summary: Vec<(&str, &str, Option<&str>, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.repository.as_str(),
                    r.tag.as_str(),
                    r.digest.as_deref(),
                    r.image_id.as_str(),
                )
            })
            .collect();
        let (c1s, c2s) = (c1.to_string(), c2.to_string());
        let (ids, m1s, m2s) = (index_digest.to_string(), m1.to_string(), m2.to_string());
        assert_eq!(
            summary,
            vec![
                ("other", "1", Some(m2s.as_str()), c2s.as_str()),
                ("debian", "bookworm", Some(ids.as_str()), c1s.as_str()),
                ("debian", "latest", Some(ids.as_str()), c1s.as_str()),
                (
                    "127.0.0.1:5000/bench/debian",
                    "<none>",
                    Some(m1s.as_str()),
                    c1s.as_str()
                ),
            ]
        );
        assert!(rows.iter().all(|r| r.size == size));

        let only = |f: &str| -> Vec<(String, String)> {
            list(&store, Some(f))
                .unwrap()
                .into_iter()
                .map(|r| (r.repository, r.tag))
                .collect()
        };
        assert_eq!(only("debian").len(), 2);
        assert_eq!(only("debian:latest"), vec![("debian".into(), "latest".into())]);
        assert_eq!(only("docker.io/library/debian:latest").len(), 1);
        assert_eq!(
            only("127.0.0.1:5000/bench/debian"),
            vec![("127.0.0.1:5000/bench/debian".into(), "<none>".into())]
        );
        assert_eq!(only("*/bench/*").len(), 1);
        assert!(only("nothing").is_empty());
        assert!(matches!(list(&store, Some("[")), Err(ImagesError::BadPattern)));

        // The filtered tag row keeps no digest: its repo digest does not match the pattern.
        let filtered = list(&store, Some("debian:bookworm")).unwrap();
        assert_eq!(filtered[0].digest, None);

        // A recorded size wins over walking the directory.
        write_layer_json(&store, &base.diff_id, &Digest::sha256_of(&base.blob), &[]);
        let meta_path = store.layer_dir(&base.diff_id).join("layer.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
        meta["size"] = 42.into();
        fs::write(&meta_path, meta.to_string()).unwrap();
        assert!(list(&store, None).unwrap().iter().all(|r| r.size == 42));
    }
}
