//! docker's client-side credentials: the `config.json` file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), the `DOCKER_AUTH_CONFIG` override and `docker-credential-<name>`
//! helper programs. Lookups follow docker's order, `login`/`logout` writes go where docker puts
//! them, and error texts are docker's word for word. Nothing here prints, and no secret ever
//! reaches an error message, a `Debug` rendering or a command line: helpers get secrets on stdin.
//!
//! Here: the errors, [`DockerConfig`] (load, look up, store, erase, save) and docker's key
//! normalization; in `format.rs` the file's typed parts and `auth` values, in `helper.rs` the
//! helper programs, in `chain.rs` a pull's credential chain.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::registry::Credential;

mod chain;
mod format;
mod helper;

pub use chain::{CredentialChain, CredentialLookup};
pub use format::decode_auth;
use format::*;
use helper::*;

/// The key under which docker keeps Docker Hub credentials.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// The environment variable holding an inline `{"auths":{…}}` that is consulted before the file.
pub use crate::settings::env::DOCKER_AUTH_CONFIG as DOCKER_AUTH_CONFIG_ENV;

/// What a credential helper was asked to do; renders as docker's gerund (`getting`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperAction {
    /// `docker-credential-<name> get`.
    Get,
    /// `docker-credential-<name> store`.
    Store,
    /// `docker-credential-<name> erase`.
    Erase,
}

impl HelperAction {
    fn arg(self) -> &'static str {
        match self {
            HelperAction::Get => "get",
            HelperAction::Store => "store",
            HelperAction::Erase => "erase",
        }
    }
}

impl fmt::Display for HelperAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HelperAction::Get => "getting",
            HelperAction::Store => "storing",
            HelperAction::Erase => "erasing",
        })
    }
}

