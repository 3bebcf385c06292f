//! Auth module specs as xpra writes them: `MODULE[,key=value...]` (or
//! `MODULE:key=value,...`), one per `--auth` / `--tcp-auth` / ... option.
//!
//! xpra 3.1 (`server_core.get_auth_module`) takes the module name up to the
//! first `:` or `,`, whichever comes first, then splits the rest on `,`
//! into `key=value` pairs (the value is everything after the first `=`; a
//! later duplicate key wins). So option values cannot contain `,`. Several
//! options for one socket type make a chain: every module must pass.

/// The coarse module kinds the first engine understood. Kept for that
/// engine: every module it cannot run maps to `Reject`, so it fails closed.
/// New code uses [`ModuleKind`] (`AuthSpec::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthModule {
    Allow,
    None,
    Reject,
}

impl AuthModule {
    pub fn name(self) -> &'static str {
        match self {
            AuthModule::Allow => "allow",
            AuthModule::None => "none",
            AuthModule::Reject => "reject",
        }
    }
}

/// Every auth module xfwd implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// Challenges, accepts any response: the user name is what matters.
    Allow,
    /// No challenge, everyone passes.
    None,
    /// Challenges, then refuses everyone.
    Reject,
    /// Refuses everyone at once (xpra's `fail`).
    Fail,
    /// One password given in the spec (`value=`).
    Password,
    /// One password: the whole content of a file (`filename=`).
    File,
    /// `username|password|uid|gid|displays|env_options|session_options` lines.
    Multifile,
    /// xpra's sqlite database (`filename=`, `password_query=`, `sessions_query=`).
    Sqlite,
    /// The password in an environment variable (`name=`, default `XPRA_PASSWORD`).
    Env,
    /// An external command decides (`command=`, `timeout=`, `require-challenge=`).
    Exec,
    /// The system's PAM stack (`service=`, `check-account=`); also `sys`.
    Pam,
    /// Unix-socket peer credentials (`uid=`, `gid=`: `:`-separated lists).
    Peercred,
    /// An LDAP simple bind as `username_format` (xpra's `ldap`).
    Ldap,
    /// An LDAP bind as the user name itself (xpra's `ldap3`).
    Ldap3,
    /// The password checked against a Kerberos KDC (`service=`, `realm=`,
    /// `keytab=`: the KDC verified).
    KerberosPassword,
    /// xpra's sqlite table and queries in a MySQL / MariaDB database (`uri=`).
    Mysql,
    /// xpra's sqlite table and queries in the database a URI names (`uri=`).
    Sql,
    /// xpra's sqlite table and queries in a PostgreSQL database (`uri=`).
    Postgresql,
    /// TCP wrappers: `/etc/hosts.allow` and `/etc/hosts.deny` decide by address.
    Hosts,
    /// A time-based one-time password (RFC 6238; `secret=`, `valid-window=`).
    Otp,
    /// A header of the WebSocket upgrade request (`property=`, `value=`).
    HttpHeader,
}

