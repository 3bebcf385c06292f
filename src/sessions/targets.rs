//! Where an authenticated user may be sent: the `displays` of xpra's auth
//! data (multifile field 5, the sqlite `displays` column), a comma-separated
//! list of display strings as xpra's `parse_display_name` reads them:
//!
//! - `tcp://[user[:password]@]host[:port][/DISPLAY]` (also `tcp:host:port`),
//!   and the same with `ssl`, `ws`, `wss`; the port defaults to 14500;
//! - `socket:PATH`, `socket://PATH`, `unix:PATH`, or a plain `/PATH`:
//!   a session's Unix socket (`socket://user:password@/PATH` carries
//!   credentials);
//! - `:100` or `100`: a local session by display number, found in the
//!   socket directories;
//! - `pool:NAME`: a session host pool of the configuration
//!   (`--session-pool=NAME=URI,...`): one of its hosts, chosen when the
//!   user connects (`sessions::balance`).
//!
//! Credentials in a target answer the target server's own challenge. They
//! never appear in `Debug` or `Display` output.
//!
//! Also here: the per-session options (`session_options`), kept only when
//! xpra's proxy whitelists them.

use std::path::PathBuf;

use crate::auth::Secret;
use crate::wire::Value;

/// xpra's default TCP port.
pub const DEFAULT_PORT: u16 = 14500;

/// The transport of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Tcp {
        host: String,
        port: u16,
    },
    Ssl {
        host: String,
        port: u16,
    },
    Ws {
        host: String,
        port: u16,
    },
    Wss {
        host: String,
        port: u16,
    },
    /// A session's Unix socket.
    Unix {
        path: PathBuf,
    },
    /// A local session by display (`:100`), looked up in the socket dirs.
    Local {
        display: String,
    },
    /// A session host pool of the configuration, by name (`pool:NAME`).
    Pool {
        name: String,
    },
}

/// The longest pool name.
pub const MAX_POOL_NAME: usize = 64;

/// Whether `name` may name a session host pool: 1 to [`MAX_POOL_NAME`]
/// ASCII letters, digits, `-`, `_` or `.`.
pub fn is_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_POOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl TargetKind {
    pub fn scheme(&self) -> &'static str {
        match self {
            TargetKind::Tcp { .. } => "tcp",
            TargetKind::Ssl { .. } => "ssl",
            TargetKind::Ws { .. } => "ws",
            TargetKind::Wss { .. } => "wss",
            TargetKind::Unix { .. } => "socket",
            TargetKind::Local { .. } => "local",
            TargetKind::Pool { .. } => "pool",
        }
    }

    /// Host and port of a network target.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            TargetKind::Tcp { host, port }
            | TargetKind::Ssl { host, port }
            | TargetKind::Ws { host, port }
            | TargetKind::Wss { host, port } => Some((host.as_str(), *port)),
            _ => None,
        }
    }
}

/// One place a user's connection may go.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    /// The display on the target server (`/DISPLAY` of a URI, `:100` of a
    /// local target), with its leading `:`.
    pub display: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    /// The entry as written (may contain the password: never shown).
    raw: Secret,
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("empty target")]
    Empty,
    #[error("unsupported target type {0:?} (supported: tcp, ssl, ws, wss, socket/unix, :DISPLAY, pool:NAME)")]
    Unsupported(String),
    #[error("invalid target: {0}")]
    Invalid(&'static str),
    #[error("invalid port in target")]
    BadPort,
}

impl Target {
    /// The session host's key for load counts (`HOST:PORT`, or the socket
    /// path); `None` for a local display and for a pool (its hosts have
    /// their own).
    pub fn host_key(&self) -> Option<String> {
        match &self.kind {
            TargetKind::Tcp { host, port }
            | TargetKind::Ssl { host, port }
            | TargetKind::Ws { host, port }
            | TargetKind::Wss { host, port } => Some(format!("{host}:{port}")),
            TargetKind::Unix { path } => Some(path.display().to_string()),
            TargetKind::Local { .. } | TargetKind::Pool { .. } => None,
        }
    }

    /// The pool this target names (`pool:NAME`).
    pub fn pool(&self) -> Option<&str> {
        match &self.kind {
            TargetKind::Pool { name } => Some(name),
            _ => None,
        }
    }

