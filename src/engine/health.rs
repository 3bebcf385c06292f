//! The active health check of session host pools
//! (`--pool-health-interval`): a thread of its own that connects to every
//! pool host each interval (TCP, or the Unix socket; nothing is sent) and
//! marks it down or live in the health table the pools' choice reads
//! (`sessions::balance::Health`). Off (0) by default: the passive check,
//! a failed connection of a user, always runs.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::reload::Current;
use super::Shared;
use crate::auth::{Target, TargetKind};

/// How long one check's connection may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Hosts checked at once (one thread each, for the time of a check).
const PARALLEL: usize = 32;
/// How often a thread with checks off looks whether a reload turned them on.
const IDLE: Duration = Duration::from_secs(1);

/// Starts the checker: it runs until `stop`.
pub(super) fn spawn(
    current: Arc<Current>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("xfwd-pool-health".into())
        .spawn(move || run(&current, &stop))
}

fn run(current: &Current, stop: &CancellationToken) {
    while !stop.is_cancelled() {
        let shared = current.get();
        let interval = shared.config.pool_health_interval;
        if interval.is_zero() || shared.config.pools.is_empty() {
            drop(shared);
            sleep(IDLE, stop);
            continue;
        }
        check_all(&shared);
        drop(shared);
        sleep(interval, stop);
    }
}

/// Sleeps `d`, or less when `stop` comes.
fn sleep(d: Duration, stop: &CancellationToken) {
    let until = Instant::now() + d;
    while !stop.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// One round: every host of every pool (once each), then the gauges.
fn check_all(shared: &Shared) {
    let mut hosts: Vec<&Target> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in &shared.config.pools {
        for m in &p.members {
            if seen.insert(m.host_key()) {
                hosts.push(m);
            }
        }
    }
    for chunk in hosts.chunks(PARALLEL) {
        let results: Vec<(&Target, Result<(), String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|t| (*t, s.spawn(move || check(t))))
                .collect();
            handles
                .into_iter()
                .map(|(t, h)| {
                    (
                        t,
                        h.join()
                            .unwrap_or_else(|_| Err("the check panicked".to_owned())),
                    )
                })
                .collect()
        });
        let now = Instant::now();
        let mut health = shared.health.lock();
        for (t, r) in results {
            let key = t.host_key().unwrap_or_default();
            match r {
                Ok(()) => {
                    if health.is_down(&key, now) {
                        tracing::info!(host = %t, "pool host is back (health check)");
                    }
                    health.succeeded(&key);
                }
                Err(e) => {
                    let was = health.is_down(&key, now);
                    health.failed(&key, now);
                    if !was {
                        tracing::warn!(host = %t, "pool host failed its health check: {e}");
                    }
                }
            }
        }
    }
    if let Some(m) = &shared.metrics {
        let now = Instant::now();
        let health = shared.health.lock();
        for p in &shared.config.pools {
            m.pool_hosts_down(&p.name, health.down_count(&p.members, now));
        }
    }
}

/// Whether `t` takes a connection (closed at once).
fn check(t: &Target) -> Result<(), String> {
    match &t.kind {
        TargetKind::Unix { path } => std::os::unix::net::UnixStream::connect(path)
            .map(drop)
            .map_err(|e| e.to_string()),
        kind => {
            let (host, port) = kind.host_port().ok_or("not a network host")?;
            let host = host.trim_matches(['[', ']']);
            let addr = (host, port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| format!("{host} has no address"))?;
            TcpStream::connect_timeout(&addr, CHECK_TIMEOUT)
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_host_passes_and_a_closed_port_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let up = Target::parse(&format!("tcp://127.0.0.1:{port}/")).unwrap();
        assert_eq!(check(&up), Ok(()));
        drop(l);
        assert!(check(&up).is_err());
        let dir = std::env::temp_dir().join(format!("xfwd-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let unix = Target::parse(&path.display().to_string()).unwrap();
        assert!(check(&unix).is_err());
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(check(&unix), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
