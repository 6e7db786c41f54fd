//! One request to a registry, as the layers below the [`Registry`] facade see it: the
//! `Authorization` for its scope (from `auth.rs`), sent only to the registry's own origin;
//! redirects followed by hand (at most 10, http(s) only) so that credentials never follow
//! them to another origin; one fresh token on a 401; the error envelope of a failed answer
//! ([`RegistryError::from_response`]); and transport failures worded as Go's net/http words
//! them. Small bodies are read here with a bound ([`read_limited`]).
//!
//! It does not decide the scheme (`scheme.rs`), fetch tokens (`auth.rs`), build clients
//! (`tls.rs`) or retry (`retry.rs`).

use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use super::challenge::{parse_challenges, preferred_challenge};
use super::retry::{self, retry_after};
use super::{hosts, tls, ApiError, Credential, ErrorCode, Registry, RegistryError};

pub(crate) fn go_method(m: &Method) -> &'static str {
    match *m {
        Method::HEAD => "Head",
        Method::POST => "Post",
        Method::PUT => "Put",
        _ => "Get",
    }
}

/// The error for a request to `url` (shown as `shown`) that got no complete HTTP answer.
pub(crate) fn transport_error(
    method: &'static str,
    url: &Url,
    shown: String,
    err: &reqwest::Error,
) -> RegistryError {
    let (detail, retryable) = transport_detail(url, err);
    RegistryError::Transport {
        method,
        url: shown,
        detail,
        retryable,
        dial: err.is_connect(),
    }
}

/// Describes a transport failure the way Go's net/http does where we can
/// (`dial tcp 127.0.0.1:5999: connect: connection refused`), and whether trying again may help.
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

pub(crate) fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl Registry {
    pub(crate) fn client_for(&self, url: &Url) -> &reqwest::Client {
        self.clients.for_url(url)
    }

    /// Sends a request to `url` with auth for `scope`, answering one 401 with a fresh token and
    /// following up to 10 redirects. `Authorization` is sent only to this registry's origin
    /// (that of its base URL), whatever `url` is.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let shown = url.to_string();
        // The registry's own origin: a URL a server named (a tag list's `Link`) is not trusted
        // with credentials for being the first hop.
        let home = self.home().cloned().unwrap_or_else(|| url.clone());
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
                // Credentials stay within the registry's origin (scheme, host and effective
                // port): never to another host or port, nor to http from https.
                if hosts::same_origin(&current, &home) {
                    if let Some(a) = &auth {
                        req = req.header(AUTHORIZATION, a);
                    }
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| transport_error(go_method(&method), &current, current.to_string(), &e))?;
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

    pub(crate) async fn check(resp: reqwest::Response) -> Result<reqwest::Response, RegistryError> {
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
}

/// Sends a request to an auth endpoint (15 s limit, as docker's token client) and reads its
/// small answer: the body when the status is a success, else the error it makes
/// ([`RegistryError::from_response`]). Transient failures are retried ([`retry::quietly`]).
/// `shown` is the URL for messages (without the query, which may hold secrets).
pub(crate) async fn auth_request(
    request: reqwest::RequestBuilder,
    shown: &Url,
) -> Result<Vec<u8>, RegistryError> {
    retry::quietly(|| async {
        let request = request.try_clone().expect("auth requests have no streamed body");
        let resp = send_limited(request, shown).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_limited(resp, 64 * 1024).await?;
        if !status.is_success() {
            return Err(RegistryError::from_response(
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                &body,
                retry_after(&headers),
            ));
        }
        Ok(body)
    })
    .await
}

/// Sends a request with the auth endpoints' 15 s limit; the body is left unread.
pub(crate) async fn send_limited(
    request: reqwest::RequestBuilder,
    shown: &Url,
) -> Result<reqwest::Response, RegistryError> {
    request
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| transport_error("Get", shown, shown.to_string(), &e))
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
            Err(e) => return Err(transport_error("Get", &Url::parse(&url).expect("valid"), url, &e)),
        }
    }
}
