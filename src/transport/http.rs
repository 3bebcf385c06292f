//! HTTP/1.x, as much as xfwd needs: a bounded request-head parser (for the
//! WebSocket upgrade, the HTML5 client's files and `--tcp-proxy`
//! decisions), a response-head parser (for upstream `ws://` handshakes), a
//! response-head builder, and the decisions of a static file server for
//! `--html=DIR` ([`StaticFiles`]). No sockets: the engine reads the head,
//! asks here what to answer, writes the head and streams the file.
//!
//! Limits: a head is at most [`MAX_HEAD`] bytes (8 KiB) and
//! [`MAX_HEADERS`] (64) header lines, checked before anything is kept;
//! past them the answer is 431. Lines end in CRLF or a bare LF (RFC 9112
//! §2.2); a bare CR, obs-fold, control bytes, a space before the colon,
//! conflicting `Content-Length`s and (in HTTP/1.1) a missing or repeated
//! `Host` are 400; versions other than 1.0/1.1 are 505.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// The largest request or response head accepted, request line included.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// The path of the session-list endpoint (see [`sessions_reply`]).
pub const SESSIONS_PATH: &str = "/xfwd/sessions";
/// The most entries a directory listing shows.
pub const MAX_LISTING: usize = 10_000;

/// Bounds for the head parsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_head: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: MAX_HEAD,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Why a head was refused. [`HttpError::status`] is the status to answer
/// with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("HTTP head exceeds {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than {limit} HTTP header lines")]
    TooManyHeaders { limit: usize },
    #[error("bad HTTP request line: {0}")]
    BadRequestLine(&'static str),
    #[error("bad HTTP status line: {0}")]
    BadStatusLine(&'static str),
    #[error("bad HTTP header line: {0}")]
    BadHeader(&'static str),
    #[error("HTTP version not supported (only HTTP/1.0 and HTTP/1.1)")]
    VersionNotSupported,
    #[error("HTTP/1.1 request without exactly one Host header")]
    Host,
    #[error("bad or conflicting Content-Length")]
    ContentLength,
}

impl HttpError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::VersionNotSupported => 505,
            _ => 400,
        }
    }
}

/// A request method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    /// Any other token (methods are case-sensitive: `get` is `Other`).
    Other(String),
}

impl Method {
    fn from_token(t: &str) -> Method {
        match t {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other(s) => s,
        }
    }
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Header lines in arrival order. Names are kept as received and compared
/// case-insensitively; values are the raw bytes with surrounding spaces
/// removed (obs-text is kept, and `get` returns only UTF-8 values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The first value of `name`, if any and if it is UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .find_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every UTF-8 value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The raw value bytes of the first `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// How many lines named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.entries
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The comma-separated elements of every `name` line, trimmed, empty
    /// ones skipped (`Connection: keep-alive, Upgrade`).
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim_matches([' ', '\t']))
            .filter(|t| !t.is_empty())
    }

    /// Whether `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent (visible ASCII only).
    pub target: String,
    pub version: Version,
    pub headers: Headers,
    /// Bytes the head took, final empty line included; a body or a
    /// WebSocket stream starts there.
    pub head_len: usize,
}

impl Request {
    /// The target's path: origin-form without its query, or the path of an
    /// absolute-form target (`http://host/x?y` is `/x`); `*` and
    /// authority-form give `""`.
    pub fn path(&self) -> &str {
        let t = self.target.as_str();
        let t = match t.find("://") {
            Some(i) if !t.starts_with('/') => {
                let rest = &t[i + 3..];
                match rest.find(['/', '?']) {
                    Some(j) if rest.as_bytes()[j] == b'/' => &rest[j..],
                    _ => "/",
                }
            }
            _ if t.starts_with('/') => t,
            _ => "",
        };
        let end = t.find(['?', '#']).unwrap_or(t.len());
        &t[..end]
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        let q = &self.target[self.target.find('?')? + 1..];
        Some(&q[..q.find('#').unwrap_or(q.len())])
    }

