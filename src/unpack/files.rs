//! Regular files: an entry's data written to a new file, and sparse files (GNU `S` entries
//! and PAX sparse formats 0.0, 0.1 and 1.0, as Go's `archive/tar` reads them) written as
//! their fragments with holes between.

use super::*;

impl Unpacker<'_> {
    /// Refuses a file of `size` bytes that would take the layer past
    /// [`UnpackOptions::max_bytes`], before anything of it is written.
    fn check_room_for(&self, size: u64) -> Result<(), UnpackError> {
        match self.opts.max_bytes {
            Some(limit) if self.stats.file_bytes.saturating_add(size) > limit => {
                Err(UnpackError::TooLarge { limit })
            }
            _ => Ok(()),
        }
    }

    /// Copies the next chunk of `entry`'s data, at most `want` bytes, into `out` and returns
    /// its length (0 at the end of the data). Every [`CANCEL_POLL_BYTES`] written to `out`,
    /// its `cancelled` is asked.
    fn copy_chunk<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut Output<'_>,
        want: usize,
    ) -> Result<usize, UnpackError> {
        let n = loop {
            match entry.read(&mut self.buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_error(e)),
            }
        };
        if n == 0 {
            return Ok(0);
        }
        out.file
            .write_all(&self.buf[..n])
            .map_err(|e| io_error(out.full, e))?;
        out.since_poll += n as u64;
        if out.since_poll >= CANCEL_POLL_BYTES {
            out.since_poll = 0;
            if (out.cancelled)() {
                return Err(UnpackError::Cancelled);
            }
        }
        Ok(n)
    }

    /// Writes a regular file at `full`: its data as stored or, for a PAX sparse file
    /// (`sparse`), its data fragments at their offsets with holes in between, the file as long
    /// as its real size (what Go's sparse reader hands docker's unpacker).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        sparse: Option<PaxSparse>,
        rel: &Path,
        full: &Path,
        raw_name: &[u8],
        meta: &Meta,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), UnpackError> {
        let layout = match sparse {
            Some(sparse) => Some(self.sparse_layout(entry, sparse, raw_name)?),
            None => None,
        };
        let size = layout.as_ref().map_or(entry.size(), |l| l.size);
        self.check_room_for(size)?;
        let mut out = Output {
            file: self.create_at(rel, full, open_new)?,
            full,
            raw_name,
            since_poll: 0,
            cancelled,
        };
        match layout {
            Some(layout) => self.copy_fragments(entry, &mut out, layout)?,
            None => self.copy_data(entry, &mut out, size)?,
        }
        self.stats.file_bytes += size;
        self.apply_file_meta(&out.file, full, meta)
    }

    /// Copies all of a plain file's `size` bytes of data into `out`.
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut Output<'_>,
        size: u64,
    ) -> Result<(), UnpackError> {
        let mut written = 0u64;
        loop {
            let want = self.buf.len();
            let n = self.copy_chunk(entry, out, want)?;
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        if written != size {
            return Err(UnpackError::TarFormat(format!(
                "unexpected end of archive in {:?}: expected {size} bytes of data, got {written}",
                lossy(out.raw_name)
            )));
        }
        Ok(())
    }

    /// The `GNU.sparse.*` records of a PAX sparse file, as Go's `readGNUSparsePAXHeaders`
    /// reads them: format 1.0 (`major` 1, `minor` 0: the map is at the start of the data),
    /// 0.1 (`GNU.sparse.map`) or 0.0 (repeated `GNU.sparse.offset`/`numbytes`). `None` when the
    /// entry is not one (or of an unknown version, which Go treats as a plain file).
    pub(super) fn pax_sparse<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Option<PaxSparse>, UnpackError> {
        let bad = |what: &str| UnpackError::TarFormat(format!("invalid PAX sparse header: {what}"));
        let Some(pax) = entry.pax_extensions().map_err(|e| self.stream_error(e))? else {
            return Ok(None);
        };
        let (mut major, mut minor, mut map, mut numblocks) = (None, None, None::<String>, None);
        let (mut name, mut size, mut realsize) = (None, None, None);
        let mut pairs: Vec<String> = Vec::new();
        for record in pax {
            let record = record.map_err(tar_format)?;
            let value = || String::from_utf8_lossy(record.value_bytes()).into_owned();
            match record.key_bytes() {
                b"GNU.sparse.major" => major = Some(value()),
                b"GNU.sparse.minor" => minor = Some(value()),
                b"GNU.sparse.map" => map = Some(value()),
                b"GNU.sparse.numblocks" => numblocks = Some(value()),
                b"GNU.sparse.name" => name = Some(record.value_bytes().to_vec()),
                b"GNU.sparse.size" => size = Some(value()),
                b"GNU.sparse.realsize" => realsize = Some(value()),
                key @ (b"GNU.sparse.offset" | b"GNU.sparse.numbytes") => {
                    // Format 0.0: offsets and sizes alternate, collected into the map.
                    let offset_turn = pairs.len().is_multiple_of(2);
                    if offset_turn != (key == b"GNU.sparse.offset") || value().contains(',') {
                        return Err(bad("GNU.sparse.offset and GNU.sparse.numbytes do not alternate"));
                    }
                    pairs.push(value());
                }
                _ => {}
            }
        }
        if !pairs.is_empty() {
            map = Some(pairs.join(","));
        }
        let format_1x0 = match (major.as_deref(), minor.as_deref()) {
            (Some("0"), Some("0" | "1")) => false,
            (Some("1"), Some("0")) => true,
            (Some(_), _) | (_, Some(_)) => return Ok(None),
            (None, None) if map.as_deref().is_some_and(|m| !m.is_empty()) => false,
            (None, None) => return Ok(None),
        };
        let real_size = match size.or(realsize).filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse::<i64>().map_err(|_| bad("GNU.sparse.size"))?),
            None => None,
        };
        let map = if format_1x0 {
            None
        } else {
            let count: i64 = numblocks
                .unwrap_or_default()
                .parse()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("GNU.sparse.numblocks"))?;
            let tokens: Vec<&str> = match map.as_deref() {
                None | Some("") => Vec::new(),
                Some(m) => m.split(',').collect(),
            };
            if tokens.len() as u64 != 2 * count as u64 {
                return Err(bad("GNU.sparse.map does not have GNU.sparse.numblocks entries"));
            }
            Some(parse_sparse_pairs(&tokens).ok_or_else(|| bad("GNU.sparse.map"))?)
        };
        Ok(Some(PaxSparse {
            name: name.filter(|n| !n.is_empty()),
            real_size,
            map,
        }))
    }

    /// A PAX sparse file's map and real size, checked as Go checks them; a 1.0 map is read
    /// from the start of the entry's data.
    fn sparse_layout<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        sparse: PaxSparse,
        raw_name: &[u8],
    ) -> Result<SparseLayout, UnpackError> {
        let stored = entry.size();
        let mut consumed = 0u64;
        let map = match sparse.map {
            Some(map) => map,
            None => {
                let (map, used) = read_sparse_map_1x0(entry).map_err(|e| match e {
                    Some(e) => self.stream_error(e),
                    None => bad_sparse(raw_name, "the sparse map at the start of the data is malformed"),
                })?;
                consumed = used;
                map
            }
        };
        let size = sparse.real_size.unwrap_or(stored as i64);
        if !valid_sparse_map(&map, size) {
            return Err(bad_sparse(raw_name, "its sparse map does not fit its size"));
        }
        Ok(SparseLayout {
            map,
            size: size as u64,
            stored,
            consumed,
        })
    }

    /// Writes a sparse file's data fragments at their offsets and sets its length.
    fn copy_fragments<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut Output<'_>,
        layout: SparseLayout,
    ) -> Result<(), UnpackError> {
        use std::io::{Seek, SeekFrom};
        let mut consumed = layout.consumed;
        for &(offset, length) in &layout.map {
            out.file
                .seek(SeekFrom::Start(offset))
                .map_err(|e| io_error(out.full, e))?;
            let mut left = length;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = self.copy_chunk(entry, out, want)?;
                if n == 0 {
                    return Err(UnpackError::TarFormat(format!(
                        "unexpected end of archive in {:?}: its sparse map references missing data",
                        lossy(out.raw_name)
                    )));
                }
                left -= n as u64;
                consumed += n as u64;
            }
        }
        if consumed != layout.stored {
            // Go's errUnrefData: stored bytes no fragment accounts for.
            return Err(bad_sparse(out.raw_name, "it contains unreferenced data"));
        }
        out.file.set_len(layout.size).map_err(|e| io_error(out.full, e))
    }
}

