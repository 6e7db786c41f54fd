//! Checking credentials the way `docker login` does before anything is saved: ping `/v2/`,
//! then answer its challenge with the user's password. A Basic challenge is answered with
//! `GET /v2/` carrying basic auth, which must be 200; a Bearer challenge with a token request
//! to the realm carrying basic auth (docker's `account=<user>`, no scope), which must return a
//! token that `GET /v2/` then accepts. A registry that asks for no auth at all accepts anyone.
//!
//! Secrets are only ever sent in `Authorization` headers, never put in URLs or error texts.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;

use super::auth::TokenResponse;
use super::transport::{auth_request, transport_error};
use super::{Credential, Registry, RegistryError};

/// Why a login was refused. The texts are the daemon's (without the CLI's
/// `Error response from daemon: ` prefix), and name the registry and the status.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// `GET /v2/` with the credentials was answered with something other than 200.
    #[error("login attempt to {url} failed with status: {status} {reason}")]
    Refused {
        /// The `/v2/` URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its canonical reason phrase.
        reason: String,
    },
    /// The token service refused the credentials (or failed).
    #[error("Get \"{url}\": {source}")]
    Token {
        /// The `/v2/` URL being logged in to.
        url: String,
        /// The token service's answer, rendered as docker renders registry errors.
        source: RegistryError,
    },
    /// Login needs a username and password.
    #[error("login needs a username and a password")]
    NoPassword,
    /// The registry could not be reached or answered nonsense.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl LoginError {
    /// Whether the registry said the credentials are wrong (rather than being unreachable).
    pub fn is_unauthorized(&self) -> bool {
        match self {
            LoginError::Refused { status, .. } => *status == 401 || *status == 403,
            LoginError::Token { source, .. } => matches!(
                source,
                RegistryError::Api {
                    status: 401 | 403,
                    ..
                } | RegistryError::UnexpectedStatus(_, 401 | 403)
            ),
            _ => false,
        }
    }
}

impl Registry {
    /// Checks this client's credential (which must be [`Credential::Basic`]) against the
    /// registry as `docker login` does; `Ok` means it is accepted and may be saved.
    pub async fn check_login(&self) -> Result<(), LoginError> {
        // What the registry or token service sent is shown scrubbed (crate::scrub).
        self.check_login_unscrubbed().await.map_err(|e| match e {
            LoginError::Token { url, source } => LoginError::Token {
                url,
                source: self.scrub(source),
            },
            LoginError::Registry(e) => LoginError::Registry(self.scrub(e)),
            other => other,
        })
    }

    async fn check_login_unscrubbed(&self) -> Result<(), LoginError> {
        let Some(Credential::Basic { username, password }) = &self.credential else {
            return Err(LoginError::NoPassword);
        };
        let basic = format!(
            "Basic {}",
            crate::base64::encode(format!("{username}:{password}").as_bytes())
        );
        let base = self.base().await?.clone();
        let shown = base.to_string();
        let challenge = self.auth.lock().await.challenge.clone();
        let authorization = match challenge {
            // No challenge: the registry is open, and docker's login succeeds.
            None => return Ok(()),
            Some(ch) if ch.scheme == "bearer" => {
                let token =
                    self.login_token(&ch, username, &basic)
                        .await
                        .map_err(|source| LoginError::Token {
                            url: shown.clone(),
                            source,
                        })?;
                format!("Bearer {token}")
            }
            Some(_) => basic,
        };
        let resp = self
            .client_for(&base)
            .get(base.clone())
            .header(AUTHORIZATION, authorization)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| transport_error("Get", &base, shown.clone(), &e))?;
        let status = resp.status();
        if status == StatusCode::OK {
            return Ok(());
        }
        Err(LoginError::Refused {
            url: shown,
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
        })
    }

    /// `GET <realm>?account=<user>&client_id=rpull&service=<service>` with basic auth: the
    /// token docker's login asks for (no scope).
    async fn login_token(
        &self,
        challenge: &super::challenge::Challenge,
        username: &str,
        basic: &str,
    ) -> Result<String, RegistryError> {
        let mut url = self.token_realm(challenge)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("account", username);
            q.append_pair("client_id", "rpull");
            if let Some(service) = challenge.param("service").filter(|s| !s.is_empty()) {
                q.append_pair("service", service);
            }
        }
        let client = self.clients.for_token_service();
        let mut shown = url.clone();
        shown.set_query(None);
        let body = auth_request(client.get(url).header(AUTHORIZATION, basic), &shown).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Auth(format!("invalid token response from {shown}: {e}")))?;
        Ok(parsed.into_token().map_err(RegistryError::Auth)?.value)
    }
}
