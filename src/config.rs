//! rpull's own configuration file: JSON at `<config dir>/rpull/config.json` (e.g.
//! `~/.config/rpull/config.json`), or the file named by `--config` / `RPULL_CONFIG`. It holds
//! what docker keeps in `daemon.json`: insecure registries, Docker Hub mirrors, per-registry
//! mirrors (which docker lacks), the download concurrency, the `certs.d` directory, how
//! large blobs are fetched as concurrent ranges ([`crate::settings::RangeSettings`]), and the key
//! file signing the fleet API's tokens (`rpull serve`). Command-line flags win over it.
//!
//! ```json
//! {
//!   "insecure-registries": ["registry.internal:5000"],
//!   "registry-mirrors": ["https://mirror.example.com"],
//!   "mirrors": { "registry.internal:5000": ["http://cache.internal:5000"] },
//!   "max-concurrent-downloads": 6,
//!   "certs-d": "/etc/docker/certs.d",
//!   "parallel-download-threshold": 67108864,
//!   "parallel-chunk-size": 16777216,
//!   "connections-per-blob": 4,
//!   "max-connections": 12,
//!   "signing-key-file": "/etc/rpull/signing.key"
//! }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (a missing default file is not an error).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not the JSON rpull expects.
    #[error("cannot parse config file {}: {detail}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A mirror URL docker would refuse.
    #[error("invalid mirror {url:?}: {detail}")]
    Mirror {
        /// The URL as written.
        url: String,
        /// Why.
        detail: String,
    },
    /// An insecure-registry entry docker would refuse.
    #[error("insecure registry {0} should not contain '://'")]
    Insecure(String),
}

/// The parsed file; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Hosts (`host[:port]`) allowed plain HTTP and unverified TLS.
    pub insecure_registries: Vec<String>,
    /// Mirrors of Docker Hub, tried in order before it.
    pub registry_mirrors: Vec<String>,
    /// Mirrors of other registries, by registry host.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Layers downloaded at once.
    pub max_concurrent_downloads: Option<u32>,
    /// The `certs.d` directory (default `/etc/docker/certs.d`).
    pub certs_d: Option<PathBuf>,
    /// The file whose key signs the fleet API's tokens (`rpull serve --signing-key-file`).
    pub signing_key_file: Option<PathBuf>,
    /// Blobs of at least this many bytes are fetched as several concurrent ranges.
    pub parallel_download_threshold: Option<u64>,
    /// The size of one range of such a download, in bytes.
    pub parallel_chunk_size: Option<u64>,
    /// Concurrent ranges of one blob.
    pub connections_per_blob: Option<u32>,
    /// Open blob connections of one pull in all (ranges and whole layers).
    pub max_connections: Option<u32>,
}

impl Config {
    /// The default location: `<config dir>/rpull/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("rpull").join("config.json"))
    }

    /// Loads `explicit` (which must exist) or, without one, the default file if it exists.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match Config::default_path() {
                Some(p) => (p, false),
                None => return Ok(Config::default()),
            },
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let config: Config = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        for m in config
            .registry_mirrors
            .iter()
            .chain(config.mirrors.values().flatten())
        {
            validate_mirror(m)?;
        }
        for i in &config.insecure_registries {
            normalize_insecure(i)?;
        }
        Ok(config)
    }
}

/// Checks a mirror URL as docker does (`http`/`https`, no query, fragment or user info) and
/// returns it with a trailing `/`.
pub fn validate_mirror(raw: &str) -> Result<url::Url, ConfigError> {
    let bad = |detail: &str| ConfigError::Mirror {
        url: raw.to_string(),
        detail: detail.to_string(),
    };
    let mut url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("mirror must use http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("mirror must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("mirror must not contain credentials"));
    }
    if url.host_str().is_none() {
        return Err(bad("mirror has no host"));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// An insecure-registry entry without an `http://`/`https://` prefix (docker strips it) and
/// without a trailing `/`; other schemes are refused as docker refuses them.
pub fn normalize_insecure(raw: &str) -> Result<String, ConfigError> {
    let s = raw
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    if s.contains("://") {
        return Err(ConfigError::Insecure(raw.to_string()));
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"insecure-registries":["r:5000"],"registry-mirrors":["https://m.example"],
                "mirrors":{"r:5000":["http://c:1/"]},"max-concurrent-downloads":7,"certs-d":"/x",
                "signing-key-file":"/k"}"#,
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.insecure_registries, vec!["r:5000"]);
        assert_eq!(c.max_concurrent_downloads, Some(7));
        assert_eq!(c.mirrors["r:5000"], vec!["http://c:1/"]);
        assert_eq!(c.certs_d.as_deref(), Some(Path::new("/x")));
        assert_eq!(c.signing_key_file.as_deref(), Some(Path::new("/k")));
        std::fs::write(&p, r#"{"bogus":1}"#).unwrap();
        assert!(matches!(Config::load(Some(&p)), Err(ConfigError::Parse { .. })));
        assert!(matches!(
            Config::load(Some(&dir.path().join("missing.json"))),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn mirrors_and_insecure_entries_are_checked_like_docker() {
        assert_eq!(
            validate_mirror("https://m.example").unwrap().as_str(),
            "https://m.example/"
        );
        assert!(validate_mirror("ftp://m.example").is_err());
        assert!(validate_mirror("https://u:p@m.example").is_err());
        assert!(validate_mirror("https://m.example/?q=1").is_err());
        assert_eq!(normalize_insecure("http://r:5000/").unwrap(), "r:5000");
        assert_eq!(
            normalize_insecure("ftp://r").unwrap_err().to_string(),
            "insecure registry ftp://r should not contain '://'"
        );
    }
}
