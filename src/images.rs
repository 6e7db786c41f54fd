//! `rpull images`: the rows docker's `docker images` shows, built from the store's
//! `index.json`, and their rendering as docker's table, `-q` list and `--format json` lines.
//!
//! Rows follow docker's CLI (`imageFormatTaggedAndDigest`): an image is identified by its config
//! digest; every tag gives a row (`REPOSITORY` = familiar name, `TAG`); a repository that only has
//! digest references gives `<none>` rows. Under `--digests` each tag row is repeated for every
//! repo digest of its repository, which for rpull is the digest the reference resolved to at the
//! registry (`dev.rpull.resolved.digest`), exactly what docker records as `RepoDigests`.
//!
//! `SIZE` is docker's: the sum of the layers' unpacked sizes, each computed like moby's
//! `directory.Size` (regular files and symlinks, hardlinks counted once, directories ignored). A
//! `size` number in `layer.json` is used when present; otherwise the unpacked directory is walked.
//! A layer that is not unpacked counts with its compressed size from the manifest.
//!
//! The module also holds the helpers the other store commands share: [`read_image`], which reads
//! and checks an entry's manifest and config, and [`dir_size`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::manifest::{ImageConfig, ImageManifest};
use crate::reference::Reference;
use crate::store::{RefEntry, Store, StoreError};

/// Why the image list could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry's manifest or config is missing or unreadable.
    #[error("image {name} is damaged: {reason}")]
    Damaged {
        /// The entry's full reference (or manifest digest when unnamed).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The filter is not a valid pattern (Go's `path.ErrBadPattern` text).
    #[error("syntax error in pattern")]
    BadPattern,
}

/// One row of `rpull images`, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// Familiar repository name (`debian`, `127.0.0.1:5000/bench/debian`).
    pub repository: String,
    /// The tag, or `<none>` for a repository only referenced by digest.
    pub tag: String,
    /// The repo digest shown under `--digests` (`sha256:…`); `None` renders as `<none>`.
    pub digest: Option<String>,
    /// The image ID: the full config digest (`sha256:…`).
    pub image_id: String,
    /// The config's `created` time (RFC 3339), when it has one.
    pub created: Option<String>,
    /// The image size in bytes, as docker computes it (see the module docs).
    pub size: u64,
}

/// An entry's manifest and config, read from the store and checked.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest bytes as stored.
    pub manifest_bytes: Vec<u8>,
    /// The parsed image manifest.
    pub manifest: ImageManifest,
    /// The config bytes as stored.
    pub config_bytes: Vec<u8>,
    /// The parsed config (its DiffIDs match the manifest's layers one for one).
    pub config: ImageConfig,
}

impl StoredImage {
    /// The image ID (the config digest).
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }
}

/// Reads the image manifest `entry` points at and its config, verifying both digests.
pub fn read_image(store: &Store, entry: &RefEntry) -> Result<StoredImage, ImagesError> {
    let name = entry
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| entry.digest.to_string());
    let damaged = |reason: String| ImagesError::Damaged {
        name: name.clone(),
        reason,
    };
    let manifest_bytes = store
        .read_blob(&entry.digest)
        .map_err(|e| damaged(format!("manifest {}: {e}", entry.digest)))?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| damaged(format!("manifest {}: {e}", entry.digest)))?;
    let config_bytes = store
        .read_blob(&manifest.config.digest)
        .map_err(|e| damaged(format!("config {}: {e}", manifest.config.digest)))?;
    let config = ImageConfig::parse(&config_bytes, manifest.layers.len())
        .map_err(|e| damaged(format!("config {}: {e}", manifest.config.digest)))?;
    Ok(StoredImage {
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    })
}

/// The size of a directory tree the way moby's `directory.Size` counts it: every non-directory
/// entry's `st_size` (symlinks count their target length), each inode once. Unreadable parts
/// are skipped.
pub fn dir_size(path: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for entry in rd.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&entry.path(), seen, total);
                continue;
            }
            if meta.len() == 0 || !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            *total += meta.len();
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(path, &mut seen, &mut total);
    total
}

