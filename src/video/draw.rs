//! The packets transcoding reads and writes, as xpra 3.1.3 has them:
//!
//! - `draw` (server `window_source.py` `make_data_packet`):
//!   `[draw, wid, x, y, w, h, coding, data, seq, rowstride, options]`;
//!   `seq` is the window source's `_damage_packet_sequence` (per window);
//!   `options.flush = N`: N more draws of this batch follow
//!   (`process_damage_regions` numbers a batch's regions down to 0);
//!   `options.rgb_format` says the bytes per pixel (an `rgb24` draw can
//!   carry 4-byte BGRX); a compressor name (`zlib`, `lz4`, `lzo`) with a
//!   level > 0 says the pixels are compressed (`picture_encode.py`
//!   `rgb_encode`; the client's `process_delta` decompresses them).
//! - `damage-sequence` (client `window_manager.py` `send_damage_sequence`,
//!   server `window_server.py` `_process_damage_sequence`):
//!   `[damage-sequence, seq, wid, width, height, decode_time, message]`;
//!   `decode_time` in microseconds, 0: skipped, < 0: failed (the server
//!   then schedules a full refresh, `client_decode_error`).
//! - `buffer-refresh` (client `window_manager.py` `send_refresh`, server
//!   `window_server.py` `_process_buffer_refresh`):
//!   `[buffer-refresh, wid, 0, quality, options, client_properties]`.
//! - `map-window` `[.., wid, x, y, w, h, props, state]` and
//!   `configure-window` `[.., wid, x, y, w, h, props, resize_counter,
//!   state, skip_geometry, ..]` (client `gtk_client_window_base.py`, server
//!   `x11/server.py`): `props` are the window's client properties, where the
//!   client puts its per-window encoding choices (`encoding.scrolling`,
//!   `encodings.rgb_formats`, `encoding.full_csc_modes`, ...); the server
//!   (`window_source.py` `do_set_client_properties`) falls back to the
//!   connection's values for keys that are absent.
//! - window geometry from the session (`server/source/windows_mixin.py`):
//!   `new-window` / `new-override-redirect` `[.., wid, x, y, w, h, metadata,
//!   client_properties]`, `new-tray` `[.., wid, w, h, metadata]`,
//!   `window-resized` `[.., wid, w, h, resize_counter]`,
//!   `window-move-resize` `[.., wid, x, y, w, h, resize_counter]`,
//!   `configure-override-redirect` `[.., wid, x, y, w, h]`,
//!   `lost-window` `[.., wid]`.

use bytes::Bytes;

use crate::wire::compress;
use crate::wire::frame::Record;
use crate::wire::header::{Compressor, Encoder};
use crate::wire::packet::{self, EncodeOptions, PacketError};
use crate::wire::Value;

use super::job::{Csc, PixelFormat, Rect, RgbRect};

/// Byte items at least this long travel as raw chunks (xpra's protocol
/// sends `Compressed` pixels over its 32 KiB inline size as chunks; the
/// h264 and rgb draws the proxy makes do from 4 KiB).
pub const CHUNK_THRESHOLD: usize = 4096;
/// Index of the sequence number in a draw packet.
pub const DRAW_SEQ: usize = 8;

/// Why a draw cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    #[error("session draw: item {index} ({what}) is missing or not {expected}")]
    Item {
        index: usize,
        what: &'static str,
        expected: &'static str,
    },
}

/// Why the proxy cannot apply a (well-formed) draw to a framebuffer: the
/// draw goes to the client as it came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("coding {0:?} is not raw rgb")]
    Coding(String),
    #[error("unknown rgb_format {0:?}")]
    Format(String),
    #[error("delta-encoded pixels")]
    Delta,
    #[error("pixels compressed with {0}, which the proxy does not decompress")]
    Compression(String),
    #[error("cannot decompress the pixels: {0}")]
    Decompress(String),
    #[error("{w}x{h} at {x},{y} is outside the {max_w}x{max_h} the proxy transcodes")]
    Bounds {
        x: i64,
        y: i64,
        w: i64,
        h: i64,
        max_w: u32,
        max_h: u32,
    },
    #[error("rowstride {stride} for {w} pixels of {bpp} bytes")]
    Stride { stride: i64, w: i64, bpp: usize },
    #[error("{len} bytes of pixels for {h} rows of {stride}")]
    Short { len: usize, h: i64, stride: usize },
}

