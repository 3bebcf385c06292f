//! The frame layer end to end: packets built with `packet::encode_packet`
//! come back out of `FrameDecoder` + `Assembler` whatever the byte splits;
//! the captured hellos in `tests/data/` frame, decode and peek; every
//! refusal is typed; records re-emit byte for byte; a peek needs only a
//! prefix of the payload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;

use xfwd::wire::frame::{FrameDecoder, FrameError, Limits, Record, PRE_HELLO_MAX_PAYLOAD};
use xfwd::wire::header::{
    Compressor, Encoder, Header, HeaderError, Rules, FLAG_FLUSH, FLAG_RENCODE, FLAG_RENCODEPLUS,
    HEADER_LEN,
};
use xfwd::wire::packet::{self, Assembler, EncodeOptions, Packet, PacketError};
use xfwd::wire::peek::{self, PacketType};
use xfwd::wire::views::Hello;
use xfwd::wire::{compress, Value};

// ---------------------------------------------------------------------------
// helpers

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Everything a stream decodes to: its records, and the packets assembled
/// from them.
#[derive(Debug, Default)]
struct Decoded {
    records: Vec<Record>,
    packets: Vec<Packet>,
}

/// Feeds `stream` cut at `cuts` (sorted, deduplicated, clamped), draining
/// after every piece; panics on any error.
fn decode_split(stream: &[u8], cuts: &[usize], rules: Rules, limits: Limits) -> Decoded {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut d = FrameDecoder::new(rules, limits);
    let mut asm = Assembler::new();
    let mut out = Decoded::default();
    let mut start = 0;
    for end in points {
        d.feed(&stream[start..end]);
        start = end;
        while let Some(r) = d.next_record().unwrap() {
            if let Some(p) = asm.push(&r, &limits).unwrap() {
                out.packets.push(p);
            }
            out.records.push(r);
        }
    }
    d.finish().unwrap();
    assert_eq!(asm.pending(), 0);
    out
}

fn decode_whole(stream: &[u8], rules: Rules, limits: Limits) -> Decoded {
    decode_split(stream, &[], rules, limits)
}

fn stream_of(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&r.to_bytes());
    }
    out
}

/// What a packet looks like after a trip through `encoder`: legacy rencode
/// and bencode cannot tell text from bytes, and xpra's bencode writes
/// booleans as integers.
fn as_received(encoder: Encoder, v: &Value) -> Value {
    match encoder {
        Encoder::Rencodeplus => v.clone(),
        Encoder::Rencode => v.strings_as_bytes(),
        _ => bencoded(v),
    }
}

fn bencoded(v: &Value) -> Value {
    match v {
        Value::Bool(b) => Value::Int(i64::from(*b)),
        Value::List(l) => Value::List(l.iter().map(bencoded).collect()),
        Value::Dict(d) => Value::Dict(d.iter().map(|(k, v)| (bencoded(k), bencoded(v))).collect()),
        other => other.strings_as_bytes(),
    }
}

fn name_of(t: PacketType) -> String {
    t.name().expect("a named packet type").to_owned()
}

fn rec(flags: u8, compression: u8, index: u8, payload: &[u8]) -> Vec<u8> {
    Record::new(flags, compression, index, Bytes::copy_from_slice(payload))
        .to_bytes()
        .to_vec()
}

fn plus(items: Vec<Value>) -> Vec<u8> {
    let opts = EncodeOptions::plain(Encoder::Rencodeplus);
    stream_of(&packet::encode_packet(&items, &opts).unwrap())
}

// ---------------------------------------------------------------------------
// (a) property: any packets, any encoder and compressor, any splits

/// One generated packet and how to frame it.
#[derive(Clone, Debug)]
struct Case {
    items: Vec<Value>,
    opts: EncodeOptions,
}

