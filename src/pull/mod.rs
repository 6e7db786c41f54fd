//! Pull orchestration: from a reference to a verified, unpacked image recorded in the store.
//!
//! The steps are docker's: resolve the reference to a manifest (choosing a platform from an
//! index), fetch the config, download the missing layers `max_concurrent_downloads` at a
//! time with retries and `Range` resume, verify each blob, unpack it into its own directory
//! while computing its DiffID, and finally record the reference in `index.json`. Everything
//! the user sees is sent as [`Event`]s to the [`Reporter`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::compression::Compression;
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, ImageConfig, ImageManifest, Manifest, ManifestError};
use crate::platform::{Platform, PlatformError};
use crate::progress::{Event, LayerStatus, PullResult, Reporter};
use crate::reference::{Reference, ReferenceError};
use crate::registry::{Credential, ErrorCode, Registry, RegistryError, RegistryOptions};
use crate::settings::Settings;
use crate::store::{self, RefEntry, Store, StoreError};
use crate::unpack::UnpackError;

mod extract;
mod fetch;

use fetch::{LayerTask, Slot};

/// Bytes between two progress events of a download or an extraction.
const PROGRESS_STEP: u64 = 512 * 1024;

pub use crate::credentials::CredentialLookup;
pub use crate::settings::RetryPolicy;

/// What to pull and how.
#[derive(Clone)]
pub struct PullOptions {
    /// Pull every tag of the repository.
    pub all_tags: bool,
    /// The platform asked for with `--platform`; `None` means the host's.
    pub platform: Option<Platform>,
    /// Layers downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Transport settings.
    pub registry: RegistryOptions,
    /// Blob retry policy.
    pub retry: RetryPolicy,
    /// Credentials for a registry key, if any.
    pub credentials: Option<CredentialLookup>,
    /// Mirrors of Docker Hub (`--registry-mirror`), tried in order before it.
    pub hub_mirrors: Vec<url::Url>,
    /// Mirrors of other registries, by registry host (`host[:port]` as in references).
    pub mirrors: HashMap<String, Vec<url::Url>>,
    /// An absolute bound on a layer's uncompressed size; `None`: 100 × compressed + 1 GiB.
    pub max_layer_bytes: Option<u64>,
    /// Download slots shared with other pulls (a service's node-wide limit); `None`: this
    /// pull's own `max_concurrent_downloads` slots.
    pub download_slots: Option<Arc<Semaphore>>,
    /// How large blobs are fetched in concurrent ranges.
    pub ranges: crate::settings::RangeSettings,
    /// Open blob connections shared with other pulls; `None`: this pull's own
    /// `ranges.max_connections`.
    pub connection_slots: Option<Arc<Semaphore>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            all_tags: false,
            platform: None,
            max_concurrent_downloads: crate::settings::DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            registry: RegistryOptions::default(),
            retry: RetryPolicy::default(),
            credentials: None,
            hub_mirrors: Vec::new(),
            mirrors: HashMap::new(),
            max_layer_bytes: None,
            download_slots: None,
            ranges: crate::settings::RangeSettings::default(),
            connection_slots: None,
        }
    }
}

impl PullOptions {
    /// The options of one pull with `settings`: `platform` (`None` = the host's), `all_tags`,
    /// and where its credentials come from.
    pub fn new(
        settings: &Settings,
        platform: Option<Platform>,
        all_tags: bool,
        credentials: Option<CredentialLookup>,
    ) -> PullOptions {
        PullOptions {
            all_tags,
            platform,
            max_concurrent_downloads: settings.max_concurrent_downloads,
            registry: settings.registry.clone(),
            retry: settings.retry.clone(),
            credentials,
            hub_mirrors: settings.hub_mirrors.clone(),
            mirrors: settings.mirrors.clone(),
            max_layer_bytes: settings.max_layer_bytes,
            download_slots: None,
            ranges: settings.ranges.clone(),
            connection_slots: None,
        }
    }
}

