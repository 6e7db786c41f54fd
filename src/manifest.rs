//! Manifests, indexes and image configs: the serde types for Docker schema2 and OCI, their
//! media types, and the checks docker applies when it reads them.
//!
//! Bytes are always hashed as received; these types are only read from them, never
//! re-serialised for hashing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

/// Media types rpull knows by name.
pub mod media_type {
    /// Docker schema2 image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker schema1 (refused).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker schema1, signed (refused).
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker plugin config (refused, as docker does).
    pub const DOCKER_PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";

    /// The `Accept` values sent for manifests, one header line each as docker does.
    pub const MANIFEST_ACCEPT: [&str; 4] = [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX];
}

/// Largest manifest rpull reads (containerd's limit is about 4 MB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest image config rpull reads.
pub const MAX_CONFIG_BYTES: usize = 2 * MAX_MANIFEST_BYTES;

/// Why a manifest or config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Schema1 images are not supported any more; docker's text.
    #[error(
        "Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed. \
         Suggest the author of {0} to upgrade the image to the OCI Format or Docker Image manifest v2, \
         schema 2. More information at https://docs.docker.com/go/deprecated-image-specs/"
    )]
    Schema1(String),
    /// Neither a manifest nor an index.
    #[error("unsupported manifest format: {0}")]
    Unsupported(String),
    /// The JSON did not parse.
    #[error("invalid manifest: {0}")]
    Invalid(#[from] serde_json::Error),
    /// The manifest is too large to be credible.
    #[error("manifest too large: {0} bytes")]
    TooLarge(usize),
    /// The image config could not be read.
    #[error("error pulling image configuration: {0}")]
    Config(String),
    /// The config's layer list does not fit the manifest's.
    #[error("layers from manifest don't match image configuration")]
    RootfsMismatch,
    /// The config's rootfs is not of type `layers`.
    #[error("invalid rootfs in image configuration")]
    InvalidRootfs,
}

/// A content descriptor (OCI `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Alternate download locations (foreign layers); ignored on Linux, as docker does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The platform object of an index entry or config, as written in JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlatformSpec {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Required OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// The normalized platform.
    pub fn to_platform(&self) -> Platform {
        let mut p = Platform::normalize(&self.os, &self.architecture, self.variant.as_deref());
        p.os_version = self.os_version.clone();
        p.os_features = self.os_features.clone();
        p
    }
}

/// A single-platform image manifest (Docker schema2 or OCI).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    #[serde(default)]
    pub schema_version: u32,
    /// The media type, when the document states it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A multi-platform index (OCI index or Docker manifest list).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The media type, when the document states it.
    pub media_type: Option<String>,
    /// The entries.
    pub manifests: Vec<Descriptor>,
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A single image.
    Image(Box<ImageManifest>),
    /// An index of images.
    Index(Index),
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    fs_layers: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses `bytes` served with `content_type` for `reference` (used in the schema1 text).
    pub fn parse(content_type: &str, bytes: &[u8], reference: &str) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let probe: Probe = serde_json::from_slice(bytes)?;
        if ct == media_type::DOCKER_SCHEMA1
            || ct == media_type::DOCKER_SCHEMA1_SIGNED
            || probe.schema_version == Some(1)
            || probe.fs_layers.is_some()
        {
            return Err(ManifestError::Schema1(reference.to_string()));
        }
        let known = |t: &str| media_type::MANIFEST_ACCEPT.contains(&t);
        let kind = if known(ct) {
            ct.to_string()
        } else if let Some(mt) = probe.media_type.as_deref().filter(|t| known(t)) {
            mt.to_string()
        } else if probe.manifests.is_some() {
            media_type::OCI_INDEX.to_string()
        } else if probe.layers.is_some() {
            media_type::OCI_MANIFEST.to_string()
        } else {
            return Err(ManifestError::Unsupported(if ct.is_empty() {
                "(none)".into()
            } else {
                ct.into()
            }));
        };
        if let Some(mt) = probe.media_type.as_deref() {
            if !mt.is_empty() && known(mt) && mt != kind {
                return Err(ManifestError::Unsupported(format!(
                    "media type {mt} in the document does not match Content-Type {kind}"
                )));
            }
        }
        Ok(match kind.as_str() {
            media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => {
                if probe.layers.is_some() {
                    return Err(ManifestError::Unsupported(format!(
                        "media-type: \"{kind}\" should not have \"layers\""
                    )));
                }
                Manifest::Index(serde_json::from_slice(bytes)?)
            }
            _ => {
                if probe.manifests.is_some() {
                    return Err(ManifestError::Unsupported(format!(
                        "media-type: \"{kind}\" should not have \"manifests\""
                    )));
                }
                Manifest::Image(Box::new(serde_json::from_slice(bytes)?))
            }
        })
    }
}

