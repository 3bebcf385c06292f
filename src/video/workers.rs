//! The encoder worker threads.
//!
//! [`Pool::start`] finds the encoders the `--proxy-video-encoders` choice
//! names (one worker per NVENC device, N CPU workers for x264) and starts
//! one OS thread per worker (`xfwd-video-N`). Shards reach the workers
//! through the sinks [`Pool::sink`] returns, which never block.
//!
//! # Queues
//!
//! Each worker has one crossbeam channel carrying requests, jobs and
//! closes in the order they were sent. The channel itself is unbounded;
//! what bounds it is the pool's admission: a job is taken only while the
//! worker has fewer than `queue_depth` jobs waiting (not counting the one
//! it is doing), else [`SubmitError::Full`] hands it back at once. Closes
//! are not counted and always go through: a close is never lost nor
//! refused, and it can neither overtake a job of its stream nor be
//! overtaken by one. (Closes are bounded by the streams assigned to the
//! worker: one per stream, and only for a stream the pool has assigned.)
//! Submissions and closes take one pool-wide lock for the assignment map
//! and the admission check; nothing under it blocks (the send is to an
//! unbounded channel).
//!
//! # Affinity and limits
//!
//! Every job of a [`StreamKey`] goes to the worker chosen at the stream's
//! first job (the pool keeps the map). The choice: a live worker with room
//! in its queue and under its backend's [`Backend::max_contexts`] (streams
//! assigned count as contexts), preferring the encoder kinds in the order
//! of the choice (`auto`: NVENC first, the CPU takes the rest), then the
//! fewest streams, then the shortest queue.
//!
//! # Dead workers
//!
//! Backend calls run under `catch_unwind`: a panicking encoder costs its
//! stream the context ([`JobError::Encoder`]), not the worker. A panic
//! elsewhere while doing a job drops that stream ([`JobError::Lost`]). If
//! the worker loop dies anyway (a panic outside a job, e.g. in an
//! encoder's `Drop` while closing a stream), the thread marks itself dead
//! under the pool's lock, then answers [`JobError::Lost`] to every job
//! still in its queue and exits. A later job of a stream that was on it is
//! answered [`JobError::Lost`] by the sink itself (the framebuffer is
//! gone: the transcoder asks the session for a full repaint) and the
//! stream is forgotten: its next job picks a live worker afresh. Only when
//! no worker is left does the sink return [`SubmitError::NoWorker`].
//!
//! # Idle streams
//!
//! A stream without a job for [`PoolConfig::idle_timeout`] loses its
//! framebuffer and context; the worker remembers the key, and the stream's
//! next job is answered [`JobError::Lost`] (the next one after it starts
//! a new framebuffer).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::wire::Value;

use super::choice::{EncoderChoice, EncoderKind};
use super::codec::{Backend, EncoderConfig, VideoEncoder};
use super::framebuffer::{check_rect, Framebuffer, MAX_DIM};
use super::job::{Csc, Done, Job, JobError, JobSink, Mode, Output, PixelFormat, StreamKey};
use super::job::{RgbRect, SubmitError};
use super::lossless;
use super::{nvenc, x264};

const LOG: &str = "xfwd::video";

/// How long a stream may go without a job before its worker frees it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// [`PoolConfig::max_framebuffer_bytes`] by default: 4 GiB (64 windows
/// at the 4096x4096 bound).
pub const DEFAULT_MAX_FRAMEBUFFER_BYTES: u64 = 4 << 30;

/// How long [`Pool::shutdown`] waits for each worker to stop (a worker in
/// the middle of a frame finishes it first).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Windows smaller than this (either side), or whose even part is empty,
/// are sent lossless even in [`Mode::Video`].
pub const MIN_VIDEO_SIZE: u32 = 16;

/// The most CPU workers a configuration may ask for.
pub const MAX_CPU_WORKERS: usize = 256;

/// Keys of expired streams a worker remembers (to answer their next job
/// with [`JobError::Lost`]); past this the set is cleared.
const MAX_EXPIRED: usize = 1 << 16;

/// Seconds over which frames/s is averaged.
const FPS_WINDOW: u64 = 5;

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no video encoder available: {0}")]
    NoEncoder(String),
    #[error("cannot start an encoder worker: {0}")]
    Spawn(String),
}

/// How many CPU workers and how deep their queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// CPU (x264) worker threads; 0: half the cores the machine has
    /// (`available_parallelism() / 2`, the other half being left to the
    /// shards), at least 1. At most [`MAX_CPU_WORKERS`].
    pub cpu_workers: usize,
    /// Jobs a worker's queue holds before submissions are refused (at
    /// least 1).
    pub queue_depth: usize,
    /// A stream without a job for this long loses its framebuffer and
    /// encoder context.
    pub idle_timeout: Duration,
    /// The framebuffer bytes all workers together may hold (4 bytes a
    /// pixel; a 4096x4096 window is 64 MiB): a batch that would go over
    /// is refused ([`JobError::Bad`]).
    pub max_framebuffer_bytes: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            cpu_workers: 0,
            queue_depth: 8,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_framebuffer_bytes: DEFAULT_MAX_FRAMEBUFFER_BYTES,
        }
    }
}

