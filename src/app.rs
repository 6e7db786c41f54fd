//! The program around the library: parses the command line, sets up the runtime, signals,
//! store and reporter, runs the command and turns the outcome into docker's exit codes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use clap::error::ErrorKind;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Format, PullArgs};
use crate::platform::Platform;
use crate::progress::{self, OutputMode};
use crate::pull::{PullOptions, Puller};
use crate::store::Store;

/// The signal that stopped the run, if any (0 = none).
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

/// Runs rpull with `args` (the program name first) and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let pull = match cli.command {
        Some(Command::Pull(p)) => p,
        None => cli.pull,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(run_pull(pull, cli.root));
    runtime.shutdown_background();
    code
}

fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::MissingRequiredArgument => {
            eprintln!(
                "rpull: 'rpull pull' requires 1 argument\n\nUsage:  rpull pull [OPTIONS] NAME[:TAG|@DIGEST]\n\nRun 'rpull --help' for more information"
            );
            ExitCode::from(1)
        }
        _ => {
            let _ = e.print();
            ExitCode::from(125)
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(1)
}

fn default_root() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("rpull"))
}

/// Installs SIGINT/SIGTERM handling: the first signal cancels, a second one exits at once.
fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            if STOPPED_BY.swap(sig, Ordering::SeqCst) != 0 {
                std::process::exit(128 + sig);
            }
            cancel.cancel();
        }
    });
}

async fn run_pull(args: PullArgs, root: Option<PathBuf>) -> ExitCode {
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
    let Some(root) = root.or_else(default_root) else {
        return fail("cannot find a data directory for the store: set --root or RPULL_ROOT");
    };
    let store = match Store::open(&root) {
        Ok(s) => s,
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
    let opts = PullOptions {
        all_tags: args.all_tags,
        platform,
        max_concurrent_downloads: args.max_concurrent_downloads as usize,
        ..PullOptions::default()
    };
    let puller = Puller::new(store, opts, reporter.clone(), cancel.clone());
    let result = puller.pull(&name).await;
    reporter.finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_cancelled() || cancel.is_cancelled() => {
            let sig = STOPPED_BY.load(Ordering::SeqCst);
            ExitCode::from(if sig == 0 { 130 } else { (128 + sig) as u8 })
        }
        Err(e) => {
            if mode != OutputMode::Json {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}
