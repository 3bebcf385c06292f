//! The packets loadgen sends and reads: hellos shaped like xpra's (3.1 for
//! rencode / bencode peers, 6.x for rencodeplus peers), challenges, draws,
//! pings. Framing and value codecs are xfwd's `wire`.

use bytes::{Bytes, BytesMut};

use xfwd::wire::frame::{Limits, Record};
use xfwd::wire::header::{Compressor, Encoder};
use xfwd::wire::packet::{self, EncodeOptions, Packet};
use xfwd::wire::Value;

/// The version loadgen claims to legacy peers (Debian 12's xpra).
pub const LEGACY_VERSION: &str = "3.1.3";
/// The version loadgen claims to rencodeplus peers.
pub const MODERN_VERSION: &str = "6.3";
/// Raw-chunk index of a draw's pixels (xpra: argument 7).
pub const PIXELS_INDEX: usize = 7;

/// How packets are framed toward one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    pub encoder: Encoder,
    /// Compressor for main packets (raw chunks are never compressed).
    pub compressor: Compressor,
}

impl Framing {
    pub fn plain(encoder: Encoder) -> Framing {
        Framing {
            encoder,
            compressor: Compressor::None,
        }
    }

    pub(crate) fn options(&self, chunks: bool) -> EncodeOptions {
        EncodeOptions {
            encoder: self.encoder,
            compressor: self.compressor,
            level: if self.compressor == Compressor::None {
                0
            } else {
                1
            },
            min_compress: 378,
            chunk_threshold: chunks.then_some(0),
            flush: self.encoder == Encoder::Rencodeplus,
        }
    }
}

/// Encodes a packet (no raw chunks) into one buffer of records.
pub fn encode(items: &[Value], framing: &Framing) -> Result<Bytes, String> {
    let records =
        packet::encode_packet(items, &framing.options(false)).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    for r in &records {
        r.write_to(&mut out);
    }
    Ok(out.freeze())
}

/// Decodes a main-packet record.
pub fn decode(record: &Record) -> Result<Packet, String> {
    packet::decode_main(record, &Limits::default()).map_err(|e| e.to_string())
}

pub fn s(v: &str) -> Value {
    Value::from(v)
}

fn strs(v: &[&str]) -> Value {
    Value::List(v.iter().map(|x| Value::from(*x)).collect())
}

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// A hex uuid like xpra's `get_hex_uuid()`.
pub fn hex_uuid() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a client puts in its hello.
pub struct ClientHello<'a> {
    pub encoder: Encoder,
    pub compress: Compressor,
    pub username: Option<&'a str>,
    pub display: Option<&'a str>,
    pub uuid: &'a str,
}

/// A client hello's capabilities: a 3.1 client's for rencode / bencode, a
/// 6.x client's for rencodeplus.
pub fn client_caps(h: &ClientHello<'_>) -> Vec<(Value, Value)> {
    let compressors: Vec<&str> = match h.compress {
        Compressor::None => vec![],
        c => vec![c.name()],
    };
    let level = i64::from(h.compress != Compressor::None);
    let mut caps: Vec<(&str, Value)> = Vec::new();
    if h.encoder == Encoder::Rencodeplus {
        caps.extend([
            ("version", s(MODERN_VERSION)),
            ("build.version", s(MODERN_VERSION)),
            ("encoders", strs(&["rencodeplus"])),
            ("compressors", strs(&compressors)),
            ("compression_level", Value::Int(level)),
            (
                "digest",
                strs(&[
                    "hmac+sha512",
                    "hmac+sha384",
                    "hmac+sha256",
                    "hmac+sha224",
                    "hmac+sha1",
                    "xor",
                ]),
            ),
            (
                "salt-digest",
                strs(&[
                    "hmac+sha512",
                    "hmac+sha384",
                    "hmac+sha256",
                    "hmac+sha224",
                    "hmac+sha1",
                ]),
            ),
            (
                "display",
                dict(vec![("dpi", Value::Int(96)), ("depth", Value::Int(24))]),
            ),
        ]);
        if let Some(d) = h.display {
            caps.push(("session", dict(vec![("display", s(d))])));
        }
    } else {
        let encoders: Vec<&str> = if h.encoder == Encoder::Rencode {
            vec!["rencode", "bencode"]
        } else {
            vec!["bencode"]
        };
        caps.extend([
            ("version", s(LEGACY_VERSION)),
            ("build.version", s(LEGACY_VERSION)),
            ("encoders", strs(&encoders)),
            ("rencode", Value::Bool(h.encoder == Encoder::Rencode)),
            ("bencode", Value::Bool(true)),
            ("compressors", strs(&compressors)),
            ("lz4", Value::Bool(h.compress == Compressor::Lz4)),
            ("zlib", Value::Bool(false)),
            ("compression_level", Value::Int(level)),
            ("digest", strs(&["hmac+sha256", "xor"])),
            ("salt-digest", strs(&["hmac+sha256"])),
        ]);
        if let Some(d) = h.display {
            caps.push(("display", s(&format!(":{d}"))));
        }
    }
    let host = hostname();
    caps.extend([
        ("username", s(h.username.unwrap_or(""))),
        ("uuid", s(h.uuid)),
        ("hostname", s(&host)),
        ("name", s("loadgen")),
        ("client_type", s("loadgen")),
        ("platform", s(std::env::consts::OS)),
        ("windows", Value::Bool(true)),
        ("keyboard", Value::Bool(false)),
        ("mouse", Value::Bool(false)),
        ("clipboard", Value::Bool(false)),
        ("notifications", Value::Bool(false)),
        ("share", Value::Bool(true)),
        ("encodings", strs(&["rgb32", "rgb24"])),
        (
            "encoding.rgb_formats",
            strs(&["BGRX", "BGRA", "RGBX", "RGBA"]),
        ),
        (
            "desktop_size",
            Value::List(vec![Value::Int(1920), Value::Int(1080)]),
        ),
        ("wants_events", Value::Bool(false)),
        ("notify-startup-complete", Value::Bool(true)),
        // As xpra's client: it echoes a ping's sid, so a proxy may ping it.
        ("ping-echo-sourceid", Value::Bool(true)),
    ]);
    caps.into_iter().map(|(k, v)| (Value::from(k), v)).collect()
}

