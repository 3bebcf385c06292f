//! The decode work budget: `DecodeLimits` (values, bytes, depth) and the
//! record profiles built on it (`Limits::pre_hello()` before
//! authentication, `Limits::intercept_close()` for close packets,
//! `Limits::session_hello()` / the default after). Bombs of every shape are
//! refused with a typed budget error, quickly; the captured real hellos fit
//! the pre-authentication profile with margin; encode -> decode still round
//! trips under the default limits, and the budget is exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;

use xfwd::wire::compress::{self, CompressError};
use xfwd::wire::frame::{
    FrameDecoder, FrameError, Limits, Record, INTERCEPT_CLOSE_MAX_PAYLOAD, PRE_HELLO_MAX_DECODED,
    PRE_HELLO_MAX_DECOMPRESSED, PRE_HELLO_MAX_PAYLOAD, PRE_HELLO_MAX_VALUES,
};
use xfwd::wire::header::{Compressor, Encoder, Rules};
use xfwd::wire::packet::{self, EncodeOptions, PacketError};
use xfwd::wire::value::{Usage, DEFAULT_MAX_VALUES, VALUE_COST};
use xfwd::wire::views::{Close, Hello};
use xfwd::wire::{bencode, rencode, DecodeError, DecodeLimits, Value};

// ---------------------------------------------------------------------------
// helpers

const ENCODERS: [Encoder; 3] = [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode];

/// An encoded list of `count` small integers (`1`), as each encoder writes
/// it: one byte per item for rencode, three for bencode.
fn small_ints(encoder: Encoder, count: usize) -> Vec<u8> {
    match encoder {
        Encoder::Bencode => {
            let mut out = Vec::with_capacity(3 * count + 2);
            out.push(b'l');
            for _ in 0..count {
                out.extend_from_slice(b"i1e");
            }
            out.push(b'e');
            out
        }
        _ => {
            let mut out = Vec::with_capacity(count + 2);
            out.push(59); // open list
            out.resize(count + 1, 1);
            out.push(127);
            out
        }
    }
}

/// A list of small integers that is exactly `len` bytes long.
fn small_ints_of_len(encoder: Encoder, len: usize) -> Vec<u8> {
    let per = if encoder == Encoder::Bencode { 3 } else { 1 };
    let mut out = small_ints(encoder, (len - 2) / per);
    // bencode: pad to the exact length with an empty string ("0:", two
    // bytes) or a two-digit last integer (one more)
    let end = out.pop().unwrap();
    match len - 1 - out.len() {
        0 => {}
        1 => {
            out.truncate(out.len() - 3);
            out.extend_from_slice(b"i10e");
        }
        _ => out.extend_from_slice(b"0:"),
    }
    out.push(end);
    assert_eq!(out.len(), len);
    out
}

fn record(encoder: Encoder, compressor: Compressor, plain: &[u8]) -> Record {
    let payload = match compressor {
        Compressor::None => plain.to_vec(),
        c => compress::compress(c, 1, plain).unwrap(),
    };
    Record::new(encoder.flag(), compressor.byte(1), 0, Bytes::from(payload))
}

/// `decode_main` (how fast a refusal comes is measured outside
/// `cargo test`: docs/wire.md, "Decode budget").
fn decode(r: &Record, limits: &Limits) -> Result<packet::Packet, PacketError> {
    packet::decode_main(r, limits)
}

fn budget_error(e: &PacketError) -> Option<&DecodeError> {
    match e {
        PacketError::Decode { source, .. } => Some(source),
        _ => None,
    }
}

/// The captured hellos, from `tests/data/` and, when present, the steering
/// repo's `shared/fixtures/`.
fn captured_hellos() -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [root.join("tests/data"), root.join("../shared/fixtures")] {
        for name in ["hello-xpra31-client.bin", "hello-xpra6-client.bin"] {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => out.push((path, bytes)),
                Err(_) if !dir.ends_with("tests/data") => {}
                Err(e) => panic!("cannot read {}: {e}", path.display()),
            }
        }
    }
    out
}

