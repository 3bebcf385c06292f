//! First-bytes classification of a new TCP connection, as xpra's server does
//! (`server_core.py`: `handle_new_connection`, `may_wrap_socket`,
//! `guess_header_protocol`).
//!
//! xpra peeks at what the client sent first and decides: `'P'` (and not
//! `"POST "`) is its own packet header, `0x16` is a TLS record to terminate
//! (then peek again inside), a request line containing `HTTP/` is served as
//! HTTP/WebSocket, anything else goes to `--tcp-proxy` or is refused with
//! "invalid packet header". [`sniff`] makes the same decision, stricter and
//! with fewer bytes:
//!
//! | variant | first bytes | bytes needed |
//! |---|---|---|
//! | [`Sniffed::Xpra`] | `'P'`, then flags, compression byte and chunk index that [`Header::parse`] accepts under [`Rules::Any`] | 4 |
//! | [`Sniffed::Tls`] | `0x16` (handshake record), `0x03 0x00..=0x04`, a plausible record length, `0x01` (ClientHello) | 6 |
//! | [`Sniffed::Http`] | a method token (`GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `OPTIONS`, `PATCH`, `CONNECT`, `TRACE`) and a space | 4..=8 |
//! | [`Sniffed::ProxyV1`] | `"PROXY "` | 6 |
//! | [`Sniffed::ProxyV2`] | the 12-byte PROXY v2 signature | 12 |
//! | [`Sniffed::Other`] | anything that can no longer become one of the above | 1.. |
//!
//! The xpra header's last four bytes (the payload length) are never
//! validated by [`Header::parse`], so four bytes decide. A prefix is
//! classified as soon as every candidate but one is ruled out *and* that
//! one is confirmed; [`SNIFF_MAX`] bytes always decide. The answer for a
//! prefix never changes when more bytes arrive (a property the fuzz target
//! checks).

use crate::wire::header::{Header, Rules, HEADER_LEN, MAGIC};

/// The most bytes [`sniff`] ever needs: with this many, it never answers
/// [`Sniffed::NeedMore`].
pub const SNIFF_MAX: usize = 12;

/// The PROXY protocol v2 signature.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The PROXY protocol v1 prefix.
pub const PROXY_V1_PREFIX: &[u8; 6] = b"PROXY ";

/// HTTP methods [`sniff`] recognises, each followed by a space.
pub const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sniffed {
    /// Not enough bytes to decide: read more (at most [`SNIFF_MAX`] in all),
    /// or call [`sniff_final`] if the peer stopped sending.
    NeedMore,
    /// An xpra record header: hand the connection to the xpra path.
    Xpra,
    /// A TLS ClientHello: terminate TLS, then sniff the plaintext again.
    Tls,
    /// An HTTP/1.x request line: serve files, upgrade to WebSocket, or pass
    /// to `--tcp-proxy`.
    Http,
    /// A PROXY protocol v1 header (`"PROXY "`).
    ProxyV1,
    /// A PROXY protocol v2 header (12-byte signature).
    ProxyV2,
    /// None of the above: pass to `--tcp-proxy` or close.
    Other,
}

impl Sniffed {
    /// A short name for logs and close reasons.
    pub fn name(self) -> &'static str {
        match self {
            Sniffed::NeedMore => "incomplete",
            Sniffed::Xpra => "xpra",
            Sniffed::Tls => "tls",
            Sniffed::Http => "http",
            Sniffed::ProxyV1 => "proxy-v1",
            Sniffed::ProxyV2 => "proxy-v2",
            Sniffed::Other => "other",
        }
    }

    /// xpra's words for a connection it cannot serve
    /// (`guess_header_protocol`), for a close reason or a log line.
    pub fn describe(prefix: &[u8]) -> String {
        match prefix.first() {
            None => "no data".to_string(),
            Some(0x16) => "SSL packet?".to_string(),
            Some(_) if prefix.starts_with(b"SSH-") => "SSH packet".to_string(),
            Some(&c) => match sniff(prefix) {
                Sniffed::Http => {
                    let method = prefix.split(|&b| b == b' ').next().unwrap_or_default();
                    format!("HTTP {} request", String::from_utf8_lossy(method))
                }
                _ => format!("character {c:#x}, not an xpra client?"),
            },
        }
    }
}

/// One candidate's verdict on a prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Yes,
    Maybe,
    No,
}

/// `prefix` against a fixed byte pattern.
fn literal(prefix: &[u8], pattern: &[u8]) -> Verdict {
    let n = prefix.len().min(pattern.len());
    if prefix[..n] != pattern[..n] {
        Verdict::No
    } else if n == pattern.len() {
        Verdict::Yes
    } else {
        Verdict::Maybe
    }
}

