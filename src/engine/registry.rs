//! The connections of one shard, for the control socket: who they are,
//! where they go, what they moved, and a way to stop one. Shard-local (no
//! lock): the control thread asks the shard by message ([`ShardRequest`])
//! and the shard answers from here between its other work.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::proxy::link::Link;
use crate::proxy::Phase;

/// A snapshot of one connection, as the control socket reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConnInfo {
    pub id: u64,
    pub shard: usize,
    pub peer: String,
    pub transport: String,
    pub user: Option<String>,
    pub target: Option<String>,
    /// The session host's key (`HOST:PORT`, a socket path) for load
    /// counts; none for local displays (`sessions::balance::host_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    pub phase: String,
    /// Seconds since the connection was accepted.
    pub age_s: f64,
    /// When it was accepted (Unix time, seconds).
    pub started: u64,
    pub client_to_session_bytes: u64,
    pub client_to_session_packets: u64,
    pub session_to_client_bytes: u64,
    pub session_to_client_packets: u64,
    /// Last ping round trips measured by the proxy, in milliseconds.
    pub latency_client_ms: Option<u64>,
    pub latency_session_ms: Option<u64>,
}

/// One live connection.
pub(crate) struct Entry {
    pub id: u64,
    peer: String,
    transport: Cell<&'static str>,
    started: Instant,
    started_wall: SystemTime,
    user: RefCell<Option<String>>,
    target: RefCell<Option<String>>,
    host_key: RefCell<Option<String>>,
    phase: Cell<Phase>,
    link: RefCell<Option<Rc<RefCell<Link>>>>,
    /// Cancelled when an administrator stops this connection.
    pub kill: CancellationToken,
}

impl Entry {
    pub fn set_user(&self, user: Option<&str>) {
        if self.user.borrow().as_deref() != user {
            *self.user.borrow_mut() = user.map(str::to_owned);
        }
    }

    pub fn set_target(&self, target: Option<String>) {
        *self.target.borrow_mut() = target;
    }

    pub fn set_host_key(&self, host_key: Option<String>) {
        *self.host_key.borrow_mut() = host_key;
    }

    pub fn set_transport(&self, transport: &'static str) {
        self.transport.set(transport);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.set(phase);
    }

    pub fn set_link(&self, link: Option<Rc<RefCell<Link>>>) {
        *self.link.borrow_mut() = link;
    }

    fn info(&self, shard: usize, now: Instant) -> ConnInfo {
        let link = self.link.borrow();
        let link = link.as_ref().map(|l| l.borrow());
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (up, down) = match &link {
            Some(l) => {
                let t = l.traffic();
                (
                    (t.up.bytes.get(), t.up.packets.get()),
                    (t.down.bytes.get(), t.down.packets.get()),
                )
            }
            None => ((0, 0), (0, 0)),
        };
        use crate::proxy::Side;
        ConnInfo {
            id: self.id,
            shard,
            peer: self.peer.clone(),
            transport: self.transport.get().to_owned(),
            user: self.user.borrow().clone(),
            target: self.target.borrow().clone(),
            host_key: self.host_key.borrow().clone(),
            phase: format!("{:?}", self.phase.get()).to_lowercase(),
            age_s: now.saturating_duration_since(self.started).as_secs_f64(),
            started: self
                .started_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            client_to_session_bytes: up.0,
            client_to_session_packets: up.1,
            session_to_client_bytes: down.0,
            session_to_client_packets: down.1,
            latency_client_ms: link.as_ref().and_then(|l| l.latency(Side::Client)).map(ms),
            latency_session_ms: link.as_ref().and_then(|l| l.latency(Side::Session)).map(ms),
        }
    }
}

/// The live connections of one shard.
pub(crate) struct Registry {
    shard: usize,
    conns: RefCell<BTreeMap<u64, Rc<Entry>>>,
}

/// Keeps a connection in its registry; removes it when dropped.
pub(crate) struct Registered {
    registry: Rc<Registry>,
    pub entry: Rc<Entry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.conns.borrow_mut().remove(&self.entry.id);
    }
}

impl Registry {
    pub fn new(shard: usize) -> Rc<Registry> {
        Rc::new(Registry {
            shard,
            conns: RefCell::new(BTreeMap::new()),
        })
    }

