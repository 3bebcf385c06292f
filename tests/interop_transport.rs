//! Interop: Debian's xpra 3.1.3 client over TLS, WebSocket and WebSocket
//! over TLS through one xfwd port, and that port shared with a real web
//! server through `--tcp-proxy` (checked with curl).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn see_xterm(uri: &str, dir: &Path, from: u32, extra: &[&str]) {
    let display = free_display(from);
    let _x = xvfb(display);
    let (mut client, log) = attach_uri(uri, display, dir, &[], extra);
    let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(&format!("xterm via {uri}"), Duration::from_secs(45), || {
            windows(display).contains("xterm")
        })
    }));
    if seen.is_err() {
        panic!("no window via {uri}; client said:\n{}", read(&log));
    }
    assert!(client_kill(&mut client));
}

#[test]
fn ssl_ws_and_wss_clients_reach_the_session() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("transports");
    let session = Session::start(free_display(251), &dir);
    let (cert, key) = certificate(&dir);
    let mut xfwd = Xfwd::start(&dir, &["--tcp-auth=allow", &cert, &key]);
    let d = session.display;
    let port = xfwd.port;
    let no_verify = "--ssl-server-verify-mode=none";
    see_xterm(
        &format!("ssl://root:secret@127.0.0.1:{port}/{d}"),
        &dir,
        d + 1,
        &[no_verify],
    );
    see_xterm(
        &format!("ws://root:secret@127.0.0.1:{port}/{d}"),
        &dir,
        d + 1,
        &[],
    );
    see_xterm(
        &format!("wss://root:secret@127.0.0.1:{port}/{d}"),
        &dir,
        d + 1,
        &[no_verify],
    );
    // and plain tcp on the same port
    see_xterm(
        &format!("tcp://root:secret@127.0.0.1:{port}/{d}"),
        &dir,
        d + 1,
        &[],
    );
    assert!(xfwd.alive());
}

#[test]
fn one_port_serves_a_web_server_and_xpra() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("tcpproxy");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello from the web server\n").unwrap();
    let web_port = free_port();
    let _web = Proc(
        Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                &web_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("python's web server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", web_port)).is_ok()
    });
    let session = Session::start(free_display(261), &dir);
    let mut xfwd = Xfwd::start(
        &dir,
        &[
            "--tcp-auth=allow",
            &format!("--tcp-proxy=127.0.0.1:{web_port}"),
        ],
    );
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}/{path}", xfwd.port))
            .output()
            .expect("curl is needed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("hello.txt"), "hello from the web server\n");
    see_xterm(
        &format!(
            "tcp://root:secret@127.0.0.1:{}/{}",
            xfwd.port, session.display
        ),
        &dir,
        session.display + 1,
        &[],
    );
    assert_eq!(curl("hello.txt"), "hello from the web server\n");
    assert!(xfwd.alive());
}

#[test]
fn ssl_session_target() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("ssltarget");
    let (cert, key) = certificate(&dir);
    let ssl_port = free_port();
    let session = Session::start_with(
        free_display(271),
        &dir,
        &[
            &format!("--bind-ssl=127.0.0.1:{ssl_port}"),
            &cert,
            &key,
            "--ssl-auth=none",
        ],
    );
    let users = dir.join("users.txt");
    std::fs::write(
        &users,
        format!("foo|bar|nobody|nobody|ssl://127.0.0.1:{ssl_port}/||\n"),
    )
    .unwrap();
    let xfwd = Xfwd::start(
        &dir,
        &[
            &format!("--tcp-auth=multifile,filename={}", users.display()),
            "--ssl-server-verify-mode=none",
        ],
    );
    let pw = dir.join("foo.pw");
    std::fs::write(&pw, "bar").unwrap();
    see_xterm(
        &format!("tcp://foo@127.0.0.1:{}/", xfwd.port),
        &dir,
        session.display + 1,
        &[&format!("--password-file={}", pw.display())],
    );
    xfwd.wait_log(
        &format!("result=ok target=\"session ssl://127.0.0.1:{ssl_port}/"),
        Duration::from_secs(1),
    );
}

#[test]
fn ws_and_wss_session_targets() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("wstarget");
    let (cert, key) = certificate(&dir);
    let ws_port = free_port();
    let wss_port = free_port();
    let session = Session::start_with(
        free_display(281),
        &dir,
        &[
            &format!("--bind-ws=127.0.0.1:{ws_port}"),
            &format!("--bind-wss=127.0.0.1:{wss_port}"),
            &cert,
            &key,
            "--ws-auth=none",
            "--wss-auth=none",
        ],
    );
    let users = dir.join("users.txt");
    std::fs::write(
        &users,
        format!(
            "foo|bar|nobody|nobody|ws://127.0.0.1:{ws_port}/||\n\
             moo|cow|nobody|nobody|wss://127.0.0.1:{wss_port}/||\n"
        ),
    )
    .unwrap();
    let xfwd = Xfwd::start(
        &dir,
        &[
            &format!("--tcp-auth=multifile,filename={}", users.display()),
            "--ssl-server-verify-mode=none",
        ],
    );
    for (user, pw, port) in [("foo", "bar", ws_port), ("moo", "cow", wss_port)] {
        let pwf = dir.join(format!("{user}.pw"));
        std::fs::write(&pwf, pw).unwrap();
        see_xterm(
            &format!("tcp://{user}@127.0.0.1:{}/", xfwd.port),
            &dir,
            session.display + 1,
            &[&format!("--password-file={}", pwf.display())],
        );
        xfwd.wait_log(&format!("127.0.0.1:{port}/"), Duration::from_secs(1));
    }
}
