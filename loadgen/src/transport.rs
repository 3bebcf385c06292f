//! The client's transport layers over a TCP stream: TLS (`ssl://`),
//! WebSocket (`ws://`) and both (`wss://`), sans-IO, driven by the
//! client's mio loop.
//!
//! Reading: the loop reads the socket into its per-thread scratch buffer
//! and hands the bytes to [`Transport::ingest`], which peels the layers
//! (TLS records decrypted by rustls, WebSocket frames by xfwd's
//! `FrameDecoder`) and passes the xpra stream on to the record reader.
//! Nothing is kept per connection but rustls' own state and, for
//! WebSocket, a partial frame header or control frame (at most 139 bytes).
//!
//! Writing: the connection's [`WriteQueue`] holds whole xpra packets;
//! [`Transport::flush`] moves them into the layers (one masked binary frame
//! per batch, TLS plaintext) up to a small cap, then writes what the layers
//! produced to the socket.

use std::io::{self, BufRead, IoSlice, Write};
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use xfwd::transport::websocket::{
    apply_mask, ClientHandshake, DecoderConfig, Event, FrameDecoder, FrameEncoder, Role,
};

use crate::net::{Stream, WriteQueue};

/// Bytes the layers may hold before the write queue is left alone (the
/// client writes little: hellos, pings, pongs).
const OUT_CAP: usize = 64 * 1024;

/// Largest WebSocket response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Per-thread buffers the layers work in.
#[derive(Default)]
pub struct Bufs {
    /// WebSocket frames being decoded (the pending bytes of one connection
    /// at a time).
    ws: BytesMut,
}

struct Ws {
    /// `Some` until the server's 101 arrives.
    handshake: Option<ClientHandshake>,
    /// The response head so far (empty once accepted).
    head: Vec<u8>,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    /// A partial frame header or control frame left from the last read.
    carry: Vec<u8>,
    /// Frames (and the upgrade request) not yet handed to the layer below.
    out: BytesMut,
}

/// The layers of one connection.
#[derive(Default)]
pub struct Transport {
    tls: Option<Box<rustls::ClientConnection>>,
    ws: Option<Box<Ws>>,
    /// The peer ended the stream (TLS close_notify, WebSocket close).
    closed: Option<String>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Transport {
    /// Plain TCP or Unix socket.
    pub fn plain() -> Transport {
        Transport::default()
    }

    /// `tls`: a TLS client config and the server name; `ws`: the `Host`
    /// header and path of a WebSocket upgrade.
    pub fn new(
        tls: Option<(
            &Arc<rustls::ClientConfig>,
            &rustls::pki_types::ServerName<'static>,
        )>,
        ws: Option<(&str, &str)>,
    ) -> io::Result<Transport> {
        let tls = match tls {
            None => None,
            Some((cfg, name)) => Some(Box::new(
                rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(invalid)?,
            )),
        };
        let ws = match ws {
            None => None,
            Some((host, path)) => {
                let hs = ClientHandshake::new(host, path).map_err(invalid)?;
                let mut out = BytesMut::new();
                out.extend_from_slice(&hs.request());
                Some(Box::new(Ws {
                    handshake: Some(hs),
                    head: Vec::new(),
                    decoder: FrameDecoder::new(DecoderConfig::client()),
                    encoder: FrameEncoder::new(Role::Client),
                    carry: Vec::new(),
                    out,
                }))
            }
        };
        Ok(Transport {
            tls,
            ws,
            closed: None,
        })
    }

    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }

