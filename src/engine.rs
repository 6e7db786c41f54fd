//! The engine every front end drives: one store and one [`Settings`] value, and the
//! operations on them — pull, list, inspect, remove, collect, save, rootfs and check. Every
//! `rpull` command is a thin layer over one of these, and the CRI image service and the fleet
//! agent call the same functions; each front end brings its own [`Reporter`] (terminal lines,
//! JSON, a gRPC status, a job result) and cancellation token, and renders the results.
//!
//! Every operation that reads or writes blobs at length (a pull, writing an archive,
//! building a root filesystem) holds the store's shared guard for its duration, so a
//! collection (`rpull prune`, the one after `rmi`), which takes it exclusively, never deletes
//! what such an operation is writing or reading; a long-running service therefore holds it
//! only while an operation runs. A pull that finds a collection running waits for it without
//! blocking a thread, says why after a second, and stops waiting when it is cancelled. The
//! names `save` and `rootfs` take are looked up before the
//! guard is taken, so a name that is not in the store fails before anything is locked or
//! written.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::archive::{self, ArchiveError, ArchiveFormat};
use crate::check::{self, CheckError, Report as CheckReport};
use crate::credentials::CredentialLookup;
use crate::flatten::{self, FlattenError, FlattenStats};
use crate::gc::{self, CollectOptions, GcError, GcReport, RemoveOutcome, StoreGuard};
use crate::images::{self, ImageRow, ImagesError, Resolved};
use crate::inspect::{self, ImageDetails, InspectError};
use crate::platform::Platform;
use crate::progress::{Event, Reporter};
use crate::pull::{Outcome, PullError, PullOptions, Puller};
use crate::reference::Reference;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// What a pull says while it waits for a collection to give the store back.
pub const STORE_BUSY: &str = "Waiting for another rpull to finish with the store (rpull prune or rmi)";

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

/// How [`Engine::remove`] removes (docker's `ImageDelete` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Remove an image ID referenced by several names (`rmi -f`).
    pub force: bool,
    /// Then delete the blobs and unpacked layers nothing refers to any more (unless
    /// `--no-prune`).
    pub prune: bool,
}

/// What [`Engine::remove`] did.
#[derive(Debug)]
pub struct Removal {
    /// One outcome per name, in the order given.
    pub outcomes: Vec<RemoveOutcome>,
    /// The collection that followed (with [`CollectOptions::immediate`]): `None` when pruning
    /// was not asked for or nothing was removed; [`GcError::Busy`] while another command uses
    /// the store, the space then being left to a later prune.
    pub collected: Option<Result<GcReport, GcError>>,
}

/// Images found by [`Engine::save`], to be written as one archive.
#[derive(Debug, Clone)]
pub struct Save {
    store: Store,
    images: Vec<Resolved>,
    format: ArchiveFormat,
}

