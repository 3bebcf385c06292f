//! Listeners: checks made once before the shards start, the per-shard
//! sockets, and the accept loops.
//!
//! Shard sockets set SO_REUSEPORT, so a second xfwd on the same port would
//! silently share it. Before any shard binds, the port is bound once without
//! SO_REUSEPORT: if anything holds it, that fails and xfwd says so.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::auth::PeerInfo;

use super::inherit::{Inherited, Origin};
use super::metrics::HandshakeResult;
use super::reload::Current;
use super::takeover::{SocketDesc, SocketKind};
use super::{conn, Live, ShardCtx, StartError};
use crate::config::Config;

/// Where a client came in; decides the auth module and what counts as a
/// private transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Unix,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Unix => "unix",
        }
    }
}

pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

fn bind_error(addr: String, e: std::io::Error) -> StartError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        StartError::AddrInUse { addr }
    } else {
        StartError::Bind { addr, source: e }
    }
}

/// What a server listens on, decided before any shard starts: the
/// inherited sockets it keeps, what it binds itself, and which Unix socket
/// files it removes when it ends.
pub(super) struct Plan {
    /// TCP addresses to bind (port 0 resolved), one socket per shard.
    pub bind_tcp: Vec<SocketAddr>,
    /// Unix socket paths to bind (on shard 0).
    pub bind_unix: Vec<PathBuf>,
    /// Every TCP address listened on, inherited ones first.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Every Unix socket listened on.
    pub unix_paths: Vec<PathBuf>,
    /// The Unix socket files this process removes when it ends: the ones it
    /// bound, and those the xfwd before it bound (systemd's belong to their
    /// socket unit).
    pub unix_owned: Vec<PathBuf>,
    /// The metrics endpoint's socket and address.
    pub metrics: Option<(std::net::TcpListener, SocketAddr)>,
    /// The inherited listening sockets kept.
    pub inherited: Arc<Inherited>,
}

/// Decides the listeners. Inherited sockets replace the default listener;
/// with listeners configured, sockets from the xfwd before this one are
/// kept where this one's configuration still listens (the others are
/// closed once it stops accepting). Probes what it will bind and removes stale Unix sockets.
pub(super) fn plan(config: &mut Config, mut inherited: Inherited) -> Result<Plan, StartError> {
    let any = !(inherited.tcp.is_empty() && inherited.unix.is_empty());
    if config.default_listener && any {
        // No listener of its own asked for: the inherited ones stand for
        // the default (from the xfwd before, they may be systemd's, which
        // it got by socket activation).
        config.tcp.clear();
    } else if inherited.origin == Origin::Xfwd {
        inherited
            .tcp
            .retain(|t| config.tcp.iter().any(|a| covers(&t.addr, a)));
        inherited
            .unix
            .retain(|u| u.path.as_ref().is_some_and(|p| config.unix.contains(p)));
    }
    if inherited.metrics.as_ref().map(|m| m.addr) != config.metrics {
        inherited.metrics = None;
    }
    let held = inherited.tcp_addrs();
    let held_unix = inherited.unix_paths();
    let to_bind: Vec<SocketAddr> = config
        .tcp
        .iter()
        .filter(|a| !held.iter().any(|h| covers(h, a)))
        .copied()
        .collect();
    let bind_unix: Vec<PathBuf> = config
        .unix
        .iter()
        .filter(|p| !held_unix.contains(p))
        .cloned()
        .collect();
    let bind_tcp = probe_tcp(&to_bind)?;
    prepare_unix(&bind_unix)?;
    let mut unix_owned = bind_unix.clone();
    unix_owned.extend(
        inherited
            .unix
            .iter()
            .filter(|u| u.owned)
            .filter_map(|u| u.path.clone()),
    );
    let metrics = match (config.metrics, inherited.metrics.take()) {
        (Some(_), Some(m)) => Some((m.listener, m.addr)),
        (Some(a), None) => Some(bind_metrics(&a)?),
        (None, _) => None,
    };
    Ok(Plan {
        tcp_addrs: held.iter().chain(&bind_tcp).copied().collect(),
        unix_paths: held_unix.iter().chain(&bind_unix).cloned().collect(),
        bind_tcp,
        bind_unix,
        unix_owned,
        metrics,
        inherited: Arc::new(inherited),
    })
}

/// Whether the inherited socket at `held` already listens where the
/// configuration's `addr` asks: the same address, or the same port on all
/// addresses (`0.0.0.0`, or `::`, which systemd's sockets take for both
/// families). So a configuration that says `bind-tcp = ["0.0.0.0:14501"]`
/// works as it is under a socket unit with `ListenStream=14501`.
fn covers(held: &SocketAddr, addr: &SocketAddr) -> bool {
    held == addr
        || (held.port() == addr.port()
            && held.ip().is_unspecified()
            && (held.is_ipv6() || addr.is_ipv4()))
}

