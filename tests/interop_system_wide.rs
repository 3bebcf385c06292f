//! Interop: system-wide mode (xfwd started as root) with Debian's real xpra
//! 3.1.3. Two users, created here (`useradd`, passwords by `chpasswd`),
//! each with a session started as that user; xfwd as root with
//! `--tcp-auth=pam`:
//!
//! - each user attaches to their own xterm without naming a display;
//! - a user asking for the other's display is refused with the same reason
//!   as for a display that does not exist;
//! - no thread of the serving process runs as root (the shards dropped to
//!   `nobody`); only the helper keeps root; each user's connections are
//!   made by an agent running as that user;
//! - `xpra start tcp://user:pw@.../ --start=...` starts a session owned by
//!   the user, whose command runs once; `--attach=no` is answered with the
//!   display; the session outlives xfwd.
//!
//! Needs root, the `pam` feature, `apt-get install -y xpra xvfb x11-utils
//! xterm`; skipped with a note without root or PAM, fails when the tools
//! are missing unless `XFWD_SKIP_INTEROP=1`.

#![cfg(feature = "pam")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::xpra::hostname;
use common::*;

/// A throw-away system account with a password, removed (with its
/// processes and home) on drop.
struct User {
    name: String,
    password: String,
    uid: u32,
    home: PathBuf,
}

impl User {
    fn create(tag: &str) -> User {
        let name = format!("xfwd-{tag}-{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").args(["-r", &name]).output();
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            text(&out.stderr)
        );
        let password = format!("pw-{tag}-{}", std::process::id());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = chpasswd.stdin.take().unwrap();
            writeln!(stdin, "{name}:{password}").unwrap();
        }
        assert!(chpasswd.wait().unwrap().success(), "chpasswd {name}");
        let account = nix::unistd::User::from_name(&name).unwrap().unwrap();
        let user = User {
            name,
            password,
            uid: account.uid.as_raw(),
            home: account.dir,
        };
        // xpra's socket (and here log) dir, as a first `xpra start` of
        // the user makes it.
        let dir = user.socket_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(account.gid.as_raw())).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        user
    }

    /// xpra's default socket dir for a user without a login session.
    fn socket_dir(&self) -> PathBuf {
        self.home.join(".xpra")
    }

    /// Runs `xpra ARGS` as this user, in its home.
    fn xpra(&self, args: &[&str]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", &self.name, "--", "xpra"])
            .args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("PATH", SYSTEM_PATH)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        c
    }

    /// A session of this user on `display`, its xterm titled `title`.
    fn start_session(&self, display: u32, title: &str) {
        let start = format!("--start=xterm -name {title}");
        let dir = self.socket_dir();
        let dir_arg = format!("--socket-dirs={}", dir.display());
        let log_arg = format!("--log-dir={}", dir.display());
        let on = format!(":{display}");
        let mut args = vec![
            "start",
            &on,
            &start,
            "--daemon=yes",
            "--pulseaudio=no",
            "--dbus-launch=",
            &dir_arg,
            &log_arg,
        ];
        args.extend(QUIET);
        let out = self.xpra(&args).output().unwrap();
        assert!(
            out.status.success(),
            "xpra start :{display} as {}: {}{}",
            self.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        wait_until(
            &format!("{title} in session :{display}"),
            Duration::from_secs(60),
            || self.windows(display).contains(title),
        );
    }

    /// The window tree of this user's X display (its X cookie).
    fn windows(&self, display: u32) -> String {
        let out = Command::new("runuser")
            .args(["-u", &self.name, "--", "xwininfo", "-root", "-tree"])
            .env("DISPLAY", format!(":{display}"))
            .env("XAUTHORITY", self.home.join(".Xauthority"))
            .output()
            .unwrap();
        text(&out.stdout)
    }

    /// The displays of this user's live sessions (its own sockets).
    fn live_displays(&self) -> Vec<String> {
        let found = xfwd::sessions::discover(&[self.socket_dir()], &hostname(), self.uid);
        xfwd::sessions::live(&found)
            .into_iter()
            .map(|s| s.display)
            .collect()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        for d in self.live_displays() {
            let _ = self
                .xpra(&["stop", &format!(":{d}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("pkill")
            .args(["-TERM", "-u", &self.name])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        // A killed X server leaves its lock and socket: remove the user's,
        // or later tests run out of displays.
        if let Ok(entries) = std::fs::read_dir("/tmp") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(n) = name
                    .strip_prefix(".X")
                    .and_then(|r| r.strip_suffix("-lock"))
                else {
                    continue;
                };
                if e.metadata().is_ok_and(|m| m.uid() == self.uid) {
                    let _ = std::fs::remove_file(e.path());
                    let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{n}"));
                }
            }
        }
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

/// The (real, effective, saved, fs) uids of each thread of `pid`.
fn thread_uids(pid: u32) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        out.push((name, uids));
    }
    out
}

/// The child processes of `pid` (their pids and command lines).
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push((child, text(&cmdline).replace('\0', " ")));
        }
    }
    out
}

