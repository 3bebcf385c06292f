//! `hosts[,daemon=NAME][,hosts-allow=PATH][,hosts-deny=PATH]`: TCP
//! wrappers, as xpra's `hosts` module: the system's libwrap decides by the
//! client's address with `/etc/hosts.allow` and `/etc/hosts.deny`
//! (hosts_access(5): the first match in hosts.allow allows, else the first
//! in hosts.deny denies, else allowed), for the daemon name `xpra`. No
//! challenge. Behind a trusted PROXY protocol front the address is the
//! original client's. Unix-socket clients have no address: refused.
//!
//! libwrap (Debian's `libwrap0`, `libwrap.so.0`, or `XPRA_LIBWRAP` as in
//! xpra) is loaded when the module is built, so xfwd builds and runs
//! without it; a listener that names `hosts` where it is missing fails to
//! start with that reason. As xpra, the client's address is given as both
//! its name and its address (no DNS lookups).
//!
//! What xfwd adds: `daemon=` (default `xpra`), and other tables than the
//! system's: `hosts-allow=`, `hosts-deny=` (a file named there must
//! exist: a typo would otherwise allow everyone).
//!
//! Options in the tables: libwrap runs in xfwd's process, so the checks
//! run with libwrap's `dry_run` set (as `tcpdchk` does): `allow` and
//! `deny` take effect, but `spawn`, `twist`, `user`, `group`, `nice`,
//! `linger` and `keepalive` do nothing (twist would replace xfwd by a
//! shell). `umask`, `setenv` and `severity` change the process: do not use
//! them in rules for xfwd's daemon name.
//!
//! # Unsafe
//!
//! libwrap has no Rust binding: its C entry point `hosts_ctl` and three of
//! its global variables (the table paths and `dry_run`) are reached through
//! `libloading`. libwrap keeps global state and is not thread-safe: every
//! call holds one process-wide lock. The library stays loaded for the life
//! of the process (it is kept in a `static`), so the symbols stay valid.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::authenticator::{resolve_path, AuthError, Authenticator, Method};
use super::peer::PeerInfo;
use super::spec::{AuthSpec, AuthSpecError, ModuleKind};

/// xpra's daemon name for libwrap.
pub const DEFAULT_DAEMON: &str = "xpra";
/// The library xpra loads (`XPRA_LIBWRAP` overrides it).
pub const DEFAULT_LIBRARY: &str = "libwrap.so.0";

type HostsCtl =
    unsafe extern "C" fn(*const c_char, *const c_char, *const c_char, *const c_char) -> c_int;

/// The loaded library and the addresses of what xfwd uses in it.
struct Libwrap {
    _lib: libloading::Library,
    hosts_ctl: HostsCtl,
    allow_table: *mut *const c_char,
    deny_table: *mut *const c_char,
    dry_run: *mut c_int,
    /// The tables' compiled-in paths, put back after each call.
    default_allow: *const c_char,
    default_deny: *const c_char,
}

// SAFETY: the pointers point into the loaded library's data, which lives as
// long as `_lib` (forever: the value sits in a `static`); they are only
// dereferenced while the `LIBWRAP` mutex is held.
unsafe impl Send for Libwrap {}

static LIBWRAP: OnceLock<Result<Mutex<Libwrap>, String>> = OnceLock::new();

fn library() -> Result<&'static Mutex<Libwrap>, String> {
    LIBWRAP
        .get_or_init(|| load().map(Mutex::new))
        .as_ref()
        .map_err(Clone::clone)
}

