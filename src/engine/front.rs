//! The front door of a TCP port: what the first bytes are decides the path,
//! as xpra does on its ports.
//!
//! - a PROXY protocol header from a trusted front sets the client address;
//! - a TLS ClientHello is terminated (rustls) and the plaintext sniffed again;
//! - an xpra record header goes to the xpra path;
//! - an HTTP request is a WebSocket upgrade (then the xpra path), a file of
//!   `--html`, or is passed whole to `--tcp-proxy`;
//! - anything else goes to `--tcp-proxy`, or is closed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::pump::{self, ReadSizer};
use super::stream::{Stream, WsStream};
use super::Shared;
use crate::auth::{PeerInfo, Transport};
use crate::transport::http::{self, Body, HttpRoute, Reply};
use crate::transport::proxy_protocol::{self, Parsed, V1_MAX_LEN, V2_FIXED_LEN, V2_MAX_BODY};
use crate::transport::sniff::{sniff, sniff_final, Sniffed, SNIFF_MAX};
use crate::transport::websocket::{self, ServerOptions};

/// Where a connection goes after the front door.
// One per connection, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Front {
    /// The xpra path: the stream, bytes already read from it, the peer.
    Xpra(Stream, BytesMut, PeerInfo),
    /// Decided within the handshake deadline, served after it.
    Serve(Service),
}

/// What the front door decided to do with a connection that is not xpra.
pub(super) enum Service {
    /// Nothing more: the connection is dropped (closed).
    Close,
    /// An HTTP reply (a file of `--html`, an error).
    Reply(Stream, Reply),
    /// Passed whole, with the bytes read so far, to `--tcp-proxy`.
    Proxy(Stream, BytesMut),
    /// A line of text, then close.
    Refuse(Stream, &'static [u8]),
}

/// How long one write of a reply or a proxied stream may wait for the peer
/// to take bytes before the connection is given up.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// Serves what the front door decided (outside the handshake deadline).
pub(super) async fn serve(service: Service, shared: &Arc<Shared>) {
    match service {
        Service::Close => {}
        Service::Reply(mut stream, reply) => {
            if let Err(e) = send_reply(&mut stream, &reply, shared).await {
                tracing::debug!("HTTP reply: {e}");
            }
            let _ = timeout(WRITE_STALL, stream.shutdown()).await;
        }
        Service::Proxy(stream, already) => tcp_proxy(stream, already, shared).await,
        Service::Refuse(mut stream, text) => {
            let _ = timeout(WRITE_STALL, async {
                stream.write_all(text).await?;
                stream.shutdown().await
            })
            .await;
        }
    }
}

/// Peeks until the sniffer decides (plain TCP: nothing is consumed).
async fn peek_sniff(s: &TcpStream) -> io::Result<Sniffed> {
    let mut buf = [0u8; SNIFF_MAX];
    for _ in 0..200 {
        let n = s.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Sniffed::Other);
        }
        match sniff(&buf[..n]) {
            Sniffed::NeedMore if n < SNIFF_MAX => {
                // The rest of the first segment is on its way (peek would
                // return the same bytes at once: wait a little first).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Sniffed::NeedMore => return Ok(sniff_final(&buf[..n])),
            decided => return Ok(decided),
        }
    }
    Ok(sniff_final(&buf))
}

/// Reads until the sniffer decides (inside TLS, where peeking is not
/// possible); the bytes stay in `buf`.
async fn read_sniff<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<Sniffed> {
    let mut sizer = ReadSizer::new();
    loop {
        match sniff(buf) {
            Sniffed::NeedMore => {}
            decided => return Ok(decided),
        }
        if pump::read_more(r, buf, &mut sizer).await? == 0 {
            return Ok(sniff_final(buf));
        }
    }
}