    /// Whether the connection may carry another request after this one's
    /// response (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`), and this request has no body to skip.
    pub fn keep_alive(&self) -> bool {
        if self.has_body() {
            return false;
        }
        match self.version {
            Version::Http11 => !self.headers.has_token("connection", "close"),
            Version::Http10 => self.headers.has_token("connection", "keep-alive"),
        }
    }

    /// Whether a body follows the head (`Transfer-Encoding`, or a non-zero
    /// `Content-Length`).
    pub fn has_body(&self) -> bool {
        self.headers.count("transfer-encoding") > 0 || self.content_length().unwrap_or(0) > 0
    }

    /// The declared `Content-Length` (validated by the parser).
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get("content-length")
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether this asks to upgrade to `protocol` (`Connection: upgrade`
    /// and `Upgrade: protocol`, both case-insensitive).
    pub fn wants_upgrade(&self, protocol: &str) -> bool {
        self.headers.has_token("connection", "upgrade")
            && self.headers.tokens("upgrade").any(|t| {
                t.split('/')
                    .next()
                    .unwrap_or(t)
                    .eq_ignore_ascii_case(protocol)
            })
    }
}

/// A parsed response head (an upstream's answer to a handshake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub head_len: usize,
}

/// One line of a head: its bytes without the line end, and where the next
/// starts. `None`: no line end yet.
fn next_line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, HttpError> {
    let rest = &buf[from..];
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        // Refuse a bare CR or a control byte early, before the line ends.
        if rest.iter().enumerate().any(|(i, &b)| {
            (b == b'\r' && i + 1 < rest.len())
                || (b < 0x20 && b != b'\t' && b != b'\r')
                || b == 0x7f
        }) {
            return Err(HttpError::BadHeader("control character"));
        }
        return Ok(None);
    };
    let line = &rest[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::BadHeader("control character"));
    }
    Ok(Some((line, from + nl + 1)))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses header lines from `pos` to the empty line. `Ok(None)`: need
/// more bytes.
fn parse_headers(
    buf: &[u8],
    mut pos: usize,
    limits: &Limits,
) -> Result<Option<(Headers, usize)>, HttpError> {
    let mut headers = Headers::new();
    loop {
        let Some((line, next)) = next_line(buf, pos)? else {
            return Ok(None);
        };
        if next > limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head,
            });
        }
        pos = next;
        if line.is_empty() {
            return Ok(Some((headers, pos)));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HttpError::BadHeader("obsolete line folding"));
        }
        if headers.len() >= limits.max_headers {
            return Err(HttpError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::BadHeader("no colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::BadHeader("bad field name"));
        }
        let value = trim_ows(&line[colon + 1..]);
        // tchar is ASCII, so the name is UTF-8.
        let name = String::from_utf8_lossy(name).into_owned();
        headers.push(name, value.to_vec());
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_version(v: &[u8], bad: HttpError) -> Result<Version, HttpError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(HttpError::VersionNotSupported)
        }
        _ => Err(bad),
    }
}

/// Checks the `Content-Length` lines: digits only, all equal (a list of
/// equal values counts as one, RFC 9110 §8.6).
fn check_content_length(headers: &Headers) -> Result<(), HttpError> {
    let mut seen: Option<&[u8]> = None;
    for (name, value) in headers.iter() {
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        for part in value.split(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::ContentLength);
            }
            match seen {
                Some(s) if s != part => return Err(HttpError::ContentLength),
                _ => seen = Some(part),
            }
        }
    }
    Ok(())
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete,
/// read more (the limits are enforced on what is there already).
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<Request>, HttpError> {
    let Some((line, pos)) = next_line(buf, 0)? else {
        if buf.len() >= limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head,
            });
        }
        return Ok(None);
    };
    if pos > limits.max_head {
        return Err(HttpError::HeadTooLarge {
            limit: limits.max_head,
        });
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine(
            "expected METHOD SP TARGET SP VERSION",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequestLine("bad method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(HttpError::BadRequestLine("bad request target"));
    }
    let version = parse_version(version, HttpError::BadRequestLine("bad version"))?;
    let Some((headers, head_len)) = parse_headers(buf, pos, limits)? else {
        if buf.len() >= limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head,
            });
        }
        return Ok(None);
    };
    if version == Version::Http11 && headers.count("host") != 1 {
        return Err(HttpError::Host);
    }
    check_content_length(&headers)?;
    // Both checked to be visible ASCII above.
    let method = Method::from_token(&String::from_utf8_lossy(method));
    let target = String::from_utf8_lossy(target).into_owned();
    Ok(Some(Request {
        method,
        target,
        version,
        headers,
        head_len,
    }))
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_response(buf: &[u8], limits: &Limits) -> Result<Option<Response>, HttpError> {
    let Some((line, pos)) = next_line(buf, 0)? else {
        if buf.len() >= limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head,
            });
        }
        return Ok(None);
    };
    let bad = |w| HttpError::BadStatusLine(w);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parse_version(parts.next().unwrap_or_default(), bad("bad version"))?;
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad("bad status code"));
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err(bad("bad status code"));
    }
    let reason = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let Some((headers, head_len)) = parse_headers(buf, pos, limits)? else {
        if buf.len() >= limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: limits.max_head,
            });
        }
        return Ok(None);
    };
    Ok(Some(Response {
        version,
        status,
        reason,
        headers,
        head_len,
    }))
}