fn load() -> Result<Libwrap, String> {
    let name = std::env::var_os("XPRA_LIBWRAP").unwrap_or_else(|| DEFAULT_LIBRARY.into());
    let shown = name.to_string_lossy().into_owned();
    // SAFETY: loading libwrap runs no initialisers that depend on us (it is
    // a plain C library); the name is the admin's (environment) or ours.
    let lib = unsafe { libloading::Library::new(&name) }
        .map_err(|e| format!("cannot load {shown} (Debian: libwrap0): {e}"))?;
    let missing = |what: &str, e: libloading::Error| format!("{shown}: no {what}: {e}");
    // SAFETY: the symbols have these C types in every libwrap since 7.6
    // (tcpd.h: `int hosts_ctl(char *, char *, char *, char *)`,
    // `extern char *hosts_allow_table, *hosts_deny_table`, `extern int
    // dry_run`); data symbols resolve to the variables' addresses.
    unsafe {
        let hosts_ctl: HostsCtl = *lib
            .get::<HostsCtl>(b"hosts_ctl\0")
            .map_err(|e| missing("hosts_ctl", e))?;
        let allow_table: *mut *const c_char = *lib
            .get::<*mut *const c_char>(b"hosts_allow_table\0")
            .map_err(|e| missing("hosts_allow_table", e))?;
        let deny_table: *mut *const c_char = *lib
            .get::<*mut *const c_char>(b"hosts_deny_table\0")
            .map_err(|e| missing("hosts_deny_table", e))?;
        let dry_run: *mut c_int = *lib
            .get::<*mut c_int>(b"dry_run\0")
            .map_err(|e| missing("dry_run", e))?;
        if allow_table.is_null() || deny_table.is_null() || dry_run.is_null() {
            return Err(format!("{shown}: a variable resolved to NULL"));
        }
        Ok(Libwrap {
            default_allow: *allow_table,
            default_deny: *deny_table,
            _lib: lib,
            hosts_ctl,
            allow_table,
            deny_table,
            dry_run,
        })
    }
}

/// The `hosts` module.
#[derive(Debug)]
pub struct HostsAuth {
    daemon: CString,
    allow: Option<CString>,
    deny: Option<CString>,
}

pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    Ok(Arc::new(HostsAuth::new(spec)?))
}

fn bad(message: String) -> AuthError {
    AuthError::Spec(AuthSpecError::BadValue {
        module: "hosts",
        message,
    })
}

fn table(spec: &AuthSpec, key: &str) -> Result<Option<CString>, AuthError> {
    let Some(v) = spec.option(key).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let path: PathBuf = resolve_path(spec, v.trim());
    if !Path::new(&path).is_file() {
        return Err(bad(format!("{key}={}: no such file", path.display())));
    }
    CString::new(path.as_os_str().as_encoded_bytes())
        .map(Some)
        .map_err(|_| bad(format!("{key}: a path with a NUL byte")))
}

impl HostsAuth {
    pub fn new(spec: &AuthSpec) -> Result<HostsAuth, AuthError> {
        library().map_err(|e| AuthError::Other(format!("hosts: {e}")))?;
        let daemon = spec.option("daemon").unwrap_or(DEFAULT_DAEMON).trim();
        if daemon.is_empty() {
            return Err(bad("daemon= needs a name".into()));
        }
        Ok(HostsAuth {
            daemon: CString::new(daemon).map_err(|_| bad("daemon: a NUL byte".into()))?,
            allow: table(spec, "hosts-allow")?,
            deny: table(spec, "hosts-deny")?,
        })
    }

    /// Whether libwrap allows `addr`.
    pub fn allows(&self, addr: IpAddr) -> Result<bool, AuthError> {
        let lib = library().map_err(|e| AuthError::Other(format!("hosts: {e}")))?;
        let text = CString::new(addr.to_canonical().to_string())
            .map_err(|_| AuthError::Other("hosts: bad address".into()))?;
        let unknown = c"";
        let mut lw = match lib.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // SAFETY: the lock is held, so nothing else touches libwrap's
        // globals; the table paths and strings passed are NUL-terminated
        // and outlive the call (`self` and locals); the defaults are put
        // back before the lock is released. libwrap's own longjmp on a bad
        // rule stays inside its C frames (hosts_access sets it up).
        let verdict = unsafe {
            *lw.dry_run = 1;
            if let Some(a) = &self.allow {
                *lw.allow_table = a.as_ptr();
            }
            if let Some(d) = &self.deny {
                *lw.deny_table = d.as_ptr();
            }
            let v = (lw.hosts_ctl)(
                self.daemon.as_ptr(),
                text.as_ptr(),
                text.as_ptr(),
                unknown.as_ptr(),
            );
            *lw.allow_table = lw.default_allow;
            *lw.deny_table = lw.default_deny;
            *lw.dry_run = 1;
            v
        };
        Ok(verdict != 0)
    }
}

