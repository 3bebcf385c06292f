//! `postgresql,uri=URI` (also `postgres`, and `sql,uri=postgresql://...`):
//! xpra's SQL user table (the one of its `sqlite` module,
//! [`super::sql_rows`]) in a PostgreSQL database, with the options of the
//! `mysql` module: `uri`, `password_query`, `sessions_query`,
//! `timeout=SECONDS` (default 5).
//!
//! - `uri=postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (or
//!   `postgres://`, `postgresql+DRIVER://`). User and password are
//!   percent-decoded; the host defaults to `localhost` (a percent-encoded
//!   absolute path, `%2Frun%2Fpostgresql`, is the directory of the
//!   server's Unix socket), the port to 5432, the database to `xpra`. The
//!   query part takes libpq's `sslmode` (default `prefer`) and
//!   `sslrootcert` ([`crate::transport::db_tls`] has the semantics), no
//!   other parameter.
//! - Queries: xpra's defaults; custom ones may write their parameters as
//!   `?`, `%s` (xpra's) or `$1`, `$2` (PostgreSQL's): each `?` and `%s`
//!   outside quoted text and comments becomes the next `$n`
//!   ([`sql_rows::numbered`]). The password query gets the user name, the
//!   sessions query the user name and the stored password that matched.
//!   Parameters are sent as the types the server infers for them (text,
//!   integers, bytea); result columns may be text, integers, floats,
//!   booleans or bytea (cast others in the query: `col::text`).
//!
//! Connections: a bounded pool (at most [`POOL_MAX`], none opened at start,
//! so xfwd starts while the database is down). A pooled connection whose
//! server closed it is dropped before reuse; a query that finds its
//! connection gone is retried once on a new one. Connecting (TCP and the
//! whole startup and authentication exchange) and every query are bounded
//! by `timeout` on this side, and the server is told the same
//! `statement_timeout`.
//!
//! Connection loss: a login fails ("authentication failed" to the client,
//! a warning naming `HOST:PORT/DATABASE`, never the password); nothing else
//! uses the database, so established xpra connections go on. After a failed
//! connect, the next attempt waits for a backoff ([`Backoff`]: 0.5 s,
//! doubling to 10 s, reset by a success): logins that arrive meanwhile
//! fail at once ("database unavailable (retrying in N s)") instead of each
//! waiting a connect timeout, and while one attempt is under way the
//! others do not pile onto it.
//!
//! The client is rust-postgres' async one (tokio-postgres) on one thread of
//! its own, shared by every `postgresql` module and the `xfwd auth
//! postgresql` tool; callers (the auth chain, on the blocking pool) wait
//! for its answers, each bounded by the timeout.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use crate::transport::db_tls::Connector;

use super::authenticator::{AuthError, Authenticator, Sessions};
use super::spec::{AuthSpec, ModuleKind};
use super::sql::{bad, Backend, DbServer, DEFAULT_TIMEOUT};
use super::sql_rows::{self, Cell};

/// PostgreSQL's port.
pub const DEFAULT_PORT: u16 = 5432;
/// The most connections one module keeps to its server.
pub const POOL_MAX: usize = 4;
/// The first wait after a failed connect.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between connect attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The most rows of a password query read (the rest are not kept).
const PASSWORD_ROWS: usize = 1024;

const BACKEND: &str = "postgresql";

/// When connecting may be tried again: sans-IO (the caller passes the
/// time), for the pool's reconnect backoff.
///
/// Healthy (no failure since the last success): every caller may connect.
/// After a failure: nobody until `delay` has passed (the delay starts at
/// `min`, doubles with each failed retry, at most `max`); then one caller
/// (the probe) connects while the others are still turned away; its
/// success makes it healthy again, its failure waits the next delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The wait the next failure arms.
    next: Duration,
    /// Failing: no connect before this.
    until: Option<Instant>,
    /// A probe is under way.
    probing: bool,
}

