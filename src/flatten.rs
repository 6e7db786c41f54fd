//! `rpull rootfs NAME DIR`: the image's root filesystem, built by applying its unpacked layers
//! bottom to top into a fresh directory, as an overlay mount would show it (and as `docker
//! export` of a container would list it).
//!
//! For each layer (`layers/sha256/<diff_id>/rootfs/`, whiteouts kept as `.wh.*` files), each
//! directory is applied in this order: an opaque marker (`.wh..wh..opq`) first empties the
//! destination directory of what lower layers put there; whiteouts (`.wh.<name>`) then delete
//! `<name>`; then every other entry is copied. Directories merge; anything else replaces what
//! is there, directories included. Mode bits, mtimes and symlink targets are kept; ownership
//! only when running as root; device nodes are only created as root (else counted as skipped);
//! sockets and extended attributes are not copied. Files that are hardlinked inside one layer
//! stay hardlinked in the result; `externalHardlinks` from `layer.json` (links whose target came
//! from a lower layer) are linked to the target already in place. The markers' rules live in
//! `overlay.rs`, which also answers what a path names in the result without building it (the
//! pull checks external hardlinks' targets with it, so that `rootfs` does not refuse them later).
//!
//! Nothing is written outside the destination: every directory is entered only after `lstat`
//! shows a real directory, and a symlink (or any non-directory) standing where a layer has a
//! directory is replaced by a directory, so a symlink planted by a lower layer cannot redirect
//! later writes. External hardlink paths are resolved the same way and refused when they cross
//! a symlink or leave the root. This assumes nobody else modifies the destination meanwhile.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::images::ImagesError;
use crate::overlay::{self, is_marker, whiteout_target, OPAQUE};
use crate::store::{self, read_image, LayerMeta, RefEntry, Store, StoreError, LAYER_JSON};

/// Why the root filesystem could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The name given is not in the store ([`Engine::rootfs`](crate::engine::Engine::rootfs)).
    #[error(transparent)]
    Lookup(#[from] ImagesError),
    /// A layer of the image is not unpacked in the store.
    #[error("layer {0} is not unpacked in the store; pull the image again")]
    MissingLayer(Digest),
    /// The destination exists and is not an empty directory.
    #[error("{}: the destination must be an empty directory or not exist", .0.display())]
    NotEmpty(PathBuf),
    /// A layer asks for something that would leave the destination or cross a symlink.
    #[error("refusing {path:?} in layer {layer}: {reason}")]
    Unsafe {
        /// The path inside the image.
        path: String,
        /// The layer's DiffID.
        layer: Digest,
        /// What is wrong.
        reason: &'static str,
    },
    /// A filesystem operation failed, the image's manifest or config could not be read, or
    /// the store guard could not be taken.
    #[error(transparent)]
    Io(#[from] StoreError),
}

/// What [`flatten`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenStats {
    /// Layers applied.
    pub layers: usize,
    /// Regular files copied.
    pub files: u64,
    /// Bytes of regular files copied.
    pub bytes: u64,
    /// Directories created or merged.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created (inside a layer and external).
    pub hardlinks: u64,
    /// FIFOs and device nodes created.
    pub specials: u64,
    /// Device nodes (when not root) and sockets left out.
    pub skipped: u64,
    /// Whiteouts applied.
    pub whiteouts: u64,
    /// Opaque directories applied.
    pub opaque_dirs: u64,
}

/// Builds the root filesystem of the image `entry` names into `dest`, which must be an empty
/// directory or not exist (it is created). `is_root` applies ownership and creates device
/// nodes. The caller holds the store's shared guard, so that `prune` cannot delete the layers
/// meanwhile ([`Engine::rootfs`](crate::engine::Engine::rootfs) does).
pub fn flatten(
    store: &Store,
    entry: &RefEntry,
    dest: &Path,
    is_root: bool,
) -> Result<FlattenStats, FlattenError> {
    let image = read_image(store, entry)?;
    let diff_ids = image.config.diff_ids().to_vec();
    if let Some(missing) = diff_ids.iter().find(|d| !store.has_layer(d)) {
        return Err(FlattenError::MissingLayer(missing.clone()));
    }
    prepare_dest(dest)?;
    let mut applier = Applier {
        is_root,
        stats: FlattenStats::default(),
        links: HashMap::new(),
        layer: diff_ids
            .first()
            .cloned()
            .unwrap_or_else(|| Digest::sha256_of(b"")),
    };
    for diff_id in &diff_ids {
        let dir = store.layer_dir(diff_id);
        applier.layer = diff_id.clone();
        applier.links.clear();
        let rootfs = dir.join("rootfs");
        applier.apply_dir(&rootfs, dest)?;
        for (link, target) in LayerMeta::read(&dir.join(LAYER_JSON))?.external_hardlinks {
            applier.external_link(&rootfs, dest, &link, &target)?;
        }
        applier.stats.layers += 1;
    }
    Ok(applier.stats)
}

