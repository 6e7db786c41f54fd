//! Child processes tethered to the test binary, and [`find_binary`], which finds the servers'
//! binaries (the registry's, nats-server's).
//!
//! Owners kill their children on `Drop`, which covers normal ends and panics. [`spawn_tethered`]
//! also covers the test binary being killed outright (a CI timeout, `kill -9`): on Linux the
//! child gets `PR_SET_PDEATHSIG(SIGKILL)`. The kernel sends that signal when the *thread* that
//! forked the child exits, not the process, and cargo runs each test on its own short-lived
//! thread. So every fork happens on one spawner thread that lives as long as the process, and a
//! child outlives the test that started it only if its owner is kept alive (e.g. in a static).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Finds a server's binary: `explicit` (a path, and what named it) if given, which must exist;
/// else `default` if it exists; else `name` on `PATH`. Panics with `missing(path, why)`, the
/// server's install instructions, when there is none.
pub fn find_binary(
    explicit: Option<(PathBuf, &str)>,
    default: &str,
    name: &str,
    missing: impl Fn(&Path, &str) -> String,
) -> PathBuf {
    if let Some((path, source)) = explicit {
        if path.is_file() {
            return path;
        }
        panic!("{}", missing(&path, &format!("not found (from {source})")));
    }
    if Path::new(default).is_file() {
        return PathBuf::from(default);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{}", missing(Path::new(default), "not found, nor on PATH")))
}

/// The path in the environment variable `var`, unless it is unset or empty, with `var` as
/// its source (for [`find_binary`]).
pub fn path_from_env(var: &str) -> Option<(PathBuf, &str)> {
    std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(|p| (PathBuf::from(p), var))
}

/// Spawns `cmd` so that it is killed when the test process dies, however it dies.
///
/// The caller still owns the [`Child`] and must kill and wait for it on `Drop`.
pub fn spawn_tethered(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("tethered-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_death_signal(&mut cmd));
                }
            })
            .expect("cannot start the spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).expect("the spawner thread is gone");
    reply_rx.recv().expect("the spawner thread is gone")
}

#[cfg(target_os = "linux")]
fn spawn_with_death_signal(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_with_death_signal(cmd: &mut Command) -> io::Result<Child> {
    cmd.spawn()
}

/// Kills `child` (SIGKILL) and reaps it; errors are ignored, as it may have exited already.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` (e.g. `libc::SIGINT`) to `child`, unless it has been reaped already.
pub fn send_signal(child: &mut Child, signal: libc::c_int) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) with a pid we own that has not been reaped, so it is still ours.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            child.id(),
            io::Error::last_os_error()
        );
    }
}

/// A new pseudo-terminal: its master side as a [`std::fs::File`] and its slave side, to hand
/// to a child as stdin or stdout. Panics if the system has none to give.
#[cfg(unix)]
pub fn openpty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors; the null pointers ask for defaults.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else; each closes on drop.
    unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}
