//! Pull progress: the events the pull logic emits and the reporters that render them.
//!
//! The pull logic never prints. It sends [`Event`]s to a [`Reporter`], and the reporter decides
//! how they look:
//!
//! * [`PlainReporter`]: docker's rendering when stdout is not a terminal (one line per status
//!   change, byte progress dropped);
//! * [`TtyReporter`]: docker's terminal view, one line per layer rewritten in place, drawn with
//!   `indicatif`;
//! * [`QuietReporter`]: `-q`, only the final reference;
//! * [`JsonReporter`]: one docker Engine API JSON message per line.
//!
//! [`human_size`] and [`render_progress`] reproduce docker's number and bar formats exactly.
//! [`watchdog`] is the progress timeout's reporter: it tells when a pull stopped receiving data.

use std::fmt;
use std::io::{self, Write};

mod json;
mod plain;
mod tty;
pub mod watchdog;

pub use json::JsonReporter;
pub use plain::{PlainReporter, QuietReporter};
pub use tty::{format_layer_line, TtyReporter};

/// A layer's docker-style status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerStatus {
    /// `Already exists`: the layer (and its parents) are already in the local store.
    AlreadyExists,
    /// `Pulling fs layer`: the layer is missing and will be downloaded.
    PullingFsLayer,
    /// `Waiting`: no download slot is free yet.
    Waiting,
    /// `Retrying in N seconds` (`Retrying in 1 second`): countdown before the next attempt.
    Retrying {
        /// Seconds left before the next attempt.
        seconds: u64,
    },
    /// `Verifying Checksum`.
    VerifyingChecksum,
    /// `Download complete`.
    DownloadComplete,
    /// `Pull complete`: the layer is extracted and registered.
    PullComplete,
}

impl fmt::Display for LayerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerStatus::AlreadyExists => f.write_str("Already exists"),
            LayerStatus::PullingFsLayer => f.write_str("Pulling fs layer"),
            LayerStatus::Waiting => f.write_str("Waiting"),
            LayerStatus::Retrying { seconds } => {
                let plural = if *seconds == 1 { "" } else { "s" };
                write!(f, "Retrying in {seconds} second{plural}")
            }
            LayerStatus::VerifyingChecksum => f.write_str("Verifying Checksum"),
            LayerStatus::DownloadComplete => f.write_str("Download complete"),
            LayerStatus::PullComplete => f.write_str("Pull complete"),
        }
    }
}

/// Which byte stream a [`Event::Progress`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Bytes received of the blob (`Downloading`).
    Downloading,
    /// Bytes of the compressed blob read back while unpacking (`Extracting`).
    Extracting,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Downloading => "Downloading",
            Phase::Extracting => "Extracting",
        })
    }
}

/// Something that happened during a pull, for a [`Reporter`] to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// "Using default tag: latest"
    DefaultTag(String),
    /// `<id>: Pulling from <path>` (id = tag, or the full canonical reference for digest pulls)
    PullingFrom {
        /// The tag, or the full canonical reference for digest pulls.
        id: String,
        /// The repository path, e.g. `library/debian`.
        path: String,
    },
    /// A layer's status changed. id = 12-hex short ID.
    Layer {
        /// The 12-hex short layer ID.
        id: String,
        /// The new status.
        status: LayerStatus,
    },
    /// Byte progress of a layer (current/total bytes; total 0 = unknown).
    Progress {
        /// The 12-hex short layer ID.
        id: String,
        /// Downloading or extracting.
        phase: Phase,
        /// Bytes done so far.
        current: u64,
        /// Total bytes, 0 when unknown.
        total: u64,
    },
    /// "Digest: sha256:…"
    Digest(String),
    /// `Status: Downloaded newer image for <ref>` (newer=true) / `Status: Image is up to date for <ref>`
    Status {
        /// Whether the tag was created or moved.
        newer: bool,
        /// The familiar reference, e.g. `debian:latest`.
        reference: String,
    },
    /// A warning line printed on stdout in the stream, e.g. the platform mismatch WARNING (text
    /// given in full, including "WARNING: ").
    Warning(String),
    /// An informational note (e.g. "falling back to origin"); plain/TTY print it as a plain line
    /// on stderr.
    Note(String),
    /// The final canonical reference line (printed even with -q), e.g.
    /// "docker.io/library/debian:latest".
    Done(String),
    /// A pull failed after output started (for the JSON stream's errorDetail; plain/TTY ignore
    /// it — main prints errors to stderr).
    Error(String),
    /// Result summary for machine-readable output; plain/TTY/quiet ignore it.
    Result(PullResult),
}

/// Summary of one pull, for machine-readable output (`None` fields are left out of the JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PullResult {
    /// The canonical reference that was pulled.
    pub reference: String,
    /// The image ID (config digest), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The tag, when the reference had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The digest the reference resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The image size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Whether the local tag was created or moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// The error message, for a failed pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Receives a pull's [`Event`]s and renders them.
