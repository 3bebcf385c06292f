//! The PROXY protocol (HAProxy's, versions 1 and 2): a trusted front (a load
//! balancer, stunnel, nginx `proxy_protocol on`) prefixes each connection
//! with the real client's address. xfwd accepts it only from the addresses
//! `--proxy-protocol-from=CIDR` lists ([`Cidr`]), and the address it
//! carries is what auth, logs and throttling then see.
//!
//! [`parse`] reads one header from the start of a buffer:
//!
//! - v1: `PROXY TCP4|TCP6|UNKNOWN ... \r\n`, at most [`V1_MAX_LEN`] (107)
//!   bytes; addresses and ports strictly formatted (single spaces, decimal
//!   ports, the address family matching the keyword);
//! - v2: the 12-byte signature, version 2, command LOCAL or PROXY, family
//!   unspec / inet / inet6 / unix, a 16-bit length at most
//!   [`V2_MAX_BODY`]; TLVs after the addresses are skipped.
//!
//! It answers [`Parsed::NeedMore`] until the whole header is there, then the
//! addresses and how many bytes the header took (`consumed`); the bytes after
//! it are the client's own stream.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::sniff::{PROXY_V1_PREFIX, PROXY_V2_SIGNATURE};

/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;
/// The longest v2 header body (after the 16 fixed bytes) xfwd accepts:
/// addresses (at most 216 bytes, for unix) plus room for a front's TLVs.
pub const V2_MAX_BODY: usize = 4096;
/// The fixed part of a v2 header: signature, version/command, family,
/// length.
pub const V2_FIXED_LEN: usize = 16;

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 header has no CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("PROXY v1 header contains byte 0x{0:02x}")]
    V1BadByte(u8),
    #[error("PROXY v1 header is malformed: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 version nibble is {0}, expected 2")]
    V2Version(u8),
    #[error("PROXY v2 command {0} is unknown")]
    V2Command(u8),
    #[error("PROXY v2 address family/transport 0x{0:02x} is unknown")]
    V2Family(u8),
    #[error("PROXY v2 header length {0} exceeds the limit of {V2_MAX_BODY} bytes")]
    V2TooLong(usize),
    #[error("PROXY v2 header length {len} is too short for its addresses ({need} bytes)")]
    V2Short { len: usize, need: usize },
}

/// Which version a header was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

/// What the front says the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// The front relays a client: the addresses are the client's.
    Proxy,
    /// The front speaks for itself (a health check): use the socket's own
    /// addresses (v2 LOCAL).
    Local,
}

/// A complete PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    pub version: Version,
    pub command: Command,
    /// The client's address, when the header carried an internet one
    /// (`None` for LOCAL, v1 UNKNOWN, v2 unspec and unix families: keep the
    /// socket's peer address).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, likewise.
    pub destination: Option<SocketAddr>,
    /// Whether v2 said the client's transport was a datagram one (UDP or
    /// unix dgram); always false for v1.
    pub datagram: bool,
    /// Bytes the header took at the start of the buffer.
    pub consumed: usize,
}

/// What [`parse`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parsed {
    /// A prefix of a valid header: read more.
    NeedMore,
    Done(ProxyHeader),
}

/// Parses one PROXY header (v1 or v2) at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(PROXY_V2_SIGNATURE.len());
    if buf[..n] == PROXY_V2_SIGNATURE[..n] && n > 0 {
        if n < PROXY_V2_SIGNATURE.len() {
            return Ok(Parsed::NeedMore);
        }
        return parse_v2(buf);
    }
    let n = buf.len().min(PROXY_V1_PREFIX.len());
    if buf[..n] == PROXY_V1_PREFIX[..n] {
        if n < PROXY_V1_PREFIX.len() {
            return Ok(Parsed::NeedMore);
        }
        return parse_v1(buf);
    }
    Err(ProxyError::NotProxy)
}

