//! A user's agent (`xfwd session-helper-agent`, hidden): a process the
//! helper keeps for each user with recent connections, running as that
//! user, which answers that user's connections and listings (what nearly
//! every client needs) without a process start each: its own session
//! directory (cached, inotify), a connect that never waits on a full
//! backlog, the connected socket passed back. Starts and PAM checks still
//! run as operations of their own ([`super::op`]).
//!
//! It reads requests from its channel (stdin, a `SOCK_SEQPACKET` socket
//! the helper holds the other end of): first its [`AgentInit`], then
//! requests as the helper received them, each with the socket its answer
//! goes to. It serves only its own user's `Connect` and `Live`. It ends
//! when the helper closes the channel (the helper does after
//! [`AGENT_IDLE`] without a request for it, and when it ends itself): the
//! requests already queued are answered first, so none is lost to an idle
//! exit.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{first_message, recv_message, send_message};
use super::op::{as_user, connect_in, dirs, live_in};
use super::{decode, encode, HelperConfig, Refusal, Reply, Request};
use crate::sessions::directory::SessionDirectory;
use crate::sessions::user::SessionUser;

/// The agent's subcommand (hidden).
pub const AGENT_SUBCOMMAND: &str = "session-helper-agent";

/// How long the helper keeps an agent without a request for it.
pub const AGENT_IDLE: Duration = Duration::from_secs(60);

/// An agent's first message: whose it is, and the helper's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInit {
    pub config: HelperConfig,
    pub user: SessionUser,
}

/// One request, for this agent's user.
fn answer(
    request: Request,
    user: SessionUser,
    directory: &SessionDirectory,
) -> Result<(Reply, Option<OwnedFd>), Refusal> {
    request.check()?;
    match request {
        Request::Connect { user: u, display } if u == user => {
            connect_in(&directory.sessions(), display.as_deref())
        }
        Request::Live { user: u } if u == user => Ok((live_in(&directory.sessions()), None)),
        _ => Err(Refusal::Invalid(
            "not a request for this user's agent".into(),
        )),
    }
}

/// The agent's body (its channel is stdin); returns the exit status.
pub fn run() -> u8 {
    let channel = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("session agent: no channel: {e}");
            return 2;
        }
    };
    let init: AgentInit = match first_message(channel.as_fd()) {
        Ok(Some(i)) => i,
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("session agent: {e}");
            return 2;
        }
    };
    let account = match as_user(init.user) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("session agent for uid {}: {e}", init.user.uid);
            return 2;
        }
    };
    let directory = SessionDirectory::new(
        dirs(&init.config, &account),
        init.config.hostname.clone(),
        account.uid,
    );
    loop {
        let (bytes, mut fds) = match recv_message(channel.as_fd()) {
            Ok(Some(m)) => m,
            // The helper closed the channel: idle, or it ends.
            Ok(None) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A message too long: skipped.
            Err(e) if e.kind() == std::io::ErrorKind::Other => continue,
            Err(e) => {
                tracing::warn!("session agent for uid {}: {e}", account.uid);
                return 1;
            }
        };
        let Some(reply) = fds.pop().filter(|_| fds.is_empty()) else {
            continue;
        };
        let (answer, fd) = match decode::<Request>(&bytes) {
            Ok(request) => match answer(request, init.user, &directory) {
                Ok(r) => r,
                Err(refusal) => (Reply::Refused { refusal }, None),
            },
            Err(e) => (
                Reply::Refused {
                    refusal: Refusal::Invalid(e),
                },
                None,
            ),
        };
        if let Ok(bytes) = encode(&answer) {
            let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
            // The client may have given up (its bound passed): nothing to
            // tell.
            let _ = send_message(reply.as_fd(), &bytes, &fds, false);
        }
    }
}
