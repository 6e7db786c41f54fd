//! The agent: consumes the pull jobs addressed to this node and answers them.
//!
//! It holds one durable, explicit-ack pull consumer per subject it listens on (its host,
//! `_all`, every prefix of its labels), and shares one durable consumer for `_any` with every
//! other agent, so that exactly one of them takes each `_any` job. A job's ID arrives on the
//! stream; the job itself is read from the jobs bucket, pulled with the node's engine, and
//! answered in the responses bucket, then acknowledged. Its fetches from mirrors are
//! coordinated with the other agents' through the blob claims ([`super::claims`]), so that a
//! shared pull-through cache fetches each blob from its origin once. While a pull runs the agent tells
//! JetStream it is still working, and a pull that receives no data for the progress timeout
//! fails (as the CRI service's does); a job whose deadline has passed is acknowledged unanswered
//! (nobody waits for it any more). Consumers are re-created after NATS restarts, and a
//! heartbeat in the agent registry tells the server whom to wait for.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::auth::now;
use super::bus::{agent_key, job_key, response_key, AgentInfo, Bus, BusError, HEARTBEAT_INTERVAL};
use super::claims::NatsGate;
use super::job::{run_pull, Job, JobReporter, PullResult};
use super::target::{agent_subjects, host_token, Label};
use crate::credentials::CredentialLookup;
use crate::engine::Engine;
use crate::pull::gate::BlobGate;

/// How long JetStream waits for an acknowledgement before it redelivers.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// How often a running pull tells JetStream it is still working.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

/// Who the agent is.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's hostname.
    pub hostname: String,
    /// The node's labels.
    pub labels: Vec<Label>,
    /// Jobs pulled at the same time.
    pub concurrency: usize,
    /// A pull receiving no data this long fails; `None` never gives up.
    pub progress_timeout: Option<Duration>,
}

/// What the agent tells its caller (who logs it).
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// NATS does not answer yet (said once; the agent keeps trying).
    Waiting(String),
    /// Connected, consumers and heartbeat in place.
    Ready,
    /// A job was answered.
    Answered {
        /// The job.
        job_id: String,
        /// The image.
        image: String,
        /// The answer.
        result: PullResult,
        /// Layers downloaded.
        downloaded: usize,
    },
    /// A job was dropped: past its deadline, or unreadable.
    Dropped {
        /// The job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// A consumer failed and is being re-created (NATS restarted, say).
    Reconnecting(String),
}

