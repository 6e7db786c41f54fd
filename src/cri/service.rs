//! `runtime.v1.ImageService` on the engine.
//!
//! * `PullImage` pulls as `rpull pull` does (the host's platform, the node's settings and
//!   credentials, the request's credentials for this call first) and answers the image ID.
//!   Calls for the same reference with the same credentials share one pull (a *flight*); the
//!   pull is cancelled when every caller has gone (client cancel, deadline), or when it made
//!   no progress for the progress timeout (`DeadlineExceeded`). Partial blobs stay for the
//!   next pull to resume, as after CTRL-c.
//! * `ImageStatus`, `ListImages`, `RemoveImage` read and change the store through the engine;
//!   `ImageFsInfo` is `statvfs` of the store's filesystem.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use super::api::image_service_server::ImageService;
use super::api::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec,
    ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest, ListImagesResponse,
    PullImageRequest, PullImageResponse, RemoveImageRequest, RemoveImageResponse, StreamImagesRequest,
    StreamImagesResponse, UInt64Value,
};
use super::auth::request_credential;
use super::status::{pull_code, store_code};
use crate::credentials::CredentialChain;
use crate::engine::{Engine, PullRequest, RemoveOptions};
use crate::inspect::{ImageDetails, InspectError};
use crate::progress::watchdog::{guard, Watchdog};
use crate::reference::Reference;
use crate::registry::Credential;

/// The longest image string accepted (a reference is at most 255 characters of name plus a
/// tag and a digest; anything this long is not one).
pub const MAX_IMAGE_LEN: usize = 4096;

/// containerd's default `image_pull_progress_timeout`.
pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How a pull ended, shareable between the callers of one flight.
type FlightResult = Result<String, (Code, String)>;

/// One pull and the callers waiting for it.
struct Flight {
    id: u64,
    result: watch::Receiver<Option<FlightResult>>,
    cancel: CancellationToken,
    waiters: usize,
}

/// Who a flight is for: the reference and a hash of the request's credential.
type FlightKey = (String, [u8; 32]);

/// The service.
pub struct CriService {
    engine: Engine,
    progress_timeout: Option<Duration>,
    shutdown: CancellationToken,
    flights: Arc<Mutex<HashMap<FlightKey, Flight>>>,
}

