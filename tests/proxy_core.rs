//! The sans-IO connection core in memory: a simulated client and session
//! around one [`Connection`], a simulated clock, no sockets and no
//! executor. Every refusal, timeout, challenge (the proxy's own, the
//! session's passed through, the session's answered by the proxy),
//! mid-record close and stop path of the life cycle in docs/engine.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;
use xfwd::auth::{
    client_answer, AuthChain, AuthPolicy, AuthSpec, PeerInfo, Secret, SharedThrottle, Target,
    ThrottleConfig,
};
use xfwd::proxy::link::{LinkId, PingConfig, Stalls};
use xfwd::proxy::{
    Action, ConnConfig, ConnError, Connection, Destination, Event, Identity, Phase, Plan, PumpEnd,
    Reachable, RelayEnd, RelayStart, Side,
};
use xfwd::sessions::launch::{StartMode, StartReason, StartRequest, Started};
use xfwd::sessions::LocalSession;
use xfwd::wire::frame::{FrameDecoder, Limits};
use xfwd::wire::header::{Encoder, Rules};
use xfwd::wire::packet::{self, Assembler, EncodeOptions, Packet};
use xfwd::wire::views::{Challenge, Close};
use xfwd::wire::Value;

const TIMEOUT: Duration = Duration::from_secs(15);
/// The launcher's bound in these tests.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// When the simulated proxy started (wall clock, seconds since the epoch).
const START_SECS: u64 = 1_700_000_000;

fn encode(items: &[Value], encoder: Encoder) -> BytesMut {
    let mut out = BytesMut::new();
    for r in packet::encode_packet(items, &EncodeOptions::plain(encoder)).unwrap() {
        r.write_to(&mut out);
    }
    out
}

fn caps(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn hello(extra: Vec<(&str, Value)>) -> Vec<Value> {
    let mut pairs = vec![
        ("version", Value::from("3.1.3")),
        ("username", Value::from("alice")),
        (
            "digest",
            Value::List(vec![Value::from("hmac+sha256"), Value::from("xor")]),
        ),
        ("salt-digest", Value::List(vec![Value::from("hmac+sha256")])),
        ("aliases", caps(vec![("draw", Value::from(1))])),
    ];
    pairs.extend(extra);
    vec![Value::from("hello"), caps(pairs)]
}

/// A peer's view of what the core sent it.
#[derive(Default)]
struct Inbox {
    dec: Option<FrameDecoder>,
    asm: Assembler,
    packets: VecDeque<Packet>,
}

impl Inbox {
    fn feed(&mut self, b: &[u8]) {
        let dec = self
            .dec
            .get_or_insert_with(|| FrameDecoder::new(Rules::Any, Limits::default()));
        dec.feed(b);
        while let Some(r) = dec.next_record().unwrap() {
            if let Some(p) = self.asm.push(&r, &Limits::default()).unwrap() {
                self.packets.push_back(p);
            }
        }
    }

    fn next(&mut self) -> Packet {
        self.packets.pop_front().expect("a packet")
    }
}

/// How the simulated world answers the core's jobs.
struct World {
    plan: Result<Plan, ConnError>,
    connect: Result<(), String>,
    /// What an `info` request lists.
    listed: Result<Vec<Reachable>, ConnError>,
    /// What a session start brings.
    started: Result<Box<(Started, Plan)>, ConnError>,
    /// The starts asked for.
    starts: Vec<StartRequest>,
    /// Jobs run, by kind.
    ran: Vec<&'static str>,
}

struct Harness {
    core: Connection,
    now: Instant,
    world: World,
    client: Inbox,
    session: Inbox,
    relay: Option<RelayStart>,
    closed: bool,
    /// Jobs asked for, run only when `run_jobs` says so.
    jobs: VecDeque<Action>,
    hold_jobs: bool,
}

fn local_plan(password: Option<&str>) -> Plan {
    Plan {
        destination: Destination::Local(LocalSession {
            display: "100".into(),
            sockets: vec![PathBuf::from("/nowhere/host-100")],
        }),
        username: None,
        password: password.map(Secret::from),
        caps: vec![],
    }
}

impl Harness {
    fn new(auth: &[&str]) -> Harness {
        Harness::with(auth, ThrottleConfig::default())
    }

    fn with(auth: &[&str], throttle: ThrottleConfig) -> Harness {
        Harness::read_ahead(auth, throttle, BytesMut::new())
    }

    /// A connection whose front door already read `already` (TLS,
    /// WebSocket).
    fn read_ahead(auth: &[&str], throttle: ThrottleConfig, already: BytesMut) -> Harness {
        let peer = PeerInfo::tcp("192.0.2.9:40000".parse().unwrap(), None);
        Harness::full(auth, throttle, already, peer)
    }

    fn full(auth: &[&str], throttle: ThrottleConfig, already: BytesMut, peer: PeerInfo) -> Harness {
        Harness::full_with(auth, throttle, already, peer, false)
    }

    /// A connection of a proxy that starts sessions on demand.
    fn starting(auth: &[&str]) -> Harness {
        let peer = PeerInfo::tcp("192.0.2.9:40000".parse().unwrap(), None);
        Harness::full_with(auth, ThrottleConfig::default(), BytesMut::new(), peer, true)
    }

    fn full_with(
        auth: &[&str],
        throttle: ThrottleConfig,
        already: BytesMut,
        peer: PeerInfo,
        start_sessions: bool,
    ) -> Harness {
        let specs = AuthSpec::parse_chain(auth).unwrap();
        let inline = auth
            .iter()
            .all(|a| ["allow", "none", "reject", "fail"].contains(a));
        let now = Instant::now();
        let cfg = ConnConfig {
            chain: Arc::new(AuthChain::new(&specs, AuthPolicy::default()).unwrap()),
            inline_auth: inline,
            throttle: SharedThrottle::new(throttle),
            handshake_timeout: TIMEOUT,
            identity: Arc::new(Identity {
                hostname: "proxyhost".into(),
                uuid: "0123".into(),
                start_time: UNIX_EPOCH + Duration::from_secs(START_SECS),
                started: now,
                shards: 3,
            }),
            ping: PingConfig::default(),
            id: LinkId { conn: 42, shard: 0 },
            start_sessions,
            start_timeout: START_TIMEOUT,
            video: None,
        };
        let mut h = Harness {
            core: Connection::new(cfg, peer, already, now),
            now,
            world: World {
                plan: Ok(local_plan(None)),
                connect: Ok(()),
                listed: Ok(vec![Reachable::local("100")]),
                started: Ok(Box::new((
                    Started {
                        display: "7".into(),
                        socket: PathBuf::from("/nowhere/host-7"),
                        new: true,
                    },
                    local_plan(None),
                ))),
                starts: Vec::new(),
                ran: Vec::new(),
            },
            client: Inbox::default(),
            session: Inbox::default(),
            relay: None,
            closed: false,
            jobs: VecDeque::new(),
            hold_jobs: false,
        };
        h.drain();
        h
    }

    fn event(&mut self, e: Event) {
        self.core.handle(e, self.now);
        self.drain();
    }

    /// Carries out every action, as a driver would, at once.
    fn drain(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::SendClient(b) => self.client.feed(&b),
                Action::SendSession(b) => self.session.feed(&b),
                Action::Relay(start) => self.relay = Some(*start),
                Action::Close => self.closed = true,
                job if self.hold_jobs => self.jobs.push_back(job),
                job => self.run_job(job),
            }
        }
    }

    fn run_job(&mut self, job: Action) {
        let ev = match job {
            Action::RunAuth(mut flow, answer) => {
                self.world.ran.push("auth");
                let step = flow.advance(answer);
                Event::AuthDone(flow, step)
            }
            Action::Route { .. } => {
                self.world.ran.push("route");
                Event::Routed(self.world.plan.clone())
            }
            Action::StartSession { request, .. } => {
                self.world.ran.push("start");
                self.world.starts.push(request);
                Event::Started(self.world.started.clone())
            }
            Action::ListSessions { .. } => {
                self.world.ran.push("list");
                Event::SessionsListed(self.world.listed.clone())
            }
            Action::Connect(_) => {
                self.world.ran.push("connect");
                match &self.world.connect {
                    Ok(()) => Event::Connected,
                    Err(e) => Event::ConnectFailed(e.clone()),
                }
            }
            other => panic!("not a job: {other:?}"),
        };
        self.core.handle(ev, self.now);
        self.drain();
    }

    fn run_jobs(&mut self) {
        while let Some(j) = self.jobs.pop_front() {
            self.run_job(j);
        }
    }

    fn client_sends(&mut self, items: &[Value]) {
        let b = encode(items, Encoder::Rencode);
        self.event(Event::ClientData(b));
    }

    fn session_sends(&mut self, items: &[Value]) {
        let b = encode(items, Encoder::Rencode);
        self.event(Event::SessionData(b));
    }

    /// Moves the clock on, firing the core's timer when it is due.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        while let Some(t) = self.core.poll_timeout() {
            if t > self.now {
                break;
            }
            self.event(Event::Timeout);
        }
    }

    fn client_close_reason(&mut self) -> String {
        let p = self.client.next();
        Close::parse(&p.items).unwrap().reason().to_owned()
    }
}