/// Why a pull failed. The texts are docker's where docker has one.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The platform does not parse.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// `-a` with a tag or digest.
    #[error("tag can't be used with --all-tags/-a")]
    TagWithAllTags,
    /// The tag or digest is not in the repository.
    #[error("manifest for {reference} not found: {source}")]
    ManifestNotFound {
        /// The familiar reference.
        reference: String,
        /// The registry's answer.
        source: RegistryError,
    },
    /// The repository is missing, private, or the credentials are refused.
    #[error(
        "pull access denied for {name}, repository does not exist or may require 'docker login': {source}"
    )]
    AccessDenied {
        /// The familiar repository name.
        name: String,
        /// The registry's answer.
        source: RegistryError,
    },
    /// The repository does not exist.
    #[error("repository {name} not found: {source}")]
    RepositoryNotFound {
        /// The familiar repository name.
        name: String,
        /// The registry's answer.
        source: RegistryError,
    },
    /// No index entry fits the platform.
    #[error("no matching manifest for {0} in the manifest list entries")]
    NoMatchingManifest(String),
    /// Any other registry failure.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The manifest or config is not usable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A digest of an algorithm rpull cannot fetch content by (go-digest's text last).
    #[error("{digest}: {source}")]
    UnsupportedDigest {
        /// The digest.
        digest: Digest,
        /// [`DigestError::Unsupported`](crate::digest::DigestError::Unsupported).
        source: crate::digest::DigestError,
    },
    /// A layer blob did not hash to its digest.
    #[error("filesystem layer verification failed for digest {0}")]
    LayerVerification(Digest),
    /// The config blob did not hash to its digest.
    #[error("image config verification failed for digest {0}")]
    ConfigVerification(Digest),
    /// A manifest or config is not the size its descriptor declares.
    #[error(
        "{what} verification failed for digest {digest}: {actual} bytes, its descriptor says {declared}"
    )]
    BlobSize {
        /// `manifest` or `image config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        declared: u64,
        /// What was read.
        actual: u64,
    },
    /// A descriptor declares a manifest or config larger than rpull reads.
    #[error("{what} {digest} of {declared} bytes is larger than the {limit} bytes limit")]
    BlobTooLarge {
        /// `manifest` or `image config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        declared: u64,
        /// The cap.
        limit: usize,
    },
    /// A layer could not be unpacked.
    #[error("failed to register layer: {0}")]
    Unpack(#[from] UnpackError),
    /// Stopped by the user.
    #[error("cancelled")]
    Cancelled,
    /// Something that should not happen (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl PullError {
    /// Whether a mirror that failed this way should give way to the next endpoint: anything
    /// that came from the mirror (transport, registry codes, bad content), not local failures.
    pub fn allows_mirror_fallback(&self) -> bool {
        !matches!(
            self,
            PullError::Store(_)
                | PullError::Unpack(_)
                | PullError::Internal(_)
                | PullError::NoMatchingManifest(_)
                | PullError::Cancelled
        ) && !self.is_cancelled()
    }

    /// Whether the pull stopped because the user asked.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            PullError::Cancelled
                | PullError::Registry(RegistryError::Cancelled)
                | PullError::Unpack(UnpackError::Cancelled)
        )
    }
}

/// What one image pull did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether the reference was created or moved, or content was downloaded.
    pub changed: bool,
    /// The digest the reference resolved to (index or manifest).
    pub digest: Digest,
    /// The image ID (config digest).
    pub image_id: Digest,
    /// Bytes of config and layers as stored (compressed).
    pub size: u64,
    /// The platform-mismatch warning, when one applies.
    pub warning: Option<String>,
}

/// Pulls images into a store, reporting progress as it goes.
pub struct Puller {
    store: Store,
    opts: PullOptions,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
    /// Open blob connections (`ranges.max_connections`, or the shared slots).
    connections: Arc<Semaphore>,
}

