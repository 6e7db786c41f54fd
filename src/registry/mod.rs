//! The registry client: one [`Registry`] per registry host. It pings `/v2/`, picks HTTPS or
//! (for hosts allowed to be insecure) plain HTTP, answers auth challenges with tokens cached
//! per scope, follows redirects by hand so credentials never leave their host, and exposes
//! the few calls a pull needs: manifests, blobs and tag lists.
//!
//! Layering follows go-containerregistry's `remote/transport`: scheme, auth and redirects
//! are separate steps of [`Registry::send`], so retries and mirrors can wrap it.

pub mod auth;
pub mod error;
mod hosts;
pub mod login;
mod tls;

pub use hosts::is_loopback_host;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::{Mutex, OnceCell};

use crate::digest::Digest;
use crate::manifest::{media_type, MAX_MANIFEST_BYTES};
use crate::scrub::Secrets;
pub use auth::Credential;
use auth::{parse_challenges, pull_scope, Challenge, Token, TokenResponse};
pub use error::{ApiError, ErrorCode, RegistryError};

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

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, Token>,
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

fn go_method(m: &Method) -> &'static str {
    match *m {
        Method::HEAD => "Head",
        Method::POST => "Post",
        Method::PUT => "Put",
        _ => "Get",
    }
}

/// Describes a transport failure the way Go's net/http does where we can
/// (`dial tcp 127.0.0.1:5999: connect: connection refused`).
fn transport_detail(url: &Url, err: &reqwest::Error) -> (String, bool) {
    if let Some(tls) = tls::find_tls_error(err) {
        return (tls::tls_text(&tls), false);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let addr = format!(
                "{}:{}",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0)
            );
            let text = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("dial tcp {addr}: connect: connection refused")
                }
                std::io::ErrorKind::ConnectionReset => format!("read tcp {addr}: connection reset by peer"),
                std::io::ErrorKind::TimedOut => format!("dial tcp {addr}: i/o timeout"),
                _ => break,
            };
            return (text, true);
        }
        source = e.source();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    let retryable = err.is_timeout() || err.is_connect() || err.is_request() || err.is_body();
    (text, retryable)
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The most tag-list data, all pages together, [`Registry::tags`] reads.
pub const MAX_TAG_LIST_BYTES: usize = 32 * 1024 * 1024;

/// The longest wait a `Retry-After` header can ask for; longer asks wait this long.
pub const MAX_RETRY_AFTER_SECS: u64 = 300;

