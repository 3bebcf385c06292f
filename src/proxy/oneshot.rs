//! One-shot requests: a hello that asks the proxy itself something
//! (`xpra version`, `xpra id`, `xpra info`, a connect test ...) instead of
//! a session. Which request a hello makes, the replies, and xpra's
//! `flatten_dict`. Sans-IO: the connection core decides when to answer
//! (docs/engine.md, "One-shot requests"), the engine only lists what a
//! user may reach.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Identity;
use crate::auth::digest::{self, Digest};
use crate::auth::{ClientAuth, IssuedChallenge, Target, Transport};
use crate::wire::views::{Challenge, Hello};
use crate::wire::Value;

/// The `version` xfwd answers with. xpra clients and tools parse a
/// server's `version` as dotted numbers (`version_as_numbers`) and compare
/// it with their own (anything before 0.14.10 is "too old"), so it cannot
/// be `xfwd 0.1.0`, nor xfwd's own `0.1.0`. It is the xpra release whose
/// handshake xfwd's own packets follow; xfwd's version goes with it in the
/// full version string and in `info` (`xfwd.version`).
pub const XPRA_COMPAT_VERSION: &str = "3.1";

/// What `xpra version` prints (it always asks for the full version): the
/// xpra version, then xfwd's, joined as xpra joins its revision (`3.1.3-r0`),
/// so whoever cuts at the first `-` still gets numbers.
pub fn full_version() -> String {
    format!("{XPRA_COMPAT_VERSION}-xfwd-{}", env!("CARGO_PKG_VERSION"))
}

/// The close reason for requests a proxy does not serve (xpra's proxy
/// says the same for `screenshot`, `event`, `print`, `exit`).
pub const INVALID_REQUEST: &str = "invalid request";

/// At most this many sessions are listed in an `info` answer.
pub const MAX_LISTED: usize = 256;

/// At most this much of a `connect_test_request` is echoed.
const MAX_CONNECT_TEST: usize = 256;

/// What a one-shot hello asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `xpra version`: answered before any authentication.
    Version { full: bool },
    /// `xpra connect-test`: the value to echo.
    ConnectTest { value: String },
    /// `xpra id`.
    Id,
    /// `xpra info`; `flatten`: dotted keys (the client did not send
    /// `info-namespace`).
    Info { flatten: bool },
    /// `xpra stop`: never from a request.
    Stop,
    /// Anything else (`screenshot`, `event`, `print`, `exit`, `detach`,
    /// `command`, unknown modes).
    Invalid { mode: String },
}

/// Python truthiness, as xpra's `typedict.boolget` sees a capability.
fn truthy(v: Option<&Value>) -> bool {
    v.is_some_and(Value::truthy)
}

impl Request {
    /// The request a hello makes, checked in xpra's order (a connect test
    /// also sends `info_request`): `request=<mode>` or a true
    /// `<mode>_request`. `None`: a client for a session.
    pub fn of(hello: &Hello<'_>) -> Option<Request> {
        let generic = hello.str("request").filter(|r| !r.is_empty());
        let is_req =
            |mode: &str| generic == Some(mode) || truthy(hello.get(&format!("{mode}_request")));
        if is_req("version") {
            return Some(Request::Version {
                full: truthy(hello.get("full-version-request")),
            });
        }
        if is_req("connect_test") {
            let value: String = hello
                .str("connect_test_request")
                .unwrap_or("")
                .chars()
                .take(MAX_CONNECT_TEST)
                .collect();
            return Some(Request::ConnectTest { value });
        }
        if is_req("id") {
            return Some(Request::Id);
        }
        if is_req("info") {
            return Some(Request::Info {
                flatten: !truthy(hello.get("info-namespace")),
            });
        }
        for mode in ["screenshot", "event", "print", "exit"] {
            if is_req(mode) {
                return Some(Request::Invalid { mode: mode.into() });
            }
        }
        if is_req("stop") {
            return Some(Request::Stop);
        }
        generic.map(|mode| Request::Invalid {
            mode: mode.chars().take(64).collect(),
        })
    }

