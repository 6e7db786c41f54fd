//! `rpull serve`: the engine as a long-running service. Each front end lives in its own
//! module (`rpull::cri` for the CRI image service, `rpull::fleet` for the fleet pull API);
//! this file builds the settings and the one engine they share (one store, one download
//! limit) and runs the front ends asked for until SIGINT/SIGTERM. Without `--listen`, the CRI
//! service runs on its default socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{fail, lay_nats_access, watch_signals};
use rpull::cli::{FleetServeArgs, ServeArgs};
use rpull::cri;
use rpull::engine::Engine;
use rpull::fleet::node::Node;
use rpull::fleet::server::{self, ServeOptions};
use rpull::settings::{Overrides, Settings};

/// Runs the service and returns its exit status (0 after a signal stopped it).
pub async fn run(args: ServeArgs, root: Option<PathBuf>) -> ExitCode {
    // Installing the provider only fails when one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut overrides = Overrides {
        root,
        config: args.config.clone(),
        read_timeout: args.read_timeout,
        ..Overrides::default()
    };
    overrides.layer.signing_key_file = args.fleet.signing_key_file.clone();
    lay_nats_access(&args.fleet.nats_access, &mut overrides.layer);
    let settings = match Settings::load(&overrides) {
        Ok(s) => s,
        Err(e) => return fail(&format!("rpull serve: {e}")),
    };
    let engine = match Engine::open(settings) {
        Ok(e) => e.with_shared_download_limit(),
        Err(e) => return fail(&format!("rpull serve: cannot open the image store: {e}")),
    };
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());

    let cri_socket = match (&args.cri_socket, &args.fleet.listen) {
        (Some(socket), _) => Some(socket.clone()),
        (None, None) => Some(PathBuf::from(cri::DEFAULT_SOCKET)),
        (None, Some(_)) => None,
    };
    let progress_timeout = Some(args.progress_timeout).filter(|t| *t > Duration::ZERO);
    let cri = async {
        match cri_socket {
            Some(socket) => run_cri(engine.clone(), socket, progress_timeout, shutdown.clone()).await,
            None => Ok(()),
        }
    };
    let fleet = async {
        if args.fleet.listen.is_none() {
            return Ok(());
        }
        run_fleet(args.fleet.clone(), engine.clone(), shutdown.clone()).await
    };
    // A front end that fails stops the other, so the service never runs half.
    let stop_on_error = |r: Result<(), String>| {
        if r.is_err() {
            shutdown.cancel();
        }
        r
    };
    let (cri, fleet) = tokio::join!(async { stop_on_error(cri.await) }, async {
        stop_on_error(fleet.await)
    });
    match cri.and(fleet) {
        Ok(()) => {
            eprintln!("rpull serve: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("rpull serve: {e}")),
    }
}

/// The CRI image service on `socket`, with the start-up check of the store.
async fn run_cri(
    engine: Engine,
    socket: PathBuf,
    progress_timeout: Option<Duration>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    // The socket first: a second service on a live socket must not touch the store.
    let listener = cri::bind(&socket).map_err(|e| e.to_string())?;
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
            return Err(e.to_string());
        }
    }
    eprintln!(
        "rpull serve: CRI image service on unix://{} (store {})",
        socket.display(),
        engine.store().root().display()
    );
    cri::serve(engine, listener, &socket, progress_timeout, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// The fleet pull API on `--listen`, routing jobs through NATS or running them on `engine`.
async fn run_fleet(fleet: FleetServeArgs, engine: Engine, shutdown: CancellationToken) -> Result<(), String> {
    let listen = fleet.listen.ok_or("--listen is required")?;
    // The flag, else the config file's `signing-key-file` (merged by Settings).
    let signing_key_file = engine
        .settings()
        .signing_key_file
        .clone()
        .ok_or("--signing-key-file (or the config file's signing-key-file) is required with --listen")?;
    let options = ServeOptions {
        listen,
        nats: fleet.nats,
        nats_settings: engine.settings().nats.clone(),
        signing_key_file,
        job_timeout: fleet.job_timeout,
        read_timeout: fleet.http_read_timeout,
    };
    let (hostname, labels) = (fleet.hostname, fleet.labels);
    let node = move || Node::with_engine(engine, hostname, &labels).map_err(|e| e.to_string());
    server::run(options, node, shutdown, |line| eprintln!("rpull serve: {line}"))
        .await
        .map_err(|e| e.to_string())
}
