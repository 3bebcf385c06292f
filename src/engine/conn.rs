//! The driver of one client connection: it runs the front door (TCP ports),
//! then feeds the sans-IO [`Connection`] core with what the sockets, timers
//! and jobs bring, and carries out the actions it returns. What to do when
//! is the core's decision (see `proxy/` and docs/engine.md); here is only
//! the I/O.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::Slot;
use super::front::{self, Front};
use super::listen::ListenerKind;
use super::metrics::{ConnMetrics, HandshakeResult, ShardMetrics};
use super::pump::{self, OutState, Outbox, ReadSizer, Tally};
use super::registry::{Entry, Registered};
pub(super) use super::stream::Stream;
use super::upstream;
use super::{ShardCtx, Shared};
use crate::auth::{PeerInfo, Target};
use crate::proxy::link::{Link, LinkEnd, LinkId, Stalls};
use crate::proxy::{
    Action, ConnConfig, ConnError, Connection, Destination, Event, Phase, PumpEnd, RelayEnd,
    RelayStart, Side,
};
use crate::sessions::balance::LoadGuard;

/// How long one write of the proxy's own packets may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one client until its connection ends.
#[allow(clippy::too_many_arguments)] // each is the connection's own
pub async fn serve(
    id: u64,
    stream: Stream,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
    slot: Slot,
    shard: Rc<ShardCtx>,
) {
    let span = tracing::info_span!("conn", id, peer = %peer);
    let registered = shard.registry.register(id, peer.to_string(), kind.name());
    serve_inner(stream, peer, kind, shared, stop, slot, &shard, registered)
        .instrument(span)
        .await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_inner(
    stream: Stream,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
    slot: Slot,
    shard: &ShardCtx,
    registered: Registered,
) {
    let conn_id = registered.entry.id;
    let kill = registered.entry.kill.clone();
    // One deadline for everything before relaying: the front door, the
    // hello, auth, routing and the upstream hello.
    let start = Instant::now();
    let deadline = start + shared.config.handshake_timeout;
    let mut metrics = ConnMetrics::new(shard.metrics.clone(), start.into_std());
    // TCP ports sniff the first bytes (TLS, HTTP, WebSocket, PROXY, xpra).
    let front = if kind == ListenerKind::Unix {
        Front::Xpra(stream, BytesMut::new(), peer)
    } else {
        // On the heap while it runs: its state (TLS, HTTP) would otherwise
        // size the connection's task for its whole life.
        let door = Box::pin(front::front_door(stream, peer, &shared));
        tokio::select! {
            () = stop.cancelled() => return metrics.ended(HandshakeResult::Stopping),
            () = kill.cancelled() => return metrics.ended(HandshakeResult::Admin),
            r = timeout_at(deadline, door) => match r {
                Ok(f) => f,
                Err(_) => {
                    tracing::debug!("front door: nothing decided before the deadline");
                    return metrics.ended(HandshakeResult::Timeout);
                }
            },
        }
    };
    let (stream, buf, peer) = match front {
        Front::Xpra(stream, buf, peer) => (stream, buf, peer),
        // Served outside the handshake deadline: a download or a proxied
        // connection may last as long as it moves.
        Front::Serve(service) => {
            drop(slot);
            metrics.ended(match service {
                front::Service::Reply(..) | front::Service::Proxy(..) => HandshakeResult::Served,
                front::Service::Close | front::Service::Refuse(..) => HandshakeResult::Protocol,
            });
            tokio::select! {
                () = stop.cancelled() => {}
                () = kill.cancelled() => {}
                () = Box::pin(front::serve(service, &shared)) => {}
            }
            return;
        }
    };
    // TLS, WebSocket or both, as the front door found.
    registered.entry.set_transport(peer.transport.name());
    let Some(entry) = shared
        .auth_for(peer.transport)
        .or_else(|| shared.auth_for(crate::auth::Transport::Tcp))
        .cloned()
    else {
        return;
    };
    let cfg = ConnConfig {
        chain: entry.chain,
        inline_auth: entry.inline,
        throttle: shared.throttle.clone(),
        handshake_timeout: shared.config.handshake_timeout,
        identity: shared.identity.clone(),
        ping: shared.config.ping,
        id: LinkId {
            conn: conn_id,
            shard: shard.id,
        },
        start_sessions: shared.launcher.is_some(),
        start_timeout: shared
            .launcher
            .as_ref()
            .map_or(crate::sessions::launch::DEFAULT_START_TIMEOUT, |l| {
                l.timeout()
            }),
        video: shared.video.clone(),
    };
    let core = Connection::new(cfg, peer, buf, start.into_std());
    // On the heap, once: the task's future holds a pointer, not a copy of
    // the driver for each state it passes through.
    Box::new(Driver {
        core,
        shared,
        stop,
        client: Half::new(stream),
        session: None,
        job: None,
        stopped: false,
        killed: false,
        slot: Some(slot),
        entry: registered.entry.clone(),
        metrics,
        opened: None,
        load: None,
    })
    .run()
    .await;
    drop(registered);
}

/// One side's stream, split for the pumps.
struct Half {
    reader: ReadHalf<Stream>,
    writer: WriteHalf<Stream>,
    buf: BytesMut,
    sizer: ReadSizer,
}

impl Half {
    fn new(s: Stream) -> Half {
        let (reader, writer) = tokio::io::split(s);
        Half {
            reader,
            writer,
            buf: BytesMut::new(),
            sizer: ReadSizer::new(),
        }
    }

    /// Reads once; `None`: closed or failed.
    async fn read(&mut self) -> Option<BytesMut> {
        match pump::read_more(&mut self.reader, &mut self.buf, &mut self.sizer).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(self.buf.split()),
        }
    }
}