    /// For logs.
    pub fn name(&self) -> &str {
        match self {
            Request::Version { .. } => "version",
            Request::ConnectTest { .. } => "connect_test",
            Request::Id => "id",
            Request::Info { .. } => "info",
            Request::Stop => "stop",
            Request::Invalid { mode } => mode,
        }
    }
}

/// Whether the client has a password and waits for a challenge before it
/// says more (xpra: a `challenge` capability, whatever its value). A 3.1
/// client that gets an answer without having been challenged exits with
/// "the server did not request our password".
pub fn expects_challenge(hello: &Hello<'_>) -> bool {
    hello.get("challenge").is_some()
}

/// A challenge that nothing checks, for a client that offered a password
/// no module asked for (xpra's `send_fake_challenge`). `None` when the
/// client offers no digest worth using (then it is answered without one).
pub fn fake_challenge(client: &ClientAuth, private: bool) -> Option<Challenge> {
    // xor would put the password on the wire in the clear.
    let d = digest::choose(&client.digests, |d: Digest| !d.is_xor() || private)?;
    let s = digest::choose(&client.salt_digests, |d: Digest| !d.is_xor())?;
    IssuedChallenge::new(d, s, "password")
        .ok()
        .map(|c| c.packet())
}

/// The refusal of `xpra stop` (xfwd is stopped with a signal).
pub fn stop_refusal(transport: Transport) -> String {
    match transport {
        Transport::Unix => "cannot stop proxy server with a request: send xfwd SIGTERM".to_owned(),
        t => format!("cannot stop proxy server from a '{}' connection", t.name()),
    }
}

/// One place an authenticated user may be sent, as `info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachable {
    /// The display a client names to go there (`:100`), if any.
    pub display: Option<String>,
    /// `local` (a session in the socket dirs), or the target's scheme
    /// (`tcp`, `ssl`, `ws`, `wss`, `socket`).
    pub kind: String,
    /// A target as the router names it (never its credentials).
    pub uri: Option<String>,
}

impl Reachable {
    /// A live local session of display `display` (without the `:`).
    pub fn local(display: &str) -> Reachable {
        Reachable {
            display: Some(format!(":{}", display.trim_start_matches(':'))),
            kind: "local".to_owned(),
            uri: None,
        }
    }

