//! Listening sockets xfwd did not bind itself: handed over by systemd
//! (socket activation: `LISTEN_FDS`, `LISTEN_FDNAMES`) or by the xfwd this
//! one replaces (an upgrade, see [`super::takeover`]).
//!
//! Inherited sockets are used as they are: their addresses are not bound
//! again, and an inherited Unix socket's file is not created or removed by
//! xfwd when it came from systemd (the socket unit owns it).
//!
//! Shards and inherited sockets: an address bound by xfwd has one
//! SO_REUSEPORT socket per shard, so the kernel spreads new connections.
//! An inherited address may come as one socket (systemd) or as one per
//! shard of the previous xfwd; [`Inherited::for_shard`] deals them out and
//! gives a shard that would get none a duplicate of one, so that every
//! shard accepts on every address (several shards waiting on one socket:
//! one of them wins each connection).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// Why inherited sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("socket activation: descriptor {index} ({name}) is not a listening TCP or Unix stream socket")]
    NotAStreamSocket { index: usize, name: String },
    #[error("socket activation: descriptor {index} ({name}): {source}")]
    Io {
        index: usize,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where an inherited socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// systemd's socket activation: its socket unit owns the socket.
    Systemd,
    /// The xfwd this one replaces: the socket is this process's from now.
    Xfwd,
}

/// One inherited TCP listening socket.
#[derive(Debug)]
pub struct InheritedTcp {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

/// One inherited Unix listening socket.
#[derive(Debug)]
pub struct InheritedUnix {
    pub listener: UnixListener,
    /// Its file (`None`: an abstract or unnamed socket).
    pub path: Option<PathBuf>,
    /// Whether the file is this process's to remove when it ends (not when
    /// systemd's socket unit made it).
    pub owned: bool,
}

/// The inherited listening sockets.
#[derive(Debug)]
pub struct Inherited {
    pub origin: Origin,
    pub tcp: Vec<InheritedTcp>,
    pub unix: Vec<InheritedUnix>,
    /// `--bind-metrics`'s socket, from the previous xfwd.
    pub metrics: Option<InheritedTcp>,
}

impl Inherited {
    /// Nothing inherited.
    pub fn none() -> Inherited {
        Inherited {
            origin: Origin::Systemd,
            tcp: Vec::new(),
            unix: Vec::new(),
            metrics: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.unix.is_empty() && self.metrics.is_none()
    }

    /// Takes the sockets systemd passed (`LISTEN_FDS`, checked against
    /// `LISTEN_PID`), once; the variables are removed so that children do
    /// not see them. Call before any thread starts (it changes the
    /// environment). TCP and Unix stream sockets are taken whatever their
    /// names (`LISTEN_FDNAMES` is only used in messages); anything else is
    /// an error.
    pub fn from_systemd() -> Result<Inherited, InheritError> {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|v| v.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        std::env::remove_var("LISTEN_FDNAMES");
        let mut fds = listenfd::ListenFd::from_env();
        let mut out = Inherited::none();
        for index in 0..fds.len() {
            let name = names
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("fd {}", index + 3));
            let io = |source| InheritError::Io {
                index,
                name: name.clone(),
                source,
            };
            if let Ok(Some(l)) = fds.take_tcp_listener(index) {
                let addr = l.local_addr().map_err(io)?;
                out.tcp.push(InheritedTcp { listener: l, addr });
            } else if let Ok(Some(l)) = fds.take_unix_listener(index) {
                let path = l
                    .local_addr()
                    .map_err(io)?
                    .as_pathname()
                    .map(|p| p.to_owned());
                out.unix.push(InheritedUnix {
                    listener: l,
                    path,
                    owned: false,
                });
            } else {
                return Err(InheritError::NotAStreamSocket { index, name });
            }
        }
        Ok(out)
    }

    /// The distinct TCP addresses, in order of first appearance.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for t in &self.tcp {
            if !out.contains(&t.addr) {
                out.push(t.addr);
            }
        }
        out
    }

    /// The Unix socket files.
    pub fn unix_paths(&self) -> Vec<PathBuf> {
        self.unix.iter().filter_map(|u| u.path.clone()).collect()
    }

    /// The TCP sockets shard `id` of `shards` accepts on: for each
    /// address, the sockets `j` with `j % shards == id`, or a duplicate of
    /// socket `id % k` when that leaves none (`k` sockets for the
    /// address).
    pub fn for_shard(&self, id: usize, shards: usize) -> std::io::Result<Vec<TcpListener>> {
        let shards = shards.max(1);
        let mut out = Vec::new();
        for addr in self.tcp_addrs() {
            let same: Vec<&InheritedTcp> = self.tcp.iter().filter(|t| t.addr == addr).collect();
            let mine: Vec<&InheritedTcp> = same
                .iter()
                .enumerate()
                .filter(|(j, _)| j % shards == id)
                .map(|(_, t)| *t)
                .collect();
            if mine.is_empty() {
                if let Some(t) = same.get(id % same.len().max(1)) {
                    out.push(t.listener.try_clone()?);
                }
            } else {
                for t in mine {
                    out.push(t.listener.try_clone()?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn listener(addr: &str) -> InheritedTcp {
        let l = TcpListener::bind(addr).unwrap();
        let addr = l.local_addr().unwrap();
        InheritedTcp { listener: l, addr }
    }

    /// The sockets' own addresses, local ports, per shard.
    fn dealt(inh: &Inherited, shards: usize) -> Vec<Vec<u16>> {
        (0..shards)
            .map(|i| {
                inh.for_shard(i, shards)
                    .unwrap()
                    .iter()
                    .map(|l| l.local_addr().unwrap().port())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn one_socket_is_shared_by_every_shard() {
        let mut inh = Inherited::none();
        inh.tcp.push(listener("127.0.0.1:0"));
        let port = inh.tcp[0].addr.port();
        assert_eq!(dealt(&inh, 3), vec![vec![port]; 3]);
        assert_eq!(inh.tcp_addrs().len(), 1);
    }

    #[test]
    fn sockets_of_one_address_are_dealt_out() {
        // Four sockets of one address (as a 4-shard xfwd hands over) to 2
        // shards: two each; to 6 shards: one each, two shards share.
        use std::os::fd::AsRawFd;
        let mut inh = Inherited::none();
        let first = listener("127.0.0.1:0");
        let addr = first.addr;
        inh.tcp.push(first);
        for _ in 0..3 {
            let l = inh.tcp[0].listener.try_clone().unwrap();
            inh.tcp.push(InheritedTcp { listener: l, addr });
        }
        let ino = |l: &TcpListener| nix::sys::stat::fstat(l.as_raw_fd()).unwrap().st_ino;
        for shards in [1, 2, 4, 6] {
            let total: usize = (0..shards)
                .map(|i| inh.for_shard(i, shards).unwrap().len())
                .sum();
            assert_eq!(total, 4.max(shards), "{shards} shards");
            for i in 0..shards {
                let got = inh.for_shard(i, shards).unwrap();
                assert!(!got.is_empty());
                assert!(got.iter().all(|l| ino(l) == ino(&inh.tcp[0].listener)));
            }
        }
    }

    #[test]
    fn without_listen_fds_nothing_is_inherited() {
        // The test harness has no LISTEN_FDS (and LISTEN_PID would not be
        // this process's anyway).
        if std::env::var_os("LISTEN_FDS").is_none() {
            assert!(Inherited::from_systemd().unwrap().is_empty());
        }
    }
}