/// What a job brings back: an event for the core, or a session stream.
enum JobDone {
    Event(Event),
    /// An event, and the session's socket already connected with it
    /// (system-wide mode: the helper connects as the user while routing
    /// or starting); the next `Connect` takes it.
    Opened(Event, Option<Stream>),
    /// The session's socket; for a pool, the member it reaches. The
    /// guard counts the connection on its host while it lives.
    Connected(Stream, Option<Target>, Option<LoadGuard>),
}

type Job = Pin<Box<dyn Future<Output = JobDone>>>;

struct Driver {
    core: Connection,
    shared: Arc<Shared>,
    stop: CancellationToken,
    client: Half,
    session: Option<Half>,
    job: Option<Job>,
    stopped: bool,
    /// An administrator stopped this connection.
    killed: bool,
    /// The connection's place among those in their handshake.
    slot: Option<Slot>,
    /// What the control socket sees of this connection.
    entry: Rc<Entry>,
    metrics: ConnMetrics,
    /// The session's socket, connected while routing (see
    /// [`JobDone::Opened`]).
    opened: Option<Stream>,
    /// Counts this connection on its session host (`LocalLoad`) while
    /// connected.
    load: Option<LoadGuard>,
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, b: &Bytes) -> bool {
    let write = async {
        w.write_all(b).await?;
        w.flush().await
    };
    matches!(timeout(SEND_TIMEOUT, write).await, Ok(Ok(())))
}

impl Driver {
    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    async fn run(mut self: Box<Self>) {
        loop {
            while let Some(action) = self.core.poll_action() {
                if self.act(action).await {
                    return;
                }
            }
            let wants_client = self.core.wants_client_data();
            let wants_session = self.core.wants_session_data() && self.session.is_some();
            let wake = self.core.poll_timeout().map(Instant::from_std);
            let (client, session, job, opened, load) = (
                &mut self.client,
                &mut self.session,
                &mut self.job,
                &mut self.opened,
                &mut self.load,
            );
            let event = tokio::select! {
                biased;
                () = self.stop.cancelled(), if !self.stopped => {
                    self.stopped = true;
                    Event::Stop
                }
                () = self.entry.kill.cancelled(), if !self.killed => {
                    self.killed = true;
                    Event::AdminStop
                }
                () = sleep_until(wake), if wake.is_some() => Event::Timeout,
                done = poll_job(job), if job.is_some() => {
                    *job = None;
                    match done {
                        JobDone::Event(e) => e,
                        JobDone::Opened(e, s) => {
                            *opened = s;
                            e
                        }
                        JobDone::Connected(s, member, guard) => {
                            *session = Some(Half::new(s));
                            // The host the guard counts on is the one the
                            // registry shows (none for local sessions).
                            self.entry
                                .set_host_key(guard.as_ref().map(|g| g.host().to_owned()));
                            *load = guard;
                            match member {
                                Some(m) => {
                                    self.entry.set_target(Some(format!("session {m}")));
                                    Event::ConnectedTo(m)
                                }
                                None => Event::Connected,
                            }
                        }
                    }
                }
                r = client.read(), if wants_client => match r {
                    Some(b) => Event::ClientData(b),
                    None => Event::ClientEof,
                },
                r = read_session(session), if wants_session => match r {
                    Some(b) => Event::SessionData(b),
                    None => Event::SessionEof,
                },
            };
            self.core.handle(event, Self::now());
            self.entry.set_phase(self.core.phase());
            self.entry.set_user(self.core.user());
        }
    }

