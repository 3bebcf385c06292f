//! A blocking xpra peer for tests (client or fake session) built on
//! `xfwd::wire`, and the fake session most tests relay to.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use xfwd::wire::frame::{FrameDecoder, Limits};
use xfwd::wire::header::{Encoder, Rules};
use xfwd::wire::packet::{self, Assembler, EncodeOptions, Packet};
use xfwd::wire::Value;

/// A blocking packet connection over any stream.
pub struct Peer<S: Read + Write> {
    pub s: S,
    dec: FrameDecoder,
    asm: Assembler,
    encoder: Encoder,
    /// Byte items at least this long travel as raw chunks.
    chunk: Option<usize>,
}

impl<S: Read + Write> Peer<S> {
    /// A rencode peer that sends every packet as one record.
    pub fn new(s: S) -> Self {
        Peer::with_encoder(s, Encoder::Rencode)
    }

    pub fn with_encoder(s: S, encoder: Encoder) -> Self {
        Peer {
            s,
            dec: FrameDecoder::new(Rules::Any, Limits::default()),
            asm: Assembler::new(),
            encoder,
            chunk: None,
        }
    }

    /// Byte items of 4 KiB or more go as raw chunks, as xpra sends draws.
    pub fn chunked(mut self) -> Self {
        self.chunk = Some(4096);
        self
    }

    pub fn try_send(&mut self, items: &[Value]) -> std::io::Result<()> {
        let opts = EncodeOptions {
            chunk_threshold: self.chunk,
            ..EncodeOptions::plain(self.encoder)
        };
        for r in packet::encode_packet(items, &opts).unwrap() {
            self.s.write_all(&r.to_bytes())?;
        }
        Ok(())
    }

    pub fn send(&mut self, items: impl AsRef<[Value]>) {
        self.try_send(items.as_ref()).unwrap();
    }

    /// The next packet, or None at end of stream (or a read error).
    pub fn recv(&mut self) -> Option<Packet> {
        let mut buf = [0u8; 65536];
        loop {
            while let Some(r) = self.dec.next_record().unwrap() {
                if let Some(p) = self.asm.push(&r, &Limits::default()).unwrap() {
                    return Some(p);
                }
            }
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
            }
        }
    }
}

/// A dict of capabilities.
pub fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

pub fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// xpra's answer to `ping`: `["ping_echo", echotime, l1, l2, l3,
/// latency, sid]` (the ping's sid, item 3, echoed as item 6).
pub fn ping_echo(ping: &[Value]) -> Vec<Value> {
    vec![
        Value::from("ping_echo"),
        ping[1].clone(),
        Value::Int(0),
        Value::Int(0),
        Value::Int(0),
        Value::Int(-1),
        ping.get(3).cloned().unwrap_or_else(|| Value::from("")),
    ]
}

/// A fake session at DIR/HOST-DISPLAY: answers the hello, then echoes
/// every packet, until its client goes (or is silent for 30 s).
pub fn echo_session(dir: &Path, display: u32) {
    echo_session_idle(dir, display, Some(Duration::from_secs(30)));
}

/// [`echo_session`] whose connections end after `idle` without a packet
/// (`None`: never; a test that pauses, say while a database is down).
pub fn echo_session_idle(dir: &Path, display: u32, idle: Option<Duration>) {
    let l = UnixListener::bind(dir.join(format!("{}-{display}", hostname()))).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(idle).unwrap();
                let mut p = Peer::new(s).chunked();
                if p.recv().is_none() {
                    return;
                }
                let hello = [
                    Value::from("hello"),
                    dict(vec![("version", Value::from("3.1.3"))]),
                ];
                if p.try_send(&hello).is_err() {
                    return;
                }
                while let Some(pk) = p.recv() {
                    if p.try_send(&pk.items).is_err() {
                        return;
                    }
                }
            });
        }
    });
}
