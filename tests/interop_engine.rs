//! Interop: Debian's real xpra 3.1.3 through xfwd.
//!
//! Each test starts real `xpra start` sessions (with xterm) in a private
//! socket dir, an `xfwd` binary that searches only that dir, and a real
//! `xpra attach` client on its own Xvfb display, then checks what a user
//! would see: the xterm window on the client's display, the reasons given
//! when things end. Needs `apt-get install -y xpra xvfb x11-utils xterm`;
//! fails when they are missing unless `XFWD_SKIP_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn attach_by_display_and_quit_closes_upstream() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("named");
    let session = Session::start(free_display(171), &dir);
    let client_display = free_display(session.display + 1);
    let _x = xvfb(client_display);
    let mut xfwd = Xfwd::start(&dir, &["--tcp-auth=allow"]);

    let (mut client, log) = attach(
        xfwd.port,
        &session.display.to_string(),
        client_display,
        &dir,
        &[],
    );
    wait_until(
        "the xterm window on the client's display",
        Duration::from_secs(45),
        || windows(client_display).contains("xterm"),
    );
    assert!(read(&log).contains("Attached to") || windows(client_display).contains("xterm"));

    // The client quits: xfwd closes the upstream connection and says so.
    let _ = Command::new("kill").arg(client.0.id().to_string()).status();
    assert!(
        wait_exit(&mut client, Duration::from_secs(20)),
        "client did not exit"
    );
    xfwd.wait_log("closed up_bytes", Duration::from_secs(10));
    let l = xfwd.log();
    // The client that quits says so, or its socket is gone under a write
    // of the session's draws first (a client that paints: seen in CI).
    assert!(
        l.contains("client disconnected")
            || l.contains("client connection ended")
            || l.contains("client connection lost"),
        "{l}"
    );
    eprintln!("xfwd log:\n{l}");
    assert!(xfwd.alive());
}

#[test]
fn display_omitted_bencode_and_several_sessions() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("omitted");
    let one = Session::start(free_display(181), &dir);
    let client_display = free_display(one.display + 1);
    let _x = xvfb(client_display);
    let mut xfwd = Xfwd::start(&dir, &["--tcp-auth=allow"]);

    // One session, no display named, a client speaking bencode.
    let (mut client, _log) = attach(
        xfwd.port,
        "",
        client_display,
        &dir,
        &[("XPRA_USE_RENCODER", "0")],
    );
    wait_until(
        "the xterm window (bencode client)",
        Duration::from_secs(45),
        || windows(client_display).contains("xterm"),
    );
    assert!(client_kill(&mut client), "client did not exit");

    // Two sessions, none named: the client is told which exist.
    let two = Session::start(free_display(client_display + 1), &dir);
    let (mut client, log) = attach(xfwd.port, "", client_display, &dir, &[]);
    assert!(
        wait_exit(&mut client, Duration::from_secs(30)),
        "client should be refused"
    );
    let text = read(&log);
    let expect = format!(
        "please specify a display: found :{}, :{}",
        one.display, two.display
    );
    assert!(
        text.contains(&expect),
        "client output lacks {expect:?}:\n{text}"
    );
    // A display that does not exist.
    let (mut client, log) = attach(xfwd.port, "7", client_display, &dir, &[]);
    assert!(wait_exit(&mut client, Duration::from_secs(30)));
    assert!(
        read(&log).contains("session :7 not found"),
        "{}",
        read(&log)
    );
    assert!(xfwd.alive());
}

#[test]
fn stopping_the_session_disconnects_the_client_with_a_reason() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("stop");
    let session = Session::start(free_display(191), &dir);
    let client_display = free_display(session.display + 1);
    let _x = xvfb(client_display);
    let mut xfwd = Xfwd::start(&dir, &["--tcp-auth=allow"]);
    let (mut client, log) = attach(
        xfwd.port,
        &session.display.to_string(),
        client_display,
        &dir,
        &[],
    );
    wait_until("the xterm window", Duration::from_secs(45), || {
        windows(client_display).contains("xterm")
    });
    let started = Instant::now();
    session.stop();
    assert!(
        wait_exit(&mut client, Duration::from_secs(30)),
        "client still attached"
    );
    let text = read(&log);
    assert!(
        text.contains("server shutdown") || text.contains("server requested disconnect"),
        "client was not told why:\n{text}"
    );
    xfwd.wait_log("closed up_bytes", Duration::from_secs(10));
    eprintln!("session stop to client exit: {:?}", started.elapsed());
    assert!(xfwd.alive(), "xfwd must keep serving");
    // Nothing left to route to: a new client gets the reason.
    let (mut c2, log2) = attach(xfwd.port, "", client_display, &dir, &[]);
    assert!(wait_exit(&mut c2, Duration::from_secs(30)));
    assert!(
        read(&log2).contains("no xpra sessions found"),
        "{}",
        read(&log2)
    );
}
