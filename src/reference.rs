//! Image references (`name[:tag][@digest]`): docker's grammar from distribution/reference,
//! written out by hand, the normalization `docker pull` applies (`ParseNormalizedNamed`),
//! the familiar (short) form docker prints, and the mapping from a reference's domain to the
//! registry host and the credential key. Error texts are docker's, word for word.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The domain docker uses for Docker Hub after normalization.
const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy Docker Hub domain; normalization rewrites it to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The host that serves the v2 API for Docker Hub.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key under which docker's `config.json` stores Docker Hub credentials.
const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";
/// The longest repository path (without the domain) the grammar allows.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// The longest tag the grammar allows.
const TAG_LENGTH_MAX: usize = 128;

/// Why a reference string was refused. The texts are docker's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The string does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// Plain parsing: the string would be valid if it were lower case.
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    /// Plain parsing of an empty string.
    #[error("repository name must have at least one component")]
    NameEmpty,
    /// The repository path (without the domain) is longer than 255 characters.
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// A tag given to [`Reference::with_tag`] does not match the tag grammar.
    #[error("invalid tag format")]
    TagInvalidFormat,
    /// Normalized parsing of a bare 64-character lower-case hex string (an image ID).
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexadecimalName(String),
    /// Normalized parsing: the repository path (shown) is not all lower case.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RemoteNotLowercase(String),
    /// The digest has the reference grammar's shape but go-digest refuses it.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A parsed image reference: domain, repository path, optional tag and optional digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way `docker pull` does (`ParseNormalizedNamed`): a missing domain
    /// becomes `docker.io`, a one-component Docker Hub path gets `library/`, and
    /// `index.docker.io` becomes `docker.io`.
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexadecimalName(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split_once(':').map_or(remainder.as_str(), |(r, _)| r);
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::RemoteNotLowercase(remote.to_string()));
        }
        Reference::parse(&format!("{domain}/{remainder}"))
    }

    /// Parses a reference with the grammar alone (distribution/reference `Parse`): no default
    /// domain, no `library/`. The domain is empty when the string has none.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let Some(parts) = match_reference(s) else {
            if s.is_empty() {
                return Err(ReferenceError::NameEmpty);
            }
            if match_reference(&s.to_lowercase()).is_some() {
                return Err(ReferenceError::NameContainsUppercase);
            }
            return Err(ReferenceError::InvalidFormat);
        };
        if parts.path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = parts.digest.map(Digest::parse).transpose()?;
        Ok(Reference {
            domain: parts.domain.to_string(),
            path: parts.path.to_string(),
            tag: parts.tag.map(str::to_string),
            digest,
        })
    }

    /// The domain (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`); empty after a plain
    /// [`Reference::parse`] of a string without one.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path sent to the registry (`library/debian`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if one was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if one was given.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name: `domain/path`, or just the path when the domain is empty.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The short name docker prints: `docker.io/` is dropped, and so is `library/` when the
    /// rest of the path has no `/` (`debian`, `library/foo/bar`, `127.0.0.1:5000/bench/debian`).
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }

    /// The familiar name followed by `:tag` and `@digest` when present (`debian:latest`).
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    /// A copy with `tag` in place of any tag (the digest is kept).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError::TagInvalidFormat);
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// A copy without the tag (the digest is kept).
    pub fn without_tag(&self) -> Reference {
        Reference {
            tag: None,
            ..self.clone()
        }
    }

    /// A copy with `d` in place of any digest (the tag is kept).
    pub fn with_digest(&self, d: Digest) -> Reference {
        Reference {
            digest: Some(d),
            ..self.clone()
        }
    }

    /// A copy with neither tag nor digest.
    pub fn name_only(&self) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    /// Whether the reference has neither a tag nor a digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// docker's TagNameOnly: adds "latest" when there is neither tag nor digest; returns whether it did.
    pub fn with_default_tag(self) -> (Reference, bool) {
        if self.is_name_only() {
            let tagged = Reference {
                tag: Some("latest".to_string()),
                ..self
            };
            (tagged, true)
        } else {
            (self, false)
        }
    }

    /// Host serving the v2 API: "registry-1.docker.io" for docker.io, else the domain as written.
    ///
    /// The legacy `index.docker.io`, which only a plain [`Reference::parse`] leaves in place,
    /// counts as Docker Hub too.
    pub fn registry_host(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_API_HOST.to_string()
        } else {
            self.domain.clone()
        }
    }

    /// Key used for credentials in docker's config.json: `https://index.docker.io/v1/` for docker.io, else the domain.
    pub fn credential_key(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_CREDENTIAL_KEY.to_string()
        } else {
            self.domain.clone()
        }
    }

    /// Whether the reference points at Docker Hub (`docker.io`, or the legacy `index.docker.io`).
    pub fn is_docker_hub(&self) -> bool {
        self.domain == DEFAULT_DOMAIN || self.domain == LEGACY_DEFAULT_DOMAIN
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The full canonical string, `name[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    /// Same as [`Reference::parse_normalized`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse_normalized(s)
    }
}

/// Splits off the domain as `splitDockerDomain` does, returning the domain and the rest
/// (with `library/` added for one-component Docker Hub paths).
fn split_docker_domain(name: &str) -> (String, String) {
    let (domain, mut remainder) = match name.split_once('/') {
        // A single element ("ubuntu", "ubuntu:latest", even "localhost:5000") is never a domain.
        None => {
            return (
                DEFAULT_DOMAIN.to_string(),
                format!("{OFFICIAL_REPO_PREFIX}{name}"),
            )
        }
        Some(("localhost", rest)) => ("localhost".to_string(), rest.to_string()),
        Some((LEGACY_DEFAULT_DOMAIN, rest)) => (DEFAULT_DOMAIN.to_string(), rest.to_string()),
        Some((first, rest)) if first.contains(['.', ':']) || first.to_lowercase() != first => {
            (first.to_string(), rest.to_string())
        }
        Some(_) => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder.insert_str(0, OFFICIAL_REPO_PREFIX);
    }
    (domain, remainder)
}

/// The pieces of a string that matched the whole reference grammar.
struct Parts<'a> {
    domain: &'a str,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches `s` against the anchored reference grammar, `[domain "/"] path [":" tag] ["@" digest]`.
///
/// The regex prefers to read a domain, and a domain can contain no `/`, so the domain is the
/// text before the first `/` whenever that text is a valid domain. Had the rest failed with
/// the domain, it would fail without one too, so no other split needs trying. Path
/// components contain neither `:` nor `@`, so the path ends at the first of them.
fn match_reference(s: &str) -> Option<Parts<'_>> {
    let (domain, rest) = match s.split_once('/') {
        Some((d, r)) if is_domain(d) => (d, r),
        _ => ("", s),
    };
    let path_end = rest.find([':', '@']).unwrap_or(rest.len());
    let path = &rest[..path_end];
    if !is_path(path) {
        return None;
    }
    let mut after = &rest[path_end..];
    let mut tag = None;
    if let Some(t) = after.strip_prefix(':') {
        let end = t.find('@').unwrap_or(t.len());
        if !is_tag(&t[..end]) {
            return None;
        }
        tag = Some(&t[..end]);
        after = &t[end..];
    }
    let digest = match after.strip_prefix('@') {
        Some(d) if is_digest_shape(d) => Some(d),
        Some(_) => return None,
        None if after.is_empty() => None,
        None => return None,
    };
    Some(Parts {
        domain,
        path,
        tag,
        digest,
    })
}

/// `host [":" port]`, host being DNS-like components joined by `.` or a bracketed IPv6 literal.
fn is_domain(s: &str) -> bool {
    let (host_ok, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        let ok = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        (ok, after)
    } else {
        let end = s.find(':').unwrap_or(s.len());
        (s[..end].split('.').all(is_domain_component), &s[end..])
    };
    host_ok
        && (port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

/// One or more path components joined by `/`.
fn is_path(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `[a-z0-9]+` followed by any number of (separator `[a-z0-9]+`), where a separator is `.`,
/// `_`, `__` or one or more `-`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9');
    let b = c.as_bytes();
    if !(b.first().is_some_and(alnum) && b.last().is_some_and(alnum)) {
        return false;
    }
    // Every maximal run of non-alphanumerics must be one separator.
    b.split(alnum).all(|sep| {
        sep.is_empty() || sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-')
    })
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// The grammar-level digest shape: `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*` then
/// `:` then at least 32 hex digits of either case. go-digest validates further.
fn is_digest_shape(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSYBOX_DIGEST: &str = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
    const HEX64: &str = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";

    fn n(s: &str) -> Reference {
        Reference::parse_normalized(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn n_err(s: &str) -> String {
        match Reference::parse_normalized(s) {
            Ok(r) => panic!("{s} parsed as {r}"),
            Err(e) => e.to_string(),
        }
    }

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn p_err(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => panic!("{s} parsed as {r}"),
            Err(e) => e.to_string(),
        }
    }

    /// containerd's `ParseDockerRef`, which the "N(DockerRef)" rows use: normalized parsing,
    /// then the tag is dropped when a digest is present, else `latest` is added if missing.
    fn docker_ref(s: &str) -> Reference {
        let r = n(s);
        if r.digest().is_some() {
            r.without_tag()
        } else {
            r.with_default_tag().0
        }
    }

    #[test]
    fn row01_busybox() {
        assert_eq!(
            docker_ref("busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        let r = n("busybox");
        assert!(r.is_name_only());
        assert_eq!(r.to_string(), "docker.io/library/busybox");
    }

    #[test]
    fn row02_busybox_latest() {
        assert_eq!(
            n("busybox:latest").to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn row03_library_busybox() {
        assert_eq!(
            docker_ref("library/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn row04_docker_io_busybox() {
        assert_eq!(
            docker_ref("docker.io/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn row05_docker_io_library_busybox() {
        assert_eq!(
            docker_ref("docker.io/library/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn row06_busybox_by_digest() {
        let r = n(&format!("busybox@{BUSYBOX_DIGEST}"));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox@{BUSYBOX_DIGEST}")
        );
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), BUSYBOX_DIGEST);
        // A digest counts as "not name only", so no default tag is added.
        let (r2, added) = r.clone().with_default_tag();
        assert!(!added);
        assert_eq!(r2, r);
    }

    #[test]
    fn row07_gcr_library_is_not_rewritten() {
        let r = docker_ref("gcr.io/library/busybox");
        assert_eq!(r.to_string(), "gcr.io/library/busybox:latest");
        assert_eq!(r.familiar_string(), "gcr.io/library/busybox:latest");
    }

    #[test]
    fn row08_docker_ref_drops_tag_when_digest_given() {
        let s = format!("gcr.io/library/busybox:latest@{BUSYBOX_DIGEST}");
        // docker pull's own parser keeps both ...
        assert_eq!(n(&s).to_string(), s);
        // ... ParseDockerRef drops the tag.
        assert_eq!(
            docker_ref(&s).to_string(),
            format!("gcr.io/library/busybox@{BUSYBOX_DIGEST}")
        );
    }

    #[test]
    fn row09_tag_and_digest_kept() {
        let d = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let input = format!("busybox:latest@{d}");
        let r = n(&input);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:latest@{d}"));
        assert_eq!(r.familiar_string(), input);
        assert_eq!(r.tag(), Some("latest"));
    }

    #[test]
    fn row10_two_component_hub_name() {
        // Listed under ParseAnyReference; rpull has no ParseAnyReference, and normalized
        // parsing gives the same name.
        let r = n("dmcgowan/myapp");
        assert_eq!(r.to_string(), "docker.io/dmcgowan/myapp");
        assert_eq!(r.familiar_name(), "dmcgowan/myapp");
    }

    #[test]
    fn row11_legacy_index_domain() {
        let r = n("index.docker.io/library/ubuntu-12.04-base");
        assert_eq!(r.to_string(), "docker.io/library/ubuntu-12.04-base");
        assert_eq!(r.familiar_name(), "ubuntu-12.04-base");
    }

    #[test]
    fn row12_nested_library_path_keeps_prefix() {
        let r = n("docker.io/library/foo/bar");
        assert_eq!(r.path(), "library/foo/bar");
        assert_eq!(r.familiar_name(), "library/foo/bar");
    }

    #[test]
    fn row13_underscore_is_not_a_domain() {
        let r = n("test_com/foo");
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "test_com/foo");
        assert_eq!(r.familiar_name(), "test_com/foo");
    }

    #[test]
    fn row14_domain_with_port() {
        let r = n("test.com:8080/foo");
        assert_eq!(r.domain(), "test.com:8080");
        assert_eq!(r.path(), "foo");
        assert_eq!(r.familiar_name(), "test.com:8080/foo");
    }

    #[test]
    fn row15_dash_domain_with_port() {
        let r = n("test-com:8080/foo");
        assert_eq!(r.domain(), "test-com:8080");
        assert_eq!(r.path(), "foo");
    }

    #[test]
    fn row16_punycode_domain() {
        let r = n("xn--n3h.com:18080/foo");
        assert_eq!(r.domain(), "xn--n3h.com:18080");
        assert_eq!(r.path(), "foo");
    }

    #[test]
    fn row17_localhost() {
        let r = n("localhost/fooo/bar");
        assert_eq!(r.domain(), "localhost");
        assert_eq!(r.path(), "fooo/bar");
        assert_eq!(r.to_string(), "localhost/fooo/bar");
        assert_eq!(r.familiar_name(), "localhost/fooo/bar");
    }

    #[test]
    fn row18_uppercase_first_element_is_domain() {
        let r = n("LOCALDOMAIN/fooo");
        assert_eq!(r.domain(), "LOCALDOMAIN");
        assert_eq!(r.path(), "fooo");
    }

    #[test]
    fn row19_mixed_case_domain() {
        let r = n("Foo/bar");
        assert_eq!(r.domain(), "Foo");
        assert_eq!(r.path(), "bar");
        assert_eq!(r.to_string(), "Foo/bar");
    }

    #[test]
    fn row20_ipv4_with_port() {
        let r = n("127.0.0.1:8000/private/moonbase");
        assert_eq!(r.domain(), "127.0.0.1:8000");
        assert_eq!(r.path(), "private/moonbase");
    }

    #[test]
    fn row21_ipv6_with_port() {
        let r = n("[fc00::1]:5000/docker/docker");
        assert_eq!(r.domain(), "[fc00::1]:5000");
        assert_eq!(r.path(), "docker/docker");
        assert_eq!(r.registry_host(), "[fc00::1]:5000");
    }

    #[test]
    fn row22_bare_ip_is_a_hub_name() {
        let r = n("192.168.0.1");
        assert_eq!(r.to_string(), "docker.io/library/192.168.0.1");
        let r = n("192.168.0.1:80");
        assert_eq!(r.name(), "docker.io/library/192.168.0.1");
        assert_eq!(r.tag(), Some("80"));
    }

    #[test]
    fn row23_plain_host_port_is_name_and_tag() {
        let r = p("test.com:5000");
        assert_eq!(r.domain(), "");
        assert_eq!(r.name(), "test.com");
        assert_eq!(r.tag(), Some("5000"));
    }

    #[test]
    fn row24_plain_domain_and_numeric_tag() {
        let r = p("192.168.1.1:5000/repo:5050");
        assert_eq!(r.domain(), "192.168.1.1:5000");
        assert_eq!(r.path(), "repo");
        assert_eq!(r.tag(), Some("5050"));
    }

    #[test]
    fn row25_plain_underscore_name_with_tag() {
        let r = p("foo_bar.com:8080");
        assert_eq!(r.domain(), "");
        assert_eq!(r.name(), "foo_bar.com");
        assert_eq!(r.tag(), Some("8080"));
    }

    #[test]
    fn row26_plain_dotted_path_and_tag() {
        let r = p("b.gcr.io/test.example.com/my-app:test.example.com");
        assert_eq!(r.domain(), "b.gcr.io");
        assert_eq!(r.path(), "test.example.com/my-app");
        assert_eq!(r.tag(), Some("test.example.com"));
    }

    #[test]
    fn row27_plain_ipv6_tag_and_digest() {
        let d = format!("sha256:{}", "f".repeat(64));
        let r = p(&format!("[2001:db8::1]:5000/repo:tag@{d}"));
        assert_eq!(r.domain(), "[2001:db8::1]:5000");
        assert_eq!(r.path(), "repo");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest().unwrap().to_string(), d);
    }

    #[test]
    fn row28_plain_uppercase_tag() {
        let r = p("lowercase:Uppercase");
        assert_eq!(r.name(), "lowercase");
        assert_eq!(r.tag(), Some("Uppercase"));
    }

    #[test]
    fn row29_hex_path_after_domain() {
        let r = n(&format!("docker.io/{HEX64}"));
        assert_eq!(r.path(), format!("library/{HEX64}"));
    }

    #[test]
    fn row30_bare_hex_is_refused() {
        // ParseAnyReference would read this as an image ID (sha256:…); rpull has no
        // ParseAnyReference, so only the normalized parser's refusal is tested.
        assert_eq!(
            n_err(HEX64),
            format!("invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings")
        );
    }

    #[test]
    fn row31_63_hex_is_a_name() {
        let h63 = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9";
        assert_eq!(h63.len(), 63);
        assert_eq!(n(h63).to_string(), format!("docker.io/library/{h63}"));
    }

    #[test]
    fn row32_uppercase_path() {
        for s in ["docker/Docker", "docker.io/docker/Docker"] {
            assert_eq!(
                n_err(s),
                "invalid reference format: repository name (docker/Docker) must be lowercase"
            );
        }
    }

    #[test]
    fn row33_uppercase_name_with_tag() {
        assert_eq!(p_err("Uppercase:tag"), "repository name must be lowercase");
        assert_eq!(
            n_err("Uppercase:tag"),
            "invalid reference format: repository name (library/Uppercase) must be lowercase"
        );
    }

    #[test]
    fn row34_plain_uppercase_path_component() {
        assert_eq!(
            p_err("test:5000/Uppercase/lowercase:tag"),
            "repository name must be lowercase"
        );
    }

    #[test]
    fn row35_bad_leading_or_trailing_separators() {
        for s in [
            "-docker",
            "-docker/docker",
            "docker-/docker",
            "_docker/_docker",
            "____/____",
        ] {
            assert_eq!(n_err(s), "invalid reference format", "{s}");
        }
    }

    #[test]
    fn row36_bad_separators() {
        for s in [
            "docker///docker",
            "docker/",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
        ] {
            assert_eq!(n_err(s), "invalid reference format", "{s}");
        }
    }

    #[test]
    fn row37_good_separators() {
        for s in ["docker---rules/docker", "dock__er/docker", "d/docker", "jess/t"] {
            let r = n(s);
            assert_eq!(r.domain(), "docker.io", "{s}");
            assert_eq!(r.path(), s);
        }
    }

    #[test]
    fn row38_url_is_refused() {
        assert_eq!(
            n_err("https://github.com/docker/docker"),
            "invalid reference format"
        );
    }

    #[test]
    fn row39_bad_ipv6_forms() {
        for s in [
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
        ] {
            assert_eq!(n_err(s), "invalid reference format", "{s}");
        }
    }

    #[test]
    fn row40_plain_empty() {
        assert_eq!(p_err(""), "repository name must have at least one component");
    }

    #[test]
    fn row41_plain_missing_name() {
        assert_eq!(p_err(":justtag"), "invalid reference format");
        assert_eq!(
            p_err(&format!("@sha256:{}", "f".repeat(64))),
            "invalid reference format"
        );
    }

    #[test]
    fn row42_plain_short_digest() {
        assert_eq!(
            p_err(&format!("repo@sha256:{}", "f".repeat(34))),
            "invalid checksum digest length"
        );
    }

    #[test]
    fn row43_plain_unknown_digest_algorithm() {
        assert_eq!(
            p_err(&format!("validname@invaliddigest:{}", "f".repeat(64))),
            "unsupported digest algorithm"
        );
    }

    #[test]
    fn row44_plain_path_too_long() {
        assert_eq!(
            p_err(&format!("domain/{}:tag", "a".repeat(256))),
            "repository name must not be more than 255 characters"
        );
    }

    #[test]
    fn row45_plain_limit_counts_path_only() {
        let r = p(&format!("example.com/{}:tag", "a".repeat(255)));
        assert_eq!(r.domain(), "example.com");
        assert_eq!(r.path().len(), 255);
    }

    #[test]
    fn row46_plain_bad_characters() {
        assert_eq!(p_err("aa/asdf$$^/aa"), "invalid reference format");
    }

    #[test]
    fn row47_64_non_hex_characters() {
        let s = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev";
        assert_eq!(s.len(), 64);
        assert_eq!(n(s).to_string(), format!("docker.io/library/{s}"));
    }

    #[test]
    fn note_digest_below_32_hex_fails_grammar() {
        assert_eq!(p_err("repo@sha256:abc"), "invalid reference format");
        assert_eq!(n_err("repo@sha256:abc"), "invalid reference format");
    }

    #[test]
    fn digest_with_upper_case_hex_gets_go_digest_text() {
        assert_eq!(
            p_err(&format!("repo@sha256:{}", "F".repeat(64))),
            "invalid checksum digest format"
        );
    }

    #[test]
    fn debian_on_docker_hub() {
        let r = n("debian");
        assert!(r.is_docker_hub());
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.credential_key(), "https://index.docker.io/v1/");
        assert_eq!(r.path(), "library/debian");
        let (r, added) = r.with_default_tag();
        assert!(added);
        assert_eq!(r.familiar_string(), "debian:latest");
        assert_eq!(r.to_string(), "docker.io/library/debian:latest");
        let (r2, added) = r.clone().with_default_tag();
        assert!(!added);
        assert_eq!(r2, r);
    }

    #[test]
    fn local_registry_reference() {
        let r = n("127.0.0.1:5000/bench/debian:bookworm");
        assert_eq!(r.familiar_string(), "127.0.0.1:5000/bench/debian:bookworm");
        assert_eq!(r.to_string(), "127.0.0.1:5000/bench/debian:bookworm");
        assert_eq!(r.registry_host(), "127.0.0.1:5000");
        assert_eq!(r.credential_key(), "127.0.0.1:5000");
        assert!(!r.is_docker_hub());
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/bench/debian");
    }

    #[test]
    fn capture_uppercase_repository() {
        assert_eq!(
            n_err("127.0.0.1:5000/Bench/UPPER:x"),
            "invalid reference format: repository name (Bench/UPPER) must be lowercase"
        );
    }

    #[test]
    fn capture_bad_tag_characters() {
        assert_eq!(
            n_err("127.0.0.1:5000/bench/debian:bad!tag"),
            "invalid reference format"
        );
    }

    #[test]
    fn localhost_with_port() {
        let r = n("localhost:5000/x");
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "x");
    }

    #[test]
    fn bare_localhost_port_is_hub_name_and_tag() {
        let r = n("localhost:5000");
        assert_eq!(r.name(), "docker.io/library/localhost");
        assert_eq!(r.tag(), Some("5000"));
    }

    #[test]
    fn docker_io_nested_library_familiar() {
        assert_eq!(n("docker.io/library/foo/bar").familiar_name(), "library/foo/bar");
        assert_eq!(n("myorg/app").familiar_name(), "myorg/app");
    }

    #[test]
    fn tag_helpers() {
        let d = Digest::parse(BUSYBOX_DIGEST).unwrap();
        let r = n("ubuntu:22.04");
        assert_eq!(r.with_tag("24.04").unwrap().familiar_string(), "ubuntu:24.04");
        assert_eq!(r.with_tag("bad!tag"), Err(ReferenceError::TagInvalidFormat));
        assert_eq!(r.with_tag(".x").unwrap_err().to_string(), "invalid tag format");
        assert_eq!(
            r.with_tag(&"a".repeat(129)),
            Err(ReferenceError::TagInvalidFormat)
        );
        assert!(r.with_tag(&"a".repeat(128)).is_ok());
        assert_eq!(r.without_tag().to_string(), "docker.io/library/ubuntu");
        let rd = r.with_digest(d.clone());
        assert_eq!(rd.familiar_string(), format!("ubuntu:22.04@{BUSYBOX_DIGEST}"));
        assert_eq!(
            rd.without_tag().familiar_string(),
            format!("ubuntu@{BUSYBOX_DIGEST}")
        );
        assert_eq!(rd.with_tag("x").unwrap().digest(), Some(&d));
        assert!(rd.name_only().is_name_only());
        assert_eq!(rd.name_only().to_string(), "docker.io/library/ubuntu");
        assert!(!r.is_name_only());
    }

    #[test]
    fn from_str_is_normalized() {
        let r: Reference = "alpine:3".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3");
        assert_eq!(
            "Alpine".parse::<Reference>(),
            Err(ReferenceError::RemoteNotLowercase("library/Alpine".to_string()))
        );
    }

    #[test]
    fn plain_parse_prefers_a_domain() {
        let r = p("library/busybox");
        assert_eq!(r.domain(), "library");
        assert_eq!(r.path(), "busybox");
        let r = p("foo/foo_bar.com:8080");
        assert_eq!(r.domain(), "foo");
        assert_eq!(r.path(), "foo_bar.com");
        assert_eq!(r.tag(), Some("8080"));
        // A domain-less plain reference has no Docker Hub mapping.
        let r = p("busybox");
        assert_eq!(r.domain(), "");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.to_string(), "busybox");
    }

    #[test]
    fn normalized_domain_can_still_be_empty() {
        // "a_b.c" looks like a domain to the splitter (it has a dot) but the grammar refuses
        // it as one, so the whole string parses as a domain-less path, exactly as in Go.
        let r = n("a_b.c/foo");
        assert_eq!(r.domain(), "");
        assert_eq!(r.path(), "a_b.c/foo");
        assert_eq!(r.to_string(), "a_b.c/foo");
    }

    #[test]
    fn grammar_pieces() {
        assert!(is_domain("a"));
        assert!(is_domain("a-b.c:1"));
        assert!(is_domain("[::1]"));
        assert!(!is_domain("a-:1"));
        assert!(!is_domain("a:"));
        assert!(!is_domain("a:1:2"));
        assert!(!is_domain("[]:1"));
        assert!(!is_domain("[::1]x"));
        assert!(!is_domain(""));
        assert!(is_path_component("a--b.c__d_e"));
        assert!(!is_path_component("a___b"));
        assert!(!is_path_component("a._b"));
        assert!(!is_path_component("A"));
        assert!(!is_path_component(""));
        assert!(is_digest_shape(&format!("sha256+b64.x-y_z:{}", "A".repeat(32))));
        assert!(!is_digest_shape(&format!("sha256:{}", "a".repeat(31))));
        assert!(!is_digest_shape(&format!("1sha:{}", "a".repeat(32))));
        assert!(!is_digest_shape(&format!("sha..x:{}", "a".repeat(32))));
    }
}