/// Seconds from a `Retry-After` header (delta-seconds form), at most [`MAX_RETRY_AFTER_SECS`].
fn retry_after(h: &HeaderMap) -> Option<u64> {
    header_str(h, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.min(MAX_RETRY_AFTER_SECS))
}

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
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(RegistryError::Redirect(format!("mirror {url} has no host")));
            }
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

    fn client_for(&self, url: &Url) -> &reqwest::Client {
        self.clients.for_url(url)
    }

    /// `GET /v2/` once: decides the scheme and records the auth challenge.
    async fn base(&self) -> Result<&Url, RegistryError> {
        self.base
            .get_or_try_init(|| async {
                if let Some(fixed) = &self.fixed {
                    let (status, challenge) = self.ping(fixed).await?;
                    if !(status.is_success() || status == StatusCode::UNAUTHORIZED) {
                        return Err(RegistryError::UnexpectedStatus(
                            format!("{} from {fixed}", status.as_u16()),
                            status.as_u16(),
                        ));
                    }
                    self.auth.lock().await.challenge = challenge;
                    return Ok(fixed.clone());
                }
                let https = Url::parse(&format!("https://{}/v2/", self.host)).map_err(|e| {
                    RegistryError::Transport {
                        method: "Get",
                        url: self.host.clone(),
                        detail: e.to_string(),
                        retryable: false,
                    }
                })?;
                if !self.clients.insecure_allowed() {
                    let challenge = self.ping(&https).await?.1;
                    self.auth.lock().await.challenge = challenge;
                    return Ok(https);
                }
                // A host allowed to be insecure: HTTPS (unverified) is preferred, plain HTTP is
                // the fallback. Like crane, start HTTP shortly after HTTPS instead of waiting
                // for HTTPS to time out against a server that never answers a TLS hello.
                // Built from the name, not by changing the scheme of `https`: the URL parser
                // drops an explicit `:443` there, and `host:443` must stay on port 443.
                let http = Url::parse(&format!("http://{}/v2/", self.host)).map_err(|e| {
                    RegistryError::Transport {
                        method: "Get",
                        url: self.host.clone(),
                        detail: e.to_string(),
                        retryable: false,
                    }
                })?;
                let tls_failed = tokio::sync::Notify::new();
                let tls = self.ping(&https);
                let plain = async {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                        _ = tls_failed.notified() => {}
                    }
                    self.ping(&http).await
                };
                tokio::pin!(tls, plain);
                let (mut tls_done, mut plain_done) = (None, None);
                let (url, challenge) = loop {
                    tokio::select! {
                        r = &mut tls, if tls_done.is_none() => match r {
                            Ok((_, ch)) => break (https.clone(), ch),
                            Err(e) => {
                                tls_done = Some(e);
                                tls_failed.notify_one();
                            }
                        },
                        r = &mut plain, if plain_done.is_none() => match r {
                            // A TLS server answers plain HTTP with 400: only 200/401 prove HTTP.
                            Ok((status, ch)) if status == StatusCode::OK || status == StatusCode::UNAUTHORIZED => {
                                break (http.clone(), ch)
                            }
                            Ok((status, _)) => plain_done = Some(RegistryError::UnexpectedStatus(
                                format!("{} from {http}", status.as_u16()), status.as_u16())),
                            Err(e) => plain_done = Some(e),
                        },
                    }
                    if tls_done.is_some() && plain_done.is_some() {
                        // Both failed: report the plain-HTTP error, as docker does.
                        return Err(plain_done.take().expect("set"));
                    }
                };
                self.auth.lock().await.challenge = challenge;
                Ok(url)
            })
            .await
    }

    /// `GET /v2/`: the status and the auth challenge it carries, if any.
    async fn ping(&self, url: &Url) -> Result<(StatusCode, Option<Challenge>), RegistryError> {
        // Only the status and headers matter: the body (whatever its size) is never read.
        let resp = send_limited(self.client_for(url).get(url.clone()), url).await?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        drop(resp);
        let challenge = if status == StatusCode::UNAUTHORIZED {
            preferred_challenge(&headers)
        } else {
            None
        };
        Ok((status, challenge))
    }

    /// The URL of `path` (`<repo>/manifests/<ref>` etc.) under `/v2/`.
    async fn url(&self, path: &str) -> Result<Url, RegistryError> {
        let base = self.base().await?;
        base.join(path).map_err(|e| RegistryError::Transport {
            method: "Get",
            url: format!("{base}{path}"),
            detail: e.to_string(),
            retryable: false,
        })
    }

    /// The `Authorization` value for `scope`, fetching a token when the registry wants one.
    async fn authorization(&self, scope: &str, force_refresh: bool) -> Result<Option<String>, RegistryError> {
        let mut state = self.auth.lock().await;
        let Some(challenge) = state.challenge.clone() else {
            return Ok(None);
        };
        match challenge.scheme.as_str() {
            "basic" => match &self.credential {
                Some(Credential::Basic { username, password }) => Ok(Some(format!(
                    "Basic {}",
                    crate::base64::encode(format!("{username}:{password}").as_bytes())
                ))),
                _ => Ok(None),
            },
            "bearer" => {
                if let Some(Credential::RegistryToken(t)) = &self.credential {
                    return Ok(Some(format!("Bearer {t}")));
                }
                if !force_refresh {
                    if let Some(t) = state.tokens.get(scope).filter(|t| t.is_fresh()) {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                }
                let token = self.fetch_token(&challenge, scope).await?;
                self.secrets.lock().expect("secrets lock").add(&token.value);
                let header = format!("Bearer {}", token.value);
                state.tokens.insert(scope.to_string(), token);
                Ok(Some(header))
            }
            _ => Ok(None),
        }
    }

    /// The token service's URL from a Bearer challenge: https only, unless this registry may be
    /// insecure.
    fn token_realm(&self, challenge: &Challenge) -> Result<Url, RegistryError> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| RegistryError::Auth("auth challenge has no realm".into()))?;
        let url = Url::parse(realm)
            .map_err(|e| RegistryError::Auth(format!("invalid token realm {realm:?}: {e}")))?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.clients.insecure_allowed()) {
            return Err(RegistryError::Auth(format!(
                "refusing token realm {realm:?}: not https"
            )));
        }
        Ok(url)
    }

    async fn fetch_token(&self, challenge: &Challenge, scope: &str) -> Result<Token, RegistryError> {
        let mut url = self.token_realm(challenge)?;
        let service = challenge.param("service").unwrap_or("");
        let client = self.clients.for_token_service();
        let request = match &self.credential {
            Some(Credential::IdentityToken(refresh)) => client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form_encode(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("service", service),
                    ("scope", scope),
                    ("client_id", "docker"),
                ])),
            cred => {
                {
                    let mut q = url.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", service);
                    }
                    q.append_pair("scope", scope);
                    if let Some(Credential::Basic { username, .. }) = cred {
                        q.append_pair("account", username);
                    }
                }
                let mut r = client.get(url.clone());
                if let Some(Credential::Basic { username, password }) = cred {
                    r = r.header(
                        AUTHORIZATION,
                        format!(
                            "Basic {}",
                            crate::base64::encode(format!("{username}:{password}").as_bytes())
                        ),
                    );
                }
                r
            }
        };
        let mut shown = url.clone();
        shown.set_query(None);
        let (status, headers, body) = send_small(request, &shown).await?;
        if !status.is_success() {
            let err = RegistryError::from_response(
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                &body,
                retry_after(&headers),
            );
            return Err(match err {
                e @ RegistryError::Api { .. } => e,
                other => RegistryError::Auth(format!("getting a token from {shown}: {other}")),
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Auth(format!("invalid token response from {shown}: {e}")))?;
        parsed.into_token().map_err(RegistryError::Auth)
    }

    /// Sends a request to `url` with auth for `scope`, answering one 401 with a fresh token and
    /// following up to 10 redirects. `Authorization` is sent only to this registry's origin.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let shown = url.to_string();
        let mut refreshed = false;
        loop {
            let auth = self.authorization(scope, refreshed).await?;
            let mut current = url.clone();
            let mut hops = 0;
            let resp = loop {
                let mut req = self
                    .client_for(&current)
                    .request(method.clone(), current.clone())
                    .headers(headers.clone());
                // Credentials stay within the origin (scheme, host and effective port) of the
                // request: never to another port of the same host, nor to http from https.
                if hosts::same_origin(&current, &url) {
                    if let Some(a) = &auth {
                        req = req.header(AUTHORIZATION, a);
                    }
                }
                let resp = req.send().await.map_err(|e| {
                    let (detail, retryable) = transport_detail(&current, &e);
                    RegistryError::Transport {
                        method: go_method(&method),
                        url: current.to_string(),
                        detail,
                        retryable,
                    }
                })?;
                if resp.status().is_redirection() {
                    if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                        hops += 1;
                        if hops > 10 {
                            return Err(RegistryError::Redirect(format!(
                                "{} \"{shown}\": stopped after 10 redirects",
                                go_method(&method)
                            )));
                        }
                        current = current.join(loc).map_err(|e| {
                            RegistryError::Redirect(format!("invalid redirect location {loc:?}: {e}"))
                        })?;
                        if !matches!(current.scheme(), "http" | "https") {
                            return Err(RegistryError::Redirect(format!("refusing redirect to {current}")));
                        }
                        continue;
                    }
                }
                break resp;
            };
            if resp.status() == StatusCode::UNAUTHORIZED && !refreshed {
                if let Some(ch) = preferred_challenge(resp.headers()) {
                    if ch.param("error") == Some("insufficient_scope") && auth.is_some() {
                        return Ok(resp);
                    }
                    if ch.scheme == "basic" && !matches!(self.credential, Some(Credential::Basic { .. })) {
                        return Err(RegistryError::NoBasicCredentials {
                            method: go_method(&method),
                            url: shown,
                        });
                    }
                    self.auth.lock().await.challenge = Some(ch);
                    refreshed = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            // docker maps a token that lacks the scope to DENIED: that is where
            // "pull access denied" comes from.
            let insufficient = headers
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .any(|c| c.param("error") == Some("insufficient_scope"));
            if insufficient {
                return Err(RegistryError::Api {
                    status: 401,
                    errors: vec![ApiError {
                        code: ErrorCode::Denied,
                        message: "requested access to the resource is denied".into(),
                    }],
                    retry_after: None,
                });
            }
        }
        Err(RegistryError::from_response(
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            &body,
            retry_after(&headers),
        ))
    }

    /// `error` with the credential in use (password, Basic pair, tokens) and terminal control
    /// sequences removed from every text in it: what a server sent is shown only this way.
    pub(crate) fn scrub(&self, error: RegistryError) -> RegistryError {
        let secrets = self.secrets.lock().expect("secrets lock").clone();
        error.map_text(|text| secrets.scrub(text))
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest, when the registry sends one.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        self.head_manifest_unscrubbed(repo, reference)
            .await
            .map_err(|e| self.scrub(e))
    }

    /// `GET /v2/<repo>/manifests/<reference>`, verified against `expected` (a digest
    /// pull) or against `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        self.get_manifest_unscrubbed(repo, reference, expected)
            .await
            .map_err(|e| self.scrub(e))
    }

    /// `GET /v2/<repo>/blobs/<digest>`, from byte `offset` on (`Range`). The answer is 200
    /// (whole blob) or 206 (the rest); anything else is an error.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response, RegistryError> {
        self.get_blob_unscrubbed(repo, digest, offset)
            .await
            .map_err(|e| self.scrub(e))
    }

    /// Every tag of `repo`, following `Link` pagination.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        self.tags_unscrubbed(repo).await.map_err(|e| self.scrub(e))
    }

    fn manifest_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for mt in media_type::MANIFEST_ACCEPT {
            h.append(ACCEPT, HeaderValue::from_static(mt));
        }
        h
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest, when the registry sends one.
    async fn head_manifest_unscrubbed(
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
    async fn get_manifest_unscrubbed(
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
            let resp = Self::check(
                self.send(Method::GET, url.clone(), HeaderMap::new(), &pull_scope(repo))
                    .await?,
            )
            .await?;
            let next = header_str(resp.headers(), "link").and_then(|l| parse_next_link(&l));
            // One budget for all pages together: a registry cannot grow the list without end.
            let body = read_limited(resp, MAX_TAG_LIST_BYTES - total)
                .await
                .map_err(|e| match e {
                    RegistryError::Body(_) => RegistryError::Body(format!(
                        "the tag list of {repo} is larger than {MAX_TAG_LIST_BYTES} bytes"
                    )),
                    other => other,
                })?;
            total += body.len();
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| RegistryError::Body(format!("invalid tag list from {url}: {e}")))?;
            all.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    url = url
                        .join(&n)
                        .map_err(|e| RegistryError::Body(format!("invalid Link {n:?}: {e}")))?;
                }
                None => return Ok(all),
            }
        }
        Err(RegistryError::Body(format!("tag list of {repo} does not end")))
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

