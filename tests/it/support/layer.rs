//! Layer tarballs, written entry by entry with full control of the header bytes.
//!
//! [`LayerBuilder`] writes every header itself (USTAR, with PAX records for long names) instead of
//! going through `tar::Builder::append_data`, whose path checks would refuse the hostile names
//! that unpack tests need (`../x`, `/etc/passwd`). Output is deterministic: fixed mtime, uid and
//! gid 0, empty user and group names, fixed compression levels. The same builder therefore always
//! gives the same `diff_id` and `digest`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use tar::{EntryType, Header};

use super::{pseudo_random_bytes, sha256_digest};

/// The mtime written into every header unless an [`Entry`] sets its own (2023-11-14T22:13:20Z).
pub const FIXED_MTIME: u64 = 1_700_000_000;

/// Tars larger than this are gzipped with stored (level 0) deflate blocks.
pub const GZIP_STORED_ABOVE: usize = 1 << 20;

/// How a layer blob is compressed. (The harness's own enum, independent of rpull's.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip: level 1 up to [`GZIP_STORED_ABOVE`] bytes, stored (level 0) blocks above it. zlib-rs
    /// deflates at ~5 MB/s in an unoptimised test build, and deflate falls back to stored blocks
    /// for incompressible data anyway, so big random layers look the same either way.
    Gzip,
    /// zstd at level 3.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The Docker schema2 layer media type for this compression.
    pub fn docker_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
        }
    }

    /// Compresses `data`.
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        match self {
            Compression::Gzip => {
                let out = Vec::with_capacity(data.len() / 2 + 64);
                let level = if data.len() > GZIP_STORED_ABOVE {
                    flate2::Compression::none()
                } else {
                    flate2::Compression::fast()
                };
                let mut enc = flate2::write::GzEncoder::new(out, level);
                enc.write_all(data).expect("gzip into memory");
                enc.finish().expect("gzip into memory")
            }
            Compression::Zstd => zstd::bulk::compress(data, 3).expect("zstd into memory"),
            Compression::None => data.to_vec(),
        }
    }
}

/// A built layer: the blob to push and the digests a manifest and config refer to it by.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The (possibly compressed) bytes pushed to the registry.
    pub blob: Vec<u8>,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// `sha256:` of [`Layer::tar`]; goes into the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// `sha256:` of [`Layer::blob`]; goes into the manifest.
    pub digest: String,
    /// The media type written in manifests. [`LayerBuilder::build`] sets the OCI type;
    /// [`super::image::Image::manifest`] maps the three standard OCI layer types to their
    /// Docker equivalents for schema2 manifests and writes anything else verbatim.
    pub media_type: String,
    /// How [`Layer::blob`] was made from [`Layer::tar`].
    pub compression: Compression,
}

impl Layer {
    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    /// A layer of `tar` whose blob is `blob` as given: `tar` compressed with `compression`, or
    /// bytes that only claim to be (broken compression). Both digests are computed here; the
    /// media type is the OCI one.
    pub fn from_blob(tar: Vec<u8>, blob: Vec<u8>, compression: Compression) -> Layer {
        Layer {
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&blob),
            media_type: compression.oci_media_type().to_string(),
            compression,
            blob,
            tar,
        }
    }

    /// Replaces the media type written in manifests (e.g. for unknown-type tests).
    pub fn with_media_type(mut self, media_type: impl Into<String>) -> Layer {
        self.media_type = media_type.into();
        self
    }

    /// A layer holding one file `path` of `len` pseudo-random bytes from `seed`: incompressible,
    /// so the blob is about `len` bytes and takes visible time to download. Layers are memoised
    /// per test binary, as hashing many megabytes is slow in an unoptimised build.
    pub fn random(path: &str, len: usize, seed: u64, compression: Compression) -> Layer {
        type Key = (String, usize, u64, Compression);
        static CACHE: OnceLock<Mutex<HashMap<Key, Layer>>> = OnceLock::new();
        let key = (path.to_string(), len, seed, compression);
        let cache = CACHE.get_or_init(Default::default);
        if let Some(layer) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return layer.clone();
        }
        let layer = LayerBuilder::new()
            .random_file(path, len, seed)
            .build(compression);
        cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, layer.clone());
        layer
    }
}

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`'0'`).
    File,
    /// A directory (`'5'`).
    Dir,
    /// A symbolic link (`'2'`) to [`Entry::link`].
    Symlink,
    /// A hard link (`'1'`) to the earlier entry named [`Entry::link`].
    Hardlink,
    /// A FIFO (`'6'`).
    Fifo,
    /// A character device (`'3'`) with [`Entry::device`].
    CharDevice,
    /// A block device (`'4'`) with [`Entry::device`].
    BlockDevice,
    /// Any other type flag, written as is.
    Other(u8),
}

