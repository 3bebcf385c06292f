//! Criterion benches for the wire layer: decoding real hellos, peeking the
//! type of small and large packets, frame-decoding (and relaying) a stream of
//! 256 KiB raw-chunk draws.
//!
//! `cargo bench --bench wire`; numbers are recorded in docs/performance.md.
//! Warm-up and measurement times are short (1 s and 3 s per bench) so that
//! the whole run stays around two minutes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use xfwd::wire::frame::{FrameDecoder, Limits, Record};
use xfwd::wire::header::{Compressor, Encoder, Rules};
use xfwd::wire::packet::{self, EncodeOptions};
use xfwd::wire::peek;
use xfwd::wire::relay::{Event, Relay, RelayLimits};
use xfwd::wire::Value;

const HELLO31: &[u8] = include_bytes!("../tests/data/hello-xpra31-client.bin");
const HELLO6: &[u8] = include_bytes!("../tests/data/hello-xpra6-client.bin");

fn one_record(bytes: &[u8]) -> Record {
    let mut d = FrameDecoder::new(Rules::Any, Limits::default());
    d.feed(bytes);
    match d.next_record() {
        Ok(Some(r)) => r,
        other => panic!("fixture does not frame: {other:?}"),
    }
}

fn hello(c: &mut Criterion) {
    let mut g = c.benchmark_group("hello");
    for (name, bytes) in [
        ("xpra31-rencode-zlib", HELLO31),
        ("xpra6-rencodeplus-lz4", HELLO6),
    ] {
        let rec = one_record(bytes);
        let limits = Limits::default();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| packet::decode_main(black_box(&rec), &limits))
        });
        let plain = packet::plain_payload(&rec.header, &rec.payload, &limits).unwrap_or_default();
        let encoder = rec.header.encoder();
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_function(BenchmarkId::new("decode-uncompressed", name), |b| {
            b.iter(|| packet::decode_value(encoder, black_box(&plain), Default::default()))
        });
    }
    g.finish();
}

fn draw_packet(size: usize, compressor: Compressor) -> Record {
    // A draw with its pixels inline (as a small packet or a compressed one).
    let pixels: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let items = vec![
        Value::from("draw"),
        Value::Int(1),
        Value::Int(0),
        Value::Int(0),
        Value::Int(256),
        Value::Int(256),
        Value::from("rgb24"),
        Value::Bytes(Bytes::from(pixels)),
        Value::Int(42),
        Value::Int(768),
        Value::Dict(vec![]),
    ];
    let opts = EncodeOptions {
        compressor,
        level: 1,
        ..EncodeOptions::plain(Encoder::Rencodeplus)
    };
    match packet::encode_packet(&items, &opts) {
        Ok(mut recs) => recs.remove(0),
        Err(e) => panic!("cannot build draw: {e}"),
    }
}

fn peek_type(c: &mut Criterion) {
    let mut g = c.benchmark_group("peek");
    for (label, size, comp) in [
        ("1KiB", 1024, Compressor::None),
        ("256KiB", 256 * 1024, Compressor::None),
        ("1KiB-lz4", 1024, Compressor::Lz4),
        ("256KiB-lz4", 256 * 1024, Compressor::Lz4),
        ("1KiB-zlib", 1024, Compressor::Zlib),
        ("256KiB-zlib", 256 * 1024, Compressor::Zlib),
        // the cost must not grow past these
        ("8MiB", 8 << 20, Compressor::None),
        ("8MiB-lz4", 8 << 20, Compressor::Lz4),
        ("8MiB-zlib", 8 << 20, Compressor::Zlib),
    ] {
        let rec = draw_packet(size, comp);
        assert_eq!(rec.header.compressor(), comp, "{label}");
        assert!(
            matches!(peek::peek_type(&rec), Ok(t) if t.is("draw")),
            "{label}"
        );
        g.bench_function(label, |b| b.iter(|| peek::peek_type(black_box(&rec))));
    }
    g.finish();
}

fn frame_stream(c: &mut Criterion) {
    // 64 draws, each a 256 KiB raw chunk plus its small main packet.
    let mut stream = Vec::new();
    let pixels = Bytes::from(vec![0x5au8; 256 * 1024]);
    for seq in 0..64 {
        let items = vec![
            Value::from("draw"),
            Value::Int(1),
            Value::Int(0),
            Value::Int(0),
            Value::Int(256),
            Value::Int(256),
            Value::from("rgb32"),
            Value::Bytes(pixels.clone()),
            Value::Int(seq),
            Value::Int(1024),
            Value::Dict(vec![]),
        ];
        let opts = EncodeOptions {
            chunk_threshold: Some(4096),
            ..EncodeOptions::plain(Encoder::Rencodeplus)
        };
        for r in packet::encode_packet(&items, &opts).unwrap_or_default() {
            stream.extend_from_slice(&r.to_bytes());
        }
    }
    for block in [16 * 1024, 64 * 1024] {
        assert_eq!(
            decode_stream(&stream, block),
            64,
            "every draw framed and peeked"
        );
        assert_eq!(relay_stream(&stream, block), 64, "every draw relayed");
    }
    let mut g = c.benchmark_group("frame");
    // each iteration reads 16 MiB: fewer samples keep the group short
    g.sample_size(20);
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for block in [16 * 1024, 64 * 1024] {
        let reads = format!("reads-of-{}KiB", block / 1024);
        g.bench_function(BenchmarkId::new("draws-256KiB", &reads), |b| {
            b.iter(|| decode_stream(black_box(&stream), block))
        });
        g.bench_function(BenchmarkId::new("relay-draws-256KiB", &reads), |b| {
            b.iter(|| relay_stream(black_box(&stream), block))
        });
    }
    g.finish();
}

/// Frames `stream` fed in `block`-sized reads and peeks every main packet;
/// returns how many peeks succeeded.
fn decode_stream(stream: &[u8], block: usize) -> usize {
    let mut d = FrameDecoder::new(Rules::Modern, Limits::default());
    let mut n = 0usize;
    for chunk in stream.chunks(block) {
        d.feed(chunk);
        while let Ok(Some(r)) = d.next_record() {
            if !r.header.is_chunk() {
                n += usize::from(peek::peek_type(&r).is_ok());
            }
        }
    }
    n
}

/// Runs `stream` through a cut-through [`Relay`] (what the engine's pumps
/// do), fed in `block`-sized reads, intercepting nothing; returns how many
/// main packets it passed.
fn relay_stream(stream: &[u8], block: usize) -> usize {
    let mut relay = Relay::new(Rules::Modern, RelayLimits::default());
    let mut buf = BytesMut::with_capacity(block);
    let mut n = 0usize;
    for chunk in stream.chunks(block) {
        buf.extend_from_slice(chunk);
        while let Ok(Some(ev)) = relay.next_event(&mut buf, |_, _| false) {
            match ev {
                Event::Packet(_, _, b) => {
                    n += 1;
                    black_box(b);
                }
                Event::Pass(b) => {
                    black_box(b);
                }
                Event::Intercept(..) | Event::Chunk(..) => {}
            }
        }
    }
    n
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hello, peek_type, frame_stream
}
criterion_main!(benches);