/// The reason phrase for a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A response head to send. Header values are sanitised as they are added:
/// CR, LF and other control bytes become spaces, so no caller can split
/// the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    headers: Vec<(Cow<'static, str>, String)>,
}

impl ResponseHead {
    pub fn new(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            headers: Vec::new(),
        }
    }

    /// Adds a header line (builder style).
    pub fn header(mut self, name: impl Into<Cow<'static, str>>, value: impl AsRef<str>) -> Self {
        self.push(name, value);
        self
    }

    /// Adds a header line.
    pub fn push(&mut self, name: impl Into<Cow<'static, str>>, value: impl AsRef<str>) {
        let mut name = name.into();
        if !name.bytes().all(is_tchar) || name.is_empty() {
            name = Cow::Owned(
                name.bytes()
                    .filter(|&b| is_tchar(b))
                    .map(char::from)
                    .collect(),
            );
        }
        let value = value
            .as_ref()
            .chars()
            .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
            .collect();
        self.headers.push((name, value));
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    /// Appends the encoded head (status line, headers, empty line).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(64 + self.headers.len() * 32);
        let _ = write!(s, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        s.push_str("\r\n");
        out.extend_from_slice(s.as_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

/// What follows a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Nothing (HEAD, 304, 301 ...).
    None,
    /// The first `len` bytes of the file at `path` (the engine opens and
    /// streams it; if it reads fewer, it must close the connection, since
    /// `Content-Length` promised `len`).
    File { path: PathBuf, len: u64 },
    /// A small body built here (errors, listings, JSON).
    Bytes(Bytes),
}

/// A complete decision: head plus body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub head: ResponseHead,
    pub body: Body,
}

impl Reply {
    /// A short plain-text error page. `Connection: close` is set: after an
    /// error the engine closes.
    pub fn error(status: u16, message: &str) -> Reply {
        let body = format!("{} {}\n{}\n", status, reason(status), message);
        let head = ResponseHead::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Length", body.len().to_string())
            .header("X-Content-Type-Options", "nosniff")
            .header("Connection", "close");
        Reply {
            head,
            body: Body::Bytes(Bytes::from(body)),
        }
    }

    /// The reply for a parse error.
    pub fn for_error(e: &HttpError) -> Reply {
        Reply::error(e.status(), &e.to_string())
    }

    /// The same reply for a HEAD request: headers kept, no body.
    pub fn without_body(mut self) -> Reply {
        self.body = Body::None;
        self
    }
}

/// `Last-Modified` / `Date` format.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The MIME type for a file name, by extension (case-insensitive); text
/// types carry `charset=utf-8`. Unknown: `application/octet-stream`.
pub fn mime_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, e)) => e.to_ascii_lowercase(),
        None => return "application/octet-stream",
    };
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "png" => "image/png",
        "gif" => "image/gif",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "cur" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "gz" => "application/gzip",
        "br" => "application/x-brotli",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Percent-decodes `s`. `None` on a bad escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes a path segment (everything but unreserved characters
/// and a few safe sub-delims).
pub fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Why a `--html` root was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticError {
    #[error("--html directory {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--html {path} is not a directory")]
    NotDir { path: PathBuf },
}

/// A pre-compressed variant that may sit beside a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Br,
    Gzip,
}

