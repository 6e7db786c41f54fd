//! One image of the store in full, looked up the way a container runtime looks images up
//! (containerd's CRI `LocalResolve`): by reference (`debian`, `debian:bookworm`,
//! `docker.io/library/debian@sha256:…`), else by image ID, full (`sha256:<64 hex>`, or the bare
//! 64 hex) or an unambiguous prefix of at least 3 hex characters (`sha256:` optional).
//!
//! The answer carries what `docker image inspect` and the CRI `Image` message need: the ID,
//! every tag and repo digest naming the image (normalized: `docker.io/library/debian:bookworm`,
//! `docker.io/library/debian@sha256:…` of the manifest or index the tag resolved through), the
//! size as `rpull images` shows it, the config JSON and its user.

use std::collections::BTreeSet;

use crate::digest::Digest;
use crate::images::{self, ImageRow, ImagesError};
use crate::reference::Reference;
use crate::store::{Store, StoreError};

/// Why an image could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image's manifest or config is unreadable.
    #[error(transparent)]
    Images(#[from] ImagesError),
    /// An ID prefix names more than one image.
    #[error("short ID {0} is ambiguous")]
    Ambiguous(String),
}

/// One image as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetails {
    /// The image ID: the config digest.
    pub id: Digest,
    /// Every tag reference, normalized (`docker.io/library/debian:bookworm`), sorted.
    pub repo_tags: Vec<String>,
    /// Every digest reference, normalized (`docker.io/library/debian@sha256:…`), sorted.
    pub repo_digests: Vec<String>,
    /// The size `rpull images` shows (unpacked layers, as docker counts them).
    pub size: u64,
    /// The image config as stored.
    pub config: Vec<u8>,
    /// The config's `User` (`1000`, `1000:1000`, `nobody`), empty when unset.
    pub user: String,
}

/// Looks `query` up (see the module docs); `None` when nothing matches.
pub fn inspect(store: &Store, query: &str) -> Result<Option<ImageDetails>, InspectError> {
    let Some(id) = resolve_id(store, query)? else {
        return Ok(None);
    };
    details(store, &id)
}

/// The image ID `query` names, if any.
fn resolve_id(store: &Store, query: &str) -> Result<Option<Digest>, InspectError> {
    let query = query.trim();
    if query.is_empty() {
        return Ok(None);
    }
    let index = store.read_index()?;
    let id_of = |entry| crate::store::read_image(store, entry).map(|i| i.id().clone());
    // A full ID, with or without `sha256:`.
    let full = Digest::parse(query).ok().or_else(|| {
        Digest::parse(&format!("sha256:{query}"))
            .ok()
            .filter(|_| query.len() == 64)
    });
    if let Some(full) = &full {
        for entry in &index.manifests {
            if id_of(entry).ok().as_ref() == Some(full) {
                return Ok(Some(full.clone()));
            }
        }
    }
    // A reference.
    if full.is_none() {
        if let Ok(reference) = Reference::parse_normalized(query) {
            let (reference, _) = reference.with_default_tag();
            let wanted = reference.to_string();
            for entry in &index.manifests {
                let Some(name) = entry.name() else { continue };
                let matches = name == wanted
                    || reference.digest().is_some_and(|d| {
                        Reference::parse_normalized(name).is_ok_and(|r| r.name() == reference.name())
                            && (entry.resolved_digest() == Some(&d.to_string()) || &entry.digest == d)
                    });
                if matches {
                    return Ok(Some(id_of(entry)?));
                }
            }
        }
    }
    // An ID prefix.
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if hex.len() < 3 || hex.len() > 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(None);
    }
    let ids: BTreeSet<Digest> = index
        .manifests
        .iter()
        .filter_map(|e| id_of(e).ok())
        .filter(|id| id.hex().starts_with(hex))
        .collect();
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.into_iter().next()),
        _ => Err(InspectError::Ambiguous(query.to_string())),
    }
}

