//! The HTTP API: `POST /node/{target}/container/docker/pull` and `GET /job/{id}` (both also
//! under `/api`), bearer-token auth, and `{error, details, code}` bodies for every error.
//! Connections are served with a bound on reading a request: its head (also the idle time of
//! a kept-alive connection before the next one) and then its body must each arrive within
//! [`Api::read_timeout`], so that a client that sends nothing, or trickles, does not hold a
//! task and a file descriptor for ever.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::auth::{now, Claims, SigningKey, DOCKER_WRITE, JOB_READ};
use super::dispatch::Backend;
use super::job::{Job, PullResult, Status};
use super::target::Target;
use crate::reference::Reference;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the API serves with.
pub struct Api {
    /// Where jobs run.
    pub backend: Backend,
    /// The token signing key.
    pub key: SigningKey,
    /// How long a request waits for the agents.
    pub job_timeout: Duration,
    /// How long a client may take to send a request's head, and then its body; also how long
    /// a kept-alive connection may idle.
    pub read_timeout: Duration,
    /// Told one line per job (the command logs it); never a token.
    pub log: Box<dyn Fn(String) + Send + Sync>,
}

/// An error answer: `{error, details, code}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// More about it.
    pub details: String,
    /// The HTTP status.
    pub code: u16,
}

/// An error with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, String);

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, details: impl Into<String>) -> ApiError {
        ApiError(status, error.into(), details.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(status, error, details) = self;
        let body = ErrorBody {
            error,
            details,
            code: status.as_u16(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The pull request's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    image: String,
}

/// The 202 answer.
#[derive(Debug, Serialize)]
struct PullAnswer {
    job_id: String,
    results: Vec<PullResult>,
}

/// The API's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/node/{target}/container/docker/pull", post(pull))
        .route("/api/node/{target}/container/docker/pull", post(pull))
        .route("/job/{id}", get(job))
        .route("/api/job/{id}", get(job))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// How long the accept loop pauses after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown`, then waits for the requests running. A
/// connection whose request head does not arrive within `read_timeout` (also between the
/// requests of a kept-alive one) is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(true);
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and the like pass; the listener itself stays good.
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that went away or timed out is no error of the server's.
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Checks the bearer token and that it grants `permission`.
fn authorize(api: &Api, headers: &HeaderMap, permission: &str) -> Result<Claims, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Bearer token required",
                "send Authorization: Bearer <token> (rpull token mints one)",
            )
        })?;
    let claims = api.key.verify(token, now()).map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("Invalid token: {e}"),
            e.to_string(),
        )
    })?;
    if !claims.allows(permission) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Insufficient permissions. Required: {permission}"),
            format!("the token for {:?} does not grant {permission}", claims.sub),
        ));
    }
    Ok(claims)
}

/// A path parameter, or a 400 in the API's shape (instead of axum's plain-text rejection).
fn param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid path", e.body_text()))
}

async fn pull(
    State(api): State<Arc<Api>>,
    target: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = authorize(&api, &headers, DOCKER_WRITE)?;
    let target = param(target)?;
    let read = tokio::time::timeout(api.read_timeout, to_bytes(body, BODY_LIMIT));
    let bytes = read
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body too slow",
                format!("the body must arrive within {:?}", api.read_timeout),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                format!("the body must be at most {BODY_LIMIT} bytes"),
            )
        })?;
    let body: PullBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid request body", e.to_string()))?;
    let target = Target::parse(&target)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid target", e.to_string()))?;
    if body.image.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid image",
            "image is required",
        ));
    }
    if let Err(e) = Reference::parse_normalized(&body.image) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid image",
            e.to_string(),
        ));
    }
    let started = std::time::Instant::now();
    let job = api
        .backend
        .run(&target, &body.image, api.job_timeout, &*api.log)
        .await
        .map_err(|e| {
            (api.log)(format!("pull {} on {target} for {}: {e}", body.image, claims.sub));
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "job could not be run",
                e.to_string(),
            )
        })?;
    let ok = job.results.iter().filter(|r| r.status == Status::Ok).count();
    (api.log)(format!(
        "job {} pull {} on {target} for {}: {ok}/{} ok in {} ms",
        job.job_id,
        body.image,
        claims.sub,
        job.results.len(),
        started.elapsed().as_millis()
    ));
    outcome(&target, job)
}

/// A job's HTTP answer: a failed single-agent job and a broadcast nobody answered are 500s.
fn outcome(target: &Target, job: Job) -> Result<Response, ApiError> {
    if target.is_broadcast() {
        let answered = job.results.iter().any(|r| r.error != super::job::TIMEOUT_ERROR);
        if !answered {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "job failed: no agent answered",
                format!("job {}: {}", job.job_id, super::job::TIMEOUT_ERROR),
            ));
        }
    } else {
        match job.results.first() {
            None => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "job failed: no agent answered",
                    format!("job {}: {}", job.job_id, super::job::TIMEOUT_ERROR),
                ))
            }
            Some(r) if r.status != Status::Ok => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("job failed: {}", r.error),
                    format!("job {} on {}: {}", job.job_id, r.hostname, r.error),
                ))
            }
            Some(_) => {}
        }
    }
    let answer = PullAnswer {
        job_id: job.job_id,
        results: job.results,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

async fn job(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, JOB_READ)?;
    let id = param(id)?;
    match api.backend.job(&id).await {
        Ok(Some(job)) => Ok(Json(job).into_response()),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "job not found",
            format!("no job {id}"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the job",
            e.to_string(),
        )),
    }
}
