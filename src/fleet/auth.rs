//! Bearer tokens: HS256 JWTs with `sub`, `roles`, optional `permissions` and `exp`, signed
//! with a shared key. Roles grant permissions (`admin` every one, `write` `docker:write` and
//! `job:read`, `read` `job:read`); a token's `permissions` add to its roles'.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The permission a pull needs.
pub const DOCKER_WRITE: &str = "docker:write";
/// The permission reading a job needs.
pub const JOB_READ: &str = "job:read";
/// Every permission there is (what `admin` holds).
pub const ALL_PERMISSIONS: &[&str] = &[DOCKER_WRITE, JOB_READ];

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for.
    pub sub: String,
    /// `admin`, `write`, `read`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Extra `resource:verb` permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
}

impl Claims {
    /// Whether the roles or the extra permissions grant `permission`.
    pub fn allows(&self, permission: &str) -> bool {
        self.roles
            .iter()
            .any(|role| role_permissions(role).contains(&permission))
            || self.permissions.iter().flatten().any(|p| p == permission)
    }
}

/// The permissions a role holds.
pub fn role_permissions(role: &str) -> &'static [&'static str] {
    match role {
        "admin" => ALL_PERMISSIONS,
        "write" => &[DOCKER_WRITE, JOB_READ],
        "read" => &[JOB_READ],
        _ => &[],
    }
}

/// Why a key could not be read or a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The signing key file could not be read.
    #[error("cannot read the signing key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The signing key file is empty.
    #[error("the signing key file {0} is empty")]
    EmptyKey(std::path::PathBuf),
    /// Not three base64url parts with JSON inside.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm.
    #[error("unsupported signing algorithm (only HS256)")]
    Algorithm,
    /// The signature does not match.
    #[error("signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("token is expired")]
    Expired,
}

/// A signing key (the file's bytes, a trailing newline dropped).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// A key from bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> SigningKey {
        SigningKey(bytes.into())
    }

    /// Reads the key from `path`.
    pub fn read(path: &Path) -> Result<SigningKey, AuthError> {
        let mut bytes = std::fs::read(path).map_err(|source| AuthError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(AuthError::EmptyKey(path.to_path_buf()));
        }
        Ok(SigningKey(bytes))
    }

    fn mac(&self, input: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(input);
        mac
    }

    /// Signs `claims` as a compact JWT.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let input = format!("{header}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(input.as_bytes()).finalize().into_bytes());
        format!("{input}.{signature}")
    }

    /// Verifies `token`'s signature and expiry at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(AuthError::Malformed)?;
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let input_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
        self.mac(&token.as_bytes()[..input_len])
            .verify_slice(&signature)
            .map_err(|_| AuthError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(AuthError::Malformed)?;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(roles: &[&str], permissions: Option<&[&str]>, exp: u64) -> Claims {
        Claims {
            sub: "ci".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            permissions: permissions.map(|p| p.iter().map(|p| p.to_string()).collect()),
            exp,
            iat: 0,
        }
    }

    #[test]
    fn tokens_round_trip_and_check_signature_and_expiry() {
        let key = SigningKey::new("secret");
        let c = claims(&["write"], None, 2000);
        let token = key.sign(&c);
        assert_eq!(key.verify(&token, 1000).unwrap(), c);
        assert!(matches!(key.verify(&token, 2000), Err(AuthError::Expired)));
        assert!(matches!(
            SigningKey::new("other").verify(&token, 1000),
            Err(AuthError::Signature)
        ));
        assert!(matches!(key.verify("a.b", 1000), Err(AuthError::Malformed)));
        assert!(matches!(key.verify("", 1000), Err(AuthError::Malformed)));
        // A changed payload with the old signature is refused.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&["admin"], None, 2000)).unwrap());
        parts[1] = &forged;
        assert!(matches!(
            key.verify(&parts.join("."), 1000),
            Err(AuthError::Signature)
        ));
        // alg none is refused.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), parts[2]);
        assert!(matches!(key.verify(&none, 1000), Err(AuthError::Algorithm)));
    }

    #[test]
    fn a_known_hs256_token_verifies() {
        // Built independently with Python's hmac and base64 modules: header
        // {"alg":"HS256","typ":"JWT"}, claims {"sub":"x","roles":["read"],"exp":4102444800}, key "k".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4Iiwicm9sZXMiOlsicmVhZCJdLCJleHAiOjQxMDI0NDQ4MDB9.KBYSXkpnP0MPLiG5rcpjUqb4w_OIJf9SFAr6Sz4SblA";
        let c = SigningKey::new("k").verify(token, 1000).unwrap();
        assert_eq!(c.sub, "x");
        assert!(c.allows(JOB_READ) && !c.allows(DOCKER_WRITE));
    }

    #[test]
    fn roles_grant_permissions() {
        assert!(claims(&["admin"], None, 1).allows(DOCKER_WRITE));
        assert!(claims(&["admin"], None, 1).allows(JOB_READ));
        assert!(claims(&["write"], None, 1).allows(DOCKER_WRITE));
        assert!(claims(&["write"], None, 1).allows(JOB_READ));
        assert!(!claims(&["read"], None, 1).allows(DOCKER_WRITE));
        assert!(claims(&["read"], None, 1).allows(JOB_READ));
        assert!(!claims(&[], None, 1).allows(JOB_READ));
        assert!(claims(&["read"], Some(&[DOCKER_WRITE]), 1).allows(DOCKER_WRITE));
        assert!(!claims(&["bogus"], None, 1).allows(JOB_READ));
    }
}
