//! Upgrades without dropping anyone: a new xfwd takes the listening
//! sockets over from the running one (`xfwd --takeover=CONTROL_SOCKET`),
//! then the old one stops accepting and drains its connections.
//!
//! Over the old xfwd's control socket (only its user and root may use it):
//!
//! 1. new -> old: `{"cmd":"takeover","drain_s":N}`;
//! 2. old -> new: `{"ok":true,"sockets":[{"kind":"tcp","addr":...},...],
//!    "server":{...}}`, with every listening socket's descriptor attached
//!    (`SCM_RIGHTS`), in the order of `sockets`: each shard's TCP sockets
//!    (the same sockets, not new ones: their accept queues carry over, so
//!    no connection is refused), the Unix sockets, the metrics endpoint's;
//! 3. the new xfwd starts its shards on them (and binds whatever its own
//!    configuration adds), then, listening, says
//!    `{"cmd":"takeover-done"}`;
//! 4. old -> new: `{"ok":true,"draining":COUNT}`; the old xfwd stops
//!    accepting (the sockets stay open in the new one), leaves its Unix
//!    socket files to the new one, and ends once its last connection has
//!    (or after `drain_s` seconds, telling whoever is left why).
//!
//! If the new xfwd fails before step 3 (a bad configuration, a port it
//! cannot bind), it closes the control connection and the old one goes on
//! as if nothing had happened.
//!
//! The descriptors travel with `crate::fdpass` (rustix's `sendmsg`) and
//! rustix's `recvmsg` (safe wrappers that give `OwnedFd`s).

use std::io::{BufRead, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::control::{Request, Response};
use super::inherit::{Inherited, InheritedTcp, InheritedUnix, Origin};

/// The most descriptors one takeover hands over (the kernel's limit per
/// message is 253).
pub const MAX_SOCKETS: usize = 240;
/// How long the new xfwd waits for each answer of the old one.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// The longest answer line accepted.
const MAX_ANSWER: usize = 256 * 1024;

/// What a handed-over descriptor is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    /// An xpra listener (TCP: every protocol the port sniffs).
    Tcp,
    /// A Unix socket listener (`addr`: its path).
    Unix,
    /// The `--bind-metrics` endpoint.
    Metrics,
}

/// One handed-over descriptor, as the answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketDesc {
    pub kind: SocketKind,
    pub addr: String,
    /// A Unix socket whose file is not xfwd's to remove (systemd's socket
    /// unit made it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign_file: bool,
}

/// Why a takeover failed (the old xfwd goes on serving).
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("--takeover: cannot reach the running xfwd at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--takeover: talking to the running xfwd at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--takeover: the running xfwd at {path} refused: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("--takeover: the running xfwd at {path} answered {why}")]
    Protocol { path: PathBuf, why: String },
}

/// Reads one line (at most [`MAX_ANSWER`] bytes) and every descriptor that
/// arrives with it.
fn recv_line_with_fds(s: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS + 8))];
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            s.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(got) = m {
                fds.extend(got);
            }
        }
        let data = buf.get(..r.bytes).unwrap_or_default();
        if data.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = data.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(data.get(..end).unwrap_or_default());
            return Ok((line, fds));
        }
        line.extend_from_slice(data);
        if line.len() > MAX_ANSWER {
            return Err(std::io::Error::other("answer line too long"));
        }
    }
}

/// A takeover under way: the sockets are here; the old xfwd accepts still
/// until [`Pending::commit`].
#[derive(Debug)]
pub struct Pending {
    stream: UnixStream,
    path: PathBuf,
    /// The old xfwd's pid.
    pub pid: Option<u32>,
    /// The old xfwd's control socket (a new one at the same path replaces
    /// it).
    pub control_socket: Option<PathBuf>,
    inherited: Option<Inherited>,
}

impl Pending {
    /// The handed-over sockets (once).
    pub fn take_sockets(&mut self) -> Inherited {
        self.inherited.take().unwrap_or_else(Inherited::none)
    }

