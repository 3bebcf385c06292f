//! The interface every auth module implements, what a module says about an
//! authenticated user's sessions, and how a spec becomes a module.

use std::sync::Arc;

use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};
use super::targets::{self, SelectError, SessionOptions, Target};

/// How a module decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// No challenge: [`Authenticator::check_direct`] decides (none, fail,
    /// peercred, exec).
    Direct,
    /// A challenge; the response is checked against the passwords
    /// [`Authenticator::lookup`] returns (password, file, multifile,
    /// sqlite, env).
    Stored,
    /// A challenge with the `xor` digest; the password recovered from the
    /// response goes to [`Authenticator::check_password`] (pam, exec with
    /// `require-challenge=yes`).
    Plaintext,
    /// A challenge; any non-empty response passes (allow).
    AnyResponse,
    /// A challenge; nothing passes (reject).
    Refuse,
}

/// Errors of the modules themselves (not a wrong password: that is
/// `Ok(false)` / `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("sqlite {path}: {message}")]
    Sqlite { path: String, message: String },
    /// A database server (`backend`: `mysql`, ...) at `server`
    /// (`HOST:PORT/DATABASE`, never with a password) failed or is down.
    #[error("{backend} server {server}: {message}")]
    Database {
        backend: &'static str,
        server: String,
        message: String,
    },
    #[error("exec {command}: {message}")]
    Exec { command: String, message: String },
    #[error("pam: {0}")]
    Pam(String),
    /// libkrb5 missing, the KDC unreachable or silent, its answer not
    /// verified with the keytab (not a wrong password: that is `Ok(false)`).
    #[error("kerberos: {0}")]
    Kerberos(String),
    #[error(transparent)]
    Spec(#[from] super::spec::AuthSpecError),
    #[error("{0}")]
    Other(String),
}

/// An auth module, shared by every connection of the listeners that use
/// it (`Send + Sync`). Methods that read files or databases, run commands
/// or call PAM block: call them off the shard threads.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ModuleKind;

    fn method(&self) -> Method;

    /// The prompt the client shows when it asks for the password.
    fn prompt(&self) -> &str {
        "password"
    }

    /// Whether the module sends a challenge.
    fn requires_challenge(&self) -> bool {
        self.method() != Method::Direct
    }

    /// Whether the module needs the password itself (the `xor` digest).
    fn needs_plaintext(&self) -> bool {
        self.method() == Method::Plaintext
    }

    /// [`Method::Direct`] modules: whether this client passes.
    fn check_direct(&self, _username: &str, _peer: &PeerInfo) -> Result<bool, AuthError> {
        Ok(false)
    }

    /// [`Method::Direct`] modules: `None` when this client passes, else why
    /// not (for the access log). Default: [`Self::check_direct`].
    fn direct_refusal(&self, username: &str, peer: &PeerInfo) -> Result<Option<String>, AuthError> {
        Ok((!self.check_direct(username, peer)?)
            .then(|| format!("{} refused the client", self.kind())))
    }

    /// [`Method::Stored`] modules: the passwords `username` may use
    /// (`None` or empty: unknown user or no password).
    fn lookup(&self, _username: &str, _peer: &PeerInfo) -> Result<Option<Vec<Secret>>, AuthError> {
        Ok(None)
    }

    /// [`Method::Plaintext`] modules: whether `password` is right.
    fn check_password(
        &self,
        _username: &str,
        _password: &[u8],
        _peer: &PeerInfo,
    ) -> Result<bool, AuthError> {
        Ok(false)
    }

    /// Whether the module only decides whether a client may pass, and knows
    /// nothing of the user (hosts, otp, http-header without
    /// `username-header`): in a chain, the other modules' sessions come
    /// first (xpra would take this one's if it came first: its account,
    /// root in system-wide mode).
    fn is_gate(&self) -> bool {
        false
    }

    /// After every module of the chain passed: the sessions this module
    /// offers the user (xpra's `get_sessions`). `matched` is the stored
    /// password that matched, for [`Method::Stored`] modules. The first
    /// module of a chain that returns `Some` decides. Default: the local
    /// sessions of the account xfwd was started as (xpra's
    /// `sys_auth_base`: the proxy's own uid, unless the module's `uid=` and
    /// `gid=` options, which [`super::AuthChain`] applies, say otherwise).
    /// In system-wide mode that is root, whose sessions are never served:
    /// only modules that identify a system account (pam, peercred, the
    /// uid columns of multifile and sqlite) or `uid=` reach a user's.
    fn sessions(
        &self,
        _username: &str,
        _peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        let (uid, gid) = super::ids::proxy_ids();
        Ok(Some(Sessions::local(Some(uid), Some(gid))))
    }
}

