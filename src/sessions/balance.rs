//! Session host pools (issue 16): what a node knows of the load on session
//! hosts, so that a user whose auth data names a pool goes to a live host
//! with the fewest connections, and back to the host that runs their
//! session.
//!
//! The seam between routing and whatever counts connections:
//! [`LoadView`]. This node's own count is always part of it ([`LocalLoad`]);
//! with a cluster registry (`--cluster-db`), every live node's is.
//!
//! Host keys are `HOST:PORT` as the target names them (the target's
//! [`host_key`]), so that two pools naming one host share its count.
//!
//! The choice ([`order`]) and the hosts' health ([`Health`]) are sans-IO:
//! the engine gives them the time, tries the hosts in the order given and
//! tells the health table how each try went.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::auth::Target;

/// What a node knows of the session hosts' load (all of it `Send + Sync`:
/// shared by every shard, read on the blocking pool or on a shard without
/// waiting: implementations answer from memory, never from the network).
pub trait LoadView: Send + Sync + Debug {
    /// Live client connections to `host` (a [`host_key`]): this node's,
    /// and with a cluster registry every live node's.
    fn connections(&self, host: &str) -> usize;

    /// The host `user` was last served by in `pool` (their session runs
    /// there), if it is known and recent.
    fn sticky_host(&self, user: &str, pool: &str) -> Option<String>;

    /// `user` was just connected to `host` in `pool`.
    fn remember(&self, user: &str, pool: &str, host: &str);
}

/// The key of a target's session host: `HOST:PORT` for network targets,
/// the socket path for Unix ones, `None` for local displays and pools.
pub fn host_key(target: &Target) -> Option<String> {
    target.host_key()
}

/// A session host pool of the configuration (`--session-pool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPool {
    pub name: String,
    /// Its hosts, as configured (network or socket targets, at least one).
    pub members: Vec<Target>,
}

/// Why a `--session-pool` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("expected NAME=URI[,URI...]")]
    Syntax,
    #[error("pool name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("pool {0}: no hosts")]
    Empty(String),
    #[error("pool {pool}: host {index}: {error}")]
    Member {
        pool: String,
        index: usize,
        error: crate::sessions::targets::TargetError,
    },
    #[error("pool {pool}: host {index} is {kind}, not a session host (use tcp://, ssl://, ws://, wss:// or socket:)")]
    NotAHost {
        pool: String,
        index: usize,
        kind: &'static str,
    },
    #[error("pool {0} is defined twice")]
    Duplicate(String),
}

/// The most hosts one pool may have.
pub const MAX_POOL_MEMBERS: usize = 1024;

impl SessionPool {
    /// Parses `NAME=URI[,URI...]` (the option's syntax; the URIs as a
    /// user's `displays` name targets).
    pub fn parse(s: &str) -> Result<SessionPool, PoolError> {
        let (name, list) = s.split_once('=').ok_or(PoolError::Syntax)?;
        let uris: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        SessionPool::new(name.trim(), &uris)
    }

    /// A pool of `uris` (a config file's `[session-pool]` table).
    pub fn new(name: &str, uris: &[&str]) -> Result<SessionPool, PoolError> {
        if !crate::sessions::targets::is_pool_name(name) {
            return Err(PoolError::Name(name.chars().take(80).collect()));
        }
        if uris.is_empty() {
            return Err(PoolError::Empty(name.to_owned()));
        }
        let mut members = Vec::with_capacity(uris.len().min(MAX_POOL_MEMBERS));
        for (i, uri) in uris.iter().take(MAX_POOL_MEMBERS).enumerate() {
            let t = Target::parse(uri).map_err(|error| PoolError::Member {
                pool: name.to_owned(),
                index: i + 1,
                error,
            })?;
            if t.host_key().is_none() {
                return Err(PoolError::NotAHost {
                    pool: name.to_owned(),
                    index: i + 1,
                    kind: if t.pool().is_some() {
                        "a pool"
                    } else {
                        "a local display"
                    },
                });
            }
            members.push(t);
        }
        Ok(SessionPool {
            name: name.to_owned(),
            members,
        })
    }

    /// The option's syntax again (`NAME=URI,URI`), credentials included:
    /// for the effective configuration, never for logs.
    pub fn to_option(&self) -> String {
        let uris: Vec<&str> = self.members.iter().map(Target::raw_uri).collect();
        format!("{}={}", self.name, uris.join(","))
    }
}

