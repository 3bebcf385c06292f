//! The 8-byte record header: `'P'`, protocol flags, compression byte, chunk
//! index, payload length (u32 big-endian).
//!
//! Modern xpra (4.3+) and legacy xpra (3.1) use the same layout with different
//! flag values; [`Rules`] says which a caller accepts.

use std::fmt;

/// Size of a record header.
pub const HEADER_LEN: usize = 8;
/// The magic first byte.
pub const MAGIC: u8 = b'P';

/// Protocol flag: legacy rencode payload.
pub const FLAG_RENCODE: u8 = 0x01;
/// Protocol flag: xpra's AES layer.
pub const FLAG_CIPHER: u8 = 0x02;
/// Protocol flag: yaml payload.
pub const FLAG_YAML: u8 = 0x04;
/// Protocol flag (modern): nothing else follows right away.
pub const FLAG_FLUSH: u8 = 0x08;
/// Protocol flag (modern): rencodeplus payload.
pub const FLAG_RENCODEPLUS: u8 = 0x10;

/// Compression byte, high nibble: lz4.
pub const COMPRESS_LZ4: u8 = 0x10;
/// Compression byte, high nibble: lzo (legacy only).
pub const COMPRESS_LZO: u8 = 0x20;
/// Compression byte, high nibble: brotli.
pub const COMPRESS_BROTLI: u8 = 0x40;
/// Compression byte, high nibble: zstd (modern only).
pub const COMPRESS_ZSTD: u8 = 0x80;

/// Highest chunk index xpra accepts (4 bits' worth; raw chunks replace
/// arguments 1..15 of the next main packet).
pub const MAX_CHUNK_INDEX: u8 = 15;

/// Which generation's header rules to enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rules {
    /// xpra 4.3 and later: rencodeplus (with flush), lz4/brotli/zstd.
    Modern,
    /// xpra 3.x: bencode/rencode/yaml, zlib/lz4/lzo/brotli.
    Legacy,
    /// Either generation (what a sniffer or the `wire decode` tool uses);
    /// the header decides.
    Any,
}

/// The packet encoder named by the protocol flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoder {
    Rencodeplus,
    Rencode,
    Bencode,
    Yaml,
}

impl Encoder {
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Rencodeplus => "rencodeplus",
            Encoder::Rencode => "rencode",
            Encoder::Bencode => "bencode",
            Encoder::Yaml => "yaml",
        }
    }

    /// The protocol-flag bits that select this encoder.
    pub fn flag(self) -> u8 {
        match self {
            Encoder::Rencodeplus => FLAG_RENCODEPLUS,
            Encoder::Rencode => FLAG_RENCODE,
            Encoder::Bencode => 0,
            Encoder::Yaml => FLAG_YAML,
        }
    }

    pub fn from_name(name: &str) -> Option<Encoder> {
        Some(match name {
            "rencodeplus" => Encoder::Rencodeplus,
            "rencode" => Encoder::Rencode,
            "bencode" => Encoder::Bencode,
            "yaml" => Encoder::Yaml,
            _ => return None,
        })
    }
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The compressor named by the compression byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compressor {
    None,
    Lz4,
    Zlib,
    Brotli,
    Zstd,
    Lzo,
}

impl Compressor {
    pub fn name(self) -> &'static str {
        match self {
            Compressor::None => "none",
            Compressor::Lz4 => "lz4",
            Compressor::Zlib => "zlib",
            Compressor::Brotli => "brotli",
            Compressor::Zstd => "zstd",
            Compressor::Lzo => "lzo",
        }
    }

    /// High-nibble bits of the compression byte for this compressor.
    pub fn flag(self) -> u8 {
        match self {
            Compressor::None | Compressor::Zlib => 0,
            Compressor::Lz4 => COMPRESS_LZ4,
            Compressor::Brotli => COMPRESS_BROTLI,
            Compressor::Zstd => COMPRESS_ZSTD,
            Compressor::Lzo => COMPRESS_LZO,
        }
    }

    pub fn from_name(name: &str) -> Option<Compressor> {
        Some(match name {
            "none" => Compressor::None,
            "lz4" => Compressor::Lz4,
            "zlib" => Compressor::Zlib,
            "brotli" => Compressor::Brotli,
            "zstd" => Compressor::Zstd,
            "lzo" => Compressor::Lzo,
            _ => return None,
        })
    }

    /// The compression byte for this compressor at `level` (1..=15;
    /// `None` always gives 0).
    pub fn byte(self, level: u8) -> u8 {
        match self {
            Compressor::None => 0,
            other => other.flag() | level.clamp(1, 15),
        }
    }
}

