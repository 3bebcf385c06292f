//! One client connection, from accept to close:
//!
//! 0. **front door** (TCP ports, `front.rs`): PROXY header, TLS, HTTP or
//!    WebSocket, decided from the first bytes;
//! 1. **handshake**: read the client's `hello` (bounded, with a deadline),
//!    authenticate it (a `challenge` when the module needs one);
//! 2. **route**: find the user's sessions and choose one;
//! 3. **upstream**: connect to the session and send it the client's
//!    capabilities, minus what the proxy owns, plus a `proxy` section;
//! 4. **relay**: two pumps, one per direction, until either side ends;
//! 5. **close**: the side still there is told why, when the stream is at a
//!    packet boundary.
//!
//! Records are relayed as they came: the client and the session negotiate
//! encoder and compression between themselves, through the capabilities.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::front::{self, Front};
use super::handshake::{self, send_packet, ClientSide, HandshakeError};
use super::listen::ListenerKind;
use super::pump::{self, Counters, Direction, ForwardAll, Intercepts, OutState, Outbox, PumpEnd};
pub(super) use super::stream::Stream;
use super::upstream::{self, Upstream};
use super::Shared;
use crate::auth::PeerInfo;
use crate::wire::frame::Limits;
use crate::wire::header::Rules;
use crate::wire::relay::{Relay, RelayLimits};
use crate::wire::views::Close;
use std::sync::Arc;

/// xpra's reason for a session that went away.
const SESSION_CLOSED: &str = "session closed the connection";
/// Sent to the client when writing to the session failed.
const SESSION_LOST: &str = "session connection lost";
/// Sent to the session when the client goes away.
const CLIENT_GONE: &str = "client connection lost";
/// Sent to both when the proxy stops.
const SERVER_SHUTDOWN: &str = "server shutdown";
/// How long a goodbye packet may take to write.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one client until its connection ends.
pub async fn serve(
    id: u64,
    stream: Stream,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let span = tracing::info_span!("conn", id, peer = %peer);
    serve_inner(stream, peer, kind, shared, stop)
        .instrument(span)
        .await;
}

async fn serve_inner(
    stream: Stream,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    // One deadline for everything before relaying: the front door, the
    // hello, auth, routing and the upstream hello.
    let deadline = Instant::now() + shared.config.handshake_timeout;
    // TCP ports sniff the first bytes (TLS, HTTP, WebSocket, PROXY, xpra).
    let front = if kind == ListenerKind::Unix {
        Front::Xpra(stream, BytesMut::new(), peer)
    } else {
        let door = front::front_door(stream, peer, &shared);
        tokio::select! {
            () = stop.cancelled() => return,
            r = timeout_at(deadline, door) => match r {
                Ok(f) => f,
                Err(_) => {
                    tracing::debug!("front door: nothing decided before the deadline");
                    return;
                }
            },
        }
    };
    let (stream, buf, peer) = match front {
        Front::Xpra(stream, buf, peer) => (stream, buf, peer),
        // Served outside the handshake deadline: a download or a proxied
        // connection may last as long as it moves.
        Front::Serve(service) => {
            tokio::select! {
                () = stop.cancelled() => {}
                () = front::serve(service, &shared) => {}
            }
            return;
        }
    };
    let (reader, writer) = tokio::io::split(stream);
    let mut client = ClientSide::new(reader, writer, buf);
    let result = tokio::select! {
        () = stop.cancelled() => Err(HandshakeError::Stopping),
        r = timeout_at(deadline, async {
            let (hello, accepted) = handshake::authenticate(&mut client, &peer, &shared).await?;
            let plan = upstream::route(&hello, &accepted, &shared).await?;
            tracing::info!(user = %accepted.username, "routing to {}", plan.destination.describe());
            let up = upstream::open(&plan, &hello, client.encoder, &shared).await?;
            Ok((plan, up))
        }) => r.unwrap_or(Err(HandshakeError::Timeout)),
    };
    match result {
        Ok((plan, up)) => relay(client, up, &plan.destination.describe(), &stop).await,
        Err(HandshakeError::Gone) => tracing::debug!("client left during the handshake"),
        Err(HandshakeError::Refused { reason, delay }) => {
            // The delay of a failed attempt, then the same answer for
            // every cause.
            if !delay.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
            refuse(&mut client, &reason).await;
        }
        Err(e) => {
            tracing::info!(side = %e.side(), "refused: {e}");
            refuse(&mut client, &e.client_reason()).await;
        }
    }
}

