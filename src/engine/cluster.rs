//! The cluster view's heartbeat thread (`--cluster-db`; the database side
//! is `crate::cluster`). Its own OS thread ("xfwd-cluster"): the postgres
//! client is sync, and nothing here may block a shard. It reaches the
//! shards as the control socket does ([`Shards::list`] / [`Shards::stop`],
//! answered between the shards' other work), on a small current-thread
//! runtime of its own; database calls run outside that runtime (the
//! postgres client runs its own).
//!
//! Every heartbeat: our row and our connections (one transaction), the
//! stop requests addressed to us (executed, deleted), the expired nodes
//! (deleted, with their connections), then a fresh [`Snapshot`] of the
//! other live nodes for [`ClusterLoad`]. The database down: one warning
//! per outage, serving goes on, reconnects with backoff, registers again
//! once back. A clean shutdown deletes our row.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::db::{self, Beat, ConnRow, Me};
use crate::cluster::load::{Command, SharedSnapshot, REMEMBER_QUEUE};
use crate::cluster::state::{Backoff, Outage, Transition};
use crate::cluster::{ClusterConfig, ClusterError, ClusterLoad, ClusterView};
use crate::sessions::balance::LoadView;

use super::metrics::ClusterMetrics;
use super::registry::Shards;

/// How long the shards may take to list their connections or stop one.
const SHARD_DEADLINE: Duration = Duration::from_secs(10);
/// The first reconnect delay (it doubles up to the heartbeat).
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What the control socket needs to answer `list-cluster` and remote
/// stops: its own connection per request (on a blocking thread), so that
/// a slow database never holds the heartbeat, nor the heartbeat it.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    pub node: String,
    pub heartbeat: Duration,
    pub expiry: Duration,
    db: db::DbConfig,
}

impl ClusterAccess {
    fn client(&self) -> Result<postgres::Client, ClusterError> {
        db::connect(&self.db)
    }

    /// Every live node and its connections (blocking).
    pub fn view(&self) -> Result<ClusterView, ClusterError> {
        db::view(&mut self.client()?, self.expiry)
    }

    /// Asks `node` to stop its connection `id` (blocking).
    pub fn request_stop(&self, node: &str, id: u64) -> Result<(), ClusterError> {
        db::request_stop(&mut self.client()?, node, id, self.expiry)
    }
}

/// The running heartbeat thread.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    thread: Option<std::thread::JoinHandle<()>>,
    tx: SyncSender<Command>,
    access: ClusterAccess,
}

