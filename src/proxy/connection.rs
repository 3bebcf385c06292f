//! The connection state machine (see the module docs of `proxy` and the
//! table in docs/engine.md).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::direction::{CutEnd, Direction, Intercepts, PacketHook, Verdict};
use super::error::{ConnError, Side};
use super::link::{
    self, Link, LinkHook, LinkId, PingConfig, Traffic, PING_TIMEOUT, SESSION_NOT_RESPONDING,
    STOPPED_BY_ADMIN,
};
use super::oneshot::{self, Reachable, Request};
use super::plan::{upstream_hello, Destination, Plan};
use crate::auth::flow::{Accepted, AuthFlow, ClientAuth, Step};
use crate::auth::throttle::{log_attempt, Attempt, AttemptResult};
use crate::auth::{client_answer, Answer, AuthChain, PeerInfo, SharedThrottle, Target, Targets};
use crate::sessions::launch::{StartReason, StartRequest, Started};
use crate::wire::frame::{Limits, Record};
use crate::wire::header::{Encoder, Header, Rules, HEADER_LEN};
use crate::wire::packet;
use crate::wire::relay::{Event as RelayEvent, Relay, RelayLimits};
use crate::wire::views::{Challenge, Close, Hello};
use crate::wire::Value;

/// xpra's reason for a session that went away.
pub const SESSION_CLOSED: &str = "session closed the connection";
/// Sent to the client when writing to the session failed.
pub const SESSION_LOST: &str = "session connection lost";
/// Sent to the session when the client goes away.
pub const CLIENT_GONE: &str = "client connection lost";
/// Sent to both when the proxy stops.
pub const SERVER_SHUTDOWN: &str = "server shutdown";
/// Sent to a client that asks for a new session when starting sessions is
/// off.
pub const START_DISABLED: &str = "this proxy does not start sessions (proxy-start-sessions is off)";
/// Sent to a client that asks for a new session when its sessions are the
/// targets its auth data names (only the user's own local sessions can be
/// started).
pub const START_NOT_LOCAL: &str = "cannot start a session for this user";
/// How much longer than the launcher's own bound the core waits for a
/// start (the launcher's reason is the clearer one).
const START_GRACE: Duration = Duration::from_secs(5);

/// Who this proxy is, for the hello sessions get and the answers to
/// one-shot requests.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: String,
    /// Identifies this proxy instance (its pings, its info).
    pub uuid: String,
    /// When the proxy started (wall clock), and the same moment on the
    /// monotonic clock the core is driven with.
    pub start_time: SystemTime,
    pub started: Instant,
    /// How many shards serve connections.
    pub shards: usize,
}

impl Identity {
    /// The wall-clock time at `now` (the core's clock).
    pub fn wall_clock(&self, now: Instant) -> SystemTime {
        self.start_time + now.saturating_duration_since(self.started)
    }
}

/// What a connection needs to know of its listener and server.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// The listener's auth chain.
    pub chain: Arc<AuthChain>,
    /// The chain's modules never block: the core runs them itself instead
    /// of asking for a job.
    pub inline_auth: bool,
    /// Failed-attempt delays (shared by every connection).
    pub throttle: SharedThrottle,
    /// Time from the first byte to relaying.
    pub handshake_timeout: Duration,
    pub identity: Arc<Identity>,
    /// The proxy's pings while relaying.
    pub ping: PingConfig,
    /// The connection's id and shard (for info and logs).
    pub id: LinkId,
    /// Sessions are started on demand (`--proxy-start-sessions`).
    pub start_sessions: bool,
    /// How long a start may take (the launcher's bound).
    pub start_timeout: Duration,
    /// The encoder workers, when transcoding is on
    /// (`--proxy-video-encoders`): clients that decode h264 get it.
    pub video: Option<Arc<crate::video::workers::Pool>>,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the client's hello.
    Hello,
    /// The auth chain runs (a blocking job).
    Authenticating,
    /// A challenge was sent; waiting for the hello that answers it.
    Challenged,
    /// Choosing the session (a job).
    Routing,
    /// Starting a session for the client (a job).
    Starting,
    /// Connecting to the session (a job).
    Connecting,
    /// The session's answer to its hello is awaited (to answer its
    /// challenge with the target's password).
    UpstreamHello,
    /// A one-shot request's answer is being prepared (a job lists what
    /// the user may reach).
    Answering,
    /// Both sides relayed by the driver's pumps.
    Relaying,
    /// A refused client waits for its failed-attempt delay.
    Refusing,
    /// Nothing left to do.
    Closed,
}

/// How one side's pump ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpEnd {
    /// The reading side closed cleanly.
    Eof,
    /// The reading side sent a close packet (already passed on).
    Closed(Close),
    /// Reading failed.
    ReadError(String),
    /// Writing to the other side failed.
    WriteError(String),
    /// The reading side broke the protocol.
    Protocol(String),
    /// The side of [`RelayEnd::side`] echoed none of the proxy's pings
    /// within the ping timeout.
    PingTimeout,
    /// The proxy stops.
    Shutdown,
    /// An administrator stopped this connection.
    AdminStop,
}

impl std::fmt::Display for PumpEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PumpEnd::Eof => f.write_str("closed"),
            PumpEnd::Closed(c) => write!(f, "disconnected: {}", c.reasons.join(", ")),
            PumpEnd::ReadError(e) => write!(f, "read error: {e}"),
            PumpEnd::WriteError(e) => write!(f, "write error: {e}"),
            PumpEnd::Protocol(e) => write!(f, "protocol error: {e}"),
            PumpEnd::PingTimeout => f.write_str("ping timeout"),
            PumpEnd::Shutdown => f.write_str("server shutdown"),
            PumpEnd::AdminStop => f.write_str(STOPPED_BY_ADMIN),
        }
    }
}

