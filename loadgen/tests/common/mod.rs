//! What the loadgen integration tests share: the binaries, child processes
//! with their logs, waiting.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
}

/// The xfwd binary: `$XFWD_BIN` when set (to run these tests against
/// another build), else the one of the same profile as this test's loadgen.
pub fn xfwd() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("XFWD_BIN").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "XFWD_BIN={} is not a file", bin.display());
            eprintln!("xfwd under test: {} (XFWD_BIN)", bin.display());
            return bin;
        }
        let dir = loadgen()
            .parent()
            .expect("loadgen has a parent dir")
            .to_path_buf();
        let bin = dir.join("xfwd");
        if bin.is_file() {
            return bin;
        }
        let release = dir.file_name().is_some_and(|n| n == "release");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root).args(["build", "--bin", "xfwd"]);
        if release {
            cmd.arg("--release");
        }
        // cargo may wait on a lock another build holds: bounded, with a
        // message saying what to do instead
        let mut child = cmd.spawn().expect("cannot run cargo to build xfwd");
        let until = Instant::now() + Duration::from_secs(600);
        let status = loop {
            if let Some(st) = child.try_wait().expect("waiting for cargo") {
                break Some(st);
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            status.is_some_and(|s| s.success()) && bin.is_file(),
            "xfwd is not built at {} and `cargo build --bin xfwd` did not build it: \
             run `cargo build --workspace` (or `cargo test --workspace`) first",
            bin.display()
        );
        bin
    })
    .clone()
}

/// The xfwd binary as a server: with `--system-wide=no`, since these tests
/// run as root and serve root's own fake sessions (system-wide mode, root's
/// default, serves no session of root's). Left out for an xfwd that has no
/// such option (an older build, by `XFWD_BIN`): it has no system-wide mode
/// either.
pub fn xfwd_serving() -> Command {
    static KNOWS: OnceLock<bool> = OnceLock::new();
    let knows = *KNOWS.get_or_init(|| {
        Command::new(xfwd())
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--system-wide"))
    });
    let mut cmd = Command::new(xfwd());
    if knows {
        cmd.arg("--system-wide=no");
    }
    cmd
}

/// A child process killed on drop; its output goes to a log file that is
/// printed when a test fails.
pub struct Proc {
    pub child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn start(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            // already reaped: its pid may belong to someone else by now
            return;
        }
        // SIGTERM so the fake session removes its socket
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(mut ok: impl FnMut() -> bool, what: &str, p: &mut Proc) {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if ok() {
            return;
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("waiting for {what}: the process exited ({st})\n{}", p.log());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}\n{}", p.log());
}

pub fn n(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| cur.as_f64().map_or(u64::MAX, |f| f as u64))
}

/// Starts a fake session `:display` in `dir/sockets` (logging to
/// `dir/log`) and waits for its socket.
pub fn start_session(dir: &Path, display: &str, args: &[&str], log: &str) -> Proc {
    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let socket = dir.join("sockets").join(format!("{hostname}-{display}"));
    let mut session = Proc::start(
        Command::new(loadgen())
            .arg("server")
            .arg(format!("--socket-dir={}", dir.join("sockets").display()))
            .arg(format!("--display={display}"))
            .args(args),
        dir.join(log),
    );
    wait_for(|| socket.exists(), "the session socket", &mut session);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "session socket mode");
    session
}

/// Starts xfwd on a free 127.0.0.1 port with `--tcp-auth`, the sessions of
/// `dir/sockets`, `--cores=1` unless `args` say otherwise, and `args`;
/// waits until it listens. Returns it and its port.
pub fn start_xfwd(dir: &Path, tcp_auth: &str, args: &[String], log: &str) -> (Proc, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = xfwd_serving();
    cmd.arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--tcp-auth={tcp_auth}"))
        .arg(format!("--socket-dir={}", dir.join("sockets").display()));
    if !args.iter().any(|a| a.starts_with("--cores")) {
        cmd.arg("--cores=1");
    }
    let mut xfwd = Proc::start(cmd.args(args), dir.join(log));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(
        || TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok(),
        "xfwd to listen",
        &mut xfwd,
    );
    (xfwd, port)
}

/// A `loadgen client` through xfwd's `port` to `display`, started in the
/// background; its report goes to `dir/tag.json`, its output to
/// `dir/tag.log`.
pub fn spawn_client(dir: &Path, port: u16, display: &str, tag: &str, args: &[&str]) -> Proc {
    Proc::start(
        Command::new(loadgen())
            .arg("client")
            .arg(format!("--connect=tcp://u:any@127.0.0.1:{port}/{display}"))
            .arg(format!(
                "--json={}",
                dir.join(format!("{tag}.json")).display()
            ))
            .args(["--quiet", "--threads=1", "--timeout=10"])
            .args(args),
        dir.join(format!("{tag}.log")),
    )
}

/// The report a client wrote to `dir/tag.json`, if any.
pub fn report(dir: &Path, tag: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{tag}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// A fake session `:display` in a socket dir, and xfwd in front of it.
pub struct Setup {
    pub dir: PathBuf,
    pub port: u16,
    pub session: Proc,
    pub xfwd: Proc,
}

impl Setup {
    /// A fresh scratch dir for test `name` (with its `sockets` dir).
    pub fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sockets")).unwrap();
        dir
    }

    /// Starts the session in `dir/sockets` and xfwd with `--tcp-auth`
    /// plus `xfwd_args` (`--cores=1` unless they say otherwise).
    pub fn start(
        dir: PathBuf,
        display: &str,
        session_args: &[&str],
        tcp_auth: &str,
        xfwd_args: &[String],
    ) -> Setup {
        let session = start_session(&dir, display, session_args, "session.log");
        let (xfwd, port) = start_xfwd(&dir, tcp_auth, xfwd_args, "xfwd.log");
        Setup {
            dir,
            port,
            session,
            xfwd,
        }
    }

    /// Runs `loadgen client` through xfwd over tcp://; returns (exit code,
    /// report).
    pub fn client(&self, tag: &str, userpass: &str, display: &str, args: &[&str]) -> (i32, Value) {
        self.client_over("tcp", tag, userpass, display, args)
    }

    /// The same over another scheme (ssl, ws, wss).
    pub fn client_over(
        &self,
        scheme: &str,
        tag: &str,
        userpass: &str,
        display: &str,
        args: &[&str],
    ) -> (i32, Value) {
        let json = self.dir.join(format!("{tag}.json"));
        let out = Command::new(loadgen())
            .arg("client")
            .arg(format!(
                "--connect={scheme}://{userpass}@127.0.0.1:{}/{display}",
                self.port
            ))
            .arg(format!("--json={}", json.display()))
            .args(["--quiet", "--threads=1", "--timeout=10"])
            .args(args)
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!(
                "client wrote no report ({e}); exit {code}\nstdout: {}\nstderr: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            )
        });
        let report: Value = serde_json::from_str(&text).unwrap();
        (code, report)
    }

    pub fn logs(&self) -> String {
        format!(
            "session log:\n{}\nxfwd log:\n{}",
            self.session.log(),
            self.xfwd.log()
        )
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
