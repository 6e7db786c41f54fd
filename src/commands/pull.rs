//! `rpull [pull] NAME`: builds the pull options from the command line and runs the pull.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::creds::{credential_lookup, prompt_creds_password};
use super::{interrupted_exit_code, watch_signals};
use rpull::cli::{Format, PullArgs};
use rpull::config::Layer;
use rpull::engine::{Engine, PullRequest};
use rpull::platform::Platform;
use rpull::progress::{self, OutputMode};
use rpull::pull::RetryPolicy;
use rpull::reference::Reference;
use rpull::settings::{env, Overrides, Settings};

/// What a pull says when content trust is on: rpull has no Notary v1 client.
pub const CONTENT_TRUST_UNSUPPORTED: &str = "content trust is enabled (DOCKER_CONTENT_TRUST is set or \
--disable-content-trust=false), but rpull does not implement Docker Content Trust (Notary v1) \
signature verification: refusing to pull unverified. Unset DOCKER_CONTENT_TRUST or pass \
--disable-content-trust to pull without it (manifest and layer digests are always verified)";

/// Whether docker would verify signatures: `--disable-content-trust` when given, else the
/// default, which `DOCKER_CONTENT_TRUST` flips (any value but a Go "false" or empty enables it).
pub fn content_trust_enabled(disable_flag: Option<bool>, env: Option<std::ffi::OsString>) -> bool {
    if let Some(disable) = disable_flag {
        return !disable;
    }
    match env {
        Some(v) if !v.is_empty() => !matches!(
            v.to_str().unwrap_or("1"),
            "0" | "f" | "F" | "false" | "FALSE" | "False"
        ),
        _ => false,
    }
}

/// The platform to pull: `--platform`, or `--os`/`--arch`/`--variant` over the host's. Both
/// kinds given is a usage error (exit 125); a `--platform` only from `DOCKER_DEFAULT_PLATFORM`
/// gives way to the explicit flags.
fn platform_from(args: &PullArgs) -> Result<Option<Platform>, (u8, String)> {
    let parts = [&args.os, &args.arch, &args.variant].map(|p| p.as_deref().map(str::trim));
    let any_part = parts.iter().any(Option::is_some);
    let mut flag = args.platform.as_deref().map(str::trim).filter(|p| !p.is_empty());
    if any_part && flag.is_some() {
        let from_env = std::env::var(env::DEFAULT_PLATFORM).ok();
        if from_env.as_deref().map(str::trim) == flag {
            flag = None;
        } else {
            return Err((
                125,
                "--platform option can not be specified with --os, --arch or --variant".to_string(),
            ));
        }
    }
    if let Some(p) = flag {
        return Platform::parse(p).map(Some).map_err(|e| (1, e.to_string()));
    }
    if !any_part {
        return Ok(None);
    }
    let host = Platform::host();
    let [os, arch, variant] = parts;
    for (name, value) in [("--os", os), ("--arch", arch), ("--variant", variant)] {
        if value == Some("") {
            return Err((
                125,
                format!("invalid argument \"\" for \"{name}\" flag: empty value"),
            ));
        }
    }
    let os = os.unwrap_or(&host.os);
    let arch = arch.unwrap_or(&host.architecture);
    let spec = match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    Platform::parse(&spec).map(Some).map_err(|e| (1, e.to_string()))
}

/// The settings of this pull: the flags over the config file and the environment, then the
/// per-call `--tls-verify=false` and `--cert-dir` for the pulled registry.
fn settings(args: &PullArgs, root: Option<PathBuf>, target_host: Option<&str>) -> Result<Settings, String> {
    let overrides = Overrides {
        root,
        config: args.config.clone(),
        retry: Some(RetryPolicy {
            attempts: args.retry + 1,
            delay: args.retry_delay,
        }),
        read_timeout: args.read_timeout,
        layer: Layer {
            insecure_registries: args.insecure_registries.clone(),
            registry_mirrors: args.registry_mirrors.clone(),
            max_concurrent_downloads: args.max_concurrent_downloads,
            parallel_download_threshold: args.parallel_download_threshold,
            parallel_chunk_size: args.parallel_chunk_size,
            connections_per_blob: args.connections_per_blob,
            max_connections: args.max_connections,
            ..Layer::default()
        },
    };
    let mut settings = Settings::load(&overrides).map_err(|e| e.to_string())?;
    if let Some(host) = target_host {
        if args.tls_verify == Some(false) {
            settings.allow_insecure(host);
        }
        if let Some(dir) = &args.cert_dir {
            settings.use_cert_dir(host, dir);
        }
    }
    Ok(settings)
}

