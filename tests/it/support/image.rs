//! Image configs, manifests and indexes, in OCI and Docker schema2 form.
//!
//! Everything is built as a `serde_json::Value` first, so a test can tamper with the document
//! (drop a field, break a digest) before serialising and pushing it. Bytes come from
//! [`to_bytes`], which is deterministic; digests are always computed over the exact bytes pushed.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

use super::layer::{Compression, Layer, LayerBuilder};
use super::sha256_digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The layer type of BuildKit attestation manifests.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// Every manifest type the harness pushes, for `Accept` headers.
pub const ALL_MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

/// The `created` time written into configs and history.
pub const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// Serialises a document to the bytes that get pushed (pretty-printed, like most registries
/// serve; deterministic since `serde_json`'s map is ordered).
pub fn to_bytes(doc: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(doc).expect("serialising JSON")
}

/// Which family of media types a manifest or index uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `application/vnd.oci.image.*`.
    Oci,
    /// Docker schema2: `application/vnd.docker.distribution.manifest.*`.
    Docker,
}

impl ManifestFormat {
    /// The image manifest media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_MANIFEST,
            ManifestFormat::Docker => DOCKER_MANIFEST,
        }
    }

    /// The index / manifest list media type.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_INDEX,
            ManifestFormat::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    /// The image config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_CONFIG,
            ManifestFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// The media type `layer` gets in a manifest of this format: the three standard OCI layer
    /// types become their Docker equivalents in schema2; anything else is kept.
    pub fn layer_media_type(self, layer: &Layer) -> String {
        if self == ManifestFormat::Docker {
            for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
                if layer.media_type == c.oci_media_type() {
                    return c.docker_media_type().to_string();
                }
            }
        }
        layer.media_type.clone()
    }
}