/// Why a connect may not be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The backoff runs for this long still.
    RetryIn(Duration),
    /// Another caller is trying right now.
    Retrying,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::RetryIn(d) => write!(
                f,
                "database unavailable (retrying in {:.1} s)",
                // never "0.0": round up to the tenth
                (d.as_millis().div_ceil(100) as f64) / 10.0
            ),
            Unavailable::Retrying => f.write_str("database unavailable (retrying now)"),
        }
    }
}

/// A connect attempt that [`Backoff::begin`] allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Attempt {
    probe: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            until: None,
            probing: false,
        }
    }

    /// Whether the last attempt failed (and no success came since).
    pub fn failing(&self) -> bool {
        self.until.is_some()
    }

    /// May a connect be tried at `now`?
    pub fn begin(&mut self, now: Instant) -> Result<Attempt, Unavailable> {
        match self.until {
            None => Ok(Attempt { probe: false }),
            Some(t) if now < t => Err(Unavailable::RetryIn(t - now)),
            Some(_) if self.probing => Err(Unavailable::Retrying),
            Some(_) => {
                self.probing = true;
                Ok(Attempt { probe: true })
            }
        }
    }

    /// The attempt connected.
    pub fn succeeded(&mut self, _attempt: Attempt) {
        self.next = self.min;
        self.until = None;
        self.probing = false;
    }

    /// The attempt failed at `now`: the wait armed (`None` when another
    /// attempt, started while healthy, armed it already).
    pub fn failed(&mut self, now: Instant, attempt: Attempt) -> Option<Duration> {
        if !attempt.probe && self.until.is_some() {
            return None;
        }
        self.probing = false;
        let wait = self.next;
        self.until = Some(now + wait);
        self.next = (wait * 2).min(self.max);
        Some(wait)
    }
}

/// The thread the client runs on (started on first use, for the life of
/// the process).
fn runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static RT: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the postgresql client: {e}"))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("xfwd-postgresql".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("cannot start the postgresql client thread: {e}"))?;
        Ok(handle)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Runs `fut` on the client's thread and waits for its output (`fut`
/// bounds itself).
fn block<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Result<T, String> {
    let handle = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| "the postgresql client thread is gone".to_owned())
}

/// What went wrong with a query.
#[derive(Debug)]
enum Failure {
    Pg(tokio_postgres::Error),
    Timeout(Duration),
    /// A parameter or column of a type this module does not convert.
    Type(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Pg(e) => match e.as_db_error() {
                // the server's message (and its hint), not just "db error"
                Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
                None => write!(f, "{e}"),
            },
            Failure::Timeout(t) => write!(f, "no answer within {} s", t.as_secs_f64()),
            Failure::Type(m) => f.write_str(m),
        }
    }
}

/// A query's result: its column names and (at most `limit`) rows.
#[derive(Debug, Default)]
struct Rows {
    names: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

fn is_text(t: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(t)
}

/// A value for a parameter of type `t`.
fn param(i: usize, t: &Type, v: &Cell) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    let text = || match v {
        Cell::Bytes(b) => super::authenticator::bytes_to_string(b),
        other => other.text(),
    };
    let int = |what: &str| -> Result<i64, String> {
        let s = text();
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("parameter ${} is {what}: the value is not a number", i + 1))
    };
    let range = |_| format!("parameter ${} is out of range", i + 1);
    Ok(match t {
        t if is_text(t) => Box::new(text()),
        &Type::BYTEA => Box::new(match v {
            Cell::Bytes(b) => b.clone(),
            other => other.text().into_bytes(),
        }),
        &Type::INT2 => Box::new(i16::try_from(int("smallint")?).map_err(range)?),
        &Type::INT4 => Box::new(i32::try_from(int("integer")?).map_err(range)?),
        &Type::INT8 => Box::new(int("bigint")?),
        other => {
            return Err(format!(
                "parameter ${} has type {other}: cast it in the query (${}::text)",
                i + 1,
                i + 1
            ))
        }
    })
}

