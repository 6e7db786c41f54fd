//! Registries and images that more than one test module sets up the same way.
//!
//! * [`htpasswd_registry`]: basic auth behind TLS (registry access, CRI credentials);
//! * [`token_registry`]: token auth against a [`TokenServer`] of ours (registry access,
//!   hostile token services, CRI credentials); [`token_auth`] starts the three together;
//! * [`proxied_image`]: an image on a fresh registry behind a fault proxy (ranges,
//!   reliability, retries);
//! * [`slow_image`]: a 2 MB one-layer image whose blobs the fault proxy throttles, so a pull
//!   can be stopped in the middle (cancellation, CRI cancellation and sharing).

use super::fault_proxy::{Fault, FaultProxy, RequestLog, Rule};
use super::pki::{base64, Pki};
use super::token_server::TokenServer;
use super::{
    install_crypto_provider, Compression, Image, Layer, ManifestFormat, Platform, PushedImage, Registry,
    Scheme,
};

/// A registry with htpasswd auth (`user`/`password`) behind TLS, its certificate for
/// localhost / 127.0.0.1 from `pki`; with `client_auth` it also asks for a client certificate.
/// The harness pushes with the same credentials (and client certificate).
pub fn htpasswd_registry(pki: &Pki, user: &str, password: &str, client_auth: bool) -> Registry {
    let hash = bcrypt::hash_with_result(password, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoA);
    let htpasswd = pki.path("htpasswd");
    std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
    let basic = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    Registry::start_with(|c| {
        c.scheme = Scheme::Https;
        c.http_extra_yaml = pki.registry_tls_yaml(client_auth);
        c.extra_yaml = format!(
            "auth:\n  htpasswd:\n    realm: rpull-test\n    path: \"{}\"\n",
            htpasswd.display()
        );
        c.client = Some(pki.client(client_auth, Some(&basic)));
    })
}

/// A token-auth registry with `pki`'s CA as its token root, and the harness allowed to push
/// to `repos` with a token `tokens` minted.
pub fn token_registry(pki: &Pki, tokens: &TokenServer, repos: &[&str]) -> Registry {
    let bearer = format!("Bearer {}", tokens.mint(repos, "push,pull"));
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .default_headers(h)
        .build()
        .unwrap();
    Registry::start_with(|c| {
        c.extra_yaml = tokens.registry_yaml(pki);
        c.client = Some(client);
    })
}

/// A fresh registry holding `<repo>:v1`, behind a fault proxy; keep it alive while the proxy
/// is used.
pub struct ProxiedImage {
    pub registry: Registry,
    pub proxy: FaultProxy,
    pub pushed: PushedImage,
    /// `<proxy>/<repo>:v1`.
    pub reference: String,
}

impl ProxiedImage {
    /// The digest of the (bottom) layer.
    pub fn layer(&self) -> &str {
        &self.pushed.layer_digests[0]
    }

    /// GETs of the layer's blob, in order.
    pub fn layer_gets(&self) -> Vec<RequestLog> {
        self.proxy.gets(self.layer())
    }

    /// Applies `fault` to the first `times` GETs of the layer's blob (to all of them: `None`).
    pub fn fault_layer(&self, fault: Fault, times: Option<u32>) {
        let rule = Rule::get(self.layer(), fault);
        self.proxy.add_rule(match times {
            Some(n) => rule.times(n),
            None => rule,
        });
    }
}

/// Pushes `layers` as `<repo>:v1` (OCI, the host's platform) to a fresh registry and starts a
/// fault proxy in front of it.
pub fn proxied_image(repo: &str, layers: Vec<Layer>) -> ProxiedImage {
    let registry = Registry::start();
    let pushed = registry.push_layers(repo, "v1", layers);
    let proxy = FaultProxy::start(&registry.host());
    let reference = format!("{}/{repo}:v1", proxy.host());
    ProxiedImage {
        registry,
        proxy,
        pushed,
        reference,
    }
}

/// A [`token_registry`] with its token service and PKI; keep it alive while it is used.
pub struct TokenAuth {
    pub pki: Pki,
    pub tokens: TokenServer,
    pub registry: Registry,
}

/// Starts a token service (its users and public repositories set by `configure`) and a
/// [`token_registry`] trusting it, the harness allowed to push to `repos`.
pub fn token_auth(repos: &[&str], configure: impl FnOnce(&TokenServer)) -> TokenAuth {
    let pki = Pki::new();
    let tokens = TokenServer::start(&pki);
    configure(&tokens);
    let registry = token_registry(&pki, &tokens, repos);
    TokenAuth {
        pki,
        tokens,
        registry,
    }
}

/// A [`token_auth`] registry whose `repo` is public (an anonymous pull gets a token for it),
/// holding a small image (seed `seed`) as `<repo>:v1`.
pub fn public_token_image(repo: &str, seed: u64) -> TokenAuth {
    let auth = token_auth(&[repo], |tokens| {
        tokens.public(repo);
    });
    auth.registry.push_small_image(repo, "v1", seed);
    auth
}

/// The size of [`slow_image`]'s one layer.
pub const SLOW_LAYER_BYTES: usize = 2_000_000;

/// `bench/slow:v1`, one random layer of [`SLOW_LAYER_BYTES`] (seed 42) on a fresh registry,
/// behind a fault proxy that serves blob GETs at 400 kB/s. Returns the registry, the proxy,
/// the pushed image and its reference through the proxy; keep the first two alive.
pub fn slow_image() -> (Registry, FaultProxy, PushedImage, String) {
    let layer = Layer::random("big.bin", SLOW_LAYER_BYTES, 42, Compression::Gzip);
    let image = proxied_image("bench/slow", vec![layer]);
    image
        .proxy
        .add_rule(Rule::get("/blobs/", Fault::Throttle(400_000)));
    (image.registry, image.proxy, image.pushed, image.reference)
}
