//! Shared helpers for the interop tests: real xpra sessions, Xvfb displays,
//! the xfwd binary, `xpra attach` clients.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod netns;
pub mod pg;
pub mod xpra;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests start X servers and xpra sessions: one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the interop tools are here; panics with advice when they are not
/// (unless skipping was asked for).
pub fn tools_present() -> bool {
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

pub fn free_display(from: u32) -> u32 {
    (from..from + 200)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("no free X display")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xfwd-interop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the xfwd binary with `args` (no colour) and waits for it.
pub fn run_xfwd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn windows(display: u32) -> String {
    let out = Command::new("xwininfo")
        .args(["-root", "-tree"])
        .env("DISPLAY", format!(":{display}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the interop checks were asked to be skipped
/// (`XFWD_SKIP_INTEROP=1`); says so, naming `what`.
pub fn skip_interop(what: &str) -> bool {
    let skip = std::env::var("XFWD_SKIP_INTEROP").as_deref() == Ok("1");
    if skip {
        eprintln!("note: XFWD_SKIP_INTEROP=1, skipping the {what}");
    }
    skip
}

/// The Python that has xpra's modules: Debian's (the first `python3` on
/// PATH may be another), or `XFWD_INTEROP_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var_os("XFWD_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// xpra re-runs Python by name in places (its WebSocket client does): the
/// system one, which has xpra's modules, must come first on PATH.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin:/usr/local/bin";

pub const QUIET: [&str; 9] = [
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
pub struct Session {
    pub display: u32,
    pub dir: PathBuf,
}

impl Session {
    pub fn start(display: u32, dir: &Path) -> Session {
        Session::start_with(display, dir, &[])
    }

    /// A session with extra `xpra start` options.
    pub fn start_with(display: u32, dir: &Path, extra: &[&str]) -> Session {
        let mut args = vec!["--start=xterm"];
        args.extend_from_slice(extra);
        Session::start_programs(display, dir, &args, "xterm", |w| w.contains("xterm"))
    }

    /// A session started with `args` (its `--start=` programs among them),
    /// ready once `ready` holds for its window list (`what`, for the
    /// message of a timeout).
    pub fn start_programs(
        display: u32,
        dir: &Path,
        args: &[&str],
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> Session {
        let status = Command::new("xpra")
            .env("PATH", SYSTEM_PATH)
            .args(["start", &format!(":{display}"), "--daemon=yes"])
            .args(QUIET)
            .args([
                "--pulseaudio=no",
                "--dbus-launch=",
                &format!("--socket-dirs={}", dir.display()),
                &format!("--socket-dir={}", dir.display()),
                &format!("--log-dir={}", dir.display()),
            ])
            .args(args)
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
            &format!("{what} in session :{display}"),
            Duration::from_secs(40),
            || ready(&windows(display)),
        );
        s
    }

    pub fn stop(&self) {
        let _ = Command::new("xpra")
            .env("PATH", SYSTEM_PATH)
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
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so that an X server removes its lock and socket
        // (killed, it leaves them, and later tests run out of displays);
        // SIGKILL after half a second.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..25 {
            if matches!(self.0.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn xvfb(display: u32) -> Proc {
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
pub struct Xfwd {
    pub proc: Proc,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Xfwd {
    pub fn start(dir: &Path, extra: &[&str]) -> Xfwd {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
        // The control socket in the test's directory, not the default one
        // (a killed xfwd would leave its socket there).
        if !extra.iter().any(|a| a.starts_with("--control-socket")) {
            cmd.arg(format!(
                "--control-socket={}",
                dir.join(format!("control-{port}.sock")).display()
            ));
        }
        // The tests run as root and serve root's own sessions: not
        // system-wide mode (root's default).
        cmd.arg("--system-wide=no")
            .arg(format!("--bind-tcp=127.0.0.1:{port}"))
            .arg(format!("--socket-dirs={}", dir.display()))
            .args(["--cores", "2"])
            .args(extra);
        let x = Xfwd::spawn(cmd, port);
        x.wait_log("xfwd listening", Duration::from_secs(10));
        x
    }

    /// Runs `cmd` (xfwd, or a program that runs it, as
    /// systemd-socket-activate does) with its log collected; `port`: where
    /// it will listen. `cmd` gives its own options (`--system-wide=no`
    /// among them, as `start` does, when it serves as root).
    pub fn spawn(mut cmd: Command, port: u16) -> Xfwd {
        let mut child = cmd
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
        Xfwd {
            proc: Proc(child),
            port,
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_until(&format!("xfwd log line {needle:?}"), timeout, || {
            self.log().contains(needle)
        });
    }

    pub fn alive(&mut self) -> bool {
        self.proc.0.try_wait().unwrap().is_none()
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }
}

/// `xpra attach` through xfwd (`tcp://root:secret@127.0.0.1:PORT/PATH`),
/// output kept in a file.
pub fn attach(
    port: u16,
    path: &str,
    client_display: u32,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Proc, PathBuf) {
    attach_uri(
        &format!("tcp://root:secret@127.0.0.1:{port}/{path}"),
        client_display,
        dir,
        env,
        &[],
    )
}

/// `xpra attach URI` with extra options, output kept in a file.
pub fn attach_uri(
    uri: &str,
    client_display: u32,
    dir: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (Proc, PathBuf) {
    let name: String = uri
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let log = dir.join(format!("attach-{client_display}-{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("xpra");
    cmd.env("PATH", SYSTEM_PATH)
        .arg("attach")
        .arg(uri)
        .args(QUIET)
        .args(["--tray=no", "--pulseaudio=no"])
        .args(extra)
        .env("DISPLAY", format!(":{client_display}"))
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Proc(cmd.spawn().unwrap()), log)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn wait_exit(p: &mut Proc, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if p.0.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Ends a client the way a user closing it would (SIGTERM).
pub fn client_kill(p: &mut Proc) -> bool {
    let _ = Command::new("kill").arg(p.0.id().to_string()).status();
    wait_exit(p, Duration::from_secs(20))
}

/// A self-signed certificate and key for 127.0.0.1, made with openssl.
/// Runs `openssl` in `dir`; fails the test when it fails.
pub fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A test PKI in `dir` (made if missing): two CAs (`ca.pem`, `other-ca.pem`
/// with their keys) and a server certificate for IP:127.0.0.1 and
/// localhost signed by the first (`server.pem`, `server.key`).
pub fn test_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for ca in ["ca", "other-ca"] {
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=xfwd test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
            dir,
        );
    }
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
        ],
        dir,
    );
}

pub fn certificate(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed: apt-get install -y openssl")
        .success();
    assert!(ok, "openssl req failed");
    (
        format!("--ssl-cert={}", cert.display()),
        format!("--ssl-key={}", key.display()),
    )
}

/// `xpra start URI` (a client asking for a new session), output kept in a
/// file. (xpra 3.1.3's `start` does not mark a 127.0.0.1 display as local,
/// as `attach` does: without XPRA_ALLOW_UNENCRYPTED_PASSWORDS it would not
/// send the password PAM needs.)
pub fn xpra_start(uri: &str, client_display: u32, dir: &Path, extra: &[&str]) -> (Proc, PathBuf) {
    let log = dir.join(format!("start-{client_display}-{}.log", extra.len()));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("xpra")
        .env("PATH", SYSTEM_PATH)
        .env("XPRA_ALLOW_UNENCRYPTED_PASSWORDS", "1")
        .arg("start")
        .arg(uri)
        .args(QUIET)
        .args(["--tray=no", "--pulseaudio=no"])
        .args(extra)
        .env("DISPLAY", format!(":{client_display}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (Proc(child), log)
}

/// A stand-in for xpra in `DIR/bin` (put it first on PATH) that waits for
/// the file `DIR/go`, then prints `complaint` (shell words, expanded) to
/// stderr and exits 1. Anyone may run it. Returns (bin, go).
pub fn slow_failing_xpra(dir: &Path, complaint: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let go = dir.join("go");
    let fake = bin.join("xpra");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.1; done\necho {complaint} >&2\nexit 1\n",
            go.display()
        ),
    )
    .unwrap();
    for p in [dir, &bin, &fake] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, go)
}

/// `--password-file=DIR/NAME` holding `pw`.
pub fn password_file(dir: &Path, name: &str, pw: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pw).unwrap();
    format!("--password-file={}", p.display())
}

/// Attaches `user` with `password` and waits for the session's xterm on
/// a fresh client display.
pub fn attach_and_see_xterm(port: u16, user: &str, password: &str, dir: &Path, from: u32) {
    let display = free_display(from);
    let _x = xvfb(display);
    let pwf = password_file(dir, &format!("{user}.pw"), password);
    let (mut client, log) = attach_uri(
        &format!("tcp://{user}@127.0.0.1:{port}/"),
        display,
        dir,
        &[],
        &[&pwf],
    );
    wait_until(
        &format!("{user}'s xterm on :{display}"),
        Duration::from_secs(45),
        || windows(display).contains("xterm"),
    );
    let title = windows(display);
    eprintln!(
        "{user}: {}",
        title.lines().find(|l| l.contains("xterm")).unwrap_or("")
    );
    assert!(client_kill(&mut client), "{}", read(&log));
}

pub fn wrong_password_fails(port: u16, user: &str, dir: &Path, from: u32) {
    let display = free_display(from);
    let _x = xvfb(display);
    let pwf = password_file(dir, "wrong.pw", "not-it");
    let (mut client, log) = attach_uri(
        &format!("tcp://{user}@127.0.0.1:{port}/"),
        display,
        dir,
        &[],
        &[&pwf],
    );
    assert!(
        wait_exit(&mut client, Duration::from_secs(40)),
        "client still running"
    );
    let text = read(&log);
    assert!(text.contains("authentication failed"), "{text}");
}
