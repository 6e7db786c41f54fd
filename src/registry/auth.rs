//! Registry authentication: `WWW-Authenticate` challenges, the credentials a user has for a
//! registry, and bearer tokens fetched from the token service and cached per scope.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

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
