//! One direction of a relayed connection: read, let the [`Relay`] cut the
//! bytes into pass-through pieces and intercepted packets, write.
//!
//! A pump never reads more before it has written what it read, so a slow
//! reader on one side slows the writer on the other, and memory stays at one
//! read buffer (plus an intercepted packet and the bounded [`Outbox`])
//! whatever the peers do.
//!
//! The relay seam: an [`Intercepts`] table says which packet types this
//! direction decodes (everything else is cut through untouched), a
//! [`PacketHook`] decides what becomes of them, and an [`Outbox`] lets the
//! proxy inject whole packets of its own (pings, replies, an encoder's
//! output) between packets, never inside one. Order is preserved: what the
//! outbox holds goes out at the next packet boundary, before the bytes read
//! after it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::wire::frame::{Limits, Record};
use crate::wire::header::Encoder;
use crate::wire::packet::{self, EncodeOptions};
use crate::wire::peek::PacketType;
use crate::wire::relay::{Event, Relay};
use crate::wire::views::{Close, CLOSE_PACKET_ALIASES};
use crate::wire::Value;

/// Capabilities a proxy strips from a hello it relays: packet-type aliases
/// would hide packet types from the relay's peek.
const STRIP_FROM_HELLO: [&str; 1] = ["aliases"];

/// Per-direction counters.
#[derive(Default, Debug)]
pub struct Counters {
    pub bytes: Cell<u64>,
    pub packets: Cell<u64>,
}

impl Counters {
    fn add(&self, bytes: usize, packets: u64) {
        self.bytes.set(self.bytes.get() + bytes as u64);
        self.packets.set(self.packets.get() + packets);
    }
}

/// Whether the output stream of a pump is between packets (so a packet may
/// be injected) or in the middle of one.
#[derive(Default, Debug)]
pub struct OutState {
    mid_packet: Cell<bool>,
}

impl OutState {
    pub fn at_boundary(&self) -> bool {
        !self.mid_packet.get()
    }
}

/// The outbox is full: the side it writes to does not keep up.
#[derive(Debug, thiserror::Error)]
#[error("outbound queue full ({queued} bytes queued, limit {limit})")]
pub struct OutboxFull {
    pub queued: usize,
    pub limit: usize,
}

/// Whole packets the proxy itself sends on one direction, written between
/// relayed packets. Bounded in bytes: a push beyond the limit is refused
/// (the caller decides: drop a ping, close a connection).
#[derive(Debug)]
pub struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    queued: Cell<usize>,
    limit: usize,
    ready: Notify,
}

impl Outbox {
    /// The default bound: a few control packets.
    pub const DEFAULT_LIMIT: usize = 1024 * 1024;

    pub fn new(limit: usize) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            limit,
            ready: Notify::new(),
        }
    }

    /// Queues one whole packet (its records, already encoded).
    pub fn push(&self, packet: Bytes) -> Result<(), OutboxFull> {
        let queued = self.queued.get();
        if queued + packet.len() > self.limit {
            return Err(OutboxFull {
                queued,
                limit: self.limit,
            });
        }
        self.queued.set(queued + packet.len());
        self.queue.borrow_mut().push_back(packet);
        // A stored permit if the pump is not waiting: never lost.
        self.ready.notify_one();
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.queued.get() == 0 && self.queue.borrow().is_empty()
    }

    /// Moves everything queued to `out`.
    fn drain_into(&self, out: &mut Batch) -> u64 {
        let mut q = self.queue.borrow_mut();
        let n = q.len() as u64;
        for b in q.drain(..) {
            out.push_bytes(b);
        }
        self.queued.set(0);
        n
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(Outbox::DEFAULT_LIMIT)
    }
}

/// Which packet types a direction decodes; everything else is cut through.
#[derive(Debug, Clone, Default)]
pub struct Intercepts {
    /// The first `hello` (stripped of aliases before it is passed on).
    pub first_hello: bool,
    /// More types handed to the direction's [`PacketHook`].
    pub types: Vec<&'static str>,
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
    fn on_packet(&mut self, record: &Record, ptype: &PacketType) -> Verdict;
}

/// Forwards everything it is given.
pub struct ForwardAll;

impl PacketHook for ForwardAll {
    fn on_packet(&mut self, _: &Record, _: &PacketType) -> Verdict {
        Verdict::Forward
    }
}

/// How a pump ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The reading side closed cleanly.
    Eof,
    /// The reading side sent a close packet (already passed on).
    Closed(Close),
    /// Reading failed.
    ReadError(io::Error),
    /// Writing failed: the other side is gone.
    WriteError(io::Error),
    /// The reading side broke the protocol.
    Protocol(String),
}

