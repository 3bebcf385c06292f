//! Encoders of Debian's FFmpeg (`libavcodec.so.59`, `libavutil.so.57`),
//! loaded at run time: NVENC through FFmpeg's `h264_nvenc`, which itself
//! loads the NVIDIA driver's `libcuda.so.1` and `libnvidia-encode.so.1` at
//! run time and follows NVENC's API versions (so xfwd neither links nor
//! declares NVENC's versioned structs). The same code drives FFmpeg's
//! `libx264` encoder, which is how it is tested on machines without an
//! NVENC engine (tests/video_nvenc.rs).
//!
//! The ABI. Everything of the encoder context is set by name, through
//! FFmpeg's AVOptions (`video_size`, `pixel_format`, `time_base`, `g`,
//! `bf`, the encoder's own `preset`, `tune`, `qp`, ...): no field of
//! `AVCodecContext` is written. A frame's size, format, pts and picture
//! type, and a packet's data, size and flags are reached at the offsets of
//! FFmpeg 5.1 (libavutil 57, libavcodec 59), checked when the library is
//! loaded: a new `AVFrame` must hold its documented defaults there
//! (`format` -1, `key_frame` 1, `sample_aspect_ratio` 0/1, `pts` and
//! `pkt_dts` "no value"), a new `AVPacket` too (`pts`, `dts` "no value",
//! `data` null, `size` 0), and a frame given a size and format must get
//! planes and line sizes that fit them. Anything else: the backend is
//! [`CodecError::Unavailable`] with the reason.
//!
//! Why `unsafe`: calling C libraries loaded at run time is FFI; their
//! objects are reached through raw pointers, each owned by one
//! [`VideoEncoder`] that frees them on drop.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Arc;

use super::codec::{Backend, CodecError, EncodedFrame, EncoderConfig, Frame, VideoEncoder};
use super::csc::{self, Yuv, MAX_DIMENSION};
use super::job::Csc;

/// The libraries loaded (Debian 12: libavcodec59, libavutil57).
pub const LIBAVCODEC: &str = "libavcodec.so.59";
pub const LIBAVUTIL: &str = "libavutil.so.57";

/// Offsets in `AVFrame` (libavutil 57).
const FRAME_DATA: usize = 0;
const FRAME_LINESIZE: usize = 64;
const FRAME_WIDTH: usize = 104;
const FRAME_HEIGHT: usize = 108;
const FRAME_FORMAT: usize = 116;
const FRAME_KEY_FRAME: usize = 120;
const FRAME_PICT_TYPE: usize = 124;
const FRAME_SAR: usize = 128;
const FRAME_PTS: usize = 136;
const FRAME_PKT_DTS: usize = 144;
/// Offsets in `AVPacket` (libavcodec 59).
const PACKET_PTS: usize = 8;
const PACKET_DTS: usize = 16;
const PACKET_DATA: usize = 24;
const PACKET_SIZE: usize = 32;
const PACKET_FLAGS: usize = 40;

const AV_NOPTS_VALUE: i64 = i64::MIN;
const AV_PKT_FLAG_KEY: c_int = 1;
const AV_PICTURE_TYPE_NONE: c_int = 0;
const AV_PICTURE_TYPE_I: c_int = 1;
const AV_PIX_FMT_YUV420P: c_int = 0;
const AV_PIX_FMT_YUV444P: c_int = 5;
const AV_LOG_QUIET: c_int = -8;
/// AVERROR(EAGAIN).
const AVERROR_EAGAIN: c_int = -11;
/// `AV_OPT_SEARCH_CHILDREN`: the encoder's own options too.
const SEARCH_CHILDREN: c_int = 1;

type Ptr = *mut c_void;

struct Api {
    find_encoder_by_name: unsafe extern "C" fn(*const c_char) -> *const c_void,
    alloc_context3: unsafe extern "C" fn(*const c_void) -> Ptr,
    free_context: unsafe extern "C" fn(*mut Ptr),
    open2: unsafe extern "C" fn(Ptr, *const c_void, *mut c_void) -> c_int,
    send_frame: unsafe extern "C" fn(Ptr, Ptr) -> c_int,
    receive_packet: unsafe extern "C" fn(Ptr, Ptr) -> c_int,
    packet_alloc: unsafe extern "C" fn() -> Ptr,
    packet_free: unsafe extern "C" fn(*mut Ptr),
    packet_unref: unsafe extern "C" fn(Ptr),
    frame_alloc: unsafe extern "C" fn() -> Ptr,
    frame_free: unsafe extern "C" fn(*mut Ptr),
    frame_get_buffer: unsafe extern "C" fn(Ptr, c_int) -> c_int,
    frame_make_writable: unsafe extern "C" fn(Ptr) -> c_int,
    opt_set: unsafe extern "C" fn(Ptr, *const c_char, *const c_char, c_int) -> c_int,
    strerror: unsafe extern "C" fn(c_int, *mut c_char, usize) -> c_int,
    /// Kept loaded while a context lives (the pointers above point into
    /// them).
    _avcodec: libloading::Library,
    _avutil: libloading::Library,
}