/// The hello capabilities that answer `challenge` with `password`.
fn answer_caps(challenge: &Challenge, password: &[u8]) -> Vec<(&'static str, Value)> {
    let answer = client_answer(challenge, password).unwrap();
    let mut extra = vec![(
        "challenge_response",
        Value::from(std::str::from_utf8(answer.response.as_bytes()).unwrap()),
    )];
    if let Some(s) = &answer.client_salt {
        extra.push((
            "challenge_client_salt",
            Value::Bytes(bytes::Bytes::copy_from_slice(s)),
        ));
    }
    extra
}

/// A `file` auth module whose password is `sesame`: its dir and spec.
fn password_file(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("xfwd-core-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "sesame").unwrap();
    let spec = format!("file,filename={}", pw.display());
    (dir, spec)
}

fn dict_keys(p: &Packet) -> Vec<String> {
    match &p.items[1] {
        Value::Dict(d) => d
            .iter()
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

#[test]
fn allowed_client_is_routed_connected_and_relayed() {
    let mut h = Harness::new(&["none"]);
    // The hello arrives in two pieces.
    let bytes = encode(&hello(vec![]), Encoder::Rencode);
    h.event(Event::ClientData(BytesMut::from(&bytes[..5])));
    assert_eq!(h.core.phase(), Phase::Hello);
    h.event(Event::ClientData(BytesMut::from(&bytes[5..])));
    assert_eq!(h.core.phase(), Phase::Relaying);
    assert_eq!(h.core.user(), Some("alice"));
    // The session got the client's hello, minus what the proxy owns, plus
    // the proxy section.
    let up = h.session.next();
    assert_eq!(up.packet_type(), Some("hello"));
    let keys = dict_keys(&up);
    assert!(keys.contains(&"proxy".to_owned()));
    assert!(keys.contains(&"proxy.hostname".to_owned()));
    assert!(!keys.contains(&"aliases".to_owned()));
    assert!(h.relay.is_some());
    assert!(
        h.core.poll_timeout().is_none(),
        "no deadline while relaying"
    );
}

#[test]
fn nothing_within_the_deadline_is_a_timeout() {
    let mut h = Harness::new(&["none"]);
    // Half a header, then silence.
    h.event(Event::ClientData(BytesMut::from(&b"P\x01"[..])));
    h.advance(TIMEOUT - Duration::from_millis(1));
    assert!(!h.closed);
    h.advance(Duration::from_millis(1));
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "handshake timeout");
    assert_eq!(h.core.error(), Some(&ConnError::Timeout));
}

#[test]
fn the_deadline_covers_auth_routing_and_connecting() {
    let mut h = Harness::new(&["none"]);
    h.hold_jobs = true;
    h.client_sends(&hello(vec![]));
    assert_eq!(h.core.phase(), Phase::Routing);
    // Routing never answers: one deadline for the whole handshake.
    h.advance(TIMEOUT);
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "handshake timeout");
    // A late answer changes nothing.
    h.run_jobs();
    assert!(h.relay.is_none());
}

#[test]
fn garbage_is_a_protocol_error_with_a_reason() {
    let mut h = Harness::new(&["none"]);
    h.event(Event::ClientData(BytesMut::from(&b"GARBAGE!"[..])));
    assert!(h.closed);
    assert!(h.client_close_reason().starts_with("invalid packet header"));
    assert_eq!(h.core.error().unwrap().side(), Side::Client);
}

#[test]
fn raw_data_before_hello_is_refused() {
    let mut h = Harness::new(&["none"]);
    let chunk = xfwd::wire::frame::Record::new(0, 0, 3, bytes::Bytes::from_static(b"xyz"));
    h.event(Event::ClientData(BytesMut::from(&chunk.to_bytes()[..])));
    assert!(h.closed);
    assert_eq!(
        h.client_close_reason(),
        "invalid packet: raw data before hello"
    );
}

#[test]
fn client_leaving_mid_record_is_gone_without_a_reason() {
    let mut h = Harness::new(&["none"]);
    let bytes = encode(&hello(vec![]), Encoder::Rencode);
    h.event(Event::ClientData(BytesMut::from(&bytes[..20])));
    h.event(Event::ClientEof);
    assert!(h.closed);
    assert!(h.client.packets.is_empty(), "nobody to tell");
    assert_eq!(h.core.error(), Some(&ConnError::Gone));
}

#[test]
fn reject_refuses_and_repeat_failures_are_delayed() {
    let throttle = ThrottleConfig::default();
    let mut h = Harness::with(&["reject"], throttle);
    h.client_sends(&hello(vec![]));
    // reject sends a challenge (as xpra's module does), then fails any
    // answer.
    assert_eq!(h.client.next().packet_type(), Some("challenge"));
    h.client_sends(&hello(vec![("challenge_response", Value::from("x"))]));
    if h.core.phase() == Phase::Refusing {
        let at = h.core.poll_timeout().unwrap();
        h.advance(at - h.now);
    }
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "authentication failed");
}

