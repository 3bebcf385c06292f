//! `xfwd list | info | stop`: the client of a running xfwd's control
//! socket (see `engine::control` for the protocol).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::control::{Request, Response, ServerInfo};
use crate::engine::registry::ConnInfo;

/// How long the server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The longest response read.
const MAX_RESPONSE: u64 = 64 << 20;

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no running xfwd found in {} (is it running? pass --control-socket)", .0.display())]
    NoneFound(PathBuf),
    #[error("several running xfwd found, pass --control-socket with one of: {}", list(.0))]
    Several(Vec<PathBuf>),
    #[error("cannot read {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a response: {error}", path.display())]
    BadResponse { path: PathBuf, error: String },
    /// The server did not do it (`ok: false`).
    #[error("{0}")]
    Refused(String),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ClientError {
    /// The exit status: 1 when the server refused, 2 when it could not be
    /// asked.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) => 1,
            _ => 2,
        }
    }
}

/// Whether something listens on `path`.
fn answers(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// The one control socket in `dir` (`control-*.sock`) that answers.
pub fn discover(dir: &Path) -> Result<PathBuf, ClientError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ClientError::NoneFound(dir.to_owned()))
        }
        Err(source) => {
            return Err(ClientError::Dir {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut live: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("control-") && n.ends_with(".sock"))
        })
        .map(|e| e.path())
        .filter(|p| answers(p))
        .collect();
    live.sort();
    match live.len() {
        0 => Err(ClientError::NoneFound(dir.to_owned())),
        1 => Ok(live.remove(0)),
        _ => Err(ClientError::Several(live)),
    }
}

/// Sends `request` to the control socket at `path`; the server's answer,
/// or why there is none (`ok: false` becomes [`ClientError::Refused`]).
pub fn ask(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::BadResponse {
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    line.push('\n');
    // A server that refuses us may have answered and closed already: read
    // its answer even when writing fails.
    let written = s.write_all(line.as_bytes());
    let mut buf = Vec::new();
    let read = (&mut s).take(MAX_RESPONSE).read_to_end(&mut buf);
    if buf.is_empty() {
        written.map_err(io)?;
        read.map_err(io)?;
        return Err(ClientError::BadResponse {
            path: path.to_owned(),
            error: "the server closed without answering".into(),
        });
    }
    let first = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let r: Response = serde_json::from_slice(first).map_err(|e| ClientError::BadResponse {
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    if !r.ok {
        return Err(ClientError::Refused(
            r.error.unwrap_or_else(|| "the server refused".into()),
        ));
    }
    Ok(r)
}

/// `3s`, `4m05s`, `2h07m`, `3d04h`.
pub fn age(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A peer as a table cell (no spaces): the client's address for TCP
/// (`tcp socket: LOCAL <- REMOTE`), `unix:PATH(uid=U,pid=P)` for Unix
/// sockets.
fn short_peer(peer: &str) -> String {
    if let Some((_, remote)) = peer.rsplit_once(" <- ") {
        return remote.to_owned();
    }
    peer.replace(" socket:", ":")
        .replace(" socket", "")
        .replace(" (", "(")
        .replace(", ", ",")
        .replace("uid ", "uid=")
        .replace("pid ", "pid=")
}

/// The table `xfwd list` prints: a header, then one line per connection.
pub fn table(conns: &[ConnInfo]) -> String {
    let header = [
        "ID", "SHARD", "USER", "PEER", "TARGET", "PHASE", "AGE", "C->S", "S->C",
    ];
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.shard.to_string(),
                c.user.clone().unwrap_or_else(|| "-".into()),
                short_peer(&c.peer),
                short_target(c.target.as_deref()),
                c.phase.clone(),
                age(c.age_s),
                c.client_to_session_bytes.to_string(),
                c.session_to_client_bytes.to_string(),
            ]
        })
        .collect();
    render(&header, &rows)
}

fn short_target(t: Option<&str>) -> String {
    t.map_or("-".into(), |t| {
        t.strip_prefix("session ").unwrap_or(t).to_owned()
    })
}

/// The tables `xfwd list --cluster` prints: every live node's
/// connections, then the nodes.
pub fn cluster_table(v: &crate::cluster::ClusterView) -> String {
    let rows: Vec<Vec<String>> = v
        .connections
        .iter()
        .map(|c| {
            vec![
                c.node.clone(),
                c.id.to_string(),
                c.user.clone().unwrap_or_else(|| "-".into()),
                short_peer(&c.peer),
                short_target(c.target.as_deref()),
                age(c.age_s),
            ]
        })
        .collect();
    let mut out = render(&["NODE", "ID", "USER", "PEER", "TARGET", "AGE"], &rows);
    let nodes: Vec<Vec<String>> = v
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.connections.to_string(),
                age(n.heartbeat_age_s),
                age(n.uptime_s),
                n.pid.to_string(),
                n.address.replace(' ', "/"),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&render(
        &["NODE", "CONNECTIONS", "HEARTBEAT", "UP", "PID", "ADDRESS"],
        &nodes,
    ));
    out
}

