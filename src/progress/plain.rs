//! The line-oriented reporters: docker's non-terminal output, and `-q`.

use std::io::{self, Write};
use std::sync::Mutex;

use super::{plain_line, write_line, Event, Reporter};

/// An output sink and an error sink, each written a whole line at a time under its lock, so
/// lines from concurrent layers never interleave.
pub struct Sinks<W: Write + Send, E: Write + Send> {
    out: Mutex<W>,
    err: Mutex<E>,
}

impl<W: Write + Send, E: Write + Send> Sinks<W, E> {
    pub(super) fn new(out: W, err: E) -> Self {
        Self {
            out: Mutex::new(out),
            err: Mutex::new(err),
        }
    }

    pub(super) fn out_line(&self, line: &str) {
        write_line(&mut *lock(&self.out), line);
    }

    pub(super) fn err_line(&self, line: &str) {
        write_line(&mut *lock(&self.err), line);
    }

    pub(super) fn flush(&self) {
        let _ = lock(&self.out).flush();
        let _ = lock(&self.err).flush();
    }

    pub(super) fn into_inner(self) -> (W, E) {
        (
            self.out.into_inner().unwrap_or_else(|e| e.into_inner()),
            self.err.into_inner().unwrap_or_else(|e| e.into_inner()),
        )
    }
}

/// The constructors of a reporter that is nothing but its [`Sinks`]: `new` (the error sink
/// is the process's stderr), `with_stderr` and `into_inner`.
macro_rules! sinks_reporter {
    ($reporter:ident) => {
        impl<W: Write + Send> $reporter<W> {
            /// A reporter writing to `out`, with its error-sink lines (notes, and for `-q`
            /// warnings) on the process's stderr.
            pub fn new(out: W) -> Self {
                Self::with_stderr(out, io::stderr())
            }
        }

        impl<W: Write + Send, E: Write + Send> $reporter<W, E> {
            /// A reporter writing to `out`, with its error-sink lines on `err`.
            pub fn with_stderr(out: W, err: E) -> Self {
                Self(Sinks::new(out, err))
            }

            /// Give back the output and error sinks (used by tests to inspect what was written).
            pub fn into_inner(self) -> (W, E) {
                self.0.into_inner()
            }
        }
    };
}

/// docker's rendering when stdout is not a terminal.
///
/// Every layer status change is one `"<id>: <status>"` line; byte progress is dropped; the
/// other lines (`Pulling from`, `Digest:`, `Status:`, warnings, the final reference) are printed
/// as they come. Notes go to the error sink (stderr). Each line is written with one call and
/// flushed under a lock, so lines from concurrent layers never interleave.
pub struct PlainReporter<W: Write + Send, E: Write + Send = io::Stderr>(Sinks<W, E>);

sinks_reporter!(PlainReporter);

impl<W: Write + Send, E: Write + Send> Reporter for PlainReporter<W, E> {
    fn report(&self, event: Event) {
        let line = match &event {
            Event::Layer { id, status } => format!("{id}: {status}"),
            Event::Note(text) => return self.0.err_line(text),
            // Byte progress has no place in a log: docker drops it when not on a terminal.
            Event::Progress { .. } | Event::Error(_) | Event::Result(_) => return,
            other => match plain_line(other) {
                Some(line) => line,
                None => return,
            },
        };
        self.0.out_line(&line);
    }

    fn finish(&self) {
        self.0.flush();
    }
}

/// `-q`: only the final reference is printed on the output sink; warnings and notes go to the
/// error sink (stderr); everything else is dropped.
pub struct QuietReporter<W: Write + Send, E: Write + Send = io::Stderr>(Sinks<W, E>);

sinks_reporter!(QuietReporter);

impl<W: Write + Send, E: Write + Send> Reporter for QuietReporter<W, E> {
    fn report(&self, event: Event) {
        match event {
            Event::Done(reference) => self.0.out_line(&reference),
            Event::Warning(text) | Event::Note(text) => self.0.err_line(&text),
            _ => {}
        }
    }

    fn finish(&self) {
        self.0.flush();
    }
}