/// The file an entry's data is being written to: its path and the entry's raw name for
/// errors, and how much was written since `cancelled` was last asked.
struct Output<'a> {
    file: File,
    full: &'a Path,
    raw_name: &'a [u8],
    since_poll: u64,
    cancelled: &'a dyn Fn() -> bool,
}

/// Docker's error for a PAX sparse file whose map or data is wrong.
fn bad_sparse(raw_name: &[u8], what: &str) -> UnpackError {
    UnpackError::TarFormat(format!("invalid PAX sparse file {:?}: {what}", lossy(raw_name)))
}

/// Where a sparse file's data goes: what [`Unpacker::copy_fragments`] writes.
struct SparseLayout {
    /// The data fragments.
    map: SparseMap,
    /// The file's real size.
    size: u64,
    /// The entry's stored data size, every byte of which a fragment (or the 1.0 map) must use.
    stored: u64,
    /// The bytes of stored data the 1.0 map took.
    consumed: u64,
}

/// The largest sparse map of a 1.0 PAX sparse file (Go's `maxSpecialFileSize`).
pub(super) const MAX_SPARSE_MAP_BYTES: u64 = 1 << 20;

/// A sparse file's data fragments: `(offset, length)`, in order.
pub(super) type SparseMap = Vec<(u64, u64)>;