#[test]
fn a_wrong_password_waits_its_delay_then_is_refused() {
    let (dir, spec) = password_file("wrong");
    let mut h = Harness::new(&[&spec]);
    h.client_sends(&hello(vec![]));
    assert_eq!(h.core.phase(), Phase::Challenged);
    let c = h.client.next();
    assert_eq!(c.packet_type(), Some("challenge"));
    let challenge = Challenge::parse(&c.items).unwrap();
    // A wrong answer.
    h.client_sends(&hello(answer_caps(&challenge, b"wrong")));
    // Refused after the failed-attempt delay (the first failure may have
    // none; either way the same answer comes, at the delay).
    if h.core.phase() == Phase::Refusing {
        assert!(!h.closed);
        let at = h.core.poll_timeout().unwrap();
        h.advance(at - h.now);
    }
    assert_eq!(h.core.phase(), Phase::Closed);
    assert_eq!(h.client_close_reason(), "authentication failed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_right_password_passes_the_proxys_own_challenge() {
    let (dir, spec) = password_file("ok");
    let mut h = Harness::new(&[&spec]);
    h.client_sends(&hello(vec![]));
    let challenge = Challenge::parse(&h.client.next().items).unwrap();
    h.client_sends(&hello(answer_caps(&challenge, b"sesame")));
    assert_eq!(h.core.phase(), Phase::Relaying);
    // The proxy's challenge answer is not passed on.
    let up = h.session.next();
    assert!(!dict_keys(&up).contains(&"challenge_response".to_owned()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sessions_challenge_is_answered_with_the_targets_password() {
    let mut h = Harness::new(&["none"]);
    h.world.plan = Ok(local_plan(Some("targetpw")));
    h.client_sends(&hello(vec![]));
    assert_eq!(h.core.phase(), Phase::UpstreamHello);
    assert!(h.core.wants_session_data());
    let first = h.session.next();
    assert!(!dict_keys(&first).contains(&"challenge_response".to_owned()));
    let salt = vec![7u8; 64];
    h.session_sends(&[
        Value::from("challenge"),
        Value::Bytes(bytes::Bytes::from(salt)),
        Value::from(""),
        Value::from("hmac+sha256"),
        Value::from("hmac+sha256"),
        Value::from("password"),
    ]);
    assert_eq!(h.core.phase(), Phase::Relaying);
    let again = h.session.next();
    assert!(dict_keys(&again).contains(&"challenge_response".to_owned()));
    assert!(h.client.packets.is_empty(), "the client never sees it");
}

#[test]
fn without_a_target_password_the_sessions_challenge_passes_through() {
    // No password in the plan: relaying starts at once, and whatever the
    // session sends (its challenge included) is the relay's.
    let mut h = Harness::new(&["none"]);
    h.client_sends(&hello(vec![]));
    assert_eq!(h.core.phase(), Phase::Relaying);
    assert!(!h.core.wants_session_data());
}

#[test]
fn a_session_that_does_not_answer_with_a_packet_is_upstream_failure() {
    let mut h = Harness::new(&["none"]);
    h.world.plan = Ok(local_plan(Some("pw")));
    h.client_sends(&hello(vec![]));
    h.event(Event::SessionData(BytesMut::from(
        &b"HTTP/1.1 400 Bad\r\n\r\n"[..],
    )));
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "the session cannot be reached");
    assert_eq!(h.core.error().unwrap().side(), Side::Session);
}

#[test]
fn connect_failures_never_show_the_target_address() {
    let mut h = Harness::new(&["none"]);
    let t = Target::parse("tcp://10.1.2.3:14500/").unwrap();
    h.world.plan = Ok(Plan {
        destination: Destination::Target(t),
        username: None,
        password: None,
        caps: vec![],
    });
    h.world.connect = Err("connection refused".into());
    h.client_sends(&hello(vec![]));
    assert!(h.closed);
    let reason = h.client_close_reason();
    assert_eq!(reason, "the session cannot be reached");
    assert!(!reason.contains("10.1.2.3"));
    // The log keeps the detail.
    assert!(h.core.error().unwrap().to_string().contains("10.1.2.3"));
}

#[test]
fn routing_errors_reach_the_client() {
    let mut h = Harness::new(&["none"]);
    h.world.plan = Err(ConnError::Route("no xpra sessions found".into()));
    h.client_sends(&hello(vec![]));
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "no xpra sessions found");
}

#[test]
fn stop_during_the_handshake_tells_the_client() {
    let mut h = Harness::new(&["none"]);
    h.hold_jobs = true;
    h.client_sends(&hello(vec![]));
    h.event(Event::Stop);
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "server shutdown");
}

#[test]
fn a_full_blocking_pool_is_a_clear_refusal() {
    let mut h = Harness::new(&["none"]);
    h.hold_jobs = true;
    h.client_sends(&hello(vec![]));
    h.event(Event::JobFailed(ConnError::Busy(
        "the server is busy (too many pending blocking jobs); try again".into(),
    )));
    assert!(h.closed);
    assert!(h.client_close_reason().starts_with("the server is busy"));
    assert_eq!(h.core.error().unwrap().side(), Side::Proxy);
}

fn relaying() -> Harness {
    let mut h = Harness::new(&["none"]);
    h.client_sends(&hello(vec![]));
    let _ = h.session.next();
    assert_eq!(h.core.phase(), Phase::Relaying);
    h
}

fn ended(side: Option<Side>, end: PumpEnd, client_ok: bool, session_ok: bool) -> Event {
    Event::RelayEnded(RelayEnd {
        side,
        end,
        client_at_boundary: client_ok,
        session_at_boundary: session_ok,
    })
}

#[test]
fn relay_end_table() {
    // (who ended, how) -> (client told, session told)
    type Case = (
        Option<Side>,
        PumpEnd,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            Some(Side::Session),
            PumpEnd::Eof,
            Some("session closed the connection"),
            None,
        ),
        (
            Some(Side::Session),
            PumpEnd::Protocol("x".into()),
            Some("session closed the connection"),
            None,
        ),
        (
            Some(Side::Client),
            PumpEnd::Eof,
            None,
            Some("client connection lost"),
        ),
        (
            Some(Side::Client),
            PumpEnd::WriteError("broken pipe".into()),
            Some("session connection lost"),
            None,
        ),
        (
            Some(Side::Session),
            PumpEnd::WriteError("broken pipe".into()),
            None,
            Some("client connection lost"),
        ),
        (
            Some(Side::Session),
            PumpEnd::Closed(Close::new(["bye"])),
            None,
            None,
        ),
        (
            None,
            PumpEnd::Eof,
            Some("server shutdown"),
            Some("server shutdown"),
        ),
        (
            None,
            PumpEnd::Shutdown,
            Some("server shutdown"),
            Some("server shutdown"),
        ),
        (
            None,
            PumpEnd::AdminStop,
            Some("stopped by administrator"),
            Some("stopped by administrator"),
        ),
        (
            Some(Side::Session),
            PumpEnd::PingTimeout,
            Some("session not responding"),
            Some("ping timeout"),
        ),
        (
            Some(Side::Client),
            PumpEnd::PingTimeout,
            Some("ping timeout"),
            Some("client connection lost"),
        ),
    ];
    for (side, end, to_client, to_session) in cases {
        let mut h = relaying();
        h.event(ended(side, end.clone(), true, true));
        assert!(h.closed, "{side:?} {end:?}");
        let got_client = h
            .client
            .packets
            .pop_front()
            .map(|p| Close::parse(&p.items).unwrap().reason().to_owned());
        let got_session = h
            .session
            .packets
            .pop_front()
            .map(|p| Close::parse(&p.items).unwrap().reason().to_owned());
        assert_eq!(got_client.as_deref(), to_client, "{side:?} {end:?}");
        assert_eq!(got_session.as_deref(), to_session, "{side:?} {end:?}");
    }
}