/// The value of column `i` of `row`.
fn cell(row: &Row, i: usize) -> Result<Cell, String> {
    let col = &row.columns()[i];
    let t = col.type_();
    let get_err = |e: tokio_postgres::Error| format!("column {}: {e}", col.name());
    fn or_null<T>(v: Option<T>, f: impl FnOnce(T) -> Cell) -> Cell {
        v.map_or(Cell::Null, f)
    }
    Ok(match t {
        t if is_text(t) => or_null(
            row.try_get::<_, Option<String>>(i).map_err(get_err)?,
            Cell::Text,
        ),
        &Type::INT2 => or_null(row.try_get::<_, Option<i16>>(i).map_err(get_err)?, |v| {
            Cell::Int(v.into())
        }),
        &Type::INT4 => or_null(row.try_get::<_, Option<i32>>(i).map_err(get_err)?, |v| {
            Cell::Int(v.into())
        }),
        &Type::INT8 => or_null(
            row.try_get::<_, Option<i64>>(i).map_err(get_err)?,
            Cell::Int,
        ),
        &Type::OID => or_null(row.try_get::<_, Option<u32>>(i).map_err(get_err)?, |v| {
            Cell::Int(v.into())
        }),
        &Type::FLOAT4 => or_null(row.try_get::<_, Option<f32>>(i).map_err(get_err)?, |v| {
            Cell::Real(v.into())
        }),
        &Type::FLOAT8 => or_null(
            row.try_get::<_, Option<f64>>(i).map_err(get_err)?,
            Cell::Real,
        ),
        // Python's str() of a bool
        &Type::BOOL => or_null(row.try_get::<_, Option<bool>>(i).map_err(get_err)?, |v| {
            Cell::Text(if v { "True" } else { "False" }.to_owned())
        }),
        &Type::BYTEA => or_null(
            row.try_get::<_, Option<Vec<u8>>>(i).map_err(get_err)?,
            Cell::Bytes,
        ),
        other => {
            return Err(format!(
                "column {} has type {other}: cast it in the query ({}::text)",
                col.name(),
                col.name()
            ))
        }
    })
}

/// Prepares `sql`, runs it with the first of `params` it has parameters
/// for, keeps at most `limit` rows; all within `timeout`.
async fn run_query(
    client: Arc<Client>,
    sql: String,
    params: Vec<Cell>,
    limit: usize,
    timeout: Duration,
) -> Result<Rows, Failure> {
    let work = async {
        let stmt = client.prepare(&sql).await.map_err(Failure::Pg)?;
        let names: Vec<String> = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
        let types = stmt.params();
        if types.len() > params.len() {
            return Err(Failure::Type(format!(
                "the query has {} parameters, it is given {}",
                types.len(),
                params.len()
            )));
        }
        let values = types
            .iter()
            .zip(&params)
            .enumerate()
            .map(|(i, (t, v))| param(i, t, v))
            .collect::<Result<Vec<_>, String>>()
            .map_err(Failure::Type)?;
        let stream = client
            .query_raw(
                &stmt,
                values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
            )
            .await
            .map_err(Failure::Pg)?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await {
            let row = row.map_err(Failure::Pg)?;
            if rows.len() < limit {
                rows.push(
                    (0..row.len())
                        .map(|i| cell(&row, i))
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(Failure::Type)?,
                );
            }
        }
        Ok(Rows { names, rows })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Failure::Timeout(timeout))?
}

/// Runs statements that return no rows (the tool's), within `timeout`:
/// the rows each changed.
async fn run_execute(
    client: Arc<Client>,
    sql: String,
    params: Vec<Cell>,
    timeout: Duration,
) -> Result<u64, Failure> {
    let work = async {
        let stmt = client.prepare(&sql).await.map_err(Failure::Pg)?;
        let values = stmt
            .params()
            .iter()
            .zip(&params)
            .enumerate()
            .map(|(i, (t, v))| param(i, t, v))
            .collect::<Result<Vec<_>, String>>()
            .map_err(Failure::Type)?;
        client
            .execute_raw(
                &stmt,
                values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
            )
            .await
            .map_err(Failure::Pg)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Failure::Timeout(timeout))?
}

