//! The byte streams a connection runs over: plain sockets, TLS (rustls via
//! tokio-rustls), and WebSocket (the sans-IO codec of
//! `transport::websocket` behind `AsyncRead`/`AsyncWrite`), stackable:
//! wss is WebSocket over TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::transport::websocket::{
    CloseFrame, DecoderConfig, Event, FrameDecoder, FrameEncoder, Role,
};

/// A client or session stream.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::server::TlsStream<Stream>>),
    /// TLS toward an `ssl://` session.
    TlsClient(Box<tokio_rustls::client::TlsStream<Stream>>),
    Ws(Box<WsStream<Stream>>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::Tls($s) => $e,
            Stream::TlsClient($s) => $e,
            Stream::Ws($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
            Stream::Ws(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Bytes read from the socket per WebSocket read.
const WS_READ: usize = 64 * 1024;

/// A WebSocket connection seen as a byte stream (server role): reads give
/// the payload of binary frames in order; each write becomes one binary
/// frame; pings are answered; a close frame ends the stream.
pub struct WsStream<S> {
    inner: S,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    /// Bytes read from the socket, not decoded yet.
    raw: BytesMut,
    /// Decoded payload not handed to the reader yet.
    data: Bytes,
    /// Frames to write (a data frame, pongs, a close).
    out: BytesMut,
    /// The peer sent a close frame (or broke the protocol).
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// `already` holds bytes read past the upgrade request.
    pub fn server(inner: S, already: BytesMut) -> WsStream<S> {
        WsStream {
            inner,
            // Lenient: xpra 3.1's own client sends unmasked frames (its server
            // accepts them too).
            decoder: FrameDecoder::new(DecoderConfig::server_lenient()),
            encoder: FrameEncoder::new(Role::Server),
            raw: already,
            data: Bytes::new(),
            out: BytesMut::new(),
            closed: false,
        }
    }

    /// The client role (toward a `ws://`/`wss://` session): frames sent
    /// masked, frames received unmasked. `already` holds bytes read past
    /// the upgrade response.
    pub fn client(inner: S, already: BytesMut) -> WsStream<S> {
        WsStream {
            inner,
            decoder: FrameDecoder::new(DecoderConfig::client()),
            encoder: FrameEncoder::new(Role::Client),
            raw: already,
            data: Bytes::new(),
            out: BytesMut::new(),
            closed: false,
        }
    }

    /// Writes what is queued; Ready once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let _ = self.out.split_to(n);
        }
        Poll::Ready(Ok(()))
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned(),
        };
        let _ = self.encoder.close(Some(&frame), &mut self.out);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.data.is_empty() {
                let n = this.data.len().min(buf.remaining());
                buf.put_slice(&this.data[..n]);
                this.data.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Pongs and close replies go out as soon as the socket takes them.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match this.decoder.decode(&mut this.raw) {
                Ok(Some(Event::Data(b))) => this.data = b,
                Ok(Some(Event::Ping(p))) => {
                    let _ = this.encoder.pong(&p, &mut this.out);
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(_))) => {
                    this.queue_close(1000, "");
                    this.closed = true;
                }
                Ok(None) => {
                    // Read into the spare capacity (not zeroed first).
                    this.raw.reserve(WS_READ);
                    match tokio_util::io::poll_read_buf(
                        Pin::new(&mut this.inner),
                        cx,
                        &mut this.raw,
                    ) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => {
                    this.queue_close(e.close_code(), "protocol error");
                    this.closed = true;
                    let _ = this.poll_drain(cx);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One frame in flight at a time: memory stays bounded.
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        this.encoder
            .binary(buf, &mut this.out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // Start writing now; the rest goes on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            this.queue_close(1000, "");
            this.closed = true;
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}