impl CriService {
    /// A service on `engine`; `progress_timeout` `None` never gives up on a slow pull;
    /// `shutdown` cancels every running pull.
    pub fn new(
        engine: Engine,
        progress_timeout: Option<Duration>,
        shutdown: CancellationToken,
    ) -> CriService {
        CriService {
            engine,
            progress_timeout,
            shutdown,
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Joins the flight for `key`, starting one when none runs (or the one running is being
    /// cancelled because its callers left).
    fn join(&self, key: &FlightKey, reference: &Reference, credential: Option<Credential>) -> Waiter {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = flights.get_mut(key).filter(|f| !f.cancel.is_cancelled()) {
            f.waiters += 1;
            return Waiter {
                key: key.clone(),
                id: f.id,
                result: f.result.clone(),
                flights: self.flights.clone(),
            };
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let cancel = self.shutdown.child_token();
        flights.insert(
            key.clone(),
            Flight {
                id,
                result: rx.clone(),
                cancel: cancel.clone(),
                waiters: 1,
            },
        );
        let engine = self.engine.clone();
        let reference = reference.clone();
        let timeout = self.progress_timeout;
        let all = self.flights.clone();
        let key2 = key.clone();
        tokio::spawn(async move {
            let result = run_pull(engine, reference, credential, timeout, cancel.clone()).await;
            let mut flights = all.lock().unwrap_or_else(|e| e.into_inner());
            if flights.get(&key2).is_some_and(|f| f.id == id) {
                flights.remove(&key2);
            }
            let _ = tx.send(Some(result));
        });
        Waiter {
            key: key.clone(),
            id,
            result: rx,
            flights: self.flights.clone(),
        }
    }

    fn image_from(&self, d: ImageDetails) -> Image {
        let user = d.user.split(':').next().unwrap_or_default();
        let (uid, username) = match user.parse::<i64>() {
            Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
            Err(_) => (None, user.to_string()),
        };
        Image {
            id: d.id.to_string(),
            repo_tags: d.repo_tags,
            repo_digests: d.repo_digests,
            size: d.size.max(1),
            uid,
            username,
            spec: Some(ImageSpec {
                image: d.id.to_string(),
                ..Default::default()
            }),
            pinned: false,
        }
    }

    /// Runs blocking store work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Engine) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(engine))
            .await
            .map_err(|e| Status::internal(format!("internal error: {e}")))?
    }
}

/// One caller of a flight; leaving (drop) before the end cancels the pull when it was the
/// last one.
struct Waiter {
    key: FlightKey,
    id: u64,
    result: watch::Receiver<Option<FlightResult>>,
    flights: Arc<Mutex<HashMap<FlightKey, Flight>>>,
}

impl Waiter {
    async fn wait(mut self) -> FlightResult {
        match self.result.wait_for(Option::is_some).await {
            Ok(v) => v
                .clone()
                .unwrap_or_else(|| Err((Code::Internal, "internal error".into()))),
            Err(_) => Err((Code::Internal, "internal error: the pull task ended".into())),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.result.borrow().is_some() {
            return;
        }
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = flights.get_mut(&self.key).filter(|f| f.id == self.id) {
            f.waiters = f.waiters.saturating_sub(1);
            if f.waiters == 0 {
                f.cancel.cancel();
            }
        }
    }
}

/// One pull, from the node's and the request's credentials to the image ID.
async fn run_pull(
    engine: Engine,
    reference: Reference,
    credential: Option<Credential>,
    progress_timeout: Option<Duration>,
    cancel: CancellationToken,
) -> FlightResult {
    // Docker's config is read for every pull (as each `docker pull` reads it), off the
    // async workers.
    let chain = match tokio::task::spawn_blocking(|| CredentialChain::load(None)).await {
        Ok(Ok((chain, _warning))) => chain,
        Ok(Err(e)) => return Err((Code::FailedPrecondition, e.to_string())),
        Err(e) => return Err((Code::Internal, format!("reading docker's config: {e}"))),
    };
    let chain = match credential {
        Some(c) => chain.with_given(&reference.credential_key(), c),
        None => chain,
    };
    let request = PullRequest {
        platform: None,
        all_tags: false,
        credentials: Some(chain.into_lookup()),
        ..Default::default()
    };
    let watchdog = Arc::new(Watchdog::new());
    let pull = engine.pull_image(&reference, &request, watchdog.clone(), cancel.clone());
    // A stalled pull stops as after CTRL-c: partial blobs are kept for the next one.
    match guard(&watchdog, progress_timeout, &cancel, pull).await {
        Ok(Ok(outcome)) => Ok(outcome.image_id.to_string()),
        Ok(Err(e)) => Err((pull_code(&e), e.to_string())),
        Err(stalled) => Err((
            Code::DeadlineExceeded,
            format!("failed to pull {reference}: {stalled}"),
        )),
    }
}

/// The image string of a request, checked: `InvalidArgument` when empty or absurdly long.
fn image_of(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    let image = spec.map(|s| s.image.trim()).unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument("image must not be empty"));
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(Status::invalid_argument(format!(
            "image is {} bytes long, longer than any reference ({MAX_IMAGE_LEN})",
            image.len()
        )));
    }
    Ok(image)
}

/// A hash of the credential, so that two callers with different credentials do not share a pull.
fn credential_hash(c: Option<&Credential>) -> [u8; 32] {
    let mut h = Sha256::new();
    match c {
        None => h.update(b"none"),
        Some(Credential::Basic { username, password }) => {
            h.update(b"basic\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(password.as_bytes());
        }
        Some(Credential::IdentityToken(t)) => {
            h.update(b"identity\0");
            h.update(t.as_bytes());
        }
        Some(Credential::RegistryToken(t)) => {
            h.update(b"registry\0");
            h.update(t.as_bytes());
        }
    }
    h.finalize().into()
}

/// How long a pull may run for a client whose deadline is `d` away: early enough that this
/// service's `DeadlineExceeded` wins over tonic's own `Cancelled` at the deadline itself,
/// whose timer started when the request arrived, even on a loaded machine (a tenth of the
/// time, at most a second, plus 20 ms).
fn answer_before(d: Duration) -> Duration {
    d.saturating_sub((d / 10).min(Duration::from_secs(1)) + Duration::from_millis(20))
}

/// The time left before the client's deadline (`grpc-timeout`), if it sent one.
fn client_deadline<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn inspect_status(e: InspectError) -> Status {
    match e {
        InspectError::Ambiguous(_) => Status::invalid_argument(e.to_string()),
        InspectError::Store(s) => Status::new(store_code(&s), s.to_string()),
        InspectError::Images(i) => Status::internal(i.to_string()),
    }
}

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.trim().is_empty());
        if filter.as_ref().is_some_and(|f| f.len() > MAX_IMAGE_LEN) {
            return Err(Status::invalid_argument("image filter too long"));
        }
        let found = self
            .blocking(move |engine| match filter {
                Some(f) => engine
                    .inspect(&f)
                    .map(|d| d.into_iter().collect())
                    .map_err(inspect_status),
                None => engine.inspect_all().map_err(inspect_status),
            })
            .await?;
        Ok(Response::new(ListImagesResponse {
            images: found.into_iter().map(|d| self.image_from(d)).collect(),
        }))
    }

    type StreamImagesStream = futures_util::stream::Empty<Result<StreamImagesResponse, Status>>;

