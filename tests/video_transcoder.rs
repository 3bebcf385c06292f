//! The transcoder in memory: session draws built as xpra 3.1.3 sends them
//! (pixels as a raw chunk), a vector for a job sink, fake worker answers,
//! and a simulated clock.
#![allow(clippy::unwrap_used)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use xfwd::proxy::Verdict;
use xfwd::video::caps::{self, ClientVideo};
use xfwd::video::job::{
    Csc, Done, Job, JobError, JobSink, Mode, Output, PixelFormat, RgbRect, StreamKey, SubmitError,
};
use xfwd::video::transcoder::{
    TranscodeConfig, Transcoder, CLIENT_TYPES, SESSION_TYPES, VIDEO_QUIET,
};
use xfwd::wire::frame::{FrameDecoder, Limits, Record};
use xfwd::wire::header::{Encoder, Rules};
use xfwd::wire::packet::{self, Assembler, EncodeOptions};
use xfwd::wire::peek::peek_type;
use xfwd::wire::Value;

const ENC: Encoder = Encoder::Rencode;
const WID: u64 = 7;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SinkMode {
    Accept,
    Full,
    NoWorker,
}

#[derive(Clone, Default)]
struct Shared {
    jobs: Rc<RefCell<Vec<Job>>>,
    closed: Rc<RefCell<Vec<StreamKey>>>,
    mode: Rc<Cell<Option<SinkMode>>>,
    refused: Rc<Cell<u32>>,
}

struct VecSink(Shared);

impl JobSink for VecSink {
    fn submit(&mut self, job: Job) -> Result<(), SubmitError> {
        match self.0.mode.get().unwrap_or(SinkMode::Accept) {
            SinkMode::Accept => {
                self.0.jobs.borrow_mut().push(job);
                Ok(())
            }
            SinkMode::Full => {
                self.0.refused.set(self.0.refused.get() + 1);
                Err(SubmitError::Full(Box::new(job)))
            }
            SinkMode::NoWorker => Err(SubmitError::NoWorker(Box::new(job))),
        }
    }

    fn close(&mut self, key: StreamKey) {
        self.0.closed.borrow_mut().push(key);
    }
}

struct H {
    t: Transcoder,
    s: Shared,
    now: Instant,
    _rx: tokio::sync::mpsc::UnboundedReceiver<Done>,
}

