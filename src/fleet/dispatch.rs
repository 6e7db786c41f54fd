//! Running a job for the HTTP API: over JetStream to the agents (KV first, then the job's ID
//! on the stream, then the answers watched in the responses bucket, only those of the agents
//! the job expects kept, one each), or on this node alone when the server runs without NATS
//! (its jobs then kept in memory for [`JOB_TTL`], as long as the NATS bucket keeps them, and
//! [`MAX_LOCAL_JOBS`] at most).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::auth::now;
use super::bus::{agent_key, job_key, response_key, AgentInfo, Bus, BusError, JOB_TTL};
use super::job::{run_pull, Job, JobReporter, PullResult, Status, PULL_OPERATION, TIMEOUT_ERROR};
use super::target::{Label, Target};
use crate::credentials::CredentialLookup;
use crate::engine::Engine;

/// Why a job could not be run.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// No known agent matches the target.
    #[error("no agent matches target {0}")]
    NoAgent(String),
    /// A job's record could not be read.
    #[error("job {0} is unreadable: {1}")]
    Corrupt(String, String),
}

/// Where jobs run.
#[derive(Clone)]
pub enum Backend {
    /// On the agents, through NATS.
    Nats(Box<Bus>),
    /// On this node.
    Local(Arc<Local>),
}

/// The standalone server's own node.
pub struct Local {
    /// The engine pulls go through.
    pub engine: Engine,
    /// This node's hostname.
    pub hostname: String,
    /// This node's labels.
    pub labels: Vec<Label>,
    /// The node's credentials.
    pub credentials: Option<CredentialLookup>,
    /// Cancels running pulls when the server stops.
    pub cancel: CancellationToken,
    jobs: Mutex<JobTable>,
}

/// The most jobs the standalone server remembers; beyond, the oldest are forgotten.
pub const MAX_LOCAL_JOBS: usize = 10_000;

/// The standalone server's jobs by ID, in the order they came: each kept for a time to live,
/// and a bounded number of them (the oldest go first).
struct JobTable {
    jobs: HashMap<String, Job>,
    order: VecDeque<String>,
    ttl_secs: u64,
    max: usize,
}

impl JobTable {
    fn new(ttl: Duration, max: usize) -> JobTable {
        JobTable {
            jobs: HashMap::new(),
            order: VecDeque::new(),
            ttl_secs: ttl.as_secs(),
            max: max.max(1),
        }
    }

    fn expired(&self, job: &Job, now: u64) -> bool {
        now >= job.created.saturating_add(self.ttl_secs)
    }

    /// Records `job`, forgetting the expired ones and the oldest beyond the bound.
    fn insert(&mut self, job: Job, now: u64) {
        self.order.push_back(job.job_id.clone());
        self.jobs.insert(job.job_id.clone(), job);
        while let Some(oldest) = self.order.front() {
            let expired = self.jobs.get(oldest).is_none_or(|j| self.expired(j, now));
            if !expired && self.order.len() <= self.max {
                break;
            }
            let oldest = self.order.pop_front().expect("a front");
            self.jobs.remove(&oldest);
        }
    }

    /// The job `id`, unless unknown or expired.
    fn get(&self, id: &str, now: u64) -> Option<Job> {
        self.jobs.get(id).filter(|j| !self.expired(j, now)).cloned()
    }

    /// Stores the result of job `id`, if it is still kept.
    fn complete(&mut self, id: &str, result: PullResult) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.results = vec![result];
            job.status = "completed".to_string();
        }
    }
}

impl Local {
    /// A node that pulls with `engine`.
    pub fn new(
        engine: Engine,
        hostname: String,
        labels: Vec<Label>,
        credentials: Option<CredentialLookup>,
        cancel: CancellationToken,
    ) -> Local {
        Local {
            engine,
            hostname,
            labels,
            credentials,
            cancel,
            jobs: Mutex::new(JobTable::new(JOB_TTL, MAX_LOCAL_JOBS)),
        }
    }
}

fn new_job(target: &Target, image: &str, timeout: Duration) -> Job {
    let created = now();
    Job {
        job_id: uuid::Uuid::new_v4().to_string(),
        target: target.to_string(),
        operation: PULL_OPERATION.to_string(),
        image: image.to_string(),
        status: "pending".to_string(),
        created,
        deadline: created + timeout.as_secs().max(1),
        results: Vec::new(),
    }
}

impl Backend {
    /// Runs a pull of `image` on `target`, waiting up to `timeout` for the answers. The job
    /// comes back completed: one result per targeted agent, those that did not answer with
    /// [`TIMEOUT_ERROR`]. `log` is told of the answers ignored.
    pub async fn run(
        &self,
        target: &Target,
        image: &str,
        timeout: Duration,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Job, DispatchError> {
        match self {
            Backend::Nats(bus) => run_nats(bus, target, image, timeout, log).await,
            Backend::Local(local) => run_local(local, target, image, timeout).await,
        }
    }

    /// A job by ID, as stored.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, DispatchError> {
        match self {
            Backend::Nats(bus) => {
                if uuid::Uuid::parse_str(id).is_err() {
                    return Ok(None);
                }
                let Some(bytes) = bus.jobs.get(job_key(id)).await.map_err(BusError::js)? else {
                    return Ok(None);
                };
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| DispatchError::Corrupt(id.to_string(), e.to_string()))
            }
            Backend::Local(local) => Ok(local.jobs.lock().expect("jobs lock").get(id, now())),
        }
    }
}

