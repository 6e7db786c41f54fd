//! Finding a name in the store as the daemon's `GetImage` does, for `rpull save` and `rpull
//! rootfs`: a full image ID, a reference, else an unambiguous image ID prefix.

use super::ImagesError;
use crate::digest::Digest;
use crate::manifest::ImageManifest;
use crate::reference::Reference;
use crate::store::{RefEntry, Store};

/// A name found in the store.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The index entry (image manifest) it names.
    pub entry: RefEntry,
    /// The full tagged reference when the name was a tag (`docker.io/library/debian:bookworm`),
    /// else empty (a digest or an image ID).
    pub tag: String,
}

/// Whether `s` is lowercase hex, as image IDs are written.
pub(crate) fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The image ID (config digest) of an entry, read from its manifest alone; `None` when the
/// manifest is missing or unreadable.
pub(crate) fn image_id(store: &Store, entry: &RefEntry) -> Option<Digest> {
    let bytes = store.read_blob(&entry.digest).ok()?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).ok()?;
    Some(manifest.config.digest)
}

/// Finds `name` in the store as the daemon does: a full image ID (`sha256:…` or 64 hex), a
/// reference (normalized; `latest` when untagged; a digest matches an entry pulled by that
/// digest or a tag that resolved to it), else an unambiguous image ID prefix (3+ hex). The
/// failures are [`ImagesError::Reference`], [`ImagesError::NoSuchImage`] and
/// [`ImagesError::Ambiguous`] (or the index could not be read).
pub fn resolve(store: &Store, name: &str) -> Result<Resolved, ImagesError> {
    let index = store.read_index()?;
    let by_id = |hex: &str| -> Result<Option<Resolved>, ImagesError> {
        let mut found: Option<(Digest, &RefEntry)> = None;
        for entry in &index.manifests {
            let Some(id) = image_id(store, entry) else {
                continue;
            };
            if !id.hex().starts_with(hex) {
                continue;
            }
            match &found {
                Some((other, _)) if *other != id => return Err(ImagesError::Ambiguous(name.to_string())),
                Some(_) => {}
                None => found = Some((id, entry)),
            }
        }
        Ok(found.map(|(_, e)| Resolved {
            entry: e.clone(),
            tag: String::new(),
        }))
    };
    let full_hex = name.strip_prefix("sha256:").unwrap_or(name);
    if full_hex.len() == 64 && is_lower_hex(full_hex) {
        return by_id(full_hex)?.ok_or_else(|| ImagesError::NoSuchImage(format!("sha256:{full_hex}")));
    }
    let parsed = Reference::parse_normalized(name)?;
    let found = match parsed.digest() {
        Some(d) => {
            let by_digest = parsed.name_only().with_digest(d.clone()).to_string();
            let repo = parsed.name();
            index
                .manifests
                .iter()
                .find(|e| e.name() == Some(by_digest.as_str()))
                .or_else(|| {
                    index.manifests.iter().find(|e| {
                        let same_repo = e
                            .name()
                            .and_then(|n| Reference::parse_normalized(n).ok())
                            .is_some_and(|r| r.name() == repo);
                        same_repo && (e.digest == *d || e.resolved_digest() == Some(d.to_string().as_str()))
                    })
                })
                .map(|e| Resolved {
                    entry: e.clone(),
                    tag: String::new(),
                })
        }
        None => {
            let key = parsed.clone().with_default_tag().0.to_string();
            index
                .manifests
                .iter()
                .find(|e| e.name() == Some(key.as_str()))
                .map(|e| Resolved {
                    entry: e.clone(),
                    tag: key.clone(),
                })
        }
    };
    if let Some(found) = found {
        return Ok(found);
    }
    if full_hex.len() >= 3 && is_lower_hex(full_hex) {
        if let Some(found) = by_id(full_hex)? {
            return Ok(found);
        }
    }
    Err(ImagesError::NoSuchImage(
        parsed.with_default_tag().0.familiar_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn resolves_ids_references_and_prefixes() {
        let f = debian_store();
        let store = &f.store;
        let found = |name: &str| resolve(store, name).map(|r| (r.entry.name().map(str::to_string), r.tag));
        let bookworm = Some("docker.io/library/debian:bookworm".to_string());
        assert_eq!(
            found("debian:bookworm").unwrap(),
            (bookworm.clone(), "docker.io/library/debian:bookworm".to_string())
        );
        // An ID (full, bare, prefixed or a prefix) names the first entry of the image, untagged.
        for id in [
            f.c1.to_string(),
            f.c1.hex().to_string(),
            f.c1.hex()[..5].to_string(),
        ] {
            assert_eq!(found(&id).unwrap(), (bookworm.clone(), String::new()), "{id}");
        }
        // A digest: the entry pulled by it, else a tag of the repository that resolved to it.
        let by_digest = format!("127.0.0.1:5000/bench/debian@{}", f.m1);
        assert_eq!(
            found(&by_digest).unwrap(),
            (Some(by_digest.clone()), String::new())
        );
        assert_eq!(
            found(&format!("debian@{}", f.resolved)).unwrap(),
            (bookworm, String::new())
        );
        let text = |name: &str| resolve(store, name).unwrap_err().to_string();
        assert_eq!(text("debian:trixie"), "No such image: debian:trixie");
        assert_eq!(text("nope"), "No such image: nope:latest");
        assert_eq!(
            text(&"e".repeat(64)),
            format!("No such image: sha256:{}", "e".repeat(64))
        );
        assert!(matches!(
            resolve(store, "Bad:Name"),
            Err(ImagesError::Reference(_))
        ));
    }
}