fn leaf(legacy_safe: bool) -> BoxedStrategy<Value> {
    let ints = prop_oneof![
        -40i64..50,
        any::<i16>().prop_map(i64::from),
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
    ];
    let big = (any::<bool>(), "[1-9][0-9]{19,40}")
        .prop_map(|(neg, digits)| Value::BigInt(if neg { format!("-{digits}") } else { digits }));
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::collection::vec(any::<u8>(), 60..200),
    ]
    .prop_map(|v| Value::Bytes(Bytes::from(v)));
    let text = prop_oneof![".{0,8}", ".{60,70}"].prop_map(Value::Str);
    if legacy_safe {
        // xpra's bencode has no None and no floats
        prop_oneof![
            ints.prop_map(Value::Int),
            big,
            any::<bool>().prop_map(Value::Bool),
            text,
            bytes,
        ]
        .boxed()
    } else {
        prop_oneof![
            ints.prop_map(Value::Int),
            big,
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| Value::Float(f64::from(f))),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::None),
            text,
            bytes,
        ]
        .boxed()
    }
}

fn tree(bencode: bool) -> BoxedStrategy<Value> {
    leaf(bencode)
        .prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
                proptest::collection::vec(("[a-z.]{0,8}", inner), 0..5).prop_map(|pairs| {
                    Value::Dict(pairs.into_iter().map(|(k, v)| (Value::Str(k), v)).collect())
                }),
            ]
        })
        .boxed()
}

/// A large byte string: the pixels of a draw, compressible or not.
fn large_bytes() -> impl Strategy<Value = Value> {
    (1024usize..24 * 1024, any::<u8>(), any::<bool>()).prop_map(|(n, seed, noisy)| {
        let mut x = u32::from(seed) | 1;
        let data: Vec<u8> = (0..n)
            .map(|i| {
                if noisy {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                } else {
                    (i % 61) as u8 ^ seed
                }
            })
            .collect();
        Value::Bytes(Bytes::from(data))
    })
}

fn packet_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "hello", "draw", "ping", "ping_echo", "cursor", "sound-data",
            "window-metadata", "disconnect", "challenge",
        ])
        .prop_map(Value::from),
        2 => "[a-z][a-z_-]{0,63}".prop_map(Value::Str),
        1 => (0i64..300).prop_map(Value::Int),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let encoder = prop::sample::select(vec![
        Encoder::Rencodeplus,
        Encoder::Rencode,
        Encoder::Bencode,
    ]);
    encoder.prop_flat_map(|encoder| {
        let bencode = encoder == Encoder::Bencode;
        let arg = prop_oneof![3 => tree(bencode), 1 => large_bytes()];
        let compressor = prop::sample::select(vec![
            Compressor::None,
            Compressor::Lz4,
            Compressor::Zlib,
            Compressor::Brotli,
            Compressor::Zstd,
        ]);
        (
            packet_type(),
            proptest::collection::vec(arg, 0..10),
            compressor,
            1u8..=3,
            prop::sample::select(vec![0usize, 378]),
            prop::option::of(256usize..4096),
            any::<bool>(),
        )
            .prop_map(
                move |(ty, args, compressor, level, min_compress, chunk_threshold, flush)| {
                    let mut items = vec![ty];
                    items.extend(args);
                    Case {
                        items,
                        opts: EncodeOptions {
                            encoder,
                            compressor,
                            level,
                            min_compress,
                            chunk_threshold,
                            flush,
                        },
                    }
                },
            )
    })
}

