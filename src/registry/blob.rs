//! Blob downloads as byte streams: the pull code asks for a blob (from an offset) or for one
//! range of it and reads bytes; it never sees an HTTP status.
//!
//! [`Registry::blob_stream`] reads a blob from an offset to its end. A server that ignores the
//! `Range` (200) or answers it wrongly (a `Content-Range` that does not start at the offset, a
//! 416) is read from byte 0 instead, and [`BlobStream::start`] says so. Bytes past the
//! descriptor's size, or fewer than it, are errors.
//!
//! [`Registry::blob_range`] reads exactly `[start, end)`: only a 206 whose `Content-Range` is
//! that range of a blob of the descriptor's size is accepted; a 200, another range or a body
//! longer than the range is [`BlobError::RangeRefused`], on which callers fall back to one
//! stream. A body cut short is asked for again from where it stopped, up to the stream's
//! resume budget, silently.
//!
//! Redirects (to a CDN) are followed per request by [`Registry::send`], which sends
//! credentials only to the registry's own origin. The digest is checked by the store's
//! [`crate::store::Ingest`] over the whole blob before it is committed: ranges cannot be
//! verified alone.

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::Method;

use super::auth::pull_scope;
use super::{Registry, RegistryError};
use crate::digest::Digest;

/// Why a blob could not be read as asked.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The request or the body failed (retryable or not, as [`RegistryError`] says).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The server does not serve this range correctly: fetch the blob as one stream.
    #[error("{0}")]
    RangeRefused(String),
    /// The server sent more bytes than the descriptor declares.
    #[error("{0}")]
    Overrun(String),
}

impl From<BlobError> for RegistryError {
    fn from(e: BlobError) -> RegistryError {
        match e {
            BlobError::Registry(e) => e,
            BlobError::RangeRefused(t) | BlobError::Overrun(t) => RegistryError::Body(t),
        }
    }
}

/// The bytes of a blob from [`BlobStream::start`] on, in order.
pub struct BlobStream<'a> {
    registry: &'a Registry,
    repo: String,
    digest: Digest,
    /// The blob's size (the descriptor's).
    size: u64,
    /// Where the first byte went.
    start: u64,
    /// The next byte's offset.
    pos: u64,
    /// One past the last byte wanted.
    end: u64,
    /// Whether this is a range request (errors are [`BlobError::RangeRefused`]).
    ranged: bool,
    /// Silent re-requests left after a cut.
    resumes: u32,
    resp: Option<reqwest::Response>,
}

impl Registry {
    /// The blob from `offset` to its end (`size` bytes in all); see the module docs.
    pub async fn blob_stream(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        offset: u64,
    ) -> Result<BlobStream<'_>, BlobError> {
        let mut s = BlobStream::new(self, repo, digest, size, offset, size, false, 0);
        let range = (offset > 0).then_some((offset, None));
        match s.request(range).await {
            Ok(()) => Ok(s),
            Err(BlobError::RangeRefused(_)) => {
                // Read it from byte 0 instead.
                s.start = 0;
                s.pos = 0;
                s.request(None).await?;
                Ok(s)
            }
            Err(e) => Err(e),
        }
    }

    /// Exactly `[start, end)` of the blob (`size` bytes in all), re-requested silently up to
    /// `resumes` times when cut short; see the module docs.
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        start: u64,
        end: u64,
        resumes: u32,
    ) -> Result<BlobStream<'_>, BlobError> {
        let mut s = BlobStream::new(self, repo, digest, size, start, end, true, resumes);
        s.request(Some((start, Some(end)))).await?;
        Ok(s)
    }

    /// `GET /v2/<repo>/blobs/<digest>` with an optional `Range: bytes=a-[b-1]`, errors scrubbed.
    async fn get_blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.scrubbed(async {
            let url = self.url(&format!("{repo}/blobs/{digest}")).await?;
            let mut headers = HeaderMap::new();
            if let Some((a, b)) = range {
                let value = match b {
                    Some(b) => format!("bytes={a}-{}", b - 1),
                    None => format!("bytes={a}-"),
                };
                headers.insert(RANGE, HeaderValue::from_str(&value).expect("ascii"));
            }
            Self::check(self.send(Method::GET, url, headers, &pull_scope(repo)).await?).await
        })
        .await
    }
}

