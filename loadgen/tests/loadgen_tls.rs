//! End-to-end over TLS and WebSocket: `loadgen server` (a fake session in
//! a socket dir) behind the `xfwd` binary with a self-signed certificate,
//! driven by `loadgen client` over `ssl://`, `ws://` and `wss://` on xfwd's
//! one TCP port. Correctness only: every connection set up, no draw lost,
//! reordered or corrupt, pings echoed; certificate checking refuses the
//! self-signed certificate when asked to.
//!
//! Needs `openssl` to make the certificate; skipped (with a message) when
//! it is missing.
//!
//! The xfwd binary is looked for next to loadgen's (`cargo test --workspace`
//! builds both); when it is missing it is built with cargo, same profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::*;

struct Setup {
    dir: PathBuf,
    port: u16,
    session: Proc,
    xfwd: Proc,
}

impl Setup {
    /// A fake session `:display` in a fresh socket dir, and xfwd in front.
    fn new(name: &str, display: &str, session_args: &[&str], tcp_auth: &str) -> Option<Setup> {
        let dir =
            std::env::temp_dir().join(format!("loadgen-tls-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sockets")).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: openssl cannot make a self-signed certificate");
            return None;
        }
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        let socket = dir.join("sockets").join(format!("{hostname}-{display}"));
        let mut session = Proc::start(
            Command::new(loadgen())
                .arg("server")
                .arg(format!("--socket-dir={}", dir.join("sockets").display()))
                .arg(format!("--display={display}"))
                .args(session_args),
            dir.join("session.log"),
        );
        wait_for(|| socket.exists(), "the session socket", &mut session);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&socket).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "session socket mode");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut xfwd = Proc::start(
            Command::new(xfwd())
                .arg(format!("--bind-tcp=127.0.0.1:{port}"))
                .arg(format!("--tcp-auth={tcp_auth}"))
                .arg(format!("--socket-dir={}", dir.join("sockets").display()))
                .arg(format!("--ssl-cert={}", cert.display()))
                .arg(format!("--ssl-key={}", key.display()))
                .arg("--cores=1"),
            dir.join("xfwd.log"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for(
            || TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok(),
            "xfwd to listen",
            &mut xfwd,
        );
        Some(Setup {
            dir,
            port,
            session,
            xfwd,
        })
    }

    /// Runs `loadgen client` through xfwd; returns (exit code, report).
    fn client(
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
                "client wrote no report ({e}); exit {code}\nstdout: {}\nstderr: {}\nsession log:\n{}\nxfwd log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.session.log(),
                self.xfwd.log()
            )
        });
        let report: Value = serde_json::from_str(&text).unwrap();
        (code, report)
    }

    fn logs(&self) -> String {
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

#[test]
fn draws_arrive_whole_and_in_order_over_ssl_ws_and_wss() {
    let Some(s) = Setup::new(
        "transports",
        "31",
        &["--draw-size=65536", "--draw-rate=100", "--windows=2"],
        "allow",
    ) else {
        return;
    };
    for scheme in ["ssl", "ws", "wss"] {
        let (code, r) = s.client(
            scheme,
            scheme,
            "u:any",
            "31",
            &["--connections=3", "--duration=2", "--ping-interval=50"],
        );
        let ctx = format!("{scheme}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 3, "{ctx}");
        assert_eq!(n(&r, &["connections_failed"]), 0, "{ctx}");
        assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
        assert_eq!(n(&r, &["lost"]), 0, "{ctx}");
        assert_eq!(n(&r, &["reordered"]), 0, "{ctx}");
        assert_eq!(n(&r, &["corrupt"]), 0, "{ctx}");
        assert!(n(&r, &["draws"]) > 0, "{ctx}");
        assert!(n(&r, &["rtt_us", "count"]) > 0, "pings were echoed: {ctx}");
        assert_eq!(code, 0, "{ctx}");
    }
}

#[test]
fn bulk_and_challenges_over_wss() {
    // max-rate draws (big writes through both layers) and a session
    // password: xfwd's challenge and the session's, both over wss
    let Some(s) = Setup::new(
        "bulk",
        "32",
        &["--draw-size=262144", "--draw-rate=max", "--password=s3cret"],
        "allow",
    ) else {
        return;
    };
    for scheme in ["wss", "ssl", "ws"] {
        let (code, r) = s.client(
            scheme,
            &format!("bulk-{scheme}"),
            "u:s3cret",
            "32",
            &["--connections=2", "--duration=2", "--encoder=rencodeplus"],
        );
        let ctx = format!("{scheme}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 2, "{ctx}");
        assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
        assert!(n(&r, &["draws"]) > 2, "{ctx}");
        assert_eq!(
            n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
            0,
            "{ctx}"
        );
        assert_eq!(code, 0, "{ctx}");
    }
}

#[test]
fn required_verification_refuses_a_self_signed_certificate() {
    let Some(s) = Setup::new("verify", "33", &["--draw-rate=0"], "allow") else {
        return;
    };
    for scheme in ["ssl", "wss"] {
        let (code, r) = s.client(
            scheme,
            &format!("verify-{scheme}"),
            "u:x",
            "33",
            &[
                "--connections=2",
                "--duration=1",
                "--ssl-server-verify-mode=required",
            ],
        );
        let ctx = format!("{scheme}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 0, "{ctx}");
        assert_eq!(n(&r, &["failures", "protocol"]), 2, "{ctx}");
        assert_eq!(code, 3, "an error exit, not a panic: {ctx}");
    }
}
