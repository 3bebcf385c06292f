//! Addresses, streams and the two buffers every loadgen connection has: a
//! streaming record reader and a write queue of whole packets.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use mio::event::Source;
use mio::{Interest, Registry, Token};

use xfwd::wire::frame::Record;
use xfwd::wire::header::{Compressor, Header, Rules, HEADER_LEN};
use xfwd::wire::packet;

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "tcp://{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How a `tcp` address is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    /// TLS (xpra's `ssl://`).
    Ssl,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Ssl => "ssl",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Scheme::Ssl | Scheme::Wss)
    }

    pub fn ws(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// A parsed connect URI: `tcp://[user[:pass]@]host:port[/display]` (or
/// `ssl://`, `ws://`, `wss://`), `unix:PATH` or `unix://PATH` (xpra's
/// forms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: Addr,
    pub scheme: Scheme,
    /// The host as written (TLS server name); `host:port` for WebSocket's
    /// `Host` header.
    pub host: String,
    pub hostport: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Display number without the `:`.
    pub display: Option<String>,
}

fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))
}

impl Target {
    pub fn parse(uri: &str) -> Result<Target, String> {
        if let Some(path) = uri
            .strip_prefix("unix://")
            .or_else(|| uri.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(format!("{uri}: empty socket path"));
            }
            return Ok(Target {
                addr: Addr::Unix(PathBuf::from(path)),
                scheme: Scheme::Tcp,
                host: String::new(),
                hostport: String::new(),
                username: None,
                password: None,
                display: None,
            });
        }
        let (scheme, rest) = [
            ("tcp://", Scheme::Tcp),
            ("ssl://", Scheme::Ssl),
            ("ws://", Scheme::Ws),
            ("wss://", Scheme::Wss),
        ]
        .iter()
        .find_map(|(p, s)| uri.strip_prefix(p).map(|r| (*s, r)))
        .ok_or_else(|| {
            format!("{uri}: expected tcp|ssl|ws|wss://[user:pass@]host:port[/display] or unix:PATH")
        })?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, display) = match hostpart.split_once('/') {
            Some((h, d)) => (h, Some(d.trim_start_matches(':')).filter(|d| !d.is_empty())),
            None => (hostpart, None),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(a.to_owned()), None),
            },
        };
        let host = match hostport.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => hostport,
        };
        Ok(Target {
            addr: Addr::Tcp(resolve(hostport)?),
            scheme,
            host: host.to_owned(),
            hostport: hostport.to_owned(),
            username: username.filter(|u| !u.is_empty()),
            password,
            display: display.map(str::to_owned),
        })
    }
}

/// Parses a listen address: `tcp://HOST:PORT`, `HOST:PORT` or `unix:PATH`.
pub fn parse_listen(s: &str) -> Result<Addr, String> {
    if let Some(path) = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
    {
        return Ok(Addr::Unix(PathBuf::from(path)));
    }
    Ok(Addr::Tcp(resolve(
        s.strip_prefix("tcp://").unwrap_or(s).trim_end_matches('/'),
    )?))
}

