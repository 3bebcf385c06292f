//! The session side: choosing where a client goes (`sessions::router`),
//! opening it through the seams of `sessions::access` (this process's own
//! sessions, or the privileged helper's in system-wide mode) or connecting
//! to a target, and the hello the session gets (answering its challenge
//! when the target carries a password).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpStream, UnixStream};

use super::pump::ReadSizer;
use super::stream::{Stream, WsStream};
use super::Shared;
use crate::auth::{Accepted, Target, TargetKind};
use crate::proxy::oneshot::MAX_LISTED;
use crate::proxy::{ConnError, Destination, Plan, Reachable};
use crate::sessions::access::{Ids, Opened, Refusal};
use crate::sessions::balance;
use crate::sessions::launch::{StartRequest, Started};
use crate::sessions::router::{self, Place};
use crate::sessions::LocalSession;
use crate::wire::views::Hello;
use crate::wire::Value;

/// How long connecting to a session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to one host of a pool may take (name lookup, TCP,
/// TLS and WebSocket included) before the next is tried.
pub(super) const POOL_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn from_refusal(r: Refusal) -> ConnError {
    match r {
        Refusal::NoSessions => ConnError::NoSessions,
        Refusal::Route(s) | Refusal::User(s) => ConnError::Route(s),
        Refusal::Start(s) => ConnError::Start(s),
        Refusal::Connect(error) => ConnError::Upstream {
            target: "the session".to_owned(),
            error,
        },
        r @ (Refusal::Invalid(_) | Refusal::Failed(_)) => {
            tracing::warn!("{r}");
            ConnError::Busy(r.to_string())
        }
    }
}

fn ids(accepted: &Accepted) -> Ids {
    let s = accepted.sessions.as_ref();
    Ids {
        uid: s.and_then(|s| s.uid),
        gid: s.and_then(|s| s.gid),
    }
}

/// A session opened by a connector: its plan's local session, and its
/// socket when the connector connected (the helper).
fn opened(o: Opened) -> Result<(LocalSession, Option<Stream>), ConnError> {
    match o {
        Opened::Sockets(s) => Ok((s, None)),
        Opened::Connected { display, socket } => {
            let std = std::os::unix::net::UnixStream::from(socket);
            let unix = std
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(std))
                .map_err(|e| ConnError::Upstream {
                    target: format!("session :{display}"),
                    error: e.to_string(),
                })?;
            Ok((
                LocalSession {
                    display,
                    sockets: Vec::new(),
                },
                Some(Stream::Unix(unix)),
            ))
        }
    }
}