impl ModuleKind {
    pub const ALL: [ModuleKind; 21] = [
        ModuleKind::Allow,
        ModuleKind::None,
        ModuleKind::Reject,
        ModuleKind::Fail,
        ModuleKind::Password,
        ModuleKind::File,
        ModuleKind::Multifile,
        ModuleKind::Sqlite,
        ModuleKind::Env,
        ModuleKind::Exec,
        ModuleKind::Pam,
        ModuleKind::Peercred,
        ModuleKind::Ldap,
        ModuleKind::Ldap3,
        ModuleKind::KerberosPassword,
        ModuleKind::Mysql,
        ModuleKind::Sql,
        ModuleKind::Postgresql,
        ModuleKind::Hosts,
        ModuleKind::Otp,
        ModuleKind::HttpHeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Allow => "allow",
            ModuleKind::None => "none",
            ModuleKind::Reject => "reject",
            ModuleKind::Fail => "fail",
            ModuleKind::Password => "password",
            ModuleKind::File => "file",
            ModuleKind::Multifile => "multifile",
            ModuleKind::Sqlite => "sqlite",
            ModuleKind::Env => "env",
            ModuleKind::Exec => "exec",
            ModuleKind::Pam => "pam",
            ModuleKind::Peercred => "peercred",
            ModuleKind::Ldap => "ldap",
            ModuleKind::Ldap3 => "ldap3",
            ModuleKind::KerberosPassword => "kerberos-password",
            ModuleKind::Mysql => "mysql",
            ModuleKind::Sql => "sql",
            ModuleKind::Postgresql => "postgresql",
            ModuleKind::Hosts => "hosts",
            ModuleKind::Otp => "otp",
            ModuleKind::HttpHeader => "http-header",
        }
    }

    /// The module for an xpra module name (`sys` is PAM on Unix, as in
    /// xpra; `postgres` is `postgresql`; an empty name is `none`).
    pub fn from_name(name: &str) -> Option<ModuleKind> {
        match name {
            "" => Some(ModuleKind::None),
            "sys" => Some(ModuleKind::Pam),
            "postgres" => Some(ModuleKind::Postgresql),
            n => ModuleKind::ALL.into_iter().find(|k| k.name() == n),
        }
    }

    /// The option keys the module takes (besides `prompt`, which all take).
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            ModuleKind::Allow | ModuleKind::None => &["uid", "gid"],
            ModuleKind::Reject | ModuleKind::Fail => &[],
            ModuleKind::Password => &["value", "uid", "gid"],
            ModuleKind::File => &["filename", "exec_cwd", "uid", "gid"],
            ModuleKind::Multifile => &["filename", "exec_cwd"],
            ModuleKind::Sqlite => &["filename", "password_query", "sessions_query", "exec_cwd"],
            ModuleKind::Env => &["name", "uid", "gid"],
            ModuleKind::Exec => &["command", "timeout", "require-challenge", "uid", "gid"],
            ModuleKind::Pam => &["service", "check-account", "check_account"],
            ModuleKind::Peercred => &["uid", "gid"],
            ModuleKind::Ldap => &[
                "host",
                "port",
                "tls",
                "cacert",
                "encoding",
                "username_format",
                "uid",
                "gid",
                // xfwd's: a format with commas, the domain, ids from the
                // directory, the deadline (src/auth/ldap.rs)
                "username_format_file",
                "domain",
                "uid_attribute",
                "gid_attribute",
                "timeout",
            ],
            ModuleKind::Ldap3 => &[
                "host",
                "port",
                "tls",
                "cacert",
                "ssl-version",
                "ssl-validate",
                "authentication",
                "username",
                "uid",
                "gid",
                "uid_attribute",
                "gid_attribute",
                "timeout",
            ],
            // keytab, verify, timeout: xfwd's (KDC verification, a bound).
            ModuleKind::KerberosPassword => &[
                "service", "realm", "username", "keytab", "verify", "timeout", "uid", "gid",
            ],
            ModuleKind::Mysql | ModuleKind::Sql | ModuleKind::Postgresql => {
                &["uri", "password_query", "sessions_query", "timeout"]
            }
            ModuleKind::Hosts => &["daemon", "hosts-allow", "hosts-deny"],
            ModuleKind::Otp => &["secret", "issuer-name", "valid-window"],
            ModuleKind::HttpHeader => &["property", "value", "trusted-from", "username-header"],
        }
    }

    /// Whether the module's users' sessions are those of the account xfwd
    /// runs as, or of its `uid=` / `gid=` options (it identifies no system
    /// account of its own).
    pub fn takes_ids(self) -> bool {
        matches!(
            self,
            ModuleKind::Allow
                | ModuleKind::None
                | ModuleKind::Password
                | ModuleKind::File
                | ModuleKind::Env
                | ModuleKind::Exec
                | ModuleKind::Ldap
                | ModuleKind::Ldap3
                | ModuleKind::KerberosPassword
        )
    }

    /// Whether this build can run the module.
    pub fn is_built(self) -> bool {
        self != ModuleKind::Pam || cfg!(feature = "pam")
    }

    /// The coarse kind an engine that knows only allow/none/reject sees.
    pub fn legacy(self) -> AuthModule {
        match self {
            ModuleKind::Allow => AuthModule::Allow,
            ModuleKind::None => AuthModule::None,
            _ => AuthModule::Reject,
        }
    }
}

