//! `rpull [pull] NAME`: builds the pull options from the command line and runs the pull.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{fail, interrupted_exit_code, open_store, watch_signals};
use crate::cli::{Format, PullArgs};
use crate::platform::Platform;
use crate::progress::{self, OutputMode};
use crate::pull::{PullOptions, Puller, RetryPolicy};
use crate::registry::RegistryOptions;
use crate::{config, credentials};

/// Points `certs.d` somewhere else than `/etc/docker/certs.d` (rootless setups, tests).
pub const CERTS_D_ENV: &str = "RPULL_CERTS_D";
/// Set to `1` to stop treating loopback hosts as insecure-allowed (tests of verified TLS).
pub const NO_LOOPBACK_INSECURE_ENV: &str = "RPULL_NO_LOOPBACK_INSECURE";

/// The pull options from the flags, the config file and docker's credentials; flags win.
fn options(args: &PullArgs, platform: Option<Platform>) -> Result<PullOptions, String> {
    let file = config::Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    let mut insecure = Vec::new();
    for i in args.insecure_registries.iter().chain(&file.insecure_registries) {
        insecure.push(config::normalize_insecure(i).map_err(|e| e.to_string())?);
    }
    let hub_mirrors = if args.registry_mirrors.is_empty() {
        &file.registry_mirrors
    } else {
        &args.registry_mirrors
    };
    let hub_mirrors = hub_mirrors
        .iter()
        .map(|m| config::validate_mirror(m).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut mirrors = std::collections::HashMap::new();
    for (host, urls) in &file.mirrors {
        let urls = urls
            .iter()
            .map(|m| config::validate_mirror(m).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        mirrors.insert(host.clone(), urls);
    }
    let mut registry = RegistryOptions {
        insecure_registries: insecure,
        ..RegistryOptions::default()
    };
    if let Some(dir) = std::env::var_os(CERTS_D_ENV).filter(|d| !d.is_empty()) {
        registry.certs_d = PathBuf::from(dir);
    } else if let Some(dir) = &file.certs_d {
        registry.certs_d = dir.clone();
    }
    if std::env::var(NO_LOOPBACK_INSECURE_ENV).is_ok_and(|v| v == "1") {
        registry.loopback_insecure = false;
    }
    if let Some(t) = args.read_timeout {
        registry.read_timeout = t;
    }
    // docker reads its config once per command; a file it cannot parse is a warning, and the
    // pull goes on without credentials.
    let lookup: Option<crate::pull::CredentialLookup> = match credentials::DockerConfig::load_default() {
        Ok(docker) => Some(Arc::new(move |key: &str| {
            docker.get(key).map_err(|e| e.to_string())
        })),
        Err(e @ credentials::CredentialError::Parse { .. }) => {
            eprintln!("WARNING: {e}");
            None
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(PullOptions {
        all_tags: args.all_tags,
        platform,
        max_concurrent_downloads: args
            .max_concurrent_downloads
            .or(file.max_concurrent_downloads)
            .unwrap_or(3)
            .max(1) as usize,
        registry,
        retry: RetryPolicy {
            attempts: args.retry + 1,
            delay: args.retry_delay,
        },
        credentials: lookup,
        hub_mirrors,
        mirrors,
    })
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
    let opts = match options(&args, platform) {
        Ok(o) => o,
        Err(e) => return fail(&e),
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
