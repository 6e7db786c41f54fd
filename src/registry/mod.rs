//! The registry client: one [`Registry`] per registry host (or mirror URL), and the few calls
//! a pull needs: manifests (`HEAD` and `GET`, verified against their digest), blobs and tag
//! lists. This file is the facade; each concern below it is one file, as in
//! go-containerregistry's `remote/transport` and containerd's `remotes/docker`:
//!
//! | file | holds |
//! |---|---|
//! | `hosts.rs` | insecure-registry rules (loopback, listed hosts, CIDRs) and origins |
//! | `tls.rs` | the per-host HTTP clients: `certs.d`, client certificates, proxies; TLS error texts |
//! | `scheme.rs` | the `/v2/` ping that picks HTTPS or plain HTTP and finds the auth challenge |
//! | `challenge.rs` | `WWW-Authenticate` challenges and the credentials that answer them |
//! | `auth.rs` | the token service, the token cache per scope |
//! | `transport.rs` | one request: its `Authorization`, redirects that drop it across origins, a 401 refresh, error mapping, bounded body reads |
//! | `retry.rs` | when to try a request again |
//! | `blob.rs` | blob downloads as byte streams (from an offset, or one range) that never show an HTTP status |
//! | `error.rs` | the OCI error envelope, [`ErrorCode`] and [`RegistryError`] |
//! | `login.rs` | checking credentials as `docker login` does |
//!
//! Every error leaving the facade has the credential in use and every token removed from its
//! text ([`crate::scrub`]).

pub mod auth;
pub mod blob;
pub mod challenge;
pub mod error;
mod hosts;
pub(crate) use hosts::host_port;
pub mod login;
pub mod retry;
mod scheme;
mod tls;
mod transport;

pub use hosts::is_loopback_host;
pub use retry::MAX_RETRY_AFTER_SECS;
pub use transport::read_limited;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::{Method, Url};
use tokio::sync::{Mutex, OnceCell};

use crate::digest::Digest;
use crate::manifest::{media_type, MAX_MANIFEST_BYTES};
use crate::scrub::Secrets;
use auth::{credential_secrets, pull_scope, AuthState};
pub use challenge::Credential;
pub use error::{ApiError, ErrorCode, RegistryError};
use transport::header_str;

/// How rpull talks to registries; the same for every host in one run.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) allowed to use plain HTTP or unverified TLS, besides loopback.
    pub insecure_registries: Vec<String>,
    /// Sent as `User-Agent`.
    pub user_agent: String,
    /// Longest wait for the next bytes of an answer before the request counts as failed.
    pub read_timeout: Duration,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// docker's `certs.d`: `<dir>/<host[:port]>/` holds extra CAs (`*.crt`) and client
    /// certificate pairs (`*.cert` + `*.key`) for that host.
    pub certs_d: PathBuf,
    /// Per-host certificate directories used instead of `<certs_d>/<host>` (podman's
    /// `--cert-dir`, for the pulled registry).
    pub cert_dirs: std::collections::HashMap<String, PathBuf>,
    /// Whether loopback hosts (`localhost`, 127.0.0.0/8, ::1) are insecure-allowed without
    /// being listed, as in docker. Only tests turn this off, to check verified TLS on loopback.
    pub loopback_insecure: bool,
    /// The proxies registries, token services and redirects are reached through.
    pub proxy: ProxySettings,
}

/// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` as read from the environment by
/// [`crate::settings`]; loopback destinations are never proxied whatever they say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// The proxy for `http://` URLs.
    pub http: Option<String>,
    /// The proxy for `https://` URLs.
    pub https: Option<String>,
    /// Hosts, domain suffixes and CIDRs reached directly (comma-separated).
    pub no_proxy: Option<String>,
}

/// docker's `certs.d` on Linux.
pub const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d";

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            user_agent: format!("rpull/{}", env!("CARGO_PKG_VERSION")),
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            certs_d: PathBuf::from(DEFAULT_CERTS_D),
            cert_dirs: std::collections::HashMap::new(),
            loopback_insecure: true,
            proxy: ProxySettings::default(),
        }
    }
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes as received.
    pub bytes: Vec<u8>,
    /// `Content-Type`.
    pub content_type: String,
    /// The digest of the bytes (checked against `Docker-Content-Digest` when sent).
    pub digest: Digest,
}