/// The CPU workers `cpu_workers: 0` means: half the machine's cores, at
/// least 1.
pub fn default_cpu_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// One worker to start: its backend, what it runs on, and its preference
/// rank (lower first).
#[derive(Clone)]
pub struct WorkerSpec {
    pub backend: Arc<dyn Backend>,
    /// `cpu`, or the device (`nvenc:0 NVIDIA ...`).
    pub device: String,
    /// New streams go to the lowest tier with room.
    pub tier: u8,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("backend", &self.backend.name())
            .field("device", &self.device)
            .field("tier", &self.tier)
            .finish()
    }
}

impl WorkerSpec {
    /// A CPU worker (tier 1: after devices).
    pub fn cpu(backend: Arc<dyn Backend>) -> WorkerSpec {
        WorkerSpec {
            backend,
            device: "cpu".into(),
            tier: 1,
        }
    }

    /// A device worker (tier 0).
    pub fn device(backend: Arc<dyn Backend>, device: impl Into<String>) -> WorkerSpec {
        WorkerSpec {
            backend,
            device: device.into(),
            tier: 0,
        }
    }
}

/// One worker's counters (a snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    pub index: usize,
    /// The backend's name (`x264`, `nvenc`).
    pub encoder: &'static str,
    /// `cpu`, or the device.
    pub device: String,
    pub alive: bool,
    /// Jobs answered (done or failed).
    pub jobs: u64,
    /// Video frames encoded.
    pub frames: u64,
    /// Frames per second over the last few seconds.
    pub fps: f64,
    /// Jobs in its queue.
    pub queue_depth: usize,
    /// Encoder contexts open, and streams (framebuffers) held.
    pub contexts: usize,
    pub streams: usize,
    /// Applying and encoding, in all and for the last job.
    pub encode_time: Duration,
    pub last_encode_time: Duration,
    /// Rectangle pixel bytes taken, and bytes made (bitstream and lossless
    /// data).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Jobs answered with an error.
    pub errors: u64,
}

/// Frames per second: counts per whole second, over [`FPS_WINDOW`]
/// seconds before the current one.
#[derive(Debug)]
struct FpsWindow {
    epoch: Instant,
    secs: [u64; FPS_WINDOW as usize + 1],
    counts: [u64; FPS_WINDOW as usize + 1],
}

impl FpsWindow {
    fn new(epoch: Instant) -> FpsWindow {
        FpsWindow {
            epoch,
            secs: [u64::MAX; FPS_WINDOW as usize + 1],
            counts: [0; FPS_WINDOW as usize + 1],
        }
    }

    fn record(&mut self, now: Instant) {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let i = (sec % (FPS_WINDOW + 1)) as usize;
        if self.secs[i] != sec {
            self.secs[i] = sec;
            self.counts[i] = 0;
        }
        self.counts[i] += 1;
    }

    fn rate(&self, now: Instant) -> f64 {
        let cur = now.saturating_duration_since(self.epoch).as_secs();
        let sum: u64 = self
            .secs
            .iter()
            .zip(self.counts.iter())
            .filter(|(s, _)| **s < cur && cur - **s <= FPS_WINDOW)
            .map(|(_, c)| *c)
            .sum();
        sum as f64 / FPS_WINDOW as f64
    }
}

/// A worker's counters, shared between its thread and the pool.
#[derive(Debug)]
struct Meter {
    encoder: &'static str,
    device: String,
    alive: AtomicBool,
    jobs: AtomicU64,
    frames: AtomicU64,
    errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    encode_ns: AtomicU64,
    last_encode_ns: AtomicU64,
    queued: AtomicUsize,
    contexts: AtomicUsize,
    streams: AtomicUsize,
    fps: Mutex<FpsWindow>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Meter {
    fn snapshot(&self, index: usize, now: Instant) -> WorkerStats {
        let r = Ordering::Relaxed;
        WorkerStats {
            index,
            encoder: self.encoder,
            device: self.device.clone(),
            alive: self.alive.load(r),
            jobs: self.jobs.load(r),
            frames: self.frames.load(r),
            fps: lock(&self.fps).rate(now),
            queue_depth: self.queued.load(r),
            contexts: self.contexts.load(r),
            streams: self.streams.load(r),
            encode_time: Duration::from_nanos(self.encode_ns.load(r)),
            last_encode_time: Duration::from_nanos(self.last_encode_ns.load(r)),
            bytes_in: self.bytes_in.load(r),
            bytes_out: self.bytes_out.load(r),
            errors: self.errors.load(r),
        }
    }
}

/// What a worker's channel carries.
enum Request {
    Job(Job),
    Close(StreamKey),
}

/// The pool's view of one worker.
struct Slot {
    /// `None` once the worker is dead or the pool shut down.
    tx: Option<Sender<Request>>,
    alive: bool,
    /// Streams assigned to it.
    assigned: usize,
    max_contexts: Option<usize>,
    tier: u8,
}

struct State {
    slots: Vec<Slot>,
    streams: HashMap<StreamKey, usize>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    meters: Vec<Arc<Meter>>,
    queue_depth: usize,
    budget: Arc<Budget>,
    /// Shutting down: queued jobs are answered without being done.
    stopping: AtomicBool,
}

impl Shared {
    /// Marks worker `w` dead (under the lock: no job is taken for it
    /// afterwards).
    fn mark_dead(&self, st: &mut State, w: usize) {
        if let Some(slot) = st.slots.get_mut(w) {
            slot.alive = false;
            slot.tx = None;
        }
        if let Some(m) = self.meters.get(w) {
            m.alive.store(false, Ordering::Relaxed);
        }
    }
}

/// The encoder workers, shared by every shard.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.shared.meters.len())
            .field("queue_depth", &self.shared.queue_depth)
            .finish_non_exhaustive()
    }
}

