//! `loadgen server`: a fake xpra session.
//!
//! Listens where it is told (TCP, a Unix socket, or as a local session in a
//! socket dir, named `HOSTNAME-DISPLAY` with mode 0600 the way xpra 3.1 does),
//! answers every hello in the peer's encoder, optionally demands a password
//! with xpra's challenge, then streams `draw` packets (pixels in raw chunk 7,
//! a sequence number and a CRC-32 of the pixels in the options) and answers
//! `ping` with `ping_echo`. With `--window N` a connection keeps at most N
//! draws un-acknowledged and sends more as the client's `damage-sequence`
//! packets come back, the way a real xpra server paces its draws.
//!
//! With `--raw-frames` (issue 13) a connection is what a GPU-less xpra
//! 3.1.3 session sends a client whose hello a transcoding proxy restricted
//! to raw rgb: `new-window` for each window, then full-window `rgb24` BGRX
//! frames whose content changes every frame (see `frames.rs`), timed from
//! send to ack; `--stats-file` publishes those numbers for the client.
//!
//! Threads: one acceptor per listener (blocking accept), hands sockets to
//! `--threads` event loops (mio, edge-triggered).

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::event::Source;
use mio::{Events, Interest, Poll, Token, Waker};

use xfwd::wire::header::{Compressor, Encoder};
use xfwd::wire::views::Hello;
use xfwd::wire::Value;

use crate::chaos::{self, ChaosStats, Outcome, Rng};
use crate::digest;
use crate::evloop::{Slab, Timers};
use crate::frames::{self, FrameMaker, SessionFrames};
use crate::net::{parse_listen, Addr, Item, RecordReader, Stream, WriteQueue};
use crate::proto::{self, Framing, Pixels};

/// How fast a connection draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// As fast as the socket takes them.
    Max,
    /// Frames per second per window.
    Fps(f64),
    /// No draws at all (idle sessions).
    Idle,
}

impl Rate {
    pub fn parse(s: &str) -> Result<Rate, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        let f: f64 = s
            .parse()
            .map_err(|_| format!("--draw-rate {s}: expected FPS or max"))?;
        if !(f >= 0.0 && f.is_finite()) {
            return Err(format!("--draw-rate {s}: expected a rate >= 0"));
        }
        Ok(if f == 0.0 { Rate::Idle } else { Rate::Fps(f) })
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: Vec<Addr>,
    pub socket_dir: Option<PathBuf>,
    pub display: String,
    pub password: Option<Vec<u8>>,
    pub draw_size: usize,
    pub rate: Rate,
    pub windows: u32,
    /// Draws a connection may have un-acknowledged (`damage-sequence`);
    /// 0: no limit (free-running).
    pub window: u32,
    pub threads: usize,
    /// `--chaos`: the fraction of connections that misbehave, and how.
    pub chaos: Option<chaos::Spec>,
    pub seed: u64,
    /// A fault comes 100 ms .. this after the hello.
    pub chaos_delay: Duration,
    /// `garbage`, `stop-read`: not ended by the proxy after this long:
    /// `survived`.
    pub chaos_wait: Duration,
    /// Where the fault outcomes go on SIGINT / SIGTERM.
    pub json: Option<PathBuf>,
    /// `--raw-frames`: full-window raw frames of this size (`draw_size` is
    /// then W*H*4).
    pub raw_frames: Option<(u32, u32)>,
    /// `--stats-file`: the raw frames' numbers, rewritten every 200 ms.
    pub stats_file: Option<PathBuf>,
}

struct Shared {
    cfg: ServerConfig,
    pixels: Pixels,
    uuid: String,
    started_ms: i64,
    /// Fault outcomes, all threads (faults are rare: a lock is fine).
    chaos: Mutex<ChaosStats>,
    /// `--raw-frames`: the frame maker, and every connection's numbers
    /// (a lock per frame and per ack: at most a few thousand a second).
    frames: Option<FrameMaker>,
    frame_stats: Mutex<SessionFrames>,
}

