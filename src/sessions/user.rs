//! The system account a local session belongs to, and where that user's
//! sessions are (xpra's socket dirs, expanded for the user).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The uid and gid an authenticated client's sessions run as (from its auth
/// module: pam and the system-account modules, peercred, the uid/gid
/// columns of multifile and sqlite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionUser {
    pub uid: u32,
    pub gid: u32,
}

/// Why a user's sessions cannot be served; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// xpra's proxy says the same (it never runs an instance as root).
    #[error("cannot run proxy instances as root")]
    Root,
    #[error("this user has no system account (no uid or gid)")]
    NoIds,
    #[error("no account for uid {0}")]
    NoAccount(u32),
}

impl SessionUser {
    /// The user of an auth result's ids: both known, neither root.
    pub fn from_ids(uid: Option<u32>, gid: Option<u32>) -> Result<SessionUser, UserError> {
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(UserError::NoIds);
        };
        if uid == 0 || gid == 0 {
            return Err(UserError::Root);
        }
        Ok(SessionUser { uid, gid })
    }
}

/// A user's account: what the helper needs to act as the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    /// The account of `user.uid` (the group is the one the auth data gave).
    /// Reads the user database: blocking.
    pub fn lookup(user: SessionUser) -> Result<Account, UserError> {
        if user.uid == 0 || user.gid == 0 {
            return Err(UserError::Root);
        }
        let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(user.uid))
            .ok()
            .flatten()
            .ok_or(UserError::NoAccount(user.uid))?;
        Ok(Account {
            uid: user.uid,
            gid: user.gid,
            name: u.name,
            home: u.dir,
            shell: u.shell,
        })
    }

    /// `/run/user/UID`, the user's runtime dir (systemd-logind's).
    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }
}

/// One socket dir as configured, for `account`: xpra's expansions `~/`,
/// `$HOME`, `$USER`, `$UID`, `$GID` and `$XDG_RUNTIME_DIR` (`/run/user/UID`).
pub fn expand_dir(dir: &Path, account: &Account) -> PathBuf {
    let Some(s) = dir.to_str() else {
        return dir.to_path_buf();
    };
    let home = account.home.to_string_lossy();
    let s = match s.strip_prefix("~/") {
        Some(rest) => format!("{home}/{rest}"),
        None if s == "~" => home.to_string(),
        None => s.to_owned(),
    };
    let s = s
        .replace("$XDG_RUNTIME_DIR", &account.runtime_dir().to_string_lossy())
        .replace("$HOME", &home)
        .replace("$USER", &account.name)
        .replace("$UID", &account.uid.to_string())
        .replace("$GID", &account.gid.to_string());
    PathBuf::from(s)
}

/// The socket dirs searched for `account`'s sessions: the configured
/// `--socket-dir`s, then `--socket-dirs` or xpra's defaults
/// (`/run/user/UID/xpra`, `/run/xpra`, `~/.xpra`), each expanded.
pub fn socket_dirs(
    configured: &[PathBuf],
    defaults: Option<&[PathBuf]>,
    account: &Account,
) -> Vec<PathBuf> {
    let defaults: Vec<PathBuf> = match defaults {
        Some(d) => d.to_vec(),
        None => vec![
            account.runtime_dir().join("xpra"),
            PathBuf::from("/run/xpra"),
            account.home.join(".xpra"),
        ],
    };
    configured
        .iter()
        .chain(defaults.iter())
        .map(|d| expand_dir(d, account))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            uid: 1001,
            gid: 1002,
            name: "alice".into(),
            home: PathBuf::from("/home/alice"),
            shell: PathBuf::from("/bin/sh"),
        }
    }

    #[test]
    fn ids_must_be_known_and_not_root() {
        assert_eq!(
            SessionUser::from_ids(Some(5), Some(6)).unwrap(),
            SessionUser { uid: 5, gid: 6 }
        );
        assert_eq!(SessionUser::from_ids(None, Some(6)), Err(UserError::NoIds));
        assert_eq!(
            SessionUser::from_ids(Some(0), Some(6)),
            Err(UserError::Root)
        );
        assert_eq!(
            SessionUser::from_ids(Some(5), Some(0)),
            Err(UserError::Root)
        );
        assert_eq!(
            Account::lookup(SessionUser { uid: 0, gid: 0 }),
            Err(UserError::Root)
        );
    }

    #[test]
    fn dirs_are_the_users() {
        let a = account();
        assert_eq!(
            socket_dirs(&[PathBuf::from("/srv/xpra/$USER")], None, &a),
            vec![
                PathBuf::from("/srv/xpra/alice"),
                PathBuf::from("/run/user/1001/xpra"),
                PathBuf::from("/run/xpra"),
                PathBuf::from("/home/alice/.xpra"),
            ]
        );
        assert_eq!(
            socket_dirs(
                &[],
                Some(&[
                    PathBuf::from("~/.xpra"),
                    PathBuf::from("$XDG_RUNTIME_DIR/x-$UID")
                ]),
                &a
            ),
            vec![
                PathBuf::from("/home/alice/.xpra"),
                PathBuf::from("/run/user/1001/x-1001")
            ]
        );
    }
}
