//! The control socket and `xfwd list | info | stop`, against the xfwd
//! binary relaying fake clients to fake sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::xpra::{dict, echo_session, hostname, Peer};
use common::{scratch, wait_exit, wait_until, Xfwd};
use xfwd::engine::control::Response;
use xfwd::engine::registry::ConnInfo;
use xfwd::wire::views::{Close, Hello};
use xfwd::wire::Value;

const BIN: &str = env!("CARGO_BIN_EXE_xfwd");

fn hello(user: &str, display: u32, extra: Vec<(&str, Value)>) -> Vec<Value> {
    let mut c = vec![
        ("version", Value::from("3.1.3")),
        ("username", Value::from(user)),
        ("uuid", Value::from(format!("uuid-{user}"))),
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
    echo(&mut c, 1000);
    c
}

/// A packet of `size` bytes comes back.
fn echo(c: &mut Peer<TcpStream>, size: usize) {
    let data = vec![7u8; size];
    c.send(vec![
        Value::from("draw"),
        Value::Int(1),
        Value::Bytes(data.clone().into()),
    ]);
    let back = c.recv().expect("the echo");
    assert_eq!(back.packet_type(), Some("draw"));
    assert_eq!(back.items[2].as_bytes().unwrap(), &data[..]);
}

/// The client's address, as xfwd sees it.
fn addr_of(c: &Peer<TcpStream>) -> String {
    c.s.local_addr().unwrap().to_string()
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--control-socket")
        .arg(socket)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn list_json(socket: &Path) -> Vec<ConnInfo> {
    let o = ctl(socket, &["list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// One raw exchange on the control socket.
fn raw(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn raw_response(socket: &Path, bytes: &[u8]) -> Response {
    let out = raw(socket, bytes);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches('\n').count(), 1, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn start(dir: &Path, socket: &Path) -> Xfwd {
    Xfwd::start(
        dir,
        &[
            "--tcp-auth=allow",
            "--ping-interval=0",
            &format!("--control-socket={}", socket.display()),
        ],
    )
}

#[test]
fn list_info_and_stop() {
    let dir = scratch("control");
    echo_session(&dir, 51);
    echo_session(&dir, 52);
    let socket = dir.join("ctl").join("control.sock");
    // A stale socket file where the control socket goes is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(UnixListener::bind(&socket).unwrap());
    let mut x = start(&dir, &socket);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let mut alice = client(x.port, "alice", 51);
    let mut bob = client(x.port, "bob", 52);
    let mut carol = client(x.port, "carol", 51);

    // `xfwd list`: a header, then one line each, bytes both ways.
    let o = ctl(&socket, &["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("ID"), "{text}");
    for (user, d, c) in [
        ("alice", 51, &alice),
        ("bob", 52, &bob),
        ("carol", 51, &carol),
    ] {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().nth(2) == Some(user))
            .unwrap_or_else(|| panic!("no {user} in {text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[3], addr_of(c), "{line}");
        assert_eq!(cols[4], format!(":{d}"), "{line}");
        assert_eq!(cols[5], "relaying", "{line}");
        let up: u64 = cols[7].parse().unwrap();
        let down: u64 = cols[8].parse().unwrap();
        assert!(up >= 1000 && down >= 1000, "{line}");
    }

    // `xfwd info --json`: the server and its connections.
    let o = ctl(&socket, &["info", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Response = serde_json::from_slice(&o.stdout).unwrap();
    let server = r.server.unwrap();
    assert_eq!(server.connections, 3);
    assert_eq!(server.shards, 2);
    assert_eq!(server.pid, x.proc.0.id());
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(server.hostname, hostname());
    assert_eq!(server.control_socket, socket.display().to_string());
    assert!(server
        .listeners
        .contains(&format!("tcp:127.0.0.1:{}", x.port)));
    let conns = r.connections.unwrap();
    assert_eq!(conns.len(), 3);
    let id_of = |user: &str| {
        conns
            .iter()
            .find(|c| c.user.as_deref() == Some(user))
            .unwrap()
            .id
    };
    let bob_id = id_of("bob");
    let o = ctl(&socket, &["info"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("connections:    3"), "{}", stdout(&o));

    // One connection.
    let o = ctl(
        &socket,
        &["info", "--json", "--connection", &bob_id.to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let c: ConnInfo = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c.id, bob_id);
    assert_eq!(c.user.as_deref(), Some("bob"));
    assert_eq!(c.target.as_deref(), Some("session :52"));
    assert!(c.client_to_session_bytes >= 1000 && c.session_to_client_bytes >= 1000);
    let o = ctl(&socket, &["info", "--connection", &bob_id.to_string()]);
    assert!(stdout(&o).contains("bob"), "{}", stdout(&o));
    for args in [
        &["info", "--connection", "999999"][..],
        &["stop", "--connection", "999999"][..],
    ] {
        let o = ctl(&socket, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("no connection 999999"),
            "{}",
            stderr(&o)
        );
    }

    // Stopping bob: his client is told why; the others keep relaying.
    let o = ctl(&socket, &["stop", "--connection", &bob_id.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let close = bob.recv().expect("a close packet for bob");
    assert_eq!(
        Close::parse(&close.items).unwrap().reason(),
        "stopped by administrator"
    );
    assert!(bob.recv().is_none());
    echo(&mut alice, 5000);
    echo(&mut carol, 5000);
    wait_until("bob gone from the list", Duration::from_secs(20), || {
        list_json(&socket).iter().all(|c| c.id != bob_id)
    });
    assert_eq!(list_json(&socket).len(), 2);

    // Bad requests get an error and do no harm.
    let r = raw_response(&socket, b"this is not json\n");
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("bad request"));
    let r = raw_response(&socket, b"{\"cmd\":\"reboot\"}\n");
    assert!(r.error.unwrap().contains("unknown variant"));
    let r = raw_response(&socket, &vec![b'x'; 100_000]);
    assert!(r.error.unwrap().contains("too long"));
    let r = raw_response(&socket, b"{\"cmd\":\"list\"}\n");
    assert!(r.ok);
    assert_eq!(r.connections.unwrap().len(), 2);

    // xpra clients: an info request is answered, anything else is told
    // what this socket is.
    let mut p = Peer::new(UnixStream::connect(&socket).unwrap());
    p.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    p.send(hello("x", 1, vec![("request", Value::from("info"))]));
    let info = p.recv().expect("an info hello");
    let h = Hello::parse(&info.items).unwrap();
    let s = h.get("server").unwrap().as_dict().unwrap();
    let get = |k: &str| {
        s.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|e| &e.1)
    };
    assert_eq!(get("type").unwrap().as_str(), Some("xfwd"));
    assert_eq!(get("connections").unwrap().as_int(), Some(2));
    let mut p = Peer::new(UnixStream::connect(&socket).unwrap());
    p.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    p.send(hello("x", 1, vec![]));
    let close = p.recv().expect("a close packet");
    assert!(Close::parse(&close.items)
        .unwrap()
        .reason()
        .contains("control socket"));

    // A second xfwd on the same control socket refuses to start.
    let o = Command::new(BIN)
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{}", common::free_port()))
        .arg(format!("--control-socket={}", socket.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("another xfwd answers on it"),
        "{}",
        stderr(&o)
    );
    assert!(x.alive());
    assert!(socket.exists());

    // `xfwd stop`: the whole server, as SIGTERM.
    let o = ctl(&socket, &["stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        wait_exit(&mut x.proc, Duration::from_secs(30)),
        "still running"
    );
    let status = x.proc.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let close = alice.recv().expect("a close packet for alice");
    assert_eq!(
        Close::parse(&close.items).unwrap().reason(),
        "server shutdown"
    );
    assert!(!socket.exists(), "the control socket is left behind");
    let o = ctl(&socket, &["list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
}

/// A user to run the client as, and a binary it may run.
fn other_user(dir: &Path) -> Option<(u32, u32, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root, skipping the other-user check");
        return None;
    }
    let name = "xfwd-ctl-test";
    let find = || nix::unistd::User::from_name(name).ok().flatten();
    if find().is_none() {
        let ok = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok || find().is_some(), "useradd {name} failed");
    }
    let u = find().unwrap();
    let (uid, gid) = (u.uid.as_raw(), u.gid.as_raw());
    // The test binary's directory may be closed to that user.
    let runs = |bin: &Path| as_user(uid, gid, bin, &["--version"], &[]).status.success();
    let mut bin = PathBuf::from(BIN);
    if !runs(&bin) {
        let copy = dir.join("xfwd");
        std::fs::copy(BIN, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin = copy;
        assert!(runs(&bin), "uid {uid} cannot run {}", bin.display());
    }
    Some((uid, gid, bin))
}

fn as_user(uid: u32, gid: u32, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn other_users_are_refused() {
    let dir = scratch("control-uid");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some((uid, gid, bin)) = other_user(&dir) else {
        return;
    };
    let socket = dir.join("control.sock");
    let s = socket.to_str().unwrap();
    let mut x = start(&dir, &socket);

    // The socket's mode keeps others out.
    let o = as_user(uid, gid, &bin, &["list", "--control-socket", s], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("ermission denied"), "{}", stderr(&o));
    // And so do the peer's credentials, should the mode be opened.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for cmd in [&["list"][..], &["stop"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--control-socket", s]);
        let o = as_user(uid, gid, &bin, &args, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("permission denied: uid {uid}")),
            "{}",
            stderr(&o)
        );
    }
    assert!(x.alive());
    let o = ctl(&socket, &["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Without --control-socket and none running where it looks: said so.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = as_user(
        uid,
        gid,
        &bin,
        &["info"],
        &[("XDG_RUNTIME_DIR", empty.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "no running xfwd found in {}",
            empty.join("xfwd").display()
        )),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real `xpra info` and `xpra stop`, aimed at the control socket.
#[test]
fn xpra_info_and_stop_work_on_the_control_socket() {
    if !common::have("xpra") {
        assert!(
            !common::skip_interop("xpra info/stop check"),
            "this check needs xpra: apt-get install -y xpra (or set XFWD_SKIP_INTEROP=1)"
        );
        return;
    }
    let dir = scratch("control-xpra");
    let socket = dir.join("control.sock");
    let mut x = start(&dir, &socket);
    echo_session(&dir, 53);
    let _dave = client(x.port, "dave", 53);
    let uri = format!("socket://{}", socket.display());
    let xpra = |cmd: &str| {
        let o = Command::new("timeout")
            .args(["60", "xpra", cmd, &uri])
            .env("PATH", common::SYSTEM_PATH)
            .output()
            .unwrap();
        (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
    };
    let (code, out) = xpra("info");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("server.type=xfwd"), "{out}");
    assert!(out.contains("server.connections=1"), "{out}");
    assert!(out.contains(".user=dave"), "{out}");
    let (code, out) = xpra("stop");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("server shutdown"), "{out}");
    assert!(
        wait_exit(&mut x.proc, Duration::from_secs(30)),
        "still running"
    );
    assert!(x.proc.0.wait().unwrap().success());
    assert!(!socket.exists());
}
