//! The JetStream layout the server and the agents share, set up idempotently by whichever
//! starts first: the `JOBS` stream (subjects `jobs.>`, a job's ID per message), and the
//! key-value buckets `job-queue` (`jobs.<id>`: the job), `job-responses`
//! (`responses.<id>.<host>`: one agent's answer), `agent-registry` (`agents.<host>`: each
//! agent's heartbeat, expiring when it stops beating) and `blob-claims` (`claims.<mirror>.<blob>`:
//! which agent fetches a blob into a shared cache, see [`super::claims`]).
//!
//! Start order does not matter: a process started before NATS waits for it, retrying, and
//! says once why each attempt fails (TLS, authorization) until it gets through.
//!
//! NATS is reached as [`NatsSettings`] say: TLS with the system's roots or `--nats-ca`, a
//! client certificate, an nkey seed (read and checked at start), or a user and password or
//! token in the URL. No log line carries the URL's credentials or the seed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};

use super::target::{host_token, Label};
use crate::settings::{ClientCert, NatsSettings};

/// The stream of job notifications.
pub const JOBS_STREAM: &str = "JOBS";
/// The bucket of jobs.
pub const JOBS_BUCKET: &str = "job-queue";
/// The bucket of answers.
pub const RESPONSES_BUCKET: &str = "job-responses";
/// The bucket of agent heartbeats.
pub const AGENTS_BUCKET: &str = "agent-registry";
/// How long jobs and answers are kept.
pub const JOB_TTL: Duration = Duration::from_secs(3600);
/// How often an agent beats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a heartbeat lives: an agent silent for longer is no longer waited for.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(30);
/// The bucket of blob claims.
pub const CLAIMS_BUCKET: &str = "blob-claims";
/// How long a claim (and a `done`) is kept at most.
pub const CLAIMS_KEEP: Duration = Duration::from_secs(600);
/// The longest pause between two attempts to reach NATS at start.
const SETUP_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why NATS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The connection could not be made.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// A stream, bucket or consumer could not be set up or used.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// A NATS client certificate without its key, or a key without its certificate.
    #[error("the NATS client {what} {} has no other half: give both --nats-cert and --nats-key (or the config file's nats-cert and nats-key)", path.display())]
    HalfClientCert {
        /// `certificate` or `key`.
        what: &'static str,
        /// Its file.
        path: std::path::PathBuf,
    },
    /// A TLS or nkey file named by the settings cannot be used.
    #[error("cannot use {what} {}: {message}", path.display())]
    File {
        /// Which file (`the NATS nkey seed file`, …).
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
}

impl BusError {
    /// A JetStream error from any async-nats error.
    pub fn js(e: impl std::fmt::Display) -> BusError {
        BusError::JetStream(e.to_string())
    }
}

/// An agent's heartbeat: who it is and what it consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its hostname.
    pub hostname: String,
    /// Its labels.
    pub labels: Vec<Label>,
    /// Seconds since the epoch of the beat.
    pub seen: u64,
}

/// The key of an agent's heartbeat.
pub fn agent_key(hostname: &str) -> String {
    format!("agents.{}", host_token(hostname))
}

/// The key of a job.
pub fn job_key(job_id: &str) -> String {
    format!("jobs.{job_id}")
}

/// The key of `hostname`'s answer to a job.
pub fn response_key(job_id: &str, hostname: &str) -> String {
    format!("responses.{job_id}.{}", host_token(hostname))
}

/// A connection with the stream and buckets in place.
#[derive(Clone)]
pub struct Bus {
    /// The JetStream context.
    pub js: jetstream::Context,
    /// The jobs stream.
    pub stream: stream::Stream,
    /// `job-queue`.
    pub jobs: kv::Store,
    /// `job-responses`.
    pub responses: kv::Store,
    /// `agent-registry`.
    pub agents: kv::Store,
    /// `blob-claims`.
    pub claims: kv::Store,
}

