//! Safe, lossless unpacking of one layer's tar stream into a directory of its own.
//!
//! Each layer is unpacked on its own; layers are not merged here (a later flatten step applies
//! them in order). Whiteouts are therefore kept, not applied: `.wh.<name>` and
//! `<dir>/.wh..wh..opq` become empty regular files with exactly those names, which no real file
//! can collide with. Hardlinks whose target lives in a lower layer are reported in
//! [`UnpackStats::external_hardlinks`] instead of failing.
//!
//! The extractor follows docker's safety rules (docker-pull-reference §7) instead of trusting
//! `tar::Entry::unpack_in`:
//!
//! * names are cleaned as Go's `filepath.Clean` does and the leading `/` is stripped; a relative
//!   name whose `..` climbs above the root is an error (`invalid entry name "../x"`), a rooted one
//!   is clamped at the root as docker does (`/../x` is `x`), and the root itself is skipped;
//! * every parent directory is checked with `lstat` (once per directory: validated directories
//!   are remembered) and a parent that is a symlink is an error, so no write ever goes through a
//!   symlink, wherever it points; symlink targets themselves are stored verbatim;
//! * hardlink targets must stay inside the root, are never resolved through a symlink, and must
//!   not name a directory;
//! * an entry replaces whatever an earlier entry left at its path (a directory over a directory
//!   only updates the metadata), so the last duplicate wins;
//! * character and block devices are created only when running as root; FIFOs are created
//!   whoever runs rpull, since that needs no privilege; a node the system refuses to create
//!   (`EPERM`, as in a user namespace) is skipped and counted, not an error;
//! * ownership, setuid, setgid and sticky bits are kept only when running as root; directory
//!   modes and times are applied last, deepest first, so a read-only directory cannot block its
//!   own children;
//! * extended attributes (`SCHILY.xattr.*`) are applied best-effort;
//! * the whole stream is read to its end, trailing bytes included, since the caller computes
//!   the layer's diff ID from the bytes read;
//! * what the tar reader holds in memory between two entries (PAX records, GNU long names,
//!   sparse extension blocks) is bounded by [`MAX_HEADER_BYTES`]; Go's `archive/tar` refuses a
//!   record of 1 MiB or more with the same text.
//!
//! The destination must be a directory that nothing else modifies while the layer is unpacked;
//! the checks above rely on it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;

mod files;
mod links;
mod meta;

use files::{is_regular, open_new};
use meta::{chown, cstring, io_error, set_times};

/// Marks a whiteout: `.wh.<name>` deletes `<name>` from lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// AUFS metadata entries start with this; only the opaque marker is kept.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// `<dir>/.wh..wh..opq` hides every lower-layer child of `<dir>`.
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// AUFS keeps the real inode of hardlinked files here, at the top of the layer.
const AUFS_LINK_DIR: &[u8] = b".wh..wh.plnk";

/// Size of the buffer file contents are copied through.
const COPY_BUF_LEN: usize = 256 * 1024;
/// While copying one large file, `cancelled` is polled after this many bytes.
const CANCEL_POLL_BYTES: u64 = 16 * 1024 * 1024;

/// How many bytes the tar reader may read on its way from one entry to the next, besides the
/// last entry's stored data it skips: the headers, the PAX record, GNU long name and long link
/// name of the next entry (each of which it reads into memory whole) and GNU sparse extension
/// blocks. Go's `archive/tar` refuses each record
/// of 1 MiB or more (`maxSpecialFileSize`); three of them may describe one entry.
pub const MAX_HEADER_BYTES: u64 = 3 * 1024 * 1024 + 64 * 1024;

/// Go's `archive/tar.ErrFieldTooLong`.
const HEADER_TOO_LONG: &str = "archive/tar: header field too long";

/// How a layer is unpacked.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Running as root: apply uid/gid, keep setuid/setgid/sticky bits, and create device nodes
    /// with `mknod`.
    pub is_root: bool,
    /// Refuse to write more than this many bytes of file data (a decompression-bomb bound);
    /// `None` means unbounded.
    pub max_bytes: Option<u64>,
    /// Refuse entries whose path below the layer root is longer than this many bytes (the
    /// published layer's paths must fit PATH_MAX); `None` means unbounded.
    pub max_path_len: Option<usize>,
}