/// A platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v7`.
    pub variant: Option<String>,
    /// `os.version`, for Windows images.
    pub os_version: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`; panics on anything else.
    pub fn parse(s: &str) -> Platform {
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
                os_version: None,
            },
            _ => panic!("bad platform {s:?}: expected os/arch[/variant]"),
        }
    }

    /// `linux/amd64`.
    pub fn linux_amd64() -> Platform {
        Platform::parse("linux/amd64")
    }

    /// The platform of the machine running the tests, as docker names it (`linux/amd64`,
    /// `linux/arm64`, …), i.e. what rpull picks by default.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::parse(&format!("linux/{arch}"))
    }

    /// BuildKit's placeholder platform for attestation manifests: `unknown/unknown`.
    pub fn unknown() -> Platform {
        Platform::parse("unknown/unknown")
    }

    /// The `platform` object of an index entry.
    pub fn to_json(&self) -> Value {
        let mut p = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            p["variant"] = json!(variant);
        }
        if let Some(os_version) = &self.os_version {
            p["os.version"] = json!(os_version);
        }
        p
    }
}

impl From<&str> for Platform {
    fn from(s: &str) -> Platform {
        Platform::parse(s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// An image: layers, a platform, and the runtime part of its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The platform written into the config (and into index entries).
    pub platform: Platform,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The config's `config` object (`Env`, `Cmd`, `Labels`, …); `{}` by default.
    pub config: Value,
    /// When set, pushed as the config blob instead of [`Image::config_json`] (for malformed or
    /// mismatching configs).
    pub raw_config: Option<Vec<u8>>,
}

impl Image {
    /// An image for `platform` (`"linux/arm/v7"` or a [`Platform`]) with these layers.
    pub fn new(platform: impl Into<Platform>, layers: Vec<Layer>) -> Image {
        Image {
            platform: platform.into(),
            layers,
            config: json!({}),
            raw_config: None,
        }
    }

    /// One single-layer image for each of `platforms`: a `platform` file naming it and a file
    /// `x` of `random_bytes` pseudo-random bytes (seed `seed + i`), so no two share a digest.
    pub fn per_platform(platforms: &[&str], random_bytes: usize, seed: u64) -> Vec<Image> {
        platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let layer = LayerBuilder::new()
                    .file("platform", p.as_bytes(), 0o644)
                    .random_file("x", random_bytes, seed + i as u64)
                    .build(Compression::Gzip);
                Image::new(Platform::parse(p), vec![layer])
            })
            .collect()
    }

    /// Sets the config's `config` object.
    pub fn with_config(mut self, config: Value) -> Image {
        self.config = config;
        self
    }

    /// The image config document: platform, `created`, `config`, `rootfs.diff_ids`, `history`.
    pub fn config_json(&self) -> Value {
        let mut doc = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "created": FIXED_CREATED,
            "config": self.config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
            },
            "history": (0..self.layers.len())
                .map(|i| json!({ "created": FIXED_CREATED, "created_by": format!("rpull-test layer {i}") }))
                .collect::<Vec<_>>(),
        });
        if let Some(variant) = &self.platform.variant {
            doc["variant"] = json!(variant);
        }
        if let Some(os_version) = &self.platform.os_version {
            doc["os.version"] = json!(os_version);
        }
        doc
    }

    /// The config blob as pushed.
    pub fn config_bytes(&self) -> Vec<u8> {
        self.raw_config
            .clone()
            .unwrap_or_else(|| to_bytes(&self.config_json()))
    }

    /// The config blob's digest.
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config_bytes())
    }

    /// The image manifest document in `format`.
    pub fn manifest(&self, format: ManifestFormat) -> Value {
        let config = self.config_bytes();
        json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_media_type(),
            "config": {
                "mediaType": format.config_media_type(),
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": format.layer_media_type(l),
                "digest": l.digest,
                "size": l.size(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The manifest bytes as pushed.
    pub fn manifest_bytes(&self, format: ManifestFormat) -> Vec<u8> {
        to_bytes(&self.manifest(format))
    }

    /// The manifest digest, as a registry reports it.
    pub fn manifest_digest(&self, format: ManifestFormat) -> String {
        sha256_digest(&self.manifest_bytes(format))
    }
}

/// One entry of an index or manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The referenced manifest's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its platform, if the entry has one.
    pub platform: Option<Platform>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    /// The entry as it appears in the `manifests` array.
    pub fn to_json(&self) -> Value {
        let mut e = json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size });
        if let Some(platform) = &self.platform {
            e["platform"] = platform.to_json();
        }
        if !self.annotations.is_empty() {
            e["annotations"] = json!(self.annotations);
        }
        e
    }

    /// Is this a BuildKit attestation entry?
    pub fn is_attestation(&self) -> bool {
        self.annotations
            .get("vnd.docker.reference.type")
            .map(String::as_str)
            == Some("attestation-manifest")
    }
}

/// An index (OCI) or manifest list (Docker) document over `entries`.
pub fn index_json(format: ManifestFormat, entries: &[IndexEntry]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": format.index_media_type(),
        "manifests": entries.iter().map(IndexEntry::to_json).collect::<Vec<_>>(),
    })
}

/// The parts of a BuildKit attestation manifest for `subject_digest`: the in-toto statement
/// (its only layer), its config, and the manifest itself. BuildKit always writes these in OCI
/// form.
pub struct Attestation {
    /// The in-toto statement blob (media type [`IN_TOTO`]).
    pub statement: Vec<u8>,
    /// The config blob.
    pub config: Vec<u8>,
    /// The OCI manifest bytes.
    pub manifest: Vec<u8>,
}

impl Attestation {
    /// Builds the attestation documents for the image manifest `subject_digest`.
    pub fn for_subject(subject_digest: &str) -> Attestation {
        let statement = to_bytes(&json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{ "name": "pkg:docker/rpull-test", "digest": { "sha256": subject_digest.trim_start_matches("sha256:") } }],
            "predicate": { "builder": { "id": "rpull-test-harness" } },
        }));
        let config = to_bytes(&json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [sha256_digest(&statement)] },
        }));
        let manifest = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len() },
            "layers": [{
                "mediaType": IN_TOTO,
                "digest": sha256_digest(&statement),
                "size": statement.len(),
                "annotations": { "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2" },
            }],
        }));
        Attestation {
            statement,
            config,
            manifest,
        }
    }

    /// The index entry BuildKit writes for this attestation: platform `unknown/unknown` and the
    /// `vnd.docker.reference.*` annotations pointing at the subject.
    pub fn index_entry(&self, subject_digest: &str) -> IndexEntry {
        IndexEntry {
            media_type: OCI_MANIFEST.to_string(),
            digest: sha256_digest(&self.manifest),
            size: self.manifest.len() as u64,
            platform: Some(Platform::unknown()),
            annotations: BTreeMap::from([
                (
                    "vnd.docker.reference.digest".to_string(),
                    subject_digest.to_string(),
                ),
                (
                    "vnd.docker.reference.type".to_string(),
                    "attestation-manifest".to_string(),
                ),
            ]),
        }
    }
}
