//! Registry access as a docker user expects it (issue #3), end to end against the real
//! distribution registry: basic auth behind TLS with `certs.d` CAs and client certificates,
//! token auth against a token service of ours (anonymous, password, identity token, refresh on
//! 401, denied scopes), credentials never leaving their host on a blob redirect, credential
//! helpers, and docker's messages word for word with exit status 1.

use std::path::Path;

use crate::support::fault_proxy::{assert_no_authorization, FaultProxy, RequestLog};
use crate::support::pki::{base64, Pki};
use crate::support::setups::{public_token_image, token_auth, TokenAuth};
use crate::support::*;
use serde_json::json;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pa55word";

/// A registry with htpasswd auth for [`USER`] behind TLS (certificate for localhost / 127.0.0.1
/// from `pki`).
fn htpasswd_registry(pki: &Pki, client_auth: bool) -> Registry {
    setups::htpasswd_registry(pki, USER, PASSWORD, client_auth)
}

/// `auths` entry for `host` with the test user and `password`.
fn auths_for(host: &str, password: &str) -> serde_json::Value {
    json!({"auths": {host: {"auth": base64(format!("{USER}:{password}").as_bytes())}}})
}

/// `auths` entry for `host` with the test user's password.
fn auth_config(host: &str) -> serde_json::Value {
    auths_for(host, PASSWORD)
}

/// An htpasswd registry behind TLS holding `<repo>:v1`; nothing trusts its CA yet.
struct TlsImage {
    pki: Pki,
    registry: Registry,
    host: String,
    image: String,
}

/// `client_auth`: the registry asks for a client certificate.
fn tls_image(repo: &str, seed: u64, client_auth: bool) -> TlsImage {
    let pki = Pki::new();
    let registry = htpasswd_registry(&pki, client_auth);
    registry.push_small_image(repo, "v1", seed);
    let host = format!("localhost:{}", registry.port());
    let image = format!("{host}/{repo}:v1");
    TlsImage {
        pki,
        registry,
        host,
        image,
    }
}

/// An htpasswd registry behind TLS holding `<repo>:v1`, and a certs.d that trusts its CA.
struct TrustedImage {
    _pki: Pki,
    _registry: Registry,
    host: String,
    certs: tempfile::TempDir,
    image: String,
}

fn trusted_image(repo: &str, seed: u64) -> TrustedImage {
    let TlsImage {
        pki,
        registry,
        host,
        image,
    } = tls_image(repo, seed, false);
    let certs = temp_dir("rpull-certs-d-");
    pki.write_certs_d(certs.path(), &host, false);
    TrustedImage {
        _pki: pki,
        _registry: registry,
        host,
        certs,
        image,
    }
}

impl TrustedImage {
    /// A [`verifying_sandbox`] whose certs.d trusts the registry's CA.
    fn sandbox(&self) -> Rpull {
        verifying_sandbox(self.certs.path())
    }
}

/// A sandbox that verifies TLS on loopback and reads `certs.d` from `certs_d`.
fn verifying_sandbox(certs_d: &Path) -> Rpull {
    let mut r = rpull();
    r.env("RPULL_NO_LOOPBACK_INSECURE", "1")
        .env("RPULL_CERTS_D", certs_d);
    r
}

/// A [`verifying_sandbox`] whose docker config holds the test user's credentials for `host`.
fn signed_in_sandbox(certs_d: &Path, host: &str) -> Rpull {
    let r = verifying_sandbox(certs_d);
    r.write_docker_config(&auth_config(host));
    r
}

fn assert_no_secret(out: &RpullOutput, secret: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "secret leaked\n{out}"
    );
}

#[test]
fn basic_auth_behind_tls_with_a_certs_d_ca() {
    let t = trusted_image("team/app", 1);
    let (host, image) = (&t.host, &t.image);

    let r = t.sandbox();
    // No credentials: docker's text, exit 1.
    let out = r.run([&image]);
    out.assert_code(1);
    assert!(
        out.stderr.trim_end().ends_with("no basic auth credentials"),
        "{out}"
    );

    // Wrong password: the registry's UNAUTHORIZED, rendered as docker renders it.
    r.write_docker_config(&auths_for(host, "wrong"));
    let out = r.run([&image]);
    out.assert_error("unauthorized: authentication required");

    r.write_docker_config(&auth_config(host));
    let out = r.run([&image]);
    out.assert_success();
    assert!(
        out.stdout
            .contains(&format!("Status: Downloaded newer image for {image}")),
        "{out}"
    );
    assert_no_secret(&out, PASSWORD);
}

