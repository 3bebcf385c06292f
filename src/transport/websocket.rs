//! WebSocket (RFC 6455), sans-IO: the opening handshake for both roles, a
//! streaming frame decoder, and a frame encoder. The payload of data frames
//! is the xpra byte stream; xfwd never needs message boundaries, so data is
//! handed on as it arrives.
//!
//! **Handshake.** [`server_handshake`] checks an upgrade request (`GET`,
//! HTTP/1.1, `Connection: upgrade`, `Upgrade: websocket`,
//! `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key` of 16 bytes) and
//! answers 101 with `Sec-WebSocket-Accept` and the `binary` subprotocol,
//! which every xpra client offers (`new WebSocket(uri, 'binary')` in the
//! HTML5 client; `Sec-WebSocket-Protocol: binary` from `xpra attach ws://`,
//! which also refuses a response without it). Like xpra's own server, a
//! client that does not offer `binary` is refused (400) unless
//! [`ServerOptions::require_binary`] is off. A wrong version is 426 with
//! `Sec-WebSocket-Version: 13`. [`ClientHandshake`] is the other side, for
//! upstream `ws://` / `wss://` targets and loadgen.
//!
//! **Frames.** [`FrameDecoder::decode`] takes bytes from the front of the
//! caller's `BytesMut` and returns [`Event`]s: data payload (binary, text
//! and continuation frames, in order) as `Bytes` split off the read buffer
//! and unmasked in place (no copy), emitted as soon as any part of a frame
//! has arrived, so memory stays at one read buffer whatever the frame size;
//! ping, pong and close once whole. It enforces RSV bits zero, known
//! opcodes, control frames unfragmented and at most 125 bytes, fragmentation
//! order, the 64-bit length's top bit clear, a per-frame size limit
//! ([`DecoderConfig::max_frame`], 16 MiB by default, checked from the header
//! before any payload is kept), the masking rule ([`MaskPolicy`]), close
//! codes and UTF-8 close reasons. Text payloads are not checked for UTF-8:
//! xpra peers send binary frames only, and the bytes go on as a stream.
//!
//! **Masking and xpra.** RFC 6455 says a client masks every frame, and
//! browsers do. xpra 3.1's Python client does not (`XPRA_WEBSOCKET_MASK`
//! defaults to off, in `xpra/net/websockets/protocol.py`, and xpra's server
//! accepts both), so a server facing `xpra attach ws://` needs
//! [`MaskPolicy::Optional`] ([`DecoderConfig::server_lenient`]).

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

use super::http::{self, Limits, Method, Reply, Request, ResponseHead, Version};

/// The GUID RFC 6455 appends to the key.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The subprotocol xpra's clients ask for.
pub const SUBPROTOCOL: &str = "binary";
/// The largest frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;
/// The largest control-frame payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The default per-frame payload limit.
pub const DEFAULT_MAX_FRAME: u64 = 16 * 1024 * 1024;

/// Close status codes (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const MANDATORY_EXTENSION: u16 = 1010;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_GATEWAY: u16 = 1014;

    /// Whether a peer may send `code` in a close frame: 1000-1003,
    /// 1007-1014 and the 3000-4999 ranges for libraries and applications
    /// (1004-1006 and 1015 are never sent on the wire).
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Why an opening handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("websocket upgrade must be a GET request")]
    NotGet,
    #[error("websocket upgrade needs HTTP/1.1")]
    NotHttp11,
    #[error("missing 'Connection: Upgrade'")]
    NoConnectionUpgrade,
    #[error("missing 'Upgrade: websocket'")]
    NoUpgradeWebsocket,
    #[error("unsupported Sec-WebSocket-Version {0:?} (only 13)")]
    Version(Option<String>),
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
    #[error("client does not offer the 'binary' subprotocol")]
    NoBinaryProtocol,
    #[error("upstream answered HTTP {status} instead of 101 Switching Protocols")]
    Status { status: u16 },
    #[error("upstream's Sec-WebSocket-Accept does not match the key")]
    Accept,
    #[error("upstream chose subprotocol {0:?}, which was not offered")]
    Protocol(Option<String>),
    #[error("upstream's handshake response: {0}")]
    Http(#[from] http::HttpError),
}

