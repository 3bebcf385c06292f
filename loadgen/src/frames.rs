//! Raw-pixel frames (`loadgen server --raw-frames`): what a GPU-less xpra
//! 3.1.3 session sends a client whose hello xfwd restricted to raw rgb
//! (issue 13), and the numbers both ends keep about them.
//!
//! - `new-window` first (`server/source/windows_mixin.py`: `["new-window",
//!   wid, x, y, w, h, metadata, client_properties]`): a transcoding proxy
//!   only tracks windows it saw created;
//! - then, per frame, `["draw", wid, 0, 0, W, H, "rgb24", pixels, seq,
//!   W*4, {"rgb_format": "BGRX", "flush": 0, ...}]` with the W*H*4 pixels
//!   in raw chunk 7 (xpra's layout), `flush` 0: the frame is a batch of its
//!   own.
//!
//! Every frame differs from the one before: a diagonal gradient that pans
//! a few pixels a frame (an encoder's motion search finds it) and a band
//! of noise that moves down and changes every frame (it does not), so an
//! encoder has real work and a relay cannot pass one buffer around. The
//! options also carry `checksum` (CRC-32 of the pixels, as the other draw
//! modes), `seq`, and `loadgen-sent-us`: the session's wall clock (µs since
//! the Unix epoch) when it queued the frame, for a client on the same host
//! to time draws that keep their options (relayed rgb); a proxy's own
//! draws (h264) carry their own options, so the session also times each
//! draw until its `damage-sequence` ack comes back.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};

use xfwd::wire::frame::Record;
use xfwd::wire::packet;
use xfwd::wire::Value;

use crate::proto::{self, s, Framing};

/// The largest frame side `--frame-size` takes (xfwd transcodes up to
/// 4096x4096).
pub const MAX_SIDE: u32 = 8192;
/// The option naming the session's send time.
pub const SENT_US: &str = "loadgen-sent-us";
/// Gradient columns the pan cycles through.
const PERIOD: usize = 512;
/// Noise start positions (pixels) a band row may copy from.
const NOISE_SPAN: usize = 1 << 16;
/// Draws a connection remembers the send time of, waiting for their acks.
pub const MAX_IN_FLIGHT: usize = 4096;

/// `WxH`, each side 1 ..= [`MAX_SIDE`].
pub fn parse_size(v: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--frame-size {v}: expected WxH, e.g. 1920x1080, sides 1..={MAX_SIDE}");
    let (w, h) = v.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if !(1..=MAX_SIDE).contains(&w) || !(1..=MAX_SIDE).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

/// Microseconds since the Unix epoch (the wall clock, shared by processes
/// on one host).
pub fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Makes the frames of one size.
pub struct FrameMaker {
    pub width: usize,
    pub height: usize,
    /// One row of gradient, PERIOD pixels wider than a frame (BGRX).
    wide: Vec<u8>,
    /// Noise, NOISE_SPAN pixels wider than a frame row.
    noise: Vec<u8>,
}

impl FrameMaker {
    pub fn new(width: u32, height: u32) -> FrameMaker {
        let (w, h) = (width.max(1) as usize, height.max(1) as usize);
        let wide_px = w + PERIOD;
        let mut wide = Vec::with_capacity(wide_px * 4);
        for x in 0..wide_px {
            let t = (x % PERIOD) as u32;
            // a triangle wave: smooth, and periodic so the pan wraps
            let tri = if t < PERIOD as u32 / 2 {
                t
            } else {
                PERIOD as u32 - t
            };
            let b = (tri * 255 / (PERIOD as u32 / 2)) as u8;
            let g = ((x * 97 / wide_px.max(1)) as u8).wrapping_add(64);
            wide.extend_from_slice(&[b, g, 160 - b / 2, 0xff]);
        }
        let mut noise = vec![0u8; (w + NOISE_SPAN) * 4];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for c in noise.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = seed.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
        FrameMaker {
            width: w,
            height: h,
            wide,
            noise,
        }
    }

    /// Bytes of one frame (BGRX).
    #[cfg(test)]
    pub fn frame_len(&self) -> usize {
        self.width * self.height * 4
    }

    /// The noise band of frame `n`: first row, rows.
    pub fn band(&self, n: u64) -> (usize, usize) {
        let band_h = (self.height / 8).max(1);
        let y = (n as usize).wrapping_mul(13) % (self.height - band_h + 1);
        (y, band_h)
    }

    /// Frame `n` of window `wid`.
    pub fn frame(&self, n: u64, wid: i64) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let row = w * 4;
        let mut out = vec![0u8; row * h];
        let (band_y, band_h) = self.band(n);
        let n_us = n as usize;
        let pan = (n_us.wrapping_mul(7)).wrapping_add(wid as usize * 31);
        for (y, dst) in out.chunks_exact_mut(row).enumerate() {
            if (band_y..band_y + band_h).contains(&y) {
                let k = n_us
                    .wrapping_mul(1031)
                    .wrapping_add((y - band_y).wrapping_mul(977))
                    % NOISE_SPAN;
                dst.copy_from_slice(&self.noise[k * 4..k * 4 + row]);
            } else {
                let k = (y / 2 + pan) % PERIOD;
                dst.copy_from_slice(&self.wide[k * 4..k * 4 + row]);
            }
        }
        out
    }
}

