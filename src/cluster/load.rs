//! [`ClusterLoad`]: this node's [`LoadView`] plus what the last heartbeat
//! read of the other live nodes. Every call answers from memory (never a
//! database query); `remember` is queued to the heartbeat thread, which
//! writes it to `xfwd_user_hosts` with its next heartbeat.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, RwLock};

use super::state::Snapshot;
use crate::sessions::balance::LoadView;

/// `remember`s waiting for the heartbeat thread at most; more are dropped
/// (with a debug line): stickiness is a preference, not a promise.
pub const REMEMBER_QUEUE: usize = 4096;

/// What the heartbeat thread is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Upsert `xfwd_user_hosts` at the next heartbeat.
    Remember {
        user: String,
        pool: String,
        host: String,
    },
    /// Unregister and end (a clean shutdown).
    Shutdown,
}

/// The snapshot the heartbeat thread refreshes and every [`ClusterLoad`]
/// reads.
#[derive(Debug, Default)]
pub struct SharedSnapshot(RwLock<Snapshot>);

impl SharedSnapshot {
    pub fn replace(&self, s: Snapshot) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }

    pub fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn remember(&self, user: &str, pool: &str, host: &str) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remember(user, pool, host);
    }
}

/// Every live node's load: `local` (this node's, counted as connections
/// come and go) plus the other nodes' from the snapshot.
#[derive(Debug, Clone)]
pub struct ClusterLoad {
    local: Arc<dyn LoadView>,
    snapshot: Arc<SharedSnapshot>,
    queue: SyncSender<Command>,
}

impl ClusterLoad {
    pub fn new(
        local: Arc<dyn LoadView>,
        snapshot: Arc<SharedSnapshot>,
        queue: SyncSender<Command>,
    ) -> ClusterLoad {
        ClusterLoad {
            local,
            snapshot,
            queue,
        }
    }
}

impl LoadView for ClusterLoad {
    fn connections(&self, host: &str) -> usize {
        self.local
            .connections(host)
            .saturating_add(self.snapshot.read(|s| s.connections(host)))
    }

    fn sticky_host(&self, user: &str, pool: &str) -> Option<String> {
        self.snapshot
            .read(|s| s.sticky_host(user, pool).map(str::to_owned))
            .or_else(|| self.local.sticky_host(user, pool))
    }

    fn remember(&self, user: &str, pool: &str, host: &str) {
        self.local.remember(user, pool, host);
        self.snapshot.remember(user, pool, host);
        let c = Command::Remember {
            user: user.to_owned(),
            pool: pool.to_owned(),
            host: host.to_owned(),
        };
        match self.queue.try_send(c) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(
                    user,
                    pool,
                    host,
                    "cluster: remember queue full; not recorded"
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A trivial local view: fixed counts, remembered hosts in a map.
    #[derive(Debug, Default)]
    struct Local {
        counts: HashMap<String, usize>,
        sticky: Mutex<HashMap<(String, String), String>>,
    }

    impl LoadView for Local {
        fn connections(&self, host: &str) -> usize {
            self.counts.get(host).copied().unwrap_or(0)
        }
        fn sticky_host(&self, user: &str, pool: &str) -> Option<String> {
            self.sticky
                .lock()
                .unwrap()
                .get(&(user.into(), pool.into()))
                .cloned()
        }
        fn remember(&self, user: &str, pool: &str, host: &str) {
            self.sticky
                .lock()
                .unwrap()
                .insert((user.into(), pool.into()), host.into());
        }
    }

    #[test]
    fn counts_add_up_and_remembers_are_queued() {
        let local = Arc::new(Local {
            counts: [("h1:1".to_owned(), 2)].into(),
            ..Local::default()
        });
        let snap = Arc::new(SharedSnapshot::default());
        snap.replace(Snapshot::from_rows(
            "a",
            [
                ("b".into(), "h1:1".into(), 3),
                ("a".into(), "h1:1".into(), 2),
                ("b".into(), "h2:1".into(), 1),
            ],
            [("a".into(), 2), ("b".into(), 4)],
            [("carol".into(), "p".into(), "h2:1".into())],
        ));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let view = ClusterLoad::new(local.clone(), snap.clone(), tx);
        assert_eq!(view.connections("h1:1"), 5);
        assert_eq!(view.connections("h2:1"), 1);
        assert_eq!(view.connections("h9:1"), 0);
        assert_eq!(view.sticky_host("carol", "p").as_deref(), Some("h2:1"));
        assert_eq!(view.sticky_host("dave", "p"), None);
        view.remember("dave", "p", "h1:1");
        // Seen at once, before any heartbeat.
        assert_eq!(view.sticky_host("dave", "p").as_deref(), Some("h1:1"));
        assert_eq!(local.sticky_host("dave", "p").as_deref(), Some("h1:1"));
        // The queue holds one: the second is dropped, not waited for.
        view.remember("erin", "p", "h2:1");
        assert_eq!(
            rx.try_recv().unwrap(),
            Command::Remember {
                user: "dave".into(),
                pool: "p".into(),
                host: "h1:1".into()
            }
        );
        assert!(rx.try_recv().is_err());
        // A heartbeat replaces the snapshot; the local view still answers.
        snap.replace(Snapshot::default());
        assert_eq!(view.connections("h1:1"), 2);
        assert_eq!(view.sticky_host("dave", "p").as_deref(), Some("h1:1"));
    }
}
