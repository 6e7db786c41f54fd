//! The credentials of one `PullImage` call, chosen as containerd's CRI `ParseAuth` chooses
//! them: when `server_address` is set and names another registry than the pulled one, none;
//! else `username`/`password`; else `identity_token`; else `auth` (base64 `user:password`).
//! They answer for the pulled registry during this call only, before the node's own
//! credentials; nothing here stores or logs them.
//!
//! containerd compares `url.Parse(server_address).Host` with the registry host, which never
//! matches a bare `host:port` (Go parses it as a scheme or a path); rpull compares the docker
//! config keys instead (`registry_key`), so `https://index.docker.io/v1/`, `docker.io` and
//! `registry-1.docker.io` all name Docker Hub and `127.0.0.1:5000` names itself.

use crate::credentials::{decode_auth, registry_key, CredentialError};
use crate::reference::Reference;
use crate::registry::Credential;

use super::api::AuthConfig;

/// The credential `auth` gives for pulling `reference`, if any.
pub fn request_credential(
    auth: Option<&AuthConfig>,
    reference: &Reference,
) -> Result<Option<Credential>, CredentialError> {
    let Some(auth) = auth else { return Ok(None) };
    if !auth.server_address.trim().is_empty()
        && registry_key(&auth.server_address) != reference.credential_key()
    {
        return Ok(None);
    }
    if !auth.username.is_empty() {
        return Ok(Some(Credential::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        }));
    }
    if !auth.identity_token.is_empty() {
        return Ok(Some(Credential::IdentityToken(auth.identity_token.clone())));
    }
    if !auth.auth.is_empty() {
        let (username, password) = decode_auth(&reference.credential_key(), &auth.auth)?;
        return Ok(Some(Credential::Basic { username, password }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse_normalized(s).unwrap()
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn containerd_order() {
        let reg = r("127.0.0.1:5000/app:v1");
        let mut a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            identity_token: "tok".into(),
            auth: "YWxpY2U6c2VjcmV0".into(), // alice:secret
            ..Default::default()
        };
        assert_eq!(request_credential(Some(&a), &reg).unwrap(), basic("u", "p"));
        a.username.clear();
        assert_eq!(
            request_credential(Some(&a), &reg).unwrap(),
            Some(Credential::IdentityToken("tok".into()))
        );
        a.identity_token.clear();
        assert_eq!(
            request_credential(Some(&a), &reg).unwrap(),
            basic("alice", "secret")
        );
        a.auth = "bm8tY29sb24=".into(); // no-colon
        assert!(request_credential(Some(&a), &reg).is_err());
        a.auth = "!!!".into();
        assert!(request_credential(Some(&a), &reg).is_err());
        a.auth.clear();
        assert_eq!(request_credential(Some(&a), &reg).unwrap(), None);
        assert_eq!(request_credential(None, &reg).unwrap(), None);
    }

    #[test]
    fn server_address_must_name_the_pulled_registry() {
        let mut a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let reg = r("127.0.0.1:5000/app:v1");
        for same in [
            "127.0.0.1:5000",
            "https://127.0.0.1:5000",
            "http://127.0.0.1:5000/v2/",
        ] {
            a.server_address = same.into();
            assert_eq!(
                request_credential(Some(&a), &reg).unwrap(),
                basic("u", "p"),
                "{same}"
            );
        }
        for other in ["127.0.0.1:5001", "https://registry.example.com", "docker.io"] {
            a.server_address = other.into();
            assert_eq!(request_credential(Some(&a), &reg).unwrap(), None, "{other}");
        }
        let hub = r("debian:bookworm");
        for same in ["https://index.docker.io/v1/", "docker.io", "registry-1.docker.io"] {
            a.server_address = same.into();
            assert_eq!(
                request_credential(Some(&a), &hub).unwrap(),
                basic("u", "p"),
                "{same}"
            );
        }
    }
}
