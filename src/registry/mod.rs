//! The registry client: one [`Registry`] per registry host. It pings `/v2/`, picks HTTPS or
//! (for hosts allowed to be insecure) plain HTTP, answers auth challenges with tokens cached
//! per scope, follows redirects by hand so credentials never leave their host, and exposes
//! the few calls a pull needs: manifests, blobs and tag lists.
//!
//! Layering follows go-containerregistry's `remote/transport`: scheme, auth and redirects
//! are separate steps of [`Registry::send`], so retries and mirrors can wrap it.

pub mod auth;
pub mod blob;
pub mod error;
pub mod login;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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
pub use error::{ApiError, RegistryError};

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
    insecure_allowed: bool,
    secure: reqwest::Client,
    insecure: reqwest::Client,
    credential: Option<Credential>,
    /// A mirror's URL (`http(s)://host[:port]/[path/]`): its scheme is given, not probed.
    fixed: Option<Url>,
    base: OnceCell<Url>,
    auth: Mutex<AuthState>,
    /// The credential in use and every token fetched with it, removed from shown errors.
    secrets: std::sync::Mutex<Secrets>,
}

/// Whether docker would allow plain HTTP / unverified TLS for `host` (`host[:port]`).
pub fn is_insecure_allowed(host: &str, extra: &[String]) -> bool {
    is_loopback_host(host) || is_listed_insecure(host, extra)
}

/// Whether `host` (`host[:port]`) names the local machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = strip_port(host);
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        if ip.is_loopback() {
            return true;
        }
    }
    false
}

/// Whether `host` is in the user's insecure-registry list (`host[:port]` or a bare host).
fn is_listed_insecure(host: &str, extra: &[String]) -> bool {
    let bare = strip_port(host);
    let ip = bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    extra.iter().any(|e| {
        if let (Some(ip), Some((net, bits))) = (ip, parse_cidr(e)) {
            return cidr_contains(net, bits, ip);
        }
        let e = e
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        e.eq_ignore_ascii_case(host) || (!e.contains(':') && e.eq_ignore_ascii_case(bare))
    })
}

/// `10.0.0.0/8`, `fd00::/8`: docker's CIDR form of an insecure-registry entry.
fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (net, bits) = s.trim().split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((net, bits))
}

fn cidr_contains(net: IpAddr, bits: u32, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
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
    if let Some(tls) = find_tls_error(err) {
        return (tls_text(&tls), false);
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

/// The rustls error somewhere in `err`'s chain (hyper wraps it in `io::Error`s, which hide
/// their payload from `source()`).
fn find_tls_error(err: &reqwest::Error) -> Option<rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let mut inner: &(dyn std::error::Error + 'static) = e;
        loop {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t.clone());
            }
            match inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(next) => inner = next,
                None => break,
            }
        }
        source = e.source();
    }
    None
}