impl<'a> BlobStream<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        registry: &'a Registry,
        repo: &str,
        digest: &Digest,
        size: u64,
        start: u64,
        end: u64,
        ranged: bool,
        resumes: u32,
    ) -> BlobStream<'a> {
        BlobStream {
            registry,
            repo: repo.to_string(),
            digest: digest.clone(),
            size,
            start,
            pos: start,
            end,
            ranged,
            resumes,
            resp: None,
        }
    }

    /// The offset of the first byte this stream yields (0 when the server ignored the range
    /// of [`Registry::blob_stream`]).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The offset of the next byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Sends the request for `range` and checks that the answer serves it. (`self.resp` is
    /// `None` here; `first` tells a stream's opening request from a silent resume.)
    async fn request(&mut self, range: Option<(u64, Option<u64>)>) -> Result<(), BlobError> {
        let resp = match self
            .registry
            .get_blob_range(&self.repo, &self.digest, range)
            .await
        {
            Ok(r) => r,
            Err(e) if range.is_some() && status_of(&e) == Some(416) => {
                return Err(BlobError::RangeRefused(format!(
                    "the registry refused a range of blob {}: {e}",
                    self.digest
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let status = resp.status().as_u16();
        let first = self.resp.is_none() && self.pos == self.start;
        if !self.ranged && first && range.is_some() && status == 200 {
            // The whole blob instead of its tail: read it from byte 0.
            self.start = 0;
            self.pos = 0;
        } else if let Some((a, b)) = range {
            let want_end = b.unwrap_or(self.size);
            let served = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            let ok = status == 206
                && matches!(served, Some((s, e, total)) if s == a && e == want_end
                    && total.is_none_or(|t| t == self.size));
            if !ok {
                return Err(BlobError::RangeRefused(format!(
                    "the registry answered a range of blob {} with status {status} and Content-Range {:?}",
                    self.digest,
                    resp.headers().get(CONTENT_RANGE)
                )));
            }
        }
        let expected = self.end - self.pos;
        if let Some(len) = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len > expected {
                return Err(self.overrun());
            }
        }
        self.resp = Some(resp);
        Ok(())
    }

    fn overrun(&self) -> BlobError {
        let text = format!(
            "blob {} is longer than the {} bytes its descriptor declares",
            self.digest, self.size
        );
        if self.ranged {
            BlobError::RangeRefused(text)
        } else {
            BlobError::Overrun(text)
        }
    }

    /// The next bytes, `None` once the last byte wanted was read.
    pub async fn next(&mut self) -> Result<Option<impl AsRef<[u8]> + Send + 'static>, BlobError> {
        loop {
            if self.resp.is_none() {
                if self.pos >= self.end {
                    return Ok(None);
                }
                self.request(Some((self.pos, self.ranged.then_some(self.end))))
                    .await?;
            }
            let resp = self.resp.as_mut().expect("response");
            let failure = match resp.chunk().await {
                Ok(Some(bytes)) => {
                    if self.pos + bytes.len() as u64 > self.end {
                        self.resp = None;
                        return Err(self.overrun());
                    }
                    self.pos += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                Ok(None) if self.pos == self.end => {
                    self.resp = None;
                    return Ok(None);
                }
                Ok(None) => format!("short read: expected {} bytes but got {}", self.end, self.pos),
                Err(e) => format!("error reading blob {}: {e}", self.digest),
            };
            self.resp = None;
            if self.resumes == 0 {
                return Err(RegistryError::Body(failure).into());
            }
            self.resumes -= 1;
        }
    }
}

/// The HTTP status of a registry error, when it has one.
fn status_of(e: &RegistryError) -> Option<u16> {
    match e {
        RegistryError::Api { status, .. } | RegistryError::UnexpectedStatus(_, status) => Some(*status),
        _ => None,
    }
}

/// `bytes <first>-<last>/<total|*>` as `(first, last + 1, total)`; `None` when it does not
/// parse, or when `last + 1` does not fit in a u64 (no blob is that large).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    if b < a {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a, b.checked_add(1)?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 100, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 6, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes */1000"), None);
        // A last byte at u64::MAX has no end that fits: refused, not overflowed.
        assert_eq!(parse_content_range("bytes 0-18446744073709551615/*"), None);
        assert_eq!(
            parse_content_range("bytes 18446744073709551615-18446744073709551615/*"),
            None
        );
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551614/*"),
            Some((0, u64::MAX, None))
        );
    }
}