pub trait Reporter: Send + Sync {
    /// Handle one event. Never fails: output errors (e.g. a closed pipe) are ignored.
    fn report(&self, event: Event);
    /// Called once at the end (success or failure): flush, leave bars on screen as they are,
    /// restore the terminal.
    fn finish(&self) {}
}

/// How pull output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// [`OutputMode::Tty`] when stdout is a terminal and `TERM` is not `dumb`, else
    /// [`OutputMode::Plain`].
    Auto,
    /// docker's non-terminal output.
    Plain,
    /// docker's terminal output, with layer lines rewritten in place.
    Tty,
    /// Only the final reference (`-q`).
    Quiet,
    /// One docker Engine API JSON message per line.
    Json,
}

/// Build the reporter writing to stdout: Auto picks Tty when stdout is a terminal
/// (libc::isatty(1)) and TERM is not "dumb", else Plain.
pub fn reporter(mode: OutputMode) -> Box<dyn Reporter> {
    match resolve_mode(mode) {
        OutputMode::Tty => Box::new(TtyReporter::stdout()),
        OutputMode::Quiet => Box::new(QuietReporter::new(io::stdout())),
        OutputMode::Json => Box::new(JsonReporter::new(io::stdout())),
        OutputMode::Plain | OutputMode::Auto => Box::new(PlainReporter::new(io::stdout())),
    }
}

/// Resolve [`OutputMode::Auto`] against the real stdout and `TERM`.
fn resolve_mode(mode: OutputMode) -> OutputMode {
    if mode != OutputMode::Auto {
        return mode;
    }
    // SAFETY: isatty only inspects the file descriptor.
    let tty = unsafe { libc::isatty(1) } == 1;
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    if tty && !dumb {
        OutputMode::Tty
    } else {
        OutputMode::Plain
    }
}

/// docker's go-units HumanSize (decimal, %.4g, no space, "kB"): 0B, 512B, 1kB, 1.536kB, 12.35MB,
/// 45.6MB, 999999 → "1000kB", 1.235TB.
pub fn human_size(bytes: u64) -> String {
    human_size_precision(bytes, 4)
}

/// go-units' `HumanSizeWithPrecision`: `human_size` with `precision` significant digits
/// (`docker images` uses 3: "117MB").
pub fn human_size_precision(bytes: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    // Same float arithmetic as go-units' getSizeAndUnit: divide until below the base.
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g(size, precision), UNITS[i])
}

/// Go's `%.{precision}g`: `precision` significant digits, trailing zeros removed, scientific
/// notation only for exponents below -4 or at least `precision`.
fn format_g(value: f64, precision: usize) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let precision = precision.max(1);
    // Rounding to `precision` digits first tells the decimal exponent after rounding
    // (999.95 → 1.000e3), exactly as Go decides between %e and %f.
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i64 {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_fraction(mantissa), exp.abs());
    }
    let decimals = (precision as i64 - 1 - exp).max(0) as usize;
    trim_fraction(&format!("{value:.decimals$}")).to_string()
}

/// Drop trailing zeros of a decimal fraction, and the point if nothing is left after it.
fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// docker's RenderTUIProgress for current/total at terminal width `width` (bar only when
/// width > 110).
///
/// Examples: 50/100 at width 200 is
/// `[=========================>                         ]      50B/100B`; at width 80 it is
/// `     50B/100B`. With an unknown total only `%8v` of the current size is shown.
pub fn render_progress(current: u64, total: u64, width: u16) -> String {
    if current == 0 && total == 0 {
        return String::new();
    }
    let current_h = human_size(current);
    if total == 0 {
        return format!("{current_h:>8}");
    }
    let percent = ((current as f64 / total as f64 * 100.0) as i64 / 2).clamp(0, 50) as usize;
    let mut out = String::with_capacity(80);
    if width > 110 {
        out.push('[');
        out.push_str(&"=".repeat(percent));
        out.push('>');
        out.push_str(&" ".repeat(50 - percent));
        out.push_str("] ");
    }
    if current > total {
        // docker drops the total when the reported current is past it.
        out.push_str(&format!("{current_h:>8}"));
    } else {
        out.push_str(&format!("{current_h:>8}/{}", human_size(total)));
    }
    out
}

/// The plain text of a line that is not a layer line, or `None` for events that have no such
/// line (layer events, notes, errors, results).
fn plain_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::DefaultTag(tag) => format!("Using default tag: {tag}"),
        Event::PullingFrom { id, path } => format!("{id}: Pulling from {path}"),
        Event::Digest(digest) => format!("Digest: {digest}"),
        Event::Status {
            newer: true,
            reference,
        } => {
            format!("Status: Downloaded newer image for {reference}")
        }
        Event::Status {
            newer: false,
            reference,
        } => {
            format!("Status: Image is up to date for {reference}")
        }
        Event::Warning(text) => text.clone(),
        Event::Done(reference) => reference.clone(),
        _ => return None,
    })
}

/// Write `line` plus a newline with a single write call, then flush. Errors (e.g. a closed
/// pipe) are ignored: progress output must never abort a pull.
fn write_line<W: Write + ?Sized>(out: &mut W, line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = out.write_all(buf.as_bytes());
    let _ = out.flush();
}

