//! The encoder worker pool (src/video/workers.rs) against a fake backend
//! whose "bitstream" is a checksum of the frame it was given, and which can
//! be told to fail, panic or hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use xfwd::video::codec::{Backend, CodecError, EncodedFrame, EncoderConfig, Frame, VideoEncoder};
use xfwd::video::job::{Csc, Done, Job, JobError, Mode, Output, PixelFormat, Rect, StreamKey};
use xfwd::video::job::{RgbRect, SubmitError};
use xfwd::video::workers::{Pool, PoolConfig, PoolError, WorkerSpec};
use xfwd::video::EncoderChoice;
use xfwd::wire::Value;

#[derive(Default)]
struct Control {
    fail_open: AtomicBool,
    panic_open: AtomicBool,
    fail_encode: AtomicBool,
    panic_encode: AtomicBool,
    panic_drop: AtomicBool,
    /// `Backend::name` panics (called by the worker outside the backend
    /// calls it guards: a panic in the job's own handling).
    panic_name: AtomicBool,
    opened: AtomicUsize,
    entered: AtomicUsize,
    /// Encoders wait while it is true.
    hold: Mutex<bool>,
    cv: Condvar,
}

impl Control {
    fn hold(&self, on: bool) {
        *self.hold.lock().unwrap() = on;
        self.cv.notify_all();
    }
}

struct Fake {
    ctl: Arc<Control>,
    max: Option<usize>,
}

struct FakeEnc {
    ctl: Arc<Control>,
    cfg: EncoderConfig,
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        if self.ctl.panic_name.load(Ordering::SeqCst) {
            panic!("fake name panics");
        }
        "fake"
    }

    fn open(&self, cfg: &EncoderConfig) -> Result<Box<dyn VideoEncoder>, CodecError> {
        if self.ctl.panic_open.load(Ordering::SeqCst) {
            panic!("fake open panics");
        }
        if self.ctl.fail_open.load(Ordering::SeqCst) {
            return Err(CodecError::Open {
                backend: "fake",
                width: cfg.width,
                height: cfg.height,
                csc: cfg.csc,
                reason: "told to fail".into(),
            });
        }
        self.ctl.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeEnc {
            ctl: self.ctl.clone(),
            cfg: *cfg,
        }))
    }

    fn max_contexts(&self) -> Option<usize> {
        self.max
    }
}

/// FNV-1a over the frame's visible pixels, row by row.
fn checksum(bgrx: &[u8], stride: usize, w: u32, h: u32) -> u64 {
    let mut sum = 0xcbf2_9ce4_8422_2325u64;
    for y in 0..h as usize {
        for b in &bgrx[y * stride..y * stride + w as usize * 4] {
            sum ^= u64::from(*b);
            sum = sum.wrapping_mul(0x100_0000_01b3);
        }
    }
    sum
}

impl VideoEncoder for FakeEnc {
    fn encode(&mut self, frame: &Frame<'_>, keyframe: bool) -> Result<EncodedFrame, CodecError> {
        self.ctl.entered.fetch_add(1, Ordering::SeqCst);
        let mut held = self.ctl.hold.lock().unwrap();
        while *held {
            held = self.ctl.cv.wait(held).unwrap();
        }
        drop(held);
        if self.ctl.panic_encode.load(Ordering::SeqCst) {
            panic!("fake encode panics");
        }
        if self.ctl.fail_encode.load(Ordering::SeqCst) {
            return Err(CodecError::Encode {
                backend: "fake",
                reason: "told to fail".into(),
            });
        }
        assert_eq!(
            (frame.width, frame.height),
            (self.cfg.width, self.cfg.height)
        );
        let mut data = checksum(frame.bgrx, frame.stride, frame.width, frame.height)
            .to_le_bytes()
            .to_vec();
        data.push(u8::from(keyframe));
        Ok(EncodedFrame { data, keyframe })
    }

    fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    fn name(&self) -> &'static str {
        "fake"
    }
}

impl Drop for FakeEnc {
    fn drop(&mut self) {
        if self.ctl.panic_drop.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("fake encoder panics when dropped");
        }
    }
}

fn fake(max: Option<usize>) -> (Arc<dyn Backend>, Arc<Control>) {
    let ctl = Arc::new(Control::default());
    (
        Arc::new(Fake {
            ctl: ctl.clone(),
            max,
        }),
        ctl,
    )
}

