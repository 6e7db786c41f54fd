//! Layer compression: which media types rpull accepts, how a layer's compression is detected, and
//! the streaming decoders that turn a downloaded blob back into its tar stream.
//!
//! Like docker, rpull decides the compression by sniffing the blob's first bytes, whatever the
//! media type claims: gzip `1F 8B 08`, zstd `28 B5 2F FD` (or a zstd skippable frame), and
//! anything else is a plain tar. The media type is only used to refuse layers rpull cannot
//! handle (encrypted layers, bzip2, xz) before anything is downloaded. gzip layers may be made of
//! several concatenated members, and every member is decoded.

use std::io::{self, BufRead, Read};

/// Why a layer's compression was refused.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    /// The layer's media type is not one docker would pull (for example `…+encrypted`). The text
    /// is docker's.
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),
    /// The blob is compressed with a format rpull cannot decode.
    #[error("unsupported layer compression {0}: only gzip, zstd and uncompressed layers are supported")]
    UnsupportedFormat(&'static str),
    /// Reading the start of the stream, or setting up its decoder, failed.
    #[error("reading layer stream: {0}")]
    Io(#[from] io::Error),
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, possibly several concatenated members.
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
}

/// Layer media types start with one of these (moby's check); a few generic types are accepted too.
const ACCEPTED_PREFIXES: [&str; 2] = ["application/vnd.oci.image", "application/vnd.docker"];
const GENERIC_TYPES: [&str; 4] = ["", "application/octet-stream", "application/json", "text/html"];

/// Compression suffixes rpull cannot decode, with the name used in the error.
const UNSUPPORTED_SUFFIXES: [(&str, &str); 3] = [("bzip2", "bzip2"), ("xz", "xz"), ("lz4", "lz4")];

const GZIP_MAGIC: [u8; 3] = [0x1F, 0x8B, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const ZSTD_SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const ZSTD_SKIPPABLE_START: u32 = 0x184D_2A50;
const BZIP2_MAGIC: [u8; 3] = [0x42, 0x5A, 0x68];
const XZ_MAGIC: [u8; 6] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00];

/// How many bytes [`decoder`] looks at before choosing a decoder.
const SNIFF_LEN: usize = 10;

impl Compression {
    /// Reads a layer media type (OCI and Docker names).
    ///
    /// Returns `Ok(Some(..))` when the type names a compression, `Ok(None)` when it says nothing
    /// useful (docker's `application/vnd.docker.image.rootfs.diff.tar`, `application/octet-stream`,
    /// an empty type, …) and the stream must be sniffed, and an error for types docker refuses:
    /// encrypted layers, unsupported compressions, and anything outside the OCI and Docker
    /// namespaces. Media type parameters (`; …`) are ignored, and the comparison is
    /// case-insensitive.
    pub fn from_media_type(mt: &str) -> Result<Option<Compression>, CompressionError> {
        let base = mt.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if GENERIC_TYPES.contains(&base.as_str()) {
            return Ok(None);
        }
        if !ACCEPTED_PREFIXES.iter().any(|p| base.starts_with(p)) {
            return Err(CompressionError::UnsupportedMediaType(mt.to_string()));
        }
        // The structured-syntax suffixes after the first `+`, or docker's `.gzip`-style ending.
        let mut suffixes = base.split('+').skip(1);
        if suffixes.any(|s| s == "encrypted") {
            return Err(CompressionError::UnsupportedMediaType(mt.to_string()));
        }
        let last = base
            .rsplit_once('+')
            .map(|(_, s)| s)
            .or_else(|| base.rsplit_once(".tar.").map(|(_, s)| s))
            .unwrap_or("");
        if let Some((_, name)) = UNSUPPORTED_SUFFIXES.iter().find(|(s, _)| *s == last) {
            return Err(CompressionError::UnsupportedFormat(name));
        }
        Ok(match last {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ if base.starts_with("application/vnd.oci.image.layer.") && base.ends_with(".tar") => {
                Some(Compression::None)
            }
            _ => None,
        })
    }

    /// Detects the compression from the first bytes of a blob, as docker does.
    ///
    /// gzip is `1F 8B 08`; zstd is `28 B5 2F FD` or a skippable frame (magic `0x184D2A50` to
    /// `0x184D2A5F`, little-endian); anything else is a plain tar. bzip2 and xz are recognised
    /// and refused. Give at least 6 bytes when the stream has them; a shorter `head` is taken as
    /// the whole stream.
    pub fn sniff(head: &[u8]) -> Result<Compression, CompressionError> {
        if head.starts_with(&GZIP_MAGIC) {
            return Ok(Compression::Gzip);
        }
        if head.starts_with(&ZSTD_MAGIC) {
            return Ok(Compression::Zstd);
        }
        if let Some(first) = head.first_chunk::<4>() {
            if u32::from_le_bytes(*first) & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_START {
                return Ok(Compression::Zstd);
            }
        }
        if head.starts_with(&BZIP2_MAGIC) {
            return Err(CompressionError::UnsupportedFormat("bzip2"));
        }
        if head.starts_with(&XZ_MAGIC) {
            return Err(CompressionError::UnsupportedFormat("xz"));
        }
        Ok(Compression::None)
    }
}

/// Wraps a layer blob stream in the decoder its first bytes call for (see [`Compression::sniff`]),
/// returning a reader of the uncompressed tar.
///
/// The first few bytes are read from `r` and replayed in front of the rest, so this works on any
/// `BufRead`, even one whose buffer holds a single byte. gzip streams made of several members are
/// decoded in full, as are zstd streams of several frames. Decoding errors surface as
/// `io::Error`s from the returned reader.
pub fn decoder<'a, R: BufRead + Send + 'a>(mut r: R) -> Result<Box<dyn Read + Send + 'a>, CompressionError> {
    let mut head = [0u8; SNIFF_LEN];
    let mut len = 0;
    while len < SNIFF_LEN {
        match r.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let head = &head[..len];
    let kind = Compression::sniff(head)?;
    let stream = io::Cursor::new(head.to_vec()).chain(r);
    Ok(match kind {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(stream)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn decode_all(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decoder(blob).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    /// A `BufRead` that hands out one byte at a time, to check the sniffing does not rely on a
    /// full buffer.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.consume(n);
            Ok(n)
        }
    }
    impl BufRead for Trickle<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            Ok(&self.0[..self.0.len().min(1)])
        }
        fn consume(&mut self, n: usize) {
            self.0 = &self.0[n..];
        }
    }

    #[test]
    fn round_trip_plain() {
        let data = sample(100_000);
        assert_eq!(decode_all(&data), data);
        assert_eq!(decode_all(&[]), Vec::<u8>::new());
        assert_eq!(decode_all(b"abc"), b"abc");
    }

    #[test]
    fn round_trip_gzip() {
        let data = sample(300_000);
        assert_eq!(decode_all(&gzip(&data)), data);
    }

    #[test]
    fn round_trip_zstd() {
        let data = sample(300_000);
        assert_eq!(decode_all(&zstd(&data)), data);
    }

    #[test]
    fn multi_member_gzip_is_decoded_fully() {
        let (a, b, c) = (sample(70_000), b"second member".to_vec(), sample(5));
        let mut blob = gzip(&a);
        blob.extend(gzip(&b));
        blob.extend(gzip(&c));
        let mut want = a;
        want.extend(b);
        want.extend(c);
        assert_eq!(decode_all(&blob), want);
    }

    #[test]
    fn multi_frame_zstd_and_skippable_frame() {
        let mut blob = Vec::new();
        // A skippable frame first: magic 0x184D2A5A, 4-byte length, payload.
        blob.extend(0x184D_2A5Au32.to_le_bytes());
        blob.extend(3u32.to_le_bytes());
        blob.extend(b"xyz");
        blob.extend(zstd(b"hello "));
        blob.extend(zstd(b"world"));
        assert_eq!(Compression::sniff(&blob).unwrap(), Compression::Zstd);
        assert_eq!(decode_all(&blob), b"hello world");
    }

    #[test]
    fn works_on_a_byte_at_a_time_reader() {
        let data = sample(20_000);
        for blob in [gzip(&data), zstd(&data), data.clone()] {
            let mut out = Vec::new();
            decoder(Trickle(&blob)).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut blob = gzip(&sample(10_000));
        let mid = blob.len() / 2;
        blob.truncate(mid);
        let mut out = Vec::new();
        assert!(decoder(&blob[..]).unwrap().read_to_end(&mut out).is_err());
    }

    #[test]
    fn sniffing() {
        let sniff = |head: &[u8]| Compression::sniff(head).unwrap();
        assert_eq!(sniff(&[0x1F, 0x8B, 0x08, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xB5, 0x2F, 0xFD, 1]), Compression::Zstd);
        assert_eq!(sniff(&[0x50, 0x2A, 0x4D, 0x18]), Compression::Zstd);
        assert_eq!(sniff(&[0x5F, 0x2A, 0x4D, 0x18]), Compression::Zstd);
        assert_eq!(sniff(&[0x60, 0x2A, 0x4D, 0x18]), Compression::None);
        // gzip magic with a method other than deflate is not gzip.
        assert_eq!(sniff(&[0x1F, 0x8B, 0x07]), Compression::None);
        assert_eq!(Compression::sniff(&[0x1F]).unwrap(), Compression::None);
        assert_eq!(Compression::sniff(b"").unwrap(), Compression::None);
        assert_eq!(Compression::sniff(b"usr/\0\0\0").unwrap(), Compression::None);
        let bz = Compression::sniff(b"BZh91AY&SY").unwrap_err();
        assert_eq!(
            bz.to_string(),
            "unsupported layer compression bzip2: only gzip, zstd and uncompressed layers are supported"
        );
        assert!(matches!(
            Compression::sniff(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 0]),
            Err(CompressionError::UnsupportedFormat("xz"))
        ));
        assert!(decoder(&b"BZh91AY&SY...."[..]).is_err());
    }

    #[test]
    fn media_types() {
        use Compression::*;
        let ok = |mt: &str| Compression::from_media_type(mt).unwrap();
        assert_eq!(
            ok("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(ok("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Gzip));
        assert_eq!(ok("application/vnd.oci.image.layer.v1.tar+zstd"), Some(Zstd));
        assert_eq!(
            ok("application/vnd.oci.image.layer.nondistributable.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            ok("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(Gzip)
        );
        assert_eq!(
            ok("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"),
            Some(Zstd)
        );
        assert_eq!(
            ok("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(
            ok("application/vnd.docker.image.rootfs.diff.tar.zstd"),
            Some(Zstd)
        );
        assert_eq!(ok("application/vnd.docker.image.rootfs.diff.tar"), Option::None);
        assert_eq!(
            ok("application/vnd.docker.image.rootfs.foreign.diff.tar"),
            Option::None
        );
        assert_eq!(
            ok("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(ok("application/octet-stream"), Option::None);
        assert_eq!(ok(""), Option::None);
        assert_eq!(ok("Application/VND.OCI.Image.Layer.v1.Tar+GZIP"), Some(Gzip));
        assert_eq!(
            ok("application/vnd.oci.image.layer.v1.tar+gzip; charset=binary"),
            Some(Gzip)
        );

        let err = |mt: &str| Compression::from_media_type(mt).unwrap_err().to_string();
        assert_eq!(
            err("application/vnd.oci.image.layer.v1.tar+encrypted"),
            "unsupported media type application/vnd.oci.image.layer.v1.tar+encrypted"
        );
        assert_eq!(
            err("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            "unsupported media type application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
        );
        assert_eq!(
            err("application/vnd.cncf.helm.chart.content.v1.tar+gzip"),
            "unsupported media type application/vnd.cncf.helm.chart.content.v1.tar+gzip"
        );
        assert!(matches!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
            Err(CompressionError::UnsupportedFormat("bzip2"))
        ));
        assert!(matches!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.xz"),
            Err(CompressionError::UnsupportedFormat("xz"))
        ));
    }
}