/// Connects, migrates and registers this node (at start, before anyone
/// is served): a live node of the same name elsewhere is an error; an
/// unreachable database is not (a warning: the heartbeat registers once
/// it answers).
pub(crate) fn register(
    cfg: &ClusterConfig,
    me: &Me,
    takeover: bool,
) -> Result<Option<postgres::Client>, ClusterError> {
    match db::start(cfg, me, takeover) {
        Ok(c) => {
            tracing::info!(node = %me.name, "cluster database: node registered");
            Ok(Some(c))
        }
        Err(e) if e.is_unavailable() => {
            tracing::warn!(
                node = %me.name,
                "{e}; serving without the cluster view until it answers"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What the cluster view is made of, made before the shards start (so that
/// routing holds the view from the first client on) and handed to the
/// heartbeat thread when it starts: until its first beat, the view has no
/// other node's counts.
#[derive(Debug)]
pub(crate) struct Parts {
    tx: SyncSender<Command>,
    rx: std::sync::mpsc::Receiver<Command>,
    snapshot: Arc<SharedSnapshot>,
}

impl Parts {
    pub fn new() -> Parts {
        let (tx, rx) = sync_channel(REMEMBER_QUEUE);
        Parts {
            tx,
            rx,
            snapshot: Arc::new(SharedSnapshot::default()),
        }
    }

    /// The view session host pools use: `local` plus the other live
    /// nodes' counts and the sticky hosts.
    pub fn load(&self, local: Arc<dyn LoadView>) -> Arc<dyn LoadView> {
        Arc::new(ClusterLoad::new(
            local,
            self.snapshot.clone(),
            self.tx.clone(),
        ))
    }
}

impl Heartbeat {
    /// Starts the thread (the listeners are bound); `client`: the
    /// connection [`register`] made, if it could; `parts`: the view's,
    /// made at start ([`Parts::new`]).
    pub fn start(
        cfg: &ClusterConfig,
        me: Me,
        client: Option<postgres::Client>,
        shards: Shards,
        metrics: Option<Arc<ClusterMetrics>>,
        parts: Parts,
    ) -> Result<Heartbeat, String> {
        let db = db::client_config(&cfg.db, &cfg.node).map_err(|e| e.to_string())?;
        let access = ClusterAccess {
            node: cfg.node.clone(),
            heartbeat: cfg.heartbeat,
            expiry: cfg.expiry,
            db: db.clone(),
        };
        let Parts { tx, rx, snapshot } = parts;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the cluster heartbeat: {e}"))?;
        if let Some(m) = &metrics {
            if client.is_some() {
                m.update(&[]);
            } else {
                m.db_down();
            }
        }
        let mut beat = Beating {
            me,
            db,
            heartbeat: cfg.heartbeat,
            expiry: cfg.expiry,
            outage: Outage::default(),
            backoff: Backoff::new(FIRST_RETRY, cfg.heartbeat.max(FIRST_RETRY)),
            taken_warned: false,
            grace_until: None,
            client,
            shards,
            rt,
            snapshot: snapshot.clone(),
            metrics,
            pending: HashMap::new(),
        };
        if beat.client.is_none() {
            // register() warned already.
            beat.outage.failed();
        }
        let thread = std::thread::Builder::new()
            .name("xfwd-cluster".into())
            .spawn(move || beat.run(&rx))
            .map_err(|e| format!("cannot start the cluster heartbeat: {e}"))?;
        Ok(Heartbeat {
            thread: Some(thread),
            tx,
            access,
        })
    }

    pub fn access(&self) -> ClusterAccess {
        self.access.clone()
    }

    /// Unregisters (bounded by the database timeouts) and ends the thread.
    pub fn shutdown(mut self) {
        // The queue may be full of remembers: wait for room (the thread
        // drains it), as it ends soon anyway.
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the cluster heartbeat thread panicked");
            }
        }
    }
}

/// The heartbeat thread's state.
struct Beating {
    me: Me,
    db: db::DbConfig,
    heartbeat: Duration,
    expiry: Duration,
    outage: Outage,
    backoff: Backoff,
    /// "Another node holds our name" was logged (once until it clears).
    taken_warned: bool,
    /// Back from an outage: no node is expired before this (the others
    /// could not beat either; they do within an expiry).
    grace_until: Option<Instant>,
    client: Option<postgres::Client>,
    shards: Shards,
    rt: tokio::runtime::Runtime,
    snapshot: Arc<SharedSnapshot>,
    metrics: Option<Arc<ClusterMetrics>>,
    /// Remembered sticky hosts for the next heartbeat (bounded by
    /// [`REMEMBER_QUEUE`]).
    pending: HashMap<(String, String), String>,
}

impl Beating {
    fn run(mut self, rx: &Receiver<Command>) {
        let mut next = Instant::now();
        loop {
            // Wait for the next beat, taking remembers meanwhile.
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                match rx.recv_timeout(next - now) {
                    Ok(Command::Remember { user, pool, host }) => {
                        let key = (user, pool);
                        if self.pending.len() < REMEMBER_QUEUE || self.pending.contains_key(&key) {
                            self.pending.insert(key, host);
                        }
                    }
                    Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                        self.unregister();
                        return;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            let wait = if self.beat() {
                self.heartbeat
            } else {
                self.backoff.failed()
            };
            next = Instant::now() + wait;
        }
    }

    /// One heartbeat; false: the database did not answer.
    fn beat(&mut self) -> bool {
        let conns = self.connections();
        let fresh = self.client.as_ref().is_none_or(postgres::Client::is_closed);
        if fresh {
            self.client = None;
            match db::connect(&self.db).and_then(|mut c| db::migrate(&mut c).map(|()| c)) {
                Ok(c) => {
                    if self.outage.is_down() {
                        self.grace_until = Some(Instant::now() + self.expiry);
                    }
                    self.client = Some(c);
                }
                Err(e) => return self.failed(&e),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return false;
        };
        let may_expire = self.grace_until.is_none_or(|t| Instant::now() >= t);
        let r = db::beat(
            client,
            &self.me,
            self.expiry,
            &conns,
            &self.pending,
            may_expire,
        )
        .and_then(|b| {
            let snap = match &b {
                Beat::Written { .. } => Some(db::snapshot(client, &self.me, self.expiry)?),
                Beat::Taken(_) => None,
            };
            Ok((b, snap))
        });
        let (beat, snap) = match r {
            Ok(x) => x,
            Err(e) => {
                self.client = None;
                return self.failed(&e);
            }
        };
        self.backoff.reset();
        if self.outage.succeeded() == Transition::CameBack {
            tracing::info!(node = %self.me.name, "cluster database reachable again: node registered");
        }
        match beat {
            Beat::Written { stop, expired } => {
                self.pending.clear();
                self.taken_warned = false;
                for node in expired {
                    tracing::info!(node = %node, "cluster: node expired (no heartbeat); its rows are deleted");
                }
                for id in stop {
                    let stopped = self.rt.block_on(async {
                        tokio::time::timeout(SHARD_DEADLINE, self.shards.stop(id))
                            .await
                            .unwrap_or(false)
                    });
                    if stopped {
                        tracing::info!(
                            connection = id,
                            "cluster: stopping a connection, as another node asked"
                        );
                    } else {
                        tracing::debug!(
                            connection = id,
                            "cluster: a stop request for a connection that has ended"
                        );
                    }
                }
                if let Some(s) = snap {
                    if let Some(m) = &self.metrics {
                        m.update(&s.per_node);
                    }
                    self.snapshot.replace(s);
                }
            }
            Beat::Taken(h) => {
                if !self.taken_warned && h.address.split(' ').next() == Some(self.me.host()) {
                    // The xfwd that took this one over (`--takeover`).
                    self.taken_warned = true;
                    tracing::info!(
                        node = %self.me.name,
                        holder_pid = h.pid,
                        "cluster: this node name is now held by pid {} on this machine; this xfwd stops reporting",
                        h.pid
                    );
                } else if !self.taken_warned {
                    self.taken_warned = true;
                    tracing::error!(
                        node = %self.me.name,
                        holder_pid = h.pid,
                        holder = %h.address,
                        "cluster: another live node holds this node name; this xfwd stays out of the cluster view until it expires"
                    );
                }
                if let Some(m) = &self.metrics {
                    m.update(&[]);
                }
            }
        }
        true
    }

    fn failed(&mut self, e: &ClusterError) -> bool {
        if let Some(m) = &self.metrics {
            m.db_down();
        }
        match self.outage.failed() {
            Transition::WentDown => tracing::warn!(
                node = %self.me.name,
                "{e}; serving on, retrying (warned once per outage)"
            ),
            _ => tracing::debug!(node = %self.me.name, "cluster database still unavailable: {e}"),
        }
        false
    }

    /// This node's connections, from the shards.
    fn connections(&self) -> Vec<ConnRow> {
        let list = self.rt.block_on(async {
            tokio::time::timeout(SHARD_DEADLINE, self.shards.list(None))
                .await
                .unwrap_or_default()
        });
        list.into_iter()
            .take(db::MAX_CONNECTION_ROWS)
            .map(|c| ConnRow {
                id: c.id,
                user: c.user,
                peer: c.peer,
                transport: c.transport,
                target: c.target,
                host_key: c.host_key,
                age_s: c.age_s,
            })
            .collect()
    }

    /// A clean shutdown: our row goes (one attempt, bounded).
    fn unregister(&mut self) {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(c) => Ok(c),
            None => db::connect(&self.db),
        };
        match client.and_then(|mut c| db::unregister(&mut c, &self.me)) {
            Ok(()) => tracing::info!(node = %self.me.name, "cluster: node unregistered"),
            Err(e) => tracing::warn!(
                node = %self.me.name,
                "cluster: cannot unregister ({e}); the other nodes expire this one"
            ),
        }
    }
}