impl Index {
    /// Picks the entry for `platform` the way docker's `filterManifests` does: matching
    /// entries sorted by preference, then entries without a platform; attestations,
    /// artifacts and unknown media types are skipped.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        let matcher = platform.matcher();
        let mut candidates: Vec<(usize, usize, &Descriptor)> = Vec::new();
        for (pos, d) in self.manifests.iter().enumerate() {
            if !media_type::MANIFEST_ACCEPT.contains(&d.media_type.as_str()) {
                continue;
            }
            if d.annotations.get("vnd.docker.reference.type").map(String::as_str)
                == Some("attestation-manifest")
                || d.artifact_type.is_some()
            {
                continue;
            }
            match &d.platform {
                Some(p) => {
                    if let Some(rank) = matcher.rank(&p.to_platform()) {
                        candidates.push((rank, pos, d));
                    }
                }
                None => candidates.push((usize::MAX, pos, d)),
            }
        }
        candidates.sort_by_key(|(rank, pos, _)| (*rank, *pos));
        candidates.first().map(|(_, _, d)| *d)
    }
}

/// The parts of an image config rpull reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    pub variant: Option<String>,
    /// Creation time (RFC 3339).
    pub created: Option<String>,
    /// Layer identities.
    pub rootfs: Option<RootFs>,
}

/// The config's `rootfs` object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// DiffIDs of the uncompressed layers, base first.
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses a config and checks that it describes `layer_count` layers.
    pub fn parse(bytes: &[u8], layer_count: usize) -> Result<ImageConfig, ManifestError> {
        let config: ImageConfig =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Config(e.to_string()))?;
        let rootfs = config.rootfs.as_ref().ok_or(ManifestError::InvalidRootfs)?;
        if rootfs.kind != "layers" {
            return Err(ManifestError::InvalidRootfs);
        }
        if rootfs.diff_ids.len() != layer_count {
            return Err(ManifestError::RootfsMismatch);
        }
        Ok(config)
    }

    /// The DiffIDs, base first.
    pub fn diff_ids(&self) -> &[Digest] {
        self.rootfs.as_ref().map(|r| r.diff_ids.as_slice()).unwrap_or(&[])
    }

    /// The config's platform, normalized.
    pub fn platform(&self) -> Platform {
        Platform::normalize(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// Whether a config media type is one docker accepts.
pub fn check_config_media_type(mt: &str) -> Result<(), ManifestError> {
    match mt {
        media_type::DOCKER_CONFIG
        | media_type::OCI_CONFIG
        | "application/octet-stream"
        | "application/json"
        | "text/html"
        | "" => Ok(()),
        media_type::DOCKER_PLUGIN_CONFIG => Err(ManifestError::Unsupported(format!(
            "Encountered remote \"{mt}\"(plugin) when fetching"
        ))),
        other => Err(ManifestError::Unsupported(format!(
            "unsupported media type {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn parses_image_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":2}}]}}"#,
            media_type::OCI_MANIFEST,
            media_type::OCI_CONFIG,
            d(1),
            d(2)
        );
        match Manifest::parse(media_type::OCI_MANIFEST, m.as_bytes(), "x").unwrap() {
            Manifest::Image(i) => assert_eq!(i.layers.len(), 1),
            _ => panic!("expected image"),
        }
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},
                "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            d(3),
            d(4),
            d(5),
            m = media_type::OCI_MANIFEST
        );
        let Manifest::Index(index) = Manifest::parse(media_type::OCI_INDEX, idx.as_bytes(), "x").unwrap()
        else {
            panic!("expected index")
        };
        let amd = index.select(&Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(amd.digest.to_string(), d(4));
        let arm = index.select(&Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.digest.to_string(), d(3));
        assert!(index.select(&Platform::parse("linux/s390x").unwrap()).is_none());
    }

    #[test]
    fn refuses_schema1() {
        let e = Manifest::parse(
            media_type::DOCKER_SCHEMA1_SIGNED,
            br#"{"schemaVersion":1,"fsLayers":[]}"#,
            "a:b",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("Docker Image Format v1"));
        assert!(e.to_string().contains("Suggest the author of a:b to upgrade"));
    }

    #[test]
    fn config_checks_rootfs() {
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d(1)
        );
        assert!(ImageConfig::parse(c.as_bytes(), 1).is_ok());
        assert!(matches!(
            ImageConfig::parse(c.as_bytes(), 2),
            Err(ManifestError::RootfsMismatch)
        ));
        let bad = r#"{"rootfs":{"type":"other","diff_ids":[]}}"#;
        assert!(matches!(
            ImageConfig::parse(bad.as_bytes(), 0),
            Err(ManifestError::InvalidRootfs)
        ));
    }
}
