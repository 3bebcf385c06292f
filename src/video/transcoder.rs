//! The sans-IO transcoding state of one connection.
//!
//! The session (restricted to raw rgb by [`super::caps::restrict_upstream_hello`])
//! draws rectangles; the transcoder collects each window's rectangles into
//! server batches (until a draw whose `flush` option is absent or 0), hands
//! one [`Job`] per batch to the [`JobSink`], and turns the workers' [`Done`]s
//! into `draw` packets for the client (h264 frames or lossless rgb), with
//! sequence numbers of its own. The client acks those
//! (`damage-sequence`); the transcoder consumes the acks and acks, to the
//! session, every session draw the acked packet stands for, with the
//! client's decode time, so the session paces itself by the client.
//!
//! # Video or lossless, per window
//!
//! A batch becomes an h264 frame when, over the last second
//! ([`RATE_WINDOW`]), the window had at least [`VIDEO_ENTER_BATCHES`]
//! batches whose changed area averaged at least [`VIDEO_ENTER_AREA_PCT`]%
//! of the window, and the window is at least [`VIDEO_MIN_PIXELS`] large;
//! once on video it stays there while it keeps [`VIDEO_KEEP_BATCHES`]
//! batches a second covering [`VIDEO_KEEP_AREA_PCT`]% (hysteresis). Other
//! batches go lossless (an idle or typing terminal: a few small batches a
//! second). Switching to video starts a new stream (`reset`: the client
//! sees `frame=0`). Leaving video, or [`VIDEO_QUIET`] without a batch while
//! on video, sends one [`Mode::Refresh`] (the whole window lossless from the
//! worker's framebuffer) and an `eos`, so the client ends on exact pixels.
//!
//! # Degrading
//!
//! At most [`MAX_IN_FLIGHT`] jobs per window are with the workers; further
//! batches are merged into the pending rectangles (rectangles a later one
//! covers are dropped: frame skipping). A full worker queue
//! ([`SubmitError::Full`]) keeps the rectangles pending and retries after
//! [`RETRY_AFTER`] or with the next batch. Beyond the pending bound (twice
//! the window's framebuffer, at least [`PENDING_MIN_BYTES`]) the pending
//! rectangles are dropped, their draws acked at once (decode time 0) and the
//! session asked for a full repaint (`buffer-refresh`). A failed job acks
//! its draws and asks for a repaint; [`MAX_FAILURES`] failures in a row, no
//! worker at all ([`SubmitError::NoWorker`]), a draw the proxy cannot apply
//! (not raw rgb, out of bounds, compressed with lzo) or a window growing
//! past the client's video size make the window *raw* for the rest of its
//! life: its draws go to the client as they came, re-sequenced (there is no
//! worker to make lossless rectangles either), and its stream is closed.
//!
//! Windows beyond [`MAX_WINDOWS`] per connection, or created larger than
//! the transcoded size, are not tracked: their draws and acks are relayed
//! as they are.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proxy::Verdict;
use crate::wire::frame::{Limits, Record, DEFAULT_MAX_PAYLOAD};
use crate::wire::header::Encoder;
use crate::wire::packet::{Assembler, PacketError};
use crate::wire::peek::PacketType;
use crate::wire::value::DEFAULT_MAX_VALUES;
use crate::wire::{DecodeLimits, Value};

use super::caps::{ClientVideo, MAX_VIDEO_SIZE};
use super::draw::{self, Ack, SessionDraw};
use super::job::{
    Done, Job, JobError, JobSink, Mode, Output, Rect, RgbRect, StreamKey, SubmitError,
};

/// Packet types the session-to-client direction hands to the transcoder.
pub const SESSION_TYPES: &[&str] = &[
    "draw",
    "new-window",
    "new-override-redirect",
    "new-tray",
    "window-resized",
    "window-move-resize",
    "configure-override-redirect",
    "lost-window",
];
/// Packet types the client-to-session direction hands to the transcoder.
pub const CLIENT_TYPES: &[&str] = &[
    "damage-sequence",
    "map-window",
    "configure-window",
    "buffer-refresh",
];