impl HandshakeError {
    /// The HTTP reply a server sends for this refusal: 426 with
    /// `Sec-WebSocket-Version: 13` for a version mismatch, else 400.
    pub fn reply(&self) -> Reply {
        match self {
            HandshakeError::Version(_) => {
                let mut r = Reply::error(426, &self.to_string());
                r.head.push("Sec-WebSocket-Version", "13");
                r
            }
            HandshakeError::NotGet => {
                let mut r = Reply::error(405, &self.to_string());
                r.head.push("Allow", "GET");
                r
            }
            _ => Reply::error(400, &self.to_string()),
        }
    }
}

/// Server handshake options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Refuse clients that do not offer the `binary` subprotocol (what
    /// xpra's server does). Default: true.
    pub require_binary: bool,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            require_binary: true,
        }
    }
}

/// An accepted upgrade: send `response`, then speak frames from
/// `request.head_len` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The subprotocol chosen (`Some("binary")` or `None`).
    pub protocol: Option<&'static str>,
    /// The 101 response head.
    pub response: Vec<u8>,
}

/// Whether `req` asks for a WebSocket upgrade at all (so the engine can
/// tell an upgrade from a file request before validating it).
pub fn is_upgrade_request(req: &Request) -> bool {
    req.wants_upgrade("websocket")
}

/// Validates an upgrade request and builds the 101 response.
pub fn server_handshake(req: &Request, opts: &ServerOptions) -> Result<Accepted, HandshakeError> {
    if req.method != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if req.version != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    if !req.headers.has_token("connection", "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    if !req.headers.has_token("upgrade", "websocket") {
        return Err(HandshakeError::NoUpgradeWebsocket);
    }
    let versions: Vec<&str> = req.headers.tokens("sec-websocket-version").collect();
    if versions != ["13"] {
        return Err(HandshakeError::Version(
            req.headers.get("sec-websocket-version").map(str::to_string),
        ));
    }
    if req.headers.count("sec-websocket-key") != 1 {
        return Err(HandshakeError::Key);
    }
    let key = req
        .headers
        .get("sec-websocket-key")
        .ok_or(HandshakeError::Key)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| HandshakeError::Key)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::Key);
    }
    let offered = req
        .headers
        .tokens("sec-websocket-protocol")
        .any(|p| p == SUBPROTOCOL);
    let protocol = if offered {
        Some(SUBPROTOCOL)
    } else if opts.require_binary {
        return Err(HandshakeError::NoBinaryProtocol);
    } else {
        None
    };
    // Exactly the lines xpra's Python client expects: it splits on ": "
    // and compares `upgrade` to `websocket` byte for byte.
    let mut head = ResponseHead::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", accept_key(key));
    if let Some(p) = protocol {
        head.push("Sec-WebSocket-Protocol", p);
    }
    Ok(Accepted {
        protocol,
        response: head.to_bytes(),
    })
}

/// The client side of the opening handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHandshake {
    key: String,
    host: String,
    path: String,
    protocols: Vec<String>,
}

/// What a server accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAccepted {
    pub protocol: Option<String>,
    /// Bytes of the response head; frames start there.
    pub head_len: usize,
}

impl ClientHandshake {
    /// A handshake for `ws://HOST/PATH` offering `binary`, with a random
    /// key. `host` is sent as the `Host` header (`host:port`).
    pub fn new(host: &str, path: &str) -> Result<ClientHandshake, getrandom::Error> {
        let mut key = [0u8; 16];
        getrandom::getrandom(&mut key)?;
        Ok(ClientHandshake::with_key(key, host, path))
    }

