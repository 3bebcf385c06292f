//! One direction of a relayed connection: read, let the [`Relay`] cut the
//! bytes into pass-through pieces and intercepted packets, write.
//!
//! A pump never reads more before it has written what it read, so a slow
//! reader on one side slows the writer on the other, and memory stays at one
//! read buffer (plus an intercepted packet) whatever the peers do.

use std::cell::Cell;
use std::io;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// Whether the output stream of a pump is between records (so a packet may
/// be injected) or in the middle of one.
#[derive(Default, Debug)]
pub struct OutState {
    mid_record: Cell<bool>,
}

impl OutState {
    pub fn at_boundary(&self) -> bool {
        !self.mid_record.get()
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
/// while they come back mostly empty. The spare room a read goes into must
/// be zeroed first (safe Rust cannot read into uninitialised memory), so a
/// fixed large read size would cost a large memset per small read.
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
        if got == self.size {
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

/// Reads once into the spare room of `buf`; returns the bytes read.
pub async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    sizer: &mut ReadSizer,
) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(len + sizer.size(), 0);
    let res = r.read(&mut buf[len..]).await;
    let n = res.as_ref().map_or(0, |n| *n);
    buf.truncate(len + n);
    sizer.observe(n);
    res
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

/// What a pump works with, besides its two streams.
pub struct Direction<'a> {
    pub relay: &'a mut Relay,
    pub limits: Limits,
    /// Strip the first `hello` seen of aliases before passing it on.
    pub rewrite_first_hello: bool,
    pub counters: &'a Counters,
    /// The state of the stream this pump writes to.
    pub out_state: &'a OutState,
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
        rewrite_first_hello,
        counters,
        out_state,
    } = dir;
    let hello_pending = Cell::new(rewrite_first_hello);
    let mut sizer = ReadSizer::new();
    loop {
        let mut out = BytesMut::new();
        let mut packets = 0u64;
        let mut closed = None;
        loop {
            let ev = relay.next_event(&mut buf, |_, t| {
                is_close(t) || (hello_pending.get() && t.is("hello"))
            });
            match ev {
                Ok(None) => break,
                Ok(Some(Event::Pass(b))) => out.unsplit(b),
                Ok(Some(Event::Packet(_, _, b))) => {
                    packets += 1;
                    out.unsplit(b);
                }
                Ok(Some(Event::Intercept(record, t))) => {
                    packets += 1;
                    if is_close(&t) {
                        let close = packet::decode_main(&record, &limits)
                            .ok()
                            .and_then(|p| Close::parse(&p.items).ok())
                            .unwrap_or_else(|| Close::new(["unknown reason"]));
                        record.write_to(&mut out);
                        closed = Some(close);
                        break;
                    }
                    hello_pending.set(false);
                    match rewrite_hello(&record, &limits) {
                        Ok(b) => out.unsplit(b),
                        Err(e) => return PumpEnd::Protocol(e),
                    }
                }
                Err(e) => {
                    // Pass on what came before the bad record, then stop.
                    if !out.is_empty() && write(w, &out, out_state, relay).await.is_ok() {
                        counters.add(out.len(), packets);
                    }
                    return PumpEnd::Protocol(e.to_string());
                }
            }
        }
        if !out.is_empty() {
            if let Err(e) = write(w, &out, out_state, relay).await {
                return PumpEnd::WriteError(e);
            }
            counters.add(out.len(), packets);
        }
        if let Some(close) = closed {
            return PumpEnd::Closed(close);
        }
        // A busy pump whose reads and writes complete at once never awaits
        // anything pending: let the shard's other connections run.
        glommio::yield_if_needed().await;
        if buf.is_empty() && buf.capacity() > 4 * sizer.size() {
            // Traffic went quiet: give back the big buffer of the burst.
            buf = BytesMut::new();
        }
        match read_more(r, &mut buf, &mut sizer).await {
            Ok(0) => {
                return if relay.at_boundary() && buf.is_empty() {
                    PumpEnd::Eof
                } else {
                    PumpEnd::Protocol("connection closed in the middle of a packet".into())
                };
            }
            Ok(_) => {}
            Err(e) => return PumpEnd::ReadError(e),
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: &[u8],
    state: &OutState,
    relay: &Relay,
) -> io::Result<()> {
    state.mid_record.set(true);
    w.write_all(out).await?;
    state.mid_record.set(!relay.at_boundary());
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
        s.observe(3 * ReadSizer::MIN);
        assert_eq!(s.size(), 2 * ReadSizer::MIN);
    }
}