#[test]
fn tls_is_verified_unless_the_registry_is_insecure() {
    let t = tls_image("app", 2, false);
    let TlsImage { host, image, .. } = &t;
    let empty = temp_dir("rpull-certs-d-");
    let r = signed_in_sandbox(empty.path(), host);

    // The CA is unknown: a TLS error, exit 1, nothing pulled.
    let out = r.run([&image]);
    out.assert_error(format!(
            "Get \"https://{host}/v2/\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
        ));
    // --insecure-registry: unverified TLS is allowed for that host.
    r.run(["--insecure-registry", host, image]).assert_success();

    // The config file's insecure-registries work the same.
    let r2 = signed_in_sandbox(empty.path(), host);
    let cfg = r2.home().join("rpull.json");
    std::fs::write(&cfg, json!({"insecure-registries": [&host]}).to_string()).unwrap();
    r2.run([Path::new("--config"), &cfg, Path::new(&image)])
        .assert_success();
}

#[test]
fn client_certificate_from_certs_d() {
    let t = tls_image("app", 3, true);
    let TlsImage { pki, host, image, .. } = &t;

    let ca_only = temp_dir("rpull-certs-d-");
    pki.write_certs_d(ca_only.path(), host, false);
    let r = signed_in_sandbox(ca_only.path(), host);
    r.run([&image]).assert_code(1);

    let with_client = temp_dir("rpull-certs-d-");
    pki.write_certs_d(with_client.path(), host, true);
    let r = signed_in_sandbox(with_client.path(), host);
    r.run([&image]).assert_success();

    // A key without its certificate: docker's message.
    let broken = temp_dir("rpull-certs-d-");
    std::fs::create_dir_all(broken.path().join(host)).unwrap();
    std::fs::write(broken.path().join(host).join("client.key"), &pki.client_key_pem).unwrap();
    let r = verifying_sandbox(broken.path());
    let out = r.run([&image]);
    out.assert_error("missing client certificate client.cert for key client.key");
}

#[test]
fn token_auth_anonymous_and_denied_like_docker_hub() {
    let auth = token_auth(&["pub/app", "private/app"], |t| {
        t.public("pub/app");
    });
    let TokenAuth { tokens, registry, .. } = &auth;
    registry.push_small_image("pub/app", "v1", 4);
    registry.push_small_image("private/app", "v1", 5);

    let r = rpull();
    r.run([registry.image_ref("pub/app", "v1")]).assert_success();
    let reqs = tokens.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|q| q.authorization.is_none()),
        "{reqs:?}"
    );
    assert!(
        reqs[0].query.contains("scope=repository%3Apub%2Fapp%3Apull"),
        "{reqs:?}"
    );
    // One token per scope for the whole pull (manifest, config and layer share it).
    assert_eq!(reqs.len(), 1, "tokens are cached per scope: {reqs:?}");

    let out = r.run([registry.image_ref("private/app", "v1")]);
    out.assert_error(format!(
            "pull access denied for {}/private/app, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            registry.host()
        ));
}

#[test]
fn token_auth_with_password_and_with_identity_token() {
    let auth = token_auth(&["private/app"], |t| {
        t.user(USER, PASSWORD).refresh_token("refresh-xyz", USER);
    });
    let TokenAuth { tokens, registry, .. } = &auth;
    registry.push_small_image("private/app", "v1", 6);
    let image = registry.image_ref("private/app", "v1");

    let r = rpull();
    r.write_docker_config(&auth_config(&registry.host()));
    let out = r.run([&image]);
    out.assert_success();
    assert_no_secret(&out, PASSWORD);
    let reqs = tokens.requests();
    assert_eq!(reqs[0].method, "GET");
    assert!(reqs[0].query.contains(&format!("account={USER}")), "{reqs:?}");
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some(format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes())).as_str())
    );

    // A wrong password: the token service's UNAUTHORIZED, exit 1, nothing pulled.
    let bad = rpull();
    bad.write_docker_config(&json!({"auths": {registry.host(): {"username": USER, "password": "nope"}}}));
    let out = bad.run([&image]);
    out.assert_error("unauthorized: incorrect username or password");

    // identitytoken: OAuth refresh-token POST, as docker does after `docker login`.
    let r = rpull();
    r.write_docker_config(&json!({"auths": {registry.host(): {"identitytoken": "refresh-xyz"}}}));
    let before = tokens.requests().len();
    let out = r.run([&image]);
    out.assert_success();
    assert_no_secret(&out, "refresh-xyz");
    let post = &tokens.requests()[before];
    assert_eq!(post.method, "POST");
    assert!(post.form.contains("grant_type=refresh_token"), "{post:?}");
    assert!(post.form.contains("refresh_token=refresh-xyz"), "{post:?}");
    assert!(post.form.contains("client_id=docker"), "{post:?}");
}

