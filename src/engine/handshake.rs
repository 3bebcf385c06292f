//! The client side of the handshake: read the hello, run the listener's auth
//! chain (challenges, throttling, one log line per attempt).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::pump::{self, ReadSizer};
use super::stream::Stream;
use super::Shared;
use crate::auth::flow::{Accepted, AuthFlow, ClientAuth, Step};
use crate::auth::throttle::{log_attempt, Attempt, AttemptResult};
use crate::auth::{Answer, PeerInfo, Transport};
use crate::wire::frame::{Limits, Record};
use crate::wire::header::{Encoder, Header, Rules, HEADER_LEN};
use crate::wire::packet;
use crate::wire::relay::{Event, Relay, RelayLimits};
use crate::wire::views::Hello;
use crate::wire::Value;

/// Which side of a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Session,
    Proxy,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Session => "session",
            Side::Proxy => "proxy",
        })
    }
}

/// Why a connection ended before relaying. The text is for logs; the
/// client is given [`HandshakeError::client_reason`].
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    /// The client broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// Refused by auth; the client is told after `delay`.
    #[error("{reason}")]
    Refused { reason: String, delay: Duration },
    #[error("{0}")]
    Route(String),
    /// The session could not be reached or refused the proxy.
    #[error("cannot connect to {target}: {error}")]
    Upstream { target: String, error: String },
    #[error("handshake timeout")]
    Timeout,
    #[error("server shutdown")]
    Stopping,
    /// The proxy could not do the work (its blocking pool is full).
    #[error("{0}")]
    Busy(String),
    /// The client went away; nobody to tell.
    #[error("client disconnected during the handshake")]
    Gone,
}