/// `["new-window", wid, 0, 0, w, h, metadata, client_properties]`.
pub fn new_window(wid: i64, w: i64, h: i64) -> Vec<Value> {
    let dict = |pairs: Vec<(&str, Value)>| {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    };
    vec![
        s("new-window"),
        Value::Int(wid),
        Value::Int(0),
        Value::Int(0),
        Value::Int(w),
        Value::Int(h),
        dict(vec![
            ("title", s(&format!("loadgen {wid}"))),
            ("window-type", Value::List(vec![s("NORMAL")])),
        ]),
        dict(vec![]),
    ]
}

/// The items of a raw frame draw (pixels inline at index 7; the encoder
/// sends them as raw chunk 7).
pub fn raw_draw_items(
    wid: i64,
    w: i64,
    h: i64,
    pixels: Bytes,
    seq: i64,
    sent_us: i64,
) -> Vec<Value> {
    let crc = crc32fast::hash(&pixels);
    vec![
        s("draw"),
        Value::Int(wid),
        Value::Int(0),
        Value::Int(0),
        Value::Int(w),
        Value::Int(h),
        s("rgb24"),
        Value::Bytes(pixels),
        Value::Int(seq),
        Value::Int(w * 4),
        Value::Dict(vec![
            (s("rgb_format"), s("BGRX")),
            (s("flush"), Value::Int(0)),
            (s("checksum"), Value::Int(i64::from(crc))),
            (s("seq"), Value::Int(seq)),
            (s(SENT_US), Value::Int(sent_us)),
        ]),
    ]
}

/// The records of a raw frame draw, ready to write: `(chunk header,
/// pixels, main)`.
pub fn raw_draw(
    framing: &Framing,
    wid: i64,
    w: i64,
    h: i64,
    pixels: Bytes,
    seq: i64,
    sent_us: i64,
) -> Result<[Bytes; 3], String> {
    let items = raw_draw_items(wid, w, h, pixels, seq, sent_us);
    let records =
        packet::encode_packet(&items, &framing.options(true)).map_err(|e| e.to_string())?;
    let [chunk, main] = <[Record; 2]>::try_from(records)
        .map_err(|r| format!("raw draw gave {} records", r.len()))?;
    Ok([
        Bytes::copy_from_slice(&chunk.header.to_bytes()),
        chunk.payload,
        main.to_bytes(),
    ])
}

/// What the session sent one connection, and how long its acks took.
pub struct ConnFrames {
    /// The client's `uuid` (its hello's), as the client knows it.
    pub uuid: String,
    pub frames: u64,
    /// Bytes of the draws' records (headers, pixels, main packets).
    pub bytes: u64,
    /// Pixel bytes.
    pub data_bytes: u64,
    pub acked: u64,
    /// Send to ack, microseconds.
    pub ack_us: Histogram<u64>,
    pub started: Instant,
    pub last_frame: Option<Instant>,
    pub open: bool,
    /// Draws sent and not acknowledged yet: (seq, sent).
    in_flight: VecDeque<(i64, Instant)>,
}