/// Where [`Pool::send`] left a job.
enum Sent {
    Taken,
    Full(Job),
    /// The worker's channel is gone.
    Gone(Job),
}

impl Pool {
    /// Finds the encoders `choice` names (logging which devices were found
    /// and why any is not used) and starts the workers.
    pub fn start(choice: &EncoderChoice, cfg: PoolConfig) -> Result<Arc<Pool>, PoolError> {
        let kinds = choice.kinds();
        if kinds.is_empty() {
            return Err(PoolError::NoEncoder(
                "video encoding is off (--proxy-video-encoders=none)".into(),
            ));
        }
        let mut specs = Vec::new();
        let mut reasons = Vec::new();
        for (tier, kind) in kinds.iter().enumerate() {
            let tier = u8::try_from(tier).unwrap_or(u8::MAX);
            match kind {
                EncoderKind::Nvenc => nvenc_workers(tier, &mut specs, &mut reasons),
                EncoderKind::X264 => match x264::load() {
                    Ok(backend) => {
                        let n = match cfg.cpu_workers {
                            0 => default_cpu_workers(),
                            n => n.min(MAX_CPU_WORKERS),
                        };
                        tracing::info!(target: LOG, "x264: {n} CPU encoder workers");
                        for _ in 0..n {
                            specs.push(WorkerSpec {
                                backend: backend.clone(),
                                device: "cpu".into(),
                                tier,
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: LOG, "x264 not used: {e}");
                        reasons.push(e.to_string());
                    }
                },
            }
        }
        if specs.is_empty() {
            let why = reasons.join("; ");
            tracing::error!(target: LOG, "no video encoder available: {why}");
            return Err(PoolError::NoEncoder(why));
        }
        Pool::with_backends(specs, cfg)
    }

    /// Starts one worker per spec (tests, and [`Pool::start`]).
    pub fn with_backends(specs: Vec<WorkerSpec>, cfg: PoolConfig) -> Result<Arc<Pool>, PoolError> {
        if specs.is_empty() {
            return Err(PoolError::NoEncoder("no worker asked for".into()));
        }
        let epoch = Instant::now();
        let mut slots = Vec::new();
        let mut meters = Vec::new();
        let mut rxs = Vec::new();
        for spec in &specs {
            let (tx, rx) = crossbeam_channel::unbounded();
            slots.push(Slot {
                tx: Some(tx),
                alive: true,
                assigned: 0,
                max_contexts: spec.backend.max_contexts(),
                tier: spec.tier,
            });
            meters.push(Arc::new(Meter {
                encoder: spec.backend.name(),
                device: spec.device.clone(),
                alive: AtomicBool::new(true),
                jobs: AtomicU64::new(0),
                frames: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                encode_ns: AtomicU64::new(0),
                last_encode_ns: AtomicU64::new(0),
                queued: AtomicUsize::new(0),
                contexts: AtomicUsize::new(0),
                streams: AtomicUsize::new(0),
                fps: Mutex::new(FpsWindow::new(epoch)),
            }));
            rxs.push(rx);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots,
                streams: HashMap::new(),
                closed: false,
            }),
            meters,
            queue_depth: cfg.queue_depth.max(1),
            budget: Arc::new(Budget {
                used: AtomicU64::new(0),
                max: cfg.max_framebuffer_bytes,
            }),
            stopping: AtomicBool::new(false),
        });
        let pool = Arc::new(Pool {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        });
        for (index, (spec, rx)) in specs.into_iter().zip(rxs).enumerate() {
            let meter = shared.meters[index].clone();
            let worker = Worker {
                index,
                backend: spec.backend,
                meter,
                shared: shared.clone(),
                rx,
                idle: cfg.idle_timeout,
                streams: HashMap::new(),
                expired: HashSet::new(),
                next_sweep: None,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("xfwd-video-{index}"))
                .spawn(move || worker.main());
            match spawned {
                Ok(h) => lock(&pool.threads).push(h),
                Err(e) => {
                    pool.shutdown();
                    return Err(PoolError::Spawn(format!("xfwd-video-{index}: {e}")));
                }
            }
        }
        Ok(pool)
    }

    /// A sink for one connection's transcoder.
    pub fn sink(self: &Arc<Pool>) -> Box<dyn JobSink> {
        Box::new(PoolSink { pool: self.clone() })
    }

    /// Per worker: its encoder, frames/s, queue depth, encode time, bytes
    /// in and out (for `info-response`, the control socket and metrics):
    /// `{workers, queue-limit, streams, framebuffer-bytes,
    /// framebuffer-limit, worker: {"0": {encoder, device,
    /// alive, jobs, frames, fps, queue, contexts, streams, encode-time-ms,
    /// last-encode-time-us, bytes-in, bytes-out, errors}, ...}}`.
    pub fn info(&self) -> Value {
        let kv = |k: &str, v: Value| (Value::from(k), v);
        let int = Value::uint;
        let usize_ = |n: usize| Value::uint(n as u64);
        let streams = lock(&self.shared.state).streams.len();
        let workers = self
            .stats()
            .into_iter()
            .map(|s| {
                (
                    Value::from(s.index.to_string()),
                    Value::Dict(vec![
                        kv("encoder", Value::from(s.encoder)),
                        kv("device", Value::from(s.device.as_str())),
                        kv("alive", Value::Bool(s.alive)),
                        kv("jobs", int(s.jobs)),
                        kv("frames", int(s.frames)),
                        // An int: bencode has no floats.
                        kv("fps", int(s.fps.round() as u64)),
                        kv("queue", usize_(s.queue_depth)),
                        kv("contexts", usize_(s.contexts)),
                        kv("streams", usize_(s.streams)),
                        kv(
                            "encode-time-ms",
                            int(u64::try_from(s.encode_time.as_millis()).unwrap_or(u64::MAX)),
                        ),
                        kv(
                            "last-encode-time-us",
                            int(u64::try_from(s.last_encode_time.as_micros()).unwrap_or(u64::MAX)),
                        ),
                        kv("bytes-in", int(s.bytes_in)),
                        kv("bytes-out", int(s.bytes_out)),
                        kv("errors", int(s.errors)),
                    ]),
                )
            })
            .collect();
        Value::Dict(vec![
            kv("workers", usize_(self.shared.meters.len())),
            kv("queue-limit", usize_(self.shared.queue_depth)),
            kv("streams", usize_(streams)),
            kv(
                "framebuffer-bytes",
                int(self.shared.budget.used.load(Ordering::Relaxed)),
            ),
            kv("framebuffer-limit", int(self.shared.budget.max)),
            kv("worker", Value::Dict(workers)),
        ])
    }

    /// Every worker's counters (metrics).
    pub fn stats(&self) -> Vec<WorkerStats> {
        let now = Instant::now();
        self.shared
            .meters
            .iter()
            .enumerate()
            .map(|(i, m)| m.snapshot(i, now))
            .collect()
    }

    /// Framebuffer bytes the workers hold (all streams).
    pub fn framebuffer_bytes(&self) -> u64 {
        self.shared.budget.used.load(Ordering::Relaxed)
    }

    /// The worker a stream is assigned to, if any.
    pub fn worker_of(&self, key: &StreamKey) -> Option<usize> {
        lock(&self.shared.state).streams.get(key).copied()
    }

    /// Hands a job to its stream's worker (what the sink's `submit`
    /// does). Never blocks.
    pub fn submit(&self, mut job: Job) -> Result<(), SubmitError> {
        let key = job.key;
        let mut st = lock(&self.shared.state);
        if st.closed {
            return Err(SubmitError::NoWorker(Box::new(job)));
        }
        if let Some(w) = st.streams.get(&job.key).copied() {
            if st.slots.get(w).is_some_and(|s| s.alive) {
                match self.send(&st, w, job) {
                    Sent::Taken => return Ok(()),
                    Sent::Full(j) => return Err(SubmitError::Full(Box::new(j))),
                    Sent::Gone(j) => {
                        self.shared.mark_dead(&mut st, w);
                        job = j;
                    }
                }
            }
            // Its worker is dead, and the framebuffer with it.
            st.streams.remove(&job.key);
            if let Some(slot) = st.slots.get_mut(w) {
                slot.assigned = slot.assigned.saturating_sub(1);
            }
            if !st.slots.iter().any(|s| s.alive) {
                return Err(SubmitError::NoWorker(Box::new(job)));
            }
            drop(st);
            tracing::debug!(target: LOG, "stream {:?}: worker {w} is dead, stream lost", job.key);
            let _ = job.reply.send(Done {
                key: job.key,
                batch: job.batch,
                result: Err(JobError::Lost {
                    worker: w,
                    reason: format!("encoder worker {w} died"),
                }),
                worker: w,
                queued: Duration::ZERO,
                encode_time: Duration::ZERO,
                submitted: job.submitted,
            });
            return Ok(());
        }
        loop {
            let Some(w) = self.pick(&st) else {
                return Err(SubmitError::NoWorker(Box::new(job)));
            };
            match self.send(&st, w, job) {
                Sent::Taken => {
                    st.streams.insert(key, w);
                    if let Some(slot) = st.slots.get_mut(w) {
                        slot.assigned += 1;
                    }
                    return Ok(());
                }
                Sent::Full(j) => return Err(SubmitError::Full(Box::new(j))),
                Sent::Gone(j) => {
                    self.shared.mark_dead(&mut st, w);
                    job = j;
                }
            }
        }
    }

    /// The stream is over: its worker frees it (the close is queued behind
    /// the stream's jobs and is never refused).
    pub fn close(&self, key: StreamKey) {
        let mut st = lock(&self.shared.state);
        let Some(w) = st.streams.remove(&key) else {
            return;
        };
        if let Some(slot) = st.slots.get_mut(w) {
            slot.assigned = slot.assigned.saturating_sub(1);
            if let Some(tx) = &slot.tx {
                let _ = tx.send(Request::Close(key));
            }
        }
    }

    /// The worker a new stream goes to: live, under its context limit;
    /// then by room in its queue, tier, streams, queue length.
    fn pick(&self, st: &State) -> Option<usize> {
        let depth = self.shared.queue_depth;
        st.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive && s.tx.is_some())
            .filter(|(_, s)| s.max_contexts.is_none_or(|m| s.assigned < m))
            .min_by_key(|(i, s)| {
                let queued = self
                    .shared
                    .meters
                    .get(*i)
                    .map_or(0, |m| m.queued.load(Ordering::Relaxed));
                (queued >= depth, s.tier, s.assigned, queued, *i)
            })
            .map(|(i, _)| i)
    }

    /// Queues a job on worker `w` if it has room (under the state lock).
    fn send(&self, st: &State, w: usize, job: Job) -> Sent {
        let (Some(slot), Some(meter)) = (st.slots.get(w), self.shared.meters.get(w)) else {
            return Sent::Gone(job);
        };
        let Some(tx) = &slot.tx else {
            return Sent::Gone(job);
        };
        if meter.queued.load(Ordering::Relaxed) >= self.shared.queue_depth {
            return Sent::Full(job);
        }
        meter.queued.fetch_add(1, Ordering::Relaxed);
        match tx.send(Request::Job(job)) {
            Ok(()) => Sent::Taken,
            Err(e) => {
                meter.queued.fetch_sub(1, Ordering::Relaxed);
                match e.into_inner() {
                    Request::Job(j) => Sent::Gone(j),
                    // Only jobs are sent here.
                    Request::Close(_) => Sent::Taken,
                }
            }
        }
    }

    /// Stops the workers (after the shards are done): jobs still queued
    /// are answered [`JobError::Lost`]; each worker gets
    /// [`SHUTDOWN_WAIT`] to finish, after which it is left to end on its
    /// own. Later submissions get [`SubmitError::NoWorker`].
    pub fn shutdown(&self) {
        {
            let mut st = lock(&self.shared.state);
            if st.closed {
                return;
            }
            st.closed = true;
            self.shared.stopping.store(true, Ordering::Relaxed);
            for slot in &mut st.slots {
                slot.tx = None;
            }
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        for h in threads {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let name = h.thread().name().unwrap_or("xfwd-video").to_owned();
            if h.is_finished() {
                if h.join().is_err() {
                    tracing::warn!(target: LOG, "{name} ended in a panic");
                }
            } else {
                tracing::warn!(target: LOG, "{name} did not stop in time; left to finish");
            }
        }
        for m in &self.shared.meters {
            m.alive.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// NVENC devices as workers, logging what was found.
fn nvenc_workers(tier: u8, specs: &mut Vec<WorkerSpec>, reasons: &mut Vec<String>) {
    let report = nvenc::detect();
    if let Some(why) = &report.unavailable {
        tracing::info!(target: LOG, "NVENC: cannot look for NVIDIA devices: {why}");
        reasons.push(format!("nvenc: {why}"));
    }
    let mut found = 0;
    for dev in &report.devices {
        let note = dev
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        if !dev.has_nvenc {
            tracing::info!(
                target: LOG,
                "NVIDIA device {} ({}) has no NVENC engine{note}: not used for video",
                dev.index,
                dev.name
            );
            reasons.push(format!(
                "nvenc: device {} ({}) has no NVENC engine",
                dev.index, dev.name
            ));
            continue;
        }
        match nvenc::backend(dev) {
            Ok(backend) => {
                let limit = backend
                    .max_contexts()
                    .map(|n| format!(", at most {n} contexts"))
                    .unwrap_or_default();
                tracing::info!(
                    target: LOG,
                    "NVIDIA device {} ({}) has NVENC{note}: encoder worker{limit}",
                    dev.index,
                    dev.name
                );
                specs.push(WorkerSpec {
                    backend,
                    device: format!("nvenc:{} {}", dev.index, dev.name),
                    tier,
                });
                found += 1;
            }
            Err(e) => {
                tracing::warn!(
                    target: LOG,
                    "NVIDIA device {} ({}) has NVENC but cannot be used: {e}",
                    dev.index,
                    dev.name
                );
                reasons.push(format!("nvenc: device {}: {e}", dev.index));
            }
        }
    }
    if found == 0 {
        if report.devices.is_empty() && report.unavailable.is_none() {
            reasons.push("nvenc: no NVIDIA device found".into());
        }
        tracing::info!(
            target: LOG,
            "NVENC: no usable device ({} NVIDIA device(s) found)",
            report.devices.len()
        );
    }
}

/// What [`Pool::sink`] returns.
struct PoolSink {
    pool: Arc<Pool>,
}

impl JobSink for PoolSink {
    fn submit(&mut self, job: Job) -> Result<(), SubmitError> {
        self.pool.submit(job)
    }

    fn close(&mut self, key: StreamKey) {
        self.pool.close(key);
    }
}

/// An open encoder context of a stream.
struct Ctx {
    enc: Box<dyn VideoEncoder>,
    cfg: EncoderConfig,
    /// The number the next frame gets (0: a keyframe is forced).
    next_frame: u64,
}

/// A window on its worker.
struct Stream {
    fb: Framebuffer,
    ctx: Option<Ctx>,
    last: Instant,
    /// The framebuffer's bytes, taken from the budget.
    held: u64,
    budget: Arc<Budget>,
}

impl Stream {
    /// Resizes the framebuffer within the budget.
    fn resize(&mut self, width: u32, height: u32) -> Result<(), JobError> {
        let need = u64::from(width) * u64::from(height) * super::framebuffer::BPP as u64;
        if need > self.held && !self.budget.take(need - self.held) {
            return Err(JobError::Bad(format!(
                "a {width}x{height} framebuffer would put the workers over their {} MiB",
                self.budget.max >> 20
            )));
        }
        let held = need.max(self.held);
        self.held = held;
        self.fb
            .resize(width, height)
            .map_err(|e| JobError::Bad(e.to_string()))?;
        self.budget.give(held - need);
        self.held = need;
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

/// Framebuffer bytes all workers hold, and their bound.
#[derive(Debug)]
struct Budget {
    used: AtomicU64,
    max: u64,
}

impl Budget {
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// One worker thread's state.
struct Worker {
    index: usize,
    backend: Arc<dyn Backend>,
    meter: Arc<Meter>,
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    idle: Duration,
    streams: HashMap<StreamKey, Stream>,
    /// Streams freed for idleness whose next job gets `Lost`.
    expired: HashSet<StreamKey>,
    /// When the next stream may be idle for long enough.
    next_sweep: Option<Instant>,
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

impl Worker {
    fn main(mut self) {
        let run = catch_unwind(AssertUnwindSafe(|| self.run()));
        if let Err(p) = run {
            let why = panic_message(&*p);
            tracing::error!(
                target: LOG,
                "encoder worker {} ({}) died: {why}",
                self.index,
                self.meter.encoder
            );
            self.die(&why);
        }
    }

    fn run(&mut self) {
        loop {
            let req = match self.next_sweep {
                Some(t) => match self.rx.recv_deadline(t) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                },
            };
            match req {
                Some(Request::Job(job)) => self.on_job(job),
                Some(Request::Close(key)) => {
                    self.expired.remove(&key);
                    self.streams.remove(&key);
                }
                None => {}
            }
            self.sweep(Instant::now());
            self.publish();
        }
        self.streams.clear();
        self.publish();
    }

    /// The loop died: no job is taken for this worker any more; the ones
    /// queued are answered `Lost`.
    fn die(&mut self, why: &str) {
        {
            let mut st = lock(&self.shared.state);
            self.shared.mark_dead(&mut st, self.index);
        }
        let _ = catch_unwind(AssertUnwindSafe(|| self.streams.clear()));
        self.publish();
        let mut lost = Vec::new();
        while let Ok(req) = self.rx.try_recv() {
            if let Request::Job(job) = req {
                lost.push(job.key);
                let e = self.lost(format!("encoder worker died: {why}"));
                self.answer(job, Err(e), None);
            }
        }
        self.meter.queued.store(0, Ordering::Relaxed);
        // Streams answered Lost here are forgotten, as the sink does for
        // the ones whose next job comes later: their next job starts anew.
        let mut st = lock(&self.shared.state);
        for key in lost {
            if st.streams.get(&key) == Some(&self.index) {
                st.streams.remove(&key);
            }
        }
    }

    fn lost(&self, reason: String) -> JobError {
        JobError::Lost {
            worker: self.index,
            reason,
        }
    }

    fn publish(&self) {
        let ctxs = self.streams.values().filter(|s| s.ctx.is_some()).count();
        self.meter.contexts.store(ctxs, Ordering::Relaxed);
        self.meter
            .streams
            .store(self.streams.len(), Ordering::Relaxed);
    }

    /// Frees the streams idle for long enough.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        let idle = self.idle;
        let gone: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last) >= idle)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            tracing::debug!(target: LOG, "stream {key:?} idle for {idle:?}: freed");
            self.streams.remove(&key);
            if self.expired.len() >= MAX_EXPIRED {
                self.expired.clear();
            }
            self.expired.insert(key);
        }
        self.next_sweep = self.streams.values().map(|s| s.last + idle).min();
    }

    fn on_job(&mut self, job: Job) {
        let _ = self
            .meter
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let picked = Instant::now();
        if self.shared.stopping.load(Ordering::Relaxed) {
            let e = self.lost("the proxy is shutting down".into());
            self.answer(job, Err(e), Some(picked));
            return;
        }
        let key = job.key;
        let result = match catch_unwind(AssertUnwindSafe(|| self.process(&job, picked))) {
            Ok(r) => r,
            Err(p) => {
                let why = panic_message(&*p);
                tracing::error!(
                    target: LOG,
                    "encoder worker {}: stream {key:?} dropped after a panic: {why}",
                    self.index
                );
                self.streams.remove(&key);
                Err(self.lost(format!("panic: {why}")))
            }
        };
        self.answer(job, result, Some(picked));
    }

    /// Sends the answer, and counts it.
    fn answer(&mut self, job: Job, result: Result<Output, JobError>, picked: Option<Instant>) {
        let now = Instant::now();
        let queued = picked.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(job.submitted)
        });
        let encode_time = picked.map_or(Duration::ZERO, |p| now.saturating_duration_since(p));
        let r = Ordering::Relaxed;
        self.meter.jobs.fetch_add(1, r);
        match &result {
            Ok(out) => {
                let bytes: usize = match out {
                    Output::Video { data, edges, .. } => {
                        data.len() + edges.iter().map(|e| e.data.len()).sum::<usize>()
                    }
                    Output::Rgb(rects) => rects.iter().map(|e| e.data.len()).sum(),
                };
                self.meter.bytes_out.fetch_add(bytes as u64, r);
                if matches!(out, Output::Video { .. }) {
                    self.meter.frames.fetch_add(1, r);
                    lock(&self.meter.fps).record(now);
                }
            }
            Err(_) => {
                self.meter.errors.fetch_add(1, r);
            }
        }
        if picked.is_some() {
            self.meter.encode_ns.fetch_add(nanos(encode_time), r);
            self.meter.last_encode_ns.store(nanos(encode_time), r);
        }
        let key = job.key;
        let done = Done {
            key,
            batch: job.batch,
            result,
            worker: self.index,
            queued,
            encode_time,
            submitted: job.submitted,
        };
        if job.reply.send(done).is_err() && self.streams.remove(&key).is_some() {
            // The connection is gone: so is the stream.
            tracing::debug!(target: LOG, "stream {key:?}: its connection is gone");
            let mut st = lock(&self.shared.state);
            if st.streams.get(&key) == Some(&self.index) {
                st.streams.remove(&key);
                if let Some(slot) = st.slots.get_mut(self.index) {
                    slot.assigned = slot.assigned.saturating_sub(1);
                }
            }
        }
    }

    /// Applies a job's rectangles and makes its output.
    fn process(&mut self, job: &Job, now: Instant) -> Result<Output, JobError> {
        if self.expired.remove(&job.key) {
            return Err(self.lost(format!(
                "stream idle for {:?}: its framebuffer was freed",
                self.idle
            )));
        }
        if job.width > MAX_DIM || job.height > MAX_DIM {
            return Err(JobError::Bad(format!(
                "window {}x{} over the {MAX_DIM}x{MAX_DIM} bound",
                job.width, job.height
            )));
        }
        let (mut w, mut h) = (job.width, job.height);
        for r in &job.rects {
            if let Some((right, bottom)) =
                check_rect(r).map_err(|e| JobError::Bad(e.to_string()))?
            {
                w = w.max(right);
                h = h.max(bottom);
            }
        }
        let budget = &self.shared.budget;
        let stream = self.streams.entry(job.key).or_insert_with(|| Stream {
            fb: Framebuffer::default(),
            ctx: None,
            last: now,
            held: 0,
            budget: budget.clone(),
        });
        stream.last = now;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.idle);
        }
        stream.resize(w, h)?;
        let mut bytes_in = 0u64;
        for r in &job.rects {
            stream
                .fb
                .apply(r)
                .map_err(|e| JobError::Bad(e.to_string()))?;
            bytes_in += u64::from(r.w) * u64::from(r.h) * r.format.bytes_per_pixel() as u64;
        }
        self.meter.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        match job.mode {
            Mode::Video {
                reset,
                csc,
                quality,
                speed,
            } => video(
                &*self.backend,
                stream,
                reset,
                EncoderConfig {
                    width: 0,
                    height: 0,
                    csc,
                    quality,
                    speed,
                },
            ),
            Mode::Lossless { format, lz4 } => Ok(Output::Rgb(
                job.rects
                    .iter()
                    .filter_map(|r| {
                        lossless::read_rect(&stream.fb, r.x, r.y, r.w, r.h, format, lz4)
                    })
                    .collect(),
            )),
            Mode::Refresh { format, lz4 } => {
                Ok(Output::Rgb(lossless::read_all(&stream.fb, format, lz4)))
            }
        }
    }
}