/// Reads exactly the PROXY header (v1: up to its CRLF; v2: its fixed part,
/// then the length it declares, TLVs included), however it is split into
/// segments, and nothing after it.
async fn read_proxy_header(s: &mut TcpStream, v2: bool) -> Result<Vec<u8>, String> {
    let io = |e: io::Error| format!("reading the PROXY header: {e}");
    let mut head = Vec::with_capacity(if v2 { V2_FIXED_LEN } else { V1_MAX_LEN });
    if v2 {
        head.resize(V2_FIXED_LEN, 0);
        s.read_exact(&mut head).await.map_err(io)?;
        let body = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if body > V2_MAX_BODY {
            return Err(format!(
                "PROXY v2 header of {body} bytes exceeds the {V2_MAX_BODY}-byte limit"
            ));
        }
        head.resize(V2_FIXED_LEN + body, 0);
        s.read_exact(&mut head[V2_FIXED_LEN..]).await.map_err(io)?;
        return Ok(head);
    }
    // v1 is a text line: read it a byte at a time so that nothing past its
    // CRLF is consumed (it is at most 107 bytes, sent by a trusted front).
    let mut byte = [0u8; 1];
    while head.len() < V1_MAX_LEN {
        s.read_exact(&mut byte).await.map_err(io)?;
        head.push(byte[0]);
        if head.ends_with(b"\r\n") {
            return Ok(head);
        }
    }
    Ok(head)
}

/// Consumes a PROXY protocol header from a trusted front.
async fn proxy_header(s: &mut TcpStream, peer: &mut PeerInfo, v2: bool) -> Result<(), String> {
    let head = read_proxy_header(s, v2).await?;
    let parsed = proxy_protocol::parse(&head).map_err(|e| e.to_string())?;
    let Parsed::Done(h) = parsed else {
        return Err("incomplete PROXY protocol header".into());
    };
    if h.consumed != head.len() {
        return Err("malformed PROXY protocol header".into());
    }
    if let Some(src) = h.source {
        peer.via = peer.remote;
        peer.remote = Some(src);
    }
    Ok(())
}

/// Runs the front door for a TCP connection (within the handshake
/// deadline, which the caller enforces).
pub(super) async fn front_door(stream: Stream, mut peer: PeerInfo, shared: &Arc<Shared>) -> Front {
    let Stream::Tcp(mut tcp) = stream else {
        return Front::Xpra(stream, BytesMut::new(), peer);
    };
    let mut decided = match peek_sniff(&tcp).await {
        Ok(d) => d,
        Err(_) => return Front::Serve(Service::Close),
    };
    if matches!(decided, Sniffed::ProxyV1 | Sniffed::ProxyV2) {
        let trusted = peer.ip().is_some_and(|ip| {
            shared
                .config
                .proxy_protocol_from
                .iter()
                .any(|c| c.contains(ip))
        });
        if !trusted {
            tracing::info!("PROXY protocol header from an untrusted address: closed");
            return Front::Serve(Service::Close);
        }
        if let Err(e) = proxy_header(&mut tcp, &mut peer, decided == Sniffed::ProxyV2).await {
            tracing::info!("bad PROXY protocol header: {e}");
            return Front::Serve(Service::Close);
        }
        decided = match peek_sniff(&tcp).await {
            Ok(d) => d,
            Err(_) => return Front::Serve(Service::Close),
        };
    }
    let mut buf = BytesMut::new();
    let mut stream = Stream::Tcp(tcp);
    if decided == Sniffed::Tls {
        let Some(tls) = shared.tls_config() else {
            tracing::info!("TLS client on a port without --ssl-cert: closed");
            return Front::Serve(Service::Close);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        stream = match acceptor.accept(stream).await {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(e) => {
                tracing::info!("TLS handshake failed: {e}");
                return Front::Serve(Service::Close);
            }
        };
        peer.transport = Transport::Ssl;
        decided = match read_sniff(&mut stream, &mut buf).await {
            Ok(d) => d,
            Err(_) => return Front::Serve(Service::Close),
        };
    }
    match decided {
        Sniffed::Xpra => Front::Xpra(stream, buf, peer),
        Sniffed::Http => http_front(stream, buf, peer, shared).await,
        _ if shared.config.tcp_proxy.is_some() => Front::Serve(Service::Proxy(stream, buf)),
        _ => Front::Serve(Service::Refuse(stream, b"invalid protocol for this port\n")),
    }
}

async fn http_front(
    mut stream: Stream,
    mut buf: BytesMut,
    mut peer: PeerInfo,
    shared: &Arc<Shared>,
) -> Front {
    let limits = http::Limits::default();
    let mut sizer = ReadSizer::new();
    let req = loop {
        match http::parse_request(&buf, &limits) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => return Front::Serve(Service::Reply(stream, Reply::for_error(&e))),
        }
        match pump::read_more(&mut stream, &mut buf, &mut sizer).await {
            Ok(0) | Err(_) => return Front::Serve(Service::Close),
            Ok(_) => {}
        }
    };
    let route = {
        // Path checks touch the file system: on the blocking pool.
        let shared2 = shared.clone();
        let req2 = req.clone();
        shared
            .blocking
            .run(move || {
                http::route(
                    &req2,
                    shared2.html.as_ref(),
                    shared2.config.tcp_proxy.is_some(),
                )
            })
            .await
    };
    let route = match route {
        Ok(r) => r,
        Err(e) => return Front::Serve(Service::Reply(stream, Reply::error(503, &e.to_string()))),
    };
    match route {
        HttpRoute::WebSocket => {
            match websocket::server_handshake(&req, &ServerOptions::default()) {
                Ok(accepted) => {
                    if stream.write_all(&accepted.response).await.is_err() {
                        return Front::Serve(Service::Close);
                    }
                    let rest = buf.split_off(req.head_len);
                    peer.transport = if peer.transport == Transport::Ssl {
                        Transport::Wss
                    } else {
                        Transport::Ws
                    };
                    peer.http_headers = Some(Arc::new(req.headers));
                    let ws = WsStream::server(stream, rest);
                    Front::Xpra(Stream::Ws(Box::new(ws)), BytesMut::new(), peer)
                }
                Err(e) => Front::Serve(Service::Reply(stream, e.reply())),
            }
        }
        HttpRoute::Proxy => Front::Serve(Service::Proxy(stream, buf)),
        HttpRoute::Sessions => Front::Serve(Service::Reply(
            stream,
            Reply::error(404, "the session list is not available yet"),
        )),
        HttpRoute::Reply(r) => Front::Serve(Service::Reply(stream, r)),
    }
}

