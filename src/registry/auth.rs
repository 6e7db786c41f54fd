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

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Url;

use super::transport::auth_request;
use super::{Registry, RegistryError};
use crate::scrub::Secrets;

/// What a user has for one registry. Secrets are redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A username and password (or personal access token).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An OAuth refresh token (`identitytoken` in config.json).
    IdentityToken(String),
    /// A bearer token sent as is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
            Credential::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
        }
    }
}

/// One parsed challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased: `bearer` or `basic`.
    pub scheme: String,
    /// Parameters with lower-cased keys.
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parses every challenge in one header value (RFC 7235: quoted strings with escapes,
/// commas inside quotes, several challenges per header).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            i += 1;
            continue;
        }
        // Is `word` a parameter name of the current challenge, or a new scheme?
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = header[i..].chars().next().unwrap_or(' ');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            if let Some(last) = out.last_mut() {
                last.params.insert(word.to_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: word.to_lowercase(),
                params: HashMap::new(),
            });
        }
    }
    out
}

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
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    /// Token (Docker's name).
    #[serde(default)]
    pub token: Option<String>,
    /// Token (OAuth's name); wins when both are present.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Lifetime in seconds; under 60 counts as 60, over [`MAX_TOKEN_LIFETIME`] as that.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// A refresh token, when one was asked for.
    #[serde(default)]
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

/// The challenge to answer among a response's `WWW-Authenticate` headers: Bearer over Basic.
pub(crate) fn preferred_challenge(headers: &HeaderMap) -> Option<Challenge> {
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
    fn parses_docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("scope"), Some("repository:library/debian:pull,push"));
    }

    #[test]
    fn parses_several_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a \"b\" c", Bearer realm=x,service=y, error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"a "b" c"#));
        assert_eq!(c[1].param("realm"), Some("x"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
    }

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
