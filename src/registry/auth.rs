//! Registry authentication: `WWW-Authenticate` challenges and which one to answer, the
//! credentials a user has for a registry, and the `Authorization` for a scope: Basic, a
//! registry token as is, or a bearer token fetched from the token service (GET with Basic
//! auth, or the OAuth2 refresh-token POST for an identity token) and cached per scope until
//! it expires. The credential and every token are recorded as secrets for [`crate::scrub`].
//!
//! It does not send registry requests (`transport.rs` asks it for the header and tells it of
//! a new challenge) nor ping (`scheme.rs` records the first challenge here).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;

use super::challenge::{Challenge, Credential};
use super::transport::auth_request;
use super::{Registry, RegistryError};
use crate::scrub::Secrets;

/// A bearer token and when it stops being usable.
#[derive(Clone)]
pub struct Token {
    /// The token text.
    pub value: String,
    /// When to stop using it.
    pub expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, expires {:?})", self.expires)
    }
}

impl Token {
    /// Whether it is still good for another few seconds.
    pub fn is_fresh(&self) -> bool {
        Instant::now() + Duration::from_secs(5) < self.expires
    }
}

/// The longest a token is used for, whatever `expires_in` says (any number fits a `u64`, and
/// `Instant` arithmetic must not overflow): past it, the token is simply asked for again.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The token service's answer.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct TokenResponse {
    /// Token (Docker's name).
    pub token: Option<String>,
    /// Token (OAuth's name); wins when both are present.
    pub access_token: Option<String>,
    /// Lifetime in seconds; under 60 counts as 60, over [`MAX_TOKEN_LIFETIME`] as that.
    pub expires_in: Option<u64>,
    /// A refresh token, when one was asked for.
    pub refresh_token: Option<String>,
}

impl TokenResponse {
    /// The usable token, or docker's error when there is none.
    pub fn into_token(self) -> Result<Token, String> {
        let value = self
            .access_token
            .filter(|t| !t.is_empty())
            .or(self.token.filter(|t| !t.is_empty()))
            .ok_or_else(|| "authorization server did not include a token in the response".to_string())?;
        let secs = self
            .expires_in
            .unwrap_or(60)
            .clamp(60, MAX_TOKEN_LIFETIME.as_secs());
        Ok(Token {
            value,
            expires: Instant::now() + Duration::from_secs(secs),
        })
    }
}

/// The pull scope for a repository path.
pub fn pull_scope(path: &str) -> String {
    format!("repository:{path}:pull")
}

/// What a [`Registry`] knows about its auth: the challenge to answer, and tokens by scope.
#[derive(Default)]
pub(crate) struct AuthState {
    pub(crate) challenge: Option<Challenge>,
    pub(crate) tokens: HashMap<String, Token>,
}

impl Registry {
    /// The `Authorization` value for `scope`, fetching a token when the registry wants one.
    pub(crate) async fn authorization(
        &self,
        scope: &str,
        force_refresh: bool,
    ) -> Result<Option<String>, RegistryError> {
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
    pub(crate) fn token_realm(&self, challenge: &Challenge) -> Result<Url, RegistryError> {
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
        let body = auth_request(request, &shown).await.map_err(|e| match e {
            // A status without an error envelope: say where it came from.
            e @ RegistryError::UnexpectedStatus(..) => {
                RegistryError::Auth(format!("getting a token from {shown}: {e}"))
            }
            other => other,
        })?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Auth(format!("invalid token response from {shown}: {e}")))?;
        parsed.into_token().map_err(RegistryError::Auth)
    }
}

/// The forms of `credential` that shown text must not hold.
pub(crate) fn credential_secrets(credential: Option<&Credential>) -> Secrets {
    let mut secrets = Secrets::new();
    match credential {
        Some(Credential::Basic { username, password }) => secrets.add_basic(username, password),
        Some(Credential::IdentityToken(t) | Credential::RegistryToken(t)) => secrets.add(t),
        None => {}
    }
    secrets
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
    fn token_response() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"token":"a","access_token":"b","expires_in":10}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value, "b");
        assert!(t.expires > Instant::now() + Duration::from_secs(50));
        for huge in [1u64 << 63, u64::MAX] {
            let t: TokenResponse =
                serde_json::from_str(&format!(r#"{{"token":"a","expires_in":{huge}}}"#)).unwrap();
            let t = t.into_token().unwrap();
            assert!(t.expires <= Instant::now() + MAX_TOKEN_LIFETIME);
            assert!(t.is_fresh());
        }
        let t: TokenResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(
            t.into_token().unwrap_err(),
            "authorization server did not include a token in the response"
        );
        assert!(!format!("{:?}", Credential::RegistryToken("s3cret".into())).contains("s3cret"));
    }
}
