//! A real CNCF distribution registry (`docker-registry`) per test, and pushing images to it.
//!
//! [`Registry::start`] writes a config into a fresh temporary directory (filesystem storage
//! there, `127.0.0.1:<free port>`, no auth, deletes enabled), starts the binary, and waits until
//! `GET /v2/` answers with a marker header unique to this instance, so a test never talks to a
//! registry another test started on a recycled port. Startup retries on a port race. The process
//! is killed on `Drop` (and with the test binary, see [`super::process`]); its log stays in
//! [`Registry::log`] and is printed when startup fails.
//!
//! Pushing uses the plain HTTP API: monolithic blob uploads (`POST …/blobs/uploads/`, then
//! `PUT <Location>&digest=…`) and `PUT …/manifests/<ref>`. Every helper panics with the
//! registry's answer when something is off.
//!
//! The binary is `$RPULL_TEST_REGISTRY_BIN`, else `/usr/bin/docker-registry`, else
//! `docker-registry` on `PATH`. When it is missing the test fails with install instructions:
//! these tests never skip.
//!
//! Known limit of registry 2.8.x: `GET /v2/<name>/tags/list` ignores `n` and `last` and never
//! sends `Link` (tags come back all at once, in storage order); only `/v2/_catalog` paginates.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tempfile::TempDir;

use super::image::{index_json, to_bytes, Attestation, Image, IndexEntry, ManifestFormat, Platform};
use super::layer::Layer;
use super::process::{find_binary, kill_and_reap, path_from_env, spawn_tethered};
use super::{hex, pseudo_random_bytes, sha256_digest};

/// The environment variable naming the registry binary.
pub const REGISTRY_BIN_ENV: &str = "RPULL_TEST_REGISTRY_BIN";
/// Where Debian's `docker-registry` package installs the binary.
pub const DEFAULT_REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The response header carrying each instance's random marker.
pub const MARKER_HEADER: &str = "X-Rpull-Test-Registry";

/// `http` or `https`: how the harness itself talks to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (the default).
    Http,
    /// TLS; set [`RegistryConfig::http_extra_yaml`] to a `tls:` block and
    /// [`RegistryConfig::client`] to a client that trusts its certificate.
    Https,
}

/// How to start a registry. `RegistryConfig::default().start()` is [`Registry::start`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// YAML appended at the top level of the generated config, e.g. an `auth:` or `proxy:`
    /// section. Must not repeat the generated `version`, `log`, `storage` or `http` keys.
    pub extra_yaml: String,
    /// YAML appended inside the generated `http:` section, indented by two spaces, e.g.
    /// `"  tls:\n    certificate: /p/cert.pem\n    key: /p/key.pem\n"`.
    pub http_extra_yaml: String,
    /// Extra environment for the registry (it reads `REGISTRY_<SECTION>_<KEY>` overrides).
    pub env: Vec<(String, String)>,
    /// How the harness reaches the registry.
    pub scheme: Scheme,
    /// The client used for the readiness probe and the push helpers; `None` gives
    /// [`http_client`]. Set it for TLS or auth.
    pub client: Option<Client>,
    /// The registry binary; `None` resolves it as the module docs say.
    pub binary: Option<PathBuf>,
    /// How long to wait for `GET /v2/`.
    pub startup_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            extra_yaml: String::new(),
            http_extra_yaml: String::new(),
            env: Vec::new(),
            scheme: Scheme::Http,
            client: None,
            binary: None,
            startup_timeout: Duration::from_secs(10),
        }
    }
}

impl RegistryConfig {
    /// Starts a registry with this configuration.
    pub fn start(self) -> Registry {
        Registry::start_config(self)
    }
}

/// A client for talking to test servers: no proxy (whatever the environment says), sane
/// timeouts.
pub fn http_client() -> Client {
    install_crypto_provider();
    Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .build()
        .expect("building the test HTTP client")
}

/// Installs rustls's ring provider as the process default, once. reqwest is built with
/// `rustls-no-provider`, and building any client (even for plain HTTP) panics without one. Call
/// it before building your own clients (TLS tests); it only affects the test process.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A running registry; killed on drop, storage removed.
pub struct Registry {
    child: Child,
    port: u16,
    scheme: Scheme,
    client: Client,
    log_path: PathBuf,
    storage: PathBuf,
    // Dropped last, after the child is dead.
    dir: TempDir,
}