/// A client hello packet, with a challenge response when given.
pub fn client_hello(caps: &[(Value, Value)], response: Option<(&[u8], &[u8])>) -> Vec<Value> {
    let mut caps = caps.to_vec();
    if let Some((resp, salt)) = response {
        caps.push((
            s("challenge_response"),
            Value::Bytes(Bytes::copy_from_slice(resp)),
        ));
        caps.push((
            s("challenge_client_salt"),
            Value::Bytes(Bytes::copy_from_slice(salt)),
        ));
    }
    vec![s("hello"), Value::Dict(caps)]
}

/// A server hello for a peer that spoke `encoder`, the way a 3.1 server
/// answers a 3.1 client (and a 6.x server a 6.x one): everything xpra's
/// 3.1 proxy reads from a remote session's hello is here (encoder flags,
/// `max_desktop_size`, `ping-echo-sourceid`, `file-transfer`).
pub fn server_hello(
    encoder: Encoder,
    compress: Compressor,
    display: &str,
    uuid: &str,
    started_ms: i64,
) -> Vec<Value> {
    let modern = encoder == Encoder::Rencodeplus;
    let version = if modern {
        MODERN_VERSION
    } else {
        LEGACY_VERSION
    };
    let compressors: Vec<&str> = if modern {
        vec!["lz4"]
    } else {
        vec!["lz4", "zlib"]
    };
    let now = now_ms();
    let mut caps: Vec<(&str, Value)> = vec![
        ("version", s(version)),
        ("build.version", s(version)),
        (
            "encoders",
            strs(if modern {
                &["rencodeplus"]
            } else {
                &["rencode", "bencode"]
            }),
        ),
        ("compressors", strs(&compressors)),
        ("compression", s(compress.name())),
    ];
    if !modern {
        caps.extend([
            ("rencode", Value::Bool(true)),
            ("bencode", Value::Bool(true)),
            ("lz4", Value::Bool(true)),
            ("zlib", Value::Bool(true)),
        ]);
    }
    caps.extend([
        ("uuid", s(uuid)),
        ("machine_id", s(uuid)),
        ("hostname", s(&hostname())),
        ("platform", s(std::env::consts::OS)),
        ("display", s(&format!(":{display}"))),
        ("session_type", s("loadgen")),
        ("server_type", s("loadgen")),
        ("session-name", s("loadgen")),
        ("start_time", Value::Int(started_ms / 1000)),
        ("current_time", Value::Int(now)),
        ("elapsed_time", Value::Int((now - started_ms).max(0) / 1000)),
        (
            "max_desktop_size",
            Value::List(vec![Value::Int(8192), Value::Int(4096)]),
        ),
        (
            "actual_desktop_size",
            Value::List(vec![Value::Int(1920), Value::Int(1080)]),
        ),
        (
            "desktop_size",
            Value::List(vec![Value::Int(1920), Value::Int(1080)]),
        ),
        (
            "root_window_size",
            Value::List(vec![Value::Int(1920), Value::Int(1080)]),
        ),
        ("ping-echo-sourceid", Value::Bool(true)),
        ("file-transfer", Value::Bool(false)),
        ("windows", Value::Bool(true)),
        ("keyboard", Value::Bool(false)),
        ("mouse", Value::Bool(false)),
        ("clipboard", Value::Bool(false)),
        ("notifications", Value::Bool(false)),
        ("bell", Value::Bool(false)),
        ("cursors", Value::Bool(false)),
        ("sound.send", Value::Bool(false)),
        ("sound.receive", Value::Bool(false)),
        ("encodings", strs(&["rgb32", "rgb24"])),
        ("encoding", s("rgb32")),
    ]);
    vec![s("hello"), dict(caps)]
}