/// Emits `Pull complete` in manifest order, whatever order layers finish in.
struct OrderedCompletion {
    ids: Vec<String>,
    state: Mutex<(usize, BTreeSet<usize>)>,
}

impl OrderedCompletion {
    fn done(&self, index: usize, reporter: &dyn Reporter) {
        let mut st = self.state.lock().expect("lock");
        st.1.insert(index);
        loop {
            let next = st.0;
            if !st.1.remove(&next) {
                break;
            }
            reporter.report(Event::Layer {
                id: self.ids[next].clone(),
                status: LayerStatus::PullComplete,
            });
            st.0 += 1;
        }
    }
}

impl Puller {
    /// A puller writing into `store`, stopping when `cancel` fires.
    pub fn new(
        store: Store,
        opts: PullOptions,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Puller {
        let connections = opts
            .connection_slots
            .clone()
            .unwrap_or_else(|| Arc::new(Semaphore::new(opts.ranges.max_connections.max(1))));
        Puller {
            store,
            opts,
            reporter,
            cancel,
            registries: Mutex::new(HashMap::new()),
            connections,
        }
    }

    /// Reports `e`, its free texts (errors, notes, warnings: they may quote what a server
    /// sent) stripped of terminal control sequences.
    fn report(&self, e: Event) {
        use crate::scrub::strip_controls;
        let e = match e {
            Event::Error(t) => Event::Error(strip_controls(&t)),
            Event::Note(t) => Event::Note(strip_controls(&t)),
            Event::Warning(t) => Event::Warning(strip_controls(&t)),
            Event::Result(mut r) => {
                r.error = r.error.map(|t| strip_controls(&t));
                Event::Result(r)
            }
            other => other,
        };
        self.reporter.report(e);
    }

    fn registry_for(&self, reference: &Reference) -> Result<Arc<Registry>, PullError> {
        let host = reference.registry_host();
        let mut map = self.registries.lock().expect("lock");
        if let Some(r) = map.get(&host) {
            return Ok(r.clone());
        }
        let credential = self.credential(&reference.credential_key())?;
        let r = Arc::new(Registry::new(&host, credential, &self.opts.registry)?);
        map.insert(host, r.clone());
        Ok(r)
    }

    fn credential(&self, key: &str) -> Result<Option<Credential>, PullError> {
        match &self.opts.credentials {
            Some(lookup) => Ok(lookup(key).map_err(RegistryError::Auth)?),
            None => Ok(None),
        }
    }

    /// The mirrors to try, in order, before the registry of `reference`: `--registry-mirror`
    /// for Docker Hub names, the config file's per-registry mirrors for others.
    fn mirrors_for(&self, reference: &Reference) -> &[url::Url] {
        if reference.is_docker_hub() {
            &self.opts.hub_mirrors
        } else {
            self.opts
                .mirrors
                .get(reference.domain())
                .map(Vec::as_slice)
                .unwrap_or(&[])
        }
    }

    /// The client for one mirror (cached by URL). Credentials are the mirror host's own, so
    /// the origin's never reach it.
    fn mirror_registry(&self, url: &url::Url) -> Result<Arc<Registry>, PullError> {
        let key = format!("mirror:{url}");
        if let Some(r) = self.registries.lock().expect("lock").get(&key) {
            return Ok(r.clone());
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (h, _) => h.unwrap_or_default().to_string(),
        };
        let credential = self.credential(&host)?;
        let r = Arc::new(Registry::mirror(url, credential, &self.opts.registry)?);
        self.registries.lock().expect("lock").insert(key, r.clone());
        Ok(r)
    }

    /// Pulls `input` (`NAME[:TAG|@DIGEST]`, or a name with `all_tags`), reporting docker's
    /// lines; the final reference line is the last event.
    pub async fn pull(&self, input: &str) -> Result<(), PullError> {
        // Every failure, a reference that does not parse included, is reported the same way.
        let result = async {
            let reference = Reference::parse_normalized(input)?;
            if self.opts.all_tags {
                if !reference.is_name_only() {
                    return Err(PullError::TagWithAllTags);
                }
                self.pull_all_tags(&reference).await
            } else {
                self.pull_single(reference).await
            }
        }
        .await;
        if let Err(e) = &result {
            if !e.is_cancelled() {
                self.report(Event::Error(e.to_string()));
                self.report(Event::Result(PullResult {
                    reference: input.to_string(),
                    image_id: None,
                    tag: None,
                    digest: None,
                    size: None,
                    changed: None,
                    error: Some(e.to_string()),
                }));
            }
        }
        result
    }

    async fn pull_single(&self, reference: Reference) -> Result<(), PullError> {
        let (reference, defaulted) = reference.with_default_tag();
        if defaulted {
            self.report(Event::DefaultTag(reference.tag().unwrap_or("latest").to_string()));
        }
        // With a digest, the digest decides and the tag is only echoed at the end (as docker).
        let resolved = if reference.digest().is_some() {
            reference.without_tag()
        } else {
            reference.clone()
        };
        let outcome = self.pull_image(&resolved).await?;
        self.report(Event::Status {
            newer: outcome.changed,
            reference: resolved.familiar_string(),
        });
        if let Some(w) = &outcome.warning {
            self.report(Event::Warning(w.clone()));
        }
        self.report(Event::Result(PullResult {
            reference: reference.to_string(),
            image_id: Some(outcome.image_id.to_string()),
            tag: reference.tag().map(str::to_string),
            digest: Some(outcome.digest.to_string()),
            size: Some(outcome.size),
            changed: Some(outcome.changed),
            error: None,
        }));
        self.report(Event::Done(reference.to_string()));
        Ok(())
    }

    async fn pull_all_tags(&self, name: &Reference) -> Result<(), PullError> {
        let registry = self.registry_for(name)?;
        let tags = tokio::select! {
            r = registry.tags(name.path()) => r,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        }
        .map_err(|e| self.map_resolve_error(name, e))?;
        let mut changed = false;
        for tag in tags {
            self.check_cancel()?;
            let reference = name.with_tag(&tag)?;
            let outcome = self.pull_image(&reference).await?;
            changed |= outcome.changed;
            self.report(Event::Result(PullResult {
                reference: reference.to_string(),
                image_id: Some(outcome.image_id.to_string()),
                tag: Some(tag),
                digest: Some(outcome.digest.to_string()),
                size: Some(outcome.size),
                changed: Some(outcome.changed),
                error: None,
            }));
        }
        self.report(Event::Status {
            newer: changed,
            reference: name.familiar_name(),
        });
        self.report(Event::Done(name.name()));
        Ok(())
    }

    fn check_cancel(&self) -> Result<(), PullError> {
        if self.cancel.is_cancelled() {
            Err(PullError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn map_resolve_error(&self, reference: &Reference, e: RegistryError) -> PullError {
        match e.code() {
            Some(ErrorCode::ManifestUnknown | ErrorCode::NotFound) => PullError::ManifestNotFound {
                reference: reference.familiar_string(),
                source: e,
            },
            Some(ErrorCode::NameUnknown) => PullError::RepositoryNotFound {
                name: reference.familiar_name(),
                source: e,
            },
            Some(ErrorCode::Denied) => PullError::AccessDenied {
                name: reference.familiar_name(),
                source: e,
            },
            _ => PullError::Registry(e),
        }
    }

    /// A manifest by digest: from the store when present, else from the registry (verified).
    /// `size` is its descriptor's (an index entry's), when there is one: the manifest must be
    /// that long. Whatever the source, no more than [`manifest::MAX_MANIFEST_BYTES`] is read.
    async fn manifest_by_digest(
        &self,
        registry: &Registry,
        reference: &Reference,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<(Vec<u8>, String), PullError> {
        let limit = manifest::MAX_MANIFEST_BYTES;
        ensure_supported(digest)?;
        check_descriptor_size("manifest", digest, size, limit)?;
        if self.store.has_blob(digest, size) {
            match self.store.read_blob(digest) {
                Ok(bytes) if bytes.len() <= limit => return Ok((bytes, String::new())),
                // A stored blob too large for a manifest (a layer, named by a digest
                // reference) is no manifest: refused as the registry's copy would be.
                Ok(bytes) => return Err(ManifestError::TooLarge(bytes.len()).into()),
                Err(StoreError::TooLarge { size, .. }) => {
                    return Err(ManifestError::TooLarge(size as usize).into())
                }
                Err(_) => {}
            }
        }
        let digest_str = digest.to_string();
        let fetched = tokio::select! {
            r = registry.get_manifest(reference.path(), &digest_str, Some(digest)) => r,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        }
        .map_err(|e| self.map_resolve_error(reference, e))?;
        check_blob_size("manifest", digest, size, fetched.bytes.len())?;
        Ok((fetched.bytes, fetched.content_type))
    }

    /// Resolves `reference` to its top-level digest and manifest bytes.
    async fn resolve(
        &self,
        registry: &Registry,
        reference: &Reference,
    ) -> Result<(Digest, Vec<u8>, String), PullError> {
        if let Some(d) = reference.digest() {
            let (bytes, ct) = self.manifest_by_digest(registry, reference, d, None).await?;
            return Ok((d.clone(), bytes, ct));
        }
        let tag = reference.tag().unwrap_or("latest");
        let head = tokio::select! {
            r = registry.head_manifest(reference.path(), tag) => r,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        }
        .map_err(|e| self.map_resolve_error(reference, e))?;
        if let Some(head) = head {
            let (bytes, ct) = self
                .manifest_by_digest(registry, reference, &head.digest, None)
                .await?;
            let ct = if ct.is_empty() { head.content_type } else { ct };
            return Ok((head.digest, bytes, ct));
        }
        let fetched = tokio::select! {
            r = registry.get_manifest(reference.path(), tag, None) => r,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        }
        .map_err(|e| self.map_resolve_error(reference, e))?;
        Ok((fetched.digest, fetched.bytes, fetched.content_type))
    }

    /// Pulls one image (tag or digest) and records it; reports from `Pulling from` to `Digest:`.
    /// Mirrors are tried first, in order; when one fails or lacks the image, a note says so
    /// and the next endpoint (finally the registry itself) is tried, as docker does.
    pub async fn pull_image(&self, reference: &Reference) -> Result<Outcome, PullError> {
        // `Pulling from` is said once, whichever endpoint ends up serving the image.
        let announced = std::sync::atomic::AtomicBool::new(false);
        for mirror in self.mirrors_for(reference) {
            let attempt = match self.mirror_registry(mirror) {
                Ok(registry) => self.pull_image_from(&registry, reference, &announced).await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(e) if e.is_cancelled() || self.cancel.is_cancelled() => return Err(e),
                Err(e) if !e.allows_mirror_fallback() => return Err(e),
                Err(e) => self.report(Event::Note(format!(
                    "mirror {mirror} failed ({e}); falling back to {}",
                    reference.domain()
                ))),
            }
        }
        let registry = self.registry_for(reference)?;
        self.pull_image_from(&registry, reference, &announced).await
    }

    async fn pull_image_from(
        &self,
        registry: &Arc<Registry>,
        reference: &Reference,
        announced: &std::sync::atomic::AtomicBool,
    ) -> Result<Outcome, PullError> {
        let registry = registry.clone();
        let (top_digest, top_bytes, top_ct) = self.resolve(&registry, reference).await?;
        let id = match reference.tag() {
            Some(t) if reference.digest().is_none() => t.to_string(),
            _ => reference.to_string(),
        };
        if !announced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.report(Event::PullingFrom {
                id,
                path: reference.path().to_string(),
            });
        }

        let shown = reference.familiar_string();
        let platform = self.opts.platform.clone().unwrap_or_else(Platform::host);
        let mut index_blob: Option<(Digest, Vec<u8>)> = None;
        // An image manifest, or an index whose chosen entry is one. As in docker, an index
        // naming another index is refused: nothing is followed past one level.
        let (manifest_digest, manifest_bytes, manifest_ct, image, entry_platform) =
            match Manifest::parse(&top_ct, &top_bytes, &shown)? {
                Manifest::Image(m) => (top_digest.clone(), top_bytes, top_ct, *m, None),
                Manifest::Index(index) => {
                    let chosen = index
                        .select(&platform)
                        .ok_or_else(|| PullError::NoMatchingManifest(platform.format_all()))?
                        .clone();
                    index_blob = Some((top_digest.clone(), top_bytes));
                    let (b, c) = self
                        .manifest_by_digest(&registry, reference, &chosen.digest, Some(chosen.size))
                        .await?;
                    let c = if c.is_empty() {
                        chosen.media_type.clone()
                    } else {
                        c
                    };
                    match Manifest::parse(&c, &b, &shown)? {
                        Manifest::Image(m) => (chosen.digest.clone(), b, c, *m, chosen.platform.clone()),
                        Manifest::Index(_) => {
                            return Err(ManifestError::Unsupported(format!(
                        "the index {top_digest} names another index ({}); nested indexes are not supported",
                        chosen.digest
                    ))
                            .into())
                        }
                    }
                }
            };

        manifest::check_config_media_type(&image.config.media_type)?;
        // Every blob's digest must be one rpull can fetch by, before any is fetched.
        ensure_supported(&image.config.digest)?;
        for layer in &image.layers {
            ensure_supported(&layer.digest)?;
        }
        let config_bytes = self.fetch_config(&registry, reference, &image.config).await?;
        let config = ImageConfig::parse(&config_bytes, image.layers.len())?;
        for diff_id in config.diff_ids() {
            ensure_supported(diff_id)?;
        }

        let warning = match &self.opts.platform {
            Some(wanted) if !wanted.matcher().matches(&config.platform()) => Some(format!(
                "WARNING: image with reference {} was found but does not match the specified platform: wanted {}, actual: {}",
                reference.familiar_name(),
                wanted,
                config.platform()
            )),
            _ => None,
        };

        let name = reference.to_string();
        let existing = self.store.find_ref(&name)?;
        let image_present = self.store.has_blob(&image.config.digest, Some(image.config.size))
            && image
                .layers
                .iter()
                .zip(config.diff_ids())
                .all(|(l, d)| self.store.has_layer(d) && self.store.has_blob(&l.digest, Some(l.size)));
        let downloaded = if image_present {
            false
        } else {
            self.fetch_layers(&registry, reference, &image, &config).await?
        };

        self.store.write_blob(&image.config.digest, &config_bytes)?;
        self.store.write_blob(&manifest_digest, &manifest_bytes)?;
        if let Some((d, b)) = &index_blob {
            self.store.write_blob(d, b)?;
        }
        let moved = existing.as_ref().is_none_or(|e| {
            e.digest != manifest_digest || e.resolved_digest() != Some(&top_digest.to_string())
        });
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(store::REF_NAME.to_string(), name.clone());
        annotations.insert(store::CONTAINERD_NAME.to_string(), name);
        annotations.insert(store::RESOLVED_DIGEST.to_string(), top_digest.to_string());
        let media_type = image
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                if manifest_ct.is_empty() {
                    manifest::media_type::OCI_MANIFEST.into()
                } else {
                    manifest_ct.clone()
                }
            });
        let platform_spec = entry_platform.or_else(|| {
            Some(manifest::PlatformSpec {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: config.variant.clone(),
                ..Default::default()
            })
        });
        if moved {
            self.store.set_ref(RefEntry {
                media_type,
                digest: manifest_digest.clone(),
                size: manifest_bytes.len() as u64,
                platform: platform_spec,
                annotations,
            })?;
        }
        self.report(Event::Digest(top_digest.to_string()));
        // Sizes come from the registry: add them without wrapping.
        let size = image
            .layers
            .iter()
            .fold(image.config.size, |total, l| total.saturating_add(l.size));
        Ok(Outcome {
            changed: moved || downloaded,
            digest: top_digest,
            image_id: image.config.digest.clone(),
            size,
            warning,
        })
    }

    async fn fetch_config(
        &self,
        registry: &Registry,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, PullError> {
        // The cap applies before anything is read, whether the blob is stored or not.
        let limit = manifest::MAX_CONFIG_BYTES;
        check_descriptor_size("image config", &desc.digest, Some(desc.size), limit)?;
        if self.store.has_blob(&desc.digest, Some(desc.size)) {
            if let Ok(b) = self.store.read_blob_sized(&desc.digest, desc.size) {
                return Ok(b);
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let resp = registry.get_blob(reference.path(), &desc.digest, 0).await?;
                crate::registry::read_limited(resp, limit).await
            };
            let result = tokio::select! {
                r = result => r,
                _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
            };
            match result {
                Ok(bytes) => {
                    check_blob_size("image config", &desc.digest, Some(desc.size), bytes.len())?;
                    if !desc.digest.verify(&bytes) {
                        return Err(PullError::ConfigVerification(desc.digest.clone()));
                    }
                    return Ok(bytes);
                }
                Err(e) if e.is_retryable() && attempt < self.opts.retry.attempts => {
                    tokio::select! {
                        _ = tokio::time::sleep(crate::registry::retry::backoff(attempt, Some(&e))) => {}
                        _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
                    }
                }
                Err(e) if e.is_retryable() => {
                    return Err(ManifestError::Config(format!(
                        "download failed after attempts={attempt}: {e}"
                    ))
                    .into())
                }
                Err(e) => return Err(ManifestError::Config(e.to_string()).into()),
            }
        }
    }

    /// Downloads and unpacks the layers that are not in the store; returns whether anything
    /// was fetched.
    async fn fetch_layers(
        &self,
        registry: &Arc<Registry>,
        reference: &Reference,
        image: &ImageManifest,
        config: &ImageConfig,
    ) -> Result<bool, PullError> {
        struct Job {
            order: usize,
            desc: Descriptor,
            diff_id: Digest,
        }
        let mut jobs: Vec<Job> = Vec::new();
        let mut seen: HashMap<Digest, ()> = HashMap::new();
        for (layer, diff_id) in image.layers.iter().zip(config.diff_ids()) {
            let id = layer.digest.short().to_string();
            Compression::from_media_type(&layer.media_type)
                .map_err(|e| ManifestError::Unsupported(e.to_string()))?;
            if self.store.has_layer(diff_id) && self.store.has_blob(&layer.digest, Some(layer.size)) {
                self.report(Event::Layer {
                    id,
                    status: LayerStatus::AlreadyExists,
                });
                continue;
            }
            if seen.insert(layer.digest.clone(), ()).is_some() {
                continue;
            }
            self.report(Event::Layer {
                id,
                status: LayerStatus::PullingFsLayer,
            });
            jobs.push(Job {
                order: jobs.len(),
                desc: layer.clone(),
                diff_id: diff_id.clone(),
            });
        }
        if jobs.is_empty() {
            return Ok(false);
        }
        let completion = Arc::new(OrderedCompletion {
            ids: jobs.iter().map(|j| j.desc.digest.short().to_string()).collect(),
            state: Mutex::new((0, BTreeSet::new())),
        });
        let slots = match &self.opts.download_slots {
            Some(shared) => shared.clone(),
            None => Arc::new(Semaphore::new(self.opts.max_concurrent_downloads.max(1))),
        };
        let cancel = self.cancel.child_token();
        let mut set = tokio::task::JoinSet::new();
        // Slots are handed out in manifest order, as docker's FIFO transfer queue does: the
        // first layers start at once, the others say `Waiting` and queue up.
        let mut queue: Vec<tokio::sync::oneshot::Sender<OwnedSemaphorePermit>> = Vec::new();
        // Every slot is decided (and every `Waiting` said) before any task starts, so the
        // `Waiting` lines follow the `Pulling fs layer` block as in docker's output.
        let mut planned = Vec::with_capacity(jobs.len());
        for job in jobs {
            let slot = if self.store.has_blob(&job.desc.digest, Some(job.desc.size)) {
                Slot::NotNeeded
            } else {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => Slot::Held(p),
                    Err(_) => {
                        self.report(Event::Layer {
                            id: job.desc.digest.short().to_string(),
                            status: LayerStatus::Waiting,
                        });
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        queue.push(tx);
                        Slot::Queued(rx)
                    }
                }
            };
            planned.push((job, slot));
        }
        for (job, slot) in planned {
            let ctx = LayerTask {
                store: self.store.clone(),
                registry: registry.clone(),
                repo: reference.path().to_string(),
                reporter: self.reporter.clone(),
                cancel: cancel.clone(),
                retry: self.opts.retry.clone(),
                max_layer_bytes: self.opts.max_layer_bytes,
                completion: completion.clone(),
                retired: std::sync::Mutex::new(Vec::new()),
                ranges: self.opts.ranges.clone(),
                connections: self.connections.clone(),
            };
            set.spawn(async move { ctx.run(job.order, job.desc, job.diff_id, slot).await });
        }
        if !queue.is_empty() {
            let slots = slots.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                for tx in queue {
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                        _ = cancel.cancelled() => return,
                    };
                    let _ = tx.send(permit);
                }
            });
        }
        let mut first_error: Option<PullError> = None;
        while let Some(joined) = set.join_next().await {
            let result = joined.unwrap_or_else(|e| Err(PullError::Internal(e.to_string())));
            if let Err(e) = result {
                cancel.cancel();
                let replace = match &first_error {
                    None => true,
                    Some(prev) => prev.is_cancelled() && !e.is_cancelled(),
                };
                if replace {
                    first_error = Some(e);
                }
            }
        }
        match first_error {
            Some(e) if self.cancel.is_cancelled() && e.is_cancelled() => Err(PullError::Cancelled),
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

/// Refuses a digest whose algorithm content cannot be fetched and stored by.
fn ensure_supported(digest: &Digest) -> Result<(), PullError> {
    digest
        .ensure_content_supported()
        .map_err(|source| PullError::UnsupportedDigest {
            digest: digest.clone(),
            source,
        })
}

/// Refuses a descriptor declaring more than `limit` bytes, before anything is read.
fn check_descriptor_size(
    what: &'static str,
    digest: &Digest,
    declared: Option<u64>,
    limit: usize,
) -> Result<(), PullError> {
    match declared {
        Some(declared) if declared > limit as u64 => Err(PullError::BlobTooLarge {
            what,
            digest: digest.clone(),
            declared,
            limit,
        }),
        _ => Ok(()),
    }
}

/// Refuses a blob whose length is not its descriptor's size.
fn check_blob_size(
    what: &'static str,
    digest: &Digest,
    declared: Option<u64>,
    actual: usize,
) -> Result<(), PullError> {
    match declared {
        Some(declared) if declared != actual as u64 => Err(PullError::BlobSize {
            what,
            digest: digest.clone(),
            declared,
            actual: actual as u64,
        }),
        _ => Ok(()),
    }
}
