//! What the auth modules know about the connection they authenticate.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::transport::http::Headers;

/// The transport a client came in on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    #[default]
    Tcp,
    Unix,
    Ssl,
    Ws,
    Wss,
}

impl Transport {
    /// xpra's socket type name (`tcp`, `unix-domain`, `ssl`, `ws`, `wss`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix-domain",
            Transport::Ssl => "ssl",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Whether nobody between the client and xfwd can read the traffic
    /// (Unix sockets, TLS): where the `xor` digest may be used.
    pub fn is_private(self) -> bool {
        matches!(self, Transport::Unix | Transport::Ssl | Transport::Wss)
    }
}

/// The client's side of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub transport: Transport,
    /// The client's address (TCP-based transports).
    pub remote: Option<SocketAddr>,
    /// The listener's address (TCP-based transports).
    pub local: Option<SocketAddr>,
    /// The listening socket's path (Unix sockets).
    pub socket_path: Option<PathBuf>,
    /// The client process's credentials (Unix sockets, `SO_PEERCRED`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    /// The address the connection really came from when a trusted PROXY
    /// protocol front replaced `remote` with its client's (the front's
    /// address); `None` without such a front.
    pub via: Option<SocketAddr>,
    /// The request headers of a WebSocket upgrade (`ws`, `wss`), for the
    /// `http-header` module.
    pub http_headers: Option<Arc<Headers>>,
}

impl PeerInfo {
    pub fn tcp(remote: SocketAddr, local: Option<SocketAddr>) -> PeerInfo {
        PeerInfo {
            transport: Transport::Tcp,
            remote: Some(remote),
            local,
            ..PeerInfo::default()
        }
    }

    /// A Unix-socket peer with the credentials read from `fd`
    /// (`SO_PEERCRED`); without them when the kernel does not say.
    pub fn unix(fd: &impl AsFd, socket_path: Option<PathBuf>) -> PeerInfo {
        let creds = unix_peer_credentials(fd).ok();
        PeerInfo {
            transport: Transport::Unix,
            socket_path,
            uid: creds.map(|c| c.0),
            gid: creds.map(|c| c.1),
            pid: creds.map(|c| c.2),
            ..PeerInfo::default()
        }
    }

    /// The address of the host at the other end of the socket (the front
    /// itself behind a PROXY protocol front).
    pub fn immediate(&self) -> Option<SocketAddr> {
        self.via.or(self.remote)
    }

    /// The source address the throttle keys on.
    pub fn ip(&self) -> Option<IpAddr> {
        self.remote.map(|a| a.ip())
    }

    /// Whether a password may travel in the clear (the `xor` digest): an
    /// encrypted transport or a Unix socket, or a client on this host's
    /// loopback (as xpra's client allows: the bytes never leave the host).
    /// Behind a PROXY protocol front the remote is the original client's
    /// address, so only a client of this host counts.
    pub fn is_private(&self) -> bool {
        self.transport.is_private() || self.remote.is_some_and(|a| a.ip().is_loopback())
    }
}

/// `(uid, gid, pid)` of the process at the other end of a Unix socket.
pub fn unix_peer_credentials(fd: &impl AsFd) -> std::io::Result<(u32, u32, i32)> {
    let c = nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok((c.uid(), c.gid(), c.pid()))
}

/// xpra's description of a connection (`str(SocketConnection)`):
/// `tcp socket: 127.0.0.1:14500 <- 127.0.0.1:40000`.
impl std::fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.transport.name();
        match (self.remote, self.local, &self.socket_path) {
            (Some(r), Some(l), _) => write!(f, "{kind} socket: {l} <- {r}")?,
            (Some(r), None, _) => write!(f, "{kind} socket: <- {r}")?,
            (None, _, Some(p)) => write!(f, "{kind} socket:{}", p.display())?,
            (None, _, None) => write!(f, "{kind} socket")?,
        };
        if self.remote.is_none() {
            if let (Some(uid), Some(pid)) = (self.uid, self.pid) {
                write!(f, " (uid {uid}, pid {pid})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_like_xpra() {
        let p = PeerInfo::tcp(
            "127.0.0.1:40000".parse().unwrap(),
            Some("127.0.0.1:14500".parse().unwrap()),
        );
        assert_eq!(
            p.to_string(),
            "tcp socket: 127.0.0.1:14500 <- 127.0.0.1:40000"
        );
        // On the loopback: a password in the clear stays on this host.
        assert!(p.is_private());
        assert_eq!(p.ip(), Some("127.0.0.1".parse().unwrap()));
        let remote = PeerInfo::tcp(
            "192.0.2.7:40000".parse().unwrap(),
            Some("127.0.0.1:14500".parse().unwrap()),
        );
        assert!(!remote.is_private());
    }

    #[test]
    fn unix_credentials() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = PeerInfo::unix(&a, Some("/tmp/x.sock".into()));
        assert_eq!(p.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(p.gid, Some(nix::unistd::getgid().as_raw()));
        assert!(p.is_private());
        assert!(p
            .to_string()
            .starts_with("unix-domain socket:/tmp/x.sock (uid "));
    }
}