    /// Parses one display string as xpra's `parse_display_name` does for
    /// the types xfwd can connect to.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        let raw = Secret::from(s);
        // a plain path is a socket
        if s.starts_with('/') {
            return Ok(Target::unix(PathBuf::from(s), None, None, raw));
        }
        // a display number, with or without ':'
        let bare = s.strip_prefix(':').unwrap_or(s);
        if is_display_number(bare) && (s.starts_with(':') || !s.contains(['/', ':'])) {
            let display = format!(":{bare}");
            return Ok(Target {
                kind: TargetKind::Local {
                    display: display.clone(),
                },
                display: Some(display),
                username: None,
                password: None,
                raw,
            });
        }
        let pos = s.find([':', '/']).ok_or(TargetError::Invalid(
            "expected TYPE://HOST:PORT/, a socket path or :DISPLAY",
        ))?;
        let protocol = &s[..pos];
        let rest = &s[pos..];
        // separator: ":", "/" or "://"
        let (psep, after) = if let Some(a) = rest.strip_prefix("://") {
            ("://", a)
        } else if let Some(a) = rest.strip_prefix(':') {
            (":", a)
        } else if let Some(a) = rest.strip_prefix('/') {
            ("/", a)
        } else {
            return Err(TargetError::Invalid("bad protocol separator"));
        };
        match protocol {
            "pool" => {
                let name = after.trim_end_matches('/');
                if !is_pool_name(name) {
                    return Err(TargetError::Invalid(
                        "a pool name is 1 to 64 letters, digits, '-', '_' or '.'",
                    ));
                }
                Ok(Target {
                    kind: TargetKind::Pool {
                        name: name.to_owned(),
                    },
                    display: None,
                    username: None,
                    password: None,
                    raw,
                })
            }
            "socket" | "unix" => {
                // socket:/path, socket:///path, socket://user:pw@/path
                let (user, pass, path) = match after.rfind('@') {
                    Some(at) => {
                        let (u, p) = split_user_pass(&after[..at]);
                        (u, p, &after[at + 1..])
                    }
                    None => (None, None, after),
                };
                let path = if psep == "://" && !path.starts_with('/') {
                    format!("/{path}")
                } else {
                    path.to_owned()
                };
                if path.is_empty() || path == "/" {
                    return Err(TargetError::Invalid("missing socket path"));
                }
                Ok(Target::unix(PathBuf::from(path), user, pass, raw))
            }
            "tcp" | "ssl" | "ws" | "wss" => {
                let separator = if psep.ends_with('/') { '/' } else { ':' };
                let parts: Vec<&str> = after.split(separator).collect();
                let (host_str, display) = match (separator, parts.as_slice()) {
                    ('/', [h]) => ((*h).to_owned(), None),
                    ('/', [h, d]) => ((*h).to_owned(), remote_display(d)),
                    ('/', _) => {
                        return Err(TargetError::Invalid(
                            "use TYPE://[USER[:PASSWORD]@]HOST[:PORT][/DISPLAY]",
                        ))
                    }
                    _ => (after.to_owned(), None),
                };
                let hp = parse_host_string(&host_str)?;
                let kind = match protocol {
                    "tcp" => TargetKind::Tcp {
                        host: hp.host,
                        port: hp.port,
                    },
                    "ssl" => TargetKind::Ssl {
                        host: hp.host,
                        port: hp.port,
                    },
                    "ws" => TargetKind::Ws {
                        host: hp.host,
                        port: hp.port,
                    },
                    _ => TargetKind::Wss {
                        host: hp.host,
                        port: hp.port,
                    },
                };
                Ok(Target {
                    kind,
                    display,
                    username: hp.username,
                    password: hp.password,
                    raw,
                })
            }
            other => Err(TargetError::Unsupported(other.to_owned())),
        }
    }

    fn unix(
        path: PathBuf,
        username: Option<String>,
        password: Option<Secret>,
        raw: Secret,
    ) -> Target {
        Target {
            kind: TargetKind::Unix { path },
            display: None,
            username,
            password,
            raw,
        }
    }

    /// The entry as written, credentials included: for the effective
    /// configuration (`xfwd --print-config`), never for logs.
    pub fn raw_uri(&self) -> &str {
        std::str::from_utf8(self.raw.as_bytes()).unwrap_or("")
    }

    /// The user name to log in to the target with (xpra sends it upstream
    /// in place of the client's).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password that answers the target server's challenge.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// Whether `requested` (the display a client asked for, with or without
    /// `:`; or the whole entry as written) names this target.
    pub fn matches(&self, requested: &str) -> bool {
        if requested.is_empty() {
            return false;
        }
        if requested.as_bytes() == self.raw.as_bytes() {
            return true;
        }
        let want = requested.trim_start_matches(':');
        self.display
            .as_deref()
            .is_some_and(|d| !want.is_empty() && d.trim_start_matches(':') == want)
    }
}