impl From<CutEnd> for PumpEnd {
    fn from(c: CutEnd) -> Self {
        match c {
            CutEnd::Closed(c) => PumpEnd::Closed(c),
            CutEnd::Protocol(e) => PumpEnd::Protocol(e),
        }
    }
}

/// How relaying ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEnd {
    /// Whose pump ended first (the one reading that side), the side that
    /// stopped answering pings, or `None`: the proxy ended it.
    pub side: Option<Side>,
    pub end: PumpEnd,
    /// Whether each output stream is between packets (a close packet may
    /// only be sent there).
    pub client_at_boundary: bool,
    pub session_at_boundary: bool,
}

/// What the driver tells the core.
#[derive(Debug)]
pub enum Event {
    /// Bytes read from the client.
    ClientData(BytesMut),
    /// The client closed its side (or reading failed).
    ClientEof,
    /// Bytes read from the session.
    SessionData(BytesMut),
    SessionEof,
    /// The auth job of [`Action::RunAuth`] is done.
    AuthDone(Box<AuthFlow>, Step),
    /// A job failed with this reason (the blocking pool is full, a local
    /// session turned out stale).
    JobFailed(ConnError),
    /// The route job of [`Action::Route`] is done.
    Routed(Result<Plan, ConnError>),
    /// The job of [`Action::StartSession`] is done: the session and the
    /// plan to reach it.
    Started(Result<Box<(Started, Plan)>, ConnError>),
    /// The job of [`Action::ListSessions`] is done.
    SessionsListed(Result<Vec<Reachable>, ConnError>),
    /// The connection of [`Action::Connect`] is open.
    Connected,
    /// The connection of [`Action::Connect`] to a pool is open, to this
    /// member: the plan names it from now on (logs, `xfwd list`), and its
    /// credentials answer its challenge.
    ConnectedTo(Target),
    ConnectFailed(String),
    /// Writing to a side failed.
    SendFailed(Side),
    /// The pumps of [`Action::Relay`] ended.
    RelayEnded(RelayEnd),
    /// The time of [`Connection::poll_timeout`] has come.
    Timeout,
    /// The proxy stops.
    Stop,
    /// An administrator stops this connection.
    AdminStop,
}

/// What the core asks the driver to do, in order.
#[derive(Debug)]
pub enum Action {
    SendClient(Bytes),
    SendSession(Bytes),
    /// Run `flow.advance(answer)` off the shard, then send
    /// [`Event::AuthDone`] with the flow and the step.
    RunAuth(Box<AuthFlow>, Option<Answer>),
    /// Choose the session (discovery may block), then send
    /// [`Event::Routed`].
    Route {
        hello: Vec<Value>,
        accepted: Accepted,
    },
    /// Start a session for the accepted user (blocks: the launcher, off
    /// the shard, within [`ConnConfig::start_timeout`]), then send
    /// [`Event::Started`].
    StartSession {
        request: StartRequest,
        accepted: Accepted,
    },
    /// List where the accepted user may go, for an `info` request
    /// (discovery may block), then send [`Event::SessionsListed`].
    ListSessions {
        accepted: Accepted,
    },
    /// Open a connection to the plan's destination, then send
    /// [`Event::Connected`] or [`Event::ConnectFailed`].
    Connect(Plan),
    /// Relay both ways with these directions until one ends, then send
    /// [`Event::RelayEnded`].
    Relay(Box<RelayStart>),
    /// Close both sides (after what was sent before).
    Close,
}

/// Everything the pumps need.
#[derive(Debug)]
pub struct RelayStart {
    /// Client to session.
    pub c2s: Direction,
    /// Session to client.
    pub s2c: Direction,
    /// Bytes from the client not relayed yet.
    pub client_buf: BytesMut,
    /// Bytes from the session not relayed yet.
    pub session_buf: BytesMut,
    /// The session, for logs.
    pub destination: String,
    /// The proxy's pings and counters (shared with the directions' hooks).
    pub link: Rc<RefCell<Link>>,
    /// The transcoder, when the session's draws are transcoded.
    pub video: Option<super::video::VideoRelay>,
}

/// One client connection, sans-IO.
pub struct Connection {
    cfg: ConnConfig,
    peer: PeerInfo,
    phase: Phase,
    deadline: Instant,
    client_buf: BytesMut,
    session_buf: BytesMut,
    /// The client's encoder (ours toward it) and generation, once its first
    /// header is read.
    encoder: Encoder,
    rules: Rules,
    generation_known: bool,
    client_relay: Relay,
    session_relay: Relay,
    /// The flow waiting for a challenge answer.
    flow: Option<Box<AuthFlow>>,
    /// A challenge answer held back by the throttle until this time.
    held_answer: Option<(Box<AuthFlow>, Option<Answer>, Instant)>,
    /// The hello to relay (the last one the client sent).
    hello: Vec<Value>,
    plan: Option<Plan>,
    upstream_items: Vec<Value>,
    refusal: Option<(String, Instant)>,
    user: Option<String>,
    error: Option<ConnError>,
    /// Why relaying ended, for the log.
    end_reason: Option<String>,
    /// An accepted login not logged yet (its time and modules): the line
    /// waits for the target.
    login: Option<(SystemTime, String)>,
    actions: VecDeque<Action>,
    /// The one-shot request of the first hello: answered by the proxy,
    /// never routed.
    request: Option<Request>,
    /// A one-shot client that offered a password and has not been
    /// challenged yet: what it can answer a challenge with.
    unchallenged: Option<ClientAuth>,
    /// A challenge nothing checks was sent; what to do with its answer.
    fake: Option<Fake>,
    /// The client wants to be connected to its session (`connect`, true
    /// unless `xpra start --attach=no`).
    connect: bool,
    /// The accepted user, kept while routing when a plain attach that
    /// finds no session may start one.
    accepted: Option<Accepted>,
    /// The start asked for, and whether xfwd started it (its start
    /// commands ran: the client's own are not run again).
    start: Option<(StartRequest, bool)>,
    /// What the client takes when its session's draws are transcoded
    /// (decided with the upstream hello).
    video: Option<crate::video::caps::ClientVideo>,
}

