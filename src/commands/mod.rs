//! The subcommands, one file each: each parses its flags, builds the settings and the
//! [`Engine`], calls one engine operation and renders its result. This module holds what they
//! share: output and error exit, the engine of the store commands, and signal handling.

pub mod agent;
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
pub mod token;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

use rpull::config::Layer;
use rpull::engine::Engine;
use rpull::settings::{default_root, Overrides, Settings, SettingsError};

/// The signal that stopped the run, if any (0 = none).
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

/// Set once a write to stdout failed (a closed pipe): the rest of the output is dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Prints `line` and a newline on stdout, as one write. A stdout that cannot be written (a
/// reader that went away: EPIPE) never stops a command half-way, as `println!`'s panic did:
/// the command finishes its work, and this and every later line are dropped quietly.
pub fn print_line(line: impl std::fmt::Display) {
    use std::io::Write as _;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let text = format!("{line}\n");
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

/// Whether the command was started with file descriptor 1 open (not `>&-`). A command whose
/// output is its result (`save`) must refuse to run without one.
///
/// A closed descriptor cannot be seen as such from `main`: Rust's runtime puts `/dev/null`,
/// opened read-write, in place of a closed 0, 1 or 2 before `main` runs (and its stdout
/// would swallow writes to a closed one anyway). A shell's `>/dev/null` opens it write-only,
/// so a read-write `/dev/null` on fd 1 is taken as the runtime's stand-in.
pub fn stdout_is_open() -> bool {
    let fd = libc::STDOUT_FILENO;
    // SAFETY: F_GETFD and F_GETFL only query the descriptor's flags.
    let (fd_flags, fl) = unsafe { (libc::fcntl(fd, libc::F_GETFD), libc::fcntl(fd, libc::F_GETFL)) };
    if fd_flags == -1 || fl == -1 {
        return false;
    }
    if fl & libc::O_ACCMODE != libc::O_RDWR {
        return true;
    }
    // SAFETY: fstat writes into the zeroed struct passed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let dev_null = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3);
    !dev_null
}

/// Prints `message` on stderr and returns exit status 1.
pub fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(1)
}

/// The engine of the commands that only use the store (`images`, `rmi`, `prune`, `save`,
/// `rootfs`, `check`) over the store at `root` (or the default), or why it cannot be opened.
/// They reach no registry, so their settings come from neither the config file nor the
/// environment: a broken config file does not stop them.
pub fn store_engine(root: Option<&Path>) -> Result<Engine, String> {
    let root = root
        .map(Path::to_path_buf)
        .or_else(default_root)
        .ok_or_else(|| SettingsError::NoRoot.to_string())?;
    let settings = Settings::from_parts(root, &Overrides::default(), &Layer::default(), &|_| None)
        .map_err(|e| e.to_string())?;
    Engine::open(settings).map_err(|e| format!("cannot open the image store: {e}"))
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

/// The NATS access flags of `agent` and `serve`, laid into the overrides' layer (they fall
/// back to the config file there).
pub fn lay_nats_access(args: &rpull::cli::NatsAccessArgs, layer: &mut Layer) {
    layer.nats_ca = args.nats_ca.clone();
    layer.nats_cert = args.nats_cert.clone();
    layer.nats_key = args.nats_key.clone();
    layer.nats_nkey_file = args.nats_nkey_file.clone();
}
