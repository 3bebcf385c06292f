//! Interop: the `hosts`, `otp` and `http-header` modules with Debian's real
//! xpra 3.1.3 (a real `xpra start` session, real `xpra attach` clients
//! under Xvfb, through xfwd over TLS), and `http-header` with a WebSocket
//! client that sends the headers a front would.
//!
//! - `hosts`: a `hosts.deny` that names the loopback refuses the client;
//!   one that names another host lets it through to its session.
//! - `otp`: the current code, computed from the secret, reaches the
//!   session; a stale one and the same code again are refused. Chained
//!   after `password` it is a second factor (the client answers two
//!   challenges from two password files).
//! - `http-header`: `X-Forwarded-Proto: https` from the loopback passes,
//!   `http` or a second copy of the header is refused; the user named by
//!   `username-header` must be the client's.
//!
//! Needs `apt-get install -y xpra xvfb x11-utils xterm libwrap0 openssl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use common::*;
use xfwd::auth::otp::{OtpAuth, STEP};
use xfwd::auth::AuthSpec;
use xfwd::transport::websocket::{
    apply_mask, encode_header, ClientHandshake, DecoderConfig, Event, FrameDecoder, OpCode,
    MAX_HEADER_LEN,
};
use xfwd::wire::frame::{FrameDecoder as XDecoder, Limits};
use xfwd::wire::header::{Encoder, Rules};
use xfwd::wire::packet::{self, Assembler, EncodeOptions};
use xfwd::wire::views::Close;
use xfwd::wire::Value;

const SECRET: &str = "JBSWY3DPEHPK3PXP";

