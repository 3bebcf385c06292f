//! The proxy's own part of a relayed connection, sans-IO: its pings to both
//! sides and their echoes (latency, the dead-peer check), its traffic
//! counters, and the `proxy` section it adds to the session's
//! `info-response` packets.
//!
//! xpra's proxy pings each side that advertises `ping-echo-sourceid` every
//! 5 s with `("ping", monotonic_ms, wall_ms, uuid)` and swallows only the
//! `ping_echo` that carries its own uuid back (item 6); every other ping and
//! echo passes. Its dead-peer check never fires (the echo time is compared
//! in the wrong unit); here a side that has not echoed one of our pings for
//! `timeout` is taken as dead and the connection ends.
//!
//! The driver asks [`Link::poll_timeout`] when to call [`Link::on_timeout`],
//! which queues pings (taken with [`Link::pop_packet`] and written between
//! relayed packets) and may end the link; the directions' [`LinkHook`]s feed
//! it the intercepted packets.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::direction::{PacketHook, Verdict};
use super::error::Side;
use super::Identity;
use crate::wire::frame::{Limits, Record};
use crate::wire::header::Encoder;
use crate::wire::packet;
use crate::wire::peek::PacketType;
use crate::wire::Value;

/// What the client is told when the session stops answering pings.
pub const SESSION_NOT_RESPONDING: &str = "session not responding";
/// What a side that stopped answering pings is told (if it still reads).
pub const PING_TIMEOUT: &str = "ping timeout";
/// What both sides are told when an administrator stops a connection.
pub const STOPPED_BY_ADMIN: &str = "stopped by administrator";

/// xfwd's version, as it reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the proxy pings both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingConfig {
    /// Time between two pings to a side.
    pub interval: Duration,
    /// A side that has echoed none of our pings for this long is dead.
    pub timeout: Duration,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Bytes and packets relayed in one direction (the pumps add, once per
/// written batch).
#[derive(Default, Debug)]
pub struct Counters {
    pub bytes: Cell<u64>,
    pub packets: Cell<u64>,
}

impl Counters {
    pub fn add(&self, bytes: usize, packets: u64) {
        self.bytes.set(self.bytes.get() + bytes as u64);
        self.packets.set(self.packets.get() + packets);
    }
}

/// Both directions' counters.
#[derive(Default, Debug)]
pub struct Traffic {
    /// Client to session.
    pub up: Counters,
    /// Session to client.
    pub down: Counters,
}

/// Which connection a link belongs to, for its info.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkId {
    pub conn: u64,
    pub shard: usize,
}

/// Writes in progress: since when the pump writing to each side has been
/// in one write (`None`: not writing). A side that does not read stalls the
/// pump that writes to it, and with it the reading of the other side, whose
/// echoes then wait behind its data: that other side is not the dead one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stalls {
    pub to_client: Option<Instant>,
    pub to_session: Option<Instant>,
}

/// Why the link ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// This side echoed none of our pings within the timeout.
    PingTimeout(Side),
}

/// Whether the proxy pings a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingState {
    /// Not known yet: the side's hello has not gone by (the session's, at
    /// the start of relaying). The timer looks again at `next_ping`: the
    /// hello may come between two timeouts, and the driver asks for the
    /// next one only after a timeout.
    Waiting,
    /// The side echoes our uuid (it advertised `ping-echo-sourceid`).
    On,
    /// It does not, or pings are off.
    Off,
}

/// The pings of one side.
#[derive(Debug)]
struct Pinger {
    state: PingState,
    /// The side's encoder (our pings use it).
    encoder: Encoder,
    /// When to ping next (`Waiting`: when to look again).
    next_ping: Instant,
    /// The last echo of ours, or when pinging started.
    last_echo: Instant,
    latency: Option<Duration>,
    /// Pings to write to this side.
    queue: VecDeque<Bytes>,
}

impl Pinger {
    fn new(state: PingState, cfg: &PingConfig, now: Instant) -> Pinger {
        Pinger {
            state: if cfg.interval.is_zero() {
                PingState::Off
            } else {
                state
            },
            encoder: Encoder::Rencode,
            next_ping: now + cfg.interval,
            last_echo: now,
            latency: None,
            queue: VecDeque::new(),
        }
    }