/// Columns padded to their widest cell (the last one not padded).
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for r in rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

fn date(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(unix))
}

/// `xfwd info` as text.
pub fn server_text(s: &ServerInfo, conns: &[ConnInfo]) -> String {
    let mut out = format!(
        "xfwd {} (pid {})\n\
         uuid:           {}\n\
         hostname:       {}\n\
         started:        {} (up {})\n\
         shards:         {}\n\
         listeners:      {}\n\
         control socket: {}\n\
         connections:    {}\n",
        s.version,
        s.pid,
        s.uuid,
        s.hostname,
        date(s.started),
        age(s.uptime_s),
        s.shards,
        s.listeners.join(", "),
        s.control_socket,
        s.connections,
    );
    if !conns.is_empty() {
        out.push('\n');
        out.push_str(&table(conns));
    }
    out
}

/// `xfwd info --connection ID` as text.
pub fn conn_text(c: &ConnInfo) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let ms = |v: Option<u64>| v.map_or("-".into(), |m| format!("{m} ms"));
    format!(
        "connection:       {}\n\
         shard:            {}\n\
         peer:             {}\n\
         transport:        {}\n\
         user:             {}\n\
         target:           {}\n\
         phase:            {}\n\
         started:          {} ({} ago)\n\
         client->session:  {} bytes, {} packets\n\
         session->client:  {} bytes, {} packets\n\
         latency client:   {}\n\
         latency session:  {}\n",
        c.id,
        c.shard,
        c.peer,
        c.transport,
        opt(&c.user),
        opt(&c.target),
        c.phase,
        date(c.started),
        age(c.age_s),
        c.client_to_session_bytes,
        c.client_to_session_packets,
        c.session_to_client_bytes,
        c.session_to_client_packets,
        ms(c.latency_client_ms),
        ms(c.latency_session_ms),
    )
}

/// One control command of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `cluster`: every live node's connections (`--cluster-db`).
    List {
        json: bool,
        cluster: bool,
    },
    Info {
        json: bool,
        connection: Option<u64>,
    },
    /// `node`: the connection is another node's (`NODE/ID`).
    Stop {
        connection: Option<u64>,
        node: Option<String>,
    },
    Reload,
}

/// Runs `command` against `socket` (or the one found in `default_dir`);
/// returns the exit status: 0 done, 1 refused by the server, 2 not asked.
pub fn run(
    command: &Command,
    socket: Option<&Path>,
    default_dir: &Path,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    match run_inner(command, socket, default_dir, out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "xfwd: {e}");
            e.exit_code()
        }
    }
}