/// What unpacking one layer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries read (long-name and pax headers folded into the entry they describe),
    /// including the ones skipped.
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub file_bytes: u64,
    /// Device nodes skipped because rpull is not root, plus device nodes and FIFOs the system
    /// refused to create (`EPERM`, as in a user namespace).
    pub skipped_devices: u64,
    /// Whiteout markers kept, opaque markers included.
    pub whiteouts: u64,
    /// Extended attributes the filesystem or the lack of privilege refused.
    pub skipped_xattrs: u64,
    /// Hardlinks whose target is not in this layer (it lives in a lower layer): (link path,
    /// target path), both relative to the layer root, sorted by link path. Nothing is created at
    /// the link path.
    pub external_hardlinks: Vec<(PathBuf, PathBuf)>,
    /// Directories created only because entries below them needed a parent, with no entry of
    /// their own, sorted. They carry no metadata from the layer (mode 0755, the current time), so
    /// when layers are merged the lower layer's directory should keep its own.
    pub implicit_dirs: Vec<PathBuf>,
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry's name climbs out of the root with `..`.
    #[error("invalid entry name {0:?}")]
    InvalidEntryName(String),
    /// A hardlink's target is outside the root, missing from the entry, or unusable.
    #[error("invalid hardlink target {target:?} of {name:?}: {reason}")]
    InvalidHardlink {
        /// The hardlink entry's name as it appears in the archive.
        name: String,
        /// The target as it appears in the archive.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A whiteout entry is malformed (a bare `.wh.`, or a whiteout used as a directory).
    #[error("invalid whiteout {name:?}: {reason}")]
    InvalidWhiteout {
        /// The entry's name as it appears in the archive.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A parent directory of an entry is a symlink; writing through it could escape the root.
    #[error(
        "resolved parent {parent:?} of {name:?} is a symlink, and writing through it could escape the root"
    )]
    SymlinkParent {
        /// The entry's name as it appears in the archive.
        name: String,
        /// The parent that is a symlink, relative to the layer root.
        parent: String,
    },
    /// The archive holds an entry type rpull does not know how to create.
    #[error("unsupported tar entry type '{}' for {name:?}", kind.escape_ascii())]
    UnsupportedEntryType {
        /// The entry's name as it appears in the archive.
        name: String,
        /// The raw type flag.
        kind: u8,
    },
    /// The tar stream is corrupt or ends early.
    #[error("invalid tar archive: {0}")]
    TarFormat(String),
    /// Reading the layer stream itself failed (network, decompression, digest check, …).
    #[error("reading layer stream: {0}")]
    Read(#[source] io::Error),
    /// A filesystem operation on `path` failed.
    #[error("unpacking {}", path.display())]
    Io {
        /// The path being created, changed or removed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The layer holds more file data than [`UnpackOptions::max_bytes`] allows.
    #[error("layer holds more than {limit} bytes of file data")]
    TooLarge {
        /// The limit that was exceeded.
        limit: u64,
    },
    /// An entry's path would not fit PATH_MAX once the layer is published.
    #[error("path {name:?} is too long: {len} bytes, more than the {limit} bytes that fit in PATH_MAX under the layer's directory")]
    PathTooLong {
        /// The entry's name as it appears in the archive.
        name: String,
        /// Its length below the layer root.
        len: usize,
        /// [`UnpackOptions::max_path_len`].
        limit: usize,
    },
    /// The caller asked to stop.
    #[error("unpacking cancelled")]
    Cancelled,
}

/// Unpacks the tar stream `r` into `dest`, an existing empty directory.
///
/// Reads `r` to its end, including any bytes after the tar end-of-archive blocks, because the
/// caller hashes the stream as it is read to compute the layer's diff ID. `cancelled` is polled
/// between entries (and every 16 MiB inside a large file); when it returns true, unpacking stops
/// with [`UnpackError::Cancelled`]. On error, `dest` is left partly filled for the caller to
/// remove.
pub fn unpack<R: Read>(
    r: R,
    dest: &Path,
    opts: &UnpackOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<UnpackStats, UnpackError> {
    let failed = Rc::new(Cell::new(false));
    let header_budget = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(Tracked {
        inner: r,
        failed: Rc::clone(&failed),
        header_budget: Rc::clone(&header_budget),
    });
    let mut u = Unpacker {
        dest,
        opts,
        stats: UnpackStats::default(),
        known_dirs: BTreeSet::new(),
        implicit_dirs: BTreeSet::new(),
        dir_meta: BTreeMap::new(),
        external: BTreeMap::new(),
        stash_used: false,
        failed,
        buf: vec![0; COPY_BUF_LEN],
    };
    {
        let mut entries = archive.entries().map_err(|e| u.stream_error(e))?;
        let mut stored_left = 0u64;
        loop {
            if cancelled() {
                return Err(UnpackError::Cancelled);
            }
            // On its way to the next entry the tar reader skips what is left of the last
            // one's stored data (streamed past, never held) and reads headers and the records
            // it keeps in memory: those are what the budget bounds.
            header_budget.set(Some(MAX_HEADER_BYTES.saturating_add(stored_left)));
            let next = entries.next();
            header_budget.set(None);
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| u.stream_error(e))?;
            stored_left = stored_size(&entry).saturating_add(511) & !511;
            u.entry(&mut entry, cancelled)?;
        }
    }
    // Whatever follows the first end-of-archive block still belongs to the blob's diff ID. As in
    // Go's archive/tar, the block after it must be zero too, if there is one.
    let mut rest = archive.into_inner();
    let mut since_poll = 0u64;
    let mut seen = 0usize;
    loop {
        match rest.read(&mut u.buf) {
            Ok(0) => break,
            Ok(n) => {
                let check = n.min(512usize.saturating_sub(seen));
                if u.buf[..check].iter().any(|&b| b != 0) {
                    return Err(UnpackError::TarFormat(
                        "invalid tar header: an end-of-archive block is followed by data".into(),
                    ));
                }
                seen += check;
                since_poll += n as u64;
                if since_poll >= CANCEL_POLL_BYTES {
                    since_poll = 0;
                    if cancelled() {
                        return Err(UnpackError::Cancelled);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UnpackError::Read(e)),
        }
    }
    u.finish()
}

/// The bytes `entry` takes in the archive after its header, before padding: its data as stored
/// (for a GNU sparse file, its fragments, not the holes the tar reader serves as zeros).
fn stored_size<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    if entry.header().entry_type().is_gnu_sparse() {
        entry.header().entry_size().unwrap_or(0)
    } else {
        entry.size()
    }
}

/// Remembers whether the underlying stream failed, to tell stream errors from tar format
/// errors, and refuses to read more than `header_budget` bytes while it is set.
struct Tracked<R> {
    inner: R,
    failed: Rc<Cell<bool>>,
    header_budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = self.header_budget.get();
        // One byte past the budget is enough to know it is exceeded.
        let max = budget.map_or(buf.len(), |left| buf.len().min(left.saturating_add(1) as usize));
        let res = self.inner.read(&mut buf[..max]);
        match (&res, budget) {
            (Err(_), _) => self.failed.set(true),
            (Ok(n), Some(left)) if *n as u64 > left => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, HEADER_TOO_LONG));
            }
            (Ok(n), Some(left)) => self.header_budget.set(Some(left - *n as u64)),
            _ => {}
        }
        res
    }
}

