//! Why a connection ended before relaying, and which side failed.

use std::time::Duration;

/// Which side of a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Session,
    Proxy,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Session => "session",
            Side::Proxy => "proxy",
        })
    }
}

/// Why a connection ended before relaying. The text is for logs; the
/// client is given [`ConnError::client_reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The client broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// Refused by auth (by `module`, when one decided); the client is told
    /// after `delay`.
    #[error("{reason}")]
    Refused {
        reason: String,
        delay: Duration,
        module: Option<crate::auth::ModuleKind>,
    },
    /// No session for this client (the reason lists what exists).
    #[error("{0}")]
    Route(String),
    /// The user has no session at all (a session may be started for it).
    #[error("no xpra sessions found")]
    NoSessions,
    /// A session could not be started for the client (or starting
    /// sessions is off); the reason says why.
    #[error("{0}")]
    Start(String),
    /// The session could not be reached, or broke the protocol in its
    /// handshake.
    #[error("cannot connect to {target}: {error}")]
    Upstream { target: String, error: String },
    /// Every host of a session host pool failed (each is logged).
    #[error("no live host in pool {0}")]
    PoolDown(String),
    #[error("handshake timeout")]
    Timeout,
    #[error("server shutdown")]
    Stopping,
    /// An administrator stopped the connection.
    #[error("stopped by administrator")]
    AdminStop,
    /// The proxy could not do the work (its blocking pool is full).
    #[error("{0}")]
    Busy(String),
    /// A one-shot request the proxy does not serve (the reason is what the
    /// client is told).
    #[error("{0}")]
    Request(String),
    /// The client went away; nobody to tell.
    #[error("client disconnected during the handshake")]
    Gone,
}

impl ConnError {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ConnError::Protocol(_)
            | ConnError::Gone
            | ConnError::Timeout
            | ConnError::Refused { .. }
            | ConnError::Route(_)
            | ConnError::NoSessions
            | ConnError::Request(_) => Side::Client,
            ConnError::Start(_) => Side::Proxy,
            ConnError::Upstream { .. } | ConnError::PoolDown(_) => Side::Session,
            ConnError::Stopping | ConnError::AdminStop | ConnError::Busy(_) => Side::Proxy,
        }
    }

    /// The reason the client is given: never a session's address or an
    /// internal error text (those are logged).
    pub fn client_reason(&self) -> String {
        match self {
            ConnError::Upstream { .. } => "the session cannot be reached".to_owned(),
            other => other.to_string(),
        }
    }
}