/// What the answer to a fake challenge leads to.
#[derive(Debug)]
enum Fake {
    /// The version (no auth at all).
    Version,
    /// The request of this accepted user.
    Accepted(Box<Accepted>),
    /// This answer (a started session's, for a client that is not
    /// connected to it).
    Reply(Vec<Value>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("phase", &self.phase)
            .field("peer", &self.peer)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A relay that hands over every main packet whole, within `limits`.
fn handshake_relay(limits: Limits) -> Relay {
    Relay::new(
        Rules::Any,
        RelayLimits {
            max_payload: limits.max_payload,
            max_intercept: limits.max_payload,
            ..RelayLimits::default()
        },
    )
}

fn decode(record: &Record, limits: &Limits) -> Result<Vec<Value>, String> {
    packet::decode_main(record, limits)
        .map(|p| p.items)
        .map_err(|e| format!("invalid packet: {e}"))
}

/// Takes the next whole main packet from `buf` (raw chunks are an error
/// before relaying). `Ok(None)`: more bytes needed.
fn next_record(relay: &mut Relay, buf: &mut BytesMut) -> Result<Option<Record>, String> {
    match relay.next_event(buf, |_, _| true) {
        Ok(Some(RelayEvent::Intercept(record, _))) => Ok(Some(record)),
        Ok(Some(_)) => Err("invalid packet: raw data before hello".into()),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("invalid packet: {e}")),
    }
}

impl Connection {
    /// A connection whose client has sent `already` (bytes read by the
    /// front door), at `now`.
    pub fn new(cfg: ConnConfig, peer: PeerInfo, already: BytesMut, now: Instant) -> Connection {
        let deadline = now + cfg.handshake_timeout;
        let mut c = Connection {
            cfg,
            peer,
            phase: Phase::Hello,
            deadline,
            client_buf: already,
            session_buf: BytesMut::new(),
            encoder: Encoder::Rencode,
            rules: Rules::Any,
            generation_known: false,
            // The client has not authenticated: the small pre-auth budget.
            client_relay: handshake_relay(Limits::pre_hello()),
            // The session is trusted as far as the relay trusts it.
            session_relay: handshake_relay(Limits::session_hello()),
            flow: None,
            held_answer: None,
            hello: Vec::new(),
            plan: None,
            upstream_items: Vec::new(),
            refusal: None,
            user: None,
            error: None,
            end_reason: None,
            login: None,
            actions: VecDeque::new(),
            request: None,
            unchallenged: None,
            fake: None,
            connect: true,
            accepted: None,
            start: None,
            video: None,
        };
        // What the front door read (inside TLS or WebSocket, where it
        // cannot peek) may hold the whole hello already.
        if !c.client_buf.is_empty() {
            c.on_client_data(now);
        }
        c
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The client's encoder (what the proxy's own packets to it use).
    pub fn encoder(&self) -> Encoder {
        self.encoder
    }

    /// The authenticated user, once there is one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Why the connection ended before relaying, if it did.
    pub fn error(&self) -> Option<&ConnError> {
        self.error.as_ref()
    }

    /// Why relaying ended, once it did.
    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    /// The session, once chosen.
    pub fn destination(&self) -> Option<String> {
        self.plan.as_ref().map(|p| p.destination.describe())
    }

    /// Whether the client made a one-shot request (`xpra version|id|info`
    /// ...): answered by the proxy, never routed.
    pub fn is_request(&self) -> bool {
        self.request.is_some()
    }

    /// Whether the driver should read from the client now.
    pub fn wants_client_data(&self) -> bool {
        matches!(self.phase, Phase::Hello | Phase::Challenged)
    }

    /// Whether the driver should read from the session now.
    pub fn wants_session_data(&self) -> bool {
        self.phase == Phase::UpstreamHello
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        let a = self.actions.pop_front();
        if matches!(a, Some(Action::Relay(_))) {
            // Relaying lasts: the handshake's queue is not kept for it.
            self.actions.shrink_to_fit();
        }
        a
    }