fn prepare_dest(dest: &Path) -> Result<(), FlattenError> {
    match fs::metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(fs::create_dir_all(dest).map_err(StoreError::io("create", dest))?)
        }
        Err(e) => Err(StoreError::io("inspect", dest)(e).into()),
        Ok(m) if m.is_dir() => {
            let mut rd = fs::read_dir(dest).map_err(StoreError::io("read", dest))?;
            if rd.next().is_some() {
                return Err(FlattenError::NotEmpty(dest.to_path_buf()));
            }
            Ok(())
        }
        Ok(_) => Err(FlattenError::NotEmpty(dest.to_path_buf())),
    }
}

/// Applies layers into the destination.
struct Applier {
    is_root: bool,
    stats: FlattenStats,
    /// First destination path of each multiply-linked inode of the current layer.
    links: HashMap<(u64, u64), PathBuf>,
    /// The layer being applied (for error messages).
    layer: Digest,
}

fn cstring(path: &Path) -> Result<CString, FlattenError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        FlattenError::Io(StoreError::Io {
            action: "encode",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"),
        })
    })
}

/// Removes whatever is at `path` without following symlinks.
fn remove_any(path: &Path) -> Result<(), FlattenError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("inspect", path)(e).into()),
    };
    if meta.is_dir() {
        store::remove_tree(path);
        if fs::symlink_metadata(path).is_ok() {
            return Err(FlattenError::Io(StoreError::Io {
                action: "remove",
                path: path.to_path_buf(),
                source: io::Error::other("could not remove the whole tree"),
            }));
        }
        Ok(())
    } else {
        Ok(fs::remove_file(path).map_err(StoreError::io("remove", path))?)
    }
}

/// Sets atime and mtime of `path` (not following a symlink) to `meta`'s mtime.
fn set_times(path: &Path, meta: &fs::Metadata) -> Result<(), FlattenError> {
    let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
    Ok(crate::fsutil::set_times_nofollow(path, mtime).map_err(StoreError::io("set times of", path))?)
}

/// While alive, a source path in the store made accessible to us (non-root, owner); the mode
/// is restored on drop.
struct SourceAccess {
    path: PathBuf,
    mode: Option<u32>,
}

impl SourceAccess {
    fn ensure(path: &Path, meta: &fs::Metadata, need: u32, is_root: bool) -> SourceAccess {
        let mode = meta.mode() & 0o7777;
        // SAFETY: geteuid has no preconditions.
        let owner = unsafe { libc::geteuid() } == meta.uid();
        if is_root || !owner || mode & need == need {
            return SourceAccess {
                path: path.to_path_buf(),
                mode: None,
            };
        }
        let changed = fs::set_permissions(path, fs::Permissions::from_mode(mode | need)).is_ok();
        SourceAccess {
            path: path.to_path_buf(),
            mode: changed.then_some(mode),
        }
    }
}

impl Drop for SourceAccess {
    fn drop(&mut self) {
        if let Some(mode) = self.mode {
            let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(mode));
        }
    }
}

/// Makes a destination directory writable for us while alive, then restores its mode.
struct DestWritable {
    path: PathBuf,
    mode: Option<u32>,
}

impl DestWritable {
    fn ensure(path: &Path, is_root: bool) -> Result<DestWritable, FlattenError> {
        let meta = fs::symlink_metadata(path).map_err(StoreError::io("inspect", path))?;
        let mode = meta.mode() & 0o7777;
        if is_root || mode & 0o700 == 0o700 {
            return Ok(DestWritable {
                path: path.to_path_buf(),
                mode: None,
            });
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))
            .map_err(StoreError::io("chmod", path))?;
        Ok(DestWritable {
            path: path.to_path_buf(),
            mode: Some(mode),
        })
    }
}

impl Drop for DestWritable {
    fn drop(&mut self) {
        if let Some(mode) = self.mode {
            let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(mode));
        }
    }
}