fn one_record(bytes: &[u8], limits: Limits, path: &Path) -> Record {
    let mut d = FrameDecoder::new(Rules::Any, limits);
    d.feed(bytes);
    let r = d
        .next_record()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .expect("a whole record");
    d.finish().unwrap();
    r
}

// ---------------------------------------------------------------------------
// the profiles

#[test]
fn profiles_are_ordered() {
    let pre = Limits::pre_hello();
    assert_eq!(pre.max_payload, 256 * 1024);
    assert_eq!(pre.max_decompressed, 1024 * 1024);
    assert_eq!(pre.decode.max_values, PRE_HELLO_MAX_VALUES);
    assert_eq!(pre.decode.max_bytes, PRE_HELLO_MAX_DECODED);
    let close = Limits::intercept_close();
    let after = Limits::session_hello();
    assert_eq!(after, Limits::default());
    assert_eq!(after.decode, DecodeLimits::default());
    for (small, big) in [(close, pre), (pre, after)] {
        assert!(small.max_payload < big.max_payload);
        assert!(small.max_decompressed < big.max_decompressed);
        assert!(small.decode.max_values < big.decode.max_values);
        assert!(small.decode.max_bytes < big.decode.max_bytes);
        assert!(small.decode.max_depth <= big.decode.max_depth);
    }
    // after the hello the budget grows with the payload limit, never
    // unbounded
    let big = Limits::after_hello(u32::MAX);
    assert_eq!(big.decode.max_bytes, u32::MAX as usize * 4);
    assert_eq!(big.decode.max_values, DEFAULT_MAX_VALUES);
}

#[test]
fn captured_hellos_fit_the_pre_auth_profile() {
    let limits = Limits::pre_hello();
    let hellos = captured_hellos();
    assert!(hellos.len() >= 2);
    for (path, bytes) in hellos {
        let r = one_record(&bytes, limits, &path);
        let p =
            packet::decode_main(&r, &limits).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(p.packet_type(), Some("hello"));
        Hello::parse(&p.items).unwrap();
        // with margin: ten times in values, three in bytes, decompressed
        // size and record size
        let plain = packet::plain_payload(&r.header, &r.payload, &limits).unwrap();
        let u = Usage::of(&Value::List(p.items.clone()));
        let what = path.display();
        assert!(u.values * 10 <= limits.decode.max_values, "{what}: {u:?}");
        assert!(u.bytes * 3 <= limits.decode.max_bytes, "{what}: {u:?}");
        assert!(u.depth * 4 <= limits.decode.max_depth, "{what}: {u:?}");
        assert!(plain.len() * 10 <= limits.max_decompressed, "{what}");
        assert!(
            r.payload.len() * 10 <= limits.max_payload as usize,
            "{what}"
        );
        // uncompressed, it still fits a pre-auth record
        assert!(plain.len() * 3 <= limits.max_payload as usize, "{what}");
        // and it is exactly at its own usage: one value less is refused
        let tight = Limits {
            decode: DecodeLimits {
                max_values: u.values - 1,
                ..u.as_limits()
            },
            ..limits
        };
        assert_eq!(
            packet::decode_main(
                &r,
                &Limits {
                    decode: u.as_limits(),
                    ..limits
                }
            )
            .unwrap()
            .items,
            p.items
        );
        assert_eq!(
            packet::decode_main(&r, &tight)
                .err()
                .as_ref()
                .and_then(budget_error),
            Some(&DecodeError::TooManyValues {
                limit: u.values - 1
            })
        );
    }
}

// ---------------------------------------------------------------------------
// bombs

