//! Finding a user's xpra sessions in socket directories, and choosing the
//! one a client asked for.
//!
//! xpra 3.x names a session's socket `HOSTNAME-DISPLAY` in each socket dir
//! (`/run/user/UID/xpra`, `/run/xpra`, `~/.xpra` by default); xpra 4.x and
//! later also use `DIR/DISPLAY/socket`. The same session usually appears in
//! several dirs; the first live socket wins. A socket that refuses
//! connections is stale and ignored. Only sockets owned by the user whose
//! sessions are asked for are considered.
//!
//! Discovery touches the filesystem and connects to sockets: run it on a
//! blocking pool, never on a shard thread.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A local session: a display and its sockets, in socket-dir order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSession {
    /// Display number, without the `:`.
    pub display: String,
    pub sockets: Vec<PathBuf>,
}

/// xpra's default socket dirs for the user `uid` with home `home`.
pub fn default_socket_dirs(uid: u32, home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
    dirs.push(runtime.join("xpra"));
    dirs.push(PathBuf::from("/run/xpra"));
    if let Some(h) = home {
        dirs.push(h.join(".xpra"));
    }
    dirs
}

pub(crate) fn is_display(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether something listens on the Unix socket at `path` (without waiting
/// on a full backlog: that counts as live).
pub fn is_live(path: &Path) -> bool {
    use socket2::{Domain, SockAddr, Socket, Type};
    let Ok(sock) = Socket::new(Domain::UNIX, Type::STREAM, None) else {
        return false;
    };
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let Ok(addr) = SockAddr::unix(path) else {
        return false;
    };
    match sock.connect(&addr) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

fn owned_socket(path: &Path, uid: u32) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid)
}

/// Every candidate socket in `dirs` for `hostname`, as (display, path), in
/// directory order.
pub fn candidates(dirs: &[PathBuf], hostname: &str, uid: u32) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let prefix = format!("{hostname}-");
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if let Some(display) = name.strip_prefix(&prefix).filter(|d| is_display(d)) {
                if owned_socket(&path, uid) {
                    found.push((display.to_owned(), path));
                }
            } else if is_display(name) {
                let sock = path.join("socket");
                if owned_socket(&sock, uid) {
                    found.push((name.to_owned(), sock));
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    out
}

/// The sessions in `dirs`, one per display, sorted by display number.
/// Nothing is probed: some sockets may be stale.
pub fn discover(dirs: &[PathBuf], hostname: &str, uid: u32) -> Vec<LocalSession> {
    let mut found: BTreeMap<u64, LocalSession> = BTreeMap::new();
    for (display, path) in candidates(dirs, hostname, uid) {
        let Ok(n) = display.parse::<u64>() else {
            continue;
        };
        found
            .entry(n)
            .or_insert_with(|| LocalSession {
                display,
                sockets: Vec::new(),
            })
            .sockets
            .push(path);
    }
    found.into_values().collect()
}

/// The sessions with at least one live socket, keeping only those (this
/// connects to every socket: for the ambiguous and error paths).
pub fn live(sessions: &[LocalSession]) -> Vec<LocalSession> {
    sessions
        .iter()
        .filter_map(|s| {
            let sockets: Vec<PathBuf> = s.sockets.iter().filter(|p| is_live(p)).cloned().collect();
            (!sockets.is_empty()).then(|| LocalSession {
                display: s.display.clone(),
                sockets,
            })
        })
        .collect()
}

/// Why no session could be chosen; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no xpra sessions found")]
    NoSessions,
    #[error("session :{wanted} not found; available: {available}")]
    NotFound { wanted: String, available: String },
    #[error("please specify a display: found {available}")]
    Ambiguous { available: String },
}

fn list(sessions: &[LocalSession]) -> String {
    sessions
        .iter()
        .map(|s| format!(":{}", s.display))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the session for a client that asked for `wanted` (a display,
/// without the `:`), or for none. May probe sockets (see the module doc).
pub fn choose(sessions: &[LocalSession], wanted: Option<&str>) -> Result<LocalSession, RouteError> {
    match wanted.map(|w| w.trim_start_matches(':')) {
        Some(w) => match sessions.iter().find(|s| s.display == w) {
            Some(s) => Ok(s.clone()),
            None => Err(not_found(sessions, w)),
        },
        None => {
            if let [one] = sessions {
                return Ok(one.clone());
            }
            let live = live(sessions);
            match live.as_slice() {
                [] => Err(RouteError::NoSessions),
                [one] => Ok(one.clone()),
                _ => Err(RouteError::Ambiguous {
                    available: list(&live),
                }),
            }
        }
    }
}

/// The refusal for a display that is not there (or whose sockets are all
/// stale), listing the live ones.
pub fn not_found(sessions: &[LocalSession], wanted: &str) -> RouteError {
    let live = live(sessions);
    if live.is_empty() {
        return RouteError::NoSessions;
    }
    RouteError::NotFound {
        wanted: wanted.trim_start_matches(':').to_owned(),
        available: list(&live),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn finds_live_sessions_and_skips_stale_ones() {
        let tmp = std::env::temp_dir().join(format!("xfwd-sessions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let a = tmp.join("a");
        let b = tmp.join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(b.join("120")).unwrap();
        let _l100 = UnixListener::bind(a.join("host-100")).unwrap();
        let _l120 = UnixListener::bind(b.join("120").join("socket")).unwrap();
        // stale: bound then closed
        drop(UnixListener::bind(a.join("host-101")).unwrap());
        // another host's session and junk names are ignored
        let _other = UnixListener::bind(a.join("otherhost-102")).unwrap();
        std::fs::write(a.join("host-103"), b"not a socket").unwrap();
        // Another user's live session is not ours to offer.
        let _l104 = UnixListener::bind(a.join("host-104")).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(
                &a.join("host-104"),
                Some(nix::unistd::Uid::from_raw(65534)),
                None,
            )
            .unwrap();
        } else {
            std::fs::remove_file(a.join("host-104")).unwrap();
        }
        let found = discover(&[a.clone(), b.clone()], "host", uid());
        let displays: Vec<_> = found.iter().map(|s| s.display.as_str()).collect();
        assert_eq!(displays, vec!["100", "101", "120"], "no probing here");
        let live: Vec<_> = live(&found).into_iter().map(|s| s.display).collect();
        assert_eq!(live, vec!["100", "120"]);
        assert_eq!(
            choose(&found, None).unwrap_err().to_string(),
            "please specify a display: found :100, :120"
        );
        assert_eq!(
            not_found(&found, "101").to_string(),
            "session :101 not found; available: :100, :120"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn choosing() {
        let s = |d: &str| LocalSession {
            display: d.into(),
            sockets: vec![PathBuf::from(format!("/nonexistent/{d}"))],
        };
        let one = vec![s("100")];
        let two = vec![s("100"), s("101")];
        // Named or alone: chosen without probing.
        assert_eq!(choose(&one, None).unwrap().display, "100");
        assert_eq!(choose(&two, Some(":101")).unwrap().display, "101");
        // Several: only live ones count (none of these is).
        assert_eq!(choose(&two, None).unwrap_err(), RouteError::NoSessions);
        assert_eq!(choose(&two, Some("7")).unwrap_err(), RouteError::NoSessions);
        assert_eq!(choose(&[], None).unwrap_err(), RouteError::NoSessions);
    }
}
