//! Criterion benches for the video encoders: BGRX to YUV conversion alone
//! (1080p, 4:2:0 and 4:4:4), and whole 1080p 4:2:0 frames through x264
//! (conversion and encoding) at two speeds, on a moving picture (every
//! frame differs from the one before).
//!
//! `cargo bench --bench video`. Needs Debian's libx264-164 for the x264
//! benches (they are left out, with a note, without it). Times are short
//! (1 s warm-up, 3 s measurement, 20 samples) so the run stays about a
//! minute.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use xfwd::video::codec::{EncoderConfig, Frame};
use xfwd::video::csc::{self, Yuv};
use xfwd::video::job::Csc;
use xfwd::video::x264;

const W: u32 = 1920;
const H: u32 = 1080;

/// `n` frames of a moving picture: gradients and a square that move.
fn frames(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|t| {
            let mut v = vec![0u8; (W * H * 4) as usize];
            let (sx, sy) = ((t * 37) % W, (t * 23) % H);
            for y in 0..H {
                for x in 0..W {
                    let i = ((y * W + x) * 4) as usize;
                    let inside = x >= sx && x < sx + 200 && y >= sy && y < sy + 200;
                    let px = if inside {
                        [240, 240, 240, 0]
                    } else {
                        [
                            (((x + y) / 8 + t * 5) % 256) as u8,
                            (y * 255 / H) as u8,
                            ((x * 255 / W + t * 3) % 256) as u8,
                            0,
                        ]
                    };
                    v[i..i + 4].copy_from_slice(&px);
                }
            }
            v
        })
        .collect()
}

fn frame(data: &[u8]) -> Frame<'_> {
    Frame {
        width: W,
        height: H,
        stride: W as usize * 4,
        bgrx: data,
    }
}

fn csc_only(c: &mut Criterion) {
    let pics = frames(1);
    let mut g = c.benchmark_group("csc-1080p");
    g.throughput(Throughput::Elements(1));
    for csc in [Csc::Yuv420p, Csc::Yuv444p] {
        let mut out = Yuv::new();
        g.bench_function(BenchmarkId::from_parameter(csc.name()), |b| {
            b.iter(|| {
                csc::convert(&frame(&pics[0]), csc, &mut out).unwrap_or_else(|e| panic!("{e}"));
                black_box(out.y[0]);
            })
        });
    }
    g.finish();
}

fn x264_1080p(c: &mut Criterion) {
    let backend = match x264::load() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("note: x264 benches left out: {e}");
            return;
        }
    };
    let pics = frames(16);
    let mut g = c.benchmark_group("x264-1080p-420");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    for (speed, quality) in [(100u8, 80u8), (50, 80)] {
        let cfg = EncoderConfig {
            width: W,
            height: H,
            csc: Csc::Yuv420p,
            quality,
            speed,
        };
        let mut enc = backend.open(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let mut t = 0usize;
        let mut bytes = 0usize;
        let mut n = 0usize;
        let id = format!("speed{speed}-{}", x264::preset_for(speed));
        g.bench_function(BenchmarkId::from_parameter(&id), |b| {
            b.iter(|| {
                let out = enc
                    .encode(&frame(&pics[t % pics.len()]), false)
                    .unwrap_or_else(|e| panic!("{e}"));
                t += 1;
                bytes += out.data.len();
                n += 1;
                black_box(out.data.len());
            })
        });
        if let Some(avg) = bytes.checked_div(n) {
            eprintln!("x264 {id}: {avg} bytes a frame on average");
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = csc_only, x264_1080p
}
criterion_main!(benches);