fn cfg(depth: usize) -> PoolConfig {
    PoolConfig {
        cpu_workers: 1,
        queue_depth: depth,
        ..PoolConfig::default()
    }
}

/// A pool of `n` CPU workers sharing one fake backend.
fn pool(n: usize, depth: usize) -> (Arc<Pool>, Arc<Control>) {
    let (b, ctl) = fake(None);
    let specs = (0..n).map(|_| WorkerSpec::cpu(b.clone())).collect();
    (Pool::with_backends(specs, cfg(depth)).unwrap(), ctl)
}

fn key(wid: u64) -> StreamKey {
    StreamKey {
        shard: 0,
        conn: 7,
        wid,
    }
}

/// A `w` x `h` rectangle of one colour (given as B, G, R) in `format`,
/// with `pad` bytes after each row.
fn solid(x: u32, y: u32, w: u32, h: u32, format: PixelFormat, bgr: [u8; 3], pad: usize) -> Rect {
    let [b, g, r] = bgr;
    let px: Vec<u8> = match format {
        PixelFormat::Bgrx | PixelFormat::Bgra => vec![b, g, r, 0xff],
        PixelFormat::Rgbx | PixelFormat::Rgba => vec![r, g, b, 0xff],
        PixelFormat::Rgb => vec![r, g, b],
        PixelFormat::Bgr => vec![b, g, r],
    };
    let mut data = Vec::new();
    for _ in 0..h {
        for _ in 0..w {
            data.extend_from_slice(&px);
        }
        data.extend(std::iter::repeat_n(0x55, pad));
    }
    Rect {
        x,
        y,
        w,
        h,
        stride: (w as usize * px.len() + pad) as u32,
        format,
        pixels: Bytes::from(data),
    }
}

/// A BGRX image the test paints itself, to compare with.
struct Image {
    w: u32,
    px: Vec<u8>,
}

impl Image {
    fn new(w: u32, h: u32) -> Image {
        Image {
            w,
            px: vec![0; (w * h * 4) as usize],
        }
    }

    fn paint(&mut self, x: u32, y: u32, w: u32, h: u32, bgr: [u8; 3]) {
        for j in y..y + h {
            for i in x..x + w {
                let o = ((j * self.w + i) * 4) as usize;
                self.px[o..o + 4].copy_from_slice(&[bgr[0], bgr[1], bgr[2], 0xff]);
            }
        }
    }

    fn sum(&self, w: u32, h: u32) -> u64 {
        checksum(&self.px, self.w as usize * 4, w, h)
    }

    fn region(&self, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for j in y..y + h {
            let o = ((j * self.w + x) * 4) as usize;
            out.extend_from_slice(&self.px[o..o + (w * 4) as usize]);
        }
        out
    }
}

struct Client {
    tx: UnboundedSender<Done>,
    rx: UnboundedReceiver<Done>,
    batch: u64,
}

impl Client {
    fn new() -> Client {
        let (tx, rx) = unbounded_channel();
        Client { tx, rx, batch: 0 }
    }

    fn job(&mut self, key: StreamKey, w: u32, h: u32, rects: Vec<Rect>, mode: Mode) -> Job {
        self.batch += 1;
        Job {
            key,
            batch: self.batch,
            width: w,
            height: h,
            rects,
            mode,
            submitted: Instant::now(),
            reply: self.tx.clone(),
        }
    }

