//! How an image's unpacked layers stack, the rules one place holds for `rootfs`
//! ([`crate::flatten`], which builds the stacked tree) and for the pull's check of hardlinks
//! into lower layers (`pull/links.rs`, which only looks paths up in it):
//!
//! * the markers a layer keeps as empty files: `.wh.<name>` deletes `<name>` from lower layers,
//!   `<dir>/.wh..wh..opq` hides everything lower layers put in `<dir>`, and no `.wh.*` name is
//!   ever an entry of the stacked tree;
//! * the `externalHardlinks` of a layer's `layer.json`: links to a path of a lower layer, made
//!   after the layer's own tree is applied (so they replace what is at the link path);
//! * [`lookup`]: what a path names in a stack of layers, as applying them bottom to top leaves
//!   it, found by reading the layers' directories without building anything. As in `rootfs`, a
//!   symlink is never followed: a path whose parent is one names nothing.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::store::StoreError;

/// In a layer's directory, hides everything lower layers put in that directory.
pub(crate) const OPAQUE: &str = ".wh..wh..opq";
/// `.wh.<name>` deletes `<name>` from lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";

/// Whether `name` is a marker (`.wh.*`), which is never an entry of the stacked tree.
pub(crate) fn is_marker(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())
}

/// The name the whiteout `name` deletes. `None` when it is no whiteout: not a marker, the
/// opaque marker or other AUFS metadata (`.wh..wh.*`), or a `.wh.` naming nothing.
pub(crate) fn whiteout_target(name: &OsStr) -> Option<&OsStr> {
    let target = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes())?;
    let names_nothing = target.is_empty()
        || target.starts_with(WHITEOUT_PREFIX.as_bytes())
        || target == b"."
        || target == b"..";
    (!names_nothing).then(|| OsStr::from_bytes(target))
}

/// The whiteout that deletes `name`.
fn whiteout_of(name: &OsStr) -> OsString {
    let mut marker = OsString::from(WHITEOUT_PREFIX);
    marker.push(name);
    marker
}

/// The names along `rel`, a path inside the image (a leading `/` and `.` are dropped); `Err`
/// says why it names no entry.
pub(crate) fn components(rel: &str) -> Result<Vec<&OsStr>, &'static str> {
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err("leaves the root"),
        }
    }
    if parts.is_empty() {
        return Err("names the root");
    }
    Ok(parts)
}

/// The path inside the image (as [`lookup`] compares them) that a link of `layer.json` puts a
/// file at; `None` when it names no entry.
pub(crate) fn link_path(link: &str) -> Option<PathBuf> {
    components(link).ok().map(|parts| parts.into_iter().collect())
}

/// One layer of a stack, as [`lookup`] reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stacked<'a> {
    /// The unpacked tree (`rootfs/`), its markers kept as files.
    pub rootfs: &'a Path,
    /// Where its external hardlinks put a file ([`link_path`]), over its tree.
    pub links: &'a BTreeSet<PathBuf>,
}

/// What a path names in a stack of layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// Anything but a directory: a file, a symlink, a special file, an external hardlink.
    NonDir,
    /// A directory.
    Dir,
    /// No layer has it.
    Missing,
    /// A whiteout or an opaque directory of the layer at this index of the stack hides it.
    WhitedOut(usize),
    /// This parent (a path inside the image) is not a directory; `symlink`: it is a symlink,
    /// which is not followed.
    ParentNotDir {
        /// The parent.
        parent: PathBuf,
        /// Whether it is a symlink.
        symlink: bool,
    },
    /// The path names no entry (the reason, as [`components`] gives it).
    Invalid(&'static str),
}

/// What one layer has at a path (its external hardlinks over its tree).
enum Entry {
    Dir,
    NonDir { symlink: bool },
    Absent,
}

/// Whether something is at `path` (not following a symlink).
fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("inspect", path)(e)),
    }
}

