//! The relay seam for transcoded connections (issue 13): the
//! [`Transcoder`] takes the packet types it names on both directions, the
//! link's hook the rest; what the transcoder has for either side (frames
//! for the client, acks for the session) is drained by the driver, told by
//! [`VideoRelay::wake`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use super::direction::{PacketHook, Verdict};
use super::error::Side;
use crate::video::caps::ClientVideo;
use crate::video::transcoder::{TranscodeConfig, Transcoder, CLIENT_TYPES, SESSION_TYPES};
use crate::video::workers::Pool;
use crate::video::Done;
use crate::wire::frame::Record;
use crate::wire::header::Encoder;
use crate::wire::peek::PacketType;

/// What the driver of a transcoded connection needs besides the
/// directions.
pub struct VideoRelay {
    pub transcoder: Rc<RefCell<Transcoder>>,
    /// The workers' answers (the driver takes the receiver).
    pub done: Option<tokio::sync::mpsc::UnboundedReceiver<Done>>,
    /// Notified when a hook left packets in the transcoder for a side.
    pub wake: Rc<Notify>,
    pub pool: Arc<Pool>,
}

impl std::fmt::Debug for VideoRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoRelay").finish_non_exhaustive()
    }
}

impl VideoRelay {
    /// A transcoder for one connection, on `pool`.
    pub fn new(
        pool: Arc<Pool>,
        client: ClientVideo,
        encoder: Encoder,
        shard: usize,
        conn: u64,
    ) -> VideoRelay {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = TranscodeConfig {
            client,
            encoder,
            shard,
            conn,
        };
        VideoRelay {
            transcoder: Rc::new(RefCell::new(Transcoder::new(cfg, pool.sink(), tx))),
            done: Some(rx),
            wake: Rc::new(Notify::new()),
            pool,
        }
    }

    /// The hook of one direction: the transcoder's types to it, the rest
    /// to `inner`.
    pub fn hook(&self, side: Side, inner: Box<dyn PacketHook>) -> Box<dyn PacketHook> {
        Box::new(VideoHook {
            transcoder: self.transcoder.clone(),
            wake: self.wake.clone(),
            inner,
            side,
        })
    }
}

/// The packet types a direction hands to its hook on a transcoded
/// connection, besides the link's.
pub fn intercepted(side: Side) -> &'static [&'static str] {
    match side {
        Side::Session => SESSION_TYPES,
        _ => CLIENT_TYPES,
    }
}

struct VideoHook {
    transcoder: Rc<RefCell<Transcoder>>,
    wake: Rc<Notify>,
    inner: Box<dyn PacketHook>,
    side: Side,
}

impl PacketHook for VideoHook {
    fn on_packet(
        &mut self,
        chunks: &[Record],
        record: &Record,
        ptype: &PacketType,
        now: Instant,
    ) -> Verdict {
        let ours = ptype
            .name()
            .is_some_and(|n| intercepted(self.side).contains(&n));
        if !ours {
            return self.inner.on_packet(chunks, record, ptype, now);
        }
        let verdict = {
            let mut t = self.transcoder.borrow_mut();
            match self.side {
                Side::Session => t.on_session_packet(chunks, record, ptype, now),
                _ => t.on_client_packet(chunks, record, ptype, now),
            }
        };
        // Whatever it queued for either side goes out from the driver.
        self.wake.notify_one();
        verdict
    }

    fn on_first_hello(&mut self, items: &[crate::wire::Value], encoder: Encoder, now: Instant) {
        self.inner.on_first_hello(items, encoder, now);
    }
}
