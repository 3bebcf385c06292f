//! The engine in-process, between a fake client and a fake session built on
//! `xfwd::wire`: handshake, routing, byte-exact relaying, backpressure,
//! every way a connection can end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use xfwd::config::ServeArgs;
use xfwd::engine::Server;
use xfwd::wire::header::Encoder;
use xfwd::wire::packet::{self, EncodeOptions, Packet};
use xfwd::wire::views::{Challenge, Close, Hello};
use xfwd::wire::Value;

mod common;

use common::xpra::{hostname, Peer};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xfwd-engine-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "xfwd".to_owned(),
        "--bind-tcp=127.0.0.1:0".to_owned(),
        format!("--socket-dirs={}", dir.display()),
        "--cores=2".to_owned(),
        // Many servers in one process: no control socket (its default
        // path has the process id in it).
        "--control-socket=none".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let cli = <Cli as clap::Parser>::parse_from(args);
    Server::start(cli.serve.into_config().unwrap()).unwrap()
}

fn caps(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn client_hello(display: Option<&str>) -> Vec<Value> {
    let mut c = vec![
        ("version", Value::from("3.1.3")),
        ("username", Value::from("tester")),
        ("uuid", Value::from("c0ffee")),
        (
            "encoders",
            Value::List(vec!["rencode".into(), "bencode".into()]),
        ),
        (
            "digest",
            Value::List(vec!["hmac+sha256".into(), "xor".into()]),
        ),
        ("salt-digest", Value::List(vec!["hmac+sha256".into()])),
        ("aliases", caps(vec![("draw", Value::Int(5))])),
    ];
    if let Some(d) = display {
        c.push(("display", Value::from(format!(":{d}"))));
    }
    vec![Value::from("hello"), caps(c)]
}

fn client(addr: SocketAddr) -> Peer<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Peer::new(s).chunked()
}

fn close_reason(p: &Packet) -> String {
    Close::parse(&p.items).unwrap().reasons.join(" | ")
}

/// A fake session at DIR/HOST-DISPLAY, running `behave` on each connection.
fn fake_session(
    dir: &Path,
    display: u32,
    behave: impl Fn(Peer<UnixStream>) + Send + Sync + 'static,
) -> thread::JoinHandle<()> {
    let path = dir.join(format!("{}-{display}", hostname()));
    let l = UnixListener::bind(&path).unwrap();
    let behave = Arc::new(behave);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let behave = behave.clone();
            thread::spawn(move || behave(Peer::new(s).chunked()));
        }
    })
}

/// Session behaviour: answer the hello, report its caps, then echo every
/// packet back.
fn echo_session(hellos: mpsc::Sender<Vec<Value>>) -> impl Fn(Peer<UnixStream>) + Send + Sync {
    move |mut p| {
        let hello = p.recv().unwrap();
        hellos.send(hello.items.clone()).unwrap();
        p.send(vec![
            Value::from("hello"),
            caps(vec![
                ("version", Value::from("3.1.3")),
                ("aliases", caps(vec![("ping", Value::Int(3))])),
            ]),
        ]);
        while let Some(pk) = p.recv() {
            p.send(pk.items);
        }
    }
}

#[test]
fn relays_both_ways_and_owns_the_handshake() {
    let dir = scratch("relay");
    let (tx, rx) = mpsc::channel();
    fake_session(&dir, 42, echo_session(tx));
    let server = start(&dir, &["--tcp-auth=allow"]);
    let mut c = client(server.tcp_addrs()[0]);
    c.send(client_hello(Some("42")));
    // allow: a challenge first, then any answer passes.
    let ch = c.recv().unwrap();
    let challenge = Challenge::parse(&ch.items).unwrap();
    assert_eq!(challenge.digest, "hmac+sha256");
    assert_eq!(challenge.salt.len(), 64);
    let mut answer = client_hello(Some("42"));
    if let Value::Dict(d) = &mut answer[1] {
        d.push((Value::from("challenge_response"), Value::from("00ff")));
        d.push((Value::from("challenge_client_salt"), Value::from("abc")));
    }
    c.send(answer);

    // The session sees the client's caps minus what the proxy owns.
    let upstream = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let h = Hello::parse(&upstream).unwrap();
    assert_eq!(h.username(), Some("tester"));
    assert_eq!(h.requested_display(), Some("42"));
    assert!(h.get("challenge_response").is_none());
    assert!(h.get("challenge_client_salt").is_none());
    assert!(h.get("aliases").is_none());
    assert_eq!(h.bool("proxy"), Some(true));
    assert_eq!(h.str("proxy.name"), Some("xfwd"));

    // The client gets the session's hello, aliases stripped.
    let sh = c.recv().unwrap();
    let sh = Hello::parse(&sh.items).unwrap();
    assert_eq!(sh.version(), Some("3.1.3"));
    assert!(sh.get("aliases").is_none());

    // Packets with raw chunks come back byte for byte.
    for size in [0usize, 1, 5000, 300_000, 3_000_000] {
        let pixels: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let items = vec![
            Value::from("draw"),
            Value::Int(1),
            Value::Bytes(Bytes::from(pixels.clone())),
            Value::Int(size as i64),
        ];
        c.send(items.clone());
        let back = c.recv().unwrap();
        assert_eq!(back.items[0].as_str(), Some("draw"));
        assert_eq!(
            back.items[2].as_bytes().unwrap(),
            &pixels[..],
            "size {size}"
        );
    }
    server.stop_and_join();
}

