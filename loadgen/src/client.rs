//! `loadgen client`: N concurrent fake xpra clients.
//!
//! Each connection sends a hello, answers challenges, then reads draws
//! (checking sequence numbers and pixel checksums), answers pings and sends
//! its own, measuring the round trip. With `--handshake-loop` a connection
//! closes right after the server's hello and a new one takes its place, to
//! measure connection setup.
//!
//! With `--ack-every M` a connection acknowledges draws the way xpra's
//! client does (`damage-sequence`), so an ack-paced session (`loadgen server
//! --window N`) keeps streaming. A watchdog counts stalls: an established
//! connection that expects data and gets no bytes for `--stall-ms`.
//!
//! Model: `--threads` OS threads (default: the CPUs), each one mio event
//! loop owning its share of the connections; nothing is shared between
//! threads on the data path but relaxed counters for the progress line.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Token};

use xfwd::wire::frame::Record;
use xfwd::wire::header::{Compressor, Encoder};
use xfwd::wire::views::{Challenge, Close, CLOSE_PACKET_ALIASES};
use xfwd::wire::Value;

use crate::chaos::{self, Outcome, Rng};
use crate::evloop::{Slab, Timers};
use crate::net::{Item, RecordReader, Stream, Target, WriteQueue};
use crate::proto::{self, ClientHello, Framing};
use crate::report::{self, Fail, Stats};
use crate::transport::{self, Transport};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub target: Target,
    pub connections: usize,
    pub duration: Duration,
    pub ping_interval: Option<Duration>,
    pub encoder: Encoder,
    pub compress: Compressor,
    pub password: Option<Vec<u8>>,
    pub json: Option<PathBuf>,
    pub threads: usize,
    pub timeout: Duration,
    pub handshake_loop: bool,
    pub ready_file: Option<PathBuf>,
    /// Stop this long after every initial connection has settled.
    pub hold_after_ready: Option<Duration>,
    /// Read at most this many bytes per second per connection once
    /// established (a slow reader: the proxy must push back, not buffer).
    pub read_rate: Option<u64>,
    /// Handshakes in flight at once, all threads together.
    pub max_pending: usize,
    /// Acknowledge draws every this many (0: never).
    pub ack_every: u32,
    /// The watchdog's limit: no bytes for longer while data is expected is
    /// a stall (`None`: no watchdog).
    pub stall: Option<Duration>,
    /// Exit non-zero (4) when a stall was counted.
    pub fail_on_stall: bool,
    pub quiet: bool,
    /// For `ssl://` and `wss://`: the TLS client settings and server name.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `--chaos`: the fraction of connection slots that misbehave, and how.
    pub chaos: Option<chaos::Spec>,
    pub chaos_timing: ChaosTiming,
    /// The RNG seed (`--seed`, or a random one, reported).
    pub seed: u64,
    /// Replace established connections that end during the run (clients
    /// of a session that misbehaves: `loadgen server --chaos`).
    pub reconnect: bool,
    /// `--video`: h264 in the hello, draws of any coding taken and timed.
    pub video: bool,
    /// `--session-stats`: the session's stats file, read at the end.
    pub session_stats: Option<PathBuf>,
}

/// When faults happen and how long they last.
#[derive(Clone, Copy, Debug)]
pub struct ChaosTiming {
    /// A fault comes uniformly within 100 ms .. this after the hello.
    pub delay: Duration,
    /// `pause`: reading stops for a quarter of this up to this.
    pub pause: Duration,
    /// `freeze`: reading stops for this long; then the connection is
    /// drained to see whether the proxy ended it.
    pub freeze: Duration,
    /// `garbage`, `freeze`: a fault the proxy has not ended after this long
    /// counts as `survived`.
    pub wait: Duration,
}

/// `pause`: how long a connection keeps working after its pause before it
/// is closed (and another takes its slot).
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// Counters the progress line reads.
#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    packets: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Initial connections that finished their handshake, either way.
    settled: AtomicU64,
    stop: AtomicBool,
}

const TIMER_PING: u8 = 1;
const TIMER_HANDSHAKE: u8 = 2;
const TIMER_READ: u8 = 3;
/// Reads of one connection per readiness event before the others get a
/// turn.
const MAX_READS_PER_EVENT: u32 = 64;
const TIMER_ACK: u8 = 4;
/// `--chaos`: the fault is due; reading resumes (pause, freeze); the
/// proxy had its time to end the fault (garbage, freeze); a paused
/// connection worked on long enough.
const TIMER_CHAOS: u8 = 5;
const TIMER_CHAOS_RESUME: u8 = 6;
const TIMER_CHAOS_GIVEUP: u8 = 7;
const TIMER_CHAOS_DONE: u8 = 8;

/// With `--ack-every`, draws not yet acknowledged are acknowledged once no
/// draw has arrived for this long: a session whose window is not a multiple
/// of M (or smaller) would otherwise wait for an ack that never comes, a
/// deadlock of the test tool's own making.
const IDLE_ACK: Duration = Duration::from_millis(50);
/// How often the watchdog looks at every connection.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Stall lines printed on stderr per thread (the report counts them all).
const STALL_LINES: u32 = 8;

/// The latest draw received, for its acknowledgement.
#[derive(Clone, Copy)]
struct LastDraw {
    seq: i64,
    wid: i64,
    width: i64,
    height: i64,
    at: Instant,
}