    /// When to send [`Event::Timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Hello
            | Phase::Authenticating
            | Phase::Challenged
            | Phase::Routing
            | Phase::Starting
            | Phase::Connecting
            | Phase::Answering
            | Phase::UpstreamHello => Some(match &self.held_answer {
                Some((_, _, at)) => (*at).min(self.deadline),
                None => self.deadline,
            }),
            Phase::Refusing => self.refusal.as_ref().map(|(_, at)| *at),
            Phase::Relaying | Phase::Closed => None,
        }
    }

    /// Takes one event at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        match event {
            Event::ClientData(data) => {
                if self.client_buf.is_empty() {
                    self.client_buf = data;
                } else {
                    self.client_buf.unsplit(data);
                }
                if self.wants_client_data() {
                    self.on_client_data(now);
                }
            }
            Event::ClientEof => match self.phase {
                Phase::Relaying => {}
                Phase::Refusing => self.close(),
                _ => self.fail(ConnError::Gone, now),
            },
            Event::SessionData(data) => {
                if self.session_buf.is_empty() {
                    self.session_buf = data;
                } else {
                    self.session_buf.unsplit(data);
                }
                if self.phase == Phase::UpstreamHello {
                    self.on_session_data(now);
                }
            }
            Event::SessionEof => {
                if self.phase == Phase::UpstreamHello {
                    let e = self.upstream_error("the session closed the connection");
                    self.fail(e, now);
                }
            }
            Event::AuthDone(flow, step) => {
                if self.phase == Phase::Authenticating {
                    self.on_step(flow, step, now);
                }
            }
            Event::JobFailed(e) => self.fail(e, now),
            Event::Routed(r) => {
                if self.phase != Phase::Routing {
                    return;
                }
                let accepted = self.accepted.take();
                match r {
                    Ok(plan) => self.on_plan(plan, None),
                    // No session at all: one is started when that is on.
                    Err(ConnError::NoSessions) if accepted.is_some() => {
                        let wanted = Hello::parse(&self.hello)
                            .ok()
                            .and_then(|h| h.requested_display())
                            .map(str::to_owned);
                        if let Some(accepted) = accepted {
                            let request = StartRequest::for_attach(wanted.as_deref());
                            self.start_session(request, accepted, now);
                        }
                    }
                    Err(e) => self.fail(e, now),
                }
            }
            Event::Started(r) => {
                if self.phase != Phase::Starting {
                    return;
                }
                match r.map(|b| *b) {
                    Ok((started, plan)) => {
                        tracing::info!(
                            display = %started.display,
                            new = started.new,
                            "session for the client: :{}",
                            started.display
                        );
                        if let Some((_, new)) = &mut self.start {
                            *new = started.new;
                        }
                        // The rest of the handshake gets its own time.
                        self.deadline = now + self.cfg.handshake_timeout;
                        self.on_plan(plan, Some(started));
                    }
                    Err(e) => self.fail(e, now),
                }
            }
            Event::SessionsListed(r) => {
                if self.phase == Phase::Answering {
                    match r {
                        Ok(list) => self.answer_info(&list, now),
                        Err(e) => self.fail(e, now),
                    }
                }
            }
            Event::Connected => {
                if self.phase == Phase::Connecting {
                    self.on_connected(now);
                }
            }
            Event::ConnectedTo(member) => {
                if self.phase == Phase::Connecting {
                    if let Some(plan) = &mut self.plan {
                        if let Some(u) = member.username() {
                            plan.username = Some(u.to_owned());
                        }
                        if let Some(p) = member.password() {
                            plan.password = Some(p.clone());
                        }
                        plan.destination = Destination::Target(member);
                    }
                    self.on_connected(now);
                }
            }
            Event::ConnectFailed(error) => {
                if self.phase == Phase::Connecting {
                    let e = self.upstream_error(&error);
                    self.fail(e, now);
                }
            }
            Event::SendFailed(Side::Session) if self.phase != Phase::Relaying => {
                let e = self.upstream_error("writing to the session failed");
                self.fail(e, now);
            }
            Event::SendFailed(_) => {
                if self.phase != Phase::Relaying {
                    self.fail(ConnError::Gone, now);
                }
            }
            Event::RelayEnded(end) => {
                if self.phase == Phase::Relaying {
                    self.on_relay_end(end);
                }
            }
            Event::Timeout => self.on_timeout(now),
            Event::AdminStop => match self.phase {
                Phase::Relaying => {}
                Phase::Refusing => {
                    self.refusal = None;
                    self.send_close_to_client(STOPPED_BY_ADMIN);
                    self.close();
                }
                _ => self.fail(ConnError::AdminStop, now),
            },
            Event::Stop => match self.phase {
                Phase::Relaying => {}
                Phase::Refusing => {
                    // The delay is cut short; the answer is the same.
                    if let Some((reason, _)) = self.refusal.take() {
                        self.send_close_to_client(&reason);
                    }
                    self.close();
                }
                _ => self.fail(ConnError::Stopping, now),
            },
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Refusing => {
                if let Some((reason, at)) = self.refusal.take() {
                    if now < at {
                        self.refusal = Some((reason, at));
                        return;
                    }
                    self.send_close_to_client(&reason);
                    self.close();
                }
            }
            Phase::Relaying | Phase::Closed => {}
            _ => {
                if now >= self.deadline {
                    let e = if self.phase == Phase::Starting {
                        ConnError::Start(format!(
                            "the new session did not start within {} s",
                            self.cfg.start_timeout.as_secs()
                        ))
                    } else {
                        ConnError::Timeout
                    };
                    self.fail(e, now);
                    return;
                }
                if let Some((flow, answer, at)) = self.held_answer.take() {
                    if now >= at {
                        self.run_auth(flow, answer, now);
                    } else {
                        self.held_answer = Some((flow, answer, at));
                    }
                }
            }
        }
    }

    /// The access log's line for an accepted login, once its target is
    /// known.
    fn log_login(&mut self, target: &str) {
        if let Some((time, module)) = self.login.take() {
            log_attempt(&Attempt {
                time,
                peer: &self.peer,
                user: self.user.as_deref().unwrap_or(""),
                module: &module,
                result: AttemptResult::Ok,
                delay: Duration::ZERO,
                target: Some(target),
            });
        }
    }

    fn upstream_error(&self, error: &str) -> ConnError {
        ConnError::Upstream {
            target: self
                .plan
                .as_ref()
                .map_or_else(|| "the session".to_owned(), |p| p.destination.describe()),
            error: error.to_owned(),
        }
    }

    /// Reads the client's first header (its generation and encoder), then
    /// its packets.
    fn on_client_data(&mut self, now: Instant) {
        if !self.generation_known {
            let Some(hb) = self.client_buf.get(..HEADER_LEN) else {
                return;
            };
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(hb);
            match Header::parse(&h, Rules::Any) {
                Ok(header) => {
                    self.encoder = header.encoder();
                    self.rules = header.generation().unwrap_or(Rules::Any);
                    self.generation_known = true;
                }
                Err(e) => {
                    self.fail(
                        ConnError::Protocol(format!("invalid packet header: {e}")),
                        now,
                    );
                    return;
                }
            }
        }
        while self.wants_client_data() {
            let record = match next_record(&mut self.client_relay, &mut self.client_buf) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => return self.fail(ConnError::Protocol(e), now),
            };
            let items = match decode(&record, &Limits::pre_hello()) {
                Ok(i) => i,
                Err(e) => return self.fail(ConnError::Protocol(e), now),
            };
            self.on_client_packet(items, now);
        }
    }

    fn on_client_packet(&mut self, items: Vec<Value>, now: Instant) {
        let view = match Hello::parse(&items) {
            Ok(v) => v,
            Err(e) => return self.fail(ConnError::Protocol(e.to_string()), now),
        };
        match self.phase {
            Phase::Hello => {
                let client = ClientAuth::from_hello(&view);
                self.request = Request::of(&view);
                // `xpra start --attach=no`: answered by the proxy too.
                self.connect = view.get("connect").is_none_or(Value::truthy);
                if (self.request.is_some() || !self.connect) && oneshot::expects_challenge(&view) {
                    self.unchallenged = Some(client.clone());
                }
                if let Some(Request::Version { full }) = self.request {
                    // Before any authentication, as xpra does.
                    return self.answer_version(full, now);
                }
                // The upgrade request's headers go to the flow alone: the
                // connection does not keep them once auth has started.
                let headers = self.peer.http_headers.take();
                let mut peer = self.peer.clone();
                peer.http_headers = headers;
                let flow = AuthFlow::new(self.cfg.chain.clone(), client, peer);
                self.hello = items;
                self.run_auth(Box::new(flow), None, now);
            }
            Phase::Challenged if self.fake.is_some() => {
                // Whatever it answered: nothing was asked.
                match self.fake.take() {
                    Some(Fake::Version) => {
                        if let Some(Request::Version { full }) = self.request {
                            self.reply(&oneshot::version_reply(full));
                        }
                    }
                    Some(Fake::Accepted(accepted)) => self.answer_request(*accepted, now),
                    Some(Fake::Reply(items)) => {
                        self.send_to_client(&items);
                        self.close();
                    }
                    None => {}
                }
            }
            Phase::Challenged => {
                let answer = Answer::from_hello(&view);
                self.hello = items;
                let Some(flow) = self.flow.take() else {
                    return self.fail(ConnError::Protocol("unexpected hello".into()), now);
                };
                let wait = self
                    .cfg
                    .throttle
                    .admit(self.peer.ip(), flow.username(), now);
                if wait.is_zero() {
                    self.run_auth(flow, answer, now);
                } else {
                    self.phase = Phase::Authenticating;
                    self.held_answer = Some((flow, answer, now + wait));
                }
            }
            _ => {}
        }
    }

    fn run_auth(&mut self, mut flow: Box<AuthFlow>, answer: Option<Answer>, now: Instant) {
        self.phase = Phase::Authenticating;
        if self.cfg.inline_auth {
            let step = flow.advance(answer);
            self.on_step(flow, step, now);
        } else {
            self.actions.push_back(Action::RunAuth(flow, answer));
        }
    }

    fn on_step(&mut self, flow: Box<AuthFlow>, step: Step, now: Instant) {
        let ip = self.peer.ip();
        match step {
            Step::Challenge(challenge) => {
                self.unchallenged = None;
                self.send_to_client(&challenge.to_items());
                self.flow = Some(flow);
                self.phase = Phase::Challenged;
                // An answer may already be buffered.
                self.on_client_data(now);
            }
            Step::Accepted(accepted) => {
                self.cfg.throttle.record(ip, &accepted.username, true, now);
                let modules: Vec<&str> = accepted.modules.iter().map(|m| m.name()).collect();
                // The login's line waits for where it goes.
                self.login = Some((SystemTime::now(), modules.join("+")));
                self.user = Some(accepted.username.clone());
                if let Some(r) = &self.request {
                    let target = format!("request:{}", r.name());
                    self.log_login(&target);
                    return self.on_request_accepted(accepted, now);
                }
                let sns = self.hello.get(1).and_then(|c| c.get("start-new-session"));
                match StartRequest::from_caps(sns) {
                    Ok(Some(request)) => return self.start_session(request, accepted, now),
                    Ok(None) => {}
                    Err(e) => return self.fail(ConnError::Start(e.to_string()), now),
                }
                if self.cfg.start_sessions {
                    self.accepted = Some(accepted.clone());
                }
                self.phase = Phase::Routing;
                self.actions.push_back(Action::Route {
                    hello: self.hello.clone(),
                    accepted,
                });
            }
            Step::Refused(r) => {
                let delay = if r.counts_as_failure() {
                    self.cfg.throttle.record(ip, flow.username(), false, now)
                } else {
                    Duration::ZERO
                };
                log_attempt(&Attempt {
                    time: SystemTime::now(),
                    peer: &self.peer,
                    user: flow.username(),
                    module: r.module.map_or("-", |m| m.name()),
                    result: AttemptResult::Failed(r.detail.clone()),
                    delay,
                    target: None,
                });
                self.fail(
                    ConnError::Refused {
                        reason: r.reason,
                        delay,
                        module: r.module,
                    },
                    now,
                );
            }
        }
    }

    /// Starts a session for `accepted` (see docs/sessions.md), when that
    /// is on and the user's sessions are local ones.
    fn start_session(&mut self, request: StartRequest, accepted: Accepted, now: Instant) {
        if !self.cfg.start_sessions {
            tracing::info!("a session start was asked for: proxy-start-sessions is off");
            return self.fail(ConnError::Start(START_DISABLED.into()), now);
        }
        if !accepted
            .sessions
            .as_ref()
            .is_some_and(|s| matches!(s.targets, Targets::Local))
        {
            return self.fail(ConnError::Start(START_NOT_LOCAL.into()), now);
        }
        tracing::info!(
            mode = request.mode.name(),
            display = request.display.as_deref().unwrap_or(""),
            commands = request.start.len() + request.start_child.len(),
            requested = request.reason == StartReason::Requested,
            "starting a session for the client"
        );
        self.phase = Phase::Starting;
        self.deadline = now + self.cfg.start_timeout + START_GRACE;
        self.start = Some((request.clone(), false));
        self.actions
            .push_back(Action::StartSession { request, accepted });
    }

    /// Where the client goes, once known: connected there, or told where
    /// it is (`connect=False`: `display`, and for a started session its
    /// `socket-path` and `mode`, as xpra's proxy answers).
    fn on_plan(&mut self, plan: Plan, started: Option<Started>) {
        self.log_login(&plan.destination.describe());
        if !self.connect {
            let display = match (&started, &plan.destination) {
                (Some(s), _) => Some(s.display.clone()),
                (None, Destination::Local(l)) => Some(l.display.clone()),
                (None, Destination::Target(_) | Destination::Pool { .. }) => None,
            };
            if let Some(display) = display {
                let mut caps = vec![(Value::from("display"), Value::from(format!(":{display}")))];
                if let Some(s) = &started {
                    caps.push((
                        Value::from("socket-path"),
                        Value::from(s.socket.display().to_string()),
                    ));
                }
                if let Some((req, _)) = &self.start {
                    caps.push((Value::from("mode"), Value::from(req.mode.name())));
                }
                self.plan = Some(plan);
                let items = vec![Value::from("hello"), Value::Dict(caps)];
                tracing::info!(
                    user = self.user.as_deref().unwrap_or(""),
                    "session announced (connect=False)"
                );
                self.hello = Vec::new();
                if let Some(client) = self.unchallenged.take() {
                    if let Some(challenge) =
                        oneshot::fake_challenge(&client, self.peer.is_private())
                    {
                        self.send_to_client(&challenge.to_items());
                        self.fake = Some(Fake::Reply(items));
                        self.phase = Phase::Challenged;
                        return;
                    }
                }
                self.send_to_client(&items);
                return self.close();
            }
        }
        self.phase = Phase::Connecting;
        self.actions.push_back(Action::Connect(plan.clone()));
        self.plan = Some(plan);
    }

    /// A one-shot request before auth: `version`.
    fn answer_version(&mut self, full: bool, now: Instant) {
        if self.challenge_for_nothing(Fake::Version, now).is_err() {
            self.reply(&oneshot::version_reply(full));
        }
    }

    /// Sends a challenge nothing checks when the one-shot client offered a
    /// password and was not challenged (a 3.1 client refuses an answer
    /// that did not ask for it). `Err(then)`: none needed (or none
    /// possible), answer now.
    fn challenge_for_nothing(&mut self, then: Fake, now: Instant) -> Result<(), Fake> {
        let Some(client) = self.unchallenged.take() else {
            return Err(then);
        };
        let Some(challenge) = oneshot::fake_challenge(&client, self.peer.is_private()) else {
            return Err(then);
        };
        tracing::debug!("the client offers a password nothing asks for: a challenge for nothing");
        self.send_to_client(&challenge.to_items());
        self.fake = Some(then);
        self.phase = Phase::Challenged;
        // The answer may already be buffered.
        self.on_client_data(now);
        Ok(())
    }

    /// An authenticated one-shot request.
    fn on_request_accepted(&mut self, accepted: Accepted, now: Instant) {
        // Routed nowhere: the hello is not needed any more.
        self.hello = Vec::new();
        if let Err(Fake::Accepted(accepted)) =
            self.challenge_for_nothing(Fake::Accepted(Box::new(accepted)), now)
        {
            self.answer_request(*accepted, now);
        }
    }

    fn answer_request(&mut self, accepted: Accepted, now: Instant) {
        let Some(request) = self.request.clone() else {
            return;
        };
        match request {
            Request::Version { full } => self.reply(&oneshot::version_reply(full)),
            Request::ConnectTest { value } => self.reply(&oneshot::connect_test_reply(&value)),
            Request::Id => self.reply(&oneshot::id_reply(&self.cfg.identity)),
            Request::Info { .. } => {
                self.phase = Phase::Answering;
                self.actions.push_back(Action::ListSessions { accepted });
            }
            Request::Stop => {
                let reason = oneshot::stop_refusal(self.peer.transport);
                self.fail(ConnError::Request(reason), now);
            }
            Request::Invalid { mode } => {
                tracing::debug!("request {mode:?}: not served by a proxy");
                self.fail(ConnError::Request(oneshot::INVALID_REQUEST.into()), now);
            }
        }
    }

    fn answer_info(&mut self, reachable: &[Reachable], now: Instant) {
        let flatten = match self.request {
            Some(Request::Info { flatten }) => flatten,
            _ => true,
        };
        tracing::debug!(sessions = reachable.len(), "listed for info");
        let user = self.user.clone().unwrap_or_default();
        let items = oneshot::info_reply(&self.cfg.identity, now, &user, reachable, flatten);
        self.reply(&items);
    }

    /// Sends a one-shot answer, then closes.
    fn reply(&mut self, items: &[Value]) {
        tracing::info!(
            user = self.user.as_deref().unwrap_or(""),
            request = self.request.as_ref().map_or("", Request::name),
            "one-shot request answered"
        );
        self.send_to_client(items);
        self.close();
    }

    fn on_connected(&mut self, now: Instant) {
        let Some(plan) = &self.plan else {
            return self.fail(ConnError::Protocol("connected without a plan".into()), now);
        };
        let mut items = upstream_hello(&self.hello, plan, &self.cfg.identity);
        if self.cfg.video.is_some() {
            let client = self.hello.get(1).and_then(crate::video::caps::client_video);
            match (client, items.get_mut(1)) {
                (Some(client), Some(Value::Dict(caps))) => {
                    crate::video::caps::restrict_upstream_hello(caps);
                    tracing::info!(
                        target: "xfwd::video",
                        csc = client.csc.name(),
                        "transcoding: the session sends raw rgb, the client gets h264"
                    );
                    self.video = Some(client);
                }
                _ => tracing::debug!(
                    target: "xfwd::video",
                    "the client does not decode h264: relayed as it is"
                ),
            }
        }
        let has_password = plan.password.is_some();
        if !self.send_to_session(&items) {
            return;
        }
        self.upstream_items = items;
        if has_password {
            self.phase = Phase::UpstreamHello;
            self.on_session_data(now);
        } else {
            self.start_relay(now);
        }
    }

    /// The session's first packet, when the proxy answers its challenge.
    fn on_session_data(&mut self, now: Instant) {
        let record = match next_record(&mut self.session_relay, &mut self.session_buf) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let e = self.upstream_error(&e);
                return self.fail(e, now);
            }
        };
        let first = match decode(&record, &Limits::session_hello()) {
            Ok(f) => f,
            Err(e) => {
                let e = self.upstream_error(&e);
                return self.fail(e, now);
            }
        };
        if first.first().and_then(Value::as_str) != Some("challenge") {
            // Not a challenge: it goes to the client as it came.
            let mut bytes = BytesMut::new();
            record.write_to(&mut bytes);
            bytes.extend_from_slice(&self.session_buf);
            self.session_buf = bytes;
            return self.start_relay(now);
        }
        let answer = Challenge::parse(&first)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let password = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.password.as_ref())
                    .ok_or_else(|| "no password".to_owned())?;
                client_answer(&c, password.as_bytes()).ok_or_else(|| {
                    format!(
                        "cannot answer its challenge (digest {}, salt digest {})",
                        c.digest, c.salt_digest
                    )
                })
            });
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let e = self.upstream_error(&e);
                return self.fail(e, now);
            }
        };
        let mut again = self.upstream_items.clone();
        if let Some(Value::Dict(caps)) = again.get_mut(1) {
            let response = match std::str::from_utf8(answer.response.as_bytes()) {
                Ok(s) => Value::from(s),
                Err(_) => Value::Bytes(Bytes::copy_from_slice(answer.response.as_bytes())),
            };
            caps.push((Value::from("challenge_response"), response));
            if let Some(salt) = &answer.client_salt {
                caps.push((
                    Value::from("challenge_client_salt"),
                    Value::Bytes(Bytes::copy_from_slice(salt)),
                ));
            }
        }
        if self.send_to_session(&again) {
            self.start_relay(now);
        }
    }

    fn start_relay(&mut self, now: Instant) {
        self.phase = Phase::Relaying;
        let link = Rc::new(RefCell::new(Link::new(
            self.cfg.ping,
            self.cfg.identity.clone(),
            self.cfg.id,
            Rc::new(Traffic::default()),
            self.hello.get(1).unwrap_or(&Value::None),
            self.encoder,
            now,
        )));
        // The hellos were for the handshake: not kept while relaying.
        self.hello = Vec::new();
        self.upstream_items = Vec::new();
        let limits = Limits::default();
        // The start commands the new session already ran: the client's own
        // `start-command` packets for them are not passed on (xpra's proxy
        // runs them twice).
        let ran: Vec<String> = match self.start.take() {
            Some((req, true)) => req.start.into_iter().chain(req.start_child).collect(),
            _ => Vec::new(),
        };
        let mut c2s_types = link::intercepted(Side::Client);
        if !ran.is_empty() {
            c2s_types.push(START_COMMAND);
        }
        let video = match (&self.cfg.video, self.video.take()) {
            (Some(pool), Some(client)) => Some(super::video::VideoRelay::new(
                pool.clone(),
                client,
                self.encoder,
                self.cfg.id.shard,
                self.cfg.id.conn,
            )),
            _ => None,
        };
        let mut s2c_types = link::intercepted(Side::Session);
        if video.is_some() {
            c2s_types.extend_from_slice(super::video::intercepted(Side::Client));
            s2c_types.extend_from_slice(super::video::intercepted(Side::Session));
        }
        let c2s_hook: Box<dyn PacketHook> = Box::new(RunOnce {
            inner: LinkHook::new(link.clone(), Side::Client),
            ran,
        });
        let s2c_hook: Box<dyn PacketHook> = Box::new(LinkHook::new(link.clone(), Side::Session));
        let (c2s_hook, s2c_hook) = match &video {
            Some(v) => (
                v.hook(Side::Client, c2s_hook),
                v.hook(Side::Session, s2c_hook),
            ),
            None => (c2s_hook, s2c_hook),
        };
        if let Some(v) = &video {
            let (t, pool) = (v.transcoder.clone(), v.pool.clone());
            link.borrow_mut().set_video_info(Box::new(move |now| {
                let mut info = t.borrow().info(now);
                if let Value::Dict(d) = &mut info {
                    d.push((Value::from("workers"), pool.info()));
                }
                info
            }));
        }
        let c2s = Direction::new(
            self.rules,
            limits,
            Intercepts {
                first_hello: false,
                types: c2s_types,
                hold_chunks: false,
            },
        )
        .with_hook(c2s_hook);
        let s2c = Direction::new(
            Rules::Any,
            limits,
            Intercepts {
                first_hello: true,
                types: s2c_types,
                hold_chunks: video.is_some(),
            },
        )
        .with_hook(s2c_hook);
        self.actions.push_back(Action::Relay(Box::new(RelayStart {
            c2s,
            s2c,
            client_buf: std::mem::take(&mut self.client_buf),
            session_buf: std::mem::take(&mut self.session_buf),
            destination: self
                .plan
                .as_ref()
                .map_or_else(String::new, |p| p.destination.describe()),
            link,
            video,
        })));
    }

    /// Decides who is told what when relaying ended.
    fn on_relay_end(&mut self, end: RelayEnd) {
        self.end_reason = Some(match (&end.side, &end.end) {
            (Some(side), PumpEnd::PingTimeout) => format!("{side}: ping timeout"),
            (Some(side), e) => format!("{side}: {e}"),
            (None, e) => e.to_string(),
        });
        let session = self
            .plan
            .as_ref()
            .map_or_else(|| "the session".to_owned(), |p| p.destination.describe());
        let (tell_client, tell_session) = match (&end.side, &end.end) {
            (_, PumpEnd::Closed(c)) => {
                tracing::info!(
                    "{} disconnected: {}",
                    if end.side == Some(Side::Session) {
                        session.as_str()
                    } else {
                        "client"
                    },
                    c.reasons.join(", ")
                );
                (None, None)
            }
            (_, PumpEnd::AdminStop) => {
                tracing::info!("stopped by administrator");
                (Some(STOPPED_BY_ADMIN), Some(STOPPED_BY_ADMIN))
            }
            (Some(Side::Session), PumpEnd::PingTimeout) => {
                tracing::info!(
                    side = "session",
                    "{session}: no answer to pings for {:?}",
                    self.cfg.ping.timeout
                );
                (Some(SESSION_NOT_RESPONDING), Some(PING_TIMEOUT))
            }
            (Some(_), PumpEnd::PingTimeout) => {
                tracing::info!(
                    side = "client",
                    "client: no answer to pings for {:?}",
                    self.cfg.ping.timeout
                );
                (Some(PING_TIMEOUT), Some(CLIENT_GONE))
            }
            (None, _) | (_, PumpEnd::Shutdown) => (Some(SERVER_SHUTDOWN), Some(SERVER_SHUTDOWN)),
            (Some(Side::Client), PumpEnd::WriteError(e)) => {
                tracing::info!(side = "session", "{session}: write failed: {e}");
                (Some(SESSION_LOST), None)
            }
            (Some(Side::Session), PumpEnd::WriteError(e)) => {
                tracing::info!(side = "client", "client connection lost: {e}");
                (None, Some(CLIENT_GONE))
            }
            (Some(Side::Session), e) => {
                tracing::info!(side = "session", "{session} connection ended: {e}");
                (Some(SESSION_CLOSED), None)
            }
            (Some(_), e) => {
                tracing::info!(side = "client", "client connection ended: {e}");
                (None, Some(CLIENT_GONE))
            }
        };
        if let Some(r) = tell_client.filter(|_| end.client_at_boundary) {
            self.send_close_to_client(r);
        }
        if let Some(r) = tell_session.filter(|_| end.session_at_boundary) {
            let items = Close::new([r]).to_items();
            self.send_to_session(&items);
        }
        self.close();
    }

    fn fail(&mut self, e: ConnError, now: Instant) {
        self.flow = None;
        self.held_answer = None;
        // An accepted login that ends before its target is known still
        // gets its line.
        if self.login.is_some() {
            self.log_login(&format!("none ({e})"));
        }
        match &e {
            ConnError::Gone => {
                tracing::debug!("client left during the handshake");
                self.error = Some(e);
                self.close();
            }
            ConnError::Refused { reason, delay, .. } => {
                // The delay of a failed attempt, then the same answer for
                // every cause.
                let reason = reason.clone();
                if delay.is_zero() {
                    self.send_close_to_client(&reason);
                    self.error = Some(e);
                    self.close();
                } else {
                    self.refusal = Some((reason, now + *delay));
                    self.error = Some(e);
                    self.phase = Phase::Refusing;
                }
            }
            _ => {
                tracing::info!(side = %e.side(), "refused: {e}");
                self.send_close_to_client(&e.client_reason());
                self.error = Some(e);
                self.close();
            }
        }
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.actions.push_back(Action::Close);
    }

    fn send_close_to_client(&mut self, reason: &str) {
        let items = Close::new([reason]).to_items();
        self.send_to_client(&items);
    }

    fn send_to_client(&mut self, items: &[Value]) {
        match super::encode_items(items, self.encoder) {
            Ok(b) => self.actions.push_back(Action::SendClient(b.freeze())),
            Err(e) => tracing::error!("cannot encode a packet for the client: {e}"),
        }
    }

    fn send_to_session(&mut self, items: &[Value]) -> bool {
        match super::encode_items(items, self.encoder) {
            Ok(b) => {
                self.actions.push_back(Action::SendSession(b.freeze()));
                true
            }
            Err(e) => {
                let e = self.upstream_error(&format!("cannot encode the hello: {e}"));
                tracing::info!(side = %e.side(), "refused: {e}");
                self.send_close_to_client(&e.client_reason());
                self.error = Some(e);
                self.close();
                false
            }
        }
    }
}

