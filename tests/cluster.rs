//! The cluster view (`--cluster-db`, issue 16) against a real PostgreSQL
//! this test starts (Debian's `postgresql` package, run as the `postgres`
//! user): two xfwd nodes on loopback register themselves and their
//! connections; `xfwd list --cluster` on either shows both; `xfwd stop
//! --connection b/ID` on node a ends b's connection; the database down,
//! both keep relaying and say the database is unavailable, and register
//! again once it is back; node b killed, node a drops it after the
//! expiry; a clean stop unregisters. And the queries themselves
//! (migrations run at once, snapshots, expiry, stop requests, a taken
//! name) through the library.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::xpra::{dict, echo_session_idle, Peer};
use common::{free_port, scratch, wait_until, Xfwd};
use xfwd::cluster::db::{self, Beat, ConnRow, Me};
use xfwd::cluster::ClusterView;
use xfwd::wire::Value;

const BIN: &str = env!("CARGO_BIN_EXE_xfwd");

/// A throw-away PostgreSQL (tests/common/pg.rs) with a login role `xfwd`
/// owning database `xfwd`, where the nodes keep the cluster view.
struct Db {
    pg: common::pg::Pg,
    uri: String,
}

impl Db {
    fn start(name: &str) -> Option<Db> {
        let pg = common::pg::Pg::start(name)?;
        pg.create_login("xfwd", "cluster-pw");
        pg.sql("postgres", "CREATE DATABASE xfwd OWNER xfwd");
        let uri = pg.uri("xfwd", "cluster-pw", "xfwd");
        Some(Db { pg, uri })
    }

    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.uri, postgres::NoTls).unwrap()
    }

    fn down(&mut self) {
        self.pg.stop();
    }

    fn up(&mut self) {
        self.pg.run();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn hello(user: &str, display: u32, extra: Vec<(&str, Value)>) -> Vec<Value> {
    let mut c = vec![
        ("version", Value::from("3.1.3")),
        ("username", Value::from(user)),
        ("display", Value::from(format!(":{display}"))),
        ("digest", Value::List(vec!["hmac+sha256".into()])),
        ("salt-digest", Value::List(vec!["hmac+sha256".into()])),
    ];
    c.extend(extra);
    vec![Value::from("hello"), dict(c)]
}

/// A client relayed to `display` as `user` (`--tcp-auth=allow`).
fn client(port: u16, user: &str, display: u32) -> Peer<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut c = Peer::new(s);
    c.send(hello(user, display, vec![]));
    let ch = c.recv().unwrap();
    assert_eq!(ch.packet_type(), Some("challenge"));
    c.send(hello(
        user,
        display,
        vec![
            ("challenge_response", Value::from("00ff")),
            ("challenge_client_salt", Value::from("abc")),
        ],
    ));
    let h = c.recv().unwrap();
    assert_eq!(h.packet_type(), Some("hello"), "{h:?}");
    echo(&mut c);
    c
}

/// A packet comes back: the connection relays.
fn echo(c: &mut Peer<TcpStream>) {
    let data = vec![7u8; 1000];
    c.send(vec![
        Value::from("draw"),
        Value::Int(1),
        Value::Bytes(data.clone().into()),
    ]);
    let back = c.recv().expect("the echo");
    assert_eq!(back.packet_type(), Some("draw"));
    assert_eq!(back.items[2].as_bytes().unwrap(), &data[..]);
}

fn ctl(x: &Xfwd, dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--control-socket")
        .arg(dir.join(format!("control-{}.sock", x.port)))
        .output()
        .unwrap()
}