/// What [`Registry::push_image`] pushed.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The repository.
    pub repo: String,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The manifest bytes, as pushed.
    pub manifest_bytes: Vec<u8>,
    /// The manifest media type.
    pub media_type: String,
    /// The config blob's digest.
    pub config_digest: String,
    /// The config blob.
    pub config_bytes: Vec<u8>,
    /// The layer blob digests, bottom first.
    pub layer_digests: Vec<String>,
    /// The layer diff IDs, bottom first.
    pub diff_ids: Vec<String>,
    /// The image's platform.
    pub platform: Platform,
}

impl PushedImage {
    /// The entry pointing to this manifest in an index, with its platform.
    pub fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            media_type: self.media_type.clone(),
            digest: self.manifest_digest.clone(),
            size: self.manifest_bytes.len() as u64,
            platform: Some(self.platform.clone()),
            annotations: Default::default(),
        }
    }

    /// Docker's short image ID: the first 12 hex digits of the config digest.
    pub fn short_id(&self) -> &str {
        &self.config_digest["sha256:".len().."sha256:".len() + 12]
    }
}

/// What [`Registry::push_index`] pushed.
#[derive(Debug, Clone)]
pub struct PushedIndex {
    /// The repository.
    pub repo: String,
    /// The index digest.
    pub digest: String,
    /// The index bytes, as pushed.
    pub bytes: Vec<u8>,
    /// The index media type.
    pub media_type: String,
    /// The entries, in order.
    pub entries: Vec<IndexEntry>,
    /// The platform images, when pushed by [`Registry::push_multi_platform`].
    pub images: Vec<PushedImage>,
}

/// A fetched manifest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The `Content-Type`.
    pub media_type: String,
    /// The `Docker-Content-Digest` header.
    pub digest: String,
    /// The body.
    pub bytes: Vec<u8>,
}

impl FetchedManifest {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("manifest is JSON")
    }
}

impl Registry {
    /// Starts a registry with the default configuration. Panics (with install instructions
    /// when the binary is missing) if it cannot.
    pub fn start() -> Registry {
        RegistryConfig::default().start()
    }

    /// Starts a registry after `configure` has adjusted the default configuration.
    pub fn start_with(configure: impl FnOnce(&mut RegistryConfig)) -> Registry {
        let mut config = RegistryConfig::default();
        configure(&mut config);
        config.start()
    }