/// The xterm processes titled `title` (their command line has it).
fn xterms_titled(title: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "xterm")
                && std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| text(&c).split('\0').any(|a| a == title))
        })
        .count()
}

/// xfwd as root in its default mode (system-wide), PAM on TCP, starting
/// sessions on demand with the tests' quiet options.
fn system_wide_xfwd(dir: &Path) -> Xfwd {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
    cmd.arg(format!(
        "--control-socket={}",
        dir.join(format!("control-{port}.sock")).display()
    ))
    .arg(format!("--bind-tcp=127.0.0.1:{port}"))
    .args([
        "--tcp-auth=pam",
        "--cores",
        "2",
        "--proxy-start-sessions=yes",
    ])
    .args(QUIET.iter().map(|a| format!("--proxy-start-arg={a}")))
    .args([
        "--proxy-start-arg=--pulseaudio=no",
        "--proxy-start-arg=--dbus-launch=",
    ]);
    let x = Xfwd::spawn(cmd, port);
    x.wait_log("xfwd listening", Duration::from_secs(15));
    x
}

fn skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: system-wide mode needs root: skipping");
        return true;
    }
    !tools_present()
}

#[test]
fn each_user_reaches_only_their_own_sessions_and_nothing_is_forwarded_as_root() {
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("system-wide");
    let alice = User::create("a");
    let bob = User::create("b");
    let da = free_display(241);
    alice.start_session(da, "alice-term");
    let db = free_display(da + 1);
    bob.start_session(db, "bob-term");

    let xfwd = system_wide_xfwd(&dir);
    assert!(
        xfwd.log().contains("system-wide mode: serving as uid"),
        "{}",
        xfwd.log()
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let pid = xfwd.proc.0.id();
    // Every thread of the serving process: nobody, all four uids.
    let threads = thread_uids(pid);
    assert!(threads.len() >= 3, "{threads:?}");
    for (name, uids) in &threads {
        assert_eq!(uids, &vec![nobody; 4], "thread {name} of xfwd: {threads:?}");
    }
    // Its one child is the helper: the only process that keeps root.
    let kids = children(pid);
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert!(kids[0].1.ends_with("session-helper "), "{kids:?}");

    // Each user, no display named: their own xterm.
    let port = xfwd.port;
    let ca = free_display(db + 1);
    let _xa = xvfb(ca);
    let cb = free_display(ca + 1);
    let _xb = xvfb(cb);
    let uri =
        |u: &User, path: &str| format!("tcp://{}:{}@127.0.0.1:{port}/{path}", u.name, u.password);
    let (mut a_client, a_log) = attach_uri(&uri(&alice, ""), ca, &dir, &[], &[]);
    let (mut b_client, b_log) = attach_uri(&uri(&bob, ""), cb, &dir, &[], &[]);
    wait_until(
        "alice's xterm on her display",
        Duration::from_secs(60),
        || windows(ca).contains("alice-term"),
    );
    wait_until(
        "bob's xterm on his display",
        Duration::from_secs(60),
        || windows(cb).contains("bob-term"),
    );
    assert!(!windows(ca).contains("bob-term"));
    assert!(!windows(cb).contains("alice-term"));
    // Still nothing as root while relaying.
    for (name, uids) in thread_uids(pid) {
        assert_eq!(uids, vec![nobody; 4], "thread {name} while relaying");
    }
    // The helper answered through one agent per user, each running as its
    // user (all four uids).
    let helper = kids[0].0;
    let agents: Vec<(u32, String)> = children(helper)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("session-helper-agent"))
        .collect();
    assert_eq!(agents.len(), 2, "{agents:?}");
    let mut agent_uids: Vec<u32> = agents
        .iter()
        .map(|(p, _)| {
            let uids = &thread_uids(*p)[0].1;
            assert!(uids.iter().all(|u| *u == uids[0]), "{uids:?}");
            uids[0]
        })
        .collect();
    agent_uids.sort_unstable();
    let mut want = vec![alice.uid, bob.uid];
    want.sort_unstable();
    assert_eq!(agent_uids, want);
    let log = xfwd.log();
    assert!(
        log.contains(&format!(
            "user=\"{}\" module=pam result=ok target=\"session :{da}\"",
            alice.name
        )),
        "{log}\n{}",
        read(&a_log)
    );
    assert!(
        log.contains(&format!(
            "user=\"{}\" module=pam result=ok target=\"session :{db}\"",
            bob.name
        )),
        "{log}\n{}",
        read(&b_log)
    );
    assert!(client_kill(&mut a_client));
    assert!(client_kill(&mut b_client));

    // Alice asking for Bob's display: the reason a missing one gets.
    let refusal = |path: &str| {
        let (mut c, log) = attach_uri(&uri(&alice, path), ca, &dir, &[], &[]);
        assert!(
            wait_exit(&mut c, Duration::from_secs(30)),
            "{path}: not refused"
        );
        read(&log)
    };
    let other = refusal(&db.to_string());
    let missing_display = free_display(cb + 1) + 50;
    let missing = refusal(&missing_display.to_string());
    let want = |d: u32| format!("session :{d} not found; available: :{da}");
    assert!(other.contains(&want(db)), "{other}");
    assert!(missing.contains(&want(missing_display)), "{missing}");
    // A wrong password.
    let (mut c, log) = attach_uri(
        &format!("tcp://{}:wrong@127.0.0.1:{port}/", alice.name),
        ca,
        &dir,
        &[],
        &[],
    );
    assert!(wait_exit(&mut c, Duration::from_secs(30)));
    assert!(!read(&log).contains("Attached to"), "{}", read(&log));
    drop(xfwd);
}

