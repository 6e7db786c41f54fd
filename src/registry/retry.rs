//! The one retry policy of the registry client, for every request of a pull but the layer
//! downloads: the `/v2/` ping, token requests, manifest `HEAD` and `GET`, and each page of a
//! tag list are tried [`QUIET_ATTEMPTS`] times in all, with a short backoff and nothing shown
//! ([`quietly`]); the config blob (`pull/mod.rs`) uses the same [`backoff`] for its
//! `--retry` attempts.
//!
//! What is tried again ([`is_transient`]): a connection reset or timeout once connected, a
//! body cut short, a 5xx, 408 or 429 answer. The wait is 250 ms, doubling, or what a
//! `Retry-After` header asks when longer, at most [`MAX_RETRY_AFTER_SECS`]. What cannot get
//! better is never tried again: 401, 403, 404 and the other fatal codes, digest mismatches,
//! bodies too large or not understood, redirect and TLS failures, and a host that could not
//! be connected to at all (refused or silent), which keeps the scheme probe and the mirror
//! fallback as fast as before.
//!
//! Layer downloads are not retried here: `pull/fetch.rs` resumes them with docker's visible
//! `Retrying in N seconds` countdown, deciding with [`RegistryError::is_retryable`].

use std::future::Future;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::RegistryError;

/// The longest wait a `Retry-After` header can ask for; longer asks wait this long.
pub const MAX_RETRY_AFTER_SECS: u64 = 300;

/// Attempts of a quietly retried request, the first included.
pub const QUIET_ATTEMPTS: u32 = 3;

/// Seconds from a `Retry-After` header (delta-seconds form), at most [`MAX_RETRY_AFTER_SECS`].
pub(crate) fn retry_after(h: &HeaderMap) -> Option<u64> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.min(MAX_RETRY_AFTER_SECS))
}

/// The wait after failed attempt `attempt` (1 for the first): 250 ms, doubling up to 16 s,
/// or the `Retry-After` of `err` (already bounded) when that is longer.
pub fn backoff(attempt: u32, err: Option<&RegistryError>) -> Duration {
    let step = Duration::from_millis(250 << attempt.saturating_sub(1).min(6));
    match err.and_then(RegistryError::retry_after) {
        Some(secs) => step.max(Duration::from_secs(secs)),
        None => step,
    }
}

/// Whether the quiet retry tries a request that failed with `err` again.
pub fn is_transient(err: &RegistryError) -> bool {
    match err {
        RegistryError::Transport { retryable, dial, .. } => *retryable && !*dial,
        // Too large or not understood: the same bytes would come again.
        RegistryError::Body(_) => false,
        other => other.is_retryable(),
    }
}

/// Whether an answer with `status` (where the status is not an error yet, as for the ping)
/// is worth asking again.
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Runs `op` up to [`QUIET_ATTEMPTS`] times while it fails transiently, waiting [`backoff`]
/// in between; the last result is returned as it is. Dropping the future stops it.
pub(crate) async fn quietly<T, F, Fut>(op: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    quietly_while(op, |_| false).await
}

/// As [`quietly`], and also asks again after an answer that `unsettled` says is transient
/// (the ping's 5xx, which is not an error by itself).
pub(crate) async fn quietly_while<T, F, Fut>(
    mut op: F,
    unsettled: impl Fn(&T) -> bool,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 1;
    loop {
        let result = op().await;
        let again = match &result {
            Ok(answer) => unsettled(answer),
            Err(e) => is_transient(e),
        };
        if !again || attempt >= QUIET_ATTEMPTS {
            return result;
        }
        tokio::time::sleep(backoff(attempt, result.as_ref().err())).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn retry_after_is_bounded() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("18446744073709551615"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER_SECS));
        h.insert("retry-after", HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(7));
        h.insert("retry-after", HeaderValue::from_static("99999999999999999999999"));
        assert_eq!(retry_after(&h), None);
    }

    fn transport(retryable: bool, dial: bool) -> RegistryError {
        RegistryError::Transport {
            method: "Get",
            url: "https://r/v2/".into(),
            detail: "x".into(),
            retryable,
            dial,
        }
    }

    #[test]
    fn only_what_can_get_better_is_transient() {
        let status = |code: u16, body: &[u8]| RegistryError::from_response(code, "", body, None);
        assert!(is_transient(&status(500, b"")));
        assert!(is_transient(&status(503, b"busy")));
        assert!(is_transient(&status(429, b"")));
        assert!(is_transient(&transport(true, false)));
        for fatal in [
            status(401, b""),
            status(403, b""),
            status(404, b""),
            status(
                404,
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
            transport(true, true),
            transport(false, false),
            RegistryError::Body("answer from x is larger than 4 bytes".into()),
            RegistryError::Verification("manifest verification failed".into()),
            RegistryError::Redirect("stopped after 10 redirects".into()),
        ] {
            assert!(!is_transient(&fatal), "{fatal:?}");
        }
        assert!(is_transient_status(StatusCode::BAD_GATEWAY));
        assert!(!is_transient_status(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_millis(250));
        assert_eq!(backoff(2, None), Duration::from_millis(500));
        assert_eq!(backoff(7, None), Duration::from_secs(16));
        assert_eq!(backoff(70, None), Duration::from_secs(16));
        let limited = RegistryError::from_response(429, "", b"", Some(3));
        assert_eq!(backoff(1, Some(&limited)), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn quietly_stops_at_the_attempts_or_the_first_fatal_error() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = quietly(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(transport(true, false))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), QUIET_ATTEMPTS);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = quietly(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(transport(true, true))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a failed dial is not retried");

        calls.store(0, Ordering::SeqCst);
        let r = quietly_while(|| async { Ok(calls.fetch_add(1, Ordering::SeqCst)) }, |n| *n == 0).await;
        assert_eq!(r.unwrap(), 1, "an unsettled answer is asked again");
    }
}
