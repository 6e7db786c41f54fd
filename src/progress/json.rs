//! The machine-readable reporter: docker Engine API JSON messages, one per line.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plain::{lock, Sinks};
use super::{plain_line, Event, Phase, PullResult, Reporter};

/// Minimum time between two `Downloading`/`Extracting` messages for the same layer, as the
/// docker daemon throttles them.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Writes docker's Engine API message stream (`POST /images/create`), one JSON object per line:
///
/// ```text
/// {"status":"Pulling from library/debian","id":"latest"}
/// {"status":"Pulling fs layer","progressDetail":{},"id":"907a724901cb"}
/// {"status":"Downloading","progressDetail":{"current":1048576,"total":49580000},"id":"907a724901cb"}
/// {"status":"Digest: sha256:…"}
/// {"status":"Status: Downloaded newer image for debian:latest"}
/// {"errorDetail":{"message":"…"},"error":"…"}
/// {"result":{"reference":"docker.io/library/debian:latest",…}}
/// ```
///
/// Progress messages are throttled to one per layer and phase every 100 ms; the one that reaches
/// the total is always written. [`Event::Done`] is not written (the result carries the
/// reference); notes go to the error sink (stderr) so the output stays pure JSON.
pub struct JsonReporter<W: Write + Send, E: Write + Send = io::Stderr> {
    sinks: Sinks<W, E>,
    interval: Duration,
    last_progress: Mutex<HashMap<(String, Phase), Instant>>,
}

/// One message of the stream; the field order is docker's.
#[derive(Serialize, Default)]
struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    progress_detail: Option<ProgressDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    error_detail: Option<ErrorDetail<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a PullResult>,
}

/// `progressDetail`: zero fields are left out, as docker's `omitempty` does.
#[derive(Serialize, Default)]
struct ProgressDetail {
    #[serde(skip_serializing_if = "is_zero")]
    current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<W: Write + Send> JsonReporter<W> {
    /// A reporter writing to `out`, with notes on the process's stderr.
    pub fn new(out: W) -> Self {
        Self::with_stderr(out, io::stderr())
    }
}

impl<W: Write + Send, E: Write + Send> JsonReporter<W, E> {
    /// A reporter writing to `out`, with notes on `err`.
    pub fn with_stderr(out: W, err: E) -> Self {
        Self {
            sinks: Sinks::new(out, err),
            interval: PROGRESS_INTERVAL,
            last_progress: Mutex::new(HashMap::new()),
        }
    }

    /// Change the progress throttle interval (tests use a long one to be deterministic).
    #[cfg(test)]
    fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Give back the output and error sinks (used by tests to inspect what was written).
    pub fn into_inner(self) -> (W, E) {
        self.sinks.into_inner()
    }

    /// Whether a progress message for this layer and phase is due now.
    fn progress_due(&self, id: &str, phase: Phase, current: u64, total: u64) -> bool {
        let now = Instant::now();
        let mut last = lock(&self.last_progress);
        let key = (id.to_string(), phase);
        let last_done = total > 0 && current >= total;
        let due = last_done
            || last
                .get(&key)
                .is_none_or(|t| now.duration_since(*t) >= self.interval);
        if due {
            last.insert(key, now);
        }
        due
    }

    fn emit(&self, msg: &Message<'_>) {
        if let Ok(line) = serde_json::to_string(msg) {
            self.sinks.out_line(&line);
        }
    }
}

impl<W: Write + Send, E: Write + Send> Reporter for JsonReporter<W, E> {
    fn report(&self, event: Event) {
        match &event {
            Event::PullingFrom { id, path } => {
                let status = format!("Pulling from {path}");
                self.emit(&Message {
                    status: Some(&status),
                    id: Some(id),
                    ..Default::default()
                });
            }
            Event::Layer { id, status } => {
                let status = status.to_string();
                self.emit(&Message {
                    status: Some(&status),
                    progress_detail: Some(ProgressDetail::default()),
                    id: Some(id),
                    ..Default::default()
                });
            }
            Event::Progress {
                id,
                phase,
                current,
                total,
            } => {
                if self.progress_due(id, *phase, *current, *total) {
                    let status = phase.to_string();
                    self.emit(&Message {
                        status: Some(&status),
                        progress_detail: Some(ProgressDetail {
                            current: *current,
                            total: *total,
                        }),
                        id: Some(id),
                        ..Default::default()
                    });
                }
            }
            Event::Error(message) => self.emit(&Message {
                error_detail: Some(ErrorDetail { message }),
                error: Some(message),
                ..Default::default()
            }),
            Event::Result(result) => self.emit(&Message {
                result: Some(result),
                ..Default::default()
            }),
            Event::Note(text) => self.sinks.err_line(text),
            // The result message carries the final reference.
            Event::Done(_) => {}
            other => {
                if let Some(status) = plain_line(other) {
                    self.emit(&Message {
                        status: Some(&status),
                        ..Default::default()
                    });
                }
            }
        }
    }

