//! libx264 (Debian's `libx264.so.164`, package libx264-164), loaded at run
//! time, so that xfwd builds without libx264-dev and runs where the library
//! is missing (then the x264 backend is [`CodecError::Unavailable`]).
//!
//! The ABI. libx264's ABI changes with its build number, which names the
//! open function: `x264_encoder_open_164` is looked up, nothing else is
//! accepted. `x264_param_t` (1024 bytes in build 164), `x264_picture_t`
//! (240) and `x264_nal_t` (40) are not declared here in full: they are
//! over-sized, aligned byte buffers, and only the few fields that
//! `x264_param_parse` cannot set by name (the size and colour space of the
//! stream, the picture's planes, type and pts, the NALs' payloads) are
//! read or written, at the offsets of x264.h of build 164. The offsets are
//! checked when the library is loaded and on every frame:
//!
//! - `x264_param_default_preset` zeroes the whole struct first: it must
//!   write nothing past [`PARAM_SIZE`], and leave the known defaults at
//!   the known places (`i_width` = `i_height` = 0, `i_csp` = I420,
//!   `i_bitdepth` = 8, `i_level_idc` = -1, zerolatency's
//!   `b_sliced_threads` = 1 and `i_sync_lookahead` = 0); then values set
//!   by name (`threads`, `sync-lookahead`, `level`) must show at their
//!   offsets;
//! - `x264_picture_init` zeroes exactly [`PICTURE_SIZE`] bytes;
//! - every output picture carries the pts given, a sane type, and every
//!   NAL starts with a start code whose header has the NAL's `i_type`, the
//!   payloads add up to what `x264_encoder_encode` returned and follow each
//!   other in memory (x264.h guarantees it).
//!
//! Anything else: the library is refused ("layout of x264_param_t does not
//! match build 164: ...") or the frame fails.
//!
//! Settings (by name, through `x264_param_parse`): preset from `speed`
//! (ultrafast..medium), tune zerolatency (no b-frames, no lookahead: one
//! frame in, its access unit out), one thread without slices (workers
//! already run one context per window in parallel), CRF from `quality`
//! (12..40), profile high (4:2:0) or high444 (4:4:4), Annex B with SPS/PPS
//! repeated before every IDR, no periodic or scene-cut keyframes (an IDR
//! only on the first frame and when asked), BT.601 limited range signalled
//! in the VUI, logging off.
//!
//! Why `unsafe`: calling a C library loaded at run time is FFI, and its
//! structs are reached through raw pointers; each context is owned by one
//! [`VideoEncoder`] that closes it on drop.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use super::codec::{Backend, CodecError, EncodedFrame, EncoderConfig, Frame, VideoEncoder};
use super::csc::{self, Yuv, MAX_DIMENSION};
use super::job::Csc;

/// The library loaded (Debian 12: libx264-164).
pub const LIBRARY: &str = "libx264.so.164";

/// The x264 build (ABI) these offsets are for.
pub const BUILD: u32 = 164;

const NAME: &str = "x264";

/// `sizeof(x264_param_t)` in build 164, and the buffer used for it.
pub const PARAM_SIZE: usize = 1024;
const PARAM_BUF: usize = 4096;
/// `sizeof(x264_picture_t)` in build 164, and the buffer used for it.
pub const PICTURE_SIZE: usize = 240;
const PICTURE_BUF: usize = 1024;
/// `sizeof(x264_nal_t)`.
const NAL_SIZE: usize = 40;

// The offsets below are those of an LP64 target (x86_64, aarch64 Linux).
const _: () = assert!(std::mem::size_of::<usize>() == 8);

// x264_param_t (x264.h, build 164).
const P_THREADS: usize = 4;
const P_SLICED_THREADS: usize = 12;
const P_SYNC_LOOKAHEAD: usize = 24;
const P_WIDTH: usize = 28;
const P_HEIGHT: usize = 32;
const P_CSP: usize = 36;
const P_BITDEPTH: usize = 40;
const P_LEVEL_IDC: usize = 44;