    /// The side's hello went by, with `caps`, in `encoder`.
    fn on_hello(&mut self, caps: &Value, encoder: Encoder, cfg: &PingConfig, now: Instant) {
        if self.state == PingState::Off {
            return;
        }
        if !caps_flag(caps, "ping-echo-sourceid") {
            self.state = PingState::Off;
            return;
        }
        self.state = PingState::On;
        self.encoder = encoder;
        self.next_ping = now + cfg.interval;
        self.last_echo = now;
    }

    /// When this side's timer is due.
    fn due(&self, cfg: &PingConfig) -> Option<Instant> {
        match self.state {
            PingState::Waiting => Some(self.next_ping),
            PingState::On => Some(self.next_ping.min(self.deadline(cfg))),
            PingState::Off => None,
        }
    }

    fn deadline(&self, cfg: &PingConfig) -> Instant {
        self.last_echo + cfg.timeout
    }
}

/// The proxy's state for one relayed connection.
#[derive(Debug)]
pub struct Link {
    cfg: PingConfig,
    identity: Arc<Identity>,
    id: LinkId,
    /// When relaying started: the origin of our pings' monotonic time.
    started: Instant,
    traffic: Rc<Traffic>,
    client: Pinger,
    session: Pinger,
    /// Round trips measured since the driver last took them (for metrics;
    /// one per side at most: pings go one at a time).
    samples: Vec<(Side, Duration)>,
    end: Option<LinkEnd>,
    /// The `video` part of the proxy's info (transcoded connections).
    video_info: Option<VideoInfo>,
}

/// Makes the `video` part of the proxy's info.
pub struct VideoInfo(pub Box<dyn Fn(Instant) -> Value>);

impl std::fmt::Debug for VideoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VideoInfo")
    }
}

fn caps_flag(caps: &Value, key: &str) -> bool {
    caps.get(key).is_some_and(Value::truthy)
}

impl Link {
    /// A link whose client sent `client_caps` in its hello and speaks
    /// `client_encoder`. The session's pings start with its hello
    /// ([`Link::on_session_hello`]).
    pub fn new(
        cfg: PingConfig,
        identity: Arc<Identity>,
        id: LinkId,
        traffic: Rc<Traffic>,
        client_caps: &Value,
        client_encoder: Encoder,
        now: Instant,
    ) -> Link {
        let mut client = Pinger::new(PingState::Waiting, &cfg, now);
        client.on_hello(client_caps, client_encoder, &cfg, now);
        Link {
            cfg,
            identity,
            id,
            started: now,
            traffic,
            client,
            session: Pinger::new(PingState::Waiting, &cfg, now),
            samples: Vec::new(),
            end: None,
            video_info: None,
        }
    }

    fn pinger(&self, side: Side) -> &Pinger {
        match side {
            Side::Session => &self.session,
            _ => &self.client,
        }
    }

    fn pinger_mut(&mut self, side: Side) -> &mut Pinger {
        match side {
            Side::Session => &mut self.session,
            _ => &mut self.client,
        }
    }

    /// The session's hello went by: ping it if it echoes our uuid.
    pub fn on_session_hello(&mut self, caps: &Value, encoder: Encoder, now: Instant) {
        let cfg = self.cfg;
        self.session.on_hello(caps, encoder, &cfg, now);
    }

    /// Whether the proxy pings this side.
    pub fn pings(&self, side: Side) -> bool {
        self.pinger(side).state == PingState::On
    }

    /// The last round trip measured to this side.
    pub fn latency(&self, side: Side) -> Option<Duration> {
        self.pinger(side).latency
    }

    pub fn traffic(&self) -> &Rc<Traffic> {
        &self.traffic
    }

    /// Why the link ended the connection, once it did.
    pub fn end(&self) -> Option<LinkEnd> {
        self.end
    }

