//! xfwd's side of the helper: starting it (as root, before the drop), and
//! one request at a time per caller (blocking: the blocking pool runs it).

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

use super::{
    decode, encode, HelperConfig, Refusal, Reply, Request, HELPER_SUBCOMMAND, MAX_MESSAGE,
};

/// How long handing a request to the helper may take (its queue is full
/// only when it is stuck).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the helper could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start the session helper: {0}")]
    Spawn(std::io::Error),
    #[error("the session helper: {0}")]
    Io(#[from] std::io::Error),
    #[error("the session helper did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the session helper answered something invalid: {0}")]
    Protocol(String),
}

impl From<HelperError> for Refusal {
    fn from(e: HelperError) -> Refusal {
        Refusal::Failed(e.to_string())
    }
}

/// A `SOCK_SEQPACKET` socket pair (close-on-exec).
pub(crate) fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends one message with `fds` attached, whole; `now`: without waiting
/// for room in the peer's queue (full only when the peer is stuck).
pub(crate) fn send_message(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    now: bool,
) -> std::io::Result<()> {
    let extra = if now {
        rustix::net::SendFlags::DONTWAIT
    } else {
        rustix::net::SendFlags::empty()
    };
    let n = crate::fdpass::send_with_fds(socket, bytes, fds, extra)?;
    if n != bytes.len() {
        return Err(std::io::Error::other("message cut short"));
    }
    Ok(())
}

/// Receives one message (at most [`MAX_MESSAGE`] bytes, at most two
/// descriptors: more are closed); `None` at the end of the channel.
pub(crate) fn recv_message(
    socket: BorrowedFd<'_>,
) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let r = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    fds.truncate(2);
    if r.bytes == 0 {
        return Ok(None);
    }
    if r.bytes > MAX_MESSAGE || r.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(std::io::Error::other("message too long"));
    }
    buf.truncate(r.bytes);
    Ok(Some((buf, fds)))
}

/// The first message of a channel (the helper's configuration, an
/// agent's start), decoded; `None` when the channel closed first.
pub(crate) fn first_message<T: for<'de> serde::Deserialize<'de>>(
    socket: BorrowedFd<'_>,
) -> Result<Option<T>, String> {
    match recv_message(socket) {
        Ok(Some((bytes, _))) => decode(&bytes)
            .map(Some)
            .map_err(|e| format!("invalid start: {e}")),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("cannot read its start: {e}")),
    }
}

/// The running helper, as xfwd holds it.
#[derive(Debug)]
pub struct HelperClient {
    channel: OwnedFd,
    child: Mutex<Option<Child>>,
}

impl HelperClient {
    /// Starts `program session-helper` (xfwd itself) with its end of the
    /// channel as stdin, and tells it its configuration. Call as root,
    /// before dropping privileges.
    pub fn spawn(program: &Path, config: &HelperConfig) -> Result<HelperClient, HelperError> {
        let (ours, theirs) = seqpacket_pair().map_err(HelperError::Spawn)?;
        let child = Command::new(program)
            .arg(HELPER_SUBCOMMAND)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(HelperError::Spawn)?;
        let client = HelperClient {
            channel: ours,
            child: Mutex::new(Some(child)),
        };
        rustix::net::sockopt::set_socket_timeout(
            &client.channel,
            rustix::net::sockopt::Timeout::Send,
            Some(SEND_TIMEOUT),
        )
        .map_err(|e| HelperError::Spawn(e.into()))?;
        let bytes = encode(config).map_err(HelperError::Protocol)?;
        send_message(client.channel.as_fd(), &bytes, &[], false).map_err(HelperError::Spawn)?;
        Ok(client)
    }