fn tools() -> bool {
    if skip_interop("hosts/otp/http-header interop tests") {
        return false;
    }
    let have_wrap = Path::new("/usr/lib/x86_64-linux-gnu/libwrap.so.0").exists()
        || Path::new("/usr/lib/aarch64-linux-gnu/libwrap.so.0").exists();
    if !tools_present() || !have_wrap {
        eprintln!("note: xpra, Xvfb, xterm or libwrap0 missing: skipped");
        return false;
    }
    true
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn otp_code(at: u64) -> String {
    OtpAuth::new(&AuthSpec::parse(&format!("otp,secret={SECRET}")).unwrap())
        .unwrap()
        .code_at(at)
}

fn file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// xfwd with TLS on its port and `auth` for TCP and TLS clients.
fn xfwd_tls(dir: &Path, auth: &[&str]) -> (Xfwd, String) {
    let (cert, key) = certificate(dir);
    let mut args = vec![cert, key];
    for a in auth {
        args.push(format!("--tcp-auth={a}"));
        args.push(format!("--ssl-auth={a}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (
        Xfwd::start(dir, &args),
        dir.join("cert.pem").display().to_string(),
    )
}

/// `xpra attach ssl://...` with password files; whether the session's
/// xterm appeared (`true`) or the client gave up with "authentication
/// failed" (`false`).
fn attach(port: u16, cert: &str, dir: &Path, password_files: &[&str]) -> bool {
    let display = free_display(150);
    let _x = xvfb(display);
    // One file handler per challenge, each with the next password file
    // (xpra's list options are given once per value).
    let mut extra = vec![format!("--ssl-ca-certs={cert}")];
    for f in password_files {
        extra.push(format!("--password-file={f}"));
        extra.push("--challenge-handlers=file".to_owned());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (mut client, log) = attach_uri(
        &format!("ssl://tester@127.0.0.1:{port}/"),
        display,
        dir,
        &[],
        &extra,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        if windows(display).contains("xterm") {
            assert!(client_kill(&mut client), "{}", read(&log));
            return true;
        }
        if let Ok(Some(_)) = client.0.try_wait() {
            let text = read(&log);
            assert!(text.contains("authentication failed"), "{text}");
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither the xterm nor a refusal: {}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hosts_deny_refuses_the_loopback_and_otp_is_a_second_factor() {
    if !tools() {
        return;
    }
    let dir = scratch("interop-auth-modules");
    let session = Session::start(free_display(140), &dir);

    // hosts: the loopback denied, then another host denied.
    let allow = file(&dir, "hosts.allow", "");
    let deny = file(&dir, "hosts.deny", "xpra: 127.0.0.1\n");
    let (x, cert) = xfwd_tls(
        &dir,
        &[&format!("hosts,hosts-allow={allow},hosts-deny={deny}")],
    );
    // hosts sends no challenge: no password is needed.
    let unused = file(&dir, "unused.pw", "x");
    assert!(!attach(x.port, &cert, &dir, &[&unused]));
    x.wait_log("module=hosts result=failed", Duration::from_secs(5));
    assert!(x.log().contains("access denied for host 127.0.0.1"));
    drop(x);
    let deny = file(&dir, "hosts.deny2", "xpra: 192.0.2.1\n");
    let (x, cert) = xfwd_tls(
        &dir,
        &[&format!("hosts,hosts-allow={allow},hosts-deny={deny}")],
    );
    assert!(attach(x.port, &cert, &dir, &[&unused]));
    drop(x);

    // otp alone: the current code (a window of one step either side, so
    // that a step boundary between writing and checking does not matter).
    let (x, cert) = xfwd_tls(&dir, &[&format!("otp,secret={SECRET},valid-window=1")]);
    let code = file(&dir, "code.pw", &otp_code(now()));
    assert!(attach(x.port, &cert, &dir, &[&code]));
    // The same code again: refused (RFC 6238 §5.2).
    assert!(!attach(x.port, &cert, &dir, &[&code]));
    // A code from ten minutes ago: refused.
    let stale = file(&dir, "stale.pw", &otp_code(now() - 20 * STEP));
    assert!(!attach(x.port, &cert, &dir, &[&stale]));
    x.wait_log("module=otp result=failed", Duration::from_secs(5));
    drop(x);

    // password, then otp: two challenges, two files.
    let (x, cert) = xfwd_tls(
        &dir,
        &[
            "password,value=s3cret",
            &format!("otp,secret={SECRET},valid-window=1"),
        ],
    );
    let pw = file(&dir, "pw.pw", "s3cret");
    let code = file(&dir, "code2.pw", &otp_code(now()));
    assert!(attach(x.port, &cert, &dir, &[&pw, &code]));
    let wrong = file(&dir, "wrong.pw", "nope");
    let code = file(&dir, "code3.pw", &otp_code(now() + 2 * STEP));
    assert!(!attach(x.port, &cert, &dir, &[&wrong, &code]));
    drop(x);
    session.stop();
}

/// A WebSocket client's hello with `headers` added to its upgrade request;
/// the reason of the `connection-close` it gets.
fn ws_hello_reason(port: u16, headers: &[(&str, &str)], username: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hs = ClientHandshake::new("127.0.0.1", "/").unwrap();
    let mut req = hs.request();
    assert!(req.ends_with(b"\r\n\r\n"));
    req.truncate(req.len() - 2);
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    // The 101 response.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let rest = loop {
        let n = match s.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        };
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(a) = hs.read_response(&buf).unwrap() {
            break buf.split_off(a.head_len);
        }
    };
    let hello = Value::Dict(vec![
        (Value::from("version"), Value::from("3.1.3")),
        (Value::from("username"), Value::from(username)),
        (
            Value::from("digest"),
            Value::List(vec![Value::from("hmac+sha256")]),
        ),
        (
            Value::from("salt-digest"),
            Value::List(vec![Value::from("hmac+sha256")]),
        ),
    ]);
    let mut payload = Vec::new();
    for r in packet::encode_packet(
        &[Value::from("hello"), hello],
        &EncodeOptions::plain(Encoder::Rencode),
    )
    .unwrap()
    {
        payload.extend_from_slice(&r.to_bytes());
    }
    let key = [1, 2, 3, 4];
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(
        &mut head,
        true,
        OpCode::Binary,
        payload.len() as u64,
        Some(key),
    );
    let mut frame = head[..n].to_vec();
    let mut body = payload.to_vec();
    apply_mask(&mut body, key, 0);
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    // Frames back, xpra packets in them.
    let mut ws = FrameDecoder::new(DecoderConfig::client());
    let mut wire = BytesMut::from(&rest[..]);
    let mut dec = XDecoder::new(Rules::Any, Limits::default());
    let mut asm = Assembler::new();
    loop {
        while let Some(ev) = ws.decode(&mut wire).unwrap() {
            if let Event::Data(d) = ev {
                dec.feed(&d);
            }
        }
        while let Some(r) = dec.next_record().unwrap() {
            if let Some(p) = asm.push(&r, &Limits::default()).unwrap() {
                if let Ok(c) = Close::parse(&p.items) {
                    return c.reason().to_owned();
                }
            }
        }
        let n = match s.read(&mut chunk) {
            // A signal (another test's child ending) is not the answer.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        };
        if n == 0 {
            return String::new();
        }
        wire.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn http_header_decides_by_the_fronts_headers() {
    let dir = scratch("interop-http-header");
    let x = Xfwd::start(
        &dir,
        &["--tcp-auth=http-header,username-header=X-Forwarded-User"],
    );
    let front = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-User", "alice"),
    ];
    // Passed: the chain accepted the client, and it was then told that no
    // session is there (the socket dir is empty).
    let passed = ws_hello_reason(x.port, &front, "alice");
    assert_ne!(passed, "authentication failed");
    assert!(!passed.is_empty());
    x.wait_log("module=http-header result=ok", Duration::from_secs(5));
    for (headers, user) in [
        (
            &[("X-Forwarded-Proto", "http"), ("X-Forwarded-User", "alice")][..],
            "alice",
        ),
        (&front[..], "bob"),
        (&[("X-Forwarded-Proto", "https")][..], "alice"),
        (
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-User", "alice"),
                ("X-Forwarded-User", "bob"),
            ][..],
            "alice",
        ),
    ] {
        assert_eq!(
            ws_hello_reason(x.port, headers, user),
            "authentication failed",
            "{headers:?} as {user}"
        );
    }
    let log = x.log();
    assert!(log.contains("X-Forwarded-Proto is \\\"http\\\""), "{log}");
    assert!(
        log.contains("names \\\"alice\\\", the client is \\\"bob\\\""),
        "{log}"
    );
}