/// The attack of issue 10: one unauthenticated hello of four million small
/// integers, no compression.
#[test]
fn four_million_small_ints_are_refused() {
    let pre = Limits::pre_hello();
    for encoder in ENCODERS {
        let r = record(encoder, Compressor::None, &small_ints(encoder, 4_000_000));
        // framed before authentication: refused from the header alone
        let mut d = FrameDecoder::new(Rules::Any, pre);
        d.feed(&r.to_bytes()[..16]);
        assert_eq!(
            d.next_record(),
            Err(FrameError::TooLarge {
                length: r.header.length,
                limit: PRE_HELLO_MAX_PAYLOAD
            })
        );
        // decoded under the pre-auth budget anyway (a caller that framed
        // it with larger limits): refused by the budget, quickly
        let res = decode(&r, &pre);
        let e = res.unwrap_err();
        assert_eq!(
            budget_error(&e),
            Some(&DecodeError::TooManyBytes {
                limit: PRE_HELLO_MAX_DECODED
            }),
            "{encoder}: {e}"
        );
        assert!(e.to_string().contains("decode budget exceeded"), "{e}");
        // the value count is a budget of its own
        let values_only = Limits {
            decode: DecodeLimits {
                max_bytes: usize::MAX,
                ..pre.decode
            },
            ..pre
        };
        let e = packet::decode_main(&r, &values_only).unwrap_err();
        assert_eq!(
            budget_error(&e),
            Some(&DecodeError::TooManyValues {
                limit: PRE_HELLO_MAX_VALUES
            }),
            "{encoder}: {e}"
        );
        // after authentication the budget is larger, but still bounded
        let e = packet::decode_main(&r, &Limits::session_hello()).unwrap_err();
        assert_eq!(
            budget_error(&e),
            Some(&DecodeError::TooManyValues {
                limit: DEFAULT_MAX_VALUES
            }),
            "{encoder}: {e}"
        );
    }
}

/// The largest bomb a pre-auth record can carry uncompressed frames, then
/// is refused by the budget.
#[test]
fn largest_pre_auth_record_of_small_ints_is_refused() {
    let pre = Limits::pre_hello();
    for encoder in ENCODERS {
        let plain = small_ints_of_len(encoder, PRE_HELLO_MAX_PAYLOAD as usize);
        let r = record(encoder, Compressor::None, &plain);
        let mut d = FrameDecoder::new(Rules::Any, pre);
        d.feed(&r.to_bytes());
        let framed = d.next_record().unwrap().unwrap();
        let res = decode(&framed, &pre);
        let e = res.unwrap_err();
        assert_eq!(
            budget_error(&e),
            Some(&DecodeError::TooManyBytes {
                limit: PRE_HELLO_MAX_DECODED
            }),
            "{encoder}: {e}"
        );
    }
}

/// Small integers compressed: to the decompression cap, refused by the
/// budget; far beyond it (16 MiB, the old cap), refused by the
/// decompressor as soon as the output passes the cap.
#[test]
fn compressed_bombs_are_refused() {
    let pre = Limits::pre_hello();
    for compressor in [
        Compressor::Lz4,
        Compressor::Zlib,
        Compressor::Brotli,
        Compressor::Zstd,
    ] {
        for encoder in ENCODERS {
            let at_cap = record(
                encoder,
                compressor,
                &small_ints_of_len(encoder, PRE_HELLO_MAX_DECOMPRESSED),
            );
            assert!(at_cap.payload.len() <= PRE_HELLO_MAX_PAYLOAD as usize);
            let res = decode(&at_cap, &pre);
            let e = res.unwrap_err();
            assert!(
                matches!(budget_error(&e), Some(DecodeError::TooManyBytes { .. })),
                "{compressor} {encoder}: {e}"
            );

            // the old pre-hello cap, for the two compressors every client
            // has (the others take long to compress in a debug build)
            if !matches!(compressor, Compressor::Lz4 | Compressor::Zlib) {
                continue;
            }
            let beyond = record(encoder, compressor, &small_ints_of_len(encoder, 16 << 20));
            assert!(beyond.payload.len() <= PRE_HELLO_MAX_PAYLOAD as usize);
            let res = decode(&beyond, &pre);
            let e = res.unwrap_err();
            assert!(
                matches!(
                    e,
                    PacketError::Compression(CompressError::TooLarge { limit, .. })
                        if limit == PRE_HELLO_MAX_DECOMPRESSED
                ),
                "{compressor} {encoder}: {e}"
            );
        }
    }
}