/// A session's draw packet, read (its pixels still as they came).
#[derive(Debug, Clone)]
pub struct SessionDraw {
    pub wid: u64,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    pub coding: String,
    pub data: Bytes,
    pub seq: i64,
    pub stride: i64,
    /// The options dict (an empty dict when absent).
    pub options: Value,
}

fn int_item(items: &[Value], index: usize, what: &'static str) -> Result<i64, DrawError> {
    items
        .get(index)
        .and_then(Value::as_int)
        .ok_or(DrawError::Item {
            index,
            what,
            expected: "an integer",
        })
}

/// The window id of a packet whose item 1 is one.
pub fn wid_of(items: &[Value]) -> Option<u64> {
    items
        .get(1)
        .and_then(Value::as_int)
        .and_then(|w| u64::try_from(w).ok())
}

impl SessionDraw {
    /// Reads a draw packet (raw chunks already in their places).
    pub fn parse(items: &[Value]) -> Result<SessionDraw, DrawError> {
        let wid = u64::try_from(int_item(items, 1, "wid")?).map_err(|_| DrawError::Item {
            index: 1,
            what: "wid",
            expected: "a window id",
        })?;
        let coding = items
            .get(6)
            .and_then(Value::as_str)
            .ok_or(DrawError::Item {
                index: 6,
                what: "coding",
                expected: "a name",
            })?
            .to_owned();
        let data = match items.get(7) {
            Some(Value::Bytes(b)) => b.clone(),
            Some(Value::Str(s)) => Bytes::copy_from_slice(s.as_bytes()),
            _ => {
                return Err(DrawError::Item {
                    index: 7,
                    what: "data",
                    expected: "bytes",
                })
            }
        };
        let options = match items.get(10) {
            Some(v @ Value::Dict(_)) => v.clone(),
            _ => Value::Dict(Vec::new()),
        };
        Ok(SessionDraw {
            wid,
            x: int_item(items, 2, "x")?,
            y: int_item(items, 3, "y")?,
            w: int_item(items, 4, "width")?,
            h: int_item(items, 5, "height")?,
            coding,
            data,
            seq: int_item(items, DRAW_SEQ, "sequence")?,
            stride: int_item(items, 9, "rowstride")?,
            options,
        })
    }

    fn opt_int(&self, key: &str) -> Option<i64> {
        self.options.get(key).and_then(Value::as_int)
    }

    /// `flush`: how many more draws of this batch follow (0: it ends here).
    pub fn flush(&self) -> i64 {
        self.opt_int("flush").unwrap_or(0).max(0)
    }

