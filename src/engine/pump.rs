//! One direction of a relayed connection, the I/O half: read, let the
//! sans-IO [`Direction`] cut the bytes (pass-through pieces, intercepted
//! packets, the proxy's own packets at packet boundaries), write.
//!
//! A pump never reads more before it has written what it read, so a slow
//! reader on one side slows the writer on the other, and memory stays at one
//! read buffer (plus an intercepted packet and the bounded [`Outbox`])
//! whatever the peers do.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::metrics::RelayCounters;
use crate::proxy::link::Counters;
use crate::proxy::{Batch, Direction, Injected, PumpEnd};

/// Where a pump counts what it wrote: the connection's counters (sans-IO,
/// for info and the control socket) and the shard's series
/// (`--bind-metrics`), once per written batch.
#[derive(Debug)]
pub struct Tally<'a> {
    pub counters: &'a Counters,
    pub metrics: Option<RelayCounters>,
}

impl Tally<'_> {
    pub(super) fn add(&self, bytes: usize, packets: u64) {
        self.counters.add(bytes, packets);
        if let Some(m) = &self.metrics {
            m.add(bytes as u64, packets);
        }
    }
}

/// Whether the output stream of a pump is between packets (so a packet may
/// be injected) or in the middle of one.
#[derive(Default, Debug)]
pub struct OutState {
    mid_packet: Cell<bool>,
    /// Since when the current write has been going on.
    writing_since: Cell<Option<std::time::Instant>>,
}

impl OutState {
    pub fn at_boundary(&self) -> bool {
        !self.mid_packet.get()
    }

    /// Since when the pump has been in its current write (`None`: not
    /// writing).
    pub fn writing_since(&self) -> Option<std::time::Instant> {
        self.writing_since.get()
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
    queue: RefCell<VecDeque<Injected>>,
    limit: usize,
    ready: Notify,
}

impl Outbox {
    /// The default bound: a few control packets.
    pub const DEFAULT_LIMIT: usize = 1024 * 1024;

    pub fn new(limit: usize) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            limit,
            ready: Notify::new(),
        }
    }

    /// Queues one whole packet (its records, already encoded).
    pub fn push(&self, packet: Bytes) -> Result<(), OutboxFull> {
        self.push_packet(Injected::One(packet))
    }

    /// Queues one whole packet given as parts (a header and a payload per
    /// record, not copied), all or none.
    pub fn push_parts(&self, parts: Vec<Bytes>) -> Result<(), OutboxFull> {
        self.push_packet(Injected::Parts(parts))
    }

    fn push_packet(&self, packet: Injected) -> Result<(), OutboxFull> {
        let mut q = self.queue.borrow_mut();
        // A few packets at most: summing them is cheaper than keeping a
        // second count in step with the queue.
        let queued: usize = q.iter().map(Injected::len).sum();
        if queued + packet.len() > self.limit {
            return Err(OutboxFull {
                queued,
                limit: self.limit,
            });
        }
        q.push_back(packet);
        drop(q);
        // A stored permit if the pump is not waiting: never lost.
        self.ready.notify_one();
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(Outbox::DEFAULT_LIMIT)
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
///
/// A connection with nothing to read holds no read buffer: when the
/// stream has no data (`Pending`), an empty buffer of the smallest size is
/// given back, and taken again when data comes (a busy connection, whose
/// reads are larger, keeps its buffer: no allocation per read).
pub async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    sizer: &mut ReadSizer,
) -> io::Result<usize> {
    let want = sizer.size();
    let n = std::future::poll_fn(|cx| {
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *r), cx, buf) {
            std::task::Poll::Pending => {
                // Pending: nothing was read into it, and the stream keeps
                // no reference to it.
                if buf.is_empty() && want == ReadSizer::MIN {
                    *buf = BytesMut::new();
                }
                std::task::Poll::Pending
            }
            ready => ready,
        }
    })
    .await?;
    sizer.observe(n);
    Ok(n)
}

/// Runs one direction until it ends. `buf` holds bytes already read.
pub async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    mut buf: BytesMut,
    dir: &mut Direction,
    tally: &Tally<'_>,
    out_state: &OutState,
    outbox: &Outbox,
) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sizer = ReadSizer::new();
    loop {
        let mut out = Batch::default();
        let now = std::time::Instant::now();
        let end = dir.cut(&mut buf, &mut outbox.queue.borrow_mut(), &mut out, now);
        if !out.is_empty() {
            let (n, packets) = (out.len(), out.packets);
            out_state.writing_since.set(Some(now));
            let written = write(w, out, out_state, dir).await;
            out_state.writing_since.set(None);
            match (written, &end) {
                (Ok(()), _) => tally.add(n, packets),
                (Err(e), None) => return PumpEnd::WriteError(e.to_string()),
                // The bad record's predecessors could not be written
                // either: the read side's end is what matters.
                (Err(_), Some(_)) => {}
            }
        }
        if let Some(end) = end {
            return end.into();
        }
        if buf.is_empty() && buf.capacity() > 4 * sizer.size() {
            // Traffic went quiet: give back the big buffer of the burst.
            buf = BytesMut::new();
        }
        // Wait for bytes to read, or for a packet of the proxy's own to
        // inject (only between packets: otherwise it waits for the rest of
        // the current one).
        let can_inject = dir.at_packet_boundary();
        let read = tokio::select! {
            biased;
            r = read_more(r, &mut buf, &mut sizer) => Some(r),
            () = outbox.ready.notified(), if can_inject => None,
        };
        match read {
            None => {}
            Some(Ok(0)) => {
                return if dir.at_boundary() && buf.is_empty() {
                    PumpEnd::Eof
                } else {
                    PumpEnd::Protocol("connection closed in the middle of a packet".into())
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return PumpEnd::ReadError(e.to_string()),
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
        let slices: Vec<io::IoSlice<'_>> =
            parts.iter().take(64).map(|b| io::IoSlice::new(b)).collect();
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
    dir: &Direction,
) -> io::Result<()> {
    state.mid_packet.set(true);
    match out.into_single() {
        // No Vec of parts for the usual batch.
        Ok(one) => w.write_all(&one).await?,
        Err(parts) => write_parts(w, parts).await?,
    }
    // TLS and WebSocket streams may hold the tail of what they were given.
    w.flush().await?;
    state.mid_packet.set(!dir.at_packet_boundary());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Outbox, ReadSizer};

    #[test]
    fn the_outbox_is_bounded_in_bytes() {
        let o = Outbox::new(10);
        assert!(o.push(bytes::Bytes::from_static(b"123456")).is_ok());
        let full = o.push(bytes::Bytes::from_static(b"12345")).unwrap_err();
        assert_eq!((full.queued, full.limit), (6, 10));
        assert!(o.push(bytes::Bytes::from_static(b"1234")).is_ok());
        o.queue.borrow_mut().clear();
        assert!(o.is_empty());
        assert!(o.push(bytes::Bytes::from_static(b"1234567890")).is_ok());
        o.queue.borrow_mut().clear();
        let parts = |n: usize| vec![bytes::Bytes::from(vec![0u8; n]); 2];
        assert!(o.push_parts(parts(4)).is_ok());
        // All or none: a packet is never half queued (the queue holds
        // whole packets: the first, its two parts, 8 bytes).
        assert!(o.push_parts(parts(2)).is_err());
        assert_eq!(o.queue.borrow().len(), 1);
        assert_eq!(o.queue.borrow()[0].len(), 8);
    }

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