impl Applier {
    /// Applies the layer directory `src` onto `dst`, a real directory we may write into.
    fn apply_dir(&mut self, src: &Path, dst: &Path) -> Result<(), FlattenError> {
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(src)
            .map_err(StoreError::io("read", src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(StoreError::io("read", src))?;
        names.sort();
        if names.iter().any(|n| n.as_bytes() == OPAQUE.as_bytes()) {
            for child in fs::read_dir(dst).map_err(StoreError::io("read", dst))? {
                let child = child.map_err(StoreError::io("read", dst))?;
                remove_any(&child.path())?;
            }
            self.stats.opaque_dirs += 1;
        }
        // The opaque marker was handled above; other `.wh..wh.*` names are AUFS metadata.
        for target in names.iter().filter_map(|n| whiteout_target(n)) {
            remove_any(&dst.join(target))?;
            self.stats.whiteouts += 1;
        }
        for name in &names {
            if is_marker(name) {
                continue;
            }
            self.apply_entry(&src.join(name), &dst.join(name))?;
        }
        Ok(())
    }

    fn apply_entry(&mut self, src: &Path, dst: &Path) -> Result<(), FlattenError> {
        let meta = fs::symlink_metadata(src).map_err(StoreError::io("inspect", src))?;
        let ft = meta.file_type();
        let existing = fs::symlink_metadata(dst).ok();
        if ft.is_dir() {
            match existing {
                // A real directory from a lower layer: merge.
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    remove_any(dst)?;
                    fs::create_dir(dst).map_err(StoreError::io("create", dst))?;
                }
                None => fs::create_dir(dst).map_err(StoreError::io("create", dst))?,
            }
            self.stats.dirs += 1;
            {
                let _src = SourceAccess::ensure(src, &meta, 0o500, self.is_root);
                let _dst = DestWritable::ensure(dst, self.is_root)?;
                self.apply_dir(src, dst)?;
            }
            return self.set_attributes(dst, &meta, false);
        }
        if existing.is_some() {
            remove_any(dst)?;
        }
        if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    fs::hard_link(first, dst).map_err(StoreError::io("link", dst))?;
                    self.stats.hardlinks += 1;
                    return Ok(());
                }
            }
            self.copy_file(src, dst, &meta)?;
            if meta.nlink() > 1 {
                self.links.insert(key, dst.to_path_buf());
            }
            self.stats.files += 1;
            self.stats.bytes += meta.len();
            return self.set_attributes(dst, &meta, false);
        }
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(StoreError::io("read link", src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(StoreError::io("create symlink", dst))?;
            self.stats.symlinks += 1;
            return self.set_attributes(dst, &meta, true);
        }
        use std::os::unix::fs::FileTypeExt;
        let c = cstring(dst)?;
        let perm = (meta.mode() & 0o7777) as libc::mode_t;
        // SAFETY: valid NUL-terminated path; plain syscalls with no memory arguments.
        let rc = if ft.is_fifo() {
            unsafe { libc::mkfifo(c.as_ptr(), perm) }
        } else if (ft.is_char_device() || ft.is_block_device()) && self.is_root {
            let kind = if ft.is_char_device() {
                libc::S_IFCHR
            } else {
                libc::S_IFBLK
            };
            unsafe { libc::mknod(c.as_ptr(), kind | perm, meta.rdev() as libc::dev_t) }
        } else {
            self.stats.skipped += 1;
            return Ok(());
        };
        if rc != 0 {
            return Err(StoreError::io("create", dst)(io::Error::last_os_error()).into());
        }
        self.stats.specials += 1;
        self.set_attributes(dst, &meta, false)
    }

    fn copy_file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), FlattenError> {
        let mut input = {
            let _access = SourceAccess::ensure(src, meta, 0o400, self.is_root);
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(src)
                .map_err(StoreError::io("open", src))?
        };
        // create_new is O_CREAT|O_EXCL: it never follows a symlink at `dst`.
        let mut output: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(StoreError::io("create", dst))?;
        io::copy(&mut input, &mut output).map_err(StoreError::io("copy into", dst))?;
        Ok(())
    }

    /// Ownership (as root), mode (not for symlinks) and times, in that order.
    fn set_attributes(&self, path: &Path, meta: &fs::Metadata, symlink: bool) -> Result<(), FlattenError> {
        if self.is_root {
            std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
                .map_err(StoreError::io("chown", path))?;
        }
        if !symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(StoreError::io("chmod", path))?;
        }
        set_times(path, meta)
    }

    /// Resolves `rel` under `root` without following symlinks; the parents must be real
    /// directories (created when `create` and missing).
    fn resolve(&self, root: &Path, rel: &str, create: bool) -> Result<PathBuf, FlattenError> {
        let unsafe_path = |reason| FlattenError::Unsafe {
            path: rel.to_string(),
            layer: self.layer.clone(),
            reason,
        };
        let parts = overlay::components(rel).map_err(unsafe_path)?;
        let (last, parents) = parts.split_last().expect("components() refuses the root");
        let mut cur = root.to_path_buf();
        for p in parents {
            cur.push(p);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(unsafe_path("a parent is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&cur).map_err(StoreError::io("create", &cur))?;
                }
                Err(e) => return Err(StoreError::io("inspect", &cur)(e).into()),
            }
        }
        Ok(cur.join(last))
    }

    /// Links `link` to `target`, which a lower layer put in place.
    fn external_link(
        &mut self,
        rootfs: &Path,
        dest: &Path,
        link: &str,
        target: &str,
    ) -> Result<(), FlattenError> {
        let target_path = self.resolve(dest, target, false)?;
        match fs::symlink_metadata(&target_path) {
            Ok(m) if !m.is_dir() => {}
            _ => {
                return Err(FlattenError::Unsafe {
                    path: target.to_string(),
                    layer: self.layer.clone(),
                    reason: "hardlink target is missing or a directory",
                })
            }
        }
        let link_path = self.resolve(dest, link, true)?;
        let parent = link_path.parent().unwrap_or(dest).to_path_buf();
        {
            let _writable = DestWritable::ensure(&parent, self.is_root)?;
            remove_any(&link_path)?;
            fs::hard_link(&target_path, &link_path).map_err(StoreError::io("link", &link_path))?;
        }
        self.stats.hardlinks += 1;
        // Linking touched the parent: give it back the layer's times.
        let rel_parent = parent.strip_prefix(dest).unwrap_or(Path::new(""));
        if let Ok(m) = fs::symlink_metadata(rootfs.join(rel_parent)) {
            if m.is_dir() {
                set_times(&parent, &m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::images::testutil::*;

    fn mtime(path: &Path) -> i64 {
        fs::symlink_metadata(path).unwrap().mtime()
    }

    fn set_mtime(path: &Path, secs: i64) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let ts = libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        };
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                [ts, ts].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0);
    }

    #[test]
    fn applies_layers_like_an_overlay() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"victim").unwrap();
        let outside2 = outside.clone();

        let base = Layer::new(&store, "base", move |r| {
            put(
                r,
                &[
                    ("srv/app/keep.txt", "keep"),
                    ("srv/app/gone.txt", "gone"),
                    ("srv/swap/inner.txt", "inner"),
                    ("srv/opq/old.txt", "old"),
                    ("srv/base/data/part0000.dat", "data"),
                    ("srv/ro/f", "f"),
                    ("shadow", "secret"),
                ],
            );
            fs::set_permissions(r.join("srv/app/keep.txt"), fs::Permissions::from_mode(0o640)).unwrap();
            set_mtime(&r.join("srv/app/keep.txt"), 1_700_000_000);
            fs::create_dir_all(r.join("srv/base/links")).unwrap();
            fs::hard_link(
                r.join("srv/base/data/part0000.dat"),
                r.join("srv/base/links/hard0.dat"),
            )
            .unwrap();
            symlink("../data/part0000.dat", r.join("srv/base/links/sym0.dat")).unwrap();
            symlink(&outside2, r.join("escape")).unwrap();
            symlink(&outside2, r.join("escape2")).unwrap();
            set_mtime(&r.join("escape"), 1_600_000_000);
            fs::set_permissions(r.join("srv/ro"), fs::Permissions::from_mode(0o555)).unwrap();
            fs::set_permissions(r.join("shadow"), fs::Permissions::from_mode(0o000)).unwrap();
        });
        let middle = Layer::new(&store, "middle", |r| {
            put(
                r,
                &[
                    ("srv/app/.wh.gone.txt", ""),
                    ("srv/swap", "now a file"),
                    // A whiteout "inside" a symlink to the outside must not touch the outside.
                    ("escape2/.wh.victim", ""),
                ],
            )
        });
        let top = Layer::new(&store, "top", |r| {
            put(
                r,
                &[
                    ("srv/opq/.wh..wh..opq", ""),
                    ("srv/opq/new.txt", "new"),
                    ("srv/app/gone.txt", "back"),
                    ("escape/evil.txt", "evil"),
                    ("srv/ro/g", "g"),
                ],
            );
            fs::set_permissions(r.join("srv/ro"), fs::Permissions::from_mode(0o555)).unwrap();
        });
        write_layer_json(
            &store,
            &top.diff_id,
            &Digest::sha256_of(&top.blob),
            &[("/srv/ext.txt", "srv/app/keep.txt")],
        );
        let (m, size, _) = add_image(&store, &[&base, &middle, &top], "2023-11-14T22:13:00Z", "x");
        let e = entry("docker.io/library/layers:whiteout", &m, size, None);

        let dest = tmp.path().join("rootfs");
        let stats = flatten(&store, &e, &dest, false).unwrap();
        let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("srv/app/keep.txt"), "keep");
        assert_eq!(read("srv/app/gone.txt"), "back");
        assert_eq!(read("srv/swap"), "now a file");
        assert!(fs::symlink_metadata(dest.join("srv/swap")).unwrap().is_file());
        let mut opq: Vec<_> = fs::read_dir(dest.join("srv/opq"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        opq.sort();
        assert_eq!(opq, vec!["new.txt"]);
        assert!(!dest.join("srv/app/.wh.gone.txt").exists());

        // Attributes.
        let keep = fs::metadata(dest.join("srv/app/keep.txt")).unwrap();
        assert_eq!(keep.mode() & 0o7777, 0o640);
        assert_eq!(keep.mtime(), 1_700_000_000);
        assert_eq!(
            fs::read_link(dest.join("srv/base/links/sym0.dat")).unwrap(),
            Path::new("../data/part0000.dat")
        );

        // Hardlinks: inside a layer, and external.
        let a = fs::metadata(dest.join("srv/base/data/part0000.dat")).unwrap();
        let b = fs::metadata(dest.join("srv/base/links/hard0.dat")).unwrap();
        assert_eq!(a.ino(), b.ino());
        let ext = fs::metadata(dest.join("srv/ext.txt")).unwrap();
        assert_eq!(ext.ino(), keep.ino());

        // The symlink to the outside was replaced by a directory; the outside is untouched.
        assert!(fs::symlink_metadata(dest.join("escape")).unwrap().is_dir());
        assert_eq!(read("escape/evil.txt"), "evil");
        assert!(!outside.join("evil.txt").exists());
        assert!(outside.join("victim").exists());
        assert!(fs::symlink_metadata(dest.join("escape2")).unwrap().is_dir());

        // Read-only directories are written into and keep their mode.
        assert_eq!(read("srv/ro/f"), "f");
        assert_eq!(read("srv/ro/g"), "g");
        assert_eq!(fs::metadata(dest.join("srv/ro")).unwrap().mode() & 0o777, 0o555);
        assert!(mtime(&dest.join("srv/ro")) > 0);

        // An unreadable file is copied (made readable for the copy only) and keeps its mode.
        let shadow = dest.join("shadow");
        assert_eq!(fs::metadata(&shadow).unwrap().mode() & 0o7777, 0);
        fs::set_permissions(&shadow, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(fs::read(&shadow).unwrap(), b"secret");
        let stored = store.layer_dir(&base.diff_id).join("rootfs/shadow");
        assert_eq!(fs::metadata(stored).unwrap().mode() & 0o7777, 0);

        assert_eq!(stats.layers, 3);
        assert_eq!(stats.whiteouts, 2);
        assert_eq!(stats.opaque_dirs, 1);
        assert_eq!(stats.hardlinks, 2);

        // The destination must be empty.
        assert!(matches!(
            flatten(&store, &e, &dest, false),
            Err(FlattenError::NotEmpty(_))
        ));

        for dir in [
            dest.join("srv/ro"),
            store.layer_dir(&base.diff_id).join("rootfs/srv/ro"),
        ] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(
            store.layer_dir(&top.diff_id).join("rootfs/srv/ro"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn refuses_unsafe_external_hardlinks_and_missing_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let base = Layer::new(&store, "base", |r| {
            fs::write(r.join("file"), b"x").unwrap();
            symlink("/etc", r.join("etc")).unwrap();
        });
        let top = Layer::new(&store, "top", |r| fs::write(r.join("other"), b"y").unwrap());
        let (m, size, _) = add_image(&store, &[&base, &top], "2023-11-14T22:13:00Z", "x");
        let e = entry("docker.io/library/x:1", &m, size, None);
        for (link, target) in [("l", "../file"), ("etc/passwd2", "file"), ("l", "etc/passwd")] {
            write_layer_json(
                &store,
                &top.diff_id,
                &Digest::sha256_of(&top.blob),
                &[(link, target)],
            );
            let dest = tempfile::tempdir_in(tmp.path()).unwrap();
            let err = flatten(&store, &e, dest.path(), false).unwrap_err();
            assert!(
                matches!(err, FlattenError::Unsafe { .. }),
                "{link} -> {target}: {err}"
            );
        }
        store::remove_tree(&store.layer_dir(&top.diff_id));
        let dest = tmp.path().join("never");
        assert!(
            matches!(flatten(&store, &e, &dest, false), Err(FlattenError::MissingLayer(d)) if d == top.diff_id)
        );
        assert!(!dest.exists());
    }
}
