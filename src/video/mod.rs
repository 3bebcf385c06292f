//! Video encoding in the proxy (issue 13): GPU-less sessions send raw
//! pixels, xfwd encodes h264 for the client on encoder workers.
//!
//! The pieces, and who calls whom:
//!
//! - [`caps`]: whether a client can decode what the workers make, and the
//!   session's hello restricted to raw `rgb` (no mmap, no scrolling, no
//!   delta, no pixel compression);
//! - [`draw`]: the packets transcoding reads and writes (`draw`,
//!   `damage-sequence`, `map-window`/`configure-window` properties);
//! - [`transcoder`]: the sans-IO per-connection state (windows, batches,
//!   the sequence numbers the client acks and the session's draws they
//!   stand for, the video/lossless choice per window). It runs on the
//!   connection's shard, reads no pixels, and hands [`job::Job`]s to a
//!   [`job::JobSink`];
//! - [`workers`]: the encoder worker threads (one per NVENC device, N for
//!   the CPU). Each keeps, per window, the framebuffer and the encoder
//!   context; the shards reach them through bounded crossbeam queues and
//!   get [`job::Done`]s back on a channel they await;
//! - [`codec`]: the encoder interface the workers drive; [`x264`] (Debian's
//!   libx264, loaded at run time) and [`csc`] (BGRX to YUV) implement it,
//!   [`nvenc`] finds NVIDIA devices and says which have an NVENC engine,
//!   [`avcodec`] encodes on them with FFmpeg's `h264_nvenc` (loaded at run
//!   time, as FFmpeg loads the driver's libraries);
//! - [`choice`] parses `--proxy-video-encoders=auto|none|nvenc,x264,...`.

pub mod avcodec;
pub mod caps;
pub mod choice;
pub mod codec;
pub mod csc;
pub mod draw;
pub mod framebuffer;
pub mod job;
pub mod lossless;
pub mod nvenc;
pub mod transcoder;
pub mod workers;
pub mod x264;

pub use choice::EncoderChoice;
pub use job::{Done, Job, JobSink, Output, StreamKey};