#[test]
fn nothing_is_injected_into_the_middle_of_a_record() {
    let mut h = relaying();
    h.event(ended(None, PumpEnd::Eof, false, false));
    assert!(h.closed);
    assert!(h.client.packets.is_empty());
    assert!(h.session.packets.is_empty());
}

#[test]
fn the_relay_starts_with_what_was_read_past_the_hello() {
    let mut h = Harness::new(&["none"]);
    let mut bytes = encode(&hello(vec![]), Encoder::Rencode);
    let ping = encode(&[Value::from("ping"), Value::from(1)], Encoder::Rencode);
    bytes.extend_from_slice(&ping);
    h.event(Event::ClientData(bytes));
    let start = h.relay.take().unwrap();
    assert_eq!(&start.client_buf[..], &ping[..]);
}

#[test]
fn a_hello_read_by_the_front_door_is_handled_at_once() {
    // Inside TLS the front door reads (it cannot peek): the hello may be
    // all there before the core exists, and no more bytes will come.
    let already = encode(&hello(vec![]), Encoder::Rencode);
    let h = Harness::read_ahead(&["none"], ThrottleConfig::default(), already);
    assert_eq!(h.core.phase(), Phase::Relaying);
}

/// Runs `bytes` through a relay direction as a pump would, at `now`;
/// returns the packets written to the other side.
fn through(dir: &mut xfwd::proxy::Direction, bytes: &[u8], now: Instant) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = xfwd::proxy::Batch::default();
    assert!(dir
        .cut(&mut buf, &mut VecDeque::new(), &mut out, now)
        .is_none());
    let mut inbox = Inbox::default();
    for p in out.into_parts() {
        inbox.feed(&p);
    }
    inbox.packets.into_iter().collect()
}