    /// The same with a given key (tests).
    pub fn with_key(key: [u8; 16], host: &str, path: &str) -> ClientHandshake {
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_graphic())
                .collect::<String>()
        };
        let mut path = clean(path);
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        ClientHandshake {
            key: base64::engine::general_purpose::STANDARD.encode(key),
            host: clean(host),
            path,
            protocols: vec![SUBPROTOCOL.to_string()],
        }
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request head to send.
    pub fn request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
            self.path,
            self.host,
            self.key,
            self.protocols.join(", ")
        )
        .into_bytes()
    }

    /// Checks the server's response at the start of `buf`. `Ok(None)`:
    /// incomplete.
    pub fn read_response(&self, buf: &[u8]) -> Result<Option<ClientAccepted>, HandshakeError> {
        let Some(resp) = http::parse_response(buf, &Limits::default())? else {
            return Ok(None);
        };
        if resp.status != 101 {
            return Err(HandshakeError::Status {
                status: resp.status,
            });
        }
        if !resp.headers.has_token("upgrade", "websocket") {
            return Err(HandshakeError::NoUpgradeWebsocket);
        }
        if !resp.headers.has_token("connection", "upgrade") {
            return Err(HandshakeError::NoConnectionUpgrade);
        }
        if resp.headers.get("sec-websocket-accept") != Some(accept_key(&self.key).as_str()) {
            return Err(HandshakeError::Accept);
        }
        let protocol = resp
            .headers
            .get("sec-websocket-protocol")
            .map(str::to_string);
        match &protocol {
            Some(p) if self.protocols.iter().any(|o| o == p) => {}
            // xpra's servers always answer `binary`; anything else (or
            // nothing) is a server the xpra client would refuse too.
            other => return Err(HandshakeError::Protocol(other.clone())),
        }
        Ok(Some(ClientAccepted {
            protocol,
            head_len: resp.head_len,
        }))
    }
}

/// Frame opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl OpCode {
    pub fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x08 != 0
    }
}

/// What the decoder demands of the mask bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskPolicy {
    /// Every frame masked (a server reading an RFC client).
    Required,
    /// No frame masked (a client reading a server).
    Forbidden,
    /// Either (a server reading xpra 3.1's Python client, which does not
    /// mask).
    Optional,
}

/// Decoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    pub mask: MaskPolicy,
    /// Largest payload of one frame; a header declaring more is refused
    /// (close code 1009) before any of it is buffered.
    pub max_frame: u64,
}

