//! Running the `rpull` binary in a sandbox, and checking what it printed.
//!
//! [`rpull()`] gives an [`Rpull`]: a fresh store root (passed as `--root`), a fresh `HOME` and an
//! empty `DOCKER_CONFIG` directory, kept for the sandbox's lifetime so one test can run rpull
//! several times against the same store. Every run removes the variables that would make the
//! result depend on the developer's machine (`RPULL_*`, `DOCKER_*`, proxies, `XDG_*`, colour
//! forcing) and sets `NO_COLOR=1`. Runs have a timeout, and the child is killed if the test
//! panics or the test binary dies.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{kill_and_reap, send_signal, spawn_tethered};

/// The binary under test.
pub const RPULL_BIN: &str = env!("CARGO_BIN_EXE_rpull");

/// How long a run may take before the harness kills it and fails the test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Prefixes of variables removed from every run.
pub const SCRUBBED_PREFIXES: &[&str] = &["RPULL_", "DOCKER_", "XDG_"];

/// Variables removed from every run (unconditionally, so a test can see it in
/// `Command::get_envs`), besides any with a [`SCRUBBED_PREFIXES`] prefix.
pub const SCRUBBED: &[&str] = &[
    "RPULL_ROOT",
    "DOCKER_DEFAULT_PLATFORM",
    "DOCKER_HOST",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "FORCE_COLOR",
    "COLUMNS",
    "LINES",
];

/// A fresh sandbox for running rpull.
pub fn rpull() -> Rpull {
    Rpull::new()
}

