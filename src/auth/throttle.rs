//! Slowing down password guessing, and one log line per attempt.
//!
//! Failed attempts are counted per source address and per user name. The
//! n-th failure in a row (of either count) costs `base * 2^(n-1)`, at most
//! `max`: the refusal is sent only after that delay (xpra waits one second
//! before it disconnects a refused client), and the next attempt from the
//! same address or for the same user is not checked before that time is
//! up. Attempts that arrive meanwhile queue behind each other, each one
//! reserving the next slot, so parallel connections gain nothing. Counts
//! decay by one per `decay` without failure; a success clears both.
//! Nothing waits on a thread: the caller sleeps its own connection task,
//! everyone else is served meanwhile.
//!
//! [`Throttle`] is a plain struct for one shard (no lock); [`SharedThrottle`]
//! wraps it in a mutex for all shards (attempts are rare, the lock is
//! held for a few hash map operations).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::peer::PeerInfo;

/// Delays and memory of a throttle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Delay after the first failure (xpra: 1 s).
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
    /// One failure is forgotten per `decay` without failures.
    pub decay: Duration,
    /// Records kept (addresses + users); the stalest go first beyond it.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> ThrottleConfig {
        ThrottleConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            decay: Duration::from_secs(60),
            max_entries: 65536,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// The earliest time the next attempt is checked.
    next_slot: Instant,
}

impl Record {
    /// The failure count after decay.
    fn failures(&self, now: Instant, decay: Duration) -> u32 {
        if decay.is_zero() {
            return self.failures;
        }
        let idle = now.saturating_duration_since(self.last_failure);
        let forgotten = idle.as_nanos() / decay.as_nanos().max(1);
        let forgotten = u32::try_from(forgotten).unwrap_or(u32::MAX);
        self.failures.saturating_sub(forgotten)
    }