fn ping_echo(ping: &Packet) -> Vec<Value> {
    common::xpra::ping_echo(&ping.items)
}

fn decode_one(b: &[u8]) -> Packet {
    let mut inbox = Inbox::default();
    inbox.feed(b);
    inbox.next()
}

/// A relayed connection whose client and session both echo the proxy's
/// pings (`ping-echo-sourceid`), as xpra 3.1.3's do.
fn relaying_with_pings() -> (Harness, RelayStart) {
    let mut h = Harness::new(&["none"]);
    h.client_sends(&hello(vec![("ping-echo-sourceid", Value::Bool(true))]));
    let _ = h.session.next();
    let mut start = h.relay.take().unwrap();
    let server_hello = encode(
        &[
            Value::from("hello"),
            caps(vec![
                ("version", Value::from("3.1.3")),
                ("ping-echo-sourceid", Value::Bool(true)),
            ]),
        ],
        Encoder::Rencode,
    );
    let out = through(&mut start.s2c, &server_hello, h.now);
    assert_eq!(out.len(), 1);
    (h, start)
}

#[test]
fn the_proxy_pings_both_sides_and_swallows_only_its_own_echoes() {
    let (h, mut start) = relaying_with_pings();
    let link = start.link.clone();
    let cfg = PingConfig::default();
    let t1 = h.now + cfg.interval;
    assert_eq!(link.borrow().poll_timeout(), Some(t1));
    link.borrow_mut().on_timeout(t1, Stalls::default());
    let to_session = decode_one(&link.borrow_mut().pop_packet(Side::Session).unwrap());
    let to_client = decode_one(&link.borrow_mut().pop_packet(Side::Client).unwrap());
    for p in [&to_session, &to_client] {
        assert_eq!(p.items[0].as_str(), Some("ping"));
        assert_eq!(p.items[3].as_str(), Some("0123"), "the proxy's uuid");
    }
    // Echoes of the proxy's pings stop here; the session's own ping and
    // the client's echo of it pass.
    let t2 = t1 + Duration::from_millis(40);
    let echo = encode(&ping_echo(&to_session), Encoder::Rencode);
    let theirs = encode(
        &[
            Value::from("ping"),
            Value::Int(5),
            Value::Int(6),
            Value::from("srv"),
        ],
        Encoder::Rencode,
    );
    let mut both = echo.clone();
    both.extend_from_slice(&theirs);
    let out = through(&mut start.s2c, &both, t2);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items[3].as_str(), Some("srv"));
    let their_echo = encode(
        &common::xpra::ping_echo(&[
            Value::from("ping"),
            Value::Int(5),
            Value::Int(6),
            Value::from("srv"),
        ]),
        Encoder::Rencode,
    );
    let mut both = encode(&ping_echo(&to_client), Encoder::Rencode);
    both.extend_from_slice(&their_echo);
    let out = through(&mut start.c2s, &both, t2 + Duration::from_millis(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items[6].as_str(), Some("srv"));
    let l = link.borrow();
    assert_eq!(l.latency(Side::Session), Some(Duration::from_millis(40)));
    assert_eq!(l.latency(Side::Client), Some(Duration::from_millis(50)));
}

#[test]
fn a_session_that_stops_answering_is_dropped_and_the_client_told() {
    let (mut h, start) = relaying_with_pings();
    let link = start.link.clone();
    let cfg = PingConfig::default();
    // The client answers; the session (frozen) never does.
    let mut now = h.now;
    while link.borrow().end().is_none() {
        now = link.borrow().poll_timeout().unwrap();
        link.borrow_mut().on_timeout(now, Stalls::default());
        let ping = link.borrow_mut().pop_packet(Side::Client);
        if let Some(p) = ping {
            let echo = ping_echo(&decode_one(&p));
            assert!(link.borrow_mut().on_echo(Side::Client, &echo, now));
        }
    }
    assert_eq!(now, h.now + cfg.timeout);
    assert_eq!(
        link.borrow().end(),
        Some(xfwd::proxy::link::LinkEnd::PingTimeout(Side::Session))
    );
    h.now = now;
    h.event(ended(Some(Side::Session), PumpEnd::PingTimeout, true, true));
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "session not responding");
    assert_eq!(h.core.end_reason(), Some("session: ping timeout"));
}

#[test]
fn info_responses_gain_the_proxys_section() {
    let (h, mut start) = relaying_with_pings();
    let info = encode(
        &[
            Value::from("info-response"),
            caps(vec![
                ("server", caps(vec![("type", Value::from("Python/GTK"))])),
                ("version", Value::from("3.1.3")),
            ]),
        ],
        Encoder::Rencode,
    );
    let out = through(&mut start.s2c, &info, h.now);
    assert_eq!(out.len(), 1);
    let dict = &out[0].items[1];
    assert_eq!(dict.get("version").and_then(Value::as_str), Some("3.1.3"));
    assert_eq!(
        dict.get_path("server.type").and_then(Value::as_str),
        Some("Python/GTK")
    );
    assert_eq!(
        dict.get_path("proxy.connection").and_then(Value::as_int),
        Some(42)
    );
    assert!(dict.get_path("proxy.server-to-client.bytes").is_some());
    assert_eq!(
        dict.get_path("proxy.version").and_then(Value::as_str),
        Some(xfwd::proxy::link::VERSION)
    );
}

