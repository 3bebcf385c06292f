//! System-wide mode's privilege drop: the identity xfwd's serving process
//! takes once its listeners are bound (`--uid`, `--gid`; never root), and
//! the drop itself (all threads: glibc applies set*id to every thread).

use nix::unistd::{Gid, Uid};

use crate::auth::ids::{parse_gid, parse_uid, DEFAULT_ID_NAME};

/// Who the serving process becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Why system-wide mode cannot start; xfwd exits with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivilegeError {
    #[error("--system-wide=yes needs xfwd to be started as root")]
    NotRoot,
    #[error("--uid: no such user: {0}")]
    NoUser(String),
    #[error("--gid: no such group: {0}")]
    NoGroup(String),
    #[error("--{0}: the shards never run as root (0); use an unprivileged account such as nobody")]
    Root(&'static str),
    #[error("cannot drop privileges: {0}")]
    Drop(String),
}

/// Whether to run system-wide: `--system-wide` as given, else when root.
pub fn system_wide(asked: Option<bool>, euid_root: bool) -> Result<bool, PrivilegeError> {
    match asked {
        Some(true) if !euid_root => Err(PrivilegeError::NotRoot),
        Some(yes) => Ok(yes),
        None => Ok(euid_root),
    }
}

impl RunAs {
    /// `--uid` / `--gid` as given (names or numbers); default `nobody`, and
    /// nobody's group (or `nogroup`, Debian's, where there is no group
    /// `nobody`: xpra falls back to 0 there, xfwd never does).
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<RunAs, PrivilegeError> {
        let user = user.unwrap_or(DEFAULT_ID_NAME);
        let uid = parse_uid(user).ok_or_else(|| PrivilegeError::NoUser(user.to_owned()))?;
        let gid = match group {
            Some(g) => parse_gid(g).ok_or_else(|| PrivilegeError::NoGroup(g.to_owned()))?,
            None => {
                parse_gid("").ok_or_else(|| PrivilegeError::NoGroup("nobody or nogroup".into()))?
            }
        };
        if uid == 0 {
            return Err(PrivilegeError::Root("uid"));
        }
        if gid == 0 {
            return Err(PrivilegeError::Root("gid"));
        }
        Ok(RunAs { uid, gid })
    }

    /// Drops the whole process (every thread) to this identity for good:
    /// no supplementary group, the gid, the uid; checks that root cannot
    /// be regained.
    pub fn drop_privileges(self) -> Result<(), PrivilegeError> {
        let gid = Gid::from_raw(self.gid);
        let uid = Uid::from_raw(self.uid);
        let e = |what: &str, err: nix::Error| PrivilegeError::Drop(format!("{what}: {err}"));
        nix::unistd::setgroups(&[gid]).map_err(|x| e("setgroups", x))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(|x| e("setresgid", x))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|x| e("setresuid", x))?;
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() {
            return Err(PrivilegeError::Drop("root could be regained".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn root_is_never_the_target() {
        assert_eq!(
            RunAs::resolve(Some("0"), Some("65534")),
            Err(PrivilegeError::Root("uid"))
        );
        assert_eq!(
            RunAs::resolve(Some("65534"), Some("root")),
            Err(PrivilegeError::Root("gid"))
        );
        assert_eq!(
            RunAs::resolve(Some("root"), None),
            Err(PrivilegeError::Root("uid"))
        );
        assert!(matches!(
            RunAs::resolve(Some("no-such-user-xfwd"), None),
            Err(PrivilegeError::NoUser(_))
        ));
        assert_eq!(
            RunAs::resolve(Some("1234"), Some("4321")),
            Ok(RunAs {
                uid: 1234,
                gid: 4321
            })
        );
        // nobody exists on the machines this runs on; its group is never 0.
        if let Ok(r) = RunAs::resolve(None, None) {
            assert_ne!(r.gid, 0);
            assert_ne!(r.uid, 0);
        }
    }

    #[test]
    fn system_wide_is_roots_default() {
        assert_eq!(system_wide(None, true), Ok(true));
        assert_eq!(system_wide(None, false), Ok(false));
        assert_eq!(system_wide(Some(false), true), Ok(false));
        assert_eq!(system_wide(Some(true), false), Err(PrivilegeError::NotRoot));
    }
}
