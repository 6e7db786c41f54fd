//! `rpull save`: writing images as a tar that other tools load.
//!
//! [`save_docker_archive`] writes what `docker save` writes since Docker 25: a `manifest.json`
//! for `docker load`, `podman load` and `skopeo … docker-archive:`, and beside it an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`) whose blobs the `manifest.json` entries
//! point at. The layers are the stored compressed blobs, unchanged (those loaders decompress
//! gzip and zstd layers themselves), so the OCI half keeps the image's original manifest and
//! digests. Where docker's `index.json` gives each tag `io.containerd.image.name` (the full
//! reference) and `org.opencontainers.image.ref.name` (the tag), so does this one.
//!
//! [`save_oci_archive`] writes a plain OCI image layout with the given entries as stored
//! (annotations included) and the blobs they need.
//!
//! Both stream: small JSON blobs come from memory, layers are copied from their files while
//! their digest is checked (SHA-256; other algorithms are copied unchecked). A blob that does
//! not match fails the save; the output is then incomplete and should be discarded. Every
//! entry has mode 0644 (directories 0755), owner 0:0 and mtime 0, so the same input gives
//! the same archive.
//!
//! The caller holds the store's shared guard while writing, so that `prune` cannot delete a
//! blob half-way ([`Engine::save`](crate::engine::Engine::save) does).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};

use serde::Serialize;

use crate::digest::{Algorithm, Digest, Sha256Hasher};
use crate::images::Resolved;
use crate::manifest::{media_type, Descriptor};
use crate::reference::{Reference, ReferenceError};
use crate::store::{read_image, RefEntry, Store, StoreError, StoredImage, CONTAINERD_NAME, REF_NAME};

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An image's manifest or config could not be read, or the store guard taken.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blob the image needs is not in the store.
    #[error("blob {digest} of {name} is missing from the store; pull the image again")]
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// The reference it belongs to.
        name: String,
    },
    /// A stored blob does not match its digest or size.
    #[error("blob {0} in the store does not match its digest; pull the image again")]
    Corrupt(Digest),
    /// A `RepoTags` name is not a tagged reference.
    #[error("invalid tag {0:?}: {1}")]
    InvalidTag(String, ReferenceError),
    /// Reading a blob or writing the archive failed.
    #[error("writing the archive: {0}")]
    Io(#[from] io::Error),
}

/// The kinds of archive `rpull save --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// [`save_docker_archive`]'s.
    Docker,
    /// [`save_oci_archive`]'s.
    Oci,
}