#[test]
fn an_expired_token_is_refreshed_on_401() {
    let auth = public_token_image("app", 7);
    let TokenAuth { tokens, registry, .. } = &auth;
    tokens.expire_next(1);
    let out = rpull().run([registry.image_ref("app", "v1")]);
    out.assert_success();
    assert_eq!(tokens.requests().len(), 2, "one refused token, one fresh one");
}

#[test]
fn credential_helper_failures_name_the_helper() {
    let registry = Registry::start();
    registry.push_small_image("app", "v1", 8);
    let r = rpull();
    r.write_docker_config(&json!({"credsStore": "nope-not-installed"}));
    let out = r.run([registry.image_ref("app", "v1")]);
    out.assert_error("error getting credentials - err: exec: \"docker-credential-nope-not-installed\": executable file not found in $PATH, out: ``");

    // A helper that fails: its exit and output, as docker shows them.
    let bin = temp_dir("rpull-helper-bin-");
    let helper = bin.path().join("docker-credential-broken");
    write_executable(&helper, "#!/bin/sh\necho 'keyring locked'\nexit 3\n");
    let mut r = rpull();
    r.path_first(bin.path());
    r.write_docker_config(&json!({"credHelpers": {registry.host(): "broken"}}));
    let out = r.run([registry.image_ref("app", "v1")]);
    out.assert_error("error getting credentials - err: exit status 3, out: `keyring locked`");
}

/// A token-auth registry behind a proxy (`front`) that redirects every blob GET to a "CDN"
/// under another host name: a second, open registry with the same blobs behind a logging
/// proxy (`cdn`), reached as `localhost:<port>`. Keep it alive while the proxies are used.
struct BehindACdn {
    _auth: TokenAuth,
    _cdn_registry: Registry,
    cdn: FaultProxy,
    front: FaultProxy,
    pushed: PushedImage,
    /// A sandbox holding [`USER`]'s credentials for `front`.
    sandbox: Rpull,
}

/// `push` pushes the same image (under `repo`) to the registry and to the CDN's.
fn behind_a_cdn(repo: &str, push: impl Fn(&Registry) -> PushedImage) -> BehindACdn {
    let auth = token_auth(&[repo], |t| {
        t.user(USER, PASSWORD);
    });
    let pushed = push(&auth.registry);
    let cdn_registry = Registry::start();
    push(&cdn_registry);
    let cdn = FaultProxy::start(&cdn_registry.host());
    let cdn_port = cdn.host().rsplit(':').next().unwrap().to_string();
    let front = FaultProxy::start(&auth.registry.host());
    front.redirect_blob_gets(format!("http://localhost:{cdn_port}"));
    let sandbox = rpull();
    sandbox.write_docker_config(&auth_config(&front.host()));
    BehindACdn {
        _auth: auth,
        _cdn_registry: cdn_registry,
        cdn,
        front,
        pushed,
        sandbox,
    }
}

#[test]
fn a_blob_redirect_to_another_host_carries_no_authorization() {
    let c = behind_a_cdn("private/app", |registry| {
        registry.push_small_image("private/app", "v1", 9)
    });
    let out = c.sandbox.run([format!("{}/private/app:v1", c.front.host())]);
    out.assert_success();
    assert_no_secret(&out, PASSWORD);
    let at_cdn = c.cdn.requests();
    assert!(
        at_cdn.iter().any(|q| q.path.contains(&c.pushed.layer_digests[0])),
        "the layer came from the CDN: {at_cdn:?}"
    );
    assert_no_authorization(&at_cdn, "hosts");
    assert!(
        c.front
            .requests_to("/manifests/")
            .iter()
            .all(RequestLog::has_bearer_token),
        "the registry itself gets the token"
    );
}

#[test]
fn each_range_of_a_large_blob_is_redirected_to_the_cdn_without_authorization() {
    let image = Image::new(
        Platform::host(),
        vec![Layer::random("big.bin", 1_500_000, 21, Compression::Gzip)],
    );
    let c = behind_a_cdn("private/big", |registry| {
        registry.push_image("private/big", "v1", &image, ManifestFormat::Oci)
    });
    let out = c.sandbox.run([
        "pull",
        "--parallel-download-threshold",
        "512KiB",
        "--parallel-chunk-size",
        "256KiB",
        &format!("{}/private/big:v1", c.front.host()),
    ]);
    out.assert_success();
    assert_no_secret(&out, PASSWORD);
    let layer = &c.pushed.layer_digests[0];
    let at_front = c.front.requests_to(layer);
    assert!(at_front.len() >= 6, "one redirect per range: {at_front:?}");
    assert!(
        at_front.iter().all(|q| q.range.is_some() && q.status == 307),
        "{at_front:?}"
    );
    assert!(
        at_front.iter().all(RequestLog::has_bearer_token),
        "the registry itself gets the token: {at_front:?}"
    );
    let at_cdn = c.cdn.requests_to(layer);
    assert_eq!(
        at_cdn.len(),
        at_front.len(),
        "every range came from the CDN: {at_cdn:?}"
    );
    assert!(
        at_cdn.iter().all(|q| q.range.is_some() && q.status == 206),
        "{at_cdn:?}"
    );
    assert_no_authorization(&c.cdn.requests(), "hosts");
    let out = c.sandbox.run(["check"]);
    assert!(out.success(), "{out}");
}