impl Api {
    fn load(avcodec: &str, avutil: &str) -> Result<Api, String> {
        // SAFETY: loading FFmpeg's libraries runs their initialisers, which
        // set up their own tables only; they stay loaded while the `Api`
        // (held by every backend and context made from it) lives.
        let util = unsafe { libloading::Library::new(avutil) }.map_err(|e| {
            format!("{avutil} not found (Debian: apt-get install libavutil57): {e}")
        })?;
        // SAFETY: as above.
        let codec = unsafe { libloading::Library::new(avcodec) }.map_err(|e| {
            format!("{avcodec} not found (Debian: apt-get install libavcodec59): {e}")
        })?;
        macro_rules! sym {
            ($lib:ident, $path:ident, $name:literal) => {{
                // SAFETY: the symbol's type is its declaration in FFmpeg
                // 5.1's headers (the field it is stored in); the library is
                // kept in the same `Api`, so it outlives the copy.
                let s = unsafe { $lib.get($name) }.map_err(|e| {
                    format!(
                        "{}: no {}: {e}",
                        $path,
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?;
                *s
            }};
        }
        let log_set_level: unsafe extern "C" fn(c_int) = sym!(util, avutil, b"av_log_set_level\0");
        // SAFETY: sets FFmpeg's global log level; its logs would go to
        // stderr, unstructured, from worker threads.
        unsafe { log_set_level(AV_LOG_QUIET) };
        Ok(Api {
            find_encoder_by_name: sym!(codec, avcodec, b"avcodec_find_encoder_by_name\0"),
            alloc_context3: sym!(codec, avcodec, b"avcodec_alloc_context3\0"),
            free_context: sym!(codec, avcodec, b"avcodec_free_context\0"),
            open2: sym!(codec, avcodec, b"avcodec_open2\0"),
            send_frame: sym!(codec, avcodec, b"avcodec_send_frame\0"),
            receive_packet: sym!(codec, avcodec, b"avcodec_receive_packet\0"),
            packet_alloc: sym!(codec, avcodec, b"av_packet_alloc\0"),
            packet_free: sym!(codec, avcodec, b"av_packet_free\0"),
            packet_unref: sym!(codec, avcodec, b"av_packet_unref\0"),
            frame_alloc: sym!(util, avutil, b"av_frame_alloc\0"),
            frame_free: sym!(util, avutil, b"av_frame_free\0"),
            frame_get_buffer: sym!(util, avutil, b"av_frame_get_buffer\0"),
            frame_make_writable: sym!(util, avutil, b"av_frame_make_writable\0"),
            opt_set: sym!(util, avutil, b"av_opt_set\0"),
            strerror: sym!(util, avutil, b"av_strerror\0"),
            _avcodec: codec,
            _avutil: util,
        })
    }

    fn error(&self, code: c_int) -> String {
        let mut buf = [0 as c_char; 128];
        // SAFETY: `buf` is writable for its length; av_strerror always
        // NUL-terminates within it.
        unsafe { (self.strerror)(code, buf.as_mut_ptr(), buf.len()) };
        // SAFETY: NUL-terminated above.
        let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        format!("{} ({code})", s.to_string_lossy())
    }
}

/// Reads a `T` at `offset` of an FFmpeg object.
///
/// # Safety
/// `p` points to a live object at least `offset + size_of::<T>()` bytes
/// long (checked by [`verify_layout`] for the offsets used here).
unsafe fn read<T: Copy>(p: Ptr, offset: usize) -> T {
    // SAFETY: the caller's contract; FFmpeg's objects are aligned for
    // their fields, and these offsets are fields'.
    unsafe { std::ptr::read_unaligned(p.cast::<u8>().add(offset).cast::<T>()) }
}

/// Writes a `T` at `offset` of an FFmpeg object.
///
/// # Safety
/// As [`read`], and the field at `offset` is a `T`.
unsafe fn write<T: Copy>(p: Ptr, offset: usize, v: T) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_unaligned(p.cast::<u8>().add(offset).cast::<T>(), v) }
}

/// Checks the offsets used here against what FFmpeg's allocators write.
fn verify_layout(api: &Api) -> Result<(), String> {
    // SAFETY: allocators of FFmpeg that return a new object or null; every
    // read below is within the object (AVFrame is over 400 bytes, AVPacket
    // over 100, in these versions).
    unsafe {
        let mut f = (api.frame_alloc)();
        if f.is_null() {
            return Err("av_frame_alloc failed".into());
        }
        let defaults = (
            read::<c_int>(f, FRAME_FORMAT),
            read::<c_int>(f, FRAME_KEY_FRAME),
            read::<[c_int; 2]>(f, FRAME_SAR),
            read::<i64>(f, FRAME_PTS),
            read::<i64>(f, FRAME_PKT_DTS),
        );
        let ok = defaults == (-1, 1, [0, 1], AV_NOPTS_VALUE, AV_NOPTS_VALUE);
        let planes = if ok {
            write::<c_int>(f, FRAME_WIDTH, 64);
            write::<c_int>(f, FRAME_HEIGHT, 48);
            write::<c_int>(f, FRAME_FORMAT, AV_PIX_FMT_YUV420P);
            let r = (api.frame_get_buffer)(f, 0);
            let data = read::<[*mut u8; 3]>(f, FRAME_DATA);
            let lines = read::<[c_int; 3]>(f, FRAME_LINESIZE);
            r >= 0
                && data.iter().all(|p| !p.is_null())
                && lines[0] >= 64
                && lines[1] >= 32
                && lines[2] >= 32
        } else {
            false
        };
        (api.frame_free)(&mut f);
        if !ok {
            return Err(format!(
                "layout of AVFrame does not match FFmpeg 5.1 (defaults read {defaults:?})"
            ));
        }
        if !planes {
            return Err("layout of AVFrame does not match FFmpeg 5.1 (planes)".into());
        }
        let mut p = (api.packet_alloc)();
        if p.is_null() {
            return Err("av_packet_alloc failed".into());
        }
        let d = (
            read::<i64>(p, PACKET_PTS),
            read::<i64>(p, PACKET_DTS),
            read::<*const u8>(p, PACKET_DATA).is_null(),
            read::<c_int>(p, PACKET_SIZE),
        );
        (api.packet_free)(&mut p);
        if d != (AV_NOPTS_VALUE, AV_NOPTS_VALUE, true, 0) {
            return Err(format!(
                "layout of AVPacket does not match FFmpeg 5.1 (defaults read {d:?})"
            ));
        }
    }
    Ok(())
}

/// Which FFmpeg encoder, and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `h264_nvenc` on one CUDA device.
    Nvenc { gpu: u32 },
    /// `libx264` (the tests' stand-in for NVENC: same code, a CPU encoder).
    X264,
}

