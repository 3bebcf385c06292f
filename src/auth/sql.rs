//! `mysql,uri=URI` and `sql,uri=URI`: xpra's SQL user table (the one of
//! its `sqlite` module, [`super::sql_rows`]) in a database server, with
//! xpra 3.1's `mysql_auth.py` / `sql_auth.py` options: `uri`,
//! `password_query`, `sessions_query` (and xfwd's `timeout=SECONDS`,
//! default 5, for connecting and for each read and write).
//!
//! - `mysql`: `uri=mysql://USER:PASSWORD@HOST:PORT/DATABASE` (also
//!   `mariadb://`, `mysql+DRIVER://`, or no scheme at all, as xpra's own
//!   URI pattern allows). User and password are percent-decoded; the host
//!   defaults to `localhost`, the port to 3306 (xpra 3.1 ignores the port),
//!   the database to `xpra`. No query part (`?...`) is taken.
//! - `sql`: the URI's scheme picks the database, as SQLAlchemy's URIs do:
//!   `mysql://`, `mariadb://`, `mysql+DRIVER://` are the MySQL backend
//!   above; `sqlite:///RELATIVE/PATH` and `sqlite:////ABSOLUTE/PATH` are
//!   the [`super::sqlite`] module on that file; `postgresql://` and
//!   `postgres://` are the [`super::postgresql`] module; anything else is
//!   refused when xfwd starts.
//!
//! Placeholders: xpra's default queries for these modules are written with
//! `%s` (mysql-connector's paramstyle); custom queries may use `%s` or `?`
//! (each `%s` outside quoted text becomes `?`). The password query gets the
//! user name, the sessions query the user name and the stored password
//! that matched (as many of them as the query has placeholders).
//!
//! The MySQL client is a bounded connection pool (at most 4 connections,
//! none kept open at start): xfwd starts while the database is down, a
//! login fails while it is (the client is told "authentication failed",
//! the log says which server and why, never its password), and a pooled
//! connection is checked (`ping`) before reuse, so the first login after
//! the server is back works. (The pool opens connections one at a time:
//! against a server that does not answer, logins queue, each connect
//! bounded by the timeout, so the n-th waits at most n timeouts.) TLS:
//! MySQL's `ssl-mode` and `ssl-ca` URI parameters
//! ([`crate::transport::db_tls::MysqlTls`]: default `DISABLED`, or
//! `VERIFY_CA` when `ssl-ca` is given; `PREFERRED` refused).

use std::sync::Arc;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Value};

use super::authenticator::{AuthError, Authenticator, Sessions};
use super::spec::{AuthSpec, ModuleKind};
use super::sql_rows::{self, Cell};
use super::sqlite::SqliteAuth;

/// The default for connecting, reading and writing (`timeout=`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections one module keeps to its server.
pub const POOL_MAX: usize = 4;
/// MySQL's port.
pub const DEFAULT_PORT: u16 = 3306;
/// The database when the URI names none (xpra's default).
pub const DEFAULT_DATABASE: &str = "xpra";

/// Builds the module a `mysql` or `sql` spec describes.
pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    let uri = spec
        .option("uri")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad(spec, "needs uri=URI"))?;
    let timeout = match spec.option("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(t) => match t.trim().parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_secs(n),
            _ => {
                return Err(bad(
                    spec,
                    format!("timeout {t:?} is not a number of seconds"),
                ))
            }
        },
    };
    match Backend::of(spec.kind, uri).map_err(|m| bad(spec, m))? {
        Backend::Mysql => {
            let server = DbServer::parse(uri, DEFAULT_PORT).map_err(|m| bad(spec, m))?;
            Ok(Arc::new(MysqlAuth::new(spec, server, timeout)?))
        }
        Backend::Postgresql => {
            let server = DbServer::parse_postgresql(uri).map_err(|m| bad(spec, m))?;
            // unusable TLS settings (a missing sslrootcert) refused at start
            server
                .pg_tls
                .connector(&server.host)
                .map_err(|e| bad(spec, e.to_string()))?;
            Ok(Arc::new(super::postgresql::PostgresqlAuth::new(
                spec, server, timeout,
            )))
        }
        Backend::Sqlite(path) => {
            let query = |key: &str, default: &str| {
                spec.option(key)
                    .map_or_else(|| default.to_owned(), sql_rows::qmark)
            };
            Ok(Arc::new(SqliteAuth::with(
                super::authenticator::resolve_path(spec, &path),
                query("password_query", sql_rows::DEFAULT_PASSWORD_QUERY),
                query("sessions_query", sql_rows::DEFAULT_SESSIONS_QUERY),
                spec.prompt().to_owned(),
                spec.kind,
            )))
        }
    }
}