fn run_inner(
    command: &Command,
    socket: Option<&Path>,
    default_dir: &Path,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let path = match socket {
        Some(p) => p.to_owned(),
        None => discover(default_dir)?,
    };
    let request = match command {
        Command::List { cluster: true, .. } => Request::ListCluster,
        Command::List { .. } => Request::List,
        Command::Info { connection, .. } => Request::Info {
            connection: *connection,
        },
        Command::Stop { connection, node } => Request::Stop {
            connection: *connection,
            node: node.clone(),
        },
        Command::Reload => Request::Reload,
    };
    let r = ask(&path, &request)?;
    let stdout = |e| ClientError::Io {
        path: "standard output".into(),
        source: e,
    };
    let text = match *command {
        Command::List {
            json: true,
            cluster: true,
        } => json(&r.cluster.unwrap_or_default()),
        Command::List {
            json: false,
            cluster: true,
        } => cluster_table(&r.cluster.unwrap_or_default()),
        Command::List {
            json: true,
            cluster: false,
        } => json(&r.connections.unwrap_or_default()),
        Command::List {
            json: false,
            cluster: false,
        } => table(r.connections.as_deref().unwrap_or_default()),
        Command::Info {
            json: true,
            connection: Some(_),
        } => json(&r.connection),
        Command::Info {
            json: true,
            connection: None,
        } => json(&r),
        Command::Info {
            json: false,
            connection: Some(_),
        } => r.connection.as_ref().map(conn_text).unwrap_or_default(),
        Command::Info {
            json: false,
            connection: None,
        } => match &r.server {
            Some(s) => server_text(s, r.connections.as_deref().unwrap_or_default()),
            None => String::new(),
        },
        Command::Stop {
            connection: Some(id),
            ..
        } => match &r.requested {
            Some(which) => format!(
                "asked node {} to stop connection {which}: it does within one heartbeat ({} s here)\n",
                which.split('/').next().unwrap_or(which),
                r.heartbeat_s.unwrap_or(crate::cluster::DEFAULT_HEARTBEAT)
            ),
            None => format!("stopped connection {id}\n"),
        },
        Command::Stop {
            connection: None, ..
        } => {
            format!("stopping the xfwd at {}\n", path.display())
        }
        Command::Reload => format!("reloaded the xfwd at {}\n", path.display()),
    };
    out.write_all(text.as_bytes()).map_err(stdout)?;
    out.flush().map_err(stdout)
}

/// `v` as (pretty) JSON, newline included.
fn json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(0.4), "0s");
        assert_eq!(age(59.9), "59s");
        assert_eq!(age(65.0), "1m05s");
        assert_eq!(age(7300.0), "2h01m");
        assert_eq!(age(90000.0), "1d01h");
        assert_eq!(age(f64::NAN), "0s");
    }

    #[test]
    fn the_table_has_a_header_and_a_line_each() {
        let c = ConnInfo {
            id: 12,
            shard: 1,
            peer: "tcp socket: 127.0.0.1:14501 <- 127.0.0.1:40000".into(),
            transport: "tcp".into(),
            user: Some("alice".into()),
            target: Some("session tcp://h:1/".into()),
            host_key: Some("h:1".into()),
            phase: "relaying".into(),
            age_s: 3.0,
            started: 0,
            client_to_session_bytes: 100,
            client_to_session_packets: 1,
            session_to_client_bytes: 2000,
            session_to_client_packets: 2,
            latency_client_ms: None,
            latency_session_ms: None,
        };
        let t = table(&[c.clone(), ConnInfo { id: 13, ..c }]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID"));
        assert_eq!(
            short_peer("unix socket:/run/x.sock (uid 0, pid 5)"),
            "unix:/run/x.sock(uid=0,pid=5)"
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "12",
                "1",
                "alice",
                "127.0.0.1:40000",
                "tcp://h:1/",
                "relaying",
                "3s",
                "100",
                "2000"
            ]
        );
    }

    #[test]
    fn discovery_says_what_it_found() {
        let dir = std::env::temp_dir().join(format!("xfwd-discover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let e = discover(&dir).unwrap_err();
        assert!(e.to_string().contains("no running xfwd found in"), "{e}");
        assert_eq!(e.exit_code(), 2);
        std::fs::create_dir_all(&dir).unwrap();
        // A stale socket does not count; a live one does; two are too many.
        drop(std::os::unix::net::UnixListener::bind(dir.join("control-1.sock")).unwrap());
        assert!(matches!(discover(&dir), Err(ClientError::NoneFound(_))));
        let _a = std::os::unix::net::UnixListener::bind(dir.join("control-2.sock")).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(dir.join("other.sock")).unwrap();
        assert_eq!(discover(&dir).unwrap(), dir.join("control-2.sock"));
        let _b = std::os::unix::net::UnixListener::bind(dir.join("control-3.sock")).unwrap();
        let e = discover(&dir).unwrap_err();
        assert!(e.to_string().contains("control-2.sock"), "{e}");
        assert!(e.to_string().contains("control-3.sock"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
