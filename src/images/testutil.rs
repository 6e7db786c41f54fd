//! Builders for hand-made stores, shared by the tests of the store commands.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ImageRow;

use crate::digest::Digest;
use crate::manifest::media_type;
use crate::store::{RefEntry, Store, CONTAINERD_NAME, REF_NAME, RESOLVED_DIGEST};

pub(crate) use crate::store::temp_store;
pub(crate) use crate::testfs::put;

/// One layer to put in the store: a compressed blob and an unpacked directory.
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: Digest,
}

impl Layer {
    /// A layer whose blob and DiffID derive from `seed`; `fill` populates `rootfs/`.
    pub fn new(store: &Store, seed: &str, fill: impl FnOnce(&Path)) -> Layer {
        let blob = format!("compressed layer {seed}").into_bytes();
        let diff_id = Digest::sha256_of(format!("diff {seed}").as_bytes());
        store.write_blob(&Digest::sha256_of(&blob), &blob).unwrap();
        let dir = store.layer_dir(&diff_id);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        fill(&dir.join("rootfs"));
        write_layer_json(store, &diff_id, &Digest::sha256_of(&blob), &[]);
        Layer { blob, diff_id }
    }
}

/// (Re)writes a layer's `layer.json`.
pub fn write_layer_json(store: &Store, diff_id: &Digest, blob: &Digest, external: &[(&str, &str)]) {
    let meta = serde_json::json!({
        "diffID": diff_id.to_string(),
        "blob": blob.to_string(),
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "externalHardlinks": external.iter().map(|(l, t)| serde_json::json!([l, t])).collect::<Vec<_>>(),
    });
    std::fs::write(
        store.layer_dir(diff_id).join("layer.json"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
}

/// Writes config and manifest blobs for `layers`; returns (manifest digest, size, config digest).
pub fn add_image(store: &Store, layers: &[&Layer], created: &str, salt: &str) -> (Digest, u64, Digest) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": [format!("SALT={salt}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = Digest::sha256_of(&config_bytes);
    store.write_blob(&config_digest, &config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {
            "mediaType": media_type::OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": Digest::sha256_of(&l.blob).to_string(),
            "size": l.blob.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = Digest::sha256_of(&manifest_bytes);
    store.write_blob(&manifest_digest, &manifest_bytes).unwrap();
    (manifest_digest, manifest_bytes.len() as u64, config_digest)
}

/// An index entry for `name` (full reference) pointing at a manifest.
pub fn entry(name: &str, manifest: &Digest, size: u64, resolved: Option<&Digest>) -> RefEntry {
    let mut annotations = BTreeMap::new();
    annotations.insert(REF_NAME.to_string(), name.to_string());
    annotations.insert(CONTAINERD_NAME.to_string(), name.to_string());
    annotations.insert(
        RESOLVED_DIGEST.to_string(),
        resolved.unwrap_or(manifest).to_string(),
    );
    RefEntry {
        media_type: media_type::OCI_MANIFEST.to_string(),
        digest: manifest.clone(),
        size,
        platform: None,
        annotations,
    }
}

/// Names two images as docker would after these pulls: `debian:bookworm` and `debian:latest`
/// (`image`, resolved through the index `resolved`), `image` by digest from another registry
/// (`127.0.0.1:5000/bench/debian@…`), and `other:1` (`other`). Each image is a (manifest
/// digest, size) pair from [`add_image`].
pub fn set_debian_refs(store: &Store, image: (&Digest, u64), resolved: &Digest, other: (&Digest, u64)) {
    let (m1, s1) = image;
    for tag in ["bookworm", "latest"] {
        let name = format!("docker.io/library/debian:{tag}");
        store.set_ref(entry(&name, m1, s1, Some(resolved))).unwrap();
    }
    let by_digest = format!("127.0.0.1:5000/bench/debian@{m1}");
    store.set_ref(entry(&by_digest, m1, s1, None)).unwrap();
    let (m2, s2) = other;
    store
        .set_ref(entry("docker.io/library/other:1", m2, s2, None))
        .unwrap();
}

/// A store named as [`set_debian_refs`] says, with the resolved index blob present.
pub struct DebianStore {
    pub _tmp: tempfile::TempDir,
    pub store: Store,
    /// The debian image's manifest and ID.
    pub m1: Digest,
    pub c1: Digest,
    /// `other:1`'s ID.
    pub c2: Digest,
    /// The index the debian tags resolved through.
    pub resolved: Digest,
}

/// [`set_debian_refs`] over two images sharing a layer: debian's (one layer, `f`) and
/// `other:1`'s (that layer and one of its own, `g`).
pub fn debian_store() -> DebianStore {
    let (tmp, store) = temp_store();
    let l1 = Layer::new(&store, "one", |r| std::fs::write(r.join("f"), b"one").unwrap());
    let l2 = Layer::new(&store, "two", |r| std::fs::write(r.join("g"), b"two").unwrap());
    let (m1, s1, c1) = add_image(&store, &[&l1], "2024-01-01T00:00:00Z", "a");
    let (m2, s2, c2) = add_image(&store, &[&l1, &l2], "2024-01-01T00:00:00Z", "b");
    let resolved = Digest::sha256_of(b"index blob");
    store.write_blob(&resolved, b"index blob").unwrap();
    set_debian_refs(&store, (&m1, s1), &resolved, (&m2, s2));
    DebianStore {
        _tmp: tmp,
        store,
        m1,
        c1,
        c2,
        resolved,
    }
}

/// A `SystemTime` from an RFC 3339 string.
pub fn at(s: &str) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(super::parse_rfc3339(s).unwrap() as u64)
}

/// A full image ID starting with `prefix`.
pub fn id(prefix: &str) -> String {
    format!("sha256:{prefix}{}", "0".repeat(64 - prefix.len()))
}

/// A row created at 2023-11-14T22:13:05Z.
pub fn row(repo: &str, tag: &str, id_prefix: &str, size: u64) -> ImageRow {
    ImageRow {
        repository: repo.into(),
        tag: tag.into(),
        digest: None,
        image_id: id(id_prefix),
        created: Some("2023-11-14T22:13:05.123456789Z".into()),
        size,
    }
}
