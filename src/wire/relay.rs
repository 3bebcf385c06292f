//! Cut-through relay: the sans-IO core of a forwarding pump.
//!
//! A proxy reads bytes from one peer and writes them to the other. Most
//! records pass untouched; a few main packets (hello, challenge, close, ...)
//! must be read whole and acted on. The [`Relay`] walks the byte stream
//! record by record and says, for each piece of the read buffer, whether to
//! pass it on or hand it to the caller:
//!
//! - a passed record is released as soon as its bytes arrive: its header and
//!   whatever part of the payload is buffered go out at once, the rest as it
//!   comes. Memory per direction is the read buffer, whatever the record's
//!   size;
//! - a main packet's type is peeked from its first bytes (the first 80 of
//!   an uncompressed payload; of a compressed one, the first KiB, or as
//!   much more as the compressor needs, up to 1 MiB); when the caller's
//!   `intercept` predicate says so, the whole record is buffered (up to
//!   `RelayLimits::max_intercept`) and returned as [`Event::Intercept`].
//!
//! Passed bytes are split off the read buffer as `BytesMut` (no copy);
//! consecutive pieces are contiguous, so a caller can `unsplit` them into one
//! write.

use bytes::{Buf, BytesMut};

use super::frame::{FrameError, Record};
use super::header::{Header, Rules, HEADER_LEN};
use super::peek::{self, PacketType, PeekError, PEEK_WINDOW};

/// Compressed bytes read first to peek a compressed main packet's type.
const COMPRESSED_PEEK_INPUT: usize = 1024;
/// The most compressed input read to find a type (never more than
/// `RelayLimits::max_intercept` either). The type comes out of the first
/// kilobyte of any ordinary packet, but lz4 writes the length of a literal
/// run before the literals (one byte per 255 of them: 64 KiB of length for
/// 16 MiB of incompressible data) and zstd decodes whole blocks (up to
/// 128 KiB). Until the type is known, the record's bytes stay buffered; the
/// relay retries with twice as much input each time.
const MAX_COMPRESSED_PEEK_INPUT: usize = 1024 * 1024;

/// Limits of a relay direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Largest declared payload of one record.
    pub max_payload: u32,
    /// Largest record the relay buffers whole for the caller.
    pub max_intercept: u32,
    /// Most raw chunks before one main packet.
    pub max_pending_chunks: u8,
    /// Raw chunks are buffered whole and returned as [`Event::Chunk`]
    /// (each up to `max_intercept`) instead of passed as they come: the
    /// caller learns the type of the main packet they belong to before
    /// deciding on them (transcoding reads a draw's pixels, which travel as
    /// a chunk). Off for plain relaying, which stays cut-through.
    pub hold_chunks: bool,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_payload: super::frame::DEFAULT_MAX_PAYLOAD,
            max_intercept: 16 * 1024 * 1024,
            max_pending_chunks: super::frame::DEFAULT_MAX_PENDING_CHUNKS,
            hold_chunks: false,
        }
    }
}

/// What to do with the next piece of the stream.
#[derive(Debug)]
pub enum Event {
    /// Pass these bytes on unchanged.
    Pass(BytesMut),
    /// Pass these bytes on unchanged: they start a main packet of this
    /// type (reported for counters and logs). Later `Pass` events carry the
    /// rest of it.
    Packet(Header, PacketType, BytesMut),
    /// A whole record the caller asked for; it has not been passed on.
    Intercept(Record, PacketType),
    /// A whole raw chunk, with [`RelayLimits::hold_chunks`]; it has not
    /// been passed on. It belongs to the next main packet.
    Chunk(Record),
}

/// Why a relayed stream broke. The connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot read the packet type: {0}")]
    Peek(PeekError),
    #[error("{what} packet of {length} bytes exceeds the {limit}-byte limit")]
    InterceptTooLarge {
        what: String,
        length: u32,
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// At a record boundary.
    Boundary,
    /// Passing a record; this many payload bytes still to come.
    Passing(usize),
    /// Buffering a whole record for the caller.
    Buffering(Header, PacketType),
    /// Buffering a whole raw chunk ([`RelayLimits::hold_chunks`]).
    BufferingChunk(Header),
}

/// One direction of a relayed connection.
#[derive(Debug)]
pub struct Relay {
    rules: Rules,
    limits: RelayLimits,
    state: State,
    chunks: u16,
    records: u64,
    /// Payload bytes to have before the next peek of a compressed main
    /// packet whose type did not come out of less (0: none tried yet).
    peek_at: usize,
}

impl Relay {
    pub fn new(rules: Rules, limits: RelayLimits) -> Relay {
        Relay {
            rules,
            limits,
            state: State::Boundary,
            chunks: 0,
            records: 0,
            peek_at: 0,
        }
    }