    /// The next answer (panics after 20 s without one: a hang guard, not a
    /// timing check).
    fn done(&mut self) -> Done {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(d) = self.rx.try_recv() {
                return d;
            }
            assert!(Instant::now() < end, "no answer from the workers");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Submits and waits for the answer.
    fn run(
        &mut self,
        pool: &Pool,
        key: StreamKey,
        w: u32,
        h: u32,
        rects: Vec<Rect>,
        mode: Mode,
    ) -> Done {
        let job = self.job(key, w, h, rects, mode);
        let batch = job.batch;
        pool.submit(job).unwrap();
        let d = self.done();
        assert_eq!((d.key, d.batch), (key, batch));
        d
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn video(reset: bool, csc: Csc) -> Mode {
    Mode::Video {
        reset,
        csc,
        quality: 50,
        speed: 50,
    }
}

const V420: Mode = Mode::Video {
    reset: false,
    csc: Csc::Yuv420p,
    quality: 50,
    speed: 50,
};

fn frame_of(d: &Done) -> (u32, u32, u64, bool, u64, Vec<RgbRect>) {
    match d.result.as_ref().unwrap() {
        Output::Video {
            width,
            height,
            data,
            frame,
            keyframe,
            encoder,
            edges,
            ..
        } => {
            assert_eq!(*encoder, "fake");
            let sum = u64::from_le_bytes(data[..8].try_into().unwrap());
            (*width, *height, *frame, *keyframe, sum, edges.clone())
        }
        other => panic!("not video: {other:?}"),
    }
}

fn rgb_of(d: &Done) -> Vec<RgbRect> {
    match d.result.as_ref().unwrap() {
        Output::Rgb(r) => r.clone(),
        other => panic!("not rgb: {other:?}"),
    }
}

const RED: [u8; 3] = [0, 0, 0xff];
const GREEN: [u8; 3] = [0, 0xff, 0];
const BLUE: [u8; 3] = [0xff, 0, 0];

#[test]
fn same_stream_same_worker_and_streams_spread() {
    let (pool, _) = pool(3, 8);
    let mut c = Client::new();
    let mut seen = std::collections::HashMap::new();
    for round in 0..3 {
        for wid in 1..=6 {
            let r = solid(0, 0, 4, 4, PixelFormat::Bgrx, RED, 0);
            let d = c.run(&pool, key(wid), 32, 32, vec![r], V420);
            let (_, _, frame, _, _, _) = frame_of(&d);
            assert_eq!(frame, round);
            let w = *seen.entry(wid).or_insert(d.worker);
            assert_eq!(w, d.worker, "stream {wid} moved");
            assert_eq!(pool.worker_of(&key(wid)), Some(w));
        }
    }
    let mut per_worker = [0; 3];
    for w in seen.values() {
        per_worker[*w] += 1;
    }
    assert_eq!(per_worker, [2, 2, 2]);
    let stats = pool.stats();
    assert_eq!(stats.iter().map(|s| s.frames).sum::<u64>(), 18);
    assert!(stats
        .iter()
        .all(|s| s.encoder == "fake" && s.device == "cpu"));
}

#[test]
fn full_queue_hands_the_job_back() {
    let (pool, ctl) = pool(1, 2);
    let mut c = Client::new();
    ctl.hold(true);
    pool.submit(c.job(key(1), 32, 32, vec![], V420)).unwrap();
    wait_until("the worker holds the first job", || {
        ctl.entered.load(Ordering::SeqCst) == 1
    });
    pool.submit(c.job(key(1), 32, 32, vec![], V420)).unwrap();
    pool.submit(c.job(key(1), 32, 32, vec![], V420)).unwrap();
    assert_eq!(pool.stats()[0].queue_depth, 2);
    match pool.submit(c.job(key(1), 32, 32, vec![], V420)) {
        Err(SubmitError::Full(job)) => assert_eq!(job.batch, 4),
        other => panic!("{other:?}"),
    }
    // A new stream finds no room either (one worker).
    assert!(matches!(
        pool.submit(c.job(key(2), 32, 32, vec![], V420)),
        Err(SubmitError::Full(_))
    ));
    // Closes are never refused.
    pool.close(key(1));
    ctl.hold(false);
    let frames: Vec<u64> = (0..3).map(|_| frame_of(&c.done()).2).collect();
    assert_eq!(frames, [0, 1, 2]);
    wait_until("queue empty, stream closed", || {
        let s = &pool.stats()[0];
        s.queue_depth == 0 && s.streams == 0 && s.contexts == 0
    });
}

#[test]
fn close_frees_the_context_and_the_assignment() {
    let (pool, ctl) = pool(1, 8);
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    c.run(&pool, key(2), 32, 32, vec![], V420);
    wait_until("two contexts", || pool.stats()[0].contexts == 2);
    pool.close(key(1));
    wait_until("one context", || pool.stats()[0].contexts == 1);
    assert_eq!(pool.stats()[0].streams, 1);
    assert_eq!(pool.worker_of(&key(1)), None);
    // The stream can come back: a new context, from frame 0.
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert_eq!(frame_of(&d).2, 0);
    assert_eq!(ctl.opened.load(Ordering::SeqCst), 3);
    // Closing an unknown stream is harmless.
    pool.close(key(99));
}

#[test]
fn encoder_errors_drop_the_context_not_the_framebuffer() {
    let (pool, ctl) = pool(1, 8);
    let mut c = Client::new();
    let mut img = Image::new(32, 32);
    img.paint(2, 3, 10, 5, GREEN);
    let r = solid(2, 3, 10, 5, PixelFormat::Rgb, GREEN, 0);
    let d = c.run(&pool, key(1), 32, 32, vec![r], V420);
    assert_eq!(frame_of(&d).4, img.sum(32, 32));

    ctl.fail_encode.store(true, Ordering::SeqCst);
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert!(
        matches!(&d.result, Err(JobError::Encoder { encoder: "fake", reason }) if reason.contains("told to fail")),
        "{:?}",
        d.result
    );
    wait_until("context dropped", || pool.stats()[0].contexts == 0);
    ctl.fail_encode.store(false, Ordering::SeqCst);
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    let (_, _, frame, keyframe, sum, _) = frame_of(&d);
    assert_eq!((frame, keyframe), (0, true));
    assert_eq!(sum, img.sum(32, 32), "the framebuffer was kept");

    ctl.fail_open.store(true, Ordering::SeqCst);
    let d = c.run(&pool, key(1), 32, 32, vec![], video(true, Csc::Yuv420p));
    assert!(matches!(&d.result, Err(JobError::Encoder { .. })));
    ctl.fail_open.store(false, Ordering::SeqCst);
    assert_eq!(frame_of(&c.run(&pool, key(1), 32, 32, vec![], V420)).2, 0);
    let s = &pool.stats()[0];
    assert_eq!(s.errors, 2);
    assert!(s.alive);
}

#[test]
fn encoder_panics_are_caught() {
    let (pool, ctl) = pool(1, 8);
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    ctl.panic_encode.store(true, Ordering::SeqCst);
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert!(
        matches!(&d.result, Err(JobError::Encoder { reason, .. }) if reason.contains("fake encode panics")),
        "{:?}",
        d.result
    );
    ctl.panic_encode.store(false, Ordering::SeqCst);
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert_eq!(frame_of(&d).2, 0);

    ctl.panic_open.store(true, Ordering::SeqCst);
    let d = c.run(&pool, key(2), 32, 32, vec![], V420);
    assert!(
        matches!(&d.result, Err(JobError::Encoder { reason, .. }) if reason.contains("fake open panics"))
    );
    ctl.panic_open.store(false, Ordering::SeqCst);
    assert_eq!(frame_of(&c.run(&pool, key(2), 32, 32, vec![], V420)).2, 0);
    assert!(pool.stats()[0].alive);
}

#[test]
fn a_panic_in_a_job_loses_only_that_stream() {
    let (pool, ctl) = pool(1, 8);
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    c.run(&pool, key(2), 32, 32, vec![], V420);
    ctl.panic_name.store(true, Ordering::SeqCst);
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert!(
        matches!(&d.result, Err(JobError::Lost { worker: 0, reason }) if reason.contains("fake name panics")),
        "{:?}",
        d.result
    );
    ctl.panic_name.store(false, Ordering::SeqCst);
    assert_eq!(frame_of(&c.run(&pool, key(1), 32, 32, vec![], V420)).2, 0);
    assert_eq!(frame_of(&c.run(&pool, key(2), 32, 32, vec![], V420)).2, 1);
    assert!(pool.stats()[0].alive);
}

#[test]
fn a_dead_worker_loses_its_streams_and_the_rest_carry_on() {
    let (b0, ctl0) = fake(None);
    let (b1, _ctl1) = fake(None);
    let pool = Pool::with_backends(vec![WorkerSpec::cpu(b0), WorkerSpec::cpu(b1)], cfg(8)).unwrap();
    let mut c = Client::new();
    // a -> 0, b -> 1, d -> 0.
    for wid in [1, 2, 3] {
        c.run(&pool, key(wid), 32, 32, vec![], V420);
    }
    assert_eq!(pool.worker_of(&key(1)), Some(0));
    assert_eq!(pool.worker_of(&key(2)), Some(1));
    assert_eq!(pool.worker_of(&key(3)), Some(0));
    // Worker 0 dies closing stream 1 (its encoder panics when dropped,
    // outside any job).
    ctl0.panic_drop.store(true, Ordering::SeqCst);
    pool.close(key(1));
    // Whether this job was queued before the death or came after it, it
    // is answered Lost.
    let d = c.run(&pool, key(3), 32, 32, vec![], V420);
    assert!(
        matches!(&d.result, Err(JobError::Lost { worker: 0, .. })),
        "{:?}",
        d.result
    );
    wait_until("worker 0 dead", || !pool.stats()[0].alive);
    ctl0.panic_drop.store(false, Ordering::SeqCst);
    // Stream 3 starts again on worker 1; stream 2 never noticed.
    let d = c.run(&pool, key(3), 32, 32, vec![], V420);
    assert_eq!((d.worker, frame_of(&d).2), (1, 0));
    let d = c.run(&pool, key(2), 32, 32, vec![], V420);
    assert_eq!((d.worker, frame_of(&d).2), (1, 1));
    let d = c.run(&pool, key(4), 32, 32, vec![], V420);
    assert_eq!(d.worker, 1);
    let info = format!("{:?}", pool.info());
    assert!(info.contains("Bool(false)"), "{info}");
}

#[test]
fn no_live_worker_is_no_worker() {
    let (pool, ctl) = pool(1, 8);
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    ctl.panic_drop.store(true, Ordering::SeqCst);
    pool.close(key(1));
    wait_until("worker dead", || !pool.stats()[0].alive);
    assert!(matches!(
        pool.submit(c.job(key(2), 32, 32, vec![], V420)),
        Err(SubmitError::NoWorker(_))
    ));
}

#[test]
fn lossless_rects_decompress_to_the_pixels() {
    let (pool, _) = pool(1, 8);
    let mut c = Client::new();
    let formats = [
        PixelFormat::Bgrx,
        PixelFormat::Bgra,
        PixelFormat::Rgbx,
        PixelFormat::Rgba,
        PixelFormat::Rgb,
        PixelFormat::Bgr,
    ];
    for (i, src) in formats.iter().enumerate() {
        for (j, out) in formats.iter().enumerate() {
            for lz4 in [false, true] {
                let rects = vec![
                    solid(1, 2, 5, 3, *src, RED, 3),
                    solid(20, 10, 7, 4, *src, BLUE, 0),
                ];
                let wid = (i * 6 + j) as u64;
                let d = c.run(
                    &pool,
                    key(wid),
                    40,
                    20,
                    rects,
                    Mode::Lossless { format: *out, lz4 },
                );
                let got = rgb_of(&d);
                assert_eq!(got.len(), 2);
                for (r, (x, y, w, h, bgr)) in
                    got.iter().zip([(1, 2, 5, 3, RED), (20, 10, 7, 4, BLUE)])
                {
                    assert_eq!(
                        (r.x, r.y, r.w, r.h, r.format, r.lz4),
                        (x, y, w, h, *out, lz4)
                    );
                    let [b, g, rr] = bgr;
                    let px: Vec<u8> = match out {
                        PixelFormat::Bgrx | PixelFormat::Bgra => vec![b, g, rr, 0xff],
                        PixelFormat::Rgbx | PixelFormat::Rgba => vec![rr, g, b, 0xff],
                        PixelFormat::Rgb => vec![rr, g, b],
                        PixelFormat::Bgr => vec![b, g, rr],
                    };
                    assert_eq!(r.stride as usize, w as usize * px.len());
                    let data = if lz4 {
                        lz4_flex::block::decompress_size_prepended(&r.data).unwrap()
                    } else {
                        r.data.to_vec()
                    };
                    assert_eq!(data, px.repeat((w * h) as usize), "{src:?} -> {out:?}");
                }
            }
        }
    }
}

#[test]
fn refresh_covers_the_window_and_resizes_keep_pixels() {
    let (pool, _) = pool(1, 8);
    let mut c = Client::new();
    let mut img = Image::new(40, 30);
    img.paint(0, 0, 10, 10, RED);
    let d = c.run(
        &pool,
        key(1),
        40,
        30,
        vec![solid(0, 0, 10, 10, PixelFormat::Bgra, RED, 8)],
        Mode::Refresh {
            format: PixelFormat::Bgrx,
            lz4: false,
        },
    );
    let r = rgb_of(&d);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].x, r[0].y, r[0].w, r[0].h), (0, 0, 40, 30));
    assert_eq!(r[0].data.to_vec(), img.px);
    // Wider and lower: the old pixels stay where they overlap.
    let d = c.run(
        &pool,
        key(1),
        60,
        8,
        vec![],
        Mode::Refresh {
            format: PixelFormat::Bgrx,
            lz4: true,
        },
    );
    let r = rgb_of(&d);
    assert_eq!((r[0].w, r[0].h), (60, 8));
    let data = lz4_flex::block::decompress_size_prepended(&r[0].data).unwrap();
    for y in 0..8 {
        let row = &data[y * 240..(y + 1) * 240];
        assert_eq!(&row[..40], &img.region(0, y as u32, 10, 1)[..]);
        assert!(row[40..].iter().all(|b| *b == 0));
    }
    // A draw past the window grows the framebuffer.
    let d = c.run(
        &pool,
        key(1),
        60,
        8,
        vec![solid(58, 9, 4, 2, PixelFormat::Rgb, BLUE, 0)],
        Mode::Refresh {
            format: PixelFormat::Rgb,
            lz4: false,
        },
    );
    let r = rgb_of(&d);
    assert_eq!((r[0].w, r[0].h), (62, 11));
    let last = &r[0].data[(10 * 62 + 61) * 3..];
    assert_eq!(last, &[0, 0, 0xff]);
}