impl ConnFrames {
    pub fn new(uuid: String, now: Instant) -> ConnFrames {
        ConnFrames {
            uuid,
            frames: 0,
            bytes: 0,
            data_bytes: 0,
            acked: 0,
            ack_us: crate::report::histogram_up_to(100_000_000),
            started: now,
            last_frame: None,
            open: true,
            in_flight: VecDeque::new(),
        }
    }

    pub fn sent(&mut self, seq: i64, bytes: u64, data_bytes: u64, now: Instant) {
        self.frames += 1;
        self.bytes += bytes;
        self.data_bytes += data_bytes;
        self.last_frame = Some(now);
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            // nobody acks (a free-running session): remember the latest
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((seq, now));
    }

    /// An ack of every draw up to `seq` (loadgen's sessions count acks
    /// cumulatively).
    pub fn acked(&mut self, seq: i64, now: Instant) {
        while let Some(&(s, at)) = self.in_flight.front() {
            if s > seq {
                break;
            }
            self.in_flight.pop_front();
            self.acked += 1;
            let us = now.saturating_duration_since(at).as_micros() as u64;
            let _ = self.ack_us.record(us.max(1));
        }
    }

    pub fn to_json(&self) -> Json {
        let secs = self.last_frame.map_or(0.0, |l| {
            l.saturating_duration_since(self.started).as_secs_f64()
        });
        json!({
            "uuid": self.uuid,
            "open": self.open,
            "frames": self.frames,
            "bytes": self.bytes,
            "data_bytes": self.data_bytes,
            "acked": self.acked,
            "frames_per_s": if secs > 0.0 { self.frames as f64 / secs } else { 0.0 },
            "ack_us": histogram_json(&self.ack_us),
        })
    }
}

/// A histogram's summary and its recorded values (`[[value, count], ...]`,
/// so that a reader can merge several).
pub fn histogram_json(h: &Histogram<u64>) -> Json {
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let values: Vec<Json> = h
        .iter_recorded()
        .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
        .collect();
    json!({
        "p50": q(0.5),
        "p99": q(0.99),
        "max": h.max(),
        "count": h.len(),
        "values": values,
    })
}

/// Adds a [`histogram_json`]'s values to `h`.
pub fn merge_histogram_json(h: &mut Histogram<u64>, j: &Json) {
    let Some(values) = j["values"].as_array() else {
        return;
    };
    for v in values {
        if let (Some(value), Some(count)) = (v[0].as_u64(), v[1].as_u64()) {
            let _ = h.record_n(value.max(1), count);
        }
    }
}

/// Every connection's numbers, kept for the stats file (closed ones too,
/// the latest [`MAX_KEPT`]).
#[derive(Default)]
pub struct SessionFrames {
    next: u64,
    pub conns: BTreeMap<u64, ConnFrames>,
}

/// Closed connections kept in the stats file.
pub const MAX_KEPT: usize = 1024;

impl SessionFrames {
    pub fn open(&mut self, uuid: String, now: Instant) -> u64 {
        self.next += 1;
        self.conns.insert(self.next, ConnFrames::new(uuid, now));
        while self.conns.len() > MAX_KEPT {
            let Some(oldest_closed) = self.conns.iter().find(|(_, c)| !c.open).map(|(k, _)| *k)
            else {
                break;
            };
            self.conns.remove(&oldest_closed);
        }
        self.next
    }

    pub fn to_json(&self) -> Json {
        let conns: Vec<Json> = self.conns.values().map(ConnFrames::to_json).collect();
        json!({ "written_us": wall_us(), "connections": conns })
    }
}

/// A client's merge of the session's numbers for its own connections (by
/// uuid) from a stats file.
#[derive(Debug, Default, PartialEq)]
pub struct SessionView {
    pub connections: u64,
    pub frames: u64,
    pub bytes: u64,
    pub data_bytes: u64,
    pub acked: u64,
}