/// Queued bytes above which no more draws are generated.
fn high_water(draw_size: usize) -> usize {
    (2 * draw_size).max(256 * 1024)
}
/// Small draws are copied into batches of about this size (one iovec).
const BATCH: usize = 64 * 1024;
/// Pixels at least this large are written from the shared buffer.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Bytes written for one connection before others get a turn.
const WRITE_BUDGET: usize = 4 * 1024 * 1024;

const WAKER: Token = Token(usize::MAX);
const TIMER_DRAW: u8 = 1;
/// `--chaos`: the fault is due; the proxy had its time to end it.
const TIMER_CHAOS: u8 = 2;
const TIMER_CHAOS_GIVEUP: u8 = 3;

enum State {
    AwaitHello,
    AwaitResponse {
        salt: Vec<u8>,
        digest: String,
        salt_digest: String,
    },
    Streaming,
    /// Flushing a last packet, then closing.
    Closing,
}

struct Conn {
    stream: Stream,
    reader: RecordReader,
    wq: WriteQueue,
    state: State,
    framing: Framing,
    seq: i64,
    /// Highest draw sequence the client acknowledged (`damage-sequence`).
    acked: i64,
    wid: u32,
    gen: u64,
    /// Draws due (rate mode) but not yet queued.
    owed: u32,
    /// Whether the socket may take more (no WouldBlock since last event).
    writable: bool,
    /// Whether the draw timer runs (rate mode).
    ticking: bool,
    /// A chaos connection: its fault, once picked and injected.
    chaos: Option<ConnChaos>,
    /// `stop-read`: not reading; the peer closed (seen without reading).
    frozen: bool,
    hup: bool,
    /// `--raw-frames`: the client's uuid (its hello's) and this
    /// connection's entry in `Shared::frame_stats`.
    uuid: String,
    frames_id: Option<u64>,
}

#[derive(Clone, Copy, Default)]
struct ConnChaos {
    scheduled: bool,
    kind: Option<&'static str>,
    at: Option<Instant>,
    /// `kill`: close once the truncated record is out (with a reset when
    /// `rst`).
    kill: bool,
    rst: bool,
}

impl Conn {
    /// Whether draws are generated: not after a kill or garbage.
    fn drawing(&self) -> bool {
        !matches!(
            self.chaos.and_then(|c| c.kind),
            Some("kill") | Some("garbage")
        )
    }
}