enum State {
    Connecting,
    Handshake { challenges: u8 },
    Streaming,
}

struct Conn {
    stream: Stream,
    /// TLS / WebSocket layers (nothing for tcp:// and unix:).
    io: Transport,
    reader: RecordReader,
    wq: WriteQueue,
    state: State,
    gen: u64,
    started: Instant,
    uuid: String,
    next_seq: i64,
    pixels: Option<(usize, u32)>,
    /// One of the first `connections` (counts toward the ready file).
    initial: bool,
    writable: bool,
    /// `--read-rate` budget: bytes that may be read now, and when it was
    /// last refilled.
    tokens: f64,
    refilled: Instant,
    /// A read timer is pending (reading paused by `--read-rate`).
    paused: bool,
    /// The peer has closed (or the socket failed): read to the end, a
    /// short read is no sign that the socket is drained.
    hup: bool,
    /// Watchdog: when bytes last arrived (or the connection was
    /// established), whether draws have been arriving (then more are
    /// expected), our pings not echoed yet and since when one is awaited,
    /// whether a stall is in progress (counted once).
    last_rx: Instant,
    drawing: bool,
    pings_out: u32,
    ping_wait: Option<Instant>,
    stalled: bool,
    /// `--ack-every`: the latest draw, draws received since the last ack,
    /// whether the idle-ack timer is pending.
    last_draw: Option<LastDraw>,
    since_ack: u32,
    ack_timer: bool,
    /// A chaos slot: its fault (once picked) and when it was injected.
    chaos: Option<ConnChaos>,
    /// Not reading (`pause`, `freeze`).
    frozen: bool,
}

#[derive(Clone, Copy, Default)]
struct ConnChaos {
    kind: Option<&'static str>,
    at: Option<Instant>,
}

impl Conn {
    /// Since when this connection waits for data it expects, if it does:
    /// an established connection whose draws have been flowing, or one
    /// with a ping unanswered.
    fn waiting_since(&self) -> Option<Instant> {
        if !matches!(self.state, State::Streaming) || self.chaos.is_some() {
            return None;
        }
        if self.drawing {
            return Some(self.last_rx);
        }
        self.ping_wait.map(|p| p.max(self.last_rx))
    }
}

struct Worker {
    cfg: Arc<ClientConfig>,
    poll: Poll,
    conns: Slab<Conn>,
    timers: Timers,
    stats: Stats,
    progress: Arc<Progress>,
    t0: Instant,
    deadline: Instant,
    /// Connections of this thread not opened yet.
    to_open: usize,
    /// Handshakes in flight.
    pending: usize,
    max_pending: usize,
    gen: u64,
    caps: Vec<(Value, Value)>,
    framing: Framing,
    scratch: Vec<u8>,
    items: Vec<Item>,
    bufs: transport::Bufs,
    /// Initial connections opened so far by this thread.
    initial_left: usize,
    /// When the watchdog looks next; stall lines printed so far.
    next_watch: Instant,
    stall_lines: u32,
    rng: Rng,
    /// Of `to_open`, the chaos slots.
    to_open_chaos: usize,
}