fn client() -> ClientVideo {
    ClientVideo {
        csc: Csc::Yuv420p,
        max_width: 4096,
        max_height: 4096,
        rgb_format: PixelFormat::Bgrx,
        lz4: true,
        quality: 70,
        speed: 80,
    }
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn i(v: i64) -> Value {
    Value::Int(v)
}

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn records(items: &[Value]) -> Vec<Record> {
    let opts = EncodeOptions {
        chunk_threshold: Some(64),
        ..EncodeOptions::plain(ENC)
    };
    packet::encode_packet(items, &opts).unwrap()
}

/// Every packet in a byte stream.
fn decode_all(bytes: &[u8]) -> Vec<Vec<Value>> {
    let mut d = FrameDecoder::new(Rules::Any, Limits::default());
    d.feed(bytes);
    let mut a = Assembler::new();
    let mut out = Vec::new();
    while let Some(r) = d.next_record().unwrap() {
        if let Some(p) = a.push(&r, &Limits::default()).unwrap() {
            out.push(p.items);
        }
    }
    out
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn int_of(v: &Value) -> i64 {
    v.as_int().unwrap()
}

fn bgrx(w: u32, h: u32, fill: u8) -> Bytes {
    Bytes::from(vec![fill; (w * h * 4) as usize])
}

impl H {
    fn new() -> H {
        let s = Shared::default();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = TranscodeConfig {
            client: client(),
            encoder: ENC,
            shard: 1,
            conn: 42,
        };
        H {
            t: Transcoder::new(cfg, Box::new(VecSink(s.clone())), tx),
            s,
            now: Instant::now(),
            _rx: rx,
        }
    }

    fn key(&self) -> StreamKey {
        StreamKey {
            shard: 1,
            conn: 42,
            wid: WID,
        }
    }

    fn session(&mut self, items: Vec<Value>) -> Verdict {
        let mut recs = records(&items);
        let main = recs.pop().unwrap();
        let ptype = peek_type(&main).unwrap();
        assert!(SESSION_TYPES.contains(&ptype.name().unwrap()));
        self.t.on_session_packet(&recs, &main, &ptype, self.now)
    }

    fn client_pkt(&mut self, items: Vec<Value>) -> Verdict {
        let recs = packet::encode_packet(&items, &EncodeOptions::plain(ENC)).unwrap();
        let main = recs.last().unwrap().clone();
        let ptype = peek_type(&main).unwrap();
        assert!(CLIENT_TYPES.contains(&ptype.name().unwrap()));
        self.t.on_client_packet(&[], &main, &ptype, self.now)
    }

    fn new_window(&mut self, wid: u64, w: i64, h: i64) {
        let v = self.session(vec![
            s("new-window"),
            i(wid as i64),
            i(0),
            i(0),
            i(w),
            i(h),
            dict(vec![("title", s("t"))]),
            dict(vec![]),
        ]);
        assert!(matches!(v, Verdict::Forward));
    }

    /// A BGRX `rgb24` draw, as the 3.1.3 session sent them.
    #[allow(clippy::too_many_arguments)]
    fn draw(&mut self, wid: u64, x: u32, y: u32, w: u32, h: u32, seq: i64, flush: i64) -> Verdict {
        let mut opts = vec![("rgb_format", s("BGRX"))];
        if flush > 0 {
            opts.push(("flush", i(flush)));
        }
        self.session(vec![
            s("draw"),
            i(wid as i64),
            i(x.into()),
            i(y.into()),
            i(w.into()),
            i(h.into()),
            s("rgb24"),
            Value::Bytes(bgrx(w, h, seq as u8)),
            i(seq),
            i((w * 4).into()),
            dict(opts),
        ])
    }

    fn jobs(&self) -> Vec<Job> {
        std::mem::take(&mut *self.s.jobs.borrow_mut())
    }

    fn sent_to_client(&mut self) -> Vec<Vec<Value>> {
        let mut out = Vec::new();
        while let Some(b) = self.t.pop_to_client_parts().map(|p| p.concat()) {
            let mut p = decode_all(&b);
            assert_eq!(p.len(), 1, "one whole packet per pop");
            out.append(&mut p);
        }
        out
    }

    fn sent_to_session(&mut self) -> Vec<Vec<Value>> {
        let mut out = Vec::new();
        while let Some(b) = self.t.pop_to_session() {
            out.extend(decode_all(&b));
        }
        out
    }

    fn done(&mut self, job: &Job, result: Result<Output, JobError>) {
        let d = Done {
            key: job.key,
            batch: job.batch,
            result,
            worker: 0,
            queued: Duration::ZERO,
            encode_time: Duration::from_millis(3),
            submitted: job.submitted,
        };
        self.t.on_done(d, self.now);
    }

    fn video(&mut self, job: &Job, frame: u64, len: usize) {
        let out = Output::Video {
            width: job.width,
            height: job.height,
            data: Bytes::from(vec![0x42; len]),
            frame,
            keyframe: frame == 0,
            csc: Csc::Yuv420p,
            encoder: "x264",
            edges: Vec::new(),
        };
        self.done(job, Ok(out));
    }

    fn rgb(&mut self, job: &Job) {
        let rects = job
            .rects
            .iter()
            .map(|r| RgbRect {
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                stride: r.w * 4,
                format: PixelFormat::Bgrx,
                lz4: false,
                data: r.pixels.clone(),
            })
            .collect();
        self.done(job, Ok(Output::Rgb(rects)));
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if self.t.poll_timeout().is_some_and(|t| t <= self.now) {
            self.t.on_timeout(self.now);
        }
    }

    fn ack(&mut self, seq: i64, decode_time: i64) -> Verdict {
        self.client_pkt(vec![
            s("damage-sequence"),
            i(seq),
            i(WID as i64),
            i(640),
            i(480),
            i(decode_time),
            s(""),
        ])
    }
}

fn acks(packets: &[Vec<Value>]) -> Vec<(i64, i64, i64, i64)> {
    packets
        .iter()
        .filter(|p| str_of(&p[0]) == "damage-sequence")
        .map(|p| (int_of(&p[1]), int_of(&p[3]), int_of(&p[4]), int_of(&p[5])))
        .collect()
}

#[test]
fn the_session_hello_is_restricted_to_raw_rgb() {
    let data = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hello-xpra31-client.bin"),
    )
    .unwrap();
    let mut d = FrameDecoder::new(Rules::Any, Limits::session_hello());
    d.feed(&data);
    let r = d.next_record().unwrap().unwrap();
    let p = packet::decode_main(&r, &Limits::session_hello()).unwrap();
    let hello = p.items[1].clone();
    assert!(caps::client_video(&hello).is_some());
    let Value::Dict(mut c) = hello else {
        panic!("caps")
    };
    caps::restrict_upstream_hello(&mut c);
    let v = Value::Dict(c);
    let keys: Vec<&str> = v
        .as_dict()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert!(!keys
        .iter()
        .any(|k| k.starts_with("mmap") || k.starts_with("aliases")));
    assert_eq!(v.get("encodings").unwrap().as_str_list(), vec!["rgb"]);
    assert_eq!(v.get("encoding").unwrap().as_str(), Some("rgb"));
    assert_eq!(v.get("encoding.rgb_zlib"), Some(&Value::Bool(false)));
    assert_eq!(v.get("encoding.rgb_lz4"), Some(&Value::Bool(false)));
    assert_eq!(v.get("encoding.scrolling"), Some(&Value::Bool(false)));
    assert_eq!(v.get("encoding.supports_delta"), Some(&Value::List(vec![])));
    assert!(v.get("encoding.rgb24zlib").is_none());
}

#[test]
fn a_client_without_h264_is_not_transcoded() {
    let c = dict(vec![
        (
            "encodings",
            Value::List(vec![s("png"), s("rgb"), s("jpeg")]),
        ),
        (
            "encoding.full_csc_modes",
            dict(vec![("webp", Value::List(vec![s("BGRX")]))]),
        ),
        ("encoding.rgb_formats", Value::List(vec![s("BGRX")])),
    ]);
    assert_eq!(caps::client_video(&c), None);
}

/// Three draws of one server batch (flush=2,1,0) make one job; its h264
/// frame goes to the client; the client's ack acks all three to the
/// session, and is not forwarded.
#[test]
fn a_batch_becomes_one_frame_and_its_ack_acks_every_draw() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    assert!(matches!(h.draw(WID, 0, 0, 100, 50, 10, 2), Verdict::Drop));
    assert!(matches!(h.draw(WID, 200, 0, 100, 50, 11, 1), Verdict::Drop));
    assert!(h.jobs().is_empty(), "no job before the batch ends");
    assert!(matches!(h.draw(WID, 0, 300, 64, 32, 12, 0), Verdict::Drop));
    let jobs = h.jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.key, h.key());
    assert_eq!((job.width, job.height), (640, 480));
    assert_eq!(job.rects.len(), 3);
    assert_eq!(
        job.rects
            .iter()
            .map(|r| (r.x, r.y, r.w, r.h))
            .collect::<Vec<_>>(),
        vec![(0, 0, 100, 50), (200, 0, 100, 50), (0, 300, 64, 32)]
    );
    assert!(job.rects.iter().all(|r| r.format == PixelFormat::Bgrx));
    assert_eq!(job.rects[0].pixels.len(), 100 * 50 * 4);
    assert!(h.sent_to_client().is_empty());
    assert!(h.sent_to_session().is_empty(), "no ack before the client's");

    h.video(job, 0, 5000);
    let out = h.sent_to_client();
    assert_eq!(out.len(), 1);
    let p = &out[0];
    assert_eq!(p.len(), 11);
    assert_eq!(str_of(&p[0]), "draw");
    assert_eq!(int_of(&p[1]), WID as i64);
    assert_eq!((int_of(&p[2]), int_of(&p[3])), (0, 0));
    assert_eq!((int_of(&p[4]), int_of(&p[5])), (640, 480));
    assert_eq!(str_of(&p[6]), "h264");
    assert_eq!(p[7].as_bytes().unwrap(), &vec![0x42; 5000][..]);
    let seq = int_of(&p[8]);
    assert_eq!(seq, 1, "our own sequence numbers");
    assert_eq!(int_of(&p[9]), 0);
    let opts = &p[10];
    assert_eq!(opts.get("frame").and_then(Value::as_int), Some(0));
    assert_eq!(opts.get("csc").and_then(Value::as_str), Some("YUV420P"));
    assert_eq!(opts.get("type").and_then(Value::as_str), Some("IDR"));
    assert!(opts.get("pts").and_then(Value::as_int).is_some());

    // a second answer to the same job: ignored
    h.video(job, 1, 10);
    assert!(h.sent_to_client().is_empty());

    assert!(matches!(h.ack(seq, 1234), Verdict::Drop));
    let to_session = h.sent_to_session();
    assert_eq!(
        acks(&to_session),
        vec![(10, 100, 50, 1234), (11, 100, 50, 1234), (12, 64, 32, 1234)]
    );
    assert!(to_session.iter().all(|p| int_of(&p[2]) == WID as i64));
    // an ack for a packet we never sent: consumed, nothing acked
    assert!(matches!(h.ack(99, 1), Verdict::Drop));
    assert!(h.sent_to_session().is_empty());
}

