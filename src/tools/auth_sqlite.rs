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

use crate::auth::sqlite::{SqliteAuth, SqliteDb};
use crate::auth::{AuthSpec, Authenticator, ModuleKind, PeerInfo, Secret, Targets};

const PROG: &str = "xfwd auth sqlite";

fn usage(out: &mut dyn Write, msg: &str) -> u8 {
    let _ = writeln!(out, "{msg}");
    let _ = writeln!(out, "usage:");
    let _ = writeln!(out, " {PROG} filename create");
    let _ = writeln!(out, " {PROG} filename list");
    let _ = writeln!(
        out,
        " {PROG} filename add username password [uid, gid, displays, env_options, session_options]"
    );
    let _ = writeln!(out, " {PROG} filename remove username [password]");
    let _ = writeln!(out, " {PROG} filename authenticate username password");
    1
}

/// Runs the tool; `args` are `FILE COMMAND ARGS...`. Returns the exit
/// status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    // xpra counts argv with the script name first
    let l = args.len() + 1;
    if l < 3 {
        return usage(out, "invalid number of arguments");
    }
    let file = &args[0];
    let cmd = args[1].as_str();
    let rest: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let db = SqliteDb::new(file);
    let result = match cmd {
        "create" if l == 3 => db.create().map(|_| ()),
        "add" if (5..=10).contains(&l) => db.add_user(&rest),
        "remove" if l == 4 || l == 5 => db.remove_user(rest[0], rest.get(1).copied()).map(|_| ()),
        "list" if l == 3 => db.list_text().map(|t| {
            let _ = out.write_all(t.as_bytes());
        }),
        "authenticate" if l == 5 => return authenticate(file, rest[0], rest[1], out, err),
        "create" | "add" | "remove" | "list" | "authenticate" => {
            return usage(out, "invalid number of arguments")
        }
        other => return usage(out, &format!("invalid command '{other}'")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "{PROG}: {e}");
            1
        }
    }
}

fn authenticate(
    file: &str,
    username: &str,
    password: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut spec = AuthSpec::of(ModuleKind::Sqlite);
    spec.options.push(("filename".to_owned(), file.to_owned()));
    let fail = |err: &mut dyn Write, msg: String| {
        let _ = writeln!(err, "{PROG}: {msg}");
        1
    };
    let a = match SqliteAuth::new(&spec) {
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
