//! `rpull serve`'s fleet API: the backend (NATS, or this node), the key, the listener.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::auth::{AuthError, SigningKey};
use super::bus::{Bus, BusError};
use super::dispatch::{Backend, Local};
use super::http::{router, serve, Api};
use super::node::Node;
use crate::settings::NatsSettings;

/// What the API is served with.
pub struct ServeOptions {
    /// `HOST:PORT`.
    pub listen: String,
    /// The NATS URL; `None` runs jobs on `node`.
    pub nats: Option<String>,
    /// How NATS is reached (TLS, nkey).
    pub nats_settings: NatsSettings,
    /// The signing key file.
    pub signing_key_file: PathBuf,
    /// How long a request waits.
    pub job_timeout: Duration,
    /// How long a client may take to send a request's head, then its body (`rpull serve`'s
    /// hidden `--http-read-timeout`, 30 s unless tests shorten it).
    pub read_timeout: Duration,
}

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key.
    #[error(transparent)]
    Key(#[from] AuthError),
    /// NATS.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
}

/// Serves until `cancel`. `node` is opened only without NATS; `log` gets the address
/// (`listening on http://…`) and one line per job.
pub async fn run(
    options: ServeOptions,
    node: impl FnOnce() -> Result<Node, String>,
    cancel: CancellationToken,
    log: impl Fn(String) + Send + Sync + 'static,
) -> Result<(), ServeError> {
    let key = SigningKey::read(&options.signing_key_file)?;
    let log: Arc<dyn Fn(String) + Send + Sync> = Arc::new(log);
    let backend = match &options.nats {
        Some(url) => {
            let connect = Bus::connect(url, &options.nats_settings, "rpull-serve", Arc::clone(&log));
            let bus = tokio::select! {
                bus = connect => bus?,
                _ = cancel.cancelled() => return Ok(()),
            };
            Backend::Nats(Box::new(bus))
        }
        None => {
            let node = node().map_err(|e| ServeError::Serve(std::io::Error::other(e)))?;
            if let Some(warning) = &node.warning {
                log(warning.clone());
            }
            Backend::Local(Arc::new(Local::new(
                node.engine,
                node.hostname,
                node.labels,
                Some(node.credentials),
                cancel.clone(),
            )))
        }
    };
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    log(format!("listening on http://{addr}"));
    let api = Arc::new(Api {
        backend,
        key,
        job_timeout: options.job_timeout,
        read_timeout: options.read_timeout,
        log: Box::new(move |line| log(line)),
    });
    serve(listener, router(api), options.read_timeout, cancel)
        .await
        .map_err(ServeError::Serve)
}