pub fn session_view(
    file: &Json,
    uuids: &std::collections::BTreeSet<String>,
    ack_us: &mut Histogram<u64>,
) -> SessionView {
    let mut v = SessionView::default();
    for c in file["connections"].as_array().into_iter().flatten() {
        let ours = c["uuid"].as_str().is_some_and(|u| uuids.contains(u));
        if !ours {
            continue;
        }
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        v.connections += 1;
        v.frames += n("frames");
        v.bytes += n("bytes");
        v.data_bytes += n("data_bytes");
        v.acked += n("acked");
        merge_histogram_json(ack_us, &c["ack_us"]);
    }
    v
}

/// Writes `text` to `path` through a temporary file and a rename (a reader
/// never sees half a file).
pub fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Whether a received draw is one of the raw frames: its options name the
/// session's send time; returns it.
pub fn sent_us_of(items: &[Value]) -> Option<i64> {
    items.get(10)?.get(SENT_US).and_then(Value::as_int)
}

/// A draw's coding (argument 6).
pub fn coding_of(items: &[Value]) -> Option<&str> {
    items.get(6).and_then(|v| v.as_str())
}

/// Pixel bytes of a draw: its raw chunk's length, or the inline bytes.
pub fn data_len(items: &[Value], chunk: Option<(usize, u32)>) -> usize {
    chunk.map(|(len, _)| len).unwrap_or_else(|| {
        items
            .get(proto::PIXELS_INDEX)
            .and_then(Value::as_bytes)
            .map_or(0, <[u8]>::len)
    })
}

/// What `loadgen client --video` adds to a 3.1 client's hello: h264 first
/// in `encodings` and `encodings.core`, the colour spaces its decoder takes
/// (`encoding.full_csc_modes`), the largest video it decodes, BGRX among
/// its rgb formats (as Debian's xpra 3.1.3 client says it).
pub fn add_video_caps(caps: &mut Vec<(Value, Value)>) {
    let strs = |v: &[&str]| Value::List(v.iter().map(|x| Value::from(*x)).collect());
    let set = |caps: &mut Vec<(Value, Value)>, k: &str, v: Value| {
        caps.retain(|(key, _)| key.as_str() != Some(k));
        caps.push((Value::from(k), v));
    };
    set(caps, "encodings", strs(&["h264", "rgb32", "rgb24"]));
    set(caps, "encodings.core", strs(&["h264", "rgb32", "rgb24"]));
    set(
        caps,
        "encoding.full_csc_modes",
        Value::Dict(vec![(
            Value::from("h264"),
            strs(&["YUV420P", "YUV422P", "YUV444P"]),
        )]),
    );
    set(
        caps,
        "encoding.video_max_size",
        Value::List(vec![Value::Int(4096), Value::Int(4096)]),
    );
    set(
        caps,
        "encoding.rgb_formats",
        strs(&["BGRX", "BGRA", "RGBX", "RGBA"]),
    );
    set(caps, "encoding.flush", Value::Bool(true));
}

/// `loadgen client --video`: what arrived.
pub struct VideoStats {
    /// Draws per coding (`h264`, `rgb32`, ...).
    pub by_coding: BTreeMap<String, u64>,
    /// Pixel bytes (raw chunks or inline) of every draw.
    pub data_bytes: u64,
    /// Session send to client receipt (µs, wall clocks), for draws that
    /// carry the session's `loadgen-sent-us`.
    pub latency_us: Histogram<u64>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// The uuids of the connections that got the server's hello.
    pub uuids: std::collections::BTreeSet<String>,
}

impl Default for VideoStats {
    fn default() -> Self {
        VideoStats {
            by_coding: BTreeMap::new(),
            data_bytes: 0,
            latency_us: crate::report::histogram_up_to(100_000_000),
            first: None,
            last: None,
            uuids: Default::default(),
        }
    }
}

