//! The cluster schema and every query, over the sync `postgres` client.
//! Called on the heartbeat thread and on blocking threads only (the
//! client runs its own small runtime: never call it inside an async task).
//!
//! Every timestamp is the database's `now()`: the nodes' clocks do not
//! matter. Every query is bounded: a connect timeout, a statement timeout
//! (`statement_timeout`), TCP keepalives and `tcp_user_timeout` for a
//! server that vanished, and a `LIMIT` on what is read.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use postgres::Client;

use crate::transport::db_tls::{Connector, PgTls};

use super::state::{self, Claim, Holder, Snapshot, MAX_SNAPSHOT_ROWS};
use super::{ClusterConfig, ClusterConn, ClusterError, ClusterNode, ClusterView};

/// How long connecting may take (unless the URI says otherwise).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one statement may run on the server.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection rows one node writes at most per heartbeat.
pub const MAX_CONNECTION_ROWS: usize = 100_000;
/// Stop requests one heartbeat executes at most.
const MAX_STOP_REQUESTS: i64 = 10_000;
/// How long a sticky host is remembered after the user's last connection.
pub const STICKY_TTL: Duration = Duration::from_secs(12 * 3600);
/// The key of the advisory lock migrations hold (`xfwd` in ASCII).
const MIGRATION_LOCK: i64 = 0x7866_7764;

/// The schema's migrations, in order: version `i + 1` is `MIGRATIONS[i]`.
/// Each runs once, in the transaction that records its version.
pub const MIGRATIONS: &[&str] = &[
    // 1: nodes, their connections, stop requests, sticky hosts.
    "CREATE TABLE IF NOT EXISTS xfwd_nodes (
        name text PRIMARY KEY,
        address text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now(),
        version text NOT NULL,
        connections bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS xfwd_connections (
        node text NOT NULL REFERENCES xfwd_nodes(name) ON DELETE CASCADE,
        id bigint NOT NULL,
        username text,
        peer text NOT NULL,
        transport text NOT NULL,
        target text,
        host_key text,
        started_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (node, id)
    );
    CREATE INDEX IF NOT EXISTS xfwd_connections_host_key ON xfwd_connections (host_key);
    CREATE TABLE IF NOT EXISTS xfwd_stop_requests (
        node text NOT NULL REFERENCES xfwd_nodes(name) ON DELETE CASCADE,
        id bigint NOT NULL,
        requested_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS xfwd_stop_requests_node ON xfwd_stop_requests (node);
    CREATE TABLE IF NOT EXISTS xfwd_user_hosts (
        username text NOT NULL,
        pool text NOT NULL,
        host_key text NOT NULL,
        last_seen timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (username, pool)
    );",
];

/// The schema version this xfwd writes.
pub fn schema_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

fn err(e: postgres::Error) -> ClusterError {
    match e.as_db_error() {
        Some(db) => ClusterError::Query(format!("{}: {}", db.code().code(), db.message())),
        None => ClusterError::Unavailable(e.to_string()),
    }
}

/// The client configuration of `--cluster-db` and its TLS connector.
#[derive(Clone)]
pub struct DbConfig {
    pub config: postgres::Config,
    tls: Connector,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // postgres::Config's Debug redacts the password
        self.config.fmt(f)
    }
}

impl std::ops::Deref for DbConfig {
    type Target = postgres::Config;
    fn deref(&self) -> &postgres::Config {
        &self.config
    }
}