    /// When to call [`Link::on_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.end.is_some() {
            return None;
        }
        [&self.client, &self.session]
            .into_iter()
            .filter_map(|p| p.due(&self.cfg))
            .min()
    }

    fn mono_ms(&self, now: Instant) -> i64 {
        // Never 0: a zero echo time reads as "none" to some peers.
        i64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }

    /// Sends the pings that are due, and ends the link if a side has not
    /// answered for the timeout (blaming the side that does not read when
    /// its stall is what holds the other side's echoes back).
    pub fn on_timeout(&mut self, now: Instant, stalls: Stalls) {
        if self.end.is_some() {
            return;
        }
        let (cfg, mono) = (self.cfg, self.mono_ms(now));
        let identity = Arc::clone(&self.identity);
        for side in [Side::Session, Side::Client] {
            let p = self.pinger_mut(side);
            match p.state {
                PingState::Off => continue,
                PingState::Waiting => {
                    if now >= p.next_ping {
                        p.next_ping = now + cfg.interval;
                    }
                    continue;
                }
                PingState::On => {}
            }
            if now >= p.deadline(&cfg) {
                // Held for an interval or more by the other side's write.
                let held = |since: Option<Instant>| {
                    since.is_some_and(|t| t + cfg.interval.max(Duration::from_secs(1)) <= now)
                };
                let dead = match side {
                    Side::Session if held(stalls.to_client) => Side::Client,
                    Side::Client if held(stalls.to_session) => Side::Session,
                    s => s,
                };
                self.end = Some(LinkEnd::PingTimeout(dead));
                return;
            }
            if now < p.next_ping {
                continue;
            }
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let items = [
                Value::from("ping"),
                Value::Int(mono),
                Value::Int(wall),
                Value::from(identity.uuid.as_str()),
            ];
            let encoded = super::encode_items(&items, p.encoder);
            p.next_ping = now + cfg.interval;
            match encoded {
                Ok(b) => {
                    // One ping waiting is enough: a side that does not take
                    // them gets no more (the timeout decides).
                    if p.queue.is_empty() {
                        p.queue.push_back(b.freeze());
                    }
                }
                Err(e) => tracing::debug!("cannot encode a ping: {e}"),
            }
        }
    }

    /// A packet of the proxy's own to write to `side`.
    pub fn pop_packet(&mut self, side: Side) -> Option<Bytes> {
        self.pinger_mut(side).queue.pop_front()
    }

    /// A `ping_echo` read from `side`: true when it answers one of ours
    /// (then it is swallowed).
    pub fn on_echo(&mut self, side: Side, items: &[Value], now: Instant) -> bool {
        let ours = items.get(6).is_some_and(|sid| match sid {
            Value::Str(s) => *s == self.identity.uuid,
            Value::Bytes(b) => b[..] == *self.identity.uuid.as_bytes(),
            _ => false,
        });
        if !ours || !self.pings(side) {
            return false;
        }
        let now_ms = self.mono_ms(now);
        let p = self.pinger_mut(side);
        p.last_echo = now;
        if let Some(sent) = items.get(1).and_then(Value::as_int) {
            if (1..=now_ms).contains(&sent) {
                let rtt = Duration::from_millis(u64::try_from(now_ms - sent).unwrap_or(0));
                p.latency = Some(rtt);
                if self.samples.len() < 8 {
                    self.samples.push((side, rtt));
                }
            }
        }
        true
    }

    /// The round trips measured since the last call.
    pub fn take_samples(&mut self) -> Vec<(Side, Duration)> {
        std::mem::take(&mut self.samples)
    }

    /// The `proxy` section of info: who the proxy is and what it measured.
    pub fn proxy_info(&self, now: Instant) -> Value {
        let kv = |k: &str, v: Value| (Value::from(k), v);
        let int = Value::uint;
        let ms = |d: Duration| int(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut latency = Vec::new();
        if let Some(l) = self.client.latency {
            latency.push(kv("client", ms(l)));
        }
        if let Some(l) = self.session.latency {
            latency.push(kv("server", ms(l)));
        }
        let dir = |c: &Counters| {
            Value::Dict(vec![
                kv("bytes", int(c.bytes.get())),
                kv("packets", int(c.packets.get())),
            ])
        };
        let mut info = Value::Dict(vec![
            kv("type", Value::from("xfwd")),
            kv("version", Value::from(VERSION)),
            kv("uuid", Value::from(self.identity.uuid.as_str())),
            kv("hostname", Value::from(self.identity.hostname.as_str())),
            kv("connection", int(self.id.conn)),
            kv("shard", int(self.id.shard as u64)),
            // The proxy's uptime, and this connection's time relaying.
            kv(
                "uptime",
                ms(now.saturating_duration_since(self.identity.started)),
            ),
            kv(
                "connection-time",
                ms(now.saturating_duration_since(self.started)),
            ),
            kv("latency", Value::Dict(latency)),
            kv("client-to-server", dir(&self.traffic.up)),
            kv("server-to-client", dir(&self.traffic.down)),
        ]);
        if let (Some(f), Value::Dict(d)) = (&self.video_info, &mut info) {
            d.push(kv("video", (f.0)(now)));
        }
        info
    }

    /// Adds a `video` part to the proxy's info.
    pub fn set_video_info(&mut self, f: Box<dyn Fn(Instant) -> Value>) {
        self.video_info = Some(VideoInfo(f));
    }

    /// Adds the `proxy` section to an `info-response`'s dict. The session's
    /// own keys are never replaced: where it has a `proxy` key already (a
    /// proxy behind a proxy), ours go in beside its keys, theirs winning.
    pub fn augment_info(&self, items: &mut [Value], now: Instant) -> bool {
        let Some(Value::Dict(info)) = items.get_mut(1) else {
            return false;
        };
        let ours = self.proxy_info(now);
        match info.iter_mut().find(|(k, _)| k.as_str() == Some("proxy")) {
            Some((_, theirs)) => merge_missing(theirs, ours),
            None => info.push((Value::from("proxy"), ours)),
        }
        true
    }
}

