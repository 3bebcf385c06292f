//! Whole packets: decoding a main packet (decompress, decode), putting raw
//! chunks back in their places, and building records from a packet.
//!
//! Only the packets a proxy must act on go through here; the others are
//! forwarded as records.

use bytes::Bytes;

use super::compress::{self, CompressError};
use super::frame::{Limits, Record};
use super::header::{
    Compressor, Encoder, Header, FLAG_FLUSH, FLAG_RENCODE, FLAG_RENCODEPLUS, MAX_CHUNK_INDEX,
};
use super::value::{DecodeError, DecodeLimits, EncodeError, Value};
use super::{bencode, rencode};

/// Why a packet could not be decoded or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    #[error(transparent)]
    Compression(#[from] CompressError),
    #[error("cannot decode {encoder} packet: {source}")]
    Decode {
        encoder: Encoder,
        #[source]
        source: DecodeError,
    },
    #[error("cannot encode {encoder} packet: {source}")]
    Encode {
        encoder: Encoder,
        #[source]
        source: EncodeError,
    },
    #[error("{0} packets are not supported")]
    UnsupportedEncoder(Encoder),
    #[error("a packet must be a non-empty list, got {0}")]
    NotAList(&'static str),
    #[error("raw chunk {index} has no argument to replace (packet has {len} items)")]
    ChunkIndex { index: u8, len: usize },
}

/// A decoded packet with the framing it came in.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub encoder: Encoder,
    pub compressor: Compressor,
    /// The packet: a list whose first item is the type.
    pub items: Vec<Value>,
}

impl Packet {
    /// The packet type, if it is a name (not an alias).
    pub fn packet_type(&self) -> Option<&str> {
        self.items.first().and_then(Value::as_str)
    }

    /// Argument `i` (1-based: 0 is the type).
    pub fn arg(&self, i: usize) -> Option<&Value> {
        self.items.get(i)
    }
}

/// Decodes the value of an uncompressed encoded payload.
pub fn decode_value(
    encoder: Encoder,
    data: &Bytes,
    limits: DecodeLimits,
) -> Result<Value, PacketError> {
    let r = match encoder {
        Encoder::Rencodeplus => rencode::decode_plus(data, limits),
        Encoder::Rencode => rencode::decode_legacy(data, limits),
        Encoder::Bencode => bencode::decode(data, limits),
        Encoder::Yaml => return Err(PacketError::UnsupportedEncoder(encoder)),
    };
    r.map_err(|source| PacketError::Decode { encoder, source })
}

/// Encodes a value with `encoder`, appending to `out`.
pub fn encode_value(encoder: Encoder, v: &Value, out: &mut Vec<u8>) -> Result<(), PacketError> {
    let r = match encoder {
        Encoder::Rencodeplus => rencode::encode_plus(v, out),
        Encoder::Rencode => rencode::encode_legacy(v, out),
        Encoder::Bencode => bencode::encode(v, out),
        Encoder::Yaml => return Err(PacketError::UnsupportedEncoder(encoder)),
    };
    r.map_err(|source| PacketError::Encode { encoder, source })
}

/// The payload of a record, decompressed if needed (bounded by `limits`).
pub fn plain_payload(
    header: &Header,
    payload: &Bytes,
    limits: &Limits,
) -> Result<Bytes, PacketError> {
    match header.compressor() {
        Compressor::None => Ok(payload.clone()),
        c => Ok(Bytes::from(compress::decompress(
            c,
            payload,
            limits.max_decompressed,
        )?)),
    }
}

/// Decodes a main-packet record (no raw chunks substituted): decompressed
/// within `limits.max_decompressed`, decoded within the `limits.decode`
/// budget.
pub fn decode_main(record: &Record, limits: &Limits) -> Result<Packet, PacketError> {
    let encoder = record.header.encoder();
    let plain = plain_payload(&record.header, &record.payload, limits)?;
    let value = decode_value(encoder, &plain, limits.decode)?;
    let items = match value {
        Value::List(items) if !items.is_empty() => items,
        Value::List(_) => return Err(PacketError::NotAList("an empty list")),
        other => return Err(PacketError::NotAList(other.kind())),
    };
    Ok(Packet {
        encoder,
        compressor: record.header.compressor(),
        items,
    })
}

/// Collects raw chunks and yields whole packets, as xpra's receiver does:
/// chunk `i` replaces item `i` of the next main packet.
#[derive(Debug, Default)]
pub struct Assembler {
    chunks: Vec<(u8, Bytes)>,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// Takes the next record (as validated by a
    /// [`super::frame::FrameDecoder`], which refuses duplicate and excess
    /// chunks). Returns a packet when `record` is a main packet.
    pub fn push(
        &mut self,
        record: &Record,
        limits: &Limits,
    ) -> Result<Option<Packet>, PacketError> {
        if record.header.is_chunk() {
            let data = plain_payload(&record.header, &record.payload, limits)?;
            self.chunks.push((record.header.index, data));
            return Ok(None);
        }
        // The chunks belong to this packet whether or not it decodes: a
        // caller that goes on after an error must not see them again.
        let chunks = std::mem::take(&mut self.chunks);
        let mut packet = decode_main(record, limits)?;
        for (index, data) in chunks {
            let len = packet.items.len();
            let slot = packet
                .items
                .get_mut(usize::from(index))
                .ok_or(PacketError::ChunkIndex { index, len })?;
            *slot = Value::Bytes(data);
        }
        Ok(Some(packet))
    }