    /// The draw as a rectangle for a framebuffer of at most `max_w` x
    /// `max_h`: its pixels sliced (or decompressed, within `stride * h`
    /// bytes) out of the draw's data.
    pub fn to_rect(&self, max_w: u32, max_h: u32) -> Result<Rect, Unusable> {
        if self.coding != "rgb24" && self.coding != "rgb32" {
            return Err(Unusable::Coding(self.coding.clone()));
        }
        let format = match self.options.get("rgb_format").and_then(Value::as_str) {
            Some(name) => PixelFormat::parse(name).ok_or_else(|| Unusable::Format(name.into()))?,
            // the client's defaults (window_backing_base.py draw_region)
            None if self.coding == "rgb24" => PixelFormat::Rgb,
            None => PixelFormat::Rgbx,
        };
        if self.opt_int("delta").is_some_and(|d| d >= 0) {
            return Err(Unusable::Delta);
        }
        let bounds = || Unusable::Bounds {
            x: self.x,
            y: self.y,
            w: self.w,
            h: self.h,
            max_w,
            max_h,
        };
        let fits = |pos: i64, len: i64, max: u32| {
            pos >= 0 && len > 0 && pos.checked_add(len).is_some_and(|e| e <= i64::from(max))
        };
        if !fits(self.x, self.w, max_w) || !fits(self.y, self.h, max_h) {
            return Err(bounds());
        }
        let (x, y, w, h) = (
            u32::try_from(self.x).map_err(|_| bounds())?,
            u32::try_from(self.y).map_err(|_| bounds())?,
            u32::try_from(self.w).map_err(|_| bounds())?,
            u32::try_from(self.h).map_err(|_| bounds())?,
        );
        let bpp = format.bytes_per_pixel();
        // bounded above: w <= 4096
        let row = w as usize * bpp;
        let stride = if self.stride == 0 {
            row
        } else {
            usize::try_from(self.stride).unwrap_or(0)
        };
        // a row never needs more than its pixels plus alignment padding
        if stride < row || stride > row + 4096 {
            return Err(Unusable::Stride {
                stride: self.stride,
                w: self.w,
                bpp,
            });
        }
        let full = stride * h as usize;
        let needed = stride * (h as usize - 1) + row;
        let compressors = [
            ("lz4", Some(Compressor::Lz4)),
            ("zlib", Some(Compressor::Zlib)),
            ("brotli", Some(Compressor::Brotli)),
            ("lzo", None),
        ];
        let mut data = self.data.clone();
        for (name, c) in compressors {
            if self.opt_int(name).unwrap_or(0) > 0 {
                let c = c.ok_or_else(|| Unusable::Compression(name.into()))?;
                let plain = compress::decompress(c, &self.data, full)
                    .map_err(|e| Unusable::Decompress(e.to_string()))?;
                data = Bytes::from(plain);
                break;
            }
        }
        if data.len() < needed {
            return Err(Unusable::Short {
                len: data.len(),
                h: self.h,
                stride,
            });
        }
        let pixels = data.slice(..full.min(data.len()));
        Ok(Rect {
            x,
            y,
            w,
            h,
            // stride <= 4 * 4096 + 4096
            stride: u32::try_from(stride).map_err(|_| bounds())?,
            format,
            pixels,
        })
    }
}

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// An h264 frame for the client: `[draw, wid, 0, 0, w, h, "h264", data,
/// seq, 0, {frame, pts, type, csc}]` (`seq` set later with [`set_seq`]).
#[allow(clippy::too_many_arguments)]
pub fn video_draw(
    wid: u64,
    width: u32,
    height: u32,
    data: Bytes,
    frame: u64,
    pts: u64,
    keyframe: bool,
    csc: Csc,
) -> Vec<Value> {
    vec![
        Value::from("draw"),
        Value::uint(wid),
        Value::Int(0),
        Value::Int(0),
        Value::Int(i64::from(width)),
        Value::Int(i64::from(height)),
        Value::from("h264"),
        Value::Bytes(data),
        Value::Int(0),
        Value::Int(0),
        dict(vec![
            ("frame", Value::uint(frame)),
            ("pts", Value::uint(pts)),
            ("type", Value::from(if keyframe { "IDR" } else { "P" })),
            ("csc", Value::from(csc.name())),
        ]),
    ]
}

/// A lossless rectangle for the client: `[draw, wid, x, y, w, h,
/// "rgb32"|"rgb24", data, seq, stride, {rgb_format, lz4}]`.
pub fn rgb_draw(wid: u64, r: &RgbRect) -> Vec<Value> {
    let coding = if r.format.bytes_per_pixel() == 4 {
        "rgb32"
    } else {
        "rgb24"
    };
    let mut opts = vec![("rgb_format", Value::from(r.format.name()))];
    if r.lz4 {
        opts.push(("lz4", Value::Int(1)));
    }
    vec![
        Value::from("draw"),
        Value::uint(wid),
        Value::Int(i64::from(r.x)),
        Value::Int(i64::from(r.y)),
        Value::Int(i64::from(r.w)),
        Value::Int(i64::from(r.h)),
        Value::from(coding),
        Value::Bytes(r.data.clone()),
        Value::Int(0),
        Value::Int(i64::from(r.stride)),
        dict(opts),
    ]
}

/// Sets a draw's sequence number.
pub fn set_seq(items: &mut [Value], seq: u64) {
    if let Some(slot) = items.get_mut(DRAW_SEQ) {
        *slot = Value::uint(seq);
    }
}

/// Sets (or, with 0, removes) a draw's `flush` option.
pub fn set_flush(items: &mut Vec<Value>, flush: usize) {
    if items.len() < 11 {
        items.resize(10, Value::Int(0));
        items.push(Value::Dict(Vec::new()));
    }
    if let Some(Value::Dict(d)) = items.get_mut(10) {
        d.retain(|(k, _)| k.as_str() != Some("flush"));
        if flush > 0 {
            d.push((Value::from("flush"), Value::uint(flush as u64)));
        }
    }
}

/// `["damage-sequence", seq, wid, width, height, decode_time, message]`.
pub fn damage_sequence(
    seq: i64,
    wid: u64,
    w: i64,
    h: i64,
    decode_time: i64,
    message: &str,
) -> Vec<Value> {
    vec![
        Value::from("damage-sequence"),
        Value::Int(seq),
        Value::uint(wid),
        Value::Int(w),
        Value::Int(h),
        Value::Int(decode_time),
        Value::from(message),
    ]
}

