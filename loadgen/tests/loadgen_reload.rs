//! Reloads (issue 15): SIGHUP and `xfwd reload` read the config file
//! again; new connections get the new authentication (a password file
//! changed, a sqlite database changed, one module for another), a
//! connection already relaying is untouched, and a configuration that is
//! not valid, or that changes what only a restart can, is refused with
//! the reason while the running one stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::*;

/// Writes the config file: `auth` is the `tcp-auth` value, `extra` more
/// lines.
fn write_config(dir: &Path, port: u16, auth: &str, extra: &str) {
    let text = format!(
        "bind-tcp = \"127.0.0.1:{port}\"\n\
         socket-dir = [\"{}\"]\n\
         control-socket = \"{}\"\n\
         cores = 1\n\
         tcp-auth = \"{auth}\"\n{extra}",
        dir.join("sockets").display(),
        dir.join("control.sock").display(),
    );
    std::fs::write(dir.join("xfwd.toml"), text).unwrap();
}

/// One short client as `user:pass`: did its connection get through?
fn gets_in(dir: &Path, port: u16, user: &str, pass: &str) -> bool {
    let json = dir.join("probe.json");
    let _ = std::fs::remove_file(&json);
    Command::new(loadgen())
        .arg("client")
        .arg(format!("--connect=tcp://{user}:{pass}@127.0.0.1:{port}/63"))
        .arg(format!("--json={}", json.display()))
        .args(["--quiet", "--threads=1", "--timeout=15", "--connections=1"])
        .args(["--duration=20", "--hold-after-ready=0", "--stall-ms=0"])
        .output()
        .unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    n(&r, &["connections_ok"]) == 1
}

fn sqlite(dir: &Path, args: &[&str]) {
    let out = Command::new(xfwd())
        .args(["auth", "sqlite"])
        .arg(dir.join("users.db"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn reload_cmd(dir: &Path) -> std::process::Output {
    Command::new(xfwd())
        .arg("reload")
        .arg(format!(
            "--control-socket={}",
            dir.join("control.sock").display()
        ))
        .output()
        .unwrap()
}

/// SIGHUPs xfwd and waits for its `count`-th reload log line.
fn sighup(dir: &Path, xfwd: &mut Proc, count: usize) {
    kill(Pid::from_raw(xfwd.child.id() as i32), Signal::SIGHUP).unwrap();
    let log = dir.join("xfwd.log");
    wait_for(
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("SIGHUP: ")
                .count()
                >= count
        },
        "xfwd to log its reload",
        xfwd,
    );
}

#[test]
fn reload_changes_auth_for_new_connections_only() {
    let dir = Setup::scratch("reload");
    let _session = start_session(
        &dir,
        "63",
        &["--draw-size=8192", "--draw-rate=200"],
        "session.log",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pw = dir.join("pw.txt");
    std::fs::write(&pw, "first").unwrap();
    write_config(&dir, port, &format!("file,filename={}", pw.display()), "");
    let mut xfwd = Proc::start(
        common::xfwd_serving().arg(format!("--config={}", dir.join("xfwd.toml").display())),
        dir.join("xfwd.log"),
    );
    wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "xfwd to listen",
        &mut xfwd,
    );
    // A connection relaying through every reload below, with the first
    // configuration's password.
    let mut streaming = Proc::start(
        Command::new(loadgen())
            .arg("client")
            .arg(format!("--connect=tcp://u:first@127.0.0.1:{port}/63"))
            .arg(format!("--json={}", dir.join("streaming.json").display()))
            .args(["--quiet", "--threads=1", "--connections=1"])
            .args(["--duration=12", "--ack-every=8", "--stall-ms=0"]),
        dir.join("streaming.log"),
    );
    // (Few refusals below: each one delays the next attempts from this
    // address, as xpra's throttle does.)
    assert!(gets_in(&dir, port, "u", "first"));

    // The password file changes and the module changes: sqlite now.
    sqlite(&dir, &["create"]);
    sqlite(&dir, &["add", "alice", "pw1", "0", "0", ":63"]);
    write_config(
        &dir,
        port,
        &format!("sqlite,filename={}", dir.join("users.db").display()),
        "",
    );
    sighup(&dir, &mut xfwd, 1);
    assert!(
        xfwd.log().contains("SIGHUP: configuration reloaded"),
        "{}",
        xfwd.log()
    );
    assert!(gets_in(&dir, port, "alice", "pw1"), "{}", xfwd.log());
    assert!(!gets_in(&dir, port, "u", "first"));

    // The database changes; `xfwd reload` over the control socket.
    sqlite(&dir, &["add", "bob", "pw2", "0", "0", ":63"]);
    let out = reload_cmd(&dir);
    assert!(out.status.success(), "{out:?}\n{}", xfwd.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded"));
    assert!(gets_in(&dir, port, "bob", "pw2"));
    assert!(gets_in(&dir, port, "alice", "pw1"));

    // Back to a (changed) password file.
    std::fs::write(&pw, "third").unwrap();
    write_config(&dir, port, &format!("file,filename={}", pw.display()), "");
    assert!(reload_cmd(&dir).status.success());
    assert!(gets_in(&dir, port, "u", "third"));
    assert!(!gets_in(&dir, port, "alice", "pw1"));

    // A configuration that is not valid: refused, the running one stays.
    write_config(&dir, port, "nosuchmodule", "");
    sighup(&dir, &mut xfwd, 2);
    assert!(
        xfwd.log().contains("SIGHUP: not reloaded"),
        "{}",
        xfwd.log()
    );
    let out = reload_cmd(&dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("nosuchmodule") && err.contains("running configuration stays"),
        "{err}"
    );
    assert!(gets_in(&dir, port, "u", "third"));

    // One that changes a listener: refused, with the option named.
    write_config(
        &dir,
        port.wrapping_add(1),
        &format!("file,filename={}", pw.display()),
        "",
    );
    let out = reload_cmd(&dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("bind-tcp") && err.contains("restart"), "{err}");
    assert!(gets_in(&dir, port, "u", "third"));

    // The connection of the first configuration relayed throughout.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while streaming.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the streaming client did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = report(&dir, "streaming").unwrap_or_else(|| panic!("{}", streaming.log()));
    assert_eq!(n(&r, &["connections_ok"]), 1, "{r:#}\n{}", xfwd.log());
    assert_eq!(n(&r, &["connections_dropped"]), 0, "{r:#}\n{}", xfwd.log());
    assert!(n(&r, &["draws"]) > 0);
    assert_eq!(
        n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
        0,
        "{r:#}"
    );
    assert!(xfwd.child.try_wait().unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