#[test]
fn odd_sizes_in_420_send_their_edges() {
    let (pool, _) = pool(1, 8);
    let mut c = Client::new();
    let mut img = Image::new(33, 17);
    img.paint(0, 0, 33, 17, GREEN);
    img.paint(32, 0, 1, 17, RED);
    img.paint(0, 16, 33, 1, BLUE);
    let rects = vec![
        solid(0, 0, 33, 17, PixelFormat::Rgbx, GREEN, 0),
        solid(32, 0, 1, 17, PixelFormat::Bgr, RED, 1),
        solid(0, 16, 33, 1, PixelFormat::Rgba, BLUE, 0),
    ];
    let d = c.run(&pool, key(1), 33, 17, rects, V420);
    let (w, h, frame, keyframe, sum, edges) = frame_of(&d);
    assert_eq!((w, h, frame, keyframe), (32, 16, 0, true));
    assert_eq!(sum, img.sum(32, 16));
    assert_eq!(edges.len(), 2);
    let col = &edges[0];
    assert_eq!((col.x, col.y, col.w, col.h), (32, 0, 1, 17));
    assert_eq!((col.format, col.lz4), (PixelFormat::Bgrx, false));
    assert_eq!(col.data.to_vec(), img.region(32, 0, 1, 17));
    let row = &edges[1];
    assert_eq!((row.x, row.y, row.w, row.h), (0, 16, 32, 1));
    assert_eq!(row.data.to_vec(), img.region(0, 16, 32, 1));

    // 4:4:4 takes odd sizes (a new context: frame 0 again).
    let d = c.run(&pool, key(1), 33, 17, vec![], video(false, Csc::Yuv444p));
    let (w, h, frame, _, sum, edges) = frame_of(&d);
    assert_eq!((w, h, frame), (33, 17, 0));
    assert_eq!(sum, img.sum(33, 17));
    assert!(edges.is_empty());

    // Too small for video: all of it lossless.
    for (w, h) in [(10, 40), (40, 15), (1, 1), (0, 0)] {
        let d = c.run(&pool, key(2), w, h, vec![], V420);
        let r = rgb_of(&d);
        let covered: u32 = r.iter().map(|r| r.w * r.h).sum();
        assert_eq!(covered, w * h);
    }
}

