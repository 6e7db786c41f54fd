//! From a reference to verified manifest and config bytes: resolving a tag or digest (mirrors
//! first), following an index to the platform's manifest, the config blob, and the size and
//! digest checks every blob read goes through.

use super::*;

impl Puller {
    pub(super) fn map_resolve_error(&self, reference: &Reference, e: RegistryError) -> PullError {
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
    pub(super) async fn manifest_by_digest(
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
    pub(super) async fn resolve(
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

    /// The image config: from the store when present, else fetched (through the gate, if
    /// any) and verified.
    pub(super) async fn fetch_config(
        &self,
        registry: &Arc<Registry>,
        reference: &Reference,
        desc: &Descriptor,
        gate: Option<&Gated>,
    ) -> Result<Vec<u8>, PullError> {
        // The cap applies before anything is read, whether the blob is stored or not.
        let limit = manifest::MAX_CONFIG_BYTES;
        check_descriptor_size("image config", &desc.digest, Some(desc.size), limit)?;
        if self.store.has_blob(&desc.digest, Some(desc.size)) {
            if let Ok(b) = self.store.read_blob_sized(&desc.digest, desc.size) {
                return Ok(b);
            }
        }
        let fetch = self.fetch_config_from(registry, reference, desc, limit);
        let (repo, digest) = (reference.path(), &desc.digest);
        Gated::around(gate, registry, repo, digest, desc.size, &self.cancel, fetch).await
    }

    /// Fetches the config blob, retrying transient failures, and verifies it.
    async fn fetch_config_from(
        &self,
        registry: &Registry,
        reference: &Reference,
        desc: &Descriptor,
        limit: usize,
    ) -> Result<Vec<u8>, PullError> {
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
}

/// Refuses a digest whose algorithm content cannot be fetched and stored by.
pub(super) fn ensure_supported(digest: &Digest) -> Result<(), PullError> {
    digest
        .ensure_content_supported()
        .map_err(|source| PullError::UnsupportedDigest {
            digest: digest.clone(),
            source,
        })
}

/// Refuses a descriptor declaring more than `limit` bytes, before anything is read.
pub(super) fn check_descriptor_size(
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
pub(super) fn check_blob_size(
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
