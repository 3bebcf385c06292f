//! `ldap` and `ldap3`: the password is checked by an LDAP simple bind, as
//! xpra 3.1's `ldap_auth.py` and `ldap3_auth.py` do.
//!
//! Both need the password itself, so the client answers an `xor`
//! challenge: private transports only (Unix socket, TLS, loopback), which
//! [`super::AuthFlow`] enforces for every [`Method::Plaintext`] module.
//!
//! `ldap[,host=H][,port=P][,tls=0|1][,cacert=FILE][,encoding=utf-8]
//! [,username_format=FMT|,username_format_file=FILE][,domain=D]
//! [,uid_attribute=A][,gid_attribute=A][,timeout=S][,uid=U][,gid=G]`
//!
//! - binds as `username_format` (default `cn=%username, o=%domain`), where
//!   `%username` is the client's user name, `%domain` the host's DNS domain
//!   (the part of its FQDN after the first dot, `localdomain` when there is
//!   none; `domain=` gives it instead) and `%dc` (xfwd) that domain as
//!   `dc=` components (`example.com`: `dc=example,dc=com`).
//! - xpra's option syntax splits on `,`, so a format with commas cannot be
//!   written in the spec: `username_format_file=FILE` (xfwd) reads it from
//!   a file (its one line that is neither empty nor a `#` comment).
//! - A user name with a character that means something in a DN
//!   (`, + " \ < > ; =`, a control character, a leading `#` or space, a
//!   trailing space) is refused, never escaped: the format need not put it
//!   in an RDN value (`%username@%domain`), and a refused name cannot
//!   reach another entry.
//!
//! `ldap3[,host=H][,port=P][,tls=0|1][,cacert=FILE][,ssl-version=V]
//! [,ssl-validate=REQUIRED|OPTIONAL|NONE][,authentication=SIMPLE]
//! [,username=NAME][,uid_attribute=A][,gid_attribute=A][,timeout=S]
//! [,uid=U][,gid=G]`
//!
//! - binds as the client's user name as given (`user@example.com`, a DN),
//!   or as `username=` for every client.
//! - Only `authentication=SIMPLE` (xfwd's default; xpra's is NTLM): NTLM
//!   and SASL are refused at startup.
//! - With `tls=1` xpra connects with ldaps and then also sends StartTLS;
//!   xfwd does ldaps only. `ssl-version` is checked against xpra's names
//!   and otherwise ignored (rustls negotiates TLS 1.2 or 1.3); with
//!   `ssl-validate=NONE` any server certificate is accepted.
//!
//! Both:
//!
//! - `port` defaults to 389, or 636 with `tls=1` (ldaps). With TLS the
//!   server's certificate must name `host` and chain to `cacert` (default
//!   `$XPRA_LDAP_CACERTFILE`, else the system's CAs).
//! - An empty password is refused before any bind: many servers accept a
//!   simple bind with a name and an empty password as an anonymous
//!   ("unauthenticated") bind.
//! - Connecting and every operation share one deadline, `timeout` seconds
//!   (default 5). A server that cannot be reached (or answers nothing in
//!   time) refuses the client with "LDAP server at HOST:PORT is unreachable"
//!   in xfwd's log (not counted as a failed attempt); the next client
//!   connects afresh.
//! - `uid_attribute=` / `gid_attribute=` (xfwd; e.g. `uidNumber`,
//!   `gidNumber`): after the bind, the bound entry (the Who-am-I identity,
//!   else the bind name) is read and those attributes (a number, or the
//!   name of an account / group of this host) give the sessions' uid and
//!   gid; an entry without them refuses the login. Without them the
//!   sessions are the local ones of xfwd's account, as for every module
//!   that identifies no account; `uid=` / `gid=` win over both.
//! - The password goes to the server as UTF-8 (a password that is not
//!   valid UTF-8 is read as latin-1 first). `encoding` takes only UTF-8
//!   (xpra's default; `$XPRA_LDAP_ENCODING`): xfwd's LDAP client sends
//!   text. (xpra decodes the bytes as latin-1 and encodes them again, so it
//!   mangles non-ASCII passwords; xfwd sends them as the client typed them.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, LdapError, Scope, SearchEntry};
use rustls::ClientConfig;
use zeroize::Zeroizing;

