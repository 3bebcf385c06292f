//! Upgrades without dropping anyone (issue 15): a second xfwd takes the
//! listening sockets over (`--takeover=CONTROL_SOCKET`) while loadgen
//! clients stream through the first and others connect over and over.
//! No connect may be refused or fail, no draw be lost, reordered or
//! corrupt, no streaming connection be cut; the first xfwd must exit once
//! its last connection has ended, and the second must serve the new ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn takeover_while_streaming_refuses_and_cuts_nobody() {
    let dir = Setup::scratch("upgrade");
    let control_a = dir.join("a.sock");
    let control_b = dir.join("b.sock");
    let mut s = Setup::start(
        dir.clone(),
        "61",
        &["--draw-size=16384", "--draw-rate=400", "--window=64"],
        "allow",
        &[
            "--cores=2".to_owned(),
            format!("--control-socket={}", control_a.display()),
        ],
    );
    let port = s.port;
    // Streams through the first xfwd for 8 s (it must outlive the
    // takeover there: the old xfwd drains it).
    let mut stream = spawn_client(
        &dir,
        port,
        "61",
        "stream",
        &[
            "--connections=4",
            "--duration=8",
            "--ack-every=16",
            "--ping-interval=50",
            "--stall-ms=0",
        ],
    );
    // Connects, handshakes and closes, over and over, across the takeover.
    let mut churn = spawn_client(
        &dir,
        port,
        "61",
        "churn",
        &[
            "--connections=2",
            "--duration=6",
            "--handshake-loop",
            "--stall-ms=0",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut b = Proc::start(
        xfwd_serving()
            .arg(format!("--bind-tcp=127.0.0.1:{port}"))
            .arg("--tcp-auth=allow")
            .arg(format!("--socket-dir={}", dir.join("sockets").display()))
            .arg("--cores=2")
            .arg(format!("--control-socket={}", control_b.display()))
            .arg(format!("--takeover={}", control_a.display()))
            .arg("--drain-timeout=60"),
        dir.join("xfwd-b.log"),
    );
    let b_log = dir.join("xfwd-b.log");
    wait_for(
        || {
            std::fs::read_to_string(&b_log)
                .unwrap_or_default()
                .contains("took the listening sockets over")
        },
        "the new xfwd to take over",
        &mut b,
    );
    for (what, p) in [("stream", &mut stream), ("churn", &mut churn)] {
        let deadline = Instant::now() + Duration::from_secs(40);
        while p.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{what} client did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let ctx = |s: &Setup, b: &Proc| format!("{}\nnew xfwd log:\n{}", s.logs(), b.log());
    let r = report(&dir, "stream").unwrap_or_else(|| panic!("no stream report\n{}", ctx(&s, &b)));
    assert_eq!(n(&r, &["connections_ok"]), 4, "{r:#}\n{}", ctx(&s, &b));
    assert_eq!(n(&r, &["connections_failed"]), 0, "{r:#}");
    assert_eq!(n(&r, &["connections_dropped"]), 0, "{r:#}\n{}", ctx(&s, &b));
    assert!(n(&r, &["draws"]) > 0, "{r:#}");
    assert_eq!(
        n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
        0,
        "{r:#}"
    );
    let c = report(&dir, "churn").unwrap_or_else(|| panic!("no churn report\n{}", ctx(&s, &b)));
    assert_eq!(
        n(&c, &["connections_failed"]),
        0,
        "a connect failed across the takeover: {c:#}\n{}",
        ctx(&s, &b)
    );
    assert!(n(&c, &["connections_ok"]) > 10, "{c:#}");
    eprintln!(
        "streamed {} draws on 4 connections, {} handshakes across the takeover, 0 failed",
        n(&r, &["draws"]),
        n(&c, &["connections_ok"])
    );
    // New connections went to the new xfwd once it listened.
    assert!(b.log().contains("closed"), "{}", b.log());
    // The old xfwd drained and exited on its own, 0; the new one serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.xfwd.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the old xfwd did not exit after draining\n{}",
            ctx(&s, &b)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}\n{}", ctx(&s, &b));
    let old = s.xfwd.log();
    assert!(old.contains("taken over by a new xfwd"), "{old}");
    assert!(old.contains("drained: every connection has ended"), "{old}");
    assert!(!control_a.exists(), "the old control socket is gone");
    assert!(b.child.try_wait().unwrap().is_none(), "{}", b.log());
    let (code, after) = s.client("after", "u:any", "61", &["--connections=2", "--duration=1"]);
    assert_eq!(n(&after, &["connections_ok"]), 2, "{after:#}\n{}", b.log());
    assert_eq!(code, 0, "{after:#}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(b.child.wait().unwrap().success(), "{}", b.log());
}

#[test]
fn a_takeover_that_fails_leaves_the_old_xfwd_serving() {
    let dir = Setup::scratch("upgrade-fails");
    let control_a = dir.join("a.sock");
    let mut s = Setup::start(
        dir.clone(),
        "62",
        &[],
        "allow",
        &[format!("--control-socket={}", control_a.display())],
    );
    // The new xfwd's configuration does not build (a certificate that is
    // not there): it exits non-zero and says why ...
    let out = xfwd_serving()
        .arg(format!("--bind-tcp=127.0.0.1:{}", s.port))
        .arg("--ssl-cert=/nonexistent/cert.pem")
        .arg(format!("--control-socket={}", dir.join("b.sock").display()))
        .arg(format!("--takeover={}", control_a.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // ... and the old one serves on, accepting, with its control socket.
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.xfwd.child.try_wait().unwrap().is_none(), "{}", s.logs());
    let (code, r) = s.client("after", "u:any", "62", &["--connections=2", "--duration=1"]);
    assert_eq!(n(&r, &["connections_ok"]), 2, "{r:#}\n{err}\n{}", s.logs());
    assert_eq!(code, 0);
    assert!(control_a.exists());
    let list = Command::new(xfwd())
        .args(["list", &format!("--control-socket={}", control_a.display())])
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
}