/// Safe to log: no user name, no password.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            TargetKind::Local { display } => write!(f, "{display}"),
            TargetKind::Pool { name } => write!(f, "pool:{name}"),
            TargetKind::Unix { path } => write!(f, "socket://{}", path.display()),
            k => {
                let (host, port) = k.host_port().unwrap_or(("", 0));
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                };
                let display = self
                    .display
                    .as_deref()
                    .map(|d| d.trim_start_matches(':'))
                    .unwrap_or("");
                write!(f, "{}://{host}:{port}/{display}", k.scheme())
            }
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("display", &self.display)
            .field(
                "credentials",
                &if self.username.is_some() || self.password.is_some() {
                    "<redacted>"
                } else {
                    "none"
                },
            )
            .finish()
    }
}

fn is_display_number(s: &str) -> bool {
    // xpra accepts "10" and "10.0"
    !s.is_empty()
        && s.split('.')
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// xpra's `parse_remote_display`: `100` -> `:100`; anything after `?` or
/// `#` is dropped; empty means none.
fn remote_display(s: &str) -> Option<String> {
    let s = s.split(['?', '#']).next().unwrap_or("");
    if s.is_empty() {
        None
    } else if is_display_number(s) {
        Some(format!(":{s}"))
    } else {
        Some(s.to_owned())
    }
}

fn split_user_pass(s: &str) -> (Option<String>, Option<Secret>) {
    let (u, p) = match s.split_once(':') {
        Some((u, p)) => (u, p),
        None => (s, ""),
    };
    (
        (!u.is_empty()).then(|| u.to_owned()),
        (!p.is_empty()).then(|| Secret::from(p)),
    )
}

struct HostPort {
    username: Option<String>,
    password: Option<Secret>,
    host: String,
    port: u16,
}

/// xpra's `parse_host_string`: `[user[:password]@]host[:port]`, IPv6 in
/// brackets (or bare, with xpra's guess that a last group longer than four
/// characters is the port), the port defaulting to 14500 and an empty host
/// meaning 127.0.0.1.
fn parse_host_string(s: &str) -> Result<HostPort, TargetError> {
    let (username, password, mut host) = match s.rfind('@') {
        Some(at) => {
            let (u, p) = split_user_pass(&s[..at]);
            (u, p, s[at + 1..].to_owned())
        }
        None => (None, None, s.to_owned()),
    };
    let mut port_str: Option<String> = None;
    if host.matches(':').count() >= 2 {
        if host.starts_with('[') {
            let end = host
                .find(']')
                .ok_or(TargetError::Invalid("invalid IPv6 host, expected [..]"))?;
            let p = host[end + 1..].trim_start_matches(':').to_owned();
            port_str = (!p.is_empty()).then_some(p);
            host = host[1..end].to_owned();
        } else if let Some((addr, dev)) = host.split_once('%') {
            if let Some((dev, p)) = dev.split_once(':') {
                port_str = Some(p.to_owned());
                host = format!("{addr}%{dev}");
            }
        } else if let Some((h, p)) = host.rsplit_once(':') {
            if p.len() > 4 {
                port_str = Some(p.to_owned());
                host = h.to_owned();
            }
        }
    } else if let Some((h, p)) = host.split_once(':') {
        // (xpra keeps ":PORT" as the host name here; xfwd reads it as
        // 127.0.0.1:PORT)
        port_str = Some(p.to_owned());
        host = h.to_owned();
    }
    let port = match port_str {
        Some(p) if !p.is_empty() => p.parse::<u16>().map_err(|_| TargetError::BadPort)?,
        _ => DEFAULT_PORT,
    };
    if port == 0 {
        return Err(TargetError::BadPort);
    }
    if host.is_empty() {
        host = "127.0.0.1".to_owned();
    }
    Ok(HostPort {
        username,
        password,
        host,
        port,
    })
}

/// Parses xpra's `displays` value: entries separated by `,`, each trimmed;
/// empty ones and xpra's own `:proxy-*` displays are skipped. Entries that
/// do not parse are returned apart (their text is not: it may hold a
/// password).
pub fn parse_list(s: &str) -> (Vec<Target>, Vec<TargetError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for entry in s.split(',').map(str::trim) {
        if entry.is_empty() || entry.starts_with(":proxy-") {
            continue;
        }
        match Target::parse(entry) {
            Ok(t) => ok.push(t),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

/// Why no target could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// xpra: "no displays found".
    #[error("no displays found")]
    NoTargets,
    /// xpra: "display 'X' not found".
    #[error("display '{0}' not found")]
    NotFound(String),
    /// xpra: "please specify a display, more than one is available: ...".
    #[error("please specify a display, more than one is available: {0}")]
    Ambiguous(String),
}

/// Picks the target for a client, as xpra's proxy does: the one the client
/// asked for (by display, e.g. `:100` / `100`, or the entry as written),
/// else the only one.
pub fn select<'a>(
    targets: &'a [Target],
    requested: Option<&str>,
) -> Result<&'a Target, SelectError> {
    let requested = requested.filter(|r| !r.is_empty());
    if let Some(r) = requested {
        return targets
            .iter()
            .find(|t| t.matches(r))
            .ok_or_else(|| SelectError::NotFound(r.chars().take(64).collect()));
    }
    match targets {
        [] => Err(SelectError::NoTargets),
        [one] => Ok(one),
        many => Err(SelectError::Ambiguous(
            many.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// xpra's `parse_simple_dict(s, sep)`: `k=v` pairs separated by `sep`;
/// elements without `=` are ignored, the value is everything after the
/// first `=`.
pub fn parse_simple_dict(s: &str, sep: char) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for el in s.split(sep) {
        if let Some((k, v)) = el.split_once('=') {
            match out.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.to_owned(),
                None => out.push((k.to_owned(), v.to_owned())),
            }
        }
    }
    out
}

/// The session options xpra's proxy applies to the connection to the
/// target (its `sanitize_session_options` whitelist, 3.1 and 6.x), plus
/// `password`, which answers the target's challenge when the target URI
/// has none. Everything else is dropped (listed in `ignored`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// `compression_level` (also accepted as `compression`, xpra's
    /// command-line name): 0..9.
    pub compression_level: Option<u8>,
    pub lz4: Option<bool>,
    pub lzo: Option<bool>,
    pub zlib: Option<bool>,
    pub rencode: Option<bool>,
    pub rencodeplus: Option<bool>,
    pub bencode: Option<bool>,
    pub yaml: Option<bool>,
    password: Option<Secret>,
    /// Keys that were not applied (unknown, or a value that does not parse).
    pub ignored: Vec<String>,
}

/// xpra's `parse_bool`: yes/true/1/on, no/false/0/off, `auto` = unset,
/// other integers by their truth.
pub fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim().to_ascii_lowercase();
    match v.as_str() {
        "yes" | "true" | "1" | "on" => Some(true),
        "no" | "false" | "0" | "off" => Some(false),
        "auto" | "" => None,
        other => other.parse::<i64>().ok().map(|n| n != 0),
    }
}

impl SessionOptions {
    /// From the `key=value` pairs of a `session_options` field.
    pub fn parse(pairs: &[(String, String)]) -> SessionOptions {
        let mut o = SessionOptions::default();
        for (k, v) in pairs {
            let applied = match k.as_str() {
                "compression_level" | "compression" => {
                    let lv = v.trim().to_ascii_lowercase();
                    let n = if lv == "auto" {
                        Some(0)
                    } else {
                        lv.parse::<u8>().ok().filter(|n| *n <= 9)
                    };
                    o.compression_level = n;
                    n.is_some()
                }
                "password" => {
                    o.password = (!v.is_empty()).then(|| Secret::from(v.as_str()));
                    true
                }
                key => {
                    let slot = match key {
                        "lz4" => &mut o.lz4,
                        "lzo" => &mut o.lzo,
                        "zlib" => &mut o.zlib,
                        "rencode" => &mut o.rencode,
                        "rencodeplus" => &mut o.rencodeplus,
                        "bencode" => &mut o.bencode,
                        "yaml" => &mut o.yaml,
                        _ => {
                            o.ignored.push(k.clone());
                            continue;
                        }
                    };
                    *slot = parse_bool(v);
                    slot.is_some()
                }
            };
            if !applied {
                o.ignored.push(k.clone());
            }
        }
        o
    }

    /// Parses xpra's `k=v;k=v` text.
    pub fn parse_str(s: &str) -> SessionOptions {
        SessionOptions::parse(&parse_simple_dict(s, ';'))
    }

    /// The password for the target's challenge, when set.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.caps().is_empty() && self.password.is_none()
    }

    /// The capabilities to set in the hello sent to the target (xpra's
    /// `filter_client_caps` updates the client's caps with these).
    pub fn caps(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        if let Some(l) = self.compression_level {
            out.push(("compression_level".to_owned(), Value::Int(i64::from(l))));
        }
        for (name, v) in [
            ("lz4", self.lz4),
            ("lzo", self.lzo),
            ("zlib", self.zlib),
            ("rencode", self.rencode),
            ("rencodeplus", self.rencodeplus),
            ("bencode", self.bencode),
            ("yaml", self.yaml),
        ] {
            if let Some(b) = v {
                out.push((name.to_owned(), Value::Bool(b)));
            }
        }
        out
    }
}