/// Parses every `--session-pool` value; a name given twice is refused.
pub fn parse_pools(values: &[String]) -> Result<Vec<SessionPool>, PoolError> {
    let mut out: Vec<SessionPool> = Vec::new();
    for v in values {
        let p = SessionPool::parse(v)?;
        if out.iter().any(|o| o.name == p.name) {
            return Err(PoolError::Duplicate(p.name));
        }
        out.push(p);
    }
    Ok(out)
}

/// How long a host that failed is passed over: [`FIRST_BACKOFF`], doubling
/// while it keeps failing, at most [`MAX_BACKOFF`]; a success clears it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The most hosts the health table remembers (the pools' hosts: the
/// configuration's; the bound is for safety).
const MAX_HEALTH_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Failing {
    /// Failures since the last success.
    failures: u32,
    /// Passed over until then.
    until: Instant,
}

/// Passive health of session hosts (sans-IO): a host that refused or
/// failed a connection is *down* for a while, and tried only after the
/// others.
#[derive(Debug, Default)]
pub struct Health {
    hosts: HashMap<String, Failing>,
}

impl Health {
    /// Whether `host` is passed over at `now`.
    pub fn is_down(&self, host: &str, now: Instant) -> bool {
        self.hosts.get(host).is_some_and(|f| now < f.until)
    }

    /// Until when `host` is passed over, when it is at `now`.
    pub fn down_until(&self, host: &str, now: Instant) -> Option<Instant> {
        self.hosts
            .get(host)
            .map(|f| f.until)
            .filter(|until| now < *until)
    }

    /// A connection to `host` failed at `now`: it is down for the returned
    /// time (longer each time it fails again before it succeeds).
    pub fn failed(&mut self, host: &str, now: Instant) -> Duration {
        let failures = self.hosts.get(host).map_or(0, |f| f.failures);
        let backoff = backoff(failures);
        if !self.hosts.contains_key(host) && self.hosts.len() >= MAX_HEALTH_ENTRIES {
            // Forget the host that comes back first.
            if let Some(k) = self
                .hosts
                .iter()
                .min_by_key(|(_, f)| f.until)
                .map(|(k, _)| k.clone())
            {
                self.hosts.remove(&k);
            }
        }
        self.hosts.insert(
            host.to_owned(),
            Failing {
                failures: failures.saturating_add(1),
                until: now + backoff,
            },
        );
        backoff
    }

    /// A connection to `host` succeeded: it is live again.
    pub fn succeeded(&mut self, host: &str) {
        self.hosts.remove(host);
    }

    /// How many of `members` are down at `now`.
    pub fn down_count(&self, members: &[Target], now: Instant) -> usize {
        members
            .iter()
            .filter_map(Target::host_key)
            .filter(|k| self.is_down(k, now))
            .count()
    }
}