impl std::fmt::Display for PumpEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PumpEnd::Eof => f.write_str("closed"),
            PumpEnd::Closed(c) => write!(f, "disconnected: {}", c.reasons.join(", ")),
            PumpEnd::ReadError(e) => write!(f, "read error: {e}"),
            PumpEnd::WriteError(e) => write!(f, "write error: {e}"),
            PumpEnd::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// Read size that follows the traffic: doubles while reads fill it, halves
/// while they come back mostly empty. Reads go into the buffer's spare
/// capacity, which is not zeroed first, so the size only decides how much
/// memory a connection holds between bursts.
#[derive(Debug, Clone, Copy)]
pub struct ReadSizer {
    size: usize,
}

impl ReadSizer {
    pub const MIN: usize = 4 * 1024;
    pub const MAX: usize = 256 * 1024;

    pub fn new() -> ReadSizer {
        // Small first: an idle connection keeps little; a busy one doubles
        // its way up in a few reads.
        ReadSizer { size: Self::MIN }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn observe(&mut self, got: usize) {
        if got >= self.size {
            self.size = (self.size * 2).min(Self::MAX);
        } else if got < self.size / 4 {
            self.size = (self.size / 2).max(Self::MIN);
        }
    }
}

impl Default for ReadSizer {
    fn default() -> Self {
        ReadSizer::new()
    }
}

/// Reads once into the spare capacity of `buf` (no memset); returns the
/// bytes read. Cancel-safe: a read that did not complete consumed nothing.
pub async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    sizer: &mut ReadSizer,
) -> io::Result<usize> {
    let want = sizer.size();
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let n = r.read_buf(buf).await?;
    sizer.observe(n);
    Ok(n)
}

/// Encodes `items` with `encoder` (uncompressed) into wire bytes.
pub fn encode_items(items: &[Value], encoder: Encoder) -> Result<BytesMut, packet::PacketError> {
    let records = packet::encode_packet(items, &EncodeOptions::plain(encoder))?;
    let mut out = BytesMut::new();
    for r in &records {
        r.write_to(&mut out);
    }
    Ok(out)
}

fn is_close(t: &PacketType) -> bool {
    t.name().is_some_and(|n| CLOSE_PACKET_ALIASES.contains(&n))
}

/// Removes the capabilities the proxy must not relay from a hello record,
/// re-encoded in the encoder it came in.
fn rewrite_hello(record: &Record, limits: &Limits) -> Result<BytesMut, String> {
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
    encode_items(&items, p.encoder).map_err(|e| format!("cannot re-encode hello: {e}"))
}

