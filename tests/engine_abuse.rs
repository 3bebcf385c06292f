//! The front door and the handshake under abuse, against the `xfwd`
//! binary: decode bombs, slowloris, half-open connections, endless HTTP
//! headers, huge WebSocket frames, untrusted PROXY headers. Each ends by
//! the handshake deadline (or at once), xfwd's memory stays bounded, and a
//! well-behaved client is served meanwhile.
//!
//! The time bounds here are hang detectors (the deadline plus a wide
//! margin), not performance assertions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xfwd::wire::frame::{FrameDecoder, Limits};
use xfwd::wire::header::{Encoder, Rules};
use xfwd::wire::packet::{self, Assembler, EncodeOptions};
use xfwd::wire::views::Close;
use xfwd::wire::Value;

mod common;

use common::free_port;

const DEADLINE_S: u64 = 3;

struct Xfwd {
    child: Child,
    port: u16,
}

impl Drop for Xfwd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Xfwd {
    start_with(DEADLINE_S, extra)
}

/// xfwd with a handshake deadline of `deadline` seconds.
fn start_with(deadline: u64, extra: &[&str]) -> Xfwd {
    let dir = std::env::temp_dir().join(format!("xfwd-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--socket-dirs={}", dir.display()))
        .arg(format!("--handshake-timeout={deadline}"))
        .args(["--cores=1", "--tcp-auth=fail", "--control-socket=none"])
        .args(extra)
        .env("NO_COLOR", "1")
        .env("XFWD_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // "xfwd listening" is logged at info: wait for the port instead.
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            line.clear();
        }
    });
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "xfwd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Xfwd { child, port }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(DEADLINE_S + 20)))
        .unwrap();
    s
}