impl Bus {
    /// Connects to `url` as `nats` says and creates what is missing, retrying with backoff
    /// until NATS answers (and reconnecting for ever after). `waiting` is told, with the URL
    /// without credentials, when the first attempt fails and whenever the reason a connection
    /// fails changes. It fails only for a URL or a file that cannot be used at all; the
    /// caller cancels it by dropping it.
    pub async fn connect(
        url: &str,
        nats: &NatsSettings,
        name: &str,
        waiting: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Bus, BusError> {
        let shown = redact_url(url);
        let reasons = Reasons {
            waiting: Arc::clone(&waiting),
            url: shown.clone(),
            last: Arc::new(Mutex::new(None)),
        };
        let access = Access::new(url, nats)?;
        let options = || {
            let reasons = reasons.clone();
            access
                .options()
                .name(name)
                .max_reconnects(None)
                .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2000)))
                .event_callback(move |event| {
                    match &event {
                        async_nats::Event::ClientError(e) => reasons.tell(e.to_string()),
                        async_nats::Event::ServerError(e) => reasons.tell(format!("server error: {e}")),
                        async_nats::Event::Connected => reasons.forget(),
                        _ => {}
                    }
                    async {}
                })
        };
        // One attempt first: its error has the whole reason (a certificate the CA does not
        // sign, say), where the attempts in the background report only its kind.
        let client = match options().connect(url).await {
            Ok(client) => client,
            Err(e) => {
                reasons.tell(e.to_string());
                reasons.seen(async_nats::ClientError::Other(e.kind().to_string()).to_string());
                options()
                    .retry_on_initial_connect()
                    .connect(url)
                    .await
                    .map_err(|e| BusError::Connect {
                        url: shown.clone(),
                        message: e.to_string(),
                    })?
            }
        };
        let js = jetstream::new(client);
        let mut pause = Duration::from_millis(200);
        let mut told = false;
        loop {
            match Bus::set_up(&js).await {
                Ok(bus) => return Ok(bus),
                Err(e) => {
                    if !std::mem::replace(&mut told, true) {
                        waiting(format!("waiting for NATS at {shown} ({e})"));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SETUP_RETRY_MAX);
                }
            }
        }
    }

    /// The stream and buckets, created when missing.
    async fn set_up(js: &jetstream::Context) -> Result<Bus, BusError> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: JOBS_STREAM.to_string(),
                subjects: vec!["jobs.>".to_string()],
                max_age: JOB_TTL,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::JetStream(format!("stream {JOBS_STREAM}: {e}")))?;
        let jobs = bucket(js, JOBS_BUCKET, JOB_TTL, 1).await?;
        let responses = bucket(js, RESPONSES_BUCKET, JOB_TTL, 1).await?;
        let agents = bucket(js, AGENTS_BUCKET, HEARTBEAT_TTL, 1).await?;
        let claims = bucket(js, CLAIMS_BUCKET, CLAIMS_KEEP, 1).await?;
        Ok(Bus {
            js: js.clone(),
            stream,
            jobs,
            responses,
            agents,
            claims,
        })
    }
}

/// `url` (one or several, comma-separated) without the `user:password@` of each.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            if scheme.is_empty() {
                rest.to_string()
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Tells why connecting fails, each reason once until a connection is made.
#[derive(Clone)]
struct Reasons {
    waiting: Arc<dyn Fn(String) + Send + Sync>,
    /// The URL without credentials.
    url: String,
    last: Arc<Mutex<Option<String>>>,
}

impl Reasons {
    fn tell(&self, why: String) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(&why) {
            (self.waiting)(format!("cannot reach NATS at {}: {why}", self.url));
            *last = Some(why);
        }
    }

    /// Takes `why` as told (the background's short form of a reason just told in full).
    fn seen(&self, why: String) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn forget(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// How to authenticate and secure a connection, from `url` and `nats`, with every file
/// checked and the nkey seed read once, when the process starts.
struct Access {
    auth: Option<(String, Option<String>)>,
    ca: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    seed: Option<String>,
}

impl Access {
    /// Reads and checks what `nats` names: a CA and a client pair must be readable, a client
    /// pair whole, the seed valid.
    fn new(url: &str, nats: &NatsSettings) -> Result<Access, BusError> {
        if let Some(ca) = &nats.ca {
            readable(ca, "the NATS CA file")?;
        }
        let client_cert = match &nats.client_cert {
            Some(ClientCert::Pair(cert, key)) => {
                readable(cert, "the NATS client certificate")?;
                readable(key, "the NATS client key")?;
                Some((cert.clone(), key.clone()))
            }
            Some(ClientCert::Half { what, path }) => {
                return Err(BusError::HalfClientCert {
                    what,
                    path: path.clone(),
                })
            }
            None => None,
        };
        Ok(Access {
            auth: url_auth(url),
            ca: nats.ca.clone(),
            client_cert,
            seed: nats.nkey_file.as_deref().map(read_nkey_seed).transpose()?,
        })
    }

    /// The connection options: the URL's user and password or token, TLS required with a CA
    /// or a client certificate, the nkey.
    fn options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new();
        match &self.auth {
            Some((user, Some(password))) => {
                options = options.user_and_password(user.clone(), password.clone())
            }
            Some((token, None)) => options = options.token(token.clone()),
            None => {}
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        if let Some(seed) = &self.seed {
            options = options.nkey(seed.clone());
        }
        options
    }
}

/// The `user:password@` (or `token@`) of the first server in `url` (comma-separated, as
/// async-nats takes them) that has one, percent-decoded. async-nats connects to the URL but
/// does not send what it carries.
fn url_auth(url: &str) -> Option<(String, Option<String>)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    url.split(',').find_map(|one| {
        let one = one.trim();
        let with_scheme = if one.contains("://") {
            one.to_string()
        } else {
            format!("nats://{one}")
        };
        let parsed = url::Url::parse(&with_scheme).ok()?;
        (!parsed.username().is_empty()).then(|| (decode(parsed.username()), parsed.password().map(decode)))
    })
}

