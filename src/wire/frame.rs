//! Streaming record decoder: bytes in any splits, [`Record`]s out.
//!
//! The decoder owns one `BytesMut`. A complete record's payload is split off
//! that buffer as a `Bytes` (no copy), so a forwarder can write the same
//! bytes to the other side and a decoder can slice values out of them.
//!
//! Every declared length is checked against [`Limits`] before any buffer is
//! reserved for it. Raw chunks (index 1..=15) are checked for duplicates and
//! for their count before the main packet they belong to; the substitution
//! itself is [`super::packet`]'s job.

use bytes::{Buf, Bytes, BytesMut};

use super::header::{Header, HeaderError, Rules, HEADER_LEN};
use super::value::{DecodeLimits, DEFAULT_MAX_DEPTH, DEFAULT_MAX_VALUES};

/// Largest payload accepted before the peer has authenticated (its hello,
/// its challenge answers). Real clients' hellos are a few KiB (the captured
/// ones: 3.4 KiB and 22 KiB on the wire); xpra's own default is larger, but
/// unauthenticated peers must stay cheap.
pub const PRE_HELLO_MAX_PAYLOAD: u32 = 256 * 1024;
/// Largest size a compressed payload may expand to before authentication.
pub const PRE_HELLO_MAX_DECOMPRESSED: usize = 1024 * 1024;
/// Decode budget before authentication, in values: the captured hellos
/// hold 6,009 (xpra 3.1, 3,464 of them its keymap) and 683 (xpra 6.5); this
/// is ten times the larger.
pub const PRE_HELLO_MAX_VALUES: usize = 65_536;
/// Decode budget before authentication, in bytes: what the decoded hello of
/// one unauthenticated peer may hold in memory (twice that at most, with
/// vector slack). Charged as [`DecodeLimits::max_bytes`] says:
/// [`VALUE_COST`](super::value::VALUE_COST) (40 bytes on 64-bit targets) per
/// value plus string lengths. The captured hellos cost 293 KiB (xpra 3.1)
/// and 30 KiB (xpra 6.5).
pub const PRE_HELLO_MAX_DECODED: usize = 1024 * 1024;
/// Default largest payload once the hello is done (xpra's default
/// `max_packet_size` is 16 MiB; draws of a 4K screen need more).
pub const DEFAULT_MAX_PAYLOAD: u32 = 64 * 1024 * 1024;
/// Largest close packet ([`Limits::intercept_close`]) decoded; real ones are
/// a reason string or two.
pub const INTERCEPT_CLOSE_MAX_PAYLOAD: u32 = 16 * 1024;
/// Default cap on raw chunks waiting for their main packet.
pub const DEFAULT_MAX_PENDING_CHUNKS: u8 = 8;
/// The most a decoder reserves ahead for a payload it has not received yet.
const MAX_RESERVE_AHEAD: usize = 1024 * 1024;

/// Size limits for one direction of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest declared payload length of one record.
    pub max_payload: u32,
    /// Largest size a compressed payload may expand to.
    pub max_decompressed: usize,
    /// Most raw chunks that may precede one main packet.
    pub max_pending_chunks: u8,
    /// The work budget of decoding one main packet
    /// ([`super::packet::decode_main`]).
    pub decode: DecodeLimits,
}

impl Limits {
    /// The pre-authentication profile: for a peer that has not
    /// authenticated yet (a client's hello and challenge answers). A record
    /// of at most [`PRE_HELLO_MAX_PAYLOAD`], decompressing to at most
    /// [`PRE_HELLO_MAX_DECOMPRESSED`], decoding to at most
    /// [`PRE_HELLO_MAX_VALUES`] values and [`PRE_HELLO_MAX_DECODED`] bytes.
    pub const fn pre_hello() -> Limits {
        Limits {
            max_payload: PRE_HELLO_MAX_PAYLOAD,
            max_decompressed: PRE_HELLO_MAX_DECOMPRESSED,
            max_pending_chunks: DEFAULT_MAX_PENDING_CHUNKS,
            decode: DecodeLimits {
                max_depth: DEFAULT_MAX_DEPTH,
                max_values: PRE_HELLO_MAX_VALUES,
                max_bytes: PRE_HELLO_MAX_DECODED,
            },
        }
    }

    /// Limits after the handshake, with `max_payload` per record: payloads
    /// decompress to at most four times that, and decode within
    /// [`DEFAULT_MAX_VALUES`] values and as many bytes as they may
    /// decompress to.
    pub const fn after_hello(max_payload: u32) -> Limits {
        let max_decompressed = max_payload as usize * 4;
        Limits {
            max_payload,
            max_decompressed,
            max_pending_chunks: DEFAULT_MAX_PENDING_CHUNKS,
            decode: DecodeLimits {
                max_depth: DEFAULT_MAX_DEPTH,
                max_values: DEFAULT_MAX_VALUES,
                max_bytes: max_decompressed,
            },
        }
    }