pub fn run(cfg: ClientConfig) -> ExitCode {
    crate::evloop::raise_nofile();
    let cfg = Arc::new(cfg);
    let threads = cfg.threads.max(1).min(cfg.connections.max(1));
    let progress = Arc::new(Progress::default());
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration;
    let cpu0 = crate::evloop::self_cpu();
    let mut handles = Vec::new();
    for i in 0..threads {
        let share = cfg.connections / threads + usize::from(i < cfg.connections % threads);
        let max_pending = (cfg.max_pending / threads).max(1);
        let poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("loadgen client: {e}");
                return ExitCode::from(1);
            }
        };
        let (c, p) = (cfg.clone(), progress.clone());
        let h = std::thread::Builder::new()
            .name(format!("client-{i}"))
            .spawn(move || {
                let mut caps = proto::client_caps(&ClientHello {
                    encoder: c.encoder,
                    compress: c.compress,
                    username: c.target.username.as_deref(),
                    display: c.target.display.as_deref(),
                    uuid: "",
                });
                if c.video {
                    crate::frames::add_video_caps(&mut caps);
                }
                let chaos_slots = c
                    .chaos
                    .as_ref()
                    .map_or(0, |s| ((share as f64) * s.rate).round() as usize)
                    .min(share);
                let rng = Rng::new(c.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let mut w = Worker {
                    framing: Framing {
                        encoder: c.encoder,
                        compressor: c.compress,
                    },
                    cfg: c,
                    poll,
                    conns: Slab::default(),
                    timers: Timers::default(),
                    stats: Stats::new(),
                    progress: p,
                    t0,
                    deadline,
                    to_open: share,
                    pending: 0,
                    max_pending,
                    gen: 0,
                    caps,
                    scratch: vec![0u8; 256 * 1024],
                    items: Vec::new(),
                    bufs: transport::Bufs::default(),
                    initial_left: share,
                    next_watch: t0 + WATCH_EVERY,
                    stall_lines: 0,
                    rng,
                    to_open_chaos: chaos_slots,
                };
                w.run();
                w.stats
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("loadgen client: cannot start a thread: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // progress line, ready file
    let tty = nix::unistd::isatty(2).unwrap_or(false);
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut ready_written = false;
    let mut next_line = t0 + Duration::from_secs(1);
    let mut end = deadline;
    while Instant::now() < end && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        let settled = progress.settled.load(Ordering::Relaxed);
        if !ready_written && settled >= cfg.connections as u64 {
            ready_written = true;
            if let Some(f) = &cfg.ready_file {
                let _ = std::fs::write(f, format!("{settled}\n"));
            }
            if let Some(hold) = cfg.hold_after_ready {
                end = end.min(Instant::now() + hold);
            }
        }
        let now = Instant::now();
        if now >= next_line && !cfg.quiet {
            next_line += Duration::from_secs(1);
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let packets = progress.packets.load(Ordering::Relaxed);
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
            let line = format!(
                "[{:>4.0}s] connections ok {} failed {} | {} | {:.0} packets/s",
                now.duration_since(t0).as_secs_f64(),
                progress.ok.load(Ordering::Relaxed),
                progress.failed.load(Ordering::Relaxed),
                report::rate_bytes((bytes - last.1) as f64 / dt),
                (packets - last.2) as f64 / dt,
            );
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
            last = (now, bytes, packets);
        }
    }
    progress.stop.store(true, Ordering::Relaxed);
    let mut stats = Stats::new();
    for h in handles {
        match h.join() {
            Ok(s) => stats.merge(&s),
            Err(_) => stats.fail(Fail::Protocol, "client thread panicked"),
        }
    }
    if tty && !cfg.quiet {
        eprintln!();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = crate::evloop::self_cpu();
    let mut summary = report::summarize(&stats, &cfg, elapsed, (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1));
    if let Some(path) = &cfg.session_stats {
        add_session_view(&mut summary, &stats, path);
    }
    print!("{}", report::table(&summary));
    if let Some(path) = &cfg.json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("loadgen client: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let clean =
        stats.failed_total() == 0 && stats.lost == 0 && stats.reordered == 0 && stats.corrupt == 0;
    if !clean {
        ExitCode::from(3)
    } else if cfg.fail_on_stall && stats.stalls > 0 {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    }
}

/// `--session-stats`: the session's numbers for this run's connections
/// (waiting up to 3 s for it to see them all close), and received bytes
/// over sent bytes.
fn add_session_view(summary: &mut serde_json::Value, stats: &Stats, path: &std::path::Path) {
    let uuids = &stats.video.uuids;
    match crate::frames::read_session_stats(path, uuids, Duration::from_secs(3)) {
        Ok((v, ack, complete)) => {
            let q = |p: f64| {
                if ack.is_empty() {
                    0
                } else {
                    ack.value_at_quantile(p)
                }
            };
            summary["video"]["session"] = serde_json::json!({
                "connections": v.connections,
                "complete": complete,
                "frames": v.frames,
                "bytes": v.bytes,
                "data_bytes": v.data_bytes,
                "acked": v.acked,
                "ack_us": {"p50": q(0.5), "p99": q(0.99), "max": ack.max(), "count": ack.len()},
            });
            let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
            summary["video"]["bytes_ratio"] = serde_json::json!(ratio(stats.bytes, v.bytes));
            summary["video"]["data_bytes_ratio"] =
                serde_json::json!(ratio(stats.video.data_bytes, v.data_bytes));
            summary["video"]["frames_ratio"] =
                serde_json::json!(ratio(stats.video.frames(), v.frames));
        }
        Err(e) => {
            eprintln!("loadgen client: --session-stats: {e}");
            summary["video"]["session"] = serde_json::json!({ "error": e });
        }
    }
}

impl Worker {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        self.open_more();
        loop {
            let now = Instant::now();
            if now >= self.deadline || self.progress.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.conns.is_empty() && self.to_open == 0 {
                // every connection failed or ended: nothing left to measure
                break;
            }
            let mut timeout = self.deadline - now;
            if let Some(t) = self.timers.next_timeout(now) {
                timeout = timeout.min(t);
            }
            // wake at least every 100 ms to notice the stop flag
            timeout = timeout.min(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.stats.fail(Fail::Protocol, &format!("poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                let idx = ev.token().0;
                if ev.is_writable() {
                    self.on_writable(idx);
                }
                if ev.is_read_closed() || ev.is_error() {
                    if let Some(c) = self.conns.get_mut(idx) {
                        c.hup = true;
                    }
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(idx);
                }
            }
            let now = Instant::now();
            while let Some((idx, gen, kind)) = self.timers.pop_due(now) {
                self.on_timer(idx, gen, kind, now);
            }
            if now >= self.next_watch {
                self.next_watch = now + WATCH_EVERY;
                self.watch(now);
            }
            self.open_more();
        }
        // stalls still going on at the end count too
        self.watch(Instant::now());
        self.finish();
    }

    /// The watchdog: a connection that expects data and has had none for
    /// more than `--stall-ms` is stalled (counted once per stall, however
    /// long it lasts; the longest wait is kept).
    fn watch(&mut self, now: Instant) {
        let Some(limit) = self.cfg.stall else {
            return;
        };
        for (idx, c) in self.conns.iter_mut() {
            let Some(since) = c.waiting_since() else {
                continue;
            };
            let gap = now.saturating_duration_since(since);
            observe_wait(
                &mut self.stats,
                &mut self.stall_lines,
                &self.cfg,
                idx,
                gap,
                limit,
                c,
            );
        }
    }

    fn us_since_t0(&self, at: Instant) -> i64 {
        at.duration_since(self.t0).as_micros() as i64
    }

    fn open_more(&mut self) {
        let now = Instant::now();
        while self.to_open > 0 && self.pending < self.max_pending && now < self.deadline {
            self.to_open -= 1;
            let initial = self.initial_left > 0;
            self.initial_left = self.initial_left.saturating_sub(1);
            let chaos = self.to_open_chaos > 0;
            self.to_open_chaos = self.to_open_chaos.saturating_sub(1);
            self.open(initial, chaos);
        }
    }

    fn open(&mut self, initial: bool, chaos: bool) {
        let started = Instant::now();
        let t = &self.cfg.target;
        let io = if matches!(t.addr, crate::net::Addr::Unix(_)) {
            Ok(Transport::plain())
        } else {
            Transport::new(
                self.cfg.tls.as_ref().map(|(c, n)| (c, n)),
                t.scheme.ws().then_some((t.hostport.as_str(), "/")),
            )
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                self.failed(initial, Fail::Protocol, &e.to_string());
                return;
            }
        };
        let chaos = chaos.then(ConnChaos::default);
        let mut stream = match Stream::connect(&self.cfg.target.addr) {
            Ok(s) => s,
            Err(e) => {
                self.failed(initial, Fail::Refused, &e.to_string());
                self.replace(initial);
                self.replace_chaos(chaos.is_some());
                return;
            }
        };
        self.gen += 1;
        let idx = self.conns.next_key();
        if let Err(e) = stream.register(
            self.poll.registry(),
            Token(idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.failed(initial, Fail::Refused, &e.to_string());
            return;
        }
        let uuid = proto::hex_uuid();
        let mut caps = self.caps.clone();
        for (k, v) in caps.iter_mut() {
            if k.as_str() == Some("uuid") {
                *v = Value::from(uuid.as_str());
            }
        }
        let mut wq = WriteQueue::new();
        match proto::encode(&proto::client_hello(&caps, None), &self.framing) {
            Ok(b) => wq.push(vec![b]),
            Err(e) => {
                self.failed(initial, Fail::Protocol, &e);
                return;
            }
        }
        self.conns.insert(Conn {
            stream,
            io,
            reader: RecordReader::new(256 * 1024 * 1024),
            wq,
            state: State::Connecting,
            gen: self.gen,
            started,
            uuid,
            next_seq: 1,
            pixels: None,
            initial,
            writable: false,
            tokens: 0.0,
            refilled: started,
            paused: false,
            hup: false,
            last_rx: started,
            drawing: false,
            pings_out: 0,
            ping_wait: None,
            stalled: false,
            last_draw: None,
            since_ack: 0,
            ack_timer: false,
            chaos,
            frozen: false,
        });
        self.pending += 1;
        self.timers
            .add(started + self.cfg.timeout, idx, self.gen, TIMER_HANDSHAKE);
    }

    /// In handshake-loop mode a finished or failed connection is replaced.
    fn replace(&mut self, _initial: bool) {
        if self.cfg.handshake_loop && Instant::now() < self.deadline {
            self.to_open += 1;
        }
    }

    /// A chaos slot whose connection ended: another takes its place.
    fn replace_chaos(&mut self, chaos: bool) {
        if chaos && Instant::now() < self.deadline {
            self.to_open += 1;
            self.to_open_chaos += 1;
        }
    }

    fn failed(&mut self, initial: bool, kind: Fail, reason: &str) {
        self.stats.fail(kind, reason);
        self.progress.failed.fetch_add(1, Ordering::Relaxed);
        if initial {
            self.progress.settled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends a connection; `fail` when it ended badly.
    fn drop_conn(&mut self, idx: usize, fail: Option<(Fail, String)>) {
        let Some(mut c) = self.conns.remove(idx) else {
            return;
        };
        let _ = c.stream.deregister(self.poll.registry());
        c.stream.shutdown();
        let handshaking = !matches!(c.state, State::Streaming);
        if handshaking {
            self.pending -= 1;
        }
        let injected = c.chaos.and_then(|ch| ch.kind.zip(ch.at));
        if let (Some((kind, at)), Some((_, reason))) = (injected, &fail) {
            // the proxy (or the network) ended a connection after its fault
            let took = Instant::now().saturating_duration_since(at);
            self.stats
                .chaos
                .outcome(kind, Outcome::Ended, Some(took), reason);
            self.replace_chaos(true);
            return;
        }
        if fail.is_some() {
            self.replace_chaos(c.chaos.is_some());
        }
        if let Some((kind, reason)) = fail {
            if handshaking {
                self.failed(c.initial, kind, &reason);
                self.replace(c.initial);
            } else {
                // an established connection that broke during the run
                self.stats.dropped += 1;
                if kind == Fail::Protocol {
                    self.stats.dropped_protocol += 1;
                }
                self.stats.note(&format!("dropped: {reason}"));
                if self.cfg.reconnect && c.chaos.is_none() && Instant::now() < self.deadline {
                    self.to_open += 1;
                }
            }
        }
    }

    /// Ends a chaos connection on loadgen's side (`rst`: with a reset,
    /// SO_LINGER 0) and records the outcome of its fault.
    fn end_chaos(&mut self, idx: usize, outcome: Outcome, reason: &str, rst: bool) {
        let Some(mut c) = self.conns.remove(idx) else {
            return;
        };
        let _ = c.stream.deregister(self.poll.registry());
        if rst {
            c.stream.reset();
        } else {
            if let Ok(b) = proto::encode(&proto::disconnect("loadgen: chaos done"), &self.framing) {
                c.wq.push_urgent(vec![b]);
                let _ = c.io.flush(&mut c.wq, &mut c.stream);
            }
            c.io.close(&mut c.stream);
            c.stream.shutdown();
        }
        if !matches!(c.state, State::Streaming) {
            self.pending -= 1;
        }
        if let Some(kind) = c.chaos.and_then(|ch| ch.kind) {
            self.stats.chaos.outcome(kind, outcome, None, reason);
        }
        self.replace_chaos(true);
    }

    /// Injects a chaos connection's fault.
    fn inject(&mut self, idx: usize, now: Instant) {
        let Some(spec) = self.cfg.chaos.as_ref() else {
            return;
        };
        let timing = self.cfg.chaos_timing;
        let kind = spec.kinds[self.rng.below(spec.kinds.len() as u64) as usize];
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        let gen = c.gen;
        c.chaos = Some(ConnChaos {
            kind: Some(kind),
            at: Some(now),
        });
        self.stats.chaos.injected(kind);
        match kind {
            "reset" => {
                // half a record, then a reset (SO_LINGER 0)
                let us = now.duration_since(self.t0).as_micros() as i64;
                if let Ok(b) = proto::encode(&proto::ping(us, &c.uuid), &self.framing) {
                    let half = (b.len() / 2)
                        .max(xfwd::wire::header::HEADER_LEN + 1)
                        .min(b.len());
                    c.wq.push(vec![b.slice(..half)]);
                    let _ = c.io.flush(&mut c.wq, &mut c.stream);
                }
                self.end_chaos(idx, Outcome::Closed, "reset mid-record", true);
            }
            "garbage" => {
                let len = 64 + self.rng.below(4032) as usize;
                c.wq.push(vec![chaos::garbage(&mut self.rng, len).into()]);
                self.timers
                    .add(now + timing.wait, idx, gen, TIMER_CHAOS_GIVEUP);
                self.flush(idx);
            }
            "pause" => {
                c.frozen = true;
                let p = self.rng.between(timing.pause / 4, timing.pause);
                self.timers.add(now + p, idx, gen, TIMER_CHAOS_RESUME);
            }
            _ => {
                // freeze: no reading until `freeze`, then a drain
                c.frozen = true;
                self.timers
                    .add(now + timing.freeze, idx, gen, TIMER_CHAOS_RESUME);
                self.timers
                    .add(now + timing.wait, idx, gen, TIMER_CHAOS_GIVEUP);
            }
        }
    }

    fn on_writable(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if matches!(c.state, State::Connecting) {
            match c.stream.check_connected() {
                Ok(true) => c.state = State::Handshake { challenges: 0 },
                Ok(false) => return,
                Err(e) => {
                    let e = e.to_string();
                    self.drop_conn(idx, Some((Fail::Refused, e)));
                    return;
                }
            }
        }
        c.writable = true;
        self.flush(idx);
    }

    fn flush(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if !c.writable || matches!(c.state, State::Connecting) {
            return;
        }
        match c.io.flush(&mut c.wq, &mut c.stream) {
            Ok(true) => {}
            Ok(false) => c.writable = false,
            Err(e) => {
                let e = e.to_string();
                let kind = if matches!(c.state, State::Handshake { .. }) {
                    Fail::Closed
                } else {
                    Fail::Lost
                };
                self.drop_conn(idx, Some((kind, e)));
            }
        }
    }

    fn on_readable(&mut self, idx: usize) {
        let mut items = std::mem::take(&mut self.items);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut end: Option<(Fail, String)> = None;
        let mut bytes = 0usize;
        if let Some(c) = self.conns.get_mut(idx) {
            if c.frozen {
                // not reading; an end (FIN, reset) is still seen
                self.scratch = scratch;
                self.items = items;
                if c.hup {
                    let why = "closed by the peer (seen while not reading)".to_owned();
                    self.drop_conn(idx, Some((Fail::Lost, why)));
                }
                return;
            }
            let waited = c.waiting_since();
            if matches!(c.state, State::Connecting) {
                // an error or hang-up before connecting completes
                if let Err(e) = c.stream.check_connected() {
                    end = Some((Fail::Refused, e.to_string()));
                }
            }
            let throttle = self
                .cfg
                .read_rate
                .filter(|_| matches!(c.state, State::Streaming));
            if let Some(rate) = throttle {
                let now = Instant::now();
                let burst = (rate as f64 / 10.0).max(16_384.0);
                c.tokens = (c.tokens + rate as f64 * now.duration_since(c.refilled).as_secs_f64())
                    .min(burst);
                c.refilled = now;
            }
            let mut reads = 0u32;
            while end.is_none() {
                if reads == MAX_READS_PER_EVENT {
                    // A peer that sends faster than this connection is read
                    // would keep the loop here forever (the socket never
                    // runs dry): come back at once, after the other
                    // connections and the clock had their turn.
                    if !c.paused {
                        c.paused = true;
                        self.timers.add(Instant::now(), idx, c.gen, TIMER_READ);
                    }
                    break;
                }
                reads += 1;
                let room = match throttle {
                    None => scratch.len(),
                    Some(_) => (c.tokens.max(0.0) as usize).min(scratch.len()),
                };
                if room == 0 {
                    // out of budget: come back in 10 ms (the socket keeps the
                    // rest, and the sender has to wait)
                    if !c.paused {
                        c.paused = true;
                        let at = Instant::now() + Duration::from_millis(10);
                        self.timers.add(at, idx, c.gen, TIMER_READ);
                    }
                    break;
                }
                match c.stream.read(&mut scratch[..room]) {
                    Ok(0) => {
                        let kind = if matches!(c.state, State::Streaming) {
                            Fail::Lost
                        } else {
                            Fail::Closed
                        };
                        end = Some((kind, "connection closed by peer".into()));
                    }
                    Ok(n) => {
                        bytes += n;
                        if throttle.is_some() {
                            c.tokens -= n as f64;
                        }
                        if c.io.is_plain() {
                            if let Err(e) = c.reader.feed(&scratch[..n], &mut items) {
                                end = Some((Fail::Protocol, e));
                            }
                        } else {
                            let reader = &mut c.reader;
                            let r = c.io.ingest(&scratch[..n], &mut self.bufs, &mut |d| {
                                reader.feed(d, &mut items)
                            });
                            if let Err(e) = r {
                                end = Some((Fail::Protocol, e.to_string()));
                            } else if let Some(why) = c.io.closed() {
                                let kind = if matches!(c.state, State::Streaming) {
                                    Fail::Lost
                                } else {
                                    Fail::Closed
                                };
                                end = Some((kind, why.to_owned()));
                            }
                        }
                        if n < room && !c.hup {
                            // most likely drained: saves a read returning EAGAIN
                            // (edge-triggered: safe, a later arrival raises a new
                            // event; but a close that came with these bytes raises
                            // none, hence `hup`: then read on to the end)
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let kind = if matches!(c.state, State::Connecting) {
                            Fail::Refused
                        } else if matches!(c.state, State::Streaming) {
                            Fail::Lost
                        } else {
                            Fail::Closed
                        };
                        end = Some((kind, e.to_string()));
                    }
                }
            }
            if bytes > 0 {
                // the wait these bytes end (the sweep may not have seen it)
                let now = Instant::now();
                if let (Some(since), Some(limit)) = (waited, self.cfg.stall) {
                    let gap = now.saturating_duration_since(since);
                    let (stats, lines) = (&mut self.stats, &mut self.stall_lines);
                    observe_wait(stats, lines, &self.cfg, idx, gap, limit, c);
                }
                c.stalled = false;
                c.last_rx = now;
            }
        }
        self.scratch = scratch;
        self.stats.bytes += bytes as u64;
        self.progress
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let mut packets = 0u64;
        for item in items.drain(..) {
            match item {
                Item::Chunk { index, len, crc } => {
                    if usize::from(index) == proto::PIXELS_INDEX {
                        if let Some(c) = self.conns.get_mut(idx) {
                            c.pixels = Some((len, crc));
                        }
                    }
                }
                Item::Main(record) => {
                    packets += 1;
                    if let Err(f) = self.on_packet(idx, &record) {
                        end = Some(f);
                        break;
                    }
                }
            }
        }
        self.items = items;
        self.stats.packets += packets;
        self.progress.packets.fetch_add(packets, Ordering::Relaxed);
        if let Some(f) = end {
            // the error that ended it may come after a close packet that
            // already removed the connection: then this does nothing
            self.drop_conn(idx, Some(f));
        } else {
            self.flush(idx);
        }
    }

    fn on_packet(&mut self, idx: usize, record: &Record) -> Result<(), (Fail, String)> {
        let p = proto::decode(record).map_err(|e| (Fail::Protocol, e))?;
        let now = Instant::now();
        let now_us = self.us_since_t0(now);
        let ptype = p.packet_type().unwrap_or("");
        let Some(c) = self.conns.get_mut(idx) else {
            return Ok(());
        };
        match ptype {
            "draw" => {
                let chunk = c.pixels.take();
                c.drawing = true;
                let ack_every = self.cfg.ack_every;
                if ack_every > 0 {
                    let int = |i: usize| p.items.get(i).and_then(Value::as_int);
                    // xpra acks the packet sequence, argument 8
                    if let Some(seq) = int(8) {
                        c.last_draw = Some(LastDraw {
                            seq,
                            wid: int(1).unwrap_or(0),
                            width: int(4).unwrap_or(0),
                            height: int(5).unwrap_or(0),
                            at: now,
                        });
                        c.since_ack = c.since_ack.saturating_add(1);
                        if c.since_ack >= ack_every {
                            send_ack(c, &self.framing, &mut self.stats);
                        } else if !c.ack_timer {
                            c.ack_timer = true;
                            self.timers.add(now + IDLE_ACK, idx, c.gen, TIMER_ACK);
                        }
                    }
                }
                let (mut lost, mut reordered, mut corrupt) = (0u64, 0u64, 0u64);
                if self.cfg.video {
                    // a proxy's draws (h264, its own rgb) carry its own
                    // sequence numbers and options: counted and timed; the
                    // session's own (relayed) are checked too
                    let coding = crate::frames::coding_of(&p.items).unwrap_or("?");
                    let data = crate::frames::data_len(&p.items, chunk);
                    let sent = crate::frames::sent_us_of(&p.items);
                    let latency = sent.map(|s| (crate::frames::wall_us() - s).max(0) as u64);
                    self.stats.draws += 1;
                    self.stats.video.frame(coding, data, latency, now);
                    if sent.is_some() && coding == "rgb24" {
                        if let Some(d) = proto::check_draw(&p.items, chunk) {
                            corrupt += u64::from(!d.ok);
                        }
                    }
                } else {
                    match proto::check_draw(&p.items, chunk) {
                        Some(d) => {
                            self.stats.draws += 1;
                            if !d.ok {
                                corrupt += 1;
                            }
                            if d.seq == c.next_seq {
                                c.next_seq += 1;
                            } else if d.seq > c.next_seq {
                                lost += (d.seq - c.next_seq) as u64;
                                c.next_seq = d.seq + 1;
                            } else {
                                reordered += 1;
                            }
                        }
                        None => corrupt += 1,
                    }
                }
                if lost + reordered + corrupt > 0 {
                    // a chaos slot's draws are its own count, not the
                    // well-behaved connections'
                    match c.chaos {
                        Some(ch) => self.stats.chaos.integrity(
                            ch.kind.unwrap_or("not-yet-injected"),
                            lost,
                            reordered,
                            corrupt,
                        ),
                        None => {
                            self.stats.lost += lost;
                            self.stats.reordered += reordered;
                            self.stats.corrupt += corrupt;
                        }
                    }
                }
            }
            "ping_echo" => {
                let ours = p.items.get(6).and_then(Value::as_str) == Some(c.uuid.as_str());
                if ours {
                    c.pings_out = c.pings_out.saturating_sub(1);
                    c.ping_wait = (c.pings_out > 0).then_some(now);
                }
                if let (true, Some(sent)) = (ours, p.items.get(1).and_then(Value::as_int)) {
                    let rtt = (now_us - sent).max(0) as u64;
                    let _ = self.stats.rtt.record(rtt.max(1));
                }
            }
            "ping" => {
                if let Ok(b) = proto::encode(&proto::ping_echo(&p.items), &self.framing) {
                    c.wq.push_urgent(vec![b]);
                }
            }
            "challenge" => {
                let State::Handshake { challenges } = &mut c.state else {
                    return Err((Fail::Protocol, "challenge after hello".into()));
                };
                *challenges += 1;
                if *challenges > 3 {
                    return Err((Fail::AuthFailed, "too many challenges".into()));
                }
                let ch = Challenge::parse(&p.items).map_err(|e| (Fail::Protocol, e.to_string()))?;
                let Some(pw) = self.cfg.password.as_deref() else {
                    return Err((
                        Fail::AuthFailed,
                        "the server wants a password and none was given".into(),
                    ));
                };
                let (resp, salt) =
                    crate::digest::respond(&ch.digest, &ch.salt_digest, pw, &ch.salt)
                        .map_err(|e| (Fail::AuthFailed, e))?;
                let mut caps = self.caps.clone();
                for (k, v) in caps.iter_mut() {
                    if k.as_str() == Some("uuid") {
                        *v = Value::from(c.uuid.as_str());
                    }
                }
                let b = proto::encode(
                    &proto::client_hello(&caps, Some((&resp, &salt))),
                    &self.framing,
                )
                .map_err(|e| (Fail::Protocol, e))?;
                c.wq.push_urgent(vec![b]);
            }
            "hello" => {
                if matches!(c.state, State::Streaming) {
                    return Ok(());
                }
                c.state = State::Streaming;
                c.last_rx = now;
                if self.cfg.video && self.stats.video.uuids.len() < 100_000 {
                    self.stats.video.uuids.insert(c.uuid.clone());
                }
                let us = now.duration_since(c.started).as_micros() as u64;
                let _ = self.stats.handshake.record(us.max(1));
                self.stats.ok += 1;
                self.pending -= 1;
                self.progress.ok.fetch_add(1, Ordering::Relaxed);
                if c.initial {
                    self.progress.settled.fetch_add(1, Ordering::Relaxed);
                }
                if self.cfg.handshake_loop {
                    if let Ok(b) =
                        proto::encode(&proto::disconnect("loadgen: handshake done"), &self.framing)
                    {
                        c.wq.push_urgent(vec![b]);
                        let _ = c.io.flush(&mut c.wq, &mut c.stream);
                    }
                    c.io.close(&mut c.stream);
                    self.drop_conn(idx, None);
                    self.replace(false);
                    return Ok(());
                }
                if c.chaos.is_some() {
                    let (lo, hi) = (Duration::from_millis(100), self.cfg.chaos_timing.delay);
                    let at = now + self.rng.between(lo, hi);
                    self.timers.add(at, idx, c.gen, TIMER_CHAOS);
                }
                if let Some(iv) = self.cfg.ping_interval {
                    // spread the first pings over one interval
                    let jitter = Duration::from_micros(
                        u64::from(rand_u32()) % (iv.as_micros().max(1) as u64),
                    );
                    self.timers.add(now + jitter, idx, c.gen, TIMER_PING);
                }
            }
            t if CLOSE_PACKET_ALIASES.contains(&t) => {
                let reason = Close::parse(&p.items)
                    .map(|c| c.reasons.join(", "))
                    .unwrap_or_default();
                let auth = ["auth", "password", "challenge"]
                    .iter()
                    .any(|w| reason.contains(w));
                let kind = match c.state {
                    State::Streaming => Fail::Lost,
                    _ if auth => Fail::AuthFailed,
                    _ => Fail::Closed,
                };
                return Err((kind, reason));
            }
            _ => {}
        }
        Ok(())
    }

    fn on_timer(&mut self, idx: usize, gen: u64, kind: u8, now: Instant) {
        let now_us = self.us_since_t0(now);
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.gen != gen {
            return;
        }
        match kind {
            TIMER_HANDSHAKE if !matches!(c.state, State::Streaming) => {
                let t = self.cfg.timeout.as_secs_f64();
                self.drop_conn(
                    idx,
                    Some((Fail::Timeout, format!("no hello within {t:.0} s"))),
                );
            }
            TIMER_READ => {
                c.paused = false;
                self.on_readable(idx);
            }
            TIMER_PING if c.frozen => {
                // a connection that stopped reading sends nothing either
                if let Some(iv) = self.cfg.ping_interval {
                    self.timers.add(now + iv, idx, gen, TIMER_PING);
                }
            }
            TIMER_CHAOS => self.inject(idx, now),
            TIMER_CHAOS_RESUME => {
                c.frozen = false;
                if c.chaos.and_then(|ch| ch.kind) == Some("pause") {
                    self.timers
                        .add(now + PAUSE_AFTER, idx, gen, TIMER_CHAOS_DONE);
                }
                self.on_readable(idx);
            }
            TIMER_CHAOS_GIVEUP => {
                let t = self.cfg.chaos_timing.wait.as_secs_f64();
                let why = format!("not ended by the proxy within {t:.0} s");
                self.end_chaos(idx, Outcome::Survived, &why, false);
            }
            TIMER_CHAOS_DONE => {
                self.end_chaos(
                    idx,
                    Outcome::Survived,
                    "kept working after the pause",
                    false,
                );
            }
            TIMER_PING => {
                if let Ok(b) = proto::encode(&proto::ping(now_us, &c.uuid), &self.framing) {
                    c.wq.push_urgent(vec![b]);
                    self.stats.pings += 1;
                    if c.pings_out == 0 {
                        c.ping_wait = Some(now);
                    }
                    c.pings_out = c.pings_out.saturating_add(1);
                }
                if let Some(iv) = self.cfg.ping_interval {
                    self.timers.add(now + iv, idx, gen, TIMER_PING);
                }
                self.flush(idx);
            }
            TIMER_ACK => {
                c.ack_timer = false;
                if c.since_ack == 0 {
                    return;
                }
                let last = c.last_draw.map_or(now, |d| d.at);
                if now >= last + IDLE_ACK {
                    send_ack(c, &self.framing, &mut self.stats);
                    self.flush(idx);
                } else {
                    c.ack_timer = true;
                    self.timers.add(last + IDLE_ACK, idx, gen, TIMER_ACK);
                }
            }
            _ => {}
        }
    }

    /// End of the run: say goodbye, close everything.
    fn finish(&mut self) {
        for idx in self.conns.keys() {
            let Some(c) = self.conns.get_mut(idx) else {
                continue;
            };
            match c.state {
                State::Streaming => {
                    if let Ok(b) =
                        proto::encode(&proto::disconnect("loadgen: run complete"), &self.framing)
                    {
                        c.wq.push_urgent(vec![b]);
                        let _ = c.io.flush(&mut c.wq, &mut c.stream);
                    }
                    c.io.close(&mut c.stream);
                    self.drop_conn(idx, None);
                }
                _ => {
                    if self.cfg.handshake_loop || !c.initial {
                        // (or a replacement: a chaos slot's next connection,
                        // --reconnect's, opened shortly before the end)
                        // cut off by the end of the run: not a failure
                        self.drop_conn(idx, None);
                    } else {
                        self.drop_conn(
                            idx,
                            Some((
                                Fail::Timeout,
                                "handshake not finished by the end of the run".into(),
                            )),
                        );
                    }
                }
            }
        }
    }
}

/// Queues a `damage-sequence` for the latest draw (acknowledging it and
/// every draw before it).
fn send_ack(c: &mut Conn, framing: &Framing, stats: &mut Stats) {
    let Some(d) = c.last_draw else {
        return;
    };
    // decode time 0: no timing to report (xpra records only > 0)
    let ack = proto::damage_sequence(d.seq, d.wid, d.width, d.height, 0);
    if let Ok(b) = proto::encode(&ack, framing) {
        c.wq.push(vec![b]);
        stats.acks += 1;
    }
    c.since_ack = 0;
}

/// Counts a stall (once per stall) and says so on stderr, a few times.
/// A wait for expected data of `gap` on connection `idx`: kept as the
/// longest wait, and counted (once per stall) when over `limit`.
#[allow(clippy::too_many_arguments)]
fn observe_wait(
    stats: &mut Stats,
    lines: &mut u32,
    cfg: &ClientConfig,
    idx: usize,
    gap: Duration,
    limit: Duration,
    c: &mut Conn,
) {
    stats.max_stall = stats.max_stall.max(gap);
    if gap <= limit || c.stalled {
        return;
    }
    c.stalled = true;
    stats.stalls += 1;
    let limit = cfg.stall.map_or(0, |d| d.as_millis());
    stats.note(&format!("stall: no data for more than {limit} ms"));
    if *lines < STALL_LINES && !cfg.quiet {
        *lines += 1;
        eprintln!(
            "loadgen client: stall on {} connection {idx}: no data for {} ms \
             (draws flowing: {}, draws un-acked: {}, pings unanswered: {})",
            std::thread::current().name().unwrap_or("?"),
            gap.as_millis(),
            c.drawing,
            c.since_ack,
            c.pings_out
        );
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b)
}