#[test]
fn big_outputs_travel_as_raw_chunks() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.draw(WID, 0, 0, 10, 10, 1, 0);
    let job = h.jobs().remove(0);
    h.video(&job, 0, 5000);
    let parts = h.t.pop_to_client_parts().unwrap();
    // chunk header, chunk, main header, main
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[1].len(), 5000);
    assert_eq!(parts[0][3], 7, "chunk index 7");
}

#[test]
fn lost_window_closes_its_stream_and_late_answers_are_ignored() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.draw(WID, 0, 0, 10, 10, 5, 0);
    let job = h.jobs().remove(0);
    let v = h.session(vec![s("lost-window"), i(WID as i64)]);
    assert!(matches!(v, Verdict::Forward));
    assert_eq!(*h.s.closed.borrow(), vec![h.key()]);
    // its outstanding draw is acked (skipped)
    assert_eq!(acks(&h.sent_to_session()), vec![(5, 10, 10, 0)]);
    h.video(&job, 0, 100);
    assert!(h.sent_to_client().is_empty());
    // later draws for it are the session's business
    assert!(matches!(h.draw(WID, 0, 0, 10, 10, 6, 0), Verdict::Forward));
    assert!(h.jobs().is_empty());
}

#[test]
fn a_full_queue_keeps_the_rects_for_the_next_job() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.s.mode.set(Some(SinkMode::Full));
    h.draw(WID, 0, 0, 10, 10, 1, 0);
    assert_eq!(h.s.refused.get(), 1);
    assert!(h.jobs().is_empty());
    h.s.mode.set(Some(SinkMode::Accept));
    h.now += Duration::from_millis(5);
    h.draw(WID, 100, 100, 20, 20, 2, 0);
    let jobs = h.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].rects.iter().map(|r| (r.x, r.w)).collect::<Vec<_>>(),
        vec![(0, 10), (100, 20)]
    );
    // both draws are acked with the job's packets
    h.rgb(&jobs[0]);
    let out = h.sent_to_client();
    assert_eq!(out.len(), 2);
    assert_eq!(str_of(&out[0][6]), "rgb32");
    assert_eq!(
        out[0][10].get("rgb_format").and_then(Value::as_str),
        Some("BGRX")
    );
    // more than one draw for one batch: flush counts down
    assert_eq!(out[0][10].get("flush").and_then(Value::as_int), Some(1));
    assert_eq!(out[1][10].get("flush"), None);
    h.ack(int_of(&out[1][8]), 50);
    assert_eq!(
        acks(&h.sent_to_session()),
        vec![(1, 10, 10, 50), (2, 20, 20, 50)]
    );
}