/// One h264 frame of the whole window (`want`: sampling, quality and
/// speed; the size comes from the framebuffer).
fn video(
    backend: &dyn Backend,
    stream: &mut Stream,
    reset: bool,
    mut want: EncoderConfig,
) -> Result<Output, JobError> {
    let name = backend.name();
    let (w, h) = (stream.fb.width(), stream.fb.height());
    let (ew, eh) = match want.csc {
        Csc::Yuv420p => (w & !1, h & !1),
        Csc::Yuv444p => (w, h),
    };
    if w < MIN_VIDEO_SIZE || h < MIN_VIDEO_SIZE || ew == 0 || eh == 0 {
        // Too small for video: all of it lossless.
        stream.ctx = None;
        return Ok(Output::Rgb(lossless::read_all(
            &stream.fb,
            PixelFormat::Bgrx,
            false,
        )));
    }
    want.width = ew;
    want.height = eh;
    let stale = match &stream.ctx {
        None => true,
        Some(c) => reset || c.cfg.width != ew || c.cfg.height != eh || c.cfg.csc != want.csc,
    };
    if stale {
        stream.ctx = None;
        match catch_unwind(AssertUnwindSafe(|| backend.open(&want))) {
            Ok(Ok(enc)) => {
                stream.ctx = Some(Ctx {
                    enc,
                    cfg: want,
                    next_frame: 0,
                })
            }
            Ok(Err(e)) => {
                return Err(JobError::Encoder {
                    encoder: name,
                    reason: e.to_string(),
                })
            }
            Err(p) => {
                let why = panic_message(&*p);
                tracing::error!(target: LOG, "{name} panicked opening a {ew}x{eh} context: {why}");
                return Err(JobError::Encoder {
                    encoder: name,
                    reason: format!("panicked opening a context: {why}"),
                });
            }
        }
    }
    let (Some(ctx), Some(frame)) = (stream.ctx.as_mut(), stream.fb.frame(ew, eh)) else {
        return Err(JobError::Encoder {
            encoder: name,
            reason: "no context".into(),
        });
    };
    let n = ctx.next_frame;
    let encoded = catch_unwind(AssertUnwindSafe(|| ctx.enc.encode(&frame, n == 0)));
    let ef = match encoded {
        Ok(Ok(ef)) => ef,
        Ok(Err(e)) => {
            stream.ctx = None;
            return Err(JobError::Encoder {
                encoder: name,
                reason: e.to_string(),
            });
        }
        Err(p) => {
            let why = panic_message(&*p);
            tracing::error!(target: LOG, "{name} panicked encoding a {ew}x{eh} frame: {why}");
            stream.ctx = None;
            return Err(JobError::Encoder {
                encoder: name,
                reason: format!("panicked: {why}"),
            });
        }
    };
    ctx.next_frame += 1;
    Ok(Output::Video {
        width: ew,
        height: eh,
        data: Bytes::from(ef.data),
        frame: n,
        keyframe: ef.keyframe,
        csc: want.csc,
        encoder: name,
        edges: edges(&stream.fb, ew, eh),
    })
}