/// What the `GNU.sparse.*` records of a PAX sparse file say.
pub(super) struct PaxSparse {
    /// `GNU.sparse.name`: the file's real name.
    pub(super) name: Option<Vec<u8>>,
    /// `GNU.sparse.size` (or `realsize`): the file's real size.
    real_size: Option<i64>,
    /// The `(offset, length)` data fragments (formats 0.x); `None` for 1.0, whose map opens
    /// the entry's data.
    map: Option<SparseMap>,
}

/// Decimal `offset,length` pairs (Go's `strconv.ParseInt`, so no sign is needed but one is
/// allowed, and negatives are caught by [`valid_sparse_map`]).
pub(super) fn parse_sparse_pairs(tokens: &[&str]) -> Option<SparseMap> {
    let mut out = Vec::with_capacity(tokens.len() / 2);
    for pair in tokens.chunks(2) {
        let offset: i64 = pair[0].parse().ok()?;
        let length: i64 = pair[1].parse().ok()?;
        if offset < 0 || length < 0 {
            return None;
        }
        out.push((offset as u64, length as u64));
    }
    Some(out)
}

/// Go's `validateSparseEntries`: fragments in order, not overlapping, inside `size`.
pub(super) fn valid_sparse_map(map: &[(u64, u64)], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut end_of_previous = 0u64;
    for &(offset, length) in map {
        let Some(end) = offset.checked_add(length).filter(|&e| e <= i64::MAX as u64) else {
            return false;
        };
        if end > size as u64 || end_of_previous > offset {
            return false;
        }
        end_of_previous = end;
    }
    true
}

/// Go's `readGNUSparseMap1x0`: the map at the start of a 1.0 sparse file's data, in 512-byte
/// blocks of newline-terminated decimals (the count, then offset and length per fragment).
/// Returns the map and the bytes it took; `Err(None)` for a malformed map.
pub(super) fn read_sparse_map_1x0<R: Read>(r: &mut R) -> Result<(SparseMap, u64), Option<io::Error>> {
    let mut text: Vec<u8> = Vec::new();
    let mut used = 0u64;
    let mut newlines = 0usize;
    let mut feed = |want: usize, text: &mut Vec<u8>, newlines: &mut usize| -> Result<(), Option<io::Error>> {
        while *newlines < want {
            // Go's maxSpecialFileSize: a map larger than 1 MiB is refused, not buffered.
            if used >= MAX_SPARSE_MAP_BYTES {
                return Err(None);
            }
            let mut block = [0u8; 512];
            r.read_exact(&mut block).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    None
                } else {
                    Some(e)
                }
            })?;
            used += 512;
            *newlines += block.iter().filter(|&&b| b == b'\n').count();
            text.extend_from_slice(&block);
        }
        Ok(())
    };
    feed(1, &mut text, &mut newlines)?;
    let mut tokens = text.split(|&b| b == b'\n');
    let count: usize = tokens
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|&n| n >= 0)
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_mul(2))
        .ok_or(None)?;
    drop(tokens);
    feed(count + 1, &mut text, &mut newlines)?;
    let tokens: Vec<&str> = text
        .split(|&b| b == b'\n')
        .skip(1)
        .take(count)
        .map(|t| std::str::from_utf8(t).unwrap_or("x"))
        .collect();
    let map = parse_sparse_pairs(&tokens).ok_or(None)?;
    Ok((map, used))
}

pub(super) fn is_regular(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
    )
}

/// Creates a new, empty file for writing, never through a symlink at `p`.
pub(super) fn open_new(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}
