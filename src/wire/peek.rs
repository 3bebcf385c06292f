//! Packet-type peek: the first element of a main packet, without decoding
//! the rest.
//!
//! The cost does not grow with the packet: an uncompressed payload is read
//! for at most [`PEEK_WINDOW`] bytes, a compressed one is decompressed only
//! that far ([`super::compress::decompress_prefix`]). The name is returned
//! inline (no allocation for uncompressed packets).

use super::compress::{self, CompressError};
use super::frame::Record;
use super::header::{Compressor, Encoder, Header};

/// Longest packet-type name the peek reads (xpra's longest are under 40).
pub const MAX_TYPE_LEN: usize = 64;
/// Bytes of (decompressed) payload the peek looks at.
pub const PEEK_WINDOW: usize = MAX_TYPE_LEN + 16;

/// A packet type: a name, or an alias number (after a hello with `aliases`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Name(TypeName),
    Alias(i64),
}

impl PacketType {
    /// The name, if this is not an alias.
    pub fn name(&self) -> Option<&str> {
        match self {
            PacketType::Name(n) => Some(n.as_str()),
            PacketType::Alias(_) => None,
        }
    }

    /// Whether this is the named type.
    pub fn is(&self, name: &str) -> bool {
        self.name() == Some(name)
    }
}

impl std::fmt::Debug for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketType::Name(n) => write!(f, "{:?}", n.as_str()),
            PacketType::Alias(a) => write!(f, "alias {a}"),
        }
    }
}

/// A packet-type name stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeName {
    len: u8,
    buf: [u8; MAX_TYPE_LEN],
}

