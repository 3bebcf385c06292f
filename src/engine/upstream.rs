//! The session side: choosing where a client goes, connecting there, and the
//! hello the session gets (answering its challenge when the target carries a
//! password).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpStream, UnixStream};

use super::pump::ReadSizer;
use super::stream::{Stream, WsStream};
use super::Shared;
use crate::auth::{Accepted, SessionOptions, Target, TargetKind, Targets};
use crate::proxy::oneshot::MAX_LISTED;
use crate::proxy::{ConnError, Destination, Plan, Reachable};
use crate::sessions::helper::client::HelperClient;
use crate::sessions::helper::{Refusal, Reply, Request};
use crate::sessions::launch::{StartRequest, Started};
use crate::sessions::user::SessionUser;
use crate::sessions::{self, LocalSession};
use crate::wire::views::Hello;
use crate::wire::Value;

/// How long connecting to a session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the session helper may take to connect or list (its own
/// bound, and a little more).
const HELPER_WAIT: Duration =
    Duration::from_secs(crate::sessions::helper::OP_TIMEOUT.as_secs() + 1);

fn discover(shared: &Shared) -> Vec<LocalSession> {
    sessions::discover(&shared.socket_dirs, &shared.hostname, shared.uid)
}

async fn local(shared: &Arc<Shared>, wanted: Option<String>) -> Result<LocalSession, ConnError> {
    let shared2 = shared.clone();
    shared
        .blocking
        .run(move || sessions::choose(&discover(&shared2), wanted.as_deref()))
        .await?
        .map_err(|e| match e {
            // The one refusal a start on demand answers.
            sessions::RouteError::NoSessions => ConnError::NoSessions,
            e => ConnError::Route(e.to_string()),
        })
}

/// The user an accepted client's local sessions belong to (system-wide
/// mode): its auth module's uid and gid, never root.
fn session_user(accepted: &Accepted) -> Result<SessionUser, ConnError> {
    let s = accepted.sessions.as_ref();
    SessionUser::from_ids(s.and_then(|s| s.uid), s.and_then(|s| s.gid)).map_err(|e| {
        tracing::info!(user = %accepted.username, "not served: {e}");
        ConnError::Route(e.to_string())
    })
}

fn from_refusal(r: Refusal, target: &str) -> ConnError {
    match r {
        Refusal::NoSessions => ConnError::NoSessions,
        Refusal::Route(s) | Refusal::User(s) => ConnError::Route(s),
        Refusal::Start(s) => ConnError::Start(s),
        Refusal::Connect(error) => ConnError::Upstream {
            target: target.to_owned(),
            error,
        },
        r @ (Refusal::Invalid(_) | Refusal::Failed(_)) => {
            tracing::warn!("{r}");
            ConnError::Busy(r.to_string())
        }
    }
}

/// Asks the helper (on the blocking pool: it waits for the answer) and
/// takes the session socket that comes with a connection.
async fn ask_helper(
    shared: &Arc<Shared>,
    helper: &Arc<HelperClient>,
    request: Request,
    timeout: Duration,
) -> Result<(Reply, Option<Stream>), ConnError> {
    let h = helper.clone();
    let (reply, fd) = shared
        .blocking
        .run(move || h.call(&request, timeout))
        .await?
        .map_err(|e| {
            tracing::warn!("{e}");
            ConnError::Busy(e.to_string())
        })?;
    if let Reply::Refused { refusal } = reply {
        return Err(from_refusal(refusal, "the session"));
    }
    let stream = match fd {
        None => None,
        Some(fd) => {
            let std = std::os::unix::net::UnixStream::from(fd);
            let unix = std
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(std))
                .map_err(|e| ConnError::Upstream {
                    target: "the session".into(),
                    error: e.to_string(),
                })?;
            Some(Stream::Unix(unix))
        }
    };
    Ok((reply, stream))
}

/// A local session for the client: found in this process's socket dirs,
/// or (system-wide mode) chosen and connected by the helper as the user.
async fn local_for(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    wanted: Option<String>,
) -> Result<(LocalSession, Option<Stream>), ConnError> {
    let Some(helper) = &shared.helper else {
        return Ok((local(shared, wanted).await?, None));
    };
    let user = session_user(accepted)?;
    let request = Request::Connect {
        user,
        display: wanted.map(|w| w.trim_start_matches(':').to_owned()),
    };
    match ask_helper(shared, helper, request, HELPER_WAIT).await? {
        (Reply::Connected { display }, Some(stream)) => Ok((
            LocalSession {
                display,
                sockets: Vec::new(),
            },
            Some(stream),
        )),
        (other, _) => Err(ConnError::Busy(format!(
            "the session helper answered {other:?} to a connection"
        ))),
    }
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
        let shared2 = shared.clone();
        let display = session.display.clone();
        let e = shared
            .blocking
            .run(move || sessions::not_found(&discover(&shared2), &display))
            .await?;
        return Err(ConnError::Route(e.to_string()));
    }
    Err(ConnError::Upstream {
        target: format!("session :{}", session.display),
        error: last.map_or_else(|| "no socket".to_owned(), |e| e.to_string()),
    })
}