/// Nesting: deep (refused by depth), and wide (every byte a container):
/// refused by the budget.
#[test]
fn nested_bombs_are_refused() {
    let pre = Limits::pre_hello();
    let len = PRE_HELLO_MAX_PAYLOAD as usize;
    // a list inside a list ... a quarter of a million deep
    let deep_plus = [vec![0xc1u8; len - 1], vec![0]].concat();
    let deep_open = [vec![59u8; len / 2], vec![127u8; len / 2]].concat();
    let deep_bencode = [vec![b'l'; len / 2], vec![b'e'; len / 2]].concat();
    for (encoder, plain) in [
        (Encoder::Rencodeplus, &deep_plus),
        (Encoder::Rencode, &deep_open),
        (Encoder::Bencode, &deep_bencode),
    ] {
        let e = packet::decode_main(&record(encoder, Compressor::None, plain), &pre).unwrap_err();
        assert_eq!(
            budget_error(&e),
            Some(&DecodeError::TooDeep { limit: 64 }),
            "{encoder}"
        );
    }
    // wide: a tree of full 63-item lists, three levels, 254,080 values in
    // as many bytes
    fn tree(levels: u32, out: &mut Vec<u8>) {
        if levels == 0 {
            out.push(0xc0);
            return;
        }
        out.push(0xff);
        for _ in 0..63 {
            tree(levels - 1, out);
        }
    }
    let mut wide = Vec::new();
    tree(3, &mut wide);
    assert!(wide.len() <= len);
    // empty lists and dicts, one byte each
    let empties: Vec<u8> = [vec![59u8], [0xc0u8, 102].repeat(len / 2 - 1), vec![127]].concat();
    let bencode_empties: Vec<u8> = [vec![b'l'], b"lede".repeat(len / 4 - 1), vec![b'e']].concat();
    for (encoder, plain) in [
        (Encoder::Rencodeplus, &wide),
        (Encoder::Rencode, &wide),
        (Encoder::Rencodeplus, &empties),
        (Encoder::Bencode, &bencode_empties),
    ] {
        let res = decode(&record(encoder, Compressor::None, plain), &pre);
        let e = res.unwrap_err();
        assert!(
            matches!(budget_error(&e), Some(DecodeError::TooManyBytes { .. })),
            "{encoder}: {e}"
        );
    }
}

/// Long strings and byte strings count by their length, before anything is
/// copied or validated.
#[test]
fn long_strings_count_by_length() {
    let pre = Limits::pre_hello();
    let big = PRE_HELLO_MAX_DECODED; // plus the list's and the string's cost
    let text = format!("{big}:{}", "a".repeat(big));
    let plus_bytes = format!("{big}/{}", "a".repeat(big));
    let ben = format!("l{big}:{}e", "a".repeat(big));
    for (encoder, plain) in [
        (
            Encoder::Rencodeplus,
            [&[0xc1u8][..], text.as_bytes()].concat(),
        ),
        (
            Encoder::Rencodeplus,
            [&[0xc1u8][..], plus_bytes.as_bytes()].concat(),
        ),
        (Encoder::Rencode, [&[0xc1u8][..], text.as_bytes()].concat()),
        (Encoder::Bencode, ben.into_bytes()),
    ] {
        let limits = Limits {
            max_payload: u32::MAX,
            max_decompressed: usize::MAX,
            ..pre
        };
        let e =
            packet::decode_main(&record(encoder, Compressor::None, &plain), &limits).unwrap_err();
        assert_eq!(
            budget_error(&e),
            Some(&DecodeError::TooManyBytes {
                limit: PRE_HELLO_MAX_DECODED
            }),
            "{encoder}"
        );
    }
    // under the default budget the same strings decode
    let plain = [&[0xc1u8][..], text.as_bytes()].concat();
    let r = record(Encoder::Rencodeplus, Compressor::None, &plain);
    assert!(packet::decode_main(&r, &Limits::default()).is_ok());
}

// ---------------------------------------------------------------------------
// close packets and the session's hello

