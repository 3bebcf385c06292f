//! Capabilities: whether a client can decode what the workers make, and
//! the hello the session gets when its draws are transcoded.
//!
//! What was checked in xpra 3.1.3 (Debian's, `/usr/lib/python3/dist-packages/xpra`):
//!
//! - the client's hello (`client/mixins/encodings.py`) lists `encodings`
//!   (with `h264` when its avcodec decoder loaded), `encoding.full_csc_modes`
//!   (per encoding, the colour spaces its decoders take: the captured 3.1.3
//!   hello has YUV420P and YUV444P for h264), `encoding.video_max_size`
//!   (`[4096, 4096]`), `encoding.rgb_lz4` and `encoding.rgb_formats`
//!   (`RGB`, `RGBX`, `RGBA`);
//! - its paint code takes more than that list says: `draw_region` reads the
//!   bytes per pixel from the draw's `rgb_format` option, whatever the coding
//!   (`rgb24`/`rgb32`), and the GTK3 cairo backing
//!   (`client/gtk3/cairo_backing.py` with `cairo_workaround`'s
//!   `CAIRO_FORMATS`: RGB24 surfaces take `RGB`, `RGBX`, `BGR`, `BGRX`;
//!   ARGB32 surfaces, used for windows with alpha, take `BGRX`, `BGRA`) and
//!   the OpenGL backing (`client/gl/gl_window_backing_base.py`: `BGRX`
//!   uploads as `GL_BGRA`) paint `BGRX` on their fast paths. `RGBX` on an
//!   ARGB32 surface goes through a GdkPixbuf with its X byte read as alpha.
//!   So a Python client gets `BGRX` (what the workers' framebuffers hold: no
//!   swizzle); others get a 4-byte format they list.
//! - the session (`server/source/encodings_mixin.py` `parse_client_caps` /
//!   `parse_encoding_caps`, `server/window/window_source.py`
//!   `WindowSource.__init__`, `window_video_source.py`) reads: `encodings`,
//!   `encodings.core`, `encoding`, `encodings.rgb_formats` then
//!   `encoding.rgb_formats` (the latter wins), every `encoding.*` key as an
//!   encoding option, the top-level `zlib`/`lz4` as `rgb_zlib`/`rgb_lz4`
//!   unless `encoding.rgb_zlib`/`encoding.rgb_lz4` say otherwise, and
//!   `rgb_zlib` defaults to *True* when absent (so it is set to False here,
//!   not removed); `encoding.supports_delta`, `encoding.scrolling`,
//!   `encoding.video_scaling`, `encoding.flush` (the `flush` draw option
//!   that delimits a batch is only sent when it is true), `mmap*`.
//!
//! xpra 6 clients (the captured 6.5 hello) nest their capabilities
//! (`encoding` is a dict, `encodings` a dict with a `""` key). The 6.5
//! client captured decodes no h264 at all (its encodings: webp, png, rgb),
//! and xpra 6 cannot talk to a 3.1 session (no common packet encoder), so
//! nested hellos are not transcoded: [`client_video`] returns `None` for
//! them and the connection is relayed as it is.

use crate::wire::Value;

use super::job::{Csc, PixelFormat};

/// The largest window size transcoded, whatever the client says.
pub const MAX_VIDEO_SIZE: u32 = 4096;
/// Quality and speed when the client does not fix them (xpra's 0..=100).
pub const DEFAULT_QUALITY: u8 = 70;
pub const DEFAULT_SPEED: u8 = 80;

/// What a transcoded client takes, read from its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVideo {
    /// Sampling for h264 frames (4:2:0 when the client lists it for h264,
    /// else 4:4:4).
    pub csc: Csc,
    /// The largest video size it decodes (`encoding.video_max_size`).
    pub max_width: u32,
    pub max_height: u32,
    /// The format of lossless rectangles sent to it.
    pub rgb_format: PixelFormat,
    /// It takes lz4-compressed rgb (`encoding.rgb_lz4`).
    pub lz4: bool,
    /// h264 quality and speed (xpra's 0..=100): the client's
    /// `encoding.quality` / `encoding.speed` when it fixes them (1..=100),
    /// else [`DEFAULT_QUALITY`] / [`DEFAULT_SPEED`], never below its
    /// `encoding.min-quality` / `encoding.min-speed`.
    pub quality: u8,
    pub speed: u8,
}