    /// Records started so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the stream is at a record boundary (a clean place to stop).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Boundary)
    }

    /// Whether the stream is between packets: at a record boundary with no
    /// raw chunk waiting for its main packet. Only here may a whole packet
    /// be injected (xpra substitutes pending chunks into the next main
    /// packet, whichever it is).
    pub fn at_packet_boundary(&self) -> bool {
        self.at_boundary() && self.chunks == 0
    }

    /// Takes the next event from `buf`; `Ok(None)` when more bytes are
    /// needed. `intercept` is asked once per main packet.
    pub fn next_event(
        &mut self,
        buf: &mut BytesMut,
        mut intercept: impl FnMut(&Header, &PacketType) -> bool,
    ) -> Result<Option<Event>, RelayError> {
        match self.state {
            State::Passing(remaining) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = remaining.min(buf.len());
                let left = remaining - n;
                self.state = if left == 0 {
                    State::Boundary
                } else {
                    State::Passing(left)
                };
                Ok(Some(Event::Pass(buf.split_to(n))))
            }
            State::Buffering(header, ptype) => Ok(self.take_buffered(buf, header, ptype)),
            State::BufferingChunk(header) => Ok(self.take_chunk(buf, header)),
            State::Boundary => self.at_record(buf, &mut intercept),
        }
    }

    fn at_record(
        &mut self,
        buf: &mut BytesMut,
        intercept: &mut impl FnMut(&Header, &PacketType) -> bool,
    ) -> Result<Option<Event>, RelayError> {
        let Some(raw) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(raw);
        let header = Header::parse(&hb, self.rules).map_err(FrameError::from)?;
        if header.length > self.limits.max_payload {
            return Err(FrameError::TooLarge {
                length: header.length,
                limit: self.limits.max_payload,
            }
            .into());
        }
        let len = header.length as usize;
        if header.is_chunk() {
            let bit = 1u16 << header.index;
            if self.chunks & bit != 0 {
                return Err(FrameError::DuplicateChunk(header.index).into());
            }
            if self.chunks.count_ones() >= u32::from(self.limits.max_pending_chunks) {
                return Err(FrameError::TooManyChunks(self.limits.max_pending_chunks).into());
            }
            self.chunks |= bit;
            if self.limits.hold_chunks {
                if header.length > self.limits.max_intercept {
                    return Err(RelayError::InterceptTooLarge {
                        what: format!("raw chunk {}", header.index),
                        length: header.length,
                        limit: self.limits.max_intercept,
                    });
                }
                self.records += 1;
                self.state = State::BufferingChunk(header);
                return Ok(self.take_chunk(buf, header));
            }
            return Ok(Some(Event::Pass(self.start_passing(buf, len))));
        }
        // A main packet: peek its type from the first bytes.
        let compressed = header.compression != 0;
        let want = if compressed {
            COMPRESSED_PEEK_INPUT.max(self.peek_at)
        } else {
            PEEK_WINDOW
        };
        let have = (buf.len() - HEADER_LEN).min(len);
        if have < want.min(len) {
            return Ok(None);
        }
        let ptype = match peek::peek_payload(&header, &buf[HEADER_LEN..HEADER_LEN + have]) {
            Ok(t) => t,
            Err(e) => {
                // An uncompressed type lies within the window; a complete
                // record holds all there is; past the cap is too far.
                let cap = MAX_COMPRESSED_PEEK_INPUT
                    .min(self.limits.max_intercept as usize)
                    .max(COMPRESSED_PEEK_INPUT);
                if !compressed || have == len || have >= cap {
                    self.peek_at = 0;
                    return Err(RelayError::Peek(e));
                }
                self.peek_at = have.saturating_mul(2).min(cap);
                return Ok(None);
            }
        };
        self.peek_at = 0;
        self.chunks = 0;
        if intercept(&header, &ptype) {
            if header.length > self.limits.max_intercept {
                return Err(RelayError::InterceptTooLarge {
                    what: format!("{ptype:?}"),
                    length: header.length,
                    limit: self.limits.max_intercept,
                });
            }
            self.records += 1;
            self.state = State::Buffering(header, ptype);
            return Ok(self.take_buffered(buf, header, ptype));
        }
        let bytes = self.start_passing(buf, len);
        Ok(Some(Event::Packet(header, ptype, bytes)))
    }

    /// The intercepted record, once all of it is buffered.
    fn take_buffered(
        &mut self,
        buf: &mut BytesMut,
        header: Header,
        ptype: PacketType,
    ) -> Option<Event> {
        let total = HEADER_LEN + header.length as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return None;
        }
        self.state = State::Boundary;
        let mut bytes = buf.split_to(total);
        bytes.advance(HEADER_LEN);
        let record = Record {
            header,
            payload: bytes.freeze(),
        };
        Some(Event::Intercept(record, ptype))
    }

    /// The held chunk, once all of it is buffered.
    fn take_chunk(&mut self, buf: &mut BytesMut, header: Header) -> Option<Event> {
        let total = HEADER_LEN + header.length as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return None;
        }
        self.state = State::Boundary;
        let mut bytes = buf.split_to(total);
        bytes.advance(HEADER_LEN);
        Some(Event::Chunk(Record {
            header,
            payload: bytes.freeze(),
        }))
    }

    /// Splits off what is buffered of a record being passed on.
    fn start_passing(&mut self, buf: &mut BytesMut, len: usize) -> BytesMut {
        self.records += 1;
        let n = buf.len().min(HEADER_LEN + len);
        let left = HEADER_LEN + len - n;
        self.state = if left == 0 {
            State::Boundary
        } else {
            State::Passing(left)
        };
        buf.split_to(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::frame::Record;
    use crate::wire::header::FLAG_RENCODEPLUS;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn main_rec(name: &str, extra: usize) -> Vec<u8> {
        let mut payload = vec![0xc2, 0x80 + name.len() as u8];
        payload.extend_from_slice(name.as_bytes());
        // second item: a long byte string "N/...."
        payload.extend_from_slice(format!("{extra}/").as_bytes());
        payload.extend(std::iter::repeat_n(0xab, extra));
        Record::new(FLAG_RENCODEPLUS, 0, 0, Bytes::from(payload))
            .to_bytes()
            .to_vec()
    }

    fn chunk_rec(index: u8, n: usize) -> Vec<u8> {
        Record::new(0, 0, index, Bytes::from(vec![index; n]))
            .to_bytes()
            .to_vec()
    }

    /// Runs a stream through a relay fed in the given pieces; returns the
    /// passed bytes, the intercepted records and the packet types seen.
    fn run(stream: &[u8], pieces: &[usize], grab: &str) -> (Vec<u8>, Vec<Record>, Vec<String>) {
        let mut relay = Relay::new(Rules::Modern, RelayLimits::default());
        let mut buf = BytesMut::new();
        let mut passed = Vec::new();
        let mut grabbed = Vec::new();
        let mut types = Vec::new();
        let mut at = 0;
        let mut sizes = pieces.iter().copied().chain(std::iter::repeat(7));
        while at < stream.len() {
            let n = sizes.next().unwrap().max(1).min(stream.len() - at);
            buf.extend_from_slice(&stream[at..at + n]);
            at += n;
            while let Some(ev) = relay.next_event(&mut buf, |_, t| t.is(grab)).unwrap() {
                match ev {
                    Event::Pass(b) => passed.extend_from_slice(&b),
                    Event::Packet(_, t, b) => {
                        types.push(format!("{t:?}"));
                        passed.extend_from_slice(&b);
                    }
                    Event::Intercept(r, _) => grabbed.push(r),
                    Event::Chunk(r) => passed.extend_from_slice(&r.to_bytes()),
                }
            }
        }
        assert!(relay.at_boundary());
        (passed, grabbed, types)
    }

    #[test]
    fn passes_everything_but_what_is_intercepted() {
        let mut stream = Vec::new();
        stream.extend(chunk_rec(1, 300_000));
        stream.extend(main_rec("draw", 10));
        stream.extend(main_rec("hello", 1000));
        stream.extend(main_rec("ping", 0));
        let (passed, grabbed, types) = run(&stream, &[3, 100, 65536], "hello");
        let hello = main_rec("hello", 1000);
        let mut expect = stream.clone();
        let pos = expect
            .windows(hello.len())
            .position(|w| w == hello.as_slice())
            .unwrap();
        expect.drain(pos..pos + hello.len());
        assert_eq!(passed, expect);
        assert_eq!(grabbed.len(), 1);
        assert_eq!(grabbed[0].to_bytes().to_vec(), hello);
        assert_eq!(types, vec!["\"draw\"", "\"ping\""]);
    }

    #[test]
    fn large_record_is_released_before_it_is_complete() {
        let rec = chunk_rec(2, 1 << 20);
        let mut relay = Relay::new(Rules::Modern, RelayLimits::default());
        let mut buf = BytesMut::from(&rec[..4096]);
        match relay.next_event(&mut buf, |_, _| false).unwrap() {
            Some(Event::Pass(b)) => assert_eq!(b.len(), 4096),
            other => panic!("{other:?}"),
        }
        assert!(relay.next_event(&mut buf, |_, _| false).unwrap().is_none());
        assert!(!relay.at_boundary());
    }

    #[test]
    fn limits_apply() {
        let mut relay = Relay::new(
            Rules::Modern,
            RelayLimits {
                max_intercept: 100,
                ..RelayLimits::default()
            },
        );
        let mut buf = BytesMut::from(&main_rec("hello", 200)[..]);
        assert!(matches!(
            relay.next_event(&mut buf, |_, t| t.is("hello")),
            Err(RelayError::InterceptTooLarge { .. })
        ));
        let mut relay = Relay::new(Rules::Modern, RelayLimits::default());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&chunk_rec(3, 1));
        buf.extend_from_slice(&chunk_rec(3, 1));
        assert!(relay.next_event(&mut buf, |_, _| false).unwrap().is_some());
        assert!(matches!(
            relay.next_event(&mut buf, |_, _| false),
            Err(RelayError::Frame(FrameError::DuplicateChunk(3)))
        ));
    }

    /// Deterministic bytes that no compressor can shrink.
    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A compressed main packet whose type sits behind more than 1 KiB of
    /// compressed input: lz4 writes a literal run's length before the
    /// literals (one byte per 255 of them), zstd decodes whole blocks. The
    /// relay used to give up after 1 KiB (`RelayError::Peek`) when the
    /// record arrived in pieces.
    #[test]
    fn compressed_type_behind_more_than_a_kib() {
        use crate::wire::header::{Compressor, Encoder};
        use crate::wire::packet::{encode_packet, EncodeOptions};
        use crate::wire::value::Value;
        let mut data = noise(400_000);
        // a compressible tail, so that zstd writes a compressed block
        data.extend(std::iter::repeat_n(7u8, 100_000));
        let items = vec![
            Value::from("send-file-chunk"),
            Value::Bytes(Bytes::from(data)),
        ];
        for c in [Compressor::Lz4, Compressor::Zstd, Compressor::Brotli] {
            let opts = EncodeOptions {
                compressor: c,
                level: 1,
                ..EncodeOptions::plain(Encoder::Rencodeplus)
            };
            let recs = encode_packet(&items, &opts).unwrap();
            let mut stream = Vec::new();
            for r in &recs {
                stream.extend_from_slice(&r.to_bytes());
            }
            stream.extend(main_rec("ping", 0));
            for pieces in [vec![4096], vec![1500; 200], vec![stream.len()]] {
                let (passed, grabbed, types) = run(&stream, &pieces, "none");
                assert_eq!(passed, stream, "{c}");
                assert!(grabbed.is_empty());
                assert_eq!(types, vec!["\"send-file-chunk\"", "\"ping\""], "{c}");
            }
        }
    }

    #[test]
    fn malformed_compressed_main_packet_is_refused() {
        // complete and still unreadable: an error, not a wait
        let rec = Record::new(
            FLAG_RENCODEPLUS,
            0x11,
            0,
            Bytes::from_static(b"\x10\x00\x00\x00junk"),
        );
        let mut relay = Relay::new(Rules::Modern, RelayLimits::default());
        let mut buf = BytesMut::from(&rec.to_bytes()[..]);
        assert!(matches!(
            relay.next_event(&mut buf, |_, _| false),
            Err(RelayError::Peek(_))
        ));
        // incomplete, but past the most the relay reads to find a type
        let mut payload = vec![0xff, 0xff, 0xff, 0x0f, 0xf0];
        payload.extend(std::iter::repeat_n(0xff, 2 * 1024 * 1024));
        let header = Header {
            flags: FLAG_RENCODEPLUS,
            compression: 0x11,
            index: 0,
            length: 8 * 1024 * 1024,
        };
        let mut buf = BytesMut::from(&header.to_bytes()[..]);
        buf.extend_from_slice(&payload);
        let limits = RelayLimits {
            max_intercept: 1024 * 1024,
            ..RelayLimits::default()
        };
        let mut relay = Relay::new(Rules::Modern, limits);
        assert!(matches!(
            relay.next_event(&mut buf, |_, _| false),
            Err(RelayError::Peek(_))
        ));
    }

    proptest! {
        #[test]
        fn splits_do_not_matter(pieces in proptest::collection::vec(1usize..5000, 0..40)) {
            let mut stream = Vec::new();
            stream.extend(main_rec("hello", 50));
            stream.extend(chunk_rec(7, 20_000));
            stream.extend(main_rec("draw", 3));
            stream.extend(main_rec("disconnect", 0));
            let (p1, g1, t1) = run(&stream, &[stream.len()], "disconnect");
            let (p2, g2, t2) = run(&stream, &pieces, "disconnect");
            prop_assert_eq!(p1, p2);
            prop_assert_eq!(g1, g2);
            prop_assert_eq!(t1, t2);
        }
    }
}