impl DecoderConfig {
    /// Server reading clients, as RFC 6455 says: masks required.
    pub fn server() -> DecoderConfig {
        DecoderConfig {
            mask: MaskPolicy::Required,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Server reading clients, accepting unmasked frames too (xpra 3.1's
    /// `xpra attach ws://`).
    pub fn server_lenient() -> DecoderConfig {
        DecoderConfig {
            mask: MaskPolicy::Optional,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Client reading a server: masks forbidden.
    pub fn client() -> DecoderConfig {
        DecoderConfig {
            mask: MaskPolicy::Forbidden,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A close frame's content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Payload bytes of a binary, text or continuation frame, in stream
    /// order (a frame may come as several `Data`; empty frames give none).
    Data(Bytes),
    /// A ping; answer with a pong carrying the same bytes.
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame (`None`: it had no status code). Nothing is decoded
    /// after it.
    Close(Option<CloseFrame>),
}

/// Why a frame stream was refused. [`WsError::close_code`] is the code to
/// close with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    #[error("reserved bits set in frame header (no extension was negotiated)")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    #[error("unmasked frame from a client")]
    MaskRequired,
    #[error("masked frame from a server")]
    MaskForbidden,
    #[error("64-bit frame length has its top bit set")]
    LengthMsb,
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("close frame with a 1-byte payload")]
    CloseLength,
    #[error("invalid close code {0}")]
    CloseCode(u16),
    #[error("close reason is not UTF-8")]
    CloseReason,
    #[error("data after a close frame")]
    AfterClose,
}

impl WsError {
    /// The close code to send back.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::FrameTooLarge { .. } => close_code::TOO_BIG,
            WsError::CloseReason => close_code::INVALID_DATA,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// XORs `buf` with `key`, starting `offset` bytes into the key stream
/// (so a payload can be unmasked piece by piece).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = [
        key[offset & 3],
        key[(offset + 1) & 3],
        key[(offset + 2) & 3],
        key[(offset + 3) & 3],
    ];
    let k64 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w) ^ k64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Waiting for a frame header.
    Header,
    /// Inside a data frame's payload.
    Data {
        fin: bool,
        mask: Option<[u8; 4]>,
        remaining: u64,
        offset: usize,
    },
    /// After a close frame.
    Closed,
}

/// The streaming frame decoder (see the module docs).
#[derive(Debug)]
pub struct FrameDecoder {
    config: DecoderConfig,
    state: State,
    /// A fragmented data message is in progress.
    in_message: bool,
}

/// A parsed frame header.
struct Head {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

impl FrameDecoder {
    pub fn new(config: DecoderConfig) -> FrameDecoder {
        FrameDecoder {
            config,
            state: State::Header,
            in_message: false,
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether a close frame was decoded.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the stream is between frames (no partial frame, no
    /// unfinished fragmented message): a safe point to inject a frame of
    /// one's own on the same direction.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && !self.in_message
    }

    /// Checks the first byte as soon as it is there, then the rest.
    /// `Ok(None)`: need more bytes.
    fn head(&self, b: &[u8]) -> Result<Option<Head>, WsError> {
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(WsError::UnknownOpcode(b0 & 0x0f))?;
        if opcode.is_control() {
            if !fin {
                return Err(WsError::FragmentedControl);
            }
        } else if opcode == OpCode::Continuation {
            if !self.in_message {
                return Err(WsError::UnexpectedContinuation);
            }
        } else if self.in_message {
            return Err(WsError::ExpectedContinuation);
        }
        let Some(&b1) = b.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        match (self.config.mask, masked) {
            (MaskPolicy::Required, false) => return Err(WsError::MaskRequired),
            (MaskPolicy::Forbidden, true) => return Err(WsError::MaskForbidden),
            _ => {}
        }
        let len7 = u64::from(b1 & 0x7f);
        if opcode.is_control() && len7 > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::ControlTooLong(len7));
        }
        let (len, mut pos) = match len7 {
            126 => {
                let Some(l) = b.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([l[0], l[1]])), 4)
            }
            127 => {
                let Some(l) = b.get(2..10) else {
                    if b.get(2).is_some_and(|&x| x & 0x80 != 0) {
                        return Err(WsError::LengthMsb);
                    }
                    return Ok(None);
                };
                let mut a = [0u8; 8];
                a.copy_from_slice(l);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(WsError::LengthMsb);
                }
                (len, 10)
            }
            n => (n, 2),
        };
        if len > self.config.max_frame {
            return Err(WsError::FrameTooLarge {
                len,
                max: self.config.max_frame,
            });
        }
        let mask = if masked {
            let Some(m) = b.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([m[0], m[1], m[2], m[3]])
        } else {
            None
        };
        Ok(Some(Head {
            fin,
            opcode,
            mask,
            len,
            header_len: pos,
        }))
    }

    fn end_data_frame(&mut self, fin: bool) {
        self.state = State::Header;
        self.in_message = !fin;
    }

    /// Decodes the next event from the front of `buf`, consuming what it
    /// used. `Ok(None)`: everything available was consumed or more bytes
    /// are needed; read more and call again. After an error the stream is
    /// unusable: close with [`WsError::close_code`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, WsError> {
        loop {
            match self.state {
                State::Closed => {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(WsError::AfterClose)
                    };
                }
                State::Data {
                    fin,
                    mask,
                    remaining,
                    offset,
                } => {
                    if remaining == 0 {
                        self.end_data_frame(fin);
                        continue;
                    }
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let mut chunk = buf.split_to(n);
                    if let Some(key) = mask {
                        apply_mask(&mut chunk, key, offset);
                    }
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        self.end_data_frame(fin);
                    } else {
                        self.state = State::Data {
                            fin,
                            mask,
                            remaining,
                            offset: (offset + n) & 3,
                        };
                    }
                    return Ok(Some(Event::Data(chunk.freeze())));
                }
                State::Header => {
                    let Some(head) = self.head(buf)? else {
                        return Ok(None);
                    };
                    if !head.opcode.is_control() {
                        buf.advance(head.header_len);
                        // In a message from here on, until a fin frame
                        // ends; `in_message` is settled when the payload
                        // is done.
                        self.in_message = true;
                        if head.len == 0 {
                            self.end_data_frame(head.fin);
                        } else {
                            self.state = State::Data {
                                fin: head.fin,
                                mask: head.mask,
                                remaining: head.len,
                                offset: 0,
                            };
                        }
                        continue;
                    }
                    // Control frames: whole, at most 125 bytes.
                    let len = head.len as usize;
                    if buf.len() < head.header_len + len {
                        return Ok(None);
                    }
                    buf.advance(head.header_len);
                    let mut payload = buf.split_to(len);
                    if let Some(key) = head.mask {
                        apply_mask(&mut payload, key, 0);
                    }
                    let payload = payload.freeze();
                    return match head.opcode {
                        OpCode::Ping => Ok(Some(Event::Ping(payload))),
                        OpCode::Pong => Ok(Some(Event::Pong(payload))),
                        _ => {
                            let close = parse_close(&payload)?;
                            self.state = State::Closed;
                            Ok(Some(Event::Close(close)))
                        }
                    };
                }
            }
        }
    }
}

