//! `xfwd auth sqlite FILE COMMAND ...`: manages xpra's sqlite user database
//! with the commands, arguments, output and file format of xpra 3.1's
//! `sqlite_auth.py`, so either tool can manage the same file:
//!
//! ```text
//! xfwd auth sqlite FILE create
//! xfwd auth sqlite FILE list
//! xfwd auth sqlite FILE add USERNAME PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS]
//! xfwd auth sqlite FILE remove USERNAME [PASSWORD]
//! xfwd auth sqlite FILE authenticate USERNAME PASSWORD
//! ```
//!
//! As in xpra: `add` stores the caller's uid and gid when none are given
//! and empty text for the other fields; `remove` with a password removes
//! only the rows with that password; a wrong number of arguments prints
//! the usage and exits with status 1. Unlike xpra's tool, commands other
//! than `create` do not create a missing file.

use std::io::Write;
use std::sync::Arc;

use crate::auth::sqlite::{SqliteAuth, SqliteDb};
use crate::auth::{AuthError, AuthSpec, Authenticator, ModuleKind, PeerInfo, Secret, Targets};

/// A user database the `xfwd auth` tools manage (sqlite's file, mysql's
/// server), with xpra's commands.
pub(crate) trait UserDb {
    fn create(&self) -> Result<(), AuthError>;
    fn add_user(&self, fields: &[&str]) -> Result<(), AuthError>;
    fn remove_user(&self, username: &str, password: Option<&str>) -> Result<(), AuthError>;
    fn list_text(&self) -> Result<String, AuthError>;
    /// The auth module on this database (for `authenticate`).
    fn authenticator(&self) -> Result<Arc<dyn Authenticator>, AuthError>;
}

/// [`UserDb`] for a database type whose inherent methods are the same
/// five (mysql, postgresql).
macro_rules! user_db_by_inherent {
    ($t:ty) => {
        impl $crate::tools::auth_sqlite::UserDb for $t {
            fn create(&self) -> Result<(), $crate::auth::AuthError> {
                <$t>::create(self)
            }
            fn add_user(&self, fields: &[&str]) -> Result<(), $crate::auth::AuthError> {
                <$t>::add_user(self, fields)
            }
            fn remove_user(
                &self,
                username: &str,
                password: Option<&str>,
            ) -> Result<(), $crate::auth::AuthError> {
                <$t>::remove_user(self, username, password).map(|_| ())
            }
            fn list_text(&self) -> Result<String, $crate::auth::AuthError> {
                <$t>::list_text(self)
            }
            fn authenticator(
                &self,
            ) -> Result<std::sync::Arc<dyn $crate::auth::Authenticator>, $crate::auth::AuthError>
            {
                <$t>::authenticator(self)
            }
        }
    };
}
pub(crate) use user_db_by_inherent;

/// Opens the database a tool's first argument names.
pub(crate) type Opener<'a> = &'a dyn Fn(&str) -> Result<Box<dyn UserDb>, AuthError>;

/// A tool: its name and what its first argument is (xpra's usage text).
pub(crate) struct Tool {
    pub prog: &'static str,
    pub what: &'static str,
}

struct Sqlite(String);

impl UserDb for Sqlite {
    fn create(&self) -> Result<(), AuthError> {
        SqliteDb::new(&self.0).create()
    }
    fn add_user(&self, fields: &[&str]) -> Result<(), AuthError> {
        SqliteDb::new(&self.0).add_user(fields)
    }
    fn remove_user(&self, username: &str, password: Option<&str>) -> Result<(), AuthError> {
        SqliteDb::new(&self.0)
            .remove_user(username, password)
            .map(|_| ())
    }
    fn list_text(&self) -> Result<String, AuthError> {
        SqliteDb::new(&self.0).list_text()
    }
    fn authenticator(&self) -> Result<Arc<dyn Authenticator>, AuthError> {
        let mut spec = AuthSpec::of(ModuleKind::Sqlite);
        spec.options.push(("filename".to_owned(), self.0.clone()));
        Ok(Arc::new(SqliteAuth::new(&spec)?))
    }
}

const SQLITE: Tool = Tool {
    prog: "xfwd auth sqlite",
    what: "filename",
};

fn usage(tool: &Tool, out: &mut dyn Write, msg: &str) -> u8 {
    let Tool { prog, what } = tool;
    let _ = writeln!(out, "{msg}");
    let _ = writeln!(out, "usage:");
    let _ = writeln!(out, " {prog} {what} create");
    let _ = writeln!(out, " {prog} {what} list");
    let _ = writeln!(
        out,
        " {prog} {what} add username password [uid, gid, displays, env_options, session_options]"
    );
    let _ = writeln!(out, " {prog} {what} remove username [password]");
    let _ = writeln!(out, " {prog} {what} authenticate username password");
    1
}

/// Runs the tool; `args` are `FILE COMMAND ARGS...`. Returns the exit
/// status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    run_tool(
        &SQLITE,
        &|f: &str| Ok(Box::new(Sqlite(f.to_owned())) as Box<dyn UserDb>),
        args,
        out,
        err,
    )
}