/// Binds each address once without SO_REUSEPORT to prove it is free, and
/// resolves port 0 to the port the kernel picked. (Inherited addresses are
/// not probed: they are held already.)
pub(super) fn probe_tcp(addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, StartError> {
    let mut out = Vec::new();
    for a in addrs {
        let l = std::net::TcpListener::bind(a).map_err(|e| bind_error(a.to_string(), e))?;
        let local = l.local_addr().map_err(|e| bind_error(a.to_string(), e))?;
        if out.contains(&local) {
            return Err(StartError::AddrInUse {
                addr: format!("{a} (given twice)"),
            });
        }
        out.push(local);
    }
    Ok(out)
}

/// Binds the metrics endpoint (`--bind-metrics`), without SO_REUSEPORT;
/// returns it with its address (port 0 resolved).
pub(super) fn bind_metrics(
    addr: &SocketAddr,
) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    let err = |e| bind_error(format!("{addr} (--bind-metrics)"), e);
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

/// Refuses a Unix socket path that a live server holds; removes a stale one.
pub(super) fn prepare_unix(paths: &[PathBuf]) -> Result<(), StartError> {
    for p in paths {
        if std::fs::symlink_metadata(p).is_ok() {
            if crate::sessions::is_live(p) {
                return Err(StartError::AddrInUse {
                    addr: p.display().to_string(),
                });
            }
            std::fs::remove_file(p).map_err(|e| bind_error(p.display().to_string(), e))?;
        }
    }
    Ok(())
}

fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixListener, StartError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let err = |e| bind_error(path.display().to_string(), e);
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    sock.bind(&SockAddr::unix(path).map_err(err)?)
        .map_err(err)?;
    // xpra's default socket permissions: the owner only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    sock.listen(1024).map_err(err)?;
    Ok(sock.into())
}

/// A listening TCP socket with SO_REUSEPORT (one per shard) and
/// SO_REUSEADDR (so a restart is not refused while old connections sit in
/// TIME_WAIT).
fn bind_tcp(addr: &SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};

    let sock = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&(*addr).into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// A listening socket as the kernel has it, kept beside the shard's own
/// (a duplicate descriptor): what an upgrade hands to the next xfwd.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
    Metrics(std::net::TcpListener),
}

impl ListenSocket {
    /// What a takeover says of it, and its descriptor; `owned`: the Unix
    /// socket files this process would remove.
    pub fn describe(self, owned: &[PathBuf]) -> Option<(SocketDesc, std::os::fd::OwnedFd)> {
        let tcp = |l: std::net::TcpListener, kind| {
            let addr = l.local_addr().ok()?.to_string();
            Some((
                SocketDesc {
                    kind,
                    addr,
                    foreign_file: false,
                },
                l.into(),
            ))
        };
        match self {
            ListenSocket::Tcp(l) => tcp(l, SocketKind::Tcp),
            ListenSocket::Metrics(l) => tcp(l, SocketKind::Metrics),
            ListenSocket::Unix(l, path) => Some((
                SocketDesc {
                    kind: SocketKind::Unix,
                    addr: path.to_str()?.to_owned(),
                    foreign_file: !owned.contains(&path),
                },
                l.into(),
            )),
        }
    }
}

/// The listeners of one shard and a duplicate of each one's socket.
pub(super) struct ShardBound {
    pub listeners: Vec<Listener>,
    pub copies: Vec<ListenSocket>,
}

impl ShardBound {
    fn tcp(&mut self, l: std::net::TcpListener, what: &str) -> Result<(), StartError> {
        let err = |e| bind_error(what.to_owned(), e);
        l.set_nonblocking(true).map_err(err)?;
        let copy = l.try_clone().map_err(err)?;
        self.listeners
            .push(Listener::Tcp(TcpListener::from_std(l).map_err(err)?));
        self.copies.push(ListenSocket::Tcp(copy));
        Ok(())
    }

    fn unix(&mut self, l: std::os::unix::net::UnixListener, path: &Path) -> Result<(), StartError> {
        let err = |e| bind_error(path.display().to_string(), e);
        l.set_nonblocking(true).map_err(err)?;
        let copy = l.try_clone().map_err(err)?;
        self.listeners.push(Listener::Unix(
            UnixListener::from_std(l).map_err(err)?,
            path.to_owned(),
        ));
        self.copies.push(ListenSocket::Unix(copy, path.to_owned()));
        Ok(())
    }
}