impl Save {
    /// Writes the archive to `out`, holding the store's shared guard meanwhile. A failure
    /// leaves `out` incomplete; it should be discarded.
    pub fn write_to(&self, out: impl Write) -> Result<(), ArchiveError> {
        let _guard = StoreGuard::shared(&self.store)?;
        archive::save(&self.store, &self.images, self.format, out)
    }
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
        let _guard = self.shared_guard(&*reporter, &cancel).await?;
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
        let _guard = self.shared_guard(&*reporter, &cancel).await?;
        self.puller(request, reporter, cancel).pull_image(reference).await
    }

    /// The store's shared guard for a pull. While a collection holds the store (`rpull
    /// prune`, the collection after `rmi`), the pull waits for it without blocking a thread,
    /// says why after a second, and stops waiting when `cancel` fires.
    async fn shared_guard(
        &self,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<StoreGuard, PullError> {
        let started = std::time::Instant::now();
        let mut told = false;
        let mut step = Duration::from_millis(10);
        loop {
            if let Some(guard) = StoreGuard::try_shared(&self.store)? {
                return Ok(guard);
            }
            if !told && started.elapsed() >= Duration::from_secs(1) {
                reporter.report(Event::Note(STORE_BUSY.to_string()));
                told = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = cancel.cancelled() => return Err(PullError::Cancelled),
            }
            step = (step * 2).min(Duration::from_millis(200));
        }
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

    /// Removes references (names or image IDs) as `docker rmi` does (see
    /// [`gc::remove_refs`]), then, with `prune` and when anything was removed, collects what
    /// nothing uses any more. The error is a store failure; each name's own failure is in its
    /// outcome.
    pub fn remove(&self, names: &[String], opts: &RemoveOptions) -> Result<Removal, GcError> {
        let outcomes = gc::remove_refs(&self.store, names, opts.force)?;
        let removed_any = outcomes
            .iter()
            .any(|o| o.result.as_ref().is_ok_and(|lines| !lines.is_empty()));
        let collected = (opts.prune && removed_any).then(|| self.collect(&CollectOptions::immediate()));
        Ok(Removal { outcomes, collected })
    }

    /// Deletes what no reference uses any more (see [`gc::collect_with`]); unless `opts.wait`,
    /// fails with [`GcError::Busy`] instead of waiting while another command holds the store.
    pub fn collect(&self, opts: &CollectOptions) -> Result<GcReport, GcError> {
        gc::collect_with(&self.store, opts)
    }

    /// Looks the names up (as [`images::resolve`] does) for an archive of `format`, written by
    /// [`Save::write_to`]; fails on the first name that is not in the store.
    pub fn save(&self, names: &[String], format: ArchiveFormat) -> Result<Save, ImagesError> {
        let images = names
            .iter()
            .map(|name| images::resolve(&self.store, name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Save {
            store: self.store.clone(),
            images,
            format,
        })
    }

    /// Writes the flattened root filesystem of the image `name` names into `dest`, an empty
    /// or missing directory (see [`flatten::flatten`]), holding the store's shared guard.
    /// Ownership is applied and device nodes are created when running as root. A name not in
    /// the store is [`FlattenError::Lookup`].
    pub fn rootfs(&self, name: &str, dest: &Path) -> Result<FlattenStats, FlattenError> {
        let image = images::resolve(&self.store, name)?;
        let _guard = StoreGuard::shared(&self.store)?;
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        flatten::flatten(&self.store, &image.entry, dest, is_root)
    }

    /// Verifies the store; `repair` removes what is corrupt or left over.
    pub fn check(&self, repair: bool) -> Result<CheckReport, CheckError> {
        check::check(&self.store, repair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layer;
    use crate::images::testutil::{debian_store, DebianStore};
    use crate::settings::Overrides;

    fn engine(f: &DebianStore) -> Engine {
        let root = f.store.root().to_path_buf();
        let settings = Settings::from_parts(root, &Overrides::default(), &Layer::default(), &|_| None);
        Engine::open(settings.unwrap()).unwrap()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remove_prunes_when_asked_and_something_was_removed() {
        let f = debian_store();
        let engine = engine(&f);
        let keep = RemoveOptions {
            force: false,
            prune: false,
        };
        let prune = RemoveOptions { prune: true, ..keep };
        let r = engine.remove(&names(&["debian:bookworm"]), &keep).unwrap();
        assert!(r.outcomes[0].result.is_ok() && r.collected.is_none());
        let r = engine.remove(&names(&["nope"]), &prune).unwrap();
        assert!(r.outcomes[0].result.is_err() && r.collected.is_none());
        let r = engine.remove(&names(&["other:1"]), &prune).unwrap();
        let report = r.collected.expect("collected").unwrap();
        assert!(report.deleted().any(|d| *d == f.c2), "{report:?}");
        assert!(f.store.has_blob(&f.c1, None));
    }

    #[test]
    fn save_and_rootfs_look_the_name_up_first() {
        let f = debian_store();
        let engine = engine(&f);
        let missing = engine.save(&names(&["debian:latest", "nope"]), ArchiveFormat::Oci);
        assert!(matches!(missing, Err(ImagesError::NoSuchImage(n)) if n == "nope:latest"));
        let save = engine
            .save(&names(&["debian:latest"]), ArchiveFormat::Oci)
            .unwrap();
        let mut tar = Vec::new();
        save.write_to(&mut tar).unwrap();
        let blob = format!("blobs/sha256/{}", f.c1.hex());
        let mut archive = tar::Archive::new(tar.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(paths.contains(&blob), "{paths:?}");

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("rootfs");
        let err = engine.rootfs("nope", &dest).unwrap_err();
        assert!(
            matches!(err, FlattenError::Lookup(ImagesError::NoSuchImage(_))),
            "{err}"
        );
        assert!(!dest.exists());
        let stats = engine.rootfs(&f.c1.to_string(), &dest).unwrap();
        assert_eq!(stats.layers, 1);
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"one");
    }
}
