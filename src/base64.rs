//! Standard base64 (RFC 4648, with padding): the one encoder behind Basic auth headers,
//! config.json `auth` values and the secret forms [`crate::scrub`] removes, and the decoder
//! of config.json `auth` values, which behaves as Go's `base64.StdEncoding` does, error
//! offsets included (docker's `illegal base64 data at input byte N` depends on them).
//!
//! It holds no URL-safe or unpadded variants: nothing in rpull reads or writes them.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * k) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 as Go's `base64.StdEncoding` decodes it: padding required, `\r` and `\n`
/// ignored. The error is the offset of the offending input byte.
pub fn decode_std(input: &str) -> Result<Vec<u8>, usize> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let chars: Vec<(usize, u8)> = input
        .bytes()
        .enumerate()
        .filter(|&(_, c)| c != b'\r' && c != b'\n')
        .collect();
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let mut quanta = chars.chunks(4).peekable();
    while let Some(quantum) = quanta.next() {
        let mut acc = 0u32;
        let mut pads = 0;
        for (k, &(i, c)) in quantum.iter().enumerate() {
            let v = if c == b'=' {
                if k < 2 {
                    return Err(i);
                }
                pads += 1;
                0
            } else if pads > 0 {
                return Err(i);
            } else {
                sextet(c).ok_or(i)?
            };
            acc = acc << 6 | v;
        }
        if quantum.len() < 4 {
            return Err(quantum[0].0);
        }
        if pads > 0 {
            if let Some(next) = quanta.peek() {
                return Err(next[0].0);
            }
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..4 - pads]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode_std(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_std(&encode(&all)).unwrap(), all);
        assert_eq!(decode_std("Zm9v\r\nYmFy\n").unwrap(), b"foobar");
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(decode_std("Zm9"), Err(0)); // missing padding
        assert_eq!(decode_std("Zm9vZm9"), Err(4));
        assert_eq!(decode_std("Zm!v"), Err(2));
        assert_eq!(decode_std("Z==="), Err(1));
        assert_eq!(decode_std("Zm=v"), Err(3));
        assert_eq!(decode_std("Zg==Zg=="), Err(4));
    }

    #[test]
    fn basic_pairs() {
        assert_eq!(encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(encode(b"a"), "YQ==");
        assert_eq!(encode(b"ab"), "YWI=");
    }
}
