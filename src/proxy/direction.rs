//! One direction of a relayed connection, sans-IO: the bytes read from one
//! side go in, the pieces to write to the other side come out.
//!
//! The relay seam: an [`Intercepts`] table says which packet types this
//! direction decodes (everything else is cut through untouched, as
//! `BytesMut` splits of the read buffer), a [`PacketHook`] decides what
//! becomes of the packets it names, and whole packets of the proxy's own
//! (pings, replies, an encoder's output) are injected between packets,
//! never inside one (xpra substitutes pending raw chunks into the next main
//! packet, whichever it is). Order is preserved: what is queued for
//! injection goes out at the next packet boundary, before the bytes read
//! after it.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::wire::frame::{Limits, Record};
use crate::wire::header::{Encoder, Rules};
use crate::wire::packet;
use crate::wire::peek::PacketType;
use crate::wire::relay::{Event, Relay, RelayLimits};
use crate::wire::views::{Close, CLOSE_PACKET_ALIASES};
use crate::wire::Value;

/// Capabilities a proxy strips from a hello it relays: packet-type aliases
/// would hide packet types from the relay's peek.
const STRIP_FROM_HELLO: [&str; 1] = ["aliases"];

/// Which packet types a direction decodes; everything else is cut through.
#[derive(Debug, Clone, Default)]
pub struct Intercepts {
    /// The first `hello` (stripped of aliases before it is passed on).
    pub first_hello: bool,
    /// More types handed to the direction's [`PacketHook`].
    pub types: Vec<&'static str>,
    /// Hold raw chunks until the type of their main packet is known, and
    /// hand them to the hook with it (a transcoded draw's pixels travel
    /// as a chunk). Raw chunks of packets passed on are then written just
    /// before them. Off: chunks are cut through as they come.
    pub hold_chunks: bool,
}

impl Intercepts {
    fn wants(&self, t: &PacketType, hello_pending: bool) -> bool {
        is_close(t)
            || (hello_pending && t.is("hello"))
            || t.name().is_some_and(|n| self.types.contains(&n))
    }
}

/// What becomes of an intercepted packet.
#[derive(Debug)]
pub enum Verdict {
    /// Pass it on unchanged.
    Forward,
    /// Pass these bytes (whole records) on instead.
    Replace(Bytes),
    /// Drop it.
    Drop,
}

/// Decides on the packets a direction's [`Intercepts`] name.
pub trait PacketHook {
    /// `chunks`: the raw chunks that came before the main packet `record`
    /// (only with [`Intercepts::hold_chunks`]; empty otherwise). A verdict
    /// covers them too: `Forward` passes them and the packet, `Replace`
    /// and `Drop` stand for all of them.
    fn on_packet(
        &mut self,
        chunks: &[Record],
        record: &Record,
        ptype: &PacketType,
        now: Instant,
    ) -> Verdict;

    /// The first hello went by (with [`Intercepts::first_hello`]), as
    /// passed on.
    fn on_first_hello(&mut self, _items: &[Value], _encoder: Encoder, _now: Instant) {}
}

/// Forwards everything it is given.
#[derive(Debug, Default)]
pub struct ForwardAll;

impl PacketHook for ForwardAll {
    fn on_packet(&mut self, _: &[Record], _: &Record, _: &PacketType, _: Instant) -> Verdict {
        Verdict::Forward
    }
}

/// A whole packet of the proxy's own, for injection: one buffer, or the
/// parts of its records (headers and payloads, not copied).
#[derive(Debug, Clone)]
pub enum Injected {
    One(Bytes),
    Parts(Vec<Bytes>),
}

