//! The sans-IO parts of the cluster view: which nodes have expired, how
//! long to wait before reconnecting, when to warn about an outage, and the
//! in-memory snapshot of the other live nodes that [`super::ClusterLoad`]
//! answers from.

use std::collections::HashMap;
use std::time::Duration;

/// Rows a snapshot keeps at most (host counts, sticky hosts): what the
/// database sends is bounded by the queries too.
pub const MAX_SNAPSHOT_ROWS: usize = 100_000;

/// The nodes (other than `me`) whose last heartbeat, `age_s` seconds ago by
/// the database's clock, is older than `expiry`. A node never expires
/// itself: its own row is written again at its next heartbeat.
pub fn expired<'a>(
    nodes: impl IntoIterator<Item = (&'a str, f64)>,
    me: &str,
    expiry: Duration,
) -> Vec<String> {
    let limit = expiry.as_secs_f64();
    nodes
        .into_iter()
        .filter(|&(name, age)| name != me && (age > limit || !age.is_finite()))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Who holds a node name in `xfwd_nodes` now.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub pid: i32,
    pub address: String,
    /// Seconds since its last heartbeat, by the database's clock.
    pub age_s: f64,
}

/// What a node does with its name's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No row: insert ours.
    Insert,
    /// Our own row (same pid, same address): refresh it.
    Refresh,
    /// Another process's row, expired (or one we may replace): its
    /// connections go, the row becomes ours.
    Replace,
    /// A live node of another process holds the name.
    Taken,
}

/// Decides what to do with the row of our name: `pid` and `address` are
/// ours; `may_replace_live`: a live holder may be replaced (at start, when
/// it is on this machine and gone, or the xfwd this one takes over from).
pub fn claim(
    holder: Option<&Holder>,
    pid: i32,
    address: &str,
    expiry: Duration,
    may_replace_live: bool,
) -> Claim {
    match holder {
        None => Claim::Insert,
        Some(h) if h.pid == pid && h.address == address => Claim::Refresh,
        Some(h) if h.age_s > expiry.as_secs_f64() || !h.age_s.is_finite() => Claim::Replace,
        Some(_) if may_replace_live => Claim::Replace,
        Some(_) => Claim::Taken,
    }
}

/// Reconnect delays: doubling from `min` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The database answered: the next outage starts from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What one attempt to reach the database means for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The database was up and is down now: warn (once per outage).
    WentDown,
    /// Still down: nothing to log.
    StillDown,
    /// It was down and is back: say so, register again.
    CameBack,
    /// Up, as before.
    StillUp,
}

/// Whether the database is up, as the heartbeat last saw it. Starts as
/// up, so that a database down at start is warned about.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    down: bool,
    /// Failed attempts in this outage.
    pub failures: u64,
}

impl Outage {
    pub fn failed(&mut self) -> Transition {
        self.failures = self.failures.saturating_add(1);
        if self.down {
            Transition::StillDown
        } else {
            self.down = true;
            Transition::WentDown
        }
    }

    pub fn succeeded(&mut self) -> Transition {
        self.failures = 0;
        if self.down {
            self.down = false;
            Transition::CameBack
        } else {
            Transition::StillUp
        }
    }

    pub fn is_down(&self) -> bool {
        self.down
    }
}

/// What this node knows of the other live nodes, from its last heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Connections of the other live nodes, per host key.
    counts: HashMap<String, usize>,
    /// Connections of every live node (this one included), per node.
    pub per_node: Vec<(String, usize)>,
    /// `(user, pool)` -> host, of every node (`xfwd_user_hosts`).
    sticky: HashMap<(String, String), String>,
}

impl Snapshot {
    /// From the rows the heartbeat read: `(node, host_key, connections)`
    /// of every live node, `(node, connections)` of every live node, and
    /// the sticky hosts. `me`'s own host counts are left out: the local
    /// view counts them (and sooner). At most [`MAX_SNAPSHOT_ROWS`] rows of
    /// each are kept.
    pub fn from_rows(
        me: &str,
        host_rows: impl IntoIterator<Item = (String, String, i64)>,
        node_rows: impl IntoIterator<Item = (String, i64)>,
        sticky_rows: impl IntoIterator<Item = (String, String, String)>,
    ) -> Snapshot {
        let n = |c: i64| usize::try_from(c).unwrap_or(0);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (node, host, c) in host_rows.into_iter().take(MAX_SNAPSHOT_ROWS) {
            if node != me {
                let e = counts.entry(host).or_default();
                *e = e.saturating_add(n(c));
            }
        }
        let per_node = node_rows
            .into_iter()
            .take(MAX_SNAPSHOT_ROWS)
            .map(|(node, c)| (node, n(c)))
            .collect();
        let sticky = sticky_rows
            .into_iter()
            .take(MAX_SNAPSHOT_ROWS)
            .map(|(user, pool, host)| ((user, pool), host))
            .collect();
        Snapshot {
            counts,
            per_node,
            sticky,
        }
    }