use super::authenticator::{bytes_to_string, AuthError, Authenticator, Method, Sessions};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, AuthSpecError, ModuleKind};
use super::targets::parse_bool;
use crate::transport::tls::ClientTls;

/// xpra's default bind name format (`ldap`).
pub const DEFAULT_FORMAT: &str = "cn=%username, o=%domain";
/// The domain when the host's FQDN has none (xpra's).
pub const DEFAULT_DOMAIN: &str = "localdomain";
/// How long connecting and binding may take, in all (`timeout=`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The CA file when `cacert` is not given (xpra's variable).
pub const CACERT_ENV: &str = "XPRA_LDAP_CACERTFILE";
/// The password encoding when `encoding` is not given (xpra's variable).
pub const ENCODING_ENV: &str = "XPRA_LDAP_ENCODING";
/// Bind result codes that are the client's fault: a refusal, not an error.
/// invalidCredentials (49), inappropriateAuthentication (48),
/// noSuchObject (32), invalidDNSyntax (34).
const REFUSAL_CODES: [u32; 4] = [49, 48, 32, 34];
/// How long the ids read at a bind wait for the flow's `sessions` call.
const FOUND_TTL: Duration = Duration::from_secs(120);
/// Most ids kept waiting at once.
const FOUND_MAX: usize = 4096;

/// Builds the module.
pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    Ok(Arc::new(LdapAuth::new(spec)?))
}

fn bad(spec: &AuthSpec, message: impl Into<String>) -> AuthSpecError {
    AuthSpecError::BadValue {
        module: spec.kind.name(),
        message: message.into(),
    }
}