#[test]
fn new_size_or_reset_starts_a_new_context() {
    let (pool, ctl) = pool(1, 8);
    let mut c = Client::new();
    let frames: Vec<(u32, u32, u64, bool)> = [
        (32, 32, false),
        (32, 32, false),
        (48, 32, false),
        (49, 33, false), // same even size: same context
        (49, 33, true),
        (49, 33, false),
    ]
    .into_iter()
    .map(|(w, h, reset)| {
        let d = c.run(&pool, key(1), w, h, vec![], video(reset, Csc::Yuv420p));
        let (w, h, f, k, _, _) = frame_of(&d);
        (w, h, f, k)
    })
    .collect();
    assert_eq!(
        frames,
        [
            (32, 32, 0, true),
            (32, 32, 1, false),
            (48, 32, 0, true),
            (48, 32, 1, false),
            (48, 32, 0, true),
            (48, 32, 1, false),
        ]
    );
    assert_eq!(ctl.opened.load(Ordering::SeqCst), 3);
}

#[test]
fn bad_batches_are_refused() {
    let (pool, _) = pool(1, 8);
    let mut c = Client::new();
    let mut short = solid(0, 0, 8, 8, PixelFormat::Rgb, RED, 0);
    short.pixels = short.pixels.slice(..short.pixels.len() - 1);
    let mut narrow = solid(0, 0, 8, 8, PixelFormat::Bgrx, RED, 0);
    narrow.stride = 31;
    let far = solid(4090, 0, 8, 1, PixelFormat::Bgrx, RED, 0);
    for rects in [vec![short], vec![narrow], vec![far]] {
        let d = c.run(&pool, key(1), 32, 32, rects, V420);
        assert!(matches!(d.result, Err(JobError::Bad(_))), "{:?}", d.result);
    }
    let d = c.run(&pool, key(1), 5000, 32, vec![], V420);
    assert!(matches!(d.result, Err(JobError::Bad(_))));
    // The stream still works.
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert_eq!(frame_of(&d).2, 0);
}