impl VideoStats {
    pub fn frame(
        &mut self,
        coding: &str,
        data_bytes: usize,
        latency_us: Option<u64>,
        now: Instant,
    ) {
        if self.by_coding.len() < 32 || self.by_coding.contains_key(coding) {
            *self.by_coding.entry(coding.to_owned()).or_default() += 1;
        }
        self.data_bytes += data_bytes as u64;
        if let Some(l) = latency_us {
            let _ = self.latency_us.record(l.max(1));
        }
        self.first = Some(self.first.map_or(now, |f| f.min(now)));
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    pub fn merge(&mut self, o: &VideoStats) {
        for (k, v) in &o.by_coding {
            *self.by_coding.entry(k.clone()).or_default() += v;
        }
        self.data_bytes += o.data_bytes;
        let _ = self.latency_us.add(&o.latency_us);
        self.first = match (self.first, o.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last, o.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.uuids.extend(o.uuids.iter().cloned());
    }

    pub fn frames(&self) -> u64 {
        self.by_coding.values().sum()
    }
}

/// Reads the session's stats file once the session has seen every one of
/// `uuids` close (or `wait` has passed: then what is there, marked
/// `complete: false`).
pub fn read_session_stats(
    path: &std::path::Path,
    uuids: &std::collections::BTreeSet<String>,
    wait: std::time::Duration,
) -> Result<(SessionView, Histogram<u64>, bool), String> {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()));
        let parsed = text.and_then(|t| {
            serde_json::from_str::<Json>(&t).map_err(|e| format!("{}: {e}", path.display()))
        });
        let done = |j: &Json| {
            let ours: Vec<&Json> = j["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["uuid"].as_str().is_some_and(|u| uuids.contains(u)))
                .collect();
            ours.len() == uuids.len() && ours.iter().all(|c| c["open"] == false)
        };
        match parsed {
            Ok(j) if done(&j) || Instant::now() >= deadline => {
                let complete = done(&j);
                let mut h = crate::report::histogram_up_to(100_000_000);
                let v = session_view(&j, uuids, &mut h);
                return Ok((v, h, complete));
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use xfwd::wire::header::Encoder;

    #[test]
    fn sizes_parse_within_bounds() {
        assert_eq!(parse_size("1920x1080"), Ok((1920, 1080)));
        assert_eq!(parse_size("64X48"), Ok((64, 48)));
        for bad in ["", "1920", "0x10", "10x0", "9000x10", "ax1", "10x-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_change_and_have_the_right_size() {
        let m = FrameMaker::new(64, 48);
        assert_eq!(m.frame_len(), 64 * 48 * 4);
        let a = m.frame(1, 1);
        let b = m.frame(2, 1);
        assert_eq!(a.len(), m.frame_len());
        assert_ne!(a, b, "consecutive frames differ");
        assert_eq!(a, m.frame(1, 1), "a frame is a function of its number");
        // the noise band moves, and its rows are noise, not gradient
        let (ya, hb) = m.band(1);
        let (yb, _) = m.band(2);
        assert_ne!(ya, yb);
        assert_eq!(hb, 6);
        let gradient = |r: &[u8]| (0..PERIOD).any(|k| m.wide[k * 4..k * 4 + 256] == *r);
        let row = |f: &[u8], y: usize| f[y * 256..(y + 1) * 256].to_vec();
        assert!(!gradient(&row(&a, ya)), "band row is noise");
        assert!(
            gradient(&row(&a, (ya + hb) % 48)),
            "other rows are gradient"
        );
        // BGRX, X opaque outside the noise band
        assert_eq!(a[3], 0xff);
        // odd sizes too
        let m = FrameMaker::new(1, 1);
        assert_eq!(m.frame(7, 3).len(), 4);
    }

    #[test]
    fn raw_draw_is_a_313_rgb24_draw_with_pixels_in_chunk_7() {
        let m = FrameMaker::new(32, 16);
        let px = Bytes::from(m.frame(3, 2));
        for enc in [Encoder::Rencode, Encoder::Bencode, Encoder::Rencodeplus] {
            let f = Framing::plain(enc);
            let [hdr, pixels, main] = raw_draw(&f, 2, 32, 16, px.clone(), 9, 1234).unwrap();
            assert_eq!(hdr[3], 7, "raw chunk index");
            assert_eq!(pixels, px);
            let mut reader = crate::net::RecordReader::new(1 << 20);
            let mut items = Vec::new();
            for part in [&hdr, &pixels, &main] {
                reader.feed(part, &mut items).unwrap();
            }
            let crate::net::Item::Chunk { len, crc, .. } = items[0] else {
                panic!()
            };
            assert_eq!(len, 32 * 16 * 4);
            let crate::net::Item::Main(ref rec) = items[1] else {
                panic!()
            };
            let p = proto::decode(rec).unwrap();
            let it = &p.items;
            assert_eq!(p.packet_type(), Some("draw"));
            let ints: Vec<i64> = [1, 2, 3, 4, 5, 8, 9]
                .iter()
                .map(|i| it[*i].as_int().unwrap())
                .collect();
            assert_eq!(ints, vec![2, 0, 0, 32, 16, 9, 32 * 4]);
            assert_eq!(coding_of(it), Some("rgb24"));
            let o = &it[10];
            assert_eq!(o.get("rgb_format").and_then(Value::as_str), Some("BGRX"));
            assert_eq!(o.get("flush").and_then(Value::as_int), Some(0));
            assert_eq!(sent_us_of(it), Some(1234));
            assert_eq!(data_len(it, Some((len, crc))), 32 * 16 * 4);
            assert_eq!(
                proto::check_draw(it, Some((len, crc))),
                Some(proto::DrawCheck { seq: 9, ok: true })
            );
        }
    }

    #[test]
    fn new_window_names_its_geometry() {
        let p = new_window(3, 1920, 1080);
        assert_eq!(p[0].as_str(), Some("new-window"));
        let ints: Vec<i64> = p[1..6].iter().map(|v| v.as_int().unwrap()).collect();
        assert_eq!(ints, vec![3, 0, 0, 1920, 1080]);
        assert!(matches!(p[6], Value::Dict(_)));
        assert!(matches!(p[7], Value::Dict(_)));
    }

    #[test]
    fn acks_time_every_draw_they_cover_once() {
        let t0 = Instant::now();
        let mut c = ConnFrames::new("u".into(), t0);
        for seq in 1..=5 {
            c.sent(seq, 100, 64, t0);
        }
        c.acked(3, t0 + std::time::Duration::from_millis(5));
        assert_eq!(c.acked, 3);
        c.acked(3, t0 + std::time::Duration::from_millis(9));
        assert_eq!(c.acked, 3, "an ack counts once");
        c.acked(10, t0 + std::time::Duration::from_millis(7));
        assert_eq!(c.acked, 5);
        assert_eq!((c.frames, c.bytes, c.data_bytes), (5, 500, 320));
        let j = c.to_json();
        assert_eq!(j["ack_us"]["count"], 5);
        // a reader merges the recorded values back
        let mut file = SessionFrames::default();
        let id = file.open("u".into(), t0);
        *file.conns.get_mut(&id).unwrap() = c;
        file.open("someone-else".into(), t0);
        let mut h = crate::report::histogram_up_to(100_000_000);
        let uuids = ["u".to_owned()].into_iter().collect();
        let v = session_view(&file.to_json(), &uuids, &mut h);
        assert_eq!(
            v,
            SessionView {
                connections: 1,
                frames: 5,
                bytes: 500,
                data_bytes: 320,
                acked: 5
            }
        );
        assert_eq!(h.len(), 5);
        assert!(h.value_at_quantile(0.5) >= 4_990);
    }

    #[test]
    fn in_flight_is_bounded() {
        let t0 = Instant::now();
        let mut c = ConnFrames::new("u".into(), t0);
        for seq in 1..=(MAX_IN_FLIGHT as i64 + 10) {
            c.sent(seq, 1, 1, t0);
        }
        assert_eq!(c.in_flight.len(), MAX_IN_FLIGHT);
    }
}