/// Every image in the store, newest first (the order of `rpull images`).
pub fn all(store: &Store) -> Result<Vec<ImageDetails>, InspectError> {
    let rows = images::list(store, None)?;
    let mut ids: Vec<&str> = Vec::new();
    for row in &rows {
        if !ids.contains(&row.image_id.as_str()) {
            ids.push(&row.image_id);
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let Ok(digest) = Digest::parse(id) else { continue };
        if let Some(d) = from_rows(store, &digest, rows.iter().filter(|r| r.image_id == id))? {
            out.push(d);
        }
    }
    Ok(out)
}

/// Everything about the image `id`, or `None` when no reference names it.
fn details(store: &Store, id: &Digest) -> Result<Option<ImageDetails>, InspectError> {
    let id_text = id.to_string();
    let rows = images::list(store, None)?;
    from_rows(store, id, rows.iter().filter(|r| r.image_id == id_text))
}

/// The details of `id` from its rows of [`images::list`].
fn from_rows<'a>(
    store: &Store,
    id: &Digest,
    rows: impl Iterator<Item = &'a ImageRow>,
) -> Result<Option<ImageDetails>, InspectError> {
    let normalized = |s: String| {
        Reference::parse_normalized(&s)
            .map(|r| r.to_string())
            .unwrap_or(s)
    };
    let mut size = None;
    let mut tags = BTreeSet::new();
    let mut digests = BTreeSet::new();
    for row in rows {
        size = Some(row.size);
        if row.tag != "<none>" {
            tags.insert(normalized(format!("{}:{}", row.repository, row.tag)));
        }
        if let Some(d) = &row.digest {
            digests.insert(normalized(format!("{}@{d}", row.repository)));
        }
    }
    let Some(size) = size else {
        return Ok(None);
    };
    let config = store.read_blob(id)?;
    let user = serde_json::from_slice::<serde_json::Value>(&config)
        .ok()
        .and_then(|v| {
            v.pointer("/config/User")
                .and_then(|u| u.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    Ok(Some(ImageDetails {
        id: id.clone(),
        repo_tags: tags.into_iter().collect(),
        repo_digests: digests.into_iter().collect(),
        size,
        config,
        user,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::testutil::{add_image, entry, put, temp_store, Layer};

    #[test]
    fn finds_by_reference_id_and_prefix() {
        let (_dir, store) = temp_store();
        let layer = Layer::new(&store, "a", |root| put(root, &[("f", "hello")]));
        let (manifest, size, id) = add_image(&store, &[&layer], "2024-01-01T00:00:00Z", "one");
        let resolved = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        store
            .set_ref(entry(
                "docker.io/library/debian:bookworm",
                &manifest,
                size,
                Some(&resolved),
            ))
            .unwrap();
        store
            .set_ref(entry("example.com/other/debian:v1", &manifest, size, None))
            .unwrap();

        let want = |d: Option<ImageDetails>| {
            let d = d.expect("found");
            assert_eq!(d.id, id);
            d
        };
        let d = want(inspect(&store, "debian:bookworm").unwrap());
        assert_eq!(
            d.repo_tags,
            ["docker.io/library/debian:bookworm", "example.com/other/debian:v1"]
        );
        assert_eq!(
            d.repo_digests,
            [
                format!("docker.io/library/debian@{resolved}"),
                format!("example.com/other/debian@{manifest}"),
            ]
        );
        assert!(d.size > 0);
        assert_eq!(d.config, store.read_blob(&id).unwrap());
        want(inspect(&store, &id.to_string()).unwrap());
        want(inspect(&store, id.hex()).unwrap());
        want(inspect(&store, &id.hex()[..12]).unwrap());
        want(inspect(&store, &format!("sha256:{}", &id.hex()[..5])).unwrap());
        want(inspect(&store, &format!("debian@{resolved}")).unwrap());
        want(inspect(&store, "example.com/other/debian:v1").unwrap());

        assert_eq!(all(&store).unwrap(), std::slice::from_ref(&d));
        assert_eq!(inspect(&store, "debian").unwrap(), None, "no latest tag");
        assert_eq!(inspect(&store, "debian:trixie").unwrap(), None);
        assert_eq!(inspect(&store, "").unwrap(), None);
        assert_eq!(
            inspect(&store, &format!("sha256:{}", "cd".repeat(32))).unwrap(),
            None
        );
    }

    #[test]
    fn an_ambiguous_prefix_is_an_error() {
        let (_dir, store) = temp_store();
        let layer = Layer::new(&store, "a", |root| std::fs::write(root.join("f"), b"x").unwrap());
        // Add images until two IDs share their first 3 hex digits (deterministic salts; the
        // birthday bound over 4096 prefixes makes this take about 80 images).
        let mut seen: std::collections::HashMap<String, Digest> = std::collections::HashMap::new();
        let prefix = (0..2000)
            .find_map(|salt| {
                let (manifest, size, id) =
                    add_image(&store, &[&layer], "2024-01-01T00:00:00Z", &salt.to_string());
                store
                    .set_ref(entry(
                        &format!("docker.io/library/i{salt}:latest"),
                        &manifest,
                        size,
                        None,
                    ))
                    .unwrap();
                let p = id.hex()[..3].to_string();
                seen.insert(p.clone(), id).map(|_| p)
            })
            .expect("a shared prefix");
        assert!(matches!(
            inspect(&store, &prefix),
            Err(InspectError::Ambiguous(_))
        ));
        // Fewer than 3 characters is never an ID prefix.
        assert_eq!(inspect(&store, &prefix[..2]).unwrap(), None);
        // The full ID names one of them alone.
        let one = &seen[&prefix];
        assert_eq!(
            inspect(&store, one.hex()).unwrap().map(|d| d.id),
            Some(one.clone())
        );
    }
}