/// Checks the options that can be checked without touching files
/// (called by [`AuthSpec::parse`]).
pub(crate) fn validate(spec: &AuthSpec) -> Result<(), AuthSpecError> {
    let tls = parse_tls(spec)?;
    parse_port(spec, tls)?;
    parse_timeout(spec)?;
    parse_host(spec)?;
    for key in ["uid_attribute", "gid_attribute"] {
        attribute(spec, key)?;
    }
    match spec.kind {
        ModuleKind::Ldap => {
            let encoding = spec
                .option("encoding")
                .map(str::to_owned)
                .or_else(|| std::env::var(ENCODING_ENV).ok())
                .unwrap_or_else(|| "utf-8".to_owned());
            let e = encoding.trim().to_ascii_lowercase().replace('_', "-");
            if !matches!(e.as_str(), "utf-8" | "utf8") {
                return Err(bad(
                    spec,
                    format!(
                        "encoding={encoding}: xfwd sends LDAP passwords as UTF-8 only \
                         (encoding=utf-8)"
                    ),
                ));
            }
            if spec.option("username_format").is_some()
                && spec.option("username_format_file").is_some()
            {
                return Err(bad(
                    spec,
                    "give username_format or username_format_file, not both",
                ));
            }
            if let Some(f) = spec.option("username_format") {
                check_format(spec, f)?;
            }
            if let Some(d) = spec.option("domain") {
                if d.trim().is_empty() {
                    return Err(bad(spec, "domain= is empty"));
                }
            }
            Ok(())
        }
        ModuleKind::Ldap3 => {
            let auth = spec.option("authentication").unwrap_or("SIMPLE");
            match auth.trim().to_ascii_uppercase().as_str() {
                "SIMPLE" => {}
                "NTLM" | "SASL" => {
                    return Err(bad(
                        spec,
                        format!(
                            "authentication={auth} is not supported: xfwd binds with \
                             authentication=SIMPLE only (its default; xpra's is NTLM)"
                        ),
                    ))
                }
                _ => {
                    return Err(bad(
                        spec,
                        format!("invalid authentication mechanism {auth:?} (SIMPLE)"),
                    ))
                }
            }
            if let Some(v) = spec.option("ssl-version") {
                let known = ["TLS", "TLS_CLIENT", "TLSv1", "TLSv1_1", "TLSv1_2", "SSLv23"];
                if !known.iter().any(|k| k.eq_ignore_ascii_case(v.trim())) {
                    return Err(bad(
                        spec,
                        format!("ssl-version={v}: expected one of {}", known.join(", ")),
                    ));
                }
            }
            ssl_validate(spec)?;
            if spec.option("username").is_some_and(|u| u.trim().is_empty()) {
                return Err(bad(spec, "username= is empty"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn parse_tls(spec: &AuthSpec) -> Result<bool, AuthSpecError> {
    match spec.option("tls") {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| bad(spec, format!("tls={v}: expected 0 or 1"))),
    }
}

fn parse_port(spec: &AuthSpec, tls: bool) -> Result<u16, AuthSpecError> {
    match spec.option("port") {
        None => Ok(if tls { 636 } else { 389 }),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(spec, format!("port={v} is not a port number"))),
    }
}

fn parse_timeout(spec: &AuthSpec) -> Result<Duration, AuthSpecError> {
    match spec.option("timeout") {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                bad(
                    spec,
                    format!("timeout={v}: expected a number of seconds (0 < S <= 3600)"),
                )
            }),
    }
}

/// The host as it goes in the URL (an IPv6 address in brackets).
fn parse_host(spec: &AuthSpec) -> Result<String, AuthSpecError> {
    let h = spec.option("host").unwrap_or("localhost").trim();
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty()
        || bare
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@%[]".contains(c))
    {
        return Err(bad(spec, format!("host={h} is not a host name or address")));
    }
    Ok(if bare.contains(':') {
        format!("[{bare}]")
    } else {
        bare.to_owned()
    })
}

fn attribute(spec: &AuthSpec, key: &str) -> Result<Option<String>, AuthSpecError> {
    match spec.option(key) {
        None => Ok(None),
        Some(a) => {
            let a = a.trim();
            let ok = !a.is_empty()
                && a.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if ok {
                Ok(Some(a.to_owned()))
            } else {
                Err(bad(spec, format!("{key}={a} is not an attribute name")))
            }
        }
    }
}

/// Whether certificates are verified (ldap3's `ssl-validate`).
fn ssl_validate(spec: &AuthSpec) -> Result<bool, AuthSpecError> {
    match spec.option("ssl-validate") {
        None => Ok(true),
        Some(v) => match v.trim().to_ascii_uppercase().as_str() {
            "REQUIRED" | "OPTIONAL" => Ok(true),
            "NONE" => Ok(false),
            _ => Err(bad(
                spec,
                format!("ssl-validate={v}: expected REQUIRED, OPTIONAL or NONE"),
            )),
        },
    }
}

fn check_format(spec: &AuthSpec, format: &str) -> Result<(), AuthSpecError> {
    if !format.contains("%username") {
        return Err(bad(
            spec,
            format!(
                "username_format {format:?} has no %username: every user would bind as one \
                 entry (use ldap3,username=NAME for that)"
            ),
        ));
    }
    Ok(())
}

/// The bind name format of a spec: `username_format`, or the line of
/// `username_format_file`, or xpra's default.
fn format_of(spec: &AuthSpec) -> Result<String, AuthError> {
    let Some(file) = spec.option("username_format_file") else {
        return Ok(spec
            .option("username_format")
            .unwrap_or(DEFAULT_FORMAT)
            .to_owned());
    };
    let path = super::authenticator::resolve_path(spec, file);
    let text = std::fs::read_to_string(&path).map_err(|source| AuthError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [one] => {
            check_format(spec, one)?;
            Ok((*one).to_owned())
        }
        _ => Err(bad(
            spec,
            format!(
                "{}: expected one username_format line (besides empty and # lines), found {}",
                path.display(),
                lines.len()
            ),
        )
        .into()),
    }
}

/// Expands a bind name format: `%username`, `%domain` and `%dc` in one
/// pass (text from the user name is not expanded again); any other `%`
/// stays as it is.
pub fn expand(format: &str, username: &str, domain: &str) -> String {
    let mut out = String::with_capacity(format.len() + username.len() + domain.len());
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("%username") {
            out.push_str(username);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%domain") {
            out.push_str(domain);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("%dc") {
            out.push_str(&domain_components(domain));
            rest = t;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `example.com` as `dc=example,dc=com`.
pub fn domain_components(domain: &str) -> String {
    domain
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| format!("dc={p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// xpra's `%domain`: what follows the first dot of the FQDN, or
/// `localdomain`.
pub fn domain_of(fqdn: &str) -> String {
    fqdn.split_once('.')
        .map(|(_, d)| d.trim_end_matches('.'))
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_DOMAIN)
        .to_owned()
}

/// The host's fully qualified name, as Python's `socket.getfqdn()` finds
/// it: the host name resolved, then its address resolved back; the first
/// of those names with a dot, else the reverse name, else the host name.
/// May block (DNS).
pub fn fqdn() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    if host.is_empty() {
        return host;
    }
    let hints = dns_lookup::AddrInfoHints {
        flags: nix::libc::AI_CANONNAME,
        socktype: nix::libc::SOCK_STREAM,
        ..dns_lookup::AddrInfoHints::default()
    };
    let mut names: Vec<String> = Vec::new();
    let mut reverse = None;
    if let Ok(found) = dns_lookup::getaddrinfo(Some(&host), None, Some(hints)) {
        for a in found.flatten() {
            if reverse.is_none() {
                reverse = dns_lookup::lookup_addr(&a.sockaddr.ip()).ok();
            }
            if let Some(c) = a.canonname {
                names.push(c);
            }
        }
    }
    if let Some(r) = &reverse {
        names.insert(0, r.clone());
    }
    names
        .into_iter()
        .find(|n| n.contains('.'))
        .or(reverse)
        .unwrap_or(host)
}

/// Whether a user name can go into a DN as it is.
pub fn dn_safe(username: &str) -> bool {
    !username.is_empty()
        && !username.starts_with(['#', ' '])
        && !username.ends_with(' ')
        && !username
            .chars()
            .any(|c| c.is_control() || ",+\"\\<>;=".contains(c))
}

/// Whom a client binds as.
#[derive(Debug)]
enum BindName {
    /// `ldap`: the format, with the domain (found on first use unless
    /// `domain=` gave it).
    Format {
        format: String,
        domain: OnceLock<String>,
    },
    /// `ldap3`: `username=`, else the client's user name.
    Name(Option<String>),
}

/// The ids read from the directory at a bind, until the flow asks.
#[derive(Debug)]
struct Found {
    at: Instant,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// The `ldap` and `ldap3` modules.
#[derive(Debug)]
pub struct LdapAuth {
    kind: ModuleKind,
    host: String,
    port: u16,
    url: String,
    /// With `tls=1`: ldaps with this configuration.
    tls: Option<Arc<ClientConfig>>,
    bind: BindName,
    timeout: Duration,
    uid_attribute: Option<String>,
    gid_attribute: Option<String>,
    /// (client user name, peer) -> the ids its bind read.
    found: Mutex<HashMap<(String, String), Found>>,
    prompt: String,
}

impl LdapAuth {
    pub fn new(spec: &AuthSpec) -> Result<LdapAuth, AuthError> {
        validate(spec)?;
        let tls = parse_tls(spec)?;
        let port = parse_port(spec, tls)?;
        let host = parse_host(spec)?;
        let tls_config = if tls {
            let cacert = spec
                .option("cacert")
                .map(str::to_owned)
                .or_else(|| std::env::var(CACERT_ENV).ok())
                .filter(|c| !c.trim().is_empty());
            let client = match (&cacert, ssl_validate(spec)?) {
                (_, false) => ClientTls::insecure_accept_any(),
                (Some(c), true) => ClientTls::with_ca(super::authenticator::resolve_path(spec, c)),
                (None, true) => ClientTls::system(),
            };
            let config = client.build().map_err(|e| {
                AuthError::Other(format!(
                    "{}: TLS for the LDAP server (tls=1): {e}{}",
                    spec.kind.name(),
                    if cacert.is_none() {
                        " (give cacert=FILE)"
                    } else {
                        ""
                    }
                ))
            })?;
            Some(config)
        } else {
            None
        };
        let bind = match spec.kind {
            ModuleKind::Ldap => {
                let domain = OnceLock::new();
                if let Some(d) = spec.option("domain") {
                    let _ = domain.set(d.trim().to_owned());
                }
                BindName::Format {
                    format: format_of(spec)?,
                    domain,
                }
            }
            _ => BindName::Name(spec.option("username").map(|u| u.trim().to_owned())),
        };
        let scheme = if tls { "ldaps" } else { "ldap" };
        Ok(LdapAuth {
            kind: spec.kind,
            url: format!("{scheme}://{host}:{port}"),
            host,
            port,
            tls: tls_config,
            bind,
            timeout: parse_timeout(spec)?,
            uid_attribute: attribute(spec, "uid_attribute")?,
            gid_attribute: attribute(spec, "gid_attribute")?,
            found: Mutex::new(HashMap::new()),
            prompt: spec.prompt().to_owned(),
        })
    }

    /// The ldap URL the module connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whom `username` binds as; `None`: refused (a name that cannot go
    /// into a DN).
    pub fn bind_name(&self, username: &str) -> Option<String> {
        match &self.bind {
            BindName::Format { format, domain } => {
                if !dn_safe(username) {
                    return None;
                }
                if !format.contains("%domain") && !format.contains("%dc") {
                    return Some(expand(format, username, ""));
                }
                // found once, at the first login (DNS may be slow)
                let domain = domain.get_or_init(|| {
                    let f = fqdn();
                    let d = domain_of(&f);
                    tracing::info!(
                        target: "xfwd::auth",
                        "ldap: %domain is {d:?} (this host's name: {f:?})"
                    );
                    d
                });
                Some(expand(format, username, domain))
            }
            BindName::Name(fixed) => {
                let name = fixed.as_deref().unwrap_or(username);
                (!name.is_empty()).then(|| name.to_owned())
            }
        }
    }

    fn unreachable(&self, e: &LdapError) -> AuthError {
        let detail = match e {
            LdapError::Timeout { .. } => {
                format!("no answer within {:.1} s", self.timeout.as_secs_f64())
            }
            e => e.to_string(),
        };
        AuthError::Other(format!(
            "LDAP server at {}:{} is unreachable ({}: {detail})",
            self.host,
            self.port,
            if self.tls.is_some() { "ldaps" } else { "ldap" }
        ))
    }

    fn connect(&self, deadline: Instant) -> Result<LdapConn, AuthError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(left(deadline));
        if let Some(c) = &self.tls {
            settings = settings.set_config(c.clone());
        }
        LdapConn::with_settings(settings, &self.url).map_err(|e| self.unreachable(&e))
    }

    /// Binds as `dn`: `Ok(false)` when the server refuses the credentials.
    fn bind(
        &self,
        conn: &mut LdapConn,
        dn: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<bool, AuthError> {
        let r = conn
            .with_timeout(left(deadline))
            .simple_bind(dn, password)
            .map_err(|e| self.unreachable(&e))?;
        match r.rc {
            0 => Ok(true),
            rc if REFUSAL_CODES.contains(&rc) => {
                tracing::debug!(target: "xfwd::auth", "{}: bind as {dn:?} refused: {r}", self.kind);
                Ok(false)
            }
            _ => Err(AuthError::Other(format!(
                "LDAP server at {}:{}: bind as {dn:?} failed: {r}",
                self.host, self.port
            ))),
        }
    }

    /// After a bind: the entry's uid and gid attributes.
    fn read_ids(
        &self,
        conn: &mut LdapConn,
        bind_name: &str,
        deadline: Instant,
    ) -> Result<(Option<u32>, Option<u32>), AuthError> {
        let fail = |what: String| {
            AuthError::Other(format!(
                "LDAP server at {}:{}: {what}",
                self.host, self.port
            ))
        };
        // The bound entry: Who am I? (RFC 4532), else the bind name.
        let dn = match conn
            .with_timeout(left(deadline))
            .extended(ldap3::exop::WhoAmI)
        {
            Ok(r) if r.1.rc == 0 => {
                r.0.val
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .and_then(|id| id.strip_prefix("dn:").map(str::to_owned))
                    .filter(|d| !d.is_empty())
            }
            Ok(_) => None,
            Err(e) => return Err(self.unreachable(&e)),
        }
        .unwrap_or_else(|| bind_name.to_owned());
        let attrs: Vec<&str> = [&self.uid_attribute, &self.gid_attribute]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let result = conn
            .with_timeout(left(deadline))
            .search(&dn, Scope::Base, "(objectClass=*)", attrs)
            .map_err(|e| self.unreachable(&e))?;
        let (entries, _) = result
            .success()
            .map_err(|e| fail(format!("cannot read the entry {dn:?}: {e}")))?;
        let Some(raw) = entries.into_iter().next() else {
            return Err(fail(format!("cannot read the entry {dn:?}")));
        };
        // (ldap3 panics on an entry it cannot parse.)
        let entry =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw)))
                .map_err(|_| fail(format!("the entry {dn:?} cannot be parsed")))?;
        let value = |attr: &str| -> Result<String, AuthError> {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(attr))
                .and_then(|(_, v)| v.first())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    fail(format!(
                        "the entry {dn:?} has no {attr} (or may not read it)"
                    ))
                })
        };
        let uid = match &self.uid_attribute {
            None => None,
            Some(a) => {
                let v = value(a)?;
                Some(
                    v.parse::<u32>()
                        .ok()
                        .or_else(|| super::ids::system_user(&v).map(|i| i.0))
                        .ok_or_else(|| {
                            fail(format!("{a}={v} of {dn:?} is no uid nor user of this host"))
                        })?,
                )
            }
        };
        let gid = match &self.gid_attribute {
            None => match uid {
                // the primary group of the account, if there is one
                Some(u) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                    .ok()
                    .flatten()
                    .map(|u| u.gid.as_raw()),
                None => Some(super::ids::proxy_ids().1),
            },
            Some(a) => {
                let v = value(a)?;
                Some(
                    v.parse::<u32>()
                        .ok()
                        .or_else(|| super::ids::parse_gid(&v))
                        .ok_or_else(|| {
                            fail(format!(
                                "{a}={v} of {dn:?} is no gid nor group of this host"
                            ))
                        })?,
                )
            }
        };
        let uid = uid.or(Some(super::ids::proxy_ids().0));
        Ok((uid, gid))
    }

    fn wants_ids(&self) -> bool {
        self.uid_attribute.is_some() || self.gid_attribute.is_some()
    }

    fn keep_ids(&self, key: (String, String), uid: Option<u32>, gid: Option<u32>) {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        found.retain(|_, f| now.duration_since(f.at) < FOUND_TTL);
        if found.len() >= FOUND_MAX {
            if let Some(oldest) = found
                .iter()
                .min_by_key(|(_, f)| f.at)
                .map(|(k, _)| k.clone())
            {
                found.remove(&oldest);
            }
        }
        found.insert(key, Found { at: now, uid, gid });
    }
}

