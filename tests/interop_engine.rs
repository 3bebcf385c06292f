//! Interop: Debian's real xpra 3.1.3 through xfwd.
//!
//! Each test starts real `xpra start` sessions (with xterm) in a private
//! socket dir, an `xfwd` binary that searches only that dir, and a real
//! `xpra attach` client on its own Xvfb display, then checks what a user
//! would see: the xterm window on the client's display, the reasons given
//! when things end. Needs `apt-get install -y xpra xvfb x11-utils xterm`;
//! fails when they are missing unless `XFWD_SKIP_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests start X servers and xpra sessions: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the interop tools are here; panics with advice when they are not
/// (unless skipping was asked for).
fn tools_present() -> bool {
    let missing: Vec<&str> = ["xpra", "Xvfb", "xwininfo", "xterm"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("XFWD_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("XFWD_SKIP_INTEROP=1: skipping, missing {missing:?}");
        return false;
    }
    panic!(
        "interop tests need {missing:?}: apt-get install -y xpra xvfb x11-utils xterm \
         (or set XFWD_SKIP_INTEROP=1)"
    );
}

fn free_display(from: u32) -> u32 {
    (from..from + 200)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("no free X display")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xfwd-interop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn windows(display: u32) -> String {
    let out = Command::new("xwininfo")
        .args(["-root", "-tree"])
        .env("DISPLAY", format!(":{display}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const QUIET: [&str; 9] = [
    "--mdns=no",
    "--speaker=off",
    "--microphone=off",
    "--webcam=no",
    "--notifications=no",
    "--systemd-run=no",
    "--bell=no",
    "--clipboard=no",
    "--printing=no",
];

/// A real xpra session with an xterm.
struct Session {
    display: u32,
    dir: PathBuf,
}

impl Session {
    fn start(display: u32, dir: &Path) -> Session {
        let status = Command::new("xpra")
            .args([
                "start",
                &format!(":{display}"),
                "--start=xterm",
                "--daemon=yes",
            ])
            .args(QUIET)
            .args([
                "--pulseaudio=no",
                "--dbus-launch=",
                &format!("--socket-dirs={}", dir.display()),
                &format!("--socket-dir={}", dir.display()),
                &format!("--log-dir={}", dir.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "xpra start :{display} failed");
        let s = Session {
            display,
            dir: dir.to_owned(),
        };
        wait_until(
            &format!("xterm in session :{display}"),
            Duration::from_secs(40),
            || windows(display).contains("xterm"),
        );
        s
    }

    fn stop(&self) {
        let _ = Command::new("xpra")
            .args(["stop", &format!(":{}", self.display)])
            .arg(format!("--socket-dirs={}", self.dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn xvfb(display: u32) -> Proc {
    let child = Command::new("Xvfb")
        .args([
            &format!(":{display}"),
            "-screen",
            "0",
            "1280x1024x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("Xvfb", Duration::from_secs(10), || {
        Path::new(&format!("/tmp/.X11-unix/X{display}")).exists()
    });
    Proc(child)
}

/// xfwd as a binary, its log collected.
struct Xfwd {
    proc: Proc,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Xfwd {
    fn start(dir: &Path, extra: &[&str]) -> Xfwd {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_xfwd"))
            .arg(format!("--bind-tcp=127.0.0.1:{port}"))
            .arg(format!("--socket-dirs={}", dir.display()))
            .args(["--cores", "2"])
            .args(extra)
            .env("XFWD_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let x = Xfwd {
            proc: Proc(child),
            port,
            log,
        };
        x.wait_log("xfwd listening", Duration::from_secs(10));
        x
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_until(&format!("xfwd log line {needle:?}"), timeout, || {
            self.log().contains(needle)
        });
    }

    fn alive(&mut self) -> bool {
        self.proc.0.try_wait().unwrap().is_none()
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }
}

/// `xpra attach` through xfwd, output kept in a file.
fn attach(
    port: u16,
    path: &str,
    client_display: u32,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Proc, PathBuf) {
    let log = dir.join(format!(
        "attach-{client_display}-{}.log",
        path.replace('/', "_")
    ));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("xpra");
    cmd.arg("attach")
        .arg(format!("tcp://root:secret@127.0.0.1:{port}/{path}"))
        .args(QUIET)
        .args(["--tray=no", "--pulseaudio=no"])
        .env("DISPLAY", format!(":{client_display}"))
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Proc(cmd.spawn().unwrap()), log)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if p.0.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

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
    assert!(
        l.contains("client disconnected") || l.contains("client connection ended"),
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

fn client_kill(p: &mut Proc) -> bool {
    let _ = Command::new("kill").arg(p.0.id().to_string()).status();
    wait_exit(p, Duration::from_secs(20))
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