/// A backend of FFmpeg's.
struct AvBackend {
    api: Arc<Api>,
    kind: Kind,
    name: &'static str,
    max_contexts: Option<usize>,
}

/// NVENC on CUDA device `gpu` through FFmpeg's `h264_nvenc`, at most
/// `max_contexts` streams at once (consumer cards' session cap). Opening a
/// small context is tried at once: a device or driver that cannot encode
/// is [`CodecError::Unavailable`] with FFmpeg's reason.
pub fn nvenc(gpu: u32, max_contexts: Option<usize>) -> Result<Arc<dyn Backend>, CodecError> {
    load(
        LIBAVCODEC,
        LIBAVUTIL,
        Kind::Nvenc { gpu },
        "nvenc",
        max_contexts,
    )
}

/// FFmpeg's `libx264` through the same code as [`nvenc`] (what tests it
/// where no NVENC engine is).
pub fn x264() -> Result<Arc<dyn Backend>, CodecError> {
    load(LIBAVCODEC, LIBAVUTIL, Kind::X264, "avcodec-x264", None)
}

fn load(
    avcodec: &str,
    avutil: &str,
    kind: Kind,
    name: &'static str,
    max_contexts: Option<usize>,
) -> Result<Arc<dyn Backend>, CodecError> {
    let unavailable = |reason: String| CodecError::Unavailable {
        backend: name,
        reason,
    };
    let api = Api::load(avcodec, avutil).map_err(unavailable)?;
    verify_layout(&api).map_err(|e| unavailable(format!("{avcodec}: {e}")))?;
    let backend = AvBackend {
        api: Arc::new(api),
        kind,
        name,
        max_contexts,
    };
    // A device that cannot encode says so now, not at a window's first
    // frame.
    let probe = EncoderConfig {
        width: 256,
        height: 256,
        csc: Csc::Yuv420p,
        quality: 50,
        speed: 100,
    };
    backend
        .open(&probe)
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(Arc::new(backend))
}

