//! xfwd under systemd (issue 15), without a running systemd:
//!
//! - socket activation with Debian's `systemd-socket-activate` (it listens,
//!   then runs xfwd with `LISTEN_FDS`/`LISTEN_FDNAMES` on the first
//!   connection, as a socket unit does): a real `xpra attach` through the
//!   inherited TCP socket, the inherited Unix socket served too, its file
//!   left to its owner when xfwd stops;
//!   an upgrade in place (SIGUSR2) on those sockets while the client stays
//!   attached to the draining old xfwd;
//! - `Type=notify`: READY=1 once listening, RELOADING=1 (with
//!   MONOTONIC_USEC) then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM,
//!   read from a notify socket of the test's.
//!
//! The interop part needs `apt-get install -y xpra xvfb x11-utils xterm
//! systemd`; it fails when they are missing unless `XFWD_SKIP_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Reads notify messages until one has a line `want`; returns that
/// message.
fn notified(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let (msg, _) = notified_line(sock, |l| l == want, want, seen);
    msg
}

/// Reads notify messages until one has a line `ok` accepts; returns that
/// message and the line (every message read goes to `seen`).
fn notified_line(
    sock: &UnixDatagram,
    ok: impl Fn(&str) -> bool,
    what: &str,
    seen: &mut Vec<String>,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            seen.push(msg.clone());
            if let Some(l) = msg.lines().find(|l| ok(l)) {
                let l = l.to_owned();
                return (msg, l);
            }
        }
    }
    panic!("no {what} from xfwd; it sent {seen:?}");
}

