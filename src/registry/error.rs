//! Errors from talking to a registry, rendered the way docker renders them.

use std::fmt;

/// One entry of the OCI error envelope `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ApiError {
    /// Registry error code, e.g. `MANIFEST_UNKNOWN`.
    #[serde(default)]
    pub code: String,
    /// Human text from the registry.
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for ApiError {
    /// docker's form: the code lower-cased with `_` turned into spaces, then the message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.to_lowercase().replace('_', " ");
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
            } => RegistryError::Transport {
                method,
                url: f(&url),
                detail: f(&detail),
                retryable,
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
                        code: f(&e.code),
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
    pub fn code(&self) -> Option<&str> {
        match self {
            RegistryError::Api { errors, .. } => errors.first().map(|e| e.code.as_str()),
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
                let fatal = errors.iter().any(|e| {
                    matches!(
                        e.code.as_str(),
                        "UNAUTHORIZED"
                            | "UNSUPPORTED"
                            | "DENIED"
                            | "NAME_UNKNOWN"
                            | "BLOB_UNKNOWN"
                            | "MANIFEST_UNKNOWN"
                    )
                });
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
                            code: code_for_status(status).into(),
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
            let code = code_for_status(status);
            if code != "UNKNOWN" || body.is_empty() {
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
                        code: code.into(),
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
                    code: "TOOMANYREQUESTS".into(),
                    message: "too many requests".into(),
                }],
                retry_after,
            };
        }
        RegistryError::UnexpectedStatus(format!("{status} {reason}"), status)
    }
}

fn code_for_status(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NOT_FOUND",
        429 => "TOOMANYREQUESTS",
        _ => "UNKNOWN",
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
        assert_eq!(e.code(), Some("MANIFEST_UNKNOWN"));
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
    }
}