/// `["challenge", salt, "", digest, salt_digest, "password"]`.
pub fn challenge(salt: &[u8], digest: &str, salt_digest: &str) -> Vec<Value> {
    vec![
        s("challenge"),
        Value::Bytes(Bytes::copy_from_slice(salt)),
        s(""),
        s(digest),
        s(salt_digest),
        s("password"),
    ]
}

pub fn disconnect(reason: &str) -> Vec<Value> {
    vec![s("disconnect"), s(reason)]
}

/// `["ping", echotime, server_time_ms, sid]`.
pub fn ping(echotime: i64, sid: &str) -> Vec<Value> {
    vec![
        s("ping"),
        Value::Int(echotime),
        Value::Int(now_ms()),
        s(sid),
    ]
}

/// xpra 3.1's answer to a ping: `["ping_echo", echotime, l1, l2, l3,
/// latency_ms, sid]` (`server/source/networkstate_mixin.py`).
pub fn ping_echo(ping: &[Value]) -> Vec<Value> {
    let echotime = ping.get(1).cloned().unwrap_or(Value::Int(0));
    let sid = ping.get(3).cloned().unwrap_or_else(|| s(""));
    vec![
        s("ping_echo"),
        echotime,
        Value::Int(0),
        Value::Int(0),
        Value::Int(0),
        Value::Int(-1),
        sid,
    ]
}

/// A client's draw acknowledgement, as xpra's client sends it
/// (`send_damage_sequence` in `client/mixins/window_manager.py`):
/// `["damage-sequence", packet_sequence, wid, width, height,
/// decode_time_us, message]`; `packet_sequence` is the draw's argument 8.
pub fn damage_sequence(seq: i64, wid: i64, width: i64, height: i64, decode_us: i64) -> Vec<Value> {
    vec![
        s("damage-sequence"),
        Value::Int(seq),
        Value::Int(wid),
        Value::Int(width),
        Value::Int(height),
        Value::Int(decode_us),
        s(""),
    ]
}

/// The draw sequence a `damage-sequence` packet acknowledges, if it is one
/// (a positive integer).
pub fn acked_sequence(items: &[Value]) -> Option<i64> {
    items.get(1).and_then(Value::as_int).filter(|s| *s > 0)
}

/// The pixel buffers a server draws with: a few distinct random buffers,
/// each with its checksum, shared by every connection.
pub struct Pixels {
    pub bufs: Vec<(Bytes, u32)>,
    pub width: i64,
    pub height: i64,
    pub rowstride: i64,
}

impl Pixels {
    /// Buffers of `size` bytes (rounded up to whole BGRX pixels).
    pub fn new(size: usize, count: usize) -> Pixels {
        let size = size.max(4).div_ceil(4) * 4;
        let (width, height) = if size % 1024 == 0 {
            (256, size / 1024)
        } else {
            (size / 4, 1)
        };
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let bufs = (0..count.max(1))
            .map(|_| {
                let mut v = vec![0u8; size];
                for c in v.chunks_mut(8) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let b = seed.to_le_bytes();
                    c.copy_from_slice(&b[..c.len()]);
                }
                let crc = crc32fast::hash(&v);
                (Bytes::from(v), crc)
            })
            .collect();
        Pixels {
            bufs,
            width: width as i64,
            height: height as i64,
            rowstride: width as i64 * 4,
        }
    }
}

/// The records of one draw, ready to write: `(chunk header, pixels, main)`.
pub fn draw(framing: &Framing, pixels: &Pixels, wid: i64, seq: i64) -> Result<[Bytes; 3], String> {
    let (buf, crc) = &pixels.bufs[(seq as usize) % pixels.bufs.len()];
    let items = vec![
        s("draw"),
        Value::Int(wid),
        Value::Int(0),
        Value::Int(0),
        Value::Int(pixels.width),
        Value::Int(pixels.height),
        s("rgb32"),
        Value::Bytes(buf.clone()),
        Value::Int(seq),
        Value::Int(pixels.rowstride),
        dict(vec![
            ("checksum", Value::Int(i64::from(*crc))),
            ("seq", Value::Int(seq)),
            ("rgb_format", s("BGRX")),
        ]),
    ];
    let records =
        packet::encode_packet(&items, &framing.options(true)).map_err(|e| e.to_string())?;
    let [chunk, main] =
        <[Record; 2]>::try_from(records).map_err(|r| format!("draw gave {} records", r.len()))?;
    Ok([
        Bytes::copy_from_slice(&chunk.header.to_bytes()),
        chunk.payload,
        main.to_bytes(),
    ])
}