impl std::fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An auth module with its options.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSpec {
    /// The coarse kind (see [`AuthModule`]); use `kind`.
    pub module: AuthModule,
    /// The options in the order given; a later duplicate key wins.
    pub options: Vec<(String, String)>,
    /// The module.
    pub kind: ModuleKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSpecError {
    #[error(
        "unknown auth module {0:?} (available: allow, none, reject, fail, password, file, \
         multifile, sqlite, env, exec, pam, sys, peercred, ldap, ldap3, kerberos-password, \
         mysql, sql, postgresql, hosts, otp, http-header)"
    )]
    UnknownModule(String),
    #[error("auth option {0:?} is not key=value")]
    BadOption(String),
    #[error("auth module {module} takes no option {key:?}")]
    UnknownOption { module: &'static str, key: String },
    #[error("auth module {0} is not built in: rebuild xfwd with `--features {0}`")]
    NotBuilt(&'static str),
    #[error("auth module {module}: {message}")]
    BadValue {
        module: &'static str,
        message: String,
    },
}

/// Option keys whose values are secrets (not shown by `Debug`).
const SECRET_KEYS: [&str; 4] = ["value", "password", "secret", "uri"];

impl std::fmt::Debug for AuthSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<(&str, &str)> = self
            .options
            .iter()
            .map(|(k, v)| {
                let v = if SECRET_KEYS.contains(&k.as_str()) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("AuthSpec")
            .field("kind", &self.kind)
            .field("options", &options)
            .finish()
    }
}

impl AuthSpec {
    pub fn none() -> AuthSpec {
        AuthSpec::of(ModuleKind::None)
    }

    /// A module without options.
    pub fn of(kind: ModuleKind) -> AuthSpec {
        AuthSpec {
            module: kind.legacy(),
            options: Vec::new(),
            kind,
        }
    }

    /// Parses xpra's `MODULE[,key=value...]` (also `MODULE:key=value,...`).
    pub fn parse(s: &str) -> Result<AuthSpec, AuthSpecError> {
        let (name, rest) = match s.find([':', ',']) {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, ""),
        };
        let name = name.trim();
        let kind = ModuleKind::from_name(name)
            .ok_or_else(|| AuthSpecError::UnknownModule(name.to_owned()))?;
        if !kind.is_built() {
            return Err(AuthSpecError::NotBuilt(kind.name()));
        }
        let mut options: Vec<(String, String)> = Vec::new();
        for p in rest.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| AuthSpecError::BadOption(p.to_owned()))?;
            if k != "prompt" && !kind.keys().contains(&k) {
                return Err(AuthSpecError::UnknownOption {
                    module: kind.name(),
                    key: k.to_owned(),
                });
            }
            options.push((k.to_owned(), v.to_owned()));
        }
        let spec = AuthSpec {
            module: kind.legacy(),
            options,
            kind,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Parses the values of repeated options (`--tcp-auth=A --tcp-auth=B`):
    /// a chain in which every module must pass, in order.
    pub fn parse_chain<S: AsRef<str>>(values: &[S]) -> Result<Vec<AuthSpec>, AuthSpecError> {
        values.iter().map(|v| AuthSpec::parse(v.as_ref())).collect()
    }

    fn bad(&self, message: impl Into<String>) -> AuthSpecError {
        AuthSpecError::BadValue {
            module: self.kind.name(),
            message: message.into(),
        }
    }

    /// Checks option values that can be checked without touching files.
    fn validate(&self) -> Result<(), AuthSpecError> {
        let empty = |k: &str| self.option(k).unwrap_or("").trim().is_empty();
        match self.kind {
            ModuleKind::File | ModuleKind::Multifile if empty("filename") => {
                Err(self.bad("needs filename=PATH"))
            }
            ModuleKind::Exec if empty("command") => Err(self.bad("needs command=PATH")),
            ModuleKind::Exec => match self.option("timeout") {
                Some(t) if t.trim().parse::<u64>().is_err() => {
                    Err(self.bad(format!("timeout {t:?} is not a number of seconds")))
                }
                _ => Ok(()),
            },
            ModuleKind::Password if empty("value") => Err(self.bad("needs value=PASSWORD")),
            ModuleKind::KerberosPassword => match self.option("timeout") {
                Some(t) if !t.trim().parse::<u64>().is_ok_and(|n| n > 0) => {
                    Err(self.bad(format!("timeout {t:?} is not a positive number of seconds")))
                }
                _ => match self.option("verify") {
                    Some(v) if super::targets::parse_bool(v).is_none() => {
                        Err(self.bad(format!("verify {v:?} is not yes or no")))
                    }
                    _ => Ok(()),
                },
            },
            ModuleKind::Mysql | ModuleKind::Sql | ModuleKind::Postgresql if empty("uri") => {
                Err(self.bad("needs uri=URI"))
            }
            ModuleKind::Mysql | ModuleKind::Sql | ModuleKind::Postgresql => {
                match self.option("timeout") {
                    Some(t) if !t.trim().parse::<u64>().is_ok_and(|n| n > 0) => {
                        Err(self.bad(format!("timeout {t:?} is not a number of seconds")))
                    }
                    _ => Ok(()),
                }
            }
            ModuleKind::Ldap | ModuleKind::Ldap3 => super::ldap::validate(self),
            _ => Ok(()),
        }
    }

    /// The value of an option (the last one given).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The prompt shown by the client when it asks for a password.
    pub fn prompt(&self) -> &str {
        self.option("prompt").unwrap_or("password")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn separators_like_xpra() {
        let s = AuthSpec::parse("sqlite,filename=./a.sdb").unwrap();
        assert_eq!(s.kind, ModuleKind::Sqlite);
        assert_eq!(s.module, AuthModule::Reject);
        assert_eq!(s.option("filename"), Some("./a.sdb"));
        let s = AuthSpec::parse("sqlite:filename=/x/y.sdb,password_query=SELECT 1").unwrap();
        assert_eq!(s.option("filename"), Some("/x/y.sdb"));
        assert_eq!(s.option("password_query"), Some("SELECT 1"));
        // values may hold ':' and '=' (only ',' separates)
        let s = AuthSpec::parse("peercred,uid=1000:root,gid=a=b").unwrap();
        assert_eq!(s.option("uid"), Some("1000:root"));
        assert_eq!(s.option("gid"), Some("a=b"));
        let s = AuthSpec::parse("file,filename=C:\\pw").unwrap();
        assert_eq!(s.option("filename"), Some("C:\\pw"));
        // duplicate: last wins
        let s = AuthSpec::parse("env,name=A,name=B").unwrap();
        assert_eq!(s.option("name"), Some("B"));
        assert_eq!(ModuleKind::from_name("sys"), Some(ModuleKind::Pam));
        assert_eq!(
            ModuleKind::from_name("postgres"),
            Some(ModuleKind::Postgresql)
        );
        assert_eq!(ModuleKind::Postgresql.name(), "postgresql");
        assert!(!ModuleKind::Postgresql.takes_ids());
        assert_eq!(AuthSpec::parse("").unwrap().kind, ModuleKind::None);
    }

    #[test]
    fn options_checked() {
        assert!(matches!(
            AuthSpec::parse("file"),
            Err(AuthSpecError::BadValue { .. })
        ));
        assert!(matches!(
            AuthSpec::parse("exec,command=/bin/true,timeout=x"),
            Err(AuthSpecError::BadValue { .. })
        ));
        assert!(matches!(
            AuthSpec::parse("env,filename=x"),
            Err(AuthSpecError::UnknownOption { .. })
        ));
        assert!(matches!(
            AuthSpec::parse("Allow"),
            Err(AuthSpecError::UnknownModule(_))
        ));
        let chain = AuthSpec::parse_chain(&["peercred", "multifile,filename=/p"]).unwrap();
        assert_eq!(chain.len(), 2);
        assert!(AuthSpec::parse_chain(&["allow", "nope"]).is_err());
    }

    #[test]
    fn secrets_not_in_debug() {
        let s = AuthSpec::parse("password,value=hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn pam_only_when_built() {
        let r = AuthSpec::parse("pam,service=login");
        if cfg!(feature = "pam") {
            assert_eq!(r.unwrap().kind, ModuleKind::Pam);
        } else {
            assert_eq!(r, Err(AuthSpecError::NotBuilt("pam")));
        }
    }
}