impl fmt::Display for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed, validated record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol flags, as received.
    pub flags: u8,
    /// Compression byte, as received.
    pub compression: u8,
    /// Chunk index: 0 for a main packet, 1..=15 for a raw chunk.
    pub index: u8,
    /// Payload length in bytes.
    pub length: u32,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("not an xpra record: first byte is 0x{0:02x}, expected 'P'")]
    BadMagic(u8),
    #[error("encrypted records (xpra's AES layer, flag 0x02) are not supported")]
    Cipher,
    #[error("unknown protocol flags 0x{flags:02x} for {rules:?} xpra")]
    UnknownFlags { flags: u8, rules: Rules },
    #[error("unknown compression byte 0x{byte:02x} for {rules:?} xpra")]
    UnknownCompression { byte: u8, rules: Rules },
    #[error("chunk index {0} is out of range (1..=15)")]
    BadIndex(u8),
}

impl Header {
    /// Parses and validates 8 header bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN], rules: Rules) -> Result<Header, HeaderError> {
        if bytes[0] != MAGIC {
            return Err(HeaderError::BadMagic(bytes[0]));
        }
        let header = Header {
            flags: bytes[1],
            compression: bytes[2],
            index: bytes[3],
            length: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        };
        header.validate(rules)?;
        Ok(header)
    }

    /// Checks flags, compression and index against `rules`.
    pub fn validate(&self, rules: Rules) -> Result<(), HeaderError> {
        if self.flags & FLAG_CIPHER != 0 {
            return Err(HeaderError::Cipher);
        }
        if self.index > MAX_CHUNK_INDEX {
            return Err(HeaderError::BadIndex(self.index));
        }
        if self.index > 0 {
            // xpra writes raw chunks with no encoder flag (they are not
            // encoded); modern peers may add the flush hint.
            let allowed = match rules {
                Rules::Legacy => 0,
                Rules::Modern | Rules::Any => FLAG_FLUSH,
            };
            if self.flags & !allowed != 0 {
                return Err(HeaderError::UnknownFlags {
                    flags: self.flags,
                    rules,
                });
            }
        } else {
            self.encoder_for(rules)?;
        }
        self.compressor_for(rules)?;
        Ok(())
    }

    /// The encoder the flags name, under `rules`.
    pub fn encoder_for(&self, rules: Rules) -> Result<Encoder, HeaderError> {
        let unknown = HeaderError::UnknownFlags {
            flags: self.flags,
            rules,
        };
        let modern = || match self.flags & !FLAG_FLUSH {
            FLAG_RENCODEPLUS => Some(Encoder::Rencodeplus),
            _ => None,
        };
        let legacy = || match self.flags {
            0 => Some(Encoder::Bencode),
            FLAG_RENCODE => Some(Encoder::Rencode),
            FLAG_YAML => Some(Encoder::Yaml),
            _ => None,
        };
        let found = match rules {
            Rules::Modern => modern(),
            Rules::Legacy => legacy(),
            Rules::Any => modern().or_else(legacy),
        };
        found.ok_or(unknown)
    }

    /// The encoder, assuming the header was validated (meaningless for a raw
    /// chunk, whose payload is not encoded).
    pub fn encoder(&self) -> Encoder {
        self.encoder_for(Rules::Any).unwrap_or(Encoder::Bencode)
    }

    /// The compressor the compression byte names, under `rules`.
    pub fn compressor_for(&self, rules: Rules) -> Result<Compressor, HeaderError> {
        let byte = self.compression;
        let level = byte & 0x0f;
        let unknown = HeaderError::UnknownCompression { byte, rules };
        if byte == 0 {
            return Ok(Compressor::None);
        }
        if level == 0 {
            // A compressor flag without a level is never written by xpra.
            return Err(unknown);
        }
        let modern = match byte & 0xf0 {
            COMPRESS_LZ4 => Some(Compressor::Lz4),
            COMPRESS_BROTLI => Some(Compressor::Brotli),
            COMPRESS_ZSTD => Some(Compressor::Zstd),
            _ => None,
        };
        let legacy = match byte & 0xf0 {
            0 => Some(Compressor::Zlib),
            COMPRESS_LZ4 => Some(Compressor::Lz4),
            COMPRESS_LZO => Some(Compressor::Lzo),
            COMPRESS_BROTLI => Some(Compressor::Brotli),
            _ => None,
        };
        let found = match rules {
            Rules::Modern => modern,
            Rules::Legacy => legacy,
            Rules::Any => modern.or(legacy),
        };
        found.ok_or(unknown)
    }

    /// The compressor, assuming the header was validated.
    pub fn compressor(&self) -> Compressor {
        self.compressor_for(Rules::Any).unwrap_or(Compressor::None)
    }

    /// Whether this is a raw chunk (index > 0) rather than a main packet.
    pub fn is_chunk(&self) -> bool {
        self.index > 0
    }

    /// The 8 bytes of this header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let l = self.length.to_be_bytes();
        [
            MAGIC,
            self.flags,
            self.compression,
            self.index,
            l[0],
            l[1],
            l[2],
            l[3],
        ]
    }

    /// Which generation a validated header belongs to, if only one fits.
    pub fn generation(&self) -> Option<Rules> {
        let modern = self.validate(Rules::Modern).is_ok();
        let legacy = self.validate(Rules::Legacy).is_ok();
        match (modern, legacy) {
            (true, false) => Some(Rules::Modern),
            (false, true) => Some(Rules::Legacy),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(b: [u8; 8], r: Rules) -> Result<Header, HeaderError> {
        Header::parse(&b, r)
    }

    #[test]
    fn fixtures_headers_parse() {
        // xpra 3.1.3 client hello: rencode, zlib level 1.
        let legacy = h(
            [0x50, 0x01, 0x01, 0x00, 0x00, 0x00, 0x58, 0x1d],
            Rules::Legacy,
        )
        .unwrap();
        assert_eq!(legacy.encoder(), Encoder::Rencode);
        assert_eq!(legacy.compressor(), Compressor::Zlib);
        assert_eq!(legacy.length, 0x581d);
        // xpra 6.5 client hello: rencodeplus + flush, lz4 level 1.
        let modern = h([0x50, 0x18, 0x11, 0x00, 0, 0, 0x0d, 0x85], Rules::Modern).unwrap();
        assert_eq!(modern.encoder(), Encoder::Rencodeplus);
        assert_eq!(modern.compressor(), Compressor::Lz4);
        assert_eq!(modern.generation(), Some(Rules::Modern));
        assert_eq!(legacy.generation(), Some(Rules::Legacy));
    }

    #[test]
    fn rules_separate_generations() {
        assert!(h([b'P', 0x01, 0, 0, 0, 0, 0, 1], Rules::Modern).is_err());
        assert!(h([b'P', 0x10, 0, 0, 0, 0, 0, 1], Rules::Legacy).is_err());
        assert!(h([b'P', 0x10, 0x01, 0, 0, 0, 0, 1], Rules::Modern).is_err()); // zlib
        assert!(h([b'P', 0x01, 0x81, 0, 0, 0, 0, 1], Rules::Legacy).is_err()); // zstd
        assert!(h([b'P', 0x10, 0x81, 0, 0, 0, 0, 1], Rules::Modern).is_ok());
        assert!(h([b'P', 0x01, 0x21, 0, 0, 0, 0, 1], Rules::Any).is_ok()); // lzo
    }

    #[test]
    fn refusals() {
        assert_eq!(
            h([b'Q', 0x10, 0, 0, 0, 0, 0, 1], Rules::Any),
            Err(HeaderError::BadMagic(b'Q'))
        );
        assert_eq!(
            h([b'P', 0x12, 0, 0, 0, 0, 0, 1], Rules::Any),
            Err(HeaderError::Cipher)
        );
        assert_eq!(
            h([b'P', 0x10, 0, 16, 0, 0, 0, 1], Rules::Any),
            Err(HeaderError::BadIndex(16))
        );
        assert!(matches!(
            h([b'P', 0x10, 0x10, 0, 0, 0, 0, 1], Rules::Any),
            Err(HeaderError::UnknownCompression { .. })
        ));
        assert!(matches!(
            h([b'P', 0x05, 0, 0, 0, 0, 0, 1], Rules::Any),
            Err(HeaderError::UnknownFlags { .. })
        ));
    }

    #[test]
    fn chunks_carry_no_encoder_flag() {
        // As xpra writes them: flags 0, compression of the chunk itself.
        assert!(h([b'P', 0, 0, 1, 0, 4, 0, 0], Rules::Modern).is_ok());
        assert!(h([b'P', 0, 0x11, 2, 0, 4, 0, 0], Rules::Legacy).is_ok());
        assert!(h([b'P', 0x08, 0, 1, 0, 4, 0, 0], Rules::Modern).is_ok());
        assert!(h([b'P', 0x10, 0, 1, 0, 4, 0, 0], Rules::Modern).is_err());
        assert!(h([b'P', 0x01, 0, 1, 0, 4, 0, 0], Rules::Legacy).is_err());
    }

    #[test]
    fn round_trip_bytes() {
        let b = [b'P', 0x18, 0x41, 0, 1, 2, 3, 4];
        assert_eq!(h(b, Rules::Any).unwrap().to_bytes(), b);
    }
}