// x264_picture_t: i_type, b_keyframe, i_pts; img (x264_image_t) at 40:
// i_csp, i_plane, i_stride[4], then plane[4] (pointers, at 64).
const PIC_TYPE: usize = 0;
const PIC_KEYFRAME: usize = 12;
const PIC_PTS: usize = 16;
const PIC_IMG_CSP: usize = 40;
const PIC_IMG_PLANES: usize = 44;
const PIC_IMG_STRIDE: usize = 48;
const PIC_IMG_PLANE: usize = 64;

// x264_nal_t: i_type, i_payload, p_payload.
const NAL_TYPE: usize = 4;
const NAL_PAYLOAD_LEN: usize = 20;
const NAL_PAYLOAD: usize = 24;

const CSP_I420: i32 = 0x0002;
const CSP_I444: i32 = 0x000c;
const TYPE_AUTO: i32 = 0;
const TYPE_IDR: i32 = 1;
const TYPE_BREF: i32 = 4;
const TYPE_B: i32 = 5;
const TYPE_KEYFRAME: i32 = 6;

/// NAL unit types (H.264 table 7-1).
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

/// Most NALs one frame may have (one thread, no slices: a handful).
const MAX_NALS: usize = 256;

/// The presets used, slowest first: `speed` picks one.
pub const PRESETS: [&str; 6] = [
    "medium",
    "fast",
    "faster",
    "veryfast",
    "superfast",
    "ultrafast",
];

/// The x264 preset for an xpra `speed` (0..=100; higher: faster).
pub fn preset_for(speed: u8) -> &'static str {
    match speed.min(100) {
        0..=19 => PRESETS[0],
        20..=39 => PRESETS[1],
        40..=54 => PRESETS[2],
        55..=69 => PRESETS[3],
        70..=84 => PRESETS[4],
        _ => PRESETS[5],
    }
}

/// The CRF for an xpra `quality` (0..=100; 100: CRF 12, 0: CRF 40).
pub fn crf_for(quality: u8) -> f32 {
    40.0 - 28.0 * f32::from(quality.min(100)) / 100.0
}

/// An over-sized, aligned `x264_param_t`.
#[repr(C, align(64))]
struct ParamBuf([u8; PARAM_BUF]);

/// An over-sized, aligned `x264_picture_t`.
#[repr(C, align(64))]
struct PictureBuf([u8; PICTURE_BUF]);

fn get_i32(buf: &[u8], off: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    i32::from_ne_bytes(b)
}

