//! The session side: choosing where a client goes, connecting there, and the
//! hello the session gets (answering its challenge when the target carries a
//! password).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{split, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};

use super::handshake::{decode, handshake_relay, read_record, send_packet, HandshakeError};
use super::pump::ReadSizer;
use super::stream::{Stream, WsStream};
use super::Shared;
use crate::auth::{client_answer, Accepted, Secret, SessionOptions, Target, TargetKind};
use crate::sessions::{self, LocalSession};
use crate::wire::header::Encoder;
use crate::wire::views::{Challenge, Hello};
use crate::wire::Value;

/// How long connecting to a session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a client goes.
pub(super) enum Destination {
    /// A session found in the socket dirs.
    Local(LocalSession),
    /// A target the auth data names.
    Target(Target),
}

impl Destination {
    /// For logs and reasons (credentials never shown).
    pub fn describe(&self) -> String {
        match self {
            Destination::Local(s) => format!("session :{}", s.display),
            Destination::Target(t) => format!("session {t}"),
        }
    }
}

/// What the upstream connection needs besides its destination.
pub(super) struct Plan {
    pub destination: Destination,
    /// Replaces the client's user name upstream.
    pub username: Option<String>,
    /// Answers the session's challenge.
    pub password: Option<Secret>,
    /// Whitelisted session options, as hello capabilities.
    pub caps: Vec<(String, Value)>,
}

fn discover(shared: &Shared) -> Vec<LocalSession> {
    sessions::discover(&shared.socket_dirs, &shared.hostname, shared.uid)
}

async fn local(
    shared: &Arc<Shared>,
    wanted: Option<String>,
) -> Result<LocalSession, HandshakeError> {
    let shared2 = shared.clone();
    shared
        .blocking
        .run(move || sessions::choose(&discover(&shared2), wanted.as_deref()))
        .await?
        .map_err(|e| HandshakeError::Route(e.to_string()))
}

/// Connects to the first socket of a local session that answers. When none
/// does (all stale), the client is told which sessions are live.
async fn local_connect(
    session: &LocalSession,
    shared: &Arc<Shared>,
) -> Result<Stream, HandshakeError> {
    let mut last = None;
    for socket in &session.sockets {
        match unix(socket).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!("{}: {e}", socket.display());
                last = Some(e);
            }
        }
    }
    let stale = last.as_ref().is_none_or(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        )
    });
    if stale {
        let shared2 = shared.clone();
        let display = session.display.clone();
        let e = shared
            .blocking
            .run(move || sessions::not_found(&discover(&shared2), &display))
            .await?;
        return Err(HandshakeError::Route(e.to_string()));
    }
    Err(HandshakeError::Upstream {
        target: format!("session :{}", session.display),
        error: last.map_or_else(|| "no socket".to_owned(), |e| e.to_string()),
    })
}