impl EntryKind {
    fn entry_type(self) -> EntryType {
        match self {
            EntryKind::File => EntryType::Regular,
            EntryKind::Dir => EntryType::Directory,
            EntryKind::Symlink => EntryType::Symlink,
            EntryKind::Hardlink => EntryType::Link,
            EntryKind::Fifo => EntryType::Fifo,
            EntryKind::CharDevice => EntryType::Char,
            EntryKind::BlockDevice => EntryType::Block,
            EntryKind::Other(b) => EntryType::new(b),
        }
    }
}

/// One tar entry, with every field under the test's control.
///
/// The name and link name are raw bytes written into the header as they are: nothing is
/// cleaned or checked, so `..`, absolute and non-UTF-8 names go through. Names over 100 bytes
/// are carried in a PAX `path` / `linkpath` record, as Go's archive/tar does.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry name, verbatim.
    pub name: Vec<u8>,
    /// The type flag.
    pub kind: EntryKind,
    /// Permission bits (e.g. `0o644`), without file-type bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// The file contents (regular files; may also be set on other kinds for hostile tests).
    pub data: Vec<u8>,
    /// The link target of symlinks and hard links, verbatim.
    pub link: Option<Vec<u8>>,
    /// Device `(major, minor)`.
    pub device: (u32, u32),
    /// Extra PAX records written before the entry (e.g. `SCHILY.xattr.user.k`), in order.
    pub pax: Vec<(String, Vec<u8>)>,
    /// Overrides the header's size field (for truncated-entry tests); `None` means `data.len()`.
    pub size_override: Option<u64>,
}

impl Entry {
    /// An entry of `kind` named `name`, with defaults: mode 0o644 (0o755 for dirs), owner 0:0,
    /// [`FIXED_MTIME`], no data, no link.
    pub fn new(kind: EntryKind, name: impl AsRef<[u8]>) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: FIXED_MTIME,
            data: Vec::new(),
            link: None,
            device: (0, 0),
            pax: Vec::new(),
            size_override: None,
        }
    }

    /// A regular file holding `data`.
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        Entry {
            data: data.as_ref().to_vec(),
            ..Entry::new(EntryKind::File, name)
        }
    }

    /// A symlink to `target`.
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry {
            link: Some(target.as_ref().to_vec()),
            mode: 0o777,
            ..Entry::new(EntryKind::Symlink, name)
        }
    }

    /// A hard link to the earlier entry `target`.
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry {
            link: Some(target.as_ref().to_vec()),
            ..Entry::new(EntryKind::Hardlink, name)
        }
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the modification time.
    pub fn mtime(mut self, mtime: u64) -> Entry {
        self.mtime = mtime;
        self
    }

    /// Adds a PAX record.
    pub fn pax(mut self, key: impl Into<String>, value: impl AsRef<[u8]>) -> Entry {
        self.pax.push((key.into(), value.as_ref().to_vec()));
        self
    }
}

/// Builds a layer tar entry by entry, in the order given. Parent directories are not added
/// implicitly.
///
/// ```ignore
/// let layer = LayerBuilder::new()
///     .dir("etc", 0o755)
///     .file("etc/hostname", b"box\n", 0o644)
///     .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
///     .whiteout("etc/motd")
///     .build(Compression::Gzip);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
}

impl LayerBuilder {
    /// An empty layer (a tar of just the two end-of-archive blocks).
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    /// Appends any entry, verbatim.
    pub fn entry(mut self, entry: Entry) -> LayerBuilder {
        self.entries.push(entry);
        self
    }

    /// A directory; a trailing `/` is added to the name, as docker's tars have.
    pub fn dir(self, path: &str, mode: u32) -> LayerBuilder {
        let name = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        self.entry(Entry::new(EntryKind::Dir, name).mode(mode))
    }

    /// A regular file.
    pub fn file(self, path: &str, data: impl AsRef<[u8]>, mode: u32) -> LayerBuilder {
        self.entry(Entry::file(path, data).mode(mode))
    }

    /// A regular file of `len` pseudo-random bytes from `seed`.
    pub fn random_file(self, path: &str, len: usize, seed: u64) -> LayerBuilder {
        self.entry(Entry::file(path, pseudo_random_bytes(len, seed)))
    }

