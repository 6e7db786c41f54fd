//! Small filesystem operations shared by the store, unpacking and flattening.
//!
//! Files a user names as an output (`save -o FILE`, docker's `config.json`): what a write that
//! replaces the file by rename may replace.
//!
//! A temporary file renamed over its final name is how a complete file appears atomically, but
//! a rename replaces whatever the name held. Before writing, [`resolve_output`] looks at what
//! the name is: a regular file or a new name is replaced as usual; a symlink is followed, so
//! its target is replaced and the link stays; a FIFO is written through (opened, never
//! renamed over); a device, a socket or a directory is refused and left untouched (docker's
//! `save -o /dev/null` refusal).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

/// Sets the access and modification times of `path` to `(seconds, nanoseconds)`, not following
/// a symlink there (so a symlink gets its own times, as tar and docker give it).
pub fn set_times_nofollow(path: &Path, (secs, nanos): (i64, u32)) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    };
    let times = [t, t];
    // SAFETY: a valid NUL-terminated path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many symlinks [`resolve_output`] follows before giving up (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// Where a write to a named output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// A regular file, or a name that does not exist yet: write beside this path (symlinks
    /// resolved) and rename onto it.
    Replace(PathBuf),
    /// A FIFO: open this path and write into it, without creating or renaming anything.
    WriteThrough(PathBuf),
}

/// A named output that must not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum OutputPathError {
    /// A character or block device (docker's wording).
    #[error("invalid output path: {:?} must be a directory or a regular file: got a device", .0.display().to_string())]
    Device(PathBuf),
    /// A Unix socket.
    #[error("invalid output path: {:?} must be a regular file: got a socket", .0.display().to_string())]
    Socket(PathBuf),
    /// A directory.
    #[error("invalid output path: {:?} is a directory", .0.display().to_string())]
    Directory(PathBuf),
    /// The path could not be examined.
    #[error("invalid output path: {:?}: {source}", .path.display().to_string())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Decides what a write to `path` may do (see the module documentation).
pub fn resolve_output(path: &Path) -> Result<OutputTarget, OutputPathError> {
    let io_error = |source| OutputPathError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            if kind.is_char_device() || kind.is_block_device() {
                Err(OutputPathError::Device(path.to_path_buf()))
            } else if kind.is_socket() {
                Err(OutputPathError::Socket(path.to_path_buf()))
            } else if kind.is_dir() {
                Err(OutputPathError::Directory(path.to_path_buf()))
            } else if kind.is_fifo() {
                // Opening follows any symlink, `/proc/self/fd/N` magic links included.
                Ok(OutputTarget::WriteThrough(path.to_path_buf()))
            } else {
                // An existing regular file, through any symlinks: replace the file itself.
                fs::canonicalize(path)
                    .map(OutputTarget::Replace)
                    .map_err(io_error)
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A new name, or a dangling symlink: create what the link names.
            let mut current = path.to_path_buf();
            for _ in 0..MAX_SYMLINKS {
                match fs::read_link(&current) {
                    Ok(target) => {
                        current = match current.parent() {
                            Some(parent) if target.is_relative() => parent.join(target),
                            _ => target,
                        }
                    }
                    Err(_) => return Ok(OutputTarget::Replace(current)),
                }
            }
            Err(io_error(io::Error::from_raw_os_error(libc::ELOOP)))
        }
        Err(e) => Err(io_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt as _;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn regular_and_new_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        let new = real.join("new.tar");
        assert_eq!(resolve_output(&new).unwrap(), OutputTarget::Replace(new.clone()));
        fs::write(&new, b"x").unwrap();
        assert_eq!(resolve_output(&new).unwrap(), OutputTarget::Replace(new));
    }

    #[test]
    fn symlinks_are_followed_dangling_ones_too() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        fs::write(real.join("file"), b"x").unwrap();
        symlink("file", real.join("link")).unwrap();
        symlink("link", real.join("link2")).unwrap();
        assert_eq!(
            resolve_output(&real.join("link2")).unwrap(),
            OutputTarget::Replace(real.join("file"))
        );
        symlink("missing", real.join("dangling")).unwrap();
        assert_eq!(
            resolve_output(&real.join("dangling")).unwrap(),
            OutputTarget::Replace(real.join("missing"))
        );
        symlink("loop", real.join("loop")).unwrap();
        assert!(matches!(
            resolve_output(&real.join("loop")),
            Err(OutputPathError::Io { .. })
        ));
    }

    #[test]
    fn special_files_are_refused_or_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_output(Path::new("/dev/null")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid output path: \"/dev/null\" must be a directory or a regular file: got a device"
        );
        assert!(matches!(
            resolve_output(dir.path()),
            Err(OutputPathError::Directory(_))
        ));
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        symlink(&fifo, dir.path().join("to-fifo")).unwrap();
        assert_eq!(
            resolve_output(&dir.path().join("to-fifo")).unwrap(),
            OutputTarget::WriteThrough(dir.path().join("to-fifo"))
        );
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(resolve_output(&sock), Err(OutputPathError::Socket(_))));
    }
}
