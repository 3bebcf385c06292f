//! The sans-IO transcoding state of one connection (issue 13: being
//! written; the signatures are fixed).

use std::time::Instant;

use bytes::Bytes;

use crate::proxy::Verdict;
use crate::wire::frame::Record;
use crate::wire::header::Encoder;
use crate::wire::peek::PacketType;
use crate::wire::Value;

use super::caps::ClientVideo;
use super::job::{Done, JobSink};

/// Packet types the session-to-client direction hands to the transcoder.
pub const SESSION_TYPES: &[&str] = &[];
/// Packet types the client-to-session direction hands to the transcoder.
pub const CLIENT_TYPES: &[&str] = &[];

/// Settings of a transcoded connection.
#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    pub client: ClientVideo,
    /// The connection's packet encoder (both sides).
    pub encoder: Encoder,
    /// The connection's shard and id (the [`super::job::StreamKey`]s).
    pub shard: usize,
    pub conn: u64,
}

/// One connection's transcoding.
pub struct Transcoder {
    cfg: TranscodeConfig,
    sink: Box<dyn JobSink>,
    reply: tokio::sync::mpsc::UnboundedSender<Done>,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    /// `reply`: where workers send their [`Done`]s (the engine awaits the
    /// other end and calls [`Transcoder::on_done`]).
    pub fn new(
        cfg: TranscodeConfig,
        sink: Box<dyn JobSink>,
        reply: tokio::sync::mpsc::UnboundedSender<Done>,
    ) -> Transcoder {
        Transcoder { cfg, sink, reply }
    }

    /// A packet from the session of a type in [`SESSION_TYPES`] (with the
    /// raw chunks before it).
    pub fn on_session_packet(
        &mut self,
        chunks: &[Record],
        record: &Record,
        ptype: &PacketType,
        now: Instant,
    ) -> Verdict {
        let _ = (chunks, record, ptype, now, &mut self.sink, &self.reply);
        Verdict::Forward
    }

    /// A packet from the client of a type in [`CLIENT_TYPES`].
    pub fn on_client_packet(
        &mut self,
        chunks: &[Record],
        record: &Record,
        ptype: &PacketType,
        now: Instant,
    ) -> Verdict {
        let _ = (chunks, record, ptype, now);
        Verdict::Forward
    }

    /// A worker's answer.
    pub fn on_done(&mut self, done: Done, now: Instant) {
        let _ = (done, now);
    }

    /// Whole packets for the client (encoded frames), in order.
    pub fn pop_to_client(&mut self) -> Option<Bytes> {
        None
    }

    /// Whole packets for the session (acks, refresh requests), in order.
    pub fn pop_to_session(&mut self) -> Option<Bytes> {
        None
    }

    /// When [`Transcoder::on_timeout`] wants calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn on_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// The connection ended: every stream's worker frees its context.
    pub fn close(&mut self) {}

    /// The `proxy.video` part of an `info-response`.
    pub fn info(&self, now: Instant) -> Value {
        let _ = now;
        Value::Dict(Vec::new())
    }
}