impl Backend for AvBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn max_contexts(&self) -> Option<usize> {
        self.max_contexts
    }

    fn open(&self, cfg: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, CodecError> {
        Ok(Box::new(AvEncoder::open(
            self.api.clone(),
            self.kind,
            self.name,
            cfg,
        )?))
    }
}

/// The options set by name, for `cfg`.
fn options(kind: Kind, cfg: &EncoderConfig) -> Vec<(&'static str, String)> {
    let pix = match cfg.csc {
        Csc::Yuv420p => "yuv420p",
        Csc::Yuv444p => "yuv444p",
    };
    let q = u32::from(cfg.quality.min(100));
    // quality 100 -> 14, 0 -> 40 (x264.rs's CRF goes 12..40)
    let qp = 40 - (26 * q) / 100;
    let o = |n: &'static str, v: String| (n, v);
    let mut v = vec![
        o("video_size", format!("{}x{}", cfg.width, cfg.height)),
        o("pixel_format", pix.into()),
        o("time_base", "1/1000".into()),
        // Key frames only when asked (frame 0, or forced).
        o("g", "1000000".into()),
        o("bf", "0".into()),
        o("threads", "1".into()),
        o("colorspace", "bt470bg".into()),
        o("color_range", "tv".into()),
        o("forced-idr", "1".into()),
    ];
    match kind {
        Kind::Nvenc { gpu } => {
            // p1 (fastest) .. p4, by speed
            let preset = match cfg.speed.min(100) {
                90..=100 => "p1",
                70..=89 => "p2",
                40..=69 => "p3",
                _ => "p4",
            };
            v.extend([
                o("gpu", gpu.to_string()),
                o("preset", preset.into()),
                o("tune", "ull".into()),
                o("zerolatency", "1".into()),
                o("delay", "0".into()),
                o("rc", "constqp".into()),
                o("qp", qp.to_string()),
                o(
                    "profile",
                    match cfg.csc {
                        Csc::Yuv420p => "high",
                        Csc::Yuv444p => "high444p",
                    }
                    .into(),
                ),
            ]);
        }
        Kind::X264 => {
            v.extend([
                o("preset", "ultrafast".into()),
                o("tune", "zerolatency".into()),
                o("qp", qp.to_string()),
            ]);
        }
    }
    v
}

/// One FFmpeg encoder context (one window stream).
struct AvEncoder {
    api: Arc<Api>,
    ctx: Ptr,
    frame: Ptr,
    packet: Ptr,
    cfg: EncoderConfig,
    name: &'static str,
    yuv: Yuv,
    pts: i64,
    failed: bool,
}

// SAFETY: the context, frame and packet are used by one thread at a time
// (the worker that owns the `AvEncoder`); FFmpeg's encoders keep no
// thread-local state between calls, and distinct contexts are independent.
unsafe impl Send for AvEncoder {}

