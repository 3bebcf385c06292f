//! One client connection, from accept to close:
//!
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

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::io::{split, ReadHalf, WriteHalf};
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpStream, UnixStream};
use tracing::Instrument;

use super::listen::ListenerKind;
use super::pump::{self, Counters, Direction, OutState, PumpEnd};
use super::stop::StopSignal;
use super::Shared;
use crate::auth::{self, AuthModule};
use crate::sessions::{self, LocalSession};
use crate::wire::frame::{Limits, Record};
use crate::wire::header::{Encoder, Rules};
use crate::wire::packet;
use crate::wire::relay::{Event, Relay, RelayLimits};
use crate::wire::views::{Close, Hello};
use crate::wire::Value;

/// A client or session stream.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            Stream::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// Why a connection ended before relaying; the text is the reason the
/// client is given.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Protocol(String),
    #[error("authentication failed")]
    AuthFailed,
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Route(#[from] sessions::RouteError),
    #[error("cannot connect to session :{display}: {error}")]
    Upstream { display: String, error: String },
    #[error("handshake timeout")]
    Timeout,
    #[error("server shutdown")]
    Stopping,
    /// The client went away; nobody to tell.
    #[error("client disconnected during the handshake")]
    Gone,
}

/// xpra's reason for a session that went away.
const SESSION_CLOSED: &str = "session closed the connection";
/// Sent to the session when the client goes away.
const CLIENT_GONE: &str = "client connection lost";
/// Sent to both when the proxy stops.
const SERVER_SHUTDOWN: &str = "server shutdown";

struct ClientSide {
    reader: ReadHalf<Stream>,
    writer: WriteHalf<Stream>,
    /// Bytes read past the hello.
    buf: BytesMut,
    /// The encoder the client used for its hello: ours toward it.
    encoder: Encoder,
    rules: Rules,
    sizer: pump::ReadSizer,
}