impl TypeName {
    fn new(bytes: &[u8]) -> Result<TypeName, PeekError> {
        if bytes.len() > MAX_TYPE_LEN {
            return Err(PeekError::TypeTooLong);
        }
        if std::str::from_utf8(bytes).is_err() {
            return Err(PeekError::Malformed("packet type is not UTF-8"));
        }
        let mut buf = [0u8; MAX_TYPE_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(TypeName {
            // bounded by MAX_TYPE_LEN above
            len: bytes.len() as u8,
            buf,
        })
    }

    pub fn as_str(&self) -> &str {
        // Validated as UTF-8 in `new`.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

/// Why a packet type could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeekError {
    #[error("raw chunks have no packet type")]
    Chunk,
    #[error("packet is truncated before its type")]
    Truncated,
    #[error("packet type is longer than {MAX_TYPE_LEN} bytes")]
    TypeTooLong,
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("cannot peek into {0} packets")]
    Unsupported(Encoder),
    #[error(transparent)]
    Compression(#[from] CompressError),
}

/// Peeks the type of a main-packet record.
pub fn peek_type(record: &Record) -> Result<PacketType, PeekError> {
    peek_payload(&record.header, &record.payload)
}

/// Peeks the type from a header and its payload.
pub fn peek_payload(header: &Header, payload: &[u8]) -> Result<PacketType, PeekError> {
    if header.is_chunk() {
        return Err(PeekError::Chunk);
    }
    let encoder = header.encoder();
    match header.compressor() {
        Compressor::None => peek_encoded(encoder, payload),
        c => {
            let prefix = compress::decompress_prefix(c, payload, PEEK_WINDOW)?;
            peek_encoded(encoder, &prefix)
        }
    }
}

/// Peeks the type from an uncompressed encoded packet.
pub fn peek_encoded(encoder: Encoder, data: &[u8]) -> Result<PacketType, PeekError> {
    match encoder {
        Encoder::Rencodeplus | Encoder::Rencode => peek_rencode(data),
        Encoder::Bencode => peek_bencode(data),
        Encoder::Yaml => Err(PeekError::Unsupported(Encoder::Yaml)),
    }
}

fn byte(data: &[u8], at: usize) -> Result<u8, PeekError> {
    data.get(at).copied().ok_or(PeekError::Truncated)
}

/// Reads ASCII digits from `at` up to one of `ends`; returns (value, index of
/// the end byte).
fn decimal(data: &[u8], mut at: usize, ends: &[u8]) -> Result<(u64, usize), PeekError> {
    let start = at;
    let mut n: u64 = 0;
    loop {
        let b = byte(data, at)?;
        if ends.contains(&b) && at > start {
            return Ok((n, at));
        }
        if !b.is_ascii_digit() || at - start >= 10 {
            return Err(PeekError::Malformed("bad length prefix"));
        }
        n = n * 10 + u64::from(b - b'0');
        at += 1;
    }
}

fn name_at(data: &[u8], start: usize, len: u64) -> Result<PacketType, PeekError> {
    if len > MAX_TYPE_LEN as u64 {
        return Err(PeekError::TypeTooLong);
    }
    let end = start + len as usize;
    let bytes = data.get(start..end).ok_or(PeekError::Truncated)?;
    Ok(PacketType::Name(TypeName::new(bytes)?))
}

fn be_int(data: &[u8], at: usize, n: usize) -> Result<i64, PeekError> {
    let b = data.get(at..at + n).ok_or(PeekError::Truncated)?;
    let mut v: i64 = if b.first().is_some_and(|x| x & 0x80 != 0) {
        -1
    } else {
        0
    };
    for x in b {
        v = (v << 8) | i64::from(*x);
    }
    Ok(v)
}

fn peek_rencode(data: &[u8]) -> Result<PacketType, PeekError> {
    match byte(data, 0)? {
        59 => {}
        193..=255 => {}
        192 => return Err(PeekError::Malformed("empty packet list")),
        _ => return Err(PeekError::Malformed("packet is not a list")),
    }
    let code = byte(data, 1)?;
    match code {
        128..=191 => name_at(data, 2, u64::from(code - 128)),
        b'0'..=b'9' => {
            let (len, sep) = decimal(data, 1, b":/")?;
            name_at(data, sep + 1, len)
        }
        0..=43 => Ok(PacketType::Alias(i64::from(code))),
        70..=101 => Ok(PacketType::Alias(-(i64::from(code) - 69))),
        62 => be_int(data, 2, 1).map(PacketType::Alias),
        63 => be_int(data, 2, 2).map(PacketType::Alias),
        64 => be_int(data, 2, 4).map(PacketType::Alias),
        65 => be_int(data, 2, 8).map(PacketType::Alias),
        127 => Err(PeekError::Malformed("empty packet list")),
        _ => Err(PeekError::Malformed("packet type is not a string or alias")),
    }
}

fn peek_bencode(data: &[u8]) -> Result<PacketType, PeekError> {
    if byte(data, 0)? != b'l' {
        return Err(PeekError::Malformed("packet is not a list"));
    }
    match byte(data, 1)? {
        b'0'..=b'9' => {
            let (len, colon) = decimal(data, 1, b":")?;
            name_at(data, colon + 1, len)
        }
        b'u' => {
            let (len, colon) = decimal(data, 2, b":")?;
            name_at(data, colon + 1, len)
        }
        b'i' => {
            let neg = byte(data, 2)? == b'-';
            let (n, _) = decimal(data, if neg { 3 } else { 2 }, b"e")?;
            let n = i64::try_from(n).map_err(|_| PeekError::Malformed("bad alias"))?;
            Ok(PacketType::Alias(if neg { -n } else { n }))
        }
        b'e' => Err(PeekError::Malformed("empty packet list")),
        _ => Err(PeekError::Malformed("packet type is not a string or alias")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn name(p: Result<PacketType, PeekError>) -> String {
        p.unwrap().name().unwrap().to_owned()
    }

    #[test]
    fn rencode_forms() {
        assert_eq!(
            name(peek_encoded(Encoder::Rencodeplus, b"\xc2\x84ping\x01")),
            "ping"
        );
        assert_eq!(name(peek_encoded(Encoder::Rencode, b";4:ping\x7f")), "ping");
        assert_eq!(
            name(peek_encoded(Encoder::Rencodeplus, b"\xc22:hi\x01")),
            "hi"
        );
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc1\x0e").unwrap(),
            PacketType::Alias(14)
        );
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc2\x07\x01").unwrap(),
            PacketType::Alias(7)
        );
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc2\x46").unwrap(),
            PacketType::Alias(-1)
        );
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc2\x3f\x01\x00").unwrap(),
            PacketType::Alias(256)
        );
    }

    #[test]
    fn bencode_forms() {
        assert_eq!(name(peek_encoded(Encoder::Bencode, b"l5:helloe")), "hello");
        assert_eq!(name(peek_encoded(Encoder::Bencode, b"lu5:helloe")), "hello");
        assert_eq!(
            peek_encoded(Encoder::Bencode, b"li12ee").unwrap(),
            PacketType::Alias(12)
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc2"),
            Err(PeekError::Truncated)
        );
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc2\x84pin"),
            Err(PeekError::Truncated)
        );
        assert!(peek_encoded(Encoder::Rencodeplus, b"\x84ping").is_err());
        assert_eq!(
            peek_encoded(Encoder::Rencodeplus, b"\xc2999:"),
            Err(PeekError::TypeTooLong)
        );
        assert!(peek_encoded(Encoder::Bencode, b"l99999999999:x").is_err());
        assert!(peek_encoded(Encoder::Yaml, b"- hello").is_err());
    }

    #[test]
    fn peek_ignores_what_follows() {
        let mut big = b"\xc3\x84draw".to_vec();
        big.extend(std::iter::repeat_n(0u8, 1 << 20));
        assert_eq!(name(peek_encoded(Encoder::Rencodeplus, &big)), "draw");
    }
}