    async fn stream_images(
        &self,
        _request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented(
            "StreamImages is not implemented: use ListImages",
        ))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let image = image_of(request.image.as_ref())?.to_string();
        let found = self
            .blocking(move |engine| engine.inspect(&image).map_err(inspect_status))
            .await?;
        let mut info = HashMap::new();
        if let (true, Some(d)) = (request.verbose, &found) {
            let config: serde_json::Value = serde_json::from_slice(&d.config).unwrap_or_default();
            let doc = serde_json::json!({"id": d.id.to_string(), "imageSpec": config});
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: found.map(|d| self.image_from(d)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let deadline = client_deadline(&request);
        let request = request.into_inner();
        let image = image_of(request.image.as_ref())?;
        let reference = Reference::parse_normalized(image).map_err(|e| {
            Status::invalid_argument(format!("failed to parse image reference {image:?}: {e}"))
        })?;
        let (reference, _) = reference.with_default_tag();
        let credential = request_credential(request.auth.as_ref(), &reference)
            .map_err(|e| Status::invalid_argument(format!("invalid auth config: {e}")))?;
        let key = (reference.to_string(), credential_hash(credential.as_ref()));
        let waiter = self.join(&key, &reference, credential);
        let result = match deadline {
            // tonic answers `Cancelled` itself at the deadline; answer `DeadlineExceeded` just
            // before it, as a Go server does. Dropping the waiter cancels the pull.
            Some(d) => match tokio::time::timeout(answer_before(d), waiter.wait()).await {
                Ok(r) => r,
                Err(_) => Err((
                    Code::DeadlineExceeded,
                    format!("failed to pull {reference}: deadline exceeded"),
                )),
            },
            None => waiter.wait().await,
        };
        match result {
            Ok(image_ref) => Ok(Response::new(PullImageResponse { image_ref })),
            Err((code, message)) => Err(Status::new(code, message)),
        }
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let image = image_of(request.get_ref().image.as_ref())?.to_string();
        self.blocking(move |engine| {
            let Some(d) = engine.inspect(&image).map_err(inspect_status)? else {
                return Ok(());
            };
            // Every reference of the image goes (the CRI rule), hence `force`; what nothing
            // uses any more is freed as `rpull rmi` frees it (while a pull runs the store is
            // busy and that is left to a later removal or `rpull prune`).
            let opts = RemoveOptions {
                force: true,
                prune: true,
            };
            let removal = engine
                .remove(&[d.id.to_string()], &opts)
                .map_err(|e| Status::internal(e.to_string()))?;
            for o in removal.outcomes {
                o.result.map_err(|e| Status::internal(e.to_string()))?;
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let root = self.engine.store().root().to_path_buf();
        let usage = self
            .blocking(move |_| {
                fs_usage(&root).map_err(|e| Status::internal(format!("statvfs {}: {e}", root.display())))
            })
            .await?;
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: Vec::new(),
        }))
    }
}

/// `statvfs` of the filesystem holding `root`: bytes and inodes in use.
pub fn fs_usage(root: &std::path::Path) -> std::io::Result<FilesystemUsage> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(root.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid C string and `st` a zeroed out-parameter of the right type.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    let frsize = st.f_frsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * frsize;
    let inodes = (st.f_files as u64).saturating_sub(st.f_ffree as u64);
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(1);
    Ok(FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: root.display().to_string(),
        }),
        used_bytes: Some(UInt64Value { value: used }),
        inodes_used: Some(UInt64Value { value: inodes }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("grpc-timeout", v.parse().unwrap());
            client_deadline(&r)
        };
        assert_eq!(with("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("3M"), Some(Duration::from_secs(180)));
        assert_eq!(with("10u"), Some(Duration::from_micros(10)));
        assert_eq!(with("7x"), None);
        assert_eq!(with("m"), None);
        assert_eq!(client_deadline(&Request::new(())), None);
    }

    #[test]
    fn the_service_answers_well_before_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(answer_before(ms(1500)), ms(1330));
        assert_eq!(
            answer_before(Duration::from_secs(120)),
            Duration::from_secs(119) - ms(20)
        );
        assert_eq!(answer_before(ms(10)), Duration::ZERO);
    }

    #[test]
    fn image_strings() {
        let spec = |s: &str| ImageSpec {
            image: s.to_string(),
            ..Default::default()
        };
        assert_eq!(image_of(Some(&spec(" debian "))).unwrap(), "debian");
        for bad in ["", "  "] {
            assert_eq!(
                image_of(Some(&spec(bad))).unwrap_err().code(),
                Code::InvalidArgument
            );
        }
        assert_eq!(image_of(None).unwrap_err().code(), Code::InvalidArgument);
        let long = "a".repeat(MAX_IMAGE_LEN + 1);
        assert_eq!(
            image_of(Some(&spec(&long))).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn credentials_key_flights_apart() {
        let basic = |p: &str| {
            Some(Credential::Basic {
                username: "u".into(),
                password: p.into(),
            })
        };
        assert_eq!(
            credential_hash(basic("a").as_ref()),
            credential_hash(basic("a").as_ref())
        );
        assert_ne!(
            credential_hash(basic("a").as_ref()),
            credential_hash(basic("b").as_ref())
        );
        assert_ne!(credential_hash(None), credential_hash(basic("").as_ref()));
    }
}