    /// Carries out one action; true once the connection is over.
    async fn act(&mut self, action: Action) -> bool {
        match action {
            Action::SendClient(b) => {
                if !send(&mut self.client.writer, &b).await {
                    self.core
                        .handle(Event::SendFailed(Side::Client), Self::now());
                }
            }
            Action::SendSession(b) => {
                let ok = match &mut self.session {
                    Some(s) => send(&mut s.writer, &b).await,
                    None => false,
                };
                if !ok {
                    self.core
                        .handle(Event::SendFailed(Side::Session), Self::now());
                }
            }
            Action::RunAuth(mut flow, answer) => {
                let blocking = self.shared.blocking.clone();
                self.job = Some(Box::pin(async move {
                    let r = blocking
                        .run(move || {
                            let step = flow.advance(answer);
                            (flow, step)
                        })
                        .await;
                    JobDone::Event(match r {
                        Ok((flow, step)) => Event::AuthDone(flow, step),
                        Err(e) => Event::JobFailed(e.into()),
                    })
                }));
            }
            Action::Route { hello, accepted } => {
                let shared = self.shared.clone();
                self.job = Some(Box::pin(async move {
                    match upstream::route(&hello, &accepted, &shared).await {
                        Ok((plan, s)) => JobDone::Opened(Event::Routed(Ok(plan)), s),
                        Err(e) => JobDone::Event(Event::Routed(Err(e))),
                    }
                }));
            }
            Action::StartSession { request, accepted } => {
                let shared = self.shared.clone();
                self.job = Some(Box::pin(async move {
                    match upstream::start(request, &accepted, &shared).await {
                        Ok(b) => {
                            let (started, plan, s) = *b;
                            JobDone::Opened(Event::Started(Ok(Box::new((started, plan)))), s)
                        }
                        Err(e) => JobDone::Event(Event::Started(Err(e))),
                    }
                }));
            }
            Action::ListSessions { accepted } => {
                let shared = self.shared.clone();
                self.job = Some(Box::pin(async move {
                    JobDone::Event(Event::SessionsListed(
                        upstream::reachable(&accepted, &shared).await,
                    ))
                }));
            }
            Action::Connect(plan) => {
                self.entry.set_target(Some(plan.destination.describe()));
                if let Some(s) = self.opened.take() {
                    self.job = Some(Box::pin(async move { JobDone::Connected(s, None, None) }));
                    return false;
                }
                let shared = self.shared.clone();
                let user = self.core.user().map(str::to_owned);
                self.job = Some(Box::pin(async move {
                    match upstream::connect(&plan, &shared).await {
                        Ok((s, member)) => {
                            let host = match (&member, &plan.destination) {
                                (Some(m), _) | (None, Destination::Target(m)) => m.host_key(),
                                _ => None,
                            };
                            if let (Some(m), Some(h), Destination::Pool { name, .. }) =
                                (&member, &host, &plan.destination)
                            {
                                tracing::info!(pool = %name, host = %m, "pool host chosen");
                                if let Some(u) = &user {
                                    shared.load.remember(u, name, h);
                                }
                            }
                            let guard = host.map(|h| shared.local_load.track(h));
                            JobDone::Connected(s, member, guard)
                        }
                        Err(ConnError::Upstream { error, .. }) => {
                            JobDone::Event(Event::ConnectFailed(error))
                        }
                        Err(e) => JobDone::Event(Event::JobFailed(e)),
                    }
                }));
            }
            Action::Relay(start) => {
                // Authenticated and relaying: no longer a handshake.
                self.slot = None;
                self.entry.set_phase(Phase::Relaying);
                self.entry.set_user(self.core.user());
                self.entry.set_link(Some(start.link.clone()));
                let link = start.link.clone();
                let started = Instant::now();
                self.metrics.relayed();
                // The relay's state on the heap, the handshake's gone:
                // the task itself stays small.
                let end = Box::pin(self.relay(start)).await;
                self.core.handle(Event::RelayEnded(end), Self::now());
                let link = link.borrow();
                let t = link.traffic();
                // The connection's line in the access log.
                tracing::info!(
                    up_bytes = t.up.bytes.get(),
                    up_packets = t.up.packets.get(),
                    down_bytes = t.down.bytes.get(),
                    down_packets = t.down.packets.get(),
                    duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    user = self.core.user().unwrap_or(""),
                    target = self.core.destination().unwrap_or_default(),
                    reason = self.core.end_reason().unwrap_or(""),
                    "closed"
                );
            }
            Action::Close => {
                self.metrics
                    .closed(self.core.error(), self.core.is_request());
                let _ = timeout(SEND_TIMEOUT, self.client.writer.shutdown()).await;
                if let Some(s) = &mut self.session {
                    let _ = timeout(SEND_TIMEOUT, s.writer.shutdown()).await;
                }
                return true;
            }
        }
        false
    }

