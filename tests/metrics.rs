//! `--bind-metrics`: the xfwd binary relays, refuses and serves; a scrape
//! of `/metrics` shows it, and `promtool check metrics` accepts the text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::xpra::{dict, echo_session, Peer};
use common::{free_port, scratch, wait_until, Xfwd};
use xfwd::wire::views::{Challenge, Close};
use xfwd::wire::Value;

fn hello(display: &str, extra: Vec<(&str, Value)>) -> Vec<Value> {
    let mut c = vec![
        ("version", Value::from("3.1.3")),
        ("username", Value::from("tester")),
        ("digest", Value::List(vec!["hmac+sha256".into()])),
        ("salt-digest", Value::List(vec!["hmac+sha256".into()])),
        ("display", Value::from(format!(":{display}"))),
    ];
    c.extend(extra);
    vec![Value::from("hello"), dict(c)]
}

/// A client through the `file` module's challenge with `password`.
fn authenticate(port: u16, password: &[u8]) -> Peer<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Peer::new(s).chunked();
    c.send(hello("51", vec![]));
    let ch = c.recv().expect("a challenge");
    let challenge = Challenge::parse(&ch.items).unwrap();
    let a = xfwd::auth::client_answer(&challenge, password).unwrap();
    let response = String::from_utf8(a.response.as_bytes().to_vec()).unwrap();
    c.send(hello(
        "51",
        vec![
            ("challenge_response", Value::from(response)),
            (
                "challenge_client_salt",
                Value::Bytes(Bytes::from(a.client_salt.unwrap())),
            ),
        ],
    ));
    c
}

/// One HTTP exchange with the metrics endpoint: (status line, head, body).
fn http(port: u16, request: &[u8]) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, head.to_owned(), body.to_owned())
}