    /// Adds a connection accepted now.
    pub fn register(self: &Rc<Self>, id: u64, peer: String, transport: &'static str) -> Registered {
        let entry = Rc::new(Entry {
            id,
            peer,
            transport: Cell::new(transport),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            user: RefCell::new(None),
            target: RefCell::new(None),
            host_key: RefCell::new(None),
            phase: Cell::new(Phase::Hello),
            link: RefCell::new(None),
            kill: CancellationToken::new(),
        });
        self.conns.borrow_mut().insert(id, entry.clone());
        Registered {
            registry: self.clone(),
            entry,
        }
    }

    /// Every connection, or only `id`.
    pub fn list(&self, id: Option<u64>) -> Vec<ConnInfo> {
        let now = Instant::now();
        let conns = self.conns.borrow();
        match id {
            Some(id) => conns
                .get(&id)
                .map(|e| e.info(self.shard, now))
                .into_iter()
                .collect(),
            None => conns.values().map(|e| e.info(self.shard, now)).collect(),
        }
    }

    /// Stops connection `id`; false if this shard has none by that id.
    pub fn stop(&self, id: u64) -> bool {
        match self.conns.borrow().get(&id) {
            Some(e) => {
                e.kill.cancel();
                true
            }
            None => false,
        }
    }

    /// Answers the control thread's requests until it goes away.
    pub async fn serve(self: Rc<Self>, mut requests: mpsc::Receiver<ShardRequest>) {
        while let Some(r) = requests.recv().await {
            match r {
                ShardRequest::List { id, reply } => {
                    let _ = reply.send(self.list(id));
                }
                ShardRequest::Stop { id, reply } => {
                    let _ = reply.send(self.stop(id));
                }
            }
        }
    }
}

/// What the control thread asks a shard.
#[derive(Debug)]
pub enum ShardRequest {
    /// Every connection of the shard, or only one.
    List {
        id: Option<u64>,
        reply: oneshot::Sender<Vec<ConnInfo>>,
    },
    /// Stop one connection (`true`: it was on this shard).
    Stop {
        id: u64,
        reply: oneshot::Sender<bool>,
    },
}

/// How the control thread reaches the shards.
#[derive(Debug, Clone, Default)]
pub struct Shards {
    senders: Vec<mpsc::Sender<ShardRequest>>,
}

/// Requests a shard may have waiting.
pub(crate) const SHARD_QUEUE: usize = 64;

impl Shards {
    pub(crate) fn push(&mut self, tx: mpsc::Sender<ShardRequest>) {
        self.senders.push(tx);
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Every connection of every shard (or only `id`), in id order.
    pub async fn list(&self, id: Option<u64>) -> Vec<ConnInfo> {
        let mut all = Vec::new();
        for tx in &self.senders {
            let (reply, rx) = oneshot::channel();
            if tx.send(ShardRequest::List { id, reply }).await.is_ok() {
                if let Ok(v) = rx.await {
                    all.extend(v);
                }
            }
        }
        all.sort_by_key(|c| c.id);
        all
    }

    /// Stops connection `id`, wherever it is; false if none has that id.
    pub async fn stop(&self, id: u64) -> bool {
        for tx in &self.senders {
            let (reply, rx) = oneshot::channel();
            if tx.send(ShardRequest::Stop { id, reply }).await.is_ok() && rx.await.unwrap_or(false)
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_with_their_connection() {
        let r = Registry::new(3);
        let a = r.register(1, "1.2.3.4:5".into(), "tcp");
        let b = r.register(2, "1.2.3.4:6".into(), "tcp");
        a.entry.set_user(Some("alice"));
        a.entry.set_target(Some("unix:/run/x".into()));
        let l = r.list(None);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].user.as_deref(), Some("alice"));
        assert_eq!(l[0].shard, 3);
        assert_eq!(l[1].phase, "hello");
        assert!(r.stop(2));
        assert!(b.entry.kill.is_cancelled());
        assert!(!a.entry.kill.is_cancelled());
        assert!(!r.stop(9));
        drop(b);
        assert_eq!(r.list(None).len(), 1);
        assert_eq!(r.list(Some(1)).len(), 1);
        assert!(r.list(Some(2)).is_empty());
    }
}
