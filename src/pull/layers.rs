//! The layers of one image: whether the config's DiffIDs can describe the manifest's blobs,
//! which need downloading, docker's `Waiting` order for the download slots, one task per layer
//! (`fetch.rs`), and `Pull complete` in manifest order.

use super::*;

/// Emits `Pull complete` in manifest order, whatever order layers finish in.
pub(super) struct OrderedCompletion {
    ids: Vec<String>,
    state: Mutex<(usize, BTreeSet<usize>)>,
}

impl OrderedCompletion {
    pub(super) fn done(&self, index: usize, reporter: &dyn Reporter) {
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

/// Refuses an image whose manifest lists one blob twice with two DiffIDs in its config: a blob
/// unpacks to one layer, so the config's root filesystem is not what the blobs hold (docker
/// finds the same after downloading: `layers from manifest don't match image configuration`).
/// Layers are fetched once per blob, so this is checked before anything is fetched or reused.
pub(super) fn check_diff_ids(image: &ImageManifest, config: &ImageConfig) -> Result<(), ManifestError> {
    let mut diff_of: HashMap<&Digest, &Digest> = HashMap::new();
    for (layer, diff_id) in image.layers.iter().zip(config.diff_ids()) {
        if *diff_of.entry(&layer.digest).or_insert(diff_id) != diff_id {
            return Err(ManifestError::RootfsMismatch);
        }
    }
    Ok(())
}

impl Puller {
    /// Downloads and unpacks the layers that are not in the store; returns whether anything
    /// was fetched.
    pub(super) async fn fetch_layers(
        &self,
        registry: &Arc<Registry>,
        reference: &Reference,
        image: &ImageManifest,
        config: &ImageConfig,
        gate: Option<&Gated>,
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
                gate: gate.cloned(),
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