/// A sandbox: store root, `HOME` and `DOCKER_CONFIG` directories, extra environment.
pub struct Rpull {
    root: TempDir,
    home: TempDir,
    docker_config: TempDir,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl Default for Rpull {
    fn default() -> Rpull {
        Rpull::new()
    }
}

impl Rpull {
    /// A sandbox with empty directories.
    pub fn new() -> Rpull {
        let dir = super::temp_dir;
        Rpull {
            root: dir("rpull-root-"),
            home: dir("rpull-home-"),
            docker_config: dir("rpull-docker-config-"),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The store root given as `--root`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Takes the store's guard (`gc.lock`) as another rpull would: shared as a pull, save or
    /// rootfs holds it, exclusive as a collection (prune) does. Held until the file is dropped.
    pub fn hold_store_guard(&self, exclusive: bool) -> std::fs::File {
        self.hold_lock("gc.lock", exclusive)
    }

    /// Takes the lock on the ingest entry of blob `digest` (`sha256:<hex>`) as another rpull
    /// downloading it would. Held until the file is dropped.
    pub fn hold_ingest_lock(&self, digest: &str) -> std::fs::File {
        self.hold_lock(&format!("ingest/sha256-{}.lock", &digest[7..]), true)
    }

    /// `flock`s the store file `rel` (creating it and its directory), as rpull's locks do.
    fn hold_lock(&self, rel: &str, exclusive: bool) -> std::fs::File {
        use std::os::unix::io::AsRawFd;
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), op) }, 0, "flock {rel}");
        file
    }

    /// Where the store keeps the blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root().join("blobs/sha256").join(hex_part(digest))
    }

    /// Where a download of the blob `digest` is written until it is committed (its sidecar
    /// is the same path with the extension `json`).
    pub fn partial_path(&self, digest: &str) -> PathBuf {
        self.root()
            .join("ingest")
            .join(format!("sha256-{}.partial", hex_part(digest)))
    }

    /// The directory the layer with diff ID `diff_id` is unpacked in (its `rootfs/` and
    /// `layer.json`).
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root().join("layers/sha256").join(hex_part(diff_id))
    }

    /// The store's `index.json`; panics if there is none.
    pub fn index_json(&self) -> serde_json::Value {
        let path = self.root().join("index.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The `index.json` entry recorded for the reference `name`, if there is one.
    pub fn ref_entry(&self, name: &str) -> Option<serde_json::Value> {
        self.index_json()["manifests"]
            .as_array()
            .expect("index.json has a manifests array")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
            .cloned()
    }

    /// Panics unless `index.json` records the reference `name` as the manifest `digest`.
    pub fn assert_recorded(&self, name: &str, digest: &str) {
        let entry = self
            .ref_entry(name)
            .unwrap_or_else(|| panic!("{name} is not in index.json: {}", self.index_json()));
        assert_eq!(entry["digest"], digest, "the manifest recorded for {name}");
    }

    /// `HOME` for the runs.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `DOCKER_CONFIG` for the runs (empty unless the test writes to it).
    pub fn docker_config_dir(&self) -> &Path {
        self.docker_config.path()
    }

    /// Writes `DOCKER_CONFIG/config.json` (credentials, proxies, …).
    pub fn write_docker_config(&self, config: &serde_json::Value) {
        let path = self.docker_config.path().join("config.json");
        std::fs::write(path, serde_json::to_vec_pretty(config).unwrap()).expect("writing config.json");
    }

    /// Sets a variable for every later run of this sandbox.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Rpull {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Puts `dir` ahead of the test's own `PATH` (where rpull finds credential helpers).
    pub fn path_first(&mut self, dir: &Path) -> &mut Rpull {
        let path = std::env::var("PATH").unwrap_or_default();
        self.env("PATH", format!("{}:{path}", dir.display()))
    }

    /// Changes the per-run timeout.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Rpull {
        self.timeout = timeout;
        self
    }

    /// `program` with the sandbox's environment (the command refers to the sandbox's
    /// directories: keep the sandbox alive while it runs): scrubbed variables removed, `HOME`,
    /// `DOCKER_CONFIG` and `NO_COLOR=1` set, then the sandbox's own variables; stdin null,
    /// working directory `HOME`.
    pub fn command_for(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for key in SCRUBBED {
            cmd.env_remove(key);
        }
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if SCRUBBED_PREFIXES.iter().any(|p| k.starts_with(p)) {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HOME", self.home.path())
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    /// The rpull command with the sandbox's environment but no arguments at all (not even
    /// `--root`), for tests of argument handling.
    pub fn bare_command(&self) -> Command {
        self.command_for(RPULL_BIN)
    }

    /// The command `rpull --root <root>`, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--root").arg(self.root.path());
        cmd
    }

    /// Runs `rpull --root <root> <args…>` to completion.
    pub fn run<I, S>(&self, args: I) -> RpullOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn(args).wait()
    }

    /// Starts `rpull --root <root> <args…>` without waiting, e.g. to interrupt it.
    pub fn spawn<I, S>(&self, args: I) -> RunningRpull
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        RunningRpull::start(cmd, self.timeout)
    }
}

/// A running rpull; killed on drop if still running.
pub struct RunningRpull {
    child: Child,
    description: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    deadline: Instant,
}