/// An entry's metadata, as it will be applied.
#[derive(Debug, Clone)]
struct Meta {
    /// Permission bits, already stripped of setuid/setgid/sticky when not root.
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    /// `SCHILY.xattr.*` records: (name, value).
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// What is applied to a directory once its contents are written: its mode and times.
#[derive(Debug, Clone, Copy)]
struct DirLater {
    mode: u32,
    mtime: (i64, u32),
}

/// What the parents of a path inside the layer turned out to be.
enum Parents {
    /// All real directories (now known).
    Dirs,
    /// One is missing (only when not creating them).
    Missing,
    /// One is a symlink: following it could leave the root.
    Symlink(PathBuf),
    /// One is something else than a directory.
    NotDir(PathBuf),
}

struct Unpacker<'a> {
    dest: &'a Path,
    opts: &'a UnpackOptions,
    stats: UnpackStats,
    /// Directories (relative to `dest`) known to be real directories, not symlinks. Entries
    /// are removed, with their descendants, when rpull removes the directory.
    known_dirs: BTreeSet<PathBuf>,
    /// Directories created as parents only (see [`UnpackStats::implicit_dirs`]).
    implicit_dirs: BTreeSet<PathBuf>,
    /// Directory metadata to apply at the end, by relative path.
    dir_meta: BTreeMap<PathBuf, DirLater>,
    /// Hardlinks into lower layers: link path → target path.
    external: BTreeMap<PathBuf, PathBuf>,
    /// Whether the AUFS hardlink stash (`dest/.wh..wh.plnk`) was created.
    stash_used: bool,
    failed: Rc<Cell<bool>>,
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Docker ignores pax global headers too.
            return Ok(());
        }
        // A PAX sparse file (GNU formats 0.0, 0.1, 1.0) names itself and its real size in
        // `GNU.sparse.*` records, as Go's archive/tar reads them.
        let sparse = if is_regular(kind) {
            self.pax_sparse(entry)?
        } else {
            None
        };
        let raw_name = match sparse.as_ref().and_then(|s| s.name.clone()) {
            Some(n) => n,
            None => entry.path_bytes().into_owned(),
        };
        let name = || lossy(&raw_name);
        let comps = clean(&raw_name, true).ok_or_else(|| UnpackError::InvalidEntryName(name()))?;
        let Some((&base, parents)) = comps.split_last() else {
            return Ok(()); // the root itself
        };

        if comps[0].starts_with(WHITEOUT_META_PREFIX) {
            if comps[0] == AUFS_LINK_DIR && comps.len() == 2 && is_regular(kind) {
                return self.stash_aufs_link(entry, base, cancelled);
            }
            if comps[..] != [WHITEOUT_OPAQUE] {
                return Ok(()); // other AUFS metadata
            }
        }
        if parents.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Err(UnpackError::InvalidWhiteout {
                name: name(),
                reason: "a whiteout cannot contain other entries",
            });
        }

        let rel: PathBuf = comps.iter().map(|c| OsStr::from_bytes(c)).collect();
        if let Some(limit) = self.opts.max_path_len {
            let len = rel.as_os_str().len();
            if len > limit {
                return Err(UnpackError::PathTooLong {
                    name: name(),
                    len,
                    limit,
                });
            }
        }
        if base.starts_with(WHITEOUT_PREFIX) {
            if base == WHITEOUT_PREFIX {
                return Err(UnpackError::InvalidWhiteout {
                    name: name(),
                    reason: "a whiteout must name the file it removes",
                });
            }
            if base.starts_with(WHITEOUT_META_PREFIX) && base != WHITEOUT_OPAQUE {
                return Ok(()); // AUFS metadata below the top level
            }
            return self.whiteout(&rel, &raw_name);
        }

        self.prepare_parent(&rel, &raw_name)?;
        let full = self.dest.join(&rel);
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = self.meta(entry)?;
                self.write_file(entry, sparse, &rel, &full, &raw_name, &meta, cancelled)
            }
            EntryType::Directory => {
                let meta = self.meta(entry)?;
                self.directory(&rel, &full, meta)
            }
            EntryType::Symlink => {
                let meta = self.meta(entry)?;
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.create_at(&rel, &full, |p| {
                    std::os::unix::fs::symlink(OsStr::from_bytes(&target), p)
                })?;
                self.apply_path_meta(&full, &meta, false)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(&rel, &full, &raw_name, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let meta = self.meta(entry)?;
                self.special(entry, kind, &rel, &full, &meta)
            }
            other => Err(UnpackError::UnsupportedEntryType {
                name: name(),
                kind: other.as_byte(),
            }),
        }
    }

    /// Walks the parents of `rel` inside the root without following symlinks, remembering the
    /// real directories it meets; with `create`, missing ones are made (mode 0755, as docker
    /// does). Stops at the first parent that is not a directory.
    fn walk_parents(&mut self, rel: &Path, create: bool) -> Result<Parents, UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() || self.known_dirs.contains(parent) {
            return Ok(Parents::Dirs);
        }
        let mut cur = PathBuf::new();
        for comp in parent.iter() {
            cur.push(comp);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => return Ok(Parents::Symlink(cur)),
                Ok(_) => return Ok(Parents::NotDir(full)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(Parents::Missing),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&full)
                        .map_err(|e| io_error(&full, e))?;
                    self.drop_external(&cur);
                    self.implicit_dirs.insert(cur.clone());
                }
                Err(e) => return Err(io_error(&full, e)),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(Parents::Dirs)
    }

    /// Makes sure every parent of `rel` is a real directory inside the root, creating missing
    /// ones. A parent that is a symlink is an error.
    fn prepare_parent(&mut self, rel: &Path, raw_name: &[u8]) -> Result<(), UnpackError> {
        match self.walk_parents(rel, true)? {
            Parents::Dirs | Parents::Missing => Ok(()),
            Parents::Symlink(parent) => Err(UnpackError::SymlinkParent {
                name: lossy(raw_name),
                parent: parent.to_string_lossy().into_owned(),
            }),
            Parents::NotDir(full) => Err(io_error(&full, io::Error::from_raw_os_error(libc::ENOTDIR))),
        }
    }

    /// Runs `create` on `full`; if something is already there, removes it and tries once more.
    fn create_at<T>(
        &mut self,
        rel: &Path,
        full: &Path,
        create: impl Fn(&Path) -> io::Result<T>,
    ) -> Result<T, UnpackError> {
        let made = match create(full) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(rel, full)?;
                create(full)
            }
            other => other,
        };
        let made = made.map_err(|e| io_error(full, e))?;
        self.drop_external(rel);
        Ok(made)
    }

    /// Removes whatever is at `full` (a directory with all its contents), without following
    /// symlinks, and forgets what was known about it.
    fn remove_existing(&mut self, rel: &Path, full: &Path) -> Result<(), UnpackError> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(full).map_err(|e| io_error(full, e))?;
                forget_tree(&mut self.known_dirs, rel);
                forget_tree(&mut self.implicit_dirs, rel);
                forget_tree_map(&mut self.dir_meta, rel);
                forget_tree_map(&mut self.external, rel);
            }
            Ok(_) => fs::remove_file(full).map_err(|e| io_error(full, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(full, e)),
        }
        self.drop_external(rel);
        Ok(())
    }

    /// A later entry at `rel` replaces an earlier hardlink into a lower layer.
    fn drop_external(&mut self, rel: &Path) {
        if !self.external.is_empty() {
            self.external.remove(rel);
        }
    }

    fn directory(&mut self, rel: &Path, full: &Path, meta: Meta) -> Result<(), UnpackError> {
        if !self.known_dirs.contains(rel) {
            let mkdir = |p: &Path| DirBuilder::new().mode(0o755).create(p);
            match mkdir(full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let is_dir = fs::symlink_metadata(full)
                        .map_err(|e| io_error(full, e))?
                        .is_dir();
                    if !is_dir {
                        self.remove_existing(rel, full)?;
                        mkdir(full).map_err(|e| io_error(full, e))?;
                    }
                }
                Err(e) => return Err(io_error(full, e)),
            }
            self.known_dirs.insert(rel.to_path_buf());
        }
        self.implicit_dirs.remove(rel);
        self.drop_external(rel);
        // Ownership and xattrs now; mode and times once the contents are written.
        if self.opts.is_root {
            chown(full, meta.uid, meta.gid)?;
        }
        self.set_xattrs(full, None, &meta.xattrs);
        // Only what is applied at the end is kept: a layer's xattrs (up to MiBs of PAX records
        // per entry) are not held for every directory until then.
        let later = DirLater {
            mode: meta.mode,
            mtime: meta.mtime,
        };
        self.dir_meta.insert(rel.to_path_buf(), later);
        Ok(())
    }

    /// Character and block devices and FIFOs.
    fn special<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        rel: &Path,
        full: &Path,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let is_fifo = kind == EntryType::Fifo;
        if !is_fifo && !self.opts.is_root {
            // Like docker in a user namespace: the path is cleared, the node is not created.
            self.remove_existing(rel, full)?;
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let header = entry.header();
        let number = |n: io::Result<Option<u32>>| n.map(|n| n.unwrap_or(0)).map_err(tar_format);
        // A FIFO has no device numbers; tars often leave the fields empty, which must not fail.
        let dev = if kind == EntryType::Fifo {
            0
        } else {
            libc::makedev(number(header.device_major())?, number(header.device_minor())?)
        };
        let type_bits = match kind {
            EntryType::Char => libc::S_IFCHR,
            EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        let made = self.create_at(rel, full, |p| {
            let c = cstring(p)?;
            // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
            let rc = unsafe { libc::mknod(c.as_ptr(), type_bits | 0o600, dev) };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
        match made {
            Ok(()) => self.apply_path_meta(full, meta, true),
            Err(UnpackError::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                // As when not root: the path is cleared, the node is not created.
                self.remove_existing(rel, full)?;
                self.stats.skipped_devices += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Applies directory modes and times (deepest first), removes the AUFS stash and returns
    /// the statistics.
    fn finish(mut self) -> Result<UnpackStats, UnpackError> {
        for (rel, meta) in self.dir_meta.iter().rev() {
            let full = self.dest.join(rel);
            fs::set_permissions(&full, Permissions::from_mode(meta.mode)).map_err(|e| io_error(&full, e))?;
            set_times(&full, meta.mtime)?;
        }
        if self.stash_used {
            let dir = self.dest.join(OsStr::from_bytes(AUFS_LINK_DIR));
            fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        }
        self.stats.external_hardlinks = std::mem::take(&mut self.external).into_iter().collect();
        self.stats.implicit_dirs = std::mem::take(&mut self.implicit_dirs).into_iter().collect();
        Ok(self.stats)
    }

    /// Classifies an error from the tar reader: a failure of the stream itself, or a format
    /// problem.
    fn stream_error(&self, e: io::Error) -> UnpackError {
        if self.failed.get() {
            UnpackError::Read(e)
        } else {
            tar_format(e)
        }
    }
}

/// Cleans a slash-separated name into its components, as Go's `filepath.Clean` would, without
/// the leading `/`. Returns `None` when `..` climbs above the start; with `clamp_rooted`, a
/// rooted name (`/../x`) is clamped at the root instead, as `Clean` does.
fn clean(name: &[u8], clamp_rooted: bool) -> Option<Vec<&[u8]>> {
    let clamp = clamp_rooted && name.first() == Some(&b'/');
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && !clamp {
                    return None;
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Removes `rel` and everything below it from a set of relative paths. Paths order by
/// component, so the descendants of `rel` follow it directly.
fn forget_tree(set: &mut BTreeSet<PathBuf>, rel: &Path) {
    let doomed: Vec<PathBuf> = set
        .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
        .take_while(|p| p.starts_with(rel))
        .cloned()
        .collect();
    for p in doomed {
        set.remove(&p);
    }
}

/// [`forget_tree`] for maps keyed by relative path.
fn forget_tree_map<V>(map: &mut BTreeMap<PathBuf, V>, rel: &Path) {
    let doomed: Vec<PathBuf> = map
        .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
        .take_while(|(p, _)| p.starts_with(rel))
        .map(|(p, _)| p.clone())
        .collect();
    for p in doomed {
        map.remove(&p);
    }
}

/// A numeric header field; an empty one (all NULs or spaces) reads as 0, as in Go's
/// `archive/tar`.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Result<u64, UnpackError> {
    match parsed {
        Ok(n) => Ok(n),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(tar_format(e)),
    }
}

fn tar_format(e: io::Error) -> UnpackError {
    UnpackError::TarFormat(e.to_string())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::files::{parse_sparse_pairs, read_sparse_map_1x0, valid_sparse_map};
    use super::meta::parse_pax_time;
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::Header;
    use tempfile::TempDir;

    const MTIME: u64 = 1_600_000_000;

    /// Builds tar archives header by header, so hostile names can be written.
    #[derive(Default)]
    struct Tar(Vec<u8>);

    impl Tar {
        fn header(name: &str, kind: EntryType, mode: u32, link: &str, size: u64) -> Header {
            let mut h = Header::new_gnu();
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(MTIME);
            h.set_uid(1234);
            h.set_gid(2345);
            h
        }

        fn push(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }

        fn raw(&mut self, name: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) -> &mut Self {
            self.push(Self::header(name, kind, mode, link, data.len() as u64), data)
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.raw(name, EntryType::Regular, 0o644, "", data)
        }

        fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
            self.raw(name, EntryType::Regular, mode, "", data)
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.raw(name, EntryType::Directory, mode, "", b"")
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(name, EntryType::Symlink, 0o777, target, b"")
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(name, EntryType::Link, 0o644, target, b"")
        }

        fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
            let mut h = Self::header(name, kind, 0o666, "", 0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            self.push(h, b"")
        }

        /// The archive with its two end-of-archive blocks.
        fn finish(&self) -> Vec<u8> {
            let mut v = self.0.clone();
            v.extend([0u8; 1024]);
            v
        }
    }

    /// A scratch area: `layer/` is the (empty) destination, `outside/victim` must never change.
    struct Scratch {
        _tmp: TempDir,
        dest: PathBuf,
        outside: PathBuf,
    }

    fn scratch() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("layer");
        let outside = tmp.path().join("outside");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"original").unwrap();
        Scratch {
            _tmp: tmp,
            dest,
            outside,
        }
    }

    impl Scratch {
        fn unpack_with(&self, tar: &[u8], opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
            unpack(tar, &self.dest, opts, &|| false)
        }

        fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
            self.unpack_with(tar, &UnpackOptions::default())
        }

        /// Unpacks a layer stream (not a tar in memory) with the default options.
        fn unpack_stream(&self, r: impl Read) -> Result<UnpackStats, UnpackError> {
            unpack(r, &self.dest, &UnpackOptions::default(), &|| false)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dest.join(rel)
        }

        fn read(&self, rel: &str) -> Vec<u8> {
            fs::read(self.path(rel)).unwrap()
        }

        fn lmeta(&self, rel: &str) -> fs::Metadata {
            fs::symlink_metadata(self.path(rel)).unwrap()
        }

        fn exists(&self, rel: &str) -> bool {
            fs::symlink_metadata(self.path(rel)).is_ok()
        }

        /// The area outside the layer holds exactly what `scratch()` put there.
        fn assert_outside_untouched(&self) {
            let names: Vec<_> = fs::read_dir(&self.outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["victim"]);
            assert_eq!(fs::read(self.outside.join("victim")).unwrap(), b"original");
            assert_eq!(fs::metadata(self.outside.join("victim")).unwrap().nlink(), 1);
            let parent: Vec<_> = fs::read_dir(self.dest.parent().unwrap()).unwrap().collect();
            assert_eq!(
                parent.len(),
                2,
                "something was created next to the layer directory"
            );
        }
    }

    /// Asserts that `tar`, unpacked into a fresh scratch root, fails on an invalid hardlink
    /// (the `case` names the target in the failure message).
    fn assert_invalid_hardlink(tar: &[u8], case: &str) {
        let res = scratch().unpack(tar);
        assert!(
            matches!(res, Err(UnpackError::InvalidHardlink { .. })),
            "a hardlink to {case}: {res:?}"
        );
    }

    fn mode(m: &fs::Metadata) -> u32 {
        m.mode() & 0o7777
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn sparse_maps_are_checked_as_go_does() {
        assert!(valid_sparse_map(&[(0, 5), (10, 5)], 15));
        assert!(!valid_sparse_map(&[(0, 5), (10, 5)], 14));
        assert!(!valid_sparse_map(&[(10, 5), (0, 5)], 20), "out of order");
        assert!(!valid_sparse_map(&[(0, 6), (5, 5)], 20), "overlapping");
        assert!(!valid_sparse_map(&[(u64::MAX, 2)], i64::MAX), "overflow");
        assert!(!valid_sparse_map(&[], -1));
        assert_eq!(parse_sparse_pairs(&["0", "-1"]), None);
        let mut data = b"1\n7\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abc");
        let mut r = &data[..];
        assert_eq!(read_sparse_map_1x0(&mut r).unwrap(), (vec![(7, 3)], 512));
        let mut short: &[u8] = b"1\n7\n";
        assert!(matches!(read_sparse_map_1x0(&mut short), Err(None)));
        // A count promising more than 1 MiB of map is refused once 1 MiB is read.
        let mut endless = (&b"999999999\n"[..]).chain(io::repeat(b'1'));
        assert!(matches!(read_sparse_map_1x0(&mut endless), Err(None)));
    }

    #[test]
    fn unpacks_files_dirs_symlinks_and_hardlinks() {
        let s = scratch();
        let tar = Tar::default()
            .dir("usr/", 0o755)
            .dir("usr/bin/", 0o750)
            .file_mode("usr/bin/tool", 0o755, b"#!/bin/sh\n")
            .symlink("usr/bin/abs", "/etc/passwd")
            .symlink("usr/bin/rel", "../lib/x")
            .hardlink("usr/bin/tool2", "usr/bin/tool")
            .hardlink("usr/bin/tool3", "/usr/bin/tool")
            .file("etc/config", b"implicit parent")
            .file_mode("./usr/readme", 0o640, b"hello")
            .dir("ro/", 0o555)
            .file_mode("ro/inner", 0o444, b"inside a read-only dir")
            .finish();
        let stats = s.unpack(&tar).unwrap();
        assert_eq!(stats.entries, 11);
        assert_eq!(stats.file_bytes, 10 + 15 + 5 + 22);
        assert_eq!((stats.whiteouts, stats.skipped_devices), (0, 0));
        assert!(stats.external_hardlinks.is_empty());

        assert_eq!(s.read("usr/bin/tool"), b"#!/bin/sh\n");
        assert_eq!(mode(&s.lmeta("usr/bin/tool")), 0o755);
        assert_eq!(mode(&s.lmeta("usr/readme")), 0o640);
        assert_eq!(mode(&s.lmeta("usr/bin")), 0o750);
        assert_eq!(mode(&s.lmeta("ro")), 0o555);
        assert_eq!(s.read("ro/inner"), b"inside a read-only dir");
        assert_eq!(mode(&s.lmeta("etc")) & 0o700, 0o700);
        assert_eq!(s.read("etc/config"), b"implicit parent");

        assert_eq!(
            fs::read_link(s.path("usr/bin/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::read_link(s.path("usr/bin/rel")).unwrap(),
            Path::new("../lib/x")
        );
        let ino = s.lmeta("usr/bin/tool").ino();
        assert_eq!(s.lmeta("usr/bin/tool2").ino(), ino);
        assert_eq!(s.lmeta("usr/bin/tool3").ino(), ino);

        // Times: files, symlinks, and directories whose contents were written after them.
        for rel in ["usr/bin/tool", "usr/bin/abs", "usr/bin", "usr", "ro"] {
            assert_eq!(s.lmeta(rel).mtime(), MTIME as i64, "{rel}");
        }
        s.assert_outside_untouched();
    }

    #[test]
    fn rooted_names_land_inside_and_the_root_is_skipped() {
        let s = scratch();
        let tar = Tar::default()
            .dir("./", 0o700)
            .dir("/", 0o700)
            .dir(".", 0o700)
            .file("/abs/file", b"a")
            .file("/../clamped", b"b")
            .file("a/../b", b"c")
            .file("//x//./y", b"d")
            .finish();
        let before = mode(&fs::metadata(&s.dest).unwrap());
        let stats = s.unpack(&tar).unwrap();
        assert_eq!(stats.entries, 7);
        assert_eq!(s.read("abs/file"), b"a");
        assert_eq!(s.read("clamped"), b"b");
        assert_eq!(s.read("b"), b"c");
        assert_eq!(s.read("x/y"), b"d");
        assert!(!s.exists("a"));
        assert_eq!(mode(&fs::metadata(&s.dest).unwrap()), before);
        s.assert_outside_untouched();
    }

    #[test]
    fn names_escaping_the_root_are_rejected() {
        for name in [
            "../x",
            "a/../../x",
            "..",
            "./../outside/victim",
            "../outside/victim",
        ] {
            let s = scratch();
            let tar = Tar::default().file("ok", b"1").file(name, b"pwned").finish();
            let err = s.unpack(&tar).unwrap_err();
            assert!(
                matches!(err, UnpackError::InvalidEntryName(ref n) if n == name),
                "{name}: {err:?}"
            );
            assert_eq!(err.to_string(), format!("invalid entry name {name:?}"));
            s.assert_outside_untouched();
        }
    }

    #[test]
    fn symlinked_parents_cannot_redirect_writes() {
        let s = scratch();
        let outside = s.outside.to_str().unwrap().to_string();
        let cases: [(&str, &str, &str); 4] = [
            ("evil", &outside, "evil/pwned"),
            ("rel", "../../../../../../../../..", "rel/tmp/pwned"),
            ("dir/link", "../../outside", "dir/link/victim"),
            ("dot", ".", "dot/x"),
        ];
        for (link, target, write) in cases {
            let s = scratch();
            let tar = Tar::default()
                .symlink(link, target)
                .file(write, b"pwned")
                .finish();
            let err = s.unpack(&tar).unwrap_err();
            assert!(
                matches!(err, UnpackError::SymlinkParent { .. }),
                "{write}: {err:?}"
            );
            assert!(err.to_string().starts_with("resolved parent"), "{err}");
            s.assert_outside_untouched();
        }
        // A directory entry through the symlink is refused too, and so is a hardlink at it.
        let tar = Tar::default()
            .symlink("evil", &outside)
            .dir("evil/sub/", 0o755)
            .finish();
        assert!(matches!(s.unpack(&tar), Err(UnpackError::SymlinkParent { .. })));
        s.assert_outside_untouched();
    }

    #[test]
    fn a_file_replaces_a_symlink_without_touching_its_target() {
        let s = scratch();
        let victim = s.outside.join("victim");
        let tar = Tar::default()
            .symlink("victim", victim.to_str().unwrap())
            .file("victim", b"new")
            .symlink("dirlink", s.outside.to_str().unwrap())
            .dir("dirlink/", 0o700)
            .finish();
        s.unpack(&tar).unwrap();
        assert!(s.lmeta("victim").is_file());
        assert_eq!(s.read("victim"), b"new");
        assert!(s.lmeta("dirlink").is_dir());
        s.assert_outside_untouched();
    }

    #[test]
    fn hardlink_targets_must_stay_inside() {
        let s = scratch();
        let outside = s.outside.to_str().unwrap().to_string();
        for target in [
            "../outside/victim",
            "/../outside/victim",
            "a/../../outside/victim",
        ] {
            let tar = Tar::default().hardlink("h", target).finish();
            let err = s.unpack(&tar).unwrap_err();
            assert!(
                matches!(err, UnpackError::InvalidHardlink { .. }),
                "{target}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid hardlink target {target:?}")),
                "{err}"
            );
        }
        // Never resolved through a symlink, wherever it points.
        let tar = Tar::default()
            .symlink("s", &outside)
            .hardlink("h", "s/victim")
            .finish();
        let err = s.unpack(&tar).unwrap_err();
        assert!(matches!(err, UnpackError::InvalidHardlink { reason, .. } if reason.contains("symlink")));
        s.assert_outside_untouched();

        for (case, tar) in [
            ("a directory", Tar::default().dir("d/", 0o755).hardlink("h", "d")),
            ("itself", Tar::default().file("f", b"x").hardlink("f", "f")),
            ("the root", Tar::default().hardlink("h", "/")),
        ] {
            assert_invalid_hardlink(&tar.finish(), case);
        }
    }

    #[test]
    fn a_hardlink_to_a_symlink_links_the_symlink_itself() {
        let s = scratch();
        let outside_victim = s.outside.join("victim");
        let tar = Tar::default()
            .symlink("sl", outside_victim.to_str().unwrap())
            .hardlink("hl", "sl")
            .finish();
        s.unpack(&tar).unwrap();
        let m = s.lmeta("hl");
        assert!(m.file_type().is_symlink());
        assert_eq!(m.ino(), s.lmeta("sl").ino());
        s.assert_outside_untouched();
    }

    #[test]
    fn hardlinks_into_lower_layers_are_reported() {
        let s = scratch();
        let tar = Tar::default()
            .hardlink("usr/lib/x", "/usr/lib/libc.so")
            .hardlink("y", "usr/lib/x")
            .hardlink("z", "lower/f")
            .file("z", b"replaced")
            .hardlink("gone/q", "lower/g")
            .file("gone", b"replaces the directory")
            .finish();
        let stats = s.unpack(&tar).unwrap();
        assert_eq!(
            stats.external_hardlinks,
            [
                (PathBuf::from("usr/lib/x"), PathBuf::from("usr/lib/libc.so")),
                (PathBuf::from("y"), PathBuf::from("usr/lib/libc.so")),
            ]
        );
        assert!(s.lmeta("usr/lib").is_dir());
        assert!(!s.exists("usr/lib/x"));
        assert!(!s.exists("y"));
        assert_eq!(s.read("z"), b"replaced");
    }

    #[test]
    fn implicit_parents_are_reported() {
        let s = scratch();
        let tar = Tar::default()
            .file("usr/lib/x", b"x")
            .dir("usr/", 0o700)
            .file("opt/a/b", b"x")
            .file("opt", b"replaces the implicit directory")
            .hardlink("var/lib/h", "lower/target")
            .finish();
        let stats = s.unpack(&tar).unwrap();
        let want: Vec<PathBuf> = ["usr/lib", "var", "var/lib"].iter().map(PathBuf::from).collect();
        assert_eq!(stats.implicit_dirs, want);
        assert_eq!(mode(&s.lmeta("usr")), 0o700);
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let s = scratch();
        let tar = Tar::default()
            .dir("a/", 0o755)
            .file("a/child", b"x")
            .file("a", b"file over dir")
            .file("b", b"x")
            .dir("b/", 0o711)
            .dir("c/", 0o700)
            .file("c/keep", b"kept")
            .dir("c/", 0o751)
            .file("d", b"one")
            .file("d", b"two")
            .symlink("e", "x")
            .dir("e/", 0o755)
            .file("f", b"x")
            .symlink("f", "/target")
            .hardlink("g", "d")
            .finish();
        s.unpack(&tar).unwrap();
        assert_eq!(s.read("a"), b"file over dir");
        assert!(s.lmeta("b").is_dir());
        assert_eq!(mode(&s.lmeta("b")), 0o711);
        assert_eq!(s.read("c/keep"), b"kept");
        assert_eq!(mode(&s.lmeta("c")), 0o751);
        assert_eq!(s.read("d"), b"two");
        assert!(s.lmeta("e").is_dir());
        assert_eq!(fs::read_link(s.path("f")).unwrap(), Path::new("/target"));
        assert_eq!(s.lmeta("g").ino(), s.lmeta("d").ino());
    }

    #[test]
    fn a_replaced_directory_gets_no_metadata_through_a_symlink() {
        let s = scratch();
        let outside = s.outside.to_str().unwrap().to_string();
        let before = fs::metadata(&s.outside).unwrap();
        let tar = Tar::default()
            .dir("f/", 0o700)
            .dir("f/g/", 0o700)
            .file("f/g/h", b"x")
            .symlink("f", &outside)
            .finish();
        s.unpack(&tar).unwrap();
        assert_eq!(fs::read_link(s.path("f")).unwrap(), s.outside);
        let after = fs::metadata(&s.outside).unwrap();
        assert_eq!((mode(&after), after.mtime()), (mode(&before), before.mtime()));
        s.assert_outside_untouched();
    }

    #[test]
    fn a_parent_that_is_a_file_is_an_error() {
        let s = scratch();
        let tar = Tar::default().file("f", b"x").file("f/x", b"y").finish();
        let err = s.unpack(&tar).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOTDIR)),
            "{err:?}"
        );
    }

    #[test]
    fn devices_and_fifos_when_not_root() {
        let s = scratch();
        let tar = Tar::default()
            .file("dev/null", b"an earlier file")
            .device("dev/null", EntryType::Char, 1, 3)
            .device("dev/sda", EntryType::Block, 8, 0)
            .device("run/fifo", EntryType::Fifo, 0, 0)
            .finish();
        let stats = s.unpack(&tar).unwrap();
        assert_eq!(stats.skipped_devices, 2);
        assert!(!s.exists("dev/null"));
        assert!(!s.exists("dev/sda"));
        assert!(s.lmeta("run/fifo").file_type().is_fifo());
        assert_eq!(mode(&s.lmeta("run/fifo")), 0o666);
    }

    #[test]
    fn devices_are_created_as_root() {
        if !is_root() {
            return;
        }
        let s = scratch();
        let tar = Tar::default()
            .device("dev/null", EntryType::Char, 1, 3)
            .device("dev/loop0", EntryType::Block, 7, 0)
            .device("fifo", EntryType::Fifo, 0, 0)
            .finish();
        let stats = s
            .unpack_with(
                &tar,
                &UnpackOptions {
                    is_root: true,
                    max_bytes: None,
                    max_path_len: None,
                },
            )
            .unwrap();
        assert_eq!(stats.skipped_devices, 0);
        let null = s.lmeta("dev/null");
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert_eq!(mode(&null), 0o666);
        assert_eq!((null.uid(), null.gid()), (1234, 2345));
        assert!(s.lmeta("dev/loop0").file_type().is_block_device());
        assert!(s.lmeta("fifo").file_type().is_fifo());
    }

    #[test]
    fn ownership_and_special_bits_only_as_root() {
        let tar = Tar::default()
            .file_mode("suid", 0o4755, b"x")
            .file_mode("sgid", 0o2711, b"x")
            .dir("tmp/", 0o1777)
            .symlink("link", "suid")
            .finish();
        let s = scratch();
        s.unpack(&tar).unwrap();
        assert_eq!(mode(&s.lmeta("suid")), 0o755);
        assert_eq!(mode(&s.lmeta("sgid")), 0o711);
        assert_eq!(mode(&s.lmeta("tmp")), 0o777);
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(s.lmeta("suid").uid(), me);

        if !is_root() {
            return;
        }
        let s = scratch();
        s.unpack_with(
            &tar,
            &UnpackOptions {
                is_root: true,
                max_bytes: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(mode(&s.lmeta("suid")), 0o4755);
        assert_eq!(mode(&s.lmeta("sgid")), 0o2711);
        assert_eq!(mode(&s.lmeta("tmp")), 0o1777);
        for rel in ["suid", "tmp", "link"] {
            let m = s.lmeta(rel);
            assert_eq!((m.uid(), m.gid()), (1234, 2345), "{rel}");
        }
    }

    #[test]
    fn whiteouts_are_kept_as_empty_files() {
        let s = scratch();
        let tar = Tar::default()
            .raw(".wh.gone", EntryType::Regular, 0o600, "", b"")
            .raw("etc/.wh.passwd", EntryType::Regular, 0o600, "", b"")
            .dir("var/cache/", 0o755)
            .raw("var/cache/.wh..wh..opq", EntryType::Regular, 0o600, "", b"")
            .raw("./.wh..wh..opq", EntryType::Regular, 0o600, "", b"")
            .raw("opt/.wh.was-a-dir", EntryType::Directory, 0o755, "", b"")
            .file(".wh..wh.aufs", b"aufs metadata")
            .dir(".wh..wh.orph/", 0o700)
            .file(".wh..wh.orph/x", b"aufs metadata")
            .file("a/.wh..wh.foo", b"aufs metadata")
            .finish();
        let stats = s.unpack(&tar).unwrap();
        assert_eq!(stats.whiteouts, 5);
        assert_eq!(stats.entries, 10);
        for rel in [
            ".wh.gone",
            "etc/.wh.passwd",
            "var/cache/.wh..wh..opq",
            ".wh..wh..opq",
            "opt/.wh.was-a-dir",
        ] {
            let m = s.lmeta(rel);
            assert!(m.is_file() && m.len() == 0, "{rel}");
        }
        assert!(!s.exists(".wh..wh.aufs"));
        assert!(!s.exists(".wh..wh.orph"));
        assert!(!s.exists("a/.wh..wh.foo"));
    }

    #[test]
    fn invalid_whiteouts_are_rejected() {
        for name in [".wh.", "a/.wh.", "a/.wh.b/c"] {
            let s = scratch();
            let tar = Tar::default().file(name, b"").finish();
            let err = s.unpack(&tar).unwrap_err();
            assert!(
                matches!(&err, UnpackError::InvalidWhiteout { name: n, .. } if n == name),
                "{err:?}"
            );
            assert!(err.to_string().starts_with(&format!("invalid whiteout {name:?}")));
        }
        assert_invalid_hardlink(&Tar::default().hardlink("h", ".wh.x").finish(), "a whiteout");
    }

    #[test]
    fn aufs_hardlinks_resolve_into_the_stash() {
        let s = scratch();
        let tar = Tar::default()
            .dir(".wh..wh.plnk/", 0o700)
            .file(".wh..wh.plnk/1234.56", b"shared")
            .hardlink("bin/x", ".wh..wh.plnk/1234.56")
            .hardlink("bin/y", "/.wh..wh.plnk/1234.56")
            .finish();
        let stats = s.unpack(&tar).unwrap();
        assert_eq!(s.read("bin/x"), b"shared");
        assert_eq!(s.lmeta("bin/x").ino(), s.lmeta("bin/y").ino());
        assert_eq!(s.lmeta("bin/x").nlink(), 2);
        assert!(!s.exists(".wh..wh.plnk"));
        assert!(stats.external_hardlinks.is_empty());

        let tar = Tar::default().hardlink("bin/x", ".wh..wh.plnk/missing").finish();
        assert_invalid_hardlink(&tar, "missing from the stash");
    }

    #[test]
    fn truncated_and_corrupt_archives_are_errors() {
        let s = scratch();
        // Cut in the middle of a file's data.
        let mut tar = Tar::default().file("big", &[7u8; 1000]).finish();
        tar.truncate(512 + 100);
        let err = s.unpack(&tar).unwrap_err();
        assert!(
            matches!(&err, UnpackError::TarFormat(m) if m.contains("unexpected end")),
            "{err:?}"
        );

        // A size far beyond the data: an error, not a panic or a huge allocation.
        let s = scratch();
        let mut t = Tar::default();
        t.push(
            Tar::header("huge", EntryType::Regular, 0o644, "", 1 << 40),
            b"just a few bytes",
        );
        let err = s.unpack(&t.0).unwrap_err();
        assert!(matches!(err, UnpackError::TarFormat(_)), "{err:?}");
        assert!(err.to_string().starts_with("invalid tar archive: "));

        // Cut in the middle of a header.
        let s = scratch();
        let tar = Tar::default().file("a", b"x").finish();
        assert!(matches!(s.unpack(&tar[..300]), Err(UnpackError::TarFormat(_))));

        // Not a tar at all.
        let s = scratch();
        let junk: Vec<u8> = (0..2048).map(|i| (i % 200 + 1) as u8).collect();
        assert!(matches!(s.unpack(&junk), Err(UnpackError::TarFormat(_))));

        // Ending cleanly after an entry without end-of-archive blocks is accepted, as in Go.
        let s = scratch();
        let t = Tar::default().file("a", b"x").0.clone();
        s.unpack(&t).unwrap();
        assert_eq!(s.read("a"), b"x");
    }

    #[test]
    fn max_bytes_stops_writing() {
        let s = scratch();
        let tar = Tar::default()
            .file("a", &[1u8; 600])
            .file("b", &[2u8; 600])
            .finish();
        let opts = UnpackOptions {
            is_root: false,
            max_bytes: Some(1000),
            ..Default::default()
        };
        let err = s.unpack_with(&tar, &opts).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge { limit: 1000 }));
        assert!(s.exists("a"));
        assert!(!s.exists("b"));

        // The bound applies before any data of an absurdly sized entry is written.
        let s = scratch();
        let mut t = Tar::default();
        t.push(Tar::header("huge", EntryType::Regular, 0o644, "", 1 << 40), b"x");
        let opts = UnpackOptions {
            is_root: false,
            max_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert!(matches!(
            s.unpack_with(&t.0, &opts),
            Err(UnpackError::TooLarge { .. })
        ));
        assert!(!s.exists("huge"));

        let s = scratch();
        let opts = UnpackOptions {
            is_root: false,
            max_bytes: Some(1200),
            ..Default::default()
        };
        assert_eq!(s.unpack_with(&tar, &opts).unwrap().file_bytes, 1200);
    }

    #[test]
    fn the_stream_is_read_to_its_end() {
        let s = scratch();
        let mut data = Tar::default().file("a", b"x").finish();
        // A 10 KiB tar record's padding, then trailing garbage.
        data.extend([0u8; 8192]);
        data.extend((0..100_000).map(|i| (i % 251) as u8));
        let mut rest: &[u8] = &data;
        s.unpack_stream(&mut rest).unwrap();
        assert!(rest.is_empty(), "{} bytes left unread", rest.len());
    }

    #[test]
    fn a_single_zero_block_followed_by_an_entry_is_an_error() {
        let s = scratch();
        let mut data = Tar::default().file("a", b"x").0.clone();
        data.extend([0u8; 512]);
        data.extend(Tar::default().file("hidden", b"y").finish());
        assert!(matches!(s.unpack(&data), Err(UnpackError::TarFormat(_))));
        assert!(!s.exists("hidden"));
        // One zero block and then the end of the stream is fine.
        let s = scratch();
        let mut data = Tar::default().file("a", b"x").0.clone();
        data.extend([0u8; 512]);
        s.unpack(&data).unwrap();
    }

    #[test]
    fn cancellation_stops_between_entries() {
        let s = scratch();
        let tar = Tar::default()
            .file("a", b"1")
            .file("b", b"2")
            .file("c", b"3")
            .finish();
        let calls = Cell::new(0);
        let cancelled = || {
            calls.set(calls.get() + 1);
            calls.get() > 2
        };
        let err = unpack(&tar[..], &s.dest, &UnpackOptions::default(), &cancelled).unwrap_err();
        assert!(matches!(err, UnpackError::Cancelled));
        assert!(s.exists("a") && s.exists("b"));
        assert!(!s.exists("c"));
    }

    #[test]
    fn long_names_and_pax_records() {
        let s = scratch();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(80));
        let target = format!("/{}", "t".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o600);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &long, &b"long"[..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "sym", &target).unwrap();
        let pax_name = format!("pax/{}", "p".repeat(200));
        b.append_pax_extensions([
            ("path", pax_name.as_bytes()),
            ("mtime", &b"1600000000.25"[..]),
            ("SCHILY.xattr.user.rpull", &b"yes"[..]),
        ])
        .unwrap();
        let mut h = Header::new_ustar();
        h.set_path("placeholder").unwrap();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"pax"[..]).unwrap();
        let tar = b.into_inner().unwrap();

        let stats = s.unpack(&tar).unwrap();
        assert_eq!(stats.entries, 3);
        assert_eq!(s.read(&long), b"long");
        assert_eq!(fs::read_link(s.path("sym")).unwrap(), Path::new(&target));
        assert_eq!(s.read(&pax_name), b"pax");
        assert!(!s.exists("placeholder"));
        let m = s.lmeta(&pax_name);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 250_000_000));
        // The xattr is applied where the filesystem allows it, and counted otherwise.
        let path = cstring(&s.path(&pax_name)).unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: valid path and name, and a buffer of the stated length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                c"user.rpull".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if stats.skipped_xattrs == 0 {
            assert_eq!(&buf[..n as usize], b"yes");
        } else {
            assert_eq!((stats.skipped_xattrs, n), (1, -1));
        }
    }

    /// A tar whose one file `f` is described by a PAX record `comment` of `pax_len` bytes
    /// and, when `long_name` is given, a GNU long name of that many bytes.
    fn tar_with_records(pax_len: usize, long_name: Option<usize>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let comment = vec![b'c'; pax_len];
        b.append_pax_extensions([("comment", &comment[..])]).unwrap();
        let name = match long_name {
            Some(n) => format!("{}f", "d/".repeat(n / 2)),
            None => "f".to_string(),
        };
        let mut h = Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &name, &b"ok"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn header_records_are_bounded() {
        // Within Go's limits: a 900 KiB PAX record and a long name.
        let s = scratch();
        let stats = s.unpack(&tar_with_records(900 << 10, Some(300))).unwrap();
        assert_eq!(stats.entries, 1);
        // A 4 MiB record (the tar reader would hold it in memory whole) is refused with Go's
        // text before it is read to its end, from a stream as from memory.
        let big = tar_with_records(4 << 20, None);
        for err in [
            scratch().unpack(&big).unwrap_err(),
            scratch().unpack_stream(&big[..]).unwrap_err(),
        ] {
            assert!(
                matches!(&err, UnpackError::TarFormat(m) if m == HEADER_TOO_LONG),
                "{err:?}"
            );
        }
        // A GNU long name is bounded the same way.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, "x".repeat(4 << 20), &b""[..]).unwrap();
        let err = scratch().unpack(&b.into_inner().unwrap()).unwrap_err();
        assert!(
            matches!(&err, UnpackError::TarFormat(m) if m == HEADER_TOO_LONG),
            "{err:?}"
        );
    }

    #[test]
    fn a_sparse_entry_rpull_does_not_write_is_skipped_by_its_stored_size() {
        // A GNU sparse whiteout with no data and one 2^62-byte hole: the tar reader would
        // serve the hole as zeros to whoever reads the entry; skipping it must not.
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..5].copy_from_slice(b".wh.x");
        h.set_entry_type(EntryType::GNUSparse);
        h.set_size(0);
        h.set_mode(0o644);
        let huge = 1u64 << 62;
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].offset = {
            let mut f = [0u8; 12];
            f[0] = 0x80;
            f[4..].copy_from_slice(&huge.to_be_bytes());
            f
        };
        gnu.sparse[0].numbytes = *b"00000000000\0";
        gnu.realsize = gnu.sparse[0].offset;
        let mut tar = Tar::default();
        tar.push(h, b"");
        tar.file("after", b"x");
        let archive = tar.finish();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = scratch();
            let _ = tx.send((s.unpack(&archive).map(|st| st.entries), s.exists("after")));
        });
        let (entries, after) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("unpacking a 2^62-byte hole of an unwritten entry did not end");
        assert_eq!((entries.unwrap(), after), (2, true));
    }

    #[test]
    fn data_rpull_skips_does_not_count_as_headers() {
        // A PAX global header is an entry rpull ignores; its 8 MiB are streamed past, not held.
        let s = scratch();
        let mut tar = Tar::default();
        tar.raw(
            "pax_global_header",
            EntryType::XGlobalHeader,
            0o644,
            "",
            &vec![b'g'; 8 << 20],
        );
        tar.file("after", b"x");
        let stats = s.unpack(&tar.finish()).unwrap();
        assert_eq!(stats.entries, 2);
        assert_eq!(s.read("after"), b"x");
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time(b"1600000000"), Some((1_600_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1600000000.123456789123"),
            Some((1_600_000_000, 123_456_789))
        );
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b".5"), None);
        assert_eq!(parse_pax_time(b"1.5e3"), None);
    }

    #[test]
    fn unknown_types_fail_and_global_headers_are_ignored() {
        let s = scratch();
        let tar = Tar::default()
            .raw(
                "pax_global_header",
                EntryType::XGlobalHeader,
                0o644,
                "",
                b"18 comment=hello\n",
            )
            .file("a", b"x")
            .finish();
        s.unpack(&tar).unwrap();
        assert!(!s.exists("pax_global_header"));

        let s = scratch();
        let tar = Tar::default()
            .raw("vol", EntryType::new(b'V'), 0o644, "", b"")
            .finish();
        let err = s.unpack(&tar).unwrap_err();
        assert_eq!(err.to_string(), "unsupported tar entry type 'V' for \"vol\"");
    }

    /// A reader that fails after handing out `data`.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("connection reset"));
            }
            let n = self.0.read(buf)?;
            Ok(n)
        }
    }

    #[test]
    fn stream_errors_are_not_format_errors() {
        let s = scratch();
        let tar = Tar::default().file("a", &[1u8; 5000]).finish();
        for cut in [100, 512 + 1000, 512 + 5120] {
            let err = s.unpack_stream(Failing(&tar[..cut])).unwrap_err();
            assert!(
                matches!(&err, UnpackError::Read(e) if e.to_string() == "connection reset"),
                "{cut}: {err:?}"
            );
        }
    }

    #[test]
    fn gzip_layers_are_checked_to_the_last_byte() {
        use std::io::Write as _;
        let tar = Tar::default().file("etc/os-release", b"ID=test\n").finish();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).unwrap();
        let mut gz = enc.finish().unwrap();

        let s = scratch();
        let stats = s
            .unpack_stream(crate::compression::decoder(&gz[..]).unwrap())
            .unwrap();
        assert_eq!(stats.file_bytes, 8);
        assert_eq!(s.read("etc/os-release"), b"ID=test\n");

        // A bad CRC in the gzip trailer is only seen when the stream is drained after the tar end.
        let n = gz.len();
        gz[n - 8] ^= 0xFF;
        let s = scratch();
        let err = s
            .unpack_stream(crate::compression::decoder(&gz[..]).unwrap())
            .unwrap_err();
        assert!(matches!(err, UnpackError::Read(_)), "{err:?}");
    }
}
