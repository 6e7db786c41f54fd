//! One settings value for every front end: built once from what the caller overrides (the
//! command line's flags, a server's request), rpull's config file and the environment, and
//! turned into the options of a pull or of a registry client. Every environment variable rpull
//! reads is named in [`env`]; nothing below this module reads the environment for settings.
//!
//! The precedence is docker's: an override wins over the environment, which wins over the
//! config file, which wins over the defaults (of the file's settings, the environment gives
//! `certs-d` as `RPULL_CERTS_D`). Each source is a [`Layer`], laid over the next by
//! [`Layer::over`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, ConfigError, Layer};
use crate::registry::{ProxySettings, RegistryOptions};

/// How blob downloads are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per blob, the first included (docker: 5).
    pub attempts: u32,
    /// Fixed delay between attempts; `None` is docker's growing delay of 5 s × attempt.
    pub delay: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            delay: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.delay.unwrap_or(Duration::from_secs(5 * u64::from(attempt)))
    }
}

/// The names of the environment variables rpull reads.
pub mod env {
    /// The store directory (same as `--root`).
    pub const ROOT: &str = "RPULL_ROOT";
    /// rpull's config file (same as `--config`).
    pub const CONFIG: &str = "RPULL_CONFIG";
    /// docker's `certs.d` directory, instead of `/etc/docker/certs.d` (rootless setups, tests).
    pub const CERTS_D: &str = "RPULL_CERTS_D";
    /// `1` stops treating loopback hosts as insecure-allowed (tests of verified TLS).
    pub const NO_LOOPBACK_INSECURE: &str = "RPULL_NO_LOOPBACK_INSECURE";
    /// How long a registry may send nothing before a request counts as failed (tests).
    pub const READ_TIMEOUT: &str = "RPULL_READ_TIMEOUT";
    /// The NATS URL of `rpull agent` and `rpull serve` (same as `--nats`), which keeps a
    /// password in it out of the process list.
    pub const NATS_URL: &str = "RPULL_NATS_URL";
    /// How long a client of the fleet API may take to send a request's head, then its body
    /// (tests; 30 s by default).
    pub const HTTP_READ_TIMEOUT: &str = "RPULL_HTTP_READ_TIMEOUT";
    /// An absolute bound on a layer's uncompressed size, in bytes.
    pub const MAX_LAYER_BYTES: &str = "RPULL_MAX_LAYER_BYTES";
    /// Bytes a second at which one connection is judged fast enough that a ranged download
    /// opens no more (default 64000000).
    pub const FAST_CONNECTION: &str = "RPULL_FAST_CONNECTION";
    /// docker's default `--platform`.
    pub const DEFAULT_PLATFORM: &str = "DOCKER_DEFAULT_PLATFORM";
    /// docker's content trust switch.
    pub const CONTENT_TRUST: &str = "DOCKER_CONTENT_TRUST";
    /// docker's config directory (holding `config.json`).
    pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
    /// An inline `{"auths":{…}}`, consulted before docker's config file.
    pub const DOCKER_AUTH_CONFIG: &str = "DOCKER_AUTH_CONFIG";
    /// podman's `--authfile`.
    pub const REGISTRY_AUTH_FILE: &str = "REGISTRY_AUTH_FILE";
    /// Proxy variables, read upper case first, then lower case, as Go does.
    pub const HTTP_PROXY: &str = "HTTP_PROXY";
    /// See [`HTTP_PROXY`].
    pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
    /// See [`HTTP_PROXY`].
    pub const NO_PROXY: &str = "NO_PROXY";
}

/// Layers downloaded at once unless the flags or the config file say otherwise (docker's 3).
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;

/// How one large blob is fetched as several concurrent `Range` requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSettings {
    /// Blobs of at least this many bytes are fetched in ranges (default 64 MiB).
    pub threshold: u64,
    /// The size of one range (default 16 MiB).
    pub chunk_size: u64,
    /// Concurrent ranges of one blob (default 4; 1 turns ranged downloads off).
    pub connections_per_blob: usize,
    /// Open blob connections of one pull in all, whole layers and ranges (default 12);
    /// `max-concurrent-downloads` still says how many layers are in flight.
    pub max_connections: usize,
    /// Bytes a second of the first connection at which the others are not opened: on
    /// loopback or a fast link they only add CPU and buffers (default 64 MB/s,
    /// `RPULL_FAST_CONNECTION`).
    pub fast_connection: u64,
}

impl Default for RangeSettings {
    fn default() -> Self {
        RangeSettings {
            threshold: 64 << 20,
            chunk_size: 16 << 20,
            connections_per_blob: 4,
            max_connections: 12,
            fast_connection: 64_000_000,
        }
    }
}