impl Coding {
    fn ext(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gz",
        }
    }
    fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The q-value `Accept-Encoding` gives `coding` (0 = not acceptable).
/// Without the header nothing but identity is acceptable.
fn accept_q(req: &Request, coding: &str) -> u32 {
    let mut star = None;
    for item in req.headers.tokens("accept-encoding") {
        let mut params = item.split(';');
        let name = params.next().unwrap_or_default().trim();
        let mut q = 1000;
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
        }
        if name.eq_ignore_ascii_case(coding)
            || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"))
        {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// A q-value as thousandths (`0.5` = 500).
fn parse_q(v: &str) -> Option<u32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut f = 0;
    for (i, d) in frac.bytes().enumerate() {
        f += u32::from(d - b'0') * [100, 10, 1][i];
    }
    let q = int + f;
    (q <= 1000).then_some(q)
}

/// The static file server's decisions for `--html=DIR`.
///
/// - `GET` and `HEAD` only (others: 405 with `Allow`);
/// - the path is percent-decoded, then split on `/`; `..` segments, NUL,
///   bad escapes and non-UTF-8 are 400, dotfiles (`.git`, `.htpasswd`)
///   404, so a request can only name a path inside the root; symlinks the
///   root's owner put there are followed, as xpra's own server and nginx
///   do (Debian's `/usr/share/xpra/www/js/lib/jquery.js` links out of the
///   root); with [`StaticFiles::follow_symlinks`] off, the joined path is
///   canonicalized and must still be under the canonical root (a symlink
///   out of the root is 404); only regular files are served (never a FIFO
///   or a device);
/// - a directory without a trailing slash is 301 to the slash form; with
///   one, its `index.html`, else a listing when allowed, else 404;
/// - `FILE.br` / `FILE.gz` beside a file are sent instead when
///   `Accept-Encoding` allows (brotli first on equal q), with
///   `Content-Encoding` and `Vary: Accept-Encoding` (`Vary` is sent
///   whenever a variant exists);
/// - `ETag` (size and mtime, plus the coding) and `Last-Modified`;
///   `If-None-Match` (weak comparison, `*`) else `If-Modified-Since` give
///   304; `Cache-Control: no-cache` so browsers revalidate after an
///   upgrade of the client files;
/// - the query string is ignored.
#[derive(Clone, Debug)]
pub struct StaticFiles {
    root: PathBuf,
    allow_listing: bool,
    follow_symlinks: bool,
}

impl StaticFiles {
    /// Serves files under `root` (canonicalized now; it must exist and be
    /// a directory).
    pub fn new(root: impl AsRef<Path>) -> Result<StaticFiles, StaticError> {
        let path = root.as_ref();
        let root = fs::canonicalize(path).map_err(|source| StaticError::Root {
            path: path.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(StaticError::NotDir {
                path: path.to_path_buf(),
            });
        }
        Ok(StaticFiles {
            root,
            allow_listing: false,
            follow_symlinks: true,
        })
    }

    /// Whether symlinks inside the root may point out of it (default: yes).
    pub fn follow_symlinks(mut self, follow: bool) -> StaticFiles {
        self.follow_symlinks = follow;
        self
    }

    /// Whether a directory without `index.html` is listed (default: no,
    /// 404).
    pub fn allow_listing(mut self, allow: bool) -> StaticFiles {
        self.allow_listing = allow;
        self
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The reply to `req`, dated now.
    pub fn respond(&self, req: &Request) -> Reply {
        self.respond_at(req, SystemTime::now())
    }

    /// The reply to `req`; `now` is only used for the `Date` header.
    pub fn respond_at(&self, req: &Request, now: SystemTime) -> Reply {
        let mut reply = self.decide(req);
        reply.head.push("Date", http_date(now));
        if req.method == Method::Head {
            reply = reply.without_body();
        }
        reply
    }

    fn decide(&self, req: &Request) -> Reply {
        match req.method {
            Method::Get | Method::Head => {}
            _ => {
                let mut r = Reply::error(405, "only GET and HEAD are served here");
                r.head.push("Allow", "GET, HEAD");
                return r;
            }
        }
        let path = req.path();
        if !path.starts_with('/') {
            return Reply::error(400, "bad request target");
        }
        let Some(decoded) = percent_decode(path) else {
            return Reply::error(400, "bad percent-escape in path");
        };
        if decoded.contains(&0) {
            return Reply::error(400, "NUL in path");
        }
        let Ok(decoded) = String::from_utf8(decoded) else {
            return Reply::error(400, "path is not UTF-8");
        };
        let mut segments = Vec::new();
        for seg in decoded.split('/') {
            match seg {
                "" | "." => {}
                ".." => return Reply::error(400, "'..' in path"),
                s if s.starts_with('.') => return not_found(),
                s => segments.push(s),
            }
        }
        let mut full = self.root.clone();
        for s in &segments {
            full.push(s);
        }
        let Some((real, meta)) = self.resolve(&full) else {
            return not_found();
        };
        if meta.is_dir() {
            if !decoded.ends_with('/') {
                let mut location = String::from("/");
                for s in &segments {
                    location.push_str(&percent_encode_segment(s));
                    location.push('/');
                }
                if let Some(q) = req.query() {
                    location.push('?');
                    location.push_str(q);
                }
                return Reply {
                    head: ResponseHead::new(301)
                        .header("Location", location)
                        .header("Content-Length", "0"),
                    body: Body::None,
                };
            }
            let index = full.join("index.html");
            if let Some((real_index, m)) = self.resolve(&index) {
                if m.is_file() {
                    return self.file(req, &index, &real_index, &m);
                }
            }
            if self.allow_listing {
                return self.listing(&real, &decoded);
            }
            return not_found();
        }
        if !meta.is_file() {
            return not_found();
        }
        self.file(req, &full, &real, &meta)
    }

    /// Canonicalizes `path` and checks it is under the root.
    fn resolve(&self, path: &Path) -> Option<(PathBuf, fs::Metadata)> {
        let real = fs::canonicalize(path).ok()?;
        // `path` is the root joined with validated segments: inside the
        // root by name. Its real location may be elsewhere only through a
        // symlink in the root.
        let inside =
            real.starts_with(&self.root) || (self.follow_symlinks && path.starts_with(&self.root));
        if !inside {
            return None;
        }
        let meta = fs::metadata(&real).ok()?;
        Some((real, meta))
    }

    /// A regular file's reply: variant choice, validators, 304.
    fn file(&self, req: &Request, full: &Path, real: &Path, meta: &fs::Metadata) -> Reply {
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let content_type = mime_type(&name);

        // Pre-compressed variants beside the requested file.
        let mut variants = Vec::new();
        for coding in [Coding::Br, Coding::Gzip] {
            let mut p = full.as_os_str().to_owned();
            p.push(".");
            p.push(coding.ext());
            if let Some((vreal, vmeta)) = self.resolve(Path::new(&p)) {
                if vmeta.is_file() {
                    variants.push((coding, vreal, vmeta));
                }
            }
        }
        let has_variants = !variants.is_empty();
        let mut chosen: Option<(Coding, PathBuf, fs::Metadata)> = None;
        let mut best_q = 0;
        for (coding, vreal, vmeta) in variants {
            let q = accept_q(req, coding.token());
            if q > best_q {
                best_q = q;
                chosen = Some((coding, vreal, vmeta));
            }
        }
        let (coding, path, meta) = match chosen {
            Some((c, p, m)) => (Some(c), p, m),
            None => (None, real.to_path_buf(), meta.clone()),
        };

        let len = meta.len();
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let since_epoch = mtime.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let etag = format!(
            "\"{:x}-{:x}-{:x}{}\"",
            len,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
            coding.map(|c| format!("-{}", c.ext())).unwrap_or_default()
        );
        let last_modified = http_date(UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()));

        let mut head = ResponseHead::new(200);
        head.push("ETag", &etag);
        head.push("Last-Modified", &last_modified);
        head.push("Cache-Control", "no-cache");
        if has_variants {
            head.push("Vary", "Accept-Encoding");
        }

        if not_modified(req, &etag, since_epoch.as_secs()) {
            head.status = 304;
            return Reply {
                head,
                body: Body::None,
            };
        }
        head.push("Content-Type", content_type);
        head.push("Content-Length", len.to_string());
        head.push("X-Content-Type-Options", "nosniff");
        if let Some(c) = coding {
            head.push("Content-Encoding", c.token());
        }
        Reply {
            head,
            body: Body::File { path, len },
        }
    }

    fn listing(&self, dir: &Path, shown: &str) -> Reply {
        let Ok(entries) = fs::read_dir(dir) else {
            return not_found();
        };
        let mut names: Vec<(String, bool)> = Vec::new();
        for e in entries.flatten().take(MAX_LISTING) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let is_dir = fs::metadata(e.path()).map(|m| m.is_dir()).unwrap_or(false);
            names.push((name, is_dir));
        }
        names.sort();
        let title = html_escape(shown);
        let mut body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n<ul>\n"
        );
        for (name, is_dir) in names {
            let slash = if is_dir { "/" } else { "" };
            let _ = writeln!(
                body,
                "<li><a href=\"{}{slash}\">{}{slash}</a></li>",
                percent_encode_segment(&name),
                html_escape(&name)
            );
        }
        body.push_str("</ul>\n</body></html>\n");
        let head = ResponseHead::new(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("Content-Length", body.len().to_string())
            .header("Cache-Control", "no-cache")
            .header("X-Content-Type-Options", "nosniff");
        Reply {
            head,
            body: Body::Bytes(Bytes::from(body)),
        }
    }
}

fn not_found() -> Reply {
    Reply::error(404, "not found")
}

/// RFC 9110 §13.1: `If-None-Match` (weak comparison) decides when present,
/// else `If-Modified-Since`.
fn not_modified(req: &Request, etag: &str, mtime_secs: u64) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if req.headers.count("if-none-match") > 0 {
        let ours = opaque(etag);
        return req
            .headers
            .tokens("if-none-match")
            .any(|t| t == "*" || opaque(t) == ours);
    }
    if let Some(ims) = req.headers.get("if-modified-since") {
        if let Ok(t) = httpdate::parse_http_date(ims) {
            let ims_secs = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            return mtime_secs <= ims_secs;
        }
    }
    false
}

