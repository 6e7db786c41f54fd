//! rpull's own configuration file: JSON at `<config dir>/rpull/config.json` (e.g.
//! `~/.config/rpull/config.json`), or the file named by `--config` / `RPULL_CONFIG`. It holds
//! what docker keeps in `daemon.json`: insecure registries, Docker Hub mirrors, per-registry
//! mirrors (which docker lacks), the download concurrency, the `certs.d` directory, how
//! large blobs are fetched as concurrent ranges ([`crate::settings::RangeSettings`]), the key
//! file signing the fleet API's tokens (`rpull serve`), and how the agents and the server reach
//! NATS ([`crate::settings::NatsSettings`]). Command-line flags win over it.
//!
//! The file is parsed into a [`Layer`], the settings every source may give, each optional: a
//! caller's overrides (the command line's flags, a server's request) are a `Layer` too, and
//! [`Layer::over`] lays one over another with each field's rule (insecure registries add up,
//! mirror lists replace, a value wins over none).
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
//!   "signing-key-file": "/etc/rpull/signing.key",
//!   "nats-ca": "/etc/rpull/nats-ca.pem",
//!   "nats-cert": "/etc/rpull/nats-client.pem",
//!   "nats-key": "/etc/rpull/nats-client.key",
//!   "nats-nkey-file": "/etc/rpull/nats.nk"
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

/// The settings one source gives (the config file, the flags, the environment); every field
/// is optional, and the config file's keys are these fields in kebab case.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Layer {
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
    /// CA certificates (PEM) that NATS's TLS certificate must chain to.
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients.
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub nats_key: Option<PathBuf>,
    /// A file holding the NATS user's nkey seed (`SU…`).
    pub nats_nkey_file: Option<PathBuf>,
}