#[test]
fn notify_ready_reloading_stopping() {
    let dir = scratch("sd-notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
    cmd.arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--socket-dirs={}", dir.display()))
        .arg(format!("--control-socket={}", dir.join("c.sock").display()))
        .env("NOTIFY_SOCKET", &path);
    let mut xfwd = Xfwd::spawn(cmd, port);
    let mut seen = Vec::new();
    notified(&sock, "READY=1", &mut seen);
    // Listening by then.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    xfwd.wait_log("xfwd listening", Duration::from_secs(5));
    let pid = nix::unistd::Pid::from_raw(xfwd.proc.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloading = notified(&sock, "RELOADING=1", &mut seen);
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    notified(&sock, "READY=1", &mut seen);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    notified(&sock, "STOPPING=1", &mut seen);
    assert!(wait_exit(&mut xfwd.proc, Duration::from_secs(10)));
    assert!(xfwd.proc.0.try_wait().unwrap().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socket_activation_serves_a_real_xpra_attach() {
    if !tools_present() {
        return;
    }
    if !have("systemd-socket-activate") {
        if skip_interop("systemd-socket-activate (apt-get install -y systemd)") {
            return;
        }
        panic!("this test needs systemd-socket-activate: apt-get install -y systemd");
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("socket-activation");
    let session = Session::start(free_display(191), &dir);
    let client_display = free_display(session.display + 1);
    let _x = xvfb(client_display);
    let port = free_port();
    let unix = dir.join("xfwd.sock");
    let control = dir.join("control.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--listen={}", unix.display()))
        .arg("--fdname=tcp:unix")
        .arg(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--system-wide=no")
        .arg("--tcp-auth=allow")
        .arg("--unix-auth=none")
        .arg(format!("--socket-dirs={}", dir.display()))
        .arg(format!("--control-socket={}", control.display()));
    let mut xfwd = Xfwd::spawn(cmd, port);
    wait_until(
        "systemd-socket-activate to listen",
        Duration::from_secs(10),
        || unix.exists(),
    );
    // The first connection starts xfwd on the sockets.
    let (mut client, _log) = attach(
        port,
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
    let log = xfwd.log();
    assert!(log.contains("listening sockets from systemd"), "{log}");
    assert!(
        !log.contains("127.0.0.1:14501"),
        "no default listener beside systemd's: {log}"
    );
    // Both inherited sockets are listeners.
    let info = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["info", "--json"])
        .arg(format!("--control-socket={}", control.display()))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.contains(&format!("tcp:127.0.0.1:{port}")), "{info}");
    assert!(info.contains(&format!("unix:{}", unix.display())), "{info}");
    // `xpra id` over the inherited Unix socket.
    let id = Command::new("xpra")
        .arg("id")
        .arg(format!("socket://{}", unix.display()))
        .output()
        .unwrap();
    assert!(
        id.status.success(),
        "{}{}",
        String::from_utf8_lossy(&id.stdout),
        String::from_utf8_lossy(&id.stderr)
    );
    // An upgrade in place (SIGUSR2) with systemd's sockets: a new xfwd
    // takes them over, the attached client stays with the old one, which
    // drains; new clients get the new one.
    let old_pid = xfwd.proc.0.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let pid_now = || {
        let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
            .args(["info", "--json"])
            .arg(format!("--control-socket={}", control.display()))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["server"]["pid"].as_i64().unwrap_or(0) as i32
    };
    wait_until("the new xfwd to answer", Duration::from_secs(15), || {
        let p = pid_now();
        p != 0 && p != old_pid
    });
    let new_pid = pid_now();
    xfwd.wait_log("draining draining=1", Duration::from_secs(10));
    let id = Command::new("xpra")
        .arg("id")
        .arg(format!("socket://{}", unix.display()))
        .output()
        .unwrap();
    assert!(id.status.success(), "the new xfwd serves the Unix socket");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        client.0.try_wait().unwrap().is_none() && windows(client_display).contains("xterm"),
        "the attached client stays through the upgrade: {}",
        xfwd.log()
    );
    // The client leaves: the old xfwd has drained, and exits.
    assert!(client_kill(&mut client));
    assert!(
        wait_exit(&mut xfwd.proc, Duration::from_secs(15)),
        "{}",
        xfwd.log()
    );
    xfwd.wait_log(
        "drained: every connection has ended",
        Duration::from_secs(5),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("the new xfwd to stop", Duration::from_secs(10), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(new_pid), None).is_err()
    });
    // systemd's socket file is systemd's: neither xfwd removes it.
    assert!(unix.exists());
    drop(session);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr2_upgrades_in_place_and_hands_the_main_pid_over() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = scratch("sd-upgrade");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let control = dir.join("control.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
    cmd.arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--socket-dirs={}", dir.display()))
        .arg(format!("--control-socket={}", control.display()))
        .env("NOTIFY_SOCKET", &path);
    let mut old = Xfwd::spawn(cmd, port);
    let mut seen = Vec::new();
    notified(&sock, "READY=1", &mut seen);
    let old_pid = old.proc.0.id();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGUSR2).unwrap();
    // The old xfwd names the new one the main process ...
    let (_, msg) = notified_line(&sock, |l| l.starts_with("MAINPID="), "MAINPID=", &mut seen);
    let new_pid: i32 = msg.trim_start_matches("MAINPID=").trim().parse().unwrap();
    assert_ne!(new_pid as u32, old_pid);
    // ... which says it is ready, while the old one drains (nothing to
    // drain here) and exits 0.
    notified(&sock, "READY=1", &mut seen);
    assert!(
        wait_exit(&mut old.proc, Duration::from_secs(10)),
        "{}",
        old.log()
    );
    assert!(old.proc.0.try_wait().unwrap().unwrap().success());
    let log = old.log();
    assert!(log.contains("took the listening sockets over"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let info = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["info", "--json"])
        .arg(format!("--control-socket={}", control.display()))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.contains(&format!("\"pid\": {new_pid}")), "{info}");
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    wait_until("the new xfwd to stop", Duration::from_secs(10), || {
        kill(Pid::from_raw(new_pid), None).is_err()
    });
    let _ = std::fs::remove_dir_all(&dir);
}