async fn send_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    items: &[Value],
    encoder: Encoder,
) -> io::Result<()> {
    let bytes = pump::encode_items(items, encoder).map_err(io::Error::other)?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads the next main packet whole (before the relay starts).
async fn read_packet(
    side: &mut ClientSide,
    relay: &mut Relay,
    limits: &Limits,
) -> Result<Vec<Value>, HandshakeError> {
    loop {
        match relay.next_event(&mut side.buf, |_, _| true) {
            Ok(Some(Event::Intercept(record, _))) => {
                return decode(&record, limits);
            }
            Ok(Some(_)) => {
                return Err(HandshakeError::Protocol(
                    "invalid packet: raw data before hello".into(),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(HandshakeError::Protocol(format!("invalid packet: {e}"))),
        }
        match pump::read_more(&mut side.reader, &mut side.buf, &mut side.sizer).await {
            Ok(0) | Err(_) => return Err(HandshakeError::Gone),
            Ok(_) => {}
        }
    }
}

fn decode(record: &Record, limits: &Limits) -> Result<Vec<Value>, HandshakeError> {
    packet::decode_main(record, limits)
        .map(|p| p.items)
        .map_err(|e| HandshakeError::Protocol(format!("invalid packet: {e}")))
}

/// Reads the hello and authenticates it; returns the hello to relay.
async fn handshake(
    side: &mut ClientSide,
    kind: ListenerKind,
    shared: &Shared,
) -> Result<Vec<Value>, HandshakeError> {
    let limits = Limits::pre_hello();
    let mut relay = Relay::new(
        Rules::Any,
        RelayLimits {
            max_payload: limits.max_payload,
            max_intercept: limits.max_payload,
            ..RelayLimits::default()
        },
    );
    // The first record tells the client's generation and encoder.
    let (encoder, rules) = loop {
        if let Some(hb) = side.buf.get(..8) {
            let mut h = [0u8; 8];
            h.copy_from_slice(hb);
            if let Ok(header) = crate::wire::Header::parse(&h, Rules::Any) {
                break (header.encoder(), header.generation().unwrap_or(Rules::Any));
            }
            return Err(HandshakeError::Protocol("invalid packet header".into()));
        }
        match pump::read_more(&mut side.reader, &mut side.buf, &mut side.sizer).await {
            Ok(0) | Err(_) => return Err(HandshakeError::Gone),
            Ok(_) => {}
        }
    };
    side.encoder = encoder;
    side.rules = rules;
    let hello = read_packet(side, &mut relay, &limits).await?;
    let view = Hello::parse(&hello).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    let spec = match kind {
        ListenerKind::Tcp => &shared.config.tcp_auth,
        ListenerKind::Unix => &shared.config.unix_auth,
    };
    match spec.module {
        AuthModule::None => Ok(hello),
        AuthModule::Reject => Err(HandshakeError::AuthFailed),
        AuthModule::Allow => {
            let private = kind == ListenerKind::Unix;
            let challenge = auth::make_challenge(
                &view.digests(),
                &view.salt_digests(),
                private,
                spec.prompt(),
            )
            .map_err(|e| HandshakeError::Auth(e.to_string()))?;
            send_packet(&mut side.writer, &challenge.to_items(), side.encoder)
                .await
                .map_err(|_| HandshakeError::Gone)?;
            let answer = read_packet(side, &mut relay, &limits).await?;
            let view =
                Hello::parse(&answer).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
            if view.challenge_response().is_none() {
                return Err(HandshakeError::AuthFailed);
            }
            tracing::info!(
                user = view.username().unwrap_or(""),
                module = "allow",
                "authenticated"
            );
            Ok(answer)
        }
    }
}

/// The client's capabilities as the session gets them.
fn upstream_hello(hello: &[Value], shared: &Shared) -> Vec<Value> {
    const OWNED: [&str; 4] = [
        "challenge_response",
        "challenge_client_salt",
        "cipher",
        "aliases",
    ];
    let mut caps = match hello.get(1) {
        Some(Value::Dict(d)) => d.clone(),
        _ => Vec::new(),
    };
    caps.retain(|(k, _)| {
        let key = k.as_str().unwrap_or("");
        !OWNED
            .iter()
            .any(|o| key == *o || key.starts_with(&format!("{o}.")))
    });
    let add = |caps: &mut Vec<(Value, Value)>, k: &str, v: Value| {
        caps.retain(|(key, _)| key.as_str() != Some(k));
        caps.push((Value::from(k), v));
    };
    add(&mut caps, "proxy", Value::Bool(true));
    add(
        &mut caps,
        "proxy.hostname",
        Value::from(shared.hostname.as_str()),
    );
    // Not `proxy.version`: xpra servers parse that as their own version
    // number and refuse what they cannot compare.
    add(&mut caps, "proxy.name", Value::from("xfwd"));
    add(
        &mut caps,
        "proxy.xfwd.version",
        Value::from(env!("CARGO_PKG_VERSION")),
    );
    add(
        &mut caps,
        "proxy.platform",
        Value::from(std::env::consts::OS),
    );
    add(&mut caps, "proxy.uuid", Value::from(shared.uuid.as_str()));
    vec![Value::from("hello"), Value::Dict(caps)]
}

async fn route(hello: &[Value], shared: &Arc<Shared>) -> Result<LocalSession, HandshakeError> {
    let wanted = Hello::parse(hello)
        .ok()
        .and_then(|h| h.requested_display())
        .map(str::to_owned);
    let dirs = shared.socket_dirs.clone();
    let host = shared.hostname.clone();
    let uid = shared.uid;
    let found = glommio::executor()
        .spawn_blocking(move || sessions::discover(&dirs, &host, uid))
        .await;
    Ok(sessions::choose(&found, wanted.as_deref())?.clone())
}

/// Serves one client until its connection ends.
pub async fn serve(
    id: u64,
    stream: Stream,
    peer: String,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: Rc<StopSignal>,
) {
    let span = tracing::info_span!("conn", id, peer = %peer);
    serve_inner(stream, kind, shared, stop)
        .instrument(span)
        .await;
}

async fn serve_inner(
    stream: Stream,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: Rc<StopSignal>,
) {
    let (reader, writer) = split(stream);
    let mut client = ClientSide {
        reader,
        writer,
        buf: BytesMut::with_capacity(pump::READ_CHUNK),
        encoder: Encoder::Rencode,
        rules: Rules::Any,
        sizer: pump::ReadSizer::new(),
    };
    let deadline = shared.config.handshake_timeout;
    let result = future::or(
        async {
            let hello = handshake(&mut client, kind, &shared).await?;
            let session = route(&hello, &shared).await?;
            Ok((hello, session))
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
    let (hello, session) = match result {
        Ok(ok) => ok,
        Err(HandshakeError::Gone) => {
            tracing::debug!("client left during the handshake");
            return;
        }
        Err(e) => {
            tracing::info!("refused: {e}");
            refuse(&mut client, &e.to_string()).await;
            return;
        }
    };
    tracing::info!(display = %session.display, socket = %session.socket.display(), "routing to session");
    let upstream = match connect(&session).await {
        Ok(s) => s,
        Err(e) => {
            let e = HandshakeError::Upstream {
                display: session.display.clone(),
                error: e.to_string(),
            };
            tracing::warn!("{e}");
            refuse(&mut client, &e.to_string()).await;
            return;
        }
    };
    let (mut sr, mut sw) = split(upstream);
    if let Err(e) = send_packet(&mut sw, &upstream_hello(&hello, &shared), client.encoder).await {
        let reason = format!("cannot connect to session :{}: {e}", session.display);
        refuse(&mut client, &reason).await;
        return;
    }
    relay(client, &mut sr, &mut sw, &session, &stop).await;
}

async fn connect(session: &LocalSession) -> io::Result<Stream> {
    let s = glommio::timer::timeout(Duration::from_secs(5), async {
        UnixStream::connect(&session.socket)
            .await
            .map_err(|e| glommio::GlommioError::IoError(e.into()))
    })
    .await
    .map_err(io::Error::from)?;
    Ok(Stream::Unix(s))
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

async fn relay(
    mut client: ClientSide,
    sr: &mut ReadHalf<Stream>,
    sw: &mut WriteHalf<Stream>,
    session: &LocalSession,
    stop: &Rc<StopSignal>,
) {
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
            Ended::Session(pump::pump(sr, &mut client.writer, BytesMut::new(), dir).await)
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
                "session :{} disconnected the client: {}",
                session.display,
                c.reasons.join(", ")
            );
            (None, None)
        }
        Ended::Session(PumpEnd::WriteError(e)) => {
            tracing::info!("client connection lost: {e}");
            (None, Some(CLIENT_GONE.to_owned()))
        }
        Ended::Session(e) => {
            tracing::info!("session :{} connection ended: {e}", session.display);
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