/// The unpacked size of one layer: `size` from `layer.json` when recorded, else a walk of
/// `rootfs/`; `None` when the layer is not unpacked.
fn layer_size(store: &Store, diff_id: &Digest) -> Option<u64> {
    if !store.has_layer(diff_id) {
        return None;
    }
    let dir = store.layer_dir(diff_id);
    let recorded = fs::read(dir.join("layer.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("size").and_then(serde_json::Value::as_u64));
    Some(recorded.unwrap_or_else(|| dir_size(&dir.join("rootfs"))))
}

/// One image (config digest) with the references that name it.
struct ImageRefs {
    id: Digest,
    created: Option<String>,
    size: u64,
    /// Tag references (full, normalized).
    tags: Vec<Reference>,
    /// Digest references: explicit digest entries plus the repo digests of tag entries.
    digests: Vec<Reference>,
}

/// Lists the images in the store, newest first, as docker's `docker images [--digests]
/// [REPOSITORY[:TAG]]` rows. The rows are those of `--digests`; [`render_table`] and
/// [`render_json`] fold them back to docker's rows without `--digests`.
///
/// `filter` is matched like docker's `reference` filter (Go `path.Match` against the familiar
/// reference and the familiar name), and also against the full reference and full name.
/// Entries whose manifest or config cannot be read are left out.
pub fn list(store: &Store, filter: Option<&str>) -> Result<Vec<ImageRow>, ImagesError> {
    if let Some(pattern) = filter {
        // A bad pattern is an error even when nothing is stored.
        path_match(pattern, "")?;
    }
    let index = store.read_index()?;
    let mut images: Vec<ImageRefs> = Vec::new();
    let mut by_id: HashMap<Digest, usize> = HashMap::new();
    let mut read_cache: HashMap<Digest, Option<(Digest, Option<String>, u64)>> = HashMap::new();
    let mut layer_cache: HashMap<Digest, Option<u64>> = HashMap::new();
    for entry in &index.manifests {
        let Some(reference) = entry.name().and_then(|n| Reference::parse_normalized(n).ok()) else {
            continue;
        };
        let info = read_cache
            .entry(entry.digest.clone())
            .or_insert_with(|| {
                let image = read_image(store, entry).ok()?;
                let size = image
                    .manifest
                    .layers
                    .iter()
                    .zip(image.config.diff_ids())
                    .map(|(layer, diff_id)| {
                        layer_cache
                            .entry(diff_id.clone())
                            .or_insert_with(|| layer_size(store, diff_id))
                            .unwrap_or(layer.size)
                    })
                    .sum();
                Some((image.id().clone(), image.config.created.clone(), size))
            })
            .clone();
        let Some((id, created, size)) = info else { continue };
        let slot = *by_id.entry(id.clone()).or_insert_with(|| {
            images.push(ImageRefs {
                id,
                created,
                size,
                tags: Vec::new(),
                digests: Vec::new(),
            });
            images.len() - 1
        });
        let image = &mut images[slot];
        if let Some(d) = reference.digest() {
            push_unique(&mut image.digests, reference.name_only().with_digest(d.clone()));
        } else if reference.tag().is_some() {
            push_unique(&mut image.tags, reference.clone());
            if let Some(resolved) = entry.resolved_digest().and_then(|d| Digest::parse(d).ok()) {
                push_unique(&mut image.digests, reference.name_only().with_digest(resolved));
            }
        }
    }

    if let Some(pattern) = filter {
        for image in &mut images {
            image.tags.retain(|r| reference_matches(pattern, r));
            image.digests.retain(|r| reference_matches(pattern, r));
        }
        images.retain(|i| !i.tags.is_empty() || !i.digests.is_empty());
    }
    images
        .sort_by_key(|i| std::cmp::Reverse(i.created.as_deref().and_then(parse_rfc3339).unwrap_or(i64::MIN)));

    let mut rows = Vec::new();
    for image in &images {
        // Repositories in order of first appearance, as (familiar name, tags, digests).
        type Repo = (String, Vec<String>, Vec<String>);
        fn slot(repos: &mut Vec<Repo>, name: String) -> &mut Repo {
            let i = match repos.iter().position(|r| r.0 == name) {
                Some(i) => i,
                None => {
                    repos.push((name, Vec::new(), Vec::new()));
                    repos.len() - 1
                }
            };
            &mut repos[i]
        }
        let mut repos: Vec<Repo> = Vec::new();
        for t in &image.tags {
            slot(&mut repos, t.familiar_name())
                .1
                .push(t.tag().unwrap_or_default().to_string());
        }
        for d in &image.digests {
            if let Some(dg) = d.digest() {
                slot(&mut repos, d.familiar_name()).2.push(dg.to_string());
            }
        }
        let row = |repository: &str, tag: &str, digest: Option<&String>| ImageRow {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest: digest.cloned(),
            image_id: image.id.to_string(),
            created: image.created.clone(),
            size: image.size,
        };
        for (repo, tags, digests) in repos.iter().filter(|r| !r.1.is_empty()) {
            for tag in tags {
                if digests.is_empty() {
                    rows.push(row(repo, tag, None));
                }
                for d in digests {
                    rows.push(row(repo, tag, Some(d)));
                }
            }
        }
        for (repo, _, digests) in repos.iter().filter(|r| r.1.is_empty()) {
            for d in digests {
                rows.push(row(repo, NONE, Some(d)));
            }
        }
    }
    Ok(rows)
}

const NONE: &str = "<none>";

fn push_unique(v: &mut Vec<Reference>, r: Reference) {
    if !v.contains(&r) {
        v.push(r);
    }
}

/// docker's `reference.FamiliarMatch`, extended to the full (canonical) forms.
fn reference_matches(pattern: &str, r: &Reference) -> bool {
    [r.familiar_string(), r.familiar_name(), r.to_string(), r.name()]
        .iter()
        .any(|s| path_match(pattern, s).unwrap_or(false))
}

/// The rows docker shows for one `digests` setting: without `--digests`, a tag row appears
/// once per tag and a digest-only repository once, with an empty digest.
fn fold_rows(rows: &[ImageRow], digests: bool) -> Vec<(ImageRow, String)> {
    let mut out: Vec<(ImageRow, String)> = Vec::new();
    let mut seen = HashSet::new();
    for r in rows {
        if digests {
            let d = r.digest.clone().unwrap_or_else(|| NONE.to_string());
            out.push((r.clone(), d));
        } else if seen.insert((r.image_id.clone(), r.repository.clone(), r.tag.clone())) {
            let d = if r.tag == NONE {
                String::new()
            } else {
                NONE.to_string()
            };
            out.push((r.clone(), d));
        }
    }
    out
}

/// Renders rows exactly as `docker images` prints them: a tabwriter table (minimum cell width
/// 10, padding 3) with `REPOSITORY`, `TAG`, `DIGEST` (with `digests`), `IMAGE ID`, `CREATED`,
/// `SIZE`; or with `quiet`, one 12-character image ID per row (repeated for an image with
/// several tags, as docker does). Every line ends with a newline.
pub fn render_table(rows: &[ImageRow], digests: bool, quiet: bool, now: SystemTime) -> String {
    let folded = fold_rows(rows, digests);
    if quiet {
        return folded
            .iter()
            .map(|(r, _)| format!("{}\n", short_id(&r.image_id)))
            .collect();
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["REPOSITORY", "TAG"];
    if digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(header.into_iter().map(str::to_string).collect());
    for (r, d) in &folded {
        let since = created_since(r.created.as_deref(), now);
        let mut line = vec![r.repository.clone(), r.tag.clone()];
        if digests {
            line.push(d.clone());
        }
        line.extend([
            short_id(&r.image_id).to_string(),
            if since.is_empty() {
                "N/A".to_string()
            } else {
                since
            },
            human_size_precision(r.size, 3),
        ]);
        table.push(line);
    }
    tabwrite(&table, 10, 3)
}

/// Renders rows as `docker images --format json` does: one JSON object per row and line, keys
/// sorted, every value a string, `<`, `>` and `&` escaped as Go's encoder escapes them.
/// `CreatedAt` is in the local time zone, as docker prints it.
pub fn render_json(rows: &[ImageRow], digests: bool, now: SystemTime) -> String {
    let mut out = String::new();
    for (r, d) in fold_rows(rows, digests) {
        let created = r
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or(GO_ZERO_UNIX);
        let created_at = if created == GO_ZERO_UNIX {
            "0001-01-01 00:00:00 +0000 UTC".to_string()
        } else {
            let (offset, zone) = local_zone(created);
            go_time_string(created, offset, &zone)
        };
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            obj.insert(k.to_string(), serde_json::Value::String(v));
        };
        put("Containers", "N/A".into());
        put("CreatedAt", created_at);
        put("CreatedSince", created_since(r.created.as_deref(), now));
        put("Digest", d);
        put("ID", short_id(&r.image_id).to_string());
        put("Repository", r.repository.clone());
        put("SharedSize", "N/A".into());
        put("Size", human_size_precision(r.size, 3));
        put("Tag", r.tag.clone());
        put("UniqueSize", "N/A".into());
        put("VirtualSize", crate::progress::human_size(r.size));
        let line = serde_json::Value::Object(obj).to_string();
        out.push_str(&go_escape_html(&line));
        out.push('\n');
    }
    out
}

/// Go's `json.Marshal` HTML escaping, applied to already serialized JSON (the characters only
/// occur inside strings there).
fn go_escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// docker's truncated ID: the first 12 hex characters after the algorithm.
fn short_id(id: &str) -> &str {
    let hex = id.split_once(':').map_or(id, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// Go's `text/tabwriter` with `padchar ' '` and no flags, for cells that are all tab-terminated
/// except the last of each line: each column is as wide as its widest cell plus `padding`, and
/// at least `minwidth`.
fn tabwrite(table: &[Vec<String>], minwidth: usize, padding: usize) -> String {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in table {
        for (i, cell) in line.iter().enumerate().take(line.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + padding).max(minwidth));
        }
    }
    let mut out = String::new();
    for line in table {
        for (i, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < line.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Unix time of Go's zero `time.Time` (0001-01-01 UTC), which docker shows as no time at all.
const GO_ZERO_UNIX: i64 = -62_135_596_800;

/// docker's `CreatedSince`: `HumanDuration(now - created) + " ago"`, or empty when there is no
/// creation time.
pub fn created_since(created: Option<&str>, now: SystemTime) -> String {
    let Some(secs) = created.and_then(parse_rfc3339) else {
        return String::new();
    };
    if secs == GO_ZERO_UNIX {
        return String::new();
    }
    let now_ns = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    // Go's time.Sub saturates at the limits of a Duration (an int64 of nanoseconds).
    let d = (now_ns - secs as i128 * 1_000_000_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    format!("{} ago", human_duration_ns(d))
}

/// go-units `HumanDuration` (v0.5.0) for a duration in nanoseconds: "Less than a second",
/// "1 second", "About a minute", "2 hours", "18 months", "2 years", ….
pub fn human_duration_ns(d: i64) -> String {
    // Go's Duration.Seconds()/Minutes()/Hours() are float divisions, truncated by int().
    let in_unit = |unit: i64| (d / unit) as f64 + (d % unit) as f64 / unit as f64;
    let seconds = in_unit(1_000_000_000) as i64;
    let minutes = in_unit(60_000_000_000) as i64;
    let exact_hours = in_unit(3_600_000_000_000);
    if seconds < 1 {
        return "Less than a second".to_string();
    } else if seconds == 1 {
        return "1 second".to_string();
    } else if seconds < 60 {
        return format!("{seconds} seconds");
    } else if minutes == 1 {
        return "About a minute".to_string();
    } else if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // go-units: hours rounded to the nearest, then whole days, weeks and months of them;
    // years from the truncated hours.
    let hours = (exact_hours + 0.5) as i64;
    if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", exact_hours as i64 / 24 / 365)
    }
}

pub use crate::progress::human_size_precision;

/// Parses an RFC 3339 time (`2023-11-14T22:13:00.123Z`, `…+01:00`) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let o = h * 3600 + m * 60;
            if rb[0] == b'-' {
                -o
            } else {
                o
            }
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `Time.String()` for a whole second: `2023-11-14 22:13:00 +0000 UTC`.
fn go_time_string(secs: i64, offset: i64, zone: &str) -> String {
    let local = secs + offset;
    let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
    let tod = local.rem_euclid(86_400);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} {sign}{:02}{:02} {zone}",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60,
        off / 3600,
        off % 3600 / 60
    )
}

/// The local time zone's offset (seconds east of UTC) and abbreviation at `secs`.
fn local_zone(secs: i64) -> (i64, String) {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` we own; tm_zone points to static storage.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return (0, "UTC".to_string());
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone)
                .to_string_lossy()
                .into_owned()
        };
        (tm.tm_gmtoff, zone)
    }
}

/// Go's `path.Match`: `*` and `?` do not match `/`; `[…]` classes with ranges and `^`; `\`
/// escapes. A malformed pattern is [`ImagesError::BadPattern`].
pub fn path_match(pattern: &str, name: &str) -> Result<bool, ImagesError> {
    let mut pattern: &[char] = &pattern.chars().collect::<Vec<_>>();
    let name_chars: Vec<char> = name.chars().collect();
    let mut name: &[char] = &name_chars;
    'outer: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&'/'));
        }
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != '/' {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'outer;
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, &[])?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[char]) -> (bool, &[char], &[char]) {
    let mut star = false;
    while pattern.first() == Some(&'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

fn match_chunk<'a>(mut chunk: &[char], mut s: &'a [char]) -> Result<(&'a [char], bool), ImagesError> {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            '[' => {
                let mut r = '\0';
                if !failed {
                    r = s[0];
                    s = &s[1..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == '-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    if s[0] == '/' {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == '\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(ImagesError::BadPattern)?
                } else {
                    c
                };
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        Ok((&[], false))
    } else {
        Ok((s, true))
    }
}

fn get_esc(mut chunk: &[char]) -> Result<(char, &[char]), ImagesError> {
    if chunk.is_empty() || chunk[0] == '-' || chunk[0] == ']' {
        return Err(ImagesError::BadPattern);
    }
    if chunk[0] == '\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(ImagesError::BadPattern);
        }
    }
    let r = chunk[0];
    let rest = &chunk[1..];
    if rest.is_empty() {
        return Err(ImagesError::BadPattern);
    }
    Ok((r, rest))
}

/// Builders for hand-made stores, shared by the tests of the store commands.
#[cfg(test)]
pub(crate) mod testutil {
    use std::collections::BTreeMap;
    use std::path::Path;

    use crate::digest::Digest;
    use crate::manifest::media_type;
    use crate::store::{RefEntry, Store, CONTAINERD_NAME, REF_NAME, RESOLVED_DIGEST};

    /// One layer to put in the store: a compressed blob and an unpacked directory.
    pub struct Layer {
        pub blob: Vec<u8>,
        pub diff_id: Digest,
    }

    impl Layer {
        /// A layer whose blob and DiffID derive from `seed`; `fill` populates `rootfs/`.
        pub fn new(store: &Store, seed: &str, fill: impl FnOnce(&Path)) -> Layer {
            let blob = format!("compressed layer {seed}").into_bytes();
            let diff_id = Digest::sha256_of(format!("diff {seed}").as_bytes());
            store.write_blob(&Digest::sha256_of(&blob), &blob).unwrap();
            let dir = store.layer_dir(&diff_id);
            std::fs::create_dir_all(dir.join("rootfs")).unwrap();
            fill(&dir.join("rootfs"));
            write_layer_json(store, &diff_id, &Digest::sha256_of(&blob), &[]);
            Layer { blob, diff_id }
        }
    }

    /// (Re)writes a layer's `layer.json`.
    pub fn write_layer_json(store: &Store, diff_id: &Digest, blob: &Digest, external: &[(&str, &str)]) {
        let meta = serde_json::json!({
            "diffID": diff_id.to_string(),
            "blob": blob.to_string(),
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "externalHardlinks": external.iter().map(|(l, t)| serde_json::json!([l, t])).collect::<Vec<_>>(),
        });
        std::fs::write(
            store.layer_dir(diff_id).join("layer.json"),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
    }

    /// Writes config and manifest blobs for `layers`; returns (manifest digest, size, config digest).
    pub fn add_image(store: &Store, layers: &[&Layer], created: &str, salt: &str) -> (Digest, u64, Digest) {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {"Env": [format!("SALT={salt}")]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = Digest::sha256_of(&config_bytes);
        store.write_blob(&config_digest, &config_bytes).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {
                "mediaType": media_type::OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": Digest::sha256_of(&l.blob).to_string(),
                "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = Digest::sha256_of(&manifest_bytes);
        store.write_blob(&manifest_digest, &manifest_bytes).unwrap();
        (manifest_digest, manifest_bytes.len() as u64, config_digest)
    }

    /// An index entry for `name` (full reference) pointing at a manifest.
    pub fn entry(name: &str, manifest: &Digest, size: u64, resolved: Option<&Digest>) -> RefEntry {
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME.to_string(), name.to_string());
        annotations.insert(CONTAINERD_NAME.to_string(), name.to_string());
        annotations.insert(
            RESOLVED_DIGEST.to_string(),
            resolved.unwrap_or(manifest).to_string(),
        );
        RefEntry {
            media_type: media_type::OCI_MANIFEST.to_string(),
            digest: manifest.clone(),
            size,
            platform: None,
            annotations,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testutil::*;
    use super::*;

    fn at(s: &str) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(parse_rfc3339(s).unwrap() as u64)
    }

    fn id(prefix: &str) -> String {
        format!("sha256:{prefix}{}", "0".repeat(64 - prefix.len()))
    }

    fn row(repo: &str, tag: &str, id_prefix: &str, size: u64) -> ImageRow {
        ImageRow {
            repository: repo.into(),
            tag: tag.into(),
            digest: None,
            image_id: id(id_prefix),
            created: Some("2023-11-14T22:13:05.123456789Z".into()),
            size,
        }
    }

    #[test]
    fn table_matches_capture_19() {
        let expected = "\
REPOSITORY                    TAG        IMAGE ID       CREATED         SIZE
127.0.0.1:5000/bench/many     tag066     b8771c0acce2   18 months ago   2.11MB
127.0.0.1:5000/bench/multi    latest     6f01b9cfe24d   18 months ago   1.57MB
127.0.0.1:5000/bench/layers   whiteout   aa50d2efc6d4   18 months ago   419kB
debian                        bookworm   7ea5cf21978c   18 months ago   117MB
debian                        latest     7ea5cf21978c   18 months ago   117MB
127.0.0.1:5000/bench/debian   <none>     7ea5cf21978c   18 months ago   117MB
";
        let mut digest_only = row(
            "127.0.0.1:5000/bench/debian",
            "<none>",
            "7ea5cf21978c",
            116_930_000,
        );
        digest_only.digest = Some(id("791c47585e2d"));
        let rows = vec![
            row("127.0.0.1:5000/bench/many", "tag066", "b8771c0acce2", 2_110_000),
            row("127.0.0.1:5000/bench/multi", "latest", "6f01b9cfe24d", 1_566_000),
            row("127.0.0.1:5000/bench/layers", "whiteout", "aa50d2efc6d4", 419_000),
            row("debian", "bookworm", "7ea5cf21978c", 116_930_000),
            row("debian", "latest", "7ea5cf21978c", 116_930_000),
            digest_only,
        ];
        let now = at("2025-05-20T10:00:00Z");
        assert_eq!(render_table(&rows, false, false, now), expected);
        assert_eq!(
            render_table(&rows, false, true, now),
            "b8771c0acce2\n6f01b9cfe24d\naa50d2efc6d4\n7ea5cf21978c\n7ea5cf21978c\n7ea5cf21978c\n"
        );
    }

    #[test]
    fn table_matches_capture_13c() {
        let expected = "\
REPOSITORY                    TAG       DIGEST                                                                    IMAGE ID       CREATED         SIZE
127.0.0.1:5000/bench/debian   <none>    sha256:791c47585e2d5f7943859d53f94bea25159a50ead6ec107ddaeac807e38e9e71   7ea5cf21978c   18 months ago   117MB
";
        let mut r = row(
            "127.0.0.1:5000/bench/debian",
            "<none>",
            "7ea5cf21978c",
            117_000_000,
        );
        r.digest = Some("sha256:791c47585e2d5f7943859d53f94bea25159a50ead6ec107ddaeac807e38e9e71".into());
        assert_eq!(
            render_table(&[r], true, false, at("2025-05-20T10:00:00Z")),
            expected
        );
        assert_eq!(
            render_table(&[], false, false, SystemTime::now()),
            "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
        );
    }

    #[test]
    fn human_duration_is_go_units() {
        let s = 1_000_000_000i64;
        let cases: &[(i64, &str)] = &[
            (-5 * s, "Less than a second"),
            (s / 2, "Less than a second"),
            (s, "1 second"),
            (59 * s, "59 seconds"),
            (60 * s, "About a minute"),
            (119 * s, "About a minute"),
            (2 * 60 * s, "2 minutes"),
            (59 * 60 * s, "59 minutes"),
            (60 * 60 * s, "About an hour"),
            (89 * 60 * s, "About an hour"),
            (90 * 60 * s, "2 hours"),
            (47 * 3600 * s, "47 hours"),
            (48 * 3600 * s, "2 days"),
            (13 * 86400 * s, "13 days"),
            (14 * 86400 * s, "2 weeks"),
            (59 * 86400 * s, "8 weeks"),
            (60 * 86400 * s, "2 months"),
            (548 * 86400 * s, "18 months"),
            (729 * 86400 * s, "24 months"),
            (730 * 86400 * s, "2 years"),
            // go-units truncates days, weeks, months and years (it rounds only the hours).
            ((10 * 86400 + 23 * 3600) * s, "10 days"),
            (20 * 86400 * s, "2 weeks"),
            (89 * 86400 * s, "2 months"),
            (1065 * 86400 * s, "2 years"),
            (i64::MAX, "292 years"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration_ns(*d), *want, "{d}");
        }
        let now = at("2024-01-01T00:01:30Z");
        assert_eq!(
            created_since(Some("2024-01-01T00:00:00Z"), now),
            "About a minute ago"
        );
        assert_eq!(
            created_since(Some("2024-01-01T02:00:00+02:00"), now),
            "About a minute ago"
        );
        assert_eq!(created_since(None, now), "");
        assert_eq!(created_since(Some("0001-01-01T00:00:00Z"), now), "");
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size_precision(116_930_000, 3), "117MB");
        assert_eq!(human_size_precision(419_000, 3), "419kB");
        assert_eq!(human_size_precision(999, 3), "999B");
        assert_eq!(human_size_precision(0, 3), "0B");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:00.5+01:00"),
            Some(1_700_000_000 - 20 - 3600)
        );
        assert_eq!(parse_rfc3339("2023-11-14"), None);
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(GO_ZERO_UNIX));
        assert_eq!(
            go_time_string(1_699_999_980, 0, "UTC"),
            "2023-11-14 22:13:00 +0000 UTC"
        );
        assert_eq!(
            go_time_string(1_699_999_980, -5 * 3600 - 1800, "X"),
            "2023-11-14 16:43:00 -0530 X"
        );
    }

    #[test]
    fn go_path_match() {
        let m = |p: &str, n: &str| path_match(p, n).unwrap();
        assert!(m("debian", "debian"));
        assert!(m("deb*", "debian"));
        assert!(!m("*", "bench/debian"));
        assert!(m("*/*", "bench/debian"));
        assert!(m("debian:*", "debian:bookworm"));
        assert!(m("d?bian", "debian"));
        assert!(m("[a-e]ebian", "debian"));
        assert!(!m("[^d]ebian", "debian"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("debian", "debian2"));
        assert!(matches!(path_match("[", "x"), Err(ImagesError::BadPattern)));
        assert!(matches!(path_match("a\\", "a"), Err(ImagesError::BadPattern)));
    }

    #[test]
    fn json_lines_are_dockers() {
        let mut tagged = row("debian", "bookworm", "7ea5cf21978c", 116_930_000);
        tagged.digest = Some(id("aaaa"));
        let mut digest_only = row("bench/debian", "<none>", "7ea5cf21978c", 116_930_000);
        digest_only.digest = Some(id("bbbb"));
        let now = at("2025-05-20T10:00:00Z");
        let out = render_json(&[tagged.clone(), digest_only.clone()], false, now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["Digest"], "<none>");
        assert_eq!(v["ID"], "7ea5cf21978c");
        assert_eq!(v["Size"], "117MB");
        assert_eq!(v["VirtualSize"], "116.9MB");
        assert_eq!(v["CreatedSince"], "18 months ago");
        assert_eq!(v["Containers"], "N/A");
        assert!(v["CreatedAt"].as_str().unwrap().starts_with("2023-11-1"));
        assert!(lines[0].starts_with(r#"{"Containers":"N/A","CreatedAt":"#));
        let tail = concat!(
            r#""Digest":"\u003cnone\u003e","ID":"7ea5cf21978c","Repository":"debian","SharedSize":"N/A","#,
            r#""Size":"117MB","Tag":"bookworm","UniqueSize":"N/A","VirtualSize":"116.9MB"}"#
        );
        assert!(lines[0].ends_with(tail), "{}", lines[0]);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["Digest"], "");
        let out = render_json(&[tagged, digest_only], true, now);
        assert!(out.contains(&format!(r#""Digest":"{}""#, id("aaaa"))));
    }

    #[test]
    fn lists_store_like_docker() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let base = Layer::new(&store, "base", |r| {
            fs::write(r.join("a"), vec![0u8; 1000]).unwrap();
            fs::hard_link(r.join("a"), r.join("b")).unwrap();
            std::os::unix::fs::symlink("a", r.join("c")).unwrap();
            fs::create_dir(r.join("d")).unwrap();
            fs::write(r.join("d/e"), vec![0u8; 500]).unwrap();
            fs::write(r.join("d/.wh.gone"), b"").unwrap();
        });
        let (m1, s1, c1) = add_image(&store, &[&base], "2023-11-14T22:13:00Z", "one");
        let (m2, s2, c2) = add_image(&store, &[&base], "2024-01-01T00:00:00Z", "two");
        let index_digest = Digest::sha256_of(b"some index");
        store
            .set_ref(entry(
                "docker.io/library/debian:bookworm",
                &m1,
                s1,
                Some(&index_digest),
            ))
            .unwrap();
        store
            .set_ref(entry(
                "docker.io/library/debian:latest",
                &m1,
                s1,
                Some(&index_digest),
            ))
            .unwrap();
        store
            .set_ref(entry(&format!("127.0.0.1:5000/bench/debian@{m1}"), &m1, s1, None))
            .unwrap();
        store
            .set_ref(entry("docker.io/library/other:1", &m2, s2, None))
            .unwrap();
        // An entry whose manifest is missing is left out.
        let missing = Digest::sha256_of(b"missing");
        store
            .set_ref(entry("docker.io/library/broken:1", &missing, 1, None))
            .unwrap();

        let rows = list(&store, None).unwrap();
        let size = 1000 + 1 + 500; // "a" once (hardlink "b"), symlink "c" (1 byte), "d/e"
        let summary: Vec<(&str, &str, Option<&str>, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.repository.as_str(),
                    r.tag.as_str(),
                    r.digest.as_deref(),
                    r.image_id.as_str(),
                )
            })
            .collect();
        let (c1s, c2s) = (c1.to_string(), c2.to_string());
        let (ids, m1s, m2s) = (index_digest.to_string(), m1.to_string(), m2.to_string());
        assert_eq!(
            summary,
            vec![
                ("other", "1", Some(m2s.as_str()), c2s.as_str()),
                ("debian", "bookworm", Some(ids.as_str()), c1s.as_str()),
                ("debian", "latest", Some(ids.as_str()), c1s.as_str()),
                (
                    "127.0.0.1:5000/bench/debian",
                    "<none>",
                    Some(m1s.as_str()),
                    c1s.as_str()
                ),
            ]
        );
        assert!(rows.iter().all(|r| r.size == size));

        let only = |f: &str| -> Vec<(String, String)> {
            list(&store, Some(f))
                .unwrap()
                .into_iter()
                .map(|r| (r.repository, r.tag))
                .collect()
        };
        assert_eq!(only("debian").len(), 2);
        assert_eq!(only("debian:latest"), vec![("debian".into(), "latest".into())]);
        assert_eq!(only("docker.io/library/debian:latest").len(), 1);
        assert_eq!(
            only("127.0.0.1:5000/bench/debian"),
            vec![("127.0.0.1:5000/bench/debian".into(), "<none>".into())]
        );
        assert_eq!(only("*/bench/*").len(), 1);
        assert!(only("nothing").is_empty());
        assert!(matches!(list(&store, Some("[")), Err(ImagesError::BadPattern)));

        // The filtered tag row keeps no digest: its repo digest does not match the pattern.
        let filtered = list(&store, Some("debian:bookworm")).unwrap();
        assert_eq!(filtered[0].digest, None);

        // A recorded size wins over walking the directory.
        write_layer_json(&store, &base.diff_id, &Digest::sha256_of(&base.blob), &[]);
        let meta_path = store.layer_dir(&base.diff_id).join("layer.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
        meta["size"] = 42.into();
        fs::write(&meta_path, meta.to_string()).unwrap();
        assert!(list(&store, None).unwrap().iter().all(|r| r.size == 42));
    }
}
