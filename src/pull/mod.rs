//! Pull orchestration: from a reference to a verified, unpacked image recorded in the store.
//!
//! The steps are docker's: resolve the reference to a manifest (choosing a platform from an
//! index), fetch the config, download the missing layers `max_concurrent_downloads` at a
//! time with retries and `Range` resume, verify each blob, unpack it into its own directory
//! while computing its DiffID, check the hardlinks a layer makes into the layers below it in
//! this image (`links.rs`), and finally record the reference in `index.json`. Everything
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

mod error;
mod extract;
mod fetch;
pub mod gate;
mod layers;
mod links;
mod resolve;

pub use error::{BadLinkTarget, PullError};
use layers::OrderedCompletion;
use resolve::ensure_supported;

use fetch::{LayerTask, Slot};
use gate::{BlobGate, Gated};

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
    /// Coordinates the blob fetches from mirrors with other pullers ([`gate`]); `None`: this
    /// pull fetches alone.
    pub blob_gate: Option<Arc<dyn BlobGate>>,
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
            blob_gate: None,
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
            blob_gate: None,
        }
    }
}

/// A URL's `host[:port]`.
fn url_host(url: &url::Url) -> String {
    crate::registry::host_port(url).unwrap_or_default()
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

    async fn registry_for(&self, reference: &Reference) -> Result<Arc<Registry>, PullError> {
        let host = reference.registry_host();
        if let Some(r) = self.registries.lock().expect("lock").get(&host) {
            return Ok(r.clone());
        }
        let credential = self.credential(&reference.credential_key()).await?;
        let r = Arc::new(Registry::new(&host, credential, &self.opts.registry)?);
        Ok(self
            .registries
            .lock()
            .expect("lock")
            .entry(host)
            .or_insert(r)
            .clone())
    }

    /// The credential for `key`. The lookup may read files and run a credential helper
    /// (which may wait on the network or a PIN prompt), so it runs on a blocking thread,
    /// never on an async worker, and the pull stops waiting for it when cancelled.
    async fn credential(&self, key: &str) -> Result<Option<Credential>, PullError> {
        let Some(lookup) = self.opts.credentials.clone() else {
            return Ok(None);
        };
        let key = key.to_string();
        tokio::select! {
            found = blocking(move || lookup(&key)) => Ok(found?.map_err(RegistryError::Auth)?),
            _ = self.cancel.cancelled() => Err(PullError::Cancelled),
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
    async fn mirror_registry(&self, url: &url::Url) -> Result<Arc<Registry>, PullError> {
        let key = format!("mirror:{url}");
        if let Some(r) = self.registries.lock().expect("lock").get(&key) {
            return Ok(r.clone());
        }
        let credential = self.credential(&url_host(url)).await?;
        let r = Arc::new(Registry::mirror(url, credential, &self.opts.registry)?);
        Ok(self
            .registries
            .lock()
            .expect("lock")
            .entry(key)
            .or_insert(r)
            .clone())
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
        let registry = self.registry_for(name).await?;
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

    /// Pulls one image (tag or digest) and records it; reports from `Pulling from` to `Digest:`.
    /// Mirrors are tried first, in order; when one fails or lacks the image, a note says so
    /// and the next endpoint (finally the registry itself) is tried, as docker does.
    pub async fn pull_image(&self, reference: &Reference) -> Result<Outcome, PullError> {
        // `Pulling from` is said once, whichever endpoint ends up serving the image.
        let announced = std::sync::atomic::AtomicBool::new(false);
        for mirror in self.mirrors_for(reference) {
            let gate = self.opts.blob_gate.clone().map(|gate| Gated {
                gate,
                endpoint: url_host(mirror),
            });
            let attempt = match self.mirror_registry(mirror).await {
                Ok(registry) => {
                    self.pull_image_from(&registry, reference, &announced, gate.as_ref())
                        .await
                }
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
        let registry = self.registry_for(reference).await?;
        self.pull_image_from(&registry, reference, &announced, None).await
    }

    async fn pull_image_from(
        &self,
        registry: &Arc<Registry>,
        reference: &Reference,
        announced: &std::sync::atomic::AtomicBool,
        gate: Option<&Gated>,
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
        let config_bytes = self
            .fetch_config(&registry, reference, &image.config, gate)
            .await?;
        let config = ImageConfig::parse(&config_bytes, image.layers.len())?;
        for diff_id in config.diff_ids() {
            ensure_supported(diff_id)?;
        }
        layers::check_diff_ids(&image, &config)?;

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
            self.fetch_layers(&registry, reference, &image, &config, gate)
                .await?
        };
        // Every layer of the image is in the store now: its hardlinks into lower layers are
        // checked over them before anything of the image is recorded (off the async workers:
        // it reads every layer's layer.json). An image already present passed this check when
        // its config was stored, as the config is written only after it.
        if !image_present {
            let (store, diff_ids) = (self.store.clone(), config.diff_ids().to_vec());
            blocking(move || match links::ImageLinks::read(&store, &diff_ids)? {
                Some(links) => links.check(),
                None => Ok(()),
            })
            .await??;
        }

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
}

/// Runs `work` on a blocking thread (file I/O, hashing, credential helpers: never on an async
/// worker); a panic there is the pull's internal error.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PullError::Internal(e.to_string()))
}
