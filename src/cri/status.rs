//! gRPC status codes a CRI client can act on, for every way a pull fails. The message is
//! the error's own text (docker's wording).

use tonic::Code;

use crate::pull::PullError;
use crate::registry::RegistryError;
use crate::store::StoreError;

/// The code for a registry's answer.
fn registry_code(e: &RegistryError) -> Code {
    match e {
        RegistryError::Transport { .. } => Code::Unavailable,
        RegistryError::Api { status, .. } | RegistryError::UnexpectedStatus(_, status) => match status {
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            408 | 429 | 500..=599 => Code::Unavailable,
            _ => Code::Unknown,
        },
        RegistryError::NoBasicCredentials { .. } | RegistryError::Auth(_) => Code::Unauthenticated,
        RegistryError::Verification(_) => Code::DataLoss,
        RegistryError::Body(_) => Code::Unavailable,
        RegistryError::Redirect(_) => Code::Unavailable,
        RegistryError::Certs(_) => Code::FailedPrecondition,
        RegistryError::Cancelled => Code::Cancelled,
    }
}

/// The code for a failed pull.
pub fn pull_code(e: &PullError) -> Code {
    if e.is_cancelled() {
        return Code::Cancelled;
    }
    match e {
        PullError::Reference(_)
        | PullError::Platform(_)
        | PullError::TagWithAllTags
        | PullError::UnsupportedDigest { .. } => Code::InvalidArgument,
        PullError::ManifestNotFound { .. } | PullError::RepositoryNotFound { .. } => Code::NotFound,
        PullError::NoMatchingManifest(_) => Code::NotFound,
        PullError::AccessDenied { source, .. } => match registry_code(source) {
            c @ (Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable) => c,
            // A 404 is how registries hide a private repository.
            _ => Code::PermissionDenied,
        },
        PullError::Registry(r) => registry_code(r),
        PullError::Manifest(_) | PullError::BlobTooLarge { .. } => Code::FailedPrecondition,
        PullError::Store(s) => store_code(s),
        PullError::LayerVerification(_) | PullError::ConfigVerification(_) | PullError::BlobSize { .. } => {
            Code::DataLoss
        }
        PullError::Unpack(_) | PullError::ExternalHardlink { .. } => Code::Internal,
        PullError::Cancelled => Code::Cancelled,
        PullError::Internal(_) => Code::Internal,
    }
}

/// The code for a store failure.
pub fn store_code(e: &StoreError) -> Code {
    if e.is_disk_full() {
        Code::ResourceExhausted
    } else {
        Code::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> RegistryError {
        RegistryError::Api {
            status,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    #[test]
    fn codes() {
        let denied = |status| PullError::AccessDenied {
            name: "app".into(),
            source: api(status),
        };
        assert_eq!(pull_code(&denied(401)), Code::Unauthenticated);
        assert_eq!(pull_code(&denied(403)), Code::PermissionDenied);
        assert_eq!(pull_code(&denied(404)), Code::PermissionDenied);
        assert_eq!(
            pull_code(&PullError::ManifestNotFound {
                reference: "app:v9".into(),
                source: api(404)
            }),
            Code::NotFound
        );
        let transport = RegistryError::Transport {
            method: "Get",
            url: "https://127.0.0.1:1/v2/".into(),
            detail: "connection refused".into(),
            retryable: true,
            dial: true,
        };
        assert_eq!(pull_code(&PullError::Registry(transport)), Code::Unavailable);
        assert_eq!(pull_code(&PullError::Registry(api(503))), Code::Unavailable);
        assert_eq!(pull_code(&PullError::Cancelled), Code::Cancelled);
        assert_eq!(
            pull_code(&PullError::Registry(RegistryError::Cancelled)),
            Code::Cancelled
        );
        assert_eq!(pull_code(&PullError::TagWithAllTags), Code::InvalidArgument);
    }
}