/// Why credentials could not be read, stored or erased. The texts are docker's where docker has
/// one, and none of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The config file exists but could not be read.
    #[error("Error loading config file: open {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The config file is not JSON of the shape docker expects.
    #[error("Error parsing config file ({}): {detail}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong, Go-style; never a value from the file.
        detail: String,
    },
    /// An `auth` value is not standard base64.
    #[error("illegal base64 data at input byte {offset}")]
    InvalidBase64 {
        /// The `auths` key of the entry.
        key: String,
        /// Where the first bad byte is.
        offset: usize,
    },
    /// An `auth` value does not decode to `user:password` with a non-empty user.
    #[error("invalid auth configuration file")]
    InvalidAuth {
        /// The `auths` key of the entry.
        key: String,
    },
    /// `DOCKER_AUTH_CONFIG` is set but unusable.
    #[error("Failed to create credential store from DOCKER_AUTH_CONFIG: {detail}")]
    EnvAuthConfig {
        /// What is wrong; never a value from the variable.
        detail: String,
    },
    /// The helper program is not on `PATH`.
    #[error(
        "error {action} credentials - err: exec: \"docker-credential-{helper}\": executable file not \
         found in $PATH, out: ``"
    )]
    HelperNotFound {
        /// What the helper was asked to do.
        action: HelperAction,
        /// The helper name (without `docker-credential-`).
        helper: String,
    },
    /// The helper could not be run or talked to.
    #[error("error {action} credentials - err: docker-credential-{helper}: {source}, out: ``")]
    HelperIo {
        /// What the helper was asked to do.
        action: HelperAction,
        /// The helper name.
        helper: String,
        /// The OS error.
        source: io::Error,
    },
    /// The helper exited with a failure.
    #[error("error {action} credentials - err: {status}, out: `{output}`")]
    HelperFailed {
        /// What the helper was asked to do.
        action: HelperAction,
        /// The helper name.
        helper: String,
        /// Go's rendering of the exit: `exit status 1`, `signal: killed`.
        status: String,
        /// The helper's stdout, trimmed.
        output: String,
    },
    /// The helper succeeded but its `get` answer is not credentials JSON.
    #[error("error getting credentials - err: docker-credential-{helper} returned invalid JSON: {detail}, out: ``")]
    HelperOutput {
        /// The helper name.
        helper: String,
        /// Where the JSON went wrong; never its content.
        detail: String,
    },
    /// An auth file (`--authfile`, `REGISTRY_AUTH_FILE`) that cannot be used (podman's text).
    #[error("credential file is not accessible: stat {}: {}", path.display(), go_os_error(source))]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `store` or `erase` without a server key.
    #[error("no credentials server URL")]
    MissingServerUrl,
    /// `store` without a username.
    #[error("no credentials username")]
    MissingUsername,
    /// The config has no file to be written to (no `DOCKER_CONFIG` and no home directory).
    #[error("Error saving credentials: no config file location (set DOCKER_CONFIG or HOME)")]
    NoConfigPath,
    /// The config file's name holds something a rename must not replace.
    #[error("Error saving credentials: {0}")]
    Output(#[from] crate::fsutil::OutputPathError),
    /// The config file is a FIFO.
    #[error("Error saving credentials: {} is not a regular file", .0.display())]
    NotRegular(PathBuf),
    /// Writing the config file failed.
    #[error("Error saving credentials: {action} {}: {source}", path.display())]
    Write {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Go's lower-case rendering of common OS errors.
fn go_os_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// Where [`DockerConfig::store`] put a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In a credential helper; the name is without `docker-credential-`.
    Helper(String),
    /// Unencrypted (base64) in this config file.
    File(PathBuf),
}

/// docker's `config.json`, parsed, keeping unknown keys so a rewrite preserves them.
///
/// `Debug` shows the file, the registry keys and helper names, never a credential.
#[derive(Clone)]
pub struct DockerConfig {
    /// Where the file lives; `None` when there is nowhere to keep one.
    path: Option<PathBuf>,
    /// The whole JSON object as read; writes change only the entries they own.
    raw: Map<String, Value>,
    /// `DOCKER_AUTH_CONFIG` entries, consulted before everything else and never written.
    env_auths: BTreeMap<String, EnvAuth>,
    /// A `PATH`-style list searched for helpers instead of `$PATH`.
    helper_path: Option<OsString>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auths: Vec<&str> = self
            .auths()
            .map(|a| a.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let helpers: BTreeMap<&str, &str> = self
            .raw
            .get("credHelpers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        let env_auths: Vec<&str> = self.env_auths.keys().map(String::as_str).collect();
        let other_keys: Vec<&str> = self
            .raw
            .keys()
            .map(String::as_str)
            .filter(|k| !matches!(*k, "auths" | "credsStore" | "credHelpers"))
            .collect();
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &auths)
            .field("creds_store", &self.creds_store())
            .field("cred_helpers", &helpers)
            .field("env_auths", &env_auths)
            .field("other_keys", &other_keys)
            .finish()
    }
}

impl DockerConfig {
    /// An empty config that [`save`](Self::save) writes to `path`.
    pub fn new(path: impl Into<PathBuf>) -> DockerConfig {
        DockerConfig {
            path: Some(path.into()),
            raw: Map::new(),
            env_auths: BTreeMap::new(),
            helper_path: None,
        }
    }

    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; `None` without either.
    pub fn default_path() -> Option<PathBuf> {
        default_path_from(env::var_os(crate::settings::env::DOCKER_CONFIG), dirs::home_dir())
    }

    /// Loads a config file; a missing or empty file is an empty config (not an error).
    ///
    /// The JSON is checked for the shape docker decodes (`auths`, `credsStore`, `credHelpers`);
    /// `auth` values are decoded only when a lookup needs them, so one bad entry does not break
    /// other registries.
    pub fn load(path: &Path) -> Result<DockerConfig, CredentialError> {
        let mut config = DockerConfig::new(path);
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(config),
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let parse_error = |detail: String| CredentialError::Parse {
            path: path.to_path_buf(),
            detail,
        };
        // Like Go's json.Decoder, read the first value and ignore anything after it.
        let value = match serde_json::Deserializer::from_slice(&bytes)
            .into_iter::<Value>()
            .next()
        {
            None => return Ok(config),
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(parse_error(json_error_detail(&e))),
        };
        config.raw = match value {
            Value::Object(raw) => raw,
            Value::Null => Map::new(),
            other => {
                return Err(parse_error(cannot_unmarshal_value(
                    &other,
                    "configfile.ConfigFile",
                )));
            }
        };
        check_shape(&config.raw).map_err(parse_error)?;
        Ok(config)
    }

    /// The default file ([`default_path`](Self::default_path)) with `DOCKER_AUTH_CONFIG` layered
    /// on top when it is set: what a pull should consult.
    pub fn load_default() -> Result<DockerConfig, CredentialError> {
        let config = match DockerConfig::default_path() {
            Some(path) => DockerConfig::load(&path)?,
            None => DockerConfig {
                path: None,
                raw: Map::new(),
                env_auths: BTreeMap::new(),
                helper_path: None,
            },
        };
        match env::var_os(DOCKER_AUTH_CONFIG_ENV) {
            Some(v) if !v.is_empty() => {
                let v = v.into_string().map_err(|_| CredentialError::EnvAuthConfig {
                    detail: "the value is not valid UTF-8".to_string(),
                })?;
                config.with_env_auth_config(&v)
            }
            _ => Ok(config),
        }
    }

    /// Layers a `DOCKER_AUTH_CONFIG` value (`{"auths":{"<key>":{"auth":"<base64>"}}}`, only `auth`
    /// allowed) over this config: [`get`](Self::get) answers from it first, by exact key, and
    /// falls back to helpers and the file. It is never written back.
    pub fn with_env_auth_config(mut self, json: &str) -> Result<DockerConfig, CredentialError> {
        self.env_auths =
            parse_env_auth_config(json).map_err(|detail| CredentialError::EnvAuthConfig { detail })?;
        Ok(self)
    }

    /// Searches helpers in this `PATH`-style list of directories instead of `$PATH`.
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> DockerConfig {
        self.helper_path = Some(path.into());
        self
    }

    /// The file this config is read from and written to.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The helper docker would use for `key`: `credHelpers[key]`, else `credsStore`. An empty
    /// `credHelpers` entry means the file, whatever `credsStore` says.
    pub fn helper_for(&self, key: &str) -> Option<&str> {
        if let Some(helper) = self.raw.get("credHelpers").and_then(|h| h.get(key)) {
            return helper.as_str().filter(|h| !h.is_empty());
        }
        self.creds_store()
    }

    /// The credential for a registry key (`https://index.docker.io/v1/` for Docker Hub, else
    /// `host[:port]`), in docker's order: `DOCKER_AUTH_CONFIG`, then `credHelpers[key]`, then
    /// `credsStore`, then `auths[key]` (then any `auths` key whose hostname, after stripping
    /// scheme and path, equals `key`).
    ///
    /// In an `auths` entry a `registrytoken` wins over an `identitytoken`, which wins over the
    /// user and password; `auth` (base64 `user:password`) wins over `username`/`password`. A
    /// helper answering "credentials not found" means anonymous, and a helper `Username` of
    /// `<token>` means the secret is an identity token. `Ok(None)` is anonymous.
    pub fn get(&self, key: &str) -> Result<Option<Credential>, CredentialError> {
        if key.is_empty() {
            return Ok(None);
        }
        if let Some(env) = self.env_auths.get(key) {
            return Ok(Some(Credential::Basic {
                username: env.username.clone(),
                password: env.password.clone(),
            }));
        }
        let entry = self.file_entry(key);
        if let Some(helper) = self.helper_for(key) {
            let from_helper = self.helper_get(helper, key)?;
            // docker keeps the file entry under what the helper returns; a registry token in it
            // survives and is what the daemon then uses.
            if let Some(token) = entry.and_then(|e| string_field(e, "registrytoken")) {
                return Ok(Some(Credential::RegistryToken(token.to_string())));
            }
            return Ok(from_helper);
        }
        match entry {
            Some(entry) => entry_credential(key, entry),
            None => Ok(None),
        }
    }

    /// Saves credentials for `key` as `docker login` does: through
    /// `docker-credential-<name> store` when [`helper_for`](Self::helper_for) names a helper
    /// (the file then keeps an `auths[key]` entry without secrets), else as base64 `auth` under
    /// `auths[key]`. The file is written either way; the result says where the secret went, so
    /// the CLI can warn about unencrypted storage.
    pub fn store(&mut self, key: &str, username: &str, secret: &str) -> Result<Stored, CredentialError> {
        if key.is_empty() {
            return Err(CredentialError::MissingServerUrl);
        }
        if username.is_empty() {
            return Err(CredentialError::MissingUsername);
        }
        let path = self.path.clone().ok_or(CredentialError::NoConfigPath)?;
        let stored = match self.helper_for(key).map(str::to_string) {
            Some(helper) => {
                #[derive(Serialize)]
                #[serde(rename_all = "PascalCase")]
                struct Request<'a> {
                    #[serde(rename = "ServerURL")]
                    server_url: &'a str,
                    username: &'a str,
                    secret: &'a str,
                }
                let request = Request {
                    server_url: key,
                    username,
                    secret,
                };
                let mut body = serde_json::to_vec(&request).expect("serializing strings cannot fail");
                body.push(b'\n');
                let run = self.run_helper(&helper, HelperAction::Store, &body)?;
                if !run.success {
                    return Err(run.failure(HelperAction::Store, &helper));
                }
                self.file_entry_mut(key);
                Stored::Helper(helper)
            }
            None => {
                let entry = self.file_entry_mut(key);
                entry.insert(
                    "auth".to_string(),
                    Value::String(crate::base64::encode(format!("{username}:{secret}").as_bytes())),
                );
                Stored::File(path)
            }
        };
        self.save()?;
        Ok(stored)
    }

    /// Removes the credentials for exactly `key`: `docker-credential-<name> erase` when a helper
    /// is configured for it (a helper that holds nothing is not an error), and the `auths[key]`
    /// entry of the file, which is then written. Returns whether anything was removed.
    pub fn erase(&mut self, key: &str) -> Result<bool, CredentialError> {
        if key.is_empty() {
            return Err(CredentialError::MissingServerUrl);
        }
        let mut removed = false;
        if let Some(helper) = self.helper_for(key).map(str::to_string) {
            let run = self.run_helper(&helper, HelperAction::Erase, key.as_bytes())?;
            if run.success {
                removed = true;
            } else if !run.stdout.contains(NOT_FOUND) {
                return Err(run.failure(HelperAction::Erase, &helper));
            }
        }
        let in_file = self
            .raw
            .get_mut("auths")
            .and_then(Value::as_object_mut)
            .is_some_and(|auths| auths.remove(key).is_some());
        if in_file {
            self.save()?;
        }
        Ok(removed || in_file)
    }

    /// Writes the file atomically (a temporary file in the same directory, fsync, rename) with
    /// mode 0600, creating the directory with mode 0700 if needed. Every key of the JSON is kept,
    /// though not necessarily in the original order. A symlinked config file stays a symlink:
    /// its target is replaced.
    pub fn save(&self) -> Result<(), CredentialError> {
        let path = self.path.as_deref().ok_or(CredentialError::NoConfigPath)?;
        let write_error = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CredentialError::Write { action, path, source }
        };
        // A symlink is followed (its target replaced); a device, socket, directory or FIFO is
        // never renamed over.
        let target = match crate::fsutil::resolve_output(path)? {
            crate::fsutil::OutputTarget::Replace(target) => target,
            crate::fsutil::OutputTarget::WriteThrough(fifo) => {
                return Err(CredentialError::NotRegular(fifo));
            }
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(write_error("mkdir", &dir))?;

        let mut data = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut data,
            serde_json::ser::PrettyFormatter::with_indent(b"\t"),
        );
        self.raw
            .serialize(&mut ser)
            .expect("serializing JSON values cannot fail");

        let tmp = temp_path(&dir, &target);
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(write_error("create", &tmp))?;
            // The umask cannot widen 0600, but make it exact whatever the umask is.
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(write_error("chmod", &tmp))?;
            file.write_all(&data).map_err(write_error("write", &tmp))?;
            file.sync_all().map_err(write_error("fsync", &tmp))?;
            fs::rename(&tmp, &target).map_err(write_error("rename", &target))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        // Make the rename itself durable; failing to is not worth reporting.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.raw.get("auths").and_then(Value::as_object)
    }

    fn creds_store(&self) -> Option<&str> {
        self.raw
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `auths[key]`, else the first `auths` entry (in key order) whose hostname equals `key`.
    fn file_entry(&self, key: &str) -> Option<&Value> {
        let auths = self.auths()?;
        auths.get(key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| convert_to_hostname(k) == key)
                .map(|(_, v)| v)
        })
    }

    /// `auths[key]` as an object without any secret field, created if missing.
    fn file_entry_mut(&mut self, key: &str) -> &mut Map<String, Value> {
        let auths = self
            .raw
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let Value::Object(auths) = auths else {
            unreachable!("made an object above")
        };
        let entry = auths.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(entry) = entry else {
            unreachable!("made an object above")
        };
        for field in SECRET_FIELDS {
            entry.remove(field);
        }
        entry
    }
}