    /// A symlink `path` -> `target` (written verbatim, absolute or not).
    pub fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.entry(Entry::symlink(path, target))
    }

    /// A hard link `path` to the earlier entry `target`.
    pub fn hardlink(self, path: &str, target: &str) -> LayerBuilder {
        self.entry(Entry::hardlink(path, target))
    }

    /// A whiteout deleting `path` from lower layers: an empty file `dir/.wh.name`.
    pub fn whiteout(self, path: &str) -> LayerBuilder {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), path.trim_end_matches('/')),
        };
        self.entry(Entry::file(format!("{dir}.wh.{name}"), b""))
    }

    /// An opaque-directory marker hiding everything lower layers put in `dir`:
    /// `dir/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> LayerBuilder {
        let dir = dir.trim_end_matches('/');
        self.entry(Entry::file(format!("{dir}/.wh..wh..opq"), b""))
    }

    /// A FIFO.
    pub fn fifo(self, path: &str, mode: u32) -> LayerBuilder {
        self.entry(Entry::new(EntryKind::Fifo, path).mode(mode))
    }

    /// A character device.
    pub fn char_device(self, path: &str, major: u32, minor: u32, mode: u32) -> LayerBuilder {
        self.entry(Entry {
            device: (major, minor),
            ..Entry::new(EntryKind::CharDevice, path).mode(mode)
        })
    }

    /// A block device.
    pub fn block_device(self, path: &str, major: u32, minor: u32, mode: u32) -> LayerBuilder {
        self.entry(Entry {
            device: (major, minor),
            ..Entry::new(EntryKind::BlockDevice, path).mode(mode)
        })
    }

    /// A regular file with a raw, unchecked name (`../../etc/passwd`, `/abs`, `a/../../b`).
    pub fn raw_file(self, name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> LayerBuilder {
        self.entry(Entry::file(name, data))
    }

    /// A symlink with raw, unchecked name and target.
    pub fn raw_symlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> LayerBuilder {
        self.entry(Entry::symlink(name, target))
    }

    /// A hard link with raw, unchecked name and target.
    pub fn raw_hardlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> LayerBuilder {
        self.entry(Entry::hardlink(name, target))
    }

    /// The entries so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            write_entry(&mut out, entry);
        }
        out.into_inner().expect("tar into memory")
    }

    /// Builds the tar, compresses it, and computes both digests. The media type is the OCI one.
    pub fn build(&self, compression: Compression) -> Layer {
        let tar = self.tar();
        let blob = compression.compress(&tar);
        Layer::from_blob(tar, blob, compression)
    }
}

/// Three layers of distinct content, in this order: `etc/` with `etc/os-release`, `usr/` with
/// `usr/blob.bin` of `blob_len` pseudo-random bytes from `seed`, and `hello.txt`; each
/// compressed as `compression` says.
pub fn three_layers(compression: [Compression; 3], blob_len: usize, seed: u64) -> Vec<Layer> {
    vec![
        LayerBuilder::new()
            .dir("etc", 0o755)
            .file("etc/os-release", "ID=test\n", 0o644)
            .build(compression[0]),
        LayerBuilder::new()
            .dir("usr", 0o755)
            .random_file("usr/blob.bin", blob_len, seed)
            .build(compression[1]),
        LayerBuilder::new()
            .file("hello.txt", "hello\n", 0o644)
            .build(compression[2]),
    ]
}

fn write_entry(out: &mut tar::Builder<Vec<u8>>, entry: &Entry) {
    let mut pax = entry.pax.clone();
    if entry.name.len() > 100 {
        pax.push(("path".into(), entry.name.clone()));
    }
    if let Some(link) = entry.link.as_ref().filter(|link| link.len() > 100) {
        pax.push(("linkpath".into(), link.clone()));
    }
    if !pax.is_empty() {
        let records = pax_records(&pax);
        let mut name = b"PaxHeaders.0/".to_vec();
        name.extend_from_slice(&entry.name[entry.name.len().saturating_sub(80)..]);
        let mut header = header(&name, None, EntryType::XHeader, 0o644, 0, 0, entry.mtime);
        header.set_size(records.len() as u64);
        header.set_cksum();
        out.append(&header, &records[..]).expect("tar into memory");
    }

    let kind = entry.kind.entry_type();
    let mut header = header(
        &entry.name,
        entry.link.as_deref(),
        kind,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.mtime,
    );
    if matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        header
            .set_device_major(entry.device.0)
            .expect("ustar header has device fields");
        header
            .set_device_minor(entry.device.1)
            .expect("ustar header has device fields");
    }
    header.set_size(entry.size_override.unwrap_or(entry.data.len() as u64));
    header.set_cksum();
    // `append` writes the header as is, then the data padded to 512 bytes.
    out.append(&header, &entry.data[..]).expect("tar into memory");
}

/// A USTAR header with the name and link name bytes copied in directly (truncated to the
/// 100-byte fields; longer names also go into a PAX record).
fn header(
    name: &[u8],
    link: Option<&[u8]>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
) -> Header {
    let mut header = Header::new_ustar();
    let old = header.as_old_mut();
    let n = name.len().min(old.name.len());
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

/// PAX extended-header records: `"<len> <key>=<value>\n"`, where `<len>` counts itself.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}