    /// The other live nodes' connections to `host`.
    pub fn connections(&self, host: &str) -> usize {
        self.counts.get(host).copied().unwrap_or(0)
    }

    /// The host `user` was last served by in `pool`, by any node.
    pub fn sticky_host(&self, user: &str, pool: &str) -> Option<&str> {
        self.sticky
            .get(&(user.to_owned(), pool.to_owned()))
            .map(String::as_str)
    }

    /// Live nodes seen (this one included).
    pub fn nodes(&self) -> usize {
        self.per_node.len()
    }

    /// Records a `remember` at once, so that this node's next choice sees
    /// it before the next heartbeat has read it back (bounded as the rows).
    pub fn remember(&mut self, user: &str, pool: &str, host: &str) {
        let key = (user.to_owned(), pool.to_owned());
        if self.sticky.len() < MAX_SNAPSHOT_ROWS || self.sticky.contains_key(&key) {
            self.sticky.insert(key, host.to_owned());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_other_nodes_past_the_expiry_expire() {
        let nodes = [
            ("a", 1.0),
            ("b", 16.0),
            ("c", 15.0),
            ("d", f64::NAN),
            ("me", 99.0),
        ];
        let e = expired(nodes.iter().copied(), "me", Duration::from_secs(15));
        assert_eq!(e, ["b", "d"]);
        assert!(expired([], "me", Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_name_is_claimed_unless_a_live_other_holds_it() {
        let e = Duration::from_secs(15);
        let h = |pid, address: &str, age_s| Holder {
            pid,
            address: address.into(),
            age_s,
        };
        assert_eq!(claim(None, 1, "m", e, false), Claim::Insert);
        assert_eq!(
            claim(Some(&h(1, "m", 99.0)), 1, "m", e, false),
            Claim::Refresh
        );
        assert_eq!(
            claim(Some(&h(2, "m", 16.0)), 1, "m", e, false),
            Claim::Replace
        );
        assert_eq!(claim(Some(&h(2, "m", 3.0)), 1, "m", e, false), Claim::Taken);
        assert_eq!(
            claim(Some(&h(1, "other", 3.0)), 1, "m", e, false),
            Claim::Taken
        );
        assert_eq!(
            claim(Some(&h(2, "m", 3.0)), 1, "m", e, true),
            Claim::Replace
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let got: Vec<_> = (0..5).map(|_| b.failed().as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(500));
        // A zero minimum still waits.
        assert!(!Backoff::new(Duration::ZERO, Duration::ZERO)
            .failed()
            .is_zero());
    }

    #[test]
    fn an_outage_is_warned_about_once() {
        let mut o = Outage::default();
        assert_eq!(o.succeeded(), Transition::StillUp);
        assert_eq!(o.failed(), Transition::WentDown);
        assert_eq!(o.failed(), Transition::StillDown);
        assert_eq!(o.failed(), Transition::StillDown);
        assert!(o.is_down());
        assert_eq!(o.failures, 3);
        assert_eq!(o.succeeded(), Transition::CameBack);
        assert_eq!(o.succeeded(), Transition::StillUp);
        assert_eq!(o.failed(), Transition::WentDown);
    }

    #[test]
    fn the_snapshot_sums_the_other_nodes() {
        let s = Snapshot::from_rows(
            "a",
            [
                ("a".into(), "h1:1".into(), 5),
                ("b".into(), "h1:1".into(), 2),
                ("c".into(), "h1:1".into(), 3),
                ("c".into(), "h2:1".into(), 1),
                ("c".into(), "h3:1".into(), -4),
            ],
            [("a".into(), 5), ("b".into(), 2), ("c".into(), 4)],
            [("alice".into(), "p".into(), "h2:1".into())],
        );
        assert_eq!(s.connections("h1:1"), 5, "a's own 5 are not counted");
        assert_eq!(s.connections("h2:1"), 1);
        assert_eq!(s.connections("h3:1"), 0);
        assert_eq!(s.connections("nowhere"), 0);
        assert_eq!(s.nodes(), 3);
        assert_eq!(s.sticky_host("alice", "p"), Some("h2:1"));
        assert_eq!(s.sticky_host("alice", "q"), None);
        let mut s = s;
        s.remember("alice", "p", "h1:1");
        s.remember("bob", "p", "h3:1");
        assert_eq!(s.sticky_host("alice", "p"), Some("h1:1"));
        assert_eq!(s.sticky_host("bob", "p"), Some("h3:1"));
    }
}
