//! `rpull agent`: takes the pull jobs addressed to this node from NATS; one log line per job
//! on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{fail, lay_nats_access, watch_signals};
use rpull::cli::AgentArgs;
use rpull::fleet::agent::{self, AgentConfig, AgentEvent};
use rpull::fleet::node::Node;
use rpull::settings::Overrides;

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(args: AgentArgs, root: Option<PathBuf>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = args.nats else {
        return fail("rpull agent: --nats is required");
    };
    let mut overrides = Overrides {
        root,
        config: args.config,
        ..Overrides::default()
    };
    lay_nats_access(&args.nats_access, &mut overrides.layer);
    let node = match Node::open(&overrides, args.hostname, &args.labels) {
        Ok(n) => n,
        Err(e) => return fail(&format!("rpull agent: {e}")),
    };
    if let Some(warning) = &node.warning {
        eprintln!("{warning}");
    }
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let hostname = node.hostname.clone();
    let config = AgentConfig {
        hostname: node.hostname,
        labels: node.labels,
        concurrency: args.concurrency as usize,
        progress_timeout: Some(args.progress_timeout).filter(|t| !t.is_zero()),
    };
    let log_host = hostname.clone();
    let result = agent::run(
        &url,
        config,
        node.engine,
        Some(node.credentials),
        cancel,
        move |event| match event {
            AgentEvent::Waiting(why) => eprintln!("rpull agent {log_host}: {why}"),
            AgentEvent::Ready => eprintln!("rpull agent {log_host}: ready"),
            AgentEvent::Answered {
                job_id,
                image,
                result,
                downloaded,
            } => {
                let outcome = if result.error.is_empty() {
                    format!(
                        "ok {} changed={} layers downloaded={downloaded}",
                        result.image_id, result.changed
                    )
                } else {
                    format!("failed: {}", result.error)
                };
                eprintln!("rpull agent {log_host}: job {job_id} pull {image}: {outcome}");
            }
            AgentEvent::Dropped { job_id, reason } => {
                eprintln!("rpull agent {log_host}: job {job_id} dropped: {reason}")
            }
            AgentEvent::Reconnecting(why) => eprintln!("rpull agent {log_host}: reconnecting ({why})"),
        },
    )
    .await;
    match result {
        Ok(()) => {
            eprintln!("rpull agent {hostname}: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("rpull agent: {e}")),
    }
}