    fn start_config(config: RegistryConfig) -> Registry {
        let binary = resolve_binary(config.binary.as_deref());
        let client = config.client.clone().unwrap_or_else(http_client);
        let mut last_failure = String::new();
        for _attempt in 0..8 {
            let dir = super::temp_dir("rpull-registry-");
            let port = free_port();
            match try_start(&binary, &config, &client, dir, port) {
                Ok(registry) => return registry,
                Err(Failure::PortTaken(log)) => last_failure = log,
                Err(Failure::Fatal(message)) => panic!("{message}"),
            }
        }
        panic!("registry: port 127.0.0.1:<free> was taken every time; last log:\n{last_failure}");
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` (or `https://…`).
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<repo>:<tag>`, the reference to give rpull.
    pub fn image_ref(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }

    /// `127.0.0.1:<port>/<repo>@<digest>`.
    pub fn digest_ref(&self, repo: &str, digest: &str) -> String {
        format!("{}/{repo}@{digest}", self.host())
    }

    /// The registry's storage root (`rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The temporary directory holding config, log and storage; removed on drop.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client the helpers use.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The registry's log so far (warnings, errors, and the access log).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The path of a blob's data file in storage; overwrite it to make the registry serve
    /// corrupt content (it does not re-verify).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// Replaces a stored blob's bytes, keeping its digest: the registry will serve `bytes`
    /// under `digest`.
    pub fn corrupt_blob(&self, digest: &str, bytes: &[u8]) {
        let path = self.blob_path(digest);
        assert!(path.exists(), "no blob {digest} in storage at {}", path.display());
        fs::write(&path, bytes).expect("overwriting blob data");
    }

    /// `GET <url><path>` with optional `Accept` values.
    pub fn get(&self, path: &str, accept: &[&str]) -> Response {
        self.send(Method::GET, &format!("{}{path}", self.url()), |req| {
            if accept.is_empty() {
                req
            } else {
                req.header(ACCEPT, accept.join(", "))
            }
        })
    }

    /// Does `repo` link the blob `digest`?
    pub fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.url());
        let resp = self.send(Method::HEAD, &url, |req| req);
        match resp.status() {
            StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            status => panic!("HEAD {url}: unexpected {status}"),
        }
    }

    /// Uploads a blob (monolithically) unless `repo` has it already; returns its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        if self.blob_exists(repo, &digest) {
            return digest;
        }
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.url());
        let resp = self.send(Method::POST, &start, |req| req);
        let resp = expect_status(resp, StatusCode::ACCEPTED, &format!("POST {start}"));
        let location = header_str(resp.headers(), LOCATION.as_str())
            .unwrap_or_else(|| panic!("POST {start}: 202 without Location"));
        let put_url = upload_url(&start, &location, &digest);
        self.put_content(
            put_url.as_str(),
            "application/octet-stream",
            bytes,
            &digest,
            &format!("blob {digest} to {repo}"),
        );
        digest
    }

    /// Pushes a manifest (or index) under `reference` (a tag, or its own digest); returns its
    /// digest after checking the registry computed the same.
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url());
        self.put_content(
            &url,
            media_type,
            bytes,
            &digest,
            &format!("manifest {repo}:{reference}"),
        );
        digest
    }

    /// PUTs `bytes` as `content_type` to `url`; panics unless the registry answers 201 with
    /// `digest` as its `Docker-Content-Digest`. `what` names the content in messages.
    fn put_content(&self, url: &str, content_type: &str, bytes: &[u8], digest: &str, what: &str) {
        let resp = self.send(Method::PUT, url, |req| {
            req.header(CONTENT_TYPE, content_type).body(bytes.to_vec())
        });
        let resp = expect_status(resp, StatusCode::CREATED, &format!("PUT {what}"));
        let reported = header_str(resp.headers(), "docker-content-digest");
        assert_eq!(reported.as_deref(), Some(digest), "registry digest for {what}");
    }

    /// Pushes the manifest `doc` (serialised with [`to_bytes`]); its media type is read from its
    /// `mediaType` field.
    pub fn push_manifest_json(&self, repo: &str, reference: &str, doc: &Value) -> String {
        let media_type = doc["mediaType"].as_str().expect("document has a mediaType");
        self.push_manifest(repo, reference, media_type, &to_bytes(doc))
    }

    /// Pushes an image's layers, config and manifest, tagged `tag`.
    pub fn push_image(&self, repo: &str, tag: &str, image: &Image, format: ManifestFormat) -> PushedImage {
        self.push_image_as(repo, Some(tag), image, format)
    }

    /// Pushes an image with no tag (by its digest), as the platform images of an index are.
    pub fn push_image_untagged(&self, repo: &str, image: &Image, format: ManifestFormat) -> PushedImage {
        self.push_image_as(repo, None, image, format)
    }

    fn push_image_as(
        &self,
        repo: &str,
        tag: Option<&str>,
        image: &Image,
        format: ManifestFormat,
    ) -> PushedImage {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob);
        }
        let config_bytes = image.config_bytes();
        let config_digest = self.push_blob(repo, &config_bytes);
        let manifest_bytes = image.manifest_bytes(format);
        let manifest_digest = sha256_digest(&manifest_bytes);
        let media_type = format.manifest_media_type();
        self.push_manifest(repo, tag.unwrap_or(&manifest_digest), media_type, &manifest_bytes);
        PushedImage {
            repo: repo.to_string(),
            manifest_digest,
            manifest_bytes,
            media_type: media_type.to_string(),
            config_digest,
            config_bytes,
            layer_digests: image.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            platform: image.platform.clone(),
        }
    }

    /// Pushes a BuildKit attestation manifest for `subject` (untagged) and returns its index
    /// entry: platform `unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`,
    /// `vnd.docker.reference.digest: <subject>`.
    pub fn push_attestation(&self, repo: &str, subject: &PushedImage) -> IndexEntry {
        let attestation = Attestation::for_subject(&subject.manifest_digest);
        self.push_blob(repo, &attestation.statement);
        self.push_blob(repo, &attestation.config);
        let entry = attestation.index_entry(&subject.manifest_digest);
        self.push_manifest(repo, &entry.digest, &entry.media_type, &attestation.manifest);
        entry
    }

    /// Pushes an index (OCI) or manifest list (Docker) over `entries`, tagged `tag`. The
    /// manifests it references must be pushed first (the registry checks).
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        format: ManifestFormat,
        entries: &[IndexEntry],
    ) -> PushedIndex {
        let bytes = to_bytes(&index_json(format, entries));
        let media_type = format.index_media_type();
        let digest = self.push_manifest(repo, tag, media_type, &bytes);
        PushedIndex {
            repo: repo.to_string(),
            digest,
            bytes,
            media_type: media_type.to_string(),
            entries: entries.to_vec(),
            images: Vec::new(),
        }
    }

    /// Pushes one untagged image per platform, then an index over them tagged `tag`; with
    /// `attestations`, each image is followed by its BuildKit attestation entry, as
    /// `docker buildx build --provenance` lays them out (platform entries first, then
    /// attestations, in the same order).
    pub fn push_multi_platform(
        &self,
        repo: &str,
        tag: &str,
        format: ManifestFormat,
        images: &[Image],
        attestations: bool,
    ) -> PushedIndex {
        let pushed: Vec<PushedImage> = images
            .iter()
            .map(|img| self.push_image_untagged(repo, img, format))
            .collect();
        let mut entries: Vec<IndexEntry> = pushed.iter().map(PushedImage::index_entry).collect();
        if attestations {
            for image in &pushed {
                entries.push(self.push_attestation(repo, image));
            }
        }
        PushedIndex {
            images: pushed,
            ..self.push_index(repo, tag, format, &entries)
        }
    }

    /// Pushes an OCI image of `layers` for the host platform, with the default config.
    pub fn push_layers(&self, repo: &str, tag: &str, layers: Vec<Layer>) -> PushedImage {
        self.push_image(
            repo,
            tag,
            &Image::new(Platform::host(), layers),
            ManifestFormat::Oci,
        )
    }

    /// Pushes a small distinct single-layer OCI image (for tests that need "some image").
    /// `seed` makes the content and so the digests unique.
    pub fn push_small_image(&self, repo: &str, tag: &str, seed: u64) -> PushedImage {
        let data = pseudo_random_bytes(64, seed);
        let layer = super::layer::LayerBuilder::new()
            .file(&format!("file-{}", hex(&data[..4])), &data, 0o644)
            .build(super::layer::Compression::Gzip);
        self.push_layers(repo, tag, vec![layer])
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting `accept`; panics unless 200.
    pub fn get_manifest(&self, repo: &str, reference: &str, accept: &[&str]) -> FetchedManifest {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = expect_status(self.get(&path, accept), StatusCode::OK, &format!("GET {path}"));
        let media_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let digest = header_str(resp.headers(), "docker-content-digest").unwrap_or_default();
        let bytes = resp.bytes().expect("manifest body").to_vec();
        FetchedManifest {
            media_type,
            digest,
            bytes,
        }
    }

    /// `GET /v2/<repo>/blobs/<digest>`; panics unless 200.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = expect_status(self.get(&path, &[]), StatusCode::OK, &format!("GET {path}"));
        resp.bytes().expect("blob body").to_vec()
    }

    /// All tags of `repo` (one request: registry 2.8 does not paginate tags).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let path = format!("/v2/{repo}/tags/list");
        let resp = expect_status(self.get(&path, &[]), StatusCode::OK, &format!("GET {path}"));
        let doc: Value = serde_json::from_slice(&resp.bytes().expect("tags body")).expect("tags JSON");
        doc["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect()
    }

    /// Deletes a manifest by digest (later GETs by tag or digest give 404 `MANIFEST_UNKNOWN`).
    pub fn delete_manifest(&self, repo: &str, digest: &str) {
        self.delete(&format!("/v2/{repo}/manifests/{digest}"));
    }

    /// Unlinks a blob from `repo` (later GETs give 404 `BLOB_UNKNOWN`).
    pub fn delete_blob(&self, repo: &str, digest: &str) {
        self.delete(&format!("/v2/{repo}/blobs/{digest}"));
    }

    fn delete(&self, path: &str) {
        let url = format!("{}{path}", self.url());
        let resp = self.send(Method::DELETE, &url, |req| req);
        expect_status(resp, StatusCode::ACCEPTED, &format!("DELETE {path}"));
    }

    /// Sends `method url`, with what `build` adds (headers, a body); panics if it cannot be
    /// sent.
    fn send(
        &self,
        method: Method,
        url: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        build(self.client.request(method.clone(), url))
            .send()
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// Panics unless the registry process is still running.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "registry on port {} exited ({status}); log:\n{}",
                self.port,
                tail(&self.log(), 40)
            );
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if thread::panicking() {
            // Shown with the failing test's output.
            eprintln!(
                "--- registry {} log tail:\n{}",
                self.host(),
                tail(&self.log(), 30)
            );
        }
    }
}