/// How xfwd connects to a server.
fn config(
    server: &DbServer,
    timeout: Duration,
    ssl_mode: tokio_postgres::config::SslMode,
) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(&server.host)
        .port(server.port)
        .dbname(&server.database)
        .application_name("xfwd")
        .ssl_mode(ssl_mode)
        .connect_timeout(timeout)
        .tcp_user_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(timeout.max(Duration::from_secs(1)))
        .options(format!("-c statement_timeout={}", timeout.as_millis()));
    if let Some(u) = &server.user {
        c.user(u);
    }
    if let Some(p) = server.password() {
        c.password(p);
    }
    c
}

/// A connection: its client, and the task (on the client's thread) that
/// drives its socket, ended when the connection is dropped (so a
/// connection given up on, a query that timed out on it, closes at once).
struct Conn {
    client: Arc<Client>,
    task: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects (the whole exchange within `timeout`).
async fn connect(
    config: tokio_postgres::Config,
    tls: Connector,
    timeout: Duration,
) -> Result<Conn, Failure> {
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tls))
        .await
        .map_err(|_| Failure::Timeout(timeout))?
        .map_err(Failure::Pg)?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(target: "xfwd::auth", "postgresql connection closed: {e}");
        }
    })
    .abort_handle();
    Ok(Conn {
        client: Arc::new(client),
        task,
    })
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections open or being opened, idle or lent.
    open: usize,
    backoff: Backoff,
}