#[test]
fn a_full_queue_is_retried_on_timeout() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.s.mode.set(Some(SinkMode::Full));
    h.draw(WID, 0, 0, 10, 10, 1, 0);
    h.s.mode.set(Some(SinkMode::Accept));
    assert!(h.t.poll_timeout().is_some());
    h.advance(50);
    assert_eq!(h.jobs().len(), 1);
}

#[test]
fn beyond_the_pending_bound_draws_are_acked_and_the_window_repainted() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.s.mode.set(Some(SinkMode::Full));
    // rectangles that do not cover each other: 1.2 MB each, 8 MiB bound
    for seq in 1..=6 {
        h.draw(WID, 0, seq as u32, 640, 472, seq, 0);
        assert!(h.sent_to_session().is_empty(), "draw {seq}");
    }
    h.draw(WID, 0, 7, 640, 472, 7, 0);
    let to_session = h.sent_to_session();
    let a = acks(&to_session);
    assert_eq!(a.len(), 7);
    assert!(a.iter().all(|(_, _, _, t)| *t == 0));
    assert_eq!(
        a.iter().map(|a| a.0).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    let refresh: Vec<_> = to_session
        .iter()
        .filter(|p| str_of(&p[0]) == "buffer-refresh")
        .collect();
    assert_eq!(refresh.len(), 1);
    let r = refresh[0];
    assert_eq!(r.len(), 6);
    assert_eq!(
        (int_of(&r[1]), int_of(&r[2]), int_of(&r[3])),
        (WID as i64, 0, 100)
    );
    assert_eq!(r[4].get("refresh-now"), Some(&Value::Bool(true)));
    // nothing left pending
    h.s.mode.set(Some(SinkMode::Accept));
    h.advance(50);
    assert!(h.jobs().is_empty());
}

