//! What the loadgen integration tests share: the binaries, child processes
//! with their logs, waiting.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
}

/// The xfwd binary of the same profile as this test's loadgen.
pub fn xfwd() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
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