/// Adds to `into` the keys of `from` it lacks, recursively into dicts both
/// have; a value that is not a dict is kept as it is.
fn merge_missing(into: &mut Value, from: Value) {
    let (Value::Dict(a), Value::Dict(b)) = (into, from) else {
        return;
    };
    for (k, v) in b {
        match a.iter_mut().find(|(ak, _)| ak.as_str() == k.as_str()) {
            Some((_, existing)) => merge_missing(existing, v),
            None => a.push((k, v)),
        }
    }
}

/// The packet types a direction hands to its [`LinkHook`].
pub fn intercepted(side: Side) -> Vec<&'static str> {
    match side {
        Side::Session => vec!["ping_echo", "info-response"],
        _ => vec!["ping_echo"],
    }
}

/// The hook of one direction: it gives the link the packets read from
/// `side`.
pub struct LinkHook {
    link: Rc<RefCell<Link>>,
    side: Side,
}

impl LinkHook {
    pub fn new(link: Rc<RefCell<Link>>, side: Side) -> LinkHook {
        LinkHook { link, side }
    }
}

impl PacketHook for LinkHook {
    fn on_packet(
        &mut self,
        _chunks: &[Record],
        record: &Record,
        ptype: &PacketType,
        now: Instant,
    ) -> Verdict {
        if ptype.is("ping_echo") {
            // An echo is a few small values.
            let Ok(p) = packet::decode_main(record, &Limits::intercept_close()) else {
                return Verdict::Forward;
            };
            return if self.link.borrow_mut().on_echo(self.side, &p.items, now) {
                Verdict::Drop
            } else {
                Verdict::Forward
            };
        }
        if self.side == Side::Session && ptype.is("info-response") {
            let Ok(mut p) = packet::decode_main(record, &Limits::default()) else {
                return Verdict::Forward;
            };
            if !self.link.borrow().augment_info(&mut p.items, now) {
                return Verdict::Forward;
            }
            return match super::encode_items(&p.items, p.encoder) {
                Ok(b) => Verdict::Replace(b.freeze()),
                Err(e) => {
                    tracing::debug!("cannot re-encode an info-response: {e}");
                    Verdict::Forward
                }
            };
        }
        Verdict::Forward
    }