/// Ends a pull that failed before it started: the message on stderr, or, with
/// `--format json`, the same `errorDetail` line and `result` with `error` as any other failure.
pub fn fail_early(json: bool, reference: &str, message: &str, code: u8) -> ExitCode {
    if json {
        let reporter = progress::reporter(OutputMode::Json);
        reporter.report(progress::Event::Error(message.to_string()));
        reporter.report(progress::Event::Result(progress::PullResult {
            reference: reference.to_string(),
            image_id: None,
            tag: None,
            digest: None,
            size: None,
            changed: None,
            error: Some(message.to_string()),
        }));
        reporter.finish();
        ExitCode::from(code)
    } else {
        eprintln!("{message}");
        ExitCode::from(code)
    }
}

/// Runs one pull and returns its exit status.
pub async fn run(args: PullArgs, root: Option<PathBuf>) -> ExitCode {
    // Installing the provider only fails when one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let json = args.format == Format::Json;
    let shown = args.name.clone().unwrap_or_default();
    let fail = |message: &str| fail_early(json, &shown, message, 1);
    let Some(name) = args.name.clone() else {
        return fail("rpull: 'rpull pull' requires 1 argument");
    };
    if content_trust_enabled(args.disable_content_trust, std::env::var_os(env::CONTENT_TRUST)) {
        return fail(CONTENT_TRUST_UNSUPPORTED);
    }
    let platform = match platform_from(&args) {
        Ok(p) => p,
        Err((code, e)) => return fail_early(json, &name, &e, code),
    };
    // The registry this call pulls from, for --creds and --tls-verify=false.
    let target = Reference::parse_normalized(&name).ok();
    let target_host = target.as_ref().map(Reference::registry_host);
    let target_key = target.as_ref().map(Reference::credential_key).unwrap_or_default();
    let credentials = match credential_lookup(
        args.creds.as_deref(),
        args.authfile.as_deref(),
        &target_key,
        &mut prompt_creds_password,
    ) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let settings = match settings(&args, root, target_host.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let engine = match Engine::open(settings) {
        Ok(e) => e,
        Err(e) => return fail(&format!("cannot open the image store: {e}")),
    };
    let mode = match (args.quiet, args.format) {
        (_, Format::Json) => OutputMode::Json,
        (true, _) => OutputMode::Quiet,
        (false, Format::Plain) => OutputMode::Auto,
    };
    let reporter: Arc<dyn progress::Reporter> = Arc::from(progress::reporter(mode));
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let request = PullRequest {
        platform,
        all_tags: args.all_tags,
        credentials: Some(credentials),
        ..Default::default()
    };
    let result = engine
        .pull(&name, &request, reporter.clone(), cancel.clone())
        .await;
    reporter.finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_cancelled() || cancel.is_cancelled() => interrupted_exit_code(),
        Err(e) => {
            if mode != OutputMode::Json {
                // Registry texts are already scrubbed of secrets; no server text may drive
                // the terminal.
                eprintln!("{}", rpull::scrub::strip_controls(&e.to_string()));
            }
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_trust_follows_docker() {
        let env = |v: &str| Some(std::ffi::OsString::from(v));
        assert!(!content_trust_enabled(None, None));
        assert!(!content_trust_enabled(None, env("")));
        assert!(content_trust_enabled(None, env("1")));
        assert!(content_trust_enabled(None, env("yes")));
        assert!(!content_trust_enabled(None, env("0")));
        assert!(!content_trust_enabled(None, env("false")));
        assert!(!content_trust_enabled(Some(true), env("1")));
        assert!(content_trust_enabled(Some(false), None));
    }
}
