//! Where a client goes (the plan routing makes), and the hello the session
//! gets.

use crate::auth::{Secret, Target};
use crate::sessions::LocalSession;
use crate::wire::Value;

use super::Identity;

/// Where a client goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A session found in the socket dirs.
    Local(LocalSession),
    /// A target the auth data names.
    Target(Target),
    /// A pool of session hosts: its members in the order they are tried
    /// (`sessions::balance::order`). Once one is connected, the core's
    /// plan names it ([`Destination::Target`]).
    Pool { name: String, members: Vec<Target> },
}

impl Destination {
    /// For logs and reasons (credentials never shown).
    pub fn describe(&self) -> String {
        match self {
            Destination::Local(s) => format!("session :{}", s.display),
            Destination::Target(t) => format!("session {t}"),
            Destination::Pool { name, .. } => format!("pool {name}"),
        }
    }
}

/// What the upstream connection needs besides its destination.
#[derive(Debug, Clone)]
pub struct Plan {
    pub destination: Destination,
    /// Replaces the client's user name upstream.
    pub username: Option<String>,
    /// Answers the session's challenge.
    pub password: Option<Secret>,
    /// Whitelisted session options, as hello capabilities.
    pub caps: Vec<(String, Value)>,
}

/// The client's capabilities as the session gets them: minus what the proxy
/// owns, plus the plan's user name and session options, plus the `proxy`
/// section.
pub fn upstream_hello(hello: &[Value], plan: &Plan, identity: &Identity) -> Vec<Value> {
    const OWNED: [&str; 4] = [
        "challenge_response",
        "challenge_client_salt",
        "cipher",
        "aliases",
    ];
    let mut caps = match hello.get(1) {
        Some(Value::Dict(d)) => d.clone(),
        _ => Vec::new(),
    };
    caps.retain(|(k, _)| {
        let key = k.as_str().unwrap_or("");
        !OWNED
            .iter()
            .any(|o| key == *o || key.starts_with(&format!("{o}.")))
    });
    let set = |caps: &mut Vec<(Value, Value)>, k: &str, v: Value| {
        caps.retain(|(key, _)| key.as_str() != Some(k));
        caps.push((Value::from(k), v));
    };
    if let Some(u) = &plan.username {
        set(&mut caps, "username", Value::from(u.as_str()));
    }
    for (k, v) in &plan.caps {
        set(&mut caps, k, v.clone());
    }
    set(&mut caps, "proxy", Value::Bool(true));
    set(
        &mut caps,
        "proxy.hostname",
        Value::from(identity.hostname.as_str()),
    );
    set(
        &mut caps,
        "proxy.platform",
        Value::from(std::env::consts::OS),
    );
    // Not `proxy.version`: xpra servers parse that as their own version
    // number and refuse what they cannot compare.
    set(&mut caps, "proxy.name", Value::from("xfwd"));
    set(
        &mut caps,
        "proxy.xfwd.version",
        Value::from(env!("CARGO_PKG_VERSION")),
    );
    set(&mut caps, "proxy.uuid", Value::from(identity.uuid.as_str()));
    vec![Value::from("hello"), Value::Dict(caps)]
}