#[test]
fn window_properties_lose_their_encoding_choices() {
    let mut h = H::new();
    let props = dict(vec![
        ("encoding.scrolling", Value::Bool(true)),
        (
            "encodings.rgb_formats",
            Value::List(vec![s("RGB"), s("RGBX")]),
        ),
        ("encoding.full_csc_modes", dict(vec![])),
        ("encoding.transparency", Value::Bool(false)),
    ]);
    let v = h.client_pkt(vec![
        s("map-window"),
        i(WID as i64),
        i(0),
        i(0),
        i(640),
        i(480),
        props,
        dict(vec![]),
    ]);
    let Verdict::Replace(bytes) = v else {
        panic!("not replaced: {v:?}")
    };
    let p = decode_all(&bytes);
    assert_eq!(p.len(), 1);
    let p = &p[0];
    assert_eq!(str_of(&p[0]), "map-window");
    assert_eq!(int_of(&p[4]), 640);
    let keys: Vec<&str> = p[6]
        .as_dict()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, vec!["encoding.transparency"]);
    // nothing to filter: passed on as it is
    let v = h.client_pkt(vec![
        s("configure-window"),
        i(WID as i64),
        i(0),
        i(0),
        i(640),
        i(480),
        dict(vec![("workspace", i(1))]),
    ]);
    assert!(matches!(v, Verdict::Forward));
}

fn full_frame(h: &mut H, seq: i64) -> Option<Job> {
    h.draw(WID, 0, 0, 640, 480, seq, 0);
    let mut jobs = h.jobs();
    assert!(jobs.len() <= 1);
    jobs.pop()
}

