//! System-wide mode's privileged helper: the one part of xfwd that keeps
//! root, and does only what needs another identity.
//!
//! Started as root in system-wide mode (`--system-wide`, the default for
//! root), xfwd binds its listeners, starts this helper (`xfwd
//! session-helper`, hidden) and drops its own process to `--uid`/`--gid`
//! (`nobody`) before it accepts anyone: every transport's connections are
//! served by an unprivileged process. For a client that a shard has
//! authenticated, the helper
//!
//! - chooses and connects to that user's session **as that user** (a
//!   fresh process that calls `initgroups`, `setgid`, `setuid` first) and
//!   hands the connected socket back ([`Request::Connect`], SCM_RIGHTS);
//! - lists that user's live sessions, for `xpra info` ([`Request::Live`]);
//! - starts a session as that user ([`Request::Start`], with
//!   `--proxy-start-sessions`), one start per user at a time;
//! - checks a password with PAM, which reads `/etc/shadow`
//!   ([`Request::Pam`]; the only operation that stays root).
//!
//! It trusts nothing but the uid and gid of the auth result the shard
//! passes: never uid or gid 0, an account must exist for the uid, the
//! socket dirs and start options are its own (given once, by the root
//! process, before the drop: [`HelperConfig`]), a display is digits, start
//! requests are checked again against the same bounds as the core's.
//!
//! The channel is a `SOCK_SEQPACKET` socket pair made before the drop (the
//! helper's end is its stdin; nothing else can reach it). Each request is
//! one JSON message carrying one descriptor: the write end of a fresh
//! socket pair, on which the answer ([`Reply`], and the session's socket)
//! comes back. A user's connections and listings go to that user's
//! [`agent`] (`xfwd session-helper-agent`, hidden: one process per user
//! with recent clients, running as that user, with its own cached session
//! directory; the helper starts it at the user's first client and closes
//! it after a minute without one). Starts and PAM checks run each in a
//! process of their own (`xfwd session-helper-op`, hidden: the request on
//! its stdin, the answer socket as its stdout), so a slow PAM stack or a
//! 30 s start never holds up another client, and an operation's change of
//! identity cannot leak into the next one; so do connections when no agent
//! can take them. The helper exits when xfwd's end of the channel closes.
//!
//! Sans-IO here: the messages, their bounds and their checks. The
//! processes are [`serve`] (the helper), [`op`] (one operation) and
//! [`client`] (xfwd's side).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::launch::StartRequest;
use super::user::SessionUser;

pub mod agent;
pub mod client;
pub mod op;
pub mod serve;

/// The helper's subcommand (hidden).
pub const HELPER_SUBCOMMAND: &str = "session-helper";
/// One operation's subcommand (hidden).
pub const OP_SUBCOMMAND: &str = "session-helper-op";

/// The largest message either way.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// At most this many operations run at once; more are refused (the
/// client is told the proxy is busy).
pub const MAX_RUNNING: usize = 256;
/// At most this many starts wait behind a running one, per user.
pub const MAX_QUEUED_STARTS: usize = 8;
/// Bounds of one operation (the helper kills it after): a connection or a
/// listing, and a PAM check.
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many live sessions a listing returns at most.
pub const MAX_LISTED: usize = 64;
/// The longest PAM user name or password taken.
pub const MAX_CREDENTIAL: usize = 4096;

/// What the helper is told once, by the root process, before the drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperConfig {
    /// This host's name (xpra 3's socket names: `HOSTNAME-DISPLAY`).
    pub hostname: String,
    /// `--socket-dir`s, searched first (xpra's `~`, `$USER`, `$UID` ...
    /// expanded per user).
    pub socket_dirs: Vec<PathBuf>,
    /// `--socket-dirs`, replacing xpra's defaults when given.
    pub default_socket_dirs: Option<Vec<PathBuf>>,
    /// `--proxy-start-sessions`.
    pub start_sessions: bool,
    /// `--proxy-start-arg`s.
    pub start_args: Vec<String>,
    /// A whole start's bound, in seconds.
    pub start_timeout_s: u64,
    /// Removed when xfwd has ended (files the unprivileged process made as
    /// root and cannot remove any more: its control socket, its Unix
    /// listeners).
    pub remove_at_exit: Vec<PathBuf>,
}

/// A password for PAM; never shown in logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Password(pub Vec<u8>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.zeroize();
    }
}

/// One operation, for one authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Choose the user's session (`display`, or the only live one) and
    /// connect to it: [`Reply::Connected`] and the socket.
    Connect {
        user: SessionUser,
        display: Option<String>,
    },
    /// The user's live sessions: [`Reply::Live`].
    Live { user: SessionUser },
    /// Start a session as the user, and connect to it:
    /// [`Reply::Started`] and the socket.
    Start {
        user: SessionUser,
        request: StartRequest,
    },
    /// Check a password with PAM: [`Reply::Pam`].
    Pam {
        service: String,
        check_account: bool,
        username: String,
        password: Password,
    },
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Connected {
        display: String,
    },
    Live {
        displays: Vec<String>,
    },
    Started {
        display: String,
        socket: PathBuf,
        new: bool,
    },
    Pam {
        ok: bool,
    },
    Refused {
        refusal: Refusal,
    },
}

