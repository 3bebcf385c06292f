//! uid / gid values from auth data, resolved as xpra's `parse_uid` /
//! `parse_gid` do: a number is taken as is, a name is looked up in the
//! system's user / group database, an empty value means `nobody`.

use nix::unistd::{Gid, Group, Uid, User};

/// The user (and group) an empty uid (gid) field stands for.
pub const DEFAULT_ID_NAME: &str = "nobody";

fn parse_number(v: &str) -> Option<u32> {
    v.trim().parse::<u32>().ok()
}

/// A uid from a number or a user name; `""` means `nobody`. `None` when
/// the name is unknown (xpra falls back to its own uid there; xfwd leaves
/// the decision to the caller, who must never fall back to root).
pub fn parse_uid(v: &str) -> Option<u32> {
    if let Some(n) = parse_number(v) {
        return Some(n);
    }
    let name = if v.trim().is_empty() {
        DEFAULT_ID_NAME
    } else {
        v.trim()
    };
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// A gid from a number or a group name; `""` means `nobody`. The group
/// `nobody` falls back to `nogroup` (Debian's name for it) when missing.
pub fn parse_gid(v: &str) -> Option<u32> {
    if let Some(n) = parse_number(v) {
        return Some(n);
    }
    let name = match v.trim() {
        "" => DEFAULT_ID_NAME,
        n => n,
    };
    let lookup = |n: &str| Group::from_name(n).ok().flatten().map(|g| g.gid.as_raw());
    lookup(name).or_else(|| {
        // Debian's group for nobody is nogroup
        (name == DEFAULT_ID_NAME)
            .then(|| lookup("nogroup"))
            .flatten()
    })
}

/// `(uid, gid)` of a system account, if it exists.
pub fn system_user(name: &str) -> Option<(u32, u32)> {
    if name.is_empty() || name.contains('\0') {
        return None;
    }
    User::from_name(name)
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// The name of the account xfwd runs as (xpra uses it when a client sends
/// no username). Looked up once (the lookup may block: the engine makes the
/// first call before its shards start).
pub fn current_user_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        User::from_uid(Uid::current())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default()
    })
    .clone()
}

/// The uid and gid xfwd was started as (read once: the engine makes the
/// first call before a system-wide drop, so root stays root here). What a
/// module without a system account of its own (none, allow, password,
/// file, env, exec) gives its users, as in xpra, unless its `uid=` and
/// `gid=` options say otherwise.
pub fn proxy_ids() -> (u32, u32) {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    })
}

/// The name of a group id, if known.
pub fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_default() {
        assert_eq!(parse_uid("1000"), Some(1000));
        assert_eq!(parse_uid(" 7 "), Some(7));
        assert_eq!(parse_uid("root"), Some(0));
        assert_eq!(parse_gid("0"), Some(0));
        assert_eq!(parse_gid("root"), Some(0));
        assert_eq!(parse_uid("no-such-user-xfwd"), None);
        assert_eq!(parse_uid("-1"), None);
        // nobody exists on Debian (65534)
        assert_eq!(parse_uid(""), system_user("nobody").map(|u| u.0));
        assert!(parse_gid("").is_some());
        assert_eq!(parse_gid("nobody"), parse_gid(""));
        assert_eq!(system_user("root"), Some((0, 0)));
        assert_eq!(system_user(""), None);
        let _ = current_user_name();
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }
}