/// What is left of the time until `deadline` (at least a millisecond).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn peer_key(username: &str, peer: &PeerInfo) -> (String, String) {
    (username.to_owned(), format!("{peer:?}"))
}

impl Authenticator for LdapAuth {
    fn kind(&self) -> ModuleKind {
        self.kind
    }

    fn method(&self) -> Method {
        Method::Plaintext
    }

    fn prompt(&self) -> &str {
        &self.prompt
    }

    fn check_password(
        &self,
        username: &str,
        password: &[u8],
        peer: &PeerInfo,
    ) -> Result<bool, AuthError> {
        if password.is_empty() {
            // an "unauthenticated bind": many servers say yes to it
            tracing::debug!(target: "xfwd::auth", "{}: empty password refused", self.kind);
            return Ok(false);
        }
        let Some(dn) = self.bind_name(username) else {
            tracing::debug!(
                target: "xfwd::auth",
                "{}: user name {username:?} refused: it cannot go into a DN",
                self.kind
            );
            return Ok(false);
        };
        let password = Zeroizing::new(bytes_to_string(password));
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connect(deadline)?;
        let outcome = (|| {
            if !self.bind(&mut conn, &dn, &password, deadline)? {
                return Ok(false);
            }
            if self.wants_ids() {
                let (uid, gid) = self.read_ids(&mut conn, &dn, deadline)?;
                tracing::debug!(
                    target: "xfwd::auth",
                    "{}: {dn:?}: uid {uid:?}, gid {gid:?} from the directory",
                    self.kind
                );
                self.keep_ids(peer_key(username, peer), uid, gid);
            }
            Ok(true)
        })();
        let _ = conn
            .with_timeout(left(deadline).min(Duration::from_secs(1)))
            .unbind();
        outcome
    }