/// Parses a v1 header (`buf` starts with `"PROXY "`).
pub fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(PROXY_V1_PREFIX.len());
    if buf[..n] != PROXY_V1_PREFIX[..n] {
        return Err(ProxyError::NotProxy);
    }
    if n < PROXY_V1_PREFIX.len() {
        return Ok(Parsed::NeedMore);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => {
                if i == 0 || window[i - 1] != b'\r' {
                    return Err(ProxyError::V1BadByte(b'\n'));
                }
                end = Some(i + 1);
                break;
            }
            b'\r' => {
                if window.get(i + 1).is_some_and(|&n| n != b'\n') {
                    return Err(ProxyError::V1BadByte(b'\r'));
                }
            }
            0x20..=0x7e => {}
            other => return Err(ProxyError::V1BadByte(other)),
        }
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(Parsed::NeedMore)
        };
    };
    // Checked above: every byte is printable ASCII.
    let line = std::str::from_utf8(&window[PROXY_V1_PREFIX.len()..end - 2])
        .map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    let mut header = ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        source: None,
        destination: None,
        datagram: false,
        consumed: end,
    };
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let v6 = match proto {
        "UNKNOWN" => return Ok(Parsed::Done(header)),
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1Malformed(
            "expected exactly: addresses and ports separated by single spaces",
        ));
    };
    let addr = |s: &str| -> Result<IpAddr, ProxyError> {
        if v6 {
            Ipv6Addr::from_str(s)
                .map(IpAddr::V6)
                .map_err(|_| ProxyError::V1Malformed("bad IPv6 address"))
        } else {
            Ipv4Addr::from_str(s)
                .map(IpAddr::V4)
                .map_err(|_| ProxyError::V1Malformed("bad IPv4 address"))
        }
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.len() > 1 && s.starts_with('0');
        if !digits || leading_zero {
            return Err(ProxyError::V1Malformed("bad port"));
        }
        s.parse::<u16>()
            .map_err(|_| ProxyError::V1Malformed("port out of range"))
    };
    header.source = Some(SocketAddr::new(addr(src)?, port(sport)?));
    header.destination = Some(SocketAddr::new(addr(dst)?, port(dport)?));
    Ok(Parsed::Done(header))
}

/// Parses a v2 header (`buf` starts with the signature).
pub fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < V2_FIXED_LEN {
        // Check what is there already, to refuse early.
        if let Some(&vc) = buf.get(12) {
            check_version_command(vc)?;
        }
        if let Some(&fam) = buf.get(13) {
            check_family(fam)?;
        }
        return Ok(Parsed::NeedMore);
    }
    let command = check_version_command(buf[12])?;
    let fam = buf[13];
    check_family(fam)?;
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyError::V2TooLong(len));
    }
    let need = match fam >> 4 {
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        _ => 0,
    };
    if command == Command::Proxy && len < need {
        return Err(ProxyError::V2Short { len, need });
    }
    let total = V2_FIXED_LEN + len;
    if buf.len() < total {
        return Ok(Parsed::NeedMore);
    }
    let body = &buf[V2_FIXED_LEN..total];
    let mut header = ProxyHeader {
        version: Version::V2,
        command,
        source: None,
        destination: None,
        datagram: fam & 0x0f == 0x2,
        consumed: total,
    };
    if command == Command::Local {
        // "The receiver must accept this connection as valid and must use
        // the real connection endpoints and discard the protocol block."
        header.datagram = false;
        return Ok(Parsed::Done(header));
    }
    match fam >> 4 {
        0x1 => {
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            let sport = u16::from_be_bytes([body[8], body[9]]);
            let dport = u16::from_be_bytes([body[10], body[11]]);
            header.source = Some(SocketAddr::new(IpAddr::V4(src), sport));
            header.destination = Some(SocketAddr::new(IpAddr::V4(dst), dport));
        }
        0x2 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&body[0..16]);
            d.copy_from_slice(&body[16..32]);
            let sport = u16::from_be_bytes([body[32], body[33]]);
            let dport = u16::from_be_bytes([body[34], body[35]]);
            header.source = Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), sport));
            header.destination = Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), dport));
        }
        // Unspecified or unix: no internet addresses to take.
        _ => {}
    }
    Ok(Parsed::Done(header))
}

fn check_version_command(vc: u8) -> Result<Command, ProxyError> {
    if vc >> 4 != 2 {
        return Err(ProxyError::V2Version(vc >> 4));
    }
    match vc & 0x0f {
        0 => Ok(Command::Local),
        1 => Ok(Command::Proxy),
        other => Err(ProxyError::V2Command(other)),
    }
}

