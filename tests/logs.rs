//! `--log-format`: JSON lines that parse, plain text without colour codes
//! when stderr is not a terminal, and a bad value refused by the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// xfwd, killed if a test ends before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts xfwd with `extra`, colour not ruled out by the environment (no
/// NO_COLOR), stderr a pipe; returns once it listens, with the lines so
/// far.
fn start(
    extra: &[&str],
) -> (
    Running,
    u16,
    BufReader<std::process::ChildStderr>,
    Vec<String>,
) {
    let dir = std::env::temp_dir().join(format!("xfwd-logs-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let port = free_port();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_xfwd"))
            .arg("--system-wide=no")
            .arg(format!("--bind-tcp=127.0.0.1:{port}"))
            .arg(format!("--socket-dirs={}", dir.display()))
            .args(["--cores=1", "--tcp-auth=fail"])
            .args(extra)
            .env_remove("NO_COLOR")
            .env("XFWD_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "xfwd exited early: {lines:?}"
        );
        let done = line.contains("xfwd listening");
        lines.push(line);
        if done {
            return (child, port, stderr, lines);
        }
    }
}

/// A client the `fail` module refuses (a log line inside the connection's
/// span), then SIGTERM; every stderr line until xfwd exits.
fn drive_and_stop(
    mut child: Running,
    port: u16,
    mut stderr: BufReader<std::process::ChildStderr>,
    mut lines: Vec<String>,
) -> Vec<String> {
    use xfwd::wire::header::Encoder;
    use xfwd::wire::packet::{self, EncodeOptions};
    use xfwd::wire::Value;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hello = vec![Value::from("hello"), Value::Dict(vec![])];
    for r in packet::encode_packet(&hello, &EncodeOptions::plain(Encoder::Rencode)).unwrap() {
        s.write_all(&r.to_bytes()).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!out.is_empty(), "no answer to the hello");
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    lines.extend(rest.lines().map(|l| format!("{l}\n")));
    assert!(child.0.wait().unwrap().success());
    lines
}

#[test]
fn json_lines_parse_with_their_fields() {
    let (child, port, stderr, lines) = start(&["--log-format=json"]);
    let lines = drive_and_stop(child, port, stderr, lines);
    let mut saw_listening = false;
    let mut saw_conn_span = false;
    for line in &lines {
        assert!(!line.contains("\x1b["), "colour codes: {line:?}");
        let v: serde_json::Value = serde_json::from_str(line.trim_end())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        let message = v["fields"]["message"].as_str().unwrap_or("");
        if message == "xfwd listening" {
            saw_listening = true;
            assert_eq!(v["level"], "INFO");
            assert_eq!(v["fields"]["shards"], 1, "{line}");
        }
        if v["span"]["name"] == "conn" {
            saw_conn_span = true;
            assert!(v["span"]["peer"].is_string(), "{line}");
        }
    }
    assert!(saw_listening, "{lines:#?}");
    assert!(saw_conn_span, "no line inside a connection: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"stopped\"")),
        "{lines:#?}"
    );
}

#[test]
fn text_has_no_colour_codes_off_a_terminal() {
    let (child, port, stderr, lines) = start(&[]);
    let lines = drive_and_stop(child, port, stderr, lines);
    let all = lines.concat();
    assert!(all.contains(" INFO "), "{all}");
    assert!(all.contains("xfwd listening"), "{all}");
    assert!(!all.contains("\x1b["), "colour codes in a pipe: {all:?}");
    // The explicit format is the same.
    let (child, port, stderr, lines) = start(&["--log-format=text"]);
    let all = drive_and_stop(child, port, stderr, lines).concat();
    assert!(all.contains("xfwd listening") && !all.contains("\x1b["));
}

#[test]
fn a_bad_log_format_is_a_cli_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["--bind-tcp=127.0.0.1:0", "--log-format=xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'xml'"), "{err}");
    assert!(err.contains("--log-format"), "{err}");
    assert!(err.contains("json"), "the choices are listed: {err}");
}

#[test]
fn json_start_errors_are_json_too() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp={addr}"))
        .arg("--log-format=json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let mut found = false;
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        if v["level"] == "ERROR" {
            let m = v["fields"]["message"].as_str().unwrap();
            assert!(m.contains("address already in use"), "{m}");
            found = true;
        }
    }
    assert!(found, "{err}");
}
