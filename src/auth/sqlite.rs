//! `sqlite,filename=PATH[,password_query=SQL][,sessions_query=SQL]`:
//! xpra's sqlite user database, with the schema, default queries and
//! management commands of xpra 3.1's `sqlite_auth.py`.
//!
//! - `filename` defaults to `sqlite.sdb`, relative to the current directory.
//! - `password_query` (one `?`: the user name) returns the user's
//!   passwords in its first column; any of them may match.
//! - `sessions_query` (two `?`: the user name and the password that
//!   matched) returns one row read by column name: `uid`, `gid`,
//!   `displays`, `env_options`, `session_options` (xpra 3.1 reads them by
//!   name; xfwd falls back to the column position when a name is missing).
//!
//! xpra splits module options on `,`, so a custom query given on the
//! command line cannot contain one.
//!
//! The parts every SQL module shares (the table, the default queries,
//! which password matched, the sessions row, xpra's quirks and where xfwd
//! differs) live in [`super::sql_rows`].

use std::path::{Path, PathBuf};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OpenFlags};

use super::authenticator::{resolve_path, AuthError, Sessions};
use super::spec::{AuthSpec, ModuleKind};
use super::sql_rows::{self, Cell, COLUMNS};

pub use super::sql_rows::{CREATE_SQL, DEFAULT_PASSWORD_QUERY, DEFAULT_SESSIONS_QUERY};

/// The default database file name.
pub const DEFAULT_FILENAME: &str = "sqlite.sdb";

/// The `sqlite` module.
#[derive(Debug)]
pub struct SqliteAuth {
    path: PathBuf,
    password_query: String,
    sessions_query: String,
    prompt: String,
    /// `sqlite`, or `sql` for `sql,uri=sqlite:///...`.
    kind: ModuleKind,
}

