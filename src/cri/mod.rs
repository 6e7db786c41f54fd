//! The Kubernetes CRI image service (`runtime.v1.ImageService`) over gRPC on a unix socket:
//! `rpull serve --cri-socket PATH`, driven by the same [`Engine`](crate::engine::Engine) as
//! the CLI.
//!
//! `third_party/cri-api/api.proto` is upstream's `k8s.io/cri-api` `pkg/apis/runtime/v1/api.proto`, unchanged,
//! from <https://github.com/kubernetes/cri-api/blob/v0.36.3/pkg/apis/runtime/v1/api.proto>
//! (tag v0.36.3, commit 1733b6a9fa123c5887eefa14523c532b12827f73; Apache-2.0, copyright The
//! Kubernetes Authors). `generated/runtime.v1.rs` is compiled from it by `tests/it/generated.rs`
//! with protox and tonic-prost-build (no `protoc`); `RPULL_BLESS=1 cargo test --test it generated`
//! regenerates it. Only `ImageService` and the messages its methods reach are generated (1.5k
//! lines instead of 7k with the `RuntimeService` rpull does not serve).

pub mod auth;
pub mod service;
pub mod status;

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::check::{CheckError, Report as CheckReport};
use crate::engine::Engine;

pub use service::{CriService, DEFAULT_PROGRESS_TIMEOUT};

/// The socket `rpull serve` listens on when none is named.
pub const DEFAULT_SOCKET: &str = "/run/rpull/cri.sock";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// Another process answers on the socket.
    #[error("{0} is in use by another process (another rpull serve?); refusing to take it over")]
    SocketInUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The start-up check of the store failed.
    #[error("checking the image store: {0}")]
    Check(#[from] CheckError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(String),
}

/// Verifies the store at start-up and repairs what a crash left (partial ingests stay and
/// resume; corrupt blobs, half-unpacked layers and stale temporary files go).
pub async fn startup_check(engine: &Engine) -> Result<CheckReport, CriError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || engine.check(true))
        .await
        .map_err(|e| CriError::Serve(e.to_string()))?
        .map_err(CriError::Check)
}

/// Binds the unix socket at `path`: creates its directory, removes a stale socket file left by
/// a process that died, and refuses when a live process answers on it. The socket is made
/// `0660` (the owner and its group; kubelet runs as root).
pub fn bind(path: &Path) -> Result<UnixListener, CriError> {
    let listen_err = |source| CriError::Listen {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(CriError::SocketInUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(listen_err)?;
            }
            Err(e) => return Err(listen_err(e)),
        },
        Ok(_) => return Err(CriError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen_err)?;
    Ok(listener)
}

/// Serves `runtime.v1.ImageService` on `listener` until `shutdown`: then stops accepting,
/// cancels the running pulls (their callers get `Cancelled`), waits for the calls to answer
/// and removes the socket file at `path`.
pub async fn serve(
    engine: Engine,
    listener: UnixListener,
    path: &Path,
    progress_timeout: Option<Duration>,
    shutdown: CancellationToken,
) -> Result<(), CriError> {
    let service = CriService::new(engine, progress_timeout, shutdown.clone());
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(api::image_service_server::ImageServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(path);
    result.map_err(|e| CriError::Serve(e.to_string()))
}

/// The CRI v1 image service: its messages, its server trait and its client (generic over the
/// transport).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod api {
    include!("generated/runtime.v1.rs");
}

/// Upstream marks the secrets of `AuthConfig` `[debug_redact = true]`; prost has no such
/// option, so the generated type skips `Debug` and this one redacts them.
impl fmt::Debug for api::AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::api::AuthConfig;
    use super::{bind, CriError};

    #[tokio::test]
    async fn bind_takes_a_stale_socket_and_refuses_a_live_one_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/cri.sock");
        // Missing directory: created.
        let live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(CriError::SocketInUse(_))));
        // Its process gone (listener closed), the file stays and is stale.
        drop(live);
        assert!(path.exists());
        let again = bind(&path).unwrap();
        drop(again);
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(bind(&file), Err(CriError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = AuthConfig {
            username: "alice".into(),
            password: "s3cret-pw".into(),
            auth: "YWxpY2U6czNjcmV0LXB3".into(),
            identity_token: "tok-123".into(),
            ..Default::default()
        };
        let text = format!("{auth:?}");
        assert!(text.contains("alice"), "{text}");
        for secret in ["s3cret-pw", "YWxpY2U6czNjcmV0LXB3", "tok-123"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
