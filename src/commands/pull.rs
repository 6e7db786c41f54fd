//! `rpull [pull] NAME`: builds the pull options from the command line and runs the pull.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{fail, interrupted_exit_code, open_store, watch_signals};
use crate::cli::{Format, PullArgs};
use crate::platform::Platform;
use crate::progress::{self, OutputMode};
use crate::pull::{PullOptions, Puller};

/// Docker's retry policy, unless the hidden `RPULL_RETRY_DELAY_MS` fixes the delay between
/// attempts (tests use it to see a blob refused after every attempt without waiting 50 s).
fn retry_policy() -> crate::pull::RetryPolicy {
    let mut policy = crate::pull::RetryPolicy::default();
    if let Some(ms) = std::env::var("RPULL_RETRY_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        policy.delay = Some(std::time::Duration::from_millis(ms));
    }
    policy
}

/// Runs one pull and returns its exit status.
pub async fn run(args: PullArgs, root: Option<PathBuf>) -> ExitCode {
    // Installing the provider only fails when one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(name) = args.name.clone() else {
        return fail("rpull: 'rpull pull' requires 1 argument");
    };
    let platform = match args.platform.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => match Platform::parse(p) {
            Ok(p) => Some(p),
            Err(e) => return fail(&e.to_string()),
        },
        None => None,
    };
    let store = match open_store(root.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mode = match (args.quiet, args.format) {
        (_, Format::Json) => OutputMode::Json,
        (true, _) => OutputMode::Quiet,
        (false, Format::Plain) => OutputMode::Auto,
    };
    let reporter: Arc<dyn progress::Reporter> = Arc::from(progress::reporter(mode));
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let opts = PullOptions {
        all_tags: args.all_tags,
        platform,
        max_concurrent_downloads: args.max_concurrent_downloads as usize,
        retry: retry_policy(),
        ..PullOptions::default()
    };
    let puller = Puller::new(store, opts, reporter.clone(), cancel.clone());
    let result = puller.pull(&name).await;
    reporter.finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_cancelled() || cancel.is_cancelled() => interrupted_exit_code(),
        Err(e) => {
            if mode != OutputMode::Json {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}