    fn on_first_hello(&mut self, items: &[Value], encoder: Encoder, now: Instant) {
        if self.side == Side::Session {
            if let Some(caps) = items.get(1) {
                self.link.borrow_mut().on_session_hello(caps, encoder, now);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn identity() -> Arc<Identity> {
        Arc::new(Identity {
            hostname: "h".into(),
            uuid: "abc123".into(),
            start_time: SystemTime::now(),
            started: Instant::now(),
            shards: 2,
        })
    }

    /// Pings every second, dead after three.
    const SHORT: PingConfig = PingConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(3),
    };

    /// A link of a test connection whose client sent `client_caps`.
    fn link(cfg: PingConfig, client_caps: &Value, encoder: Encoder, t0: Instant) -> Link {
        Link::new(
            cfg,
            identity(),
            LinkId::default(),
            Rc::default(),
            client_caps,
            encoder,
            t0,
        )
    }

    fn caps(echo: bool) -> Value {
        Value::Dict(vec![(Value::from("ping-echo-sourceid"), Value::Bool(echo))])
    }

    fn decode(b: &Bytes) -> Vec<Value> {
        let mut dec = crate::wire::frame::FrameDecoder::new(
            crate::wire::header::Rules::Any,
            Limits::default(),
        );
        dec.feed(b);
        let r = dec.next_record().unwrap().unwrap();
        packet::decode_main(&r, &Limits::default()).unwrap().items
    }

    fn echo_of(ping: &[Value]) -> Vec<Value> {
        vec![
            Value::from("ping_echo"),
            ping[1].clone(),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(-1),
            ping[3].clone(),
        ]
    }

    #[test]
    fn pings_both_sides_and_measures_latency() {
        let t0 = Instant::now();
        let cfg = PingConfig::default();
        let mut l = link(cfg, &caps(true), Encoder::Rencodeplus, t0);
        assert!(l.pings(Side::Client));
        assert!(!l.pings(Side::Session));
        l.on_session_hello(&caps(true), Encoder::Rencode, t0);
        assert_eq!(l.poll_timeout(), Some(t0 + cfg.interval));
        let t1 = t0 + cfg.interval;
        l.on_timeout(t1, Stalls::default());
        let ping = decode(&l.pop_packet(Side::Session).unwrap());
        assert_eq!(ping[0].as_str(), Some("ping"));
        assert_eq!(ping[3].as_str(), Some("abc123"));
        assert!(l.pop_packet(Side::Client).is_some());
        assert!(l.on_echo(
            Side::Session,
            &echo_of(&ping),
            t1 + Duration::from_millis(30)
        ));
        assert_eq!(l.latency(Side::Session), Some(Duration::from_millis(30)));
        // Someone else's echo passes.
        let mut other = echo_of(&ping);
        other[6] = Value::from("someone-else");
        assert!(!l.on_echo(Side::Session, &other, t1));
        assert!(!l.on_echo(Side::Session, &echo_of(&ping)[..5], t1));
    }

    #[test]
    fn a_side_without_echoes_is_dead_after_the_timeout() {
        let t0 = Instant::now();
        let cfg = SHORT;
        let mut l = link(cfg, &caps(true), Encoder::Rencode, t0);
        l.on_session_hello(&caps(true), Encoder::Rencode, t0);
        let mut now = t0;
        while l.end().is_none() {
            now = l.poll_timeout().unwrap();
            l.on_timeout(now, Stalls::default());
            // The client answers every ping; the session none.
            if let Some(p) = l.pop_packet(Side::Client) {
                assert!(l.on_echo(Side::Client, &echo_of(&decode(&p)), now));
            }
            assert!(now <= t0 + Duration::from_secs(10));
        }
        assert_eq!(l.end(), Some(LinkEnd::PingTimeout(Side::Session)));
        assert_eq!(now, t0 + cfg.timeout);
        // Unanswered pings do not pile up.
        assert!(l.pop_packet(Side::Session).is_some());
        assert!(l.pop_packet(Side::Session).is_none());
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_side_that_does_not_read_is_blamed_for_the_others_silence() {
        let t0 = Instant::now();
        let cfg = SHORT;
        let mut l = link(cfg, &caps(true), Encoder::Rencode, t0);
        l.on_session_hello(&caps(true), Encoder::Rencode, t0);
        // Both are silent, but the write to the client has been stuck for
        // two seconds: the session's echoes wait behind it.
        let stalls = Stalls {
            to_client: Some(t0 + Duration::from_secs(1)),
            to_session: None,
        };
        l.on_timeout(t0 + cfg.timeout, stalls);
        assert_eq!(l.end(), Some(LinkEnd::PingTimeout(Side::Client)));
        // A write that started a moment ago explains nothing.
        let mut l = link(cfg, &caps(true), Encoder::Rencode, t0);
        l.on_session_hello(&caps(true), Encoder::Rencode, t0);
        let stalls = Stalls {
            to_client: Some(t0 + cfg.timeout - Duration::from_millis(10)),
            to_session: None,
        };
        l.on_timeout(t0 + cfg.timeout, stalls);
        assert_eq!(l.end(), Some(LinkEnd::PingTimeout(Side::Session)));
    }

    #[test]
    fn the_timer_looks_again_until_the_sessions_hello() {
        let t0 = Instant::now();
        let cfg = PingConfig::default();
        let mut l = link(cfg, &caps(false), Encoder::Rencode, t0);
        assert_eq!(l.poll_timeout(), Some(t0 + cfg.interval));
        l.on_timeout(t0 + cfg.interval, Stalls::default());
        // Not the same (past) time again: no busy loop.
        assert_eq!(l.poll_timeout(), Some(t0 + 2 * cfg.interval));
        let t = t0 + cfg.interval + Duration::from_millis(5);
        l.on_session_hello(&caps(true), Encoder::Rencode, t);
        assert_eq!(l.poll_timeout(), Some(t + cfg.interval));
    }

    #[test]
    fn sides_without_the_capability_are_not_pinged() {
        let t0 = Instant::now();
        let mut l = link(PingConfig::default(), &caps(false), Encoder::Rencode, t0);
        l.on_session_hello(&Value::Dict(vec![]), Encoder::Rencode, t0);
        assert_eq!(l.poll_timeout(), None);
        l.on_timeout(t0 + Duration::from_secs(600), Stalls::default());
        assert!(l.end().is_none());
    }

    #[test]
    fn info_gains_a_proxy_section_without_clobbering() {
        let t0 = Instant::now();
        let traffic = Rc::new(Traffic::default());
        traffic.up.add(100, 2);
        let l = Link::new(
            PingConfig::default(),
            identity(),
            LinkId { conn: 7, shard: 1 },
            traffic,
            &caps(false),
            Encoder::Rencode,
            t0,
        );
        let mut items = vec![
            Value::from("info-response"),
            Value::Dict(vec![(Value::from("server"), Value::from("x"))]),
        ];
        assert!(l.augment_info(&mut items, t0));
        let info = &items[1];
        assert_eq!(info.get("server").and_then(Value::as_str), Some("x"));
        assert_eq!(
            info.get_path("proxy.connection").and_then(Value::as_int),
            Some(7)
        );
        assert_eq!(
            info.get_path("proxy.client-to-server.bytes")
                .and_then(Value::as_int),
            Some(100)
        );
        // A proxy section already there keeps its values.
        let mut items = vec![
            Value::from("info-response"),
            Value::Dict(vec![(
                Value::from("proxy"),
                Value::Dict(vec![(Value::from("version"), Value::from("3.1.3"))]),
            )]),
        ];
        assert!(l.augment_info(&mut items, t0));
        let info = &items[1];
        assert_eq!(
            info.get_path("proxy.version").and_then(Value::as_str),
            Some("3.1.3")
        );
        assert_eq!(
            info.get_path("proxy.shard").and_then(Value::as_int),
            Some(1)
        );
    }

    /// A transcoded connection's info has its `video` part.
    #[test]
    fn info_has_the_video_part_when_set() {
        let t0 = Instant::now();
        let mut l = link(PingConfig::default(), &caps(false), Encoder::Rencode, t0);
        assert!(l.proxy_info(t0).get("video").is_none());
        l.set_video_info(Box::new(|_| {
            Value::Dict(vec![(Value::from("frames"), Value::uint(3))])
        }));
        let mut items = vec![Value::from("info-response"), Value::Dict(vec![])];
        assert!(l.augment_info(&mut items, t0));
        assert_eq!(
            items[1]
                .get_path("proxy.video.frames")
                .and_then(Value::as_int),
            Some(3)
        );
    }
}

#[cfg(test)]
mod size {
    #[test]
    fn a_link_is_small() {
        let link = std::mem::size_of::<std::cell::RefCell<super::Link>>();
        let traffic = std::mem::size_of::<super::Traffic>();
        eprintln!("link {link} bytes, traffic {traffic} bytes");
        assert!(link + traffic < 512, "{link} + {traffic}");
    }
}
