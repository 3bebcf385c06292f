//! The session directory: the sessions in the socket dirs, cached, and
//! scanned again only when a dir changed (inotify) instead of on every
//! connection.
//!
//! Each dir that exists is watched, and so is each `DIR/DISPLAY` subdir
//! (xpra 4's `DIR/DISPLAY/socket`), before it is read: a socket made or
//! removed after the watch marks the cache stale. The inotify descriptor
//! is non-blocking and drained when the sessions are asked for (no thread);
//! a queue overflow, a dir that went away or a watch that could not be
//! added (limits, permissions) also make the next call scan. A dir that
//! does not exist yet cannot be watched: while one is missing, the cache
//! is trusted for [`MISSING_RECHECK`] only. Without inotify at all, every
//! call scans (as before the cache).
//!
//! Blocking (it reads directories): the blocking pool calls it.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

use super::{discover, is_display, LocalSession};

/// How long the cache is trusted while a socket dir is missing (it may
/// appear, unseen).
pub const MISSING_RECHECK: Duration = Duration::from_secs(1);

/// The sessions in a list of socket dirs, of one user, cached.
#[derive(Debug)]
pub struct SessionDirectory {
    dirs: Vec<PathBuf>,
    hostname: String,
    uid: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `None`: no inotify here (every call scans).
    inotify: Option<OwnedFd>,
    /// What is watched, by path.
    watched: HashMap<PathBuf, i32>,
    /// The last scan's sessions and when it was made.
    cached: Option<(Arc<Vec<LocalSession>>, Instant)>,
    /// Every dir was there and watched at the last scan.
    complete: bool,
    scans: u64,
}

/// What a watch listens for: entries made, removed, renamed, their
/// permissions, and the dir itself going away.
fn watch_flags() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::ATTRIB
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR
}

impl SessionDirectory {
    pub fn new(dirs: Vec<PathBuf>, hostname: String, uid: u32) -> SessionDirectory {
        let inotify = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!("no inotify ({e}): the socket dirs are scanned for every client");
                None
            }
        };
        SessionDirectory {
            dirs,
            hostname,
            uid,
            state: Mutex::new(State {
                inotify,
                watched: HashMap::new(),
                cached: None,
                complete: false,
                scans: 0,
            }),
        }
    }

    /// The dirs, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether this directory serves `dirs`, `hostname` and `uid` (a reload
    /// keeps it then).
    pub fn serves(&self, dirs: &[PathBuf], hostname: &str, uid: u32) -> bool {
        self.dirs == dirs && self.hostname == hostname && self.uid == uid
    }

    /// The sessions now (not probed: some sockets may be stale), one per
    /// display, sorted by display number.
    pub fn sessions(&self) -> Arc<Vec<LocalSession>> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = st.drain();
        if let Some((s, at)) = &st.cached {
            let trusted =
                st.inotify.is_some() && !changed && (st.complete || at.elapsed() < MISSING_RECHECK);
            if trusted {
                return s.clone();
            }
        }
        // Watch first: a change while reading is seen next time.
        st.complete = self.watch(&mut st);
        let found = Arc::new(discover(&self.dirs, &self.hostname, self.uid));
        st.cached = Some((found.clone(), Instant::now()));
        st.scans += 1;
        found
    }

    /// How many times the dirs were read (for tests and `xfwd info`).
    pub fn scans(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .scans
    }

    /// Watches every dir and `DIR/DISPLAY` subdir there is; whether all the
    /// dirs were there and watched.
    fn watch(&self, st: &mut State) -> bool {
        let Some(fd) = &st.inotify else {
            return false;
        };
        let mut complete = true;
        let mut wanted: Vec<PathBuf> = Vec::new();
        for dir in &self.dirs {
            if !dir.is_dir() {
                complete = false;
                continue;
            }
            wanted.push(dir.clone());
            let Ok(entries) = std::fs::read_dir(dir) else {
                complete = false;
                continue;
            };
            for e in entries.flatten() {
                let is_sub = e.file_name().to_str().is_some_and(is_display)
                    && e.file_type().is_ok_and(|t| t.is_dir());
                if is_sub {
                    wanted.push(e.path());
                }
            }
        }
        let mut watched = HashMap::new();
        for path in wanted {
            match inotify::add_watch(fd, &path, watch_flags()) {
                Ok(wd) => {
                    watched.insert(path, wd);
                }
                Err(e) => {
                    tracing::debug!("cannot watch {}: {e}", path.display());
                    complete = false;
                }
            }
        }
        // Watches of what is gone: the kernel dropped them (IN_IGNORED);
        // those still there but no longer wanted are removed.
        for (path, wd) in st.watched.drain() {
            if !watched.contains_key(&path) && path.exists() {
                let _ = inotify::remove_watch(fd, wd);
            }
        }
        st.watched = watched;
        complete
    }
}