fn xpra(prefix: &[u8]) -> Verdict {
    // Flags, compression and index are validated; the length is not, so a
    // header padded with a zero length validates exactly when the real one
    // would. Missing bytes are tried with each value that could come.
    if prefix.first().is_some_and(|&b| b != MAGIC) {
        return Verdict::No;
    }
    if prefix.is_empty() {
        return Verdict::Maybe;
    }
    let known = prefix.len().min(4);
    let mut bytes = [0u8; HEADER_LEN];
    bytes[..known].copy_from_slice(&prefix[..known]);
    if known == 4 {
        return match Header::parse(&bytes, Rules::Any) {
            Ok(_) => Verdict::Yes,
            Err(_) => Verdict::No,
        };
    }
    // Some completion of the missing bytes 1..4 validates? The candidates
    // below cover every accepted shape: flags 0 / 0x08 / encoder flags,
    // compression 0 (always valid), index 0 or 1.
    const FLAGS: [u8; 6] = [0x00, 0x01, 0x04, 0x08, 0x10, 0x18];
    const INDEXES: [u8; 2] = [0, 1];
    let flags: &[u8] = if known > 1 { &prefix[1..2] } else { &FLAGS };
    let comps: &[u8] = if known > 2 { &prefix[2..3] } else { &[0] };
    for &f in flags {
        for &c in comps {
            for &i in &INDEXES {
                bytes[1] = f;
                bytes[2] = c;
                bytes[3] = i;
                if Header::parse(&bytes, Rules::Any).is_ok() {
                    return Verdict::Maybe;
                }
            }
        }
    }
    Verdict::No
}

fn tls(prefix: &[u8]) -> Verdict {
    // TLSPlaintext { type = handshake(22), legacy_record_version = 3.x,
    // length } then Handshake { msg_type = client_hello(1), ... }.
    let ok = |i: usize, check: fn(&[u8]) -> bool| -> Option<Verdict> {
        if prefix.len() <= i {
            Some(Verdict::Maybe)
        } else if !check(prefix) {
            Some(Verdict::No)
        } else {
            None
        }
    };
    let checks: [fn(&[u8]) -> bool; 5] = [
        |p| p[0] == 0x16,
        |p| p[1] == 0x03,
        |p| p[2] <= 0x04,
        // The length's high byte: a plaintext record is at most 2^14 bytes
        // (plus 2048 slack some stacks allow).
        |p| p[3] <= 0x48,
        // A ClientHello is at least 4 + 38 bytes (header, version, random,
        // session id length, ...).
        |p| u16::from_be_bytes([p[3], p[4]]) >= 42,
    ];
    for (i, check) in checks.into_iter().enumerate() {
        if let Some(v) = ok(i, check) {
            return v;
        }
    }
    match prefix.get(5) {
        None => Verdict::Maybe,
        Some(1) => Verdict::Yes,
        Some(_) => Verdict::No,
    }
}

fn http(prefix: &[u8]) -> Verdict {
    let mut best = Verdict::No;
    for method in HTTP_METHODS {
        match literal(prefix, method) {
            Verdict::Yes => return Verdict::Yes,
            Verdict::Maybe => best = Verdict::Maybe,
            Verdict::No => {}
        }
    }
    best
}

/// Classifies the first bytes of a connection. Never reads past
/// [`SNIFF_MAX`] bytes and never panics.
pub fn sniff(prefix: &[u8]) -> Sniffed {
    let prefix = &prefix[..prefix.len().min(SNIFF_MAX)];
    let candidates = [
        (Sniffed::Xpra, xpra(prefix)),
        (Sniffed::Tls, tls(prefix)),
        (Sniffed::ProxyV1, literal(prefix, PROXY_V1_PREFIX)),
        (Sniffed::ProxyV2, literal(prefix, &PROXY_V2_SIGNATURE)),
        (Sniffed::Http, http(prefix)),
    ];
    // The candidates are disjoint: at most one can say yes, and one saying
    // yes means every other already said no (their first bytes differ or,
    // for 'P', the second byte does), so the answer is stable.
    let mut open = false;
    for (kind, verdict) in candidates {
        match verdict {
            Verdict::Yes => return kind,
            Verdict::Maybe => open = true,
            Verdict::No => {}
        }
    }
    if open {
        Sniffed::NeedMore
    } else {
        Sniffed::Other
    }
}

