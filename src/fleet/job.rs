//! A pull job and its per-agent results, in the API's field names, and the one function that
//! runs a job's pull on a node (the agent's and the standalone server's), failing it when it
//! receives no data for the progress timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::credentials::CredentialLookup;
use crate::engine::{Engine, PullRequest};
use crate::progress::watchdog::{guard, Watchdog};
use crate::progress::{Event, LayerStatus, Reporter};
use crate::pull::gate::BlobGate;
use crate::reference::Reference;

/// What an agent said when it did not answer in time.
pub const TIMEOUT_ERROR: &str = "timeout: agent did not respond";

/// A job as stored in the jobs bucket (`jobs.<id>`) and returned by `GET /job/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's UUID.
    pub job_id: String,
    /// The target as the URL named it (`_all`, a hostname, `key:value`).
    pub target: String,
    /// The operation (`container.docker.pull`).
    pub operation: String,
    /// The image to pull, as given.
    pub image: String,
    /// `pending` while the server waits for answers, then `completed`.
    pub status: String,
    /// Seconds since the epoch when it was created.
    pub created: u64,
    /// Seconds since the epoch after which agents drop it unanswered.
    pub deadline: u64,
    /// The answers collected, one per agent.
    #[serde(default)]
    pub results: Vec<PullResult>,
}

/// The operation name of a pull job.
pub const PULL_OPERATION: &str = "container.docker.pull";

/// One agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResult {
    /// The agent's hostname.
    pub hostname: String,
    /// What happened.
    pub status: Status,
    /// The config digest (`sha256:…`); empty when the pull failed.
    pub image_id: String,
    /// The pulled tag; empty for a digest reference or a failure.
    pub tag: String,
    /// The image's size in bytes (config and layers as stored).
    pub size: u64,
    /// Whether the pull modified the agent's store.
    pub changed: bool,
    /// The agent's error text, docker's wording; empty on success.
    pub error: String,
}

/// `ok`, `failed` or `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Pulled (or already up to date).
    Ok,
    /// The pull failed, or the agent did not answer.
    Failed,
    /// The agent did not run the job.
    Skipped,
}

impl PullResult {
    /// A failed result for `hostname` with `error`.
    pub fn failed(hostname: &str, error: impl Into<String>) -> PullResult {
        PullResult {
            hostname: hostname.to_string(),
            status: Status::Failed,
            image_id: String::new(),
            tag: String::new(),
            size: 0,
            changed: false,
            error: error.into(),
        }
    }
}

/// The tag of a reference string: what follows the last `:` after the last `/` (so a
/// registry port is not a tag), without a digest; empty when there is none.
pub fn tag_of(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(name, _)| name);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map_or("", |(_, tag)| tag)
}

/// What the agent's reporter records of a pull: how many layers it downloaded and how many
/// it already had (for the one log line per job), and when data last came (the progress
/// timeout's [`Watchdog`]). It never prints.
#[derive(Debug, Default)]
pub struct JobReporter {
    downloaded: AtomicUsize,
    present: AtomicUsize,
    watchdog: Watchdog,
}

impl JobReporter {
    /// Layers downloaded and extracted.
    pub fn downloaded(&self) -> usize {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Layers that were already in the store.
    pub fn present(&self) -> usize {
        self.present.load(Ordering::Relaxed)
    }
}

impl Reporter for JobReporter {
    fn report(&self, event: Event) {
        if let Event::Layer { status, .. } = &event {
            match status {
                LayerStatus::PullComplete => self.downloaded.fetch_add(1, Ordering::Relaxed),
                LayerStatus::AlreadyExists => self.present.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        self.watchdog.report(event);
    }
}

/// Pulls `image` with `engine` as `rpull pull` would (default tag, the node's credentials),
/// its fetches from mirrors coordinated through `gate` when there is one, and says what
/// happened as `hostname`'s result. A pull that receives no data for `progress_timeout`
/// (`None`: never) is stopped and fails as the CRI service's does. `None` when the pull was
/// cancelled: a cancelled job has no answer.
#[allow(clippy::too_many_arguments)]
pub async fn run_pull(
    engine: &Engine,
    hostname: &str,
    image: &str,
    credentials: Option<CredentialLookup>,
    gate: Option<Arc<dyn BlobGate>>,
    reporter: Arc<JobReporter>,
    progress_timeout: Option<Duration>,
    cancel: CancellationToken,
) -> Option<PullResult> {
    let reference = match Reference::parse_normalized(image) {
        Ok(r) => r.with_default_tag().0,
        Err(e) => return Some(PullResult::failed(hostname, e.to_string())),
    };
    let request = PullRequest {
        platform: None,
        all_tags: false,
        credentials,
        blob_gate: gate,
    };
    // Its own token, so that a stall stops this pull and no other.
    let stop = cancel.child_token();
    let pull = engine.pull_image(&reference, &request, reporter.clone(), stop.clone());
    let outcome = match guard(&reporter.watchdog, progress_timeout, &stop, pull).await {
        Ok(outcome) => outcome,
        Err(_) if cancel.is_cancelled() => return None,
        Err(stalled) => {
            return Some(PullResult::failed(
                hostname,
                format!("failed to pull {reference}: {stalled}"),
            ))
        }
    };
    match outcome {
        Ok(outcome) => Some(PullResult {
            hostname: hostname.to_string(),
            status: Status::Ok,
            image_id: outcome.image_id.to_string(),
            tag: tag_of(&reference.to_string()).to_string(),
            size: outcome.size,
            changed: outcome.changed,
            error: String::new(),
        }),
        Err(e) if e.is_cancelled() || cancel.is_cancelled() => None,
        Err(e) => Some(PullResult::failed(hostname, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(tag_of("docker.io/library/nginx:latest"), "latest");
        assert_eq!(tag_of("127.0.0.1:5000/app:1.2"), "1.2");
        assert_eq!(tag_of("127.0.0.1:5000/app"), "");
        assert_eq!(tag_of("127.0.0.1:5000/app@sha256:abcd"), "");
        assert_eq!(tag_of("127.0.0.1:5000/app:v1@sha256:abcd"), "v1");
        assert_eq!(tag_of("alpine"), "");
    }

    #[test]
    fn results_use_the_api_field_names() {
        let r = PullResult::failed("n1", "boom");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"hostname": "n1", "status": "failed", "image_id": "", "tag": "",
                "size": 0, "changed": false, "error": "boom"})
        );
        assert_eq!(serde_json::to_value(Status::Ok).unwrap(), "ok");
        assert_eq!(serde_json::to_value(Status::Skipped).unwrap(), "skipped");
    }

    #[test]
    fn the_reporter_counts_layers() {
        let r = JobReporter::default();
        r.report(crate::progress::fixtures::layer("a", LayerStatus::AlreadyExists));
        r.report(crate::progress::fixtures::layer("b", LayerStatus::PullingFsLayer));
        r.report(crate::progress::fixtures::layer("b", LayerStatus::PullComplete));
        assert_eq!((r.downloaded(), r.present()), (1, 1));
    }
}