impl Injected {
    /// Its bytes on the wire.
    pub fn len(&self) -> usize {
        match self {
            Injected::One(b) => b.len(),
            Injected::Parts(p) => p.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Injected {
    fn from(b: Bytes) -> Injected {
        Injected::One(b)
    }
}

/// The pieces of one write: contiguous splits of the read buffer are
/// re-joined (no copy), anything else (an injected or rewritten packet)
/// becomes its own part of a vectored write.
#[derive(Default, Debug)]
pub struct Batch {
    parts: Vec<Bytes>,
    tail: BytesMut,
    len: usize,
    /// Packets started in this batch (relayed and injected).
    pub packets: u64,
}

impl Batch {
    fn push_split(&mut self, b: BytesMut) {
        self.len += b.len();
        // `unsplit` is free when `b` follows `tail` in the same buffer.
        if self.tail.is_empty() {
            self.tail = b;
        } else {
            self.tail.unsplit(b);
        }
    }

    fn push_bytes(&mut self, b: Bytes) {
        self.len += b.len();
        if !self.tail.is_empty() {
            self.parts.push(std::mem::take(&mut self.tail).freeze());
        }
        self.parts.push(b);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch as one buffer when it is one (the usual case: everything
    /// was cut from the read buffer), else its parts, in order.
    pub fn into_single(self) -> Result<BytesMut, Vec<Bytes>> {
        if self.parts.is_empty() {
            Ok(self.tail)
        } else {
            Err(self.into_parts())
        }
    }

    /// The parts, in order.
    pub fn into_parts(mut self) -> Vec<Bytes> {
        if !self.tail.is_empty() {
            self.parts.push(self.tail.freeze());
        }
        self.parts
    }
}

/// How a direction ended, as far as its bytes tell.
#[derive(Debug)]
pub enum CutEnd {
    /// The reading side sent a close packet (passed on in the batch).
    Closed(Close),
    /// The reading side broke the protocol (what came before is in the
    /// batch).
    Protocol(String),
}

/// The sans-IO part of a pump.
pub struct Direction {
    relay: Relay,
    intercepts: Intercepts,
    hello_pending: bool,
    hook: Box<dyn PacketHook>,
    /// Raw chunks held for their main packet ([`Intercepts::hold_chunks`]).
    held: Vec<Record>,
}

impl std::fmt::Debug for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direction")
            .field("relay", &self.relay)
            .field("intercepts", &self.intercepts)
            .finish_non_exhaustive()
    }
}

impl Direction {
    pub fn new(rules: Rules, limits: Limits, intercepts: Intercepts) -> Direction {
        let mut relay_limits = RelayLimits {
            max_payload: limits.max_payload,
            hold_chunks: intercepts.hold_chunks,
            ..RelayLimits::default()
        };
        if intercepts.hold_chunks {
            // A held chunk is a whole frame of pixels (4096x4096 BGRX at
            // most: the largest video size xpra clients take).
            relay_limits.max_intercept = relay_limits
                .max_intercept
                .max(HELD_CHUNK_MAX)
                .min(limits.max_payload);
        }
        Direction {
            relay: Relay::new(rules, relay_limits),
            hello_pending: intercepts.first_hello,
            intercepts,
            hook: Box::new(ForwardAll),
            held: Vec::new(),
        }
    }

    /// Replaces the hook the intercepted packets go to.
    pub fn with_hook(mut self, hook: Box<dyn PacketHook>) -> Direction {
        self.hook = hook;
        self
    }

    /// Whether a packet may be injected now (and the stream may be cut
    /// cleanly).
    pub fn at_packet_boundary(&self) -> bool {
        self.relay.at_packet_boundary()
    }

    /// Whether the stream is at a record boundary.
    pub fn at_boundary(&self) -> bool {
        self.relay.at_boundary()
    }

    /// Cuts everything `buf` holds into `out`; queued packets of the
    /// proxy's own go in at packet boundaries. Returns how the direction
    /// ended, if it did. `now` is for the hook.
    pub fn cut(
        &mut self,
        buf: &mut BytesMut,
        inject: &mut VecDeque<Injected>,
        out: &mut Batch,
        now: Instant,
    ) -> Option<CutEnd> {
        loop {
            if !inject.is_empty() && self.relay.at_packet_boundary() {
                for p in inject.drain(..) {
                    out.packets += 1;
                    match p {
                        Injected::One(b) => out.push_bytes(b),
                        Injected::Parts(parts) => {
                            for b in parts {
                                out.push_bytes(b);
                            }
                        }
                    }
                }
            }
            let (intercepts, pending) = (&self.intercepts, self.hello_pending);
            let ev = self
                .relay
                .next_event(buf, |_, t| intercepts.wants(t, pending));
            match ev {
                Ok(None) => return None,
                Ok(Some(Event::Pass(b))) => out.push_split(b),
                Ok(Some(Event::Chunk(record))) => self.held.push(record),
                Ok(Some(Event::Packet(_, _, b))) => {
                    self.release_held(out);
                    out.packets += 1;
                    out.push_split(b);
                }
                Ok(Some(Event::Intercept(record, t))) => {
                    out.packets += 1;
                    if is_close(&t) {
                        self.release_held(out);
                        let close = packet::decode_main(&record, &Limits::intercept_close())
                            .ok()
                            .and_then(|p| Close::parse(&p.items).ok())
                            .unwrap_or_else(|| Close::new(["unknown reason"]));
                        out.push_bytes(record_bytes(&record));
                        return Some(CutEnd::Closed(close));
                    }
                    if self.hello_pending && t.is("hello") {
                        self.release_held(out);
                        self.hello_pending = false;
                        match rewrite_hello(&record, &Limits::session_hello()) {
                            Ok((b, items, encoder)) => {
                                self.hook.on_first_hello(&items, encoder, now);
                                out.push_bytes(b.freeze());
                            }
                            Err(e) => return Some(CutEnd::Protocol(e)),
                        }
                        continue;
                    }
                    let held = std::mem::take(&mut self.held);
                    match self.hook.on_packet(&held, &record, &t, now) {
                        Verdict::Forward => {
                            for c in held {
                                push_record(out, c);
                            }
                            out.push_bytes(record_bytes(&record));
                        }
                        Verdict::Replace(b) => out.push_bytes(b),
                        Verdict::Drop => out.packets -= 1,
                    }
                }
                Err(e) => return Some(CutEnd::Protocol(e.to_string())),
            }
        }
    }
}

/// The largest raw chunk a direction that holds chunks buffers: a
/// 4096x4096 frame of 4-byte pixels, and a little.
const HELD_CHUNK_MAX: u32 = 4096 * 4096 * 4 + 64 * 1024;

impl Direction {
    /// Writes the held chunks (their main packet is passed on).
    fn release_held(&mut self, out: &mut Batch) {
        for c in self.held.drain(..) {
            push_record(out, c);
        }
    }
}

/// A held record goes out as its header and its payload as they are (no
/// copy of the payload).
fn push_record(out: &mut Batch, record: Record) {
    out.push_bytes(Bytes::copy_from_slice(&record.header.to_bytes()));
    out.push_bytes(record.payload);
}

fn record_bytes(record: &Record) -> Bytes {
    let mut b = BytesMut::new();
    record.write_to(&mut b);
    b.freeze()
}

pub(crate) fn is_close(t: &PacketType) -> bool {
    t.name().is_some_and(|n| CLOSE_PACKET_ALIASES.contains(&n))
}

/// Removes the capabilities the proxy must not relay from a hello record,
/// re-encoded in the encoder it came in; also returns the packet and its
/// encoder.
fn rewrite_hello(
    record: &Record,
    limits: &Limits,
) -> Result<(BytesMut, Vec<Value>, Encoder), String> {
    let p = packet::decode_main(record, limits).map_err(|e| format!("invalid hello: {e}"))?;
    let mut items = p.items;
    if let Some(Value::Dict(caps)) = items.get_mut(1) {
        caps.retain(|(k, _)| {
            let key = k.as_str().unwrap_or("");
            !STRIP_FROM_HELLO
                .iter()
                .any(|s| key == *s || key.starts_with(&format!("{s}.")))
        });
    }
    let b = super::encode_items(&items, p.encoder)
        .map_err(|e| format!("cannot re-encode hello: {e}"))?;
    Ok((b, items, p.encoder))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::header::{Encoder, FLAG_RENCODEPLUS};

    fn packet(items: Vec<Value>) -> Bytes {
        super::super::encode_items(&items, Encoder::Rencodeplus)
            .unwrap()
            .freeze()
    }

    fn chunk(index: u8, n: usize) -> Bytes {
        Record::new(0, 0, index, Bytes::from(vec![index; n])).to_bytes()
    }

    fn draw_with_chunk() -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&chunk(7, 1000));
        b.extend_from_slice(&packet(vec![Value::from("draw"), Value::from(1)]));
        b
    }

    #[test]
    fn injected_packets_wait_for_the_main_packet_of_pending_chunks() {
        let mut d = Direction::new(Rules::Any, Limits::default(), Intercepts::default());
        let stream = draw_with_chunk();
        let ping = packet(vec![Value::from("ping"), Value::from(5)]);
        // Only the chunk has arrived: nothing may be injected yet.
        let mut buf = BytesMut::from(&stream[..1008]);
        let mut inject = VecDeque::new();
        let mut out = Batch::default();
        assert!(d
            .cut(&mut buf, &mut inject, &mut out, Instant::now())
            .is_none());
        // A packet of the proxy's own, queued now, must wait.
        inject.push_back(ping.clone().into());
        assert!(d
            .cut(&mut buf, &mut inject, &mut out, Instant::now())
            .is_none());
        assert_eq!(inject.len(), 1, "injected between a chunk and its packet");
        assert!(!d.at_packet_boundary());
        // The main packet arrives: the ping goes right after it.
        let mut buf = BytesMut::from(&stream[1008..]);
        let mut out2 = Batch::default();
        assert!(d
            .cut(&mut buf, &mut inject, &mut out2, Instant::now())
            .is_none());
        assert!(inject.is_empty());
        let mut wire = Vec::new();
        for p in out.into_parts().into_iter().chain(out2.into_parts()) {
            wire.extend_from_slice(&p);
        }
        let mut expect = stream.to_vec();
        expect.extend_from_slice(&ping);
        assert_eq!(wire, expect);
    }

    #[test]
    fn close_packets_end_the_direction_and_pass_on() {
        let mut d = Direction::new(Rules::Any, Limits::default(), Intercepts::default());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&packet(vec![Value::from("ping"), Value::from(1)]));
        buf.extend_from_slice(&packet(vec![
            Value::from("disconnect"),
            Value::from("bye now"),
        ]));
        let mut out = Batch::default();
        let end = d.cut(&mut buf, &mut VecDeque::new(), &mut out, Instant::now());
        match end {
            Some(CutEnd::Closed(c)) => assert_eq!(c.reason(), "bye now"),
            other => panic!("{other:?}"),
        }
        assert_eq!(out.packets, 2);
    }