/// Takes libpq's `sslmode` and `sslrootcert` out of a URI
/// (`postgres[ql]://...?...`) or a `key=value` string (values without
/// quotes), which rust-postgres does not know (beyond three modes).
fn take_tls(uri: &str) -> Result<(String, PgTls), ClusterError> {
    let mut tls = PgTls::default();
    let bad = |e: String| ClusterError::BadUri(e);
    if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
        // The query by hand, not through a URL parser: libpq's URIs may name
        // several hosts (`h1:5432,h2:5432`), which a URL's authority cannot.
        let Some((base, query)) = uri.split_once('?') else {
            return Ok((uri.to_owned(), tls));
        };
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut kept = Vec::new();
        let mut took = false;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if tls.take(&k, &v).map_err(bad)? {
                took = true;
            } else {
                // %20, not the form encoding's `+`, which rust-postgres
                // would keep
                kept.push(format!("{}={}", enc(&k), enc(&v)));
            }
        }
        if !took {
            return Ok((uri.to_owned(), tls));
        }
        let uri = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        Ok((uri, tls))
    } else {
        // Only the words taken are cut out: the rest stays as written
        // (quoted values keep their spaces).
        let mut out = String::with_capacity(uri.len());
        let mut rest = uri;
        while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
            let end = rest[start..]
                .find(char::is_whitespace)
                .map_or(rest.len(), |e| start + e);
            let word = &rest[start..end];
            let taken = match word.split_once('=') {
                Some((k, v)) => tls.take(k.trim(), v.trim()).map_err(bad)?,
                None => false,
            };
            out.push_str(&rest[..start]);
            if !taken {
                out.push_str(word);
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        Ok((out.trim().to_owned(), tls))
    }
}

/// The client configuration of `--cluster-db`, with xfwd's bounds, and
/// TLS as its `sslmode` / `sslrootcert` say ([`crate::transport::db_tls`]:
/// default `prefer`).
pub fn client_config(uri: &str, node: &str) -> Result<DbConfig, ClusterError> {
    let (uri, tls) = take_tls(uri)?;
    let mut c =
        postgres::Config::from_str(&uri).map_err(|e| ClusterError::BadUri(e.to_string()))?;
    // plain when every host is a Unix socket (libpq ignores sslmode there)
    let unix = !c.get_hosts().is_empty()
        && c.get_hosts()
            .iter()
            .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
    let (mode, connector) = tls
        .connector(if unix { "/" } else { "" })
        .map_err(|e| ClusterError::BadUri(format!("TLS settings: {e}")))?;
    c.ssl_mode(mode);
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(CONNECT_TIMEOUT);
    }
    let options = format!(
        "{} -c statement_timeout={} -c lock_timeout={}",
        c.get_options().unwrap_or_default(),
        STATEMENT_TIMEOUT.as_millis(),
        STATEMENT_TIMEOUT.as_millis()
    );
    c.options(options.trim_start());
    if c.get_application_name().is_none() {
        c.application_name(&format!("xfwd {node}"));
    }
    c.keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(10));
    Ok(DbConfig {
        config: c,
        tls: connector,
    })
}

/// Connects (bounded by the connect timeout).
pub fn connect(config: &DbConfig) -> Result<Client, ClusterError> {
    config.config.connect(config.tls.clone()).map_err(err)
}

/// Creates or migrates the schema: one transaction under an advisory lock,
/// so that nodes starting at once migrate one after the other, and each
/// migration runs once.
pub fn migrate(client: &mut Client) -> Result<(), ClusterError> {
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS xfwd_schema (version integer NOT NULL)")
        .map_err(err)?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM xfwd_schema", &[])
        .map_err(err)?
        .get(0);
    let known = schema_version();
    if found > known {
        return Err(ClusterError::SchemaTooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if version <= found {
            continue;
        }
        tx.batch_execute(sql).map_err(err)?;
        tx.execute("INSERT INTO xfwd_schema (version) VALUES ($1)", &[&version])
            .map_err(err)?;
        tracing::info!(version, "cluster database: schema migrated");
    }
    tx.commit().map_err(err)
}

/// Who this node is, as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub name: String,
    /// The machine (its hostname) and the listeners.
    pub address: String,
    pub pid: i32,
    pub version: String,
}

impl Me {
    pub fn new(name: &str, hostname: &str, listeners: &[String]) -> Me {
        let address = if listeners.is_empty() {
            hostname.to_owned()
        } else {
            format!("{hostname} {}", listeners.join(","))
        };
        Me {
            name: name.to_owned(),
            address,
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            version: crate::proxy::link::VERSION.to_owned(),
        }
    }

    /// The machine part of the address.
    pub fn host(&self) -> &str {
        host_of(&self.address)
    }
}

fn host_of(address: &str) -> &str {
    address.split(' ').next().unwrap_or(address)
}

/// One live connection, as its row is written.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnRow {
    pub id: u64,
    pub user: Option<String>,
    pub peer: String,
    pub transport: String,
    pub target: Option<String>,
    pub host_key: Option<String>,
    pub age_s: f64,
}