/// A draw as the client checks it.
#[derive(Debug, PartialEq, Eq)]
pub struct DrawCheck {
    pub seq: i64,
    pub ok: bool,
}

/// Checks a received draw: `pixels` is the checksum and length of argument
/// 7 (a raw chunk, or the inline bytes when a proxy inlined them).
pub fn check_draw(items: &[Value], chunk: Option<(usize, u32)>) -> Option<DrawCheck> {
    let opts = items.get(10)?;
    let want = opts.get("checksum").and_then(Value::as_int)?;
    let seq = opts
        .get("seq")
        .and_then(Value::as_int)
        .or_else(|| items.get(8).and_then(Value::as_int))?;
    let got = match chunk {
        Some((_, crc)) => Some(crc),
        None => items
            .get(PIXELS_INDEX)
            .and_then(Value::as_bytes)
            .map(crc32fast::hash),
    };
    Some(DrawCheck {
        seq,
        ok: got.map(i64::from) == Some(want),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use xfwd::wire::views::Hello;

    #[test]
    fn draw_round_trip_every_encoder() {
        let px = Pixels::new(4096, 3);
        for enc in [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode] {
            let f = Framing::plain(enc);
            let [hdr, pixels, main] = draw(&f, &px, 1, 5).unwrap();
            assert_eq!(hdr[3], 7);
            assert_eq!(pixels.len(), 4096);
            let mut reader = crate::net::RecordReader::new(1 << 20);
            let mut items = Vec::new();
            reader.feed(&hdr, &mut items).unwrap();
            reader.feed(&pixels, &mut items).unwrap();
            reader.feed(&main, &mut items).unwrap();
            let crate::net::Item::Chunk { len, crc, .. } = items[0] else {
                panic!()
            };
            let crate::net::Item::Main(ref m) = items[1] else {
                panic!()
            };
            let p = decode(m).unwrap();
            assert_eq!(p.packet_type(), Some("draw"));
            assert_eq!(
                check_draw(&p.items, Some((len, crc))),
                Some(DrawCheck { seq: 5, ok: true })
            );
            assert_eq!(
                check_draw(&p.items, Some((len, crc ^ 1))),
                Some(DrawCheck { seq: 5, ok: false })
            );
        }
    }

    #[test]
    fn damage_sequence_round_trip() {
        for enc in [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode] {
            let bytes = encode(&damage_sequence(77, 2, 256, 256, 0), &Framing::plain(enc)).unwrap();
            let mut reader = crate::net::RecordReader::new(1 << 20);
            let mut items = Vec::new();
            reader.feed(&bytes, &mut items).unwrap();
            let crate::net::Item::Main(ref m) = items[0] else {
                panic!()
            };
            let p = decode(m).unwrap();
            assert_eq!(p.packet_type(), Some("damage-sequence"));
            assert_eq!(p.items.len(), 7);
            assert_eq!(acked_sequence(&p.items), Some(77));
        }
        assert_eq!(
            acked_sequence(&[s("damage-sequence"), Value::Int(-1)]),
            None
        );
        assert_eq!(acked_sequence(&[s("damage-sequence"), s("x")]), None);
        assert_eq!(acked_sequence(&[s("damage-sequence")]), None);
    }

    #[test]
    fn hellos_read_back_through_views() {
        for enc in [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode] {
            let caps = client_caps(&ClientHello {
                encoder: enc,
                compress: Compressor::Lz4,
                username: Some("u"),
                display: Some("7"),
                uuid: "abc",
            });
            let f = Framing {
                encoder: enc,
                compressor: Compressor::Lz4,
            };
            let bytes = encode(&client_hello(&caps, None), &f).unwrap();
            let mut reader = crate::net::RecordReader::new(1 << 20);
            let mut items = Vec::new();
            reader.feed(&bytes, &mut items).unwrap();
            let crate::net::Item::Main(ref m) = items[0] else {
                panic!()
            };
            let p = decode(m).unwrap();
            let h = Hello::parse(&p.items).unwrap();
            assert_eq!(h.requested_display(), Some("7"));
            assert_eq!(h.username(), Some("u"));
            assert!(h.encoders().contains(&enc));
            assert_eq!(h.compressors(), vec![Compressor::Lz4]);
        }
    }
}