#[test]
fn sparse_draws_go_lossless_fast_ones_video_and_quiet_ends_on_a_refresh() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    let mut seq = 0;
    // an idle terminal: a small change every half second
    for _ in 0..6 {
        seq += 1;
        h.draw(WID, 8, 8, 16, 16, seq, 0);
        let job = h.jobs().pop().unwrap();
        assert!(matches!(
            job.mode,
            Mode::Lossless {
                format: PixelFormat::Bgrx,
                lz4: true
            }
        ));
        h.rgb(&job);
        h.advance(500);
    }
    // 25 batches a second of the whole window
    let mut modes = Vec::new();
    for _ in 0..25 {
        seq += 1;
        let job = full_frame(&mut h, seq).unwrap();
        modes.push(job.mode);
        match job.mode {
            Mode::Video { .. } => h.video(&job, 0, 100),
            _ => h.rgb(&job),
        }
        h.advance(40);
    }
    let first_video = modes
        .iter()
        .position(|m| matches!(m, Mode::Video { .. }))
        .unwrap();
    assert!(first_video > 0, "the first fast batches are still lossless");
    assert!(modes[..first_video]
        .iter()
        .all(|m| matches!(m, Mode::Lossless { .. })));
    assert!(matches!(
        modes[first_video],
        Mode::Video {
            reset: true,
            csc: Csc::Yuv420p,
            quality: 70,
            speed: 80
        }
    ));
    assert!(modes[first_video + 1..]
        .iter()
        .all(|m| matches!(m, Mode::Video { reset: false, .. })));
    h.sent_to_client();
    // quiet: one refresh, lossless, then the stream's end
    let deadline = h.t.poll_timeout().unwrap();
    assert!(deadline <= h.now + VIDEO_QUIET);
    h.advance(800);
    let jobs = h.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(matches!(
        jobs[0].mode,
        Mode::Refresh {
            format: PixelFormat::Bgrx,
            lz4: true
        }
    ));
    assert!(jobs[0].rects.is_empty());
    let whole = RgbRect {
        x: 0,
        y: 0,
        w: 640,
        h: 480,
        stride: 640 * 4,
        format: PixelFormat::Bgrx,
        lz4: true,
        data: Bytes::from_static(b"lz4 data"),
    };
    h.done(&jobs[0], Ok(Output::Rgb(vec![whole])));
    let out = h.sent_to_client();
    assert_eq!(out.len(), 2);
    assert_eq!(str_of(&out[0][6]), "rgb32");
    assert_eq!(out[0][10].get("lz4").and_then(Value::as_int), Some(1));
    assert_eq!(str_of(&out[1][0]), "eos");
    // nothing more is owed
    h.advance(2000);
    assert!(h.jobs().is_empty());
    // activity again: a new stream
    let mut reset = None;
    for _ in 0..15 {
        seq += 1;
        let job = full_frame(&mut h, seq).unwrap();
        if let Mode::Video { reset: r, .. } = job.mode {
            reset.get_or_insert(r);
            h.video(&job, 0, 100);
        } else {
            h.rgb(&job);
        }
        h.advance(40);
    }
    assert_eq!(reset, Some(true));
    let info = h.t.info(h.now);
    let w = info.get("windows").unwrap().get(&WID.to_string()).unwrap();
    assert_eq!(w.get("mode").and_then(Value::as_str), Some("video"));
    assert!(w.get("frames").and_then(Value::as_int).unwrap() > 0);
    let totals = info.get("totals").unwrap();
    assert!(totals.get("frames").and_then(Value::as_int).unwrap() > 0);
}

#[test]
fn jobs_in_flight_are_bounded_and_later_batches_merge() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    let a = full_frame(&mut h, 1).unwrap();
    let b = full_frame(&mut h, 2).unwrap();
    assert!(full_frame(&mut h, 3).is_none(), "two in flight at most");
    // a fourth covers the third: it replaces it
    assert!(full_frame(&mut h, 4).is_none());
    h.rgb(&a);
    let c = h.jobs().pop().unwrap();
    assert_eq!(c.rects.len(), 1);
    assert_eq!(c.rects[0].pixels[0], 4);
    h.rgb(&b);
    h.rgb(&c);
    let out = h.sent_to_client();
    assert_eq!(out.len(), 3);
    let seqs: Vec<i64> = out.iter().map(|p| int_of(&p[8])).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    h.ack(3, 10);
    assert_eq!(
        acks(&h.sent_to_session()),
        vec![(3, 640, 480, 10), (4, 640, 480, 10)]
    );
}

#[test]
fn answers_come_out_in_submission_order() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    let a = full_frame(&mut h, 1).unwrap();
    let b = full_frame(&mut h, 2).unwrap();
    h.rgb(&b);
    assert!(h.sent_to_client().is_empty(), "b waits for a");
    h.rgb(&a);
    let out = h.sent_to_client();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0][7].as_bytes().unwrap()[0], 1);
    assert_eq!(out[1][7].as_bytes().unwrap()[0], 2);
}

#[test]
fn a_failed_job_acks_its_draws_and_asks_for_a_repaint() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    let a = full_frame(&mut h, 1).unwrap();
    let err = JobError::Lost {
        worker: 0,
        reason: "died".into(),
    };
    h.done(&a, Err(err));
    let to_session = h.sent_to_session();
    assert_eq!(acks(&to_session), vec![(1, 640, 480, 0)]);
    assert!(to_session.iter().any(|p| str_of(&p[0]) == "buffer-refresh"));
    assert!(h.sent_to_client().is_empty());
}