    /// For the session's hello (and anything else decoded from an
    /// authenticated peer): the default, generous but bounded.
    pub const fn session_hello() -> Limits {
        Limits::after_hello(DEFAULT_MAX_PAYLOAD)
    }

    /// For the close packets the relay decodes after the handshake
    /// (`connection-close`, `disconnect`): a reason and a few strings.
    pub const fn intercept_close() -> Limits {
        Limits {
            max_payload: INTERCEPT_CLOSE_MAX_PAYLOAD,
            max_decompressed: INTERCEPT_CLOSE_MAX_PAYLOAD as usize,
            max_pending_chunks: DEFAULT_MAX_PENDING_CHUNKS,
            decode: DecodeLimits {
                max_depth: 8,
                max_values: 256,
                max_bytes: INTERCEPT_CLOSE_MAX_PAYLOAD as usize,
            },
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::after_hello(DEFAULT_MAX_PAYLOAD)
    }
}

/// One record: its header and its payload, as they came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub header: Header,
    pub payload: Bytes,
}

impl Record {
    /// A record for `payload` with the given flags, compression and index;
    /// the length is taken from the payload.
    ///
    /// Payloads longer than `u32::MAX` cannot be framed; callers check
    /// sizes against their [`Limits`] first. This saturates rather than
    /// panics, so an oversize record is refused by the peer.
    pub fn new(flags: u8, compression: u8, index: u8, payload: Bytes) -> Record {
        Record {
            header: Header {
                flags,
                compression,
                index,
                length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            },
            payload,
        }
    }

    /// Bytes this record takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the record, byte for byte as received, to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.wire_len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The record as one contiguous buffer (header, then payload).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.wire_len());
        self.write_to(&mut out);
        out.freeze()
    }
}

/// Why the stream cannot be read further. After an error the stream is out
/// of sync: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("record of {length} bytes exceeds the {limit}-byte limit")]
    TooLarge { length: u32, limit: u32 },
    #[error("raw chunk {0} sent twice before its main packet")]
    DuplicateChunk(u8),
    #[error("more than {0} raw chunks before a main packet")]
    TooManyChunks(u8),
    #[error("stream ended inside a record ({0} bytes left over)")]
    TruncatedStream(usize),
    #[error("raw chunks {0:#06x} were never followed by their main packet")]
    DanglingChunks(u16),
}

