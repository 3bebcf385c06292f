//! Session host pools (issue 16): what a node knows of the load on session
//! hosts, so that a user whose auth data names a pool goes to a live host
//! with the fewest connections, and back to the host that runs their
//! session.
//!
//! The seam between routing and whatever counts connections:
//! [`LoadView`]. This node's own count is always part of it; with a
//! cluster registry (`--cluster-db`), every live node's count is.
//!
//! Host keys are `HOST:PORT` as the target names them (the target's
//! [`host_key`]), so that two pools naming one host share its count.

use std::fmt::Debug;

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
/// the socket path for Unix ones, `None` for local displays.
pub fn host_key(target: &Target) -> Option<String> {
    target.host_key()
}
