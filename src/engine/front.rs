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
use futures_lite::io::split;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::pump::{self, ReadSizer};
use super::stream::{Stream, WsStream};
use super::Shared;
use crate::auth::{PeerInfo, Transport};
use crate::transport::http::{self, Body, HttpRoute, Reply};
use crate::transport::proxy_protocol::{self, Parsed};
use crate::transport::sniff::{sniff, sniff_final, Sniffed, SNIFF_MAX};
use crate::transport::websocket::{self, ServerOptions};

/// Where a connection goes after the front door.
// One per connection, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Front {
    /// The xpra path: the stream, bytes already read from it, the peer.
    Xpra(Stream, BytesMut, PeerInfo),
    /// Served here (HTTP, `--tcp-proxy`, refused): nothing more to do.
    Done,
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
                // The rest of the first segment is on its way.
                glommio::timer::sleep(Duration::from_millis(5)).await;
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

/// Consumes a PROXY protocol header from a trusted front.
async fn proxy_header(s: &mut TcpStream, peer: &mut PeerInfo) -> Result<(), String> {
    let mut head = vec![0u8; 256];
    let n = s.peek(&mut head).await.map_err(|e| e.to_string())?;
    let parsed = proxy_protocol::parse(&head[..n]).map_err(|e| e.to_string())?;
    let Parsed::Done(h) = parsed else {
        return Err("incomplete PROXY protocol header".into());
    };
    let mut skip = vec![0u8; h.consumed];
    s.read_exact(&mut skip).await.map_err(|e| e.to_string())?;
    if let Some(src) = h.source {
        peer.remote = Some(src);
    }
    Ok(())
}

/// Runs the front door for a TCP connection.
pub(super) async fn front_door(stream: Stream, mut peer: PeerInfo, shared: &Arc<Shared>) -> Front {
    let Stream::Tcp(mut tcp) = stream else {
        return Front::Xpra(stream, BytesMut::new(), peer);
    };
    let mut decided = match peek_sniff(&tcp).await {
        Ok(d) => d,
        Err(_) => return Front::Done,
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
            return Front::Done;
        }
        if let Err(e) = proxy_header(&mut tcp, &mut peer).await {
            tracing::info!("bad PROXY protocol header: {e}");
            return Front::Done;
        }
        decided = match peek_sniff(&tcp).await {
            Ok(d) => d,
            Err(_) => return Front::Done,
        };
    }
    let mut buf = BytesMut::new();
    let mut stream = Stream::Tcp(tcp);
    if decided == Sniffed::Tls {
        let Some(tls) = shared.tls_config() else {
            tracing::info!("TLS client on a port without --ssl-cert: closed");
            return Front::Done;
        };
        let acceptor = futures_rustls::TlsAcceptor::from(tls);
        stream = match acceptor.accept(stream).await {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(e) => {
                tracing::info!("TLS handshake failed: {e}");
                return Front::Done;
            }
        };
        peer.transport = Transport::Ssl;
        decided = match read_sniff(&mut stream, &mut buf).await {
            Ok(d) => d,
            Err(_) => return Front::Done,
        };
    }
    match decided {
        Sniffed::Xpra => Front::Xpra(stream, buf, peer),
        Sniffed::Http => http_front(stream, buf, peer, shared).await,
        _ => {
            if shared.config.tcp_proxy.is_some() {
                tcp_proxy(stream, buf, shared).await;
            } else {
                let _ = close_with(stream, b"invalid protocol for this port\n").await;
            }
            Front::Done
        }
    }
}

async fn close_with(mut stream: Stream, text: &[u8]) -> io::Result<()> {
    stream.write_all(text).await?;
    stream.flush().await?;
    stream.close().await
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
            Err(e) => {
                let _ = send_reply(&mut stream, &Reply::for_error(&e)).await;
                return Front::Done;
            }
        }
        match pump::read_more(&mut stream, &mut buf, &mut sizer).await {
            Ok(0) | Err(_) => return Front::Done,
            Ok(_) => {}
        }
    };
    match http::route(
        &req,
        shared.html.as_ref(),
        shared.config.tcp_proxy.is_some(),
    ) {
        HttpRoute::WebSocket => {
            match websocket::server_handshake(&req, &ServerOptions::default()) {
                Ok(accepted) => {
                    if stream.write_all(&accepted.response).await.is_err() {
                        return Front::Done;
                    }
                    let rest = buf.split_off(req.head_len);
                    peer.transport = if peer.transport == Transport::Ssl {
                        Transport::Wss
                    } else {
                        Transport::Ws
                    };
                    let ws = WsStream::server(stream, rest);
                    Front::Xpra(Stream::Ws(Box::new(ws)), BytesMut::new(), peer)
                }
                Err(e) => {
                    let _ = send_reply(&mut stream, &e.reply()).await;
                    Front::Done
                }
            }
        }
        HttpRoute::Proxy => {
            tcp_proxy(stream, buf, shared).await;
            Front::Done
        }
        HttpRoute::Sessions => {
            let r = Reply::error(404, "the session list is not available yet");
            let _ = send_reply(&mut stream, &r).await;
            Front::Done
        }
        HttpRoute::Reply(r) => {
            let _ = send_reply(&mut stream, &r).await;
            let _ = stream.close().await;
            Front::Done
        }
    }
}

/// Chunk size for streaming a file from `--html`.
const FILE_CHUNK: usize = 256 * 1024;

async fn send_reply(stream: &mut Stream, reply: &Reply) -> io::Result<()> {
    let mut head = reply.head.clone();
    head.push("Connection", "close");
    stream.write_all(&head.to_bytes()).await?;
    match &reply.body {
        Body::None => {}
        Body::Bytes(b) => stream.write_all(b).await?,
        Body::File { path, len } => {
            // File reads block: each chunk on the blocking pool.
            let mut file = {
                let path = path.clone();
                glommio::executor()
                    .spawn_blocking(move || std::fs::File::open(path))
                    .await?
            };
            let mut left = *len;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(FILE_CHUNK).min(FILE_CHUNK);
                let (f, chunk) = glommio::executor()
                    .spawn_blocking(move || {
                        use std::io::Read;
                        let mut chunk = vec![0u8; want];
                        let r = file.read(&mut chunk).map(|n| {
                            chunk.truncate(n);
                            chunk
                        });
                        (file, r)
                    })
                    .await;
                file = f;
                let chunk = chunk?;
                if chunk.is_empty() {
                    // Shorter than promised: close (Content-Length was sent).
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                left = left.saturating_sub(chunk.len() as u64);
                stream.write_all(&chunk).await?;
            }
        }
    }
    stream.flush().await
}

/// Passes the connection, with the bytes read so far, to `--tcp-proxy`.
async fn tcp_proxy(stream: Stream, already: BytesMut, shared: &Arc<Shared>) {
    let Some(addr) = shared.config.tcp_proxy else {
        return;
    };
    let upstream = match TcpStream::connect_timeout(addr, Duration::from_secs(10)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!("--tcp-proxy {addr}: {e}");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = split(stream);
    let (mut ur, mut uw) = split(Stream::Tcp(upstream));
    if uw.write_all(&already).await.is_err() {
        return;
    }
    let _ = future::or(
        async {
            let _ = futures_lite::io::copy(&mut cr, &mut uw).await;
            let _ = uw.close().await;
        },
        async {
            let _ = futures_lite::io::copy(&mut ur, &mut cw).await;
            let _ = cw.close().await;
        },
    )
    .await;
}
