//! Listeners: checks made once before the shards start, the per-shard
//! sockets, and the accept loops.
//!
//! glommio always sets SO_REUSEPORT, so a second xfwd on the same port would
//! silently share it. Before any shard binds, the port is bound once without
//! SO_REUSEPORT: if anything holds it, that fails and xfwd says so.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};

use crate::auth::PeerInfo;

use super::stop::StopSignal;
use super::{conn, Shared, StartError};

/// Where a client came in; decides the auth module and what counts as a
/// private transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Unix,
}

pub(super) enum Listener {
    Tcp(TcpListener),
    /// A Unix-socket listener. glommio's `UnixStream` exposes no file
    /// descriptor, and auth needs the peer's credentials (SO_PEERCRED), so
    /// the listening socket is driven through glommio's `TcpListener`:
    /// accept(2) and the stream's recv/send are the same for both families.
    Unix(TcpListener, PathBuf),
}

fn bind_error(addr: String, e: std::io::Error) -> StartError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        StartError::AddrInUse { addr }
    } else {
        StartError::Bind { addr, source: e }
    }
}

/// Binds each address once without SO_REUSEPORT to prove it is free, and
/// resolves port 0 to the port the kernel picked.
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

fn bind_unix(path: &Path) -> Result<TcpListener, StartError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let err = |e| bind_error(path.display().to_string(), e);
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    sock.bind(&SockAddr::unix(path).map_err(err)?)
        .map_err(err)?;
    // xpra's default socket permissions: the owner only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    sock.listen(1024).map_err(err)?;
    Ok(into_glommio_listener(sock))
}

/// Hands a bound, listening socket to glommio.
fn into_glommio_listener(sock: socket2::Socket) -> TcpListener {
    use std::os::fd::IntoRawFd;
    let fd = sock.into_raw_fd();
    // SAFETY: `fd` is a bound, listening socket that we own: `into_raw_fd`
    // gave up socket2's ownership, and `from_raw_fd` takes it over, so the
    // descriptor is closed exactly once, by the listener.
    #[allow(unsafe_code)]
    unsafe {
        <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }
}

/// The credentials of the peer of an accepted Unix-socket connection.
fn unix_peer(stream: &TcpStream, path: &Path) -> PeerInfo {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this
    // borrow (it is only used for the getsockopt call inside).
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    PeerInfo::unix(&fd, Some(path.to_owned()))
}

/// A listening TCP socket with SO_REUSEPORT (one per shard) and
/// SO_REUSEADDR (so a restart is not refused while old connections sit in
/// TIME_WAIT; glommio's own `bind` sets only the former).
fn bind_tcp(addr: &SocketAddr) -> std::io::Result<TcpListener> {
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
    Ok(into_glommio_listener(sock))
}

/// The listeners of shard `id`: every TCP address (SO_REUSEPORT spreads
/// connections over the shards); Unix sockets on shard 0 only.
pub(super) fn bind_shard(
    id: usize,
    tcp: &[SocketAddr],
    unix: &[PathBuf],
) -> Result<Vec<Listener>, StartError> {
    let mut out = Vec::new();
    for a in tcp {
        let l = bind_tcp(a).map_err(|e| bind_error(a.to_string(), e))?;
        out.push(Listener::Tcp(l));
    }
    if id == 0 {
        for p in unix {
            out.push(Listener::Unix(bind_unix(p)?, p.clone()));
        }
    }
    Ok(out)
}

/// Tracks one live connection for the shard's graceful stop.
struct LiveGuard(Rc<Cell<usize>>);

impl LiveGuard {
    fn new(live: &Rc<Cell<usize>>) -> LiveGuard {
        live.set(live.get() + 1);
        LiveGuard(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Accepts until the shard stops; each connection runs as its own task.
pub(super) async fn accept_loop(
    l: Listener,
    shared: Arc<Shared>,
    stop: Rc<StopSignal>,
    live: Rc<Cell<usize>>,
) {
    loop {
        let accepted = future::or(
            async {
                Some(match &l {
                    Listener::Tcp(t) => t.accept().await.map(|s| {
                        let _ = s.set_nodelay(true);
                        let peer = match s.peer_addr() {
                            Ok(remote) => PeerInfo::tcp(remote, s.local_addr().ok()),
                            Err(_) => PeerInfo::default(),
                        };
                        (conn::Stream::Tcp(s), peer, ListenerKind::Tcp)
                    }),
                    Listener::Unix(u, path) => u.accept().await.map(|s| {
                        let peer = unix_peer(&s, path);
                        (conn::Stream::Tcp(s), peer, ListenerKind::Unix)
                    }),
                })
            },
            async {
                stop.stopped().await;
                None
            },
        )
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer, kind))) => {
                let guard = LiveGuard::new(&live);
                let shared = shared.clone();
                let stop = stop.clone();
                let id = next_id();
                glommio::spawn_local(async move {
                    conn::serve(id, stream, peer, kind, shared, stop).await;
                    drop(guard);
                })
                .detach();
            }
            Some(Err(e)) => {
                // EMFILE and friends: log, back off, keep serving.
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