    fn stale(&self, now: Instant, decay: Duration) -> bool {
        self.failures(now, decay) == 0 && self.next_slot <= now
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(String),
}

/// The per-shard throttle.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    records: HashMap<Key, Record>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            records: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// The delay the n-th failure costs.
    pub fn delay_for(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = (failures - 1).min(30);
        self.config
            .base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    fn keys(addr: Option<IpAddr>, user: &str) -> Vec<Key> {
        let mut k = Vec::with_capacity(2);
        if let Some(a) = addr {
            k.push(Key::Addr(a));
        }
        k.push(Key::User(user.to_owned()));
        k
    }

    /// Before checking an answer: how long to wait first (zero when
    /// neither the address nor the user has failed lately). Reserves the
    /// slot: a second attempt waits behind this one.
    pub fn admit(&mut self, addr: Option<IpAddr>, user: &str, now: Instant) -> Duration {
        let decay = self.config.decay;
        let mut at = now;
        let mut failures = 0;
        for k in Throttle::keys(addr, user) {
            if let Some(r) = self.records.get(&k) {
                let f = r.failures(now, decay);
                if f > 0 {
                    at = at.max(r.next_slot);
                    failures = failures.max(f);
                }
            }
        }
        if failures > 0 {
            let next = at + self.delay_for(failures);
            for k in Throttle::keys(addr, user) {
                if let Some(r) = self.records.get_mut(&k) {
                    r.next_slot = r.next_slot.max(next);
                }
            }
        }
        at.saturating_duration_since(now)
    }

    /// After the verdict. For a failure: counts it and returns how long to
    /// wait before telling the client. A success clears both records.
    pub fn record(&mut self, addr: Option<IpAddr>, user: &str, ok: bool, now: Instant) -> Duration {
        let keys = Throttle::keys(addr, user);
        if ok {
            for k in keys {
                self.records.remove(&k);
            }
            return Duration::ZERO;
        }
        let decay = self.config.decay;
        let mut worst = 0;
        for k in &keys {
            let r = self.records.entry(k.clone()).or_insert(Record {
                failures: 0,
                last_failure: now,
                next_slot: now,
            });
            r.failures = r.failures(now, decay).saturating_add(1);
            r.last_failure = now;
            worst = worst.max(r.failures);
        }
        let delay = self.delay_for(worst);
        for k in &keys {
            if let Some(r) = self.records.get_mut(k) {
                r.next_slot = r.next_slot.max(now + delay);
            }
        }
        self.prune(now);
        delay
    }

    /// The failure count of an address or user now (for `info`).
    pub fn failures(&self, addr: Option<IpAddr>, user: &str, now: Instant) -> u32 {
        Throttle::keys(addr, user)
            .iter()
            .filter_map(|k| self.records.get(k))
            .map(|r| r.failures(now, self.config.decay))
            .max()
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn prune(&mut self, now: Instant) {
        if self.records.len() <= self.config.max_entries {
            return;
        }
        let decay = self.config.decay;
        self.records.retain(|_, r| !r.stale(now, decay));
        if self.records.len() > self.config.max_entries {
            // still too many: drop the stalest
            let mut by_age: Vec<(Instant, Key)> = self
                .records
                .iter()
                .map(|(k, r)| (r.last_failure, k.clone()))
                .collect();
            by_age.sort_by_key(|(t, _)| *t);
            let excess = self.records.len() - self.config.max_entries;
            for (_, k) in by_age.into_iter().take(excess) {
                self.records.remove(&k);
            }
        }
    }
}

/// One throttle for every shard.
#[derive(Clone, Debug)]
pub struct SharedThrottle(Arc<Mutex<Throttle>>);

impl SharedThrottle {
    pub fn new(config: ThrottleConfig) -> SharedThrottle {
        SharedThrottle(Arc::new(Mutex::new(Throttle::new(config))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Throttle) -> R) -> R {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }

    pub fn admit(&self, addr: Option<IpAddr>, user: &str, now: Instant) -> Duration {
        self.with(|t| t.admit(addr, user, now))
    }

    pub fn record(&self, addr: Option<IpAddr>, user: &str, ok: bool, now: Instant) -> Duration {
        self.with(|t| t.record(addr, user, ok, now))
    }

    pub fn failures(&self, addr: Option<IpAddr>, user: &str, now: Instant) -> u32 {
        self.with(|t| t.failures(addr, user, now))
    }
}

/// The outcome of one attempt, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Ok,
    /// Refused, with the detail (not what the client was told).
    Failed(String),
}

/// One log line per attempt: time, peer, user, module, result, and for a
/// login, where it goes.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    pub time: SystemTime,
    pub peer: &'a PeerInfo,
    pub user: &'a str,
    /// The module that decided (for a success: the chain, `a+b`).
    pub module: &'a str,
    pub result: AttemptResult,
    /// The delay imposed on the refusal.
    pub delay: Duration,
    /// Where an accepted client goes (its session, a one-shot request, or
    /// why it goes nowhere).
    pub target: Option<&'a str>,
}

impl std::fmt::Display for Attempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peer = match (self.peer.remote, &self.peer.socket_path, self.peer.uid) {
            (Some(r), _, _) => format!("{}:{r}", self.peer.transport.name()),
            (None, _, Some(uid)) => format!("{}:uid={uid}", self.peer.transport.name()),
            (None, Some(p), None) => format!("{}:{}", self.peer.transport.name(), p.display()),
            (None, None, None) => self.peer.transport.name().to_owned(),
        };
        write!(
            f,
            "auth time={} peer={peer} user={:?} module={} result=",
            rfc3339(self.time),
            truncate(self.user, 64),
            self.module
        )?;
        match &self.result {
            AttemptResult::Ok => {
                f.write_str("ok")?;
                match self.target {
                    Some(t) => write!(f, " target={:?}", truncate(t, 256)),
                    None => Ok(()),
                }
            }
            AttemptResult::Failed(d) => {
                write!(
                    f,
                    "failed delay={}ms detail={:?}",
                    self.delay.as_millis(),
                    d
                )
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `2026-11-01T12:34:56.789Z` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86400).unwrap_or(0);
    let rem = secs % 86400;
    // civil from days (H. Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Logs an attempt (target `xfwd::auth`): successes at info, failures at
/// warn.
pub fn log_attempt(a: &Attempt<'_>) {
    match a.result {
        AttemptResult::Ok => tracing::info!(target: "xfwd::auth", "{a}"),
        AttemptResult::Failed(_) => tracing::warn!(target: "xfwd::auth", "{a}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> ThrottleConfig {
        ThrottleConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            decay: Duration::from_secs(60),
            max_entries: 4,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn failures_grow_the_delay_up_to_max() {
        let mut t = Throttle::new(cfg());
        let ip = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(t.admit(ip, "bob", t0), Duration::ZERO);
        assert_eq!(t.record(ip, "bob", false, t0), S(1));
        assert_eq!(t.record(ip, "bob", false, t0), S(2));
        assert_eq!(t.record(ip, "bob", false, t0), S(4));
        assert_eq!(t.record(ip, "bob", false, t0), S(8));
        assert_eq!(t.record(ip, "bob", false, t0), S(8));
        assert_eq!(t.failures(ip, "bob", t0), 5);
        // another user from the same address is slowed too
        assert_eq!(t.admit(ip, "carol", t0), S(8));
        // another address for the same user too
        let other = Some("10.0.0.2".parse().unwrap());
        assert!(t.admit(other, "bob", t0) >= S(8));
        // an unrelated client is not
        assert_eq!(t.admit(other, "dave", t0), Duration::ZERO);
    }

    #[test]
    fn parallel_attempts_queue() {
        let mut t = Throttle::new(cfg());
        let ip = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        t.record(ip, "bob", false, t0);
        let a = t.admit(ip, "x", t0);
        let b = t.admit(ip, "y", t0);
        let c = t.admit(ip, "z", t0);
        assert_eq!(a, S(1));
        assert_eq!(b, S(2));
        assert_eq!(c, S(3));
    }

    #[test]
    fn decay_and_success() {
        let mut t = Throttle::new(cfg());
        let ip = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            t.record(ip, "bob", false, t0);
        }
        assert_eq!(t.failures(ip, "bob", t0 + S(61)), 2);
        assert_eq!(t.failures(ip, "bob", t0 + S(200)), 0);
        assert_eq!(t.admit(ip, "bob", t0 + S(200)), Duration::ZERO);
        t.record(ip, "bob", false, t0);
        assert_eq!(t.record(ip, "bob", true, t0), Duration::ZERO);
        assert_eq!(t.failures(ip, "bob", t0), 0);
        assert!(t.is_empty());
        // no address (unix socket): by user only
        t.record(None, "eve", false, t0);
        assert_eq!(t.admit(None, "eve", t0), S(1));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::new(cfg());
        let t0 = Instant::now();
        for i in 0..20u8 {
            let ip = Some(IpAddr::from([10, 0, 0, i]));
            t.record(ip, &format!("u{i}"), false, t0 + S(u64::from(i)));
        }
        assert!(t.len() <= 4, "{}", t.len());
        let shared = SharedThrottle::new(cfg());
        shared.record(None, "a", false, t0);
        assert_eq!(shared.failures(None, "a", t0), 1);
        assert_eq!(shared.admit(None, "a", t0), S(1));
    }

    #[test]
    fn log_line() {
        let peer = PeerInfo::tcp("10.1.2.3:4567".parse().unwrap(), None);
        let a = Attempt {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            peer: &peer,
            user: "bo\"b\n",
            module: "sqlite",
            result: AttemptResult::Failed("wrong password".into()),
            delay: S(2),
            target: None,
        };
        assert_eq!(
            a.to_string(),
            "auth time=2023-11-14T22:13:20.123Z peer=tcp:10.1.2.3:4567 user=\"bo\\\"b\\n\" \
             module=sqlite result=failed delay=2000ms detail=\"wrong password\""
        );
        assert!(!a.to_string().contains('\n'));
        let ok = Attempt {
            result: AttemptResult::Ok,
            target: Some("unix:/run/user/1000/xpra/host-7"),
            ..a.clone()
        };
        assert!(ok
            .to_string()
            .ends_with("result=ok target=\"unix:/run/user/1000/xpra/host-7\""));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        log_attempt(&a);
    }
}