/// Chooses the destination for an accepted client; in system-wide mode
/// the session's socket comes with it (the helper connected as the user).
pub(super) async fn route(
    hello: &[Value],
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<(Plan, Option<Stream>), ConnError> {
    let wanted = Hello::parse(hello)
        .ok()
        .and_then(|h| h.requested_display())
        .map(str::to_owned);
    let sessions = accepted
        .sessions
        .as_ref()
        .ok_or_else(|| ConnError::Route("no sessions found".into()))?;
    let options: &SessionOptions = &sessions.session_options;
    let caps = options.caps();
    let target = sessions
        .select(wanted.as_deref())
        .map_err(|e| ConnError::Route(e.to_string()))?;
    let routed = match target {
        None => {
            let (local, stream) = local_for(shared, accepted, wanted).await?;
            let plan = Plan {
                destination: Destination::Local(local),
                username: None,
                password: options.password().cloned(),
                caps,
            };
            (plan, stream)
        }
        Some(t) => {
            let (destination, stream) = match &t.kind {
                TargetKind::Local { display } => {
                    let (local, stream) =
                        local_for(shared, accepted, Some(display.clone())).await?;
                    (Destination::Local(local), stream)
                }
                _ => (Destination::Target(t.clone()), None),
            };
            let plan = Plan {
                destination,
                username: t.username().map(str::to_owned),
                password: t.password().or(options.password()).cloned(),
                caps,
            };
            (plan, stream)
        }
    };
    Ok(routed)
}

/// Starts a session for an accepted client on the blocking pool (the
/// launcher waits for xpra), and the plan to reach it; in system-wide mode
/// the helper starts it as the user and connects.
pub(super) async fn start(
    request: StartRequest,
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<Box<(Started, Plan, Option<Stream>)>, ConnError> {
    let options = accepted.sessions.as_ref().map(|s| &s.session_options);
    let plan = |display: &str, sockets: Vec<PathBuf>| Plan {
        destination: Destination::Local(LocalSession {
            display: display.to_owned(),
            sockets,
        }),
        username: None,
        password: options.and_then(|o| o.password().cloned()),
        caps: options.map(SessionOptions::caps).unwrap_or_default(),
    };
    if let Some(helper) = &shared.helper {
        if !shared.config.start_sessions {
            return Err(ConnError::Start(crate::proxy::START_DISABLED.into()));
        }
        let user = session_user(accepted)?;
        let wait = Duration::from_secs(crate::sessions::launch::DEFAULT_START_TIMEOUT.as_secs())
            + HELPER_WAIT;
        let asked = Request::Start { user, request };
        return match ask_helper(shared, helper, asked, wait).await {
            Ok((
                Reply::Started {
                    display,
                    socket,
                    new,
                },
                Some(stream),
            )) => {
                let started = Started {
                    display: display.clone(),
                    socket,
                    new,
                };
                let p = plan(&display, Vec::new());
                Ok(Box::new((started, p, Some(stream))))
            }
            Ok((other, _)) => Err(ConnError::Busy(format!(
                "the session helper answered {other:?} to a start"
            ))),
            Err(e) => {
                tracing::info!("session start failed: {e}");
                Err(e)
            }
        };
    }
    let Some(launcher) = shared.launcher.clone() else {
        return Err(ConnError::Start(crate::proxy::START_DISABLED.into()));
    };
    let started = shared
        .blocking
        .run(move || launcher.start(&request))
        .await?
        .map_err(|e| {
            tracing::info!("session start failed: {e}");
            ConnError::Start(e.to_string())
        })?;
    let p = plan(&started.display, vec![started.socket.clone()]);
    Ok(Box::new((started, p, None)))
}

/// Where an accepted user may go, for `xpra info`: what [`route`] would
/// choose from (the live local sessions, or the targets of the user's auth
/// data), at most [`MAX_LISTED`]. Probing local sockets blocks: on the
/// blocking pool.
pub(super) async fn reachable(
    accepted: &Accepted,
    shared: &Arc<Shared>,
) -> Result<Vec<Reachable>, ConnError> {
    let Some(sessions) = &accepted.sessions else {
        return Ok(Vec::new());
    };
    match &sessions.targets {
        Targets::Listed(list) => Ok(list
            .iter()
            .take(MAX_LISTED)
            .map(Reachable::target)
            .collect()),
        Targets::Local if shared.helper.is_some() => {
            let Some(helper) = &shared.helper else {
                return Ok(Vec::new());
            };
            let user = session_user(accepted)?;
            match ask_helper(shared, helper, Request::Live { user }, HELPER_WAIT).await? {
                (Reply::Live { displays }, _) => Ok(displays
                    .iter()
                    .take(MAX_LISTED)
                    .map(|d| Reachable::local(d))
                    .collect()),
                (other, _) => Err(ConnError::Busy(format!(
                    "the session helper answered {other:?} to a listing"
                ))),
            }
        }
        Targets::Local => {
            let shared2 = shared.clone();
            let live = shared
                .blocking
                .run(move || {
                    let mut found = discover(&shared2);
                    found.truncate(MAX_LISTED);
                    sessions::live(&found)
                })
                .await?;
            Ok(live.iter().map(|s| Reachable::local(&s.display)).collect())
        }
    }
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

/// Opens the connection to the plan's destination (the hello and the
/// session's challenge are the core's business).
pub(super) async fn connect(plan: &Plan, shared: &Arc<Shared>) -> Result<Stream, ConnError> {
    match &plan.destination {
        Destination::Local(s) => local_connect(s, shared).await,
        Destination::Target(t) => {
            connect_target(t, shared)
                .await
                .map_err(|e| ConnError::Upstream {
                    target: plan.destination.describe(),
                    error: e.to_string(),
                })
        }
    }
}
