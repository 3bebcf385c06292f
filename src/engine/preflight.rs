//! What is checked and adjusted before any shard starts.
//!
//! The shards run on epoll (tokio), which needs no locked memory and no
//! io_uring, so nothing of the machine's setup can keep them from starting;
//! what remains is the file-descriptor limit: every connection holds two
//! descriptors, and the usual soft limit (1024) would cap xfwd at about 500
//! clients. The soft limit is raised to the hard one, and a low hard limit
//! is reported with the setting to change.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Below this many descriptors, xfwd warns at start.
pub const LOW_NOFILE: u64 = 4096;

/// Raises the soft descriptor limit to the hard one; returns the limit in
/// force and whether it is low.
pub fn raise_nofile() -> Option<(u64, bool)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    Some((limit, limit < LOW_NOFILE))
}

/// Runs the adjustments, logging what a user should know.
pub fn prepare() {
    if let Some((limit, true)) = raise_nofile() {
        tracing::warn!(
            limit,
            "the open-file limit is {limit}: xfwd can serve about {} clients; raise it with \
             `ulimit -n 65536` (LimitNOFILE=65536 in a systemd unit)",
            limit / 2
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{getrlimit, Resource};
        let Some((limit, _)) = super::raise_nofile() else {
            return;
        };
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return;
        };
        assert_eq!(soft, limit);
        assert_eq!(soft, hard);
    }
}
