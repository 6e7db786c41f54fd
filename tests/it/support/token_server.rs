//! A token service of our own, on 127.0.0.1, for the real registry's `auth: token:` mode.
//!
//! It answers docker's token requests — `GET /token?service=…&scope=…[&account=…]`, anonymous or
//! with `Authorization: Basic`, and the OAuth refresh-token `POST /token` — with ES256 JWTs whose
//! `x5c` header carries the test CA's certificate, which is also the registry's
//! `rootcertbundle`, so registry 2.8 verifies them for real. Anonymous callers get pull access
//! to the [`TokenServer::public`] repositories only; known users (password or refresh token) get
//! pull access to everything they ask for. Refused scopes get a token with no access, and the
//! registry then answers `insufficient_scope`, as Docker Hub does.
//!
//! Every request is logged ([`TokenServer::requests`]) with its method, query, form body and
//! whether it carried `Authorization`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::pki::{base64, base64_decode, base64url, Pki};

/// The `service` the registry is configured with.
pub const SERVICE: &str = "rpull-test-registry";
/// The `issuer` the registry is configured with.
pub const ISSUER: &str = "rpull-test-token-service";

/// One request the token service received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The query string.
    pub query: String,
    /// The form body (POST).
    pub form: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, String>,
    refresh_tokens: HashMap<String, String>,
    public: Vec<String>,
    expired_tokens_left: u32,
    expires_in: Option<u64>,
    echo_authorization: bool,
    requests: Vec<TokenRequest>,
}

/// A running token service; it stops with the test process.
pub struct TokenServer {
    port: u16,
    state: Arc<Mutex<State>>,
    key: Arc<EcdsaKeyPair>,
    x5c: String,
}

impl TokenServer {
    /// Starts the service, signing with `pki`'s CA key.
    pub fn start(pki: &Pki) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("token server bind");
        let port = listener.local_addr().unwrap().port();
        let key = Arc::new(
            EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &pki.ca_key_pkcs8,
                &SystemRandom::new(),
            )
            .expect("CA key is P-256 PKCS#8"),
        );
        let server = TokenServer {
            port,
            state: Arc::new(Mutex::new(State::default())),
            key,
            x5c: base64(&pki.ca_der),
        };
        let (state, key, x5c) = (server.state.clone(), server.key.clone(), server.x5c.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, key, x5c) = (state.clone(), key.clone(), x5c.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &state, &key, &x5c);
                });
            }
        });
        server
    }

    /// `http://127.0.0.1:<port>/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The registry's `auth:` section for this service.
    pub fn registry_yaml(&self, pki: &Pki) -> String {
        format!(
            "auth:\n  token:\n    realm: \"{}\"\n    service: \"{SERVICE}\"\n    issuer: \"{ISSUER}\"\n    rootcertbundle: \"{}\"\n",
            self.realm(),
            pki.path("ca.pem").display()
        )
    }

    /// Adds a user.
    pub fn user(&self, name: &str, password: &str) -> &TokenServer {
        self.state
            .lock()
            .unwrap()
            .users
            .insert(name.into(), password.into());
        self
    }

    /// Adds a refresh token (an `identitytoken`) belonging to `user`.
    pub fn refresh_token(&self, token: &str, user: &str) -> &TokenServer {
        self.state
            .lock()
            .unwrap()
            .refresh_tokens
            .insert(token.into(), user.into());
        self
    }

    /// Makes `repo` pullable anonymously.
    pub fn public(&self, repo: &str) -> &TokenServer {
        self.state.lock().unwrap().public.push(repo.into());
        self
    }

    /// The next `n` tokens handed out are already expired (the registry refuses them).
    pub fn expire_next(&self, n: u32) -> &TokenServer {
        self.state.lock().unwrap().expired_tokens_left = n;
        self
    }

    /// Answers every later token request with this `expires_in` (a hostile service may send
    /// any number) instead of 300.
    pub fn expires_in(&self, seconds: u64) -> &TokenServer {
        self.state.lock().unwrap().expires_in = Some(seconds);
        self
    }

    /// Makes refusals echo the request's `Authorization` header, decoded too, in their
    /// message (`denied: got Basic dTpw = u:p`), as some broken services do.
    pub fn echo_authorization(&self) -> &TokenServer {
        self.state.lock().unwrap().echo_authorization = true;
        self
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// A long-lived token with `actions` (e.g. `"push,pull"`) on each of `repos`, for the
    /// harness's own pushes.
    pub fn mint(&self, repos: &[&str], actions: &str) -> String {
        let access: Vec<serde_json::Value> = repos
            .iter()
            .map(|r| serde_json::json!({"type":"repository","name":r,"actions":actions.split(',').collect::<Vec<_>>()}))
            .collect();
        sign(&self.key, &self.x5c, "harness", access, 3600)
    }
}

