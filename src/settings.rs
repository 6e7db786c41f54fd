//! One settings value for every front end: built once from what the caller overrides (the
//! command line's flags, a server's request), rpull's config file and the environment, and
//! turned into the options of a pull or of a registry client. Every environment variable rpull
//! reads is named in [`env`]; nothing below this module reads the environment for settings.
//!
//! The precedence is docker's: an override wins over the config file, which wins over the
//! defaults; `RPULL_CERTS_D` wins over the config file's `certs-d`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, Config, ConfigError};
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
    /// An absolute bound on a layer's uncompressed size, in bytes.
    pub const MAX_LAYER_BYTES: &str = "RPULL_MAX_LAYER_BYTES";
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
}

impl Default for RangeSettings {
    fn default() -> Self {
        RangeSettings {
            threshold: 64 << 20,
            chunk_size: 16 << 20,
            connections_per_blob: 4,
            max_connections: 12,
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
    /// `--insecure-registry`, added to the config file's.
    pub insecure_registries: Vec<String>,
    /// `--registry-mirror`, replacing the config file's `registry-mirrors` when given.
    pub registry_mirrors: Vec<String>,
    /// `--max-concurrent-downloads`.
    pub max_concurrent_downloads: Option<u32>,
    /// `--retry` / `--retry-delay`.
    pub retry: Option<RetryPolicy>,
    /// The read timeout (`RPULL_READ_TIMEOUT` through clap).
    pub read_timeout: Option<Duration>,
    /// `--parallel-download-threshold`.
    pub parallel_download_threshold: Option<u64>,
    /// `--parallel-chunk-size`.
    pub parallel_chunk_size: Option<u64>,
    /// `--connections-per-blob`.
    pub connections_per_blob: Option<u32>,
    /// `--max-connections`.
    pub max_connections: Option<u32>,
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
}

impl Settings {
    /// Builds the settings from `overrides`, the config file and the process environment.
    pub fn load(overrides: &Overrides) -> Result<Settings, SettingsError> {
        let config = overrides.config.clone().or_else(|| {
            std::env::var_os(env::CONFIG)
                .filter(|c| !c.is_empty())
                .map(PathBuf::from)
        });
        let file = Config::load(config.as_deref())?;
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
        file: &Config,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Settings, SettingsError> {
        let var = |name: &str| {
            env(name)
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.trim().is_empty())
        };
        let mut registry = RegistryOptions::default();
        for i in overrides
            .insecure_registries
            .iter()
            .chain(&file.insecure_registries)
        {
            registry.insecure_registries.push(config::normalize_insecure(i)?);
        }
        if let Some(dir) = env(env::CERTS_D).filter(|d| !d.is_empty()) {
            registry.certs_d = PathBuf::from(dir);
        } else if let Some(dir) = &file.certs_d {
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

        let hub_mirrors = if overrides.registry_mirrors.is_empty() {
            &file.registry_mirrors
        } else {
            &overrides.registry_mirrors
        };
        let hub_mirrors = hub_mirrors
            .iter()
            .map(|m| config::validate_mirror(m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut mirrors = HashMap::new();
        for (host, urls) in &file.mirrors {
            let urls = urls
                .iter()
                .map(|m| config::validate_mirror(m))
                .collect::<Result<Vec<_>, _>>()?;
            mirrors.insert(host.clone(), urls);
        }
        let max_concurrent_downloads = overrides
            .max_concurrent_downloads
            .or(file.max_concurrent_downloads)
            .map(|n| n.max(1) as usize)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_DOWNLOADS);
        Ok(Settings {
            root,
            registry,
            hub_mirrors,
            mirrors,
            max_concurrent_downloads,
            retry: overrides.retry.clone().unwrap_or_default(),
            max_layer_bytes: var(env::MAX_LAYER_BYTES).and_then(|v| v.trim().parse().ok()),
            ranges: range_settings(overrides, file),
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

/// The flags over the config file over the defaults.
fn range_settings(overrides: &Overrides, file: &Config) -> RangeSettings {
    let d = RangeSettings::default();
    let count = |o: Option<u32>, f: Option<u32>, d: usize| o.or(f).map_or(d, |n| n.max(1) as usize);
    RangeSettings {
        threshold: overrides
            .parallel_download_threshold
            .or(file.parallel_download_threshold)
            .unwrap_or(d.threshold),
        chunk_size: overrides
            .parallel_chunk_size
            .or(file.parallel_chunk_size)
            .map_or(d.chunk_size, |n| n.max(1)),
        connections_per_blob: count(
            overrides.connections_per_blob,
            file.connections_per_blob,
            d.connections_per_blob,
        ),
        max_connections: count(overrides.max_connections, file.max_connections, d.max_connections),
    }
}

/// The store's default place: `rpull` under the user's data dir (e.g. `~/.local/share/rpull`).
pub fn default_root() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("rpull"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(overrides: &Overrides, file: &Config, vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        Settings::from_parts(PathBuf::from("/store"), overrides, file, &|n| {
            vars.get(n).cloned()
        })
        .expect("settings")
    }

    #[test]
    fn defaults_are_dockers() {
        let s = build(&Overrides::default(), &Config::default(), &[]);
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
        let s = build(&Overrides::default(), &Config::default(), &[]);
        assert_eq!(
            s.ranges,
            RangeSettings {
                threshold: 64 << 20,
                chunk_size: 16 << 20,
                connections_per_blob: 4,
                max_connections: 12
            }
        );
        let file = Config {
            parallel_download_threshold: Some(1000),
            parallel_chunk_size: Some(0),
            connections_per_blob: Some(8),
            max_connections: Some(20),
            ..Config::default()
        };
        let overrides = Overrides {
            connections_per_blob: Some(2),
            max_connections: Some(0),
            ..Overrides::default()
        };
        let s = build(&overrides, &file, &[]);
        assert_eq!(
            s.ranges,
            RangeSettings {
                threshold: 1000,
                chunk_size: 1,
                connections_per_blob: 2,
                max_connections: 1
            }
        );
    }

    #[test]
    fn flags_win_over_the_file_and_add_to_its_lists() {
        let file = Config {
            insecure_registries: vec!["file.example:5000".into()],
            registry_mirrors: vec!["https://file-mirror.example".into()],
            max_concurrent_downloads: Some(6),
            certs_d: Some(PathBuf::from("/file/certs.d")),
            ..Config::default()
        };
        let overrides = Overrides {
            insecure_registries: vec!["flag.example".into()],
            registry_mirrors: vec!["https://flag-mirror.example".into()],
            max_concurrent_downloads: Some(2),
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
    fn environment_is_read_here() {
        let file = Config {
            certs_d: Some(PathBuf::from("/file/certs.d")),
            ..Config::default()
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
            insecure_registries: vec!["ftp://x.example".into()],
            ..Overrides::default()
        };
        let vars = |_: &str| None;
        let err = Settings::from_parts(PathBuf::from("/s"), &overrides, &Config::default(), &vars)
            .expect_err("refused");
        assert!(err.to_string().contains("should not contain '://'"), "{err}");
    }
}
