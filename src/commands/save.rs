//! `rpull save [-o FILE] [--format docker|oci] NAME|ID...`: writes the images as a
//! docker archive or an OCI archive ([`Engine::save`](rpull::engine::Engine::save)), to
//! `FILE` or to stdout when it is not a terminal.
//!
//! As `docker save` does, a file is written beside its final name and renamed into place once
//! complete, so a failed save leaves no truncated archive behind; and a tarball is never
//! written to a terminal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{fail, store_engine};
use rpull::archive::{ArchiveError, ArchiveFormat};
use rpull::cli::{SaveArgs, SaveFormat};
use rpull::fsutil::{self, OutputTarget};

/// docker's refusal to write a tarball to a terminal.
pub const TERMINAL_REFUSAL: &str = "cowardly refusing to save to a terminal. Use the -o flag or redirect";

/// The refusal to save to a closed stdout.
pub const STDOUT_CLOSED: &str =
    "failed to save image: standard output is closed. Use the -o flag or redirect";

/// Saves the named images and returns the exit status.
pub fn run(args: SaveArgs, root: Option<PathBuf>) -> ExitCode {
    if args.output.is_none() && io::stdout().is_terminal() {
        return fail(TERMINAL_REFUSAL);
    }
    // A closed stdout (`>&-`) would swallow the archive and report success.
    if args.output.is_none() && !super::stdout_is_open() {
        return fail(STDOUT_CLOSED);
    }
    let engine = match store_engine(root.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    let save = match engine.save(&args.names, format) {
        Ok(s) => s,
        Err(e) => return fail(&format!("Error response from daemon: {e}")),
    };
    let write = |out: &mut dyn Write| save.write_to(out);
    let result = match &args.output {
        Some(path) => save_to_file(path, write),
        None => {
            let mut out = BufWriter::new(io::stdout().lock());
            write(&mut out)
                .map_err(|e| e.to_string())
                .and_then(|()| out.flush().map_err(|e| format!("writing the archive: {e}")))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Writes through `write` to `path`: into a temporary file beside it, renamed to `path` on
/// success (through a symlink, its target), or straight into a FIFO. A device, socket or
/// directory is refused and left untouched ([`fsutil::resolve_output`]).
fn save_to_file(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), ArchiveError>,
) -> Result<(), String> {
    let target = fsutil::resolve_output(path).map_err(|e| format!("failed to save image: {e}"))?;
    let path = match target {
        OutputTarget::WriteThrough(fifo) => {
            let file = OpenOptions::new()
                .write(true)
                .open(&fifo)
                .map_err(|e| format!("failed to save image: {}: {e}", fifo.display()))?;
            let mut out = BufWriter::new(file);
            write(&mut out).map_err(|e| e.to_string())?;
            return out.flush().map_err(|e| format!("writing the archive: {e}"));
        }
        OutputTarget::Replace(path) => path,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| format!("invalid output path {}", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.rpull-save-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| format!("failed to save image: {}: {e}", tmp.display()))?;
        let mut out = BufWriter::new(file);
        write(&mut out).map_err(|e| e.to_string())?;
        let file = out
            .into_inner()
            .map_err(|e| format!("writing the archive: {}", e.error()))?;
        file.sync_all().map_err(|e| format!("writing the archive: {e}"))?;
        fs::rename(&tmp, &path).map_err(|e| format!("failed to save image: {}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