#[test]
fn refusals_carry_reasons() {
    let dir = scratch("refuse");
    let server = start(&dir, &["--tcp-auth=fail", "--handshake-timeout=2"]);
    let addr = server.tcp_addrs()[0];

    let mut c = client(addr);
    c.send(client_hello(None));
    assert_eq!(close_reason(&c.recv().unwrap()), "authentication failed");

    // Silence: at the handshake deadline the connection is closed (with
    // nothing said, xfwd cannot know which protocol to answer in).
    let mut c = client(addr);
    assert!(c.recv().is_none());

    // A hello, then silence: the deadline, told in the client's encoder.
    let mut c = client(addr);
    let mut partial = Vec::new();
    for r in
        packet::encode_packet(&client_hello(None), &EncodeOptions::plain(Encoder::Rencode)).unwrap()
    {
        partial.extend_from_slice(&r.to_bytes());
    }
    c.s.write_all(&partial[..partial.len() - 1]).unwrap();
    assert_eq!(close_reason(&c.recv().unwrap()), "handshake timeout");

    // Not xpra at all: a plain-text line, then closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(out, b"invalid protocol for this port\n");
    // HTTP without --html or --tcp-proxy: a 404 that says why.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");

    // A declared hello of 64 MiB is refused before it is read.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[b'P', 0x01, 0, 0, 0x04, 0, 0, 0]).unwrap();
    let mut p = Peer::new(s).chunked();
    let reason = close_reason(&p.recv().unwrap());
    assert!(reason.contains("exceeds"), "{reason}");
    server.stop_and_join();
}

#[test]
fn reject_challenges_then_refuses() {
    let dir = scratch("reject");
    let server = start(&dir, &["--tcp-auth=reject"]);
    let mut c = client(server.tcp_addrs()[0]);
    c.send(client_hello(None));
    let ch = c.recv().unwrap();
    assert_eq!(ch.packet_type(), Some("challenge"));
    let mut answer = client_hello(None);
    if let Value::Dict(d) = &mut answer[1] {
        d.push((Value::from("challenge_response"), Value::from("00")));
    }
    c.send(answer);
    assert_eq!(close_reason(&c.recv().unwrap()), "authentication failed");
    server.stop_and_join();
}

#[test]
fn routing_errors_list_what_exists() {
    let dir = scratch("route");
    let (tx, _rx) = mpsc::channel();
    let (tx2, _rx2) = mpsc::channel();
    fake_session(&dir, 11, echo_session(tx));
    fake_session(&dir, 12, echo_session(tx2));
    // a stale socket is ignored
    drop(UnixListener::bind(dir.join(format!("{}-13", hostname()))).unwrap());
    let server = start(&dir, &[]);
    let addr = server.tcp_addrs()[0];
    let mut c = client(addr);
    c.send(client_hello(None));
    assert_eq!(
        close_reason(&c.recv().unwrap()),
        "please specify a display: found :11, :12"
    );
    let mut c = client(addr);
    c.send(client_hello(Some("13")));
    assert_eq!(
        close_reason(&c.recv().unwrap()),
        "session :13 not found; available: :11, :12"
    );
    server.stop_and_join();
}