    fn finish(&self) {
        self.sinks.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::super::LayerStatus;
    use super::*;

    fn run(events: Vec<Event>) -> (Vec<String>, String) {
        let r = JsonReporter::with_stderr(Vec::new(), Vec::new()).with_interval(Duration::from_secs(3600));
        for e in events {
            r.report(e);
        }
        r.finish();
        let (out, err) = r.into_inner();
        let out = String::from_utf8(out).unwrap();
        assert!(out.ends_with('\n'));
        (
            out.lines().map(str::to_string).collect(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn json_stream_shape() {
        let id = "907a724901cb";
        let p = |current, total| Event::Progress {
            id: id.into(),
            phase: Phase::Downloading,
            current,
            total,
        };
        let (lines, err) = run(vec![
            Event::DefaultTag("latest".into()),
            Event::PullingFrom {
                id: "latest".into(),
                path: "library/debian".into(),
            },
            Event::Layer {
                id: id.into(),
                status: LayerStatus::PullingFsLayer,
            },
            Event::Layer {
                id: id.into(),
                status: LayerStatus::Retrying { seconds: 1 },
            },
            p(1_048_576, 49_580_000),
            p(2_000_000, 49_580_000), // throttled
            p(49_580_000, 49_580_000),
            Event::Progress {
                id: id.into(),
                phase: Phase::Extracting,
                current: 7,
                total: 0,
            },
            Event::Layer {
                id: id.into(),
                status: LayerStatus::PullComplete,
            },
            Event::Digest("sha256:abc".into()),
            Event::Status {
                newer: true,
                reference: "debian:latest".into(),
            },
            Event::Warning("WARNING: w".into()),
            Event::Note("a note".into()),
            Event::Done("docker.io/library/debian:latest".into()),
            Event::Error("failed \"x\"".into()),
            Event::Result(PullResult {
                reference: "docker.io/library/debian:latest".into(),
                image_id: Some("sha256:def".into()),
                tag: Some("latest".into()),
                digest: Some("sha256:abc".into()),
                size: Some(1234),
                changed: Some(true),
                error: None,
            }),
        ]);
        let want = [
            r#"{"status":"Using default tag: latest"}"#,
            r#"{"status":"Pulling from library/debian","id":"latest"}"#,
            r#"{"status":"Pulling fs layer","progressDetail":{},"id":"907a724901cb"}"#,
            r#"{"status":"Retrying in 1 second","progressDetail":{},"id":"907a724901cb"}"#,
            r#"{"status":"Downloading","progressDetail":{"current":1048576,"total":49580000},"id":"907a724901cb"}"#,
            r#"{"status":"Downloading","progressDetail":{"current":49580000,"total":49580000},"id":"907a724901cb"}"#,
            r#"{"status":"Extracting","progressDetail":{"current":7},"id":"907a724901cb"}"#,
            r#"{"status":"Pull complete","progressDetail":{},"id":"907a724901cb"}"#,
            r#"{"status":"Digest: sha256:abc"}"#,
            r#"{"status":"Status: Downloaded newer image for debian:latest"}"#,
            r#"{"status":"WARNING: w"}"#,
            r#"{"errorDetail":{"message":"failed \"x\""},"error":"failed \"x\""}"#,
            r#"{"result":{"reference":"docker.io/library/debian:latest","image_id":"sha256:def","tag":"latest","digest":"sha256:abc","size":1234,"changed":true}}"#,
        ];
        assert_eq!(lines, want);
        assert_eq!(err, "a note\n");
    }

    #[test]
    fn json_progress_throttle_is_per_layer() {
        let p = |id: &str, current| Event::Progress {
            id: id.into(),
            phase: Phase::Downloading,
            current,
            total: 100,
        };
        let (lines, _) = run(vec![p("a", 1), p("b", 1), p("a", 2), p("b", 2), p("a", 100)]);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains(r#""current":100"#) && lines[2].contains(r#""id":"a""#));
    }

    #[test]
    fn json_result_skips_none() {
        let (lines, _) = run(vec![Event::Result(PullResult {
            reference: "r".into(),
            image_id: None,
            tag: None,
            digest: None,
            size: None,
            changed: None,
            error: Some("e".into()),
        })]);
        assert_eq!(lines, [r#"{"result":{"reference":"r","error":"e"}}"#]);
    }
}
