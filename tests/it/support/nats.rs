//! A real NATS server with JetStream (`nats-server -js`) per test, on a free loopback port with
//! its store in a temporary directory. [`Nats::restart`] stops it and starts it again on the
//! same port and store, as an operator's restart would. [`Nats::start_with_config`] adds a
//! config file (TLS, authorization) to the same command line.
//!
//! The binary is `$RPULL_TEST_NATS_BIN`, else `/usr/sbin/nats-server` (Debian's package), else
//! `nats-server` on `PATH`. When it is missing the test fails with install instructions: these
//! tests never skip.

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{find_binary, kill_and_reap, path_from_env, spawn_tethered};
use super::registry::{free_port, tail};

/// The environment variable naming the server binary.
pub const NATS_BIN_ENV: &str = "RPULL_TEST_NATS_BIN";
/// Where Debian's `nats-server` package installs it.
pub const DEFAULT_NATS_BIN: &str = "/usr/sbin/nats-server";

/// A running nats-server; killed on drop.
pub struct Nats {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    /// The text of the server's config file (`-c`), if any.
    config: Option<String>,
}

impl Nats {
    /// Starts a server (retrying on a port race).
    pub fn start() -> Nats {
        Nats::start_with(None)
    }

    /// Starts a server that also reads `config` (nats-server's config syntax: `tls { … }`,
    /// `authorization { … }`); the listen address, port and JetStream store stay on the
    /// command line.
    pub fn start_with_config(config: &str) -> Nats {
        Nats::start_with(Some(config.to_string()))
    }

    fn start_with(config: Option<String>) -> Nats {
        let binary = resolve_binary();
        let mut last = String::new();
        for _ in 0..8 {
            match Nats::launched(binary.clone(), free_port(), config.clone()) {
                Ok(nats) => return nats,
                Err(log) => last = log,
            }
        }
        panic!("nats-server would not start; last log:\n{last}");
    }

    /// Starts a server on `port` (a test that started its clients first picked it).
    pub fn start_at(port: u16) -> Nats {
        Nats::launched(resolve_binary(), port, None)
            .unwrap_or_else(|log| panic!("nats-server would not start on port {port}:\n{log}"))
    }

    /// A server of `binary` on `port` with a fresh store, started; its log when it would not.
    fn launched(binary: PathBuf, port: u16, config: Option<String>) -> Result<Nats, String> {
        let mut nats = Nats {
            child: None,
            binary,
            port,
            dir: super::temp_dir("rpull-nats-"),
            config,
        };
        nats.launch().map(|()| nats)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn launch(&mut self) -> Result<(), String> {
        let store = self.dir.path().join("store");
        fs::create_dir_all(&store).expect("creating the JetStream store dir");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("creating nats log");
        let mut cmd = Command::new(&self.binary);
        if let Some(config) = &self.config {
            let path = self.dir.path().join("nats.conf");
            fs::write(&path, config).expect("writing nats.conf");
            cmd.arg("-c").arg(path);
        }
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let mut child = spawn_tethered(cmd)
            .unwrap_or_else(|e| panic!("{}", missing_binary_message(&self.binary, &e.to_string())));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited ({status}):\n{}", tail(&self.log(), 30)));
            }
            if self.log().contains("Server is ready") && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                return Err(format!("not ready after 10s:\n{}", tail(&self.log(), 30)));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(log) = self.launch() {
            assert!(Instant::now() < deadline, "nats-server would not restart:\n{log}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        if thread::panicking() {
            eprintln!("--- nats-server log tail:\n{}", tail(&self.log(), 20));
        }
    }
}

/// `$RPULL_TEST_NATS_BIN`, else Debian's path, else `nats-server` on `PATH`; panics with
/// install instructions if there is none.
fn resolve_binary() -> PathBuf {
    find_binary(
        path_from_env(NATS_BIN_ENV),
        DEFAULT_NATS_BIN,
        "nats-server",
        missing_binary_message,
    )
}

fn missing_binary_message(binary: &Path, why: &str) -> String {
    format!(
        "cannot run nats-server {}: {why}.\n\
         rpull's fleet tests need a real NATS server with JetStream (2.9 or later). Install it with\n\
         \n    apt-get install -y nats-server\n\n\
         or point {NATS_BIN_ENV}=/path/to/nats-server at one.",
        binary.display()
    )
}