impl Layer {
    /// The config file's default location: `<config dir>/rpull/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("rpull").join("config.json"))
    }

    /// Loads the config file `explicit` (which must exist) or, without one, the default file if
    /// it exists.
    pub fn load(explicit: Option<&Path>) -> Result<Layer, ConfigError> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match Layer::default_path() {
                Some(p) => (p, false),
                None => return Ok(Layer::default()),
            },
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(Layer::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let config: Layer = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Parse {
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

    /// `self` laid over `lower`: `self`'s insecure registries come first and `lower`'s are
    /// kept; `self`'s `registry-mirrors` replace `lower`'s when there are any, and so do its
    /// `mirrors` of a registry; every other value of `self` wins over `lower`'s.
    pub fn over(&self, lower: &Layer) -> Layer {
        let mut mirrors = lower.mirrors.clone();
        mirrors.extend(self.mirrors.clone());
        Layer {
            insecure_registries: [&self.insecure_registries[..], &lower.insecure_registries[..]].concat(),
            registry_mirrors: if self.registry_mirrors.is_empty() {
                lower.registry_mirrors.clone()
            } else {
                self.registry_mirrors.clone()
            },
            mirrors,
            max_concurrent_downloads: self.max_concurrent_downloads.or(lower.max_concurrent_downloads),
            certs_d: self.certs_d.clone().or_else(|| lower.certs_d.clone()),
            signing_key_file: self
                .signing_key_file
                .clone()
                .or_else(|| lower.signing_key_file.clone()),
            parallel_download_threshold: self
                .parallel_download_threshold
                .or(lower.parallel_download_threshold),
            parallel_chunk_size: self.parallel_chunk_size.or(lower.parallel_chunk_size),
            connections_per_blob: self.connections_per_blob.or(lower.connections_per_blob),
            max_connections: self.max_connections.or(lower.max_connections),
            nats_ca: self.nats_ca.clone().or_else(|| lower.nats_ca.clone()),
            nats_cert: self.nats_cert.clone().or_else(|| lower.nats_cert.clone()),
            nats_key: self.nats_key.clone().or_else(|| lower.nats_key.clone()),
            nats_nkey_file: self
                .nats_nkey_file
                .clone()
                .or_else(|| lower.nats_nkey_file.clone()),
        }
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
    use crate::testfs::temp_file;

    #[test]
    fn parses_every_key_and_refuses_unknown_ones() {
        let every_key = r#"{"insecure-registries":["r:5000"],"registry-mirrors":["https://m.example"],
            "mirrors":{"r:5000":["http://c:1/"]},"max-concurrent-downloads":7,"certs-d":"/x",
            "signing-key-file":"/k","nats-ca":"/ca","nats-cert":"/c","nats-key":"/ck",
            "nats-nkey-file":"/nk"}"#;
        let (dir, p) = temp_file("c.json", every_key);
        let c = Layer::load(Some(&p)).unwrap();
        assert_eq!(c.insecure_registries, vec!["r:5000"]);
        assert_eq!(c.max_concurrent_downloads, Some(7));
        assert_eq!(c.mirrors["r:5000"], vec!["http://c:1/"]);
        assert_eq!(c.certs_d.as_deref(), Some(Path::new("/x")));
        assert_eq!(c.signing_key_file.as_deref(), Some(Path::new("/k")));
        let nats = [&c.nats_ca, &c.nats_cert, &c.nats_key, &c.nats_nkey_file];
        assert_eq!(
            nats.map(|p| p.as_deref().unwrap().to_str().unwrap()),
            ["/ca", "/c", "/ck", "/nk"]
        );
        std::fs::write(&p, r#"{"bogus":1}"#).unwrap();
        assert!(matches!(Layer::load(Some(&p)), Err(ConfigError::Parse { .. })));
        assert!(matches!(
            Layer::load(Some(&dir.path().join("missing.json"))),
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

    #[test]
    fn a_layer_over_another_adds_insecure_registries_and_replaces_the_rest() {
        let lower = Layer {
            insecure_registries: vec!["low:5000".into()],
            registry_mirrors: vec!["https://low.example".into()],
            mirrors: BTreeMap::from([
                ("a:1".into(), vec!["http://low-a:1".into()]),
                ("b:1".into(), vec!["http://low-b:1".into()]),
            ]),
            max_concurrent_downloads: Some(6),
            certs_d: Some(PathBuf::from("/low")),
            parallel_chunk_size: Some(10),
            nats_ca: Some(PathBuf::from("/low-ca")),
            nats_nkey_file: Some(PathBuf::from("/low-nk")),
            ..Layer::default()
        };
        let upper = Layer {
            insecure_registries: vec!["up:5000".into()],
            mirrors: BTreeMap::from([("b:1".into(), vec!["http://up-b:1".into()])]),
            max_concurrent_downloads: Some(2),
            signing_key_file: Some(PathBuf::from("/k")),
            nats_nkey_file: Some(PathBuf::from("/up-nk")),
            ..Layer::default()
        };
        let merged = upper.over(&lower);
        assert_eq!(merged.insecure_registries, ["up:5000", "low:5000"]);
        assert_eq!(merged.registry_mirrors, ["https://low.example"]);
        assert_eq!(merged.mirrors["a:1"], ["http://low-a:1"]);
        assert_eq!(merged.mirrors["b:1"], ["http://up-b:1"]);
        assert_eq!(merged.max_concurrent_downloads, Some(2));
        assert_eq!(merged.certs_d.as_deref(), Some(Path::new("/low")));
        assert_eq!(merged.signing_key_file.as_deref(), Some(Path::new("/k")));
        assert_eq!(merged.parallel_chunk_size, Some(10));
        assert_eq!(merged.nats_ca.as_deref(), Some(Path::new("/low-ca")));
        assert_eq!(merged.nats_nkey_file.as_deref(), Some(Path::new("/up-nk")));
        assert_eq!(merged.connections_per_blob, None);
        let mirrors = Layer {
            registry_mirrors: vec!["https://up.example".into()],
            ..Layer::default()
        };
        assert_eq!(mirrors.over(&lower).registry_mirrors, ["https://up.example"]);
        assert_eq!(Layer::default().over(&lower), lower);
    }
}