/// A certificate failure worded as Go's crypto/tls and crypto/x509 word it, as docker shows it.
fn tls_text(err: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(c) => {
            let x509 = match c {
                C::UnknownIssuer => "certificate signed by unknown authority".to_string(),
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                    "certificate has expired or is not yet valid".to_string()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "certificate is not valid for this host name".to_string()
                }
                C::Revoked => "certificate has been revoked".to_string(),
                // webpki's word for a self-signed certificate nobody trusts.
                C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
                    "certificate signed by unknown authority".to_string()
                }
                other => format!("{other:?}"),
            };
            format!("tls: failed to verify certificate: x509: {x509}")
        }
        other => format!("tls: {other}"),
    }
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
        let cert_dir = opts
            .cert_dirs
            .get(host)
            .cloned()
            .unwrap_or_else(|| opts.certs_d.join(host));
        let tls = load_cert_dir(&cert_dir)?;
        let build = |accept_invalid: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(opts.user_agent.clone())
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(opts.connect_timeout)
                .read_timeout(opts.read_timeout)
                .tls_danger_accept_invalid_certs(accept_invalid)
                .tls_certs_merge(tls.roots.clone());
            if let Some(id) = &tls.identity {
                b = b.identity(id.clone());
            }
            for p in proxies(&opts.proxy) {
                b = b.proxy(p);
            }
            b.build().map_err(|e| RegistryError::Transport {
                method: "Get",
                url: host.to_string(),
                detail: format!("cannot set up HTTP client: {e}"),
                retryable: false,
            })
        };
        let insecure_allowed = (opts.loopback_insecure && is_loopback_host(host))
            || is_listed_insecure(host, &opts.insecure_registries);
        Ok(Registry {
            host: host.to_string(),
            insecure_allowed,
            secure: build(false)?,
            insecure: build(insecure_allowed)?,
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

    /// The host this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn client_for(&self, url: &Url) -> &reqwest::Client {
        if self.insecure_allowed && self.is_own_host(url) {
            &self.insecure
        } else {
            &self.secure
        }
    }

    /// Whether `url` is on this registry's host and port: the port its name gives, else the
    /// default port of `url`'s scheme (`localhost` is `localhost:80` for `http://`, not
    /// `localhost:5000`). This is where its insecure-TLS allowance applies.
    fn is_own_host(&self, url: &Url) -> bool {
        let Ok(own) = Url::parse(&format!("{}://{}/", url.scheme(), self.host)) else {
            return false;
        };
        let host = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
        host(&own).is_some()
            && host(&own) == host(url)
            && own.port_or_known_default() == url.port_or_known_default()
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
                if !self.insecure_allowed {
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
                    base64(&format!("{username}:{password}"))
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
        if url.scheme() != "https" && !(url.scheme() == "http" && self.insecure_allowed) {
            return Err(RegistryError::Auth(format!(
                "refusing token realm {realm:?}: not https"
            )));
        }
        Ok(url)
    }

    /// The client for the token service (unverified TLS only for an insecure registry).
    fn token_client(&self) -> &reqwest::Client {
        if self.insecure_allowed {
            &self.insecure
        } else {
            &self.secure
        }
    }

    async fn fetch_token(&self, challenge: &Challenge, scope: &str) -> Result<Token, RegistryError> {
        let mut url = self.token_realm(challenge)?;
        let service = challenge.param("service").unwrap_or("");
        let client = self.token_client();
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
                        format!("Basic {}", base64(&format!("{username}:{password}"))),
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
                if same_origin(&current, &url) {
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
                        code: "DENIED".into(),
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

/// What `certs.d/<host>/` adds to the TLS setup of one host.
struct HostTls {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

/// Reads a host's certificate directory (`<certs_d>/<host>/`) as docker does: every `*.crt`
/// is an extra CA root, every `<name>.cert` needs `<name>.key` (and the other way round) and
/// makes a client certificate. A missing directory adds nothing.
fn load_cert_dir(dir: &Path) -> Result<HostTls, RegistryError> {
    let mut out = HostTls {
        roots: Vec::new(),
        identity: None,
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| RegistryError::Certs(format!("reading {}: {e}", dir.join(name).display())))
    };
    for name in &names {
        if name.ends_with(".crt") {
            let pem = read(name)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RegistryError::Certs(format!("{}: {e}", dir.join(name).display())))?;
            out.roots.extend(certs);
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            if !names.contains(&key) {
                return Err(RegistryError::Certs(format!(
                    "missing key {key} for client certificate {name}. CA certificates must use the extension .crt"
                )));
            }
            let mut pem = read(name)?;
            pem.push(b'\n');
            pem.extend(read(&key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| RegistryError::Certs(format!("{}: {e}", dir.join(name).display())))?;
            out.identity.get_or_insert(id);
        } else if let Some(stem) = name.strip_suffix(".key") {
            let cert = format!("{stem}.cert");
            if !names.contains(&cert) {
                return Err(RegistryError::Certs(format!(
                    "missing client certificate {cert} for key {name}"
                )));
            }
        }
    }
    Ok(out)
}

/// The proxies of `settings`, as Go's `ProxyFromEnvironment` applies them: loopback
/// destinations are never proxied.
fn proxies(settings: &ProxySettings) -> Vec<reqwest::Proxy> {
    let mut no_proxy = settings.no_proxy.clone().unwrap_or_default();
    if !no_proxy.is_empty() {
        no_proxy.push(',');
    }
    no_proxy.push_str("localhost,127.0.0.0/8,::1");
    let mut out = Vec::new();
    if let Some(p) = settings
        .http
        .as_deref()
        .and_then(|u| reqwest::Proxy::http(u).ok())
    {
        out.push(p.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
    }
    if let Some(p) = settings
        .https
        .as_deref()
        .and_then(|u| reqwest::Proxy::https(u).ok())
    {
        out.push(p.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
    }
    out
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

/// The origin of a URL as browsers and Go's redirect rules see it: scheme, host (lower case)
/// and effective port (the scheme's default when none is written).
fn origin(url: &Url) -> Option<(&str, String, u16)> {
    Some((
        url.scheme(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// Whether `a` and `b` share an origin ([`origin`]).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    origin(a).is_some() && origin(a) == origin(b)
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

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
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
    fn origins_are_scheme_host_and_effective_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(
            &u("http://localhost/v2/"),
            &u("http://LOCALHOST:80/x")
        ));
        assert!(same_origin(&u("https://h/v2/"), &u("https://h:443/x")));
        assert!(!same_origin(
            &u("http://localhost/v2/"),
            &u("http://localhost:8080/x")
        ));
        assert!(!same_origin(&u("https://h/v2/"), &u("http://h:443/x")));
        assert!(!same_origin(&u("https://h/v2/"), &u("https://h.evil/x")));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = Registry::new("localhost", None, &RegistryOptions::default()).unwrap();
        assert!(r.is_own_host(&u("http://localhost/v2/")));
        assert!(!r.is_own_host(&u("http://localhost:8080/v2/")));
        let r = Registry::new("[::1]:5000", None, &RegistryOptions::default()).unwrap();
        assert!(r.is_own_host(&u("https://[::1]:5000/v2/")));
        assert!(!r.is_own_host(&u("https://[::1]/v2/")));
    }

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
    fn insecure_hosts() {
        assert!(is_insecure_allowed("127.0.0.1:5000", &[]));
        assert!(is_insecure_allowed("127.8.9.1", &[]));
        assert!(is_insecure_allowed("localhost:5000", &[]));
        assert!(is_insecure_allowed("[::1]:5000", &[]));
        assert!(!is_insecure_allowed("registry-1.docker.io", &[]));
        assert!(!is_insecure_allowed("10.0.0.1:5000", &[]));
        assert!(is_insecure_allowed("myreg:5000", &["myreg:5000".into()]));
        assert!(is_insecure_allowed("myreg:5000", &["http://myreg".into()]));
        assert!(is_insecure_allowed("10.1.2.3:5000", &["10.0.0.0/8".into()]));
        assert!(!is_insecure_allowed("11.1.2.3:5000", &["10.0.0.0/8".into()]));
        assert!(is_insecure_allowed("[fd00::1]:5000", &["fd00::/8".into()]));
        assert!(!is_insecure_allowed("myreg:5000", &["10.0.0.0/8".into()]));
    }

    #[test]
    fn certs_d_pairs_must_be_complete() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("r.example:5000");
        std::fs::create_dir(&host).unwrap();
        assert!(load_cert_dir(&dir.path().join("other:1"))
            .unwrap()
            .roots
            .is_empty());
        std::fs::write(host.join("client.cert"), "x").unwrap();
        assert_eq!(
            load_cert_dir(&host).err().unwrap().to_string(),
            "missing key client.key for client certificate client.cert. CA certificates must use the extension .crt"
        );
    }

    #[test]
    fn link_header() {
        assert_eq!(
            parse_next_link(r#"</v2/x/tags/list?n=100&last=tag099>; rel="next""#).as_deref(),
            Some("/v2/x/tags/list?n=100&last=tag099")
        );
        assert_eq!(parse_next_link(r#"</a>; rel="prev""#), None);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
    }
}
