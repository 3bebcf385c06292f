//! The cluster view (issue 16): every xfwd node registers itself and its
//! live connections in one shared PostgreSQL (`--cluster-db`), so that
//! `xfwd list --cluster` shows every node's connections, `xfwd stop
//! --connection NODE/ID` reaches any of them, and session host pools count
//! every node's connections ([`ClusterLoad`]).
//!
//! - [`state`]: the sans-IO parts (expiry decisions, reconnect backoff,
//!   outage logging, the snapshot of the other nodes);
//! - [`db`]: the schema, its migrations and every query (the sync
//!   `postgres` client: used only on the heartbeat thread and on blocking
//!   threads, never on a shard);
//! - [`load`]: [`ClusterLoad`], the [`LoadView`](crate::sessions::balance::LoadView)
//!   that adds the other nodes' counts to this node's.
//!
//! The heartbeat thread itself (it reaches the shards) is engine glue:
//! `engine::cluster`. docs/scale-out.md, "Cluster view", tells the whole
//! story.

pub mod db;
pub mod load;
pub mod state;

use std::time::Duration;

pub use load::ClusterLoad;
pub use state::Snapshot;

/// The default `--cluster-heartbeat`, in seconds.
pub const DEFAULT_HEARTBEAT: u64 = 5;
/// The default `--cluster-expiry` is this many heartbeats.
pub const EXPIRY_HEARTBEATS: u64 = 3;

/// The cluster options, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `postgres://...` (or a key=value connection string).
    pub db: String,
    /// This node's name (unique among the live nodes).
    pub node: String,
    /// How often the node writes its row and its connections.
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this is taken as gone.
    pub expiry: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    /// Without the database URI (it may hold a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("db", &"<redacted>")
            .field("node", &self.node)
            .field("heartbeat", &self.heartbeat)
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// Why the cluster view cannot start, or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--cluster-db: not a PostgreSQL connection string: {0}")]
    BadUri(String),
    #[error("the cluster database is unavailable: {0}")]
    Unavailable(String),
    #[error("the cluster database refused a query: {0}")]
    Query(String),
    #[error(
        "--node-name={name}: a live node of that name is registered already (pid {pid} on {address}, last heartbeat {age_s:.0} s ago); give each node its own --node-name, or wait {wait_s:.0} s for that one to expire"
    )]
    NameTaken {
        name: String,
        pid: i32,
        address: String,
        age_s: f64,
        wait_s: f64,
    },
    #[error("the cluster schema is at version {found}, newer than this xfwd knows ({known}): upgrade this node")]
    SchemaTooNew { found: i32, known: i32 },
    #[error("no connection {node}/{id} among the live nodes")]
    NoConnection { node: String, id: u64 },
    #[error("no cluster view: this xfwd runs without --cluster-db")]
    Off,
}

impl ClusterError {
    /// The database could not be reached (not a refusal of ours).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClusterError::Unavailable(_))
    }
}

/// This node's default name: the hostname.
pub fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A node name: 1 to 63 characters of letters, digits, `.`, `-`, `_`
/// (no `/`: `NODE/ID` names a connection).
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("a node name has 1 to 63 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "{name:?}: a node name has only letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

/// A connection of some node, as `xfwd list --cluster` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterConn {
    pub node: String,
    pub id: u64,
    pub user: Option<String>,
    pub peer: String,
    pub transport: String,
    pub target: Option<String>,
    pub host_key: Option<String>,
    /// Seconds since it started (by the database's clock).
    pub age_s: f64,
}

/// A live node, as `xfwd list --cluster` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterNode {
    pub name: String,
    pub address: String,
    pub pid: i32,
    pub version: String,
    pub connections: i64,
    /// Seconds since its last heartbeat (by the database's clock).
    pub heartbeat_age_s: f64,
    pub uptime_s: f64,
}

/// Every live node and their connections.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterView {
    pub nodes: Vec<ClusterNode>,
    pub connections: Vec<ClusterConn>,
}

/// A connection `NODE/ID` (or a bare `ID`: this node's).
pub fn parse_connection(s: &str) -> Result<(Option<String>, u64), String> {
    let (node, id) = match s.rsplit_once('/') {
        Some((n, id)) => {
            check_node_name(n)?;
            (Some(n.to_owned()), id)
        }
        None => (None, s),
    };
    let id = id
        .parse()
        .map_err(|_| format!("{s:?}: expected ID or NODE/ID (ID a number)"))?;
    Ok((node, id))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_connections_parse() {
        assert!(check_node_name("node-1.example_a").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a/b").is_err());
        assert!(check_node_name(&"x".repeat(64)).is_err());
        assert_eq!(parse_connection("7").unwrap(), (None, 7));
        assert_eq!(parse_connection("b/12").unwrap(), (Some("b".into()), 12));
        assert!(parse_connection("b/").is_err());
        assert!(parse_connection("/3").is_err());
        assert!(parse_connection("b/-1").is_err());
        assert!(parse_connection("x y/1").is_err());
    }
}