    #[test]
    fn hooks_see_only_the_types_they_name() {
        struct Count(std::rc::Rc<std::cell::Cell<u32>>);
        impl PacketHook for Count {
            fn on_packet(
                &mut self,
                _: &[Record],
                _: &Record,
                t: &PacketType,
                _: Instant,
            ) -> Verdict {
                assert!(t.is("info-response"));
                self.0.set(self.0.get() + 1);
                Verdict::Drop
            }
        }
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut d = Direction::new(
            Rules::Any,
            Limits::default(),
            Intercepts {
                first_hello: false,
                types: vec!["info-response"],
                hold_chunks: false,
            },
        )
        .with_hook(Box::new(Count(seen.clone())));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&packet(vec![Value::from("info-response"), Value::from(1)]));
        buf.extend_from_slice(&packet(vec![Value::from("ping"), Value::from(1)]));
        let mut out = Batch::default();
        assert!(d
            .cut(&mut buf, &mut VecDeque::new(), &mut out, Instant::now())
            .is_none());
        assert_eq!(seen.get(), 1);
        assert_eq!(out.packets, 1);
        let ping = packet(vec![Value::from("ping"), Value::from(1)]);
        assert_eq!(out.len(), ping.len());
    }

    /// With `hold_chunks`, a draw's pixel chunk reaches the hook with its
    /// main packet; the chunks of packets passed on go out just before
    /// them, in order.
    #[test]
    fn held_chunks_go_with_their_packet() {
        struct Grab(std::rc::Rc<std::cell::RefCell<Vec<(usize, u8)>>>);
        impl PacketHook for Grab {
            fn on_packet(
                &mut self,
                c: &[Record],
                _: &Record,
                _: &PacketType,
                _: Instant,
            ) -> Verdict {
                let mut g = self.0.borrow_mut();
                for r in c {
                    g.push((r.payload.len(), r.header.index));
                }
                Verdict::Drop
            }
        }
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut d = Direction::new(
            Rules::Any,
            Limits::default(),
            Intercepts {
                first_hello: false,
                types: vec!["draw"],
                hold_chunks: true,
            },
        )
        .with_hook(Box::new(Grab(seen.clone())));
        let draw = packet(vec![Value::from("draw"), Value::from(1), Value::from("")]);
        let ping = packet(vec![Value::from("ping"), Value::from(1)]);
        let mut stream = Vec::new();
        stream.extend_from_slice(&chunk(2, 5000));
        stream.extend_from_slice(&draw);
        stream.extend_from_slice(&chunk(1, 300));
        stream.extend_from_slice(&ping);
        let mut out_bytes = Vec::new();
        let mut buf = BytesMut::new();
        for piece in stream.chunks(777) {
            buf.extend_from_slice(piece);
            let mut out = Batch::default();
            assert!(d
                .cut(&mut buf, &mut VecDeque::new(), &mut out, Instant::now())
                .is_none());
            for p in out.into_parts() {
                out_bytes.extend_from_slice(&p);
            }
        }
        assert_eq!(*seen.borrow(), vec![(5000, 2)]);
        let mut want = chunk(1, 300).to_vec();
        want.extend_from_slice(&ping);
        assert_eq!(out_bytes, want);
        assert!(d.at_packet_boundary());
    }

    #[test]
    fn the_first_hello_loses_its_aliases() {
        let mut d = Direction::new(
            Rules::Any,
            Limits::default(),
            Intercepts {
                first_hello: true,
                types: vec![],
                hold_chunks: false,
            },
        );
        let hello = packet(vec![
            Value::from("hello"),
            Value::Dict(vec![
                (Value::from("aliases"), Value::Dict(vec![])),
                (Value::from("version"), Value::from("6.3")),
            ]),
        ]);
        let mut buf = BytesMut::from(&hello[..]);
        let mut out = Batch::default();
        assert!(d
            .cut(&mut buf, &mut VecDeque::new(), &mut out, Instant::now())
            .is_none());
        let mut wire = BytesMut::new();
        for p in out.into_parts() {
            wire.extend_from_slice(&p);
        }
        let mut dec = crate::wire::frame::FrameDecoder::new(Rules::Any, Limits::default());
        dec.feed(&wire);
        let r = dec.next_record().unwrap().unwrap();
        assert_eq!(r.header.flags & FLAG_RENCODEPLUS, FLAG_RENCODEPLUS);
        let p = packet::decode_main(&r, &Limits::default()).unwrap();
        let Value::Dict(caps) = &p.items[1] else {
            panic!()
        };
        assert!(caps.iter().all(|(k, _)| k.as_str() != Some("aliases")));
    }
}
