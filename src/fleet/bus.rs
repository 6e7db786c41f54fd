//! The JetStream layout the server and the agents share, set up idempotently by whichever
//! starts first: the `JOBS` stream (subjects `jobs.>`, a job's ID per message), and the
//! key-value buckets `job-queue` (`jobs.<id>`: the job), `job-responses`
//! (`responses.<id>.<host>`: one agent's answer), `agent-registry` (`agents.<host>`: each
//! agent's heartbeat, expiring when it stops beating) and `blob-claims` (`claims.<mirror>.<blob>`:
//! which agent fetches a blob into a shared cache, see [`super::claims`]).
//!
//! Start order does not matter: a process started before NATS waits for it, retrying.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};

use super::target::{host_token, Label};

/// The stream of job notifications.
pub const JOBS_STREAM: &str = "JOBS";
/// The bucket of jobs.
pub const JOBS_BUCKET: &str = "job-queue";
/// The bucket of answers.
pub const RESPONSES_BUCKET: &str = "job-responses";
/// The bucket of agent heartbeats.
pub const AGENTS_BUCKET: &str = "agent-registry";
/// How long jobs and answers are kept.
pub const JOB_TTL: Duration = Duration::from_secs(3600);
/// How often an agent beats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a heartbeat lives: an agent silent for longer is no longer waited for.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(30);
/// The bucket of blob claims.
pub const CLAIMS_BUCKET: &str = "blob-claims";
/// How long a claim (and a `done`) is kept at most.
pub const CLAIMS_KEEP: Duration = Duration::from_secs(600);
/// The longest pause between two attempts to reach NATS at start.
const SETUP_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why NATS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The connection could not be made.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// A stream, bucket or consumer could not be set up or used.
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl BusError {
    /// A JetStream error from any async-nats error.
    pub fn js(e: impl std::fmt::Display) -> BusError {
        BusError::JetStream(e.to_string())
    }
}

/// An agent's heartbeat: who it is and what it consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its hostname.
    pub hostname: String,
    /// Its labels.
    pub labels: Vec<Label>,
    /// Seconds since the epoch of the beat.
    pub seen: u64,
}

/// The key of an agent's heartbeat.
pub fn agent_key(hostname: &str) -> String {
    format!("agents.{}", host_token(hostname))
}

/// The key of a job.
pub fn job_key(job_id: &str) -> String {
    format!("jobs.{job_id}")
}

/// The key of `hostname`'s answer to a job.
pub fn response_key(job_id: &str, hostname: &str) -> String {
    format!("responses.{job_id}.{}", host_token(hostname))
}

/// A connection with the stream and buckets in place.
#[derive(Clone)]
pub struct Bus {
    /// The JetStream context.
    pub js: jetstream::Context,
    /// The jobs stream.
    pub stream: stream::Stream,
    /// `job-queue`.
    pub jobs: kv::Store,
    /// `job-responses`.
    pub responses: kv::Store,
    /// `agent-registry`.
    pub agents: kv::Store,
    /// `blob-claims`.
    pub claims: kv::Store,
}

impl Bus {
    /// Connects to `url` and creates what is missing, retrying with backoff until NATS
    /// answers (and reconnecting for ever after); `waiting` is told once, with the URL
    /// without credentials, when the first attempt fails. It fails only for a URL that
    /// cannot be used at all; the caller cancels it by dropping it.
    pub async fn connect(url: &str, name: &str, waiting: impl Fn(String)) -> Result<Bus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2000)))
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: redact_url(url),
                message: e.to_string(),
            })?;
        let js = jetstream::new(client);
        let mut pause = Duration::from_millis(200);
        let mut told = false;
        loop {
            match Bus::set_up(&js).await {
                Ok(bus) => return Ok(bus),
                Err(e) => {
                    if !std::mem::replace(&mut told, true) {
                        waiting(format!("waiting for NATS at {} ({e})", redact_url(url)));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SETUP_RETRY_MAX);
                }
            }
        }
    }

    /// The stream and buckets, created when missing.
    async fn set_up(js: &jetstream::Context) -> Result<Bus, BusError> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: JOBS_STREAM.to_string(),
                subjects: vec!["jobs.>".to_string()],
                max_age: JOB_TTL,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::JetStream(format!("stream {JOBS_STREAM}: {e}")))?;
        let jobs = bucket(js, JOBS_BUCKET, JOB_TTL, 1).await?;
        let responses = bucket(js, RESPONSES_BUCKET, JOB_TTL, 1).await?;
        let agents = bucket(js, AGENTS_BUCKET, HEARTBEAT_TTL, 1).await?;
        let claims = bucket(js, CLAIMS_BUCKET, CLAIMS_KEEP, 1).await?;
        Ok(Bus {
            js: js.clone(),
            stream,
            jobs,
            responses,
            agents,
            claims,
        })
    }
}

/// `url` (one or several, comma-separated) without the `user:password@` of each.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            if scheme.is_empty() {
                rest.to_string()
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Opens bucket `name`, creating it when missing (two processes racing both end with it).
///
/// The bucket's stream is created here with the layout async-nats' `create_key_value` gives
/// (`KV_<name>`, subjects `$KV.<name>.>`, rollups, direct gets, discard new): that function
/// first reads the account info, whose 2.9 form (Debian 12's server) it cannot parse.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Duration,
    history: i64,
) -> Result<kv::Store, BusError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history,
            max_age: ttl,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => js
            .get_key_value(name)
            .await
            .map_err(|e| BusError::JetStream(format!("bucket {name}: {e}"))),
        Err(e) => Err(BusError::JetStream(format!("bucket {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(agent_key("n1.lan"), "agents.n1_lan");
        assert_eq!(job_key("u"), "jobs.u");
        assert_eq!(response_key("u", "n1.lan"), "responses.u.n1_lan");
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        assert_eq!(redact_url("nats://u:secret@h:4222"), "nats://h:4222");
        assert_eq!(redact_url("tok@h:4222"), "h:4222");
        assert_eq!(
            redact_url("nats://a:b@h1:4222,nats://h2:4222"),
            "nats://h1:4222,nats://h2:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
