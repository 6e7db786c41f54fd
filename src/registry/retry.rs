//! Retrying: the bound on a `Retry-After` header.
//!
//! It does not decide which errors are worth another attempt ([`super::RegistryError::is_retryable`]).

use reqwest::header::HeaderMap;

use super::transport::header_str;

/// The longest wait a `Retry-After` header can ask for; longer asks wait this long.
pub const MAX_RETRY_AFTER_SECS: u64 = 300;

/// Seconds from a `Retry-After` header (delta-seconds form), at most [`MAX_RETRY_AFTER_SECS`].
pub(crate) fn retry_after(h: &HeaderMap) -> Option<u64> {
    header_str(h, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.min(MAX_RETRY_AFTER_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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
}