#[test]
fn session_going_away_and_server_stop_tell_the_client() {
    let dir = scratch("goaway");
    fake_session(&dir, 21, |mut p| {
        p.recv().unwrap();
        p.send(vec![Value::from("hello"), caps(vec![])]);
        // the session dies without a word
    });
    let (tx, _rx) = mpsc::channel();
    fake_session(&dir, 22, echo_session(tx));
    let server = start(&dir, &[]);
    let addr = server.tcp_addrs()[0];

    let mut c = client(addr);
    c.send(client_hello(Some("21")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    assert_eq!(
        close_reason(&c.recv().unwrap()),
        "session closed the connection"
    );
    assert!(c.recv().is_none());

    let mut c = client(addr);
    c.send(client_hello(Some("22")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    server.stop_and_join();
    assert_eq!(close_reason(&c.recv().unwrap()), "server shutdown");
}

#[test]
fn a_client_that_does_not_read_throttles_the_session() {
    let dir = scratch("backpressure");
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    fake_session(&dir, 31, move |mut p| {
        p.recv().unwrap();
        p.send(vec![Value::from("hello"), caps(vec![])]);
        let pixels = Bytes::from(vec![7u8; 256 * 1024]);
        let records = packet::encode_packet(
            &[Value::from("draw"), Value::Int(1), Value::Bytes(pixels)],
            &EncodeOptions {
                chunk_threshold: Some(4096),
                ..EncodeOptions::plain(Encoder::Rencode)
            },
        )
        .unwrap();
        let mut one = Vec::new();
        for r in &records {
            one.extend_from_slice(&r.to_bytes());
        }
        p.s.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Write until the proxy stops taking bytes (or 1 GiB).
        while w.load(Ordering::SeqCst) < 1 << 30 {
            if p.s.write_all(&one).is_err() {
                return;
            }
            w.fetch_add(one.len() as u64, Ordering::SeqCst);
        }
    });
    let server = start(&dir, &[]);
    let mut c = client(server.tcp_addrs()[0]);
    c.send(client_hello(Some("31")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    // Read nothing for a while: the session must be held back by the
    // socket buffers plus xfwd's one read buffer, not by xfwd's memory.
    let mut last = 0;
    for _ in 0..40 {
        thread::sleep(Duration::from_millis(100));
        let now = written.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let held = written.load(Ordering::SeqCst);
    eprintln!("session wrote {held} bytes before being held back");
    assert!(
        held < 64 << 20,
        "session wrote {held} bytes to a client that reads nothing"
    );
    // Reading again drains it: packets still arrive whole.
    for _ in 0..8 {
        let p = c.recv().unwrap();
        assert_eq!(p.items[0].as_str(), Some("draw"));
        assert_eq!(p.items[2].as_bytes().unwrap().len(), 256 * 1024);
    }
    server.stop_and_join();
}

#[test]
fn port_in_use_is_an_error_not_a_share() {
    let dir = scratch("inuse");
    let server = start(&dir, &[]);
    let addr = server.tcp_addrs()[0];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp={addr}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("address already in use"), "{err}");
    server.stop_and_join();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["--bind-tcp=127.0.0.1:1", "--tcp-auth=nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown auth module \"nonsense\""), "{err}");
}

#[test]
fn failed_attempts_are_delayed_while_others_are_served() {
    let dir = scratch("throttle");
    let pw = dir.join("password.txt");
    std::fs::write(&pw, "right").unwrap();
    let server = start(
        &dir,
        &[&format!("--tcp-auth=file,filename={}", pw.display())],
    );
    let addr = server.tcp_addrs()[0];
    let answer = |c: &mut Peer<TcpStream>, password: &[u8]| {
        c.send(client_hello(None));
        let ch = c.recv().unwrap();
        let challenge = Challenge::parse(&ch.items).unwrap();
        let a = xfwd::auth::client_answer(&challenge, password).unwrap();
        let mut hello = client_hello(None);
        if let Value::Dict(d) = &mut hello[1] {
            let r = String::from_utf8(a.response.as_bytes().to_vec()).unwrap();
            d.push((Value::from("challenge_response"), Value::from(r)));
            d.push((
                Value::from("challenge_client_salt"),
                Value::Bytes(Bytes::from(a.client_salt.unwrap())),
            ));
        }
        c.send(hello);
    };
    let mut bad = client(addr);
    answer(&mut bad, b"wrong");
    let sent = std::time::Instant::now();
    // Meanwhile a client with the right password is served: it gets past
    // auth (to routing, which finds no session here).
    let mut good = client(addr);
    answer(&mut good, b"right");
    assert_eq!(
        close_reason(&good.recv().unwrap()),
        "no xpra sessions found"
    );
    assert_eq!(close_reason(&bad.recv().unwrap()), "authentication failed");
    // A lower bound only: a busy machine can only make it longer.
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "{:?}",
        sent.elapsed()
    );
    server.stop_and_join();
}

#[test]
fn proxy_protocol_only_from_trusted_fronts() {
    let dir = scratch("proxyproto");
    let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n";
    // Trusted: the header is read, then the xpra path goes on.
    let server = start(&dir, &["--proxy-protocol-from=127.0.0.0/8"]);
    let mut c = client(server.tcp_addrs()[0]);
    c.s.write_all(header).unwrap();
    c.send(client_hello(None));
    assert_eq!(close_reason(&c.recv().unwrap()), "no xpra sessions found");
    server.stop_and_join();
    // Untrusted: closed without a word.
    let server = start(&dir, &[]);
    let mut c = client(server.tcp_addrs()[0]);
    c.s.write_all(header).unwrap();
    c.send(client_hello(None));
    assert!(c.recv().is_none());
    server.stop_and_join();
}

#[test]
fn handshakes_are_bounded_per_address_and_freed_when_done() {
    let dir = scratch("admit");
    let server = start(&dir, &["--tcp-auth=fail", "--max-handshakes-per-ip=2"]);
    let addr = server.tcp_addrs()[0];
    // Two silent connections hold the address's two places.
    let quiet: Vec<_> = (0..2).map(|_| client(addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    // A third is closed at accept, without waiting for the deadline.
    let mut third = client(addr);
    let t = std::time::Instant::now();
    assert!(third.recv().is_none());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "not closed at accept"
    );
    // Places come back when connections end: the next one is served.
    drop(quiet);
    std::thread::sleep(Duration::from_millis(200));
    let mut c = client(addr);
    c.send(client_hello(None));
    assert_eq!(close_reason(&c.recv().unwrap()), "authentication failed");
    server.stop_and_join();
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Faults during forwarding end that connection only, tell the other side
/// when its stream allows, and leave no descriptor behind.
#[test]
fn faults_mid_record_end_one_connection_and_leave_nothing() {
    let dir = scratch("faults");
    // 31: dies in the middle of a record.
    fake_session(&dir, 31, |mut p| {
        p.recv().unwrap();
        p.send(vec![Value::from("hello"), caps(vec![])]);
        let mut rec = Vec::new();
        let draw = vec![
            Value::from("draw"),
            Value::Bytes(bytes::Bytes::from(vec![7u8; 100_000])),
        ];
        for r in packet::encode_packet(&draw, &EncodeOptions::plain(Encoder::Rencode)).unwrap() {
            rec.extend_from_slice(&r.to_bytes());
        }
        p.s.write_all(&rec[..rec.len() / 2]).unwrap();
        // dropped here: the session is gone mid-record
    });
    // 32: answers garbage after its hello.
    fake_session(&dir, 32, |mut p| {
        p.recv().unwrap();
        p.send(vec![Value::from("hello"), caps(vec![])]);
        p.s.write_all(b"this is not xpra at all").unwrap();
        thread::sleep(Duration::from_secs(5));
    });
    // 33: echoes; records what the client side did to it.
    let (tx, _rx) = mpsc::channel();
    fake_session(&dir, 33, echo_session(tx));
    let server = start(&dir, &[]);
    let addr = server.tcp_addrs()[0];
    // A well-behaved connection that stays up through all of it.
    let mut steady = client(addr);
    steady.send(client_hello(Some("33")));
    assert_eq!(steady.recv().unwrap().items[0].as_str(), Some("hello"));
    let before = open_fds();

    // The session dies mid-record: the client's stream is mid-record too,
    // so nothing is injected; the connection just closes.
    let mut c = client(addr);
    c.send(client_hello(Some("31")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    assert!(c.recv().is_none(), "a packet after a cut record");
    drop(c);

    // Garbage from the session: the client is told, at a packet boundary.
    let mut c = client(addr);
    c.send(client_hello(Some("32")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    assert_eq!(
        close_reason(&c.recv().unwrap()),
        "session closed the connection"
    );
    assert!(c.recv().is_none());
    drop(c);

    // The client resets mid-record (SO_LINGER 0): the session's side ends.
    let mut c = client(addr);
    c.send(client_hello(Some("33")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    let mut half = Vec::new();
    let big = vec![
        Value::from("ping"),
        Value::Bytes(bytes::Bytes::from(vec![1u8; 50_000])),
    ];
    for r in packet::encode_packet(&big, &EncodeOptions::plain(Encoder::Rencode)).unwrap() {
        half.extend_from_slice(&r.to_bytes());
    }
    c.s.write_all(&half[..half.len() / 2]).unwrap();
    socket2::SockRef::from(&c.s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);

    // The steady connection is still served.
    steady.send(vec![Value::from("ping"), Value::Int(42)]);
    let echo = steady.recv().unwrap();
    assert_eq!(echo.items[1].as_int(), Some(42));
    // Nothing left behind: the proxy's descriptors are back where they were
    // (the faulty connections' sockets and their sessions' are closed).
    let t = std::time::Instant::now();
    while open_fds() > before && t.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(open_fds() <= before, "{} fds, {before} before", open_fds());
    server.stop_and_join();
}

#[test]
fn a_client_that_stops_reading_is_dropped_at_the_ping_timeout() {
    let dir = scratch("deadclient");
    let (told_tx, told_rx) = mpsc::channel::<String>();
    fake_session(&dir, 37, move |mut p| {
        p.recv().unwrap();
        p.send(vec![
            Value::from("hello"),
            caps(vec![("ping-echo-sourceid", Value::Bool(true))]),
        ]);
        // Draws, flat out, from a second handle (its thread also writes
        // the echoes, between draws); this one reads and reports the close
        // it is sent.
        let mut w = p.s.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let records = packet::encode_packet(
            &[
                Value::from("draw"),
                Value::Int(1),
                Value::Bytes(Bytes::from(vec![7u8; 64 * 1024])),
            ],
            &EncodeOptions::plain(Encoder::Rencode),
        )
        .unwrap();
        let mut one = Vec::new();
        for r in &records {
            one.extend_from_slice(&r.to_bytes());
        }
        let (echo_tx, echo_rx) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || loop {
            while let Ok(e) = echo_rx.try_recv() {
                if w.write_all(&e).is_err() {
                    return;
                }
            }
            if w.write_all(&one).is_err() {
                return;
            }
        });
        let told = told_tx.clone();
        while let Some(pk) = p.recv() {
            match pk.items[0].as_str() {
                Some("ping") => {
                    let echo = common::xpra::ping_echo(&pk.items);
                    let mut b = Vec::new();
                    for r in packet::encode_packet(&echo, &EncodeOptions::plain(Encoder::Rencode))
                        .unwrap()
                    {
                        b.extend_from_slice(&r.to_bytes());
                    }
                    let _ = echo_tx.send(b);
                }
                Some("connection-close" | "disconnect") => {
                    let _ = told.send(close_reason(&pk));
                    return;
                }
                _ => {}
            }
        }
    });
    let server = start(&dir, &["--ping-interval=1", "--ping-timeout=3"]);
    let mut c = client(server.tcp_addrs()[0]);
    let mut hello = client_hello(Some("37"));
    if let Value::Dict(d) = &mut hello[1] {
        d.push((Value::from("ping-echo-sourceid"), Value::Bool(true)));
    }
    c.send(hello);
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    // The client reads nothing more: xfwd's writes to it stall, its pings
    // go unanswered, and at the timeout the session is told.
    let reason = told_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the session was told within the ping timeout");
    assert_eq!(reason, "client connection lost");
    // The connection is gone from the client's side too: what is left to
    // read ends.
    c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while c.recv().is_some() {}
    server.stop_and_join();
}

#[test]
fn a_session_that_stops_answering_is_dropped_and_the_client_told() {
    let dir = scratch("deadsession");
    fake_session(&dir, 38, move |mut p| {
        p.recv().unwrap();
        p.send(vec![
            Value::from("hello"),
            caps(vec![("ping-echo-sourceid", Value::Bool(true))]),
        ]);
        // Frozen: reads and answers nothing, keeps the socket open.
        thread::sleep(Duration::from_secs(20));
    });
    let server = start(&dir, &["--ping-interval=1", "--ping-timeout=3"]);
    let mut c = client(server.tcp_addrs()[0]);
    c.send(client_hello(Some("38")));
    assert_eq!(c.recv().unwrap().items[0].as_str(), Some("hello"));
    let close = c.recv().expect("a close packet");
    assert_eq!(close_reason(&close), "session not responding");
    assert!(c.recv().is_none());
    server.stop_and_join();
}
