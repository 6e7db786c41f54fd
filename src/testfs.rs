//! Files for unit tests: a temporary directory with named files in it.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Writes each `(path, content)` under `root`, creating the parent directories.
pub(crate) fn put(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A fresh temporary directory holding the file `name` with `content`, and that file's path.
pub(crate) fn temp_file(name: &str, content: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), &[(name, content)]);
    let path = dir.path().join(name);
    (dir, path)
}