enum Failure {
    /// Someone else bound the port first: try another.
    PortTaken(String),
    /// Anything else: give up with this message.
    Fatal(String),
}

fn try_start(
    binary: &Path,
    config: &RegistryConfig,
    client: &Client,
    dir: TempDir,
    port: u16,
) -> Result<Registry, Failure> {
    let storage = dir.path().join("storage");
    fs::create_dir(&storage).expect("creating registry storage dir");
    let marker = hex(&pseudo_random_bytes(8, unique_seed(port)));
    let config_path = dir.path().join("config.yml");
    fs::write(&config_path, config_yaml(config, &storage, port, &marker)).expect("writing registry config");
    let log_path = dir.path().join("registry.log");
    let log = File::create(&log_path).expect("creating registry log");

    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .arg(&config_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .envs(config.env.iter().map(|(k, v)| (k, v)));
    let child =
        spawn_tethered(cmd).map_err(|e| Failure::Fatal(missing_binary_message(binary, &e.to_string())))?;
    let mut registry = Registry {
        child,
        port,
        scheme: config.scheme,
        client: client.clone(),
        log_path,
        storage,
        dir,
    };

    let probe = format!("{}/v2/", registry.url());
    let deadline = Instant::now() + config.startup_timeout;
    let mut last_error;
    loop {
        if let Ok(Some(status)) = registry.child.try_wait() {
            let log = registry.log();
            if log.contains("address already in use") {
                return Err(Failure::PortTaken(log));
            }
            return Err(Failure::Fatal(format!(
                "registry {} exited during startup ({status}); log tail:\n{}",
                binary.display(),
                tail(&log, 40)
            )));
        }
        match client.get(&probe).timeout(Duration::from_secs(2)).send() {
            // 401 counts as up: the caller may have configured auth.
            Ok(resp) if header_str(resp.headers(), MARKER_HEADER).as_deref() == Some(marker.as_str()) => {
                if matches!(resp.status(), StatusCode::OK | StatusCode::UNAUTHORIZED) {
                    return Ok(registry);
                }
                last_error = format!("GET {probe}: {}", resp.status());
            }
            // Another test's server on a recycled port; ours will fail to bind and retry.
            Ok(resp) => last_error = format!("GET {probe}: {} from another server", resp.status()),
            Err(e) => last_error = format!("GET {probe}: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(Failure::Fatal(format!(
                "registry {} not ready after {:?} ({last_error}); log tail:\n{}",
                binary.display(),
                config.startup_timeout,
                tail(&registry.log(), 40)
            )));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn config_yaml(config: &RegistryConfig, storage: &Path, port: u16, marker: &str) -> String {
    let mut yaml = String::new();
    // Quoted scalars: temp paths are plain, but be safe.
    writeln!(
        yaml,
        "version: 0.1\n\
         log:\n  level: warn\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: \"{}\"\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: \"127.0.0.1:{port}\"\n  secret: \"rpull-test-{marker}\"\n  \
         headers:\n    {MARKER_HEADER}: [\"{marker}\"]",
        storage.display()
    )
    .unwrap();
    yaml.push_str(&config.http_extra_yaml);
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml.push_str(&config.extra_yaml);
    yaml
}

/// The binary to run: `explicit`, else `$RPULL_TEST_REGISTRY_BIN`, else the Debian path, else
/// `docker-registry` on `PATH`. Panics with install instructions if there is none.
pub fn resolve_binary(explicit: Option<&Path>) -> PathBuf {
    let explicit = explicit
        .map(|path| (path.to_path_buf(), "RegistryConfig::binary"))
        .or_else(|| path_from_env(REGISTRY_BIN_ENV));
    find_binary(
        explicit,
        DEFAULT_REGISTRY_BIN,
        "docker-registry",
        missing_binary_message,
    )
}

fn missing_binary_message(binary: &Path, why: &str) -> String {
    format!(
        "cannot run the test registry {}: {why}.\n\
         rpull's integration tests need the real CNCF distribution registry (2.8). Install it with\n\
         \n    apt-get install -y docker-registry\n\n\
         or point {REGISTRY_BIN_ENV}=/path/to/registry at a `registry` binary.",
        binary.display()
    )
}

/// The URL completing a monolithic upload: `location` (absolute, or relative to `start`, the
/// URL the upload was started at; usually with a `?_state=…` query already) plus `digest=…`.
pub fn upload_url(start: &str, location: &str, digest: &str) -> Url {
    let mut url = Url::parse(start)
        .and_then(|base| base.join(location))
        .unwrap_or_else(|e| panic!("upload Location {location:?} (from {start}): {e}"));
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// A port that was free a moment ago (bind 127.0.0.1:0 and release it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn unique_seed(port: u16) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ (u64::from(port) << 16)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A header's value as a string, if present and ASCII.
pub fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

/// Returns `resp` if it has `expected` status, else panics with `what`, the status and body.
pub fn expect_status(resp: Response, expected: StatusCode, what: &str) -> Response {
    if resp.status() == expected {
        return resp;
    }
    let status = resp.status();
    let body = resp.text().unwrap_or_else(|e| format!("<unreadable body: {e}>"));
    panic!("{what}: expected {expected}, got {status}: {body}");
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