fn percent(caps: &Value, key: &str, min_key: &str, default: u8) -> u8 {
    let fixed = caps
        .get(key)
        .and_then(Value::as_int)
        .filter(|v| (1..=100).contains(v));
    let min = caps
        .get(min_key)
        .and_then(Value::as_int)
        .filter(|v| (0..=100).contains(v))
        .unwrap_or(0);
    let v = fixed.unwrap_or(i64::from(default)).max(min);
    u8::try_from(v.clamp(0, 100)).unwrap_or(default)
}

/// The lossless format for a client (see the module doc): `BGRX` when it
/// lists it or is one of xpra's Python clients, else the first of `RGBX`,
/// `RGB`, `BGR` it lists.
fn pick_rgb_format(caps: &Value) -> Option<PixelFormat> {
    let listed: Vec<&str> = caps
        .get("encoding.rgb_formats")
        .or_else(|| caps.get("encodings.rgb_formats"))
        .map(Value::as_str_list)
        .unwrap_or_default();
    let python = caps
        .get("client_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("Python/"));
    if python || listed.contains(&"BGRX") {
        return Some(PixelFormat::Bgrx);
    }
    [PixelFormat::Rgbx, PixelFormat::Rgb, PixelFormat::Bgr]
        .into_iter()
        .find(|f| listed.contains(&f.name()))
}

/// `Some` when the client's hello says it decodes h264 in a sampling the
/// workers make; `None`: the connection is relayed as it is.
pub fn client_video(caps: &Value) -> Option<ClientVideo> {
    // Nested (xpra >= 4 rencodeplus) capabilities: not transcoded.
    if matches!(caps.get("encoding"), Some(Value::Dict(_)))
        || matches!(caps.get("encodings"), Some(Value::Dict(_)))
    {
        return None;
    }
    let encodings = caps.get("encodings")?.as_str_list();
    if !encodings.contains(&"h264") {
        return None;
    }
    let modes = caps
        .get("encoding.full_csc_modes")?
        .get("h264")?
        .as_str_list();
    let csc = if modes.contains(&"YUV420P") {
        Csc::Yuv420p
    } else if modes.contains(&"YUV444P") {
        Csc::Yuv444p
    } else {
        return None;
    };
    let (mut max_width, mut max_height) = (MAX_VIDEO_SIZE, MAX_VIDEO_SIZE);
    let size = caps.get("encoding.video_max_size").and_then(Value::as_list);
    if let Some([w, h]) = size {
        if let (Some(w), Some(h)) = (w.as_int(), h.as_int()) {
            let clamp = |v: i64| u32::try_from(v.clamp(0, i64::from(MAX_VIDEO_SIZE))).ok();
            max_width = clamp(w)?;
            max_height = clamp(h)?;
        }
    }
    // A client that decodes nothing of a useful size.
    if max_width < 16 || max_height < 16 {
        return None;
    }
    let rgb_format = pick_rgb_format(caps)?;
    let lz4 = caps
        .get("encoding.rgb_lz4")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(ClientVideo {
        csc,
        max_width,
        max_height,
        rgb_format,
        lz4,
        quality: percent(
            caps,
            "encoding.quality",
            "encoding.min-quality",
            DEFAULT_QUALITY,
        ),
        speed: percent(caps, "encoding.speed", "encoding.min-speed", DEFAULT_SPEED),
    })
}

/// Keys removed from the session's hello: every one that starts with one of
/// these.
const REMOVE_PREFIXES: [&str; 2] = ["mmap", "aliases"];
/// Keys removed from the session's hello (exactly, or as a prefix followed
/// by `.`).
const REMOVE_KEYS: [&str; 8] = [
    "encoding.rgb24zlib",
    "encoding.rgb_brotli",
    "encoding.full_csc_modes",
    "encoding.proxy",
    "encoding.delta_buckets",
    "encoding.scrolling",
    "encoding.video_scaling",
    "encoding.supports_delta",
];

/// The rgb formats the session may send (the workers take all of them).
pub const SESSION_RGB_FORMATS: [PixelFormat; 6] = [
    PixelFormat::Bgrx,
    PixelFormat::Bgra,
    PixelFormat::Rgbx,
    PixelFormat::Rgba,
    PixelFormat::Rgb,
    PixelFormat::Bgr,
];

fn matches_key(key: &str, k: &str) -> bool {
    key == k
        || key
            .strip_prefix(k)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Restricts the hello the session gets (the client's capabilities, as
/// `proxy::upstream_hello` made them) to raw rgb draws the proxy can read:
/// no `mmap*`, no `aliases*`, encodings `rgb` only (core `rgb24`,
/// `rgb32`), no pixel compression, no scrolling, no video scaling, no
/// delta.
pub fn restrict_upstream_hello(caps: &mut Vec<(Value, Value)>) {
    caps.retain(|(k, _)| {
        let key = k.as_str().unwrap_or("");
        !REMOVE_PREFIXES.iter().any(|p| key.starts_with(p))
            && !REMOVE_KEYS.iter().any(|r| matches_key(key, r))
    });
    let strs = |l: &[&str]| Value::List(l.iter().map(|s| Value::from(*s)).collect());
    let formats: Vec<&str> = SESSION_RGB_FORMATS.iter().map(|f| f.name()).collect();
    let set: [(&str, Value); 12] = [
        ("encodings", strs(&["rgb"])),
        ("encodings.core", strs(&["rgb24", "rgb32"])),
        ("encoding", Value::from("rgb")),
        ("encoding.rgb_zlib", Value::Bool(false)),
        ("encoding.rgb_lz4", Value::Bool(false)),
        ("encoding.rgb_lzo", Value::Bool(false)),
        ("encoding.scrolling", Value::Bool(false)),
        ("encoding.video_scaling", Value::Bool(false)),
        ("encoding.supports_delta", Value::List(Vec::new())),
        ("encoding.flush", Value::Bool(true)),
        ("encoding.rgb_formats", strs(&formats)),
        ("encodings.rgb_formats", strs(&formats)),
    ];
    for (k, v) in set {
        caps.retain(|(key, _)| key.as_str() != Some(k));
        caps.push((Value::from(k), v));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::frame::{Limits, Record};
    use crate::wire::header::{Header, Rules, HEADER_LEN};
    use crate::wire::packet;
    use bytes::Bytes;

    fn fixture(name: &str) -> Vec<(Value, Value)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        let data = std::fs::read(path).unwrap();
        let head: [u8; HEADER_LEN] = data[..HEADER_LEN].try_into().unwrap();
        let header = Header::parse(&head, Rules::Any).unwrap();
        let record = Record {
            header,
            payload: Bytes::copy_from_slice(&data[HEADER_LEN..]),
        };
        let p = packet::decode_main(&record, &Limits::session_hello()).unwrap();
        match p.items.into_iter().nth(1).unwrap() {
            Value::Dict(d) => d,
            other => panic!("hello caps: {other:?}"),
        }
    }

    #[test]
    fn the_31_client_decodes_h264_420_and_takes_bgrx() {
        let caps = Value::Dict(fixture("hello-xpra31-client.bin"));
        let v = client_video(&caps).unwrap();
        assert_eq!(v.csc, Csc::Yuv420p);
        assert_eq!((v.max_width, v.max_height), (4096, 4096));
        assert_eq!(v.rgb_format, PixelFormat::Bgrx);
        assert!(v.lz4);
        // speed 0 (auto) and min-speed 30; no quality, min-quality 30
        assert_eq!(v.speed, DEFAULT_SPEED);
        assert_eq!(v.quality, DEFAULT_QUALITY);
    }

    #[test]
    fn the_6_client_is_not_transcoded() {
        let caps = Value::Dict(fixture("hello-xpra6-client.bin"));
        assert_eq!(client_video(&caps), None);
    }

    fn caps(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    fn strs(l: &[&str]) -> Value {
        Value::List(l.iter().map(|s| Value::from(*s)).collect())
    }

    fn csc_modes(h264: &[&str]) -> Value {
        Value::Dict(vec![(Value::from("h264"), strs(h264))])
    }

    #[test]
    fn a_client_without_h264_gets_none() {
        let c = caps(&[
            ("encodings", strs(&["png", "rgb", "vp8"])),
            ("encoding.full_csc_modes", csc_modes(&["YUV420P"])),
            ("encoding.rgb_formats", strs(&["BGRX"])),
        ]);
        assert_eq!(client_video(&c), None);
        // h264 without a sampling the workers make
        let c = caps(&[
            ("encodings", strs(&["h264"])),
            ("encoding.full_csc_modes", csc_modes(&["YUV422P", "BGRX"])),
            ("encoding.rgb_formats", strs(&["BGRX"])),
        ]);
        assert_eq!(client_video(&c), None);
        // no rgb format the workers make
        let c = caps(&[
            ("encodings", strs(&["h264"])),
            ("encoding.full_csc_modes", csc_modes(&["YUV420P"])),
            ("encoding.rgb_formats", strs(&["RGBA", "r210"])),
        ]);
        assert_eq!(client_video(&c), None);
    }

    #[test]
    fn choices_follow_the_client() {
        let c = caps(&[
            ("encodings", strs(&["h264"])),
            ("encoding.full_csc_modes", csc_modes(&["YUV444P"])),
            ("encoding.rgb_formats", strs(&["RGB", "RGBX"])),
            (
                "encoding.video_max_size",
                Value::List(vec![Value::Int(1920), Value::Int(99999)]),
            ),
            ("encoding.quality", Value::Int(40)),
            ("encoding.min-quality", Value::Int(50)),
            ("encoding.speed", Value::Int(90)),
            ("client_type", Value::from("HTML5")),
        ]);
        let v = client_video(&c).unwrap();
        assert_eq!(v.csc, Csc::Yuv444p);
        assert_eq!((v.max_width, v.max_height), (1920, 4096));
        assert_eq!(v.rgb_format, PixelFormat::Rgbx);
        assert!(!v.lz4);
        assert_eq!((v.quality, v.speed), (50, 90));
    }

    #[test]
    fn the_session_hello_asks_for_raw_rgb_only() {
        let mut c = fixture("hello-xpra31-client.bin");
        assert!(c.iter().any(|(k, _)| k.as_str() == Some("aliases")));
        c.push((Value::from("mmap"), Value::Bool(true)));
        c.push((Value::from("mmap_file"), Value::from("/tmp/x")));
        c.push((Value::from("mmap_token"), Value::Int(7)));
        c.push((Value::from("encoding.scrolling"), Value::Bool(true)));
        restrict_upstream_hello(&mut c);
        let v = Value::Dict(c.clone());
        let keys: Vec<&str> = c.iter().filter_map(|(k, _)| k.as_str()).collect();
        assert!(!keys.iter().any(|k| k.starts_with("mmap")), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("aliases")));
        for k in [
            "encoding.rgb24zlib",
            "encoding.rgb_brotli",
            "encoding.full_csc_modes",
        ] {
            assert!(!keys.contains(&k), "{k}");
        }
        // every key once
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());
        assert_eq!(v.get("encodings").unwrap().as_str_list(), vec!["rgb"]);
        assert_eq!(
            v.get("encodings.core").unwrap().as_str_list(),
            vec!["rgb24", "rgb32"]
        );
        assert_eq!(v.get("encoding").unwrap().as_str(), Some("rgb"));
        for k in [
            "encoding.rgb_zlib",
            "encoding.rgb_lz4",
            "encoding.rgb_lzo",
            "encoding.scrolling",
            "encoding.video_scaling",
        ] {
            assert_eq!(v.get(k), Some(&Value::Bool(false)), "{k}");
        }
        assert_eq!(v.get("encoding.flush"), Some(&Value::Bool(true)));
        assert_eq!(
            v.get("encoding.supports_delta"),
            Some(&Value::List(Vec::new()))
        );
        let formats = v.get("encoding.rgb_formats").unwrap().as_str_list();
        assert_eq!(formats.len(), 6);
        assert!(formats.iter().all(|f| PixelFormat::parse(f).is_some()));
        assert_eq!(
            v.get("encodings.rgb_formats").unwrap().as_str_list(),
            formats
        );
        // the rest is untouched
        assert_eq!(v.get("version").unwrap().as_str(), Some("3.1.3"));
        assert_eq!(v.get("encoding.min-quality"), Some(&Value::Int(30)));
    }
}
