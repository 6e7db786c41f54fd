//! `rpull serve`: the fleet pull API (see `fleet::server`); log lines on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{fail, watch_signals};
use rpull::cli::ServeArgs;
use rpull::config::Config;
use rpull::fleet::node::Node;
use rpull::fleet::server::{self, ServeOptions};

/// Serves until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs, root: Option<PathBuf>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fleet = args.fleet;
    let Some(listen) = fleet.listen else {
        return fail("rpull serve: --listen is required");
    };
    // The flag, else the config file's `signing-key-file`.
    let from_config = match &fleet.signing_key_file {
        Some(_) => None,
        None => match Config::load(args.config.as_deref()) {
            Ok(c) => c.signing_key_file,
            Err(e) => return fail(&format!("rpull serve: {e}")),
        },
    };
    let Some(signing_key_file) = fleet.signing_key_file.or(from_config) else {
        return fail("rpull serve: --signing-key-file (or the config file's signing-key-file) is required with --listen");
    };
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let options = ServeOptions {
        listen,
        nats: fleet.nats,
        signing_key_file,
        job_timeout: fleet.job_timeout,
    };
    let (config, hostname, labels) = (args.config, fleet.hostname, fleet.labels);
    let node = move || Node::open(root, config, hostname, &labels).map_err(|e| e.to_string());
    match server::run(options, node, cancel, |line| eprintln!("rpull serve: {line}")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("rpull serve: {e}")),
    }
}