/// Where an authenticated user's sessions are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// The user's own local sessions, found in the socket directories
    /// (what xpra's system-account modules offer).
    Local,
    /// The sessions the auth data lists (multifile, sqlite). Empty: xpra
    /// starts a new session when it may, else "no displays found".
    Listed(Vec<Target>),
}

/// What a module offers an authenticated user (xpra's `get_sessions()`
/// tuple: uid, gid, displays, env_options, session_options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions {
    /// The account sessions run as (root mode). `None`: unknown (a name
    /// that does not resolve); never fall back to root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub targets: Targets,
    /// Environment for sessions started for the user.
    pub env_options: Vec<(String, String)>,
    /// Options for the connection to the session (whitelisted).
    pub session_options: SessionOptions,
}

impl Sessions {
    /// The local sessions of `uid` / `gid`.
    pub fn local(uid: Option<u32>, gid: Option<u32>) -> Sessions {
        Sessions {
            uid,
            gid,
            targets: Targets::Local,
            env_options: Vec::new(),
            session_options: SessionOptions::default(),
        }
    }

    /// The local sessions of the system account `username` (uid and gid
    /// unknown when there is no such account).
    pub fn system(username: &str) -> Sessions {
        let ids = super::ids::system_user(username);
        Sessions::local(ids.map(|i| i.0), ids.map(|i| i.1))
    }

    /// From auth data fields: `displays` as xpra writes them
    /// (comma-separated), options as `k=v` pairs.
    pub fn listed(
        uid: Option<u32>,
        gid: Option<u32>,
        displays: &str,
        env_options: Vec<(String, String)>,
        session_options: &[(String, String)],
    ) -> Sessions {
        let (list, bad) = targets::parse_list(displays);
        for e in bad {
            tracing::warn!(target: "xfwd::auth", "ignoring a display entry: {e}");
        }
        Sessions {
            uid,
            gid,
            targets: Targets::Listed(list),
            env_options,
            session_options: SessionOptions::parse(session_options),
        }
    }

    /// The target for a client that asked for `requested` (its display,
    /// `None` when it named none). `Ok(None)` for [`Targets::Local`]: the
    /// caller looks in the socket directories.
    pub fn select(&self, requested: Option<&str>) -> Result<Option<&Target>, SelectError> {
        match &self.targets {
            Targets::Local => Ok(None),
            Targets::Listed(list) => targets::select(list, requested).map(Some),
        }
    }
}

/// Builds the module a spec names. Relative file names are resolved
/// against the current directory now (xpra: its `exec_cwd`). Peercred's
/// user and group names are resolved now too.
pub fn authenticator(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    use super::modules;
    Ok(match spec.kind {
        ModuleKind::Allow => Arc::new(modules::Allow::new(spec)),
        ModuleKind::None => Arc::new(modules::NoneAuth),
        ModuleKind::Reject => Arc::new(modules::Reject::new(spec)),
        ModuleKind::Fail => Arc::new(modules::Fail),
        ModuleKind::Password => Arc::new(modules::PasswordAuth::new(spec)?),
        ModuleKind::File => Arc::new(super::file::FileAuth::new(spec)?),
        ModuleKind::Multifile => Arc::new(super::multifile::MultifileAuth::new(spec)?),
        ModuleKind::Sqlite => Arc::new(super::sqlite::SqliteAuth::new(spec)?),
        ModuleKind::Env => Arc::new(super::env::EnvAuth::new(spec)),
        ModuleKind::Exec => Arc::new(super::exec::ExecAuth::new(spec)?),
        ModuleKind::Pam => super::pam::build(spec)?,
        ModuleKind::Peercred => Arc::new(super::peercred::PeercredAuth::new(spec)),
        ModuleKind::Ldap | ModuleKind::Ldap3 => super::ldap::build(spec)?,
        ModuleKind::KerberosPassword => super::kerberos::build(spec)?,
        ModuleKind::Mysql | ModuleKind::Sql | ModuleKind::Postgresql => super::sql::build(spec)?,
        ModuleKind::Hosts => super::hosts::build(spec)?,
        ModuleKind::Otp => super::otp::build(spec)?,
        ModuleKind::HttpHeader => super::http_header::build(spec)?,
    })
}

/// A path option resolved against `exec_cwd` (when given) or the current
/// directory, as xpra does.
pub(crate) fn resolve_path(spec: &AuthSpec, value: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(value);
    if p.is_absolute() {
        return p;
    }
    let base = spec
        .option("exec_cwd")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    base.join(p)
}

/// Text from auth data bytes: UTF-8 when valid, else latin-1 (xpra's
/// `bytestostr`).
pub(crate) fn bytes_to_string(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}
