//! The one store checker of the end-to-end tests: `rpull check` on the sandbox's store must
//! pass, and, independently of rpull, every visible blob hashes to its name, every visible
//! unpacked layer carries its marker and `index.json` parses. Tests that need more (no
//! leftovers at all, say) assert that beside it.

use std::fs;
use std::path::Path;

use super::rpull::Rpull;
use super::sha256_digest;

impl Rpull {
    /// Panics, naming `context`, unless the store is intact (see the module docs).
    pub fn assert_store_intact(&self, context: &str) {
        let out = self.run(["check"]);
        assert!(
            out.success() && out.stdout.contains("store is intact"),
            "{context}: rpull check failed\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
        assert_visible_content_intact(self.root(), context);
    }
}

/// Checks the store at `root` without rpull: visible blobs hash to their names (temporary
/// files are not visible content), visible layers carry their marker, `index.json` parses.
pub fn assert_visible_content_intact(root: &Path, context: &str) {
    // Killed before the store was even created: nothing is visible.
    let list = |dir: &str| fs::read_dir(root.join(dir)).into_iter().flatten();
    for e in list("blobs/sha256") {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            continue;
        }
        let bytes = fs::read(e.path()).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            format!("sha256:{name}"),
            "{context}: blob {name} is corrupt"
        );
    }
    for e in list("layers/sha256") {
        let e = e.unwrap();
        assert!(
            e.path().join("layer.json").is_file(),
            "{context}: layer {:?} is visible without its marker",
            e.file_name()
        );
    }
    let Ok(index) = fs::read(root.join("index.json")) else {
        return;
    };
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap_or_else(|e| {
        panic!("{context}: index.json does not parse: {e}");
    });
    assert!(index["manifests"].is_array(), "{context}: {index}");
}