#[test]
fn framebuffers_stay_within_their_budget() {
    let (b, _) = fake(None);
    let cfg = PoolConfig {
        max_framebuffer_bytes: 2 * 32 * 32 * 4,
        ..cfg(8)
    };
    let pool =
        Pool::with_backends(vec![WorkerSpec::cpu(b.clone()), WorkerSpec::cpu(b)], cfg).unwrap();
    let mut c = Client::new();
    assert!(c.run(&pool, key(1), 32, 32, vec![], V420).result.is_ok());
    assert!(c.run(&pool, key(2), 32, 32, vec![], V420).result.is_ok());
    assert_eq!(pool.framebuffer_bytes(), 2 * 32 * 32 * 4);
    let d = c.run(&pool, key(3), 32, 32, vec![], V420);
    assert!(matches!(d.result, Err(JobError::Bad(_))), "{:?}", d.result);
    let d = c.run(&pool, key(1), 32, 34, vec![], V420);
    assert!(matches!(d.result, Err(JobError::Bad(_))), "{:?}", d.result);
    // Shrinking gives bytes back; closing gives all of them back.
    assert!(c.run(&pool, key(1), 32, 16, vec![], V420).result.is_ok());
    assert!(c.run(&pool, key(3), 32, 16, vec![], V420).result.is_ok());
    pool.close(key(2));
    wait_until("stream 2 freed", || {
        pool.framebuffer_bytes() == 2 * 32 * 16 * 4
    });
    assert!(c.run(&pool, key(3), 32, 48, vec![], V420).result.is_ok());
    pool.close(key(1));
    pool.close(key(3));
    wait_until("all freed", || pool.framebuffer_bytes() == 0);
}