    /// Raw chunks waiting for their main packet.
    pub fn pending(&self) -> usize {
        self.chunks.len()
    }
}

/// How to frame an outgoing packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    pub encoder: Encoder,
    pub compressor: Compressor,
    /// Compression level, 1..=15 (ignored for `Compressor::None`).
    pub level: u8,
    /// Main packets no larger than this are sent uncompressed (xpra: 378).
    pub min_compress: usize,
    /// Top-level byte arguments (items 1..=15) at least this long travel
    /// as raw chunks; `None` inlines everything.
    pub chunk_threshold: Option<usize>,
    /// Set the modern flush hint on the main packet.
    pub flush: bool,
}

impl EncodeOptions {
    /// Plain framing with `encoder`: no compression, no raw chunks.
    pub fn plain(encoder: Encoder) -> EncodeOptions {
        EncodeOptions {
            encoder,
            compressor: Compressor::None,
            level: 0,
            min_compress: 378,
            chunk_threshold: None,
            flush: false,
        }
    }
}

/// The protocol flags for a main packet.
pub fn main_flags(opts: &EncodeOptions) -> u8 {
    let enc = match opts.encoder {
        Encoder::Rencodeplus => FLAG_RENCODEPLUS,
        Encoder::Rencode => FLAG_RENCODE,
        other => other.flag(),
    };
    if opts.flush && opts.encoder == Encoder::Rencodeplus {
        enc | FLAG_FLUSH
    } else {
        enc
    }
}

/// Builds the records for `items` (raw chunks first, then the main packet).
pub fn encode_packet(items: &[Value], opts: &EncodeOptions) -> Result<Vec<Record>, PacketError> {
    let mut records = Vec::new();
    let mut main: Vec<Value>;
    let to_encode: &[Value] = match opts.chunk_threshold {
        None => items,
        Some(threshold) => {
            main = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Bytes(b)
                        if i >= 1 && i <= usize::from(MAX_CHUNK_INDEX) && b.len() >= threshold =>
                    {
                        // i <= 15 checked above
                        records.push(Record::new(0, 0, i as u8, b.clone()));
                        main.push(Value::Bytes(Bytes::new()));
                    }
                    other => main.push(other.clone()),
                }
            }
            &main
        }
    };
    let mut buf = Vec::with_capacity(64);
    encode_value(opts.encoder, &Value::List(to_encode.to_vec()), &mut buf)?;
    let flags = main_flags(opts);
    let record = if opts.compressor != Compressor::None && buf.len() > opts.min_compress {
        let c = compress::compress(opts.compressor, opts.level, &buf)?;
        Record::new(flags, opts.compressor.byte(opts.level), 0, Bytes::from(c))
    } else {
        Record::new(flags, 0, 0, Bytes::from(buf))
    };
    records.push(record);
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_main_packet_needs_no_codec_state() {
        let a = Assembler::new();
        assert_eq!(a.pending(), 0);
        let opts = EncodeOptions::plain(Encoder::Rencodeplus);
        assert_eq!(main_flags(&opts), FLAG_RENCODEPLUS);
        let opts = EncodeOptions {
            flush: true,
            ..opts
        };
        assert_eq!(main_flags(&opts), FLAG_RENCODEPLUS | FLAG_FLUSH);
        assert_eq!(main_flags(&EncodeOptions::plain(Encoder::Bencode)), 0);
    }

    /// A main packet that failed to decode used to leave its raw chunks
    /// queued, and the next packet got them.
    #[test]
    fn chunks_do_not_outlive_a_bad_main_packet() {
        let limits = Limits::default();
        let mut a = Assembler::new();
        let chunk = Record::new(0, 0, 1, Bytes::from_static(b"stale"));
        assert_eq!(a.push(&chunk, &limits), Ok(None));
        let bad = Record::new(FLAG_RENCODEPLUS, 0, 0, Bytes::from_static(b"\x2e"));
        assert!(matches!(
            a.push(&bad, &limits),
            Err(PacketError::Decode { .. })
        ));
        assert_eq!(a.pending(), 0);
        let items = vec![Value::from("ping"), Value::Int(1)];
        let good = encode_packet(&items, &EncodeOptions::plain(Encoder::Rencodeplus)).unwrap();
        let p = a.push(&good[0], &limits).unwrap().unwrap();
        assert_eq!(p.items, items);
        // and after a chunk-index error too
        let chunk = Record::new(0, 0, 5, Bytes::from_static(b"x"));
        assert_eq!(a.push(&chunk, &limits), Ok(None));
        assert!(matches!(
            a.push(&good[0], &limits),
            Err(PacketError::ChunkIndex { index: 5, len: 2 })
        ));
        assert_eq!(a.pending(), 0);
        assert_eq!(a.push(&good[0], &limits).unwrap().unwrap().items, items);
    }
}