    /// Runs both pumps until one ends, the link ends the connection (a
    /// side stopped answering pings), an administrator stops it or the
    /// proxy stops.
    async fn relay(&mut self, start: Box<RelayStart>) -> RelayEnd {
        let RelayStart {
            mut c2s,
            mut s2c,
            mut client_buf,
            session_buf,
            destination: _,
            link,
            mut video,
        } = *start;
        let mut done_rx = video.as_mut().and_then(|v| v.done.take());
        let Some(session) = &mut self.session else {
            return RelayEnd {
                side: Some(Side::Session),
                end: PumpEnd::Eof,
                client_at_boundary: true,
                session_at_boundary: false,
            };
        };
        // Bytes the driver read past the handshake belong to the relay; the
        // handshake's read buffers are given back (the pumps have their
        // own).
        if !self.client.buf.is_empty() {
            client_buf.unsplit(self.client.buf.split());
        }
        self.client.buf = BytesMut::new();
        let mut session_buf = session_buf;
        if !session.buf.is_empty() {
            session_buf.unsplit(session.buf.split());
        }
        session.buf = BytesMut::new();
        let traffic = link.borrow().traffic().clone();
        let (up_metrics, down_metrics) = self.metrics.relay_counters();
        let up = Tally {
            counters: &traffic.up,
            metrics: up_metrics,
        };
        let down = Tally {
            counters: &traffic.down,
            metrics: down_metrics,
        };
        let (to_session, to_client) = (OutState::default(), OutState::default());
        // A transcoded connection's frames for the client go through its
        // outbox (a few frames: the transcoder bounds what is in flight).
        let client_box = match &video {
            Some(_) => Outbox::new(VIDEO_OUTBOX_LIMIT),
            None => Outbox::default(),
        };
        let session_box = Outbox::default();
        let a = pump::pump(
            &mut self.client.reader,
            &mut session.writer,
            client_buf,
            &mut c2s,
            &up,
            &to_session,
            &session_box,
        );
        let b = pump::pump(
            &mut session.reader,
            &mut self.client.writer,
            session_buf,
            &mut s2c,
            &down,
            &to_client,
            &client_box,
        );
        tokio::pin!(a, b);
        let (side, end) = loop {
            // One timer for the link and the transcoder (each is asked
            // only once its own time has come).
            let link_at = link.borrow().poll_timeout();
            let video_at = video
                .as_ref()
                .and_then(|v| v.transcoder.borrow().poll_timeout());
            let wake = link_at
                .into_iter()
                .chain(video_at)
                .min()
                .map(Instant::from_std);
            tokio::select! {
                e = &mut a => break (Some(Side::Client), e),
                e = &mut b => break (Some(Side::Session), e),
                () = self.stop.cancelled(), if !self.stopped => {
                    self.stopped = true;
                    break (None, PumpEnd::Shutdown);
                }
                () = self.entry.kill.cancelled(), if !self.killed => {
                    self.killed = true;
                    break (None, PumpEnd::AdminStop);
                }
                done = video_done(&mut done_rx) => {
                    match (&video, done) {
                        (Some(v), Some(done)) => {
                            v.transcoder.borrow_mut().on_done(done, std::time::Instant::now());
                            drain_video(v, &client_box, &session_box);
                        }
                        // The transcoder holds a sender: not while it lives.
                        _ => done_rx = None,
                    }
                }
                () = video_notified(&video) => {
                    if let Some(v) = &video {
                        drain_video(v, &client_box, &session_box);
                    }
                }
                () = sleep_until(wake), if wake.is_some() => {
                    let now = std::time::Instant::now();
                    if let (Some(v), true) = (&video, video_at.is_some_and(|t| t <= now)) {
                        v.transcoder.borrow_mut().on_timeout(now);
                        drain_video(v, &client_box, &session_box);
                    }
                    if link_at.is_some_and(|t| t <= now) {
                        let stalls = Stalls {
                            to_client: to_client.writing_since(),
                            to_session: to_session.writing_since(),
                        };
                        if let Some(LinkEnd::PingTimeout(side)) =
                            tick(&link, stalls, &client_box, &session_box, self.metrics.shard())
                        {
                            break (Some(side), PumpEnd::PingTimeout);
                        }
                    }
                }
            }
        };
        if let Some(v) = &video {
            // Every stream's worker frees its context.
            v.transcoder.borrow_mut().close();
        }
        RelayEnd {
            side,
            end,
            client_at_boundary: to_client.at_boundary(),
            session_at_boundary: to_session.at_boundary(),
        }
    }
}