impl std::fmt::Debug for SessionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SessionOptions");
        for (k, v) in self.caps() {
            d.field(&k, &v);
        }
        if self.password.is_some() {
            d.field("password", &"<redacted>");
        }
        if !self.ignored.is_empty() {
            d.field("ignored", &self.ignored);
        }
        d.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> TargetKind {
        TargetKind::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn tcp_forms() {
        let t = Target::parse("tcp://192.168.1.200:10100/").unwrap();
        assert_eq!(t.kind, tcp("192.168.1.200", 10100));
        assert_eq!(t.display, None);
        assert_eq!(t.username(), None);
        let t = Target::parse("tcp://foo:bar@host:10000/100").unwrap();
        assert_eq!(t.kind, tcp("host", 10000));
        assert_eq!(t.display.as_deref(), Some(":100"));
        assert_eq!(t.username(), Some("foo"));
        assert_eq!(t.password().unwrap().as_bytes(), b"bar");
        let t = Target::parse("tcp://host").unwrap();
        assert_eq!(t.kind, tcp("host", DEFAULT_PORT));
        let t = Target::parse("tcp:host:1234").unwrap();
        assert_eq!(t.kind, tcp("host", 1234));
        let t = Target::parse("tcp://:1234/").unwrap();
        assert_eq!(t.kind, tcp("127.0.0.1", 1234));
        let t = Target::parse("tcp://[::1]:10000/7").unwrap();
        assert_eq!(t.kind, tcp("::1", 10000));
        assert_eq!(t.display.as_deref(), Some(":7"));
        // user names may hold '@': the last one separates the host
        let t = Target::parse("tcp://a@b:p@w@host:1/").unwrap();
        assert_eq!(t.username(), Some("a@b"));
        assert_eq!(t.password().unwrap().as_bytes(), b"p@w");
        for (s, k) in [
            (
                "ssl://h:443/",
                TargetKind::Ssl {
                    host: "h".into(),
                    port: 443,
                },
            ),
            (
                "ws://h:80/",
                TargetKind::Ws {
                    host: "h".into(),
                    port: 80,
                },
            ),
            (
                "wss://h:8443/",
                TargetKind::Wss {
                    host: "h".into(),
                    port: 8443,
                },
            ),
        ] {
            assert_eq!(Target::parse(s).unwrap().kind, k);
        }
        assert_eq!(Target::parse("tcp://h:0/"), Err(TargetError::BadPort));
        assert_eq!(Target::parse("tcp://h:99999/"), Err(TargetError::BadPort));
        assert_eq!(Target::parse("tcp://h:x/"), Err(TargetError::BadPort));
        assert!(matches!(
            Target::parse("ssh://h/"),
            Err(TargetError::Unsupported(_))
        ));
        assert!(Target::parse("tcp://h:1/2/3").is_err());
        assert_eq!(Target::parse(" "), Err(TargetError::Empty));
    }

    #[test]
    fn socket_and_local_forms() {
        let p = |s: &str| Target::parse(s).unwrap();
        let unix = |s: &str| TargetKind::Unix { path: s.into() };
        assert_eq!(p("/run/xpra/host-10").kind, unix("/run/xpra/host-10"));
        assert_eq!(p("socket:/run/x").kind, unix("/run/x"));
        assert_eq!(p("socket:///run/x").kind, unix("/run/x"));
        assert_eq!(p("unix:/run/x").kind, unix("/run/x"));
        let t = p("socket://u:pw@/run/x");
        assert_eq!(t.kind, unix("/run/x"));
        assert_eq!(t.username(), Some("u"));
        assert_eq!(t.password().unwrap().as_bytes(), b"pw");
        assert_eq!(
            p(":100").kind,
            TargetKind::Local {
                display: ":100".into()
            }
        );
        assert_eq!(p("100").display.as_deref(), Some(":100"));
        assert!(Target::parse("socket:").is_err());
    }

    #[test]
    fn pool_names() {
        for s in ["pool:gpu", "pool://gpu", "pool:gpu/", " pool:a-b_c.1 "] {
            let t = Target::parse(s).unwrap();
            let name = s.trim().trim_start_matches("pool:").trim_matches('/');
            assert_eq!(
                t.kind,
                TargetKind::Pool {
                    name: name.to_owned()
                },
                "{s}"
            );
            assert_eq!(t.pool(), Some(name));
            assert_eq!(t.host_key(), None);
            assert_eq!(t.to_string(), format!("pool:{name}"));
            assert_eq!(t.kind.scheme(), "pool");
        }
        for s in ["pool:", "pool:a b", "pool:x/y", "pool:é"] {
            assert!(
                matches!(Target::parse(s), Err(TargetError::Invalid(_))),
                "{s}"
            );
        }
        assert!(Target::parse(&format!("pool:{}", "a".repeat(65))).is_err());
        // The only entry is chosen; one among several is named as written.
        let (ts, bad) = parse_list("pool:gpu");
        assert!(bad.is_empty());
        assert_eq!(select(&ts, None).unwrap().pool(), Some("gpu"));
        let (ts, _) = parse_list("pool:gpu,tcp://h:1/");
        assert_eq!(select(&ts, Some("pool:gpu")).unwrap().pool(), Some("gpu"));
        assert!(Target::parse("tcp://h:1/").unwrap().pool().is_none());
    }

    #[test]
    fn credentials_never_shown() {
        let t = Target::parse("tcp://foo:sekrit@host:10000/100").unwrap();
        let shown = format!("{t} {t:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(!shown.contains("foo"), "{shown}");
        assert_eq!(t.to_string(), "tcp://host:10000/100");
        let t = Target::parse("socket://u:sekrit@/run/x").unwrap();
        assert!(!format!("{t} {t:?}").contains("sekrit"));
        let o = SessionOptions::parse_str("password=sekrit;compression_level=1");
        assert!(!format!("{o:?}").contains("sekrit"));
    }

    #[test]
    fn lists_and_selection() {
        let (ts, bad) = parse_list(
            "tcp://h:10100/100, tcp://h:10101/101,,:proxy-1,ssh://x/,tcp://u:pw@h:10102/",
        );
        assert_eq!(ts.len(), 3);
        assert_eq!(bad.len(), 1);
        assert_eq!(
            select(&ts, Some("101")).unwrap().to_string(),
            "tcp://h:10101/101"
        );
        assert_eq!(
            select(&ts, Some(":100")).unwrap().to_string(),
            "tcp://h:10100/100"
        );
        assert_eq!(
            select(&ts, Some("tcp://u:pw@h:10102/"))
                .unwrap()
                .to_string(),
            "tcp://h:10102/"
        );
        assert_eq!(
            select(&ts, Some("7")),
            Err(SelectError::NotFound("7".into()))
        );
        let e = select(&ts, None).unwrap_err();
        assert!(
            matches!(e, SelectError::Ambiguous(ref s) if !s.contains("pw")),
            "{e:?}"
        );
        assert_eq!(select(&ts[..1], None).unwrap(), &ts[0]);
        assert_eq!(select(&[], None), Err(SelectError::NoTargets));
        assert_eq!(select(&ts[..1], Some("")).unwrap(), &ts[0]);
    }

    #[test]
    fn session_options_whitelist() {
        let o = SessionOptions::parse_str("compression=0;lz4=no;foo=bar;rencode=maybe;zlib=1");
        assert_eq!(o.compression_level, Some(0));
        assert_eq!(o.lz4, Some(false));
        assert_eq!(o.zlib, Some(true));
        assert_eq!(o.rencode, None);
        assert_eq!(o.ignored, vec!["foo".to_owned(), "rencode".to_owned()]);
        assert_eq!(
            o.caps(),
            vec![
                ("compression_level".to_owned(), Value::Int(0)),
                ("lz4".to_owned(), Value::Bool(false)),
                ("zlib".to_owned(), Value::Bool(true)),
            ]
        );
        let o = SessionOptions::parse_str("compression_level=12");
        assert_eq!(o.compression_level, None);
        assert!(o.is_empty());
        assert_eq!(parse_bool("On"), Some(true));
        assert_eq!(parse_bool("2"), Some(true));
        assert_eq!(parse_bool("auto"), None);
        assert_eq!(
            parse_simple_dict("a=1;b=x=y;;c;a=2", ';'),
            vec![("a".into(), "2".into()), ("b".into(), "x=y".into())]
        );
    }
}