/// Fails unless `path` can be read (async-nats reads it only when it connects, where an error
/// would just be retried).
fn readable(path: &Path, what: &'static str) -> Result<(), BusError> {
    std::fs::File::open(path).map(drop).map_err(|e| BusError::File {
        what,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The nkey seed in `path`: its first line that is a seed (`nk -gen user` writes one line;
/// comments and blank lines are passed over), checked to be one.
fn read_nkey_seed(path: &Path) -> Result<String, BusError> {
    let bad = |message: String| BusError::File {
        what: "the NATS nkey seed file",
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//"))
        .ok_or_else(|| bad("it holds no seed".to_string()))?;
    // The error text of nkeys never repeats the seed.
    nkeys::KeyPair::from_seed(seed).map_err(|_| bad("it holds no valid nkey seed (SU…)".to_string()))?;
    Ok(seed.to_string())
}

/// Opens bucket `name`, creating it when missing (two processes racing both end with it).
///
/// The bucket's stream is created here with the layout async-nats' `create_key_value` gives
/// (`KV_<name>`, subjects `$KV.<name>.>`, rollups, direct gets, discard new): that function
/// first reads the account info, whose 2.9 form (Debian 12's server) it cannot parse.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Duration,
    history: i64,
) -> Result<kv::Store, BusError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history,
            max_age: ttl,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => js
            .get_key_value(name)
            .await
            .map_err(|e| BusError::JetStream(format!("bucket {name}: {e}"))),
        Err(e) => Err(BusError::JetStream(format!("bucket {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testfs::temp_file;

    #[test]
    fn nkey_seed_files_are_read_and_checked_without_showing_the_seed() {
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let (_dir, path) = temp_file("user.nk", &format!("# rpull agent\n\n{seed}\n"));
        assert_eq!(read_nkey_seed(&path).unwrap(), seed);
        // One character changed: the seed's checksum no longer matches.
        let mut broken = seed.clone();
        broken.replace_range(10..11, if &seed[10..11] == "A" { "B" } else { "A" });
        let (_dir, path) = temp_file("bad.nk", &broken);
        let err = read_nkey_seed(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("bad.nk: it holds no valid nkey seed (SU…)"),
            "{err}"
        );
        assert!(!err.contains(&broken[2..]), "{err}");
        let (_dir, path) = temp_file("empty.nk", "# nothing\n");
        assert!(read_nkey_seed(&path)
            .unwrap_err()
            .to_string()
            .ends_with("it holds no seed"));
        let missing = read_nkey_seed(Path::new("/nonexistent/user.nk")).unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("cannot use the NATS nkey seed file /nonexistent/user.nk: "));
    }

    #[test]
    fn a_urls_user_and_password_or_token_are_read_from_its_first_server_with_them() {
        assert_eq!(url_auth("nats://127.0.0.1:4222"), None);
        assert_eq!(
            url_auth("tls://agent:p%40ss%3Aw@nats.lan:4222"),
            Some(("agent".into(), Some("p@ss:w".into())))
        );
        assert_eq!(
            url_auth("nats://a.lan:4222, s3cr3t@b.lan:4222"),
            Some(("s3cr3t".into(), None))
        );
        assert_eq!(url_auth("u:p@c.lan:4222"), Some(("u".into(), Some("p".into()))));
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let nats = NatsSettings {
            client_cert: Some(ClientCert::Half {
                what: "certificate",
                path: PathBuf::from("/c.pem"),
            }),
            ..NatsSettings::default()
        };
        assert_eq!(
            Access::new("nats://127.0.0.1:4222", &nats).err().unwrap().to_string(),
            "the NATS client certificate /c.pem has no other half: give both --nats-cert and --nats-key (or the config file's nats-cert and nats-key)"
        );
    }

    #[test]
    fn tls_files_must_be_readable_at_start() {
        let nats = NatsSettings {
            ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..NatsSettings::default()
        };
        let err = Access::new("nats://127.0.0.1:4222", &nats)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot use the NATS CA file /nonexistent/ca.pem: "),
            "{err}"
        );
    }

    #[test]
    fn keys() {
        assert_eq!(agent_key("n1.lan"), "agents.n1_lan");
        assert_eq!(job_key("u"), "jobs.u");
        assert_eq!(response_key("u", "n1.lan"), "responses.u.n1_lan");
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        assert_eq!(redact_url("nats://u:secret@h:4222"), "nats://h:4222");
        assert_eq!(redact_url("tok@h:4222"), "h:4222");
        assert_eq!(
            redact_url("nats://a:b@h1:4222,nats://h2:4222"),
            "nats://h1:4222,nats://h2:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
