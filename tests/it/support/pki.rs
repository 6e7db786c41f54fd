//! A throw-away PKI for TLS tests, made with rcgen: one CA, a server certificate for
//! `localhost` and `127.0.0.1` signed by it, and a client certificate signed by it. Everything
//! is written as PEM files into a temporary directory kept alive by [`Pki`].

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

/// PEM files of a CA, a server pair and a client pair.
pub struct Pki {
    dir: TempDir,
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The CA's certificate in DER (for a JWT `x5c`).
    pub ca_der: Vec<u8>,
    /// The CA's private key, PKCS#8 DER (the token service signs with it).
    pub ca_key_pkcs8: Vec<u8>,
    /// The client certificate (PEM).
    pub client_cert_pem: String,
    /// The client key (PEM).
    pub client_key_pem: String,
}

impl Pki {
    /// A new CA with server (`localhost`, `127.0.0.1`) and client certificates.
    pub fn new() -> Pki {
        let dir = super::temp_dir("rpull-pki-");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_key_pkcs8 = ca_key.serialize_der();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rpull test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

        let server_key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server.distinguished_name.push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca).expect("server certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "rpull test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca).expect("client certificate");

        let pki = Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            ca_key_pkcs8,
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            dir,
        };
        fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        fs::write(pki.path("server.pem"), server_cert.pem()).unwrap();
        fs::write(pki.path("server.key"), server_key.serialize_pem()).unwrap();
        pki
    }

    /// A file in the PKI directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `tls:` block for [`super::RegistryConfig::http_extra_yaml`]; with `client_auth`, the
    /// registry requires a client certificate signed by the CA.
    pub fn registry_tls_yaml(&self, client_auth: bool) -> String {
        let mut y = format!(
            "  tls:\n    certificate: \"{}\"\n    key: \"{}\"\n",
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        if client_auth {
            y += &format!("    clientcas:\n      - \"{}\"\n", self.path("ca.pem").display());
        }
        y
    }

    /// Writes `<certs_d>/<host>/ca.crt` (and `client.cert` + `client.key` with `client`).
    pub fn write_certs_d(&self, certs_d: &Path, host: &str, client: bool) {
        let dir = certs_d.join(host);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ca.crt"), &self.ca_pem).unwrap();
        if client {
            fs::write(dir.join("client.cert"), &self.client_cert_pem).unwrap();
            fs::write(dir.join("client.key"), &self.client_key_pem).unwrap();
        }
    }

    /// A blocking client trusting the CA, optionally presenting the client certificate, with
    /// `auth` (a full `Authorization` value) on every request.
    pub fn client(&self, client_cert: bool, auth: Option<&str>) -> reqwest::blocking::Client {
        super::install_crypto_provider();
        let mut b = reqwest::blocking::Client::builder()
            .no_proxy()
            .tls_certs_merge(vec![
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()
            ]);
        if client_cert {
            let pem = format!("{}\n{}", self.client_cert_pem, self.client_key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        if let Some(a) = auth {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::AUTHORIZATION, a.parse().unwrap());
            b = b.default_headers(h);
        }
        b.build().unwrap()
    }
}

/// Standard base64 (with padding).
pub fn base64(data: &[u8]) -> String {
    b64(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// URL-safe base64 without padding (JOSE).
pub fn base64url(data: &[u8]) -> String {
    b64(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn b64(data: &[u8], table: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        out.push(table[(n >> 18) as usize & 63] as char);
        out.push(table[(n >> 12) as usize & 63] as char);
        if chunk.len() > 1 {
            out.push(table[(n >> 6) as usize & 63] as char);
        } else if pad {
            out.push('=');
        }
        if chunk.len() > 2 {
            out.push(table[n as usize & 63] as char);
        } else if pad {
            out.push('=');
        }
    }
    out
}

/// Decodes standard base64 (padding optional); panics on bad input.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = table.iter().position(|&t| t == c).expect("base64") as u32;
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    out
}