/// Windows tracked per connection; later ones are relayed as they are.
pub const MAX_WINDOWS: usize = 64;
/// Jobs of one window with the workers at once.
pub const MAX_IN_FLIGHT: usize = 2;
/// Client packets of one window awaiting the client's ack; beyond, the
/// oldest is acked to the session at once (decode time 0).
pub const MAX_UNACKED: usize = 256;
/// Raw draws of one window waiting behind a job still with the workers.
pub const MAX_RAW_WAITING: usize = 4;
/// Pending rectangles (and the draws they stand for) of one window, at
/// most.
pub const MAX_PENDING_RECTS: usize = 1024;
/// The pending bound never goes below this (bytes of pixels).
pub const PENDING_MIN_BYTES: usize = 8 << 20;
/// A batch whose last draw (`flush=0`) has not come after this is taken as
/// ended (xpra drops cancelled draws, so the last one may never come).
pub const BATCH_OPEN_MAX: Duration = Duration::from_millis(100);
/// After a full queue, the next try.
pub const RETRY_AFTER: Duration = Duration::from_millis(20);
/// A job without an answer after this is taken as lost.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(3);
/// The update rate is measured over this.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Batches per [`RATE_WINDOW`] to switch a window to video...
pub const VIDEO_ENTER_BATCHES: usize = 10;
/// ... covering on average this much of the window (percent).
pub const VIDEO_ENTER_AREA_PCT: u64 = 10;
/// Batches per [`RATE_WINDOW`] to stay on video...
pub const VIDEO_KEEP_BATCHES: usize = 5;
/// ... covering on average this much of the window (percent).
pub const VIDEO_KEEP_AREA_PCT: u64 = 5;
/// Windows smaller than this (pixels) stay lossless.
pub const VIDEO_MIN_PIXELS: u64 = 128 * 128;
/// No batch for this long while on video: a lossless refresh.
pub const VIDEO_QUIET: Duration = Duration::from_millis(750);
/// Failed jobs in a row that make a window raw.
pub const MAX_FAILURES: u32 = 3;

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

/// A session draw a client packet stands for: what its ack says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DrawRef {
    seq: i64,
    w: i64,
    h: i64,
}

/// What a window does with its draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Transcode,
    /// Forwarded as they came, re-sequenced.
    Raw,
}

/// Client packets in the making, in the window's order: a job with the
/// workers, or packets ready to go.
#[derive(Debug)]
struct Slot {
    /// The job's batch number (`None`: packets made here).
    batch: Option<u64>,
    submitted: Instant,
    /// The session draws this slot's last packet stands for.
    draws: Vec<DrawRef>,
    /// The packets (sequence numbers unset), once there.
    out: Option<Vec<Vec<Value>>>,
    /// An `eos` follows (a refresh that ends a video stream).
    eos_after: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct WinStats {
    draws: u64,
    batches: u64,
    jobs: u64,
    frames: u64,
    refreshes: u64,
    bytes_in: u64,
    bytes_out: u64,
    packets_out: u64,
    dropped: u64,
    full: u64,
    errors: u64,
    raw: u64,
}

#[derive(Debug)]
struct Win {
    key: StreamKey,
    width: u32,
    height: u32,
    route: Route,
    raw_reason: Option<String>,
    /// The last job was video.
    video: bool,
    /// The next video job starts a new stream.
    fresh_stream: bool,
    stream_start: Option<Instant>,
    /// `sink.close` was called for it.
    stream_closed: bool,
    pending: Vec<Rect>,
    pending_draws: Vec<DrawRef>,
    pending_bytes: usize,
    /// A batch began (a draw with `flush > 0`) and has not ended.
    batch_open: Option<Instant>,
    /// Area drawn in the current batch.
    batch_area: u64,
    /// A lossless refresh is owed (video went quiet).
    refresh_due: bool,
    retry_at: Option<Instant>,
    slots: VecDeque<Slot>,
    /// Client sequence number -> the session draws it stands for.
    sent: BTreeMap<u64, Vec<DrawRef>>,
    next_seq: u64,
    /// Ended batches: when, and their area.
    history: VecDeque<(Instant, u64)>,
    last_batch: Option<Instant>,
    failures: u32,
    st: WinStats,
}

/// Everything but the windows (borrowed beside them).
struct Io {
    cfg: TranscodeConfig,
    sink: Box<dyn JobSink>,
    reply: tokio::sync::mpsc::UnboundedSender<Done>,
    to_client: VecDeque<(u64, Vec<Record>)>,
    to_session: VecDeque<Bytes>,
    next_batch: u64,
    totals: Totals,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    windows: u64,
    untracked_draws: u64,
    decode_errors: u64,
    late_dones: u64,
    acks_in: u64,
    acks_out: u64,
    refresh_requests: u64,
}

/// One connection's transcoding.
pub struct Transcoder {
    io: Io,
    windows: BTreeMap<u64, Win>,
    limits: Limits,
    /// Bytes per [`Win::pending`] rectangle are bounded by this too.
    max_w: u32,
    max_h: u32,
    closed: bool,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("cfg", &self.io.cfg)
            .field("windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

/// Limits for the session packets decoded here: a draw's pixels are at most
/// a 4096x4096 BGRX frame.
fn session_limits() -> Limits {
    let frame = (MAX_VIDEO_SIZE as usize) * (MAX_VIDEO_SIZE as usize) * 4;
    let max_decompressed = frame + (1 << 20);
    Limits {
        max_payload: DEFAULT_MAX_PAYLOAD,
        max_decompressed,
        decode: DecodeLimits {
            max_values: DEFAULT_MAX_VALUES,
            max_bytes: max_decompressed,
            ..DecodeLimits::default()
        },
        ..Limits::default()
    }
}

fn covers(a: &Rect, b: &Rect) -> bool {
    let (ax2, ay2) = (
        u64::from(a.x) + u64::from(a.w),
        u64::from(a.y) + u64::from(a.h),
    );
    let (bx2, by2) = (
        u64::from(b.x) + u64::from(b.w),
        u64::from(b.y) + u64::from(b.h),
    );
    a.x <= b.x && a.y <= b.y && ax2 >= bx2 && ay2 >= by2
}

/// One small packet, as one buffer.
fn plain(items: &[Value], encoder: Encoder) -> Result<Bytes, PacketError> {
    crate::proxy::encode_items(items, encoder).map(bytes::BytesMut::freeze)
}

impl Io {
    fn ack(&mut self, wid: u64, draws: &[DrawRef], decode_time: i64, message: &str) {
        for d in draws {
            let items = draw::damage_sequence(d.seq, wid, d.w, d.h, decode_time, message);
            match plain(&items, self.cfg.encoder) {
                Ok(r) => {
                    self.totals.acks_out += 1;
                    self.to_session.push_back(r);
                }
                Err(e) => tracing::warn!(target: "xfwd::video", wid, "cannot encode an ack: {e}"),
            }
        }
    }

    fn buffer_refresh(&mut self, wid: u64) {
        match plain(&draw::buffer_refresh(wid), self.cfg.encoder) {
            Ok(r) => {
                self.totals.refresh_requests += 1;
                self.to_session.push_back(r);
            }
            Err(e) => {
                tracing::warn!(target: "xfwd::video", wid, "cannot encode a buffer-refresh: {e}")
            }
        }
    }
}

impl Win {
    fn new(key: StreamKey, width: u32, height: u32) -> Win {
        Win {
            key,
            width,
            height,
            route: Route::Transcode,
            raw_reason: None,
            video: false,
            fresh_stream: true,
            stream_start: None,
            stream_closed: false,
            pending: Vec::new(),
            pending_draws: Vec::new(),
            pending_bytes: 0,
            batch_open: None,
            batch_area: 0,
            refresh_due: false,
            retry_at: None,
            slots: VecDeque::new(),
            sent: BTreeMap::new(),
            next_seq: 1,
            history: VecDeque::new(),
            last_batch: None,
            failures: 0,
            st: WinStats::default(),
        }
    }

    fn wid(&self) -> u64 {
        self.key.wid
    }

    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.out.is_none()).count()
    }

    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    fn pending_bound(&self) -> usize {
        let frame = usize::try_from(self.area())
            .unwrap_or(usize::MAX)
            .saturating_mul(4);
        frame.saturating_mul(2).max(PENDING_MIN_BYTES)
    }

