//! One operation of the helper (`xfwd session-helper-op`): reads its
//! request from stdin, becomes the user it acts for (but for PAM), does it,
//! and answers on stdout (a socket: the answer and the session's socket).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use super::client::send_message;
use super::{encode, HelperConfig, OpInput, Refusal, Reply, Request, MAX_LISTED, MAX_MESSAGE};
use crate::sessions::launch::Launcher;
use crate::sessions::user::{self, Account, SessionUser};
use crate::sessions::{self, LocalSession, RouteError};

/// Becomes `account` for good: its groups, its gid, its uid (all three of
/// each); checks that root cannot be regained.
pub fn become_user(account: &Account) -> Result<(), String> {
    use nix::unistd::{Gid, Uid};
    if account.uid == 0 || account.gid == 0 {
        return Err(user::UserError::Root.to_string());
    }
    let name = CString::new(account.name.as_bytes()).map_err(|e| e.to_string())?;
    let gid = Gid::from_raw(account.gid);
    let uid = Uid::from_raw(account.uid);
    nix::unistd::initgroups(&name, gid).map_err(|e| format!("initgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() {
        return Err("root could be regained after the switch".into());
    }
    Ok(())
}

fn route_refusal(e: RouteError) -> Refusal {
    e.into()
}

/// The account for `user`, switched to.
pub(super) fn as_user(user: SessionUser) -> Result<Account, Refusal> {
    let account = Account::lookup(user).map_err(|e| Refusal::User(e.to_string()))?;
    become_user(&account)
        .map_err(|e| Refusal::Failed(format!("cannot become uid {}: {e}", user.uid)))?;
    Ok(account)
}

pub(super) fn dirs(config: &HelperConfig, account: &Account) -> Vec<std::path::PathBuf> {
    user::socket_dirs(
        &config.socket_dirs,
        config.default_socket_dirs.as_deref(),
        account,
    )
}

/// Connects to `path` without waiting on a full backlog (the helper's
/// processes never block on one session).
fn connect_now(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let sock = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    sock.set_nonblocking(true)?;
    match sock.connect(&SockAddr::unix(path)?) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(std::io::Error::other(
                "the session is busy (its backlog is full)",
            ))
        }
        Err(e) => return Err(e),
    }
    sock.set_nonblocking(false)?;
    Ok(OwnedFd::from(sock))
}

/// Connects to the first socket of `session` that answers.
fn connect(session: &LocalSession, others: &[LocalSession]) -> Result<OwnedFd, Refusal> {
    let mut last = None;
    for socket in &session.sockets {
        match connect_now(socket) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let stale = last.as_ref().is_none_or(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        )
    });
    if stale {
        return Err(route_refusal(sessions::not_found(others, &session.display)));
    }
    Err(Refusal::Connect(format!(
        "cannot connect to session :{}: {}",
        session.display,
        last.map_or_else(|| "no socket".to_owned(), |e| e.to_string())
    )))
}

/// A connection to the session `display` (or the only live one) among a
/// user's sessions `found` (this process being that user).
pub(super) fn connect_in(
    found: &[LocalSession],
    display: Option<&str>,
) -> Result<(Reply, Option<OwnedFd>), Refusal> {
    let chosen = sessions::choose(found, display).map_err(route_refusal)?;
    let fd = connect(&chosen, found)?;
    Ok((
        Reply::Connected {
            display: chosen.display,
        },
        Some(fd),
    ))
}

/// The live ones among a user's sessions `found`.
pub(super) fn live_in(found: &[LocalSession]) -> Reply {
    let first = found.get(..MAX_LISTED.min(found.len())).unwrap_or_default();
    let displays = sessions::live(first)
        .into_iter()
        .map(|s| s.display)
        .collect();
    Reply::Live { displays }
}

fn perform(input: OpInput) -> Result<(Reply, Option<OwnedFd>), Refusal> {
    input.request.check()?;
    let config = &input.config;
    match input.request {
        Request::Connect { user, display } => {
            let account = as_user(user)?;
            let found = sessions::discover(&dirs(config, &account), &config.hostname, account.uid);
            connect_in(&found, display.as_deref())
        }
        Request::Live { user } => {
            let account = as_user(user)?;
            let found = sessions::discover(&dirs(config, &account), &config.hostname, account.uid);
            Ok((live_in(&found), None))
        }
        Request::Start { user, request } => {
            if !config.start_sessions {
                return Err(Refusal::Start(crate::proxy::START_DISABLED.into()));
            }
            let account = as_user(user)?;
            let mut launcher =
                Launcher::for_account(dirs(config, &account), config.hostname.clone(), &account);
            launcher.extra_args = config.start_args.clone();
            launcher.timeout = std::time::Duration::from_secs(config.start_timeout_s.max(1));
            let started = launcher
                .start(&request)
                .map_err(|e| Refusal::Start(e.to_string()))?;
            let fd = connect_now(&started.socket).map_err(|e| {
                Refusal::Connect(format!(
                    "cannot connect to the new session :{}: {e}",
                    started.display
                ))
            })?;
            Ok((
                Reply::Started {
                    display: started.display,
                    socket: started.socket,
                    new: started.new,
                },
                Some(fd),
            ))
        }
        Request::Pam {
            service,
            check_account,
            username,
            password,
        } => {
            let ok = crate::auth::pam::check(&service, check_account, &username, &password.0)
                .map_err(|e| Refusal::Failed(e.to_string()))?;
            Ok((Reply::Pam { ok }, None))
        }
    }
}

/// The operation's body; returns the exit status.
pub fn run() -> u8 {
    let mut bytes = Vec::new();
    let limit = (MAX_MESSAGE as u64) * 4;
    if let Err(e) = std::io::stdin().lock().take(limit).read_to_end(&mut bytes) {
        tracing::error!("session helper operation: cannot read its request: {e}");
        return 2;
    }
    let stdout = std::io::stdout();
    let answer = stdout.as_fd();
    let (reply, fd) = match serde_json::from_slice::<OpInput>(&bytes) {
        Ok(input) => match perform(input) {
            Ok(r) => r,
            Err(refusal) => (Reply::Refused { refusal }, None),
        },
        Err(e) => (
            Reply::Refused {
                refusal: Refusal::Invalid(e.to_string()),
            },
            None,
        ),
    };
    let bytes = match encode(&reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("session helper operation: {e}");
            return 1;
        }
    };
    let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
    if let Err(e) = send_message(answer, &bytes, &fds, false) {
        // The client gave up (its bound passed): nothing to tell.
        tracing::debug!("session helper operation: cannot answer: {e}");
        return 1;
    }
    0
}