/// Where an HTTP request on an xpra port goes (see [`route`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpRoute {
    /// A WebSocket upgrade: validate it with
    /// `websocket::server_handshake`, then the xpra path.
    WebSocket,
    /// `GET /xfwd/sessions` with `--html`: answer with [`sessions_reply`]
    /// for the authenticated user.
    Sessions,
    /// Pass the connection, with every byte read so far, to `--tcp-proxy`.
    Proxy,
    /// Send this reply (a file, a 304, a 301, an error).
    Reply(Reply),
}

/// Decides where an HTTP request goes, as xpra does plus a fallback:
/// upgrades are xpra's; with `--html`, files are served and what would be
/// a 404 or a 405 (a path or a method xfwd does not serve) goes to
/// `--tcp-proxy` when there is one (so one port serves both the HTML5
/// client and a web server's pages); without `--html`, everything goes to
/// `--tcp-proxy`, or gets a 404.
pub fn route(req: &Request, html: Option<&StaticFiles>, have_proxy: bool) -> HttpRoute {
    if req.wants_upgrade("websocket") {
        return HttpRoute::WebSocket;
    }
    match html {
        Some(files) => {
            if is_sessions_request(req) {
                return HttpRoute::Sessions;
            }
            let reply = files.respond(req);
            if matches!(reply.head.status, 404 | 405) && have_proxy {
                HttpRoute::Proxy
            } else {
                HttpRoute::Reply(reply)
            }
        }
        None if have_proxy => HttpRoute::Proxy,
        None => {
            let r = Reply::error(404, "this xpra proxy serves no web content");
            HttpRoute::Reply(if req.method == Method::Head {
                r.without_body()
            } else {
                r
            })
        }
    }
}

