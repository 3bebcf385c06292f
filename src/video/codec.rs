//! The encoder interface the workers drive: a [`Backend`] opens one
//! [`VideoEncoder`] context per window stream; the context encodes whole
//! frames of a BGRX framebuffer.

use super::job::Csc;

/// What a context encodes: fixed for its life (a new size or sampling is a
/// new context, and the client sees `frame=0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// The encoded size (even for [`Csc::Yuv420p`]).
    pub width: u32,
    pub height: u32,
    pub csc: Csc,
    /// 0..=100, as xpra's (higher: better picture, more bytes).
    pub quality: u8,
    /// 0..=100, as xpra's (higher: faster, more bytes).
    pub speed: u8,
}

/// A frame to encode: the top-left `width` x `height` pixels of a BGRX
/// framebuffer with rows of `stride` bytes. `width`/`height` are the
/// context's ([`EncoderConfig`]); the framebuffer may be larger (its odd
/// edge goes to the client lossless).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub bgrx: &'a [u8],
}

/// One encoded access unit, Annex B (start codes), SPS/PPS included in
/// key frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// Why an encoder could not be had or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The library or device is not there (reported once, at start).
    #[error("{backend} unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// A context could not be opened with this configuration.
    #[error("{backend} cannot open a {width}x{height} {csc:?} context: {reason}")]
    Open {
        backend: &'static str,
        width: u32,
        height: u32,
        csc: Csc,
        reason: String,
    },
    /// Encoding one frame failed; the context is not to be used again.
    #[error("{backend} failed to encode: {reason}")]
    Encode {
        backend: &'static str,
        reason: String,
    },
    /// The frame does not match the context or its buffer is too short.
    #[error("bad frame: {0}")]
    BadFrame(String),
}

/// One encoder context (one window stream). Lives on one worker thread.
pub trait VideoEncoder: Send {
    /// Encodes one frame; `keyframe` forces an IDR.
    fn encode(&mut self, frame: &Frame<'_>, keyframe: bool) -> Result<EncodedFrame, CodecError>;
    fn config(&self) -> &EncoderConfig;
    /// The backend's name (`x264`, `nvenc`), for info and logs.
    fn name(&self) -> &'static str;
}

/// An encoder implementation (a library, a device).
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn open(&self, cfg: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, CodecError>;
    /// The most contexts it can hold at once (consumer NVENC cards cap
    /// concurrent sessions); `None`: no limit but memory.
    fn max_contexts(&self) -> Option<usize> {
        None
    }
}