impl HandshakeError {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            HandshakeError::Protocol(_) | HandshakeError::Gone | HandshakeError::Timeout => {
                Side::Client
            }
            HandshakeError::Refused { .. } | HandshakeError::Route(_) => Side::Client,
            HandshakeError::Upstream { .. } => Side::Session,
            HandshakeError::Stopping | HandshakeError::Busy(_) => Side::Proxy,
        }
    }

    /// The reason the client is given: never a session's address or an
    /// internal error text (those are logged).
    pub fn client_reason(&self) -> String {
        match self {
            HandshakeError::Upstream { .. } => "the session cannot be reached".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<super::blocking::BlockingError> for HandshakeError {
    fn from(e: super::blocking::BlockingError) -> Self {
        match e {
            super::blocking::BlockingError::Stopping => HandshakeError::Stopping,
            other => HandshakeError::Busy(other.to_string()),
        }
    }
}

/// The client's connection during the handshake.
pub(super) struct ClientSide {
    pub reader: ReadHalf<Stream>,
    pub writer: WriteHalf<Stream>,
    /// Bytes read past the packets consumed so far.
    pub buf: BytesMut,
    /// The encoder the client used for its hello: ours toward it.
    pub encoder: Encoder,
    /// The client's generation, from its first header.
    pub rules: Rules,
    pub sizer: ReadSizer,
}

impl ClientSide {
    pub fn new(reader: ReadHalf<Stream>, writer: WriteHalf<Stream>, buf: BytesMut) -> ClientSide {
        ClientSide {
            reader,
            writer,
            buf,
            encoder: Encoder::Rencode,
            rules: Rules::Any,
            sizer: ReadSizer::new(),
        }
    }
}

/// Encodes and sends one packet, uncompressed.
pub(super) async fn send_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    items: &[Value],
    encoder: Encoder,
) -> io::Result<()> {
    let bytes = pump::encode_items(items, encoder).map_err(io::Error::other)?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads the next main packet whole from `r` (before relaying starts).
/// Raw chunks are a protocol error here. `Ok(None)`: the peer closed.
pub(super) async fn read_record<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    sizer: &mut ReadSizer,
    relay: &mut Relay,
) -> Result<Option<Record>, String> {
    loop {
        match relay.next_event(buf, |_, _| true) {
            Ok(Some(Event::Intercept(record, _))) => return Ok(Some(record)),
            Ok(Some(_)) => return Err("invalid packet: raw data before hello".into()),
            Ok(None) => {}
            Err(e) => return Err(format!("invalid packet: {e}")),
        }
        match pump::read_more(r, buf, sizer).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// The limits of a peer that has not finished its handshake.
pub(super) fn handshake_relay() -> Relay {
    let limits = Limits::pre_hello();
    Relay::new(
        Rules::Any,
        RelayLimits {
            max_payload: limits.max_payload,
            max_intercept: limits.max_payload,
            ..RelayLimits::default()
        },
    )
}

pub(super) fn decode(record: &Record) -> Result<Vec<Value>, String> {
    packet::decode_main(record, &Limits::pre_hello())
        .map(|p| p.items)
        .map_err(|e| format!("invalid packet: {e}"))
}

async fn read_packet(
    side: &mut ClientSide,
    relay: &mut Relay,
) -> Result<Vec<Value>, HandshakeError> {
    match read_record(&mut side.reader, &mut side.buf, &mut side.sizer, relay).await {
        Ok(Some(record)) => decode(&record).map_err(HandshakeError::Protocol),
        Ok(None) => Err(HandshakeError::Gone),
        Err(e) => Err(HandshakeError::Protocol(e)),
    }
}

/// Reads the client's first header to learn its generation and encoder.
async fn sniff_generation(side: &mut ClientSide) -> Result<(), HandshakeError> {
    loop {
        if let Some(hb) = side.buf.get(..HEADER_LEN) {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(hb);
            let header = Header::parse(&h, Rules::Any)
                .map_err(|e| HandshakeError::Protocol(format!("invalid packet header: {e}")))?;
            side.encoder = header.encoder();
            side.rules = header.generation().unwrap_or(Rules::Any);
            return Ok(());
        }
        match pump::read_more(&mut side.reader, &mut side.buf, &mut side.sizer).await {
            Ok(0) | Err(_) => return Err(HandshakeError::Gone),
            Ok(_) => {}
        }
    }
}

/// Reads the hello and runs the listener's auth chain. Returns the hello to
/// relay (the last one the client sent) and what auth decided.
pub(super) async fn authenticate(
    side: &mut ClientSide,
    peer: &PeerInfo,
    shared: &Arc<Shared>,
) -> Result<(Vec<Value>, Accepted), HandshakeError> {
    sniff_generation(side).await?;
    let mut relay = handshake_relay();
    let mut hello = read_packet(side, &mut relay).await?;
    let view = Hello::parse(&hello).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    let entry = shared
        .auth_for(peer.transport)
        .or_else(|| shared.auth_for(Transport::Tcp))
        .cloned()
        .ok_or_else(|| HandshakeError::Protocol("no authentication for this transport".into()))?;
    let (chain, inline) = (entry.chain, entry.inline);
    let ip = peer.ip();
    let mut flow = AuthFlow::new(chain, ClientAuth::from_hello(&view), peer.clone());
    let mut answer: Option<Answer> = None;
    loop {
        // Modules may read files, query sqlite, run commands: off the shard
        // (unless none of them can block).
        let step = if inline {
            flow.advance(answer)
        } else {
            let (f, step) = shared
                .blocking
                .run(move || {
                    let step = flow.advance(answer);
                    (flow, step)
                })
                .await?;
            flow = f;
            step
        };
        match step {
            Step::Challenge(challenge) => {
                send_packet(&mut side.writer, &challenge.to_items(), side.encoder)
                    .await
                    .map_err(|_| HandshakeError::Gone)?;
                hello = read_packet(side, &mut relay).await?;
                let v =
                    Hello::parse(&hello).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
                answer = Answer::from_hello(&v);
                let wait = shared.throttle.admit(ip, flow.username(), Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            Step::Accepted(accepted) => {
                shared
                    .throttle
                    .record(ip, &accepted.username, true, Instant::now());
                let modules: Vec<&str> = accepted.modules.iter().map(|m| m.name()).collect();
                log_attempt(&Attempt {
                    time: SystemTime::now(),
                    peer,
                    user: &accepted.username,
                    module: &modules.join("+"),
                    result: AttemptResult::Ok,
                    delay: Duration::ZERO,
                });
                return Ok((hello, accepted));
            }
            Step::Refused(r) => {
                let delay = if r.counts_as_failure() {
                    shared
                        .throttle
                        .record(ip, flow.username(), false, Instant::now())
                } else {
                    Duration::ZERO
                };
                log_attempt(&Attempt {
                    time: SystemTime::now(),
                    peer,
                    user: flow.username(),
                    module: r.module.map_or("-", |m| m.name()),
                    result: AttemptResult::Failed(r.detail.clone()),
                    delay,
                });
                return Err(HandshakeError::Refused {
                    reason: r.reason,
                    delay,
                });
            }
        }
    }
}