/// What a heartbeat did.
#[derive(Debug, Clone, PartialEq)]
pub enum Beat {
    /// The rows are written; these stop requests were taken (to execute);
    /// these nodes were found expired and deleted.
    Written {
        stop: Vec<u64>,
        expired: Vec<String>,
    },
    /// Another live process holds our name: nothing was written.
    Taken(Holder),
}

fn expiry_s(expiry: Duration) -> f64 {
    expiry.as_secs_f64()
}

fn holder(tx: &mut postgres::Transaction<'_>, name: &str) -> Result<Option<Holder>, ClusterError> {
    let row = tx
        .query_opt(
            "SELECT pid, address, extract(epoch FROM now() - heartbeat_at)::float8
             FROM xfwd_nodes WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .map_err(err)?;
    Ok(row.map(|r| Holder {
        pid: r.get(0),
        address: r.get(1),
        age_s: r.get(2),
    }))
}

/// Whether process `pid` lives on this machine.
fn alive_here(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Registers this node at start: refused when another live node holds
/// the name, unless it is on this machine and gone, or `takeover` (the
/// xfwd this one takes over from, on this machine).
pub fn register(
    client: &mut Client,
    me: &Me,
    expiry: Duration,
    takeover: bool,
) -> Result<(), ClusterError> {
    let mut tx = client.transaction().map_err(err)?;
    let h = holder(&mut tx, &me.name)?;
    let replace_live = h
        .as_ref()
        .is_some_and(|h| host_of(&h.address) == me.host() && (takeover || !alive_here(h.pid)));
    match state::claim(h.as_ref(), me.pid, &me.address, expiry, replace_live) {
        Claim::Taken => {
            let h = h.unwrap_or(Holder {
                pid: 0,
                address: String::new(),
                age_s: 0.0,
            });
            return Err(ClusterError::NameTaken {
                name: me.name.clone(),
                pid: h.pid,
                address: h.address,
                age_s: h.age_s,
                wait_s: (expiry.as_secs_f64() - h.age_s).max(0.0),
            });
        }
        c => write_node(&mut tx, me, c, 0)?,
    }
    tx.commit().map_err(err)
}

fn write_node(
    tx: &mut postgres::Transaction<'_>,
    me: &Me,
    claim: Claim,
    connections: i64,
) -> Result<(), ClusterError> {
    match claim {
        Claim::Insert => {
            tx.execute(
                "INSERT INTO xfwd_nodes (name, address, pid, started_at, heartbeat_at, version, connections)
                 VALUES ($1, $2, $3, now(), now(), $4, $5)",
                &[&me.name, &me.address, &me.pid, &me.version, &connections],
            )
            .map_err(err)?;
        }
        Claim::Refresh => {
            tx.execute(
                "UPDATE xfwd_nodes SET heartbeat_at = now(), version = $2, connections = $3
                 WHERE name = $1",
                &[&me.name, &me.version, &connections],
            )
            .map_err(err)?;
        }
        Claim::Replace => {
            // The previous holder's connections and stop requests go.
            tx.execute("DELETE FROM xfwd_connections WHERE node = $1", &[&me.name])
                .map_err(err)?;
            tx.execute(
                "DELETE FROM xfwd_stop_requests WHERE node = $1",
                &[&me.name],
            )
            .map_err(err)?;
            tx.execute(
                "UPDATE xfwd_nodes SET address = $2, pid = $3, started_at = now(),
                 heartbeat_at = now(), version = $4, connections = $5 WHERE name = $1",
                &[&me.name, &me.address, &me.pid, &me.version, &connections],
            )
            .map_err(err)?;
        }
        Claim::Taken => {}
    }
    Ok(())
}

/// One heartbeat, in one transaction: our row, our connections (at most
/// [`MAX_CONNECTION_ROWS`]), the sticky hosts remembered since the last
/// one, the stop requests addressed to us (taken: the caller executes
/// them), the expired nodes (deleted, with their connections) when
/// `may_expire` (not in the first expiry after an outage: the others
/// could not beat either).
pub fn beat(
    client: &mut Client,
    me: &Me,
    expiry: Duration,
    conns: &[ConnRow],
    remembered: &HashMap<(String, String), String>,
    may_expire: bool,
) -> Result<Beat, ClusterError> {
    let conns = conns.get(..MAX_CONNECTION_ROWS).unwrap_or(conns);
    let mut tx = client.transaction().map_err(err)?;
    let h = holder(&mut tx, &me.name)?;
    let count = i64::try_from(conns.len()).unwrap_or(i64::MAX);
    match state::claim(h.as_ref(), me.pid, &me.address, expiry, false) {
        Claim::Taken => {
            if let Some(h) = h {
                return Ok(Beat::Taken(h));
            }
        }
        c => write_node(&mut tx, me, c, count)?,
    }
    let ids: Vec<i64> = conns
        .iter()
        .map(|c| i64::try_from(c.id).unwrap_or(i64::MAX))
        .collect();
    let users: Vec<Option<&str>> = conns.iter().map(|c| c.user.as_deref()).collect();
    let peers: Vec<&str> = conns.iter().map(|c| c.peer.as_str()).collect();
    let transports: Vec<&str> = conns.iter().map(|c| c.transport.as_str()).collect();
    let targets: Vec<Option<&str>> = conns.iter().map(|c| c.target.as_deref()).collect();
    let hosts: Vec<Option<&str>> = conns.iter().map(|c| c.host_key.as_deref()).collect();
    let ages: Vec<f64> = conns.iter().map(|c| c.age_s.max(0.0)).collect();
    tx.execute(
        "DELETE FROM xfwd_connections WHERE node = $1 AND NOT (id = ANY($2))",
        &[&me.name, &ids],
    )
    .map_err(err)?;
    if !ids.is_empty() {
        tx.execute(
            "INSERT INTO xfwd_connections (node, id, username, peer, transport, target, host_key, started_at)
             SELECT $1, u.id, u.username, u.peer, u.transport, u.target, u.host_key,
                    now() - make_interval(secs => u.age)
             FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[])
                  AS u(id, username, peer, transport, target, host_key, age)
             ON CONFLICT (node, id) DO UPDATE SET username = EXCLUDED.username,
                 transport = EXCLUDED.transport, target = EXCLUDED.target,
                 host_key = EXCLUDED.host_key",
            &[&me.name, &ids, &users, &peers, &transports, &targets, &hosts, &ages],
        )
        .map_err(err)?;
    }
    if !remembered.is_empty() {
        let (mut u, mut p, mut hk) = (Vec::new(), Vec::new(), Vec::new());
        for ((user, pool), host) in remembered {
            u.push(user.as_str());
            p.push(pool.as_str());
            hk.push(host.as_str());
        }
        tx.execute(
            "INSERT INTO xfwd_user_hosts (username, pool, host_key, last_seen)
             SELECT u, p, h, now() FROM unnest($1::text[], $2::text[], $3::text[]) AS t(u, p, h)
             ON CONFLICT (username, pool) DO UPDATE SET host_key = EXCLUDED.host_key,
                 last_seen = now()",
            &[&u, &p, &hk],
        )
        .map_err(err)?;
    }
    tx.execute(
        "DELETE FROM xfwd_user_hosts WHERE last_seen < now() - make_interval(secs => $1)",
        &[&STICKY_TTL.as_secs_f64()],
    )
    .map_err(err)?;
    let stop: Vec<u64> = tx
        .query(
            "DELETE FROM xfwd_stop_requests WHERE ctid IN
               (SELECT ctid FROM xfwd_stop_requests WHERE node = $1 LIMIT $2)
             RETURNING id",
            &[&me.name, &MAX_STOP_REQUESTS],
        )
        .map_err(err)?
        .iter()
        .filter_map(|r| u64::try_from(r.get::<_, i64>(0)).ok())
        .collect();
    let ages: Vec<(String, f64)> = if !may_expire {
        Vec::new()
    } else {
        tx
        .query(
            "SELECT name, extract(epoch FROM now() - heartbeat_at)::float8 FROM xfwd_nodes LIMIT $1",
            &[&(MAX_SNAPSHOT_ROWS as i64)],
        )
        .map_err(err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let expired = state::expired(ages.iter().map(|(n, a)| (n.as_str(), *a)), &me.name, expiry);
    let expired = if expired.is_empty() {
        expired
    } else {
        // Checked again by the database: one that beat meanwhile stays.
        tx.query(
            "DELETE FROM xfwd_nodes WHERE name = ANY($1) AND name <> $2
               AND heartbeat_at < now() - make_interval(secs => $3)
             RETURNING name",
            &[&expired, &me.name, &expiry_s(expiry)],
        )
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    tx.commit().map_err(err)?;
    Ok(Beat::Written { stop, expired })
}

/// What the other live nodes carry: counts per host, per node, sticky hosts.
pub fn snapshot(client: &mut Client, me: &Me, expiry: Duration) -> Result<Snapshot, ClusterError> {
    let limit = MAX_SNAPSHOT_ROWS as i64;
    let e = expiry_s(expiry);
    let hosts = client
        .query(
            "SELECT c.node, c.host_key, count(*) FROM xfwd_connections c
             JOIN xfwd_nodes n ON n.name = c.node
             WHERE c.host_key IS NOT NULL AND n.heartbeat_at >= now() - make_interval(secs => $1)
             GROUP BY c.node, c.host_key LIMIT $2",
            &[&e, &limit],
        )
        .map_err(err)?;
    let nodes = client
        .query(
            "SELECT name, connections FROM xfwd_nodes
             WHERE heartbeat_at >= now() - make_interval(secs => $1) ORDER BY name LIMIT $2",
            &[&e, &limit],
        )
        .map_err(err)?;
    let sticky = client
        .query(
            "SELECT username, pool, host_key FROM xfwd_user_hosts
             WHERE last_seen >= now() - make_interval(secs => $1) LIMIT $2",
            &[&STICKY_TTL.as_secs_f64(), &limit],
        )
        .map_err(err)?;
    Ok(Snapshot::from_rows(
        &me.name,
        hosts.iter().map(|r| (r.get(0), r.get(1), r.get(2))),
        nodes.iter().map(|r| (r.get(0), r.get(1))),
        sticky.iter().map(|r| (r.get(0), r.get(1), r.get(2))),
    ))
}

/// Every live node and its connections (`xfwd list --cluster`).
pub fn view(client: &mut Client, expiry: Duration) -> Result<ClusterView, ClusterError> {
    let limit = MAX_SNAPSHOT_ROWS as i64;
    let e = expiry_s(expiry);
    let nodes = client
        .query(
            "SELECT name, address, pid, version, connections,
                    extract(epoch FROM now() - heartbeat_at)::float8,
                    extract(epoch FROM now() - started_at)::float8
             FROM xfwd_nodes WHERE heartbeat_at >= now() - make_interval(secs => $1)
             ORDER BY name LIMIT $2",
            &[&e, &limit],
        )
        .map_err(err)?
        .iter()
        .map(|r| ClusterNode {
            name: r.get(0),
            address: r.get(1),
            pid: r.get(2),
            version: r.get(3),
            connections: r.get(4),
            heartbeat_age_s: r.get(5),
            uptime_s: r.get(6),
        })
        .collect();
    let connections = client
        .query(
            "SELECT c.node, c.id, c.username, c.peer, c.transport, c.target, c.host_key,
                    extract(epoch FROM now() - c.started_at)::float8
             FROM xfwd_connections c JOIN xfwd_nodes n ON n.name = c.node
             WHERE n.heartbeat_at >= now() - make_interval(secs => $1)
             ORDER BY c.node, c.id LIMIT $2",
            &[&e, &limit],
        )
        .map_err(err)?
        .iter()
        .map(|r| ClusterConn {
            node: r.get(0),
            id: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            user: r.get(2),
            peer: r.get(3),
            transport: r.get(4),
            target: r.get(5),
            host_key: r.get(6),
            age_s: r.get(7),
        })
        .collect();
    Ok(ClusterView { nodes, connections })
}

/// Asks live node `node` to stop its connection `id` (it does at its next
/// heartbeat).
pub fn request_stop(
    client: &mut Client,
    node: &str,
    id: u64,
    expiry: Duration,
) -> Result<(), ClusterError> {
    let n = client
        .execute(
            "INSERT INTO xfwd_stop_requests (node, id, requested_at)
             SELECT c.node, c.id, now() FROM xfwd_connections c
             JOIN xfwd_nodes n ON n.name = c.node
             WHERE c.node = $1 AND c.id = $2
               AND n.heartbeat_at >= now() - make_interval(secs => $3)",
            &[
                &node,
                &i64::try_from(id).unwrap_or(i64::MAX),
                &expiry_s(expiry),
            ],
        )
        .map_err(err)?;
    if n == 0 {
        return Err(ClusterError::NoConnection {
            node: node.to_owned(),
            id,
        });
    }
    Ok(())
}

/// Removes our row (with our connections and stop requests), if it is
/// still ours.
pub fn unregister(client: &mut Client, me: &Me) -> Result<(), ClusterError> {
    client
        .execute(
            "DELETE FROM xfwd_nodes WHERE name = $1 AND pid = $2 AND address = $3",
            &[&me.name, &me.pid, &me.address],
        )
        .map_err(err)?;
    Ok(())
}

/// Connects, migrates and registers (at start).
pub fn start(cfg: &ClusterConfig, me: &Me, takeover: bool) -> Result<Client, ClusterError> {
    let c = client_config(&cfg.db, &cfg.node)?;
    let mut client = connect(&c)?;
    migrate(&mut client)?;
    register(&mut client, me, cfg.expiry, takeover)?;
    Ok(client)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_bounded() {
        let c = client_config("postgres://xfwd@db.example/xfwd", "a").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert!(c.get_options().unwrap().contains("statement_timeout=5000"));
        assert_eq!(c.get_application_name(), Some("xfwd a"));
        let c = client_config("postgres://db/x?connect_timeout=1&options=-c%20x=y", "a").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(1)));
        assert!(c
            .get_options()
            .unwrap()
            .starts_with("-c x=y -c statement_timeout"));
        let e = client_config("postgres://db/x?bogus=1", "a").unwrap_err();
        assert!(matches!(e, ClusterError::BadUri(_)), "{e}");
        for bad in [
            "postgres://db/x?sslmode=allow",
            "postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            "host=db sslmode=bogus",
        ] {
            let e = client_config(bad, "a").unwrap_err();
            assert!(matches!(e, ClusterError::BadUri(_)), "{e}");
        }
        use tokio_postgres::config::SslMode as M;
        for (uri, mode) in [
            ("postgres://db/x", M::Prefer),
            ("postgres://db/x?sslmode=disable", M::Disable),
            (
                "postgres://db/x?sslmode=require&connect_timeout=2",
                M::Require,
            ),
            ("postgres://db/x?sslmode=verify-ca", M::Require),
            ("host=db dbname=x sslmode=require", M::Require),
            ("host=/run/postgresql dbname=x sslmode=require", M::Disable),
        ] {
            let c = client_config(uri, "a").unwrap();
            assert_eq!(c.get_ssl_mode(), mode, "{uri}");
        }
        let c = client_config(
            "postgres://db/x?sslmode=require&connect_timeout=2&options=-c%20x=y",
            "a",
        )
        .unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert!(c.get_options().unwrap().starts_with("-c x=y -c"));
        // Several hosts with ports (libpq's form, not a URL's), with and
        // without TLS settings.
        for uri in [
            "postgres://u@h1:5432,h2:5433/x",
            "postgres://u@h1:5432,h2:5433/x?sslmode=require&connect_timeout=3",
        ] {
            let c = client_config(uri, "a").unwrap();
            assert_eq!(c.get_hosts().len(), 2, "{uri}");
            assert_eq!(c.get_ports(), &[5432, 5433], "{uri}");
        }
        // key=value: what is not TLS stays as written (quoted spaces).
        let (rest, _) = take_tls("host=db  password='a  b' sslmode=require dbname=x").unwrap();
        assert_eq!(rest, "host=db  password='a  b'  dbname=x");
        let c = client_config("host=db password='a  b' sslmode=require", "a").unwrap();
        assert_eq!(c.get_password(), Some(&b"a  b"[..]));
    }

    #[test]
    fn the_address_starts_with_the_machine() {
        let me = Me::new("a", "h1", &["tcp:0.0.0.0:14501".into()]);
        assert_eq!(me.address, "h1 tcp:0.0.0.0:14501");
        assert_eq!(me.host(), "h1");
        assert_eq!(Me::new("a", "h1", &[]).host(), "h1");
        assert_eq!(schema_version(), 1);
    }
}
