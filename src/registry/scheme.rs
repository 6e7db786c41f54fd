//! Where a registry is: the base URL (`<scheme>://<host>/v2/`) found by pinging `/v2/` once
//! per [`Registry`], as go-containerregistry's `ping.go` does. Hosts that must be secure get
//! HTTPS; hosts allowed to be insecure race HTTPS (preferred) against plain HTTP started
//! 300 ms later; a mirror's URL gives its scheme, and the ping only checks it. The challenge
//! the ping returns is handed to `auth.rs`.
//!
//! It does not answer challenges (`auth.rs`) nor send requests other than the ping
//! (`transport.rs`).

use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::challenge::{preferred_challenge, Challenge};
use super::retry;
use super::transport::send_limited;
use super::{Registry, RegistryError};

impl Registry {
    /// `<scheme>://<host>/v2/`, built from the name so that an explicit port (even `:443`
    /// with `http`) stays as written.
    fn v2_url(&self, scheme: &str) -> Result<Url, RegistryError> {
        Url::parse(&format!("{scheme}://{}/v2/", self.host)).map_err(|e| RegistryError::Transport {
            method: "Get",
            url: self.host.clone(),
            detail: e.to_string(),
            retryable: false,
            dial: false,
        })
    }

    /// `GET /v2/` once: decides the scheme and records the auth challenge.
    pub(crate) async fn base(&self) -> Result<&Url, RegistryError> {
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
                let https = self.v2_url("https")?;
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
                let http = self.v2_url("http")?;
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

    /// `GET /v2/`: the status and the auth challenge it carries, if any. Transient failures
    /// and 5xx answers are asked again ([`retry::quietly_while`]); the last answer counts.
    async fn ping(&self, url: &Url) -> Result<(StatusCode, Option<Challenge>), RegistryError> {
        retry::quietly_while(
            || self.ping_once(url),
            |(status, _)| retry::is_transient_status(*status),
        )
        .await
    }

    /// One `GET /v2/`.
    async fn ping_once(&self, url: &Url) -> Result<(StatusCode, Option<Challenge>), RegistryError> {
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

    /// The base URL once it is known (a mirror's, or the scheme the ping chose): the origin
    /// credentials belong to.
    pub(crate) fn home(&self) -> Option<&Url> {
        self.base.get().or(self.fixed.as_ref())
    }

    /// The URL of `path` (`<repo>/manifests/<ref>` etc.) under `/v2/`.
    pub(crate) async fn url(&self, path: &str) -> Result<Url, RegistryError> {
        let base = self.base().await?;
        base.join(path).map_err(|e| RegistryError::Transport {
            method: "Get",
            url: format!("{base}{path}"),
            detail: e.to_string(),
            retryable: false,
            dial: false,
        })
    }
}
