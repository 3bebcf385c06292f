//! TLS as an operator checks it with `openssl s_client`: protocol versions,
//! and a certificate reload on SIGHUP that keeps established connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn have_openssl() -> bool {
    if Command::new("openssl").arg("version").output().is_ok() {
        return true;
    }
    if std::env::var("XFWD_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("XFWD_SKIP_INTEROP=1: no openssl, skipping");
        return false;
    }
    panic!("these tests need openssl: apt-get install -y openssl");
}

fn make_cert(dir: &Path, cn: &str) {
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Xfwd(Child);

impl Drop for Xfwd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_client` output for one handshake (stdin closed at once).
fn s_client(port: u16, extra: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn versions_and_reload() {
    if !have_openssl() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("xfwd-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_cert(&dir, "first.example");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--system-wide=no")
        .arg(format!("--bind-ssl=127.0.0.1:{port}"))
        .arg(format!("--ssl-cert={}", dir.join("cert.pem").display()))
        .arg(format!("--ssl-key={}", dir.join("key.pem").display()))
        .arg(format!("--socket-dirs={}", dir.display()))
        .arg("--control-socket=none")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("xfwd listening") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "xfwd exited");
    }
    std::thread::spawn(move || for _ in err.lines() {});
    let xfwd = Xfwd(child);

    let t13 = s_client(port, &["-tls1_3"]);
    assert!(t13.contains("TLSv1.3"), "{t13}");
    assert!(t13.contains("first.example"), "{t13}");
    let t12 = s_client(port, &["-tls1_2"]);
    assert!(t12.contains("TLSv1.2"), "{t12}");
    let alpn = s_client(port, &["-alpn", "http/1.1"]);
    assert!(alpn.contains("ALPN protocol: http/1.1"), "{alpn}");
    let t11 = s_client(port, &["-tls1_1"]);
    assert!(
        t11.contains("alert") && t11.contains("no peer certificate available"),
        "TLS 1.1 must be refused:\n{t11}"
    );

    // An established connection, kept open across the reload.
    let mut held = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    make_cert(&dir, "second.example");
    let _ = Command::new("kill")
        .args(["-HUP", &xfwd.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = s_client(port, &[]);
        if out.contains("second.example") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "certificate not reloaded:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        held.try_wait().unwrap().is_none(),
        "the reload dropped a connection"
    );
    let _ = held.stdin.as_mut().unwrap().write_all(b"\n");
    let _ = held.kill();
    let _ = held.wait();
}
