//! What travels between a connection's shard and the encoder workers.
//!
//! A [`Job`] is one server batch of one window: the rectangles the session
//! drew (its pixel bytes as they came off the wire, not copied), the window
//! size, and what to make of it. The worker applies the rectangles to the
//! window's framebuffer (which lives on the worker, with the encoder
//! context) and answers with a [`Done`] on the job's reply channel.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// One window of one connection: the key of a framebuffer and an encoder
/// context on a worker. Every job of a stream goes to the same worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub shard: usize,
    pub conn: u64,
    pub wid: u64,
}

/// Pixel layouts of raw `rgb24`/`rgb32` draws (the draw's `rgb_format`;
/// bytes per pixel follow from it, not from the coding name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Bgrx,
    Bgra,
    Rgbx,
    Rgba,
    Rgb,
    Bgr,
}

impl PixelFormat {
    pub fn parse(s: &str) -> Option<PixelFormat> {
        Some(match s {
            "BGRX" => PixelFormat::Bgrx,
            "BGRA" => PixelFormat::Bgra,
            "RGBX" => PixelFormat::Rgbx,
            "RGBA" => PixelFormat::Rgba,
            "RGB" => PixelFormat::Rgb,
            "BGR" => PixelFormat::Bgr,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Bgrx => "BGRX",
            PixelFormat::Bgra => "BGRA",
            PixelFormat::Rgbx => "RGBX",
            PixelFormat::Rgba => "RGBA",
            PixelFormat::Rgb => "RGB",
            PixelFormat::Bgr => "BGR",
        }
    }

    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            _ => 4,
        }
    }

    /// Red comes first in memory (`RGB*`), else blue.
    fn red_first(self) -> bool {
        matches!(
            self,
            PixelFormat::Rgbx | PixelFormat::Rgba | PixelFormat::Rgb
        )
    }
}

/// Converts one row of pixels in `from` into `to`: as many pixels as both
/// slices hold whole. A 4-byte pixel's 4th byte is kept; made from a 3-byte
/// one, it is 0xff.
pub fn convert_row(src: &[u8], from: PixelFormat, dst: &mut [u8], to: PixelFormat) {
    let (sb, db) = (from.bytes_per_pixel(), to.bytes_per_pixel());
    if sb == db && from.red_first() == to.red_first() {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let swap = from.red_first() != to.red_first();
    for (d, s) in dst.chunks_exact_mut(db).zip(src.chunks_exact(sb)) {
        let (c0, c2) = if swap { (s[2], s[0]) } else { (s[0], s[2]) };
        d[0] = c0;
        d[1] = s[1];
        d[2] = c2;
        if db == 4 {
            d[3] = if sb == 4 { s[3] } else { 0xff };
        }
    }
}

/// One rectangle a session drew, as it came: `pixels` holds `h` rows of
/// `stride` bytes (the last row may be just `w * bpp` long), uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub stride: u32,
    pub format: PixelFormat,
    pub pixels: Bytes,
}

/// The colour sampling of an h264 stream (the draw's `csc` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Csc {
    /// 4:2:0 (profile high or lower): even sizes only.
    Yuv420p,
    /// 4:4:4 (profile high444): any size.
    Yuv444p,
}

impl Csc {
    /// The name xpra's `csc` draw option carries.
    pub fn name(self) -> &'static str {
        match self {
            Csc::Yuv420p => "YUV420P",
            Csc::Yuv444p => "YUV444P",
        }
    }
}

/// What the worker makes of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An h264 frame of the whole window. `reset`: start a new encoder
    /// context (the client's decoder resets on `frame=0`); a size change
    /// resets it too, whatever `reset` says. `quality`, `speed`: 0..=100,
    /// as xpra's.
    Video {
        reset: bool,
        csc: Csc,
        quality: u8,
        speed: u8,
    },
    /// The changed rectangles, lossless, in `format`, lz4-compressed when
    /// `lz4` (xpra's `lz4` draw option: the client decompresses).
    Lossless { format: PixelFormat, lz4: bool },
    /// The whole window lossless (a refresh after video went quiet, or
    /// after a context was lost); the batch's rectangles are applied
    /// first.
    Refresh { format: PixelFormat, lz4: bool },
}

/// One server batch of one window, for its worker.
#[derive(Debug)]
pub struct Job {
    pub key: StreamKey,
    /// The transcoder's number for this batch (echoed in [`Done`]).
    pub batch: u64,
    /// The window's size once this batch is applied: the framebuffer is
    /// resized to it (grown further if a rectangle reaches outside: draws
    /// at a new size can come before the resize packet).
    pub width: u32,
    pub height: u32,
    pub rects: Vec<Rect>,
    pub mode: Mode,
    /// When the shard handed the job over (for the added latency).
    pub submitted: Instant,
    /// Where the answer goes.
    pub reply: tokio::sync::mpsc::UnboundedSender<Done>,
}

/// A lossless rectangle for the client: `data` is `h` rows of `stride`
/// bytes in `format` (lz4 block with its 4-byte size prefix when `lz4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub stride: u32,
    pub format: PixelFormat,
    pub lz4: bool,
    pub data: Bytes,
}

/// What a worker made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One h264 access unit (Annex B) of `width` x `height` at (0, 0);
    /// `frame`: its number in the stream (0: a new stream, the client
    /// resets its decoder). `edges`: what the frame could not carry (the
    /// odd column and row of a 4:2:0 frame), lossless.
    Video {
        width: u32,
        height: u32,
        data: Bytes,
        frame: u64,
        keyframe: bool,
        csc: Csc,
        encoder: &'static str,
        edges: Vec<RgbRect>,
    },
    /// Lossless rectangles.
    Rgb(Vec<RgbRect>),
}

/// Why a job was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The encoder failed (the worker dropped the stream's context: the
    /// next job starts a new one from the framebuffer it still has).
    #[error("{encoder} failed: {reason}")]
    Encoder {
        encoder: &'static str,
        reason: String,
    },
    /// The worker lost the stream (it died, or the stream was never
    /// there): its framebuffer is gone, the window needs a full repaint
    /// from the session.
    #[error("worker {worker} lost the stream: {reason}")]
    Lost { worker: usize, reason: String },
    /// A rectangle or size the worker refused (bounds).
    #[error("bad batch: {0}")]
    Bad(String),
}

/// A worker's answer to a [`Job`].
#[derive(Debug)]
pub struct Done {
    pub key: StreamKey,
    pub batch: u64,
    pub result: Result<Output, JobError>,
    /// The worker that did it.
    pub worker: usize,
    /// Time in the queue, and time applying and encoding.
    pub queued: Duration,
    pub encode_time: Duration,
    pub submitted: Instant,
}

/// Why a job was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The worker's queue is full: the shard keeps the batch's rectangles
    /// and tries again with the next batch (or degrades).
    #[error("encoder queue full")]
    Full(Box<Job>),
    /// No worker can take it (none running, or all dead).
    #[error("no encoder worker")]
    NoWorker(Box<Job>),
}

/// Where a transcoder hands its jobs: the worker pool in the engine, a
/// vector in tests. Never blocks.
pub trait JobSink {
    fn submit(&mut self, job: Job) -> Result<(), SubmitError>;
    /// The stream ended (window closed, connection ended): its worker frees
    /// the framebuffer and the encoder context.
    fn close(&mut self, key: StreamKey);
}