/// Chooses the destination for an accepted client; a local session comes
/// opened (connected already when the helper connected as the user).
pub(super) async fn route(
    hello: &[Value],
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<(Plan, Option<Stream>), ConnError> {
    let wanted = Hello::parse(hello)
        .ok()
        .and_then(|h| h.requested_display())
        .map(str::to_owned);
    let r = router::route(
        accepted.sessions.as_ref(),
        wanted.as_deref(),
        &shared.config.pools,
    )
    .map_err(ConnError::Route)?;
    let (destination, stream) = match r.place {
        Place::Target(t) => (Destination::Target(t), None),
        Place::Pool(pool) => {
            let members = {
                let health = shared.health.lock();
                balance::order(
                    &pool,
                    &accepted.username,
                    shared.load.as_ref(),
                    &health,
                    std::time::Instant::now(),
                )
            };
            tracing::debug!(
                pool = %pool.name,
                order = %members.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
                "pool hosts in the order tried"
            );
            (
                Destination::Pool {
                    name: pool.name,
                    members,
                },
                None,
            )
        }
        Place::Local(display) => {
            let connector = shared.connector.clone();
            let ids = r.ids;
            let o = shared
                .blocking
                .run(move || connector.open(ids, display.as_deref()))
                .await?
                .map_err(from_refusal)?;
            let (local, stream) = opened(o)?;
            (Destination::Local(local), stream)
        }
    };
    let plan = Plan {
        destination,
        username: r.username,
        password: r.password,
        caps: r.caps,
    };
    Ok((plan, stream))
}

/// Starts a session for an accepted client (on the blocking pool: the
/// launcher waits for xpra), and the plan to reach it, opened.
pub(super) async fn start(
    request: StartRequest,
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<Box<(Started, Plan, Option<Stream>)>, ConnError> {
    let Some(launcher) = shared.launcher.clone() else {
        return Err(ConnError::Start(crate::proxy::START_DISABLED.into()));
    };
    let ids = ids(accepted);
    let (started, o) = shared
        .blocking
        .run(move || launcher.start(ids, &request))
        .await?
        .map_err(|e| {
            tracing::info!("session start failed: {e}");
            from_refusal(e)
        })?;
    let (local, stream) = opened(o)?;
    let options = accepted.sessions.as_ref().map(|s| &s.session_options);
    let plan = Plan {
        destination: Destination::Local(local),
        username: None,
        password: options.and_then(|o| o.password().cloned()),
        caps: options.map(|o| o.caps()).unwrap_or_default(),
    };
    Ok(Box::new((started, plan, stream)))
}

/// Where an accepted user may go, for `xpra info`: what [`route`] would
/// choose from (the live local sessions, or the targets of the user's auth
/// data), at most [`MAX_LISTED`].
pub(super) async fn reachable(
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<Vec<Reachable>, ConnError> {
    if let Some(list) = router::listed(accepted.sessions.as_ref(), MAX_LISTED) {
        return Ok(list.into_iter().map(Reachable::target).collect());
    }
    let connector = shared.connector.clone();
    let ids = ids(accepted);
    let live = shared
        .blocking
        .run(move || connector.live(ids, MAX_LISTED))
        .await?
        .map_err(from_refusal)?;
    Ok(live.iter().map(|d| Reachable::local(d)).collect())
}

/// Connects to the first socket of a local session that answers. When none
/// does (all stale), the client is told which sessions are live.
async fn local_connect(session: &LocalSession, shared: &Arc<Shared>) -> Result<Stream, ConnError> {
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
        let connector = shared.connector.clone();
        let display = session.display.clone();
        let r = shared
            .blocking
            .run(move || connector.stale(Ids::default(), &display))
            .await?;
        return Err(from_refusal(r));
    }
    Err(ConnError::Upstream {
        target: format!("session :{}", session.display),
        error: last.map_or_else(|| "no socket".to_owned(), |e| e.to_string()),
    })
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
        TargetKind::Pool { .. } => Err(std::io::Error::other("unresolved pool target")),
    }
}

async fn unix(path: &std::path::Path) -> std::io::Result<Stream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(Stream::Unix(s))
}

/// Opens the connection to the plan's destination (the hello and the
/// session's challenge are the core's business); for a pool, the member
/// connected too.
pub(super) async fn connect(
    plan: &Plan,
    shared: &Arc<Shared>,
) -> Result<(Stream, Option<Target>), ConnError> {
    match &plan.destination {
        Destination::Local(s) => Ok((local_connect(s, shared).await?, None)),
        Destination::Target(t) => connect_target(t, shared)
            .await
            .map(|s| (s, None))
            .map_err(|e| ConnError::Upstream {
                target: plan.destination.describe(),
                error: e.to_string(),
            }),
        Destination::Pool { name, members } => pool_connect(name, members, shared).await,
    }
}

/// Tries the pool's members in turn (in [`balance::order`]'s order): the
/// first that connects within [`POOL_CONNECT_TIMEOUT`] serves; each that
/// fails is marked down in the health table (skipped for a while by the
/// next users).
async fn pool_connect(
    name: &str,
    members: &[Target],
    shared: &Arc<Shared>,
) -> Result<(Stream, Option<Target>), ConnError> {
    let gauge = |shared: &Shared| {
        if let Some(m) = &shared.metrics {
            let down = shared
                .health
                .lock()
                .down_count(members, std::time::Instant::now());
            m.pool_hosts_down(name, down);
        }
    };
    for member in members {
        let key = member.host_key().unwrap_or_default();
        let error = match tokio::time::timeout(POOL_CONNECT_TIMEOUT, connect_target(member, shared))
            .await
        {
            Ok(Ok(stream)) => {
                let was_down = {
                    let mut health = shared.health.lock();
                    let was = health.is_down(&key, std::time::Instant::now());
                    health.succeeded(&key);
                    was
                };
                if was_down {
                    tracing::info!(pool = name, host = %member, "pool host is back");
                }
                gauge(shared);
                return Ok((stream, Some(member.clone())));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {} s", POOL_CONNECT_TIMEOUT.as_secs()),
        };
        let backoff = shared.health.lock().failed(&key, std::time::Instant::now());
        tracing::warn!(
            pool = name,
            host = %member,
            "pool host failed: {error}; tried after the others for {} s",
            backoff.as_secs()
        );
    }
    gauge(shared);
    Err(ConnError::PoolDown(name.to_owned()))
}
