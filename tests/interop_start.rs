//! Interop: sessions started on demand (`--proxy-start-sessions=yes`) for
//! Debian's real xpra 3.1.3 clients: `xpra start tcp://...` through xfwd
//! starts a real session in the test's socket dir, the start command runs
//! once, `--attach=no` is told the display, the session outlives xfwd; with
//! the option off the client is told why. Needs `apt-get install -y xpra
//! xvfb x11-utils xterm`; fails when they are missing unless
//! `XFWD_SKIP_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::xpra::hostname;
use common::*;

/// What every session xfwd starts here gets (the options tests' own
/// sessions use: quiet, no sound, logs in the test's dir).
fn start_args(dir: &Path) -> Vec<String> {
    QUIET
        .iter()
        .map(|a| format!("--proxy-start-arg={a}"))
        .chain([
            "--proxy-start-arg=--pulseaudio=no".to_owned(),
            "--proxy-start-arg=--dbus-launch=".to_owned(),
            format!("--proxy-start-arg=--log-dir={}", dir.display()),
        ])
        .collect()
}

fn xfwd_starting(dir: &Path) -> Xfwd {
    let mut args = vec![
        "--tcp-auth=allow".to_owned(),
        "--proxy-start-sessions=yes".to_owned(),
    ];
    args.extend(start_args(dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Xfwd::start(dir, &args)
}

/// The live sessions in `dir` (xfwd's own discovery).
fn live_sessions(dir: &Path) -> Vec<xfwd::sessions::LocalSession> {
    let uid = nix::unistd::geteuid().as_raw();
    xfwd::sessions::live(&xfwd::sessions::discover(
        &[dir.to_owned()],
        &hostname(),
        uid,
    ))
}

/// The xterm processes running on X display `display` (their
/// environment's DISPLAY): their /proc dirs.
fn xterm_procs(display: &str) -> Vec<PathBuf> {
    let needle = format!("DISPLAY=:{display}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == "xterm")
                && std::fs::read(p.join("environ"))
                    .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

fn xterms_on(display: &str) -> usize {
    xterm_procs(display).len()
}

/// The signals a process blocks (`SigBlk` of its status).
fn blocked_signals(proc_dir: &Path) -> String {
    std::fs::read_to_string(proc_dir.join("status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

fn stop_session(display: &str, dir: &Path) {
    let _ = Command::new("xpra")
        .args(["stop", &format!(":{display}")])
        .arg(format!("--socket-dirs={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the sessions xfwd started, whatever happens to the test.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in live_sessions(&self.0) {
            stop_session(&s.display, &self.0);
        }
    }
}

#[test]
fn xpra_start_through_xfwd_starts_a_session_that_runs_its_command_once() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("start-attach");
    let _cleanup = Cleanup(dir.clone());
    let client_display = free_display(211);
    let _x = xvfb(client_display);
    let xfwd = xfwd_starting(&dir);
    assert!(live_sessions(&dir).is_empty());

    let uri = format!("tcp://root:secret@127.0.0.1:{}/", xfwd.port);
    let (mut client, log) = xpra_start(&uri, client_display, &dir, &["--start=xterm"]);
    wait_until(
        "a new live session in the socket dir",
        Duration::from_secs(60),
        || !live_sessions(&dir).is_empty(),
    );
    let sessions = live_sessions(&dir);
    assert_eq!(sessions.len(), 1, "one session started: {sessions:?}");
    let display = sessions[0].display.clone();
    wait_until(
        "the new session's xterm on the client's display",
        Duration::from_secs(60),
        || windows(client_display).contains("xterm"),
    );
    // The client asked its session to run xterm too (a `start-command`
    // after the handshake): xfwd did not pass that on.
    xfwd.wait_log(
        "already ran the client's start command",
        Duration::from_secs(30),
    );
    assert_eq!(
        xterms_on(&display),
        1,
        "exactly one xterm in session :{display}; client output:\n{}\nxfwd log:\n{}",
        read(&log),
        xfwd.log()
    );
    let l = xfwd.log();
    assert!(l.contains("starting a session"), "{l}");
    // The session's processes do not inherit the signals xfwd blocks for
    // its signal thread (they would ignore `kill`, and `xpra stop` would
    // leave its Xvfb behind).
    for p in xterm_procs(&display) {
        assert_eq!(blocked_signals(&p), "0000000000000000", "{}", p.display());
    }

    // The session outlives its client and xfwd.
    assert!(client_kill(&mut client), "client did not exit");
    drop(xfwd);
    let after = live_sessions(&dir);
    assert!(
        after.iter().any(|s| s.display == display),
        "session :{display} should still be live after xfwd stopped: {after:?}"
    );
    assert_eq!(xterms_on(&display), 1);
    stop_session(&display, &dir);
}

#[test]
fn attach_no_is_told_the_display_and_a_disabled_proxy_says_why() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("start-detached");
    let _cleanup = Cleanup(dir.clone());
    let client_display = free_display(221);
    let _x = xvfb(client_display);

    // Off (the default): refused with the reason.
    let off = Xfwd::start(&dir, &["--tcp-auth=allow"]);
    let uri = format!("tcp://root:secret@127.0.0.1:{}/", off.port);
    let (mut client, log) = xpra_start(&uri, client_display, &dir, &["--attach=no"]);
    assert!(
        wait_exit(&mut client, Duration::from_secs(30)),
        "client should be refused"
    );
    assert!(
        read(&log).contains("this proxy does not start sessions"),
        "{}",
        read(&log)
    );
    assert!(live_sessions(&dir).is_empty());
    drop(off);

    // On: `--attach=no` is answered with the display, then closed. xpra
    // 3.1.3's client looks the display up with a text key, which no
    // rencode or bencode hello has (nor xpra's own proxy's): it never
    // prints it. Its network log shows the answer.
    let xfwd = xfwd_starting(&dir);
    let uri = format!("tcp://root:secret@127.0.0.1:{}/", xfwd.port);
    let (mut client, log) = xpra_start(
        &uri,
        client_display,
        &dir,
        &["--attach=no", "--start=xterm", "-d", "network"],
    );
    assert!(
        wait_exit(&mut client, Duration::from_secs(60)),
        "xpra start --attach=no should return"
    );
    let status = client.0.wait().unwrap();
    let sessions = live_sessions(&dir);
    assert_eq!(sessions.len(), 1, "{sessions:?}\n{}", xfwd.log());
    let display = sessions[0].display.clone();
    let text = read(&log);
    // (xpra shortens the socket path in its log.)
    for want in [
        format!("b'display': b':{display}'"),
        "b'socket-path': b'/".to_owned(),
        "b'mode': b'start'".to_owned(),
    ] {
        assert!(
            text.contains("processing hello from server: {") && text.contains(&want),
            "the client's answer lacks {want}:\n{text}\nxfwd log:\n{}",
            xfwd.log()
        );
    }
    assert!(status.success(), "{status}: {text}");
    wait_until("xterm in the new session", Duration::from_secs(60), || {
        xterms_on(&display) == 1
    });

    // A plain attach with a session there goes to it (no second start).
    let (mut attached, _alog) = attach(xfwd.port, "", client_display, &dir, &[]);
    wait_until(
        "the xterm window on the client's display",
        Duration::from_secs(60),
        || windows(client_display).contains("xterm"),
    );
    assert_eq!(live_sessions(&dir).len(), 1);
    assert!(client_kill(&mut attached));
    stop_session(&display, &dir);
    wait_until("the session gone", Duration::from_secs(30), || {
        live_sessions(&dir).is_empty()
    });

    // Two plain attaches at once that find no session: one session is
    // started, both clients are sent to it.
    let mark = xfwd.log().len();
    let (mut a1, _l1) = attach(xfwd.port, "", client_display, &dir, &[]);
    let (mut a2, _l2) = attach(xfwd.port, "", client_display, &dir, &[]);
    wait_until(
        "both clients routed to a session",
        Duration::from_secs(90),
        || {
            xfwd.log()[mark..]
                .matches("result=ok target=\"session :")
                .count()
                >= 2
        },
    );
    let sessions = live_sessions(&dir);
    assert_eq!(sessions.len(), 1, "{sessions:?}\n{}", xfwd.log());
    let l = xfwd.log()[mark..].to_owned();
    let target = format!("result=ok target=\"session :{}\"", sessions[0].display);
    assert_eq!(l.matches(&target).count(), 2, "{l}");
    let _ = client_kill(&mut a1);
    let _ = client_kill(&mut a2);
}

#[test]
fn a_start_holds_up_no_other_client_and_its_failure_is_the_reason() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("start-slow");
    // A stand-in for xpra that waits for the test's word, then fails.
    let (bin, go) = slow_failing_xpra(&dir, "'xpra: no X server here'");
    // One shard: the start and the other client share it.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
    cmd.env("PATH", format!("{}:{SYSTEM_PATH}", bin.display()))
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--socket-dirs={}", dir.display()))
        .arg(format!(
            "--control-socket={}",
            dir.join("control.sock").display()
        ))
        .args([
            "--cores=1",
            "--tcp-auth=allow",
            "--proxy-start-sessions=yes",
        ]);
    let xfwd = Xfwd::spawn(cmd, port);
    xfwd.wait_log("xfwd listening", Duration::from_secs(10));

    let uri = format!("tcp://root:secret@127.0.0.1:{port}/");
    let (mut starting, log) = xpra_start(&uri, 0, &dir, &["--attach=no"]);
    xfwd.wait_log("starting a session program=xpra", Duration::from_secs(30));
    // While it starts, another client on the same shard is answered.
    let out = Command::new("xpra")
        .env("PATH", SYSTEM_PATH)
        .args(["version", &uri])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3.1-xfwd-"), "{text}");
    assert!(
        starting.0.try_wait().unwrap().is_none(),
        "the start is still waiting: {}",
        read(&log)
    );
    // The start fails: its reason reaches the client.
    std::fs::write(&go, b"").unwrap();
    assert!(wait_exit(&mut starting, Duration::from_secs(60)));
    let text = read(&log);
    assert!(
        text.contains(
            "cannot start a session: xpra start failed (exit status: 1): xpra: no X server here"
        ),
        "client output:\n{text}\nxfwd log:\n{}",
        xfwd.log()
    );
}