/// The listeners of shard `id` of `shards`: every TCP address to bind
/// (SO_REUSEPORT spreads connections over the shards) and its share of the
/// inherited TCP sockets; Unix sockets, bound or inherited, on shard 0
/// only.
pub(super) fn bind_shard(
    id: usize,
    shards: usize,
    tcp: &[SocketAddr],
    unix: &[PathBuf],
    inherited: &Inherited,
) -> Result<ShardBound, StartError> {
    let mut out = ShardBound {
        listeners: Vec::new(),
        copies: Vec::new(),
    };
    for a in tcp {
        let l = bind_tcp(a).map_err(|e| bind_error(a.to_string(), e))?;
        out.tcp(l, &a.to_string())?;
    }
    let mine = inherited
        .for_shard(id, shards)
        .map_err(|e| bind_error("an inherited socket".into(), e))?;
    for l in mine {
        let what = l
            .local_addr()
            .map_or_else(|_| "an inherited socket".into(), |a| a.to_string());
        out.tcp(l, &what)?;
    }
    if id == 0 {
        for p in unix {
            out.unix(bind_unix(p)?, p)?;
        }
        for u in &inherited.unix {
            let path = u.path.clone().unwrap_or_default();
            let l = u
                .listener
                .try_clone()
                .map_err(|e| bind_error(path.display().to_string(), e))?;
            out.unix(l, &path)?;
        }
    }
    Ok(out)
}

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Accepts until the shard stops, or a new xfwd has taken the sockets
/// over (`accepting`); each connection runs as its own task and stops
/// with `stop`.
pub(super) async fn accept_loop(
    l: Listener,
    current: Arc<Current>,
    accepting: CancellationToken,
    stop: CancellationToken,
    live: Rc<Live>,
    shard: Rc<ShardCtx>,
) {
    // Refusals at accept are logged at most once a second per listener.
    let mut last_refusal_log: Option<std::time::Instant> = None;
    let mut refused_since_log = 0u64;
    loop {
        let accepted = tokio::select! {
            () = accepting.cancelled() => return,
            r = accept(&l) => r,
        };
        match accepted {
            Ok((stream, peer, kind)) => {
                shard.metrics.accepted();
                // The configuration now: the connection keeps it, whatever
                // a reload makes of it later.
                let shared = current.get();
                // A trusted front (PROXY protocol) carries many clients'
                // connections: counted globally only.
                let ip = peer.ip().filter(|ip| {
                    !shared
                        .config
                        .proxy_protocol_from
                        .iter()
                        .any(|c| c.contains(*ip))
                });
                let slot = match shared.admission.admit(ip) {
                    Ok(slot) => slot,
                    Err(refusal) => {
                        shard
                            .metrics
                            .handshake_ended(HandshakeResult::Limited, None);
                        refused_since_log += 1;
                        let now = std::time::Instant::now();
                        if last_refusal_log.is_none_or(|t| {
                            now.duration_since(t) >= std::time::Duration::from_secs(1)
                        }) {
                            tracing::warn!(
                                refused = refused_since_log,
                                "closed at accept: {refusal}"
                            );
                            last_refusal_log = Some(now);
                            refused_since_log = 0;
                        }
                        drop(stream);
                        continue;
                    }
                };
                let guard = (live.enter(), shard.metrics.open());
                let stop = stop.clone();
                let id = next_id();
                let shard = shard.clone();
                tokio::task::spawn_local(async move {
                    conn::serve(id, stream, peer, kind, shared, stop, slot, shard).await;
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE and friends: log, back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::select! {
                    () = accepting.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn accept(l: &Listener) -> std::io::Result<(conn::Stream, PeerInfo, ListenerKind)> {
    match l {
        Listener::Tcp(t) => {
            let (s, remote) = t.accept().await?;
            let _ = s.set_nodelay(true);
            let peer = PeerInfo::tcp(remote, s.local_addr().ok());
            Ok((conn::Stream::Tcp(s), peer, ListenerKind::Tcp))
        }
        Listener::Unix(u, path) => {
            let (s, _) = u.accept().await?;
            let peer = PeerInfo::unix(&s, Some(path.clone()));
            Ok((conn::Stream::Unix(s), peer, ListenerKind::Unix))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::covers;
    use std::net::SocketAddr;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_inherited_socket_on_all_addresses_covers_its_port() {
        assert!(covers(&a("127.0.0.1:14501"), &a("127.0.0.1:14501")));
        assert!(covers(&a("[::]:14501"), &a("0.0.0.0:14501")));
        assert!(covers(&a("[::]:14501"), &a("127.0.0.1:14501")));
        assert!(covers(&a("0.0.0.0:14501"), &a("127.0.0.1:14501")));
        assert!(!covers(&a("0.0.0.0:14501"), &a("[::1]:14501")));
        assert!(!covers(&a("[::]:14501"), &a("0.0.0.0:14502")));
        assert!(!covers(&a("127.0.0.1:14501"), &a("0.0.0.0:14501")));
    }
}
