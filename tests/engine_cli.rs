//! The `xfwd` binary as an operator meets it: signals, bad environments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use xfwd::wire::frame::{FrameDecoder, Limits};
use xfwd::wire::header::{Encoder, Rules};
use xfwd::wire::packet::{self, Assembler, EncodeOptions};
use xfwd::wire::views::Close;
use xfwd::wire::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_tells_clients_and_exits_zero() {
    let dir = std::env::temp_dir().join(format!("xfwd-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--socket-dirs={}", dir.display()))
        .args(["--cores=1", "--tcp-auth=allow"])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("xfwd listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "xfwd exited early"
        );
    }
    // A client mid-handshake (it has been sent a challenge).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = vec![
        Value::from("hello"),
        Value::Dict(vec![
            (
                Value::from("digest"),
                Value::List(vec![Value::from("hmac+sha256")]),
            ),
            (
                Value::from("salt-digest"),
                Value::List(vec![Value::from("hmac+sha256")]),
            ),
        ]),
    ];
    for r in packet::encode_packet(&hello, &EncodeOptions::plain(Encoder::Rencode)).unwrap() {
        s.write_all(&r.to_bytes()).unwrap();
    }
    let mut dec = FrameDecoder::new(Rules::Any, Limits::default());
    let mut asm = Assembler::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 2 {
        while let Some(r) = dec.next_record().unwrap() {
            if let Some(p) = asm.push(&r, &Limits::default()).unwrap() {
                got.push(p);
                if got.len() == 1 {
                    let _ = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status();
                }
            }
        }
        if got.len() >= 2 {
            break;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed without a reason; got {got:?}");
        dec.feed(&buf[..n]);
    }
    assert_eq!(got[0].packet_type(), Some("challenge"));
    assert_eq!(
        Close::parse(&got[1].items).unwrap().reason(),
        "server shutdown"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// The shards run on epoll: a low locked-memory limit (which stopped the
/// old io_uring runtime) does not matter, and a low open-file limit is
/// explained with the setting to change; nothing else reaches the log.
#[test]
fn low_limits_start_with_advice_and_no_runtime_noise() {
    let port = free_port();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 64 && ulimit -n 256 && exec {} --system-wide=no --bind-tcp=127.0.0.1:{port} --cores=2 --tcp-auth=allow",
            env!("CARGO_BIN_EXE_xfwd")
        ))
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while !line.contains("xfwd listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "xfwd exited early: {log}"
        );
        log.push_str(&line);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}: {log}");
    assert!(log.contains("open-file limit is 256"), "{log}");
    assert!(log.contains("ulimit -n"), "{log}");
    for noise in [
        "io_uring",
        "locked-memory",
        "registering buffers",
        "Cannot allocate",
    ] {
        assert!(!log.contains(noise), "{noise} in the log: {log}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--bind-tcp=nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let mut err = String::new();
    out.stderr.as_slice().read_to_string(&mut err).unwrap();
    assert!(
        err.contains("--bind-tcp=nowhere: expected HOST:PORT"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--proxy-video-encoders`: a bad value is a usage error; encoders asked
/// for and none usable stop xfwd at start with the reason, not a silent
/// relay (no NVIDIA driver in CI: NVENC alone cannot start).
#[test]
fn video_encoders_are_checked_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--proxy-video-encoders=vaapi")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown video encoder \"vaapi\""), "{err}");
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("note: an NVIDIA device is here: the NVENC-only start is not checked");
        return;
    }
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args([
            "--system-wide=no",
            "--control-socket=none",
            &format!("--bind-tcp=127.0.0.1:{port}"),
            "--proxy-video-encoders=nvenc",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--proxy-video-encoders: no video encoder available"),
        "{err}"
    );
    assert!(err.contains("nvenc"), "{err}");
}