    /// Tells the old xfwd that this one listens: it stops accepting and
    /// drains. Returns how many connections it drains.
    pub fn commit(mut self) -> Result<usize, TakeoverError> {
        let io = |source| TakeoverError::Io {
            path: self.path.clone(),
            source,
        };
        let line = format!("{}\n", serde_json::json!({"cmd": "takeover-done"}));
        self.stream.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = Vec::new();
        std::io::BufReader::new((&self.stream).take(MAX_ANSWER as u64))
            .read_until(b'\n', &mut answer)
            .map_err(io)?;
        let r: Response = serde_json::from_slice(&answer).map_err(|e| TakeoverError::Protocol {
            path: self.path.clone(),
            why: format!("something that is not a response ({e})"),
        })?;
        if !r.ok {
            return Err(TakeoverError::Refused {
                path: self.path.clone(),
                why: r.error.unwrap_or_default(),
            });
        }
        Ok(r.draining.unwrap_or(0))
    }
}

/// Asks the xfwd listening on control socket `path` for its sockets; it
/// drains for at most `drain` once the takeover is committed.
pub fn request(path: &Path, drain: Duration) -> Result<Pending, TakeoverError> {
    let stream = UnixStream::connect(path).map_err(|source| TakeoverError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let io = |source| TakeoverError::Io {
        path: path.to_owned(),
        source,
    };
    stream.set_read_timeout(Some(ANSWER_DEADLINE)).map_err(io)?;
    let request = Request::Takeover {
        drain_s: drain.as_secs(),
    };
    let line = format!(
        "{}\n",
        serde_json::to_string(&request).map_err(|e| io(std::io::Error::other(e)))?
    );
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let (answer, fds) = recv_line_with_fds(&stream).map_err(io)?;
    let protocol = |why: String| TakeoverError::Protocol {
        path: path.to_owned(),
        why,
    };
    let r: Response = serde_json::from_slice(&answer)
        .map_err(|e| protocol(format!("something that is not a response ({e})")))?;
    if !r.ok {
        return Err(TakeoverError::Refused {
            path: path.to_owned(),
            why: r.error.unwrap_or_default(),
        });
    }
    let descs = r.sockets.unwrap_or_default();
    if descs.len() != fds.len() {
        return Err(protocol(format!(
            "{} sockets but sent {} descriptors",
            descs.len(),
            fds.len()
        )));
    }
    let mut inherited = Inherited::none();
    inherited.origin = Origin::Xfwd;
    for (d, fd) in descs.into_iter().zip(fds) {
        match d.kind {
            SocketKind::Tcp | SocketKind::Metrics => {
                let listener = std::net::TcpListener::from(fd);
                let addr: SocketAddr = listener
                    .local_addr()
                    .map_err(|e| protocol(format!("a TCP socket without an address: {e}")))?;
                let t = InheritedTcp { listener, addr };
                if d.kind == SocketKind::Metrics {
                    inherited.metrics = Some(t);
                } else {
                    inherited.tcp.push(t);
                }
            }
            SocketKind::Unix => {
                let listener = std::os::unix::net::UnixListener::from(fd);
                inherited.unix.push(InheritedUnix {
                    listener,
                    path: Some(PathBuf::from(d.addr)),
                    owned: !d.foreign_file,
                });
            }
        }
    }
    let server = r.server;
    Ok(Pending {
        stream,
        path: path.to_owned(),
        pid: server.as_ref().map(|s| s.pid),
        control_socket: server.map(|s| PathBuf::from(s.control_socket)),
        inherited: Some(inherited),
    })
}

/// The old xfwd's side: its listening sockets, and whether it has handed
/// them over.
#[derive(Debug)]
pub(crate) struct Handover {
    sockets: Vec<(SocketDesc, OwnedFd)>,
    busy: AtomicBool,
    handed_over: AtomicBool,
    /// Cancelled at the handover: the accept loops and the metrics
    /// endpoint stop.
    accepting: CancellationToken,
}

/// Holds the one takeover under way; ends it when dropped unless it was
/// committed.
pub(crate) struct Busy<'a>(&'a Handover);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if !self.0.handed_over() {
            self.0.busy.store(false, Ordering::SeqCst);
        }
    }
}