/// What a manifest `HEAD` told.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`.
    pub digest: Digest,
    /// `Content-Type`.
    pub content_type: String,
}

/// A client for one registry host.
pub struct Registry {
    host: String,
    clients: tls::Clients,
    credential: Option<Credential>,
    /// A mirror's URL (`http(s)://host[:port]/[path/]`): its scheme is given, not probed.
    fixed: Option<Url>,
    base: OnceCell<Url>,
    auth: Mutex<AuthState>,
    /// The credential in use and every token fetched with it, removed from shown errors.
    secrets: std::sync::Mutex<Secrets>,
}

/// The most tag-list data, all pages together, [`Registry::tags`] reads.
pub const MAX_TAG_LIST_BYTES: usize = 32 * 1024 * 1024;

impl Registry {
    /// A client for `host` (`registry-1.docker.io`, `127.0.0.1:5000`), with the user's
    /// credential for it, if any.
    pub fn new(
        host: &str,
        credential: Option<Credential>,
        opts: &RegistryOptions,
    ) -> Result<Registry, RegistryError> {
        let clients = tls::Clients::new(host, opts)?;
        Ok(Registry {
            host: host.to_string(),
            clients,
            secrets: std::sync::Mutex::new(credential_secrets(credential.as_ref())),
            credential,
            fixed: None,
            base: OnceCell::new(),
            auth: Mutex::new(AuthState::default()),
        })
    }

    /// A client for a mirror at `url` (`http(s)://host[:port]/[path/]`): the scheme is the
    /// URL's, and `/v2/` is under its path. Insecure rules and `certs.d` apply to its host.
    pub fn mirror(
        url: &Url,
        credential: Option<Credential>,
        opts: &RegistryOptions,
    ) -> Result<Registry, RegistryError> {
        let Some(host) = hosts::host_port(url) else {
            return Err(RegistryError::Redirect(format!("mirror {url} has no host")));
        };
        let mut r = Registry::new(&host, credential, opts)?;
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        r.fixed = Some(
            base.join("v2/")
                .map_err(|e| RegistryError::Redirect(e.to_string()))?,
        );
        Ok(r)
    }

    /// `error` with the credential in use (password, Basic pair, tokens) and terminal control
    /// sequences removed from every text in it: what a server sent is shown only this way.
    pub(crate) fn scrub(&self, error: RegistryError) -> RegistryError {
        let secrets = self.secrets.lock().expect("secrets lock").clone();
        error.map_text(|text| secrets.scrub(text))
    }