    /// The helper's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Child::id))
    }

    /// Asks the helper and waits (at most `timeout`) for its answer and the
    /// descriptor that comes with it (a connected session socket).
    pub fn call(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Reply, Option<OwnedFd>), HelperError> {
        let bytes = encode(request).map_err(HelperError::Protocol)?;
        let (mine, theirs) = seqpacket_pair()?;
        rustix::net::sockopt::set_socket_timeout(
            &mine,
            rustix::net::sockopt::Timeout::Recv,
            Some(timeout.max(Duration::from_millis(1))),
        )
        .map_err(std::io::Error::from)?;
        send_message(self.channel.as_fd(), &bytes, &[theirs.as_fd()], false)?;
        drop(theirs);
        let (bytes, mut fds) = match recv_message(mine.as_fd()) {
            Ok(Some(m)) => m,
            // Every copy of the answer's end closed without an answer:
            // the operation's process died.
            Ok(None) => {
                return Err(HelperError::Protocol(
                    "the operation ended without an answer".into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(HelperError::Timeout(timeout))
            }
            Err(e) => return Err(e.into()),
        };
        let reply: Reply = decode(&bytes).map_err(HelperError::Protocol)?;
        let fd = if fds.is_empty() {
            None
        } else {
            Some(fds.swap_remove(0))
        };
        Ok((reply, fd))
    }
}

impl Drop for HelperClient {
    fn drop(&mut self) {
        // Closing the channel ends the helper; reap it if it is quick.
        if let Ok(mut c) = self.child.lock() {
            if let Some(mut child) = c.take() {
                let _ = rustix::net::shutdown(&self.channel, rustix::net::Shutdown::Both);
                for _ in 0..20 {
                    if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// The seams in system-wide mode: the helper chooses, connects and starts
/// as the user (see [`crate::sessions::access`]).
#[derive(Debug)]
pub struct HelperSessions {
    pub client: std::sync::Arc<HelperClient>,
    /// `--proxy-start-sessions`.
    pub start_timeout: Duration,
}

/// How long the helper may take to connect or list (its own bound, and a
/// little more).
const HELPER_WAIT: Duration = Duration::from_secs(super::OP_TIMEOUT.as_secs() + 1);

impl HelperSessions {
    fn ask(&self, request: &Request, wait: Duration) -> Result<(Reply, Option<OwnedFd>), Refusal> {
        match self.client.call(request, wait) {
            Ok((Reply::Refused { refusal }, _)) => Err(refusal),
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!("{e}");
                Err(e.into())
            }
        }
    }
}

fn user(ids: crate::sessions::access::Ids) -> Result<crate::sessions::user::SessionUser, Refusal> {
    crate::sessions::user::SessionUser::from_ids(ids.uid, ids.gid)
        .map_err(|e| Refusal::User(e.to_string()))
}

fn unexpected(what: &str, reply: &Reply) -> Refusal {
    Refusal::Failed(format!("it answered {reply:?} to {what}"))
}

impl crate::sessions::access::SessionConnector for HelperSessions {
    fn open(
        &self,
        ids: crate::sessions::access::Ids,
        wanted: Option<&str>,
    ) -> Result<crate::sessions::access::Opened, Refusal> {
        let request = Request::Connect {
            user: user(ids)?,
            display: wanted.map(|w| w.trim_start_matches(':').to_owned()),
        };
        match self.ask(&request, HELPER_WAIT)? {
            (Reply::Connected { display }, Some(socket)) => {
                Ok(crate::sessions::access::Opened::Connected { display, socket })
            }
            (r, _) => Err(unexpected("a connection", &r)),
        }
    }

    fn live(
        &self,
        ids: crate::sessions::access::Ids,
        limit: usize,
    ) -> Result<Vec<String>, Refusal> {
        match self.ask(&Request::Live { user: user(ids)? }, HELPER_WAIT)? {
            (Reply::Live { mut displays }, _) => {
                displays.truncate(limit);
                Ok(displays)
            }
            (r, _) => Err(unexpected("a listing", &r)),
        }
    }

    fn stale(&self, _ids: crate::sessions::access::Ids, display: &str) -> Refusal {
        // (The helper connects itself; its refusals say why.)
        Refusal::Route(format!("session :{display} not found"))
    }
}

impl crate::sessions::access::SessionLauncher for HelperSessions {
    fn start(
        &self,
        ids: crate::sessions::access::Ids,
        request: &crate::sessions::launch::StartRequest,
    ) -> Result<
        (
            crate::sessions::launch::Started,
            crate::sessions::access::Opened,
        ),
        Refusal,
    > {
        let asked = Request::Start {
            user: user(ids)?,
            request: request.clone(),
        };
        match self.ask(&asked, self.start_timeout + HELPER_WAIT)? {
            (
                Reply::Started {
                    display,
                    socket: path,
                    new,
                },
                Some(socket),
            ) => Ok((
                crate::sessions::launch::Started {
                    display: display.clone(),
                    socket: path,
                    new,
                },
                crate::sessions::access::Opened::Connected { display, socket },
            )),
            (r, _) => Err(unexpected("a start", &r)),
        }
    }

    fn timeout(&self) -> Duration {
        self.start_timeout
    }
}
