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

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::io::split;
use futures_lite::{future, AsyncWriteExt};
use tracing::Instrument;

use super::front::{self, Front};
use super::handshake::{self, send_packet, ClientSide, HandshakeError};
use super::listen::ListenerKind;
use super::pump::{self, Counters, Direction, OutState, PumpEnd};
use super::stop::StopSignal;
pub(super) use super::stream::Stream;
use super::upstream::{self, Upstream};
use super::Shared;
use crate::auth::PeerInfo;
use crate::wire::frame::Limits;
use crate::wire::header::Rules;
use crate::wire::relay::{Relay, RelayLimits};
use crate::wire::views::Close;

/// xpra's reason for a session that went away.
const SESSION_CLOSED: &str = "session closed the connection";
/// Sent to the session when the client goes away.
const CLIENT_GONE: &str = "client connection lost";
/// Sent to both when the proxy stops.
const SERVER_SHUTDOWN: &str = "server shutdown";

/// Serves one client until its connection ends.
pub async fn serve(
    id: u64,
    stream: Stream,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: Rc<StopSignal>,
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
    stop: Rc<StopSignal>,
) {
    let deadline = shared.config.handshake_timeout;
    // TCP ports sniff the first bytes (TLS, HTTP, WebSocket, PROXY, xpra).
    let front = if kind == ListenerKind::Unix {
        Front::Xpra(stream, BytesMut::new(), peer)
    } else {
        let door = async { front::front_door(stream, peer, &shared).await };
        let late = async {
            glommio::timer::sleep(deadline).await;
            Front::Done
        };
        future::or(door, late).await
    };
    let Front::Xpra(stream, buf, peer) = front else {
        return;
    };
    let (reader, writer) = split(stream);
    let mut client = ClientSide::new(reader, writer, buf);
    let result = future::or(
        async {
            let (hello, accepted) = handshake::authenticate(&mut client, &peer, &shared).await?;
            let plan = upstream::route(&hello, &accepted, &shared).await?;
            tracing::info!(user = %accepted.username, "routing to {}", plan.destination.describe());
            let up = upstream::open(&plan, &hello, client.encoder, &shared).await?;
            Ok((plan, up))
        },
        async {
            future::or(
                async {
                    glommio::timer::sleep(deadline).await;
                    Err(HandshakeError::Timeout)
                },
                async {
                    stop.stopped().await;
                    Err(HandshakeError::Stopping)
                },
            )
            .await
        },
    )
    .await;
    match result {
        Ok((plan, up)) => relay(client, up, &plan.destination.describe(), &stop).await,
        Err(HandshakeError::Gone) => tracing::debug!("client left during the handshake"),
        Err(HandshakeError::Refused { reason, delay }) => {
            // The delay of a failed attempt, then the same answer for
            // every cause.
            if !delay.is_zero() {
                future::or(glommio::timer::sleep(delay), stop.stopped()).await;
            }
            refuse(&mut client, &reason).await;
        }
        Err(e) => {
            tracing::info!("refused: {e}");
            refuse(&mut client, &e.to_string()).await;
        }
    }
}

async fn refuse(client: &mut ClientSide, reason: &str) {
    let close = Close::new([reason]);
    let _ = future::or(
        send_packet(&mut client.writer, &close.to_items(), client.encoder),
        async {
            glommio::timer::sleep(Duration::from_secs(2)).await;
            Ok(())
        },
    )
    .await;
    let _ = client.writer.close().await;
}

enum Ended {
    Client(PumpEnd),
    Session(PumpEnd),
    Stop,
}

async fn relay(mut client: ClientSide, up: Upstream, session: &str, stop: &Rc<StopSignal>) {
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
    let buf = std::mem::take(&mut client.buf);
    let ended = {
        let a = async {
            let dir = Direction {
                relay: &mut c2s,
                limits,
                rewrite_first_hello: false,
                counters: &up,
                out_state: &to_session,
            };
            Ended::Client(pump::pump(&mut client.reader, sw, buf, dir).await)
        };
        let b = async {
            let dir = Direction {
                relay: &mut s2c,
                limits,
                rewrite_first_hello: true,
                counters: &down,
                out_state: &to_client,
            };
            Ended::Session(pump::pump(sr, &mut client.writer, session_buf, dir).await)
        };
        let s = async {
            stop.stopped().await;
            Ended::Stop
        };
        future::or(future::or(a, b), s).await
    };
    let (tell_client, tell_session) = match &ended {
        Ended::Client(PumpEnd::Closed(c)) => {
            tracing::info!("client disconnected: {}", c.reasons.join(", "));
            (None, None)
        }
        Ended::Client(e) => {
            tracing::info!("client connection ended: {e}");
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
            tracing::info!("client connection lost: {e}");
            (None, Some(CLIENT_GONE.to_owned()))
        }
        Ended::Session(e) => {
            tracing::info!("{session} connection ended: {e}");
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
    let _ = future::or(goodbye, glommio::timer::sleep(Duration::from_secs(2))).await;
    let _ = client.writer.close().await;
    let _ = sw.close().await;
    tracing::info!(
        up_bytes = up.bytes.get(),
        up_packets = up.packets.get(),
        down_bytes = down.bytes.get(),
        down_packets = down.packets.get(),
        "closed"
    );
}