pub(crate) fn bad(spec: &AuthSpec, message: impl Into<String>) -> AuthError {
    AuthError::Spec(super::spec::AuthSpecError::BadValue {
        module: spec.kind.name(),
        message: message.into(),
    })
}

/// Which database a URI names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Mysql,
    Postgresql,
    /// The file (relative to the current directory unless absolute).
    Sqlite(String),
}

impl Backend {
    pub(crate) fn of(kind: ModuleKind, uri: &str) -> Result<Backend, String> {
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        // `mysql+mysqlconnector`, `sqlite+pysqlite`, ...: SQLAlchemy's dialect+driver
        let dialect = scheme
            .as_deref()
            .map(|s| s.split_once('+').map_or(s, |(d, _)| d));
        match (kind, dialect) {
            (ModuleKind::Postgresql, Some("postgresql" | "postgres")) => Ok(Backend::Postgresql),
            (ModuleKind::Postgresql, Some(s)) => Err(format!(
                "uri scheme {s:?} is not PostgreSQL's (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
            )),
            (ModuleKind::Postgresql, None) => Err(
                "uri has no scheme (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)".to_owned(),
            ),
            (_, Some("mysql" | "mariadb")) => Ok(Backend::Mysql),
            // xpra's mysql module takes `host/database` too
            (ModuleKind::Mysql, None) => Ok(Backend::Mysql),
            (ModuleKind::Mysql, Some(s)) => Err(format!(
                "uri scheme {s:?} is not MySQL's (mysql://USER:PASSWORD@HOST:PORT/DATABASE)"
            )),
            (_, Some("sqlite")) => sqlite_path(uri).map(Backend::Sqlite),
            (_, Some("postgresql" | "postgres")) => Ok(Backend::Postgresql),
            (_, Some(s)) => Err(format!(
                "unsupported database {s:?} in uri (mysql://, postgresql:// or sqlite:/// are)"
            )),
            (_, None) => Err(
                "uri has no scheme (mysql://..., postgresql://... or sqlite:///PATH)".to_owned(),
            ),
        }
    }
}

/// SQLAlchemy's `sqlite:///relative/path`, `sqlite:////absolute/path`.
fn sqlite_path(uri: &str) -> Result<String, String> {
    let rest = uri.split_once("://").map_or("", |(_, r)| r);
    if rest.is_empty() {
        return Err("sqlite uri names no file (an in-memory database has no users)".into());
    }
    let Some(path) = rest.strip_prefix('/') else {
        return Err("sqlite uri names a host: write sqlite:///PATH or sqlite:////ABSOLUTE".into());
    };
    if path.is_empty() {
        return Err("sqlite uri names no file (an in-memory database has no users)".into());
    }
    if path.contains('?') {
        return Err("sqlite uri: query parameters are not supported".into());
    }
    Ok(path.to_owned())
}

/// Where a database server (MySQL / MariaDB, PostgreSQL) is, and who logs
/// in (Debug and Display never show the password).
#[derive(Clone, PartialEq, Eq)]
pub struct DbServer {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    password: Option<String>,
    pub database: String,
    /// TLS to a PostgreSQL server (`?sslmode=...&sslrootcert=...`).
    pub pg_tls: crate::transport::db_tls::PgTls,
    /// TLS to a MySQL / MariaDB server (`?ssl-mode=...&ssl-ca=...`).
    pub mysql_tls: crate::transport::db_tls::MysqlTls,
}

/// The MySQL server of a `mysql` module.
pub type MysqlServer = DbServer;