/// Whether something listens on the Unix socket at `path`.
pub fn unix_live(path: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// A non-blocking stream.
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// Starts a non-blocking connect.
    pub fn connect(addr: &Addr) -> io::Result<Stream> {
        Ok(match addr {
            Addr::Tcp(a) => {
                let s = mio::net::TcpStream::connect(*a)?;
                Stream::Tcp(s)
            }
            Addr::Unix(p) => Stream::Unix(mio::net::UnixStream::connect(p)?),
        })
    }

    /// After the first writable event of a connect: `Ok` once connected.
    pub fn check_connected(&self) -> io::Result<bool> {
        match self {
            Stream::Tcp(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => {
                        let _ = s.set_nodelay(true);
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Stream::Unix(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                Ok(true)
            }
        }
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        use nix::sys::socket::{setsockopt, sockopt::Linger};
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = match &self {
            Stream::Tcp(s) => setsockopt(s, Linger, &linger),
            Stream::Unix(s) => setsockopt(s, Linger, &linger),
        };
        drop(self);
    }

    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// What the reader found.
#[derive(Debug)]
pub enum Item {
    /// A main packet, whole.
    Main(Record),
    /// A raw chunk, checksummed as it streamed by (its bytes are not kept).
    Chunk { index: u8, len: usize, crc: u32 },
}

enum RState {
    Header,
    /// An uncompressed raw chunk: bytes are checksummed, not kept.
    Streaming {
        index: u8,
        len: usize,
        remaining: usize,
        hasher: crc32fast::Hasher,
    },
    /// A main packet or a compressed chunk: kept whole.
    Buffering {
        header: Header,
        buf: BytesMut,
    },
}

/// A streaming record reader. Memory per connection is the partial header
/// and, for main packets only, the packet being read: raw chunks (pixels)
/// are checksummed as they pass through the caller's scratch buffer.
pub struct RecordReader {
    state: RState,
    hbuf: [u8; HEADER_LEN],
    hlen: usize,
    max_payload: u32,
    max_main: u32,
}

impl RecordReader {
    pub fn new(max_payload: u32) -> RecordReader {
        RecordReader {
            state: RState::Header,
            hbuf: [0; HEADER_LEN],
            hlen: 0,
            max_payload,
            max_main: 16 * 1024 * 1024,
        }
    }

    /// Whether the stream is at a record boundary.
    #[cfg(test)]
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, RState::Header) && self.hlen == 0
    }

    /// Consumes `data`, pushing complete items to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Item>) -> Result<(), String> {
        while !data.is_empty() {
            match &mut self.state {
                RState::Header => {
                    let n = (HEADER_LEN - self.hlen).min(data.len());
                    self.hbuf[self.hlen..self.hlen + n].copy_from_slice(&data[..n]);
                    self.hlen += n;
                    data = &data[n..];
                    if self.hlen < HEADER_LEN {
                        break;
                    }
                    self.hlen = 0;
                    let h = Header::parse(&self.hbuf, Rules::Any).map_err(|e| e.to_string())?;
                    if h.length > self.max_payload || (h.index == 0 && h.length > self.max_main) {
                        return Err(format!("record of {} bytes is too large", h.length));
                    }
                    let len = h.length as usize;
                    if h.index > 0 && h.compressor() == Compressor::None {
                        if len == 0 {
                            out.push(Item::Chunk {
                                index: h.index,
                                len: 0,
                                crc: crc32fast::hash(b""),
                            });
                        } else {
                            self.state = RState::Streaming {
                                index: h.index,
                                len,
                                remaining: len,
                                hasher: crc32fast::Hasher::new(),
                            };
                        }
                    } else if len == 0 {
                        out.push(self.finish(h, Bytes::new())?);
                    } else {
                        self.state = RState::Buffering {
                            header: h,
                            buf: BytesMut::with_capacity(len.min(1 << 20)),
                        };
                    }
                }
                RState::Streaming {
                    index,
                    len,
                    remaining,
                    hasher,
                } => {
                    let n = (*remaining).min(data.len());
                    hasher.update(&data[..n]);
                    *remaining -= n;
                    data = &data[n..];
                    if *remaining == 0 {
                        let item = Item::Chunk {
                            index: *index,
                            len: *len,
                            crc: hasher.clone().finalize(),
                        };
                        out.push(item);
                        self.state = RState::Header;
                    }
                }
                RState::Buffering { header, buf } => {
                    let want = header.length as usize - buf.len();
                    let n = want.min(data.len());
                    buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if buf.len() == header.length as usize {
                        let h = *header;
                        let payload = std::mem::take(buf).freeze();
                        self.state = RState::Header;
                        out.push(self.finish(h, payload)?);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self, header: Header, payload: Bytes) -> Result<Item, String> {
        if header.index == 0 {
            return Ok(Item::Main(Record { header, payload }));
        }
        let limits = xfwd::wire::frame::Limits::default();
        let plain = packet::plain_payload(&header, &payload, &limits).map_err(|e| e.to_string())?;
        Ok(Item::Chunk {
            index: header.index,
            len: plain.len(),
            crc: crc32fast::hash(&plain),
        })
    }
}

/// Outgoing data: groups of buffers, each group one or more whole packets
/// (raw chunks with their main packet), so an urgent packet can be put
/// between groups without splitting a packet from its chunks.
#[derive(Default)]
pub struct WriteQueue {
    /// (urgent, buffers)
    groups: VecDeque<(bool, Vec<Bytes>)>,
    /// Buffers of the front group already written.
    front_done: usize,
    /// Bytes of the current front buffer already written.
    front_off: usize,
    bytes: usize,
}

/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;

impl WriteQueue {
    pub fn new() -> WriteQueue {
        WriteQueue::default()
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Queues a group at the back.
    pub fn push(&mut self, group: Vec<Bytes>) {
        self.bytes += group.iter().map(Bytes::len).sum::<usize>();
        self.groups.push_back((false, group));
    }

    /// Queues a group ahead of every group not yet started (after earlier
    /// urgent ones): pings overtake bulk data at a packet boundary.
    pub fn push_urgent(&mut self, group: Vec<Bytes>) {
        self.bytes += group.iter().map(Bytes::len).sum::<usize>();
        let started = self.front_done > 0 || self.front_off > 0;
        let mut at = usize::from(started).min(self.groups.len());
        while at < self.groups.len() && self.groups[at].0 {
            at += 1;
        }
        self.groups.insert(at, (true, group));
    }

    /// Writes as much as the stream takes. `Ok(true)` when the queue is
    /// empty, `Ok(false)` when the stream would block.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.bytes > 0 {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            'outer: for (gi, (_, g)) in self.groups.iter().enumerate() {
                let start = if gi == 0 { self.front_done } else { 0 };
                for (bi, b) in g.iter().enumerate().skip(start) {
                    let off = if gi == 0 && bi == start {
                        self.front_off
                    } else {
                        0
                    };
                    if b.len() > off {
                        iov[n] = IoSlice::new(&b[off..]);
                        n += 1;
                        if n == MAX_IOV {
                            break 'outer;
                        }
                    }
                }
            }
            let written = match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(written);
        }
        Ok(true)
    }

    fn advance(&mut self, mut k: usize) {
        self.bytes -= k;
        while let Some((_, g)) = self.groups.front() {
            if self.front_done >= g.len() {
                self.groups.pop_front();
                self.front_done = 0;
                self.front_off = 0;
                continue;
            }
            let left = g[self.front_done].len() - self.front_off;
            if k < left {
                self.front_off += k;
                break;
            }
            k -= left;
            self.front_off = 0;
            self.front_done += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A writer that takes `budget` bytes, then blocks.
    struct Budget {
        out: Vec<u8>,
        budget: usize,
    }

    impl Write for Budget {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.budget);
            if n == 0 && !buf.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.budget -= n;
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn urgent_goes_between_groups() {
        let mut q = WriteQueue::new();
        q.push(vec![b(b"aa"), b(b"AA")]);
        q.push(vec![b(b"bb")]);
        let mut w = Budget {
            out: Vec::new(),
            budget: 3,
        };
        assert!(!q.flush(&mut w).unwrap());
        q.push_urgent(vec![b(b"P")]);
        q.push_urgent(vec![b(b"Q")]);
        w.budget = 100;
        assert!(q.flush(&mut w).unwrap());
        assert_eq!(w.out, b"aaAAPQbb");
        assert!(q.is_empty());
        // not started: urgent goes first
        q.push(vec![b(b"cc")]);
        q.push_urgent(vec![b(b"R")]);
        w.out.clear();
        assert!(q.flush(&mut w).unwrap());
        assert_eq!(w.out, b"Rcc");
    }

    #[test]
    fn uri_schemes() {
        let t = Target::parse("wss://me:pw@127.0.0.1:14500/:100").unwrap();
        assert_eq!(t.scheme, Scheme::Wss);
        assert_eq!(
            (t.host.as_str(), t.hostport.as_str()),
            ("127.0.0.1", "127.0.0.1:14500")
        );
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(t.display.as_deref(), Some("100"));
        assert_eq!(
            Target::parse("ssl://localhost:1").unwrap().scheme,
            Scheme::Ssl
        );
        assert_eq!(
            Target::parse("ws://127.0.0.1:1/").unwrap().scheme,
            Scheme::Ws
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:1").unwrap().scheme,
            Scheme::Tcp
        );
        assert!(Target::parse("http://127.0.0.1:1").is_err());
    }

    #[test]
    fn reader_streams_chunks_and_keeps_mains() {
        let mut stream = Vec::new();
        let chunk = Record::new(0, 0, 7, Bytes::from(vec![5u8; 1000]));
        let main = Record::new(0x01, 0, 0, b(b"l4:pinge"));
        stream.extend_from_slice(&chunk.to_bytes());
        stream.extend_from_slice(&main.to_bytes());
        let mut r = RecordReader::new(1 << 20);
        let mut items = Vec::new();
        for piece in stream.chunks(13) {
            r.feed(piece, &mut items).unwrap();
        }
        assert!(r.at_boundary());
        assert_eq!(items.len(), 2);
        match &items[0] {
            Item::Chunk { index, len, crc } => {
                assert_eq!((*index, *len), (7, 1000));
                assert_eq!(*crc, crc32fast::hash(&[5u8; 1000]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&items[1], Item::Main(m) if m == &main));
    }
}