/// Raw chunks that `encode_packet` would send for a case.
fn chunk_count(c: &Case) -> usize {
    let Some(threshold) = c.opts.chunk_threshold else {
        return 0;
    };
    c.items
        .iter()
        .enumerate()
        .filter(|(i, v)| {
            (1..=15).contains(i) && matches!(v, Value::Bytes(b) if b.len() >= threshold)
        })
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_splits_give_the_original_packets(
        cases in proptest::collection::vec(case(), 1..5)
            .prop_filter("at most 8 raw chunks per packet (the default limit)", |cs| {
                cs.iter().all(|c| chunk_count(c) <= 8)
            }),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let mut records = Vec::new();
        for c in &cases {
            let recs = packet::encode_packet(&c.items, &c.opts).unwrap();
            prop_assert_eq!(recs.len(), chunk_count(c) + 1);
            records.extend(recs);
        }
        let stream = stream_of(&records);
        let limits = Limits::default();

        let whole = decode_whole(&stream, Rules::Any, limits);
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        let split = decode_split(&stream, &cuts, Rules::Any, limits);

        // (a) the same records and packets, whatever the splits
        prop_assert_eq!(&whole.records, &records);
        prop_assert_eq!(&split.records, &records);
        prop_assert_eq!(&whole.packets, &split.packets);
        prop_assert_eq!(whole.packets.len(), cases.len());

        // ... equal to the originals
        for (c, p) in cases.iter().zip(&whole.packets) {
            prop_assert_eq!(p.encoder, c.opts.encoder);
            let expected = as_received(c.opts.encoder, &Value::List(c.items.clone()));
            prop_assert_eq!(&Value::List(p.items.clone()), &expected);
        }

        // (c) peek agrees with the full decode on every main packet
        let mains = whole.records.iter().filter(|r| !r.header.is_chunk());
        for (r, p) in mains.zip(&whole.packets) {
            prop_assert_eq!(r.header.compressor(), p.compressor);
            let t = peek::peek_type(r).unwrap();
            match t {
                PacketType::Name(n) => prop_assert_eq!(Some(n.as_str()), p.packet_type()),
                PacketType::Alias(a) => prop_assert_eq!(p.items.first(), Some(&Value::Int(a))),
            }
        }
        for r in whole.records.iter().filter(|r| r.header.is_chunk()) {
            prop_assert_eq!(peek::peek_type(r), Err(peek::PeekError::Chunk));
        }

        // (e) records re-emit the stream byte for byte
        prop_assert_eq!(stream_of(&split.records), stream);
    }
}