/// The packet a client sends for each of its `--start` commands once
/// connected (when the session allows `start-new-commands`).
const START_COMMAND: &str = "start-command";

/// The client's hook: drops the client's `start-command` packets for the
/// commands a session xfwd started for it already ran (each once), passes
/// the rest to the link's hook.
struct RunOnce {
    inner: LinkHook,
    ran: Vec<String>,
}

impl PacketHook for RunOnce {
    fn on_packet(
        &mut self,
        chunks: &[Record],
        record: &Record,
        ptype: &crate::wire::peek::PacketType,
        now: Instant,
    ) -> Verdict {
        if !ptype.is(START_COMMAND) {
            return self.inner.on_packet(chunks, record, ptype, now);
        }
        // `start-command, name, command, ignore, sharing`; commands are
        // short (the launcher took at most MAX_COMMAND_LEN bytes each).
        let Ok(p) = packet::decode_main(record, &Limits::intercept_close()) else {
            return Verdict::Forward;
        };
        let command = p.items.get(2).and_then(Value::as_str);
        match command.and_then(|c| self.ran.iter().position(|r| r == c)) {
            Some(i) => {
                self.ran.swap_remove(i);
                tracing::info!(
                    "the new session already ran the client's start command: not run again"
                );
                Verdict::Drop
            }
            None => Verdict::Forward,
        }
    }

    fn on_first_hello(&mut self, items: &[Value], encoder: Encoder, now: Instant) {
        self.inner.on_first_hello(items, encoder, now);
    }
}
