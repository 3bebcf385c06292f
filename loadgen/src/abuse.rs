//! `loadgen abuse`: abusive pre-authentication clients, kept open in a
//! loop, each timed until the proxy closes it.
//!
//! Kinds (the front-door abuse of tests/engine_abuse.rs):
//! - `slowloris`: a hello, one byte a second;
//! - `silent`: connects and sends nothing (half-open from its side);
//! - `bomb`: hellos that are cheap to send and costly to decode, in turn:
//!   a 4 MiB rencode list of small ints (over the pre-hello record cap), a
//!   list of 250,000 ints just under the cap (over the value budget), and
//!   an lz4 one that expands to the pre-hello decompression cap;
//! - `tls-stall`: a TLS record header of a ClientHello, never finished;
//! - `http-endless`: an HTTP request whose headers never end (a line every
//!   100 ms);
//! - `ws-huge`: a WebSocket upgrade, then a frame announcing 2^63 - 1
//!   bytes;
//! - `proxy-untrusted`: a PROXY v2 header from an address the proxy does
//!   not trust.
//!
//! Every slot keeps one connection of its kind open; when the proxy closes
//! it, the slot opens another (at most one a second per slot). A
//! connection open for longer than `--deadline` + `--slack` has outlived
//! the proxy's handshake deadline: reported, exit status 3.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mio::event::Source;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use xfwd::wire::header::{Compressor, Encoder};
use xfwd::wire::packet::{self, EncodeOptions};
use xfwd::wire::Value;

use crate::evloop::{Slab, Timers};
use crate::net::{Addr, Stream};

pub const KINDS: &[&str] = &[
    "slowloris",
    "silent",
    "bomb",
    "tls-stall",
    "http-endless",
    "ws-huge",
    "proxy-untrusted",
];

#[derive(clap::Args, Debug)]
pub struct AbuseArgs {
    /// The proxy: HOST:PORT (or tcp://HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    connect: String,
    /// Comma-separated kinds (default: all).
    #[arg(long, value_name = "KIND,...", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Abusive connections kept open at once (slots go round the kinds).
    #[arg(long, default_value_t = 14)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// The proxy's handshake deadline (xfwd --handshake-timeout).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    deadline: f64,
    /// Leeway over the deadline before a connection counts as outliving it.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    slack: f64,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Default)]
struct KindStats {
    opened: u64,
    /// Closed by the proxy (EOF, reset, a failed write).
    closed: u64,
    /// The connect itself failed.
    refused: u64,
    /// Closed later than deadline + slack.
    late: u64,
    close_us: Option<Histogram<u64>>,
    /// Open at the end of the run, and of those past deadline + slack.
    open_at_end: u64,
    open_past_deadline: u64,
    /// The oldest connection still open at the end.
    max_open_ms: u64,
}

/// 1 us .. 1000 s.
fn histogram() -> Histogram<u64> {
    crate::report::histogram_up_to(1_000_000_000)
}

struct Conn {
    stream: Stream,
    slot: usize,
    kind: &'static str,
    opened: Instant,
    gen: u64,
    /// Bytes to write now, and what is written of them.
    out: Bytes,
    off: usize,
    /// Bytes dripped later (one per tick), and the tick.
    drip: Bytes,
    drip_off: usize,
    lines: u64,
}

const TIMER_DRIP: u8 = 1;
const TIMER_OPEN: u8 = 2;

/// Payloads built once.
struct Payloads {
    hello: Bytes,
    bombs: [Bytes; 3],
    ws: Bytes,
    proxy: Bytes,
}

fn encode(items: &[Value], opts: &EncodeOptions) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    for r in packet::encode_packet(items, opts).map_err(|e| e.to_string())? {
        r.write_to(&mut out);
    }
    Ok(out.freeze())
}

fn payloads() -> Result<Payloads, String> {
    let hello = vec![
        Value::from("hello"),
        Value::Dict(vec![
            (Value::from("version"), Value::from("3.1.3")),
            (Value::from("username"), Value::from("abuse")),
            (Value::from("uuid"), Value::from("0".repeat(32))),
        ]),
    ];
    let plain = EncodeOptions::plain(Encoder::Rencode);
    let ints = |n: usize| vec![Value::from("hello"), Value::List(vec![Value::Int(1); n])];
    let lz4 = EncodeOptions {
        compressor: Compressor::Lz4,
        level: 1,
        min_compress: 0,
        ..plain
    };
    let mut ws = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: binary\r\n\r\n"
        .to_vec();
    ws.extend_from_slice(&[0x82, 0xff]);
    ws.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    ws.extend_from_slice(&[1, 2, 3, 4]);
    let mut proxy = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    proxy.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    proxy.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90]);
    Ok(Payloads {
        hello: encode(&hello, &plain)?,
        bombs: [
            encode(&ints(4 * 1024 * 1024), &plain)?,
            encode(&ints(250_000), &plain)?,
            encode(&ints(1_000_000), &lz4)?,
        ],
        ws: ws.into(),
        proxy: proxy.into(),
    })
}