#[test]
fn idle_streams_are_freed_and_then_lost() {
    let (b, _) = fake(None);
    let cfg = PoolConfig {
        idle_timeout: Duration::from_millis(30),
        ..cfg(8)
    };
    let pool = Pool::with_backends(vec![WorkerSpec::cpu(b)], cfg).unwrap();
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    wait_until("stream freed", || {
        let s = &pool.stats()[0];
        s.streams == 0 && s.contexts == 0
    });
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert!(
        matches!(&d.result, Err(JobError::Lost { worker: 0, reason }) if reason.contains("idle")),
        "{:?}",
        d.result
    );
    let d = c.run(&pool, key(1), 32, 32, vec![], V420);
    assert_eq!(frame_of(&d).2, 0);
}

#[test]
fn contexts_over_a_device_limit_go_to_the_cpu() {
    let (dev, _) = fake(Some(1));
    let (cpu, _) = fake(None);
    let pool = Pool::with_backends(
        vec![WorkerSpec::cpu(cpu), WorkerSpec::device(dev, "fake-gpu")],
        cfg(8),
    )
    .unwrap();
    let mut c = Client::new();
    assert_eq!(c.run(&pool, key(1), 32, 32, vec![], V420).worker, 1);
    assert_eq!(c.run(&pool, key(2), 32, 32, vec![], V420).worker, 0);
    assert_eq!(c.run(&pool, key(3), 32, 32, vec![], V420).worker, 0);
    pool.close(key(1));
    assert_eq!(c.run(&pool, key(4), 32, 32, vec![], V420).worker, 1);
    assert_eq!(pool.stats()[1].device, "fake-gpu");
}

#[test]
fn a_gone_connection_drops_its_stream() {
    let (pool, _) = pool(1, 8);
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    let job = c.job(key(1), 32, 32, vec![], V420);
    drop(c);
    pool.submit(job).unwrap();
    wait_until("stream dropped", || pool.stats()[0].streams == 0);
    assert_eq!(pool.worker_of(&key(1)), None);
}

