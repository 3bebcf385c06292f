//! Small pieces shared by the server's and the client's event loops: a
//! slab of connections, a timer heap, per-process CPU time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Connections by token.
pub struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, v: T) -> usize {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.items[i] = Some(v);
            i
        } else {
            self.items.push(Some(v));
            self.items.len() - 1
        }
    }

    /// The index the next `insert` will use.
    pub fn next_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.items.len())
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i).and_then(Option::as_mut)
    }

    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.items.get_mut(i).and_then(Option::take);
        if v.is_some() {
            self.len -= 1;
            self.free.push(i);
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries with their indices.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.items
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| v.as_mut().map(|v| (i, v)))
    }

    /// Indices of live entries.
    pub fn keys(&self) -> Vec<usize> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|_| i))
            .collect()
    }
}

/// Timers: (deadline, slab index, generation of that connection, kind).
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64, u8)>>,
}

impl Timers {
    pub fn add(&mut self, at: Instant, idx: usize, gen: u64, kind: u8) {
        self.heap.push(Reverse((at, idx, gen, kind)));
    }

    /// Time until the next deadline (zero if one is due), `None` if none.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, ..))| at.saturating_duration_since(now))
    }

    /// Pops a due timer.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, u8)> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, i, g, k))| (i, g, k))
            }
            _ => None,
        }
    }
}

/// CPU seconds (user, system) this process has used.
pub fn self_cpu() -> (f64, f64) {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            (t(u.user_time()), t(u.system_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

/// Raises the open-file limit for many connections: to 65,536 where
/// allowed (root), else to the hard limit. Children (the proxies perf/
/// starts) inherit it.
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const WANT: u64 = 65_536;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft >= WANT {
            return;
        }
        if hard < WANT && setrlimit(Resource::RLIMIT_NOFILE, WANT, WANT).is_ok() {
            return;
        }
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
