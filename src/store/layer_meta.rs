//! An unpacked layer's `layer.json`: what the pull recorded when it published the layer, and
//! the marker that makes the layer visible (see [`super::Store::has_layer`]). The one reader
//! and writer of the file: the collection, `rpull check`, `images`, `rootfs` and the pull's
//! hardlink check all read it through [`LayerMeta::read`].

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The file's name in a layer's directory.
pub const LAYER_JSON: &str = "layer.json";

/// The fields of `layer.json`. Fields a writer left out read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LayerMeta {
    /// `stream` when unpacked while downloading, `blob` when from the stored blob.
    pub unpacked_from: String,
    /// The layer's DiffID (`sha256:…`), which its directory is named by.
    #[serde(rename = "diffID")]
    pub diff_id: String,
    /// The digest of the compressed blob it was unpacked from.
    pub blob: String,
    /// The blob's media type.
    pub media_type: String,
    /// Tar entries unpacked.
    pub entries: u64,
    /// Bytes of file data written.
    pub file_bytes: u64,
    /// Device nodes not created (without root).
    pub skipped_devices: u64,
    /// Hardlinks whose target is in a lower layer: (link, target).
    pub external_hardlinks: Vec<(String, String)>,
    /// The unpacked size in bytes, when a writer recorded it (`images` walks the tree else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl LayerMeta {
    /// Reads and parses the `layer.json` at `path`.
    pub fn read(path: &Path) -> Result<LayerMeta, StoreError> {
        let bytes = fs::read(path).map_err(StoreError::io("read", path))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
            action: "parse",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("layer.json serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_what_older_writers_left_out() {
        let meta = LayerMeta {
            unpacked_from: "stream".into(),
            diff_id: "sha256:aa".into(),
            blob: "sha256:bb".into(),
            external_hardlinks: vec![("a/link".into(), "b/target".into())],
            ..LayerMeta::default()
        };
        let text = String::from_utf8(meta.to_bytes()).unwrap();
        assert!(text.contains(r#""diffID": "sha256:aa""#), "{text}");
        assert!(text.contains(r#""unpackedFrom": "stream""#), "{text}");
        assert!(!text.contains("size"), "{text}");
        let (_dir, path) = crate::testfs::temp_file("layer.json", &text);
        assert_eq!(LayerMeta::read(&path).unwrap(), meta);
        let (_dir, path) = crate::testfs::temp_file("layer.json", r#"{"diffID":"sha256:cc","size":42}"#);
        let old = LayerMeta::read(&path).unwrap();
        assert_eq!(
            (old.diff_id.as_str(), old.size, old.external_hardlinks.len()),
            ("sha256:cc", Some(42), 0)
        );
        let (_dir, path) = crate::testfs::temp_file("layer.json", "not json");
        assert!(LayerMeta::read(&path).unwrap_err().to_string().contains("parse"));
    }
}
