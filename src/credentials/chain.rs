//! A pull's credential chain: a credential given for one registry, an auth file, then docker's
//! config, as one lookup.

use std::fs;
use std::path::Path;

use super::{CredentialError, DockerConfig};
use crate::registry::Credential;

/// Looks up the credential for a registry by its config.json key.
pub type CredentialLookup = std::sync::Arc<dyn Fn(&str) -> Result<Option<Credential>, String> + Send + Sync>;

/// Where one pull's credentials come from, as podman has it: a credential given for the pulled
/// registry only (`--creds`, a CRI request's `auth`), then an auth file in config.json format
/// (`--authfile`, `REGISTRY_AUTH_FILE`), then docker's own config (`DOCKER_AUTH_CONFIG`,
/// credential helpers, config.json), loaded once.
#[derive(Debug, Clone, Default)]
pub struct CredentialChain {
    given: Option<(String, Credential)>,
    file: Option<DockerConfig>,
    docker: Option<DockerConfig>,
}

impl CredentialChain {
    /// The chain of `authfile` (which must exist when named) and docker's config. Like
    /// docker, a docker config that cannot be read or parsed is left out with a warning,
    /// returned beside the chain for the front end to show.
    pub fn load(authfile: Option<&Path>) -> Result<(CredentialChain, Option<String>), CredentialError> {
        let file = match authfile.filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => {
                if let Err(source) = fs::metadata(path) {
                    return Err(CredentialError::AuthFile {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                Some(DockerConfig::load(path)?)
            }
            None => None,
        };
        let (docker, warning) = load_docker()?;
        Ok((
            CredentialChain {
                given: None,
                file,
                docker,
            },
            warning,
        ))
    }

    /// The same chain with `credential` answering for `key` first (this call only).
    pub fn with_given(mut self, key: &str, credential: Credential) -> CredentialChain {
        self.given = Some((key.to_string(), credential));
        self
    }

    /// The credential for `key`, if any source has one.
    pub fn get(&self, key: &str) -> Result<Option<Credential>, String> {
        if let Some((k, c)) = &self.given {
            if k == key {
                return Ok(Some(c.clone()));
            }
        }
        if let Some(file) = &self.file {
            if let Some(c) = file.get(key).map_err(|e| e.to_string())? {
                return Ok(Some(c));
            }
        }
        match &self.docker {
            Some(d) => d.get(key).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Docker's own config as a lookup that reads it again at every call, as every `docker
    /// pull` does, so that a long-running agent or server uses a `docker login` made after it
    /// started. A config that cannot be read or parsed answers no credential, as
    /// [`CredentialChain::load`] leaves it out.
    pub fn live_docker_lookup() -> CredentialLookup {
        std::sync::Arc::new(|key: &str| match load_docker().map_err(|e| e.to_string())? {
            (Some(docker), _) => docker.get(key).map_err(|e| e.to_string()),
            (None, _) => Ok(None),
        })
    }

    /// The chain as the lookup a pull takes.
    pub fn into_lookup(self) -> CredentialLookup {
        std::sync::Arc::new(move |key: &str| self.get(key))
    }
}

/// Docker's config, or none with a warning when it cannot be read or parsed (as docker
/// carries on without it).
fn load_docker() -> Result<(Option<DockerConfig>, Option<String>), CredentialError> {
    match DockerConfig::load_default() {
        Ok(c) => Ok((Some(c), None)),
        Err(e @ (CredentialError::Read { .. } | CredentialError::Parse { .. })) => {
            Ok((None, Some(format!("WARNING: {e}"))))
        }
        Err(e) => Err(e),
    }
}