/// What a frame of `ew` x `eh` leaves out of the framebuffer: the last
/// column (with the corner) and the last row, BGRX, uncompressed ([`Mode::Video`]
/// names no lossless format; the 3.1 client paints BGRX `rgb32`).
fn edges(fb: &Framebuffer, ew: u32, eh: u32) -> Vec<RgbRect> {
    let mut out = Vec::new();
    if fb.width() > ew {
        out.extend(lossless::read_rect(
            fb,
            ew,
            0,
            fb.width() - ew,
            fb.height(),
            PixelFormat::Bgrx,
            false,
        ));
    }
    if fb.height() > eh {
        out.extend(lossless::read_rect(
            fb,
            0,
            eh,
            ew,
            fb.height() - eh,
            PixelFormat::Bgrx,
            false,
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::video::job::Rect;

    #[test]
    fn fps_counts_whole_seconds_in_the_window() {
        let t0 = Instant::now();
        let mut w = FpsWindow::new(t0);
        for i in 0..50 {
            // 10 frames in each of seconds 0..5.
            w.record(t0 + Duration::from_millis(i * 100));
        }
        // During second 5: seconds 0..=4 count.
        assert_eq!(w.rate(t0 + Duration::from_millis(5_500)), 10.0);
        // Later: the old seconds fall out.
        assert_eq!(w.rate(t0 + Duration::from_millis(7_500)), 6.0);
        assert_eq!(w.rate(t0 + Duration::from_secs(60)), 0.0);
        // A bucket reused for a later second starts from 0.
        w.record(t0 + Duration::from_millis(6_100));
        assert!((w.rate(t0 + Duration::from_millis(7_500)) - 6.2).abs() < 1e-9);
        w.record(t0 + Duration::from_millis(12_100));
        assert!((w.rate(t0 + Duration::from_millis(13_500)) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn default_cpu_workers_is_at_least_one() {
        assert!(default_cpu_workers() >= 1);
        let c = PoolConfig::default();
        assert_eq!((c.cpu_workers, c.idle_timeout), (0, DEFAULT_IDLE_TIMEOUT));
    }

    #[test]
    fn edges_of_odd_frames() {
        let mut fb = Framebuffer::new(5, 3).unwrap();
        let px: Vec<u8> = (0..15u8).flat_map(|i| [i, i, i, 0xff]).collect();
        fb.apply(&Rect {
            x: 0,
            y: 0,
            w: 5,
            h: 3,
            stride: 20,
            format: PixelFormat::Bgrx,
            pixels: Bytes::from(px),
        })
        .unwrap();
        let e = edges(&fb, 4, 2);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].x, e[0].y, e[0].w, e[0].h), (4, 0, 1, 3));
        assert_eq!(
            e[0].data.iter().step_by(4).copied().collect::<Vec<_>>(),
            [4, 9, 14]
        );
        assert_eq!((e[1].x, e[1].y, e[1].w, e[1].h), (0, 2, 4, 1));
        assert_eq!(
            e[1].data.iter().step_by(4).copied().collect::<Vec<_>>(),
            [10, 11, 12, 13]
        );
        assert!(edges(&fb, 5, 3).is_empty());
    }

    #[test]
    fn panic_messages() {
        let p = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*p), "plain");
        let n = 3;
        let p = catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*p), "formatted 3");
    }
}
