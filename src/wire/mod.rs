//! Sans-IO xpra protocol: bytes in, values and records out.
//!
//! Nothing here touches a socket, an executor or a thread. Callers feed bytes
//! to a [`frame::FrameDecoder`], get [`frame::Record`]s back (header plus a
//! `Bytes` payload sliced from the read buffer), and decode only the records
//! they must act on ([`packet`]); the rest are forwarded as they came.
//!
//! Layers, bottom up:
//! - [`header`]: the 8-byte record header and its flag rules (modern, legacy);
//! - [`value`]: the value model shared by all encoders, and the decode
//!   budget ([`DecodeLimits`]) every decoder runs under;
//! - [`rencode`] (rencodeplus and legacy rencode), [`bencode`]: value codecs;
//! - [`compress`]: lz4 / zlib / brotli / zstd, every output bounded;
//! - [`frame`]: streaming record decoder with size limits;
//! - [`peek`]: packet type of a main packet without decoding the rest;
//! - [`packet`]: raw-chunk reassembly, whole-packet decode and encode;
//! - [`views`]: typed views of `hello`, `challenge`, `connection-close`;
//! - [`json`]: a value as JSON, for tools.

pub mod bencode;
pub mod compress;
pub mod frame;
pub mod fuzzing;
pub mod header;
pub mod json;
pub mod packet;
pub mod peek;
pub mod relay;
pub mod rencode;
pub mod value;
pub mod views;

pub use header::{Compressor, Encoder, Header, HeaderError, Rules};
pub use value::{DecodeError, DecodeLimits, EncodeError, Usage, Value};
