//! Errors from talking to a registry, rendered the way docker renders them: the OCI error
//! envelope and its codes ([`ErrorCode`], parsed once), and [`RegistryError`], what every
//! request of the client fails with. Which errors are worth another attempt is decided here
//! ([`RegistryError::is_retryable`]); when and how often to retry is `retry.rs`'s business.

use std::fmt;

/// A registry error code (the `code` of the OCI error envelope), parsed once. The codes rpull
/// acts on are variants; any other code is kept as the text the registry sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// `UNAUTHORIZED`: authentication required.
    Unauthorized,
    /// `DENIED`: access to the resource is denied.
    Denied,
    /// `UNSUPPORTED`: the operation is unsupported.
    Unsupported,
    /// `NAME_UNKNOWN`: the repository is not known to the registry.
    NameUnknown,
    /// `MANIFEST_UNKNOWN`: the manifest is not known to the registry.
    ManifestUnknown,
    /// `BLOB_UNKNOWN`: the blob is not known to the registry.
    BlobUnknown,
    /// `NOT_FOUND`: docker's code for a 404 without an error body.
    NotFound,
    /// `TOOMANYREQUESTS`: rate limited.
    TooManyRequests,
    /// `UNKNOWN`: docker's code for a status it has no code for.
    Unknown,
    /// Any other code, as sent.
    Other(String),
}

impl ErrorCode {
    /// The code for `text` (exact, upper case, as registries send them).
    pub fn parse(text: &str) -> ErrorCode {
        match text {
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "NOT_FOUND" => ErrorCode::NotFound,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            "UNKNOWN" => ErrorCode::Unknown,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    /// The code's text, as on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Other(text) => text,
        }
    }

    /// The code for an HTTP status that came without an error body (docker's mapping).
    fn for_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Denied,
            404 => ErrorCode::NotFound,
            429 => ErrorCode::TooManyRequests,
            _ => ErrorCode::Unknown,
        }
    }

    /// Whether no retry can change the answer (docker's non-retryable codes).
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            ErrorCode::Unauthorized
                | ErrorCode::Unsupported
                | ErrorCode::Denied
                | ErrorCode::NameUnknown
                | ErrorCode::BlobUnknown
                | ErrorCode::ManifestUnknown
        )
    }
}

impl Default for ErrorCode {
    /// An envelope entry without a code.
    fn default() -> Self {
        ErrorCode::Other(String::new())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ErrorCode::parse(&String::deserialize(d)?))
    }
}

/// One entry of the OCI error envelope `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ApiError {
    /// Registry error code, e.g. `MANIFEST_UNKNOWN`.
    #[serde(default)]
    pub code: ErrorCode,
    /// Human text from the registry.
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for ApiError {
    /// docker's form: the code lower-cased with `_` turned into spaces, then the message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.as_str().to_lowercase().replace('_', " ");
        if self.message.is_empty() {
            write!(f, "{code}")
        } else {
            write!(f, "{code}: {}", self.message)
        }
    }
}

/// Why a request to a registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request never got an HTTP answer (DNS, connect, TLS, reset, timeout).
    #[error("{method} \"{url}\": {detail}")]
    Transport {
        /// `Get`, `Head`, as Go prints them.
        method: &'static str,
        /// The URL asked for.
        url: String,
        /// What went wrong, Go-style where it can be.
        detail: String,
        /// Whether trying again may help.
        retryable: bool,
        /// Whether it failed before a connection was made (DNS, refused, connect timeout, TLS
        /// handshake): the quiet retry of `retry.rs` does not try such a host again.
        dial: bool,
    },
    /// The registry answered with an error envelope.
    #[error("{}", render_api(.errors))]
    Api {
        /// HTTP status.
        status: u16,
        /// The errors it sent.
        errors: Vec<ApiError>,
        /// `Retry-After` in seconds, when sent.
        retry_after: Option<u64>,
    },
    /// A status rpull did not expect, with no usable error body.
    #[error("received unexpected HTTP status: {0}")]
    UnexpectedStatus(String, u16),
    /// A Basic challenge and no credentials.
    #[error("{method} \"{url}\": no basic auth credentials")]
    NoBasicCredentials {
        /// Request method.
        method: &'static str,
        /// The URL asked for.
        url: String,
    },
    /// The token service failed or answered nonsense.
    #[error("{0}")]
    Auth(String),
    /// Content did not hash to what was asked for.
    #[error("{0}")]
    Verification(String),
    /// The body was cut short or ran long.
    #[error("{0}")]
    Body(String),
    /// Too many redirects, or a redirect that cannot be followed.
    #[error("{0}")]
    Redirect(String),
    /// The `certs.d` directory of a host is unusable (docker's texts).
    #[error("{0}")]
    Certs(String),
    /// Stopped by the user.
    #[error("cancelled")]
    Cancelled,
}

fn render_api(errors: &[ApiError]) -> String {
    match errors {
        [] => "unknown error".to_string(),
        [one] => one.to_string(),
        many => {
            let mut s = String::from("errors:\n");
            for e in many {
                s.push_str(&e.to_string());
                s.push('\n');
            }
            s
        }
    }
}