/// Runs `tool` on the database `open` makes of the first argument.
pub(crate) fn run_tool(
    tool: &Tool,
    open: Opener<'_>,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    // xpra counts argv with the script name first
    let l = args.len() + 1;
    if l < 3 {
        return usage(tool, out, "invalid number of arguments");
    }
    let cmd = args[1].as_str();
    let rest: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let valid = match cmd {
        "create" | "list" => l == 3,
        "add" => (5..=10).contains(&l),
        "remove" => l == 4 || l == 5,
        "authenticate" => l == 5,
        other => return usage(tool, out, &format!("invalid command '{other}'")),
    };
    if !valid {
        return usage(tool, out, "invalid number of arguments");
    }
    let prog = tool.prog;
    let db = match open(&args[0]) {
        Ok(db) => db,
        Err(e) => {
            let _ = writeln!(err, "{prog}: {e}");
            return 1;
        }
    };
    let result = match cmd {
        "create" => db.create(),
        "add" => db.add_user(&rest),
        "remove" => db.remove_user(rest[0], rest.get(1).copied()),
        "list" => db.list_text().map(|t| {
            let _ = out.write_all(t.as_bytes());
        }),
        _ => return authenticate(prog, db.as_ref(), rest[0], rest[1], out, err),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "{prog}: {e}");
            1
        }
    }
}

fn authenticate(
    prog: &str,
    db: &dyn UserDb,
    username: &str,
    password: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let fail = |err: &mut dyn Write, msg: String| {
        let _ = writeln!(err, "{prog}: {msg}");
        1
    };
    let a = match db.authenticator() {
        Ok(a) => a,
        Err(e) => return fail(err, e.to_string()),
    };
    let peer = PeerInfo::default();
    let passwords = match a.lookup(username, &peer) {
        Ok(Some(p)) => p,
        Ok(None) => return fail(err, format!("no password found for '{username}'")),
        Err(e) => return fail(err, e.to_string()),
    };
    let given = Secret::from(password);
    let Some(matched) = passwords.into_iter().find(|p| *p == given) else {
        return fail(err, "the password does not match".to_owned());
    };
    let sessions = match a.sessions(username, &peer, Some(&matched)) {
        Ok(Some(s)) => s,
        Ok(None) => return fail(err, "no sessions found".to_owned()),
        Err(e) => return fail(err, e.to_string()),
    };
    let id = |v: Option<u32>| v.map_or("None".to_owned(), |v| v.to_string());
    let quoted = |pairs: &[(String, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), format!("'{v}'")))
            .collect()
    };
    let displays: Vec<String> = match &sessions.targets {
        Targets::Local => Vec::new(),
        Targets::Listed(t) => t.iter().map(|t| format!("'{t}'")).collect(),
    };
    let dict = |pairs: &[(String, String)]| -> String {
        let items: Vec<String> = pairs.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
        format!("{{{}}}", items.join(", "))
    };
    let mut session: Vec<(String, String)> = sessions
        .session_options
        .caps()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                crate::wire::Value::Bool(true) => "True".to_owned(),
                crate::wire::Value::Bool(false) => "False".to_owned(),
                crate::wire::Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (k, v)
        })
        .collect();
    if sessions.session_options.password().is_some() {
        session.push(("password".to_owned(), "'***'".to_owned()));
    }
    let _ = writeln!(
        out,
        "success, found sessions: ({}, {}, [{}], {}, {})",
        id(sessions.uid),
        id(sessions.gid),
        displays.join(", "),
        dict(&quoted(&sessions.env_options)),
        dict(&session)
    );
    0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> (u8, String, String) {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = run(&args, &mut out, &mut err);
        (
            rc,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn commands_and_usage() {
        let dir = std::env::temp_dir().join(format!("xfwd-tool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.sdb");
        let f = f.to_str().unwrap();
        assert_eq!(call(&[f]).0, 1);
        assert!(call(&[f])
            .1
            .starts_with("invalid number of arguments\nusage:"));
        assert!(call(&[f, "frob"]).1.starts_with("invalid command 'frob'"));
        assert_eq!(call(&[f, "list"]).0, 1, "no file yet");
        assert_eq!(call(&[f, "create"]).0, 0);
        assert_eq!(call(&[f, "list"]).1, "no rows found\n");
        assert_eq!(call(&[f, "add", "foo"]).0, 1);
        assert_eq!(
            call(&[f, "add", "foo", "bar", "nobody", "nobody", "tcp://h:1/"]).0,
            0
        );
        assert_eq!(
            call(&[f, "add", "a", "b", "c", "d", "e", "f", "g", "h"]).0,
            1
        );
        let (rc, out, _) = call(&[f, "authenticate", "foo", "bar"]);
        assert_eq!(rc, 0);
        assert!(out.starts_with("success, found sessions: ("), "{out}");
        assert!(out.contains("['tcp://h:1/']"), "{out}");
        assert_eq!(call(&[f, "authenticate", "foo", "baz"]).0, 1);
        assert_eq!(call(&[f, "remove", "foo"]).0, 0);
        assert_eq!(call(&[f, "list"]).1, "no rows found\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