/// A bounded pool of connections to one server.
struct Pool {
    server: DbServer,
    config: tokio_postgres::Config,
    /// The TLS connector (or why the TLS settings are unusable: a
    /// missing `sslrootcert`).
    tls: Result<Connector, String>,
    timeout: Duration,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

/// A connection lent by the pool: [`Pool::give_back`] it.
struct Lease {
    conn: Conn,
    /// It was in the pool (and may have died there).
    reused: bool,
}

impl Pool {
    fn new(server: DbServer, timeout: Duration, max: usize, backoff: Backoff) -> Pool {
        let (ssl_mode, tls) = match server.pg_tls.connector(&server.host) {
            Ok((m, c)) => (m, Ok(c)),
            Err(e) => (tokio_postgres::config::SslMode::Require, Err(e.to_string())),
        };
        Pool {
            config: config(&server, timeout, ssl_mode),
            tls,
            server,
            timeout,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                backoff,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, message: impl Into<String>) -> AuthError {
        AuthError::Database {
            backend: BACKEND,
            server: self.server.to_string(),
            message: message.into(),
        }
    }

    /// A connection: an idle one, a new one, or (all `max` lent) the first
    /// given back within the timeout.
    fn get(&self) -> Result<Lease, AuthError> {
        let deadline = Instant::now() + self.timeout;
        let mut state = self.lock();
        loop {
            while let Some(conn) = state.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok(Lease { conn, reused: true });
                }
                state.open -= 1;
            }
            if state.open < self.max {
                let attempt = state
                    .backoff
                    .begin(Instant::now())
                    .map_err(|u| self.error(u.to_string()))?;
                state.open += 1;
                drop(state);
                return self.open(attempt);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.error(format!(
                    "all {} connections busy for {} s",
                    self.max,
                    self.timeout.as_secs_f64()
                )));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Opens a connection (counted in `open` already).
    fn open(&self, attempt: Attempt) -> Result<Lease, AuthError> {
        let result = match &self.tls {
            Ok(tls) => block(connect(self.config.clone(), tls.clone(), self.timeout)),
            Err(e) => Err(format!("TLS settings: {e}")),
        };
        let mut state = self.lock();
        match result {
            Ok(Ok(conn)) => {
                if state.backoff.failing() {
                    tracing::info!(
                        target: "xfwd::auth",
                        "postgresql server {} answers again", self.server
                    );
                }
                state.backoff.succeeded(attempt);
                Ok(Lease {
                    conn,
                    reused: false,
                })
            }
            Ok(Err(e)) => {
                state.open -= 1;
                let wait = state.backoff.failed(Instant::now(), attempt);
                drop(state);
                self.freed.notify_one();
                let next = wait.map_or_else(String::new, |w| {
                    format!("; next attempt in {:.1} s", w.as_secs_f64())
                });
                tracing::warn!(
                    target: "xfwd::auth",
                    "postgresql server {}: cannot connect: {e}; logins fail until it answers{next}",
                    self.server
                );
                Err(self.error(format!("cannot connect: {e}")))
            }
            Err(e) => {
                state.open -= 1;
                let _ = state.backoff.failed(Instant::now(), attempt);
                drop(state);
                self.freed.notify_one();
                Err(self.error(e))
            }
        }
    }

    /// Takes a lent connection back (`broken`: drop it instead).
    fn give_back(&self, lease: Lease, broken: bool) {
        let mut state = self.lock();
        let dropped = if broken || lease.conn.client.is_closed() {
            state.open -= 1;
            Some(lease.conn)
        } else {
            state.idle.push(lease.conn);
            None
        };
        drop(state);
        drop(dropped);
        self.freed.notify_one();
    }

    /// Runs `op` on a connection; a reused one found closed is replaced
    /// once.
    fn with<T: Send + 'static, F>(&self, op: impl Fn(Arc<Client>) -> F) -> Result<T, AuthError>
    where
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let mut retried = false;
        loop {
            let lease = self.get()?;
            let result = block(op(lease.conn.client.clone()));
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    self.give_back(lease, true);
                    return Err(self.error(e));
                }
            };
            let broken = match &result {
                Ok(_) | Err(Failure::Type(_)) => false,
                // a server error leaves the connection usable
                Err(Failure::Pg(e)) => e.as_db_error().is_none() || lease.conn.client.is_closed(),
                // the query may still run there
                Err(Failure::Timeout(_)) => true,
            };
            let stale =
                broken && lease.reused && !retried && !matches!(result, Err(Failure::Timeout(_)));
            self.give_back(lease, broken);
            match result {
                Ok(v) => return Ok(v),
                Err(_) if stale => retried = true,
                Err(e) => return Err(self.error(e.to_string())),
            }
        }
    }

    fn query(&self, sql: &str, params: Vec<Cell>, limit: usize) -> Result<Rows, AuthError> {
        let timeout = self.timeout;
        self.with(|client| run_query(client, sql.to_owned(), params.clone(), limit, timeout))
    }

    fn execute(&self, sql: &str, params: Vec<Cell>) -> Result<u64, AuthError> {
        let timeout = self.timeout;
        self.with(|client| run_execute(client, sql.to_owned(), params.clone(), timeout))
    }
}

/// The `postgresql` module (and `sql` with a PostgreSQL URI).
pub struct PostgresqlAuth {
    pool: Pool,
    password_query: String,
    sessions_query: String,
    prompt: String,
    kind: ModuleKind,
}

impl std::fmt::Debug for PostgresqlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresqlAuth")
            .field("server", &self.pool.server)
            .field("kind", &self.kind)
            .field("password_query", &self.password_query)
            .field("sessions_query", &self.sessions_query)
            .finish()
    }
}

impl PostgresqlAuth {
    /// Connects to nothing yet.
    pub(crate) fn new(spec: &AuthSpec, server: DbServer, timeout: Duration) -> PostgresqlAuth {
        let query =
            |key: &str, default: &str| sql_rows::numbered(spec.option(key).unwrap_or(default));
        PostgresqlAuth {
            pool: Pool::new(server, timeout, POOL_MAX, Backoff::default()),
            password_query: query("password_query", sql_rows::DEFAULT_PASSWORD_QUERY),
            sessions_query: query("sessions_query", sql_rows::DEFAULT_SESSIONS_QUERY),
            prompt: spec.prompt().to_owned(),
            kind: spec.kind,
        }
    }