/// The credential for `key` from a running process: [`DockerConfig::load_default`] then
/// [`DockerConfig::get`].
pub fn lookup(key: &str) -> Result<Option<Credential>, CredentialError> {
    DockerConfig::load_default()?.get(key)
}

/// The config key for a server name typed to `login`/`logout`, normalized as docker does:
/// Docker Hub (empty, `docker.io`, `index.docker.io`, `registry-1.docker.io`, with or without
/// scheme and path) is `https://index.docker.io/v1/`; anything else loses its scheme, user info
/// and path, so `https://registry.example.com:5000/v2/` is `registry.example.com:5000`.
pub fn registry_key(domain: &str) -> String {
    let domain = domain.trim();
    if domain.is_empty() {
        return DOCKER_HUB_KEY.to_string();
    }
    let host = convert_to_hostname(domain);
    if ["docker.io", "index.docker.io", "registry-1.docker.io"]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
    {
        DOCKER_HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

/// docker's `ConvertToHostname`: drop a `scheme://` (and user info after it), then any path.
fn convert_to_hostname(s: &str) -> &str {
    let (had_scheme, rest) = match s.split_once("://") {
        Some((_, rest)) => (true, rest),
        None => (false, s),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    match host.rsplit_once('@') {
        Some((_, h)) if had_scheme => h,
        _ => host,
    }
}

fn default_path_from(docker_config: Option<OsString>, home: Option<PathBuf>) -> Option<PathBuf> {
    match docker_config {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => home.map(|h| h.join(".docker").join("config.json")),
    }
}

/// A temporary file name next to `target`, unique within this host.
fn temp_path(dir: &Path, target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn b64(s: &str) -> String {
        crate::base64::encode(s.as_bytes())
    }

    /// A config file with `json` in a fresh directory, helpers searched only in that directory.
    fn config(json: &str) -> (TempDir, DockerConfig) {
        let (dir, path) = crate::testfs::temp_file("config.json", json);
        let config = DockerConfig::load(&path).unwrap().with_helper_path(dir.path());
        (dir, config)
    }

    /// Writes a fake `docker-credential-<name>` that records its arguments and stdin in
    /// `<name>.args` / `<name>.stdin` next to itself, then runs `body`.
    fn helper(dir: &Path, name: &str, body: &str) {
        let path = dir.join(format!("{HELPER_PREFIX}{name}"));
        let d = dir.display();
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"{d}/{name}.args\"\ncat > \"{d}/{name}.stdin\"\n{body}\n"
        );
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn recorded(dir: &Path, name: &str, what: &str) -> String {
        fs::read_to_string(dir.join(format!("{name}.{what}"))).unwrap()
    }

    fn basic(username: &str, password: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    #[test]
    fn auth_field_is_user_colon_password() {
        let (_d, c) = config(&format!(
            r#"{{"auths":{{"reg.example":{{"auth":"{}"}}}}}}"#,
            b64("user:pa:ss")
        ));
        assert_eq!(c.get("reg.example").unwrap(), basic("user", "pa:ss"));
        assert_eq!(c.get("other.example").unwrap(), None);
    }

    #[test]
    fn username_password_fields_and_auth_wins() {
        let json = format!(
            r#"{{"auths":{{
                "plain.example":{{"username":"u","password":"p","email":"e@x"}},
                "both.example":{{"auth":"{}","username":"old","password":"old"}}
            }}}}"#,
            b64("new:secret")
        );
        let (_d, c) = config(&json);
        assert_eq!(c.get("plain.example").unwrap(), basic("u", "p"));
        assert_eq!(c.get("both.example").unwrap(), basic("new", "secret"));
    }

    #[test]
    fn tokens() {
        let json = format!(
            r#"{{"auths":{{
                "id.example":{{"auth":"{}","identitytoken":"idtok"}},
                "reg.example":{{"registrytoken":"regtok"}},
                "empty.example":{{}}
            }}}}"#,
            b64("user:")
        );
        let (_d, c) = config(&json);
        assert_eq!(
            c.get("id.example").unwrap(),
            Some(Credential::IdentityToken("idtok".into()))
        );
        assert_eq!(
            c.get("reg.example").unwrap(),
            Some(Credential::RegistryToken("regtok".into()))
        );
        assert_eq!(c.get("empty.example").unwrap(), None);
    }

    #[test]
    fn trailing_nuls_are_trimmed_from_the_password() {
        let json = format!(r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#, b64("u:p\0\0"));
        let (_d, c) = config(&json);
        assert_eq!(c.get("r.example").unwrap(), basic("u", "p"));
    }

    #[test]
    fn docker_hub_key() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("hub:pw")
        );
        let (_d, c) = config(&json);
        for typed in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "",
        ] {
            assert_eq!(registry_key(typed), DOCKER_HUB_KEY, "{typed}");
        }
        assert_eq!(c.get(&registry_key("docker.io")).unwrap(), basic("hub", "pw"));
        // As in docker, the hostname fallback finds the Hub entry under its bare host.
        assert_eq!(c.get("index.docker.io").unwrap(), basic("hub", "pw"));
        assert_eq!(c.get("docker.io").unwrap(), None);
    }

    #[test]
    fn registry_key_normalizes_like_docker_login() {
        let cases = [
            ("registry.example.com:5000", "registry.example.com:5000"),
            (
                "https://registry.example.com:5000/v2/",
                "registry.example.com:5000",
            ),
            ("http://localhost:5000/v1/", "localhost:5000"),
            ("ghcr.io/", "ghcr.io"),
            ("  quay.io ", "quay.io"),
            ("https://user@reg.example", "reg.example"),
            ("https://Index.Docker.IO/v2/", DOCKER_HUB_KEY),
        ];
        for (server, want) in cases {
            assert_eq!(registry_key(server), want, "{server:?}");
        }
    }

    #[test]
    fn hostname_fallback_matches_legacy_keys() {
        let json = format!(
            r#"{{"auths":{{
                "https://registry.example.com:5000/v2/":{{"auth":"{}"}},
                "http://exact.example/v1/":{{"auth":"{}"}},
                "exact.example":{{"auth":"{}"}}
            }}}}"#,
            b64("legacy:pw"),
            b64("url:pw"),
            b64("exact:pw")
        );
        let (_d, c) = config(&json);
        assert_eq!(c.get("registry.example.com:5000").unwrap(), basic("legacy", "pw"));
        assert_eq!(c.get("exact.example").unwrap(), basic("exact", "pw"));
        assert_eq!(c.get("registry.example.com").unwrap(), None);
    }

    #[test]
    fn invalid_auth_errors() {
        let json = format!(
            r#"{{"auths":{{"bad64.example":{{"auth":"dXNlcjpw!!!"}},"nouser.example":{{"auth":"{}"}},
                "nocolon.example":{{"auth":"{}"}},"fine.example":{{"username":"u","password":"p"}}}}}}"#,
            b64(":secretpw"),
            b64("justsecretpw")
        );
        let (_d, c) = config(&json);
        let err = c.get("bad64.example").unwrap_err();
        assert_eq!(err.to_string(), "illegal base64 data at input byte 8");
        assert!(
            matches!(err, CredentialError::InvalidBase64 { ref key, offset: 8 } if key == "bad64.example")
        );
        for key in ["nouser.example", "nocolon.example"] {
            let err = c.get(key).unwrap_err();
            assert_eq!(err.to_string(), "invalid auth configuration file");
            assert!(!format!("{err:?}").contains("secretpw"));
        }
        // One bad entry does not break the others.
        assert_eq!(c.get("fine.example").unwrap(), basic("u", "p"));
    }

    #[test]
    fn missing_and_empty_files_are_empty_configs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = DockerConfig::load(&dir.path().join("nope/config.json")).unwrap();
        assert_eq!(missing.get("r.example").unwrap(), None);
        let empty = dir.path().join("empty.json");
        fs::write(&empty, " \n").unwrap();
        assert_eq!(
            DockerConfig::load(&empty).unwrap().get("r.example").unwrap(),
            None
        );
    }

    #[test]
    fn parse_errors_name_the_file_and_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let cases = [
            (
                r#"{"auths": {"#,
                "EOF while parsing an object at line 1 column 11",
            ),
            (
                r#""topsecret""#,
                "json: cannot unmarshal string into Go value of type configfile.ConfigFile",
            ),
            (
                r#"{"auths":{"r":{"auth":987654321}}}"#,
                "json: cannot unmarshal number into Go struct field ConfigFile.auths.auth of type string",
            ),
            (
                r#"{"credsStore":["topsecret"]}"#,
                "json: cannot unmarshal array into Go struct field ConfigFile.credsStore of type string",
            ),
            (
                r#"{"credHelpers":{"r":{"x":"topsecret"}}}"#,
                "json: cannot unmarshal object into Go struct field ConfigFile.credHelpers of type string",
            ),
        ];
        for (json, detail) in cases {
            fs::write(&path, json).unwrap();
            let err = DockerConfig::load(&path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("Error parsing config file ({}): {detail}", path.display())
            );
            assert!(
                !format!("{err} {err:?}").contains("topsecret") && !err.to_string().contains("987654321")
            );
        }
        // Like Go's decoder, anything after the first value is ignored.
        fs::write(&path, r#"{"credsStore":"x"} trailing"#).unwrap();
        assert_eq!(DockerConfig::load(&path).unwrap().helper_for("r"), Some("x"));
    }

    #[test]
    fn unreadable_file_is_a_load_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DockerConfig::load(dir.path()).unwrap_err();
        assert!(matches!(err, CredentialError::Read { .. }));
        assert!(err.to_string().starts_with(&format!(
            "Error loading config file: open {}: ",
            dir.path().display()
        )));
    }

    #[test]
    fn cred_helpers_win_over_creds_store() {
        let (dir, c) = config(
            r#"{"credsStore":"store","credHelpers":{"special.example":"special","file.example":""},
                "auths":{"file.example":{"auth":"ZmlsZTpwdw=="}}}"#,
        );
        helper(
            dir.path(),
            "store",
            r#"echo '{"ServerURL":"x","Username":"from-store","Secret":"s1"}'"#,
        );
        helper(
            dir.path(),
            "special",
            r#"echo '{"ServerURL":"x","Username":"from-special","Secret":"s2"}'"#,
        );
        assert_eq!(c.helper_for("special.example"), Some("special"));
        assert_eq!(c.get("special.example").unwrap(), basic("from-special", "s2"));
        assert_eq!(c.get("other.example").unwrap(), basic("from-store", "s1"));
        // An empty credHelpers entry means the file, whatever credsStore says.
        assert_eq!(c.helper_for("file.example"), None);
        assert_eq!(c.get("file.example").unwrap(), basic("file", "pw"));
    }

    #[test]
    fn helper_get_success_gets_the_key_on_stdin_only() {
        let (dir, c) = config(r#"{"credsStore":"fake"}"#);
        helper(
            dir.path(),
            "fake",
            r#"printf '{"ServerURL":"https://index.docker.io/v1/","Username":"alice","Secret":"hunter2"}\n'"#,
        );
        assert_eq!(c.get(DOCKER_HUB_KEY).unwrap(), basic("alice", "hunter2"));
        assert_eq!(recorded(dir.path(), "fake", "args"), "get\n");
        assert_eq!(recorded(dir.path(), "fake", "stdin"), DOCKER_HUB_KEY);
    }

    #[test]
    fn helper_token_username_is_an_identity_token() {
        let (dir, c) = config(r#"{"credHelpers":{"r.example":"tok"}}"#);
        helper(
            dir.path(),
            "tok",
            r#"echo '{"ServerURL":"r.example","Username":"<token>","Secret":"refresh"}'"#,
        );
        assert_eq!(
            c.get("r.example").unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
    }

    #[test]
    fn helper_not_found_answer_is_anonymous() {
        let (dir, c) = config(r#"{"credsStore":"empty"}"#);
        helper(
            dir.path(),
            "empty",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert_eq!(c.get("r.example").unwrap(), None);
    }

    #[test]
    fn helper_failure_is_dockers_text() {
        let (dir, c) = config(r#"{"credsStore":"broken"}"#);
        helper(dir.path(), "broken", "echo '  something broke '; exit 3");
        let err = c.get("r.example").unwrap_err();
        assert_eq!(
            err.to_string(),
            "error getting credentials - err: exit status 3, out: `something broke`"
        );

        helper(dir.path(), "broken", "echo 'no credentials server URL'; exit 1");
        let err = c.get("r.example").unwrap_err();
        assert_eq!(
            err.to_string(),
            "error getting credentials - err: no credentials server URL, out: `no credentials server URL`"
        );

        helper(
            dir.path(),
            "broken",
            r#"echo '{"Username": 12, "Secret": "hunter2"'"#,
        );
        let err = c.get("r.example").unwrap_err();
        assert!(matches!(err, CredentialError::HelperOutput { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[test]
    fn missing_helper_is_dockers_text() {
        let (_dir, c) = config(r#"{"credsStore":"desktop"}"#);
        let err = c.get(DOCKER_HUB_KEY).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error getting credentials - err: exec: \"docker-credential-desktop\": executable file not found in \
             $PATH, out: ``"
        );
        // A file that is not executable is not a helper either.
        let (dir, c) = config(r#"{"credsStore":"noexec"}"#);
        fs::write(dir.path().join("docker-credential-noexec"), "#!/bin/sh\n").unwrap();
        assert!(matches!(
            c.get("r.example").unwrap_err(),
            CredentialError::HelperNotFound { .. }
        ));
    }

    #[test]
    fn store_through_a_helper_sends_json_on_stdin() {
        let (dir, mut c) = config(&format!(
            r#"{{"credsStore":"fake","auths":{{"r.example":{{"auth":"{}","email":"a@b"}}}}}}"#,
            b64("old:oldpw")
        ));
        helper(dir.path(), "fake", "exit 0");
        let stored = c.store("r.example", "alice", "hunter2").unwrap();
        assert_eq!(stored, Stored::Helper("fake".into()));
        assert_eq!(recorded(dir.path(), "fake", "args"), "store\n");
        assert_eq!(
            recorded(dir.path(), "fake", "stdin"),
            "{\"ServerURL\":\"r.example\",\"Username\":\"alice\",\"Secret\":\"hunter2\"}\n"
        );
        // The file keeps the entry, without any secret, as docker leaves it.
        let text = fs::read_to_string(dir.path().join("config.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["auths"]["r.example"], serde_json::json!({"email": "a@b"}));
        assert!(!text.contains("hunter2") && !text.contains(&b64("old:oldpw")));
    }

    #[test]
    fn store_failure_reports_the_helper_output() {
        let (dir, mut c) = config(r#"{"credsStore":"fake"}"#);
        helper(dir.path(), "fake", "echo 'no credentials username'; exit 1");
        let err = c.store("r.example", "alice", "hunter2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "error storing credentials - err: no credentials username, out: `no credentials username`"
        );
        assert!(matches!(
            c.store("", "a", "b"),
            Err(CredentialError::MissingServerUrl)
        ));
        assert!(matches!(
            c.store("r", "", "b"),
            Err(CredentialError::MissingUsername)
        ));
    }

    #[test]
    fn erase_through_a_helper() {
        let (dir, mut c) = config(r#"{"credHelpers":{"r.example":"fake"},"auths":{"r.example":{}}}"#);
        helper(dir.path(), "fake", "exit 0");
        assert!(c.erase("r.example").unwrap());
        assert_eq!(recorded(dir.path(), "fake", "args"), "erase\n");
        assert_eq!(recorded(dir.path(), "fake", "stdin"), "r.example");
        let reread = DockerConfig::load(&dir.path().join("config.json")).unwrap();
        assert_eq!(reread.auths().map(Map::len), Some(0));

        helper(
            dir.path(),
            "fake",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert!(!c.erase("r.example").unwrap());
        helper(dir.path(), "fake", "echo 'locked'; exit 1");
        assert_eq!(
            c.erase("r.example").unwrap_err().to_string(),
            "error erasing credentials - err: exit status 1, out: `locked`"
        );
    }

    #[test]
    fn store_in_file_keeps_everything_else_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/config.json");
        let mut c = DockerConfig::new(&path);
        assert_eq!(
            c.store("r.example", "alice", "hunter2:x").unwrap(),
            Stored::File(path.clone())
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let original = r#"{
            "auths": {"other.example": {"auth": "b3RoZXI6cHc=", "email": "x@y"}, "r.example": {"username": "u", "password": "p", "email": "e"}},
            "HttpHeaders": {"X-Meta-Foo": "bar"},
            "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
            "credHelpers": {"gcr.io": "gcloud"},
            "experimental": "enabled",
            "plugins": {"x": {"nested": [1, 2, {"deep": true}]}}
        }"#;
        fs::write(&path, original).unwrap();
        let mut c = DockerConfig::load(&path).unwrap();
        assert_eq!(
            c.store("r.example", "alice", "hunter2").unwrap(),
            Stored::File(path.clone())
        );
        assert_eq!(mode(&path), 0o600);

        let mut expected: Value = serde_json::from_str(original).unwrap();
        expected["auths"]["r.example"] = serde_json::json!({"auth": b64("alice:hunter2"), "email": "e"});
        let written: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written, expected);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        let reread = DockerConfig::load(&path).unwrap();
        assert_eq!(reread.get("r.example").unwrap(), basic("alice", "hunter2"));
        assert_eq!(reread.get("other.example").unwrap(), basic("other", "pw"));
    }

    #[test]
    fn erase_from_file() {
        let (dir, mut c) = config(&format!(
            r#"{{"auths":{{"r.example":{{"auth":"{}"}}}},"x":1}}"#,
            b64("u:p")
        ));
        assert!(c.erase("r.example").unwrap());
        assert!(!c.erase("r.example").unwrap());
        let reread = DockerConfig::load(&dir.path().join("config.json")).unwrap();
        assert_eq!(reread.get("r.example").unwrap(), None);
        assert_eq!(reread.raw.get("x"), Some(&Value::from(1)));
    }

    #[test]
    fn save_through_a_symlink_replaces_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/docker.json");
        fs::create_dir_all(real.parent().unwrap()).unwrap();
        fs::write(&real, "{}").unwrap();
        let link = dir.path().join("config.json");
        std::os::unix::fs::symlink("dotfiles/docker.json", &link).unwrap();
        let mut c = DockerConfig::load(&link).unwrap();
        c.store("r.example", "u", "p").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(
            DockerConfig::load(&real).unwrap().get("r.example").unwrap(),
            basic("u", "p")
        );
    }

    #[test]
    fn save_never_renames_over_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("config.json");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let mut c = DockerConfig::load(&link).unwrap();
        let err = c.store("r.example", "u", "p").unwrap_err();
        assert!(matches!(err, CredentialError::Output(_)), "{err}");
        assert!(err.to_string().contains("got a device"), "{err}");
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("/dev/null"));
    }

    #[test]
    fn env_auth_config_comes_first_by_exact_key() {
        let (_d, c) = config(&format!(
            r#"{{"auths":{{"r.example":{{"auth":"{}"}},"f.example":{{"auth":"{}"}}}}}}"#,
            b64("file:pw"),
            b64("file:pw")
        ));
        let env = format!(
            r#"{{"auths":{{"r.example":{{"auth":"{}"}},"https://h.example/v2/":{{"auth":"{}"}}}}}}"#,
            b64("env:pw"),
            b64("h:pw")
        );
        let c = c.with_env_auth_config(&env).unwrap();
        assert_eq!(c.get("r.example").unwrap(), basic("env", "pw"));
        assert_eq!(c.get("f.example").unwrap(), basic("file", "pw"));
        assert_eq!(c.get("h.example").unwrap(), None);
    }

    #[test]
    fn env_auth_config_errors() {
        let cases = [
            (
                r#"{"auths":{"r":{"username":"u"}}}"#,
                "json: unknown field \"username\"",
            ),
            (
                r#"{"auths":{}, "credsStore":"x"}"#,
                "json: unknown field \"credsStore\"",
            ),
            (
                r#"{"auths":{"r":{}}}"#,
                "DOCKER_AUTH_CONFIG environment variable is missing key `auth` for r",
            ),
            (
                r#"{"auths":{"r":{"auth":"OnRvcHNlY3JldA=="}}}"#,
                "invalid auth configuration file",
            ),
            (
                r#"{"auths":{}} {"auths":{}}"#,
                "DOCKER_AUTH_CONFIG does not support more than one JSON object",
            ),
        ];
        for (json, detail) in cases {
            let err = DockerConfig::new("/nonexistent")
                .with_env_auth_config(json)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("Failed to create credential store from DOCKER_AUTH_CONFIG: {detail}")
            );
            assert!(!err.to_string().contains("topsecret"));
        }
    }

    #[test]
    fn default_path_prefers_docker_config() {
        let home = Some(PathBuf::from("/home/u"));
        assert_eq!(
            default_path_from(Some("/cfg".into()), home.clone()),
            Some(PathBuf::from("/cfg/config.json"))
        );
        assert_eq!(
            default_path_from(Some("".into()), home.clone()),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(
            default_path_from(None, home),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(default_path_from(None, None), None);
    }

    #[test]
    fn save_without_a_path_is_an_error() {
        let c = DockerConfig {
            path: None,
            raw: Map::new(),
            env_auths: BTreeMap::new(),
            helper_path: None,
        };
        assert!(matches!(c.save(), Err(CredentialError::NoConfigPath)));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let json = format!(
            r#"{{"auths":{{"r.example":{{"auth":"{}","identitytoken":"idtok-secret","registrytoken":"regtok-secret",
                "password":"pw-secret"}}}},"credsStore":"desktop","HttpHeaders":{{"Authorization":"hdr-secret"}}}}"#,
            b64("user:auth-secret")
        );
        let (_d, c) = config(&json);
        let c = c
            .with_env_auth_config(&format!(
                r#"{{"auths":{{"e":{{"auth":"{}"}}}}}}"#,
                b64("eu:env-secret")
            ))
            .unwrap();
        let rendered = format!(
            "{c:?} {:?} {:?} {:?}",
            basic("user", "auth-secret"),
            Credential::IdentityToken("idtok-secret".into()),
            Credential::RegistryToken("regtok-secret".into())
        );
        for secret in [
            "auth-secret",
            "idtok-secret",
            "regtok-secret",
            "pw-secret",
            "hdr-secret",
            "env-secret",
        ] {
            assert!(!rendered.contains(secret), "{secret} in {rendered}");
        }
        assert!(!rendered.contains(&b64("user:auth-secret")));
        assert!(rendered.contains("r.example") && rendered.contains("desktop"));
    }
}