/// What `rel` names in `stack` (its top layer first) once the layers are applied bottom to
/// top as [`crate::flatten`] applies them: in each directory, an opaque marker first empties
/// it of what lower layers put there, whiteouts then delete, entries are then added
/// (directories merge, anything else replaces), and external hardlinks last replace what is
/// at their paths.
///
/// Each layer is read top down, name by name: a layer holding the whole path decides; one
/// holding a non-directory at a parent decides too, unless a higher layer holds a directory
/// there (which replaced it); a whiteout of a name in a layer's directory, an opaque marker
/// in one of the directories on the way, or a whiteout of such a directory of the same layer
/// (which the layer then recreated empty) hides the lower layers.
pub(crate) fn lookup(stack: &[Stacked<'_>], rel: &str) -> Result<Found, StoreError> {
    let parts = match components(rel) {
        Ok(parts) => parts,
        Err(reason) => return Ok(Found::Invalid(reason)),
    };
    if parts.iter().any(|p| is_marker(p)) {
        return Ok(Found::Missing);
    }
    // How many leading names a higher layer holds as directories.
    let mut dirs_above = 0;
    for (index, layer) in stack.iter().enumerate() {
        let mut dir = layer.rootfs.to_path_buf();
        let mut at = PathBuf::new();
        let mut hides_lower = exists(&dir.join(OPAQUE))?;
        for (depth, name) in parts.iter().enumerate() {
            let last = depth + 1 == parts.len();
            at.push(name);
            let path = dir.join(name);
            let entry = if layer.links.contains(&at) {
                Entry::NonDir { symlink: false }
            } else {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => Entry::Dir,
                    Ok(m) => Entry::NonDir {
                        symlink: m.file_type().is_symlink(),
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Entry::Absent,
                    Err(e) => return Err(StoreError::io("inspect", &path)(e)),
                }
            };
            match entry {
                Entry::Dir if last => return Ok(Found::Dir),
                Entry::Dir => {
                    hides_lower |= exists(&path.join(OPAQUE))? || exists(&dir.join(whiteout_of(name)))?;
                    dirs_above = dirs_above.max(depth + 1);
                    dir = path;
                }
                Entry::NonDir { .. } if last => return Ok(Found::NonDir),
                // A higher layer's directory replaced it, and everything below it.
                Entry::NonDir { .. } if depth < dirs_above => return Ok(Found::Missing),
                Entry::NonDir { symlink } => return Ok(Found::ParentNotDir { parent: at, symlink }),
                Entry::Absent => {
                    if hides_lower || exists(&dir.join(whiteout_of(name)))? {
                        return Ok(Found::WhitedOut(index));
                    }
                    break;
                }
            }
        }
    }
    Ok(Found::Missing)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::digest::Digest;
    use crate::flatten::flatten;
    use crate::images::testutil::*;
    use crate::store::Store;

    #[test]
    fn whiteout_names_and_components() {
        let t = |n: &str| whiteout_target(OsStr::new(n)).map(|t| t.to_str().unwrap().to_string());
        assert_eq!(t(".wh.gone"), Some("gone".into()));
        assert_eq!(t(".wh..hidden"), Some(".hidden".into()));
        for none in [
            "gone",
            ".wh.",
            ".wh..",
            ".wh...",
            OPAQUE,
            ".wh..wh.plnk",
            ".wh..wh.x",
        ] {
            assert_eq!(t(none), None, "{none}");
        }
        assert_eq!(
            t(whiteout_of(OsStr::new("x")).to_str().unwrap()),
            Some("x".into())
        );
        assert!(is_marker(OsStr::new(OPAQUE)) && is_marker(OsStr::new(".wh.x")));
        assert!(!is_marker(OsStr::new("x.wh.")));

        assert_eq!(
            components("/a/./b/").unwrap(),
            vec![OsStr::new("a"), OsStr::new("b")]
        );
        assert_eq!(components("a/../b"), Err("leaves the root"));
        assert_eq!(components("/."), Err("names the root"));
        assert_eq!(link_path("/srv/x"), Some(PathBuf::from("srv/x")));
        assert_eq!(link_path("/"), None);
    }

    /// What `rel` names in the built tree at `root`, walked without following symlinks, in
    /// [`Found`]'s terms (a whiteout shows as `Missing`).
    fn in_tree(root: &Path, rel: &str) -> Found {
        let parts = components(rel).unwrap();
        let mut at = PathBuf::new();
        for (depth, name) in parts.iter().enumerate() {
            at.push(name);
            match fs::symlink_metadata(root.join(&at)) {
                Err(_) => return Found::Missing,
                Ok(m) if m.is_dir() => {}
                Ok(_) if depth + 1 == parts.len() => return Found::NonDir,
                Ok(m) => {
                    return Found::ParentNotDir {
                        parent: at,
                        symlink: m.file_type().is_symlink(),
                    }
                }
            }
        }
        Found::Dir
    }

    struct Image {
        _tmp: tempfile::TempDir,
        store: Store,
        layers: Vec<Layer>,
        links: Vec<BTreeSet<PathBuf>>,
    }

    impl Image {
        /// The stack of the image's layers `..count`, top first.
        fn stack(&self, count: usize) -> Vec<(PathBuf, &BTreeSet<PathBuf>)> {
            (0..count)
                .rev()
                .map(|i| {
                    (
                        self.store.layer_dir(&self.layers[i].diff_id).join("rootfs"),
                        &self.links[i],
                    )
                })
                .collect()
        }

        fn lookup(&self, count: usize, rel: &str) -> Found {
            let owned = self.stack(count);
            let stack: Vec<Stacked<'_>> = owned
                .iter()
                .map(|(rootfs, links)| Stacked { rootfs, links })
                .collect();
            lookup(&stack, rel).unwrap()
        }
    }

    /// Three layers exercising every rule, the middle one with an external hardlink.
    fn image() -> Image {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let base = Layer::new(&store, "base", |r| {
            put(
                r,
                &[
                    ("a/file", "f"),
                    ("a/gone", "g"),
                    ("o/old", "o"),
                    ("o/sub/deep", "d"),
                    ("f2d", "file"),
                    ("d2f/inner", "i"),
                    ("re/inner", "i"),
                    ("real/x", "x"),
                    ("whole/x", "x"),
                ],
            );
            fs::create_dir(r.join("emptydir")).unwrap();
            symlink("real", r.join("sym")).unwrap();
            symlink("a/file", r.join("filesym")).unwrap();
        });
        let middle = Layer::new(&store, "middle", |r| {
            put(
                r,
                &[
                    ("a/.wh.gone", ""),
                    ("o/.wh..wh..opq", ""),
                    ("o/new", "n"),
                    ("f2d/child", "c"),
                    ("d2f", "now a file"),
                    (".wh.re", ""),
                    ("re/new", "n"),
                    (".wh.whole", ""),
                    ("m/keep", "k"),
                    (".wh..wh.plnk/x", ""),
                ],
            )
        });
        let top = Layer::new(&store, "top", |r| put(r, &[("t/top", "t"), ("a/topfile", "t")]));
        write_layer_json(
            &store,
            &middle.diff_id,
            &Digest::sha256_of(&middle.blob),
            &[("/m/link", "a/file")],
        );
        let links = vec![
            BTreeSet::new(),
            BTreeSet::from([PathBuf::from("m/link")]),
            BTreeSet::new(),
        ];
        Image {
            _tmp: tmp,
            store,
            layers: vec![base, middle, top],
            links,
        }
    }

    const PROBES: &[&str] = &[
        "a",
        "a/file",
        "/a/file",
        "a/gone",
        "a/topfile",
        "a/none",
        "o",
        "o/old",
        "o/sub",
        "o/sub/deep",
        "o/new",
        "f2d",
        "f2d/child",
        "f2d/none",
        "d2f",
        "d2f/inner",
        "re",
        "re/inner",
        "re/new",
        "whole",
        "whole/x",
        "real/x",
        "sym",
        "sym/x",
        "filesym",
        "emptydir",
        "m/keep",
        "m/link",
        "m/link/below",
        "t/top",
        "none",
        "none/deeper",
        ".wh.re",
        "a/.wh.gone",
        ".wh..wh.plnk/x",
    ];

    #[test]
    fn lookup_answers_what_flatten_builds() {
        let img = image();
        let (m, size, _) = add_image(
            &img.store,
            &img.layers.iter().collect::<Vec<_>>(),
            "2023-11-14T22:13:00Z",
            "x",
        );
        let e = entry("docker.io/library/overlay:1", &m, size, None);
        let dest = img._tmp.path().join("rootfs");
        flatten(&img.store, &e, &dest, false).unwrap();
        for rel in PROBES {
            let found = match img.lookup(3, rel) {
                Found::WhitedOut(_) => Found::Missing,
                other => other,
            };
            assert_eq!(found, in_tree(&dest, rel), "{rel}");
        }
    }

    #[test]
    fn lookup_names_the_layer_that_hides_a_path() {
        let img = image();
        let f = |count, rel| img.lookup(count, rel);
        // Below the middle layer, the base alone.
        assert_eq!(f(1, "a/gone"), Found::NonDir);
        assert_eq!(f(1, "o/old"), Found::NonDir);
        assert_eq!(f(1, "a"), Found::Dir);
        // Stack index 1 is the middle layer (the top is index 0).
        assert_eq!(f(3, "a/gone"), Found::WhitedOut(1));
        assert_eq!(f(3, "o/old"), Found::WhitedOut(1));
        assert_eq!(f(3, "o/sub/deep"), Found::WhitedOut(1));
        assert_eq!(f(3, "re/inner"), Found::WhitedOut(1));
        assert_eq!(f(3, "whole/x"), Found::WhitedOut(1));
        assert_eq!(f(2, "whole"), Found::WhitedOut(0));
        // A non-directory a higher layer's directory replaced: nothing below it.
        assert_eq!(f(3, "f2d/none"), Found::Missing);
        assert_eq!(f(3, "none/deeper"), Found::Missing);
        assert_eq!(
            f(3, "sym/x"),
            Found::ParentNotDir {
                parent: PathBuf::from("sym"),
                symlink: true
            }
        );
        assert_eq!(
            f(3, "d2f/inner"),
            Found::ParentNotDir {
                parent: PathBuf::from("d2f"),
                symlink: false
            }
        );
        assert_eq!(
            f(3, "m/link/below"),
            Found::ParentNotDir {
                parent: PathBuf::from("m/link"),
                symlink: false
            }
        );
        assert_eq!(f(3, "m/link"), Found::NonDir);
        assert_eq!(f(3, "filesym"), Found::NonDir);
        assert_eq!(f(3, "../a/file"), Found::Invalid("leaves the root"));
        assert_eq!(f(3, "/"), Found::Invalid("names the root"));
        assert_eq!(f(0, "a/file"), Found::Missing);
    }

    #[test]
    fn an_opaque_root_hides_every_lower_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, top) = (tmp.path().join("base"), tmp.path().join("top"));
        put(&base, &[("a/file", "f"), ("b", "b")]);
        put(&top, &[(OPAQUE, ""), ("b", "new")]);
        let none = BTreeSet::new();
        let stack = [
            Stacked {
                rootfs: &top,
                links: &none,
            },
            Stacked {
                rootfs: &base,
                links: &none,
            },
        ];
        assert_eq!(lookup(&stack, "a/file").unwrap(), Found::WhitedOut(0));
        assert_eq!(lookup(&stack, "a").unwrap(), Found::WhitedOut(0));
        assert_eq!(lookup(&stack, "b").unwrap(), Found::NonDir);
        assert_eq!(lookup(&stack[1..], "a/file").unwrap(), Found::NonDir);
    }
}