/// A client's `damage-sequence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub seq: i64,
    pub wid: u64,
    pub decode_time: i64,
    pub message: String,
}

impl Ack {
    pub fn parse(items: &[Value]) -> Option<Ack> {
        Some(Ack {
            seq: items.get(1)?.as_int()?,
            wid: u64::try_from(items.get(2)?.as_int()?).ok()?,
            decode_time: items.get(5)?.as_int()?,
            message: items
                .get(6)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }
}

/// What the client sends for a full repaint (`send_refresh`):
/// `["buffer-refresh", wid, 0, 100, {"refresh-now": True, "batch":
/// {"reset": True}}, {}]`.
pub fn buffer_refresh(wid: u64) -> Vec<Value> {
    vec![
        Value::from("buffer-refresh"),
        Value::uint(wid),
        Value::Int(0),
        Value::Int(100),
        dict(vec![
            ("refresh-now", Value::Bool(true)),
            ("batch", dict(vec![("reset", Value::Bool(true))])),
        ]),
        Value::Dict(Vec::new()),
    ]
}

/// `["eos", wid]`: the window's video stream ended (the client frees its
/// decoder).
pub fn eos(wid: u64) -> Vec<Value> {
    vec![Value::from("eos"), Value::uint(wid)]
}

/// Window client properties a transcoded session keeps: the rest of the
/// `encoding.*` keys and every `encodings*` key go (the session then uses
/// the connection's restricted values).
const KEEP_WINDOW_PROPS: [&str; 3] = [
    "encoding.transparency",
    "encoding.send-window-size",
    "encoding.full_frames_only",
];

/// Removes the per-window encoding choices from a window's client
/// properties; whether anything was removed.
pub fn filter_window_props(props: &mut Value) -> bool {
    let Value::Dict(d) = props else {
        return false;
    };
    let before = d.len();
    d.retain(|(k, _)| {
        let key = k.as_str().unwrap_or("");
        let encodingish = key == "encoding"
            || key == "encodings"
            || key.starts_with("encoding.")
            || key.starts_with("encodings.");
        !encodingish || KEEP_WINDOW_PROPS.contains(&key)
    });
    d.len() != before
}

/// Where a packet type carries window client properties.
pub fn props_index(ptype: &str) -> Option<usize> {
    match ptype {
        "map-window" | "configure-window" => Some(6),
        "buffer-refresh" => Some(5),
        _ => None,
    }
}

/// The window and its size in a geometry packet (from either side).
pub fn geometry(ptype: &str, items: &[Value]) -> Option<(u64, i64, i64)> {
    let (wi, hi) = match ptype {
        "new-window"
        | "new-override-redirect"
        | "window-move-resize"
        | "configure-override-redirect"
        | "map-window" => (4, 5),
        // skip_geometry (item 9): a metadata-only update
        "configure-window" if items.get(9).is_some_and(Value::truthy) => return None,
        "configure-window" => (4, 5),
        "new-tray" | "window-resized" => (2, 3),
        _ => return None,
    };
    Some((
        wid_of(items)?,
        items.get(wi)?.as_int()?,
        items.get(hi)?.as_int()?,
    ))
}

/// A packet as records: byte items of [`CHUNK_THRESHOLD`] and more as raw
/// chunks, the main packet uncompressed.
pub fn encode(items: &[Value], encoder: Encoder) -> Result<Vec<Record>, PacketError> {
    let opts = EncodeOptions {
        chunk_threshold: Some(CHUNK_THRESHOLD),
        ..EncodeOptions::plain(encoder)
    };
    packet::encode_packet(items, &opts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn draw_items(coding: &str, data: Bytes, stride: i64, opts: Vec<(&str, Value)>) -> Vec<Value> {
        vec![
            Value::from("draw"),
            Value::Int(3),
            Value::Int(10),
            Value::Int(20),
            Value::Int(4),
            Value::Int(2),
            Value::from(coding),
            Value::Bytes(data),
            Value::Int(77),
            Value::Int(stride),
            dict(opts),
        ]
    }

    #[test]
    fn an_rgb24_draw_in_bgrx_is_four_bytes_per_pixel() {
        let data = Bytes::from(vec![7u8; 16 * 2 + 5]);
        let items = draw_items(
            "rgb24",
            data.clone(),
            16,
            vec![("rgb_format", "BGRX".into()), ("flush", Value::Int(2))],
        );
        let d = SessionDraw::parse(&items).unwrap();
        assert_eq!((d.wid, d.seq, d.flush()), (3, 77, 2));
        let r = d.to_rect(4096, 4096).unwrap();
        assert_eq!((r.x, r.y, r.w, r.h, r.stride), (10, 20, 4, 2, 16));
        assert_eq!(r.format, PixelFormat::Bgrx);
        // a slice of the draw's bytes, cut to stride * h
        assert_eq!(r.pixels.len(), 32);
        assert_eq!(r.pixels.as_ptr(), data.as_ptr());
    }

    #[test]
    fn unusable_draws_say_why() {
        let px = Bytes::from(vec![0u8; 32]);
        let d = |coding: &str, stride, opts| {
            SessionDraw::parse(&draw_items(coding, px.clone(), stride, opts)).unwrap()
        };
        assert!(matches!(
            d("png", 0, vec![]).to_rect(4096, 4096),
            Err(Unusable::Coding(_))
        ));
        assert!(matches!(
            d("rgb32", 16, vec![]).to_rect(12, 4096),
            Err(Unusable::Bounds { .. })
        ));
        assert!(matches!(
            d("rgb32", 8, vec![]).to_rect(4096, 4096),
            Err(Unusable::Stride { .. })
        ));
        assert!(matches!(
            d("rgb32", 20, vec![]).to_rect(4096, 4096),
            Err(Unusable::Short { .. })
        ));
        assert!(matches!(
            d("rgb32", 16, vec![("lzo", Value::Int(1))]).to_rect(4096, 4096),
            Err(Unusable::Compression(_))
        ));
        assert!(matches!(
            d("rgb32", 16, vec![("delta", Value::Int(4))]).to_rect(4096, 4096),
            Err(Unusable::Delta)
        ));
        // stride 0: packed rows; rgb24 without rgb_format is 3-byte RGB
        let r = d("rgb24", 0, vec![]).to_rect(4096, 4096).unwrap();
        assert_eq!((r.stride, r.format), (12, PixelFormat::Rgb));
        assert!(SessionDraw::parse(&draw_items("rgb24", px.clone(), 0, vec![])[..8]).is_err());
    }

    #[test]
    fn lz4_pixels_are_decompressed_within_bounds() {
        let plain = vec![9u8; 32];
        let c = compress::compress(Compressor::Lz4, 1, &plain).unwrap();
        let items = draw_items(
            "rgb32",
            Bytes::from(c),
            16,
            vec![("rgb_format", "BGRX".into()), ("lz4", Value::Int(1))],
        );
        let r = SessionDraw::parse(&items)
            .unwrap()
            .to_rect(4096, 4096)
            .unwrap();
        assert_eq!(&r.pixels[..], &plain[..]);
        // more than stride * h: refused
        let big = compress::compress(Compressor::Lz4, 1, &[1u8; 4096]).unwrap();
        let items = draw_items("rgb32", Bytes::from(big), 16, vec![("lz4", Value::Int(1))]);
        assert!(matches!(
            SessionDraw::parse(&items).unwrap().to_rect(4096, 4096),
            Err(Unusable::Decompress(_))
        ));
    }

    #[test]
    fn window_props_lose_their_encoding_choices() {
        let mut props = dict(vec![
            ("encoding.scrolling", Value::Bool(true)),
            ("encodings.rgb_formats", Value::List(vec!["RGB".into()])),
            ("encoding.full_csc_modes", Value::Dict(Vec::new())),
            ("encoding.transparency", Value::Bool(false)),
            ("workspace", Value::Int(1)),
        ]);
        assert!(filter_window_props(&mut props));
        let keys: Vec<&str> = props
            .as_dict()
            .unwrap()
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, vec!["encoding.transparency", "workspace"]);
        assert!(!filter_window_props(&mut props));
    }

    #[test]
    fn geometry_packets() {
        let items = vec![
            Value::from("configure-window"),
            Value::Int(5),
            Value::Int(0),
            Value::Int(0),
            Value::Int(640),
            Value::Int(480),
            Value::Dict(Vec::new()),
            Value::Int(0),
            Value::Dict(Vec::new()),
            Value::Bool(false),
        ];
        assert_eq!(geometry("configure-window", &items), Some((5, 640, 480)));
        let mut skip = items.clone();
        skip[9] = Value::Bool(true);
        assert_eq!(geometry("configure-window", &skip), None);
        let resized = vec![
            Value::from("window-resized"),
            Value::Int(5),
            Value::Int(300),
            Value::Int(200),
        ];
        assert_eq!(geometry("window-resized", &resized), Some((5, 300, 200)));
    }
}
