//! How many connections may be in their handshake at once: over every
//! shard (`--max-handshakes`) and per client address
//! (`--max-handshakes-per-ip`). A connection holds a [`Slot`] from accept
//! until it relays (or ends); one that finds no slot is closed at accept, so
//! that unauthenticated peers cannot hold more than this many connections'
//! worth of pre-auth memory and work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections in their handshake ({0}, --max-handshakes)")]
    Global(usize),
    #[error(
        "too many connections in their handshake from {ip} ({limit}, --max-handshakes-per-ip)"
    )]
    PerIp { ip: IpAddr, limit: usize },
}

#[derive(Debug, Default)]
struct Counts {
    all: usize,
    per_ip: HashMap<IpAddr, usize>,
    max: usize,
    max_per_ip: usize,
}

/// The counters, shared by every shard.
#[derive(Debug)]
pub struct Admission {
    counts: Mutex<Counts>,
}

/// One connection's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Admission> {
        Arc::new(Admission {
            counts: Mutex::new(Counts {
                max,
                max_per_ip,
                ..Counts::default()
            }),
        })
    }

    /// New limits (a reload): connections already admitted keep their
    /// places; new ones are admitted against these.
    pub fn set_limits(&self, max: usize, max_per_ip: usize) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.max = max;
        c.max_per_ip = max_per_ip;
    }

    /// Takes a place for a connection from `ip` (`None`: a Unix socket,
    /// counted globally only).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.all >= c.max {
            return Err(Refusal::Global(c.max));
        }
        if let Some(ip) = ip {
            let limit = c.max_per_ip;
            let n = c.per_ip.entry(ip).or_insert(0);
            if *n >= limit {
                return Err(Refusal::PerIp { ip, limit });
            }
            *n += 1;
        }
        c.all += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections in their handshake now.
    pub fn in_handshake(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).all
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.all = c.all.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = c.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_global_limits_and_release() {
        let a = Admission::new(3, 2);
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = a.admit(Some(ip1)).unwrap();
        let s2 = a.admit(Some(ip1)).unwrap();
        assert_eq!(
            a.admit(Some(ip1)).unwrap_err(),
            Refusal::PerIp { ip: ip1, limit: 2 }
        );
        let s3 = a.admit(Some(ip2)).unwrap();
        assert_eq!(a.admit(None).unwrap_err(), Refusal::Global(3));
        drop(s1);
        assert_eq!(a.in_handshake(), 2);
        let _s4 = a.admit(Some(ip1)).unwrap();
        drop((s2, s3));
        assert_eq!(a.in_handshake(), 1);
        // Nothing kept for addresses without connections.
        assert_eq!(a.counts.lock().unwrap().per_ip.len(), 1);
    }
}