fn scrape(port: u16) -> String {
    let (status, head, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Samples by series name with the `shard` label summed away:
/// `name{other labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let labels: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.starts_with("shard="))
                    .collect();
                if labels.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}{{{}}}", labels.join(","))
                }
            }
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn get(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no series {key} in {s:#?}"))
}

/// Scrapes until `ok` holds (counters are added after the write that the
/// peer may already have read), then returns that scrape.
fn scrape_until(port: u16, what: &str, ok: impl Fn(&HashMap<String, f64>) -> bool) -> String {
    let mut last = String::new();
    wait_until(what, Duration::from_secs(20), || {
        last = scrape(port);
        ok(&samples(&last))
    });
    last
}

fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        // Loud either way: only an explicit opt-out skips this check.
        Err(e) if common::skip_interop(&format!("promtool check of the scrape ({e})")) => return,
        Err(e) => panic!(
            "promtool is needed to check the scrape ({e}): apt-get install -y prometheus \
             (Debian's package ships /usr/bin/promtool), or set XFWD_SKIP_INTEROP=1"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check metrics: {:?}; {said:?}", out.status);
    assert!(
        out.status.success(),
        "promtool check metrics failed: {said}\n{text}"
    );
}

#[test]
fn scrape_shows_relays_refusals_and_auth_failures() {
    let dir = scratch("metrics");
    echo_session(&dir, 51);
    let pw = dir.join("password.txt");
    std::fs::write(&pw, "right").unwrap();
    let mport = free_port();
    let x = Xfwd::start(
        &dir,
        &[
            &format!("--tcp-auth=file,filename={}", pw.display()),
            &format!("--bind-metrics=127.0.0.1:{mport}"),
        ],
    );
    x.wait_log(
        &format!("metrics at http://127.0.0.1:{mport}/metrics"),
        Duration::from_secs(5),
    );

    // Before any client: every series is there, at 0.
    let s = samples(&scrape(mport));
    assert_eq!(get(&s, "xfwd_connections_accepted_total"), 0.0);
    assert_eq!(get(&s, "xfwd_handshakes_total{result=\"relayed\"}"), 0.0);
    assert_eq!(get(&s, "xfwd_auth_failures_total{module=\"file\"}"), 0.0);

    // Three clients relay both ways.
    let mut good: Vec<_> = (0..3).map(|_| authenticate(x.port, b"right")).collect();
    for (i, c) in good.iter_mut().enumerate() {
        assert_eq!(c.recv().unwrap().packet_type(), Some("hello"));
        let pixels = Bytes::from(vec![i as u8; 20_000]);
        let draw = vec![Value::from("draw"), Value::Int(1), Value::Bytes(pixels)];
        c.send(&draw);
        let back = c.recv().unwrap();
        assert_eq!(back.items[2].as_bytes().unwrap().len(), 20_000);
    }
    // One with the wrong password is refused by the file module.
    let mut bad = authenticate(x.port, b"wrong");
    let close = bad.recv().unwrap();
    assert_eq!(
        Close::parse(&close.items).unwrap().reasons,
        vec!["authentication failed".to_owned()]
    );
    // HTTP on the xpra port: not xpra, served (a 404 without --html).
    let mut h = TcpStream::connect(("127.0.0.1", x.port)).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    h.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = h.read_to_end(&mut out);
    assert!(out.starts_with(b"HTTP/1.1 404"));

    let text = scrape_until(mport, "the three relays counted", |s| {
        s.get("xfwd_connections_open") == Some(&3.0)
            && s.get("xfwd_handshakes_total{result=\"served\"}") == Some(&1.0)
            && s.get("xfwd_relayed_packets_total{direction=\"session_to_client\"}") >= Some(&6.0)
    });
    let s = samples(&text);
    assert_eq!(get(&s, "xfwd_connections_accepted_total"), 5.0);
    assert_eq!(get(&s, "xfwd_handshakes_total{result=\"relayed\"}"), 3.0);
    assert_eq!(get(&s, "xfwd_handshakes_total{result=\"refused\"}"), 1.0);
    assert_eq!(get(&s, "xfwd_handshakes_total{result=\"served\"}"), 1.0);
    assert_eq!(get(&s, "xfwd_auth_failures_total{module=\"file\"}"), 1.0);
    // Every accepted connection ended its handshake once (all have).
    let ended: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("xfwd_handshakes_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ended, 5.0);
    assert_eq!(get(&s, "xfwd_handshake_duration_seconds_count"), 3.0);
    assert_eq!(
        get(&s, "xfwd_handshake_duration_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    // Both ways: the clients' draws (three of 20 000 bytes and more), and
    // the session's hellos plus the echoes.
    let c2s = get(
        &s,
        "xfwd_relayed_bytes_total{direction=\"client_to_session\"}",
    );
    let s2c = get(
        &s,
        "xfwd_relayed_bytes_total{direction=\"session_to_client\"}",
    );
    assert!(c2s >= 60_000.0, "{c2s}");
    assert!(s2c >= 60_000.0, "{s2c}");
    assert!(
        get(
            &s,
            "xfwd_relayed_packets_total{direction=\"client_to_session\"}"
        ) >= 3.0
    );
    // Nothing pinged yet: the round-trip histograms are empty.
    assert_eq!(get(&s, "xfwd_rtt_seconds_count{side=\"client\"}"), 0.0);
    promtool_check(&text);

    // Clients gone: the open gauge comes back to 0.
    drop(good);
    drop(bad);
    scrape_until(mport, "no connection open", |s| {
        s.get("xfwd_connections_open") == Some(&0.0)
    });

    // OpenMetrics when asked, as Prometheus asks.
    let (status, head, body) = http(
        mport,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE xfwd_handshakes counter"));

    // Anything else is refused, and the endpoint keeps serving.
    let (status, _, _) = http(mport, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, head, _) = http(
        mport,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(head.contains("Allow: GET"));
    // A head that never ends: refused at the bound (8 KiB; exactly that
    // much is sent, so that the answer is not lost to a reset).
    let mut endless = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
    endless.resize(8 * 1024, b'a');
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&endless).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A scraper that sends nothing holds a place only until the read
    // deadline, and the others are served meanwhile.
    let _silent = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    scrape(mport);
    drop(x);
}

#[test]
fn a_bad_metrics_address_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["--bind-tcp=127.0.0.1:0", "--bind-metrics=nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--bind-metrics=nowhere: expected HOST:PORT"),
        "{err}"
    );
    // A port something else holds.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["--system-wide=no", "--bind-tcp=127.0.0.1:0"])
        .arg(format!("--bind-metrics=127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("address already in use"), "{err}");
    assert!(err.contains("--bind-metrics"), "{err}");
}