impl Handover {
    pub fn new(sockets: Vec<(SocketDesc, OwnedFd)>, accepting: CancellationToken) -> Handover {
        Handover {
            sockets,
            busy: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            accepting,
        }
    }

    /// Starts a takeover, unless one is under way or done.
    pub fn begin(&self) -> Option<Busy<'_>> {
        self.busy
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Busy(self))
    }

    /// What to send: the descriptions and the descriptors, in one order.
    pub fn sockets(&self) -> (Vec<SocketDesc>, Vec<BorrowedFd<'_>>) {
        self.sockets
            .iter()
            .map(|(d, fd)| (d.clone(), fd.as_fd()))
            .unzip()
    }

    /// The new xfwd listens: stop accepting.
    pub fn commit(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
        self.accepting.cancel();
    }

    /// The sockets (and Unix socket files) are the new xfwd's.
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }
}

/// The command line of the xfwd that takes over from this one on SIGUSR2
/// (an upgrade in place, as under systemd): this process's arguments
/// (`args`, without the program), less any `--takeover` and
/// `--drain-timeout` of its own, plus `--takeover=CONTROL`.
pub fn successor_args(args: &[std::ffi::OsString], control: &Path) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        let text = a.to_string_lossy();
        if text == "--takeover" || text == "--drain-timeout" {
            skip_value = true;
            continue;
        }
        if text.starts_with("--takeover=") || text.starts_with("--drain-timeout=") {
            continue;
        }
        out.push(a.clone());
    }
    let mut t = std::ffi::OsString::from("--takeover=");
    t.push(control.as_os_str());
    out.push(t);
    out
}

/// The program to run for the successor: `argv[0]` when it is a path (it
/// names the installed binary, which an upgrade has replaced; this
/// process's own executable may be a deleted file by now), else this
/// process's executable.
pub fn successor_program(argv0: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    match argv0 {
        Some(a) if Path::new(a).components().count() > 1 => Some(PathBuf::from(a)),
        _ => std::env::current_exe().ok(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_successor_takes_over_from_this_control_socket() {
        let args: Vec<std::ffi::OsString> = [
            "--config=/etc/xfwd/xfwd.toml",
            "--takeover",
            "/run/xfwd/control-1.sock",
            "--drain-timeout=30",
            "--cores=2",
            "--takeover=/run/xfwd/control-2.sock",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let got = successor_args(&args, Path::new("/run/xfwd/control-3.sock"));
        assert_eq!(
            got,
            [
                "--config=/etc/xfwd/xfwd.toml",
                "--cores=2",
                "--takeover=/run/xfwd/control-3.sock"
            ]
            .iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
        );
        assert_eq!(
            successor_program(Some("/usr/bin/xfwd".as_ref())),
            Some(PathBuf::from("/usr/bin/xfwd"))
        );
        assert_eq!(
            successor_program(Some("xfwd".as_ref())),
            std::env::current_exe().ok()
        );
    }

    #[test]
    fn descriptors_travel_with_the_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let line = format!("{{\"ok\":true,\"pad\":\"{}\"}}\n", "x".repeat(40_000));
        let sender = std::thread::spawn(move || {
            let n = crate::fdpass::send_with_fds(
                a.as_fd(),
                line.as_bytes(),
                &[l1.as_fd(), l2.as_fd()],
                rustix::net::SendFlags::empty(),
            )
            .unwrap();
            // The rest of a long line, plainly.
            (&a).write_all(&line.as_bytes()[n..]).unwrap();
            (l1.local_addr().unwrap(), l2.local_addr().unwrap())
        });
        let (got, fds) = recv_line_with_fds(&b).unwrap();
        let (a1, a2) = sender.join().unwrap();
        assert_eq!(got.len(), 40_000 + 20);
        assert_eq!(fds.len(), 2);
        let r1 = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(r1.local_addr().unwrap(), a1);
        assert_ne!(a1, a2);
        // The received socket is the same one: a connection to its address
        // is accepted on it.
        let _c = std::net::TcpStream::connect(a1).unwrap();
        assert!(r1.accept().is_ok());
    }
}