/// Incremental record decoder for one direction of a connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    rules: Rules,
    limits: Limits,
    /// Header read, payload not complete yet.
    pending: Option<Header>,
    /// Bit `i` set: raw chunk `i` seen since the last main packet.
    chunks: u16,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(rules: Rules, limits: Limits) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::with_capacity(8 * 1024),
            rules,
            limits,
            pending: None,
            chunks: 0,
            failed: None,
        }
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Narrows or widens the header rules (e.g. once the peer's generation
    /// is known).
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits (e.g. after the hello). A record whose header was
    /// already accepted keeps the old limit.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Appends bytes read from the peer.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The read buffer, for I/O layers that read straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet returned as records.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes still needed to complete the record being read (at least 1
    /// when nothing is pending), so a reader can size its next read.
    pub fn wanted(&self) -> usize {
        match self.pending {
            Some(h) => (h.length as usize).saturating_sub(self.buf.len()).max(1),
            None => HEADER_LEN.saturating_sub(self.buf.len()).max(1),
        }
    }

    /// Returns the next complete record, `Ok(None)` when more bytes are
    /// needed.
    pub fn next_record(&mut self) -> Result<Option<Record>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step() {
            Ok(r) => Ok(r),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Record>, FrameError> {
        let header = match self.pending {
            Some(h) => h,
            None => {
                let Some(raw) = self.buf.get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let mut bytes = [0u8; HEADER_LEN];
                bytes.copy_from_slice(raw);
                let h = Header::parse(&bytes, self.rules)?;
                if h.length > self.limits.max_payload {
                    return Err(FrameError::TooLarge {
                        length: h.length,
                        limit: self.limits.max_payload,
                    });
                }
                self.check_chunk(&h)?;
                self.buf.advance(HEADER_LEN);
                self.pending = Some(h);
                h
            }
        };
        let len = header.length as usize;
        if self.buf.len() < len {
            // Reserve for the rest, bounded: the length is within limits,
            // and a peer that stalls mid-record costs at most this much.
            let ahead = (len - self.buf.len()).min(MAX_RESERVE_AHEAD);
            self.buf.reserve(ahead);
            return Ok(None);
        }
        self.pending = None;
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Record { header, payload }))
    }

    fn check_chunk(&mut self, h: &Header) -> Result<(), FrameError> {
        if h.index == 0 {
            self.chunks = 0;
            return Ok(());
        }
        let bit = 1u16 << h.index;
        if self.chunks & bit != 0 {
            return Err(FrameError::DuplicateChunk(h.index));
        }
        if self.chunks.count_ones() >= u32::from(self.limits.max_pending_chunks) {
            return Err(FrameError::TooManyChunks(self.limits.max_pending_chunks));
        }
        self.chunks |= bit;
        Ok(())
    }

    /// Call at end of stream: an error if it ended inside a record or with
    /// raw chunks that never got their main packet.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.pending.is_some() || !self.buf.is_empty() {
            return Err(FrameError::TruncatedStream(self.buf.len()));
        }
        if self.chunks != 0 {
            return Err(FrameError::DanglingChunks(self.chunks));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::header::FLAG_RENCODEPLUS;

    fn rec(index: u8, payload: &[u8]) -> Vec<u8> {
        let flags = if index == 0 { FLAG_RENCODEPLUS } else { 0 };
        Record::new(flags, 0, index, Bytes::copy_from_slice(payload))
            .to_bytes()
            .to_vec()
    }

    fn drain(d: &mut FrameDecoder) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(r) = d.next_record().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn byte_at_a_time() {
        let mut stream = rec(1, &[7; 300]);
        stream.extend(rec(0, b"\xc1\x84ping"));
        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].header.index, 1);
        assert_eq!(got[0].payload.len(), 300);
        assert_eq!(&got[1].payload[..], b"\xc1\x84ping");
        d.finish().unwrap();
        let mut again = Vec::new();
        for r in &got {
            again.extend_from_slice(&r.to_bytes());
        }
        assert_eq!(again, stream, "records re-emit byte for byte");
    }

    #[test]
    fn oversize_refused_before_buffering() {
        let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
        d.feed(&[b'P', 0x10, 0, 0, 0x10, 0, 0, 0]); // 256 MiB declared
        assert!(matches!(
            d.next_record(),
            Err(FrameError::TooLarge {
                length: 0x1000_0000,
                ..
            })
        ));
        assert!(d.buffer_mut().capacity() < 1024 * 1024);
        // poisoned afterwards
        assert!(d.next_record().is_err());
    }

    #[test]
    fn duplicate_and_too_many_chunks() {
        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        d.feed(&rec(1, b"a"));
        d.feed(&rec(1, b"b"));
        assert!(d.next_record().unwrap().is_some());
        assert_eq!(d.next_record(), Err(FrameError::DuplicateChunk(1)));

        let limits = Limits {
            max_pending_chunks: 2,
            ..Limits::default()
        };
        let mut d = FrameDecoder::new(Rules::Modern, limits);
        for i in 1..=3 {
            d.feed(&rec(i, b"x"));
        }
        assert!(d.next_record().unwrap().is_some());
        assert!(d.next_record().unwrap().is_some());
        assert_eq!(d.next_record(), Err(FrameError::TooManyChunks(2)));
    }

    #[test]
    fn chunks_reset_after_main_packet() {
        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        for _ in 0..3 {
            d.feed(&rec(2, b"pixels"));
            d.feed(&rec(0, b"\xc3\x84draw\x00\x00"));
        }
        assert_eq!(drain(&mut d).len(), 6);
        d.finish().unwrap();
    }

    #[test]
    fn finish_reports_truncation_and_dangling() {
        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        d.feed(&rec(0, b"abc")[..6]);
        assert!(d.next_record().unwrap().is_none());
        assert!(matches!(d.finish(), Err(FrameError::TruncatedStream(_))));

        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        d.feed(&rec(3, b"abc"));
        drain(&mut d);
        assert_eq!(d.finish(), Err(FrameError::DanglingChunks(1 << 3)));
    }

    #[test]
    fn bad_header_is_typed() {
        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        d.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            d.next_record(),
            Err(FrameError::Header(HeaderError::BadMagic(b'G')))
        );
    }

    #[test]
    fn wanted_tracks_progress() {
        let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
        assert_eq!(d.wanted(), 8);
        let r = rec(0, &[0xc0; 100]);
        d.feed(&r[..10]);
        assert!(d.next_record().unwrap().is_none());
        assert_eq!(d.wanted(), 98);
    }
}
