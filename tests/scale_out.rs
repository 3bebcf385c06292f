//! Scale-out (issue 16) across hosts: network namespaces made by the test
//! (tests/common/netns.rs), traffic only inside them.
//!
//! `two_nodes_behind_haproxy_two_hosts_in_a_pool`: HAProxy (PROXY v2) in
//! front of two xfwd nodes, one PostgreSQL for the users and the cluster
//! view, two real xpra session hosts in one pool, real xpra clients; each
//! its own namespace. Users spread over both nodes and both hosts (least
//! connections, counted across the cluster); node n1 killed: new users come
//! in through n2 and the view drops n1 within its expiry; host h1 stopped:
//! new users go to h2. Needs root, iproute2, haproxy, postgresql, xpra.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::netns::Net;
use common::*;
use xfwd::cluster::ClusterView;

/// Two namespaces on the private network reach each other, and nothing
/// else: the harness the multi-node tests stand on.
#[test]
fn namespaces_reach_each_other_only() {
    let Some(mut net) = Net::new("smoke") else {
        return;
    };
    net.host("a", 1);
    net.host("b", 2);
    let b = net.addr(2);
    let ok = net
        .command("a", "ping")
        .args(["-c", "1", "-W", "2", &b])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    // The machine's own addresses are not reachable from inside.
    let out = net
        .command("a", "ping")
        .args(["-c", "1", "-W", "1", "8.8.8.8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A PostgreSQL server inside a namespace, run by the `postgres` user.
struct Pg {
    dir: std::path::PathBuf,
    ns: String,
    bin: std::path::PathBuf,
}

fn pg_bin() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl Pg {
    /// initdb, md5 for the private network, a role `xfwd` (password
    /// `dbpw`) owning database `xpra`; listening on `addr:5432`.
    fn start(net: &Net, host: &str, addr: &str, subnet: &str) -> Option<Pg> {
        let bin = pg_bin()?;
        let dir = std::env::temp_dir().join(format!("xfwd-scale-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .ok()?;
        if !chown.success() {
            eprintln!("note: no postgres user: skipped");
            return None;
        }
        let data = dir.join("data");
        let run = |args: &[&str]| {
            let out = net
                .command(host, "runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            text(&out.stdout)
        };
        run(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhost all all {subnet} md5\nhost all all 127.0.0.1/32 md5\n"
            ),
        )
        .unwrap();
        let opts = format!("-h {addr} -p 5432 -k {}", dir.display());
        run(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]);
        let pg = Pg {
            dir,
            ns: net.ns(host),
            bin,
        };
        pg.sql(
            net,
            host,
            "postgres",
            "CREATE ROLE xfwd LOGIN PASSWORD 'dbpw'",
        );
        pg.sql(net, host, "postgres", "CREATE DATABASE xpra OWNER xfwd");
        Some(pg)
    }

    fn sql(&self, net: &Net, host: &str, db: &str, sql: &str) -> String {
        let out = net
            .command(host, "runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args(["-h", self.dir.to_str().unwrap(), "-p", "5432", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "runuser", "-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap_or(""),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real xpra session host inside a namespace: `xpra start` with an
/// xterm, sharing on (several users' clients may attach), on TCP port
/// 14600 of the namespace's address.
fn session_host(net: &Net, host: &str, dir: &std::path::Path) -> u32 {
    let display = free_display(170);
    std::fs::create_dir_all(dir).unwrap();
    let status = net
        .command(host, "xpra")
        .args([
            "start",
            &format!(":{display}"),
            "--start=xterm",
            "--daemon=yes",
            "--sharing=yes",
            "--bind-tcp=0.0.0.0:14600",
        ])
        .args(QUIET)
        .args([
            "--pulseaudio=no",
            "--dbus-launch=",
            &format!("--socket-dirs={}", dir.display()),
            &format!("--socket-dir={}", dir.display()),
            &format!("--log-dir={}", dir.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "xpra start in {host}");
    // Up once its xterm is (and the next session takes another display).
    wait_until(
        &format!("the xterm of {host}'s session :{display}"),
        Duration::from_secs(40),
        || windows(display).contains("xterm"),
    );
    display
}

fn haproxy_config(dir: &std::path::Path, front: &str, nodes: &[(&str, String)]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
         timeout client 1h\n  timeout server 1h\nfrontend xpra\n  bind {front}:14500\n  \
         default_backend nodes\nbackend nodes\n  balance roundrobin\n"
    );
    for (name, addr) in nodes {
        cfg.push_str(&format!(
            "  server {name} {addr}:14500 send-proxy-v2 check inter 300 fall 2 rise 1\n"
        ));
    }
    let p = dir.join("haproxy.cfg");
    std::fs::write(&p, cfg).unwrap();
    p.display().to_string()
}

/// `xfwd list --cluster --json` through a node's control socket (`None`
/// while it cannot say).
fn cluster_list(sock: &std::path::Path) -> Option<ClusterView> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["list", "--cluster", "--json"])
        .arg(format!("--control-socket={}", sock.display()))
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).ok();
    if v.is_none() {
        eprintln!("list --cluster: {}{}", text(&out.stdout), text(&out.stderr));
    }
    v
}

/// `(node, user, host)` of every connection the view shows, sorted.
fn placed(v: &ClusterView) -> Vec<(String, String, String)> {
    // Connections without a user: HAProxy's health checks, in passing.
    let mut out: Vec<_> = v
        .connections
        .iter()
        .filter(|c| c.user.is_some())
        .map(|c| {
            (
                c.node.clone(),
                c.user.clone().unwrap_or_default(),
                c.host_key.clone().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// An `xpra attach` from the client namespace through HAProxy, under an
/// Xvfb of that namespace; kept running.
struct Client {
    _x: Proc,
    _attach: Proc,
}

fn client(net: &Net, dir: &std::path::Path, front: &str, user: &str) -> Client {
    let display = free_display(190);
    let x = net
        .command("client", "Xvfb")
        .args([
            &format!(":{display}"),
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let x = Proc(x);
    wait_until("Xvfb", Duration::from_secs(10), || {
        std::path::Path::new(&format!("/tmp/.X11-unix/X{display}")).exists()
    });
    let log = dir.join(format!("attach-{user}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let attach = net
        .command("client", "xpra")
        .env("PATH", SYSTEM_PATH)
        .env("DISPLAY", format!(":{display}"))
        // One machine, one account: each user a client of its own (the
        // session would take a second client of one uuid for the first
        // reconnecting, and drop the first).
        .env("XPRA_USER_UUID", format!("scale-out-test-{user}"))
        .arg("attach")
        .arg(format!("tcp://{user}:pw-{user}@{front}:14500/"))
        .args(QUIET)
        .args(["--tray=no", "--pulseaudio=no", "--sharing=yes"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let c = Client {
        _x: x,
        _attach: Proc(attach),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !windows(display).contains("xterm") {
        assert!(
            std::time::Instant::now() < deadline,
            "{user}: no xterm on :{display}: {}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c
}

/// Two xfwd nodes behind HAProxy (PROXY v2), one PostgreSQL for auth and
/// the cluster view, two session hosts in one pool; every host its own
/// network namespace.
#[test]
fn two_nodes_behind_haproxy_two_hosts_in_a_pool() {
    if skip_interop("multi-node test") || !tools_present() || !have("haproxy") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut net) = Net::new("nodes") else {
        return;
    };
    let dir = scratch("scale-out");
    let (lb, db, n1, n2, h1, h2) = (2, 5, 11, 12, 21, 22);
    for (name, n) in [
        ("lb", lb),
        ("db", db),
        ("n1", n1),
        ("n2", n2),
        ("h1", h1),
        ("h2", h2),
        ("client", 30),
    ] {
        net.host(name, n);
    }
    let subnet = format!("{}/24", net.addr(0));
    let Some(pg) = Pg::start(&net, "db", &net.addr(db), &subnet) else {
        return;
    };
    let uri = format!("postgresql://xfwd:dbpw@{}:5432/xpra", net.addr(db));
    pg.sql(
        &net,
        "db",
        "xpra",
        "CREATE TABLE users (username VARCHAR(255) NOT NULL, password VARCHAR(255), \
         uid VARCHAR(63), gid VARCHAR(63), displays VARCHAR(8191), env_options VARCHAR(8191), \
         session_options VARCHAR(8191)); ALTER TABLE users OWNER TO xfwd;",
    );
    for u in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        pg.sql(
            &net,
            "db",
            "xpra",
            &format!("INSERT INTO users VALUES ('{u}', 'pw-{u}', '0', '0', 'pool:hosts', '', '')"),
        );
    }
    let _s1 = session_host(&net, "h1", &dir.join("h1"));
    let _s2 = session_host(&net, "h2", &dir.join("h2"));
    let pool = format!(
        "--session-pool=hosts=tcp://{}:14600/,tcp://{}:14600/",
        net.addr(h1),
        net.addr(h2)
    );
    let node = |name: &str, n: u8| -> (Xfwd, std::path::PathBuf) {
        let sock = dir.join(format!("control-{name}.sock"));
        let mut cmd = net.command(name, env!("CARGO_BIN_EXE_xfwd"));
        cmd.args([
            "--system-wide=no",
            &format!("--bind-tcp={}:14500", net.addr(n)),
            &format!("--socket-dirs={}", dir.join(name).display()),
            &format!("--control-socket={}", sock.display()),
            &format!("--proxy-protocol-from={}", net.addr(lb)),
            &format!("--tcp-auth=postgresql,uri={uri}"),
            &pool,
            &format!("--cluster-db={uri}"),
            &format!("--node-name={name}"),
            "--cluster-heartbeat=1",
            "--cluster-expiry=3",
        ]);
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let x = Xfwd::spawn(cmd, 14500);
        x.wait_log("xfwd listening", Duration::from_secs(20));
        (x, sock)
    };
    let (mut x1, sock1) = node("n1", n1);
    let (x2, sock2) = node("n2", n2);
    let cfg = haproxy_config(
        &dir,
        &net.addr(lb),
        &[("n1", net.addr(n1)), ("n2", net.addr(n2))],
    );
    let _haproxy = Proc(
        net.command("lb", "haproxy")
            .args(["-db", "-f", &cfg])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let front = net.addr(lb);

    // Four users: HAProxy spreads them over both nodes, the nodes over both
    // hosts (least connections, counted across the cluster).
    let clients: Vec<Client> = ["u1", "u2", "u3", "u4"]
        .iter()
        .map(|u| client(&net, &dir, &front, u))
        .collect();
    let four = ["u1", "u2", "u3", "u4"];
    wait_until(
        "four users in the cluster view",
        Duration::from_secs(10),
        || cluster_list(&sock2).is_some_and(|v| placed(&v).len() == 4),
    );
    let view = cluster_list(&sock2).unwrap();
    let p = placed(&view);
    eprintln!("{p:?}");
    let count = |f: &dyn Fn(&(String, String, String)) -> bool| p.iter().filter(|x| f(x)).count();
    let (h1k, h2k) = (
        format!("{}:14600", net.addr(h1)),
        format!("{}:14600", net.addr(h2)),
    );
    assert_eq!(count(&|x| x.0 == "n1"), 2, "{p:?}");
    assert_eq!(count(&|x| x.0 == "n2"), 2, "{p:?}");
    assert_eq!(count(&|x| x.2 == h1k), 2, "{p:?}");
    assert_eq!(count(&|x| x.2 == h2k), 2, "{p:?}");
    assert!(four.iter().all(|u| p.iter().any(|x| x.1 == *u)), "{p:?}");
    // Both nodes see one view.
    wait_until("n1 sees the same", Duration::from_secs(5), || {
        cluster_list(&sock1).is_some_and(|v| placed(&v) == p)
    });
    let nodes: Vec<String> = view.nodes.iter().map(|n| n.name.clone()).collect();
    assert!(
        nodes.contains(&"n1".to_owned()) && nodes.contains(&"n2".to_owned()),
        "{nodes:?}"
    );

    // Node n1 dies: new users come in through n2, and the view drops n1
    // within its expiry.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(x1.proc.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = x1.proc.0.wait();
    std::thread::sleep(Duration::from_secs(1));
    let c5 = client(&net, &dir, &front, "u5");
    wait_until("n1 gone from the view", Duration::from_secs(10), || {
        cluster_list(&sock2).is_some_and(|v| {
            v.nodes.iter().all(|n| n.name != "n1")
                && v.connections.iter().all(|c| c.node != "n1")
                && v.connections
                    .iter()
                    .any(|c| c.user.as_deref() == Some("u5"))
        })
    });

    // Session host h1 stops: new users go to h2, and nobody is told an error.
    let _ = net
        .command("h1", "xpra")
        .args([
            "stop",
            &format!("--socket-dirs={}", dir.join("h1").display()),
        ])
        .output();
    let c6 = client(&net, &dir, &front, "u6");
    // The view is the database's: u6 is in it, with its host, after the
    // next heartbeat (a heartbeat between its login and its connect to
    // the host shows it without one: seen in .ci/run).
    wait_until(
        "u6 and its host in the cluster view",
        Duration::from_secs(10),
        || {
            cluster_list(&sock2).is_some_and(|v| {
                v.connections.iter().any(|c| {
                    c.user.as_deref() == Some("u6")
                        && c.host_key.as_deref().is_some_and(|h| !h.is_empty())
                })
            })
        },
    );
    let view = cluster_list(&sock2).unwrap();
    let u6 = view
        .connections
        .iter()
        .find(|c| c.user.as_deref() == Some("u6"))
        .map(|c| c.host_key.clone().unwrap_or_default());
    assert_eq!(u6.as_deref(), Some(h2k.as_str()), "{:?}", placed(&view));
    drop((clients, c5, c6, x2));
    drop(x1);
}