/// `xfwd list --cluster --json` on `x`, if it answered.
fn cluster(x: &Xfwd, dir: &Path) -> Option<ClusterView> {
    let o = ctl(x, dir, &["list", "--cluster", "--json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).unwrap())
}

/// `(node, user)` of every connection the view lists, sorted.
fn who(v: &ClusterView) -> Vec<(String, String)> {
    let mut w: Vec<_> = v
        .connections
        .iter()
        .map(|c| (c.node.clone(), c.user.clone().unwrap_or_default()))
        .collect();
    w.sort();
    w
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
}

fn node(dir: &Path, pg: &Db, name: &str, metrics: u16) -> Xfwd {
    Xfwd::start(
        dir,
        &[
            "--tcp-auth=allow",
            "--ping-interval=0",
            &format!("--cluster-db={}", pg.uri()),
            &format!("--node-name={name}"),
            "--cluster-heartbeat=1",
            &format!("--bind-metrics=127.0.0.1:{metrics}"),
        ],
    )
}

fn scrape_text(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// `promtool check metrics` accepts the scrape (as tests/metrics.rs checks).
fn promtool_check(scraped: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("note: no promtool (apt-get install prometheus): the scrape is not checked");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scraped.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}\n{scraped}", text(&out));
}

fn scrape(port: u16) -> HashMap<String, f64> {
    let out = scrape_text(port);
    out.lines()
        .filter(|l| l.starts_with("xfwd_cluster"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn two_nodes_share_one_view() {
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut pg) = Db::start("view") else {
        return;
    };
    let dir = scratch("cluster");
    echo_session_idle(&dir, 51, None);
    echo_session_idle(&dir, 52, None);
    let (ma, mb) = (free_port(), free_port());
    let a = node(&dir, &pg, "a", ma);
    let mut b = node(&dir, &pg, "b", mb);

    // A second live node named b is refused at start, saying why.
    let o = Command::new("timeout")
        .args(["30", BIN, "--system-wide=no", "--control-socket=none"])
        .arg(format!("--bind-tcp=127.0.0.1:{}", free_port()))
        .arg(format!("--cluster-db={}", pg.uri()))
        .args(["--node-name=b", "--cluster-heartbeat=1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--node-name=b: a live node of that name is registered already"),
        "{}",
        text(&o)
    );

    let mut alice = client(a.port, "alice", 51);
    let mut bob = client(b.port, "bob", 52);
    let mut carol = client(b.port, "carol", 51);
    let all = pairs(&[("a", "alice"), ("b", "bob"), ("b", "carol")]);

    // Either node lists every node's connections.
    for x in [&a, &b] {
        wait_until(
            "every connection in the view",
            Duration::from_secs(20),
            || cluster(x, &dir).is_some_and(|v| who(&v) == all && v.nodes.len() == 2),
        );
    }
    let o = ctl(&a, &dir, &["list", "--cluster"]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let first = table.lines().next().unwrap();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["NODE", "ID", "USER", "PEER", "TARGET", "AGE"],
        "{table}"
    );
    let carol_line = table
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("carol"))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = carol_line.split_whitespace().collect();
    assert_eq!(cols[0], "b", "{table}");
    assert_eq!(
        cols[3],
        carol.s.local_addr().unwrap().to_string(),
        "{table}"
    );
    assert_eq!(cols[4], ":51", "{table}");

    // The metrics say so too.
    wait_until("the cluster metrics", Duration::from_secs(20), || {
        let m = scrape(ma);
        m.get("xfwd_cluster_nodes") == Some(&2.0)
            && m.get("xfwd_cluster_db_up") == Some(&1.0)
            && m.get("xfwd_cluster_connections{node=\"b\"}") == Some(&2.0)
            && m.get("xfwd_cluster_connections{node=\"a\"}") == Some(&1.0)
    });
    promtool_check(&scrape_text(ma));

    // Stopping b's connection from a: a stop request b executes.
    let v = cluster(&a, &dir).unwrap();
    let carol_id = v
        .connections
        .iter()
        .find(|c| c.user.as_deref() == Some("carol"))
        .unwrap()
        .id;
    let o = ctl(
        &a,
        &dir,
        &["stop", "--connection", &format!("b/{carol_id}")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("asked node b to stop connection b/{carol_id}")),
        "{}",
        text(&o)
    );
    // Carol's client is told, then closed.
    let mut closed = false;
    while let Some(p) = carol.recv() {
        if p.packet_type() == Some("disconnect") {
            closed = true;
        }
    }
    assert!(closed, "carol was not told why");
    wait_until("carol gone from the view", Duration::from_secs(20), || {
        cluster(&a, &dir).is_some_and(|v| who(&v) == pairs(&[("a", "alice"), ("b", "bob")]))
    });
    // One that is not there is refused; --node works as NODE/.
    let o = ctl(&a, &dir, &["stop", "--connection", "999", "--node", "b"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no connection b/999"), "{}", text(&o));
    let o = ctl(&a, &dir, &["stop", "--connection", "nobody/1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // A node without a connection is refused (it never stops the server).
    {
        let mut s =
            std::os::unix::net::UnixStream::connect(dir.join(format!("control-{}.sock", a.port)))
                .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"{\"cmd\":\"stop\",\"node\":\"b\"}\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let r: xfwd::engine::control::Response = serde_json::from_str(out.trim()).unwrap();
        assert!(!r.ok, "{out}");
        assert!(r.error.unwrap().contains("needs a connection"), "{out}");
        echo(&mut alice);
    }
    // Local ids work as before.
    let o = ctl(&a, &dir, &["stop", "--connection", "999"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no connection 999"), "{}", text(&o));

    // The database down: both relay on; the view is unavailable; one
    // warning per outage.
    pg.down();
    echo(&mut alice);
    echo(&mut bob);
    let o = ctl(&a, &dir, &["list", "--cluster"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the cluster database is unavailable"),
        "{}",
        text(&o)
    );
    wait_until("xfwd_cluster_db_up 0", Duration::from_secs(20), || {
        scrape(ma).get("xfwd_cluster_db_up") == Some(&0.0)
    });
    // Several heartbeats fail (they retry every second at most) ...
    std::thread::sleep(Duration::from_secs(3));
    echo(&mut alice);
    echo(&mut bob);
    for x in [&a, &b] {
        let warned = x.log().matches("serving on, retrying").count();
        assert_eq!(warned, 1, "{}", x.log());
    }
    // ... and local listing is untouched.
    let o = ctl(&b, &dir, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("bob"));

    // Back: both register again, with their connections.
    pg.up();
    for x in [&a, &b] {
        wait_until("the view back", Duration::from_secs(30), || {
            cluster(x, &dir).is_some_and(|v| {
                who(&v) == pairs(&[("a", "alice"), ("b", "bob")]) && v.nodes.len() == 2
            })
        });
        x.wait_log("cluster database reachable again", Duration::from_secs(10));
    }
    wait_until("xfwd_cluster_db_up 1", Duration::from_secs(20), || {
        scrape(ma).get("xfwd_cluster_db_up") == Some(&1.0)
    });

    // b killed: a drops it after the expiry (3 heartbeats).
    let pid = nix::unistd::Pid::from_raw(b.proc.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = b.proc.0.wait();
    assert!(!b.alive());
    assert!(bob.recv().is_none(), "b is gone");
    wait_until("b expired", Duration::from_secs(30), || {
        cluster(&a, &dir).is_some_and(|v| {
            who(&v) == pairs(&[("a", "alice")])
                && v.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>() == ["a"]
        })
    });
    // Its rows are deleted (by a's next heartbeat past the expiry).
    let mut c = pg.client();
    wait_until("b's rows deleted", Duration::from_secs(20), || {
        let n: i64 = c
            .query_one(
                "SELECT (SELECT count(*) FROM xfwd_connections WHERE node = 'b')
                      + (SELECT count(*) FROM xfwd_nodes WHERE name = 'b')",
                &[],
            )
            .unwrap()
            .get(0);
        n == 0
    });
    // Only now: nobody was expired over the outage (a node back from one
    // waits an expiry before it expires others).
    let expired: Vec<String> = a
        .log()
        .lines()
        .filter(|l| l.contains("node expired"))
        .map(String::from)
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert!(expired[0].contains("node=b"), "{expired:?}");
    echo(&mut alice);

    // A clean stop unregisters.
    drop(alice);
    let mut a = a;
    let pid = nix::unistd::Pid::from_raw(a.proc.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        common::wait_exit(&mut a.proc, Duration::from_secs(30)),
        "{}",
        a.log()
    );
    assert!(
        a.log().contains("cluster: node unregistered"),
        "{}",
        a.log()
    );
    let rows: i64 = c
        .query_one("SELECT count(*) FROM xfwd_nodes", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn row(id: u64, user: &str, host: Option<&str>) -> ConnRow {
    ConnRow {
        id,
        user: Some(user.into()),
        peer: format!("tcp socket: 127.0.0.1:1 <- 10.0.0.1:{id}"),
        transport: "tcp".into(),
        target: host.map(|h| format!("session tcp://{h}/")),
        host_key: host.map(String::from),
        age_s: 5.0,
    }
}

#[test]
fn the_queries_against_a_real_database() {
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pg) = Db::start("queries") else {
        return;
    };
    let uri = pg.uri();
    let expiry = Duration::from_secs(15);
    // Nodes starting at once: one migrates, the others find it done.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let uri = uri.clone();
            std::thread::spawn(move || {
                let c = db::client_config(&uri, "t").unwrap();
                db::migrate(&mut db::connect(&c).unwrap()).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = pg.client();
    let versions: Vec<i32> = c
        .query("SELECT version FROM xfwd_schema", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1]);
    let cfg = db::client_config(&uri, "x").unwrap();
    let mut cx = db::connect(&cfg).unwrap();
    db::migrate(&mut cx).unwrap();

    let x = Me::new("x", "host-x", &["tcp:0.0.0.0:1".into()]);
    let mut y = Me::new("y", "host-y", &[]);
    y.pid = 1;
    db::register(&mut cx, &x, expiry, false).unwrap();
    db::register(&mut cx, &y, expiry, false).unwrap();
    // Another machine's live node of the same name is refused.
    let mut y2 = Me::new("y", "host-z", &[]);
    y2.pid = 2;
    let e = db::register(&mut cx, &y2, expiry, false).unwrap_err();
    assert!(e.to_string().contains("--node-name=y"), "{e}");
    assert!(e.to_string().contains("host-y"), "{e}");

    let none = HashMap::new();
    let b = db::beat(
        &mut cx,
        &x,
        expiry,
        &[row(1, "alice", Some("h1:1")), row(2, "bob", None)],
        &none,
        true,
    )
    .unwrap();
    assert_eq!(
        b,
        Beat::Written {
            stop: vec![],
            expired: vec![]
        }
    );
    let sticky: HashMap<(String, String), String> =
        [(("carol".into(), "pool".into()), "h2:1".into())].into();
    db::beat(
        &mut cx,
        &y,
        expiry,
        &[row(1, "carol", Some("h1:1")), row(7, "dave", Some("h2:1"))],
        &sticky,
        true,
    )
    .unwrap();
    // x sees y's connections, not its own; y sees x's.
    let s = db::snapshot(&mut cx, &x, expiry).unwrap();
    assert_eq!((s.connections("h1:1"), s.connections("h2:1")), (1, 1));
    assert_eq!(s.sticky_host("carol", "pool"), Some("h2:1"));
    assert_eq!(s.per_node, [("x".to_owned(), 2), ("y".to_owned(), 2)]);
    let s = db::snapshot(&mut cx, &y, expiry).unwrap();
    assert_eq!((s.connections("h1:1"), s.connections("h2:1")), (1, 0));

    // A beat replaces a node's rows, keeping when each started.
    let before: f64 = c
        .query_one(
            "SELECT extract(epoch FROM started_at)::float8 FROM xfwd_connections WHERE node='x' AND id=1",
            &[],
        )
        .unwrap()
        .get(0);
    db::beat(
        &mut cx,
        &x,
        expiry,
        &[row(1, "alice", Some("h1:1"))],
        &none,
        true,
    )
    .unwrap();
    let v = db::view(&mut cx, expiry).unwrap();
    let ids: Vec<(&str, u64)> = v
        .connections
        .iter()
        .map(|c| (c.node.as_str(), c.id))
        .collect();
    assert_eq!(ids, [("x", 1), ("y", 1), ("y", 7)]);
    let after: f64 = c
        .query_one(
            "SELECT extract(epoch FROM started_at)::float8 FROM xfwd_connections WHERE node='x' AND id=1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(before, after);

    // Stop requests: only for a live node's connection; taken by its beat.
    db::request_stop(&mut cx, "y", 7, expiry).unwrap();
    let e = db::request_stop(&mut cx, "y", 8, expiry).unwrap_err();
    assert_eq!(e.to_string(), "no connection y/8 among the live nodes");
    let b = db::beat(
        &mut cx,
        &y,
        expiry,
        &[row(7, "dave", Some("h2:1"))],
        &none,
        true,
    )
    .unwrap();
    assert_eq!(
        b,
        Beat::Written {
            stop: vec![7],
            expired: vec![]
        }
    );

    // y silent past the expiry: x's beat deletes it and its rows.
    c.execute(
        "UPDATE xfwd_nodes SET heartbeat_at = now() - interval '1 hour' WHERE name = 'y'",
        &[],
    )
    .unwrap();
    let b = db::beat(&mut cx, &x, expiry, &[], &none, true).unwrap();
    assert_eq!(
        b,
        Beat::Written {
            stop: vec![],
            expired: vec!["y".into()]
        }
    );
    let v = db::view(&mut cx, expiry).unwrap();
    assert_eq!(v.nodes.len(), 1);
    assert!(v.connections.is_empty());
    let n: i64 = c
        .query_one("SELECT count(*) FROM xfwd_connections", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // A beat of a process whose name another live one took writes nothing.
    db::register(&mut cx, &y2, expiry, false).unwrap();
    let b = db::beat(&mut cx, &y, expiry, &[row(3, "erin", None)], &none, true).unwrap();
    assert!(
        matches!(b, Beat::Taken(ref h) if h.address == "host-z"),
        "{b:?}"
    );
    // Unregistering only removes one's own row.
    db::unregister(&mut cx, &y).unwrap();
    db::unregister(&mut cx, &x).unwrap();
    let names: Vec<String> = c
        .query("SELECT name FROM xfwd_nodes", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["y"]);
}

/// `--cluster-db=...?sslmode=verify-full&sslrootcert=CA` against a server
/// that takes TLS only (`hostssl`): the node registers, its row appears,
/// and its connections are TLS (pg_stat_ssl). A wrong CA: refused at start,
/// saying why.
#[test]
fn a_node_over_tls() {
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pg) = common::pg::Pg::start_tls("cluster-tls", common::pg::Tls::Only) else {
        return;
    };
    pg.create_login("xfwd", "cluster-pw");
    pg.sql("postgres", "CREATE DATABASE xfwd OWNER xfwd");
    let uri = pg.uri("xfwd", "cluster-pw", "xfwd");
    let ca = pg.ca.clone().unwrap();
    let other = pg.other_ca.clone().unwrap();
    let dir = scratch("cluster-tls");

    // the wrong CA: the node does not start
    let o = Command::new("timeout")
        .args(["30", BIN, "--system-wide=no", "--control-socket=none"])
        .arg(format!("--bind-tcp=127.0.0.1:{}", free_port()))
        .arg(format!(
            "--cluster-db={uri}?sslmode=verify-full&sslrootcert={}",
            other.display()
        ))
        .args(["--node-name=t", "--cluster-heartbeat=1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("certificate"), "{}", text(&o));

    let _x = Xfwd::start(
        &dir,
        &[
            "--tcp-auth=allow",
            "--ping-interval=0",
            &format!(
                "--cluster-db={uri}?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
            "--node-name=t",
            "--cluster-heartbeat=1",
        ],
    );
    wait_until("node t registered", Duration::from_secs(30), || {
        pg.sql("xfwd", "SELECT name FROM xfwd_nodes").trim() == "t"
    });
    // a connection of the node's (the heartbeat's), encrypted
    wait_until(
        "node t's connection is TLS",
        Duration::from_secs(30),
        || {
            pg.sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'xfwd t' AND s.ssl",
            )
            .trim()
                != "0"
        },
    );
}