    /// A target of the auth data.
    pub fn target(t: &Target) -> Reachable {
        Reachable {
            display: t.display.clone(),
            kind: t.kind.scheme().to_owned(),
            uri: match t.kind {
                crate::auth::TargetKind::Local { .. } => None,
                _ => Some(t.to_string()),
            },
        }
    }
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn hello(caps: Value) -> Vec<Value> {
    vec![s("hello"), caps]
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The answer to `xpra version`.
pub fn version_reply(full: bool) -> Vec<Value> {
    let v = if full {
        full_version()
    } else {
        XPRA_COMPAT_VERSION.to_owned()
    };
    hello(dict(vec![("version", Value::from(v))]))
}

/// The answer to a connect test.
pub fn connect_test_reply(value: &str) -> Vec<Value> {
    hello(dict(vec![("connect_test_response", s(value))]))
}

/// The answer to `xpra id` (xpra's `get_session_id_info`).
pub fn id_reply(identity: &Identity) -> Vec<Value> {
    hello(dict(vec![
        ("session-type", s("proxy")),
        ("session-name", s("xfwd")),
        ("uuid", s(&identity.uuid)),
        ("platform", s(std::env::consts::OS)),
    ]))
}

/// What `xpra info` learns of the proxy, for the authenticated `user`: the
/// proxy itself and where this user may go (at most [`MAX_LISTED`]), as a
/// nested dict. Nothing about other users.
pub fn info_dict(identity: &Identity, now: Instant, user: &str, reachable: &[Reachable]) -> Value {
    let current = identity.wall_clock(now);
    let elapsed = now.saturating_duration_since(identity.started);
    let listed: Vec<&Reachable> = reachable.iter().take(MAX_LISTED).collect();
    let mut sessions = vec![(s(""), Value::from(listed.len() as i64))];
    for (i, r) in listed.iter().enumerate() {
        let mut entry = vec![(s("type"), s(&r.kind))];
        if let Some(d) = &r.display {
            entry.push((s("display"), s(d)));
        }
        if let Some(u) = &r.uri {
            entry.push((s("uri"), s(u)));
        }
        sessions.push((Value::from(i.to_string()), Value::Dict(entry)));
    }
    dict(vec![
        ("mode", s("proxy")),
        ("session-type", s("proxy")),
        ("type", s("xfwd")),
        ("version", s(XPRA_COMPAT_VERSION)),
        (
            "xfwd",
            dict(vec![("version", s(env!("CARGO_PKG_VERSION")))]),
        ),
        ("uuid", s(&identity.uuid)),
        ("hostname", s(&identity.hostname)),
        ("platform", s(std::env::consts::OS)),
        ("start_time", Value::from(unix_secs(identity.start_time))),
        ("current_time", Value::from(unix_secs(current))),
        (
            "elapsed_time",
            Value::from(i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)),
        ),
        (
            "shards",
            Value::from(i64::try_from(identity.shards).unwrap_or(i64::MAX)),
        ),
        ("user", s(user)),
        ("sessions", Value::Dict(sessions)),
    ])
}

/// The answer to `xpra info`: [`info_dict`], flattened when asked.
pub fn info_reply(
    identity: &Identity,
    now: Instant,
    user: &str,
    reachable: &[Reachable],
    flatten: bool,
) -> Vec<Value> {
    let info = info_dict(identity, now, user, reachable);
    hello(if flatten { flatten_dict(&info) } else { info })
}

/// A key as Python's `bytestostr` prints it; `None` for a falsy key
/// (which xpra's flattening drops from the path).
fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) if !s.is_empty() => Some(s.clone()),
        Value::Bytes(b) if !b.is_empty() => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) if *i != 0 => Some(i.to_string()),
        Value::BigInt(b) => Some(b.clone()),
        Value::Bool(true) => Some("True".to_owned()),
        _ => None,
    }
}

/// xpra's `flatten_dict` (`xpra/util.py`): nested dicts become dotted
/// keys; an empty (falsy) key inside a dict stands for the dict's own
/// path; `None` values are dropped; lists are kept whole; a later key
/// replaces an earlier one in place. A value that is not a dict is
/// returned as it is. For the proxy's own replies (not for peer input: it
/// recurses as deep as the value).
pub fn flatten_dict(v: &Value) -> Value {
    let mut out: Vec<(Value, Value)> = Vec::new();
    match v {
        Value::Dict(d) => flatten_into(&mut out, None, d),
        other => return other.clone(),
    }
    Value::Dict(out)
}