impl std::fmt::Debug for DbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("pg_tls", &self.pg_tls)
            .field("mysql_tls", &self.mysql_tls)
            .finish()
    }
}

/// `HOST:PORT/DATABASE` (IPv6 hosts in brackets).
impl std::fmt::Display for DbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.database)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.database)
        }
    }
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("uri: the {what} is not UTF-8 once percent-decoded"))
}

impl DbServer {
    /// The login password (percent-decoded), if the URI has one.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Parses `[SCHEME://][USER[:PASSWORD]@]HOST[:PORT][/DATABASE]`
    /// (`default_port` when it names none; no scheme: `mysql://`).
    /// Error messages never quote the URI (it may hold a password).
    /// The query part takes MySQL's `ssl-mode` and `ssl-ca`
    /// ([`crate::transport::db_tls::MysqlTls`]).
    pub fn parse(uri: &str, default_port: u16) -> Result<DbServer, String> {
        let mut tls = crate::transport::db_tls::MysqlTls::default();
        let mut server = DbServer::parse_with(uri, default_port, |k, v| tls.take(k, v))?;
        tls.check().map_err(|e| format!("uri: ssl-ca: {e}"))?;
        server.mysql_tls = tls;
        Ok(server)
    }

    /// [`DbServer::parse`] for a PostgreSQL server: port 5432 by default,
    /// and libpq's `sslmode` and `sslrootcert` query parameters
    /// ([`crate::transport::db_tls`]; no others).
    pub fn parse_postgresql(uri: &str) -> Result<DbServer, String> {
        let mut tls = crate::transport::db_tls::PgTls::default();
        let mut server =
            DbServer::parse_with(uri, super::postgresql::DEFAULT_PORT, |k, v| tls.take(k, v))?;
        server.pg_tls = tls;
        Ok(server)
    }

    /// `take(key, value)` takes a query parameter (`Ok(false)`: not one it
    /// knows, refused).
    fn parse_with(
        uri: &str,
        default_port: u16,
        mut take: impl FnMut(&str, &str) -> Result<bool, String>,
    ) -> Result<DbServer, String> {
        let full = if uri.contains("://") {
            uri.to_owned()
        } else {
            format!("mysql://{uri}")
        };
        let url = url::Url::parse(&full).map_err(|e| format!("uri is not a URL: {e}"))?;
        if url.fragment().is_some() {
            return Err("uri: a fragment (#...) is not supported".into());
        }
        for (k, v) in url.query_pairs() {
            if !take(&k, &v).map_err(|e| format!("uri: {e}"))? {
                return Err(format!("uri: query parameter {k:?} is not supported"));
            }
        }
        let host = url.host_str().unwrap_or("");
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = match decode(host, "host")? {
            h if h.is_empty() => "localhost".to_owned(),
            h => h,
        };
        let user = match url.username() {
            "" => None,
            u => Some(decode(u, "user name")?),
        };
        let password = url.password().map(|p| decode(p, "password")).transpose()?;
        let path = url.path().trim_start_matches('/');
        if path.contains('/') {
            return Err("uri: the path must be one database name".into());
        }
        let database = match decode(path, "database name")? {
            d if d.is_empty() => DEFAULT_DATABASE.to_owned(),
            d => d,
        };
        Ok(DbServer {
            host,
            port: url.port().unwrap_or(default_port),
            user,
            password,
            database,
            pg_tls: Default::default(),
            mysql_tls: Default::default(),
        })
    }

    fn opts(&self, timeout: Duration) -> Result<Opts, String> {
        let constraints =
            PoolConstraints::new(0, POOL_MAX).ok_or_else(|| "bad pool constraints".to_owned())?;
        Ok(OptsBuilder::new()
            .ip_or_hostname(Some(self.host.clone()))
            .tcp_port(self.port)
            .user(self.user.clone())
            .pass(self.password.clone())
            .db_name(Some(self.database.clone()))
            // TCP to the host given, as mysql-connector does (not the
            // server's Unix socket when the host is local)
            .prefer_socket(false)
            .tcp_connect_timeout(Some(timeout))
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout))
            .ssl_opts(self.mysql_tls.ssl_opts())
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_check_health(true),
            )
            .into())
    }
}

