//! `xfwd wire decode`: a byte stream of xpra records in, one JSON line per
//! complete packet out.
//!
//! Reads in fixed-size blocks, so a capture of any size streams through in
//! bounded memory (plus the largest record it holds).

use std::io::{Read, Write};

use crate::wire::frame::{FrameDecoder, FrameError, Limits};
use crate::wire::header::Rules;
use crate::wire::json;
use crate::wire::packet::{Assembler, Packet, PacketError};

const READ_BLOCK: usize = 64 * 1024;

/// Why decoding stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DecodeToolError {
    #[error("reading input: {0}")]
    Read(std::io::Error),
    #[error("writing output: {0}")]
    Write(std::io::Error),
    #[error("at byte {offset}: {source}")]
    Frame {
        offset: u64,
        #[source]
        source: FrameError,
    },
    #[error("at byte {offset}: {source}")]
    Packet {
        offset: u64,
        #[source]
        source: PacketError,
    },
}

impl DecodeToolError {
    /// Offset in the input where the failing record starts, if known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            DecodeToolError::Frame { offset, .. } | DecodeToolError::Packet { offset, .. } => {
                Some(*offset)
            }
            _ => None,
        }
    }
}

/// One JSON line for a decoded packet.
pub fn packet_line(p: &Packet) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("{\"type\":");
    match p.items.first() {
        Some(t) => json::write_value(&mut line, t),
        None => line.push_str("null"),
    }
    line.push_str(",\"encoder\":\"");
    line.push_str(p.encoder.name());
    line.push_str("\",\"compression\":\"");
    line.push_str(p.compressor.name());
    line.push_str("\",\"packet\":");
    json::write_value(&mut line, &crate::wire::Value::List(p.items.clone()));
    line.push('}');
    line
}

/// The JSON error line printed after the last packet when decoding fails.
pub fn error_line(e: &DecodeToolError) -> String {
    let mut line = String::from("{\"error\":");
    json::write_str(&mut line, &e.to_string());
    if let Some(offset) = e.offset() {
        line.push_str(&format!(",\"offset\":{offset}"));
    }
    line.push('}');
    line
}

/// Decodes `input` to `out`; returns the number of packets printed.
pub fn run<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    limits: Limits,
) -> Result<u64, DecodeToolError> {
    let mut decoder = FrameDecoder::new(Rules::Any, limits);
    let mut assembler = Assembler::new();
    let mut block = vec![0u8; READ_BLOCK];
    let mut packets = 0u64;
    // Offset of the first byte the decoder has not returned as a record yet.
    let mut consumed: u64 = 0;
    loop {
        let n = match input.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeToolError::Read(e)),
        };
        decoder.feed(&block[..n]);
        loop {
            let record = match decoder.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(source) => {
                    return Err(DecodeToolError::Frame {
                        offset: consumed,
                        source,
                    })
                }
            };
            let offset = consumed;
            consumed += record.wire_len() as u64;
            let packet = assembler
                .push(&record, &limits)
                .map_err(|source| DecodeToolError::Packet { offset, source })?;
            if let Some(p) = packet {
                writeln!(out, "{}", packet_line(&p)).map_err(DecodeToolError::Write)?;
                packets += 1;
            }
        }
    }
    decoder.finish().map_err(|source| DecodeToolError::Frame {
        offset: consumed,
        source,
    })?;
    out.flush().map_err(DecodeToolError::Write)?;
    Ok(packets)
}