#[test]
fn shutdown_stops_everything() {
    let (pool, ctl) = pool(2, 1);
    let mut c = Client::new();
    c.run(&pool, key(1), 32, 32, vec![], V420);
    ctl.hold(true);
    pool.submit(c.job(key(1), 32, 32, vec![], V420)).unwrap();
    wait_until("held", || ctl.entered.load(Ordering::SeqCst) == 2);
    pool.submit(c.job(key(1), 32, 32, vec![], V420)).unwrap();
    let p = pool.clone();
    let stopper = std::thread::spawn(move || p.shutdown());
    // Its queue is full until the pool is shut (then: no worker).
    loop {
        match pool.submit(c.job(key(1), 32, 32, vec![], V420)) {
            Err(SubmitError::Full(_)) => std::thread::sleep(Duration::from_millis(1)),
            Err(SubmitError::NoWorker(_)) => break,
            Ok(()) => panic!("taken by a full queue"),
        }
    }
    ctl.hold(false);
    stopper.join().unwrap();
    // The held job was done; the one queued behind it answered Lost.
    assert!(c.done().result.is_ok());
    assert!(matches!(c.done().result, Err(JobError::Lost { .. })));
    assert!(matches!(
        pool.submit(c.job(key(1), 32, 32, vec![], V420)),
        Err(SubmitError::NoWorker(_))
    ));
    assert!(pool.stats().iter().all(|s| !s.alive));
    pool.shutdown();
}

#[test]
fn info_names_every_worker() {
    let (pool, _) = pool(2, 4);
    let mut c = Client::new();
    c.run(
        &pool,
        key(1),
        32,
        32,
        vec![solid(0, 0, 32, 32, PixelFormat::Rgb, RED, 0)],
        V420,
    );
    let Value::Dict(top) = pool.info() else {
        panic!()
    };
    let get = |d: &[(Value, Value)], k: &str| {
        d.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get(&top, "workers"), Some(Value::Int(2)));
    assert_eq!(get(&top, "queue-limit"), Some(Value::Int(4)));
    let Some(Value::Dict(workers)) = get(&top, "worker") else {
        panic!()
    };
    let Some(Value::Dict(w0)) = get(&workers, "0") else {
        panic!()
    };
    assert_eq!(get(&w0, "encoder"), Some(Value::from("fake")));
    assert_eq!(get(&w0, "device"), Some(Value::from("cpu")));
    assert_eq!(get(&w0, "frames"), Some(Value::Int(1)));
    assert_eq!(get(&w0, "bytes-in"), Some(Value::Int(32 * 32 * 3)));
    assert_eq!(get(&w0, "bytes-out"), Some(Value::Int(9)));
    assert!(get(&workers, "1").is_some());
}

#[test]
fn start_reports_every_reason() {
    assert!(matches!(
        Pool::start(&EncoderChoice::None, PoolConfig::default()),
        Err(PoolError::NoEncoder(_))
    ));
    let cfg = PoolConfig {
        cpu_workers: 1,
        ..PoolConfig::default()
    };
    match Pool::start(&EncoderChoice::Auto, cfg) {
        Err(PoolError::NoEncoder(why)) => {
            assert!(why.contains("nvenc"), "{why}");
            assert!(why.contains("x264"), "{why}");
        }
        Err(e) => panic!("{e}"),
        Ok(pool) => {
            eprintln!("encoders found: {:?}", pool.stats());
            assert!(!pool.stats().is_empty());
        }
    }
}

#[test]
fn real_x264_when_present() {
    let backend = match xfwd::video::x264::load() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("note: x264 not tested: {e}");
            return;
        }
    };
    let pool = Pool::with_backends(vec![WorkerSpec::cpu(backend)], cfg(4)).unwrap();
    let mut c = Client::new();
    for n in 0..3 {
        let d = c.run(
            &pool,
            key(1),
            65,
            49,
            vec![solid(0, 0, 65, 49, PixelFormat::Rgb, [n * 40, 90, 200], 0)],
            V420,
        );
        match d.result.unwrap() {
            Output::Video {
                width,
                height,
                data,
                frame,
                keyframe,
                encoder,
                edges,
                ..
            } => {
                assert_eq!(
                    (width, height, frame, encoder),
                    (64, 48, u64::from(n), "x264")
                );
                if n == 0 {
                    assert!(keyframe);
                }
                assert!(data.starts_with(&[0, 0, 0, 1]) || data.starts_with(&[0, 0, 1]));
                assert_eq!(edges.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