/// Chooses the destination for an accepted client.
pub(super) async fn route(
    hello: &[Value],
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<Plan, HandshakeError> {
    let wanted = Hello::parse(hello)
        .ok()
        .and_then(|h| h.requested_display())
        .map(str::to_owned);
    let sessions = accepted
        .sessions
        .as_ref()
        .ok_or_else(|| HandshakeError::Route("no sessions found".into()))?;
    let options: &SessionOptions = &sessions.session_options;
    let caps = options.caps();
    let target = sessions
        .select(wanted.as_deref())
        .map_err(|e| HandshakeError::Route(e.to_string()))?;
    let plan = match target {
        None => Plan {
            destination: Destination::Local(local(shared, wanted).await?),
            username: None,
            password: options.password().cloned(),
            caps,
        },
        Some(t) => {
            let destination = match &t.kind {
                TargetKind::Local { display } => {
                    Destination::Local(local(shared, Some(display.clone())).await?)
                }
                _ => Destination::Target(t.clone()),
            };
            Plan {
                destination,
                username: t.username().map(str::to_owned),
                password: t.password().or(options.password()).cloned(),
                caps,
            }
        }
    };
    Ok(plan)
}

async fn resolve(host: String, port: u16, shared: &Shared) -> std::io::Result<SocketAddr> {
    // A literal address needs no lookup.
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    // Name resolution blocks: on the blocking pool.
    shared
        .blocking
        .run(move || {
            (host.as_str(), port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

async fn tcp(host: &str, port: u16, shared: &Shared) -> std::io::Result<TcpStream> {
    let addr = resolve(host.to_owned(), port, shared).await?;
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// TLS toward a session (`ssl://`, `wss://`).
async fn tls(host: &str, port: u16, shared: &Shared) -> std::io::Result<Stream> {
    let s = tcp(host, port, shared).await?;
    let name = crate::transport::tls::server_name(host).map_err(std::io::Error::other)?;
    let config = shared
        .upstream_tls
        .clone()
        .map_err(|e| std::io::Error::other(format!("no TLS for ssl:// targets: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector.connect(name, Stream::Tcp(s)).await?;
    Ok(Stream::TlsClient(Box::new(tls)))
}

/// The WebSocket upgrade toward a session (`ws://`, `wss://`), as xpra's
/// client does it (subprotocol `binary`).
async fn websocket(mut s: Stream, host: &str, port: u16) -> std::io::Result<Stream> {
    use crate::transport::websocket::ClientHandshake;
    use tokio::io::AsyncWriteExt;

    let handshake = ClientHandshake::new(&format!("{host}:{port}"), "/")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(&handshake.request()).await?;
    s.flush().await?;
    let mut buf = BytesMut::new();
    let mut sizer = ReadSizer::new();
    loop {
        let answer = handshake
            .read_response(&buf)
            .map_err(|e| std::io::Error::other(format!("WebSocket upgrade refused: {e}")))?;
        if let Some(accepted) = answer {
            let rest = buf.split_off(accepted.head_len);
            return Ok(Stream::Ws(Box::new(WsStream::client(s, rest))));
        }
        if super::pump::read_more(&mut s, &mut buf, &mut sizer).await? == 0 {
            return Err(std::io::Error::other("closed during the WebSocket upgrade"));
        }
    }
}

async fn connect_target(t: &Target, shared: &Shared) -> std::io::Result<Stream> {
    match &t.kind {
        TargetKind::Unix { path } => unix(path).await,
        TargetKind::Tcp { host, port } => Ok(Stream::Tcp(tcp(host, *port, shared).await?)),
        TargetKind::Ssl { host, port } => tls(host, *port, shared).await,
        TargetKind::Ws { host, port } => {
            let s = Stream::Tcp(tcp(host, *port, shared).await?);
            websocket(s, host, *port).await
        }
        TargetKind::Wss { host, port } => {
            let s = tls(host, *port, shared).await?;
            websocket(s, host, *port).await
        }
        TargetKind::Local { .. } => Err(std::io::Error::other("unresolved local target")),
    }
}

async fn unix(path: &std::path::Path) -> std::io::Result<Stream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(Stream::Unix(s))
}

/// The client's capabilities as the session gets them: minus what the proxy
/// owns, plus the plan's user name and session options, plus the `proxy`
/// section.
pub(super) fn upstream_hello(hello: &[Value], plan: &Plan, shared: &Shared) -> Vec<Value> {
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
    let set = |caps: &mut Vec<(Value, Value)>, k: &str, v: Value| {
        caps.retain(|(key, _)| key.as_str() != Some(k));
        caps.push((Value::from(k), v));
    };
    if let Some(u) = &plan.username {
        set(&mut caps, "username", Value::from(u.as_str()));
    }
    for (k, v) in &plan.caps {
        set(&mut caps, k, v.clone());
    }
    set(&mut caps, "proxy", Value::Bool(true));
    set(
        &mut caps,
        "proxy.hostname",
        Value::from(shared.hostname.as_str()),
    );
    set(
        &mut caps,
        "proxy.platform",
        Value::from(std::env::consts::OS),
    );
    // Not `proxy.version`: xpra servers parse that as their own version
    // number and refuse what they cannot compare.
    set(&mut caps, "proxy.name", Value::from("xfwd"));
    set(
        &mut caps,
        "proxy.xfwd.version",
        Value::from(env!("CARGO_PKG_VERSION")),
    );
    set(&mut caps, "proxy.uuid", Value::from(shared.uuid.as_str()));
    vec![Value::from("hello"), Value::Dict(caps)]
}

/// An open upstream connection, ready to relay.
pub(super) struct Upstream {
    pub reader: ReadHalf<Stream>,
    pub writer: WriteHalf<Stream>,
    /// Bytes from the session not relayed yet (they go to the client).
    pub buf: BytesMut,
}

fn upstream_error(plan: &Plan, error: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Upstream {
        target: plan.destination.describe(),
        error: error.to_string(),
    }
}

/// Connects, sends the hello and, when the plan has a password, answers the
/// session's challenge itself (otherwise a challenge reaches the client
/// like any other packet).
pub(super) async fn open(
    plan: &Plan,
    hello: &[Value],
    encoder: Encoder,
    shared: &Arc<Shared>,
) -> Result<Upstream, HandshakeError> {
    let stream = match &plan.destination {
        Destination::Local(s) => local_connect(s, shared).await?,
        Destination::Target(t) => connect_target(t, shared)
            .await
            .map_err(|e| upstream_error(plan, e))?,
    };
    let (mut reader, mut writer) = split(stream);
    let items = upstream_hello(hello, plan, shared);
    send_packet(&mut writer, &items, encoder)
        .await
        .map_err(|e| upstream_error(plan, e))?;
    let mut buf = BytesMut::new();
    if let Some(password) = &plan.password {
        let mut relay = handshake_relay();
        let mut sizer = ReadSizer::new();
        let record = read_record(&mut reader, &mut buf, &mut sizer, &mut relay)
            .await
            .map_err(|e| upstream_error(plan, e))?
            .ok_or_else(|| upstream_error(plan, "the session closed the connection"))?;
        let first = decode(&record).map_err(|e| upstream_error(plan, e))?;
        if first.first().and_then(Value::as_str) == Some("challenge") {
            let challenge = Challenge::parse(&first).map_err(|e| upstream_error(plan, e))?;
            let answer = client_answer(&challenge, password.as_bytes()).ok_or_else(|| {
                upstream_error(
                    plan,
                    format!(
                        "cannot answer its challenge (digest {}, salt digest {})",
                        challenge.digest, challenge.salt_digest
                    ),
                )
            })?;
            let mut again = items;
            if let Some(Value::Dict(caps)) = again.get_mut(1) {
                let response = match std::str::from_utf8(answer.response.as_bytes()) {
                    Ok(s) => Value::from(s),
                    Err(_) => {
                        Value::Bytes(bytes::Bytes::copy_from_slice(answer.response.as_bytes()))
                    }
                };
                caps.push((Value::from("challenge_response"), response));
                if let Some(salt) = &answer.client_salt {
                    caps.push((
                        Value::from("challenge_client_salt"),
                        Value::Bytes(bytes::Bytes::copy_from_slice(salt)),
                    ));
                }
            }
            send_packet(&mut writer, &again, encoder)
                .await
                .map_err(|e| upstream_error(plan, e))?;
        } else {
            // Not a challenge: it goes to the client as it came.
            let mut first_bytes = BytesMut::new();
            record.write_to(&mut first_bytes);
            first_bytes.extend_from_slice(&buf);
            buf = first_bytes;
        }
    }
    Ok(Upstream {
        reader,
        writer,
        buf,
    })
}