#[test]
fn an_administrator_stops_a_handshake_with_a_reason() {
    let mut h = Harness::new(&["none"]);
    h.event(Event::AdminStop);
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "stopped by administrator");
}

// One-shot requests: answered by the proxy itself, never routed.

fn request(mode: &str) -> Vec<(&'static str, Value)> {
    // What 3.1.3's clients send (`request` plus the legacy flag).
    let flag: &'static str = match mode {
        "version" => "version_request",
        "info" => "info_request",
        "id" => "info_request",
        _ => "x_request",
    };
    let mut caps = vec![("request", Value::from(mode)), (flag, Value::Bool(true))];
    match mode {
        "version" => caps.push(("full-version-request", Value::Bool(true))),
        "info" | "id" => caps.push(("info-namespace", Value::Bool(true))),
        _ => {}
    }
    caps
}

/// The reply the client got: its caps.
fn reply(h: &mut Harness) -> Value {
    let p = h.client.next();
    assert_eq!(p.packet_type(), Some("hello"), "{:?}", p.items);
    p.items[1].clone()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {key} in {v:?}"))
        .to_owned()
}

/// The next packet is a challenge; the hello that answers it.
fn answer_next_challenge(h: &mut Harness, password: &[u8], extra: Vec<(&'static str, Value)>) {
    let c = h.client.next();
    assert_eq!(c.packet_type(), Some("challenge"), "{:?}", c.items);
    let challenge = Challenge::parse(&c.items).unwrap();
    let mut caps = answer_caps(&challenge, password);
    caps.extend(extra);
    h.client_sends(&hello(caps));
}

#[test]
fn version_is_answered_before_any_auth() {
    let (dir, spec) = password_file("version");
    let mut h = Harness::new(&[&spec]);
    h.hold_jobs = true;
    h.client_sends(&hello(request("version")));
    assert!(h.closed, "answered, then closed");
    let caps = reply(&mut h);
    let v = text(&caps, "version");
    assert!(v.starts_with("3.1-xfwd-"), "{v}");
    assert!(h.client.packets.is_empty(), "nothing after the hello");
    assert!(h.jobs.is_empty(), "no auth, no routing: {:?}", h.jobs);
    assert_eq!(h.core.user(), None);
    assert!(h.session.packets.is_empty());
    assert_eq!(h.core.error(), None);
    // Without full-version-request: the bare number.
    let mut h = Harness::new(&[&spec]);
    h.client_sends(&hello(vec![("version_request", Value::Bool(true))]));
    assert_eq!(text(&reply(&mut h), "version"), "3.1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_for_a_client_with_a_password_challenges_for_nothing() {
    // A 3.1 client with a password says `challenge` and leaves if the
    // answer comes unasked; the challenge checks nothing.
    let (dir, spec) = password_file("version-pw");
    let mut h = Harness::new(&[&spec]);
    h.hold_jobs = true;
    let mut caps = request("version");
    caps.push(("challenge", Value::Bool(true)));
    h.client_sends(&hello(caps));
    assert_eq!(h.core.phase(), Phase::Challenged);
    answer_next_challenge(&mut h, b"any password at all", vec![]);
    assert!(h.closed);
    assert!(text(&reply(&mut h), "version").starts_with("3.1"));
    assert!(h.jobs.is_empty(), "no auth ran: {:?}", h.jobs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn id_is_answered_after_the_challenge_and_never_routed() {
    let (dir, spec) = password_file("id");
    let mut h = Harness::new(&[&spec]);
    let mut caps = request("id");
    caps.push(("challenge", Value::Bool(true)));
    h.client_sends(&hello(caps));
    assert_eq!(h.core.phase(), Phase::Challenged);
    answer_next_challenge(&mut h, b"sesame", request("id"));
    assert!(h.closed);
    let caps = reply(&mut h);
    assert_eq!(text(&caps, "session-type"), "proxy");
    assert_eq!(text(&caps, "uuid"), "0123");
    assert_eq!(text(&caps, "platform"), std::env::consts::OS);
    assert!(h.client.packets.is_empty(), "no second challenge, no close");
    assert_eq!(h.world.ran, vec!["auth", "auth"]);
    assert!(h.session.packets.is_empty() && h.relay.is_none());
    assert_eq!(h.core.user(), Some("alice"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_password_gets_the_normal_refusal() {
    let (dir, spec) = password_file("info-wrong");
    let mut h = Harness::new(&[&spec]);
    let mut caps = request("info");
    caps.push(("challenge", Value::Bool(true)));
    h.client_sends(&hello(caps));
    answer_next_challenge(&mut h, b"wrong", request("info"));
    if h.core.phase() == Phase::Refusing {
        let at = h.core.poll_timeout().unwrap();
        h.advance(at - h.now);
    }
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "authentication failed");
    assert!(!h.world.ran.contains(&"list"), "{:?}", h.world.ran);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn info_lists_what_the_user_may_reach_as_a_job() {
    let (dir, spec) = password_file("info");
    let mut h = Harness::new(&[&spec]);
    let t = Target::parse("tcp://bob:secret@10.0.0.1:14501/7").unwrap();
    h.world.listed = Ok(vec![Reachable::local("100"), Reachable::target(&t)]);
    // info-namespace: nested
    h.client_sends(&hello(request("info")));
    h.hold_jobs = true;
    answer_next_challenge(&mut h, b"sesame", request("info"));
    let auth = h.jobs.pop_front().unwrap();
    assert!(matches!(auth, Action::RunAuth(..)));
    h.run_job(auth);
    assert_eq!(h.core.phase(), Phase::Answering);
    assert!(!h.core.wants_client_data());
    assert!(matches!(
        h.jobs.front(),
        Some(Action::ListSessions { accepted }) if accepted.username == "alice"
    ));
    // The listing takes a while: the clock moves on.
    h.now += Duration::from_secs(5);
    h.run_jobs();
    assert!(h.closed);
    let caps = reply(&mut h);
    assert_eq!(text(&caps, "mode"), "proxy");
    assert_eq!(text(&caps, "session-type"), "proxy");
    assert_eq!(text(&caps, "uuid"), "0123");
    assert_eq!(text(&caps, "hostname"), "proxyhost");
    assert_eq!(text(&caps, "user"), "alice");
    assert_eq!(caps.get("shards"), Some(&Value::from(3)));
    assert_eq!(
        caps.get("start_time"),
        Some(&Value::from(START_SECS as i64))
    );
    assert_eq!(caps.get("elapsed_time"), Some(&Value::from(5)));
    assert_eq!(
        caps.get("current_time"),
        Some(&Value::from(START_SECS as i64 + 5))
    );
    let sessions = caps.get("sessions").unwrap();
    assert_eq!(sessions.get(""), Some(&Value::from(2)));
    assert_eq!(text(sessions.get("0").unwrap(), "display"), ":100");
    assert_eq!(
        text(sessions.get("1").unwrap(), "uri"),
        "tcp://10.0.0.1:14501/7"
    );
    assert!(!format!("{caps:?}").contains("secret"));
    assert!(!h.world.ran.contains(&"route"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn info_is_flat_without_info_namespace() {
    let mut h = Harness::new(&["allow"]);
    h.client_sends(&hello(vec![("request", Value::from("info"))]));
    answer_next_challenge(&mut h, b"x", vec![]);
    let caps = reply(&mut h);
    assert_eq!(text(&caps, "xfwd.version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(caps.get("sessions"), Some(&Value::from(1)));
    assert_eq!(text(&caps, "sessions.0.display"), ":100");
    assert_eq!(text(&caps, "sessions.0.type"), "local");
}

#[test]
fn none_with_a_password_offered_gets_a_challenge_for_nothing() {
    let mut h = Harness::new(&["none"]);
    let mut caps = request("info");
    caps.push(("challenge", Value::Bool(true)));
    h.client_sends(&hello(caps));
    assert_eq!(h.core.phase(), Phase::Challenged);
    assert_eq!(h.core.user(), Some("alice"));
    answer_next_challenge(&mut h, b"whatever", request("info"));
    assert!(h.closed);
    assert_eq!(text(&reply(&mut h), "mode"), "proxy");
    // Without a password: answered at once.
    let mut h = Harness::new(&["none"]);
    h.client_sends(&hello(request("id")));
    assert_eq!(text(&reply(&mut h), "session-type"), "proxy");
}

#[test]
fn the_reply_uses_the_clients_encoder() {
    for encoder in [Encoder::Bencode, Encoder::Rencode, Encoder::Rencodeplus] {
        let mut h = Harness::new(&["none"]);
        h.event(Event::ClientData(encode(&hello(request("id")), encoder)));
        let p = h.client.next();
        assert_eq!(p.encoder, encoder);
        assert_eq!(text(&p.items[1], "session-type"), "proxy");
    }
}

#[test]
fn connect_test_is_echoed() {
    let mut h = Harness::new(&["none"]);
    h.client_sends(&hello(vec![
        ("request", Value::from("connect_test")),
        ("connect_test_request", Value::from("c0ffee")),
        ("connect", Value::Bool(false)),
        ("info_request", Value::Bool(true)),
    ]));
    assert!(h.closed);
    assert_eq!(text(&reply(&mut h), "connect_test_response"), "c0ffee");
    assert!(h.world.ran.is_empty());
}

#[test]
fn stop_and_other_requests_are_refused_with_a_reason() {
    let cases = [
        ("stop", "cannot stop proxy server from a 'tcp' connection"),
        ("screenshot", "invalid request"),
        ("exit", "invalid request"),
        ("detach", "invalid request"),
        ("no-such-mode", "invalid request"),
    ];
    for (mode, reason) in cases {
        let mut h = Harness::new(&["none"]);
        h.client_sends(&hello(vec![("request", Value::from(mode))]));
        assert!(h.closed, "{mode}");
        assert_eq!(h.client_close_reason(), reason, "{mode}");
        assert!(h.world.ran.is_empty(), "{mode}: {:?}", h.world.ran);
        assert!(h.session.packets.is_empty());
    }
    // Refused after auth, as xpra's proxy does: unauthenticated clients
    // learn nothing.
    let mut h = Harness::new(&["reject"]);
    h.client_sends(&hello(vec![("request", Value::from("stop"))]));
    answer_next_challenge(&mut h, b"x", vec![]);
    if h.core.phase() == Phase::Refusing {
        let at = h.core.poll_timeout().unwrap();
        h.advance(at - h.now);
    }
    assert_eq!(h.client_close_reason(), "authentication failed");
    // From a Unix socket too: xfwd stops on a signal.
    let peer = PeerInfo {
        transport: xfwd::auth::Transport::Unix,
        ..PeerInfo::default()
    };
    let mut h = Harness::full(&["none"], ThrottleConfig::default(), BytesMut::new(), peer);
    h.client_sends(&hello(vec![("request", Value::from("stop"))]));
    assert!(h.client_close_reason().contains("SIGTERM"));
}

#[test]
fn a_listing_that_never_ends_is_a_timeout_and_stop_is_heard() {
    let mut h = Harness::new(&["none"]);
    h.hold_jobs = true;
    h.client_sends(&hello(request("info")));
    assert_eq!(h.core.phase(), Phase::Answering);
    h.advance(TIMEOUT);
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), "handshake timeout");
    h.run_jobs();
    assert!(h.client.packets.is_empty(), "a late listing sends nothing");

    let mut h = Harness::new(&["none"]);
    h.hold_jobs = true;
    h.client_sends(&hello(request("info")));
    h.event(Event::Stop);
    assert_eq!(h.client_close_reason(), "server shutdown");
}

// --- Sessions started on demand --------------------------------------------

/// What `xpra start tcp://.../ --start=xterm` sends (and a few options xfwd
/// does not pass on).
fn start_hello(connect: bool) -> Vec<Value> {
    hello(vec![
        ("connect", Value::Bool(connect)),
        (
            "start-new-session",
            caps(vec![
                ("mode", Value::from("start")),
                ("display", Value::from("")),
                ("start", Value::List(vec![Value::from("xterm")])),
                ("bind-tcp", Value::List(vec![Value::from("0.0.0.0:1")])),
            ]),
        ),
    ])
}

fn start_command(cmd: &str) -> Vec<Value> {
    vec![
        Value::from("start-command"),
        Value::from(cmd),
        Value::from(cmd),
        Value::Bool(true),
        Value::Bool(true),
    ]
}

#[test]
fn a_start_request_is_refused_when_starting_is_off() {
    let mut h = Harness::new(&["none"]);
    h.client_sends(&start_hello(true));
    assert!(h.closed);
    assert_eq!(h.client_close_reason(), xfwd::proxy::START_DISABLED);
    assert_eq!(h.world.ran, Vec::<&str>::new(), "nothing started or routed");
}

#[test]
fn a_start_request_starts_connects_and_its_command_runs_once() {
    let mut h = Harness::starting(&["none"]);
    h.client_sends(&start_hello(true));
    assert_eq!(h.world.ran, vec!["start", "connect"]);
    assert_eq!(
        h.world.starts,
        vec![StartRequest {
            mode: StartMode::Start,
            display: None,
            start: vec!["xterm".into()],
            start_child: vec![],
            reason: StartReason::Requested,
        }]
    );
    assert_eq!(h.core.phase(), Phase::Relaying);
    // The session gets the client's hello.
    assert_eq!(h.session.next().packet_type(), Some("hello"));
    // The client asks its new session for xterm (already running) and
    // xclock: only xclock goes on, and a second xterm would too.
    let mut start = h.relay.take().unwrap();
    let mut bytes = encode(&start_command("xterm"), Encoder::Rencode);
    bytes.extend_from_slice(&encode(&start_command("xclock"), Encoder::Rencode));
    bytes.extend_from_slice(&encode(&start_command("xterm"), Encoder::Rencode));
    let passed = through(&mut start.c2s, &bytes, h.now);
    let commands: Vec<&str> = passed
        .iter()
        .map(|p| p.items[2].as_str().unwrap())
        .collect();
    assert_eq!(commands, vec!["xclock", "xterm"]);
}

#[test]
fn a_found_session_does_not_swallow_start_commands() {
    // The plain attach case: another start made the session (new=false).
    let mut h = Harness::starting(&["none"]);
    h.world.plan = Err(ConnError::NoSessions);
    if let Ok(b) = &mut h.world.started {
        b.0.new = false;
    }
    h.client_sends(&hello(vec![("display", Value::from(":9"))]));
    assert_eq!(h.world.ran, vec!["route", "start", "connect"]);
    assert_eq!(h.world.starts[0].reason, StartReason::NoSession);
    assert_eq!(h.world.starts[0].display.as_deref(), Some("9"));
    let mut start = h.relay.take().unwrap();
    let bytes = encode(&start_command("xterm"), Encoder::Rencode);
    assert_eq!(through(&mut start.c2s, &bytes, h.now).len(), 1);
}

#[test]
fn attach_no_is_answered_with_the_display_socket_and_mode() {
    let mut h = Harness::starting(&["none"]);
    h.client_sends(&start_hello(false));
    assert_eq!(h.world.ran, vec!["start"], "never connected");
    assert!(h.closed);
    let p = h.client.next();
    assert_eq!(p.packet_type(), Some("hello"));
    let caps = &p.items[1];
    assert_eq!(caps.get("display").and_then(Value::as_str), Some(":7"));
    assert_eq!(
        caps.get("socket-path").and_then(Value::as_str),
        Some("/nowhere/host-7")
    );
    assert_eq!(caps.get("mode").and_then(Value::as_str), Some("start"));
}

#[test]
fn no_session_is_the_reason_when_starting_is_off() {
    let mut h = Harness::new(&["none"]);
    h.world.plan = Err(ConnError::NoSessions);
    h.client_sends(&hello(vec![]));
    assert_eq!(h.world.ran, vec!["route"]);
    assert_eq!(h.client_close_reason(), "no xpra sessions found");
}

#[test]
fn a_failed_start_is_the_clients_reason() {
    let mut h = Harness::starting(&["none"]);
    h.world.started = Err(ConnError::Start(
        "cannot start a session: xpra not found".into(),
    ));
    h.client_sends(&start_hello(true));
    assert!(h.closed);
    assert_eq!(
        h.client_close_reason(),
        "cannot start a session: xpra not found"
    );
    // A bad request is refused before anything runs.
    let mut h = Harness::starting(&["none"]);
    h.client_sends(&hello(vec![(
        "start-new-session",
        caps(vec![("mode", Value::from("shadow"))]),
    )]));
    assert_eq!(h.world.ran, Vec::<&str>::new());
    assert_eq!(
        h.client_close_reason(),
        "cannot start a session of mode 'shadow' (only start and start-desktop)"
    );
}

#[test]
fn a_start_that_never_ends_times_out_with_a_reason() {
    let mut h = Harness::starting(&["none"]);
    h.hold_jobs = true;
    h.client_sends(&start_hello(true));
    assert_eq!(h.core.phase(), Phase::Starting);
    // The handshake timeout does not cut a start short.
    h.advance(TIMEOUT + Duration::from_secs(1));
    assert!(!h.closed);
    h.advance(START_TIMEOUT);
    assert!(h.closed);
    assert_eq!(
        h.client_close_reason(),
        "the new session did not start within 30 s"
    );
    // A late start changes nothing.
    h.run_jobs();
    assert!(h.relay.is_none());
}
