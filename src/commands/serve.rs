//! `rpull serve`: the engine as a long-running service. Each front end it offers lives in
//! its own module (`crate::cri` for the CRI image service); this file builds the settings and
//! the engine they share and runs them until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{fail, watch_signals};
use crate::cli::ServeArgs;
use crate::cri;
use crate::engine::Engine;
use crate::settings::{Overrides, Settings};

/// Runs the service and returns its exit status (0 after a signal stopped it).
pub async fn run(args: ServeArgs, root: Option<PathBuf>) -> ExitCode {
    // Installing the provider only fails when one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let overrides = Overrides {
        root,
        config: args.config.clone(),
        read_timeout: args.read_timeout,
        ..Overrides::default()
    };
    let settings = match Settings::load(&overrides) {
        Ok(s) => s,
        Err(e) => return fail(&format!("rpull serve: {e}")),
    };
    let engine = match Engine::open(settings) {
        Ok(e) => e.with_shared_download_limit(),
        Err(e) => return fail(&format!("rpull serve: cannot open the image store: {e}")),
    };
    let socket = args
        .cri_socket
        .unwrap_or_else(|| PathBuf::from(cri::DEFAULT_SOCKET));
    let progress_timeout = Some(args.progress_timeout).filter(|t| *t > Duration::ZERO);

    // The socket first: a second service on a live socket must not touch the store.
    let listener = match cri::bind(&socket) {
        Ok(l) => l,
        Err(e) => return fail(&format!("rpull serve: {e}")),
    };
    match cri::startup_check(&engine).await {
        Ok(report) => {
            for f in report.findings.iter().filter(|f| f.repaired) {
                eprintln!("rpull serve: repaired: {} ({})", f.message, f.path.display());
            }
            for name in &report.repull {
                eprintln!("rpull serve: incomplete image {name}: the next pull completes it");
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return fail(&format!("rpull serve: {e}"));
        }
    }
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    eprintln!(
        "rpull serve: CRI image service on unix://{} (store {})",
        socket.display(),
        engine.store().root().display()
    );
    match cri::serve(engine, listener, &socket, progress_timeout, shutdown).await {
        Ok(()) => {
            eprintln!("rpull serve: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("rpull serve: {e}")),
    }
}