impl State {
    /// Reads every pending event; whether anything changed (or may have:
    /// an error, an overflow).
    fn drain(&mut self) -> bool {
        let Some(fd) = &self.inotify else {
            return true;
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        let mut changed = false;
        loop {
            match reader.next() {
                Ok(_) => changed = true,
                Err(rustix::io::Errno::AGAIN) => return changed,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn displays(d: &SessionDirectory) -> Vec<String> {
        d.sessions().iter().map(|s| s.display.clone()).collect()
    }

    #[test]
    fn scans_again_only_when_a_dir_changes() {
        let tmp = std::env::temp_dir().join(format!("xfwd-directory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let a = tmp.join("a");
        std::fs::create_dir_all(&a).unwrap();
        let d = SessionDirectory::new(vec![a.clone()], "host".into(), uid());
        assert!(displays(&d).is_empty());
        assert_eq!(d.scans(), 1);
        // Nothing changed: the cache answers.
        for _ in 0..5 {
            assert!(displays(&d).is_empty());
        }
        assert_eq!(d.scans(), 1);
        // A socket appears: seen at once, with one scan.
        let _l100 = UnixListener::bind(a.join("host-100")).unwrap();
        assert_eq!(displays(&d), ["100"]);
        assert_eq!(displays(&d), ["100"]);
        assert_eq!(d.scans(), 2);
        // xpra 4's layout: a display dir, its socket made later.
        std::fs::create_dir(a.join("120")).unwrap();
        assert_eq!(displays(&d), ["100"]);
        let _l120 = UnixListener::bind(a.join("120").join("socket")).unwrap();
        assert_eq!(displays(&d), ["100", "120"]);
        // Removed: gone at once.
        std::fs::remove_file(a.join("host-100")).unwrap();
        assert_eq!(displays(&d), ["120"]);
        let scans = d.scans();
        assert_eq!(displays(&d), ["120"]);
        assert_eq!(d.scans(), scans);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_missing_dir_is_looked_at_again_and_watched_once_there() {
        let tmp = std::env::temp_dir().join(format!("xfwd-directory-m-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let later = tmp.join("later");
        let d = SessionDirectory::new(vec![later.clone()], "host".into(), uid());
        assert!(displays(&d).is_empty());
        std::fs::create_dir(&later).unwrap();
        let _l = UnixListener::bind(later.join("host-7")).unwrap();
        // Within the recheck bound the cache may answer; after it, the
        // dir is read and from then on watched.
        std::thread::sleep(MISSING_RECHECK + Duration::from_millis(50));
        assert_eq!(displays(&d), ["7"]);
        let scans = d.scans();
        std::thread::sleep(MISSING_RECHECK + Duration::from_millis(50));
        assert_eq!(displays(&d), ["7"]);
        assert_eq!(d.scans(), scans, "complete now: no rescan");
        // The dir goes away and comes back: seen.
        drop(_l);
        std::fs::remove_dir_all(&later).unwrap();
        assert!(displays(&d).is_empty());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
