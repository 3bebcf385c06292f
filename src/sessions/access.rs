//! The seams the engine drives to reach local sessions:
//! [`SessionConnector`] (choose a user's session and open it, list the live
//! ones) and [`SessionLauncher`] (start one). Two implementations:
//!
//! - [`OwnSessions`] and the [`Launcher`]: the sessions of the account xfwd
//!   runs as, from the cached [`SessionDirectory`]; the engine connects to
//!   the chosen session's sockets itself;
//! - [`super::helper::HelperSessions`] (system-wide mode): the privileged
//!   helper chooses, connects and starts as the user, and hands the
//!   connected socket back.
//!
//! Every method blocks (directories, sockets, processes): the engine calls
//! them on its blocking pool.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::directory::SessionDirectory;
use super::launch::{Launcher, StartRequest, Started};
use super::{choose, live, not_found, LocalSession, RouteError};

/// The ids an auth module gave the client (`Sessions::uid`, `gid`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A chosen session, opened.
#[derive(Debug)]
pub enum Opened {
    /// Chosen here: the engine connects to its sockets, in order.
    Sockets(LocalSession),
    /// Connected already (by the helper, as the user).
    Connected { display: String, socket: OwnedFd },
}

impl Opened {
    pub fn display(&self) -> &str {
        match self {
            Opened::Sockets(s) => &s.display,
            Opened::Connected { display, .. } => display,
        }
    }
}

/// Why a session could not be reached or started; the texts go to the
/// client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "why", rename_all = "kebab-case")]
pub enum Refusal {
    /// The user has no session at all (a start on demand answers this).
    #[error("no xpra sessions found")]
    NoSessions,
    /// No such session, or several and none named (the routing's reason).
    #[error("{0}")]
    Route(String),
    /// The user cannot be served (root, no account).
    #[error("{0}")]
    User(String),
    /// The session is there but did not take the connection.
    #[error("{0}")]
    Connect(String),
    /// A start failed.
    #[error("{0}")]
    Start(String),
    /// The request was not valid.
    #[error("invalid request to the session helper: {0}")]
    Invalid(String),
    /// The proxy could not do it (busy, a failed process).
    #[error("the session helper failed: {0}")]
    Failed(String),
}

impl From<RouteError> for Refusal {
    fn from(e: RouteError) -> Refusal {
        match e {
            RouteError::NoSessions => Refusal::NoSessions,
            e => Refusal::Route(e.to_string()),
        }
    }
}

/// Chooses and opens local sessions, lists the live ones.
pub trait SessionConnector: Send + Sync + std::fmt::Debug {
    /// The session `wanted` (a display, without the `:`), or the only live
    /// one, of the user with `ids`, opened.
    fn open(&self, ids: Ids, wanted: Option<&str>) -> Result<Opened, Refusal>;

    /// The displays of the user's live sessions (at most `limit`).
    fn live(&self, ids: Ids, limit: usize) -> Result<Vec<String>, Refusal>;

    /// The refusal for a session whose sockets all refused the engine's
    /// connection (stale): the live ones listed.
    fn stale(&self, ids: Ids, display: &str) -> Refusal;
}

/// Starts sessions (`--proxy-start-sessions`).
pub trait SessionLauncher: Send + Sync + std::fmt::Debug {
    /// Starts (or, for a plain attach, finds) the session `request` asks
    /// for, as the user with `ids`, and opens it.
    fn start(&self, ids: Ids, request: &StartRequest) -> Result<(Started, Opened), Refusal>;

    /// The whole start's bound.
    fn timeout(&self) -> Duration;
}

/// The sessions of the account xfwd runs as (whoever authenticated).
#[derive(Debug)]
pub struct OwnSessions {
    pub directory: Arc<SessionDirectory>,
}

impl SessionConnector for OwnSessions {
    fn open(&self, _ids: Ids, wanted: Option<&str>) -> Result<Opened, Refusal> {
        let sessions = self.directory.sessions();
        Ok(Opened::Sockets(choose(&sessions, wanted)?))
    }

    fn live(&self, _ids: Ids, limit: usize) -> Result<Vec<String>, Refusal> {
        let sessions = self.directory.sessions();
        let first = sessions
            .get(..limit.min(sessions.len()))
            .unwrap_or_default();
        Ok(live(first).into_iter().map(|s| s.display).collect())
    }

    fn stale(&self, _ids: Ids, display: &str) -> Refusal {
        not_found(&self.directory.sessions(), display).into()
    }
}

impl SessionLauncher for Launcher {
    fn start(&self, _ids: Ids, request: &StartRequest) -> Result<(Started, Opened), Refusal> {
        let started = Launcher::start(self, request).map_err(|e| Refusal::Start(e.to_string()))?;
        let opened = Opened::Sockets(LocalSession {
            display: started.display.clone(),
            sockets: vec![started.socket.clone()],
        });
        Ok((started, opened))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}
