//! The subcommands, one file each; this module holds what they share: error exit, the
//! default store location, and signal handling.

pub mod check;
pub mod creds;
pub mod images;
pub mod login;
pub mod logout;
pub mod prune;
pub mod pull;
pub mod rmi;
pub mod rootfs;
pub mod save;
pub mod serve;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The signal that stopped the run, if any (0 = none).
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

/// Prints `message` on stderr and returns exit status 1.
pub fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(1)
}

/// Opens the store at `root` (or the default), or says why it cannot.
pub fn open_store(root: Option<&Path>) -> Result<Store, String> {
    let root = root
        .map(Path::to_path_buf)
        .or_else(crate::settings::default_root)
        .ok_or_else(|| crate::settings::SettingsError::NoRoot.to_string())?;
    Store::open(&root).map_err(|e| format!("cannot open the image store: {e}"))
}

/// The exit status for a run stopped by a signal: 128 + the signal (130 if none was seen).
pub fn interrupted_exit_code() -> ExitCode {
    let sig = STOPPED_BY.load(Ordering::SeqCst);
    ExitCode::from(if sig == 0 { 130 } else { (128 + sig) as u8 })
}

/// Installs SIGINT/SIGTERM handling: the first signal cancels, a second one exits at once.
pub fn watch_signals(cancel: CancellationToken) {
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
