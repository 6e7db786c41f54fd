//! An entry's metadata: reading it from the header and PAX records, applying modes, times,
//! ownership and extended attributes, and the small system-call helpers they share.

use super::*;

impl Unpacker<'_> {
    /// Reads the metadata of an entry, pax records included.
    pub(super) fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let old = header.as_old();
        let mut mode = numeric(header.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
        if !self.opts.is_root {
            mode &= 0o777;
        }
        let uid = numeric(header.uid(), &old.uid)?;
        let gid = numeric(header.gid(), &old.gid)?;
        let mtime = numeric(header.mtime(), &old.mtime)?;
        let mut mtime = (i64::try_from(mtime).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| self.stream_error(e))? {
            for record in pax {
                let record = record.map_err(tar_format)?;
                let key = record.key_bytes();
                if key == b"mtime" {
                    if let Some(t) = parse_pax_time(record.value_bytes()) {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if let Ok(name) = CString::new(name) {
                        xattrs.push((name, record.value_bytes().to_vec()));
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// Ownership, xattrs, mode and times of a regular file, through its open descriptor (in
    /// docker's order: chown would clear capabilities and setuid bits set before it).
    pub(super) fn apply_file_meta(
        &mut self,
        file: &File,
        full: &Path,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let fd = file.as_raw_fd();
        if self.opts.is_root {
            // SAFETY: `fd` is an open descriptor owned by `file`.
            let rc = unsafe { libc::fchown(fd, meta.uid as libc::uid_t, meta.gid as libc::gid_t) };
            check(rc, full)?;
        }
        self.set_xattrs(full, Some(fd), &meta.xattrs);
        file.set_permissions(Permissions::from_mode(meta.mode))
            .map_err(|e| io_error(full, e))?;
        let times = timespecs(meta.mtime);
        // SAFETY: `fd` is open and `times` points to two timespecs.
        let rc = unsafe { libc::futimens(fd, times.as_ptr()) };
        check(rc, full)
    }

    /// Ownership, xattrs, mode (unless a symlink) and times of something that is not a regular
    /// file or directory, never following a symlink at `full`.
    pub(super) fn apply_path_meta(
        &mut self,
        full: &Path,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if self.opts.is_root {
            chown(full, meta.uid, meta.gid)?;
        }
        self.set_xattrs(full, None, &meta.xattrs);
        if chmod {
            fs::set_permissions(full, Permissions::from_mode(meta.mode)).map_err(|e| io_error(full, e))?;
        }
        set_times(full, meta.mtime)
    }

    /// Applies extended attributes best-effort, counting the ones refused.
    pub(super) fn set_xattrs(&mut self, full: &Path, fd: Option<i32>, xattrs: &[(CString, Vec<u8>)]) {
        if xattrs.is_empty() {
            return;
        }
        let path = match fd {
            Some(_) => None,
            None => match cstring(full) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.stats.skipped_xattrs += xattrs.len() as u64;
                    return;
                }
            },
        };
        for (name, value) in xattrs {
            let (v, len) = (value.as_ptr().cast::<libc::c_void>(), value.len());
            // SAFETY: every pointer is valid for the stated length during the call.
            let rc = unsafe {
                match (&path, fd) {
                    (Some(p), _) => libc::lsetxattr(p.as_ptr(), name.as_ptr(), v, len, 0),
                    (None, Some(fd)) => libc::fsetxattr(fd, name.as_ptr(), v, len, 0),
                    (None, None) => -1,
                }
            };
            if rc != 0 {
                self.stats.skipped_xattrs += 1;
            }
        }
    }
}

/// Parses a pax time (`1700000000.123456789`, possibly negative) into seconds and nanoseconds.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos = 0u32;
    for i in 0..9 {
        nanos = nanos * 10 + frac.as_bytes().get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    Some(match (neg, nanos) {
        (false, _) => (secs, nanos),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

/// Access and modification times, both set to the entry's mtime.
pub(super) fn timespecs((secs, nanos): (i64, u32)) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    };
    [t, t]
}

/// Sets the times of `full` without following a symlink there.
pub(super) fn set_times(full: &Path, mtime: (i64, u32)) -> Result<(), UnpackError> {
    crate::fsutil::set_times_nofollow(full, mtime).map_err(|e| io_error(full, e))
}

/// Changes the owner of `full` without following a symlink there.
pub(super) fn chown(full: &Path, uid: u64, gid: u64) -> Result<(), UnpackError> {
    let c = cstring(full).map_err(|e| io_error(full, e))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) };
    check(rc, full)
}

pub(super) fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub(super) fn check(rc: libc::c_int, full: &Path) -> Result<(), UnpackError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io_error(full, io::Error::last_os_error()))
    }
}

pub(super) fn io_error(path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}
