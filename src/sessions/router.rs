//! Where an authenticated client goes (sans-IO): the sessions its auth
//! module offers (targets listed in its auth data, or the user's local
//! sessions) and the display it asked for decide; the engine then opens
//! the place through the seams of [`super::access`].

use crate::auth::{Secret, Sessions, Target, TargetKind, Targets};
use crate::wire::Value;

use super::access::Ids;
use super::balance::SessionPool;

/// Where the client goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    /// One of the user's local sessions: this display (without the `:`),
    /// or the only live one.
    Local(Option<String>),
    /// A target the auth data names.
    Target(Target),
    /// A pool of session hosts the auth data names (`pool:NAME`): one of
    /// its members, chosen and tried in turn by the engine
    /// (`balance::order`).
    Pool(SessionPool),
}

/// What a client whose auth data names an unknown pool is told.
pub fn no_such_pool(name: &str) -> String {
    format!("no such session pool: {name}")
}

/// A routing decision, and what the upstream connection needs with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub place: Place,
    /// Whose local sessions (the auth module's ids).
    pub ids: Ids,
    /// Replaces the client's user name upstream.
    pub username: Option<String>,
    /// Answers the session's challenge.
    pub password: Option<Secret>,
    /// Whitelisted session options, as hello capabilities.
    pub caps: Vec<(String, Value)>,
}

/// The decision for a client with `sessions` (`None`: its modules offer
/// none) that asked for `wanted`, with the configuration's `pools`. The
/// error is the client's reason.
pub fn route(
    sessions: Option<&Sessions>,
    wanted: Option<&str>,
    pools: &[SessionPool],
) -> Result<Route, String> {
    let sessions = sessions.ok_or_else(|| "no sessions found".to_owned())?;
    let options = &sessions.session_options;
    let ids = Ids {
        uid: sessions.uid,
        gid: sessions.gid,
    };
    let target = sessions.select(wanted).map_err(|e| e.to_string())?;
    let wanted = wanted.map(|w| w.trim_start_matches(':').to_owned());
    Ok(match target {
        None => Route {
            place: Place::Local(wanted),
            ids,
            username: None,
            password: options.password().cloned(),
            caps: options.caps(),
        },
        Some(t) => Route {
            place: match &t.kind {
                TargetKind::Local { display } => {
                    Place::Local(Some(display.trim_start_matches(':').to_owned()))
                }
                TargetKind::Pool { name } => Place::Pool(
                    pools
                        .iter()
                        .find(|p| &p.name == name)
                        .cloned()
                        .ok_or_else(|| no_such_pool(name))?,
                ),
                _ => Place::Target(t.clone()),
            },
            ids,
            username: t.username().map(str::to_owned),
            password: t.password().or(options.password()).cloned(),
            caps: options.caps(),
        },
    })
}

/// Where the user may go, for `xpra info`: the listed targets (at most
/// `limit`), or `None` for the local sessions (the connector lists them).
pub fn listed(sessions: Option<&Sessions>, limit: usize) -> Option<Vec<&Target>> {
    match sessions.map(|s| &s.targets) {
        None => Some(Vec::new()),
        Some(Targets::Listed(list)) => Some(list.iter().take(limit).collect()),
        Some(Targets::Local) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn local_sessions_of_the_modules_ids() {
        let s = Sessions::local(Some(1000), Some(1001));
        let r = route(Some(&s), Some(":7"), &[]).unwrap();
        assert_eq!(r.place, Place::Local(Some("7".into())));
        assert_eq!(
            r.ids,
            Ids {
                uid: Some(1000),
                gid: Some(1001)
            }
        );
        assert_eq!(
            route(Some(&s), None, &[]).unwrap().place,
            Place::Local(None)
        );
        assert_eq!(route(None, None, &[]).unwrap_err(), "no sessions found");
        assert!(listed(Some(&s), 10).is_none());
    }

    #[test]
    fn listed_targets_choose_and_carry_their_credentials() {
        let one = Sessions::listed(
            Some(5),
            Some(5),
            "tcp://u:pw@10.0.0.1:10000/",
            Vec::new(),
            &[],
        );
        // The only target, none named: that one, with its credentials.
        let r = route(Some(&one), None, &[]).unwrap();
        assert!(
            matches!(&r.place, Place::Target(t) if t.username() == Some("u")),
            "{r:?}"
        );
        assert_eq!(r.username.as_deref(), Some("u"));
        assert!(r.password.is_some());
        let two = Sessions::listed(
            Some(5),
            Some(5),
            "tcp://u:pw@10.0.0.1:10000/,:12",
            Vec::new(),
            &[],
        );
        // Several and none named: xpra's refusal.
        assert!(route(Some(&two), None, &[])
            .unwrap_err()
            .starts_with("please specify a display"));
        // A listed local display is a local session.
        let r = route(Some(&two), Some("12"), &[]).unwrap();
        assert_eq!(r.place, Place::Local(Some("12".into())));
        // One not listed: refused with the reason.
        assert_eq!(
            route(Some(&two), Some("99"), &[]).unwrap_err(),
            "display '99' not found"
        );
        assert_eq!(listed(Some(&two), 1).unwrap().len(), 1);
        assert_eq!(listed(None, 1).unwrap().len(), 0);
    }

    #[test]
    fn pools_by_name() {
        let pools = vec![SessionPool::parse("gpu=tcp://a:1/,tcp://b:1/").unwrap()];
        let s = Sessions::listed(Some(5), Some(5), "pool:gpu", Vec::new(), &[]);
        let r = route(Some(&s), None, &pools).unwrap();
        assert_eq!(r.place, Place::Pool(pools[0].clone()));
        assert_eq!(r.username, None);
        let s = Sessions::listed(Some(5), Some(5), "pool:cpu", Vec::new(), &[]);
        assert_eq!(
            route(Some(&s), None, &pools).unwrap_err(),
            "no such session pool: cpu"
        );
        // Several entries: the pool is named as written.
        let s = Sessions::listed(Some(5), Some(5), "pool:gpu,:12", Vec::new(), &[]);
        assert!(matches!(
            route(Some(&s), Some("pool:gpu"), &pools).unwrap().place,
            Place::Pool(_)
        ));
    }
}