fn sign(
    key: &EcdsaKeyPair,
    x5c: &str,
    subject: &str,
    access: Vec<serde_json::Value>,
    lifetime: i64,
) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let header = serde_json::json!({"typ":"JWT","alg":"ES256","x5c":[x5c]});
    let (nbf, exp) = if lifetime > 0 {
        (now - 10, now + lifetime)
    } else {
        (now - 7200, now - 3600)
    };
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE,
        "exp": exp, "nbf": nbf, "iat": nbf,
        "jti": format!("{now}-{}", rand_u64()), "access": access,
    });
    let input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).expect("sign");
    format!("{input}.{}", base64url(sig.as_ref()))
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

fn param(s: &str, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(s.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn serve(stream: TcpStream, state: &Mutex<State>, key: &EcdsaKeyPair, x5c: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(v.trim().to_string()),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let form = String::from_utf8_lossy(&body).into_owned();
    let query = target
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();

    let mut st = state.lock().unwrap();
    st.requests.push(TokenRequest {
        method: method.clone(),
        query: query.clone(),
        form: form.clone(),
        authorization: authorization.clone(),
    });
    let params = if method == "POST" { &form } else { &query };
    // Who is asking?
    let user: Result<Option<String>, ()> = if method == "POST" {
        match param(&form, "grant_type").first().map(String::as_str) {
            Some("refresh_token") => {
                let t = param(&form, "refresh_token").pop().unwrap_or_default();
                st.refresh_tokens.get(&t).cloned().map(Some).ok_or(())
            }
            _ => Err(()),
        }
    } else if let Some(basic) = authorization.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        let decoded = String::from_utf8_lossy(&base64_decode(basic)).into_owned();
        match decoded.split_once(':') {
            Some((u, p)) if st.users.get(u).is_some_and(|want| want == p) => Ok(Some(u.to_string())),
            _ => Err(()),
        }
    } else {
        Ok(None)
    };
    let mut out = stream;
    let Ok(user) = user else {
        let echo = st.echo_authorization;
        drop(st);
        let message = match authorization.as_deref() {
            Some(a) if echo => {
                let decoded = a
                    .strip_prefix("Basic ")
                    .map(|b| String::from_utf8_lossy(&base64_decode(b)).into_owned())
                    .unwrap_or_default();
                format!("incorrect username or password: got {a} = {decoded}")
            }
            _ => "incorrect username or password".to_string(),
        };
        let body = serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":message}]}).to_string();
        return write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    let mut access = Vec::new();
    for scope in param(params, "scope") {
        for one in scope.split(' ') {
            let mut f = one.splitn(3, ':');
            let (Some("repository"), Some(name)) = (f.next(), f.next()) else {
                continue;
            };
            if user.is_some() || st.public.iter().any(|p| p == name) {
                access.push(serde_json::json!({"type":"repository","name":name,"actions":["pull"]}));
            }
        }
    }
    let expires_in = st.expires_in.unwrap_or(300);
    let lifetime = if st.expired_tokens_left > 0 {
        st.expired_tokens_left -= 1;
        -1
    } else {
        300
    };
    drop(st);
    let token = sign(key, x5c, user.as_deref().unwrap_or(""), access, lifetime);
    let body = if method == "POST" {
        serde_json::json!({"access_token": token, "expires_in": expires_in, "scope": ""})
    } else {
        serde_json::json!({"token": token, "access_token": token, "expires_in": expires_in})
    }
    .to_string();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