pub fn run(cfg: ServerConfig) -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};
    crate::evloop::raise_nofile();
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("loadgen server: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let mut listeners: Vec<(Addr, Listener)> = Vec::new();
    let mut created: Vec<PathBuf> = Vec::new();
    let mut addrs = cfg.listen.clone();
    if let Some(dir) = &cfg.socket_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("loadgen server: cannot create {}: {e}", dir.display());
            return ExitCode::from(1);
        }
        addrs.push(Addr::Unix(dir.join(format!(
            "{}-{}",
            proto::hostname(),
            cfg.display
        ))));
    }
    if addrs.is_empty() {
        eprintln!(
            "loadgen server: nothing to listen on: give --listen or --socket-dir with --display"
        );
        return ExitCode::from(2);
    }
    for a in &addrs {
        match Listener::bind(a) {
            Ok(l) => {
                if let Addr::Unix(p) = a {
                    created.push(p.clone());
                }
                let shown = l.local().unwrap_or_else(|| a.clone());
                println!("loadgen server: listening on {shown}");
                listeners.push((a.clone(), l));
            }
            Err(e) => {
                eprintln!("loadgen server: cannot listen on {a}: {e}");
                cleanup(&created);
                return ExitCode::from(1);
            }
        }
    }
    let shared = Arc::new(Shared {
        // raw frames are made per draw: no shared buffers
        pixels: Pixels::new(
            if cfg.raw_frames.is_some() {
                4
            } else {
                cfg.draw_size
            },
            if cfg.raw_frames.is_some() { 1 } else { 4 },
        ),
        frames: cfg.raw_frames.map(|(w, h)| FrameMaker::new(w, h)),
        frame_stats: Mutex::new(SessionFrames::default()),
        uuid: proto::hex_uuid(),
        started_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        cfg: cfg.clone(),
        chaos: Mutex::new(ChaosStats::default()),
    });
    let mut workers = Vec::new();
    for i in 0..cfg.threads.max(1) {
        let (tx, rx) = mpsc::channel::<Stream>();
        let poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("loadgen server: {e}");
                return ExitCode::from(1);
            }
        };
        let waker = match Waker::new(poll.registry(), WAKER) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                eprintln!("loadgen server: {e}");
                return ExitCode::from(1);
            }
        };
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("server-{i}"))
            .spawn(move || worker(poll, rx, sh, i as u64));
        if let Err(e) = spawned {
            eprintln!("loadgen server: cannot start a thread: {e}");
            return ExitCode::from(1);
        }
        workers.push((tx, waker));
    }
    let workers = Arc::new(workers);
    if let Some(path) = cfg.stats_file.clone() {
        let sh = shared.clone();
        let _ = std::thread::Builder::new()
            .name("stats".into())
            .spawn(move || loop {
                write_stats(&sh, &path);
                std::thread::sleep(Duration::from_millis(200));
            });
    }
    for (addr, l) in listeners {
        let w = workers.clone();
        let _ = std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(addr, l, &w));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = signals.wait();
    cleanup(&created);
    if let Some(path) = &cfg.stats_file {
        write_stats(&shared, path);
    }
    if cfg.chaos.is_some() || cfg.json.is_some() {
        let chaos = shared.chaos.lock().map(|c| c.to_json()).unwrap_or_default();
        let frames = shared
            .frame_stats
            .lock()
            .map(|f| f.to_json())
            .unwrap_or_default();
        let report = serde_json::json!({
            "chaos": chaos,
            "frames": if cfg.raw_frames.is_some() { frames } else { serde_json::Value::Null },
            "config": {
                "display": cfg.display,
                "chaos": cfg.chaos.as_ref().map(|c| serde_json::json!({
                    "rate": c.rate, "kinds": c.kinds, "seed": cfg.seed,
                })),
            },
        });
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        println!("{text}");
        if let Some(p) = &cfg.json {
            if let Err(e) = std::fs::write(p, text + "\n") {
                eprintln!("loadgen server: cannot write {}: {e}", p.display());
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes the raw frames' numbers to the stats file.
fn write_stats(shared: &Shared, path: &std::path::Path) {
    let text = shared
        .frame_stats
        .lock()
        .map(|f| f.to_json().to_string())
        .unwrap_or_default();
    if let Err(e) = frames::write_atomic(path, &(text + "\n")) {
        eprintln!("loadgen server: cannot write {}: {e}", path.display());
    }
}

fn cleanup(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    fn bind(a: &Addr) -> io::Result<Listener> {
        Ok(match a {
            Addr::Tcp(sa) => Listener::Tcp(std::net::TcpListener::bind(sa)?),
            Addr::Unix(p) => {
                // a stale socket from an earlier run: replace it, as xpra does
                if std::fs::symlink_metadata(p).is_ok() && !crate::net::unix_live(p) {
                    let _ = std::fs::remove_file(p);
                }
                // Bound under a temporary name, made private, then renamed:
                // the socket never appears with looser permissions.
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = p.with_file_name(format!(".{name}.tmp{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                let l = std::os::unix::net::UnixListener::bind(&tmp)?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
                std::fs::rename(&tmp, p)?;
                Listener::Unix(l)
            }
        })
    }

    fn local(&self) -> Option<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(Addr::Tcp),
            Listener::Unix(_) => None,
        }
    }
}

fn accept_loop(addr: Addr, l: Listener, workers: &[(mpsc::Sender<Stream>, Arc<Waker>)]) {
    let mut next = 0usize;
    loop {
        let s = match &l {
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Tcp(mio::net::TcpStream::from_std(s)))
            }),
            Listener::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(true)?;
                Ok(Stream::Unix(mio::net::UnixStream::from_std(s)))
            }),
        };
        match s {
            Ok(s) => {
                let (tx, waker) = &workers[next % workers.len()];
                next = next.wrapping_add(1);
                if tx.send(s).is_ok() {
                    let _ = waker.wake();
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning
                eprintln!("loadgen server: accept on {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

struct Worker {
    poll: Poll,
    conns: Slab<Conn>,
    timers: Timers,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
    items: Vec<Item>,
    /// Connections that may write more without waiting for an event.
    runnable: Vec<usize>,
    gen: u64,
    batch: BytesMut,
    rng: Rng,
}

fn worker(poll: Poll, rx: mpsc::Receiver<Stream>, shared: Arc<Shared>, i: u64) {
    let rng = Rng::new(shared.cfg.seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut w = Worker {
        rng,
        poll,
        conns: Slab::default(),
        timers: Timers::default(),
        shared,
        scratch: vec![0u8; 256 * 1024],
        items: Vec::new(),
        runnable: Vec::new(),
        gen: 0,
        batch: BytesMut::new(),
    };
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        let timeout = if w.runnable.is_empty() {
            w.timers.next_timeout(now)
        } else {
            Some(Duration::ZERO)
        };
        if let Err(e) = w.poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("loadgen server: poll: {e}");
                return;
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok(s) = rx.try_recv() {
                    w.add(s);
                }
                continue;
            }
            let idx = ev.token().0;
            if ev.is_writable() {
                if let Some(c) = w.conns.get_mut(idx) {
                    c.writable = true;
                }
            }
            if ev.is_read_closed() || ev.is_error() {
                if let Some(c) = w.conns.get_mut(idx) {
                    c.hup = true;
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                w.on_readable(idx);
            }
            w.service(idx);
        }
        let runnable = std::mem::take(&mut w.runnable);
        for idx in runnable {
            w.service(idx);
        }
        let now = Instant::now();
        while let Some((idx, gen, kind)) = w.timers.pop_due(now) {
            w.on_timer(idx, gen, kind, now);
        }
    }
}

impl Worker {
    fn add(&mut self, mut stream: Stream) {
        self.gen += 1;
        let chaos = self
            .shared
            .cfg
            .chaos
            .as_ref()
            .is_some_and(|c| self.rng.unit() < c.rate)
            .then(ConnChaos::default);
        let idx = self.conns.next_key();
        if stream
            .register(
                self.poll.registry(),
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return;
        }
        self.conns.insert(Conn {
            stream,
            reader: RecordReader::new(64 * 1024 * 1024),
            wq: WriteQueue::new(),
            state: State::AwaitHello,
            framing: Framing::plain(Encoder::Rencode),
            seq: 0,
            acked: 0,
            wid: 0,
            gen: self.gen,
            owed: 0,
            writable: true,
            ticking: false,
            chaos,
            frozen: false,
            hup: false,
            uuid: String::new(),
            frames_id: None,
        });
    }

    /// The connection ended (the peer closed, or a read or write failed):
    /// after a fault, the proxy ended it.
    fn close(&mut self, idx: usize) {
        if let Some(mut c) = self.conns.remove(idx) {
            let _ = c.stream.deregister(self.poll.registry());
            c.stream.shutdown();
            self.frames_closed(&c);
            if let Some((kind, at)) = c.chaos.and_then(|ch| ch.kind.zip(ch.at)) {
                let took = Instant::now().saturating_duration_since(at);
                let why = if c.frozen {
                    "closed by the peer (seen while not reading)"
                } else {
                    "closed by the peer"
                };
                self.record(kind, Outcome::Ended, Some(took), why);
            }
        }
    }

    /// A raw-frames connection ended: its numbers are final (and written
    /// at once, for a client waiting for them).
    fn frames_closed(&self, c: &Conn) {
        let Some(id) = c.frames_id else {
            return;
        };
        if let Ok(mut f) = self.shared.frame_stats.lock() {
            if let Some(cf) = f.conns.get_mut(&id) {
                cf.open = false;
            }
        }
        if let Some(path) = &self.shared.cfg.stats_file {
            write_stats(&self.shared, path);
        }
    }

    fn record(&self, kind: &'static str, o: Outcome, took: Option<Duration>, why: &str) {
        if let Ok(mut s) = self.shared.chaos.lock() {
            s.outcome(kind, o, took, why);
        }
    }

    /// Ends a chaos connection on loadgen's side, recording `outcome`.
    fn close_chaos(&mut self, idx: usize, outcome: Outcome, why: &str, rst: bool) {
        let Some(mut c) = self.conns.remove(idx) else {
            return;
        };
        let _ = c.stream.deregister(self.poll.registry());
        self.frames_closed(&c);
        if rst {
            c.stream.reset();
        } else {
            c.stream.shutdown();
        }
        if let Some(kind) = c.chaos.and_then(|ch| ch.kind) {
            self.record(kind, outcome, None, why);
        }
    }

    /// Injects a connection's fault.
    fn inject(&mut self, idx: usize, now: Instant) {
        let shared = self.shared.clone();
        let Some(spec) = shared.cfg.chaos.as_ref() else {
            return;
        };
        let kind = spec.kinds[self.rng.below(spec.kinds.len() as u64) as usize];
        let rst = self.rng.below(2) == 0;
        let glen = 64 + self.rng.below(4032) as usize;
        let garbage = chaos::garbage(&mut self.rng, glen);
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        let gen = c.gen;
        c.chaos = Some(ConnChaos {
            scheduled: true,
            kind: Some(kind),
            at: Some(now),
            kill: kind == "kill",
            rst,
        });
        if let Ok(mut s) = shared.chaos.lock() {
            s.injected(kind);
        }
        match kind {
            "kill" => {
                // whole records so far, then the start of a draw: the close
                // comes in the middle of a record
                c.seq += 1;
                if let Ok([head, pixels, _main]) = proto::draw(&c.framing, &shared.pixels, 1, c.seq)
                {
                    let cut = pixels.len() / 2;
                    c.wq.push(vec![head, pixels.slice(..cut)]);
                }
                self.timers
                    .add(now + shared.cfg.chaos_wait, idx, gen, TIMER_CHAOS_GIVEUP);
            }
            "garbage" => {
                c.wq.push(vec![garbage.into()]);
                self.timers
                    .add(now + shared.cfg.chaos_wait, idx, gen, TIMER_CHAOS_GIVEUP);
            }
            _ => {
                // stop-read: draws go on, nothing is read
                c.frozen = true;
                self.timers
                    .add(now + shared.cfg.chaos_wait, idx, gen, TIMER_CHAOS_GIVEUP);
            }
        }
        self.runnable.push(idx);
    }

    fn on_readable(&mut self, idx: usize) {
        let mut items = std::mem::take(&mut self.items);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut ended = false;
        if let Some(c) = self.conns.get_mut(idx) {
            if c.frozen {
                // stop-read: an end (FIN, reset) is still seen
                ended = c.hup;
            }
            while !c.frozen {
                match c.stream.read(&mut scratch) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => {
                        if c.reader.feed(&scratch[..n], &mut items).is_err() {
                            ended = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        self.scratch = scratch;
        let broken = self
            .conns
            .get_mut(idx)
            .is_some_and(|c| c.chaos.is_some_and(|ch| ch.kind.is_some()));
        for item in items.drain(..) {
            if broken {
                // a session past its fault answers nothing
                continue;
            }
            if let Item::Main(record) = item {
                if !self.on_packet(idx, &record) {
                    ended = true;
                    break;
                }
            }
        }
        self.items = items;
        if ended {
            self.close(idx);
        }
    }

    /// Handles one packet; false to close the connection now.
    fn on_packet(&mut self, idx: usize, record: &xfwd::wire::frame::Record) -> bool {
        let Ok(p) = proto::decode(record) else {
            return false;
        };
        let shared = self.shared.clone();
        let Some(c) = self.conns.get_mut(idx) else {
            return false;
        };
        let ptype = p.packet_type().unwrap_or("").to_owned();
        match (&c.state, ptype.as_str()) {
            (_, "disconnect" | "connection-close" | "connection-lost") => return false,
            (State::AwaitHello, "hello") => {
                let Ok(hello) = Hello::parse(&p.items) else {
                    return false;
                };
                let level = hello
                    .get("compression_level")
                    .and_then(Value::as_int)
                    .unwrap_or(0);
                let compressor = if level > 0 && hello.compressors().contains(&Compressor::Lz4) {
                    Compressor::Lz4
                } else {
                    Compressor::None
                };
                c.framing = Framing {
                    encoder: record.header.encoder(),
                    compressor,
                };
                c.uuid = hello
                    .get("uuid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(64)
                    .collect();
                if hello.request().is_some() {
                    // info / id / version requests: a hello, then close
                    send_hello(c, &shared);
                    c.state = State::Closing;
                    return true;
                }
                match &shared.cfg.password {
                    None => start_streaming(c, &shared),
                    Some(_) => {
                        let offered = hello.digests();
                        let Some(digest) =
                            ["hmac+sha256", "hmac+sha512", "hmac+sha384", "hmac+sha1"]
                                .into_iter()
                                .find(|d| offered.contains(d))
                        else {
                            refuse(c, "no supported digest");
                            return true;
                        };
                        let salt_digest = if hello.salt_digests().contains(&"hmac+sha256") {
                            "hmac+sha256"
                        } else {
                            "xor"
                        };
                        let mut salt = vec![0u8; 64];
                        let _ = getrandom::getrandom(&mut salt);
                        if let Ok(b) =
                            proto::encode(&proto::challenge(&salt, digest, salt_digest), &c.framing)
                        {
                            c.wq.push_urgent(vec![b]);
                        }
                        c.state = State::AwaitResponse {
                            salt,
                            digest: digest.to_owned(),
                            salt_digest: salt_digest.to_owned(),
                        };
                    }
                }
            }
            (
                State::AwaitResponse {
                    salt,
                    digest,
                    salt_digest,
                },
                "hello",
            ) => {
                let Ok(hello) = Hello::parse(&p.items) else {
                    return false;
                };
                let pw = shared.cfg.password.as_deref().unwrap_or(b"");
                let ok = match (hello.challenge_response(), hello.challenge_client_salt()) {
                    (Some(resp), Some(cs)) => {
                        digest::verify(digest, salt_digest, pw, salt, cs, resp)
                    }
                    _ => false,
                };
                if ok {
                    start_streaming(c, &shared);
                } else {
                    refuse(c, "authentication failed: invalid challenge response");
                }
            }
            (State::Streaming, "ping") => {
                if let Ok(b) = proto::encode(&proto::ping_echo(&p.items), &c.framing) {
                    c.wq.push_urgent(vec![b]);
                }
            }
            (State::Streaming, "damage-sequence") => {
                // cumulative: every draw up to this one is acknowledged; a
                // sequence never sent acknowledges no more than was sent
                if let Some(seq) = proto::acked_sequence(&p.items) {
                    c.acked = c.acked.max(seq.min(c.seq));
                    if let Some(id) = c.frames_id {
                        let now = Instant::now();
                        if let Ok(mut f) = shared.frame_stats.lock() {
                            if let Some(cf) = f.conns.get_mut(&id) {
                                cf.acked(c.acked, now);
                            }
                        }
                    }
                }
            }
            (State::Streaming | State::Closing, _) => {}
            (_, _) => {
                refuse(c, "invalid packet before hello");
            }
        }
        let gen = c.gen;
        if matches!(c.state, State::Streaming) {
            if let Some(ch) = c.chaos.as_mut().filter(|ch| !ch.scheduled) {
                ch.scheduled = true;
                let lo = Duration::from_millis(100);
                let at = Instant::now() + self.rng.between(lo, shared.cfg.chaos_delay);
                self.timers.add(at, idx, gen, TIMER_CHAOS);
            }
            if let Rate::Fps(f) = shared.cfg.rate {
                if !c.ticking {
                    c.ticking = true;
                    c.owed = shared.cfg.windows.max(1);
                    let period = Duration::from_secs_f64(1.0 / f);
                    self.timers
                        .add(Instant::now() + period, idx, gen, TIMER_DRAW);
                }
            }
        }
        true
    }

    fn on_timer(&mut self, idx: usize, gen: u64, kind: u8, now: Instant) {
        if kind == TIMER_CHAOS || kind == TIMER_CHAOS_GIVEUP {
            if self.conns.get_mut(idx).is_some_and(|c| c.gen == gen) {
                if kind == TIMER_CHAOS {
                    self.inject(idx, now);
                } else {
                    let t = self.shared.cfg.chaos_wait.as_secs_f64();
                    let why = format!("not ended by the proxy within {t:.0} s");
                    self.close_chaos(idx, Outcome::Survived, &why, false);
                }
            }
            return;
        }
        let Rate::Fps(f) = self.shared.cfg.rate else {
            return;
        };
        let windows = self.shared.cfg.windows.max(1);
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.gen != gen || kind != TIMER_DRAW {
            return;
        }
        // owed draws are capped at one second's worth: a stalled reader
        // does not build an unbounded backlog
        c.owed = (c.owed + windows).min(((f.ceil() as u32) * windows).max(windows));
        let period = Duration::from_secs_f64(1.0 / f);
        self.timers.add(now + period, idx, gen, TIMER_DRAW);
        self.runnable.push(idx);
    }

    /// Generates draws and writes, within a budget.
    fn service(&mut self, idx: usize) {
        let shared = self.shared.clone();
        let mut batch = std::mem::take(&mut self.batch);
        let mut close = false;
        let mut again = false;
        if let Some(c) = self.conns.get_mut(idx) {
            let hw = high_water(shared.cfg.draw_size);
            let mut written_before = 0usize;
            loop {
                if matches!(c.state, State::Streaming) && c.drawing() {
                    fill(c, &shared, hw, &mut batch);
                }
                if !c.writable || c.wq.is_empty() {
                    break;
                }
                let before = c.wq.len();
                match c.wq.flush(&mut c.stream) {
                    Ok(true) => {}
                    Ok(false) => c.writable = false,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
                written_before += before - c.wq.len();
                if !c.writable {
                    break;
                }
                let more =
                    matches!(c.state, State::Streaming) && c.drawing() && may_draw(c, &shared.cfg);
                if !more {
                    break;
                }
                if written_before >= WRITE_BUDGET {
                    again = true;
                    break;
                }
            }
            if matches!(c.state, State::Closing) && c.wq.is_empty() {
                close = true;
            }
        }
        self.batch = batch;
        let killed = self
            .conns
            .get_mut(idx)
            .and_then(|c| c.chaos.filter(|ch| ch.kill && c.wq.is_empty()));
        if let (Some(ch), false) = (killed, close) {
            let how = if ch.rst {
                "killed mid-record (reset)"
            } else {
                "killed mid-record (close)"
            };
            self.close_chaos(idx, Outcome::Closed, how, ch.rst);
            return;
        }
        if close {
            self.close(idx);
        } else if again {
            self.runnable.push(idx);
        }
    }
}

fn send_hello(c: &mut Conn, shared: &Shared) {
    let hello = proto::server_hello(
        c.framing.encoder,
        c.framing.compressor,
        &shared.cfg.display,
        &shared.uuid,
        shared.started_ms,
    );
    if let Ok(b) = proto::encode(&hello, &c.framing) {
        c.wq.push_urgent(vec![b]);
    }
}

fn start_streaming(c: &mut Conn, shared: &Shared) {
    send_hello(c, shared);
    c.state = State::Streaming;
    if let Some(m) = &shared.frames {
        // a real session says which windows exist before drawing them
        for wid in 1..=i64::from(shared.cfg.windows.max(1)) {
            let nw = frames::new_window(wid, m.width as i64, m.height as i64);
            if let Ok(b) = proto::encode(&nw, &c.framing) {
                c.wq.push(vec![b]);
            }
        }
        if let Ok(mut f) = shared.frame_stats.lock() {
            c.frames_id = Some(f.open(c.uuid.clone(), Instant::now()));
        }
    }
}

fn refuse(c: &mut Conn, reason: &str) {
    if let Ok(b) = proto::encode(&proto::disconnect(reason), &c.framing) {
        c.wq.push_urgent(vec![b]);
    }
    c.state = State::Closing;
}

/// Whether the connection may generate another draw now: one is due (rate
/// mode) and the ack window has room.
fn may_draw(c: &Conn, cfg: &ServerConfig) -> bool {
    let due = cfg.rate == Rate::Max || (cfg.rate != Rate::Idle && c.owed > 0);
    due && (cfg.window == 0 || c.seq - c.acked < i64::from(cfg.window))
}

/// Queues draws up to the high-water mark (or the owed count, or the ack
/// window).
fn fill(c: &mut Conn, shared: &Shared, hw: usize, batch: &mut BytesMut) {
    let windows = shared.cfg.windows.max(1);
    let max = shared.cfg.rate == Rate::Max;
    let small = shared.cfg.draw_size < ZERO_COPY_MIN;
    while c.wq.len() + batch.len() < hw && may_draw(c, &shared.cfg) {
        c.seq += 1;
        let wid = i64::from(c.wid % windows) + 1;
        c.wid = c.wid.wrapping_add(1);
        if !max {
            c.owed -= 1;
        }
        let parts = match &shared.frames {
            Some(m) => raw_frame(c, shared, m, wid),
            None => proto::draw(&c.framing, &shared.pixels, wid, c.seq),
        };
        let Ok(parts) = parts else {
            return;
        };
        if small {
            for p in &parts {
                batch.extend_from_slice(p);
            }
            if batch.len() >= BATCH {
                c.wq.push(vec![batch.split().freeze()]);
            }
        } else {
            c.wq.push(parts.to_vec());
        }
    }
    if !batch.is_empty() {
        c.wq.push(vec![batch.split().freeze()]);
    }
}

/// The next raw frame of window `wid`, counted in the connection's numbers.
fn raw_frame(
    c: &mut Conn,
    shared: &Shared,
    m: &FrameMaker,
    wid: i64,
) -> Result<[bytes::Bytes; 3], String> {
    let pixels = bytes::Bytes::from(m.frame(c.seq as u64, wid));
    let data_len = pixels.len() as u64;
    let (w, h) = (m.width as i64, m.height as i64);
    // one moment for both clocks: the client's receipt latency and the
    // session's ack latency start together
    let (sent, sent_us) = (Instant::now(), frames::wall_us());
    let parts = frames::raw_draw(&c.framing, wid, w, h, pixels, c.seq, sent_us)?;
    if let Some(id) = c.frames_id {
        let bytes: usize = parts.iter().map(bytes::Bytes::len).sum();
        if let Ok(mut f) = shared.frame_stats.lock() {
            if let Some(cf) = f.conns.get_mut(&id) {
                cf.sent(c.seq, bytes as u64, data_len, sent);
            }
        }
    }
    Ok(parts)
}

/// Parses `--listen` values.
pub fn parse_listens(v: &[String]) -> Result<Vec<Addr>, String> {
    v.iter().map(|s| parse_listen(s)).collect()
}
