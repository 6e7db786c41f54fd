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

    /// Which parser a table row uses.
    #[derive(Debug, Clone, Copy)]
    enum Parser {
        /// [`Reference::parse_normalized`] (docker pull's).
        Normalized,
        /// [`Reference::parse`] (distribution's plain `Parse`).
        Plain,
        /// containerd's `ParseDockerRef` ([`docker_ref`]).
        DockerRef,
    }
    use Parser::{DockerRef, Normalized, Plain};

    impl Parser {
        fn parse(self, s: &str) -> Result<Reference, ReferenceError> {
            match self {
                Normalized => Reference::parse_normalized(s),
                Plain => Reference::parse(s),
                DockerRef => Ok(docker_ref(s)),
            }
        }
    }

    /// One property a table row expects of the parsed reference.
    #[derive(Debug, Clone, Copy)]
    enum Want<'a> {
        /// `to_string()`.
        Str(&'a str),
        Domain(&'a str),
        Path(&'a str),
        Name(&'a str),
        Tag(Option<&'a str>),
        /// `digest()`, as text.
        DigestIs(&'a str),
        /// `familiar_name()`.
        Familiar(&'a str),
        /// `familiar_string()`.
        FamiliarStr(&'a str),
        /// `registry_host()`.
        Host(&'a str),
        CredentialKey(&'a str),
        DockerHub(bool),
        NameOnly(bool),
    }
    use Want::*;

    /// Parses each row's input with its parser and checks every property it lists; a failure
    /// names the row and the input.
    fn assert_parses(rows: &[(&str, Parser, &str, &[Want])]) {
        for (row, parser, input, wants) in rows {
            let r = parser
                .parse(input)
                .unwrap_or_else(|e| panic!("{row}: {parser:?} {input:?}: {e}"));
            for want in *wants {
                let ok = match *want {
                    Str(s) => r.to_string() == s,
                    Domain(s) => r.domain() == s,
                    Path(s) => r.path() == s,
                    Name(s) => r.name() == s,
                    Tag(t) => r.tag() == t,
                    DigestIs(d) => r.digest().map(|d| d.to_string()).as_deref() == Some(d),
                    Familiar(s) => r.familiar_name() == s,
                    FamiliarStr(s) => r.familiar_string() == s,
                    Host(s) => r.registry_host() == s,
                    CredentialKey(s) => r.credential_key() == s,
                    DockerHub(b) => r.is_docker_hub() == b,
                    NameOnly(b) => r.is_name_only() == b,
                };
                assert!(ok, "{row}: {parser:?} {input:?} gave {r:?}, want {want:?}");
            }
        }
    }

    /// Parses each input of each row with its parser and checks the error text; a failure
    /// names the row and the input.
    fn assert_refuses(rows: &[(&str, Parser, &[&str], &str)]) {
        for (row, parser, inputs, want) in rows {
            for input in *inputs {
                match parser.parse(input) {
                    Ok(r) => panic!("{row}: {parser:?} {input:?} parsed as {r}"),
                    Err(e) => assert_eq!(e.to_string(), *want, "{row}: {parser:?} {input:?}"),
                }
            }
        }
    }

    /// The rows of docker's and containerd's reference tests (numbered as in the capture of
    /// them), then cases of rpull's own.
    #[test]
    fn references_parse_as_docker_does() {
        let busybox_tag_digest = format!("gcr.io/library/busybox:latest@{BUSYBOX_DIGEST}");
        let busybox_digest = format!("gcr.io/library/busybox@{BUSYBOX_DIGEST}");
        let d9 = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let row09 = format!("busybox:latest@{d9}");
        let row09_full = format!("docker.io/library/busybox:latest@{d9}");
        let f64 = format!("sha256:{}", "f".repeat(64));
        let row27 = format!("[2001:db8::1]:5000/repo:tag@{f64}");
        let hex_path = format!("docker.io/{HEX64}");
        let hex_library = format!("library/{HEX64}");
        let h63 = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9";
        assert_eq!(h63.len(), 63);
        let h63_full = format!("docker.io/library/{h63}");
        let a255 = "a".repeat(255);
        let row45 = format!("example.com/{a255}:tag");
        let s64 = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev";
        assert_eq!(s64.len(), 64);
        let s64_full = format!("docker.io/library/{s64}");
        let local = "127.0.0.1:5000/bench/debian:bookworm";
        let busybox_latest = Str("docker.io/library/busybox:latest");
        #[rustfmt::skip]
        let rows: &[(&str, Parser, &str, &[Want])] = &[
            ("row01 busybox", DockerRef, "busybox", &[busybox_latest]),
            ("row01 busybox", Normalized, "busybox", &[NameOnly(true), Str("docker.io/library/busybox")]),
            ("row02 busybox:latest", Normalized, "busybox:latest", &[busybox_latest]),
            ("row03 library/busybox", DockerRef, "library/busybox", &[busybox_latest]),
            ("row04 docker.io/busybox", DockerRef, "docker.io/busybox", &[busybox_latest]),
            ("row05 docker.io/library/busybox", DockerRef, "docker.io/library/busybox", &[busybox_latest]),
            ("row07 gcr.io's library is not rewritten", DockerRef, "gcr.io/library/busybox", &[Str("gcr.io/library/busybox:latest"), FamiliarStr("gcr.io/library/busybox:latest")]),
            // docker pull's own parser keeps both tag and digest, ParseDockerRef drops the tag.
            ("row08 tag and digest", Normalized, &busybox_tag_digest, &[Str(&busybox_tag_digest)]),
            ("row08 tag and digest", DockerRef, &busybox_tag_digest, &[Str(&busybox_digest)]),
            ("row09 tag and digest kept", Normalized, &row09, &[Str(&row09_full), FamiliarStr(&row09), Tag(Some("latest"))]),
            // Listed under ParseAnyReference; rpull has no ParseAnyReference, and normalized
            // parsing gives the same name.
            ("row10 two-component hub name", Normalized, "dmcgowan/myapp", &[Str("docker.io/dmcgowan/myapp"), Familiar("dmcgowan/myapp")]),
            ("row11 legacy index domain", Normalized, "index.docker.io/library/ubuntu-12.04-base", &[Str("docker.io/library/ubuntu-12.04-base"), Familiar("ubuntu-12.04-base")]),
            ("row12 nested library path keeps its prefix", Normalized, "docker.io/library/foo/bar", &[Path("library/foo/bar"), Familiar("library/foo/bar")]),
            ("row13 an underscore is not a domain", Normalized, "test_com/foo", &[Domain("docker.io"), Path("test_com/foo"), Familiar("test_com/foo")]),
            ("row14 domain with port", Normalized, "test.com:8080/foo", &[Domain("test.com:8080"), Path("foo"), Familiar("test.com:8080/foo")]),
            ("row15 dash domain with port", Normalized, "test-com:8080/foo", &[Domain("test-com:8080"), Path("foo")]),
            ("row16 punycode domain", Normalized, "xn--n3h.com:18080/foo", &[Domain("xn--n3h.com:18080"), Path("foo")]),
            ("row17 localhost", Normalized, "localhost/fooo/bar", &[Domain("localhost"), Path("fooo/bar"), Str("localhost/fooo/bar"), Familiar("localhost/fooo/bar")]),
            ("row18 an upper-case first element is a domain", Normalized, "LOCALDOMAIN/fooo", &[Domain("LOCALDOMAIN"), Path("fooo")]),
            ("row19 mixed-case domain", Normalized, "Foo/bar", &[Domain("Foo"), Path("bar"), Str("Foo/bar")]),
            ("row20 IPv4 with port", Normalized, "127.0.0.1:8000/private/moonbase", &[Domain("127.0.0.1:8000"), Path("private/moonbase")]),
            ("row21 IPv6 with port", Normalized, "[fc00::1]:5000/docker/docker", &[Domain("[fc00::1]:5000"), Path("docker/docker"), Host("[fc00::1]:5000")]),
            ("row22 a bare IP is a hub name", Normalized, "192.168.0.1", &[Str("docker.io/library/192.168.0.1")]),
            ("row22 a bare IP is a hub name", Normalized, "192.168.0.1:80", &[Name("docker.io/library/192.168.0.1"), Tag(Some("80"))]),
            ("row23 plain host:port is name and tag", Plain, "test.com:5000", &[Domain(""), Name("test.com"), Tag(Some("5000"))]),
            ("row24 plain domain and numeric tag", Plain, "192.168.1.1:5000/repo:5050", &[Domain("192.168.1.1:5000"), Path("repo"), Tag(Some("5050"))]),
            ("row25 plain underscore name with tag", Plain, "foo_bar.com:8080", &[Domain(""), Name("foo_bar.com"), Tag(Some("8080"))]),
            ("row26 plain dotted path and tag", Plain, "b.gcr.io/test.example.com/my-app:test.example.com", &[Domain("b.gcr.io"), Path("test.example.com/my-app"), Tag(Some("test.example.com"))]),
            ("row27 plain IPv6, tag and digest", Plain, &row27, &[Domain("[2001:db8::1]:5000"), Path("repo"), Tag(Some("tag")), DigestIs(&f64)]),
            ("row28 plain upper-case tag", Plain, "lowercase:Uppercase", &[Name("lowercase"), Tag(Some("Uppercase"))]),
            ("row29 hex path after a domain", Normalized, &hex_path, &[Path(&hex_library)]),
            ("row31 63 hex digits are a name", Normalized, h63, &[Str(&h63_full)]),
            ("row37 good separators", Normalized, "docker---rules/docker", &[Domain("docker.io"), Path("docker---rules/docker")]),
            ("row37 good separators", Normalized, "dock__er/docker", &[Domain("docker.io"), Path("dock__er/docker")]),
            ("row37 good separators", Normalized, "d/docker", &[Domain("docker.io"), Path("d/docker")]),
            ("row37 good separators", Normalized, "jess/t", &[Domain("docker.io"), Path("jess/t")]),
            ("row45 the length limit counts the path only", Plain, &row45, &[Domain("example.com"), Path(&a255)]),
            ("row47 64 non-hex characters", Normalized, s64, &[Str(&s64_full)]),
            ("a local registry", Normalized, local, &[FamiliarStr(local), Str(local), Host("127.0.0.1:5000"), CredentialKey("127.0.0.1:5000"), DockerHub(false), Familiar("127.0.0.1:5000/bench/debian")]),
            ("localhost with port", Normalized, "localhost:5000/x", &[Domain("localhost:5000"), Path("x")]),
            ("bare localhost:port is a hub name and tag", Normalized, "localhost:5000", &[Name("docker.io/library/localhost"), Tag(Some("5000"))]),
            ("a hub organisation", Normalized, "myorg/app", &[Familiar("myorg/app")]),
            ("plain parsing prefers a domain", Plain, "library/busybox", &[Domain("library"), Path("busybox")]),
            ("plain parsing prefers a domain", Plain, "foo/foo_bar.com:8080", &[Domain("foo"), Path("foo_bar.com"), Tag(Some("8080"))]),
            // A domain-less plain reference has no Docker Hub mapping.
            ("plain parsing without a domain", Plain, "busybox", &[Domain(""), Familiar("busybox"), Str("busybox")]),
            // "a_b.c" looks like a domain to the splitter (it has a dot) but the grammar refuses
            // it as one, so the whole string parses as a domain-less path, exactly as in Go.
            ("a normalized domain can still be empty", Normalized, "a_b.c/foo", &[Domain(""), Path("a_b.c/foo"), Str("a_b.c/foo")]),
        ];
        assert_parses(rows);
    }

    /// The refusals of docker's and containerd's reference tests, then rpull's own.
    #[test]
    fn references_are_refused_as_docker_does() {
        const FORMAT: &str = "invalid reference format";
        let hex_refused =
            format!("invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings");
        let digest_only = format!("@sha256:{}", "f".repeat(64));
        let short_digest = format!("repo@sha256:{}", "f".repeat(34));
        let unknown_algorithm = format!("validname@invaliddigest:{}", "f".repeat(64));
        let too_long = format!("domain/{}:tag", "a".repeat(256));
        let upper_hex = format!("repo@sha256:{}", "F".repeat(64));
        #[rustfmt::skip]
        let rows: &[(&str, Parser, &[&str], &str)] = &[
            // ParseAnyReference would read this as an image ID (sha256:…); rpull has no
            // ParseAnyReference, so only the normalized parser's refusal is tested.
            ("row30 bare hex is refused", Normalized, &[HEX64], &hex_refused),
            ("row32 upper-case path", Normalized, &["docker/Docker", "docker.io/docker/Docker"], "invalid reference format: repository name (docker/Docker) must be lowercase"),
            ("row33 upper-case name with tag", Plain, &["Uppercase:tag"], "repository name must be lowercase"),
            ("row33 upper-case name with tag", Normalized, &["Uppercase:tag"], "invalid reference format: repository name (library/Uppercase) must be lowercase"),
            ("row34 plain upper-case path component", Plain, &["test:5000/Uppercase/lowercase:tag"], "repository name must be lowercase"),
            ("row35 bad leading or trailing separators", Normalized, &["-docker", "-docker/docker", "docker-/docker", "_docker/_docker", "____/____"], FORMAT),
            ("row36 bad separators", Normalized, &["docker///docker", "docker/", "dock..er/docker", "dock_.er/docker", "dock-.er/docker"], FORMAT),
            ("row38 a URL is refused", Normalized, &["https://github.com/docker/docker"], FORMAT),
            ("row39 bad IPv6 forms", Normalized, &["[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian"], FORMAT),
            ("row40 plain empty", Plain, &[""], "repository name must have at least one component"),
            ("row41 plain missing name", Plain, &[":justtag", &digest_only], FORMAT),
            ("row42 plain short digest", Plain, &[&short_digest], "invalid checksum digest length"),
            ("row43 plain unknown digest algorithm", Plain, &[&unknown_algorithm], "unsupported digest algorithm"),
            ("row44 plain path too long", Plain, &[&too_long], "repository name must not be more than 255 characters"),
            ("row46 plain bad characters", Plain, &["aa/asdf$$^/aa"], FORMAT),
            ("a digest below 32 hex digits fails the grammar", Plain, &["repo@sha256:abc"], FORMAT),
            ("a digest below 32 hex digits fails the grammar", Normalized, &["repo@sha256:abc"], FORMAT),
            ("upper-case hex gets go-digest's text", Plain, &[&upper_hex], "invalid checksum digest format"),
            ("an upper-case repository (docker's capture)", Normalized, &["127.0.0.1:5000/Bench/UPPER:x"], "invalid reference format: repository name (Bench/UPPER) must be lowercase"),
            ("bad tag characters (docker's capture)", Normalized, &["127.0.0.1:5000/bench/debian:bad!tag"], FORMAT),
        ];
        assert_refuses(rows);
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