    fn mode_name(&self) -> &'static str {
        match (self.route, self.video) {
            (Route::Raw, _) => "raw",
            (_, true) => "video",
            (_, false) => "lossless",
        }
    }

    /// Ended batches in the last [`RATE_WINDOW`], and their mean area.
    fn rate(&self, now: Instant) -> (usize, u64) {
        let recent = self
            .history
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= RATE_WINDOW);
        let (n, sum) = recent.fold((0usize, 0u64), |(n, s), (_, a)| (n + 1, s + a));
        (n, if n == 0 { 0 } else { sum / n as u64 })
    }

    fn prune_history(&mut self, now: Instant) {
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.history.pop_front();
        }
    }

    /// The mode of the next job (see the module doc).
    fn decide(&mut self, now: Instant, client: &ClientVideo) -> Mode {
        self.prune_history(now);
        let (n, mean) = self.rate(now);
        let area = self.area();
        let eligible = area >= VIDEO_MIN_PIXELS
            && self.width <= client.max_width
            && self.height <= client.max_height;
        let (need_n, need_pct) = if self.video {
            (VIDEO_KEEP_BATCHES, VIDEO_KEEP_AREA_PCT)
        } else {
            (VIDEO_ENTER_BATCHES, VIDEO_ENTER_AREA_PCT)
        };
        let want_video =
            eligible && !self.refresh_due && n >= need_n && mean * 100 >= area * need_pct;
        if want_video {
            Mode::Video {
                reset: self.fresh_stream || !self.video,
                csc: client.csc,
                quality: client.quality,
                speed: client.speed,
            }
        } else if self.video || self.refresh_due {
            Mode::Refresh {
                format: client.rgb_format,
                lz4: client.lz4,
            }
        } else {
            Mode::Lossless {
                format: client.rgb_format,
                lz4: client.lz4,
            }
        }
    }

    fn end_batch(&mut self, now: Instant) {
        self.batch_open = None;
        let area = self.batch_area.min(self.area());
        self.batch_area = 0;
        self.prune_history(now);
        self.history.push_back((now, area));
        // bounded however fast the batches come
        if self.history.len() > 1024 {
            self.history.pop_front();
        }
        self.last_batch = Some(now);
        self.st.batches += 1;
    }

    fn add_pending(&mut self, rect: Rect, d: DrawRef) {
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|r| {
            let keep = !covers(&rect, r);
            if !keep {
                freed += r.pixels.len();
            }
            keep
        });
        if self.pending.len() != before {
            self.st.dropped += (before - self.pending.len()) as u64;
        }
        self.pending_bytes = self.pending_bytes.saturating_sub(freed) + rect.pixels.len();
        self.batch_area += u64::from(rect.w) * u64::from(rect.h);
        self.pending.push(rect);
        self.pending_draws.push(d);
    }

    /// Beyond the bound: the pending draws are acked at once, the session
    /// repaints the window.
    fn drop_pending(&mut self, io: &mut Io, why: &str) {
        tracing::debug!(
            target: "xfwd::video",
            wid = self.wid(),
            rects = self.pending.len(),
            bytes = self.pending_bytes,
            "dropping pending rectangles ({why}), asking for a repaint"
        );
        self.st.dropped += self.pending.len() as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        let draws = std::mem::take(&mut self.pending_draws);
        io.ack(self.wid(), &draws, 0, "");
        io.buffer_refresh(self.wid());
    }

    /// The window's draws go to the client as they came from now on: what
    /// is pending goes first, as rgb draws.
    fn go_raw(&mut self, io: &mut Io, reason: String, now: Instant) {
        if self.route == Route::Raw {
            return;
        }
        tracing::info!(target: "xfwd::video", wid = self.wid(), "window relayed without transcoding: {reason}");
        self.route = Route::Raw;
        self.raw_reason = Some(reason);
        self.video = false;
        self.batch_open = None;
        self.refresh_due = false;
        self.retry_at = None;
        let rects = std::mem::take(&mut self.pending);
        let mut draws = std::mem::take(&mut self.pending_draws);
        self.pending_bytes = 0;
        let n = rects.len();
        for (i, r) in rects.into_iter().enumerate() {
            let rgb = RgbRect {
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                stride: r.stride,
                format: r.format,
                lz4: false,
                data: r.pixels,
            };
            let slot_draws = if i + 1 == n {
                std::mem::take(&mut draws)
            } else {
                Vec::new()
            };
            self.push_ready(vec![draw::rgb_draw(self.wid(), &rgb)], slot_draws, now);
        }
        if !draws.is_empty() {
            io.ack(self.wid(), &draws, 0, "");
        }
    }

    fn push_ready(&mut self, out: Vec<Vec<Value>>, draws: Vec<DrawRef>, now: Instant) {
        self.slots.push_back(Slot {
            batch: None,
            submitted: now,
            draws,
            out: Some(out),
            eos_after: false,
        });
    }

    /// Submits what is pending when a batch has ended (or a refresh is
    /// owed) and the window has room with the workers. After a full queue
    /// it is tried again with the next batch, the next answer, or at
    /// `retry_at`.
    fn try_submit(&mut self, io: &mut Io, now: Instant) {
        if self.route != Route::Transcode
            || self.batch_open.is_some()
            || self.in_flight() >= MAX_IN_FLIGHT
            || (self.pending.is_empty() && !self.refresh_due)
        {
            return;
        }
        let mode = self.decide(now, &io.cfg.client);
        let batch = io.next_batch;
        let job = Job {
            key: self.key,
            batch,
            width: self.width,
            height: self.height,
            rects: std::mem::take(&mut self.pending),
            mode,
            submitted: now,
            reply: io.reply.clone(),
        };
        match io.sink.submit(job) {
            Ok(()) => {
                io.next_batch += 1;
                self.retry_at = None;
                self.pending_bytes = 0;
                self.st.jobs += 1;
                let mut eos_after = false;
                match mode {
                    Mode::Video { reset, .. } => {
                        if reset {
                            self.fresh_stream = false;
                            self.stream_start = Some(now);
                        }
                        self.video = true;
                    }
                    Mode::Refresh { .. } => {
                        eos_after = self.video;
                        self.video = false;
                        self.refresh_due = false;
                        self.fresh_stream = true;
                        self.st.refreshes += 1;
                    }
                    Mode::Lossless { .. } => {}
                }
                self.slots.push_back(Slot {
                    batch: Some(batch),
                    submitted: now,
                    draws: std::mem::take(&mut self.pending_draws),
                    out: None,
                    eos_after,
                });
            }
            Err(SubmitError::Full(job)) => {
                self.pending = job.rects;
                self.retry_at = Some(now + RETRY_AFTER);
                self.st.full += 1;
            }
            Err(SubmitError::NoWorker(job)) => {
                self.pending = job.rects;
                self.go_raw(io, "no encoder worker".into(), now);
            }
        }
    }

    /// Sends the slots that are ready, in order.
    fn release(&mut self, io: &mut Io) {
        while self.slots.front().is_some_and(|s| s.out.is_some()) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            let mut out = slot.out.unwrap_or_default();
            if slot.eos_after {
                out.push(draw::eos(self.wid()));
            }
            let draws_total = out.iter().filter(|p| is_draw(p)).count();
            let mut nth = 0;
            let mut last = None;
            for mut items in out {
                if is_draw(&items) {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    draw::set_seq(&mut items, seq);
                    if draws_total > 1 {
                        draw::set_flush(&mut items, draws_total - 1 - nth);
                    }
                    nth += 1;
                    last = Some(seq);
                }
                match draw::encode(&items, io.cfg.encoder) {
                    Ok(records) => {
                        self.st.bytes_out +=
                            records.iter().map(|r| r.wire_len() as u64).sum::<u64>();
                        self.st.packets_out += 1;
                        io.to_client.push_back((self.wid(), records));
                    }
                    Err(e) => {
                        tracing::warn!(target: "xfwd::video", wid = self.wid(), "cannot encode a draw: {e}");
                    }
                }
            }
            match last {
                Some(seq) => {
                    self.sent.insert(seq, slot.draws);
                    while self.sent.len() > MAX_UNACKED {
                        if let Some((_, old)) = self.sent.pop_first() {
                            io.ack(self.wid(), &old, 0, "");
                        }
                    }
                }
                None => io.ack(self.wid(), &slot.draws, 0, ""),
            }
        }
        if self.route == Route::Raw && !self.stream_closed && self.in_flight() == 0 {
            io.sink.close(self.key);
            self.stream_closed = true;
        }
    }

    /// A job failed (or timed out): its draws are acked, the session
    /// repaints the window.
    fn fail(&mut self, io: &mut Io, idx: usize, err: &JobError, now: Instant) {
        tracing::warn!(target: "xfwd::video", wid = self.wid(), "encoding failed: {err}");
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.out = Some(Vec::new());
            slot.eos_after = false;
        }
        self.st.errors += 1;
        self.failures += 1;
        self.fresh_stream = true;
        if matches!(err, JobError::Lost { .. }) {
            self.video = false;
        }
        io.buffer_refresh(self.wid());
        if self.failures >= MAX_FAILURES {
            self.go_raw(
                io,
                format!("{} encoding failures in a row", self.failures),
                now,
            );
        }
    }

    fn on_output(&mut self, idx: usize, output: Output, submitted: Instant) {
        let wid = self.wid();
        let out = match output {
            Output::Video {
                width,
                height,
                data,
                frame,
                keyframe,
                csc,
                encoder: _,
                edges,
            } => {
                if frame == 0 {
                    self.stream_start = Some(submitted);
                }
                let pts = self
                    .stream_start
                    .map(|s| submitted.saturating_duration_since(s).as_millis())
                    .and_then(|ms| u64::try_from(ms).ok())
                    .unwrap_or(0);
                self.st.frames += 1;
                let mut out = vec![draw::video_draw(
                    wid, width, height, data, frame, pts, keyframe, csc,
                )];
                out.extend(edges.iter().map(|r| draw::rgb_draw(wid, r)));
                out
            }
            Output::Rgb(rects) => rects
                .iter()
                .filter(|r| r.w > 0 && r.h > 0)
                .map(|r| draw::rgb_draw(wid, r))
                .collect(),
        };
        self.failures = 0;
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.out = Some(out);
        }
    }

    /// Everything outstanding acked (decode time 0), the stream closed.
    fn finish(&mut self, io: &mut Io) {
        let mut all = std::mem::take(&mut self.pending_draws);
        for s in self.slots.drain(..) {
            all.extend(s.draws);
        }
        for (_, d) in std::mem::take(&mut self.sent) {
            all.extend(d);
        }
        io.ack(self.wid(), &all, 0, "");
        self.pending.clear();
        if !self.stream_closed {
            io.sink.close(self.key);
            self.stream_closed = true;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |d: Instant| t = Some(t.map_or(d, |t| t.min(d)));
        if let Some(open) = self.batch_open {
            at(open + BATCH_OPEN_MAX);
        }
        if self.route == Route::Transcode {
            if self.video && !self.refresh_due {
                if let Some(last) = self.last_batch {
                    at(last + VIDEO_QUIET);
                }
            }
            if let Some(r) = self.retry_at {
                if !self.pending.is_empty() || self.refresh_due {
                    at(r);
                }
            }
        }
        for s in &self.slots {
            if s.out.is_none() {
                at(s.submitted + JOB_TIMEOUT);
            }
        }
        t
    }

    fn info(&self, now: Instant) -> Value {
        let (rate, _) = self.rate(now);
        let st = self.st;
        let mut d = vec![
            ("mode", Value::from(self.mode_name())),
            (
                "size",
                Value::List(vec![
                    Value::Int(i64::from(self.width)),
                    Value::Int(i64::from(self.height)),
                ]),
            ),
            ("batches-per-second", Value::uint(rate as u64)),
            ("draws", Value::uint(st.draws)),
            ("batches", Value::uint(st.batches)),
            ("jobs", Value::uint(st.jobs)),
            ("frames", Value::uint(st.frames)),
            ("refreshes", Value::uint(st.refreshes)),
            ("bytes-in", Value::uint(st.bytes_in)),
            ("bytes-out", Value::uint(st.bytes_out)),
            ("packets-out", Value::uint(st.packets_out)),
            ("pending", Value::uint(self.pending.len() as u64)),
            ("pending-bytes", Value::uint(self.pending_bytes as u64)),
            ("in-flight", Value::uint(self.in_flight() as u64)),
            ("unacked", Value::uint(self.sent.len() as u64)),
            ("dropped", Value::uint(st.dropped)),
            ("queue-full", Value::uint(st.full)),
            ("errors", Value::uint(st.errors)),
            ("raw-draws", Value::uint(st.raw)),
        ];
        if let Some(r) = &self.raw_reason {
            d.push(("raw-reason", Value::from(r.as_str())));
        }
        Value::Dict(d.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
    }
}

fn is_draw(items: &[Value]) -> bool {
    items.first().and_then(Value::as_str) == Some("draw")
}

impl Transcoder {
    /// `reply`: where workers send their [`Done`]s (the engine awaits the
    /// other end and calls [`Transcoder::on_done`]).
    pub fn new(
        cfg: TranscodeConfig,
        sink: Box<dyn JobSink>,
        reply: tokio::sync::mpsc::UnboundedSender<Done>,
    ) -> Transcoder {
        let max_w = cfg.client.max_width.clamp(1, MAX_VIDEO_SIZE);
        let max_h = cfg.client.max_height.clamp(1, MAX_VIDEO_SIZE);
        Transcoder {
            io: Io {
                cfg,
                sink,
                reply,
                to_client: VecDeque::new(),
                to_session: VecDeque::new(),
                next_batch: 0,
                totals: Totals::default(),
            },
            windows: BTreeMap::new(),
            limits: session_limits(),
            max_w,
            max_h,
            closed: false,
        }
    }

    fn assemble(&mut self, chunks: &[Record], record: &Record) -> Option<Vec<Value>> {
        let mut a = Assembler::new();
        let r = chunks
            .iter()
            .try_for_each(|c| a.push(c, &self.limits).map(|_| ()))
            .and_then(|()| a.push(record, &self.limits));
        match r {
            Ok(Some(p)) => Some(p.items),
            Ok(None) => None,
            Err(e) => {
                self.io.totals.decode_errors += 1;
                tracing::warn!(target: "xfwd::video", "cannot decode a packet, relayed as it is: {e}");
                None
            }
        }
    }

    fn fits(&self, w: i64, h: i64) -> Option<(u32, u32)> {
        let w = u32::try_from(w)
            .ok()
            .filter(|w| (1..=self.max_w).contains(w))?;
        let h = u32::try_from(h)
            .ok()
            .filter(|h| (1..=self.max_h).contains(h))?;
        Some((w, h))
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
        let Some(name) = ptype.name() else {
            return Verdict::Forward;
        };
        if self.closed || !SESSION_TYPES.contains(&name) {
            return Verdict::Forward;
        }
        let name = name.to_owned();
        let Some(items) = self.assemble(chunks, record) else {
            return Verdict::Forward;
        };
        match name.as_str() {
            "draw" => self.session_draw(items, now),
            "lost-window" => {
                if let Some(wid) = draw::wid_of(&items) {
                    self.lost(wid);
                }
                Verdict::Forward
            }
            other => {
                if let Some((wid, w, h)) = draw::geometry(other, &items) {
                    let new = other.starts_with("new-");
                    self.geometry(wid, w, h, new);
                }
                Verdict::Forward
            }
        }
    }

    fn geometry(&mut self, wid: u64, w: i64, h: i64, new: bool) {
        let fits = self.fits(w, h);
        if let Some(win) = self.windows.get_mut(&wid) {
            if let Some((w, h)) = fits {
                win.width = w;
                win.height = h;
            }
            return;
        }
        if !new {
            return;
        }
        match fits {
            Some((w, h)) if self.windows.len() < MAX_WINDOWS => {
                let key = StreamKey {
                    shard: self.io.cfg.shard,
                    conn: self.io.cfg.conn,
                    wid,
                };
                self.io.totals.windows += 1;
                self.windows.insert(wid, Win::new(key, w, h));
            }
            _ => tracing::debug!(
                target: "xfwd::video",
                wid,
                "window {w}x{h} not transcoded (size or window count)"
            ),
        }
    }

    fn lost(&mut self, wid: u64) {
        if let Some(mut win) = self.windows.remove(&wid) {
            win.finish(&mut self.io);
            self.io.to_client.retain(|(w, _)| *w != wid);
        }
    }

    fn session_draw(&mut self, items: Vec<Value>, now: Instant) -> Verdict {
        let d = match SessionDraw::parse(&items) {
            Ok(d) => d,
            Err(e) => {
                self.io.totals.decode_errors += 1;
                tracing::warn!(target: "xfwd::video", "{e}; relayed as it is");
                return Verdict::Forward;
            }
        };
        let (max_w, max_h) = (self.max_w, self.max_h);
        let Some(win) = self.windows.get_mut(&d.wid) else {
            self.io.totals.untracked_draws += 1;
            return Verdict::Forward;
        };
        let io = &mut self.io;
        win.st.draws += 1;
        win.st.bytes_in += d.data.len() as u64;
        let dref = DrawRef {
            seq: d.seq,
            w: d.w,
            h: d.h,
        };
        if win.route == Route::Transcode {
            match d.to_rect(max_w, max_h) {
                Ok(rect) => {
                    let (x2, y2) = (rect.x + rect.w, rect.y + rect.h);
                    win.width = win.width.max(x2);
                    win.height = win.height.max(y2);
                    win.add_pending(rect, dref);
                    if d.flush() > 0 {
                        win.batch_open.get_or_insert(now);
                    } else {
                        win.end_batch(now);
                    }
                    // Rectangles covered by later ones are dropped, their
                    // draws are not: bound both.
                    if win.pending_bytes > win.pending_bound()
                        || win.pending.len() > MAX_PENDING_RECTS
                        || win.pending_draws.len() > MAX_PENDING_RECTS
                    {
                        win.drop_pending(io, "pending bound");
                    }
                    win.try_submit(io, now);
                    win.release(io);
                    return Verdict::Drop;
                }
                Err(why) => win.go_raw(io, why.to_string(), now),
            }
        }
        // raw: as it came, with a sequence number of ours; behind a job
        // still with the workers at most a few wait (pixels, each up to a
        // whole frame): more are acked as skipped and the window repainted
        // once the job is answered.
        win.st.raw += 1;
        if win.slots.len() >= MAX_RAW_WAITING {
            win.st.dropped += 1;
            io.ack(win.wid(), &[dref], 0, "");
            io.buffer_refresh(win.wid());
            return Verdict::Drop;
        }
        win.push_ready(vec![items], vec![dref], now);
        win.release(io);
        Verdict::Drop
    }

    /// A packet from the client of a type in [`CLIENT_TYPES`].
    pub fn on_client_packet(
        &mut self,
        chunks: &[Record],
        record: &Record,
        ptype: &PacketType,
        now: Instant,
    ) -> Verdict {
        let _ = now;
        let Some(name) = ptype.name() else {
            return Verdict::Forward;
        };
        if self.closed || !CLIENT_TYPES.contains(&name) {
            return Verdict::Forward;
        }
        let name = name.to_owned();
        let Some(mut items) = self.assemble(chunks, record) else {
            return Verdict::Forward;
        };
        if name == "damage-sequence" {
            return self.client_ack(&items);
        }
        if let Some((wid, w, h)) = draw::geometry(&name, &items) {
            self.geometry(wid, w, h, false);
        }
        let changed = draw::props_index(&name)
            .and_then(|i| items.get_mut(i))
            .is_some_and(draw::filter_window_props);
        if !changed {
            return Verdict::Forward;
        }
        match plain(&items, self.io.cfg.encoder) {
            Ok(b) => Verdict::Replace(b),
            Err(e) => {
                tracing::warn!(target: "xfwd::video", "cannot re-encode {name}: {e}; relayed as it is");
                Verdict::Forward
            }
        }
    }

    fn client_ack(&mut self, items: &[Value]) -> Verdict {
        let Some(ack) = Ack::parse(items) else {
            return Verdict::Forward;
        };
        let Some(win) = self.windows.get_mut(&ack.wid) else {
            return Verdict::Forward;
        };
        self.io.totals.acks_in += 1;
        let draws = u64::try_from(ack.seq)
            .ok()
            .and_then(|s| win.sent.remove(&s));
        if let Some(draws) = draws {
            if ack.decode_time < 0 {
                // the client's decoder may be out of step: a new stream
                win.fresh_stream = true;
            }
            self.io.ack(ack.wid, &draws, ack.decode_time, &ack.message);
        }
        Verdict::Drop
    }

    /// A worker's answer.
    pub fn on_done(&mut self, done: Done, now: Instant) {
        let Some(win) = self.windows.get_mut(&done.key.wid) else {
            self.io.totals.late_dones += 1;
            return;
        };
        let io = &mut self.io;
        let found = win
            .slots
            .iter()
            .position(|s| s.batch == Some(done.batch) && s.out.is_none());
        let Some(idx) = found.filter(|_| done.key == win.key) else {
            io.totals.late_dones += 1;
            return;
        };
        match done.result {
            Ok(output) => win.on_output(idx, output, done.submitted),
            Err(e) => win.fail(io, idx, &e, now),
        }
        win.release(io);
        win.try_submit(io, now);
        win.release(io);
    }

    /// The next whole packet for the client (encoded frames, in order), as
    /// its records' headers and payloads, for a vectored write (not
    /// copied; every part belongs to the same packet).
    pub fn pop_to_client_parts(&mut self) -> Option<Vec<Bytes>> {
        let (_, records) = self.io.to_client.pop_front()?;
        let mut parts = Vec::with_capacity(records.len() * 2);
        for r in records {
            parts.push(Bytes::copy_from_slice(&r.header.to_bytes()));
            parts.push(r.payload);
        }
        Some(parts)
    }

    /// Whole packets for the session (acks, refresh requests), in order.
    pub fn pop_to_session(&mut self) -> Option<Bytes> {
        self.io.to_session.pop_front()
    }

    /// When [`Transcoder::on_timeout`] wants calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.windows.values().filter_map(Win::next_deadline).min()
    }

    pub fn on_timeout(&mut self, now: Instant) {
        let io = &mut self.io;
        for win in self.windows.values_mut() {
            if win.batch_open.is_some_and(|t| t + BATCH_OPEN_MAX <= now) {
                win.end_batch(now);
            }
            if win.route == Route::Transcode
                && win.video
                && !win.refresh_due
                && win.last_batch.is_some_and(|t| t + VIDEO_QUIET <= now)
            {
                win.refresh_due = true;
            }
            let expired: Vec<usize> = win
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.out.is_none() && s.submitted + JOB_TIMEOUT <= now)
                .map(|(i, _)| i)
                .collect();
            for idx in expired {
                let err = JobError::Lost {
                    worker: usize::MAX,
                    reason: "no answer".into(),
                };
                win.fail(io, idx, &err, now);
            }
            win.release(io);
            win.try_submit(io, now);
            win.release(io);
        }
    }

    /// The connection ended: every stream's worker frees its context.
    pub fn close(&mut self) {
        for (_, win) in std::mem::take(&mut self.windows) {
            if !win.stream_closed {
                self.io.sink.close(win.key);
            }
        }
        self.io.to_client.clear();
        self.closed = true;
    }

    /// The `proxy.video` part of an `info-response`.
    pub fn info(&self, now: Instant) -> Value {
        let mut windows = Vec::new();
        let mut sum = WinStats::default();
        let mut modes = [0u64; 3];
        for (wid, win) in &self.windows {
            let v = win.info(now);
            windows.push((Value::from(wid.to_string()), v));
            let s = win.st;
            sum.frames += s.frames;
            sum.batches += s.batches;
            sum.draws += s.draws;
            sum.bytes_in += s.bytes_in;
            sum.bytes_out += s.bytes_out;
            sum.dropped += s.dropped;
            sum.full += s.full;
            sum.errors += s.errors;
            modes[match win.mode_name() {
                "video" => 0,
                "lossless" => 1,
                _ => 2,
            }] += 1;
        }
        let t = self.io.totals;
        let totals = vec![
            ("windows", Value::uint(self.windows.len() as u64)),
            ("windows-seen", Value::uint(t.windows)),
            ("video-windows", Value::uint(modes[0])),
            ("lossless-windows", Value::uint(modes[1])),
            ("raw-windows", Value::uint(modes[2])),
            ("draws", Value::uint(sum.draws)),
            ("batches", Value::uint(sum.batches)),
            ("frames", Value::uint(sum.frames)),
            ("bytes-in", Value::uint(sum.bytes_in)),
            ("bytes-out", Value::uint(sum.bytes_out)),
            ("dropped", Value::uint(sum.dropped)),
            ("queue-full", Value::uint(sum.full)),
            ("errors", Value::uint(sum.errors)),
            ("untracked-draws", Value::uint(t.untracked_draws)),
            ("decode-errors", Value::uint(t.decode_errors)),
            ("late-answers", Value::uint(t.late_dones)),
            ("client-acks", Value::uint(t.acks_in)),
            ("session-acks", Value::uint(t.acks_out)),
            ("refresh-requests", Value::uint(t.refresh_requests)),
        ];
        let c = &self.io.cfg.client;
        let client = vec![
            ("csc", Value::from(c.csc.name())),
            ("rgb_format", Value::from(c.rgb_format.name())),
            ("lz4", Value::Bool(c.lz4)),
            ("quality", Value::Int(i64::from(c.quality))),
            ("speed", Value::Int(i64::from(c.speed))),
            (
                "max-size",
                Value::List(vec![
                    Value::Int(i64::from(self.max_w)),
                    Value::Int(i64::from(self.max_h)),
                ]),
            ),
        ];
        let dict = |v: Vec<(&str, Value)>| {
            Value::Dict(v.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
        };
        Value::Dict(vec![
            (Value::from("client"), dict(client)),
            (Value::from("totals"), dict(totals)),
            (Value::from("windows"), Value::Dict(windows)),
        ])
    }
}