#[test]
fn a_user_starts_a_session_of_their_own_that_outlives_xfwd() {
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("system-wide-start");
    let carol = User::create("c");
    let xfwd = system_wide_xfwd(&dir);
    let port = xfwd.port;
    let client = free_display(261);
    let _x = xvfb(client);
    let uri = format!("tcp://{}:{}@127.0.0.1:{port}/", carol.name, carol.password);

    // Attached (xpra's default): the window appears, one xterm runs.
    let (mut started, log) = xpra_start(&uri, client, &dir, &["--start=xterm -name carol-started"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !windows(client).contains("carol-started") {
        assert!(
            std::time::Instant::now() < deadline,
            "no window of the new session on the client:\n{}\nxfwd:\n{}",
            read(&log),
            xfwd.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let live = carol.live_displays();
    assert_eq!(live.len(), 1, "{live:?}\n{}\n{}", read(&log), xfwd.log());
    let display = live[0].clone();
    // The session's socket is the user's, and so is its server.
    let socket = carol.socket_dir().join(format!("{}-{display}", hostname()));
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), carol.uid);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        xterms_titled("carol-started"),
        1,
        "the start command ran twice"
    );
    assert!(client_kill(&mut started));

    // --attach=no: the answer names the display (xpra 3.1.3's client shows
    // it in its network log only); a second session.
    let (mut detached, log) = xpra_start(
        &uri,
        client,
        &dir,
        &[
            "--attach=no",
            "--start=xterm -name carol-second",
            "-d",
            "network",
        ],
    );
    assert!(wait_exit(&mut detached, Duration::from_secs(90)));
    let live = carol.live_displays();
    assert_eq!(live.len(), 2, "{live:?}\n{}\n{}", read(&log), xfwd.log());
    let second = live.iter().find(|d| **d != display).unwrap().clone();
    let answer = read(&log);
    assert!(
        answer.contains(&format!("b'display': b':{second}'")),
        "{answer}"
    );
    wait_until(
        "the second session's xterm",
        Duration::from_secs(60),
        || xterms_titled("carol-second") == 1,
    );

    // xfwd stops; the sessions are the user's, and live on.
    drop(xfwd);
    std::thread::sleep(Duration::from_secs(1));
    let after = carol.live_displays();
    assert!(
        after.contains(&display) && after.contains(&second),
        "{after:?}"
    );
}

#[test]
fn a_slow_start_holds_up_no_other_client_and_its_failure_is_the_reason() {
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("system-wide-slow");
    let dave = User::create("d");
    // A stand-in for xpra (the user runs it) that waits for the test's
    // word, then fails.
    let (bin, go) = slow_failing_xpra(&dir, "\"xpra: no X server for $(id -un)\"");
    // One shard: the start and the other client share it.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
    cmd.env("PATH", format!("{}:{SYSTEM_PATH}", bin.display()))
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!(
            "--control-socket={}",
            dir.join("control.sock").display()
        ))
        .args(["--cores=1", "--tcp-auth=pam", "--proxy-start-sessions=yes"]);
    let xfwd = Xfwd::spawn(cmd, port);
    xfwd.wait_log("xfwd listening", Duration::from_secs(15));

    let uri = format!("tcp://{}:{}@127.0.0.1:{port}/", dave.name, dave.password);
    let (mut starting, log) = xpra_start(&uri, 0, &dir, &["--attach=no"]);
    xfwd.wait_log("starting a session program=xpra", Duration::from_secs(30));
    // While it starts, another client on the same shard is answered (its
    // PAM check goes through the same helper).
    for _ in 0..3 {
        let out = Command::new("xpra")
            .env("PATH", SYSTEM_PATH)
            .args(["version", &uri])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3.1-xfwd-"), "{text}");
    }
    assert!(
        starting.0.try_wait().unwrap().is_none(),
        "the start is still waiting: {}",
        read(&log)
    );
    // The start fails: its reason (the user's own xpra ran) reaches the
    // client.
    std::fs::write(&go, b"").unwrap();
    assert!(wait_exit(&mut starting, Duration::from_secs(60)));
    let text = read(&log);
    assert!(
        text.contains(&format!(
            "cannot start a session: xpra start failed (exit status: 1): xpra: no X server for {}",
            dave.name
        )),
        "client output:\n{text}\nxfwd log:\n{}",
        xfwd.log()
    );
}