/// One session for [`sessions_json`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionEntry {
    /// The display (`:100`), what a client puts in its path.
    pub display: String,
    /// The session's name, when it has one.
    pub name: Option<String>,
    /// More string fields (`"uuid"`, `"type"` ...), in order.
    pub extra: Vec<(String, String)>,
}

/// Appends `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `<` escaped so the body is safe to inline in HTML too.
            c if (c as u32) < 0x20 || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"sessions":[{"display":":100","name":"work"},...]}`.
pub fn sessions_json(entries: &[SessionEntry]) -> String {
    let mut out = String::from("{\"sessions\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"display\":");
        json_str(&mut out, &e.display);
        if let Some(name) = &e.name {
            out.push_str(",\"name\":");
            json_str(&mut out, name);
        }
        for (k, v) in &e.extra {
            if k == "display" || k == "name" {
                continue;
            }
            out.push(',');
            json_str(&mut out, k);
            out.push(':');
            json_str(&mut out, v);
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// Whether `req` is for the session-list endpoint.
pub fn is_sessions_request(req: &Request) -> bool {
    req.path() == SESSIONS_PATH
}

/// The reply for `GET /xfwd/sessions`, the list being what the engine says
/// the authenticated user may reach. Never cached.
pub fn sessions_reply(req: &Request, entries: &[SessionEntry]) -> Reply {
    match req.method {
        Method::Get | Method::Head => {}
        _ => {
            let mut r = Reply::error(405, "only GET and HEAD are served here");
            r.head.push("Allow", "GET, HEAD");
            return r;
        }
    }
    let body = sessions_json(entries);
    let head = ResponseHead::new(200)
        .header("Content-Type", "application/json")
        .header("Content-Length", body.len().to_string())
        .header("Cache-Control", "no-store")
        .header("X-Content-Type-Options", "nosniff");
    let reply = Reply {
        head,
        body: Body::Bytes(Bytes::from(body)),
    };
    if req.method == Method::Head {
        reply.without_body()
    } else {
        reply
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        parse_request(s.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn parses_a_browser_request() {
        let text = "GET /index.html?x=1 HTTP/1.1\r\nHost: proxy\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nAccept-Encoding: gzip, br\r\n\r\nrest";
        let r = req(text);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/index.html?x=1");
        assert_eq!(r.path(), "/index.html");
        assert_eq!(r.query(), Some("x=1"));
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.headers.get("HOST"), Some("proxy"));
        assert!(r.headers.has_token("connection", "upgrade"));
        assert!(r.wants_upgrade("WebSocket"));
        assert!(r.keep_alive());
        assert_eq!(&text[r.head_len..], "rest");
    }

    #[test]
    fn incomplete_heads() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for n in 0..text.len() {
            assert_eq!(
                parse_request(&text[..n], &Limits::default()),
                Ok(None),
                "{n}"
            );
        }
        assert!(parse_request(text, &Limits::default()).unwrap().is_some());
    }

    #[test]
    fn edge_cases() {
        let l = Limits::default();
        let bad: [(&str, u16); 16] = [
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nnocolon\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n: empty\r\n\r\n", 400),
        ];
        for (text, status) in bad {
            let e = parse_request(text.as_bytes(), &l).unwrap_err();
            assert_eq!(e.status(), status, "{text:?}: {e}");
        }
        // Bare LF line ends, HTTP/1.0 without Host, equal Content-Lengths.
        let r = req("GET / HTTP/1.0\n\n");
        assert_eq!(r.version, Version::Http10);
        assert!(!r.keep_alive());
        let r = req("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(r.content_length(), Some(5));
        assert!(r.has_body() && !r.keep_alive());
        let r = req("GET / HTTP/1.1\r\nhost:a\r\nX-Empty:\r\nConnection: close\r\n\r\n");
        assert_eq!(r.headers.get("x-empty"), Some(""));
        assert!(!r.keep_alive());
        assert_eq!(
            req("PROPFIND / HTTP/1.0\r\n\r\n").method,
            Method::Other("PROPFIND".into())
        );
        // obs-text in a value is kept as bytes.
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: \xe9t\xe9\r\n\r\n", &l)
            .unwrap()
            .unwrap();
        assert_eq!(r.headers.get("x"), None);
        assert_eq!(r.headers.get_bytes("x"), Some(&b"\xe9t\xe9"[..]));
    }

    #[test]
    fn limits() {
        let l = Limits::default();
        let mut text = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..64 {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(
            parse_request(text.as_bytes(), &l),
            Err(HttpError::TooManyHeaders { limit: 64 })
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(
            parse_request(long.as_bytes(), &l),
            Err(HttpError::HeadTooLarge { limit: MAX_HEAD })
        );
        // An unfinished head is refused as soon as it reaches the limit.
        let open = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_request(open.as_bytes(), &l),
            Err(HttpError::HeadTooLarge { limit: MAX_HEAD })
        );
        // Exactly at the limit is fine.
        let mut exact = String::from("GET / HTTP/1.1\r\nHost: a\r\nX: ");
        let pad = MAX_HEAD - exact.len() - 4;
        exact.push_str(&"a".repeat(pad));
        exact.push_str("\r\n\r\n");
        assert_eq!(exact.len(), MAX_HEAD);
        assert!(parse_request(exact.as_bytes(), &l).unwrap().is_some());
    }

    #[test]
    fn targets() {
        assert_eq!(
            req("GET http://h:1/a/b?q HTTP/1.1\r\nHost: h\r\n\r\n").path(),
            "/a/b"
        );
        assert_eq!(req("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n").path(), "/");
        assert_eq!(req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path(), "");
        assert_eq!(req("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n").path(), "");
        assert_eq!(req("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n").path(), "/a");
    }

    #[test]
    fn response_parse_and_build() {
        let head = ResponseHead::new(101)
            .header("Upgrade", "websocket")
            .header("X-Evil", "a\r\nInjected: yes");
        let bytes = head.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(!text.contains("\r\nInjected"));
        let r = parse_response(&bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(r.status, 101);
        assert_eq!(r.reason, "Switching Protocols");
        assert_eq!(r.headers.get("upgrade"), Some("websocket"));
        assert_eq!(r.head_len, bytes.len());
        assert!(parse_response(b"HTTP/1.1 20 OK\r\n\r\n", &Limits::default()).is_err());
        assert!(parse_response(b"HTTP/1.1 200\r\n\r\n", &Limits::default())
            .unwrap()
            .is_some());
    }

    #[test]
    fn q_values() {
        let r = req(
            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip;q=0.8, br;q=0, *;q=0.1\r\n\r\n",
        );
        assert_eq!(accept_q(&r, "gzip"), 800);
        assert_eq!(accept_q(&r, "br"), 0);
        assert_eq!(accept_q(&r, "zstd"), 100);
        let r = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(accept_q(&r, "gzip"), 0);
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.05"), Some(50));
    }

    #[test]
    fn mime() {
        assert_eq!(mime_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(mime_type("a.JS"), "text/javascript; charset=utf-8");
        assert_eq!(mime_type("x.woff2"), "font/woff2");
        assert_eq!(mime_type("x.wasm"), "application/wasm");
        assert_eq!(mime_type("Makefile"), "application/octet-stream");
    }

    #[test]
    fn sessions() {
        let entries = vec![
            SessionEntry {
                display: ":100".into(),
                name: Some("work \"main\"</script>".into()),
                extra: vec![("type".into(), "shadow".into())],
            },
            SessionEntry {
                display: ":101".into(),
                ..Default::default()
            },
        ];
        assert_eq!(
            sessions_json(&entries),
            r#"{"sessions":[{"display":":100","name":"work \"main\"\u003c/script>","type":"shadow"},{"display":":101"}]}"#
        );
        let r = req("GET /xfwd/sessions HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(is_sessions_request(&r));
        let reply = sessions_reply(&r, &entries);
        assert_eq!(reply.head.status, 200);
        assert_eq!(reply.head.get("content-type"), Some("application/json"));
        let r = req("POST /xfwd/sessions HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(sessions_reply(&r, &entries).head.status, 405);
        assert_eq!(sessions_json(&[]), r#"{"sessions":[]}"#);
    }
}
