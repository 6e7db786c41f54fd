//! Why a pull failed, in docker's words where docker has them, and which failures allow a
//! mirror fallback or mean the pull was cancelled.

use super::*;

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
    /// A layer hardlinks to a path that the layers below it in this image (and its own
    /// whiteouts) leave as no file: the layer stays in the store, this image is refused.
    #[error("failed to register layer: hardlink {link:?} to {target:?} in layer {layer}: {reason}")]
    ExternalHardlink {
        /// The layer's DiffID.
        layer: Digest,
        /// The link's path, as `layer.json` records it.
        link: String,
        /// The target's path.
        target: String,
        /// What the target is.
        reason: BadLinkTarget,
    },
    /// Stopped by the user.
    #[error("cancelled")]
    Cancelled,
    /// Something that should not happen (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a hardlink into lower layers cannot be made: what the target is in the image's layers
/// up to the link's. The last words are what link(2) answers there, as containerd's applier
/// reports it (`link OLD NEW: operation not permitted` and so on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLinkTarget {
    /// The target is a directory.
    #[error("the target is a directory in the lower layers (link: operation not permitted)")]
    Directory,
    /// No layer below holds the target.
    #[error("no lower layer holds the target (link: no such file or directory)")]
    Missing,
    /// A whiteout or an opaque directory of this layer (a lower one, or the link's own) hides it.
    #[error("the target is whited out by layer {0} (link: no such file or directory)")]
    WhitedOut(Digest),
    /// A parent of the target is a symlink, which rpull never follows in a layer.
    #[error("its parent {0:?} is a symlink in the lower layers, which is not followed (link: no such file or directory)")]
    SymlinkParent(String),
    /// A parent of the target is not a directory.
    #[error("its parent {0:?} is not a directory in the lower layers (link: not a directory)")]
    NotDirParent(String),
    /// The target names no entry (it leaves or names the root).
    #[error("the target {0}")]
    Invalid(&'static str),
}

impl PullError {
    /// Whether a mirror that failed this way should give way to the next endpoint: anything
    /// that came from the mirror (transport, registry codes, bad content), not local failures.
    pub fn allows_mirror_fallback(&self) -> bool {
        !matches!(
            self,
            PullError::Store(_)
                | PullError::Unpack(_)
                | PullError::ExternalHardlink { .. }
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