/// The forms of `credential` that shown text must not hold.
fn credential_secrets(credential: Option<&Credential>) -> Secrets {
    let mut secrets = Secrets::new();
    match credential {
        Some(Credential::Basic { username, password }) => secrets.add_basic(username, password),
        Some(Credential::IdentityToken(t) | Credential::RegistryToken(t)) => secrets.add(t),
        None => {}
    }
    secrets
}

/// The challenge to answer among a response's `WWW-Authenticate` headers: Bearer over Basic.
fn preferred_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let challenges: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect();
    challenges
        .iter()
        .find(|c| c.scheme == "bearer")
        .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
        .cloned()
}

/// Sends a request to an auth endpoint (15 s limit, as docker's token client) and reads its
/// small answer; `shown` is the URL for messages (without the query, which may hold secrets).
pub(crate) async fn send_small(
    request: reqwest::RequestBuilder,
    shown: &Url,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), RegistryError> {
    let resp = send_limited(request, shown).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_limited(resp, 64 * 1024).await?;
    Ok((status, headers, body))
}

/// Sends a request with the auth endpoints' 15 s limit; the body is left unread.
async fn send_limited(
    request: reqwest::RequestBuilder,
    shown: &Url,
) -> Result<reqwest::Response, RegistryError> {
    request
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| {
            let (detail, retryable) = transport_detail(shown, &e);
            RegistryError::Transport {
                method: "Get",
                url: shown.to_string(),
                detail,
                retryable,
            }
        })
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, RegistryError> {
    let url = resp.url().to_string();
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > limit {
                    return Err(RegistryError::Body(format!(
                        "answer from {url} is larger than {limit} bytes"
                    )));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                let (detail, retryable) = transport_detail(&Url::parse(&url).expect("valid"), &e);
                return Err(RegistryError::Transport {
                    method: "Get",
                    url,
                    detail,
                    retryable,
                });
            }
        }
    }
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("18446744073709551615"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER_SECS));
        h.insert("retry-after", HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(7));
        h.insert("retry-after", HeaderValue::from_static("99999999999999999999999"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn link_header() {
        assert_eq!(
            parse_next_link(r#"</v2/x/tags/list?n=100&last=tag099>; rel="next""#).as_deref(),
            Some("/v2/x/tags/list?n=100&last=tag099")
        );
        assert_eq!(parse_next_link(r#"</a>; rel="prev""#), None);
    }
}