/// The MySQL / MariaDB backend of `mysql` and `sql`.
pub struct MysqlAuth {
    server: MysqlServer,
    pool: Pool,
    timeout: Duration,
    password_query: String,
    sessions_query: String,
    prompt: String,
    kind: ModuleKind,
}

impl std::fmt::Debug for MysqlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlAuth")
            .field("server", &self.server)
            .field("kind", &self.kind)
            .field("password_query", &self.password_query)
            .field("sessions_query", &self.sessions_query)
            .finish()
    }
}

/// A query's result: its column names and rows.
struct Rows {
    names: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

fn cell(v: &Value) -> Cell {
    match v {
        Value::NULL => Cell::Null,
        Value::Bytes(b) => match String::from_utf8(b.clone()) {
            Ok(s) => Cell::Text(s),
            Err(_) => Cell::Bytes(b.clone()),
        },
        Value::Int(i) => Cell::Int(*i),
        Value::UInt(u) => i64::try_from(*u).map_or_else(|_| Cell::Text(u.to_string()), Cell::Int),
        Value::Float(f) => Cell::Real(f64::from(*f)),
        Value::Double(f) => Cell::Real(*f),
        // Python's str() of a datetime / timedelta, near enough
        Value::Date(y, m, d, h, mi, s, us) => {
            let mut t = format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}");
            if *us != 0 {
                t.push_str(&format!(".{us:06}"));
            }
            Cell::Text(t)
        }
        Value::Time(neg, days, h, mi, s, _) => {
            let sign = if *neg { "-" } else { "" };
            let hours = u64::from(*days) * 24 + u64::from(*h);
            Cell::Text(format!("{sign}{hours}:{mi:02}:{s:02}"))
        }
    }
}

fn value(c: &Cell) -> Value {
    match c {
        Cell::Null => Value::NULL,
        Cell::Int(i) => Value::Int(*i),
        Cell::Real(f) => Value::Double(*f),
        Cell::Text(t) => Value::Bytes(t.as_bytes().to_vec()),
        Cell::Bytes(b) => Value::Bytes(b.clone()),
    }
}

impl MysqlAuth {
    fn new(
        spec: &AuthSpec,
        server: MysqlServer,
        timeout: Duration,
    ) -> Result<MysqlAuth, AuthError> {
        let opts = server.opts(timeout).map_err(|m| bad(spec, m))?;
        // min 0 connections: this connects to nothing yet
        let pool = Pool::new(opts).map_err(|e| AuthError::Database {
            backend: "mysql",
            server: server.to_string(),
            message: e.to_string(),
        })?;
        let query = |key: &str, default: &str| sql_rows::qmark(spec.option(key).unwrap_or(default));
        Ok(MysqlAuth {
            server,
            pool,
            timeout,
            password_query: query("password_query", sql_rows::DEFAULT_PASSWORD_QUERY),
            sessions_query: query("sessions_query", sql_rows::DEFAULT_SESSIONS_QUERY),
            prompt: spec.prompt().to_owned(),
            kind: spec.kind,
        })
    }

    pub fn server(&self) -> &DbServer {
        &self.server
    }

    fn error(&self, e: mysql::Error) -> AuthError {
        AuthError::Database {
            backend: "mysql",
            server: self.server.to_string(),
            message: e.to_string(),
        }
    }

    /// Runs `sql` with the first of `params` it has placeholders for;
    /// at most `limit` rows are kept.
    fn query(&self, sql: &str, params: Vec<Value>, limit: usize) -> Result<Rows, AuthError> {
        let run = || -> Result<Rows, mysql::Error> {
            let mut conn = self.pool.try_get_conn(self.timeout)?;
            let stmt = conn.prep(sql)?;
            let names: Vec<String> = stmt
                .columns()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect();
            let params: Vec<Value> = params
                .into_iter()
                .take(usize::from(stmt.num_params()))
                .collect();
            let params = if params.is_empty() {
                Params::Empty
            } else {
                Params::Positional(params)
            };
            let mut rows = Vec::new();
            for row in conn.exec_iter(&stmt, params)? {
                let row = row?;
                if rows.len() < limit {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.as_ref(i).map_or(Cell::Null, cell))
                            .collect(),
                    );
                }
            }
            Ok(Rows { names, rows })
        };
        run().map_err(|e| self.error(e))
    }
}