    pub fn server(&self) -> &DbServer {
        &self.pool.server
    }
}

impl sql_rows::UserTable for PostgresqlAuth {
    fn kind(&self) -> ModuleKind {
        self.kind
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    /// The first column of every row the password query returns.
    fn password_values(&self, username: &str) -> Result<Vec<Cell>, AuthError> {
        let rows = self.pool.query(
            &self.password_query,
            vec![Cell::Text(username.to_owned())],
            PASSWORD_ROWS,
        )?;
        Ok(rows
            .rows
            .into_iter()
            .map(|r| r.into_iter().next().unwrap_or(Cell::Null))
            .collect())
    }
    fn session_row(&self, username: &str, stored: &Cell) -> Result<Option<Sessions>, AuthError> {
        let rows = self.pool.query(
            &self.sessions_query,
            vec![Cell::Text(username.to_owned()), stored.clone()],
            1,
        )?;
        Ok(rows
            .rows
            .first()
            .map(|row| sql_rows::sessions_from_row(&rows.names, row)))
    }
}

/// The table management of xpra's SQL tools (create, add, remove, list;
/// `authenticate` through [`PostgresqlDb::authenticator`]) on a PostgreSQL
/// database, for `xfwd auth postgresql`. One connection, the default
/// timeout.
pub struct PostgresqlDb {
    uri: String,
    pool: Pool,
}

impl std::fmt::Debug for PostgresqlDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresqlDb")
            .field("server", &self.pool.server)
            .finish()
    }
}

impl PostgresqlDb {
    /// The database a `postgresql` module `uri` names.
    pub fn new(uri: &str) -> Result<PostgresqlDb, AuthError> {
        let spec = AuthSpec::of(ModuleKind::Postgresql);
        match Backend::of(ModuleKind::Postgresql, uri.trim()).map_err(|m| bad(&spec, m))? {
            Backend::Postgresql => {}
            Backend::Mysql | Backend::Sqlite(_) => return Err(bad(&spec, "not a PostgreSQL uri")),
        }
        let server = DbServer::parse_postgresql(uri.trim()).map_err(|m| bad(&spec, m))?;
        server
            .pg_tls
            .connector(&server.host)
            .map_err(|e| bad(&spec, e.to_string()))?;
        Ok(PostgresqlDb {
            uri: uri.trim().to_owned(),
            pool: Pool::new(server, DEFAULT_TIMEOUT, 1, Backoff::default()),
        })
    }

    pub fn server(&self) -> &DbServer {
        &self.pool.server
    }

    /// `create`: xpra's table.
    pub fn create(&self) -> Result<(), AuthError> {
        self.pool
            .execute(sql_rows::CREATE_SQL, Vec::new())
            .map(|_| ())
    }

    /// `add username password [uid gid displays env_options session_options]`.
    pub fn add_user(&self, fields: &[&str]) -> Result<(), AuthError> {
        let values = sql_rows::new_user(fields)?.map(Cell::Text).to_vec();
        self.pool
            .execute(&sql_rows::numbered(sql_rows::INSERT_SQL), values)
            .map(|_| ())
    }

    /// `remove username [password]`: the number of rows removed.
    pub fn remove_user(&self, username: &str, password: Option<&str>) -> Result<u64, AuthError> {
        let user = Cell::Text(username.to_owned());
        match password.filter(|p| !p.is_empty()) {
            Some(p) => self.pool.execute(
                &sql_rows::numbered(sql_rows::DELETE_PASSWORD_SQL),
                vec![user, Cell::Text(p.to_owned())],
            ),
            None => self
                .pool
                .execute(&sql_rows::numbered(sql_rows::DELETE_SQL), vec![user]),
        }
    }