/// Runs the agent until `cancel`: then it stops taking jobs, cancels the pulls running (their
/// jobs are redelivered), and removes its heartbeat.
pub async fn run(
    nats_url: &str,
    config: AgentConfig,
    engine: Engine,
    credentials: Option<CredentialLookup>,
    cancel: CancellationToken,
    events: impl Fn(AgentEvent) + Send + Sync + 'static,
) -> Result<(), BusError> {
    let client_name = format!("rpull-agent-{}", config.hostname);
    let events = Arc::new(events);
    let waiting = {
        let events = Arc::clone(&events);
        Arc::new(move |why| events(AgentEvent::Waiting(why)))
    };
    let bus = tokio::select! {
        bus = Bus::connect(nats_url, &engine.settings().nats, &client_name, waiting) => bus?,
        _ = cancel.cancelled() => return Ok(()),
    };
    let gate: Arc<dyn BlobGate> = Arc::new(NatsGate::new(bus.claims.clone(), &config.hostname));
    let info = AgentInfo {
        hostname: config.hostname.clone(),
        labels: config.labels.clone(),
        seen: now(),
    };
    beat(&bus, &info).await?;

    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let mut consumers = JoinSet::new();
    for (name, subject) in agent_subjects(&config.hostname, &config.labels) {
        let durable = if name == "any" {
            "agents-any".to_string()
        } else {
            format!("agent-{}-{name}", host_token(&config.hostname))
        };
        let consumer_config = pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: subject,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            deliver_policy: DeliverPolicy::New,
            max_deliver: 5,
            ..Default::default()
        };
        // Created here once, so that a job published after Ready reaches this agent.
        bus.stream
            .get_or_create_consumer(&durable, consumer_config.clone())
            .await
            .map_err(BusError::js)?;
        consumers.spawn(consume(
            bus.clone(),
            durable,
            consumer_config,
            tx.clone(),
            cancel.clone(),
            Arc::clone(&events),
        ));
    }
    drop(tx);
    let heartbeat = tokio::spawn({
        let bus = bus.clone();
        let mut info = info.clone();
        let cancel = cancel.clone();
        async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        info.seen = now();
                        let _ = beat(&bus, &info).await;
                    }
                    _ = cancel.cancelled() => break,
                }
            }
        }
    });
    events(AgentEvent::Ready);

    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = cancel.cancelled() => break,
        };
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
            _ = cancel.cancelled() => {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                break;
            }
        };
        let (bus, node, cancel, events) = (
            bus.clone(),
            NodePull {
                engine: engine.clone(),
                hostname: config.hostname.clone(),
                credentials: credentials.clone(),
                gate: Arc::clone(&gate),
                progress_timeout: config.progress_timeout,
            },
            cancel.clone(),
            Arc::clone(&events),
        );
        running.spawn(async move {
            handle(&bus, &node, message, cancel, &*events).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    cancel.cancel();
    while running.join_next().await.is_some() {}
    consumers.shutdown().await;
    let _ = heartbeat.await;
    let _ = bus.agents.delete(agent_key(&config.hostname)).await;
    Ok(())
}

async fn beat(bus: &Bus, info: &AgentInfo) -> Result<(), BusError> {
    let body = serde_json::to_vec(info).expect("agent info serialises");
    bus.agents
        .put(agent_key(&info.hostname), body.into())
        .await
        .map_err(BusError::js)?;
    Ok(())
}

/// Feeds one consumer's messages into `tx`, re-creating the consumer when it fails.
async fn consume(
    bus: Bus,
    durable: String,
    config: pull::Config,
    tx: mpsc::Sender<Message>,
    cancel: CancellationToken,
    events: Arc<impl Fn(AgentEvent) + Send + Sync>,
) {
    // Said once per outage, not on every retry.
    let mut failing = false;
    loop {
        let messages = async {
            let consumer = bus
                .stream
                .get_or_create_consumer(&durable, config.clone())
                .await
                .map_err(BusError::js)?;
            consumer
                .stream()
                .max_messages_per_batch(1)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(BusError::js)
        };
        let mut messages = tokio::select! {
            m = messages => m,
            _ = cancel.cancelled() => return,
        };
        if let Ok(stream) = &mut messages {
            loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = cancel.cancelled() => return,
                };
                match next {
                    Some(Ok(message)) => {
                        failing = false;
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        if !std::mem::replace(&mut failing, true) {
                            events(AgentEvent::Reconnecting(format!("{durable}: {e}")));
                        }
                        break;
                    }
                    None => break,
                }
            }
        } else if let Err(e) = messages {
            if !std::mem::replace(&mut failing, true) {
                events(AgentEvent::Reconnecting(format!("{durable}: {e}")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// What a job's pull runs with on this node.
struct NodePull {
    engine: Engine,
    hostname: String,
    credentials: Option<CredentialLookup>,
    gate: Arc<dyn BlobGate>,
    progress_timeout: Option<Duration>,
}

/// Runs one job and acknowledges it (not when cancelled: then it is redelivered).
async fn handle(
    bus: &Bus,
    node: &NodePull,
    message: Message,
    cancel: CancellationToken,
    events: &(impl Fn(AgentEvent) + Send + Sync),
) {
    let job_id = String::from_utf8_lossy(&message.payload).to_string();
    let job = match bus.jobs.get(job_key(&job_id)).await {
        Ok(Some(bytes)) => serde_json::from_slice::<Job>(&bytes).map_err(|e| e.to_string()),
        Ok(None) => Err("no such job".to_string()),
        Err(e) => {
            // The bucket is unreachable: let JetStream redeliver.
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            events(AgentEvent::Dropped {
                job_id,
                reason: format!("cannot read the job: {e}"),
            });
            return;
        }
    };
    let job = match job {
        Ok(job) if job.deadline >= now() => job,
        Ok(_) => {
            let _ = message.ack().await;
            events(AgentEvent::Dropped {
                job_id,
                reason: "past its deadline".to_string(),
            });
            return;
        }
        Err(reason) => {
            let _ = message.ack().await;
            events(AgentEvent::Dropped { job_id, reason });
            return;
        }
    };
    let reporter = Arc::new(JobReporter::default());
    let hostname = node.hostname.as_str();
    let pull = run_pull(
        &node.engine,
        hostname,
        &job.image,
        node.credentials.clone(),
        Some(Arc::clone(&node.gate)),
        Arc::clone(&reporter),
        node.progress_timeout,
        cancel,
    );
    tokio::pin!(pull);
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut pull => break r,
            _ = progress.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
        }
    };
    let Some(result) = result else {
        // Cancelled: leave it unacknowledged for redelivery.
        return;
    };
    let body = serde_json::to_vec(&result).expect("a result serialises");
    if bus
        .responses
        .put(response_key(&job.job_id, hostname), body.into())
        .await
        .is_err()
    {
        let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        return;
    }
    let _ = message.ack().await;
    events(AgentEvent::Answered {
        job_id: job.job_id,
        image: job.image.clone(),
        result,
        downloaded: reporter.downloaded(),
    });
}