/// The agents whose heartbeat is live and who match `target`, by hostname.
async fn expected_agents(bus: &Bus, target: &Target) -> Result<Vec<String>, BusError> {
    let mut keys = bus.agents.keys().await.map_err(BusError::js)?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(BusError::js)?;
        let Some(bytes) = bus.agents.get(&key).await.map_err(BusError::js)? else {
            continue;
        };
        let Ok(info) = serde_json::from_slice::<AgentInfo>(&bytes) else {
            continue;
        };
        if key == agent_key(&info.hostname) && target.matches(&info.hostname, &info.labels) {
            out.push(info.hostname);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The most ignored answers of one job logged one by one; the rest are counted.
const IGNORED_LOGGED: usize = 8;

/// The answers a job keeps: one per agent it expects (a broadcast's live agents, a host
/// target's host), or for `_any` the first that comes; the first answer of each agent only.
struct Answers {
    job_id: String,
    /// Whom the job waits for; `None` for `_any`: whoever answers first.
    expected: Option<Vec<String>>,
    kept: BTreeMap<String, PullResult>,
}

impl Answers {
    fn new(job_id: &str, target: &Target, broadcast_to: &[String]) -> Answers {
        let expected = match target {
            Target::Any => None,
            Target::Host(host) => Some(vec![host.clone()]),
            Target::All | Target::Label { .. } => Some(broadcast_to.to_vec()),
        };
        Answers {
            job_id: job_id.to_string(),
            expected,
            kept: BTreeMap::new(),
        }
    }

    /// Keeps `result`, put under `key`, or says why it is ignored.
    fn offer(&mut self, key: &str, result: PullResult) -> Result<(), String> {
        let host = result.hostname.as_str();
        if key != response_key(&self.job_id, host) {
            return Err(format!("an answer for {host:?} put under {key}"));
        }
        if self.kept.contains_key(host) {
            return Err(format!("a second answer from {host:?}"));
        }
        match &self.expected {
            Some(expected) if !expected.iter().any(|h| h == host) => {
                return Err(format!("an answer from {host:?}, which the job does not expect"))
            }
            None if !self.kept.is_empty() => {
                return Err(format!("an answer from {host:?} after the first"));
            }
            _ => {}
        }
        self.kept.insert(host.to_string(), result);
        Ok(())
    }

    /// Whether every expected agent answered (for `_any`, one).
    fn done(&self) -> bool {
        match &self.expected {
            Some(expected) => expected.iter().all(|h| self.kept.contains_key(h)),
            None => !self.kept.is_empty(),
        }
    }
}

async fn run_nats(
    bus: &Bus,
    target: &Target,
    image: &str,
    timeout: Duration,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<Job, DispatchError> {
    let mut job = new_job(target, image, timeout);
    let expected = if target.is_broadcast() {
        let expected = expected_agents(bus, target).await?;
        if expected.is_empty() {
            return Err(DispatchError::NoAgent(target.to_string()));
        }
        expected
    } else {
        Vec::new()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // Watch before publishing, so no answer comes before the watch.
    let mut watch = bus
        .responses
        .watch(format!("responses.{}.>", job.job_id))
        .await
        .map_err(BusError::js)?;
    let body = serde_json::to_vec(&job).expect("a job serialises");
    bus.jobs
        .put(job_key(&job.job_id), body.into())
        .await
        .map_err(BusError::js)?;
    bus.js
        .publish(target.subject(), job.job_id.clone().into())
        .await
        .map_err(BusError::js)?
        .await
        .map_err(BusError::js)?;

    let mut answers = Answers::new(&job.job_id, target, &expected);
    let mut ignored = 0usize;
    while !answers.done() {
        let entry = match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(_))) => continue,
            Ok(Some(Ok(entry))) => entry,
        };
        if entry.operation != Operation::Put {
            continue;
        }
        let why = match serde_json::from_slice::<PullResult>(&entry.value) {
            Ok(result) => answers.offer(&entry.key, result),
            Err(e) => Err(format!("an unreadable answer under {}: {e}", entry.key)),
        };
        if let Err(why) = why {
            ignored += 1;
            if ignored <= IGNORED_LOGGED {
                log(format!("job {}: ignored {why}", job.job_id));
            }
        }
    }
    if ignored > IGNORED_LOGGED {
        log(format!(
            "job {}: ignored {} more answers",
            job.job_id,
            ignored - IGNORED_LOGGED
        ));
    }
    let mut answers = answers.kept;
    for host in &expected {
        answers
            .entry(host.clone())
            .or_insert_with(|| PullResult::failed(host, TIMEOUT_ERROR));
    }
    job.results = answers.into_values().collect();
    job.status = "completed".to_string();
    let body = serde_json::to_vec(&job).expect("a job serialises");
    bus.jobs
        .put(job_key(&job.job_id), body.into())
        .await
        .map_err(BusError::js)?;
    Ok(job)
}

async fn run_local(
    local: &Arc<Local>,
    target: &Target,
    image: &str,
    timeout: Duration,
) -> Result<Job, DispatchError> {
    if !target.matches(&local.hostname, &local.labels) {
        return Err(DispatchError::NoAgent(target.to_string()));
    }
    let mut job = new_job(target, image, timeout);
    local
        .jobs
        .lock()
        .expect("jobs lock")
        .insert(job.clone(), job.created);
    let node = Arc::clone(local);
    let id = job.job_id.clone();
    let image = image.to_string();
    // The pull goes on after a timeout; its result then lands in the stored job.
    let task = tokio::spawn(async move {
        let result = run_pull(
            &node.engine,
            &node.hostname,
            &image,
            node.credentials.clone(),
            None,
            Arc::new(JobReporter::default()),
            // The request's job timeout bounds what the client waits for.
            None,
            node.cancel.clone(),
        )
        .await;
        if let Some(result) = &result {
            node.jobs.lock().expect("jobs lock").complete(&id, result.clone());
        }
        result
    });
    let result = match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Some(result))) => result,
        Ok(Ok(None)) => PullResult {
            status: Status::Skipped,
            ..PullResult::failed(&local.hostname, "cancelled")
        },
        Ok(Err(e)) => PullResult::failed(&local.hostname, format!("internal error: {e}")),
        Err(_) => PullResult::failed(&local.hostname, TIMEOUT_ERROR),
    };
    job.results = vec![result];
    job.status = "completed".to_string();
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(host: &str) -> PullResult {
        PullResult {
            status: Status::Ok,
            ..PullResult::failed(host, "")
        }
    }

    fn offer(answers: &mut Answers, host: &str) -> Result<(), String> {
        let key = response_key("j1", host);
        answers.offer(&key, answer(host))
    }

    #[test]
    fn a_broadcast_keeps_one_answer_of_each_expected_agent() {
        let expected = vec!["n1".to_string(), "n2.lan".to_string()];
        let mut a = Answers::new("j1", &Target::All, &expected);
        offer(&mut a, "n1").unwrap();
        assert!(offer(&mut a, "n1").unwrap_err().contains("second answer"));
        assert!(offer(&mut a, "intruder").unwrap_err().contains("does not expect"));
        // Filed under another agent's key than its payload says.
        let forged = a.offer(&response_key("j1", "n2.lan"), answer("n1"));
        assert!(forged.unwrap_err().contains("put under"));
        assert!(!a.done());
        offer(&mut a, "n2.lan").unwrap();
        assert!(a.done());
        assert_eq!(a.kept.keys().collect::<Vec<_>>(), ["n1", "n2.lan"]);
    }

    #[test]
    fn a_host_job_keeps_its_host_and_any_the_first() {
        let mut a = Answers::new("j1", &Target::Host("n1".into()), &[]);
        assert!(offer(&mut a, "n2").is_err());
        assert!(!a.done());
        offer(&mut a, "n1").unwrap();
        assert!(a.done());

        let mut a = Answers::new("j1", &Target::Any, &[]);
        offer(&mut a, "n2").unwrap();
        assert!(offer(&mut a, "n1").unwrap_err().contains("after the first"));
        assert_eq!(a.kept.len(), 1);
    }

    fn job_at(id: &str, created: u64) -> Job {
        Job {
            job_id: id.to_string(),
            created,
            ..new_job(&Target::Any, "alpine", Duration::from_secs(1))
        }
    }

    #[test]
    fn local_jobs_expire_and_are_bounded() {
        let mut t = JobTable::new(Duration::from_secs(100), 3);
        t.insert(job_at("a", 1000), 1000);
        assert!(t.get("a", 1099).is_some());
        assert!(t.get("a", 1100).is_none(), "expired");
        // Inserting later forgets the expired ones.
        t.insert(job_at("b", 1100), 1100);
        assert!(!t.jobs.contains_key("a"));
        for (i, id) in ["c", "d", "e"].iter().enumerate() {
            t.insert(job_at(id, 1101 + i as u64), 1101 + i as u64);
        }
        // At most three: the oldest went.
        assert_eq!(t.jobs.len(), 3);
        assert_eq!(t.order.len(), 3);
        assert!(t.get("b", 1110).is_none());
        assert!(t.get("e", 1110).is_some());
        t.complete("e", answer("n1"));
        let e = t.get("e", 1110).unwrap();
        assert_eq!((e.status.as_str(), e.results.len()), ("completed", 1));
        // A forgotten job's late result is dropped.
        t.complete("b", answer("n1"));
        assert!(!t.jobs.contains_key("b"));
    }
}
