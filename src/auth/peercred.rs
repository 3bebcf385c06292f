//! `peercred[,uid=LIST][,gid=LIST]`: Unix-socket clients are let in by the
//! credentials the kernel gives for the peer process (`SO_PEERCRED`), as
//! xpra's peercred_auth does.
//!
//! `LIST` is separated by `:` (`,` separates module options); entries are
//! numbers or names, environment variables (`$USER`, `${HOME}`, and `$UID`
//! / `$GID` of the xfwd process) and a leading `~` are expanded first.
//! Unknown names are left out with a warning (so a list of only unknown
//! names lets nobody in). Without `uid` and `gid`, any local process
//! passes. With both, the peer's uid must be in `uid` AND its gid in `gid`.
//! Connections without peer credentials (TCP) never pass. No challenge is
//! sent. The user's sessions are the local ones of the peer's uid / gid.

use super::authenticator::{AuthError, Authenticator, Method, Sessions};
use super::ids::system_user;
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};

#[derive(Debug)]
pub struct PeercredAuth {
    uids: Option<Vec<u32>>,
    gids: Option<Vec<u32>>,
}

/// xpra's `osexpand` for the small set a peercred list needs.
fn expand(s: &str) -> String {
    let mut s = s.trim().to_owned();
    if s == "~" || s.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            s = format!("{}{}", home.to_string_lossy(), &s[1..]);
        }
    }
    let var = |name: &str| -> Option<String> {
        match name {
            "UID" => Some(nix::unistd::getuid().as_raw().to_string()),
            "GID" => Some(nix::unistd::getgid().as_raw().to_string()),
            n => std::env::var(n).ok(),
        }
    };
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match (name.is_empty(), var(name)) {
            (false, Some(v)) => out.push_str(&v),
            _ => {
                out.push('$');
                rest = after;
                continue;
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn parse_ids(list: &str, what: &str, lookup: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in list.split(':') {
        let x = expand(entry);
        if x.is_empty() {
            continue;
        }
        match x.parse::<u32>().ok().or_else(|| lookup(&x)) {
            Some(id) => out.push(id),
            None => tracing::warn!(target: "xfwd::auth", "peercred: unknown {what} {x:?}"),
        }
    }
    out
}

impl PeercredAuth {
    pub fn new(spec: &AuthSpec) -> PeercredAuth {
        let uids = spec
            .option("uid")
            .filter(|v| !v.is_empty())
            .map(|v| parse_ids(v, "user", |n| system_user(n).map(|u| u.0)));
        let gids = spec.option("gid").filter(|v| !v.is_empty()).map(|v| {
            parse_ids(v, "group", |n| {
                nix::unistd::Group::from_name(n)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw())
            })
        });
        PeercredAuth { uids, gids }
    }
}

impl Authenticator for PeercredAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Peercred
    }
    fn method(&self) -> Method {
        Method::Direct
    }
    fn check_direct(&self, _username: &str, peer: &PeerInfo) -> Result<bool, AuthError> {
        let (Some(uid), Some(gid)) = (peer.uid, peer.gid) else {
            return Ok(false);
        };
        if self.uids.as_ref().is_some_and(|l| !l.contains(&uid)) {
            return Ok(false);
        }
        if self.gids.as_ref().is_some_and(|l| !l.contains(&gid)) {
            return Ok(false);
        }
        Ok(true)
    }
    fn sessions(
        &self,
        _username: &str,
        peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        Ok(Some(Sessions::local(peer.uid, peer.gid)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(opts: &str) -> PeercredAuth {
        PeercredAuth::new(&AuthSpec::parse(&format!("peercred{opts}")).unwrap())
    }

    fn peer(uid: u32, gid: u32) -> PeerInfo {
        PeerInfo {
            transport: super::super::peer::Transport::Unix,
            uid: Some(uid),
            gid: Some(gid),
            ..PeerInfo::default()
        }
    }

    #[test]
    fn allow_lists() {
        assert!(p("").check_direct("", &peer(1000, 1000)).unwrap());
        assert!(!p("").check_direct("", &PeerInfo::default()).unwrap());
        let a = p(",uid=root:1000");
        assert!(a.check_direct("", &peer(0, 5)).unwrap());
        assert!(a.check_direct("", &peer(1000, 5)).unwrap());
        assert!(!a.check_direct("", &peer(1001, 5)).unwrap());
        let a = p(",uid=1000,gid=root");
        assert!(a.check_direct("", &peer(1000, 0)).unwrap());
        assert!(!a.check_direct("", &peer(1000, 1)).unwrap());
        let a = p(",gid=$GID");
        assert!(a
            .check_direct("", &peer(5, nix::unistd::getgid().as_raw()))
            .unwrap());
        // only unknown names: nobody passes
        let a = p(",uid=no-such-user-xfwd");
        assert!(!a.check_direct("", &peer(0, 0)).unwrap());
        let s = a.sessions("", &peer(7, 8), None).unwrap().unwrap();
        assert_eq!((s.uid, s.gid), (Some(7), Some(8)));
    }

    #[test]
    fn expansion() {
        assert_eq!(expand("$UID"), nix::unistd::getuid().as_raw().to_string());
        assert_eq!(expand("${GID}"), nix::unistd::getgid().as_raw().to_string());
        assert_eq!(expand("a$"), "a$");
        assert_eq!(expand("$XFWD_NEVER_SET_4711"), "$XFWD_NEVER_SET_4711");
    }
}