#[test]
fn without_workers_draws_are_relayed_resequenced() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.s.mode.set(Some(SinkMode::NoWorker));
    assert!(matches!(h.draw(WID, 1, 2, 3, 4, 100, 0), Verdict::Drop));
    assert!(matches!(h.draw(WID, 5, 6, 7, 8, 101, 0), Verdict::Drop));
    let out = h.sent_to_client();
    assert_eq!(out.len(), 2);
    for (p, (seq, x)) in out.iter().zip([(1, 1), (2, 5)]) {
        assert_eq!(str_of(&p[0]), "draw");
        assert_eq!(int_of(&p[2]), x);
        assert_eq!(int_of(&p[8]), seq);
        assert_eq!(
            p[10].get("rgb_format").and_then(Value::as_str),
            Some("BGRX")
        );
    }
    assert_eq!(*h.s.closed.borrow(), vec![h.key()]);
    h.ack(2, 7);
    assert_eq!(acks(&h.sent_to_session()), vec![(101, 7, 8, 7)]);
}

#[test]
fn other_codings_are_relayed_after_what_is_pending() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    let a = full_frame(&mut h, 1).unwrap();
    let v = h.session(vec![
        s("draw"),
        i(WID as i64),
        i(0),
        i(0),
        i(10),
        i(10),
        s("png"),
        Value::Bytes(Bytes::from_static(b"\x89PNG")),
        i(2),
        i(0),
        dict(vec![]),
    ]);
    assert!(matches!(v, Verdict::Drop));
    assert!(
        h.sent_to_client().is_empty(),
        "the png waits for the job before it"
    );
    h.rgb(&a);
    let out = h.sent_to_client();
    assert_eq!(out.len(), 2);
    assert_eq!(str_of(&out[1][6]), "png");
    assert_eq!(int_of(&out[1][8]), 2);
    assert_eq!(*h.s.closed.borrow(), vec![h.key()]);
}

#[test]
fn untracked_windows_are_relayed_as_they_are() {
    let mut h = H::new();
    assert!(matches!(h.draw(99, 0, 0, 4, 4, 1, 0), Verdict::Forward));
    let v = h.client_pkt(vec![
        s("damage-sequence"),
        i(1),
        i(99),
        i(4),
        i(4),
        i(10),
        s(""),
    ]);
    assert!(matches!(v, Verdict::Forward));
    // a window larger than the client decodes is not tracked either
    h.new_window(100, 5000, 100);
    assert!(matches!(h.draw(100, 0, 0, 4, 4, 1, 0), Verdict::Forward));
}

#[test]
fn close_frees_every_stream() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    h.new_window(8, 100, 100);
    h.t.close();
    let mut closed: Vec<u64> = h.s.closed.borrow().iter().map(|k| k.wid).collect();
    closed.sort_unstable();
    assert_eq!(closed, vec![WID, 8]);
}

#[test]
fn a_job_without_answer_is_taken_as_lost() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    let a = full_frame(&mut h, 1).unwrap();
    h.advance(3100);
    let to_session = h.sent_to_session();
    assert_eq!(acks(&to_session), vec![(1, 640, 480, 0)]);
    assert!(to_session.iter().any(|p| str_of(&p[0]) == "buffer-refresh"));
    // its answer, when it comes, is ignored
    h.rgb(&a);
    assert!(h.sent_to_client().is_empty());
}

#[test]
fn repeated_failures_make_the_window_raw() {
    let mut h = H::new();
    h.new_window(WID, 640, 480);
    for seq in 1..=3 {
        let job = full_frame(&mut h, seq).unwrap();
        let err = JobError::Encoder {
            encoder: "x264",
            reason: "broken".into(),
        };
        h.done(&job, Err(err));
    }
    assert_eq!(*h.s.closed.borrow(), vec![h.key()]);
    h.sent_to_session();
    assert!(matches!(h.draw(WID, 0, 0, 8, 8, 4, 0), Verdict::Drop));
    assert!(h.jobs().is_empty());
    let out = h.sent_to_client();
    assert_eq!(out.len(), 1);
    assert_eq!(int_of(&out[0][8]), 1);
    let info = h.t.info(h.now);
    let w = info.get("windows").unwrap().get(&WID.to_string()).unwrap();
    assert_eq!(w.get("mode").and_then(Value::as_str), Some("raw"));
    assert!(w.get("raw-reason").is_some());
}