    /// Why the peer ended the stream, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Takes bytes read from the socket; the xpra stream they carry goes to
    /// `sink`. Errors: `InvalidData` for protocol errors (TLS, WebSocket,
    /// or whatever `sink` refused).
    pub fn ingest(
        &mut self,
        mut data: &[u8],
        bufs: &mut Bufs,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return match self.ws.as_deref_mut() {
                Some(ws) => ws.ingest(data, bufs, sink, &mut self.closed),
                None => sink(data).map_err(invalid),
            };
        };
        while !data.is_empty() {
            // read_tls takes at most 4 KiB a call (a memcpy, not a syscall)
            let n = tls.read_tls(&mut data)?;
            let st = tls.process_new_packets().map_err(invalid)?;
            let mut left = st.plaintext_bytes_to_read();
            while left > 0 {
                let mut r = tls.reader();
                let chunk = r.fill_buf()?;
                let k = chunk.len();
                if k == 0 {
                    break;
                }
                match self.ws.as_deref_mut() {
                    Some(ws) => ws.ingest(chunk, bufs, sink, &mut self.closed)?,
                    None => sink(chunk).map_err(invalid)?,
                }
                r.consume(k);
                left = left.saturating_sub(k);
            }
            if st.peer_has_closed() {
                self.closed
                    .get_or_insert_with(|| "TLS close_notify from the peer".into());
                break;
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Moves queued packets through the layers and writes to the socket.
    /// `Ok(true)`: nothing left that the socket could take now;
    /// `Ok(false)`: the socket would block.
    pub fn flush(&mut self, wq: &mut WriteQueue, stream: &mut Stream) -> io::Result<bool> {
        if self.is_plain() {
            return wq.flush(stream);
        }
        loop {
            if !self.drain(stream)? {
                return Ok(false);
            }
            let ready = self.ws.as_ref().is_none_or(|w| w.handshake.is_none());
            if wq.is_empty() || !ready {
                return Ok(true);
            }
            let before = wq.len();
            let mut upper = Upper {
                tls: self.tls.as_deref_mut(),
                ws: self.ws.as_deref_mut(),
            };
            wq.flush(&mut upper)?;
            if wq.len() == before {
                // the layers are full and drain() wrote everything it
                // could: only possible when TLS refuses plaintext
                return Ok(true);
            }
        }
    }

    /// Writes what the layers hold to the socket: `Ok(false)` when it would
    /// block.
    fn drain(&mut self, stream: &mut Stream) -> io::Result<bool> {
        match (self.tls.as_deref_mut(), self.ws.as_deref_mut()) {
            (None, None) => Ok(true),
            (None, Some(ws)) => {
                while !ws.out.is_empty() {
                    match stream.write(&ws.out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => ws.out.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
            (Some(tls), mut ws) => loop {
                while tls.wants_write() {
                    match tls.write_tls(stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                // WebSocket bytes waiting for room in TLS
                let Some(w) = ws.as_deref_mut().filter(|w| !w.out.is_empty()) else {
                    return Ok(true);
                };
                let n = tls.writer().write(&w.out)?;
                if n == 0 {
                    return Ok(true);
                }
                w.out.advance(n);
            },
        }
    }

    /// Best effort at the end: a WebSocket close frame and a TLS
    /// close_notify, written if the socket takes them now.
    pub fn close(&mut self, stream: &mut Stream) {
        if let Some(ws) = self.ws.as_deref_mut() {
            if ws.handshake.is_none() {
                let _ = ws.encoder.close(
                    Some(&xfwd::transport::websocket::CloseFrame {
                        code: xfwd::transport::websocket::close_code::NORMAL,
                        reason: String::new(),
                    }),
                    &mut ws.out,
                );
            }
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            if let Some(ws) = self.ws.as_deref_mut() {
                if let Ok(n) = tls.writer().write(&ws.out) {
                    ws.out.advance(n);
                }
            }
            tls.send_close_notify();
        }
        let _ = self.drain(stream);
    }
}

impl Ws {
    fn ingest(
        &mut self,
        data: &[u8],
        bufs: &mut Bufs,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        closed: &mut Option<String>,
    ) -> io::Result<()> {
        let mut data = data;
        if let Some(hs) = &self.handshake {
            self.head.extend_from_slice(data);
            match hs.read_response(&self.head).map_err(invalid)? {
                None => {
                    if self.head.len() > MAX_RESPONSE_HEAD {
                        return Err(invalid("WebSocket response head too large"));
                    }
                    return Ok(());
                }
                Some(acc) => {
                    self.handshake = None;
                    let head = std::mem::take(&mut self.head);
                    let rest = head.get(acc.head_len..).unwrap_or_default();
                    if rest.is_empty() {
                        return Ok(());
                    }
                    // frames right behind the head: once, at the start
                    return self.frames(rest, bufs, sink, closed);
                }
            }
        }
        if closed.is_some() {
            data = &[];
        }
        self.frames(data, bufs, sink, closed)
    }

    fn frames(
        &mut self,
        data: &[u8],
        bufs: &mut Bufs,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        closed: &mut Option<String>,
    ) -> io::Result<()> {
        let buf = &mut bufs.ws;
        buf.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        buf.extend_from_slice(data);
        loop {
            match self.decoder.decode(buf) {
                Ok(Some(Event::Data(b))) => sink(&b).map_err(invalid)?,
                Ok(Some(Event::Ping(p))) => {
                    self.encoder.pong(&p, &mut self.out).map_err(invalid)?;
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(f))) => {
                    *closed = Some(match f {
                        Some(f) => format!("WebSocket close {} {}", f.code, f.reason),
                        None => "WebSocket close".into(),
                    });
                    buf.clear();
                    return Ok(());
                }
                Ok(None) => break,
                Err(e) => return Err(invalid(format!("WebSocket: {e}"))),
            }
        }
        self.carry.extend_from_slice(buf);
        buf.clear();
        Ok(())
    }
}

/// The write side of the layers as one `Write` for [`WriteQueue::flush`]:
/// each call becomes one masked binary frame (WebSocket) and/or TLS
/// plaintext; `WouldBlock` once [`OUT_CAP`] bytes wait.
struct Upper<'a> {
    tls: Option<&'a mut rustls::ClientConnection>,
    ws: Option<&'a mut Ws>,
}

impl Write for Upper<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        match (self.tls.as_deref_mut(), self.ws.as_deref_mut()) {
            (_, Some(ws)) => {
                if ws.out.len() >= OUT_CAP {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let h = ws.encoder.binary_header(total as u64).map_err(invalid)?;
                ws.out.reserve(h.as_bytes().len() + total);
                ws.out.extend_from_slice(h.as_bytes());
                let start = ws.out.len();
                for b in bufs {
                    ws.out.extend_from_slice(b);
                }
                if let Some(k) = h.mask {
                    apply_mask(&mut ws.out[start..], k, 0);
                }
                Ok(total)
            }
            (Some(tls), None) => {
                let n = tls.writer().write_vectored(bufs)?;
                if n == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
            (None, None) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use xfwd::transport::websocket::{accept_key, CloseFrame};

    /// WebSocket alone: the 101 and the first frames in one read, then
    /// frames split at every byte; a ping is answered, data passes in order,
    /// a close ends the stream.
    #[test]
    fn websocket_frames_split_anywhere() {
        let mut t = Transport::new(None, Some(("127.0.0.1:1", "/"))).unwrap();
        let key =
            t.ws.as_ref()
                .unwrap()
                .handshake
                .as_ref()
                .unwrap()
                .key()
                .to_owned();
        let server = FrameEncoder::new(Role::Server);
        let mut wire = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
            accept_key(&key)
        )
        .into_bytes();
        let mut frames = BytesMut::new();
        server.binary(b"hello ", &mut frames).unwrap();
        server.ping(b"p1", &mut frames).unwrap();
        server.binary(&[7u8; 70_000], &mut frames).unwrap();
        server.binary(b"end", &mut frames).unwrap();
        let split = wire.len() + 3;
        wire.extend_from_slice(&frames);
        let mut close = BytesMut::new();
        server
            .close(
                Some(&CloseFrame {
                    code: 1000,
                    reason: "bye".into(),
                }),
                &mut close,
            )
            .unwrap();
        let mut bufs = Bufs::default();
        let mut got = Vec::new();
        let mut sink = |d: &[u8]| -> Result<(), String> {
            got.extend_from_slice(d);
            Ok(())
        };
        t.ingest(&wire[..split], &mut bufs, &mut sink).unwrap();
        for b in wire[split..].chunks(1) {
            t.ingest(b, &mut bufs, &mut sink).unwrap();
        }
        assert!(t.closed().is_none());
        t.ingest(&close, &mut bufs, &mut sink).unwrap();
        assert_eq!(t.closed(), Some("WebSocket close 1000 bye"));
        let mut want = b"hello ".to_vec();
        want.extend_from_slice(&[7u8; 70_000]);
        want.extend_from_slice(b"end");
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        // the upgrade request, then a masked pong carrying "p1"
        let ws = t.ws.as_mut().unwrap();
        let text = String::from_utf8_lossy(&ws.out).into_owned();
        let end = text.find("\r\n\r\n").unwrap() + 4;
        assert!(text.starts_with("GET / HTTP/1.1\r\n"));
        let mut pong = BytesMut::from(&ws.out[end..]);
        let mut dec = FrameDecoder::new(DecoderConfig::server());
        assert_eq!(
            dec.decode(&mut pong).unwrap(),
            Some(Event::Pong(bytes::Bytes::from_static(b"p1")))
        );
    }
}