    fn sessions(
        &self,
        username: &str,
        peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        if !self.wants_ids() {
            let (uid, gid) = super::ids::proxy_ids();
            return Ok(Some(Sessions::local(Some(uid), Some(gid))));
        }
        let found = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer_key(username, peer));
        match found {
            Some(f) => Ok(Some(Sessions::local(f.uid, f.gid))),
            None => Err(AuthError::Other(format!(
                "{}: the directory's ids of {username:?} are not known (no bind read them)",
                self.kind
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<AuthSpec, AuthSpecError> {
        AuthSpec::parse(s)
    }

    #[test]
    fn xpra_default_format_and_domain() {
        assert_eq!(
            expand(DEFAULT_FORMAT, "alice", "example.com"),
            "cn=alice, o=example.com"
        );
        assert_eq!(domain_of("vm.example.com"), "example.com");
        assert_eq!(domain_of("a.b.c.d"), "b.c.d");
        assert_eq!(domain_of("vm"), "localdomain");
        assert_eq!(domain_of(""), "localdomain");
        assert_eq!(domain_of("vm."), "localdomain");
        assert_eq!(
            expand(DEFAULT_FORMAT, "bob", &domain_of("localhost")),
            "cn=bob, o=localdomain"
        );
        // the module's default is that, with this host's domain
        let a = LdapAuth::new(&spec("ldap").unwrap()).unwrap();
        assert_eq!(a.url(), "ldap://localhost:389");
        assert_eq!(
            a.bind_name("carol").unwrap(),
            format!("cn=carol, o={}", domain_of(&fqdn()))
        );
        let a = LdapAuth::new(
            &spec("ldap,domain=corp.example,tls=1,cacert=/etc/ssl/certs/ca-certificates.crt")
                .unwrap(),
        );
        if let Ok(a) = a {
            assert_eq!(a.bind_name("d").unwrap(), "cn=d, o=corp.example");
            assert_eq!(a.url(), "ldaps://localhost:636");
        }
    }

    #[test]
    fn placeholders_once() {
        assert_eq!(
            expand("uid=%username,ou=people,%dc", "alice", "example.com"),
            "uid=alice,ou=people,dc=example,dc=com"
        );
        assert_eq!(domain_components("localdomain"), "dc=localdomain");
        // user text is not expanded again; other % stay
        assert_eq!(expand("cn=%username", "%domain", "x.y"), "cn=%domain");
        assert_eq!(expand("cn=%username%%", "a", "x"), "cn=a%%");
        assert_eq!(expand("%user", "a", "x"), "%user");
        assert_eq!(expand("%username@%domain", "a", "ex.org"), "a@ex.org");
    }

    #[test]
    fn dn_special_user_names_refused() {
        for bad in [
            "", "a,b", "a+b", "a\"b", "a\\b", "a<b", "a>b", "a;b", "a=b", "#a", " a", "a ", "a\0b",
            "a\nb",
        ] {
            assert!(!dn_safe(bad), "{bad:?}");
        }
        for ok in [
            "alice",
            "o'brien",
            "jean-luc",
            "a b",
            "Ünïcode",
            "a#b",
            "a.b@c",
        ] {
            assert!(dn_safe(ok), "{ok:?}");
        }
        let a = LdapAuth::new(&spec("ldap,username_format=uid=%username").unwrap()).unwrap();
        assert_eq!(a.bind_name("x,ou=admins"), None);
        assert_eq!(a.bind_name("x").as_deref(), Some("uid=x"));
        // ldap3: as given, or username=
        let a = LdapAuth::new(&spec("ldap3").unwrap()).unwrap();
        assert_eq!(
            a.bind_name("cn=x,dc=example").as_deref(),
            Some("cn=x,dc=example")
        );
        assert_eq!(a.bind_name(""), None);
        let a = LdapAuth::new(&spec("ldap3,username=svc@example.com").unwrap()).unwrap();
        assert_eq!(a.bind_name("anyone").as_deref(), Some("svc@example.com"));
    }

    #[test]
    fn empty_password_refused_before_connecting() {
        // port 9 on loopback: nothing listens, but no connection is tried
        let a = LdapAuth::new(&spec("ldap,host=127.0.0.1,port=9,domain=x").unwrap()).unwrap();
        assert!(!a
            .check_password("alice", b"", &PeerInfo::default())
            .unwrap());
        // with a password it tries, and says the server is unreachable
        let e = a
            .check_password("alice", b"pw", &PeerInfo::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LDAP server at 127.0.0.1:9 is unreachable"),
            "{e}"
        );
    }

    #[test]
    fn options_checked_at_startup() {
        for s in [
            "ldap,port=0",
            "ldap,port=x",
            "ldap,tls=maybe",
            "ldap,timeout=0",
            "ldap,timeout=-1",
            "ldap,timeout=x",
            "ldap,encoding=latin1",
            "ldap,username_format=cn=x",
            "ldap,username_format=cn=%username,username_format_file=/f",
            "ldap,uid_attribute=bad attr",
            "ldap,host=a/b",
            "ldap,domain=",
            "ldap3,authentication=NTLM",
            "ldap3,authentication=sasl",
            "ldap3,authentication=KERBEROS",
            "ldap3,ssl-version=SSLv2",
            "ldap3,ssl-validate=MAYBE",
            "ldap3,username=",
        ] {
            assert!(
                matches!(spec(s), Err(AuthSpecError::BadValue { .. })),
                "{s}: {:?}",
                spec(s)
            );
        }
        let e = spec("ldap3,authentication=NTLM").unwrap_err().to_string();
        assert!(e.contains("SIMPLE"), "{e}");
        for s in [
            "ldap,tls=1,port=1636,timeout=2.5,encoding=UTF-8",
            "ldap,uid_attribute=uidNumber,gid_attribute=gidNumber,domain=example.com",
            "ldap,host=::1",
            "ldap3,authentication=simple,ssl-version=TLSv1_2,ssl-validate=NONE,tls=1",
            "ldap3,username=cn=admin",
        ] {
            assert!(spec(s).is_ok(), "{s}: {:?}", spec(s));
        }
        let a = LdapAuth::new(&spec("ldap,host=::1,domain=x").unwrap()).unwrap();
        assert_eq!(a.url(), "ldap://[::1]:389");
        // ssl-validate=NONE needs no CA
        let a = LdapAuth::new(&spec("ldap3,tls=1,ssl-validate=NONE").unwrap()).unwrap();
        assert_eq!(a.url(), "ldaps://localhost:636");
        // a missing CA file is an error at startup
        let e = LdapAuth::new(&spec("ldap,tls=1,cacert=/nonexistent/ca.pem").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn format_file() {
        let dir = std::env::temp_dir().join(format!("xfwd-ldap-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("format");
        std::fs::write(
            &f,
            "# the bind DN\n\n  uid=%username,ou=people,dc=example,dc=com  \n",
        )
        .unwrap();
        let a =
            LdapAuth::new(&spec(&format!("ldap,username_format_file={}", f.display())).unwrap())
                .unwrap();
        assert_eq!(
            a.bind_name("alice").as_deref(),
            Some("uid=alice,ou=people,dc=example,dc=com")
        );
        std::fs::write(&f, "uid=%username\nou=x\n").unwrap();
        assert!(LdapAuth::new(
            &spec(&format!("ldap,username_format_file={}", f.display())).unwrap()
        )
        .is_err());
        std::fs::write(&f, "cn=nobody\n").unwrap();
        assert!(LdapAuth::new(
            &spec(&format!("ldap,username_format_file={}", f.display())).unwrap()
        )
        .is_err());
        let e = LdapAuth::new(&spec("ldap,username_format_file=/nonexistent/f").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/f"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
