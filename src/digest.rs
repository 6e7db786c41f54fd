//! Content digests (`sha256:<hex>`): parsing with go-digest's validation rules and error
//! texts, hashing, and the short 12-character IDs docker prints for layers.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a digest string was refused. The texts are go-digest's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string has no `algorithm:` prefix or contains characters the grammar forbids.
    #[error("invalid checksum digest format")]
    InvalidFormat,
    /// The encoded part has the wrong length for its algorithm.
    #[error("invalid checksum digest length")]
    InvalidLength,
    /// The algorithm is not one rpull can verify.
    #[error("unsupported digest algorithm")]
    Unsupported,
}

/// The hash functions rpull verifies content with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, used by every registry for blobs and manifests.
    Sha256,
    /// SHA-512, accepted in references and manifests.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in a digest.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:2e86…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses and validates `algorithm:hex` as go-digest does.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::InvalidFormat)?;
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::InvalidFormat);
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                let grammar_ok = alg.split(['-', '_', '+', '.']).all(|c| {
                    c.chars().next().is_some_and(|f| f.is_ascii_alphabetic())
                        && c.chars().all(|ch| ch.is_ascii_alphanumeric())
                });
                return Err(if grammar_ok {
                    DigestError::Unsupported
                } else {
                    DigestError::InvalidFormat
                });
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::InvalidLength);
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::InvalidFormat);
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).as_slice())
    }

    /// Wraps a finished SHA-256 output.
    pub fn from_sha256(out: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: to_hex(out),
        }
    }

    /// Whether `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        match self.algorithm {
            Algorithm::Sha256 => to_hex(Sha256::digest(bytes).as_slice()) == self.hex,
            Algorithm::Sha512 => to_hex(sha2::Sha512::digest(bytes).as_slice()) == self.hex,
        }
    }

    /// Whether content named by this digest can be fetched and stored: SHA-256 only. A
    /// SHA-512 digest parses (references and manifests may carry one), but layers are
    /// hashed, named and unpacked by SHA-256, so a pull refuses it before fetching anything,
    /// with go-digest's error.
    pub fn ensure_content_supported(&self) -> Result<(), DigestError> {
        match self.algorithm {
            Algorithm::Sha256 => Ok(()),
            Algorithm::Sha512 => Err(DigestError::Unsupported),
        }
    }

    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Docker's short ID: the first 12 hex characters.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// An incremental SHA-256 that yields a [`Digest`].
#[derive(Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.0.finalize().as_slice())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let d = Digest::parse(&format!("sha256:{}", "f".repeat(64))).unwrap();
        assert_eq!(d.short(), "ffffffffffff");
        assert_eq!(
            Digest::parse(&format!("sha256:{}", "f".repeat(34))),
            Err(DigestError::InvalidLength)
        );
        assert_eq!(
            Digest::parse(&format!("sha256:{}", "F".repeat(64))),
            Err(DigestError::InvalidFormat)
        );
        assert_eq!(
            Digest::parse(&format!("invaliddigest:{}", "f".repeat(64))),
            Err(DigestError::Unsupported)
        );
        assert_eq!(Digest::parse("nocolon"), Err(DigestError::InvalidFormat));
    }

    #[test]
    fn hashes() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.verify(b""));
        let mut h = Sha256Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Digest::sha256_of(b"abc"));
    }
}