impl Authenticator for HostsAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Hosts
    }

    fn is_gate(&self) -> bool {
        true
    }

    fn method(&self) -> Method {
        Method::Direct
    }

    fn check_direct(&self, username: &str, peer: &PeerInfo) -> Result<bool, AuthError> {
        Ok(self.direct_refusal(username, peer)?.is_none())
    }

    fn direct_refusal(
        &self,
        _username: &str,
        peer: &PeerInfo,
    ) -> Result<Option<String>, AuthError> {
        let Some(ip) = peer.ip() else {
            return Ok(Some("hosts: the client has no network address".into()));
        };
        if self.allows(ip)? {
            Ok(None)
        } else {
            tracing::warn!(target: "xfwd::auth", "access denied for host {ip} (hosts)");
            Ok(Some(format!("hosts: access denied for host {ip}")))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tables(dir: &Path, allow: &str, deny: &str) -> String {
        std::fs::create_dir_all(dir).unwrap();
        let a = dir.join("hosts.allow");
        let d = dir.join("hosts.deny");
        std::fs::write(&a, allow).unwrap();
        std::fs::write(&d, deny).unwrap();
        format!(",hosts-allow={},hosts-deny={}", a.display(), d.display())
    }

    fn module(opts: &str) -> Option<HostsAuth> {
        if library().is_err() {
            eprintln!("note: no libwrap here (Debian: libwrap0): skipped");
            return None;
        }
        Some(HostsAuth::new(&AuthSpec::parse(&format!("hosts{opts}")).unwrap()).unwrap())
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xfwd-hosts-{name}-{}", std::process::id()))
    }

    #[test]
    fn deny_allow_and_exceptions() {
        let d = dir("rules");
        let opts = tables(
            &d,
            "xpra: 192.0.2.7\n",
            "xpra: 127.0.0.1 192.0.2.0/255.255.255.0 : deny\nother: ALL\n",
        );
        let Some(m) = module(&opts) else { return };
        assert!(!m.allows("127.0.0.1".parse().unwrap()).unwrap());
        assert!(m.allows("192.0.2.7".parse().unwrap()).unwrap());
        assert!(!m.allows("192.0.2.8".parse().unwrap()).unwrap());
        assert!(m.allows("198.51.100.1".parse().unwrap()).unwrap());
        // An IPv4-mapped address is its IPv4 one.
        assert!(!m.allows("::ffff:127.0.0.1".parse().unwrap()).unwrap());
        let why = m
            .direct_refusal("u", &PeerInfo::tcp("127.0.0.1:5".parse().unwrap(), None))
            .unwrap()
            .unwrap();
        assert_eq!(why, "hosts: access denied for host 127.0.0.1");
        let unix = PeerInfo {
            transport: crate::auth::Transport::Unix,
            ..PeerInfo::default()
        };
        assert!(m.direct_refusal("u", &unix).unwrap().is_some());
        // Another daemon name: the rules for `other` apply.
        let m = module(&format!("{opts},daemon=other")).unwrap();
        assert!(!m.allows("198.51.100.1".parse().unwrap()).unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn options_run_nothing() {
        let d = dir("options");
        let marker = d.join("spawned");
        let opts = tables(
            &d,
            &format!(
                "xpra: 127.0.0.2 : spawn (touch {m}) : allow\nxpra: 127.0.0.3 : twist (touch {m})\n",
                m = marker.display()
            ),
            "xpra: ALL\n",
        );
        let Some(m) = module(&opts) else { return };
        assert!(m.allows("127.0.0.2".parse().unwrap()).unwrap());
        // twist would have replaced this process; it is still here.
        let _ = m.allows("127.0.0.3".parse().unwrap()).unwrap();
        assert!(!m.allows("127.0.0.4".parse().unwrap()).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!marker.exists(), "a spawn option ran");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_table_is_an_error() {
        if library().is_err() {
            return;
        }
        let e = HostsAuth::new(&AuthSpec::parse("hosts,hosts-deny=/nonexistent/xfwd").unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