/// [`sniff`] for a prefix that will not grow (the peer closed, or stopped
/// sending before a timeout): never [`Sniffed::NeedMore`]; an undecided
/// prefix is [`Sniffed::Other`].
pub fn sniff_final(prefix: &[u8]) -> Sniffed {
    match sniff(prefix) {
        Sniffed::NeedMore => Sniffed::Other,
        decided => decided,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tls_hello() -> Vec<u8> {
        // Record header + the start of a ClientHello.
        vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ]
    }

    #[test]
    fn xpra_headers() {
        // Modern rencodeplus hello, legacy rencode and bencode, a raw chunk.
        for h in [
            [b'P', 0x10, 0, 0, 0, 0, 1, 0],
            [b'P', 0x01, 0, 0, 0, 0, 1, 0],
            [b'P', 0x00, 0, 0, 0, 0, 1, 0],
            [b'P', 0x18, 0x41, 0, 0, 0, 1, 0],
            [b'P', 0x00, 0, 3, 0, 0, 1, 0],
        ] {
            assert_eq!(sniff(&h[..4]), Sniffed::Xpra, "{h:?}");
            assert_eq!(sniff(&h), Sniffed::Xpra);
            for n in 1..4 {
                assert_eq!(sniff(&h[..n]), Sniffed::NeedMore, "{h:?}[..{n}]");
            }
        }
        // The cipher flag, unknown flags, a bad index: not xpra.
        assert_eq!(sniff(&[b'P', 0x02, 0, 0]), Sniffed::Other);
        assert_eq!(sniff(&[b'P', 0x20]), Sniffed::Other);
        assert_eq!(sniff(&[b'P', 0, 0, 16]), Sniffed::Other);
        assert_eq!(sniff(&[b'P', 0, 0x30]), Sniffed::Other);
    }

    #[test]
    fn p_methods_are_not_xpra() {
        assert_eq!(sniff(b"POST / HTTP/1.1\r\n"), Sniffed::Http);
        assert_eq!(sniff(b"PUT /x"), Sniffed::Http);
        assert_eq!(sniff(b"PATCH "), Sniffed::Http);
        assert_eq!(sniff(b"PO"), Sniffed::NeedMore);
        assert_eq!(sniff(b"PROXY TCP4"), Sniffed::ProxyV1);
        assert_eq!(sniff(b"PROX"), Sniffed::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2.0"), Sniffed::Other);
    }

    #[test]
    fn tls_client_hello() {
        let h = tls_hello();
        assert_eq!(sniff(&h[..6]), Sniffed::Tls);
        assert_eq!(sniff(&h), Sniffed::Tls);
        for n in 0..6 {
            assert_eq!(sniff(&h[..n]), Sniffed::NeedMore, "{n}");
        }
        // An alert record, a ServerHello, SSLv2, a huge length: not TLS.
        assert_eq!(sniff(&[0x15, 0x03, 0x01]), Sniffed::Other);
        assert_eq!(sniff(&[0x16, 0x03, 0x03, 0x00, 0x40, 0x02]), Sniffed::Other);
        assert_eq!(sniff(&[0x16, 0x02]), Sniffed::Other);
        assert_eq!(sniff(&[0x16, 0x03, 0x01, 0xff]), Sniffed::Other);
        assert_eq!(sniff(&[0x16, 0x03, 0x01, 0x00, 0x05]), Sniffed::Other);
    }

    #[test]
    fn http_and_proxy() {
        for m in HTTP_METHODS {
            assert_eq!(sniff(m), Sniffed::Http);
            assert_eq!(sniff(&m[..m.len() - 1]), Sniffed::NeedMore);
        }
        assert_eq!(sniff(b"get / HTTP/1.1"), Sniffed::Other);
        assert_eq!(sniff(b"GETX"), Sniffed::Other);
        assert_eq!(sniff(&PROXY_V2_SIGNATURE), Sniffed::ProxyV2);
        assert_eq!(sniff(&PROXY_V2_SIGNATURE[..11]), Sniffed::NeedMore);
        assert_eq!(sniff(b"\r\n\r\n\0\r\nQUIX"), Sniffed::Other);
        assert_eq!(sniff(b"SSH-2.0-OpenSSH"), Sniffed::Other);
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff_final(b""), Sniffed::Other);
        assert_eq!(sniff_final(b"GE"), Sniffed::Other);
        assert_eq!(sniff_final(b"GET "), Sniffed::Http);
    }

    #[test]
    fn describe_like_xpra() {
        assert_eq!(Sniffed::describe(&[0x16, 3]), "SSL packet?");
        assert_eq!(Sniffed::describe(b"SSH-2.0"), "SSH packet");
        assert_eq!(Sniffed::describe(b"GET / "), "HTTP GET request");
        assert_eq!(
            Sniffed::describe(b"\x01"),
            "character 0x1, not an xpra client?"
        );
    }

    #[test]
    fn every_two_byte_prefix_is_stable() {
        // Exhaustive over the first two bytes (plus a few continuations):
        // a decision never changes as bytes are added.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let p = [a, b, 0, 0, 0x40, 1, b' ', b'x', b'y', b'z', 0, 0, 0];
                let mut decided = None;
                for n in 0..=p.len() {
                    let s = sniff(&p[..n]);
                    if let Some(d) = decided {
                        assert_eq!(s, d, "{:?}", &p[..n]);
                    } else if s != Sniffed::NeedMore {
                        decided = Some(s);
                    }
                }
                assert!(decided.is_some());
            }
        }
    }
}