struct Abuse {
    poll: Poll,
    conns: Slab<Conn>,
    timers: Timers,
    addr: Addr,
    kinds: Vec<&'static str>,
    stats: BTreeMap<&'static str, KindStats>,
    payloads: Payloads,
    gen: u64,
    /// Per slot: when it last opened a connection, how many it opened.
    last_open: Vec<Option<Instant>>,
    opened: Vec<u64>,
    deadline: Instant,
    limit: Duration,
    scratch: Vec<u8>,
}

pub fn run(a: AbuseArgs) -> ExitCode {
    match try_run(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen abuse: {e}");
            ExitCode::from(2)
        }
    }
}

fn try_run(a: AbuseArgs) -> Result<ExitCode, String> {
    crate::evloop::raise_nofile();
    let addr = crate::net::parse_listen(&a.connect)?;
    let mut kinds = Vec::new();
    for k in &a.kinds {
        let known = KINDS
            .iter()
            .find(|x| **x == k.as_str())
            .ok_or_else(|| format!("--kinds: unknown {k} (known: {})", KINDS.join(", ")))?;
        kinds.push(*known);
    }
    if kinds.is_empty() {
        kinds = KINDS.to_vec();
    }
    let ok = |v: f64| v >= 0.0 && v.is_finite();
    if !(a.duration > 0.0 && ok(a.duration) && ok(a.deadline) && ok(a.slack)) {
        return Err("--duration, --deadline and --slack must be positive".into());
    }
    let concurrency = a.concurrency.max(1);
    let poll = Poll::new().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut ab = Abuse {
        poll,
        conns: Slab::default(),
        timers: Timers::default(),
        addr,
        stats: kinds.iter().map(|k| (*k, KindStats::default())).collect(),
        kinds,
        payloads: payloads()?,
        gen: 0,
        last_open: vec![None; concurrency],
        opened: vec![0; concurrency],
        deadline: t0 + Duration::from_secs_f64(a.duration),
        limit: Duration::from_secs_f64(a.deadline + a.slack),
        scratch: vec![0u8; 64 * 1024],
    };
    for slot in 0..concurrency {
        ab.open(slot);
    }
    let mut events = Events::with_capacity(1024);
    let mut next_line = t0 + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now >= ab.deadline {
            break;
        }
        let mut timeout = ab.deadline - now;
        if let Some(t) = ab.timers.next_timeout(now) {
            timeout = timeout.min(t);
        }
        if let Err(e) = ab.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let idx = ev.token().0;
            if ev.is_writable() {
                ab.write(idx);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                ab.read(idx);
            }
        }
        let now = Instant::now();
        while let Some((idx, gen, kind)) = ab.timers.pop_due(now) {
            ab.on_timer(idx, gen, kind);
        }
        if now >= next_line && !a.quiet {
            next_line += Duration::from_secs(10);
            let (o, c): (u64, u64) = ab
                .stats
                .values()
                .fold((0, 0), |(o, c), s| (o + s.opened, c + s.closed));
            eprintln!(
                "[{:>5.0}s] abusive connections opened {o}, closed by the proxy {c}",
                now.duration_since(t0).as_secs_f64()
            );
        }
    }
    // what is still open at the end
    let now = Instant::now();
    for idx in ab.conns.keys() {
        if let Some(c) = ab.conns.remove(idx) {
            let age = now.saturating_duration_since(c.opened);
            let s = ab.stats.entry(c.kind).or_default();
            s.open_at_end += 1;
            s.max_open_ms = s.max_open_ms.max(age.as_millis() as u64);
            if age > ab.limit {
                s.open_past_deadline += 1;
            }
        }
    }
    let mut kinds_json = serde_json::Map::new();
    let mut bad = 0u64;
    for (k, s) in &ab.stats {
        let h = s.close_us.as_ref();
        let q = |p: f64| h.map_or(0, |h| h.value_at_quantile(p) / 1000);
        bad += s.late + s.open_past_deadline;
        kinds_json.insert(
            (*k).to_owned(),
            json!({
                "opened": s.opened,
                "closed": s.closed,
                "refused": s.refused,
                "p50_close_ms": q(0.5),
                "p99_close_ms": q(0.99),
                "max_close_ms": h.map_or(0, |h| h.max() / 1000),
                "late": s.late,
                "open_at_end": s.open_at_end,
                "open_past_deadline": s.open_past_deadline,
                "max_open_ms": s.max_open_ms,
            }),
        );
    }
    let report = json!({
        "kinds": kinds_json,
        "outlived_deadline": bad,
        "duration_s": t0.elapsed().as_secs_f64(),
        "config": {
            "connect": a.connect,
            "concurrency": concurrency,
            "deadline_s": a.deadline,
            "slack_s": a.slack,
        },
    });
    println!("loadgen abuse");
    for (k, s) in &ab.stats {
        let h = s.close_us.as_ref();
        println!(
            "  {k:<16} {} opened, {} closed by the proxy (p99 {} ms, max {} ms), {} late, \
             {} open at the end ({} past the deadline), {} refused",
            s.opened,
            s.closed,
            h.map_or(0, |h| h.value_at_quantile(0.99) / 1000),
            h.map_or(0, |h| h.max() / 1000),
            s.late,
            s.open_at_end,
            s.open_past_deadline,
            s.refused
        );
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(p, text + "\n").map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(if bad > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

impl Abuse {
    fn open(&mut self, slot: usize) {
        let now = Instant::now();
        if now >= self.deadline {
            return;
        }
        // at most one connection a second per slot (bombs are closed at
        // once: without this the loop would only make bombs)
        if let Some(last) = self.last_open[slot] {
            let next = last + Duration::from_secs(1);
            if next > now {
                self.timers.add(next, slot, 0, TIMER_OPEN);
                return;
            }
        }
        self.last_open[slot] = Some(now);
        let kind = self.kinds[slot % self.kinds.len()];
        let n = self.opened[slot];
        self.opened[slot] += 1;
        let s = self.stats.entry(kind).or_default();
        let mut stream = match Stream::connect(&self.addr) {
            Ok(st) => st,
            Err(_) => {
                s.refused += 1;
                self.timers
                    .add(now + Duration::from_secs(1), slot, 0, TIMER_OPEN);
                return;
            }
        };
        s.opened += 1;
        let p = &self.payloads;
        let (out, drip) = match kind {
            "slowloris" => (Bytes::new(), p.hello.clone()),
            "bomb" => (p.bombs[(n % 3) as usize].clone(), Bytes::new()),
            "tls-stall" => (
                Bytes::from_static(&[0x16, 0x03, 0x01, 0x02, 0x00]),
                Bytes::new(),
            ),
            "http-endless" => (
                Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n"),
                Bytes::new(),
            ),
            "ws-huge" => (p.ws.clone(), Bytes::new()),
            "proxy-untrusted" => (p.proxy.clone(), Bytes::new()),
            _ => (Bytes::new(), Bytes::new()),
        };
        self.gen += 1;
        let idx = self.conns.next_key();
        if stream
            .register(
                self.poll.registry(),
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.timers
                .add(now + Duration::from_secs(1), slot, 0, TIMER_OPEN);
            return;
        }
        let dripping = !drip.is_empty() || kind == "http-endless";
        self.conns.insert(Conn {
            stream,
            slot,
            kind,
            opened: now,
            gen: self.gen,
            out,
            off: 0,
            drip,
            drip_off: 0,
            lines: 0,
        });
        if dripping {
            let every = if kind == "slowloris" {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(100)
            };
            self.timers.add(now + every, idx, self.gen, TIMER_DRIP);
        }
    }

    /// The proxy closed it (or a write or read failed).
    fn closed(&mut self, idx: usize) {
        let Some(c) = self.conns.remove(idx) else {
            return;
        };
        let mut st = c.stream;
        let _ = st.deregister(self.poll.registry());
        drop(st);
        let took = c.opened.elapsed();
        let s = self.stats.entry(c.kind).or_default();
        s.closed += 1;
        if took > self.limit {
            s.late += 1;
        }
        let _ = s
            .close_us
            .get_or_insert_with(histogram)
            .record((took.as_micros() as u64).max(1));
        self.open(c.slot);
    }

    fn write(&mut self, idx: usize) {
        let mut failed = false;
        if let Some(c) = self.conns.get_mut(idx) {
            while c.off < c.out.len() {
                match c.stream.write(&c.out[c.off..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => c.off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed {
            self.closed(idx);
        }
    }

    fn read(&mut self, idx: usize) {
        let mut ended = false;
        if let Some(c) = self.conns.get_mut(idx) {
            loop {
                match c.stream.read(&mut self.scratch) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(_) => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            self.closed(idx);
        }
    }

    fn on_timer(&mut self, idx: usize, gen: u64, kind: u8) {
        if kind == TIMER_OPEN {
            self.open(idx);
            return;
        }
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.gen != gen {
            return;
        }
        let now = Instant::now();
        if c.kind == "slowloris" {
            if c.drip_off < c.drip.len() {
                let b = c.drip.slice(c.drip_off..c.drip_off + 1);
                c.drip_off += 1;
                c.out = concat(&c.out[c.off..], &b);
                c.off = 0;
            }
            self.timers
                .add(now + Duration::from_secs(1), idx, gen, TIMER_DRIP);
        } else {
            // http-endless: another header line, bounded in what waits
            if c.out.len() - c.off < 64 * 1024 {
                let line = format!("X-{}: {}\r\n", c.lines, "y".repeat(100));
                c.lines += 1;
                c.out = concat(&c.out[c.off..], line.as_bytes());
                c.off = 0;
            }
            self.timers
                .add(now + Duration::from_millis(100), idx, gen, TIMER_DRIP);
        }
        self.write(idx);
    }
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v.into()
}
