//! The engine every front end drives: one store and one [`Settings`] value, and the
//! operations on them — pull, list, remove, collect and check. The CLI's commands, the CRI
//! image service and the fleet agent call these same functions; each brings its own
//! [`Reporter`] (terminal lines, JSON, a gRPC status, a job result) and cancellation token.
//!
//! Every operation that reads or writes blobs holds the store's shared guard for its
//! duration, so a collection (`rpull prune`, the one after `rmi`) never deletes what a pull
//! is writing; a long-running service therefore holds it only while an operation runs.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::check::{self, CheckError, Report as CheckReport};
use crate::credentials::CredentialLookup;
use crate::gc::{self, GcError, GcReport, RemoveOutcome, StoreGuard};
use crate::images::{self, ImageRow, ImagesError};
use crate::inspect::{self, ImageDetails, InspectError};
use crate::platform::Platform;
use crate::progress::Reporter;
use crate::pull::{Outcome, PullError, PullOptions, Puller};
use crate::reference::Reference;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// One pull as a front end asks for it.
#[derive(Clone, Default)]
pub struct PullRequest {
    /// The platform to pick from an index; `None` is the host's.
    pub platform: Option<Platform>,
    /// Every tag of the repository (`-a`).
    pub all_tags: bool,
    /// Where credentials come from; `None` pulls anonymously.
    pub credentials: Option<CredentialLookup>,
    /// Coordinates blob fetches from mirrors with other nodes (the fleet agent's); `None`
    /// fetches alone.
    pub blob_gate: Option<Arc<dyn crate::pull::gate::BlobGate>>,
}

/// The store and settings every operation works with.
#[derive(Clone)]
pub struct Engine {
    settings: Settings,
    store: Store,
    download_slots: Option<Arc<Semaphore>>,
}

impl Engine {
    /// Opens (creating when missing) the store the settings name.
    pub fn open(settings: Settings) -> Result<Engine, StoreError> {
        let store = Store::open(settings.root())?;
        Ok(Engine {
            settings,
            store,
            download_slots: None,
        })
    }

    /// The same engine with one download limit shared by all its pulls (a service's
    /// node-wide `max-concurrent-downloads`), instead of one limit per pull as the CLI has.
    pub fn with_shared_download_limit(mut self) -> Engine {
        let slots = self.settings.max_concurrent_downloads.max(1);
        self.download_slots = Some(Arc::new(Semaphore::new(slots)));
        self
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn puller(
        &self,
        request: &PullRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Puller {
        let mut opts = PullOptions::new(
            &self.settings,
            request.platform.clone(),
            request.all_tags,
            request.credentials.clone(),
        );
        opts.download_slots = self.download_slots.clone();
        opts.blob_gate = request.blob_gate.clone();
        Puller::new(self.store.clone(), opts, reporter, cancel)
    }

    /// Pulls `input` (`NAME[:TAG|@DIGEST]`, or a repository with `all_tags`) as `rpull pull`
    /// does, reporting every line, the closing ones and the result included.
    pub async fn pull(
        &self,
        input: &str,
        request: &PullRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Result<(), PullError> {
        let _guard = self.shared_guard()?;
        self.puller(request, reporter, cancel).pull(input).await
    }

    /// Pulls one image and returns what it did (for a service's answer). The reporter gets
    /// the per-layer events, from `Pulling from` to `Digest:`.
    pub async fn pull_image(
        &self,
        reference: &Reference,
        request: &PullRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Result<Outcome, PullError> {
        let _guard = self.shared_guard()?;
        self.puller(request, reporter, cancel).pull_image(reference).await
    }

    fn shared_guard(&self) -> Result<StoreGuard, PullError> {
        Ok(StoreGuard::shared(&self.store)?)
    }

    /// The images in the store, one row per reference, filtered as `docker images FILTER`.
    pub fn images(&self, filter: Option<&str>) -> Result<Vec<ImageRow>, ImagesError> {
        images::list(&self.store, filter)
    }

    /// One image in full, by reference, image ID or ID prefix (see [`inspect`]); `None` when
    /// nothing matches.
    pub fn inspect(&self, query: &str) -> Result<Option<ImageDetails>, InspectError> {
        inspect::inspect(&self.store, query)
    }

    /// Every image in full, newest first.
    pub fn inspect_all(&self) -> Result<Vec<ImageDetails>, InspectError> {
        inspect::all(&self.store)
    }

    /// Removes references (names or image IDs) as `docker rmi` does; `force` removes an
    /// image ID referenced by several names.
    pub fn remove(&self, names: &[String], force: bool) -> Result<Vec<RemoveOutcome>, GcError> {
        gc::remove_refs(&self.store, names, force)
    }

    /// Deletes what no reference uses any more, with `rpull prune`'s defaults; fails with
    /// [`GcError::Busy`] instead of waiting while another command holds the store.
    pub fn collect(&self) -> Result<GcReport, GcError> {
        gc::collect(&self.store)
    }

    /// Verifies the store; `repair` removes what is corrupt or left over.
    pub fn check(&self, repair: bool) -> Result<CheckReport, CheckError> {
        check::check(&self.store, repair)
    }
}