/// Chunk size for streaming a file from `--html`.
const FILE_CHUNK: usize = 256 * 1024;

/// Writes `data`, giving up when the peer takes nothing for [`WRITE_STALL`].
async fn write_or_stall(stream: &mut Stream, data: &[u8]) -> io::Result<()> {
    timeout(WRITE_STALL, stream.write_all(data))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading"))?
}

async fn send_reply(stream: &mut Stream, reply: &Reply, shared: &Shared) -> io::Result<()> {
    let mut head = reply.head.clone();
    head.push("Connection", "close");
    write_or_stall(stream, &head.to_bytes()).await?;
    let blocking = |e: super::blocking::BlockingError| io::Error::other(e.to_string());
    match &reply.body {
        Body::None => {}
        Body::Bytes(b) => write_or_stall(stream, b).await?,
        Body::File { path, len } => {
            // File reads block: each chunk on the blocking pool.
            let mut file = {
                let path = path.clone();
                shared
                    .blocking
                    .run(move || std::fs::File::open(path))
                    .await
                    .map_err(blocking)??
            };
            let mut left = *len;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(FILE_CHUNK).min(FILE_CHUNK);
                let (f, chunk) = shared
                    .blocking
                    .run(move || {
                        use std::io::Read;
                        let mut chunk = vec![0u8; want];
                        let r = file.read(&mut chunk).map(|n| {
                            chunk.truncate(n);
                            chunk
                        });
                        (file, r)
                    })
                    .await
                    .map_err(blocking)?;
                file = f;
                let chunk = chunk?;
                if chunk.is_empty() {
                    // Shorter than promised: close (Content-Length was sent).
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                left = left.saturating_sub(chunk.len() as u64);
                write_or_stall(stream, &chunk).await?;
            }
        }
    }
    stream.flush().await
}

/// Passes the connection, with the bytes read so far, to `--tcp-proxy`,
/// both ways until each side has closed its half (half-close passed on).
async fn tcp_proxy(mut stream: Stream, already: BytesMut, shared: &Arc<Shared>) {
    let Some(addr) = shared.config.tcp_proxy else {
        return;
    };
    let upstream = match timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!("--tcp-proxy {addr}: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("--tcp-proxy {addr}: connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut upstream = Stream::Tcp(upstream);
    if upstream.write_all(&already).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        tracing::debug!("--tcp-proxy {addr}: {e}");
    }
}