fn check_family(fam: u8) -> Result<(), ProxyError> {
    match (fam >> 4, fam & 0x0f) {
        (0..=3, 0..=2) => Ok(()),
        _ => Err(ProxyError::V2Family(fam)),
    }
}

/// Encodes a v1 header (for tests, loadgen and a front that xfwd itself
/// may play for `--tcp-proxy`).
pub fn encode_v1(source: Option<SocketAddr>, destination: Option<SocketAddr>) -> String {
    match (source, destination) {
        (Some(s), Some(d)) if s.is_ipv4() == d.is_ipv4() => format!(
            "PROXY {} {} {} {} {}\r\n",
            if s.is_ipv4() { "TCP4" } else { "TCP6" },
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_string(),
    }
}

/// Encodes a v2 PROXY (or LOCAL, when either address is missing or the
/// families differ) header over TCP, with no TLVs.
pub fn encode_v2(source: Option<SocketAddr>, destination: Option<SocketAddr>) -> Vec<u8> {
    let mut out = PROXY_V2_SIGNATURE.to_vec();
    match (source, destination) {
        (Some(SocketAddr::V4(s)), Some(SocketAddr::V4(d))) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (Some(SocketAddr::V6(s)), Some(SocketAddr::V6(d))) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    out
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    #[error("'{0}' is not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/8)")]
    BadAddress(String),
    #[error("'{text}': prefix length must be 0..={max}")]
    BadPrefix { text: String, max: u8 },
}

/// An address range, `ADDRESS/PREFIX` (v4 or v6), or a single address.
/// Host bits past the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `192.168.1.7`, `fd00::/8`, `::1`.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| CidrError::BadAddress(text.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let ok = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                match p.parse::<u8>() {
                    Ok(n) if ok && n <= max => n,
                    _ => {
                        return Err(CidrError::BadPrefix {
                            text: text.to_string(),
                            max,
                        })
                    }
                }
            }
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Parses a comma-separated list (`10.0.0.0/8,127.0.0.1`).
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, CidrError> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect()
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this range. An IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`, as a dual-stack socket reports a v4 peer) matches
    /// v4 ranges as its v4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if self.addr.is_ipv4() => IpAddr::V4(v4),
                _ => ip,
            },
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(ip, self.prefix) == self.addr
    }

    /// Whether any of `list` contains `ip`.
    pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
        list.iter().any(|c| c.contains(ip))
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn parse_v1_refuses_what_is_not_a_v1_header() {
        // Called directly, with bytes that do not start with "PROXY ".
        assert_eq!(super::parse_v1(b"\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(
            super::parse_v1(b"GET / HTTP/1.1\r\n"),
            Err(ProxyError::NotProxy)
        );
        assert_eq!(super::parse_v1(b"PRO"), Ok(Parsed::NeedMore));
    }

    use super::*;

    fn done(buf: &[u8]) -> ProxyHeader {
        match parse(buf) {
            Ok(Parsed::Done(h)) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn v1_spec_examples() {
        let h = done(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n");
        assert_eq!(h.source, sa("192.168.0.1:56324"));
        assert_eq!(h.destination, sa("192.168.0.11:443"));
        assert_eq!(h.consumed, 47);
        assert_eq!(h.version, Version::V1);
    }

    #[test]
    fn v1_variants() {
        let h = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(h.source, sa("[2001:db8::1]:1"));
        assert_eq!(h.destination, sa("[::1]:65535"));
        let h = done(b"PROXY UNKNOWN\r\n");
        assert_eq!(h.source, None);
        assert_eq!(h.consumed, 15);
        let h = done(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n");
        assert_eq!(h.source, None);
        // The longest possible TCP6 header is exactly 104 bytes.
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), 104);
        assert_eq!(done(longest).consumed, 104);
    }

    #[test]
    fn v1_incomplete_and_refused() {
        for n in 0..47 {
            let full = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
            assert_eq!(parse(&full[..n]), Ok(Parsed::NeedMore), "{n}");
        }
        let bad: [&[u8]; 12] = [
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
            b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\x00",
            b"PROXY TCP4 1.2.3.4\r1.2.3.4 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
        ];
        for b in bad {
            assert!(parse(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
        assert_eq!(parse(&long[..106]), Ok(Parsed::NeedMore));
    }

    #[test]
    fn v2_vectors() {
        // PROXY, TCP over IPv4, 127.0.0.1:56324 -> 127.0.0.2:443, one
        // TLV (ALPN "h2") after the addresses.
        let mut v = PROXY_V2_SIGNATURE.to_vec();
        v.extend_from_slice(&[0x21, 0x11, 0x00, 0x11]);
        v.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 2, 0xdc, 0x04, 0x01, 0xbb]);
        v.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        v.extend_from_slice(b"after");
        let h = done(&v);
        assert_eq!(h.source, sa("127.0.0.1:56324"));
        assert_eq!(h.destination, sa("127.0.0.2:443"));
        assert_eq!(h.consumed, 16 + 17);
        assert_eq!(&v[h.consumed..], b"after");
        for n in 1..h.consumed {
            assert_eq!(parse(&v[..n]), Ok(Parsed::NeedMore), "{n}");
        }

        // LOCAL: addresses ignored.
        let mut l = PROXY_V2_SIGNATURE.to_vec();
        l.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let h = done(&l);
        assert_eq!(h.command, Command::Local);
        assert_eq!(h.source, None);
        assert_eq!(h.consumed, 16);

        // IPv6 and UDP.
        let s: SocketAddr = "[2001:db8::1]:1234".parse().unwrap();
        let d: SocketAddr = "[2001:db8::2]:443".parse().unwrap();
        let mut v6 = encode_v2(Some(s), Some(d));
        let h = done(&v6);
        assert_eq!((h.source, h.destination), (Some(s), Some(d)));
        v6[13] = 0x22;
        assert!(done(&v6).datagram);

        // Unix family: no internet address.
        let mut u = PROXY_V2_SIGNATURE.to_vec();
        u.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
        u.extend_from_slice(&[0u8; 216]);
        assert_eq!(done(&u).source, None);
    }

    #[test]
    fn v2_refused() {
        let base = |vc: u8, fam: u8, len: u16| {
            let mut v = PROXY_V2_SIGNATURE.to_vec();
            v.push(vc);
            v.push(fam);
            v.extend_from_slice(&len.to_be_bytes());
            v
        };
        assert_eq!(parse(&base(0x11, 0x11, 12)), Err(ProxyError::V2Version(1)));
        assert_eq!(parse(&base(0x22, 0x11, 12)), Err(ProxyError::V2Command(2)));
        assert_eq!(
            parse(&base(0x21, 0x41, 12)),
            Err(ProxyError::V2Family(0x41))
        );
        assert_eq!(
            parse(&base(0x21, 0x13, 12)),
            Err(ProxyError::V2Family(0x13))
        );
        assert_eq!(
            parse(&base(0x21, 0x11, 4)),
            Err(ProxyError::V2Short { len: 4, need: 12 })
        );
        assert_eq!(
            parse(&base(0x21, 0x11, 5000)),
            Err(ProxyError::V2TooLong(5000))
        );
        // Refused as soon as the bad byte is in.
        assert_eq!(
            parse(&base(0x11, 0, 0)[..13]),
            Err(ProxyError::V2Version(1))
        );
    }

    #[test]
    fn encoders_round_trip() {
        let s = sa("10.1.2.3:5000");
        let d = sa("10.9.9.9:443");
        let h = done(encode_v1(s, d).as_bytes());
        assert_eq!((h.source, h.destination), (s, d));
        let h = done(&encode_v2(s, d));
        assert_eq!((h.source, h.destination), (s, d));
        assert_eq!(done(&encode_v2(None, None)).command, Command::Local);
        assert_eq!(done(encode_v1(None, d).as_bytes()).source, None);
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("10.1.2.3/8").map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.prefix(), 32);
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::/0").is_ok());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let list = Cidr::parse_list("10.0.0.0/8, 192.168.0.0/16").unwrap();
        assert!(Cidr::any_contains(&list, "192.168.3.4".parse().unwrap()));
    }
}