impl AvEncoder {
    fn open(
        api: Arc<Api>,
        kind: Kind,
        name: &'static str,
        cfg: &EncoderConfig,
    ) -> Result<AvEncoder, CodecError> {
        let bad = |reason: String| CodecError::Open {
            backend: name,
            width: cfg.width,
            height: cfg.height,
            csc: cfg.csc,
            reason,
        };
        if cfg.width == 0
            || cfg.height == 0
            || cfg.width > MAX_DIMENSION
            || cfg.height > MAX_DIMENSION
            || (cfg.csc == Csc::Yuv420p && (cfg.width % 2 != 0 || cfg.height % 2 != 0))
        {
            return Err(bad("size out of range (or odd for 4:2:0)".into()));
        }
        let codec_name = match kind {
            Kind::Nvenc { .. } => c"h264_nvenc",
            Kind::X264 => c"libx264",
        };
        // SAFETY: a NUL-terminated name; returns a static codec or null.
        let codec = unsafe { (api.find_encoder_by_name)(codec_name.as_ptr()) };
        if codec.is_null() {
            return Err(bad(format!(
                "this FFmpeg has no {} encoder",
                codec_name.to_string_lossy()
            )));
        }
        // SAFETY: `codec` is FFmpeg's; returns a new context or null.
        let ctx = unsafe { (api.alloc_context3)(codec) };
        if ctx.is_null() {
            return Err(bad("avcodec_alloc_context3 failed".into()));
        }
        // From here the encoder owns `ctx` (freed on drop, on every path).
        let mut enc = AvEncoder {
            api,
            ctx,
            frame: std::ptr::null_mut(),
            packet: std::ptr::null_mut(),
            cfg: *cfg,
            name,
            yuv: Yuv::new(),
            pts: 0,
            failed: false,
        };
        for (k, v) in options(kind, cfg) {
            let (Ok(k), Ok(cv)) = (CString::new(k), CString::new(v.clone())) else {
                return Err(bad(format!("option {k}={v}")));
            };
            // SAFETY: `ctx` is live; both strings NUL-terminated; the
            // option is copied by FFmpeg.
            let r = unsafe { (enc.api.opt_set)(enc.ctx, k.as_ptr(), cv.as_ptr(), SEARCH_CHILDREN) };
            if r < 0 {
                return Err(bad(format!(
                    "option {}={v}: {}",
                    k.to_string_lossy(),
                    enc.api.error(r)
                )));
            }
        }
        // SAFETY: `ctx` is live and configured; `codec` is the one it was
        // allocated for; no options dictionary.
        let r = unsafe { (enc.api.open2)(enc.ctx, codec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(bad(format!("avcodec_open2: {}", enc.api.error(r))));
        }
        // SAFETY: allocators returning a new object or null.
        let (frame, packet) = unsafe { ((enc.api.frame_alloc)(), (enc.api.packet_alloc)()) };
        enc.frame = frame;
        enc.packet = packet;
        if frame.is_null() || packet.is_null() {
            return Err(bad("out of memory".into()));
        }
        let fmt = match cfg.csc {
            Csc::Yuv420p => AV_PIX_FMT_YUV420P,
            Csc::Yuv444p => AV_PIX_FMT_YUV444P,
        };
        let (w, h) = (
            c_int::try_from(cfg.width).unwrap_or(0),
            c_int::try_from(cfg.height).unwrap_or(0),
        );
        // SAFETY: `frame` is a live AVFrame (layout checked at load); then
        // FFmpeg allocates planes for that size and format.
        let r = unsafe {
            write::<c_int>(frame, FRAME_WIDTH, w);
            write::<c_int>(frame, FRAME_HEIGHT, h);
            write::<c_int>(frame, FRAME_FORMAT, fmt);
            (enc.api.frame_get_buffer)(frame, 0)
        };
        if r < 0 {
            return Err(bad(format!("av_frame_get_buffer: {}", enc.api.error(r))));
        }
        Ok(enc)
    }

    fn fail(&mut self, reason: String) -> CodecError {
        self.failed = true;
        CodecError::Encode {
            backend: self.name,
            reason,
        }
    }
}

impl VideoEncoder for AvEncoder {
    fn encode(&mut self, frame: &Frame<'_>, keyframe: bool) -> Result<EncodedFrame, CodecError> {
        if self.failed {
            return Err(CodecError::Encode {
                backend: self.name,
                reason: "the context failed before".into(),
            });
        }
        if frame.width != self.cfg.width || frame.height != self.cfg.height {
            return Err(CodecError::BadFrame(format!(
                "{}x{} frame for a {}x{} context",
                frame.width, frame.height, self.cfg.width, self.cfg.height
            )));
        }
        csc::convert(frame, self.cfg.csc, &mut self.yuv)?;
        let rows = [
            self.cfg.height as usize,
            self.yuv.chroma_height() as usize,
            self.yuv.chroma_height() as usize,
        ];
        let keyframe = keyframe || self.pts == 0;
        // SAFETY: `self.frame` is live with planes for this size and
        // format (av_frame_get_buffer at open); make_writable keeps them
        // ours (the encoder may still reference the last ones). Each row
        // copied is at most the plane's line size and the source's stride,
        // for the plane's row count.
        unsafe {
            let r = (self.api.frame_make_writable)(self.frame);
            if r < 0 {
                return Err(self.fail(format!("av_frame_make_writable: {}", self.api.error(r))));
            }
            let data = read::<[*mut u8; 3]>(self.frame, FRAME_DATA);
            let lines = read::<[c_int; 3]>(self.frame, FRAME_LINESIZE);
            let planes = [&self.yuv.y, &self.yuv.u, &self.yuv.v];
            for i in 0..3 {
                let dst_line = usize::try_from(lines[i]).unwrap_or(0);
                let src_stride = self.yuv.strides[i];
                let n = dst_line.min(src_stride);
                if data[i].is_null() || n == 0 || planes[i].len() < src_stride * rows[i] {
                    return Err(self.fail("frame planes do not fit".into()));
                }
                for r in 0..rows[i] {
                    std::ptr::copy_nonoverlapping(
                        planes[i].as_ptr().add(r * src_stride),
                        data[i].add(r * dst_line),
                        n,
                    );
                }
            }
            write::<i64>(self.frame, FRAME_PTS, self.pts);
            write::<c_int>(
                self.frame,
                FRAME_PICT_TYPE,
                if keyframe {
                    AV_PICTURE_TYPE_I
                } else {
                    AV_PICTURE_TYPE_NONE
                },
            );
        }
        self.pts += 1;
        // SAFETY: a live, opened context and a frame it can take.
        let r = unsafe { (self.api.send_frame)(self.ctx, self.frame) };
        if r < 0 {
            let e = self.api.error(r);
            return Err(self.fail(format!("avcodec_send_frame: {e}")));
        }
        let mut out = Vec::new();
        let mut key = false;
        loop {
            // SAFETY: a live context and packet; the packet's data is
            // valid for its size until unref.
            let r = unsafe { (self.api.receive_packet)(self.ctx, self.packet) };
            if r == AVERROR_EAGAIN {
                break;
            }
            if r < 0 {
                let e = self.api.error(r);
                return Err(self.fail(format!("avcodec_receive_packet: {e}")));
            }
            // SAFETY: as above; layout checked at load.
            unsafe {
                let data = read::<*const u8>(self.packet, PACKET_DATA);
                let size = usize::try_from(read::<c_int>(self.packet, PACKET_SIZE)).unwrap_or(0);
                let flags = read::<c_int>(self.packet, PACKET_FLAGS);
                if !data.is_null() && size > 0 {
                    out.extend_from_slice(std::slice::from_raw_parts(data, size));
                }
                key |= flags & AV_PKT_FLAG_KEY != 0;
                (self.api.packet_unref)(self.packet);
            }
        }
        if out.is_empty() {
            return Err(self.fail("the encoder gave nothing for the frame (delay not 0)".into()));
        }
        if keyframe && !key {
            // The client resets its decoder on such a frame: it must be an
            // IDR.
            return Err(self.fail("a key frame was asked for and not made".into()));
        }
        Ok(EncodedFrame {
            data: out,
            keyframe: key,
        })
    }

    fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for AvEncoder {
    fn drop(&mut self) {
        // SAFETY: each object is ours, freed once (the free functions take
        // null, and null the pointer).
        unsafe {
            if !self.packet.is_null() {
                (self.api.packet_free)(&mut self.packet);
            }
            if !self.frame.is_null() {
                (self.api.frame_free)(&mut self.frame);
            }
            (self.api.free_context)(&mut self.ctx);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_config() {
        let cfg = EncoderConfig {
            width: 640,
            height: 480,
            csc: Csc::Yuv444p,
            quality: 100,
            speed: 95,
        };
        let o = options(Kind::Nvenc { gpu: 2 }, &cfg);
        let get = |k: &str| o.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("video_size"), Some("640x480"));
        assert_eq!(get("pixel_format"), Some("yuv444p"));
        assert_eq!(get("gpu"), Some("2"));
        assert_eq!(get("preset"), Some("p1"));
        assert_eq!(get("profile"), Some("high444p"));
        assert_eq!(get("qp"), Some("14"));
        assert_eq!(get("bf"), Some("0"));
        let o = options(Kind::X264, &EncoderConfig { quality: 0, ..cfg });
        assert!(o.iter().any(|(n, v)| *n == "qp" && v == "40"));
        assert!(!o.iter().any(|(n, _)| *n == "gpu"));
    }

    #[test]
    fn missing_libraries_are_unavailable() {
        let e = load(
            "/nonexistent/libavcodec.so",
            LIBAVUTIL,
            Kind::X264,
            "t",
            None,
        )
        .err();
        assert!(matches!(e, Some(CodecError::Unavailable { .. })), "{e:?}");
    }
}