impl sql_rows::UserTable for MysqlAuth {
    fn kind(&self) -> ModuleKind {
        self.kind
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    /// The first column of every row the password query returns.
    fn password_values(&self, username: &str) -> Result<Vec<Cell>, AuthError> {
        let rows = self.query(&self.password_query, vec![Value::from(username)], 1024)?;
        Ok(rows
            .rows
            .into_iter()
            .map(|r| r.into_iter().next().unwrap_or(Cell::Null))
            .collect())
    }
    fn session_row(&self, username: &str, stored: &Cell) -> Result<Option<Sessions>, AuthError> {
        let rows = self.query(
            &self.sessions_query,
            vec![Value::from(username), value(stored)],
            1,
        )?;
        Ok(rows
            .rows
            .first()
            .map(|row| sql_rows::sessions_from_row(&rows.names, row)))
    }
}

/// The table management of xpra's `mysql_auth.py` (create, add, remove,
/// list; `authenticate` through [`MysqlDb::authenticator`]), for
/// `xfwd auth mysql`. One connection per command, with the timeouts.
pub struct MysqlDb {
    uri: String,
    server: MysqlServer,
}

impl std::fmt::Debug for MysqlDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlDb")
            .field("server", &self.server)
            .finish()
    }
}

impl MysqlDb {
    /// The database a `mysql` module `uri` names.
    pub fn new(uri: &str) -> Result<MysqlDb, AuthError> {
        let spec = AuthSpec::of(ModuleKind::Mysql);
        match Backend::of(ModuleKind::Mysql, uri).map_err(|m| bad(&spec, m))? {
            Backend::Mysql => {}
            Backend::Sqlite(_) | Backend::Postgresql => return Err(bad(&spec, "not a MySQL uri")),
        }
        Ok(MysqlDb {
            uri: uri.to_owned(),
            server: DbServer::parse(uri, DEFAULT_PORT).map_err(|m| bad(&spec, m))?,
        })
    }

    pub fn server(&self) -> &DbServer {
        &self.server
    }

    fn error(&self, e: mysql::Error) -> AuthError {
        AuthError::Database {
            backend: "mysql",
            server: self.server.to_string(),
            message: e.to_string(),
        }
    }

    fn exec(&self, sql: &str, params: Vec<Value>) -> Result<u64, AuthError> {
        let spec = AuthSpec::of(ModuleKind::Mysql);
        let opts = self
            .server
            .opts(DEFAULT_TIMEOUT)
            .map_err(|m| bad(&spec, m))?;
        let run = || -> Result<u64, mysql::Error> {
            let mut conn = mysql::Conn::new(opts)?;
            let params = if params.is_empty() {
                Params::Empty
            } else {
                Params::Positional(params)
            };
            conn.exec_drop(sql, params)?;
            Ok(conn.affected_rows())
        };
        run().map_err(|e| self.error(e))
    }

    /// `create`: xpra's table.
    pub fn create(&self) -> Result<(), AuthError> {
        self.exec(sql_rows::CREATE_SQL, Vec::new()).map(|_| ())
    }

    /// `add username password [uid gid displays env_options session_options]`.
    pub fn add_user(&self, fields: &[&str]) -> Result<(), AuthError> {
        let values = sql_rows::new_user(fields)?.map(Value::from).to_vec();
        self.exec(sql_rows::INSERT_SQL, values).map(|_| ())
    }

    /// `remove username [password]`: the number of rows removed.
    pub fn remove_user(&self, username: &str, password: Option<&str>) -> Result<u64, AuthError> {
        match password.filter(|p| !p.is_empty()) {
            Some(p) => self.exec(
                sql_rows::DELETE_PASSWORD_SQL,
                vec![Value::from(username), Value::from(p)],
            ),
            None => self.exec(sql_rows::DELETE_SQL, vec![Value::from(username)]),
        }
    }