impl RegistryError {
    /// The same error with `f` applied to every text in it (see [`crate::scrub`]).
    pub fn map_text(self, f: impl Fn(&str) -> String) -> RegistryError {
        match self {
            RegistryError::Transport {
                method,
                url,
                detail,
                retryable,
                dial,
            } => RegistryError::Transport {
                method,
                url: f(&url),
                detail: f(&detail),
                retryable,
                dial,
            },
            RegistryError::Api {
                status,
                errors,
                retry_after,
            } => RegistryError::Api {
                status,
                errors: errors
                    .into_iter()
                    .map(|e| ApiError {
                        code: match e.code {
                            ErrorCode::Other(text) => ErrorCode::Other(f(&text)),
                            known => known,
                        },
                        message: f(&e.message),
                    })
                    .collect(),
                retry_after,
            },
            RegistryError::UnexpectedStatus(text, status) => {
                RegistryError::UnexpectedStatus(f(&text), status)
            }
            RegistryError::NoBasicCredentials { method, url } => {
                RegistryError::NoBasicCredentials { method, url: f(&url) }
            }
            RegistryError::Auth(t) => RegistryError::Auth(f(&t)),
            RegistryError::Verification(t) => RegistryError::Verification(f(&t)),
            RegistryError::Body(t) => RegistryError::Body(f(&t)),
            RegistryError::Redirect(t) => RegistryError::Redirect(f(&t)),
            RegistryError::Certs(t) => RegistryError::Certs(f(&t)),
            RegistryError::Cancelled => RegistryError::Cancelled,
        }
    }

    /// The first registry error code, if the registry sent one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            RegistryError::Api { errors, .. } => errors.first().map(|e| &e.code),
            _ => None,
        }
    }

    /// Whether trying the same request again may succeed (docker's list of non-retryable
    /// errors is the complement: auth, not found, unsupported, verification, cancel).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { retryable, .. } => *retryable,
            RegistryError::Body(_) => true,
            RegistryError::UnexpectedStatus(_, status) => *status >= 500 || *status == 408,
            RegistryError::Api { status, errors, .. } => {
                let fatal = errors.iter().any(|e| e.code.is_fatal());
                !fatal && (*status >= 500 || *status == 429 || *status == 408)
            }
            _ => false,
        }
    }

    /// Seconds the registry asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RegistryError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Builds the error for a failed response from its status and body.
    pub fn from_response(status: u16, reason: &str, body: &[u8], retry_after: Option<u64>) -> RegistryError {
        #[derive(serde::Deserialize)]
        struct Envelope {
            #[serde(default)]
            errors: Vec<ApiError>,
            #[serde(default)]
            details: Option<String>,
        }
        if (400..500).contains(&status) {
            if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
                let mut errors = env.errors;
                if errors.is_empty() {
                    if let Some(d) = env.details {
                        errors.push(ApiError {
                            code: ErrorCode::for_status(status),
                            message: d,
                        });
                    }
                }
                if !errors.is_empty() {
                    return RegistryError::Api {
                        status,
                        errors,
                        retry_after,
                    };
                }
            }
            let code = ErrorCode::for_status(status);
            if code != ErrorCode::Unknown || body.is_empty() {
                let message = match status {
                    401 => "authentication required",
                    403 => "requested access to the resource is denied",
                    429 => "too many requests",
                    404 => "not found",
                    _ => "",
                };
                return RegistryError::Api {
                    status,
                    errors: vec![ApiError {
                        code,
                        message: message.into(),
                    }],
                    retry_after,
                };
            }
            let snippet: String = String::from_utf8_lossy(&body[..body.len().min(200)]).into();
            return RegistryError::UnexpectedStatus(
                format!("{status} {reason}: error parsing HTTP {status} response body: {snippet:?}"),
                status,
            );
        }
        if status == 429 {
            return RegistryError::Api {
                status,
                errors: vec![ApiError {
                    code: ErrorCode::TooManyRequests,
                    message: "too many requests".into(),
                }],
                retry_after,
            };
        }
        RegistryError::UnexpectedStatus(format!("{status} {reason}"), status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_docker() {
        let e = RegistryError::from_response(
            404,
            "Not Found",
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
            None,
        );
        assert_eq!(e.to_string(), "manifest unknown: manifest unknown");
        assert_eq!(e.code(), Some(&ErrorCode::ManifestUnknown));
        assert!(!e.is_retryable());
        let e = RegistryError::from_response(503, "Service Unavailable", b"oops", None);
        assert_eq!(
            e.to_string(),
            "received unexpected HTTP status: 503 Service Unavailable"
        );
        assert!(e.is_retryable());
        let e = RegistryError::from_response(429, "Too Many Requests", b"", Some(3));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(3));
        let e = RegistryError::from_response(403, "Forbidden", b"", None);
        assert_eq!(
            e.to_string(),
            "denied: requested access to the resource is denied"
        );
        assert_eq!(e.code(), Some(&ErrorCode::Denied));
    }

    #[test]
    fn unknown_codes_are_kept_as_text() {
        let e = RegistryError::from_response(
            400,
            "Bad Request",
            br#"{"errors":[{"code":"TAG_INVALID","message":"bad"},{"message":"none"}]}"#,
            None,
        );
        assert_eq!(e.code(), Some(&ErrorCode::Other("TAG_INVALID".into())));
        assert_eq!(e.to_string(), "errors:\ntag invalid: bad\n: none\n");
        for known in ["DENIED", "NAME_UNKNOWN", "TOOMANYREQUESTS", "UNKNOWN"] {
            assert_eq!(ErrorCode::parse(known).as_str(), known);
            assert_ne!(ErrorCode::parse(known), ErrorCode::Other(known.into()));
        }
    }
}