/// What a caller sets over the config file: the command line's flags, or a server's own.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The store directory (`--root`, `RPULL_ROOT` through clap).
    pub root: Option<PathBuf>,
    /// rpull's config file (`--config`, `RPULL_CONFIG` through clap).
    pub config: Option<PathBuf>,
    /// `--retry` / `--retry-delay`.
    pub retry: Option<RetryPolicy>,
    /// The read timeout (`RPULL_READ_TIMEOUT` through clap).
    pub read_timeout: Option<Duration>,
    /// The settings the config file also has, laid over it with [`Layer::over`]:
    /// `--insecure-registry` (added to the file's), `--registry-mirror` (replacing the file's
    /// `registry-mirrors`), `--max-concurrent-downloads`, `--parallel-download-threshold`,
    /// `--parallel-chunk-size`, `--connections-per-blob`, `--max-connections`.
    pub layer: Layer,
}

/// Why the settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file, a mirror or an insecure-registry entry is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Neither `--root` nor a data directory.
    #[error("cannot find a data directory for the store: set --root or RPULL_ROOT")]
    NoRoot,
}

/// Everything that decides how rpull reaches registries and where it stores images; the same
/// value for the CLI, the CRI service and the fleet agent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store directory.
    pub root: PathBuf,
    /// How registries are reached (TLS, insecure registries, proxies, timeouts).
    pub registry: RegistryOptions,
    /// Mirrors of Docker Hub, tried in order before it.
    pub hub_mirrors: Vec<url::Url>,
    /// Mirrors of other registries, by registry host (`host[:port]` as in references).
    pub mirrors: HashMap<String, Vec<url::Url>>,
    /// Layers downloaded at once per image.
    pub max_concurrent_downloads: usize,
    /// How failed blob downloads are retried.
    pub retry: RetryPolicy,
    /// An absolute bound on a layer's uncompressed size (`RPULL_MAX_LAYER_BYTES`).
    pub max_layer_bytes: Option<u64>,
    /// How large blobs are fetched in concurrent ranges.
    pub ranges: RangeSettings,
    /// The key that signs and checks fleet API tokens (`--signing-key-file`, else the config
    /// file's `signing-key-file`).
    pub signing_key_file: Option<PathBuf>,
    /// How the fleet agents and the server reach NATS (TLS and nkey files).
    pub nats: NatsSettings,
}

/// How the fleet's processes reach NATS, beyond the URL (`nats://` or `tls://`, which may
/// carry `user:password@` or `token@`): the flags `--nats-ca`, `--nats-cert`, `--nats-key` and
/// `--nats-nkey-file`, else the config file's keys of those names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSettings {
    /// CA certificates (PEM) the server's certificate must chain to, instead of the system's;
    /// TLS is then required.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM); TLS is then required.
    pub client_cert: Option<ClientCert>,
    /// The file holding the user's nkey seed, for servers with nkey users.
    pub nkey_file: Option<PathBuf>,
}

/// The NATS client certificate the settings name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// A certificate and its key.
    Pair(PathBuf, PathBuf),
    /// A certificate without its key or a key without its certificate (`what` is the one
    /// given): the fleet's commands refuse it when they connect; nothing else reads it.
    Half {
        /// `certificate` or `key`.
        what: &'static str,
        /// Its file.
        path: PathBuf,
    },
}

impl Settings {
    /// Builds the settings from `overrides`, the config file and the process environment.
    pub fn load(overrides: &Overrides) -> Result<Settings, SettingsError> {
        let config = overrides.config.clone().or_else(|| {
            std::env::var_os(env::CONFIG)
                .filter(|c| !c.is_empty())
                .map(PathBuf::from)
        });
        let file = Layer::load(config.as_deref())?;
        let root = overrides
            .root
            .clone()
            .or_else(default_root)
            .ok_or(SettingsError::NoRoot)?;
        Settings::from_parts(root, overrides, &file, &|name| std::env::var_os(name))
    }