fn sql_err(path: &Path, e: impl std::fmt::Display) -> AuthError {
    AuthError::Sqlite {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A sqlite value as the shared SQL code sees it.
pub fn cell(v: &SqlValue) -> Cell {
    match v {
        SqlValue::Null => Cell::Null,
        SqlValue::Integer(i) => Cell::Int(*i),
        SqlValue::Real(f) => Cell::Real(*f),
        SqlValue::Text(t) => Cell::Text(t.clone()),
        SqlValue::Blob(b) => Cell::Bytes(b.clone()),
    }
}

fn sql_value(c: &Cell) -> SqlValue {
    match c {
        Cell::Null => SqlValue::Null,
        Cell::Int(i) => SqlValue::Integer(*i),
        Cell::Real(f) => SqlValue::Real(*f),
        Cell::Text(t) => SqlValue::Text(t.clone()),
        Cell::Bytes(b) => SqlValue::Blob(b.clone()),
    }
}

/// Python's `str()` of a column value.
pub fn value_text(v: &SqlValue) -> String {
    cell(v).text()
}

impl SqliteAuth {
    pub fn new(spec: &AuthSpec) -> Result<SqliteAuth, AuthError> {
        let name = spec
            .option("filename")
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FILENAME);
        Ok(SqliteAuth::with(
            resolve_path(spec, name),
            spec.option("password_query")
                .unwrap_or(DEFAULT_PASSWORD_QUERY)
                .to_owned(),
            spec.option("sessions_query")
                .unwrap_or(DEFAULT_SESSIONS_QUERY)
                .to_owned(),
            spec.prompt().to_owned(),
            ModuleKind::Sqlite,
        ))
    }

    /// The module for a database file, with its queries (`?`
    /// placeholders), as module `kind` (`sql,uri=sqlite:///...` is `sql`).
    pub(crate) fn with(
        path: PathBuf,
        password_query: String,
        sessions_query: String,
        prompt: String,
        kind: ModuleKind,
    ) -> SqliteAuth {
        SqliteAuth {
            path,
            password_query,
            sessions_query,
            prompt,
            kind,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> Result<Connection, AuthError> {
        if !self.path.exists() {
            return Err(sql_err(&self.path, "cannot find the database file"));
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err(&self.path, e))?;
        c.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| sql_err(&self.path, e))?;
        Ok(c)
    }
}

impl sql_rows::UserTable for SqliteAuth {
    fn kind(&self) -> ModuleKind {
        self.kind
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    /// The first column of every row `password_query` returns.
    fn password_values(&self, username: &str) -> Result<Vec<Cell>, AuthError> {
        let c = self.open()?;
        let mut stmt = c
            .prepare(&self.password_query)
            .map_err(|e| sql_err(&self.path, e))?;
        let n = stmt.parameter_count();
        let params: Vec<&str> = [username].into_iter().take(n).collect();
        let rows = stmt
            .query_map(params_from_iter(params), |r| r.get::<_, SqlValue>(0))
            .map_err(|e| sql_err(&self.path, e))?;
        rows.map(|r| r.map(|v| cell(&v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql_err(&self.path, e))
    }

    /// The sessions row for `username` and the stored `password`.
    fn session_row(&self, username: &str, password: &Cell) -> Result<Option<Sessions>, AuthError> {
        let c = self.open()?;
        let mut stmt = c
            .prepare(&self.sessions_query)
            .map_err(|e| sql_err(&self.path, e))?;
        let names: Vec<String> = stmt
            .column_names()
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let n = stmt.parameter_count();
        let params: Vec<SqlValue> = [SqlValue::Text(username.to_owned()), sql_value(password)]
            .into_iter()
            .take(n)
            .collect();
        let mut rows = stmt
            .query(params_from_iter(params))
            .map_err(|e| sql_err(&self.path, e))?;
        let Some(row) = rows.next().map_err(|e| sql_err(&self.path, e))? else {
            return Ok(None);
        };
        let cells: Vec<Cell> = (0..names.len())
            .map(|i| row.get::<_, SqlValue>(i).map_or(Cell::Null, |v| cell(&v)))
            .collect();
        Ok(Some(sql_rows::sessions_from_row(&names, &cells)))
    }
}

/// The database management of xpra's `sqlite_auth.py` (create, add,
/// remove, list, authenticate), for `xfwd auth sqlite`.
pub struct SqliteDb {
    path: PathBuf,
}

/// One row of the users table, every column as Python's `str()` shows it.
pub type UserRow = [SqlValue; 7];

impl SqliteDb {
    pub fn new(path: impl Into<PathBuf>) -> SqliteDb {
        SqliteDb { path: path.into() }
    }

    fn connect(&self, create: bool) -> Result<Connection, AuthError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        Connection::open_with_flags(&self.path, flags).map_err(|e| sql_err(&self.path, e))
    }

    /// `create`: makes the file (if needed) and xpra's table.
    pub fn create(&self) -> Result<(), AuthError> {
        let c = self.connect(true)?;
        c.execute(CREATE_SQL, [])
            .map_err(|e| sql_err(&self.path, e))?;
        Ok(())
    }

    /// `add username password [uid gid displays env_options session_options]`
    /// (uid and gid default to the caller's, displays and options to "").
    pub fn add_user(&self, fields: &[&str]) -> Result<(), AuthError> {
        let values = sql_rows::new_user(fields)?;
        let c = self.connect(false)?;
        c.execute(sql_rows::INSERT_SQL, params_from_iter(values))
            .map_err(|e| sql_err(&self.path, e))?;
        Ok(())
    }

    /// `remove username [password]`: every row of the user, or only those
    /// with that password when one is given (and not empty).
    pub fn remove_user(&self, username: &str, password: Option<&str>) -> Result<usize, AuthError> {
        let c = self.connect(false)?;
        let n = match password.filter(|p| !p.is_empty()) {
            Some(p) => c.execute(sql_rows::DELETE_PASSWORD_SQL, [username, p]),
            None => c.execute(sql_rows::DELETE_SQL, [username]),
        }
        .map_err(|e| sql_err(&self.path, e))?;
        Ok(n)
    }

    /// Every row, in table order.
    pub fn rows(&self) -> Result<Vec<UserRow>, AuthError> {
        let c = self.connect(false)?;
        let sql = format!("SELECT {} FROM users", COLUMNS.join(", "));
        let mut stmt = c.prepare(&sql).map_err(|e| sql_err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok([
                    r.get::<_, SqlValue>(0)?,
                    r.get::<_, SqlValue>(1)?,
                    r.get::<_, SqlValue>(2)?,
                    r.get::<_, SqlValue>(3)?,
                    r.get::<_, SqlValue>(4)?,
                    r.get::<_, SqlValue>(5)?,
                    r.get::<_, SqlValue>(6)?,
                ])
            })
            .map_err(|e| sql_err(&self.path, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql_err(&self.path, e))
    }

    /// `list`: the text xpra's tool prints.
    pub fn list_text(&self) -> Result<String, AuthError> {
        Ok(format_list(&self.rows()?))
    }
}

/// xpra's `list_users` output (see [`sql_rows::format_list`]).
pub fn format_list(rows: &[UserRow]) -> String {
    let rows: Vec<[Cell; 7]> = rows.iter().map(|r| r.each_ref().map(cell)).collect();
    sql_rows::format_list(&rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::authenticator::Targets;
    use super::*;
    use crate::auth::Authenticator;
    use crate::auth::PeerInfo;
    use crate::auth::Secret;

    fn tmpdb(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xfwd-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("auth.sdb")
    }

    #[test]
    fn manage_and_authenticate() {
        let path = tmpdb("manage");
        let db = SqliteDb::new(&path);
        db.create().unwrap();
        assert!(db.create().is_err(), "the table exists already");
        assert_eq!(db.list_text().unwrap(), "no rows found\n");
        db.add_user(&[
            "foo",
            "bar",
            "nobody",
            "nobody",
            "tcp://192.168.1.200:10100/",
        ])
        .unwrap();
        db.add_user(&[
            "moo",
            "cow",
            "nobody",
            "nobody",
            "tcp://192.168.1.200:10101/",
            "",
            "compression=0",
        ])
        .unwrap();
        db.add_user(&["two", "p1"]).unwrap();
        db.add_user(&["two", "p2", "0", "0", ":7"]).unwrap();
        let list = db.list_text().unwrap();
        assert!(list.starts_with("4 rows found:\n"), "{list}");

        let spec = AuthSpec::parse(&format!("sqlite,filename={}", path.display())).unwrap();
        let a = SqliteAuth::new(&spec).unwrap();
        let peer = PeerInfo::default();
        let pws = a.lookup("foo", &peer).unwrap().unwrap();
        assert_eq!(pws, vec![Secret::from("bar")]);
        assert!(a.lookup("nobody-here", &peer).unwrap().is_none());
        let s = a
            .sessions("moo", &peer, Some(&Secret::from("cow")))
            .unwrap()
            .unwrap();
        assert_eq!(s.session_options.compression_level, Some(0));
        match &s.targets {
            Targets::Listed(t) => assert_eq!(t[0].to_string(), "tcp://192.168.1.200:10101/"),
            other => panic!("{other:?}"),
        }
        // two passwords: the sessions follow the one that matched
        assert_eq!(a.lookup("two", &peer).unwrap().unwrap().len(), 2);
        let s = a
            .sessions("two", &peer, Some(&Secret::from("p2")))
            .unwrap()
            .unwrap();
        assert_eq!(s.uid, Some(0));
        assert_eq!(s.select(None).unwrap().unwrap().to_string(), ":7");
        let s = a
            .sessions("two", &peer, Some(&Secret::from("p1")))
            .unwrap()
            .unwrap();
        assert_eq!(s.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(s.targets, Targets::Listed(vec![]));
        assert!(a
            .sessions("two", &peer, Some(&Secret::from("p3")))
            .unwrap()
            .is_none());

        assert_eq!(db.remove_user("two", Some("p1")).unwrap(), 1);
        assert_eq!(db.remove_user("two", Some("")).unwrap(), 1);
        assert_eq!(db.remove_user("foo", None).unwrap(), 1);
        assert!(db.list_text().unwrap().starts_with("1 rows found:"));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn custom_queries_and_missing_file() {
        let path = tmpdb("custom");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE accounts (login TEXT, secret TEXT, host TEXT);
             INSERT INTO accounts VALUES ('ann', 'pw', 'tcp://h:1/5');
             INSERT INTO accounts VALUES ('bob', NULL, 'tcp://h:2/');",
        )
        .unwrap();
        let spec = AuthSpec::parse(&format!(
            "sqlite,filename={},password_query=SELECT secret FROM accounts WHERE login=?,\
             sessions_query=SELECT host AS displays, 0 AS uid FROM accounts WHERE login=?",
            path.display()
        ));
        // xpra splits options on ',': this query cannot be given
        assert!(spec.is_err());
        let spec = AuthSpec::parse(&format!(
            "sqlite,filename={},password_query=SELECT secret FROM accounts WHERE login=(?),\
             sessions_query=SELECT host AS displays FROM accounts WHERE login=(?)",
            path.display()
        ))
        .unwrap();
        let a = SqliteAuth::new(&spec).unwrap();
        let peer = PeerInfo::default();
        assert_eq!(a.lookup("ann", &peer).unwrap().unwrap().len(), 1);
        // NULL password: no password at all
        assert!(a.lookup("bob", &peer).unwrap().is_none());
        let s = a
            .sessions("ann", &peer, Some(&Secret::from("pw")))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.select(Some("5")).unwrap().unwrap().to_string(),
            "tcp://h:1/5"
        );

        let spec = AuthSpec::parse("sqlite,filename=/nonexistent/xfwd.sdb").unwrap();
        let a = SqliteAuth::new(&spec).unwrap();
        assert!(a.lookup("ann", &peer).is_err());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn list_format_like_xpra() {
        let row = |u: &str, p: &str, uid: i64| -> UserRow {
            [
                SqlValue::Text(u.into()),
                SqlValue::Text(p.into()),
                SqlValue::Integer(uid),
                SqlValue::Text("0".into()),
                SqlValue::Text("".into()),
                SqlValue::Null,
                SqlValue::Text("".into()),
            ]
        };
        let out = format_list(&[row("foo", "bar", 1000)]);
        let expected = "1 rows found:\n\
            ------------------------------------------------------------------------\n\
            | username| password|  uid| gid| displays| env options| session options|\n\
            ------------------------------------------------------------------------\n\
            |      foo|      bar| 1000|   0|         |        None|                |\n";
        assert_eq!(out, expected);
    }
}
