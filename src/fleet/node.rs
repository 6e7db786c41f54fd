//! This node as the agent and the standalone server pull on it: the store and settings the
//! CLI would use (config file, mirrors, certs.d, how NATS is reached), the node's docker
//! credentials, its hostname and labels.

use super::target::{check_hostname, Label, TargetError};
use crate::credentials::{CredentialChain, CredentialLookup};
use crate::engine::Engine;
use crate::settings::{Overrides, Settings};

/// Why the node could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The settings could not be built.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The store could not be opened.
    #[error("cannot open the image store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    /// A bad hostname or label.
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// A node, ready to pull.
pub struct Node {
    /// The engine (one download limit shared by all jobs).
    pub engine: Engine,
    /// The hostname.
    pub hostname: String,
    /// The labels.
    pub labels: Vec<Label>,
    /// The node's docker credentials, read again at every pull
    /// ([`CredentialChain::live_docker_lookup`]).
    pub credentials: CredentialLookup,
    /// A warning about the credentials to show (a docker config unreadable at start).
    pub warning: Option<String>,
}

impl Node {
    /// Opens the node's store with the settings the CLI would have.
    pub fn open(
        overrides: &Overrides,
        hostname: Option<String>,
        labels: &[String],
    ) -> Result<Node, NodeError> {
        let settings = Settings::load(overrides)?;
        let engine = Engine::open(settings)?.with_shared_download_limit();
        Node::with_engine(engine, hostname, labels)
    }

    /// The node around an engine another front end shares (`rpull serve` with the CRI
    /// service beside the API).
    pub fn with_engine(
        engine: Engine,
        hostname: Option<String>,
        labels: &[String],
    ) -> Result<Node, NodeError> {
        let hostname = hostname.unwrap_or_else(super::system_hostname);
        check_hostname(&hostname)?;
        let labels = labels
            .iter()
            .map(|l| Label::parse(l))
            .collect::<Result<Vec<_>, _>>()?;
        let (_, warning) = CredentialChain::load(None)?;
        Ok(Node {
            engine,
            hostname,
            labels,
            credentials: CredentialChain::live_docker_lookup(),
            warning,
        })
    }
}