fn flatten_into(out: &mut Vec<(Value, Value)>, path: Option<&str>, d: &[(Value, Value)]) {
    for (k, v) in d {
        let npath = match (path, key_text(k)) {
            (Some(p), Some(k)) => format!("{p}.{k}"),
            (Some(p), None) => p.to_owned(),
            (None, k) => k.unwrap_or_default(),
        };
        match v {
            Value::Dict(inner) => flatten_into(out, Some(&npath), inner),
            Value::None => {}
            v => match out.iter_mut().find(|(k, _)| k.as_str() == Some(&npath)) {
                Some(slot) => slot.1 = v.clone(),
                None => out.push((Value::from(npath), v.clone())),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn items(pairs: Vec<(&str, Value)>) -> Vec<Value> {
        hello(dict(pairs))
    }

    fn req(pairs: Vec<(&str, Value)>) -> Option<Request> {
        let i = items(pairs);
        Request::of(&Hello::parse(&i).unwrap())
    }

    #[test]
    fn requests_as_xpra_reads_them() {
        assert_eq!(req(vec![("version", s("3.1.3"))]), None);
        // 3.1.3's `xpra version`
        assert_eq!(
            req(vec![
                ("version_request", Value::Bool(true)),
                ("request", s("version")),
                ("full-version-request", Value::Bool(true)),
            ]),
            Some(Request::Version { full: true })
        );
        // newer clients: the generic key alone; legacy: the flag alone
        assert_eq!(
            req(vec![("request", s("version"))]),
            Some(Request::Version { full: false })
        );
        assert_eq!(req(vec![("id_request", Value::Int(1))]), Some(Request::Id));
        // 3.1.3's `xpra info`: info-namespace means nested
        assert_eq!(
            req(vec![
                ("info_request", Value::Bool(true)),
                ("request", s("info")),
                ("info-namespace", Value::Bool(true)),
            ]),
            Some(Request::Info { flatten: false })
        );
        assert_eq!(
            req(vec![("request", s("info"))]),
            Some(Request::Info { flatten: true })
        );
        // `xpra id` sends info_request too: request=id wins (xpra's order)
        assert_eq!(
            req(vec![
                ("info_request", Value::Bool(true)),
                ("request", s("id")),
            ]),
            Some(Request::Id)
        );
        // a connect test pretends to want info for older servers
        assert_eq!(
            req(vec![
                ("connect_test_request", s("abc")),
                ("request", s("connect_test")),
                ("info_request", Value::Bool(true)),
            ]),
            Some(Request::ConnectTest {
                value: "abc".into()
            })
        );
        assert_eq!(req(vec![("request", s("stop"))]), Some(Request::Stop));
        for mode in ["screenshot", "event", "print", "exit", "detach", "whatever"] {
            assert_eq!(
                req(vec![("request", s(mode))]),
                Some(Request::Invalid { mode: mode.into() }),
                "{mode}"
            );
        }
        assert_eq!(
            req(vec![("print_request", Value::Bool(true))]),
            Some(Request::Invalid {
                mode: "print".into()
            })
        );
        // false flags and an empty request are no request
        assert_eq!(
            req(vec![
                ("info_request", Value::Bool(false)),
                ("request", s("")),
            ]),
            None
        );
        // bytes from legacy rencode / bencode read as text
        assert_eq!(
            req(vec![(
                "request",
                Value::Bytes(bytes::Bytes::from_static(b"id"))
            )]),
            Some(Request::Id)
        );
        // a long mode is cut for the log
        let long = "x".repeat(1000);
        match req(vec![("request", s(&long))]) {
            Some(Request::Invalid { mode }) => assert_eq!(mode.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flattening_follows_xpra() {
        let nested = dict(vec![
            ("a", Value::from(1)),
            (
                "b",
                dict(vec![
                    ("", Value::from(2)),
                    ("c", dict(vec![("d", s("x"))])),
                    ("none", Value::None),
                    ("list", Value::List(vec![dict(vec![("e", Value::from(3))])])),
                ]),
            ),
            ("", s("top")),
            ("a", Value::from(9)),
        ]);
        let flat = flatten_dict(&nested);
        assert_eq!(
            flat,
            dict(vec![
                ("a", Value::from(9)),
                ("b", Value::from(2)),
                ("b.c.d", s("x")),
                (
                    "b.list",
                    Value::List(vec![dict(vec![("e", Value::from(3))])])
                ),
                ("", s("top")),
            ])
        );
        // xpra drops a falsy key from the path: Python's int 0 included
        let ints = Value::Dict(vec![(
            s("i"),
            Value::Dict(vec![(Value::Int(0), s("zero")), (Value::Int(1), s("one"))]),
        )]);
        assert_eq!(
            flatten_dict(&ints),
            dict(vec![("i", s("zero")), ("i.1", s("one"))])
        );
        assert_eq!(flatten_dict(&s("x")), s("x"));
    }

    fn identity() -> (Identity, Instant) {
        let started = Instant::now();
        (
            Identity {
                hostname: "proxyhost".into(),
                uuid: "0123".into(),
                start_time: UNIX_EPOCH + Duration::from_secs(1_000_000),
                started,
                shards: 4,
            },
            started,
        )
    }

    #[test]
    fn info_describes_the_proxy_and_the_users_sessions() {
        let (id, started) = identity();
        let t = Target::parse("tcp://bob:secret@10.0.0.1:14501/7").unwrap();
        let reach = vec![Reachable::local("100"), Reachable::target(&t)];
        let now = started + Duration::from_secs(42);
        let reply = info_reply(&id, now, "alice", &reach, true);
        assert_eq!(reply[0], s("hello"));
        let caps = &reply[1];
        let get = |k: &str| caps.get(k).cloned();
        assert_eq!(get("mode"), Some(s("proxy")));
        assert_eq!(get("session-type"), Some(s("proxy")));
        assert_eq!(get("uuid"), Some(s("0123")));
        assert_eq!(get("hostname"), Some(s("proxyhost")));
        assert_eq!(get("version"), Some(s(XPRA_COMPAT_VERSION)));
        assert_eq!(get("xfwd.version"), Some(s(env!("CARGO_PKG_VERSION"))));
        assert_eq!(get("start_time"), Some(Value::from(1_000_000)));
        assert_eq!(get("current_time"), Some(Value::from(1_000_042)));
        assert_eq!(get("elapsed_time"), Some(Value::from(42)));
        assert_eq!(get("shards"), Some(Value::from(4)));
        assert_eq!(get("user"), Some(s("alice")));
        assert_eq!(get("sessions"), Some(Value::from(2)));
        assert_eq!(get("sessions.0.display"), Some(s(":100")));
        assert_eq!(get("sessions.0.type"), Some(s("local")));
        assert_eq!(get("sessions.1.display"), Some(s(":7")));
        assert_eq!(get("sessions.1.type"), Some(s("tcp")));
        assert_eq!(get("sessions.1.uri"), Some(s("tcp://10.0.0.1:14501/7")));
        let text = format!("{caps:?}");
        assert!(!text.contains("secret") && !text.contains("bob"), "{text}");
        // nested when the client sent info-namespace
        let nested = info_reply(&id, now, "alice", &reach, false);
        let sessions = nested[1].get("sessions").unwrap();
        assert_eq!(sessions.get(""), Some(&Value::from(2)));
        assert_eq!(
            sessions.get("0").and_then(|e| e.get("display")),
            Some(&s(":100"))
        );
        // bounded
        let many = vec![Reachable::local("1"); MAX_LISTED + 10];
        let big = info_dict(&id, now, "alice", &many);
        assert_eq!(
            big.get("sessions").and_then(|v| v.get("")),
            Some(&Value::from(MAX_LISTED as i64))
        );
    }

    #[test]
    fn small_replies() {
        let (id, _) = identity();
        let v = version_reply(false);
        assert_eq!(v[1].get("version"), Some(&s("3.1")));
        let full = version_reply(true);
        let text = full[1].get("version").and_then(Value::as_str).unwrap();
        assert!(text.starts_with("3.1-xfwd-"), "{text}");
        let first = text.split('-').next().unwrap();
        assert!(first.split('.').all(|p| p.parse::<u32>().is_ok()));
        let r = id_reply(&id);
        assert_eq!(r[1].get("session-type"), Some(&s("proxy")));
        assert_eq!(r[1].get("uuid"), Some(&s("0123")));
        let c = connect_test_reply("abc");
        assert_eq!(c[1].get("connect_test_response"), Some(&s("abc")));
        assert_eq!(
            stop_refusal(Transport::Tcp),
            "cannot stop proxy server from a 'tcp' connection"
        );
        assert!(stop_refusal(Transport::Unix).contains("SIGTERM"));
    }

    #[test]
    fn fake_challenges_avoid_xor_in_the_clear() {
        let client = |d: &[&str]| ClientAuth {
            username: "alice".into(),
            digests: d.iter().map(|s| (*s).to_owned()).collect(),
            salt_digests: vec!["hmac+sha256".into()],
        };
        let c = fake_challenge(&client(&["xor", "hmac+sha256"]), false).unwrap();
        assert_eq!(c.digest, "hmac+sha256");
        assert_eq!(c.salt.len(), crate::auth::SALT_LEN);
        assert!(fake_challenge(&client(&["xor"]), false).is_none());
        assert_eq!(
            fake_challenge(&client(&["xor"]), true).unwrap().digest,
            "xor"
        );
    }
}