#[test]
fn byte_at_a_time_matches_whole() {
    let pixels = Bytes::from((0..5000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>());
    let items = vec![
        Value::from("draw"),
        Value::Int(1),
        Value::Int(0),
        Value::Bytes(pixels.clone()),
        Value::from("rgb24"),
        Value::Bytes(pixels),
    ];
    let mut stream = Vec::new();
    for (encoder, compressor) in [
        (Encoder::Rencodeplus, Compressor::Lz4),
        (Encoder::Rencodeplus, Compressor::Zstd),
        (Encoder::Rencode, Compressor::Zlib),
        (Encoder::Bencode, Compressor::Brotli),
    ] {
        for chunk_threshold in [None, Some(1000)] {
            let opts = EncodeOptions {
                compressor,
                level: 1,
                chunk_threshold,
                ..EncodeOptions::plain(encoder)
            };
            stream.extend(stream_of(&packet::encode_packet(&items, &opts).unwrap()));
        }
    }
    let whole = decode_whole(&stream, Rules::Any, Limits::default());
    let every: Vec<usize> = (0..stream.len()).collect();
    let split = decode_split(&stream, &every, Rules::Any, Limits::default());
    assert_eq!(whole.records, split.records);
    assert_eq!(whole.packets, split.packets);
    assert_eq!(whole.packets.len(), 8);
    assert_eq!(whole.records.len(), 8 + 4 * 2);
    for p in &whole.packets {
        assert_eq!(p.items.len(), 6);
        assert_eq!(p.packet_type(), Some("draw"));
        assert_eq!(p.items[3].as_bytes(), items[3].as_bytes());
    }
    assert_eq!(stream_of(&split.records), stream);
}

// ---------------------------------------------------------------------------
// (b) the captured hellos

fn one_record(bytes: &[u8], rules: Rules) -> Record {
    let mut d = FrameDecoder::new(rules, Limits::pre_hello());
    d.feed(bytes);
    let r = d.next_record().unwrap().expect("a whole record");
    assert_eq!(d.next_record(), Ok(None));
    d.finish().unwrap();
    r
}

#[test]
fn xpra31_hello_decodes() {
    let bytes = fixture("hello-xpra31-client.bin");
    for rules in [Rules::Any, Rules::Legacy] {
        let r = one_record(&bytes, rules);
        assert_eq!(r.header.encoder(), Encoder::Rencode);
        assert_eq!(r.header.compressor(), Compressor::Zlib);
        assert_eq!(r.header.generation(), Some(Rules::Legacy));
        let p = packet::decode_main(&r, &Limits::pre_hello()).unwrap();
        assert_eq!(p.packet_type(), Some("hello"));
        assert_eq!(p.encoder, Encoder::Rencode);
        assert_eq!(p.compressor, Compressor::Zlib);
        let h = Hello::parse(&p.items).unwrap();
        let version = h.version().unwrap();
        assert!(version.starts_with("3.1"), "{version}");
        assert_eq!(h.str("display"), Some(":100"));
        assert_eq!(h.username(), Some("xuser"));
        assert_eq!(h.requested_display(), Some("100"));
        let encoders = h.encoders();
        assert!(encoders.contains(&Encoder::Rencode), "{encoders:?}");
        assert!(encoders.contains(&Encoder::Bencode), "{encoders:?}");
        assert!(!encoders.contains(&Encoder::Rencodeplus), "{encoders:?}");
        let compressors = h.compressors();
        assert!(compressors.contains(&Compressor::Zlib), "{compressors:?}");
        assert!(compressors.contains(&Compressor::Lz4), "{compressors:?}");
        assert!(!compressors.contains(&Compressor::Zstd), "{compressors:?}");
    }
    // a modern-only reader refuses it at the header
    let mut d = FrameDecoder::new(Rules::Modern, Limits::pre_hello());
    d.feed(&bytes);
    assert!(matches!(
        d.next_record(),
        Err(FrameError::Header(HeaderError::UnknownFlags {
            flags: FLAG_RENCODE,
            rules: Rules::Modern
        }))
    ));
}

#[test]
fn xpra6_hello_decodes() {
    let bytes = fixture("hello-xpra6-client.bin");
    for rules in [Rules::Any, Rules::Modern] {
        let r = one_record(&bytes, rules);
        assert_eq!(r.header.flags, FLAG_RENCODEPLUS | FLAG_FLUSH);
        assert_eq!(r.header.generation(), Some(Rules::Modern));
        let p = packet::decode_main(&r, &Limits::pre_hello()).unwrap();
        assert_eq!(p.packet_type(), Some("hello"));
        assert_eq!(p.encoder, Encoder::Rencodeplus);
        assert_eq!(p.compressor, Compressor::Lz4);
        let h = Hello::parse(&p.items).unwrap();
        let version = h.version().unwrap();
        assert!(version.starts_with("6."), "{version}");
        assert_eq!(h.requested_display(), Some("110"));
        assert_eq!(h.encoders(), vec![Encoder::Rencodeplus, Encoder::Yaml]);
        let compressors = h.compressors();
        assert_eq!(&compressors[..2], &[Compressor::Lz4, Compressor::Brotli]);
        assert!(!compressors.contains(&Compressor::Zlib), "{compressors:?}");
    }
    let mut d = FrameDecoder::new(Rules::Legacy, Limits::pre_hello());
    d.feed(&bytes);
    assert!(matches!(
        d.next_record(),
        Err(FrameError::Header(HeaderError::UnknownFlags { .. }))
    ));
}

#[test]
fn both_hellos_in_one_stream_any_split() {
    let mut stream = fixture("hello-xpra31-client.bin");
    stream.extend(fixture("hello-xpra6-client.bin"));
    let whole = decode_whole(&stream, Rules::Any, Limits::pre_hello());
    assert_eq!(whole.packets.len(), 2);
    for cut in [1, 7, 8, 9, 4000, 22_574, 22_575, 22_576, stream.len() - 1] {
        let split = decode_split(&stream, &[cut], Rules::Any, Limits::pre_hello());
        assert_eq!(split.packets, whole.packets, "cut at {cut}");
    }
    assert_eq!(stream_of(&whole.records), stream);
}

// ---------------------------------------------------------------------------
// (c) peek on the fixtures

#[test]
fn peek_fixtures() {
    for name in ["hello-xpra31-client.bin", "hello-xpra6-client.bin"] {
        let r = one_record(&fixture(name), Rules::Any);
        let t = peek::peek_type(&r).unwrap();
        assert!(t.is("hello"), "{name}: {t:?}");
        // the first KiB of the compressed payload is enough
        let t = peek::peek_payload(&r.header, &r.payload[..1024]).unwrap();
        assert!(t.is("hello"), "{name}: {t:?}");
    }
}

// ---------------------------------------------------------------------------
// (d) refusals, typed

#[test]
fn chunk_index_beyond_the_packet() {
    // chunk 5 for a packet of two items
    let mut stream = rec(0, 0, 5, b"pixels");
    stream.extend(plus(vec![Value::from("ping"), Value::Int(1)]));
    let limits = Limits::default();
    let mut d = FrameDecoder::new(Rules::Modern, limits);
    d.feed(&stream);
    let mut asm = Assembler::new();
    let chunk = d.next_record().unwrap().unwrap();
    assert_eq!(asm.push(&chunk, &limits), Ok(None));
    assert_eq!(asm.pending(), 1);
    let main = d.next_record().unwrap().unwrap();
    assert_eq!(
        asm.push(&main, &limits),
        Err(PacketError::ChunkIndex { index: 5, len: 2 })
    );
    // index == len is one past the end too
    let mut stream = rec(0, 0, 2, b"pixels");
    stream.extend(plus(vec![Value::from("ping"), Value::Int(1)]));
    let mut d = FrameDecoder::new(Rules::Modern, limits);
    d.feed(&stream);
    let mut asm = Assembler::new();
    assert_eq!(
        asm.push(&d.next_record().unwrap().unwrap(), &limits),
        Ok(None)
    );
    assert_eq!(
        asm.push(&d.next_record().unwrap().unwrap(), &limits),
        Err(PacketError::ChunkIndex { index: 2, len: 2 })
    );
    // the last item is fine
    let mut stream = rec(0, 0, 1, b"pixels");
    stream.extend(plus(vec![Value::from("ping"), Value::Int(1)]));
    let got = decode_whole(&stream, Rules::Modern, limits);
    assert_eq!(
        got.packets[0].items,
        vec![
            Value::from("ping"),
            Value::Bytes(Bytes::from_static(b"pixels"))
        ]
    );
}

#[test]
fn duplicate_chunk() {
    let mut stream = rec(0, 0, 3, b"a");
    stream.extend(rec(0, 0, 4, b"b"));
    stream.extend(rec(0, 0, 3, b"c"));
    let mut d = FrameDecoder::new(Rules::Any, Limits::default());
    d.feed(&stream);
    assert!(d.next_record().unwrap().is_some());
    assert!(d.next_record().unwrap().is_some());
    assert_eq!(d.next_record(), Err(FrameError::DuplicateChunk(3)));
    // the decoder stays failed
    assert_eq!(d.next_record(), Err(FrameError::DuplicateChunk(3)));
    assert_eq!(d.finish(), Err(FrameError::DuplicateChunk(3)));

    // the same index is fine again after a main packet
    let mut stream = rec(0, 0, 1, b"a");
    stream.extend(plus(vec![Value::from("x"), Value::None]));
    stream.extend(rec(0, 0, 1, b"b"));
    stream.extend(plus(vec![Value::from("y"), Value::None]));
    let got = decode_whole(&stream, Rules::Modern, Limits::default());
    assert_eq!(got.packets.len(), 2);
}

#[test]
fn too_many_chunks() {
    let limits = Limits::pre_hello();
    let mut d = FrameDecoder::new(Rules::Any, limits);
    for i in 1..=9 {
        d.feed(&rec(0, 0, i, b"x"));
    }
    for _ in 0..limits.max_pending_chunks {
        assert!(d.next_record().unwrap().is_some());
    }
    assert_eq!(
        d.next_record(),
        Err(FrameError::TooManyChunks(limits.max_pending_chunks))
    );
}

#[test]
fn oversize_before_hello() {
    assert_eq!(PRE_HELLO_MAX_PAYLOAD, 256 * 1024);
    let header = |len: u32| {
        Header {
            flags: FLAG_RENCODEPLUS,
            compression: 0,
            index: 0,
            length: len,
        }
        .to_bytes()
    };
    // one byte over: refused from the header alone
    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    d.feed(&header(PRE_HELLO_MAX_PAYLOAD + 1));
    assert_eq!(
        d.next_record(),
        Err(FrameError::TooLarge {
            length: PRE_HELLO_MAX_PAYLOAD + 1,
            limit: PRE_HELLO_MAX_PAYLOAD
        })
    );
    assert!(d.buffer_mut().capacity() < 1024 * 1024);
    // a raw chunk too
    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    d.feed(&rec(0, 0, 1, b"")[..4]);
    d.feed(&u32::MAX.to_be_bytes());
    assert!(matches!(d.next_record(), Err(FrameError::TooLarge { .. })));
    // exactly the limit: accepted, waiting for the payload
    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    d.feed(&header(PRE_HELLO_MAX_PAYLOAD));
    assert_eq!(d.next_record(), Ok(None));
    assert_eq!(d.wanted(), PRE_HELLO_MAX_PAYLOAD as usize);
    // after the hello the limit is the caller's
    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    d.set_limits(Limits::after_hello(16 * 1024 * 1024));
    d.feed(&header(PRE_HELLO_MAX_PAYLOAD + 1));
    assert_eq!(d.next_record(), Ok(None));
    let mut d = FrameDecoder::new(Rules::Any, Limits::after_hello(1000));
    d.feed(&header(1001));
    assert_eq!(
        d.next_record(),
        Err(FrameError::TooLarge {
            length: 1001,
            limit: 1000
        })
    );
}

#[test]
fn decompression_is_bounded_by_the_limits() {
    // 64 KiB of zeros in a tiny lz4 / zstd payload, limits allow 16 KiB out
    let items = vec![
        Value::from("draw"),
        Value::Bytes(Bytes::from(vec![0u8; 64 * 1024])),
    ];
    let limits = Limits {
        max_payload: 4096,
        max_decompressed: 16 * 1024,
        ..Limits::default()
    };
    for c in [
        Compressor::Lz4,
        Compressor::Zlib,
        Compressor::Brotli,
        Compressor::Zstd,
    ] {
        let opts = EncodeOptions {
            compressor: c,
            level: 1,
            ..EncodeOptions::plain(Encoder::Rencodeplus)
        };
        let stream = stream_of(&packet::encode_packet(&items, &opts).unwrap());
        let mut d = FrameDecoder::new(Rules::Any, limits);
        d.feed(&stream);
        let r = d.next_record().unwrap().unwrap();
        assert!(
            matches!(
                packet::decode_main(&r, &limits),
                Err(PacketError::Compression(
                    compress::CompressError::TooLarge { .. }
                ))
            ),
            "{c}"
        );
        // the peek still works: it never decompresses that far
        assert!(peek::peek_type(&r).unwrap().is("draw"), "{c}");
    }
}

#[test]
fn bad_headers_are_typed() {
    let cases: Vec<([u8; HEADER_LEN], Rules, HeaderError)> = vec![
        (
            [b'Q', 0x10, 0, 0, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::BadMagic(b'Q'),
        ),
        (
            [b'P', 0x12, 0, 0, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::Cipher,
        ),
        (
            [b'P', 0x03, 0, 0, 0, 0, 0, 1],
            Rules::Legacy,
            HeaderError::Cipher,
        ),
        (
            [b'P', 0x10, 0, 16, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::BadIndex(16),
        ),
        (
            [b'P', 0x10, 0, 0xff, 0, 0, 0, 1],
            Rules::Modern,
            HeaderError::BadIndex(0xff),
        ),
        (
            [b'P', 0x20, 0, 0, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::UnknownFlags {
                flags: 0x20,
                rules: Rules::Any,
            },
        ),
        (
            [b'P', 0x05, 0, 0, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::UnknownFlags {
                flags: 0x05,
                rules: Rules::Any,
            },
        ),
        (
            [b'P', 0x01, 0, 0, 0, 0, 0, 1],
            Rules::Modern,
            HeaderError::UnknownFlags {
                flags: 0x01,
                rules: Rules::Modern,
            },
        ),
        (
            [b'P', 0x00, 0, 0, 0, 0, 0, 1],
            Rules::Modern,
            HeaderError::UnknownFlags {
                flags: 0x00,
                rules: Rules::Modern,
            },
        ),
        (
            [b'P', 0x18, 0, 0, 0, 0, 0, 1],
            Rules::Legacy,
            HeaderError::UnknownFlags {
                flags: 0x18,
                rules: Rules::Legacy,
            },
        ),
        (
            [b'P', 0x09, 0, 0, 0, 0, 0, 1],
            Rules::Legacy,
            HeaderError::UnknownFlags {
                flags: 0x09,
                rules: Rules::Legacy,
            },
        ),
        // a raw chunk carries no encoder flag
        (
            [b'P', 0x10, 0, 1, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::UnknownFlags {
                flags: 0x10,
                rules: Rules::Any,
            },
        ),
        (
            [b'P', 0x08, 0, 1, 0, 0, 0, 1],
            Rules::Legacy,
            HeaderError::UnknownFlags {
                flags: 0x08,
                rules: Rules::Legacy,
            },
        ),
        (
            [b'P', 0x10, 0x01, 0, 0, 0, 0, 1],
            Rules::Modern,
            HeaderError::UnknownCompression {
                byte: 0x01,
                rules: Rules::Modern,
            },
        ),
        (
            [b'P', 0x01, 0x81, 0, 0, 0, 0, 1],
            Rules::Legacy,
            HeaderError::UnknownCompression {
                byte: 0x81,
                rules: Rules::Legacy,
            },
        ),
        (
            [b'P', 0x10, 0x10, 0, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::UnknownCompression {
                byte: 0x10,
                rules: Rules::Any,
            },
        ),
        (
            [b'P', 0x10, 0x31, 0, 0, 0, 0, 1],
            Rules::Any,
            HeaderError::UnknownCompression {
                byte: 0x31,
                rules: Rules::Any,
            },
        ),
    ];
    for (bytes, rules, expected) in cases {
        assert_eq!(
            Header::parse(&bytes, rules),
            Err(expected.clone()),
            "{bytes:02x?}"
        );
        let mut d = FrameDecoder::new(rules, Limits::default());
        // split the header: the error comes once all 8 bytes are in
        d.feed(&bytes[..5]);
        assert_eq!(d.next_record(), Ok(None));
        d.feed(&bytes[5..]);
        assert_eq!(
            d.next_record(),
            Err(FrameError::Header(expected)),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn truncated_and_dangling_streams() {
    let hello = fixture("hello-xpra6-client.bin");
    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    d.feed(&hello[..hello.len() - 1]);
    assert_eq!(d.next_record(), Ok(None));
    assert!(matches!(d.finish(), Err(FrameError::TruncatedStream(_))));

    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    d.feed(&rec(0, 0, 2, b"x"));
    assert!(d.next_record().unwrap().is_some());
    assert_eq!(d.finish(), Err(FrameError::DanglingChunks(1 << 2)));
}

// ---------------------------------------------------------------------------
// (e) re-emission, including records the codec cannot decode

#[test]
fn re_emit_untouched_records() {
    // undecodable payloads frame fine and re-emit unchanged: a forwarder
    // never needs to decode them
    let mut stream = rec(FLAG_RENCODEPLUS, 0, 0, b"\xff\xfe garbage");
    stream.extend(rec(FLAG_RENCODE, 0x21, 0, b"lzo is not supported"));
    stream.extend(rec(0x04, 0, 0, b"- yaml\n"));
    stream.extend(rec(0, 0x11, 1, b"\x00\x00\x00\x10 not lz4"));
    stream.extend(fixture("hello-xpra31-client.bin"));
    let mut d = FrameDecoder::new(Rules::Any, Limits::pre_hello());
    let mut records = Vec::new();
    for piece in stream.chunks(333) {
        d.feed(piece);
        while let Some(r) = d.next_record().unwrap() {
            records.push(r);
        }
    }
    d.finish().unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(stream_of(&records), stream);
    let mut out = bytes::BytesMut::new();
    for r in &records {
        r.write_to(&mut out);
    }
    assert_eq!(&out[..], &stream[..]);
    // and the payloads are slices of what was read, not re-encodings
    assert_eq!(&records[0].payload[..], b"\xff\xfe garbage");
}

// ---------------------------------------------------------------------------
// (f) a peek does not need the payload

fn big_draw(n: usize) -> Vec<Value> {
    // a draw whose pixels are inline: compressible, but not trivially
    let pixels: Vec<u8> = (0..n).map(|i| ((i / 3) % 251) as u8).collect();
    vec![
        Value::from("draw"),
        Value::Int(1),
        Value::Int(0),
        Value::Int(0),
        Value::Int(1024),
        Value::Int(2048),
        Value::from("rgb24"),
        Value::Bytes(Bytes::from(pixels)),
        Value::Int(7),
        Value::Int(3072),
        Value::Dict(vec![]),
    ]
}

#[test]
fn peek_from_a_1kib_prefix_of_an_8mib_packet() {
    let items = big_draw(8 * 1024 * 1024);
    for encoder in [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode] {
        for compressor in [
            Compressor::None,
            Compressor::Lz4,
            Compressor::Zlib,
            Compressor::Brotli,
            Compressor::Zstd,
        ] {
            if compressor == Compressor::Brotli && encoder != Encoder::Rencodeplus {
                continue; // slow in debug builds; one encoder is enough
            }
            let opts = EncodeOptions {
                compressor,
                level: 1,
                ..EncodeOptions::plain(encoder)
            };
            let records = packet::encode_packet(&items, &opts).unwrap();
            assert_eq!(records.len(), 1);
            let r = &records[0];
            assert_eq!(r.header.compressor(), compressor);
            assert!(r.payload.len() > 1024);
            // the whole payload, and only its first KiB
            assert!(
                peek::peek_type(r).unwrap().is("draw"),
                "{encoder} {compressor}"
            );
            let prefix = &r.payload[..1024];
            let t = peek::peek_payload(&r.header, prefix)
                .unwrap_or_else(|e| panic!("{encoder} {compressor}: {e}"));
            assert_eq!(name_of(t), "draw", "{encoder} {compressor}");
        }
    }
}

#[test]
fn peek_of_a_raw_chunk_draw_reads_only_the_main_packet() {
    // 8 MiB of pixels in a raw chunk: the main packet stays small
    let items = big_draw(8 * 1024 * 1024);
    let opts = EncodeOptions {
        chunk_threshold: Some(4096),
        ..EncodeOptions::plain(Encoder::Rencodeplus)
    };
    let records = packet::encode_packet(&items, &opts).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].header.index, 7);
    assert_eq!(records[0].payload.len(), 8 * 1024 * 1024);
    assert!(records[1].payload.len() < 64);
    assert_eq!(peek::peek_type(&records[0]), Err(peek::PeekError::Chunk));
    assert!(peek::peek_type(&records[1]).unwrap().is("draw"));
}

#[test]
fn peek_window_is_a_constant() {
    // peeking looks at most PEEK_WINDOW bytes of plain payload: bytes past it
    // may be anything, even missing
    let mut payload = b"\xc3\x84draw".to_vec();
    payload.resize(peek::PEEK_WINDOW, 0xff);
    let header = Header {
        flags: FLAG_RENCODEPLUS,
        compression: 0,
        index: 0,
        length: 8 * 1024 * 1024,
    };
    assert!(peek::peek_payload(&header, &payload).unwrap().is("draw"));
    // a 64-byte type name, the longest accepted
    let long = "t".repeat(peek::MAX_TYPE_LEN);
    let items = vec![Value::from(long.as_str()), Value::Int(1)];
    let stream = plus(items);
    let t = peek::peek_payload(&header, &stream[HEADER_LEN..]).unwrap();
    assert_eq!(name_of(t), long);
}