    /// Builds the settings from their sources, `env` standing for the environment.
    pub fn from_parts(
        root: PathBuf,
        overrides: &Overrides,
        file: &Layer,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Settings, SettingsError> {
        let var = |name: &str| {
            env(name)
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.trim().is_empty())
        };
        let environment = Layer {
            certs_d: env(env::CERTS_D).filter(|d| !d.is_empty()).map(PathBuf::from),
            ..Layer::default()
        };
        let layer = overrides.layer.over(&environment.over(file));

        let mut registry = RegistryOptions::default();
        for i in &layer.insecure_registries {
            registry.insecure_registries.push(config::normalize_insecure(i)?);
        }
        if let Some(dir) = &layer.certs_d {
            registry.certs_d = dir.clone();
        }
        if var(env::NO_LOOPBACK_INSECURE).as_deref() == Some("1") {
            registry.loopback_insecure = false;
        }
        if let Some(t) = overrides.read_timeout {
            registry.read_timeout = t;
        }
        let proxy_var = |name: &str| var(name).or_else(|| var(&name.to_ascii_lowercase()));
        registry.proxy = ProxySettings {
            http: proxy_var(env::HTTP_PROXY),
            https: proxy_var(env::HTTPS_PROXY),
            no_proxy: proxy_var(env::NO_PROXY),
        };

        let urls = |list: &[String]| {
            list.iter()
                .map(|m| config::validate_mirror(m))
                .collect::<Result<Vec<_>, _>>()
        };
        let hub_mirrors = urls(&layer.registry_mirrors)?;
        let mut mirrors = HashMap::new();
        for (host, list) in &layer.mirrors {
            mirrors.insert(host.clone(), urls(list)?);
        }
        let count = |n: Option<u32>, default: usize| n.map_or(default, |n| n.max(1) as usize);
        let d = RangeSettings::default();
        Ok(Settings {
            root,
            registry,
            hub_mirrors,
            mirrors,
            max_concurrent_downloads: count(layer.max_concurrent_downloads, DEFAULT_MAX_CONCURRENT_DOWNLOADS),
            retry: overrides.retry.clone().unwrap_or_default(),
            max_layer_bytes: var(env::MAX_LAYER_BYTES).and_then(|v| v.trim().parse().ok()),
            signing_key_file: layer.signing_key_file.clone(),
            nats: NatsSettings {
                ca: layer.nats_ca.clone(),
                client_cert: match (&layer.nats_cert, &layer.nats_key) {
                    (Some(cert), Some(key)) => Some(ClientCert::Pair(cert.clone(), key.clone())),
                    (Some(path), None) => Some(ClientCert::Half {
                        what: "certificate",
                        path: path.clone(),
                    }),
                    (None, Some(path)) => Some(ClientCert::Half {
                        what: "key",
                        path: path.clone(),
                    }),
                    (None, None) => None,
                },
                nkey_file: layer.nats_nkey_file.clone(),
            },
            ranges: RangeSettings {
                threshold: layer.parallel_download_threshold.unwrap_or(d.threshold),
                chunk_size: layer.parallel_chunk_size.map_or(d.chunk_size, |n| n.max(1)),
                connections_per_blob: count(layer.connections_per_blob, d.connections_per_blob),
                max_connections: count(layer.max_connections, d.max_connections),
                fast_connection: var(env::FAST_CONNECTION)
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(d.fast_connection),
            },
        })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Allows plain HTTP and unverified TLS for `host` (podman's `--tls-verify=false`).
    pub fn allow_insecure(&mut self, host: &str) {
        self.registry.insecure_registries.push(host.to_string());
    }

    /// Reads `host`'s certificates from `dir` instead of its certs.d directory (`--cert-dir`).
    pub fn use_cert_dir(&mut self, host: &str, dir: &Path) {
        self.registry
            .cert_dirs
            .insert(host.to_string(), dir.to_path_buf());
    }
}

/// The store's default place: `rpull` under the user's data dir (e.g. `~/.local/share/rpull`).
pub fn default_root() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("rpull"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(overrides: &Overrides, file: &Layer, vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        Settings::from_parts(PathBuf::from("/store"), overrides, file, &|n| {
            vars.get(n).cloned()
        })
        .expect("settings")
    }

    #[test]
    fn defaults_are_dockers() {
        let s = build(&Overrides::default(), &Layer::default(), &[]);
        assert_eq!(s.max_concurrent_downloads, 3);
        assert_eq!(s.retry.attempts, 5);
        assert_eq!(s.registry.certs_d, PathBuf::from("/etc/docker/certs.d"));
        assert!(s.registry.loopback_insecure);
        assert!(s.registry.insecure_registries.is_empty());
        assert_eq!(s.max_layer_bytes, None);
        assert_eq!(s.registry.proxy, ProxySettings::default());
    }

    #[test]
    fn range_settings_come_from_flags_over_the_file_over_the_defaults() {
        let s = build(&Overrides::default(), &Layer::default(), &[]);
        assert_eq!(
            s.ranges,
            RangeSettings {
                threshold: 64 << 20,
                chunk_size: 16 << 20,
                connections_per_blob: 4,
                max_connections: 12,
                fast_connection: 64_000_000
            }
        );
        let file = Layer {
            parallel_download_threshold: Some(1000),
            parallel_chunk_size: Some(0),
            connections_per_blob: Some(8),
            max_connections: Some(20),
            ..Layer::default()
        };
        let overrides = Overrides {
            layer: Layer {
                connections_per_blob: Some(2),
                max_connections: Some(0),
                ..Layer::default()
            },
            ..Overrides::default()
        };
        let s = build(&overrides, &file, &[]);
        assert_eq!(
            s.ranges,
            RangeSettings {
                threshold: 1000,
                chunk_size: 1,
                connections_per_blob: 2,
                max_connections: 1,
                fast_connection: 64_000_000
            }
        );
    }

    #[test]
    fn flags_win_over_the_file_and_add_to_its_lists() {
        let file = Layer {
            insecure_registries: vec!["file.example:5000".into()],
            registry_mirrors: vec!["https://file-mirror.example".into()],
            max_concurrent_downloads: Some(6),
            certs_d: Some(PathBuf::from("/file/certs.d")),
            ..Layer::default()
        };
        let overrides = Overrides {
            layer: Layer {
                insecure_registries: vec!["flag.example".into()],
                registry_mirrors: vec!["https://flag-mirror.example".into()],
                max_concurrent_downloads: Some(2),
                ..Layer::default()
            },
            ..Overrides::default()
        };
        let s = build(&overrides, &file, &[]);
        assert_eq!(
            s.registry.insecure_registries,
            ["flag.example", "file.example:5000"]
        );
        assert_eq!(s.hub_mirrors.len(), 1);
        assert_eq!(s.hub_mirrors[0].as_str(), "https://flag-mirror.example/");
        assert_eq!(s.max_concurrent_downloads, 2);
        assert_eq!(s.registry.certs_d, PathBuf::from("/file/certs.d"));
        let s = build(&Overrides::default(), &file, &[]);
        assert_eq!(s.max_concurrent_downloads, 6);
        assert_eq!(s.hub_mirrors[0].as_str(), "https://file-mirror.example/");
    }

    #[test]
    fn nats_files_come_from_flags_over_the_file() {
        let file = Layer {
            nats_ca: Some(PathBuf::from("/file/ca.pem")),
            nats_key: Some(PathBuf::from("/file/client.key")),
            ..Layer::default()
        };
        let mut flags = Overrides::default();
        flags.layer.nats_cert = Some(PathBuf::from("/flag/client.pem"));
        flags.layer.nats_nkey_file = Some(PathBuf::from("/flag/user.nk"));
        let s = build(&flags, &file, &[]);
        assert_eq!(
            s.nats,
            NatsSettings {
                ca: Some(PathBuf::from("/file/ca.pem")),
                client_cert: Some(ClientCert::Pair(
                    PathBuf::from("/flag/client.pem"),
                    PathBuf::from("/file/client.key")
                )),
                nkey_file: Some(PathBuf::from("/flag/user.nk")),
            }
        );
        // Half a client pair is the fleet's business (see fleet::bus): a pull does not mind.
        let half = Layer {
            nats_cert: Some(PathBuf::from("/c.pem")),
            ..Layer::default()
        };
        assert!(Settings::from_parts(PathBuf::from("/r"), &Overrides::default(), &half, &|_| None).is_ok());
    }

    #[test]
    fn environment_is_read_here() {
        let file = Layer {
            certs_d: Some(PathBuf::from("/file/certs.d")),
            ..Layer::default()
        };
        let s = build(
            &Overrides::default(),
            &file,
            &[
                (env::CERTS_D, "/env/certs.d"),
                (env::NO_LOOPBACK_INSECURE, "1"),
                (env::MAX_LAYER_BYTES, "1000"),
                ("https_proxy", "http://proxy.example:3128"),
                (env::NO_PROXY, "internal.example"),
            ],
        );
        assert_eq!(s.registry.certs_d, PathBuf::from("/env/certs.d"));
        assert!(!s.registry.loopback_insecure);
        assert_eq!(s.max_layer_bytes, Some(1000));
        assert_eq!(
            s.registry.proxy.https.as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(s.registry.proxy.http, None);
        assert_eq!(s.registry.proxy.no_proxy.as_deref(), Some("internal.example"));
    }

    #[test]
    fn bad_entries_are_refused() {
        let overrides = Overrides {
            layer: Layer {
                insecure_registries: vec!["ftp://x.example".into()],
                ..Layer::default()
            },
            ..Overrides::default()
        };
        let vars = |_: &str| None;
        let err = Settings::from_parts(PathBuf::from("/s"), &overrides, &Layer::default(), &vars)
            .expect_err("refused");
        assert!(err.to_string().contains("should not contain '://'"), "{err}");
    }
}