/// Events and names shared by the reporters' tests (capture 01's image).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Event, LayerStatus, Phase};

    /// A layer status event.
    pub fn layer(id: &str, status: LayerStatus) -> Event {
        Event::Layer {
            id: id.into(),
            status,
        }
    }

    /// A byte-progress event.
    pub fn progress(id: &str, phase: Phase, current: u64, total: u64) -> Event {
        Event::Progress {
            id: id.into(),
            phase,
            current,
            total,
        }
    }

    /// The digest of capture 01's image.
    pub const DIGEST: &str = "sha256:791c47585e2d5f7943859d53f94bea25159a50ead6ec107ddaeac807e38e9e71";
    /// The reference of capture 01.
    pub const REF: &str = "127.0.0.1:5000/bench/debian:bookworm";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0B"),
            (1, "1B"),
            (512, "512B"),
            (999, "999B"),
            (1000, "1kB"),
            (1536, "1.536kB"),
            (3190, "3.19kB"),
            (10_125, "10.12kB"),
            (491_520, "491.5kB"),
            (553_000, "553kB"),
            (999_999, "1000kB"),
            (1_000_000, "1MB"),
            (12_345_678, "12.35MB"),
            (45_600_000, "45.6MB"),
            (49_580_000, "49.58MB"),
            (48_680_000, "48.68MB"),
            (108_000_000, "108MB"),
            (1_000_000_000, "1GB"),
            (1_234_567_890_123, "1.235TB"),
            (u64::MAX, "18.45EB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human_size(*bytes), *want, "human_size({bytes})");
        }
    }

    #[test]
    fn format_g_matches_go() {
        let cases = [
            (0.0, "0"),
            (1.5, "1.5"),
            (999.95, "1000"),
            (9.9996, "10"),
            (12345.0, "1.234e+04"),
            (0.00001234, "1.234e-05"),
            (0.0001234, "0.0001234"),
        ];
        for (value, want) in cases {
            assert_eq!(format_g(value, 4), want, "format_g({value}, 4)");
        }
    }

    #[test]
    fn render_progress_examples() {
        let empty_bar = format!("[>{}]       0B/100B", " ".repeat(50));
        // (current, total, width, rendering)
        #[rustfmt::skip]
        let cases: [(u64, u64, u16, &str); 12] = [
            (50, 100, 200, "[=========================>                         ]      50B/100B"),
            (12_345_678, 45_600_000, 200, "[=============>                                     ]  12.35MB/45.6MB"),
            // current > total: full bar, no total.
            (150, 100, 200, "[==================================================>]     150B"),
            (48_680_000, 48_680_000, 120, "[==================================================>]  48.68MB/48.68MB"),
            (505_900, 48_680_000, 120, "[>                                                  ]  505.9kB/48.68MB"),
            // Unknown total: only the current size, right-aligned in 8 columns.
            (1, 0, 200, "      1B"),
            (12_345_678, 0, 80, " 12.35MB"),
            // Nothing at all.
            (0, 0, 200, ""),
            // Width <= 110: numbers only.
            (513_000, 48_680_000, 80, "   513kB/48.68MB"),
            (50, 100, 110, "     50B/100B"),
            (150, 100, 80, "    150B"),
            (0, 100, 200, &empty_bar),
        ];
        for (current, total, width, want) in cases {
            assert_eq!(
                render_progress(current, total, width),
                want,
                "render_progress({current}, {total}, {width})"
            );
        }
        // The bar is 53 characters plus a space.
        assert_eq!(render_progress(1, 100, 111).find(']'), Some(52));
    }

    #[test]
    fn layer_status_texts() {
        let cases = [
            (LayerStatus::AlreadyExists, "Already exists"),
            (LayerStatus::PullingFsLayer, "Pulling fs layer"),
            (LayerStatus::Waiting, "Waiting"),
            (LayerStatus::Retrying { seconds: 5 }, "Retrying in 5 seconds"),
            (LayerStatus::Retrying { seconds: 2 }, "Retrying in 2 seconds"),
            (LayerStatus::Retrying { seconds: 1 }, "Retrying in 1 second"),
            (LayerStatus::Retrying { seconds: 0 }, "Retrying in 0 seconds"),
            (LayerStatus::VerifyingChecksum, "Verifying Checksum"),
            (LayerStatus::DownloadComplete, "Download complete"),
            (LayerStatus::PullComplete, "Pull complete"),
        ];
        for (status, text) in cases {
            assert_eq!(status.to_string(), text);
        }
        assert_eq!(Phase::Downloading.to_string(), "Downloading");
        assert_eq!(Phase::Extracting.to_string(), "Extracting");
    }

    #[test]
    fn explicit_modes_are_kept() {
        for mode in [
            OutputMode::Plain,
            OutputMode::Tty,
            OutputMode::Quiet,
            OutputMode::Json,
        ] {
            assert_eq!(resolve_mode(mode), mode);
        }
        assert_ne!(resolve_mode(OutputMode::Auto), OutputMode::Auto);
    }
}