fn parse_close(p: &[u8]) -> Result<Option<CloseFrame>, WsError> {
    match p {
        [] => Ok(None),
        [_] => Err(WsError::CloseLength),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code::is_valid(code) {
                return Err(WsError::CloseCode(code));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| WsError::CloseReason)?
                .to_string();
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Writes a frame header into `out`, returning its length (2..=14).
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let m = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = if len < 126 {
        out[1] = m | len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        out[1] = m | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = m | 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(k) = mask {
        out[pos..pos + 4].copy_from_slice(&k);
        pos += 4;
    }
    pos
}

/// Appends one frame (header and payload, masked with `mask` when given).
pub fn encode_frame(
    out: &mut BytesMut,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut h, fin, opcode, payload.len() as u64, mask);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[start..], k, 0);
    }
}

/// Which end of a connection an encoder writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Writes unmasked frames.
    Server,
    /// Writes masked frames, each with a fresh random key.
    Client,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlTooLong(usize),
    #[error("no random bytes for a mask: {0}")]
    Random(String),
}

/// An encoded frame header, for writing a payload after it without
/// copying it into a frame buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: usize,
    /// The key the payload must be masked with ([`apply_mask`]), if any.
    pub mask: Option<[u8; 4]>,
}

impl FrameHeader {
    /// The header bytes to write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Frame encoder for one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEncoder {
    role: Role,
}

impl FrameEncoder {
    pub fn new(role: Role) -> FrameEncoder {
        FrameEncoder { role }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    fn mask(&self) -> Result<Option<[u8; 4]>, EncodeError> {
        match self.role {
            Role::Server => Ok(None),
            Role::Client => {
                let mut k = [0u8; 4];
                getrandom::getrandom(&mut k).map_err(|e| EncodeError::Random(e.to_string()))?;
                Ok(Some(k))
            }
        }
    }

    /// The header for a binary frame of `len` bytes whose payload the
    /// caller writes itself after it (zero-copy): for [`Role::Client`] the
    /// caller must mask the payload with the returned key
    /// ([`apply_mask`]).
    pub fn binary_header(&self, len: u64) -> Result<FrameHeader, EncodeError> {
        let mask = self.mask()?;
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let len = encode_header(&mut bytes, true, OpCode::Binary, len, mask);
        Ok(FrameHeader { bytes, len, mask })
    }

    /// Appends a binary frame carrying `payload`.
    pub fn binary(&self, payload: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        encode_frame(out, true, OpCode::Binary, payload, self.mask()?);
        Ok(())
    }

    fn control(&self, op: OpCode, payload: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(EncodeError::ControlTooLong(payload.len()));
        }
        encode_frame(out, true, op, payload, self.mask()?);
        Ok(())
    }