/// The link's timer: its pings go to the outboxes (a full outbox drops
/// one: the side is not reading, and the ping timeout will tell).
fn tick(
    link: &RefCell<Link>,
    stalls: Stalls,
    client_box: &Outbox,
    session_box: &Outbox,
    metrics: &ShardMetrics,
) -> Option<LinkEnd> {
    let mut l = link.borrow_mut();
    for (side, rtt) in l.take_samples() {
        metrics.observe_rtt(side, rtt);
    }
    l.on_timeout(std::time::Instant::now(), stalls);
    while let Some(p) = l.pop_packet(Side::Client) {
        let _ = client_box.push(p);
    }
    while let Some(p) = l.pop_packet(Side::Session) {
        let _ = session_box.push(p);
    }
    l.end()
}

/// The most a transcoded connection's frames for the client may queue.
const VIDEO_OUTBOX_LIMIT: usize = 64 * 1024 * 1024;

/// What the transcoder has for either side goes to its outbox; a full
/// outbox (a side that does not read) drops the packet, as for pings: the
/// transcoder bounds what it has in flight, and the session is paced by the
/// client's acks.
fn drain_video(v: &crate::proxy::video::VideoRelay, client_box: &Outbox, session_box: &Outbox) {
    let mut t = v.transcoder.borrow_mut();
    while let Some(p) = t.pop_to_client_parts() {
        if let Err(e) = client_box.push_parts(p) {
            tracing::debug!(target: "xfwd::video", "frame for the client dropped: {e}");
        }
    }
    while let Some(p) = t.pop_to_session() {
        if let Err(e) = session_box.push(p) {
            tracing::debug!(target: "xfwd::video", "packet for the session dropped: {e}");
        }
    }
}

/// The next answer of the encoder workers (never, without transcoding).
async fn video_done(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::video::Done>>,
) -> Option<crate::video::Done> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn video_notified(video: &Option<crate::proxy::video::VideoRelay>) {
    match video {
        Some(v) => v.wake.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn poll_job(job: &mut Option<Job>) -> JobDone {
    match job {
        Some(j) => j.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn read_session(session: &mut Option<Half>) -> Option<BytesMut> {
    match session {
        Some(s) => s.read().await,
        None => std::future::pending().await,
    }
}