/// Lock a sink, ignoring poisoning: a panic elsewhere must not silence the output.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::super::{LayerStatus, Phase};
    use super::*;

    use super::super::fixtures::{layer, progress, DIGEST, REF};

    /// The events of capture 01-pull-notty.txt, with progress interleaved as the pull sends it.
    fn capture_01_events() -> Vec<Event> {
        let id = "907a724901cb";
        let total = 48_680_000;
        let mut events = vec![
            Event::PullingFrom {
                id: "bookworm".into(),
                path: "bench/debian".into(),
            },
            layer(id, LayerStatus::PullingFsLayer),
        ];
        for current in [0, 505_900, 17_240_000, total] {
            events.push(progress(id, Phase::Downloading, current, total));
        }
        events.push(layer(id, LayerStatus::VerifyingChecksum));
        events.push(layer(id, LayerStatus::DownloadComplete));
        for current in [491_500, 24_080_000, total] {
            events.push(progress(id, Phase::Extracting, current, total));
        }
        events.push(layer(id, LayerStatus::PullComplete));
        events.push(Event::Digest(DIGEST.into()));
        events.push(Event::Status {
            newer: true,
            reference: REF.into(),
        });
        events.push(Event::Done(REF.into()));
        events.push(Event::Result(super::super::PullResult {
            reference: REF.into(),
            image_id: None,
            tag: Some("bookworm".into()),
            digest: Some(DIGEST.into()),
            size: None,
            changed: Some(true),
            error: None,
        }));
        events
    }

    fn run_plain(events: Vec<Event>) -> (String, String) {
        let r = PlainReporter::with_stderr(Vec::new(), Vec::new());
        for e in events {
            r.report(e);
        }
        r.finish();
        let (out, err) = r.into_inner();
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn plain_reproduces_capture_01() {
        let (out, err) = run_plain(capture_01_events());
        let want = "bookworm: Pulling from bench/debian\n\
                    907a724901cb: Pulling fs layer\n\
                    907a724901cb: Verifying Checksum\n\
                    907a724901cb: Download complete\n\
                    907a724901cb: Pull complete\n\
                    Digest: sha256:791c47585e2d5f7943859d53f94bea25159a50ead6ec107ddaeac807e38e9e71\n\
                    Status: Downloaded newer image for 127.0.0.1:5000/bench/debian:bookworm\n\
                    127.0.0.1:5000/bench/debian:bookworm\n";
        assert_eq!(out, want);
        assert_eq!(err, "");
    }

    #[test]
    fn plain_up_to_date_default_tag_and_extras() {
        let (out, err) = run_plain(vec![
            Event::DefaultTag("latest".into()),
            Event::PullingFrom {
                id: "latest".into(),
                path: "bench/multi".into(),
            },
            layer("907a724901cb", LayerStatus::AlreadyExists),
            layer("2b73ea0366e9", LayerStatus::Retrying { seconds: 2 }),
            layer("2b73ea0366e9", LayerStatus::Retrying { seconds: 1 }),
            layer("2b73ea0366e9", LayerStatus::Waiting),
            Event::Note("falling back to origin".into()),
            Event::Digest(DIGEST.into()),
            Event::Status {
                newer: false,
                reference: "127.0.0.1:5000/bench/multi:latest".into(),
            },
            Event::Warning("WARNING: image with reference x was found but ...".into()),
            Event::Error("boom".into()),
            Event::Done("127.0.0.1:5000/bench/multi:latest".into()),
        ]);
        let want = format!(
            "Using default tag: latest\n\
             latest: Pulling from bench/multi\n\
             907a724901cb: Already exists\n\
             2b73ea0366e9: Retrying in 2 seconds\n\
             2b73ea0366e9: Retrying in 1 second\n\
             2b73ea0366e9: Waiting\n\
             Digest: {DIGEST}\n\
             Status: Image is up to date for 127.0.0.1:5000/bench/multi:latest\n\
             WARNING: image with reference x was found but ...\n\
             127.0.0.1:5000/bench/multi:latest\n"
        );
        assert_eq!(out, want);
        assert_eq!(err, "falling back to origin\n");
    }

    #[test]
    fn plain_lines_never_interleave() {
        let r = PlainReporter::with_stderr(Vec::new(), Vec::new());
        std::thread::scope(|s| {
            for t in 0..4 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..200 {
                        r.report(layer(&format!("{t:012}"), LayerStatus::Retrying { seconds: i }));
                    }
                });
            }
        });
        let (out, _) = r.into_inner();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 800);
        assert!(out.lines().all(|l| l.len() > 14 && l.as_bytes()[12] == b':'));
    }

    #[test]
    fn quiet_prints_only_the_reference() {
        let r = QuietReporter::with_stderr(Vec::new(), Vec::new());
        let mut events = capture_01_events();
        events.insert(0, Event::DefaultTag("latest".into()));
        events.push(Event::Warning("WARNING: platform".into()));
        events.push(Event::Note("note".into()));
        for e in events {
            r.report(e);
        }
        r.finish();
        let (out, err) = r.into_inner();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{REF}\n"));
        assert_eq!(String::from_utf8(err).unwrap(), "WARNING: platform\nnote\n");
    }
}
