//! Session host pools (issue 16): users whose auth data names `pool:gpu`
//! spread over the pool's hosts by least connections, go back to the host
//! of their session, skip a host that is down, and are told when none is
//! live. Against the xfwd binary, with fake session hosts on TCP (they
//! say who they are in their hello) and, for the main case, real xpra
//! 3.1.3 sessions listening on TCP with real `xpra attach` clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use common::xpra::{dict, Peer};
use common::{scratch, wait_until, Xfwd};
use xfwd::engine::registry::ConnInfo;
use xfwd::wire::views::Challenge;
use xfwd::wire::Value;

const BIN: &str = env!("CARGO_BIN_EXE_xfwd");

/// A fake session host on TCP: answers the hello with its name
/// (`session-host`), then echoes, until stopped (the listener closes and
/// every connection is cut, as when a host goes down).
struct FakeHost {
    name: &'static str,
    port: u16,
    live: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHost {
    fn start(name: &'static str) -> FakeHost {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (l2, s2, c2) = (live.clone(), stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let s = match l.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                s.set_nonblocking(false).unwrap();
                c2.lock().unwrap().push(s.try_clone().unwrap());
                let live = l2.clone();
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    let mut p = Peer::new(s);
                    if p.recv().is_none() {
                        return;
                    }
                    live.fetch_add(1, Ordering::SeqCst);
                    let hello = [
                        Value::from("hello"),
                        dict(vec![
                            ("version", Value::from("3.1.3")),
                            ("session-host", Value::from(name)),
                        ]),
                    ];
                    if p.try_send(&hello).is_ok() {
                        while let Some(pk) = p.recv() {
                            if p.try_send(&pk.items).is_err() {
                                break;
                            }
                        }
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
            // the listener closes here
        });
        FakeHost {
            name,
            port,
            live,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}/", self.port)
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The host goes down: nothing listens on its port any more, and its
    /// connections are cut.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        wait_until(
            &format!("{}'s sessions gone", self.name),
            Duration::from_secs(10),
            || self.live() == 0,
        );
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hello(user: &str, extra: Vec<(&str, Value)>) -> Vec<Value> {
    let mut c = vec![
        ("version", Value::from("3.1.3")),
        ("username", Value::from(user)),
        ("digest", Value::List(vec!["hmac+sha256".into()])),
        ("salt-digest", Value::List(vec!["hmac+sha256".into()])),
    ];
    c.extend(extra);
    vec![Value::from("hello"), dict(c)]
}

fn cap<'a>(items: &'a [Value], key: &str) -> Option<&'a Value> {
    match items.get(1) {
        Some(Value::Dict(d)) => d
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// `user` logs in (password `pw-USER`) through xfwd: the session host's
/// name and the live connection, or the reason the client was told.
fn login(port: u16, user: &str) -> Result<(String, Peer<TcpStream>), String> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut c = Peer::new(s);
    c.send(hello(user, vec![]));
    let ch = c.recv().expect("a challenge");
    assert_eq!(ch.packet_type(), Some("challenge"), "{ch:?}");
    let challenge = Challenge::parse(&ch.items).unwrap();
    let a = xfwd::auth::client_answer(&challenge, format!("pw-{user}").as_bytes()).unwrap();
    let response = String::from_utf8(a.response.as_bytes().to_vec()).unwrap();
    c.send(hello(
        user,
        vec![
            ("challenge_response", Value::from(response)),
            (
                "challenge_client_salt",
                Value::Bytes(Bytes::from(a.client_salt.unwrap())),
            ),
        ],
    ));
    let p = c.recv().expect("an answer");
    match p.packet_type() {
        Some("hello") => {
            let host = cap(&p.items, "session-host")
                .and_then(Value::as_str)
                .expect("the host's name")
                .to_owned();
            // Relayed both ways.
            c.send(vec![Value::from("echo-me"), Value::Int(7)]);
            let back = c.recv().expect("the echo");
            assert_eq!(back.packet_type(), Some("echo-me"));
            Ok((host, c))
        }
        Some("disconnect") => Err(p
            .items
            .iter()
            .skip(1)
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")),
        other => panic!("unexpected {other:?}: {p:?}"),
    }
}

fn list_json(socket: &Path) -> Vec<ConnInfo> {
    let o = Command::new(BIN)
        .args(["list", "--json", "--control-socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A multifile auth file: each user with password `pw-USER` and these
/// displays.
fn users(dir: &Path, users: &[(&str, &str)]) -> String {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let text: String = users
        .iter()
        .map(|(u, displays)| format!("{u}|pw-{u}|{uid}|{gid}|{displays}||\n"))
        .collect();
    let f = dir.join("users.txt");
    std::fs::write(&f, text).unwrap();
    format!("--tcp-auth=multifile,filename={}", f.display())
}

#[test]
fn pooled_users_spread_stick_and_fail_over() {
    let dir = scratch("pools-fake");
    let mut a = FakeHost::start("a");
    let mut b = FakeHost::start("b");
    let names: Vec<String> = (1..=12).map(|i| format!("u{i}")).collect();
    let mut table: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "pool:gpu")).collect();
    table.push(("lost", "pool:nope"));
    let auth = users(&dir, &table);
    let socket = dir.join("control.sock");
    let metrics_port = common::free_port();
    let xfwd = Xfwd::start(
        &dir,
        &[
            &auth,
            &format!("--session-pool=gpu={},{}", a.uri(), b.uri()),
            "--ping-interval=0",
            &format!("--bind-metrics=127.0.0.1:{metrics_port}"),
            &format!("--control-socket={}", socket.display()),
        ],
    );
    let port = xfwd.port;

    // Four users: least connections puts two on each host.
    let mut conns: BTreeMap<String, (String, Peer<TcpStream>)> = BTreeMap::new();
    for u in &names[..4] {
        let c = login(port, u).unwrap();
        conns.insert(u.clone(), c);
    }
    let on = |conns: &BTreeMap<String, (String, Peer<TcpStream>)>, h: &str| {
        conns.values().filter(|(host, _)| host == h).count()
    };
    assert_eq!((on(&conns, "a"), on(&conns, "b")), (2, 2), "{:?}", {
        conns.iter().map(|(u, (h, _))| (u, h)).collect::<Vec<_>>()
    });
    assert_eq!((a.live(), b.live()), (2, 2));

    // `xfwd list` shows the host each pooled connection was given.
    let listed = list_json(&socket);
    for (u, (h, _)) in &conns {
        let port = if h == "a" { a.port } else { b.port };
        let info = listed
            .iter()
            .find(|i| i.user.as_deref() == Some(u))
            .expect("listed");
        assert_eq!(
            info.target.as_deref(),
            Some(format!("session tcp://127.0.0.1:{port}/").as_str()),
            "{info:?}"
        );
    }

    // Sticky: u1 leaves, and so does everyone on the other host; u1
    // comes back to its own host, though it is now the busier one.
    let (home, c) = conns.remove("u1").unwrap();
    drop(c);
    conns.retain(|_, (h, _)| *h == home);
    let gone = |u: &str| {
        !list_json(&socket)
            .iter()
            .any(|i| i.user.as_deref() == Some(u))
    };
    wait_until("the others gone", Duration::from_secs(10), || {
        list_json(&socket).len() == 1
    });
    let (home_host, other_host) = if home == "a" { (&a, &b) } else { (&b, &a) };
    assert_eq!((home_host.live(), other_host.live()), (1, 0));
    let (h, c1) = login(port, "u1").unwrap();
    assert_eq!(h, home, "u1 goes back to the host of its session");
    // A newcomer goes to the idle host.
    let (h, c5) = login(port, "u5").unwrap();
    assert_ne!(h, home);
    conns.insert("u1".into(), (home.clone(), c1));
    conns.insert("u5".into(), (h, c5));
    assert!(!gone("u1"));

    // One host goes down: every new user goes to the other one, nobody is
    // told an error; u1 (whose host it may be) too.
    let (down_name, up_name) = ("a", "b");
    a.stop();
    conns.retain(|_, (h, _)| h != down_name);
    for u in &names[5..10] {
        let (h, c) = login(port, u).unwrap_or_else(|e| panic!("{u} refused: {e}"));
        assert_eq!(h, up_name, "{u}");
        conns.insert(u.clone(), (h, c));
    }
    drop(conns.remove("u1"));
    wait_until("u1 gone", Duration::from_secs(10), || gone("u1"));
    let (h, c) = login(port, "u1").unwrap();
    assert_eq!(h, up_name);
    conns.insert("u1".into(), (h, c));
    assert!(xfwd.log().contains("pool host failed"), "{}", xfwd.log());
    assert_eq!(hosts_down(metrics_port), Some(1));

    // An unknown pool is named.
    assert_eq!(
        login(port, "lost").map(|(h, _)| h).unwrap_err(),
        "no such session pool: nope"
    );

    // All hosts down: the client is told.
    b.stop();
    conns.clear();
    let e = login(port, "u11").map(|(h, _)| h).unwrap_err();
    assert_eq!(e, "no live host in pool gpu");
    // (and again, with both marked down: still tried, still told)
    let e = login(port, "u12").map(|(h, _)| h).unwrap_err();
    assert_eq!(e, "no live host in pool gpu");
    assert_eq!(hosts_down(metrics_port), Some(2));
}

/// `xfwd_pool_hosts_down{pool="gpu"}` in a scrape.
fn hosts_down(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix("xfwd_pool_hosts_down{pool=\"gpu\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_config_file_defines_pools_as_a_table() {
    let dir = scratch("pools-toml");
    let a = FakeHost::start("a");
    let auth = users(&dir, &[("t1", "pool:gpu")]);
    let f = dir.join("xfwd.toml");
    std::fs::write(
        &f,
        format!(
            "ping-interval = 0\n[session-pools]\ngpu = [\"{}\"]\n",
            a.uri()
        ),
    )
    .unwrap();
    let xfwd = Xfwd::start(&dir, &[&auth, &format!("--config={}", f.display())]);
    let (h, _c) = login(xfwd.port, "t1").unwrap();
    assert_eq!(h, "a");
    // A bad pool is refused at start, naming the option.
    let o = Command::new(BIN)
        .args([
            "--system-wide=no",
            "--check-config",
            "--session-pool=gpu=:100",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(text.contains("--session-pool"), "{text}");
}

/// `xpra attach` as `user` through xfwd, kept running: its client display
/// (an Xvfb) shows the session's xterm.
struct Attached {
    client: common::Proc,
    log: std::path::PathBuf,
    _x: common::Proc,
}

fn attach(port: u16, user: &str, dir: &Path, from: u32) -> Attached {
    let display = common::free_display(from);
    let x = common::xvfb(display);
    let pwf = common::password_file(dir, &format!("{user}.pw"), &format!("pw-{user}"));
    let (client, log) = common::attach_uri(
        &format!("tcp://{user}@127.0.0.1:{port}/"),
        display,
        dir,
        &[],
        &[&pwf],
    );
    wait_until(
        &format!("{user}'s xterm on :{display}"),
        Duration::from_secs(45),
        || common::windows(display).contains("xterm"),
    );
    Attached { client, log, _x: x }
}

/// The target `xfwd list` shows for `user`'s relayed connection.
fn target_of(socket: &Path, user: &str) -> String {
    let mut found = None;
    wait_until(&format!("{user} relayed"), Duration::from_secs(20), || {
        found = list_json(socket)
            .into_iter()
            .find(|i| i.user.as_deref() == Some(user) && i.phase == "relaying")
            .and_then(|i| i.target);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn real_xpra_sessions_as_a_pool() {
    if !common::tools_present() {
        return;
    }
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("pools-xpra");
    let (p1, p2) = (common::free_port(), common::free_port());
    let s1 = common::Session::start_with(
        common::free_display(261),
        &dir,
        &[&format!("--bind-tcp=127.0.0.1:{p1}"), "--tcp-auth=none"],
    );
    let s2 = common::Session::start_with(
        common::free_display(s1.display + 1),
        &dir,
        &[&format!("--bind-tcp=127.0.0.1:{p2}"), "--tcp-auth=none"],
    );
    let host1 = format!("session tcp://127.0.0.1:{p1}/");
    let host2 = format!("session tcp://127.0.0.1:{p2}/");
    let auth = users(
        &dir,
        &[
            ("alice", "pool:gpu"),
            ("bob", "pool:gpu"),
            ("carol", "pool:gpu"),
            ("dave", "pool:gpu"),
        ],
    );
    let socket = dir.join("control.sock");
    let xfwd = Xfwd::start(
        &dir,
        &[
            &auth,
            &format!("--session-pool=gpu=tcp://127.0.0.1:{p1}/,tcp://127.0.0.1:{p2}/"),
            &format!("--control-socket={}", socket.display()),
        ],
    );
    let from = s2.display + 1;
    // Two users: one on each host (least connections).
    let alice = attach(xfwd.port, "alice", &dir, from);
    let on_alice = target_of(&socket, "alice");
    let bob = attach(xfwd.port, "bob", &dir, from);
    let on_bob = target_of(&socket, "bob");
    assert_ne!(on_alice, on_bob, "the users spread over both hosts");
    for t in [&on_alice, &on_bob] {
        assert!(*t == host1 || *t == host2, "{t}");
    }
    // Alice's host stops: a new user goes to the other host, with no
    // error; alice, attaching again, too.
    let (down, up) = if on_alice == host1 {
        (&s1, &host2)
    } else {
        (&s2, &host1)
    };
    down.stop();
    let mut alice = alice;
    assert!(
        common::wait_exit(&mut alice.client, Duration::from_secs(30)),
        "alice's client is told its session went: {}",
        common::read(&alice.log)
    );
    let carol = attach(xfwd.port, "carol", &dir, from);
    assert_eq!(&target_of(&socket, "carol"), up);
    drop(carol);
    let alice = attach(xfwd.port, "alice", &dir, from);
    assert_eq!(&target_of(&socket, "alice"), up);
    drop(alice);
    drop(bob);
    // Both hosts stopped: the client is told none is live.
    s1.stop();
    s2.stop();
    let display = common::free_display(from);
    let _x = common::xvfb(display);
    let pwf = common::password_file(&dir, "dave.pw", "pw-dave");
    let (mut dave, log) = common::attach_uri(
        &format!("tcp://dave@127.0.0.1:{}/", xfwd.port),
        display,
        &dir,
        &[],
        &[&pwf],
    );
    assert!(
        common::wait_exit(&mut dave, Duration::from_secs(40)),
        "dave's client still running"
    );
    let text = common::read(&log);
    assert!(text.contains("no live host in pool gpu"), "{text}");
}

#[test]
fn the_active_health_check_marks_a_dead_host_before_anyone_tries_it() {
    let dir = scratch("pools-health");
    let a = FakeHost::start("a");
    // Nothing listens there.
    let dead = common::free_port();
    let auth = users(&dir, &[("h1", "pool:gpu"), ("h2", "pool:gpu")]);
    let metrics_port = common::free_port();
    let xfwd = Xfwd::start(
        &dir,
        &[
            &auth,
            &format!("--session-pool=gpu=tcp://127.0.0.1:{dead}/,{}", a.uri()),
            "--pool-health-interval=1",
            &format!("--bind-metrics=127.0.0.1:{metrics_port}"),
        ],
    );
    xfwd.wait_log("failed its health check", Duration::from_secs(20));
    wait_until("the gauge", Duration::from_secs(20), || {
        hosts_down(metrics_port) == Some(1)
    });
    // Every user goes to the live host, and no user's connection found the
    // dead one first.
    for u in ["h1", "h2"] {
        let (h, _c) = login(xfwd.port, u).unwrap();
        assert_eq!(h, "a");
    }
    assert!(!xfwd.log().contains("pool host failed:"), "{}", xfwd.log());
}