impl RunningRpull {
    /// Spawns `cmd` with piped stdout and stderr, collected in the background.
    pub fn start(mut cmd: Command, timeout: Duration) -> RunningRpull {
        let description = describe(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_tethered(cmd).unwrap_or_else(|e| panic!("spawning {description}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("piped stderr"), Arc::clone(&stderr)),
        ];
        RunningRpull {
            child,
            description,
            stdout,
            stderr,
            readers,
            deadline: Instant::now() + timeout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&mut self, signal: libc::c_int) {
        send_signal(&mut self.child, signal);
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&mut self) {
        self.signal(libc::SIGINT);
    }

    /// Sends `signal`, waits for the exit and panics unless it came within `within`.
    pub fn stop_within(mut self, signal: libc::c_int, within: Duration) -> RpullOutput {
        let sent = Instant::now();
        self.signal(signal);
        let out = self.wait();
        assert!(
            sent.elapsed() < within,
            "took {:?} to stop after signal {signal}",
            sent.elapsed()
        );
        out
    }

    /// Standard output so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Standard error so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`; panics with the output so far on timeout or if
    /// rpull exits first.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        self.wait_for(Self::stdout_so_far, needle, timeout);
    }

    /// Waits until stderr contains `needle`, as [`Self::wait_for_stdout`] does for stdout.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        self.wait_for(Self::stderr_so_far, needle, timeout);
    }

    fn wait_for(&mut self, so_far: fn(&Self) -> String, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if so_far(self).contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Output may still be in the pipe.
                thread::sleep(Duration::from_millis(50));
                if so_far(self).contains(needle) {
                    return;
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}\n{}",
                    self.description,
                    self.partial_output()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.description,
                    self.partial_output()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for rpull to exit (killing it and panicking at the timeout) and returns its output.
    pub fn wait(mut self) -> RpullOutput {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= self.deadline => {
                    kill_and_reap(&mut self.child);
                    panic!(
                        "{} timed out; killed\n{}",
                        self.description,
                        self.partial_output()
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("waiting for {}: {e}", self.description),
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        RpullOutput {
            status,
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
            command: self.description.clone(),
        }
    }

    fn partial_output(&self) -> String {
        format!(
            "--- stdout so far:\n{}\n--- stderr so far:\n{}",
            self.stdout_so_far(),
            self.stderr_so_far()
        )
    }
}

impl Drop for RunningRpull {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let mut s = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// What a finished run printed, and how it ended.
#[derive(Clone)]
pub struct RpullOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output (lossily decoded).
    pub stdout: String,
    /// Standard error (lossily decoded).
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl RpullOutput {
    /// The exit code, `None` if killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Did it exit 0?
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing everything, unless it exited 0.
    pub fn assert_success(&self) -> &RpullOutput {
        assert!(self.success(), "expected success\n{self}");
        self
    }

    /// Panics, showing everything, unless it exited with `code`.
    pub fn assert_code(&self, code: i32) -> &RpullOutput {
        assert_eq!(self.code(), Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Panics unless it exited 1 with exactly `message` on stderr (a trailing newline aside).
    pub fn assert_error(&self, message: impl AsRef<str>) -> &RpullOutput {
        self.assert_code(1);
        assert_eq!(self.stderr.trim_end(), message.as_ref(), "{self}");
        self
    }

    /// Panics unless it exited 1 with `needle` somewhere in stderr.
    pub fn assert_failed_with(&self, needle: &str) -> &RpullOutput {
        self.assert_code(1);
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr\n{self}"
        );
        self
    }

    /// Panics unless stdout is exactly `expected`, line by line (see [`assert_lines`]).
    pub fn assert_stdout_lines(&self, expected: &[&str]) -> &RpullOutput {
        assert_lines(&self.stdout, expected);
        self
    }

    /// Panics unless stderr is exactly `expected`, line by line.
    pub fn assert_stderr_lines(&self, expected: &[&str]) -> &RpullOutput {
        assert_lines(&self.stderr, expected);
        self
    }
}

/// The hex part of a `sha256:<hex>` digest; panics on another algorithm.
fn hex_part(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest:?}"))
}

impl fmt::Display for RpullOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status: {}", self.status)?;
        writeln!(f, "--- stdout:\n{}", self.stdout)?;
        write!(f, "--- stderr:\n{}", self.stderr)
    }
}

impl fmt::Debug for RpullOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Asserts that `actual` consists of exactly the `expected` lines (a final newline is not an
/// extra line). On mismatch, panics showing both sides numbered, `>` marking where they differ.
pub fn assert_lines(actual: &str, expected: &[&str]) {
    let actual_lines: Vec<&str> = actual.lines().collect();
    if actual_lines == expected {
        return;
    }
    let first_diff = actual_lines
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual_lines.len().min(expected.len()));
    let show = |lines: &[&str], other: &[&str]| {
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let mark = if other.get(i) != Some(line) { '>' } else { ' ' };
            out.push_str(&format!("{mark}{:4} | {line:?}\n", i + 1));
        }
        out
    };
    panic!(
        "lines differ, first at line {}\n--- expected ({} lines):\n{}--- actual ({} lines):\n{}",
        first_diff + 1,
        expected.len(),
        show(expected, &actual_lines),
        actual_lines.len(),
        show(&actual_lines, expected),
    );
}