    /// Every row of the table (at most a million).
    pub fn rows(&self) -> Result<Vec<[Cell; 7]>, AuthError> {
        let sql = format!("SELECT {} FROM users", sql_rows::COLUMNS.join(", "));
        let rows = self.pool.query(&sql, Vec::new(), 1_000_000)?;
        Ok(rows
            .rows
            .into_iter()
            .map(|r| std::array::from_fn(|i| r.get(i).cloned().unwrap_or(Cell::Null)))
            .collect())
    }

    /// `list`: the text xpra's tool prints.
    pub fn list_text(&self) -> Result<String, AuthError> {
        Ok(sql_rows::format_list(&self.rows()?))
    }

    /// The `postgresql` module on this database (for `authenticate`).
    pub fn authenticator(&self) -> Result<Arc<dyn Authenticator>, AuthError> {
        let mut spec = AuthSpec::of(ModuleKind::Postgresql);
        spec.options.push(("uri".to_owned(), self.uri.clone()));
        super::sql::build(&spec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::PeerInfo;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn backoff_waits_doubling_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        // healthy: everyone may connect
        let a = b.begin(t0).unwrap();
        let c = b.begin(t0).unwrap();
        assert!(!b.failing());
        // the first failure arms 0.5 s; a concurrent one does not add to it
        assert_eq!(b.failed(at(t0, 100), a), Some(Duration::from_millis(500)));
        assert_eq!(b.failed(at(t0, 200), c), None);
        assert!(b.failing());
        assert_eq!(
            b.begin(at(t0, 300)),
            Err(Unavailable::RetryIn(Duration::from_millis(300)))
        );
        // its end: one probe, the others still turned away
        let p = b.begin(at(t0, 600)).unwrap();
        assert_eq!(b.begin(at(t0, 601)), Err(Unavailable::Retrying));
        // failed again: 1 s, then 2, 4, 8, 10, 10
        let mut now = at(t0, 700);
        assert_eq!(b.failed(now, p), Some(Duration::from_secs(1)));
        for want in [2, 4, 8, 10, 10] {
            assert!(b.begin(now + Duration::from_millis(999)).is_err());
            now += Duration::from_secs(11);
            let p = b.begin(now).unwrap();
            assert_eq!(b.failed(now, p), Some(Duration::from_secs(want)));
        }
        // a success resets it
        now += Duration::from_secs(11);
        let p = b.begin(now).unwrap();
        b.succeeded(p);
        assert!(!b.failing());
        assert!(b.begin(now).is_ok());
        let a = b.begin(now).unwrap();
        assert_eq!(b.failed(now, a), Some(Duration::from_millis(500)));
    }

    #[test]
    fn unavailable_messages() {
        assert_eq!(
            Unavailable::RetryIn(Duration::from_millis(1234)).to_string(),
            "database unavailable (retrying in 1.3 s)"
        );
        assert_eq!(
            Unavailable::RetryIn(Duration::from_millis(1)).to_string(),
            "database unavailable (retrying in 0.1 s)"
        );
        assert_eq!(
            Unavailable::Retrying.to_string(),
            "database unavailable (retrying now)"
        );
    }

    #[test]
    fn uris_and_specs() {
        let s =
            DbServer::parse("postgresql://xfwd:s%40cr%3At@db.example/auth", DEFAULT_PORT).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("db.example", 5432));
        assert_eq!(s.password(), Some("s@cr:t"));
        assert_eq!(s.to_string(), "db.example:5432/auth");
        // the directory of a Unix socket, percent-encoded
        let s =
            DbServer::parse("postgresql://xfwd@%2Frun%2Fpostgresql/xpra", DEFAULT_PORT).unwrap();
        assert_eq!(s.host, "/run/postgresql");
        assert_eq!(s.to_string(), "/run/postgresql:5432/xpra");
        let spec = AuthSpec::parse("postgres,uri=postgres://u:pw@127.0.0.1:9/xpra").unwrap();
        assert_eq!(spec.kind, ModuleKind::Postgresql);
        assert!(!format!("{spec:?}").contains("pw"));
        for bad in [
            "postgresql",
            "postgresql,uri=",
            "postgresql,uri=postgresql://h/x,timeout=0",
            "postgresql,uri=postgresql://h/x,timeout=soon",
        ] {
            assert!(AuthSpec::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "postgresql,uri=mysql://h/x",
            "postgresql,uri=postgresql://u:pw@h/x?sslmode=allow",
            "postgresql,uri=postgresql://u:pw@h/x?sslmode=VERIFY",
            "postgresql,uri=postgresql://u:pw@h/x?connect_timeout=3",
            "postgresql,uri=postgresql://u:pw@h/x?sslmode=verify-ca&sslrootcert=/nonexistent.pem",
            "postgresql,uri=h/x",
        ] {
            let e = super::super::sql::build(&AuthSpec::parse(bad).unwrap()).unwrap_err();
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert!(PostgresqlDb::new("mysql://h/x").is_err());
        assert!(PostgresqlDb::new("postgresql://u:pw@h/x").is_ok());
        let s = DbServer::parse_postgresql("postgresql://u:pw@h/x?sslmode=require").unwrap();
        assert_eq!(s.pg_tls.mode, crate::transport::db_tls::SslMode::Require);
        assert!(super::super::sql::build(
            &AuthSpec::parse("postgresql,uri=postgresql://u:pw@h/x?sslmode=require").unwrap()
        )
        .is_ok());
    }

    #[test]
    fn a_server_down_fails_fast_after_the_first_login() {
        // nothing listens on port 9: refused at once, then the backoff
        let spec =
            AuthSpec::parse("postgresql,uri=postgresql://u:pw@127.0.0.1:9/xpra,timeout=2").unwrap();
        let a = super::super::sql::build(&spec).unwrap();
        assert_eq!(a.kind(), ModuleKind::Postgresql);
        assert!(!format!("{a:?}").contains("pw"));
        let peer = PeerInfo::default();
        let e = a.lookup("foo", &peer).unwrap_err().to_string();
        assert!(e.contains("postgresql server 127.0.0.1:9/xpra"), "{e}");
        assert!(e.contains("cannot connect"), "{e}");
        assert!(!e.contains("pw"), "{e}");
        let e = a.lookup("foo", &peer).unwrap_err().to_string();
        assert!(e.contains("database unavailable (retrying in"), "{e}");
        // `sql` dispatches to it
        let spec = AuthSpec::parse("sql,uri=postgres://u:pw@127.0.0.1:9/xpra").unwrap();
        let a = super::super::sql::build(&spec).unwrap();
        assert_eq!(a.kind(), ModuleKind::Sql);
        let e = a.lookup("foo", &peer).unwrap_err().to_string();
        assert!(e.contains("postgresql server 127.0.0.1:9/xpra"), "{e}");
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        // accepts the connection, never answers the startup message
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spec = AuthSpec::parse(&format!(
            "postgresql,uri=postgresql://u:pw@127.0.0.1:{port}/xpra,timeout=1"
        ))
        .unwrap();
        let a = super::super::sql::build(&spec).unwrap();
        let e = a
            .lookup("foo", &PeerInfo::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("127.0.0.1:{port}/xpra")), "{e}");
        assert!(e.contains("no answer within 1 s"), "{e}");
        drop(listener);
    }

    #[test]
    fn parameter_types() {
        let text = Cell::Text("42".into());
        assert!(param(0, &Type::VARCHAR, &text).is_ok());
        assert!(param(0, &Type::INT4, &text).is_ok());
        assert!(param(0, &Type::BYTEA, &text).is_ok());
        let e = param(1, &Type::INT2, &Cell::Text("x".into()))
            .err()
            .unwrap();
        assert!(e.contains("$2"), "{e}");
        assert!(param(0, &Type::INT2, &Cell::Text("99999".into())).is_err());
        let e = param(0, &Type::TIMESTAMP, &text).err().unwrap();
        assert!(e.contains("$1::text"), "{e}");
    }
}