#[test]
fn close_profile_takes_real_close_packets_only() {
    let limits = Limits::intercept_close();
    let opts = EncodeOptions::plain(Encoder::Rencodeplus);
    let real = [
        vec![
            Value::from("connection-close"),
            Value::from("server shutdown"),
        ],
        vec![
            Value::from("disconnect"),
            Value::from("authentication failed"),
            Value::from("invalid password"),
            Value::from("please check your credentials and try again"),
        ],
    ];
    for items in &real {
        for encoder in ENCODERS {
            let opts = EncodeOptions { encoder, ..opts };
            let r = packet::encode_packet(items, &opts).unwrap().pop().unwrap();
            let p = packet::decode_main(&r, &limits).unwrap();
            Close::parse(&p.items).unwrap();
        }
    }
    // a close packet with a 32 KiB reason, or a thousand extra items
    let long = vec![
        Value::from("connection-close"),
        Value::from("x".repeat(2 * INTERCEPT_CLOSE_MAX_PAYLOAD as usize)),
    ];
    let many: Vec<Value> = std::iter::once(Value::from("disconnect"))
        .chain((0..1000).map(|_| Value::from("r")))
        .collect();
    for (items, want_values) in [(long, false), (many, true)] {
        for encoder in ENCODERS {
            let opts = EncodeOptions { encoder, ..opts };
            let r = packet::encode_packet(&items, &opts).unwrap().pop().unwrap();
            let e = packet::decode_main(&r, &limits).unwrap_err();
            let got = budget_error(&e);
            if want_values {
                assert!(
                    matches!(got, Some(DecodeError::TooManyValues { limit: 256 })),
                    "{encoder}: {e}"
                );
            } else {
                assert!(
                    matches!(got, Some(DecodeError::TooManyBytes { .. })),
                    "{encoder}: {e}"
                );
            }
            // compressed, the decompressor stops it first
            let opts = EncodeOptions {
                compressor: Compressor::Lz4,
                level: 1,
                ..opts
            };
            let r = packet::encode_packet(&items, &opts).unwrap().pop().unwrap();
            assert!(packet::decode_main(&r, &limits).is_err());
        }
    }
}

/// Sessions send large hellos: one of 2 MiB (a 1.5 MiB capability and
/// 40,000 small values) decodes under the session profile, not before
/// authentication.
#[test]
fn session_hello_profile_takes_large_hellos() {
    let caps = Value::Dict(vec![
        (Value::from("version"), Value::from("6.5")),
        (
            Value::from("xdg-menu"),
            Value::Bytes(Bytes::from(vec![b'm'; 1536 * 1024])),
        ),
        (
            Value::from("keycodes"),
            Value::List((0..40_000).map(|i| Value::Int(i % 40)).collect()),
        ),
    ]);
    let items = vec![Value::from("hello"), caps];
    for compressor in [Compressor::None, Compressor::Lz4, Compressor::Zlib] {
        let opts = EncodeOptions {
            compressor,
            level: 1,
            ..EncodeOptions::plain(Encoder::Rencodeplus)
        };
        let r = packet::encode_packet(&items, &opts).unwrap().pop().unwrap();
        let p = packet::decode_main(&r, &Limits::session_hello()).unwrap();
        assert_eq!(p.items, items);
        assert!(packet::decode_main(&r, &Limits::pre_hello()).is_err());
    }
}

// ---------------------------------------------------------------------------
// properties

fn leaf(floats: bool) -> BoxedStrategy<Value> {
    let common = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (-40i64..44).prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        ".{0,70}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|v| Value::Bytes(Bytes::from(v))),
    ];
    if floats {
        prop_oneof![
            common,
            Just(Value::None),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| Value::Float(f64::from(f))),
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

fn tree(floats: bool) -> impl Strategy<Value = Value> {
    leaf(floats).prop_recursive(4, 200, 70, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..70).prop_map(Value::List),
            proptest::collection::vec((".{0,8}", inner), 0..30).prop_map(|pairs| {
                Value::Dict(pairs.into_iter().map(|(k, v)| (Value::Str(k), v)).collect())
            }),
        ]
    })
}

/// What bencode gives back: strings as bytes, booleans as integers.
fn bencoded(v: &Value) -> Value {
    match v {
        Value::Bool(b) => Value::Int(i64::from(*b)),
        Value::List(l) => Value::List(l.iter().map(bencoded).collect()),
        Value::Dict(d) => Value::Dict(d.iter().map(|(k, v)| (bencoded(k), bencoded(v))).collect()),
        other => other.strings_as_bytes(),
    }
}