pub use super::access::Refusal;

impl Request {
    /// The user the operation acts for (PAM acts for nobody yet).
    pub fn user(&self) -> Option<SessionUser> {
        match self {
            Request::Connect { user, .. }
            | Request::Live { user }
            | Request::Start { user, .. } => Some(*user),
            Request::Pam { .. } => None,
        }
    }

    /// Checks everything a request carries (the helper trusts no field).
    pub fn check(&self) -> Result<(), Refusal> {
        if let Some(u) = self.user() {
            if u.uid == 0 || u.gid == 0 {
                return Err(Refusal::User(super::user::UserError::Root.to_string()));
            }
        }
        match self {
            Request::Connect {
                display: Some(d), ..
            } if !super::is_display(d) => Err(Refusal::Invalid(format!(
                "display '{}'",
                d.chars().take(16).collect::<String>()
            ))),
            Request::Start { request, .. } => {
                request.check().map_err(|e| Refusal::Invalid(e.to_string()))
            }
            Request::Pam {
                service,
                username,
                password,
                ..
            } => {
                let name_ok = |s: &str| {
                    !s.is_empty()
                        && s.len() <= 64
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                };
                if !name_ok(service) {
                    return Err(Refusal::Invalid("PAM service".into()));
                }
                if username.len() > MAX_CREDENTIAL || password.0.len() > MAX_CREDENTIAL {
                    return Err(Refusal::Invalid("credentials too long".into()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A message's bytes (JSON), or why it cannot be sent.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, String> {
    let bytes = serde_json::to_vec(message).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_MESSAGE {
        return Err(format!(
            "message of {} bytes (at most {MAX_MESSAGE})",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// A message from its bytes, bounded first.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > MAX_MESSAGE {
        return Err(format!(
            "message of {} bytes (at most {MAX_MESSAGE})",
            bytes.len()
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// What an operation's process gets on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpInput {
    pub config: HelperConfig,
    pub request: Request,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sessions::launch::{StartMode, StartReason};

    fn user() -> SessionUser {
        SessionUser {
            uid: 1000,
            gid: 1000,
        }
    }

    #[test]
    fn messages_round_trip() {
        let requests = [
            Request::Connect {
                user: user(),
                display: Some("100".into()),
            },
            Request::Live { user: user() },
            Request::Start {
                user: user(),
                request: StartRequest {
                    mode: StartMode::StartDesktop,
                    display: None,
                    start: vec!["xterm".into()],
                    start_child: vec![],
                    reason: StartReason::Requested,
                },
            },
            Request::Pam {
                service: "login".into(),
                check_account: true,
                username: "alice".into(),
                password: Password(b"pw".to_vec()),
            },
        ];
        for r in requests {
            let back: Request = decode(&encode(&r).unwrap()).unwrap();
            assert_eq!(back, r);
            assert!(r.check().is_ok(), "{r:?}");
        }
        let reply = Reply::Refused {
            refusal: Refusal::Route("session :7 not found; available: :100".into()),
        };
        assert_eq!(decode::<Reply>(&encode(&reply).unwrap()).unwrap(), reply);
        assert!(!format!("{:?}", Password(b"secret".to_vec())).contains("secret"));
    }

    #[test]
    fn nothing_is_trusted() {
        let root = SessionUser { uid: 0, gid: 5 };
        assert!(matches!(
            Request::Live { user: root }.check(),
            Err(Refusal::User(_))
        ));
        let group_root = SessionUser { uid: 5, gid: 0 };
        assert!(Request::Live { user: group_root }.check().is_err());
        for bad in ["", "1/../2", "12345678901", ":1"] {
            let r = Request::Connect {
                user: user(),
                display: Some(bad.into()),
            };
            assert!(matches!(r.check(), Err(Refusal::Invalid(_))), "{bad}");
        }
        let start = |start: Vec<String>, display: Option<&str>| Request::Start {
            user: user(),
            request: StartRequest {
                mode: StartMode::Start,
                display: display.map(str::to_owned),
                start,
                start_child: vec![],
                reason: StartReason::Requested,
            },
        };
        assert!(start(vec!["x".repeat(5000)], None).check().is_err());
        assert!(start(vec!["xterm".into(); 17], None).check().is_err());
        assert!(start(vec!["a\0b".into()], None).check().is_err());
        assert!(start(vec![], Some("abc")).check().is_err());
        let pam = |service: &str| Request::Pam {
            service: service.into(),
            check_account: false,
            username: "u".into(),
            password: Password(vec![]),
        };
        assert!(pam("../../etc/passwd").check().is_err());
        assert!(pam("login").check().is_ok());
        // Bounded before parsing.
        assert!(decode::<Request>(&vec![b' '; MAX_MESSAGE + 1]).is_err());
        assert!(decode::<Request>(b"{\"op\":\"format-disk\"}").is_err());
    }
}