/// Writes the images found by name ([`crate::images::resolve`]) as a `format` archive to
/// `out`; a tag name is listed in a docker archive's `RepoTags`.
pub fn save(
    store: &Store,
    images: &[Resolved],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<(), ArchiveError> {
    match format {
        ArchiveFormat::Docker => {
            let entries: Vec<(RefEntry, String)> =
                images.iter().map(|r| (r.entry.clone(), r.tag.clone())).collect();
            save_docker_archive(store, &entries, out)
        }
        ArchiveFormat::Oci => {
            let entries: Vec<RefEntry> = images.iter().map(|r| r.entry.clone()).collect();
            save_oci_archive(store, &entries, out)
        }
    }
}

/// `oci-layout` as docker writes it.
const OCI_LAYOUT_DOCKER: &[u8] = br#"{"imageLayoutVersion": "1.0.0"}"#;
/// `oci-layout` as the store has it.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

/// Counts and hashes what passes through.
struct Verifying<R> {
    inner: R,
    hasher: Option<Sha256Hasher>,
    count: u64,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// A tar being written, with each blob written once.
struct Out<W: Write> {
    builder: tar::Builder<W>,
    written: HashSet<Digest>,
    dirs: HashSet<String>,
}

impl<W: Write> Out<W> {
    fn new(out: W) -> Self {
        Out {
            builder: tar::Builder::new(out),
            written: HashSet::new(),
            dirs: HashSet::new(),
        }
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        if self.dirs.insert(path.to_string()) {
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            self.builder.append_data(&mut h, path, io::empty())?;
        }
        Ok(())
    }

    fn blob_dirs(&mut self, d: &Digest) -> io::Result<()> {
        self.dir("blobs/")?;
        self.dir(&format!("blobs/{}/", d.algorithm().name()))
    }

    /// Writes `index.json`: an OCI image index of `manifests`.
    fn index<T: Serialize>(&mut self, manifests: Vec<T>) -> io::Result<()> {
        let index = ArchiveIndex {
            schema_version: 2,
            media_type: media_type::OCI_INDEX,
            manifests,
        };
        self.file("index.json", &serde_json::to_vec(&index).expect("json"))
    }

    fn file(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
        self.builder.append_data(&mut h, path, bytes)
    }

    /// A blob held in memory (already verified).
    fn small_blob(&mut self, d: &Digest, bytes: &[u8]) -> io::Result<()> {
        if self.written.insert(d.clone()) {
            self.blob_dirs(d)?;
            self.file(&blob_name(d), bytes)?;
        }
        Ok(())
    }

    /// A blob streamed from the store, checked against its descriptor.
    fn stored_blob(&mut self, store: &Store, desc: &Descriptor, name: &str) -> Result<(), ArchiveError> {
        let d = &desc.digest;
        if self.written.contains(d) {
            return Ok(());
        }
        let path = store.blob_path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::MissingBlob {
                    digest: d.clone(),
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if file.metadata()?.len() != desc.size {
            return Err(ArchiveError::Corrupt(d.clone()));
        }
        self.blob_dirs(d)?;
        let mut reader = Verifying {
            inner: file.take(desc.size),
            hasher: (d.algorithm() == Algorithm::Sha256).then(Sha256Hasher::new),
            count: 0,
        };
        let mut h = header(desc.size, 0o644, tar::EntryType::Regular);
        self.builder.append_data(&mut h, blob_name(d), &mut reader)?;
        if reader.count != desc.size || reader.hasher.take().is_some_and(|h| &h.finish() != d) {
            return Err(ArchiveError::Corrupt(d.clone()));
        }
        self.written.insert(d.clone());
        Ok(())
    }

    /// Manifest, config and layers of one image.
    fn image(&mut self, store: &Store, entry: &RefEntry, image: &StoredImage) -> Result<(), ArchiveError> {
        let name = entry.name().unwrap_or_default().to_string();
        for layer in &image.manifest.layers {
            self.stored_blob(store, layer, &name)?;
        }
        self.small_blob(image.id(), &image.config_bytes)?;
        self.small_blob(&entry.digest, &image.manifest_bytes)?;
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        let mut out = self.builder.into_inner()?;
        out.flush()
    }
}

/// One `manifest.json` item of a docker archive.
#[derive(Serialize)]
struct DockerManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `index.json` of an archive.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveIndex<T: Serialize> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<T>,
}

/// Writes a docker archive of `entries` to `out`. Each entry comes with the name to list in
/// `RepoTags` (`debian:bookworm`, normalized and shown in familiar form like docker), or an
/// empty string for none. Entries of the same image (config digest) share one `manifest.json`
/// item, as in docker's archives.
pub fn save_docker_archive(
    store: &Store,
    entries: &[(RefEntry, String)],
    out: impl Write,
) -> Result<(), ArchiveError> {
    // Per image: the first entry and image read, and the RepoTags.
    let mut images: Vec<(RefEntry, StoredImage, Vec<String>)> = Vec::new();
    let mut descriptors: Vec<Descriptor> = Vec::new();
    let mut extra: Vec<(RefEntry, StoredImage)> = Vec::new();
    for (entry, tag) in entries {
        let image = read_image(store, entry)?;
        let mut annotations = BTreeMap::new();
        let familiar = if tag.is_empty() {
            None
        } else {
            let r = Reference::parse_normalized(tag).map_err(|e| ArchiveError::InvalidTag(tag.clone(), e))?;
            if r.digest().is_some() {
                return Err(ArchiveError::InvalidTag(
                    tag.clone(),
                    ReferenceError::InvalidFormat,
                ));
            }
            let r = r.with_default_tag().0;
            annotations.insert(CONTAINERD_NAME.to_string(), r.to_string());
            annotations.insert(REF_NAME.to_string(), r.tag().unwrap_or("latest").to_string());
            Some(r.familiar_string())
        };
        let desc = Descriptor {
            media_type: entry.media_type.clone(),
            digest: entry.digest.clone(),
            size: entry.size,
            urls: Vec::new(),
            annotations,
            platform: entry.platform.clone(),
            artifact_type: None,
        };
        if !descriptors.contains(&desc) {
            descriptors.push(desc);
        }
        match images.iter_mut().find(|(_, i, _)| i.id() == image.id()) {
            Some((first, _, tags)) => {
                if let Some(f) = familiar.filter(|f| !tags.contains(f)) {
                    tags.push(f);
                }
                if first.digest != entry.digest {
                    extra.push((entry.clone(), image));
                }
            }
            None => images.push((entry.clone(), image, familiar.into_iter().collect())),
        }
    }
    // An unnamed descriptor adds nothing when the same manifest is also named.
    let named: HashSet<Digest> = descriptors
        .iter()
        .filter(|d| !d.annotations.is_empty())
        .map(|d| d.digest.clone())
        .collect();
    descriptors.retain(|d| !d.annotations.is_empty() || !named.contains(&d.digest));

    let mut tar = Out::new(out);
    let mut items = Vec::new();
    for (entry, image, tags) in &images {
        tar.image(store, entry, image)?;
        items.push(DockerManifestItem {
            config: blob_name(image.id()),
            repo_tags: (!tags.is_empty()).then(|| tags.clone()),
            layers: image
                .manifest
                .layers
                .iter()
                .map(|l| blob_name(&l.digest))
                .collect(),
        });
    }
    for (entry, image) in &extra {
        tar.image(store, entry, image)?;
    }
    tar.index(descriptors)?;
    let mut manifest_json = serde_json::to_vec(&items).expect("json");
    manifest_json.push(b'\n');
    tar.file("manifest.json", &manifest_json)?;
    tar.file("oci-layout", OCI_LAYOUT_DOCKER)?;
    tar.finish()?;
    Ok(())
}

/// Writes an OCI image layout holding `entries` (as stored, annotations included) and the
/// blobs they need to `out`.
pub fn save_oci_archive(store: &Store, entries: &[RefEntry], out: impl Write) -> Result<(), ArchiveError> {
    let mut unique: Vec<&RefEntry> = Vec::new();
    for e in entries {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    let images = unique
        .iter()
        .map(|e| read_image(store, e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tar = Out::new(out);
    for (entry, image) in unique.iter().zip(&images) {
        tar.image(store, entry, image)?;
    }
    tar.index(unique)?;
    tar.file("oci-layout", OCI_LAYOUT)?;
    tar.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;

    use super::*;
    use crate::images::testutil::*;

    /// Path → content of every regular file; also checks that no path repeats.
    fn read_tar(bytes: &[u8]) -> (Vec<String>, HashMap<String, Vec<u8>>) {
        let mut archive = tar::Archive::new(bytes);
        let mut order = Vec::new();
        let mut files = HashMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            assert!(!order.contains(&path), "{path} repeated");
            order.push(path.clone());
            assert_eq!(e.header().mtime().unwrap(), 0);
            if e.header().entry_type() == tar::EntryType::Regular {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                files.insert(path, v);
            }
        }
        (order, files)
    }

    fn check_blobs(files: &HashMap<String, Vec<u8>>) {
        for (path, content) in files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(Digest::sha256_of(content).hex(), hex, "{path}");
            }
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        store: Store,
        bookworm: RefEntry,
        latest: RefEntry,
        by_digest: RefEntry,
        other: RefEntry,
        shared_blob: Digest,
    }

    fn fixture() -> Fixture {
        let (tmp, store) = temp_store();
        let shared = Layer::new(&store, "shared", |_| {});
        let own = Layer::new(&store, "own", |_| {});
        let (m1, s1, _) = add_image(&store, &[&shared], "2024-01-01T00:00:00Z", "a");
        let (m2, s2, _) = add_image(&store, &[&shared, &own], "2024-01-01T00:00:00Z", "b");
        Fixture {
            _tmp: tmp,
            bookworm: entry("docker.io/library/debian:bookworm", &m1, s1, None),
            latest: entry("docker.io/library/debian:latest", &m1, s1, None),
            by_digest: entry(&format!("127.0.0.1:5000/bench/debian@{m1}"), &m1, s1, None),
            other: entry("127.0.0.1:5000/x/other:v1", &m2, s2, None),
            shared_blob: Digest::sha256_of(&shared.blob),
            store,
        }
    }

    #[test]
    fn docker_archive_has_manifest_json_and_oci_layout() {
        let f = fixture();
        let mut out = Vec::new();
        let entries = vec![
            (f.bookworm.clone(), "debian:bookworm".to_string()),
            (f.latest.clone(), "debian:latest".to_string()),
            (f.by_digest.clone(), String::new()),
            (f.other.clone(), "127.0.0.1:5000/x/other:v1".to_string()),
        ];
        save_docker_archive(&f.store, &entries, &mut out).unwrap();
        let (order, files) = read_tar(&out);
        assert_eq!(&order[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(
            &order[order.len() - 3..],
            ["index.json", "manifest.json", "oci-layout"]
        );
        check_blobs(&files);
        // 2 manifests, 2 configs, 2 layers (the shared one once).
        assert_eq!(files.keys().filter(|p| p.starts_with("blobs/")).count(), 6);
        assert_eq!(files["oci-layout"], OCI_LAYOUT_DOCKER);

        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let items = manifest.as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0]["RepoTags"],
            serde_json::json!(["debian:bookworm", "debian:latest"])
        );
        assert_eq!(
            items[1]["RepoTags"],
            serde_json::json!(["127.0.0.1:5000/x/other:v1"])
        );
        assert_eq!(items[0]["Layers"], serde_json::json!([blob_name(&f.shared_blob)]));
        for item in items {
            assert!(files.contains_key(item["Config"].as_str().unwrap()));
            for l in item["Layers"].as_array().unwrap() {
                assert!(files.contains_key(l.as_str().unwrap()));
            }
        }
        assert!(files["manifest.json"].ends_with(b"]\n"));

        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let descs = index["manifests"].as_array().unwrap();
        assert_eq!(descs.len(), 3, "{index}");
        assert_eq!(
            descs[0]["annotations"][CONTAINERD_NAME],
            "docker.io/library/debian:bookworm"
        );
        assert_eq!(descs[0]["annotations"][REF_NAME], "bookworm");
        assert_eq!(descs[0]["digest"], f.bookworm.digest.to_string());
        assert_eq!(descs[1]["annotations"][REF_NAME], "latest");
        assert!(files.contains_key(&blob_name(&f.bookworm.digest)));

        // Only a digest reference: no RepoTags.
        let mut out = Vec::new();
        save_docker_archive(&f.store, &[(f.by_digest.clone(), String::new())], &mut out).unwrap();
        let (_, files) = read_tar(&out);
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::Value::Null);

        let bad = save_docker_archive(&f.store, &[(f.bookworm.clone(), "Bad:Tag".into())], Vec::new());
        assert!(matches!(bad, Err(ArchiveError::InvalidTag(..))));
    }

    #[test]
    fn oci_archive_keeps_entries_as_stored() {
        let f = fixture();
        let mut out = Vec::new();
        let entries = vec![f.bookworm.clone(), f.other.clone(), f.bookworm.clone()];
        save_oci_archive(&f.store, &entries, &mut out).unwrap();
        let (_, files) = read_tar(&out);
        check_blobs(&files);
        assert!(!files.contains_key("manifest.json"));
        assert_eq!(files["oci-layout"], OCI_LAYOUT);
        let index: crate::store::LayoutIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.manifests, vec![f.bookworm.clone(), f.other.clone()]);
        assert_eq!(files.keys().filter(|p| p.starts_with("blobs/")).count(), 6);
    }

    #[test]
    fn damaged_or_missing_blobs_fail() {
        let f = fixture();
        let path = f.store.blob_path(&f.shared_blob);
        let len = fs::metadata(&path).unwrap().len() as usize;
        fs::write(&path, vec![b'x'; len]).unwrap();
        let err = save_oci_archive(&f.store, std::slice::from_ref(&f.bookworm), Vec::new()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Corrupt(ref d) if d == &f.shared_blob),
            "{err}"
        );
        fs::remove_file(&path).unwrap();
        let err = save_oci_archive(&f.store, std::slice::from_ref(&f.bookworm), Vec::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::MissingBlob { .. }), "{err}");
    }
}