    /// Appends a ping (payload at most 125 bytes).
    pub fn ping(&self, payload: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        self.control(OpCode::Ping, payload, out)
    }

    /// Appends a pong (payload at most 125 bytes).
    pub fn pong(&self, payload: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        self.control(OpCode::Pong, payload, out)
    }

    /// Appends a close frame; a reason longer than 123 bytes is cut at a
    /// character boundary.
    pub fn close(&self, frame: Option<&CloseFrame>, out: &mut BytesMut) -> Result<(), EncodeError> {
        let mut p = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
        if let Some(f) = frame {
            p.extend_from_slice(&f.code.to_be_bytes());
            let mut end = f.reason.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !f.reason.is_char_boundary(end) {
                end -= 1;
            }
            p.extend_from_slice(&f.reason.as_bytes()[..end]);
        }
        self.control(OpCode::Close, &p, out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::transport::http::parse_request;

    fn req(s: &str) -> Request {
        parse_request(s.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
    }

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary, base64\r\n\r\n";

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn server_accepts_and_answers_like_xpra() {
        let a = server_handshake(&req(UPGRADE), &ServerOptions::default()).unwrap();
        assert_eq!(a.protocol, Some("binary"));
        let text = String::from_utf8(a.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: binary\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn server_refusals() {
        let o = ServerOptions::default();
        let cases: [(&str, &str, u16); 8] = [
            ("GET /chat HTTP/1.1", "POST /chat HTTP/1.1", 405),
            ("Upgrade: websocket", "Upgrade: h2c", 400),
            ("Connection: Upgrade", "Connection: keep-alive", 400),
            ("Version: 13", "Version: 8", 426),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==", 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "not base64!", 400),
            ("binary, base64", "base64", 400),
            ("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost", 400),
        ];
        for (from, to, status) in cases {
            let text = UPGRADE.replacen(from, to, 1);
            let e = server_handshake(&req(&text), &o).unwrap_err();
            assert_eq!(e.reply().head.status, status, "{to}: {e}");
        }
        let e = server_handshake(&req(&UPGRADE.replacen("13", "8", 1)), &o).unwrap_err();
        assert_eq!(e.reply().head.get("sec-websocket-version"), Some("13"));
        // Without `binary` and not required: accepted with no protocol.
        let lenient = ServerOptions {
            require_binary: false,
        };
        let text = UPGRADE.replacen("binary, base64", "base64", 1);
        let a = server_handshake(&req(&text), &lenient).unwrap();
        assert_eq!(a.protocol, None);
        assert!(!String::from_utf8(a.response)
            .unwrap()
            .contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn client_server_handshake() {
        let c = ClientHandshake::with_key(*b"0123456789abcdef", "proxy:443", "100");
        let request = c.request();
        let r = req(std::str::from_utf8(&request).unwrap());
        assert_eq!(r.path(), "/100");
        assert!(is_upgrade_request(&r));
        let a = server_handshake(&r, &ServerOptions::default()).unwrap();
        let mut resp = a.response.clone();
        resp.extend_from_slice(b"\x82\x00");
        for n in 0..a.response.len() {
            assert_eq!(c.read_response(&resp[..n]), Ok(None));
        }
        let ok = c.read_response(&resp).unwrap().unwrap();
        assert_eq!(ok.protocol.as_deref(), Some("binary"));
        assert_eq!(ok.head_len, a.response.len());
        // A wrong accept, a 200, no protocol: refused.
        let other = ClientHandshake::with_key(*b"fedcba9876543210", "proxy:443", "/");
        assert_eq!(other.read_response(&resp), Err(HandshakeError::Accept));
        assert_eq!(
            c.read_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(HandshakeError::Status { status: 200 })
        );
        let no_proto = String::from_utf8(a.response)
            .unwrap()
            .replace("Sec-WebSocket-Protocol: binary\r\n", "");
        assert_eq!(
            c.read_response(no_proto.as_bytes()),
            Err(HandshakeError::Protocol(None))
        );
    }

    fn decode_all(cfg: DecoderConfig, bytes: &[u8]) -> (Vec<Event>, Option<WsError>) {
        let mut d = FrameDecoder::new(cfg);
        let mut buf = BytesMut::from(bytes);
        let mut events = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7.
        let (e, err) = decode_all(DecoderConfig::client(), b"\x81\x05\x48\x65\x6c\x6c\x6f");
        assert_eq!(e, vec![Event::Data(Bytes::from_static(b"Hello"))]);
        assert!(err.is_none());
        let (e, _) = decode_all(
            DecoderConfig::server(),
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        );
        assert_eq!(e, vec![Event::Data(Bytes::from_static(b"Hello"))]);
        // Fragmented, with a ping in between.
        let (e, _) = decode_all(
            DecoderConfig::client(),
            b"\x01\x03\x48\x65\x6c\x89\x05Hello\x80\x02\x6c\x6f",
        );
        assert_eq!(
            e,
            vec![
                Event::Data(Bytes::from_static(b"Hel")),
                Event::Ping(Bytes::from_static(b"Hello")),
                Event::Data(Bytes::from_static(b"lo")),
            ]
        );
        // 256 bytes and 64 KiB lengths.
        let mut f = vec![0x82, 0x7e, 0x01, 0x00];
        f.extend_from_slice(&[7u8; 256]);
        let (e, _) = decode_all(DecoderConfig::client(), &f);
        assert_eq!(e, vec![Event::Data(Bytes::from(vec![7u8; 256]))]);
        let mut f = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        f.extend_from_slice(&[9u8; 65536]);
        let (e, _) = decode_all(DecoderConfig::client(), &f);
        assert_eq!(e, vec![Event::Data(Bytes::from(vec![9u8; 65536]))]);
    }

    #[test]
    fn refusals() {
        let c = DecoderConfig::client();
        let s = DecoderConfig::server();
        let cases: [(DecoderConfig, &[u8], WsError); 14] = [
            (c, b"\xc2\x00", WsError::ReservedBits),
            (c, b"\x83\x00", WsError::UnknownOpcode(3)),
            (c, b"\x8b\x00", WsError::UnknownOpcode(0xb)),
            (c, b"\x09\x00", WsError::FragmentedControl),
            (c, b"\x89\x7e\x00\x7e", WsError::ControlTooLong(126)),
            (c, b"\x80\x00", WsError::UnexpectedContinuation),
            (c, b"\x02\x00\x82\x00", WsError::ExpectedContinuation),
            (s, b"\x82\x00", WsError::MaskRequired),
            (c, b"\x82\x80\x00\x00\x00\x00", WsError::MaskForbidden),
            (c, b"\x82\x7f\x80", WsError::LengthMsb),
            (
                c,
                b"\x82\x7f\x00\x00\x00\x00\x01\x00\x00\x01",
                WsError::FrameTooLarge {
                    len: 16 * 1024 * 1024 + 1,
                    max: DEFAULT_MAX_FRAME,
                },
            ),
            (c, b"\x88\x01\x03", WsError::CloseLength),
            (c, b"\x88\x02\x03\xed", WsError::CloseCode(1005)),
            (c, b"\x88\x04\x03\xe8\xff\xfe", WsError::CloseReason),
        ];
        for (cfg, bytes, want) in cases {
            let (_, err) = decode_all(cfg, bytes);
            assert_eq!(err, Some(want.clone()), "{bytes:?}");
        }
        assert_eq!(WsError::CloseReason.close_code(), 1007);
        assert_eq!(WsError::FrameTooLarge { len: 1, max: 0 }.close_code(), 1009);
        // After close: nothing more.
        let (e, err) = decode_all(c, b"\x88\x02\x03\xe8\x82\x00");
        assert_eq!(
            e,
            vec![Event::Close(Some(CloseFrame {
                code: 1000,
                reason: String::new()
            }))]
        );
        assert_eq!(err, Some(WsError::AfterClose));
        // xpra 3.1 clients do not mask: the lenient server takes both.
        let (e, err) = decode_all(
            DecoderConfig::server_lenient(),
            b"\x82\x01x\x82\x81\0\0\0\0y",
        );
        assert!(err.is_none());
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn partial_data_is_streamed() {
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            true,
            OpCode::Binary,
            b"abcdefghij",
            Some([1, 2, 3, 4]),
        );
        let mut d = FrameDecoder::new(DecoderConfig::server());
        let mut buf = BytesMut::from(&out[..9]);
        let mut got = Vec::new();
        while let Some(Event::Data(b)) = d.decode(&mut buf).unwrap() {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"abc");
        assert!(!d.at_boundary());
        buf.extend_from_slice(&out[9..]);
        while let Some(Event::Data(b)) = d.decode(&mut buf).unwrap() {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"abcdefghij");
        assert!(d.at_boundary());
    }

    #[test]
    fn encoder_roles() {
        let mut out = BytesMut::new();
        let server = FrameEncoder::new(Role::Server);
        server.binary(b"xpra", &mut out).unwrap();
        server.ping(b"p", &mut out).unwrap();
        server
            .close(
                Some(&CloseFrame {
                    code: 1001,
                    reason: "é".repeat(100),
                }),
                &mut out,
            )
            .unwrap();
        assert!(server.ping(&[0; 126], &mut out).is_err());
        let (e, err) = decode_all(DecoderConfig::client(), &out);
        assert!(err.is_none());
        assert_eq!(e[0], Event::Data(Bytes::from_static(b"xpra")));
        assert_eq!(e[1], Event::Ping(Bytes::from_static(b"p")));
        match &e[2] {
            Event::Close(Some(f)) => {
                assert_eq!(f.code, 1001);
                assert_eq!(f.reason.len(), 122);
            }
            other => panic!("{other:?}"),
        }
        let mut out = BytesMut::new();
        let client = FrameEncoder::new(Role::Client);
        client.binary(b"hello", &mut out).unwrap();
        client.close(None, &mut out).unwrap();
        let (e, err) = decode_all(DecoderConfig::server(), &out);
        assert!(err.is_none());
        assert_eq!(
            e,
            vec![
                Event::Data(Bytes::from_static(b"hello")),
                Event::Close(None)
            ]
        );
        let h = client.binary_header(70000).unwrap();
        assert_eq!(h.as_bytes().len(), 14);
        assert_eq!(h.as_bytes()[1], 0x80 | 127);
        assert_eq!(h.as_bytes()[10..], h.mask.unwrap());
        let h = FrameEncoder::new(Role::Server).binary_header(5).unwrap();
        assert_eq!(h.as_bytes(), [0x82, 5]);
        assert_eq!(h.mask, None);
    }

    #[test]
    fn mask_offsets() {
        let key = [0xa1, 0xb2, 0xc3, 0xd4];
        let data: Vec<u8> = (0..=255u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for split in [0, 1, 3, 7, 8, 9, 100] {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(parts, whole, "{split}");
        }
        apply_mask(&mut whole, key, 0);
        assert_eq!(whole, data);
    }
}