#[test]
fn an_unparsable_docker_config_is_a_warning_and_the_pull_goes_on() {
    let registry = Registry::start();
    registry.push_small_image("app", "v1", 10);
    let r = rpull();
    let path = r.docker_config_dir().join("config.json");
    std::fs::write(&path, "{not json").unwrap();
    let out = r.run([registry.image_ref("app", "v1")]);
    out.assert_success();
    let warning = out.stderr.lines().next().unwrap_or_default();
    assert!(
        warning.starts_with(&format!(
            "WARNING: Error parsing config file ({}): ",
            path.display()
        )),
        "{out}"
    );
}

#[test]
fn credentials_from_a_helper_and_from_docker_auth_config() {
    let t = trusted_image("app", 16);
    let (host, image) = (&t.host, &t.image);

    // credHelpers: `docker-credential-<name> get` with the registry key on stdin.
    let bin = temp_dir("rpull-helper-bin-");
    let asked = bin.path().join("asked");
    let helper = bin.path().join("docker-credential-testvault");
    write_executable(
        &helper,
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\ncat > '{}'\necho '{{\"ServerURL\":\"{host}\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n",
            asked.display()
        ),
    );
    let mut r = t.sandbox();
    r.path_first(bin.path());
    r.write_docker_config(&json!({"credsStore": "nope-not-installed", "credHelpers": {host: "testvault"}}));
    let out = r.run([&image]);
    out.assert_success();
    assert_no_secret(&out, PASSWORD);
    assert_eq!(std::fs::read_to_string(&asked).unwrap().trim(), host);

    // DOCKER_AUTH_CONFIG comes before the file.
    let mut r = t.sandbox();
    r.env("DOCKER_AUTH_CONFIG", auth_config(host).to_string());
    r.write_docker_config(&auths_for(host, "wrong"));
    r.run([&image]).assert_success();
}

#[test]
fn cert_dir_gives_this_pull_its_ca_and_client_certificate() {
    let t = tls_image("app", 4, true);
    let TlsImage { pki, host, image, .. } = &t;
    // certs.d is empty: without --cert-dir the CA is unknown.
    let empty = temp_dir("rpull-certs-d-");
    let r = signed_in_sandbox(empty.path(), host);
    r.run([&image]).assert_code(1);
    // podman's --cert-dir names the directory holding the CA and the client pair directly.
    let certs = temp_dir("rpull-cert-dir-");
    pki.write_certs_d(certs.path(), host, true);
    let dir = certs.path().join(host);
    r.run([Path::new("--cert-dir"), &dir, Path::new(&image)])
        .assert_success();
    // It applies to that pull only.
    let r2 = signed_in_sandbox(empty.path(), host);
    r2.run([&image]).assert_code(1);
}

/// `login` reaches a registry with the same settings a pull has: certs.d from `RPULL_CERTS_D`
/// and the config file's `insecure-registries` (it used the built-in defaults and ignored both).
#[test]
fn login_uses_the_settings_a_pull_uses() {
    let t = trusted_image("team/login", 9);
    let host = &t.host;
    let login = ["login", "-u", USER, "-p", PASSWORD, host.as_str()];

    // certs.d trusts the registry's CA: verified TLS succeeds.
    let r = t.sandbox();
    let out = r.run(login);
    out.assert_success();
    assert!(out.stdout.contains("Login Succeeded"), "{out}");

    // Without the CA, verified TLS fails ...
    let empty = temp_dir("rpull-certs-d-");
    let r = verifying_sandbox(empty.path());
    let out = r.run(login);
    out.assert_code(1);
    assert!(out.stderr.to_lowercase().contains("certificate"), "{out}");
    assert!(!r.docker_config_dir().join("config.json").exists());

    // ... unless the config file lists the registry as insecure.
    let files = temp_dir("rpull-config-");
    let config = files.path().join("config.json");
    std::fs::write(&config, json!({"insecure-registries": [&host]}).to_string()).unwrap();
    let mut r = verifying_sandbox(empty.path());
    r.env("RPULL_CONFIG", &config);
    let out = r.run(login);
    out.assert_success();
    assert!(out.stdout.contains("Login Succeeded"), "{out}");
}
