//! `rpull save [-o FILE] [--format docker|oci] NAME|ID...`: writes the images as a
//! docker archive ([`archive::save_docker_archive`]) or an OCI archive
//! ([`archive::save_oci_archive`]), to `FILE` or to stdout when it is not a terminal.
//!
//! As `docker save` does, a file is written beside its final name and renamed into place once
//! complete, so a failed save leaves no truncated archive behind; and a tarball is never
//! written to a terminal. The module also resolves the names the store commands take
//! ([`resolve`]), shared with `rpull rootfs`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{fail, open_store};
use rpull::archive::{self, ArchiveError};
use rpull::cli::{SaveArgs, SaveFormat};
use rpull::digest::Digest;
use rpull::fsutil::{self, OutputTarget};
use rpull::manifest::ImageManifest;
use rpull::reference::Reference;
use rpull::store::{RefEntry, Store};

/// docker's refusal to write a tarball to a terminal.
pub const TERMINAL_REFUSAL: &str = "cowardly refusing to save to a terminal. Use the -o flag or redirect";

/// The refusal to save to a closed stdout.
pub const STDOUT_CLOSED: &str =
    "failed to save image: standard output is closed. Use the -o flag or redirect";

/// A name given on the command line, found in the store.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The index entry (image manifest) it names.
    pub entry: RefEntry,
    /// The full tagged reference when the name was a tag (`docker.io/library/debian:bookworm`),
    /// else empty (a digest or an image ID).
    pub tag: String,
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn config_digest(store: &Store, entry: &RefEntry) -> Option<Digest> {
    let bytes = store.read_blob(&entry.digest).ok()?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).ok()?;
    Some(manifest.config.digest)
}

/// Finds `name` in the store as the daemon does: a full image ID (`sha256:…` or 64 hex), a
/// reference (normalized; `latest` when untagged; a digest matches an entry pulled by that
/// digest or a tag that resolved to it), else an unambiguous image ID prefix (3+ hex).
/// The error is docker's text without the `Error response from daemon: ` prefix.
pub fn resolve(store: &Store, name: &str) -> Result<Resolved, String> {
    let index = store.read_index().map_err(|e| e.to_string())?;
    let by_id = |hex: &str| -> Result<Option<Resolved>, String> {
        let mut found: Option<(Digest, &RefEntry)> = None;
        for entry in &index.manifests {
            let Some(id) = config_digest(store, entry) else {
                continue;
            };
            if !id.hex().starts_with(hex) {
                continue;
            }
            match &found {
                Some((other, _)) if *other != id => {
                    return Err(format!("No such image: {name} (the ID prefix is ambiguous)"))
                }
                Some(_) => {}
                None => found = Some((id, entry)),
            }
        }
        Ok(found.map(|(_, e)| Resolved {
            entry: e.clone(),
            tag: String::new(),
        }))
    };
    let full_hex = name.strip_prefix("sha256:").unwrap_or(name);
    if full_hex.len() == 64 && is_lower_hex(full_hex) {
        return by_id(full_hex)?.ok_or_else(|| format!("No such image: sha256:{full_hex}"));
    }
    let parsed = Reference::parse_normalized(name).map_err(|e| e.to_string())?;
    let found = match parsed.digest() {
        Some(d) => {
            let by_digest = parsed.name_only().with_digest(d.clone()).to_string();
            let repo = parsed.name();
            index
                .manifests
                .iter()
                .find(|e| e.name() == Some(by_digest.as_str()))
                .or_else(|| {
                    index.manifests.iter().find(|e| {
                        let same_repo = e
                            .name()
                            .and_then(|n| Reference::parse_normalized(n).ok())
                            .is_some_and(|r| r.name() == repo);
                        same_repo && (e.digest == *d || e.resolved_digest() == Some(d.to_string().as_str()))
                    })
                })
                .map(|e| Resolved {
                    entry: e.clone(),
                    tag: String::new(),
                })
        }
        None => {
            let key = parsed.clone().with_default_tag().0.to_string();
            index
                .manifests
                .iter()
                .find(|e| e.name() == Some(key.as_str()))
                .map(|e| Resolved {
                    entry: e.clone(),
                    tag: key.clone(),
                })
        }
    };
    if let Some(found) = found {
        return Ok(found);
    }
    if full_hex.len() >= 3 && is_lower_hex(full_hex) {
        if let Some(found) = by_id(full_hex)? {
            return Ok(found);
        }
    }
    Err(format!(
        "No such image: {}",
        parsed.with_default_tag().0.familiar_string()
    ))
}

/// Saves the named images and returns the exit status.
pub fn run(args: SaveArgs, root: Option<PathBuf>) -> ExitCode {
    if args.output.is_none() && io::stdout().is_terminal() {
        return fail(TERMINAL_REFUSAL);
    }
    // A closed stdout (`>&-`) would swallow the archive and report success.
    if args.output.is_none() && !super::stdout_is_open() {
        return fail(STDOUT_CLOSED);
    }
    let store = match open_store(root.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut images = Vec::new();
    for name in &args.names {
        match resolve(&store, name) {
            Ok(r) => images.push(r),
            Err(e) => return fail(&format!("Error response from daemon: {e}")),
        }
    }
    let write = |out: &mut dyn Write| -> Result<(), ArchiveError> {
        match args.format {
            SaveFormat::Docker => {
                let entries: Vec<(RefEntry, String)> =
                    images.iter().map(|r| (r.entry.clone(), r.tag.clone())).collect();
                archive::save_docker_archive(&store, &entries, out)
            }
            SaveFormat::Oci => {
                let entries: Vec<RefEntry> = images.iter().map(|r| r.entry.clone()).collect();
                archive::save_oci_archive(&store, &entries, out)
            }
        }
    };
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