/// The pieces of one write: contiguous splits of the read buffer are
/// re-joined (no copy), anything else (an injected or rewritten packet)
/// becomes its own slice of a vectored write.
#[derive(Default)]
struct Batch {
    parts: Vec<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Batch {
    fn push_split(&mut self, b: BytesMut) {
        self.len += b.len();
        // `unsplit` is free when `b` follows `tail` in the same buffer, and
        // copies otherwise.
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

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn into_parts(mut self) -> Vec<Bytes> {
        if !self.tail.is_empty() {
            self.parts.push(self.tail.freeze());
        }
        self.parts
    }
}

/// What a pump works with, besides its two streams.
pub struct Direction<'a> {
    pub relay: &'a mut Relay,
    pub limits: Limits,
    pub intercepts: Intercepts,
    pub hook: &'a mut dyn PacketHook,
    pub counters: &'a Counters,
    /// The state of the stream this pump writes to.
    pub out_state: &'a OutState,
    /// The proxy's own packets for the stream this pump writes to.
    pub outbox: &'a Outbox,
}

/// Runs one direction until it ends. `buf` holds bytes already read.
pub async fn pump<R, W>(r: &mut R, w: &mut W, mut buf: BytesMut, dir: Direction<'_>) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Direction {
        relay,
        limits,
        intercepts,
        hook,
        counters,
        out_state,
        outbox,
    } = dir;
    let mut hello_pending = intercepts.first_hello;
    let mut sizer = ReadSizer::new();
    loop {
        let mut out = Batch::default();
        let mut packets = 0u64;
        let mut closed = None;
        loop {
            if relay.at_packet_boundary() && !outbox.is_empty() {
                packets += outbox.drain_into(&mut out);
            }
            let ev = relay.next_event(&mut buf, |_, t| intercepts.wants(t, hello_pending));
            match ev {
                Ok(None) => break,
                Ok(Some(Event::Pass(b))) => out.push_split(b),
                Ok(Some(Event::Packet(_, _, b))) => {
                    packets += 1;
                    out.push_split(b);
                }
                Ok(Some(Event::Intercept(record, t))) => {
                    packets += 1;
                    if is_close(&t) {
                        let close = packet::decode_main(&record, &limits)
                            .ok()
                            .and_then(|p| Close::parse(&p.items).ok())
                            .unwrap_or_else(|| Close::new(["unknown reason"]));
                        let mut b = BytesMut::new();
                        record.write_to(&mut b);
                        out.push_bytes(b.freeze());
                        closed = Some(close);
                        break;
                    }
                    if hello_pending && t.is("hello") {
                        hello_pending = false;
                        match rewrite_hello(&record, &limits) {
                            Ok(b) => out.push_bytes(b.freeze()),
                            Err(e) => return PumpEnd::Protocol(e),
                        }
                        continue;
                    }
                    match hook.on_packet(&record, &t) {
                        Verdict::Forward => {
                            let mut b = BytesMut::new();
                            record.write_to(&mut b);
                            out.push_bytes(b.freeze());
                        }
                        Verdict::Replace(b) => out.push_bytes(b),
                        Verdict::Drop => {}
                    }
                }
                Err(e) => {
                    // Pass on what came before the bad record, then stop.
                    let n = out.len;
                    if !out.is_empty() && write(w, out, out_state, relay).await.is_ok() {
                        counters.add(n, packets);
                    }
                    return PumpEnd::Protocol(e.to_string());
                }
            }
        }
        if !out.is_empty() {
            let n = out.len;
            if let Err(e) = write(w, out, out_state, relay).await {
                return PumpEnd::WriteError(e);
            }
            counters.add(n, packets);
        }
        if let Some(close) = closed {
            return PumpEnd::Closed(close);
        }
        if buf.is_empty() && buf.capacity() > 4 * sizer.size() {
            // Traffic went quiet: give back the big buffer of the burst.
            buf = BytesMut::new();
        }
        // Wait for bytes to read, or for a packet of the proxy's own to
        // inject (only between packets: otherwise it waits for the rest of
        // the current one).
        let can_inject = relay.at_packet_boundary();
        let read = tokio::select! {
            biased;
            r = read_more(r, &mut buf, &mut sizer) => Some(r),
            () = outbox.ready.notified(), if can_inject => None,
        };
        match read {
            None => {}
            Some(Ok(0)) => {
                return if relay.at_boundary() && buf.is_empty() {
                    PumpEnd::Eof
                } else {
                    PumpEnd::Protocol("connection closed in the middle of a packet".into())
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return PumpEnd::ReadError(e),
        }
    }
}

/// Writes every part, vectored where the stream supports it.
pub async fn write_parts<W: AsyncWrite + Unpin>(w: &mut W, parts: Vec<Bytes>) -> io::Result<()> {
    if parts.len() == 1 || !w.is_write_vectored() {
        for p in parts {
            w.write_all(&p).await?;
        }
        return Ok(());
    }
    let mut parts: VecDeque<Bytes> = parts.into();
    while !parts.is_empty() {
        let slices: Vec<io::IoSlice<'_>> = parts
            .iter()
            .take(64)
            .map(|b| io::IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        drop(slices);
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = parts.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                parts.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
    Ok(())
}

async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: Batch,
    state: &OutState,
    relay: &Relay,
) -> io::Result<()> {
    state.mid_packet.set(true);
    write_parts(w, out.into_parts()).await?;
    // TLS and WebSocket streams may hold the tail of what they were given.
    w.flush().await?;
    state.mid_packet.set(!relay.at_packet_boundary());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ReadSizer;

    #[test]
    fn read_size_follows_traffic() {
        let mut s = ReadSizer::new();
        for _ in 0..10 {
            let full = s.size();
            s.observe(full);
        }
        assert_eq!(s.size(), ReadSizer::MAX);
        let before = s.size();
        s.observe(before / 2);
        assert_eq!(s.size(), before);
        assert_eq!(s.size(), ReadSizer::MAX);
        for _ in 0..20 {
            s.observe(100);
        }
        assert_eq!(s.size(), ReadSizer::MIN);
        s.observe(ReadSizer::MIN);
        assert_eq!(s.size(), 2 * ReadSizer::MIN);
        // A read may bring more than asked (spare capacity): still "full".
        s.observe(3 * ReadSizer::MIN);
        assert_eq!(s.size(), 4 * ReadSizer::MIN);
    }
}
