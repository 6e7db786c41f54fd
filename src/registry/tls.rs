//! The HTTP clients of one registry and their TLS: docker's `certs.d/<host>/` (extra CA roots,
//! a client certificate pair), the proxies (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`, never
//! for loopback), timeouts and the user agent; and the wording of TLS failures as Go's
//! crypto/tls and crypto/x509 word them, which is what docker shows.
//!
//! Which host may skip verification is decided in `hosts.rs`; requests are sent in
//! `transport.rs`. Nothing here touches the network.

use std::path::Path;

use reqwest::Url;

use super::{hosts, ProxySettings, RegistryError, RegistryOptions};

/// The two clients of one registry: one that verifies TLS, and one that does not (the same
/// as the first unless the host is allowed to be insecure). Both follow no redirects: the
/// transport does, to keep credentials on their origin.
pub(crate) struct Clients {
    host: String,
    insecure_allowed: bool,
    secure: reqwest::Client,
    insecure: reqwest::Client,
}

impl Clients {
    /// The clients for `host`, with its `certs.d` directory (or its entry of
    /// [`RegistryOptions::cert_dirs`]) applied.
    pub(crate) fn new(host: &str, opts: &RegistryOptions) -> Result<Clients, RegistryError> {
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
                dial: false,
            })
        };
        let insecure_allowed = opts.allows_insecure(host);
        Ok(Clients {
            host: host.to_string(),
            insecure_allowed,
            secure: build(false)?,
            insecure: build(insecure_allowed)?,
        })
    }

    /// Whether the registry's host may use plain HTTP and unverified TLS.
    pub(crate) fn insecure_allowed(&self) -> bool {
        self.insecure_allowed
    }

    /// The client for a request to `url`: unverified TLS only on the registry's own host and
    /// port ([`hosts::is_on_host`]), and only when that host is allowed to be insecure.
    pub(crate) fn for_url(&self, url: &Url) -> &reqwest::Client {
        if self.insecure_allowed && hosts::is_on_host(&self.host, url) {
            &self.insecure
        } else {
            &self.secure
        }
    }

    /// The client for the token service (unverified TLS only for an insecure registry).
    pub(crate) fn for_token_service(&self) -> &reqwest::Client {
        if self.insecure_allowed {
            &self.insecure
        } else {
            &self.secure
        }
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
    let unusable =
        |name: &str, e: reqwest::Error| RegistryError::Certs(format!("{}: {e}", dir.join(name).display()));
    for name in &names {
        if let Some(e) = unpaired(&names, name) {
            return Err(e);
        }
        if name.ends_with(".crt") {
            let pem = read(name)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(name, e))?;
            out.roots.extend(certs);
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let mut pem = read(name)?;
            pem.push(b'\n');
            pem.extend(read(&format!("{stem}.key"))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| unusable(name, e))?;
            out.identity.get_or_insert(id);
        }
    }
    Ok(out)
}

/// Docker's error for a client certificate `<name>.cert` without its `<name>.key` among
/// `names`, or a key without its certificate.
fn unpaired(names: &[String], name: &str) -> Option<RegistryError> {
    let (partner, text) = if let Some(stem) = name.strip_suffix(".cert") {
        let key = format!("{stem}.key");
        let text = format!(
            "missing key {key} for client certificate {name}. CA certificates must use the extension .crt"
        );
        (key, text)
    } else {
        let cert = format!("{}.cert", name.strip_suffix(".key")?);
        let text = format!("missing client certificate {cert} for key {name}");
        (cert, text)
    };
    (!names.contains(&partner)).then_some(RegistryError::Certs(text))
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

/// The rustls error somewhere in `err`'s chain (hyper wraps it in `io::Error`s, which hide
/// their payload from `source()`).
pub(crate) fn find_tls_error(err: &reqwest::Error) -> Option<rustls::Error> {
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
pub(crate) fn tls_text(err: &rustls::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testfs::temp_file;

    #[test]
    fn certs_d_pairs_must_be_complete() {
        let (dir, cert) = temp_file("r.example:5000/client.cert", "x");
        assert!(load_cert_dir(&dir.path().join("other:1"))
            .unwrap()
            .roots
            .is_empty());
        let host = cert.parent().unwrap();
        assert_eq!(
            load_cert_dir(host).err().unwrap().to_string(),
            "missing key client.key for client certificate client.cert. CA certificates must use the extension .crt"
        );
        let (_dir, key) = temp_file("r.example:5000/client.key", "x");
        assert_eq!(
            load_cert_dir(key.parent().unwrap()).err().unwrap().to_string(),
            "missing client certificate client.cert for key client.key"
        );
        // Docker ignores what AppendCertsFromPEM finds no certificate in.
        let (_dir, ca) = temp_file("r.example:5000/ca.crt", "not a certificate");
        assert!(load_cert_dir(ca.parent().unwrap()).unwrap().roots.is_empty());
    }
}