/// Reads until the peer closes; the time it took.
fn until_closed(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

fn encode(items: &[Value], opts: &EncodeOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for r in packet::encode_packet(items, opts).unwrap() {
        out.extend_from_slice(&r.to_bytes());
    }
    out
}

fn hello() -> Vec<Value> {
    vec![
        Value::from("hello"),
        Value::Dict(vec![
            (Value::from("version"), Value::from("3.1.3")),
            (Value::from("username"), Value::from("alice")),
        ]),
    ]
}

/// A well-behaved client: hello, then the answer of `--tcp-auth=fail`.
fn good_client_is_served(port: u16) {
    let mut s = connect(port);
    s.write_all(&encode(&hello(), &EncodeOptions::plain(Encoder::Rencode)))
        .unwrap();
    let mut dec = FrameDecoder::new(Rules::Any, Limits::default());
    let mut asm = Assembler::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(r) = dec.next_record().unwrap() {
            if let Some(p) = asm.push(&r, &Limits::default()).unwrap() {
                assert_eq!(
                    Close::parse(&p.items).unwrap().reason(),
                    "authentication failed"
                );
                return;
            }
            continue;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed without an answer");
        dec.feed(&buf[..n]);
    }
}

/// A hello of `n` small integers: tiny on the wire, costly to decode
/// without a budget.
fn int_bomb(n: usize, encoder: Encoder) -> Vec<u8> {
    let items = vec![Value::from("hello"), Value::List(vec![Value::Int(1); n])];
    encode(&items, &EncodeOptions::plain(encoder))
}

#[test]
fn a_hundred_decode_bombs_keep_memory_bounded_and_others_served() {
    let x = start(&["--max-handshakes-per-ip=1000"]);
    let pid = x.child.id();
    good_client_is_served(x.port);
    let idle = rss_kib(pid);
    // Just under the pre-auth record limit (256 KiB), and a 4 MiB one.
    let bombs = [
        int_bomb(250_000, Encoder::Rencode),
        int_bomb(250_000, Encoder::Rencodeplus),
        int_bomb(4_000_000, Encoder::Rencode),
    ];
    let mut conns = Vec::new();
    let mut peak = idle;
    for i in 0..100 {
        let mut s = connect(x.port);
        let _ = s.write_all(&bombs[i % bombs.len()]);
        conns.push(s);
        peak = peak.max(rss_kib(pid));
    }
    // Meanwhile, a well-behaved client is answered.
    good_client_is_served(x.port);
    for s in &mut conns {
        let took = until_closed(s);
        assert!(took < Duration::from_secs(DEADLINE_S + 10), "not closed");
        peak = peak.max(rss_kib(pid));
    }
    eprintln!("xfwd RSS: idle {idle} KiB, peak {peak} KiB with 100 bomb connections");
    assert!(
        peak - idle <= 32 * 1024,
        "RSS grew by {} KiB (idle {idle} KiB)",
        peak - idle
    );
}

#[test]
fn slow_and_silent_clients_end_at_the_deadline() {
    let x = start(&[]);
    // Silent (half-open from the client's side: it never sends).
    let mut silent = connect(x.port);
    // Slowloris: the start of a header, a byte a second.
    let mut slow = connect(x.port);
    let header = encode(&hello(), &EncodeOptions::plain(Encoder::Rencode));
    let writer = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in header.iter().take(30) {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // A TLS ClientHello that never finishes (a record header only).
    let mut tls = connect(x.port);
    tls.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    // HTTP headers without end.
    let mut http = connect(x.port);
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let http_writer = {
        let mut w = http.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..10_000 {
                if w.write_all(format!("X-{i}: {}\r\n", "y".repeat(100)).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    good_client_is_served(x.port);
    let bound = Duration::from_secs(DEADLINE_S + 10);
    for (name, s) in [
        ("silent", &mut silent),
        ("slowloris", &mut slow),
        ("TLS", &mut tls),
        ("HTTP", &mut http),
    ] {
        let took = until_closed(s);
        assert!(took < bound, "{name}: still open after {took:?}");
    }
    let _ = writer.join();
    let _ = http_writer.join();
}

#[test]
fn huge_websocket_frames_and_untrusted_proxy_headers_are_closed() {
    let x = start(&[]);
    // A WebSocket upgrade, then a frame announcing 2^63 - 1 bytes.
    let mut ws = connect(x.port);
    ws.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: binary\r\n\r\n",
    )
    .unwrap();
    let mut frame = vec![0x82, 0xff];
    frame.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.write_all(&frame).unwrap();
    // A PROXY v2 header from an address not in --proxy-protocol-from.
    let mut proxy = connect(x.port);
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    v2.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90]);
    proxy.write_all(&v2).unwrap();
    good_client_is_served(x.port);
    let bound = Duration::from_secs(DEADLINE_S + 10);
    for (name, s) in [("WebSocket", &mut ws), ("PROXY", &mut proxy)] {
        let took = until_closed(s);
        assert!(took < bound, "{name}: still open after {took:?}");
    }
}

/// A relayed client's ping round trips (through xfwd to a fake session
/// that echoes at once), `n` of them, one after the other.
fn ping_rtts(s: &mut std::os::unix::net::UnixStream, n: usize) -> Vec<Duration> {
    let mut dec = FrameDecoder::new(Rules::Any, Limits::default());
    let mut asm = Assembler::new();
    let mut buf = [0u8; 4096];
    let mut rtts = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let ping = [
            Value::from("ping"),
            Value::Int(i as i64 + 1),
            Value::Int(0),
            Value::from("good-client"),
        ];
        s.write_all(&encode(&ping, &EncodeOptions::plain(Encoder::Rencode)))
            .unwrap();
        'echo: loop {
            while let Some(r) = dec.next_record().unwrap() {
                if let Some(p) = asm.push(&r, &Limits::default()).unwrap() {
                    match p.items[0].as_str() {
                        Some("ping_echo") => {
                            assert_eq!(p.items[1].as_int(), Some(i as i64 + 1));
                            break 'echo;
                        }
                        Some("hello") => {}
                        _ => panic!("the relayed client got {:?}", p.items),
                    }
                }
            }
            let got = s.read(&mut buf).unwrap();
            assert!(got > 0, "the relayed connection closed");
            dec.feed(&buf[..got]);
        }
        rtts.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    rtts.sort();
    rtts
}

#[test]
fn a_relayed_client_on_the_same_shard_keeps_its_pings_answered_during_bombs() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let dir = std::env::temp_dir().join(format!("xfwd-abuse-rtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // The session: a hello, then an echo for every ping.
    let l = UnixListener::bind(dir.join(format!("{host}-61"))).unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut dec = FrameDecoder::new(Rules::Any, Limits::default());
        let mut asm = Assembler::new();
        let mut buf = [0u8; 65536];
        let plain = EncodeOptions::plain(Encoder::Rencode);
        loop {
            while let Some(r) = dec.next_record().unwrap() {
                if let Some(p) = asm.push(&r, &Limits::default()).unwrap() {
                    match p.items[0].as_str() {
                        Some("hello") => {
                            let h = [Value::from("hello"), Value::Dict(vec![])];
                            s.write_all(&encode(&h, &plain)).unwrap();
                        }
                        Some("ping") => {
                            let echo = common::xpra::ping_echo(&p.items);
                            s.write_all(&encode(&echo, &plain)).unwrap();
                        }
                        _ => {}
                    }
                }
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => dec.feed(&buf[..n]),
            }
        }
    });
    let unix = dir.join("xfwd.sock");
    // A long handshake deadline for the relayed client (the bombs end at
    // their size limits and budgets, not at the deadline).
    let x = start_with(
        30,
        &[
            "--max-handshakes-per-ip=1000",
            &format!("--socket-dir={}", dir.display()),
            &format!("--bind={}", unix.display()),
            "--unix-auth=none",
        ],
    );
    let t = Instant::now();
    let mut c = loop {
        if let Ok(c) = UnixStream::connect(&unix) {
            break c;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no Unix listener");
        std::thread::sleep(Duration::from_millis(20));
    };
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut h = hello();
    if let Value::Dict(d) = &mut h[1] {
        d.push((Value::from("display"), Value::from(":61")));
    }
    c.write_all(&encode(&h, &EncodeOptions::plain(Encoder::Rencode)))
        .unwrap();
    let quiet = ping_rtts(&mut c, 50);
    // 100 bombs on the same (only) shard, while the client pings on.
    let bombs = [
        int_bomb(250_000, Encoder::Rencode),
        int_bomb(4_000_000, Encoder::Rencode),
    ];
    let port = x.port;
    // Three waves of 100 bombs.
    let attack = std::thread::spawn(move || {
        for _ in 0..3 {
            let mut conns = Vec::new();
            for i in 0..100 {
                let mut s = connect(port);
                let _ = s.write_all(&bombs[i % bombs.len()]);
                conns.push(s);
            }
            for s in &mut conns {
                until_closed(s);
            }
        }
    });
    let mut during = Vec::new();
    while !attack.is_finished() {
        during.extend(ping_rtts(&mut c, 10));
    }
    attack.join().unwrap();
    during.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    eprintln!(
        "relayed ping RTT: quiet p50 {:?} max {:?}; during 3 x 100 bombs ({} pings) p50 {:?} p99 {:?} max {:?}",
        p(&quiet, 0.5),
        quiet[quiet.len() - 1],
        during.len(),
        p(&during, 0.5),
        p(&during, 0.99),
        during[during.len() - 1]
    );
    // Every ping was answered, in order, on the same connection.
    assert!(!during.is_empty());
}
