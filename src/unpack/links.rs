//! Whiteout markers, kept as empty files, and hardlinks: to an entry of this layer, into a
//! lower layer (reported, not created), or into the AUFS hardlink stash (`.wh..wh.plnk`).

use super::*;

/// Where a hardlink target is.
enum Target {
    /// In this layer, at this full path.
    Here(PathBuf),
    /// Not in this layer: in a lower one, at this path relative to the root.
    Below(PathBuf),
}

impl Unpacker<'_> {
    /// Keeps a whiteout or opaque marker as an empty regular file.
    pub(super) fn whiteout(&mut self, rel: &Path, raw_name: &[u8]) -> Result<(), UnpackError> {
        self.prepare_parent(rel, raw_name)?;
        let full = self.dest.join(rel);
        self.create_at(rel, &full, open_new)?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Writes a regular file of the AUFS hardlink stash (`.wh..wh.plnk/<name>`).
    pub(super) fn stash_aufs_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        base: &[u8],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), UnpackError> {
        let dir = self.dest.join(OsStr::from_bytes(AUFS_LINK_DIR));
        if !self.stash_used {
            DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io_error(&dir, e))?;
            self.stash_used = true;
        }
        let rel = Path::new(OsStr::from_bytes(AUFS_LINK_DIR)).join(OsStr::from_bytes(base));
        let full = self.dest.join(&rel);
        let meta = self.meta(entry)?;
        let raw_name = rel.as_os_str().as_bytes().to_vec();
        self.write_file(entry, None, &rel, &full, &raw_name, &meta, cancelled)
    }

    pub(super) fn hardlink(
        &mut self,
        rel: &Path,
        full: &Path,
        raw_name: &[u8],
        raw_target: &[u8],
    ) -> Result<(), UnpackError> {
        let invalid = |reason| UnpackError::InvalidHardlink {
            name: lossy(raw_name),
            target: lossy(raw_target),
            reason,
        };
        // Unlike entry names, a rooted target is not clamped: `/../x` escapes, as in docker.
        let tcomps = clean(raw_target, false).ok_or_else(|| invalid("it is outside the root"))?;
        if tcomps.is_empty() {
            return Err(invalid("it is the root directory"));
        }
        let trel: PathBuf = tcomps.iter().map(|c| OsStr::from_bytes(c)).collect();
        if trel == rel {
            return Err(invalid("an entry cannot link to itself"));
        }

        if tcomps[0] == AUFS_LINK_DIR {
            // AUFS stashed the real inode in `.wh..wh.plnk`; link to the stashed copy, which is
            // removed at the end.
            let stashed = self.dest.join(&trel);
            let exists = tcomps.len() == 2 && self.stash_used && fs::symlink_metadata(&stashed).is_ok();
            if !exists {
                return Err(invalid("the AUFS hardlink stash holds no such file"));
            }
            return self.create_at(rel, full, |p| fs::hard_link(&stashed, p));
        }
        if tcomps.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Err(invalid("it names a whiteout"));
        }

        match self.locate(&trel).map_err(|e| e.unwrap_or_else(&invalid))? {
            Target::Here(target) => self.create_at(rel, full, |p| fs::hard_link(&target, p)),
            Target::Below(below) => {
                self.remove_existing(rel, full)?;
                self.external.insert(rel.to_path_buf(), below);
                Ok(())
            }
        }
    }

    /// Finds a hardlink target without following symlinks. The error is either a reason the
    /// target is invalid or an I/O error.
    fn locate(&mut self, trel: &Path) -> Result<Target, Result<UnpackError, &'static str>> {
        match self.walk_parents(trel, false).map_err(Ok)? {
            Parents::Dirs => {}
            Parents::Missing => return Ok(self.below(trel)),
            Parents::Symlink(_) => return Err(Err("resolving it would follow a symlink")),
            Parents::NotDir(_) => return Err(Err("one of its parents is not a directory")),
        }
        let full = self.dest.join(trel);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => Err(Err("it is a directory")),
            Ok(_) => Ok(Target::Here(full)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(self.below(trel)),
            Err(e) => Err(Ok(io_error(&full, e))),
        }
    }

    /// A target missing from this layer; if it is itself a hardlink into a lower layer, the
    /// new link points where that one does.
    fn below(&self, trel: &Path) -> Target {
        Target::Below(
            self.external
                .get(trel)
                .cloned()
                .unwrap_or_else(|| trel.to_path_buf()),
        )
    }
}