async fn refuse(client: &mut ClientSide, reason: &str) {
    let close = Close::new([reason]);
    let _ = timeout(
        GOODBYE_TIMEOUT,
        send_packet(&mut client.writer, &close.to_items(), client.encoder),
    )
    .await;
    let _ = timeout(GOODBYE_TIMEOUT, client.writer.shutdown()).await;
}

enum Ended {
    Client(PumpEnd),
    Session(PumpEnd),
    Stop,
}

async fn relay(mut client: ClientSide, up: Upstream, session: &str, stop: &CancellationToken) {
    let Upstream {
        reader: mut sr,
        writer: mut sw,
        buf: session_buf,
    } = up;
    let (sr, sw) = (&mut sr, &mut sw);
    let limits = Limits::default();
    let relay_limits = RelayLimits {
        max_payload: limits.max_payload,
        ..RelayLimits::default()
    };
    let mut c2s = Relay::new(client.rules, relay_limits);
    let mut s2c = Relay::new(Rules::Any, relay_limits);
    let (up, down) = (Counters::default(), Counters::default());
    let (to_session, to_client) = (OutState::default(), OutState::default());
    let (session_box, client_box) = (Outbox::default(), Outbox::default());
    let (mut up_hook, mut down_hook) = (ForwardAll, ForwardAll);
    let buf = std::mem::take(&mut client.buf);
    let ended = {
        let a = pump::pump(
            &mut client.reader,
            sw,
            buf,
            Direction {
                relay: &mut c2s,
                limits,
                intercepts: Intercepts::default(),
                hook: &mut up_hook,
                counters: &up,
                out_state: &to_session,
                outbox: &session_box,
            },
        );
        let b = pump::pump(
            sr,
            &mut client.writer,
            session_buf,
            Direction {
                relay: &mut s2c,
                limits,
                intercepts: Intercepts {
                    first_hello: true,
                    ..Intercepts::default()
                },
                hook: &mut down_hook,
                counters: &down,
                out_state: &to_client,
                outbox: &client_box,
            },
        );
        tokio::select! {
            e = a => Ended::Client(e),
            e = b => Ended::Session(e),
            () = stop.cancelled() => Ended::Stop,
        }
    };
    let (tell_client, tell_session) = match &ended {
        Ended::Client(PumpEnd::Closed(c)) => {
            tracing::info!("client disconnected: {}", c.reasons.join(", "));
            (None, None)
        }
        Ended::Client(PumpEnd::WriteError(e)) => {
            tracing::info!(side = "session", "{session}: write failed: {e}");
            (Some(SESSION_LOST.to_owned()), None)
        }
        Ended::Client(e) => {
            tracing::info!(side = "client", "client connection ended: {e}");
            (None, Some(CLIENT_GONE.to_owned()))
        }
        Ended::Session(PumpEnd::Closed(c)) => {
            tracing::info!(
                "{session} disconnected the client: {}",
                c.reasons.join(", ")
            );
            (None, None)
        }
        Ended::Session(PumpEnd::WriteError(e)) => {
            tracing::info!(side = "client", "client connection lost: {e}");
            (None, Some(CLIENT_GONE.to_owned()))
        }
        Ended::Session(e) => {
            tracing::info!(side = "session", "{session} connection ended: {e}");
            (Some(SESSION_CLOSED.to_owned()), None)
        }
        Ended::Stop => (
            Some(SERVER_SHUTDOWN.to_owned()),
            Some(SERVER_SHUTDOWN.to_owned()),
        ),
    };
    let encoder = client.encoder;
    let goodbye = async {
        if let Some(r) = tell_client.filter(|_| to_client.at_boundary()) {
            let _ = send_packet(&mut client.writer, &Close::new([r]).to_items(), encoder).await;
        }
        if let Some(r) = tell_session.filter(|_| to_session.at_boundary()) {
            let _ = send_packet(sw, &Close::new([r]).to_items(), encoder).await;
        }
    };
    let _ = timeout(GOODBYE_TIMEOUT, goodbye).await;
    let _ = timeout(GOODBYE_TIMEOUT, client.writer.shutdown()).await;
    let _ = timeout(GOODBYE_TIMEOUT, sw.shutdown()).await;
    tracing::info!(
        up_bytes = up.bytes.get(),
        up_packets = up.packets.get(),
        down_bytes = down.bytes.get(),
        down_packets = down.packets.get(),
        "closed"
    );
}