/// The time a host is passed over after `failures` earlier failures.
fn backoff(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// [`Health`], shared by every shard (held only to read or update it).
#[derive(Debug, Default)]
pub struct PoolHealth(Mutex<Health>);

impl PoolHealth {
    pub fn lock(&self) -> MutexGuard<'_, Health> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// FNV-1a: a hash that is the same on every node and every build (the
/// tie-break must not depend on the process).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The order in which `user`'s connection tries the hosts of `pool`:
///
/// 1. the user's sticky host ([`LoadView::sticky_host`]: their session runs
///    there), when it is in the pool and not down;
/// 2. then the other live hosts, fewest connections first
///    ([`LoadView::connections`]); ties are broken by a hash of the user
///    and the host, so that users spread over equally loaded hosts and a
///    user's order is the same on every node;
/// 3. then the hosts that are down, the one that comes back first first:
///    tried only when every other host failed.
pub fn order(
    pool: &SessionPool,
    user: &str,
    load: &dyn LoadView,
    health: &Health,
    now: Instant,
) -> Vec<Target> {
    let sticky = load.sticky_host(user, &pool.name);
    let mut live: Vec<(u8, usize, u64, &Target)> = Vec::new();
    let mut down: Vec<(Instant, u64, &Target)> = Vec::new();
    for t in &pool.members {
        let key = t.host_key().unwrap_or_default();
        let tie = fnv1a(&[user, &key]);
        match health.down_until(&key, now) {
            Some(until) => down.push((until, tie, t)),
            None => {
                let first = u8::from(sticky.as_deref() != Some(key.as_str()));
                live.push((first, load.connections(&key), tie, t));
            }
        }
    }
    live.sort_by_key(|(first, n, tie, _)| (*first, *n, *tie));
    down.sort_by_key(|(until, tie, _)| (*until, *tie));
    let mut out: Vec<Target> = live.into_iter().map(|(_, _, _, t)| t.clone()).collect();
    out.extend(down.into_iter().map(|(_, _, t)| t.clone()));
    // A host listed twice is tried once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.host_key()));
    out
}

/// How long a sticky host is remembered after the user's last connection.
pub const STICKY_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most (user, pool) pairs remembered; the oldest go first.
pub const MAX_STICKY: usize = 100_000;
/// Longer user names are not remembered (bounded memory per entry).
const MAX_STICKY_KEY: usize = 512;

#[derive(Debug, Default)]
struct Sticky {
    /// (user, pool) → (host, last seen, sequence).
    by_user: HashMap<(String, String), (String, Instant, u64)>,
    /// (last seen, sequence) → (user, pool): oldest first.
    by_age: BTreeMap<(Instant, u64), (String, String)>,
    seq: u64,
}

/// This node's [`LoadView`]: its live connections per host (over every
/// shard, counted by [`LoadGuard`]s) and the sticky hosts of its users
/// (in memory, [`STICKY_TTL`], at most [`MAX_STICKY`]).
#[derive(Debug)]
pub struct LocalLoad {
    counts: Mutex<HashMap<String, usize>>,
    sticky: Mutex<Sticky>,
    ttl: Duration,
    cap: usize,
}

impl Default for LocalLoad {
    fn default() -> Self {
        LocalLoad::with_limits(STICKY_TTL, MAX_STICKY)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalLoad {
    pub fn new() -> Arc<LocalLoad> {
        Arc::new(LocalLoad::default())
    }

    /// With another sticky TTL and bound (tests).
    pub fn with_limits(ttl: Duration, cap: usize) -> LocalLoad {
        LocalLoad {
            counts: Mutex::default(),
            sticky: Mutex::default(),
            ttl,
            cap: cap.max(1),
        }
    }

    /// Counts one live connection to `host` until the guard is dropped.
    pub fn track(self: &Arc<Self>, host: String) -> LoadGuard {
        *lock(&self.counts).entry(host.clone()).or_insert(0) += 1;
        LoadGuard {
            load: self.clone(),
            host,
        }
    }

    /// Every host with live connections from this node, and their count
    /// (what a cluster registry publishes).
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = lock(&self.counts)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// [`LoadView::sticky_host`] at `now`.
    pub fn sticky_at(&self, user: &str, pool: &str, now: Instant) -> Option<String> {
        let s = lock(&self.sticky);
        let (host, seen, _) = s.by_user.get(&(user.to_owned(), pool.to_owned()))?;
        (now.saturating_duration_since(*seen) < self.ttl).then(|| host.clone())
    }

    /// [`LoadView::remember`] at `now`.
    pub fn remember_at(&self, user: &str, pool: &str, host: &str, now: Instant) {
        if user.len() + pool.len() + host.len() > MAX_STICKY_KEY {
            return;
        }
        let mut s = lock(&self.sticky);
        let key = (user.to_owned(), pool.to_owned());
        if let Some((_, seen, seq)) = s.by_user.remove(&key) {
            s.by_age.remove(&(seen, seq));
        }
        // The expired go, then the oldest while full.
        while let Some((&(seen, seq), _)) = s.by_age.first_key_value() {
            let expired = now.saturating_duration_since(seen) >= self.ttl;
            if !expired && s.by_user.len() < self.cap {
                break;
            }
            if let Some(k) = s.by_age.remove(&(seen, seq)) {
                s.by_user.remove(&k);
            }
        }
        s.seq = s.seq.wrapping_add(1);
        let seq = s.seq;
        s.by_age.insert((now, seq), key.clone());
        s.by_user.insert(key, (host.to_owned(), now, seq));
    }

    /// How many sticky hosts are remembered.
    pub fn sticky_len(&self) -> usize {
        lock(&self.sticky).by_user.len()
    }
}

impl LoadView for LocalLoad {
    fn connections(&self, host: &str) -> usize {
        lock(&self.counts).get(host).copied().unwrap_or(0)
    }

    fn sticky_host(&self, user: &str, pool: &str) -> Option<String> {
        self.sticky_at(user, pool, Instant::now())
    }

    fn remember(&self, user: &str, pool: &str, host: &str) {
        self.remember_at(user, pool, host, Instant::now());
    }
}

/// One live connection to a host, counted in [`LocalLoad`] until dropped.
#[derive(Debug)]
pub struct LoadGuard {
    load: Arc<LocalLoad>,
    host: String,
}

impl LoadGuard {
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        let mut counts = lock(&self.load.counts);
        if let Some(n) = counts.get_mut(&self.host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.host);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(name: &str, hosts: &[&str]) -> SessionPool {
        SessionPool::new(name, hosts).unwrap()
    }

    fn keys(ts: &[Target]) -> Vec<String> {
        ts.iter().map(|t| t.host_key().unwrap()).collect()
    }

    #[test]
    fn pools_parse_and_refuse_clearly() {
        let p = SessionPool::parse("gpu=tcp://h1:14500/, tcp://u:pw@h2:14500/7").unwrap();
        assert_eq!(p.name, "gpu");
        assert_eq!(keys(&p.members), ["h1:14500", "h2:14500"]);
        assert_eq!(p.to_option(), "gpu=tcp://h1:14500/,tcp://u:pw@h2:14500/7");
        assert_eq!(SessionPool::parse("gpu"), Err(PoolError::Syntax));
        assert_eq!(
            SessionPool::parse("gpu="),
            Err(PoolError::Empty("gpu".into()))
        );
        assert!(matches!(
            SessionPool::parse("a b=tcp://h:1/"),
            Err(PoolError::Name(_))
        ));
        assert!(matches!(
            SessionPool::parse("gpu=tcp://h:1/,:100"),
            Err(PoolError::NotAHost { index: 2, .. })
        ));
        assert!(matches!(
            SessionPool::parse("gpu=pool:cpu"),
            Err(PoolError::NotAHost { index: 1, .. })
        ));
        let e = SessionPool::parse("gpu=tcp://u:sekrit@h:x/").unwrap_err();
        assert!(matches!(e, PoolError::Member { index: 1, .. }));
        assert!(!e.to_string().contains("sekrit"));
        assert_eq!(
            parse_pools(&["a=tcp://h:1/".into(), "a=tcp://h:2/".into()]),
            Err(PoolError::Duplicate("a".into()))
        );
        assert_eq!(
            parse_pools(&["a=tcp://h:1/".into(), "b=/run/x".into()])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_clears_on_success() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert!(!h.is_down("h:1", t0));
        assert_eq!(h.failed("h:1", t0), Duration::from_secs(10));
        assert!(h.is_down("h:1", t0 + Duration::from_secs(9)));
        assert!(!h.is_down("h:1", t0 + Duration::from_secs(10)));
        assert!(!h.is_down("other:1", t0));
        // It keeps failing: 20, 40, then 60 s at most.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(h.failed("h:1", t1), Duration::from_secs(20));
        assert!(h.is_down("h:1", t1 + Duration::from_secs(19)));
        assert_eq!(h.failed("h:1", t1), Duration::from_secs(40));
        assert_eq!(h.failed("h:1", t1), Duration::from_secs(60));
        for _ in 0..40 {
            assert_eq!(h.failed("h:1", t1), Duration::from_secs(60));
        }
        assert_eq!(h.down_until("h:1", t1), Some(t1 + MAX_BACKOFF));
        // One success: live, and the next failure starts over.
        h.succeeded("h:1");
        assert!(!h.is_down("h:1", t1));
        assert_eq!(h.failed("h:1", t1), Duration::from_secs(10));
        let p = pool("p", &["tcp://h:1/", "tcp://g:1/"]);
        assert_eq!(h.down_count(&p.members, t1), 1);
        assert_eq!(h.down_count(&p.members, t1 + MAX_BACKOFF), 0);
    }

    /// A load view with set counts.
    #[derive(Debug, Default)]
    struct Fixed {
        counts: HashMap<String, usize>,
        sticky: Option<String>,
    }

    impl LoadView for Fixed {
        fn connections(&self, host: &str) -> usize {
            self.counts.get(host).copied().unwrap_or(0)
        }
        fn sticky_host(&self, _user: &str, _pool: &str) -> Option<String> {
            self.sticky.clone()
        }
        fn remember(&self, _: &str, _: &str, _: &str) {}
    }

    #[test]
    fn least_connections_first_sticky_before_and_down_hosts_last() {
        let now = Instant::now();
        let p = pool("gpu", &["tcp://a:1/", "tcp://b:1/", "tcp://c:1/"]);
        let mut load = Fixed::default();
        load.counts.insert("a:1".into(), 5);
        load.counts.insert("b:1".into(), 1);
        load.counts.insert("c:1".into(), 3);
        let mut health = Health::default();
        assert_eq!(
            keys(&order(&p, "u", &load, &health, now)),
            ["b:1", "c:1", "a:1"]
        );
        // The sticky host goes first, however loaded.
        load.sticky = Some("a:1".into());
        assert_eq!(
            keys(&order(&p, "u", &load, &health, now)),
            ["a:1", "b:1", "c:1"]
        );
        // ... unless it is down: then last.
        health.failed("a:1", now);
        assert_eq!(
            keys(&order(&p, "u", &load, &health, now)),
            ["b:1", "c:1", "a:1"]
        );
        // Down hosts go last whatever their load, the one back first first.
        health.failed("b:1", now + Duration::from_secs(1));
        assert_eq!(
            keys(&order(
                &p,
                "u",
                &load,
                &health,
                now + Duration::from_secs(2)
            )),
            ["c:1", "a:1", "b:1"]
        );
        // A sticky host that is not in the pool changes nothing.
        load.sticky = Some("z:1".into());
        let health = Health::default();
        assert_eq!(
            keys(&order(&p, "u", &load, &health, now)),
            ["b:1", "c:1", "a:1"]
        );
    }

    #[test]
    fn ties_spread_users_deterministically() {
        let now = Instant::now();
        let p = pool("gpu", &["tcp://a:1/", "tcp://b:1/"]);
        let load = Fixed::default();
        let health = Health::default();
        let first = |u: &str| keys(&order(&p, u, &load, &health, now))[0].clone();
        let mut on_a = 0;
        for i in 0..200 {
            let user = format!("user{i}");
            // The same user, the same order, every time.
            assert_eq!(first(&user), first(&user));
            if first(&user) == "a:1" {
                on_a += 1;
            }
        }
        // Both hosts get users (a fixed hash: this is no timing).
        assert!(on_a > 50 && on_a < 150, "{on_a}");
        // A host listed twice is tried once.
        let p = pool("gpu", &["tcp://a:1/", "tcp://a:1/7"]);
        assert_eq!(order(&p, "u", &load, &health, now).len(), 1);
    }

    #[test]
    fn local_load_counts_until_the_guard_goes() {
        let load = LocalLoad::new();
        let g1 = load.track("a:1".into());
        let g2 = load.track("a:1".into());
        let g3 = load.track("b:1".into());
        assert_eq!(load.connections("a:1"), 2);
        assert_eq!(load.connections("b:1"), 1);
        assert_eq!(load.connections("c:1"), 0);
        drop(g1);
        assert_eq!(load.connections("a:1"), 1);
        assert_eq!(g3.host(), "b:1");
        drop(g3);
        assert_eq!(load.counts(), vec![("a:1".to_owned(), 1)]);
        drop(g2);
        assert!(load.counts().is_empty());
        // Guards may go on any thread.
        let g = load.track("a:1".into());
        std::thread::spawn(move || drop(g)).join().unwrap();
        assert_eq!(load.connections("a:1"), 0);
    }

    #[test]
    fn sticky_hosts_expire_and_are_bounded() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(100);
        let load = LocalLoad::with_limits(ttl, 3);
        load.remember_at("u", "gpu", "a:1", t0);
        assert_eq!(load.sticky_at("u", "gpu", t0).as_deref(), Some("a:1"));
        assert_eq!(load.sticky_at("u", "cpu", t0), None);
        assert_eq!(load.sticky_at("v", "gpu", t0), None);
        assert_eq!(
            load.sticky_at("u", "gpu", t0 + Duration::from_secs(99))
                .as_deref(),
            Some("a:1")
        );
        assert_eq!(load.sticky_at("u", "gpu", t0 + ttl), None);
        // Remembered again: a new host, a new time.
        load.remember_at("u", "gpu", "b:1", t0 + Duration::from_secs(50));
        assert_eq!(
            load.sticky_at("u", "gpu", t0 + Duration::from_secs(120))
                .as_deref(),
            Some("b:1")
        );
        assert_eq!(load.sticky_len(), 1);
        // Full: the oldest goes.
        let t = t0 + Duration::from_secs(60);
        load.remember_at("v", "gpu", "a:1", t);
        load.remember_at("w", "gpu", "a:1", t + Duration::from_secs(1));
        load.remember_at("x", "gpu", "a:1", t + Duration::from_secs(2));
        assert_eq!(load.sticky_len(), 3);
        assert_eq!(load.sticky_at("u", "gpu", t), None);
        assert!(load.sticky_at("x", "gpu", t).is_some());
        // The expired go first when a pair is added.
        load.remember_at("y", "gpu", "a:1", t + Duration::from_secs(500));
        assert_eq!(load.sticky_len(), 1);
        // Through the trait (the real clock).
        let load = LocalLoad::new();
        load.remember("u", "gpu", "a:1");
        assert_eq!(load.sticky_host("u", "gpu").as_deref(), Some("a:1"));
    }
}