    /// Every row of the table.
    pub fn rows(&self) -> Result<Vec<[Cell; 7]>, AuthError> {
        let spec = AuthSpec::of(ModuleKind::Mysql);
        let opts = self
            .server
            .opts(DEFAULT_TIMEOUT)
            .map_err(|m| bad(&spec, m))?;
        let sql = format!("SELECT {} FROM users", sql_rows::COLUMNS.join(", "));
        let run = || -> Result<Vec<[Cell; 7]>, mysql::Error> {
            let mut conn = mysql::Conn::new(opts)?;
            let rows: Vec<mysql::Row> = conn.query(sql)?;
            Ok(rows
                .iter()
                .map(|r| std::array::from_fn(|i| r.as_ref(i).map_or(Cell::Null, cell)))
                .collect())
        };
        run().map_err(|e| self.error(e))
    }

    /// `list`: the text xpra's tool prints.
    pub fn list_text(&self) -> Result<String, AuthError> {
        Ok(sql_rows::format_list(&self.rows()?))
    }

    /// The `mysql` module on this database (for `authenticate`).
    pub fn authenticator(&self) -> Result<Arc<dyn Authenticator>, AuthError> {
        let mut spec = AuthSpec::of(ModuleKind::Mysql);
        spec.options.push(("uri".to_owned(), self.uri.clone()));
        build(&spec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::PeerInfo;

    fn server(uri: &str) -> MysqlServer {
        DbServer::parse(uri, DEFAULT_PORT).unwrap()
    }

    #[test]
    fn uris() {
        let s = server("mysql://xpra:s%40cr%3At@db.example:3307/auth");
        assert_eq!(s.host, "db.example");
        assert_eq!(s.port, 3307);
        assert_eq!(s.user.as_deref(), Some("xpra"));
        assert_eq!(s.password.as_deref(), Some("s@cr:t"));
        assert_eq!(s.database, "auth");
        assert_eq!(s.to_string(), "db.example:3307/auth");
        let d = format!("{s:?}");
        assert!(!d.contains("s@cr") && !d.contains("%40"), "{d}");

        let s = server("mysql://u:pw@h/db?ssl-mode=REQUIRED");
        assert!(s.mysql_tls.ssl_opts().is_some());
        let s = server("mysql://localhost");
        assert_eq!((s.host.as_str(), s.port), ("localhost", 3306));
        assert_eq!(
            (s.user, s.password, s.database.as_str()),
            (None, None, "xpra")
        );
        let s = server("mariadb://u@[::1]:3310/");
        assert_eq!((s.host.as_str(), s.port), ("::1", 3310));
        assert_eq!(s.to_string(), "[::1]:3310/xpra");
        assert_eq!(s.password, None);
        // an empty password is no password
        assert_eq!(server("mysql://u:@h/x").password, None);
        let s = server("mysql:///x");
        assert_eq!((s.host.as_str(), s.database.as_str()), ("localhost", "x"));
        // xpra's pattern: no scheme
        let s = server("root:pw@10.0.0.1/users");
        assert_eq!(
            (s.host.as_str(), s.database.as_str()),
            ("10.0.0.1", "users")
        );
        assert_eq!(s.password.as_deref(), Some("pw"));

        for bad in [
            "mysql://u:pw@h/db?ssl-mode=PREFERRED",
            "mysql://u:pw@h/db?sslmode=require",
            "mysql://u:pw@h/db?ssl-mode=VERIFY_CA&ssl-ca=/nonexistent/ca.pem",
            "mysql://u:pw@h/a/b",
            "mysql://u:pw@h:99999/db",
            "mysql://u:pw@h:port/db",
        ] {
            let e = DbServer::parse(bad, DEFAULT_PORT).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn dispatch() {
        use Backend::*;
        let of = |k, u| Backend::of(k, u);
        assert_eq!(of(ModuleKind::Mysql, "mysql://h/x"), Ok(Mysql));
        assert_eq!(of(ModuleKind::Mysql, "h/x"), Ok(Mysql));
        assert_eq!(of(ModuleKind::Sql, "mysql+mysqlconnector://h/x"), Ok(Mysql));
        assert_eq!(of(ModuleKind::Sql, "MariaDB://h/x"), Ok(Mysql));
        assert_eq!(
            of(ModuleKind::Sql, "sqlite:////tmp/a.sdb"),
            Ok(Sqlite("/tmp/a.sdb".into()))
        );
        assert_eq!(
            of(ModuleKind::Sql, "sqlite+pysqlite:///a.sdb"),
            Ok(Sqlite("a.sdb".into()))
        );
        assert!(of(ModuleKind::Sql, "sqlite://").is_err());
        assert!(of(ModuleKind::Sql, "sqlite://host/a.sdb").is_err());
        assert!(of(ModuleKind::Mysql, "sqlite:///a.sdb").is_err());
        assert_eq!(of(ModuleKind::Sql, "postgresql://u:pw@h/x"), Ok(Postgresql));
        assert_eq!(of(ModuleKind::Sql, "postgres://h/x"), Ok(Postgresql));
        assert_eq!(
            of(ModuleKind::Postgresql, "PostgreSQL://h/x"),
            Ok(Postgresql)
        );
        assert!(of(ModuleKind::Postgresql, "mysql://h/x").is_err());
        assert!(of(ModuleKind::Postgresql, "sqlite:///a.sdb").is_err());
        assert!(of(ModuleKind::Postgresql, "h/x").is_err());
        assert!(of(ModuleKind::Mysql, "postgresql://h/x").is_err());
        assert!(of(ModuleKind::Sql, "oracle://h/x").is_err());
        assert!(of(ModuleKind::Sql, "h/x").is_err());
    }

    #[test]
    fn built_at_startup_without_a_server() {
        // nothing listens there: building connects to nothing
        let spec = AuthSpec::parse("mysql,uri=mysql://u:pw@127.0.0.1:9/xpra,timeout=2").unwrap();
        let a = build(&spec).unwrap();
        assert_eq!(a.kind(), ModuleKind::Mysql);
        assert!(!format!("{a:?}").contains("pw"));
        let e = a
            .lookup("foo", &PeerInfo::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("127.0.0.1:9/xpra"), "{e}");
        assert!(!e.contains("pw@"), "{e}");

        let spec = AuthSpec::parse("sql,uri=sqlite:////nonexistent/x.sdb").unwrap();
        let a = build(&spec).unwrap();
        assert_eq!(a.kind(), ModuleKind::Sql);
        assert!(a.lookup("foo", &PeerInfo::default()).is_err());

        for bad in [
            "sql,uri=nope://h/x",
            "mysql,uri=mysql://h/x,timeout=0",
            "mysql,uri=mysql://h/x,timeout=soon",
        ] {
            assert!(
                AuthSpec::parse(bad).is_err() || build(&AuthSpec::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        // accepts the connection, never sends MySQL's greeting
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spec = AuthSpec::parse(&format!(
            "mysql,uri=mysql://u:pw@127.0.0.1:{port}/xpra,timeout=1"
        ))
        .unwrap();
        let a = build(&spec).unwrap();
        let e = a
            .lookup("foo", &PeerInfo::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("127.0.0.1:{port}/xpra")), "{e}");
        drop(listener);
    }

    #[test]
    fn mysql_values() {
        assert_eq!(
            cell(&Value::Bytes(b"abc".to_vec())),
            Cell::Text("abc".into())
        );
        assert_eq!(cell(&Value::Bytes(vec![0xff])), Cell::Bytes(vec![0xff]));
        assert_eq!(cell(&Value::UInt(5)), Cell::Int(5));
        assert_eq!(cell(&Value::NULL), Cell::Null);
        assert_eq!(
            cell(&Value::Date(2026, 1, 2, 3, 4, 5, 0)),
            Cell::Text("2026-01-02 03:04:05".into())
        );
        assert_eq!(
            value(&Cell::Text("pw".into())),
            Value::Bytes(b"pw".to_vec())
        );
    }
}