/// Decodes `wire` under the default limits, under exactly the usage of the
/// result, and checks one value, byte or level less is refused.
fn check_exact(
    wire: &[u8],
    decode: fn(&Bytes, DecodeLimits) -> Result<Value, DecodeError>,
) -> Result<Value, TestCaseError> {
    let input = Bytes::copy_from_slice(wire);
    let v =
        decode(&input, DecodeLimits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let u = Usage::of(&v);
    prop_assert!(u.bytes >= u.values * VALUE_COST);
    let tight = u.as_limits();
    let again = decode(&input, tight);
    prop_assert_eq!(again.as_ref(), Ok(&v));
    let fewer_values = DecodeLimits {
        max_values: u.values - 1,
        ..tight
    };
    prop_assert_eq!(
        decode(&input, fewer_values).err(),
        Some(DecodeError::TooManyValues {
            limit: u.values - 1
        })
    );
    let fewer_bytes = DecodeLimits {
        max_bytes: u.bytes - 1,
        ..tight
    };
    prop_assert_eq!(
        decode(&input, fewer_bytes).err(),
        Some(DecodeError::TooManyBytes { limit: u.bytes - 1 })
    );
    Ok(v)
}

proptest! {
    #[test]
    fn rencodeplus_round_trips_within_the_budget(v in tree(true)) {
        let mut wire = Vec::new();
        rencode::encode_plus(&v, &mut wire).unwrap();
        let back = check_exact(&wire, rencode::decode_plus)?;
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(Usage::of(&back), Usage::of(&v));
    }

    #[test]
    fn legacy_rencode_round_trips_within_the_budget(v in tree(true)) {
        let mut wire = Vec::new();
        rencode::encode_legacy(&v, &mut wire).unwrap();
        let back = check_exact(&wire, rencode::decode_legacy)?;
        prop_assert_eq!(&back, &v.strings_as_bytes());
        prop_assert_eq!(Usage::of(&back), Usage::of(&v));
    }

    #[test]
    fn bencode_round_trips_within_the_budget(v in tree(false)) {
        let mut wire = Vec::new();
        bencode::encode(&v, &mut wire).unwrap();
        let back = check_exact(&wire, bencode::decode)?;
        prop_assert_eq!(&back, &bencoded(&v));
        prop_assert_eq!(Usage::of(&back), Usage::of(&v));
    }

    /// Whole packets through the frame decoder, every compressor, under the
    /// default limits.
    #[test]
    fn packets_round_trip_under_the_default_limits(
        v in tree(false),
        encoder in prop::sample::select(ENCODERS.to_vec()),
        compressor in prop::sample::select(vec![
            Compressor::None, Compressor::Lz4, Compressor::Zlib,
            Compressor::Brotli, Compressor::Zstd,
        ]),
    ) {
        let items = vec![Value::from("hello"), v];
        let opts = EncodeOptions {
            compressor,
            level: 1,
            min_compress: 0,
            ..EncodeOptions::plain(encoder)
        };
        let records = packet::encode_packet(&items, &opts).unwrap();
        let mut d = FrameDecoder::new(Rules::Any, Limits::default());
        for r in &records {
            d.feed(&r.to_bytes());
        }
        let r = d.next_record().unwrap().unwrap();
        let p = packet::decode_main(&r, &Limits::default()).unwrap();
        let want: Vec<Value> = match encoder {
            Encoder::Bencode => items.iter().map(bencoded).collect(),
            Encoder::Rencode => items.iter().map(Value::strings_as_bytes).collect(),
            _ => items,
        };
        prop_assert_eq!(p.items, want);
    }

    /// Arbitrary bytes under arbitrary small budgets (the `budget` fuzz
    /// target's invariants).
    #[test]
    fn budget_holds_for_any_input(data in proptest::collection::vec(any::<u8>(), 3..300)) {
        xfwd::wire::fuzzing::budget(&data);
    }
}