    /// Awaits `call` and [scrubs](Registry::scrub) its error: what every public call returns.
    async fn scrubbed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        call.await.map_err(|e| self.scrub(e))
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest, when the registry sends one.
    /// Transient failures are retried quietly (`retry.rs`), as for every call but
    /// [`Registry::get_blob`].
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        self.scrubbed(retry::quietly(|| self.head_manifest_once(repo, reference)))
            .await
    }

    /// `GET /v2/<repo>/manifests/<reference>`, verified against `expected` (a digest
    /// pull) or against `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        self.scrubbed(retry::quietly(|| {
            self.get_manifest_once(repo, reference, expected)
        }))
        .await
    }

    /// `GET /v2/<repo>/blobs/<digest>`, from byte `offset` on (`Range`). The answer is 200
    /// (whole blob) or 206 (the rest); anything else is an error. Not retried here: the
    /// caller resumes a blob with its own policy.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response, RegistryError> {
        self.scrubbed(self.get_blob_unscrubbed(repo, digest, offset))
            .await
    }

    /// Every tag of `repo`, following `Link` pagination; each page is retried on its own.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        self.scrubbed(self.tags_unscrubbed(repo)).await
    }

    fn manifest_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for mt in media_type::MANIFEST_ACCEPT {
            h.append(ACCEPT, HeaderValue::from_static(mt));
        }
        h
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest, when the registry sends one.
    async fn head_manifest_once(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.url(&format!("{repo}/manifests/{reference}")).await?;
        let resp = self
            .send(Method::HEAD, url, Self::manifest_headers(), &pull_scope(repo))
            .await?;
        if !resp.status().is_success() {
            // HEAD has no body: let the caller's GET fetch the error details.
            return Ok(None);
        }
        let Some(d) = header_str(resp.headers(), "docker-content-digest") else {
            return Ok(None);
        };
        let digest = Digest::parse(d.trim())
            .map_err(|_| RegistryError::Verification(format!("\"{d}\" in header not a valid digest")))?;
        let content_type = header_str(resp.headers(), "content-type").unwrap_or_default();
        Ok(Some(ManifestHead { digest, content_type }))
    }

    /// `GET /v2/<repo>/manifests/<reference>`, verified against `expected` (a digest
    /// pull) or against `Docker-Content-Digest`.
    async fn get_manifest_once(
        &self,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.url(&format!("{repo}/manifests/{reference}")).await?;
        let resp = Self::check(
            self.send(Method::GET, url, Self::manifest_headers(), &pull_scope(repo))
                .await?,
        )
        .await?;
        let content_type = header_str(resp.headers(), "content-type").unwrap_or_default();
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES).await?;
        // The digest asked for (a digest pull) decides; else `Docker-Content-Digest` when
        // sent; else the bytes' own hash.
        let digest = match (expected, header_digest) {
            (Some(want), _) => want.clone(),
            (None, Some(h)) => Digest::parse(h.trim())
                .map_err(|_| RegistryError::Verification(format!("\"{h}\" in header not a valid digest")))?,
            (None, None) => Digest::sha256_of(&bytes),
        };
        if !digest.verify(&bytes) {
            return Err(RegistryError::Verification(format!(
                "manifest verification failed for digest {digest}"
            )));
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`, from byte `offset` on (`Range`). The answer is 200
    /// (whole blob) or 206 (the rest); anything else is an error.
    async fn get_blob_unscrubbed(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(&format!("{repo}/blobs/{digest}")).await?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                reqwest::header::RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii"),
            );
        }
        Self::check(self.send(Method::GET, url, headers, &pull_scope(repo)).await?).await
    }

    /// Every tag of `repo`, following `Link` pagination.
    async fn tags_unscrubbed(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(&format!("{repo}/tags/list")).await?;
        let mut all = Vec::new();
        let mut total = 0usize;
        for _ in 0..10_000 {
            // One budget for all pages together: a registry cannot grow the list without end.
            let (next, body) =
                retry::quietly(|| self.tags_page(repo, &url, MAX_TAG_LIST_BYTES - total)).await?;
            total += body.len();
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| RegistryError::Body(format!("invalid tag list from {url}: {e}")))?;
            all.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    let next = url
                        .join(&n)
                        .map_err(|e| RegistryError::Body(format!("invalid Link {n:?}: {e}")))?;
                    // The pages stay with the registry: a Link elsewhere is not followed.
                    if !hosts::same_origin(&next, &url) {
                        return Err(RegistryError::Body(format!(
                            "the tag list of {repo} names its next page on another origin: {}://{}",
                            next.scheme(),
                            hosts::host_port(&next).unwrap_or_default()
                        )));
                    }
                    url = next;
                }
                None => return Ok(all),
            }
        }
        Err(RegistryError::Body(format!("tag list of {repo} does not end")))
    }

    /// One page of a tag list, at most `budget` bytes, and the `Link` to the next one.
    async fn tags_page(
        &self,
        repo: &str,
        url: &Url,
        budget: usize,
    ) -> Result<(Option<String>, Vec<u8>), RegistryError> {
        let resp = Self::check(
            self.send(Method::GET, url.clone(), HeaderMap::new(), &pull_scope(repo))
                .await?,
        )
        .await?;
        let next = header_str(resp.headers(), "link").and_then(|l| parse_next_link(&l));
        let body = read_limited(resp, budget).await.map_err(|e| match e {
            RegistryError::Body(_) => RegistryError::Body(format!(
                "the tag list of {repo} is larger than {MAX_TAG_LIST_BYTES} bytes"
            )),
            other => other,
        })?;
        Ok((next, body))
    }
}

/// The target of the `rel="next"` entry of a `Link` header.
fn parse_next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header() {
        assert_eq!(
            parse_next_link(r#"</v2/x/tags/list?n=100&last=tag099>; rel="next""#).as_deref(),
            Some("/v2/x/tags/list?n=100&last=tag099")
        );
        assert_eq!(parse_next_link(r#"</a>; rel="prev""#), None);
    }
}