fn set_i32(buf: &mut [u8], off: usize, v: i32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_i64(buf: &[u8], off: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    i64::from_ne_bytes(b)
}

fn set_i64(buf: &mut [u8], off: usize, v: i64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_usize(buf: &[u8], off: usize) -> usize {
    const N: usize = std::mem::size_of::<usize>();
    let mut b = [0u8; N];
    b.copy_from_slice(&buf[off..off + N]);
    usize::from_ne_bytes(b)
}

fn set_ptr(buf: &mut [u8], off: usize, p: *const u8) {
    let v = p as usize;
    buf[off..off + std::mem::size_of::<usize>()].copy_from_slice(&v.to_ne_bytes());
}

type RawEncoder = *mut c_void;

/// The functions of libx264 used (signatures as in x264.h, build 164).
struct Api {
    param_default_preset:
        unsafe extern "C" fn(*mut ParamBuf, *const c_char, *const c_char) -> c_int,
    param_apply_profile: unsafe extern "C" fn(*mut ParamBuf, *const c_char) -> c_int,
    param_parse: unsafe extern "C" fn(*mut ParamBuf, *const c_char, *const c_char) -> c_int,
    /// Frees what `param_parse` allocated (none of the options used here
    /// allocates; called anyway when the library has it).
    param_cleanup: Option<unsafe extern "C" fn(*mut ParamBuf)>,
    picture_init: unsafe extern "C" fn(*mut PictureBuf),
    encoder_open: unsafe extern "C" fn(*mut ParamBuf) -> RawEncoder,
    encoder_encode: unsafe extern "C" fn(
        RawEncoder,
        *mut *mut u8, // x264_nal_t **
        *mut c_int,
        *mut PictureBuf,
        *mut PictureBuf,
    ) -> c_int,
    encoder_close: unsafe extern "C" fn(RawEncoder),
    /// Kept loaded while a context lives (the pointers above point into it).
    _lib: libloading::Library,
}

impl Api {
    fn load(path: &str) -> Result<Api, String> {
        // SAFETY: loading libx264 runs its initialisers, which set up its
        // own tables only; it stays loaded while the `Api` (held by every
        // backend and context made from it) lives.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("{path} not found (Debian: apt-get install libx264-164): {e}"))?;
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol's type is its declaration in x264.h
                // of build 164 (the field it is stored in); `lib` is kept
                // in the same `Api`, so it outlives the copy.
                let s = unsafe { lib.get($name) }.map_err(|e| {
                    format!(
                        "{path}: no {} (not x264 build {BUILD}?): {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?;
                *s
            }};
        }
        // SAFETY: as in `sym!`; an optional symbol.
        let param_cleanup = unsafe { lib.get(b"x264_param_cleanup\0") }
            .ok()
            .map(|s: libloading::Symbol<unsafe extern "C" fn(*mut ParamBuf)>| *s);
        Ok(Api {
            param_default_preset: sym!(b"x264_param_default_preset\0"),
            param_apply_profile: sym!(b"x264_param_apply_profile\0"),
            param_parse: sym!(b"x264_param_parse\0"),
            param_cleanup,
            picture_init: sym!(b"x264_picture_init\0"),
            encoder_open: sym!(b"x264_encoder_open_164\0"),
            encoder_encode: sym!(b"x264_encoder_encode\0"),
            encoder_close: sym!(b"x264_encoder_close\0"),
            _lib: lib,
        })
    }

    fn default_preset(&self, p: &mut ParamBuf, preset: &str) -> Result<(), String> {
        let preset = CString::new(preset).map_err(|e| e.to_string())?;
        // SAFETY: `p` is a buffer larger than x264_param_t (checked by
        // `verify_layout`) and aligned for it; the strings are
        // NUL-terminated and only read during the call.
        let rc =
            unsafe { (self.param_default_preset)(p, preset.as_ptr(), c"zerolatency".as_ptr()) };
        if rc != 0 {
            return Err(format!(
                "x264_param_default_preset({preset:?}, zerolatency) failed"
            ));
        }
        Ok(())
    }

    fn parse(&self, p: &mut ParamBuf, name: &str, value: &str) -> Result<(), String> {
        let (n, v) = match (CString::new(name), CString::new(value)) {
            (Ok(n), Ok(v)) => (n, v),
            _ => return Err(format!("option {name:?}={value:?} holds a NUL")),
        };
        // SAFETY: `p` holds a param set up by `param_default_preset`; the
        // strings are NUL-terminated and only read during the call.
        let rc = unsafe { (self.param_parse)(p, n.as_ptr(), v.as_ptr()) };
        match rc {
            0 => Ok(()),
            -1 => Err(format!("x264 does not know option {name}")),
            -2 => Err(format!("x264 refused {name}={value}")),
            rc => Err(format!("x264_param_parse({name}={value}) failed ({rc})")),
        }
    }

    fn cleanup(&self, p: &mut ParamBuf) {
        if let Some(f) = self.param_cleanup {
            // SAFETY: `p` holds a param set up by this library; cleanup
            // frees only what `param_parse` allocated in it.
            unsafe { f(p) }
        }
    }

    fn picture_init(&self, pic: &mut PictureBuf) {
        // SAFETY: `pic` is a buffer larger than x264_picture_t (checked by
        // `verify_layout`) and aligned for it.
        unsafe { (self.picture_init)(pic) }
    }
}

fn param_buf() -> Box<ParamBuf> {
    Box::new(ParamBuf([0; PARAM_BUF]))
}

fn picture_buf() -> Box<PictureBuf> {
    Box::new(PictureBuf([0; PICTURE_BUF]))
}

/// Checks that the library's structs are laid out as this file reads them
/// (see the module's documentation).
fn verify_layout(api: &Api) -> Result<(), String> {
    const CANARY: u8 = 0xa5;
    let mut p = param_buf();
    p.0.fill(CANARY);
    api.default_preset(&mut p, "ultrafast")?;
    if p.0[PARAM_SIZE..].iter().any(|&b| b != CANARY) {
        return Err(format!(
            "x264_param_default_preset wrote past {PARAM_SIZE} bytes: x264_param_t is larger than build {BUILD}'s"
        ));
    }
    let expect = [
        ("i_width", P_WIDTH, 0),
        ("i_height", P_HEIGHT, 0),
        ("i_csp", P_CSP, CSP_I420),
        ("i_bitdepth", P_BITDEPTH, 8),
        ("i_level_idc", P_LEVEL_IDC, -1),
        ("b_sliced_threads", P_SLICED_THREADS, 1),
        ("i_sync_lookahead", P_SYNC_LOOKAHEAD, 0),
    ];
    for (field, off, want) in expect {
        let got = get_i32(&p.0, off);
        if got != want {
            return Err(format!(
                "layout of x264_param_t does not match build {BUILD}: {field} (offset {off}) is {got} after x264_param_default_preset(ultrafast, zerolatency), expected {want}"
            ));
        }
    }
    for (name, value, field, off, want) in [
        ("threads", "3", "i_threads", P_THREADS, 3),
        (
            "sync-lookahead",
            "7",
            "i_sync_lookahead",
            P_SYNC_LOOKAHEAD,
            7,
        ),
        ("level", "3.1", "i_level_idc", P_LEVEL_IDC, 31),
    ] {
        api.parse(&mut p, name, value)?;
        let got = get_i32(&p.0, off);
        if got != want {
            return Err(format!(
                "layout of x264_param_t does not match build {BUILD}: {field} (offset {off}) is {got} after {name}={value}"
            ));
        }
    }
    api.cleanup(&mut p);

    let mut pic = picture_buf();
    pic.0.fill(CANARY);
    api.picture_init(&mut pic);
    if pic.0[..PICTURE_SIZE].iter().any(|&b| b != 0)
        || pic.0[PICTURE_SIZE..].iter().any(|&b| b != CANARY)
    {
        return Err(format!(
            "x264_picture_init did not clear exactly {PICTURE_SIZE} bytes: x264_picture_t is not build {BUILD}'s"
        ));
    }
    Ok(())
}

/// Loads libx264 and checks its ABI; the backend opens one context per
/// window stream.
pub fn load() -> Result<Arc<dyn Backend>, CodecError> {
    load_from(LIBRARY)
}

/// [`load`] from `path` (a soname or a file).
pub fn load_from(path: &str) -> Result<Arc<dyn Backend>, CodecError> {
    let unavailable = |reason: String| CodecError::Unavailable {
        backend: NAME,
        reason,
    };
    let api = Api::load(path).map_err(unavailable)?;
    verify_layout(&api).map_err(|e| unavailable(format!("{path}: {e}")))?;
    tracing::debug!(target: "xfwd::video", "x264: {path} loaded (build {BUILD})");
    Ok(Arc::new(X264 { api: Arc::new(api) }))
}

/// The x264 backend.
struct X264 {
    api: Arc<Api>,
}

impl Backend for X264 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn open(&self, cfg: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, CodecError> {
        Ok(Box::new(X264Encoder::open(self.api.clone(), cfg)?))
    }
}

/// The options set by name, for `cfg`.
fn options(cfg: &EncoderConfig) -> Vec<(&'static str, String)> {
    let o = |n: &'static str, v: &str| (n, v.to_owned());
    vec![
        o("threads", "1"),
        o("lookahead-threads", "1"),
        o("sliced-threads", "0"),
        o("sync-lookahead", "0"),
        o("rc-lookahead", "0"),
        o("bframes", "0"),
        o("keyint", "infinite"),
        o("scenecut", "0"),
        o("annexb", "1"),
        o("repeat-headers", "1"),
        ("crf", format!("{:.1}", crf_for(cfg.quality))),
        o("fullrange", "off"),
        o("colormatrix", "smpte170m"),
        o("log", "-1"),
    ]
}

/// One x264 context.
struct X264Encoder {
    api: Arc<Api>,
    raw: NonNull<c_void>,
    cfg: EncoderConfig,
    yuv: Yuv,
    pic_in: Box<PictureBuf>,
    pic_out: Box<PictureBuf>,
    /// The next frame's pts (frames counted from 0).
    pts: i64,
    /// An encode failed: the context is not to be used again.
    failed: bool,
}

// SAFETY: an x264 context has no thread affinity (x264 itself hands frames
// between its own threads); it is used through `&mut self` only, so by one
// thread at a time, and everything it points to (its own allocations, the
// loaded library kept by `api`) moves with it.
unsafe impl Send for X264Encoder {}

impl X264Encoder {
    fn open(api: Arc<Api>, cfg: &EncoderConfig) -> Result<X264Encoder, CodecError> {
        let open_err = |reason: String| CodecError::Open {
            backend: NAME,
            width: cfg.width,
            height: cfg.height,
            csc: cfg.csc,
            reason,
        };
        let (w, h) = (cfg.width, cfg.height);
        if w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION {
            return Err(open_err(format!("sizes must be 1..={MAX_DIMENSION}")));
        }
        if cfg.csc == Csc::Yuv420p && (w % 2 != 0 || h % 2 != 0) {
            return Err(open_err("4:2:0 needs an even width and height".into()));
        }
        let mut p = param_buf();
        api.default_preset(&mut p, preset_for(cfg.speed))
            .map_err(open_err)?;
        // The layout was checked at load; these are cheap to check again.
        if get_i32(&p.0, P_BITDEPTH) != 8 || get_i32(&p.0, P_CSP) != CSP_I420 {
            return Err(open_err(format!(
                "x264_param_t does not have build {BUILD}'s layout"
            )));
        }
        let mut result = Ok(());
        for (name, value) in options(cfg) {
            result = api.parse(&mut p, name, &value);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            // Bounded above: at most 4096.
            set_i32(&mut p.0, P_WIDTH, w as i32);
            set_i32(&mut p.0, P_HEIGHT, h as i32);
            let (csp, profile) = match cfg.csc {
                Csc::Yuv420p => (CSP_I420, c"high"),
                Csc::Yuv444p => (CSP_I444, c"high444"),
            };
            set_i32(&mut p.0, P_CSP, csp);
            // SAFETY: a param set up by `param_default_preset`; the profile
            // name is NUL-terminated.
            let rc = unsafe { (api.param_apply_profile)(&mut *p, profile.as_ptr()) };
            if rc != 0 {
                result = Err(format!("x264_param_apply_profile({profile:?}) failed"));
            }
        }
        let raw = match result {
            // SAFETY: a complete param; x264_encoder_open copies it (the
            // param is cleaned up and dropped below).
            Ok(()) => NonNull::new(unsafe { (api.encoder_open)(&mut *p) }),
            Err(_) => None,
        };
        api.cleanup(&mut p);
        result.map_err(open_err)?;
        let raw = raw.ok_or_else(|| open_err("x264_encoder_open failed".into()))?;
        tracing::debug!(
            target: "xfwd::video",
            "x264: opened {w}x{h} {} preset {} crf {:.1}",
            cfg.csc.name(),
            preset_for(cfg.speed),
            crf_for(cfg.quality)
        );
        Ok(X264Encoder {
            api,
            raw,
            cfg: *cfg,
            yuv: Yuv::new(),
            pic_in: picture_buf(),
            pic_out: picture_buf(),
            pts: 0,
            failed: false,
        })
    }

    fn encode_err(reason: String) -> CodecError {
        CodecError::Encode {
            backend: NAME,
            reason,
        }
    }

    /// Encodes the planes in `self.yuv`.
    fn encode_yuv(&mut self, keyframe: bool) -> Result<EncodedFrame, CodecError> {
        let api = &*self.api;
        let pic = &mut *self.pic_in;
        api.picture_init(pic);
        let csp = match self.cfg.csc {
            Csc::Yuv420p => CSP_I420,
            Csc::Yuv444p => CSP_I444,
        };
        set_i32(
            &mut pic.0,
            PIC_TYPE,
            if keyframe { TYPE_IDR } else { TYPE_AUTO },
        );
        set_i64(&mut pic.0, PIC_PTS, self.pts);
        set_i32(&mut pic.0, PIC_IMG_CSP, csp);
        set_i32(&mut pic.0, PIC_IMG_PLANES, 3);
        let planes = [&self.yuv.y, &self.yuv.u, &self.yuv.v];
        for (i, plane) in planes.iter().enumerate() {
            // Strides are at most 4096.
            set_i32(
                &mut pic.0,
                PIC_IMG_STRIDE + 4 * i,
                self.yuv.strides[i] as i32,
            );
            set_ptr(&mut pic.0, PIC_IMG_PLANE + 8 * i, plane.as_ptr());
        }
        let mut nals: *mut u8 = std::ptr::null_mut();
        let mut n_nal: c_int = 0;
        // SAFETY: a live context; `pic_in` points at the three planes of
        // `self.yuv`, sized for the context's width, height and sampling by
        // `csc::convert` (x264 reads them during the call only, copying
        // them into its own frame); `pic_out` and the out pointers are
        // valid for writes. The NALs returned stay valid until the next
        // call on this context: they are copied out below.
        let rc = unsafe {
            (api.encoder_encode)(
                self.raw.as_ptr(),
                &mut nals,
                &mut n_nal,
                &mut *self.pic_in,
                &mut *self.pic_out,
            )
        };
        if rc < 0 {
            return Err(Self::encode_err(format!(
                "x264_encoder_encode failed ({rc})"
            )));
        }
        if rc == 0 || n_nal <= 0 || nals.is_null() {
            return Err(Self::encode_err(
                "x264 gave no output for a frame (it should not delay frames with zerolatency)"
                    .into(),
            ));
        }
        let total = rc as usize;
        let n = n_nal as usize;
        if n > MAX_NALS {
            return Err(Self::encode_err(format!("x264 gave {n} NALs for a frame")));
        }
        // SAFETY: x264 returned `n` x264_nal_t (40 bytes each in build 164)
        // at `nals`, valid until the next call on this context.
        let table = unsafe { std::slice::from_raw_parts(nals.cast_const(), n * NAL_SIZE) };
        let mut first: usize = 0;
        let mut next: usize = 0;
        let mut sum: usize = 0;
        let mut types = Vec::with_capacity(n);
        for (i, nal) in table.chunks_exact(NAL_SIZE).enumerate() {
            let len = get_i32(nal, NAL_PAYLOAD_LEN);
            let ptr = get_usize(nal, NAL_PAYLOAD);
            let ty = get_i32(nal, NAL_TYPE);
            if len < 4 || ptr == 0 || !(0..32).contains(&ty) {
                return Err(Self::encode_err(format!(
                    "x264_nal_t {i} of {n} is not build {BUILD}'s (i_payload {len}, i_type {ty})"
                )));
            }
            if i == 0 {
                first = ptr;
            } else if ptr != next {
                return Err(Self::encode_err(format!(
                    "x264's NAL payloads are not contiguous (NAL {i} of {n})"
                )));
            }
            next = ptr.wrapping_add(len as usize);
            sum += len as usize;
            types.push(ty as u8);
        }
        if sum != total {
            return Err(Self::encode_err(format!(
                "x264's NALs hold {sum} bytes, x264_encoder_encode said {total}"
            )));
        }
        // SAFETY: the payloads are contiguous (checked above) from `first`,
        // `total` bytes in all, owned by the context until the next call.
        let data = unsafe { std::slice::from_raw_parts(first as *const u8, total) }.to_vec();
        // Every NAL starts with a start code and a header of its type.
        let mut at = 0;
        for (i, ty) in types.iter().enumerate() {
            let len = get_i32(&table[i * NAL_SIZE..], NAL_PAYLOAD_LEN) as usize;
            let nal = &data[at..at + len];
            let header = match nal {
                [0, 0, 1, h, ..] => *h,
                [0, 0, 0, 1, h, ..] => *h,
                _ => {
                    return Err(Self::encode_err(format!(
                        "x264's NAL {i} of {n} has no Annex B start code"
                    )))
                }
            };
            if header & 0x1f != *ty {
                return Err(Self::encode_err(format!(
                    "x264's NAL {i} of {n} is of type {} but says {ty}: x264_nal_t is not build {BUILD}'s",
                    header & 0x1f
                )));
            }
            at += len;
        }
        let out = &self.pic_out.0;
        let (pts, ty, key) = (
            get_i64(out, PIC_PTS),
            get_i32(out, PIC_TYPE),
            get_i32(out, PIC_KEYFRAME),
        );
        if pts != self.pts || !(TYPE_IDR..=TYPE_KEYFRAME).contains(&ty) || !(0..=1).contains(&key) {
            return Err(Self::encode_err(format!(
                "x264's output picture is not build {BUILD}'s x264_picture_t (pts {pts} for {}, type {ty}, keyframe {key})",
                self.pts
            )));
        }
        if ty == TYPE_B || ty == TYPE_BREF {
            return Err(Self::encode_err("x264 made a B-frame".into()));
        }
        if keyframe && key == 0 {
            return Err(Self::encode_err("x264 ignored a forced keyframe".into()));
        }
        self.pts += 1;
        Ok(EncodedFrame {
            data,
            keyframe: key == 1,
        })
    }
}

impl VideoEncoder for X264Encoder {
    fn encode(&mut self, frame: &Frame<'_>, keyframe: bool) -> Result<EncodedFrame, CodecError> {
        if self.failed {
            return Err(Self::encode_err(
                "the context failed before and is not used again".into(),
            ));
        }
        if frame.width != self.cfg.width || frame.height != self.cfg.height {
            return Err(CodecError::BadFrame(format!(
                "a {}x{} frame for a {}x{} context",
                frame.width, frame.height, self.cfg.width, self.cfg.height
            )));
        }
        csc::convert(frame, self.cfg.csc, &mut self.yuv)?;
        let result = self.encode_yuv(keyframe || self.pts == 0);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

impl Drop for X264Encoder {
    fn drop(&mut self) {
        // SAFETY: the context opened in `open`, closed once; the library
        // is still loaded (`self.api`).
        unsafe { (self.api.encoder_close)(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn speed_and_quality_map() {
        assert_eq!(preset_for(100), "ultrafast");
        assert_eq!(preset_for(255), "ultrafast");
        assert_eq!(preset_for(0), "medium");
        assert_eq!(preset_for(50), "faster");
        assert!((crf_for(100) - 12.0).abs() < 0.01);
        assert!((crf_for(0) - 40.0).abs() < 0.01);
        assert!(crf_for(80) < crf_for(20));
    }

    #[test]
    fn field_helpers() {
        let mut b = [0u8; 64];
        set_i32(&mut b, 4, -7);
        set_i64(&mut b, 16, 1 << 40);
        assert_eq!(get_i32(&b, 4), -7);
        assert_eq!(get_i64(&b, 16), 1 << 40);
        let x = 5u8;
        set_ptr(&mut b, 24, &x);
        assert_eq!(get_usize(&b, 24), &x as *const u8 as usize);
    }

    #[test]
    fn missing_library_is_unavailable() {
        match load_from("libx264-does-not-exist.so.164") {
            Err(CodecError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "x264");
                assert!(reason.contains("not found"), "{reason}");
                assert!(reason.contains("libx264-164"), "{reason}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("loaded a missing library"),
        }
    }

    #[test]
    fn a_library_without_x264_is_refused() {
        // libc is there and has none of x264's symbols.
        match load_from("libc.so.6") {
            Err(CodecError::Unavailable { reason, .. }) => {
                assert!(reason.contains("x264_"), "{reason}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("libc taken for libx264"),
        }
    }
}
