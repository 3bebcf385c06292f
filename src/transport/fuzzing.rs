//! Fuzz logic for the transport decoders, kept in the library so the
//! `fuzz/` targets are one-line shims and the same checks run in unit
//! tests. Each function takes arbitrary bytes and panics only if an
//! invariant breaks.

use bytes::BytesMut;

use super::http::{self, Limits};
use super::proxy_protocol::{
    self, Command, Parsed, ProxyError, Version, V1_MAX_LEN, V2_FIXED_LEN, V2_MAX_BODY,
};
use super::sniff::{self, Sniffed, SNIFF_MAX};
use super::websocket::{
    self, DecoderConfig, Event, FrameDecoder, FrameEncoder, MaskPolicy, Role, WsError,
};
use crate::wire::header::{Header, Rules, HEADER_LEN};

/// Drives [`sniff::sniff`]: a decision never changes as bytes are added;
/// [`SNIFF_MAX`] bytes always decide; [`sniff::sniff_final`] always
/// decides; each decision matches what it claims.
pub fn sniff(data: &[u8]) {
    let mut decided: Option<Sniffed> = None;
    for n in 0..=data.len().min(SNIFF_MAX + 4) {
        let s = sniff::sniff(&data[..n]);
        match decided {
            Some(d) => assert_eq!(s, d, "decision changed at {n} bytes: {:?}", &data[..n]),
            None if s != Sniffed::NeedMore => decided = Some(s),
            None => assert!(n < SNIFF_MAX, "undecided after {n} bytes"),
        }
        assert_ne!(sniff::sniff_final(&data[..n]), Sniffed::NeedMore);
    }
    let Some(d) = decided else { return };
    match d {
        Sniffed::Xpra => {
            let mut h = [0u8; HEADER_LEN];
            let n = data.len().min(HEADER_LEN);
            h[..n].copy_from_slice(&data[..n]);
            assert!(Header::parse(&h, Rules::Any).is_ok(), "xpra: {h:?}");
        }
        Sniffed::Tls => assert_eq!(data[0], 0x16),
        Sniffed::Http => assert!(sniff::HTTP_METHODS.iter().any(|m| data.starts_with(m))),
        Sniffed::ProxyV1 => assert!(data.starts_with(b"PROXY ")),
        Sniffed::ProxyV2 => assert!(data.starts_with(&sniff::PROXY_V2_SIGNATURE)),
        Sniffed::Other | Sniffed::NeedMore => {}
    }
    let _ = Sniffed::describe(data);
}

/// Events with adjacent `Data` joined, for comparing runs that split the
/// input differently.
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::Data(prev)), Event::Data(b)) => {
                let mut joined = BytesMut::from(&prev[..]);
                joined.extend_from_slice(&b);
                *prev = joined.freeze();
            }
            (_, Event::Data(b)) if b.is_empty() => panic!("empty Data event"),
            (_, e) => out.push(e),
        }
    }
    out
}

/// Feeds `data` in pieces of the given sizes (cycled), collecting events
/// until the input ends or an error.
fn ws_run(config: DecoderConfig, data: &[u8], sizes: &[usize]) -> (Vec<Event>, Option<WsError>) {
    let mut d = FrameDecoder::new(config);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        loop {
            match d.decode(&mut buf) {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
        if pos >= data.len() {
            return (events, None);
        }
        let step = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        i += 1;
        let end = pos.saturating_add(step).min(data.len());
        buf.extend_from_slice(&data[pos..end]);
        pos = end;
    }
}

/// Drives the WebSocket frame decoder. The first byte picks the mask
/// policy and a small frame limit; the rest is the stream. Invariants: the
/// stream decodes to the same events (data joined) and the same error
/// whether fed whole, byte by byte or in uneven pieces; data never exceeds
/// the input; events re-encoded by the other role decode to themselves.
pub fn websocket(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let mask = match sel & 3 {
        0 => MaskPolicy::Required,
        1 => MaskPolicy::Forbidden,
        _ => MaskPolicy::Optional,
    };
    let config = DecoderConfig {
        mask,
        max_frame: if sel & 4 != 0 { 300 } else { 1 << 20 },
    };
    let (whole, whole_err) = ws_run(config, stream, &[usize::MAX]);
    let whole = coalesce(whole);
    let data_len: usize = whole
        .iter()
        .map(|e| match e {
            Event::Data(b) | Event::Ping(b) | Event::Pong(b) => b.len(),
            Event::Close(_) => 0,
        })
        .sum();
    assert!(data_len <= stream.len());
    for sizes in [&[1usize][..], &[3, 1, 7, 2, 64, 5][..], &[13, 125, 1][..]] {
        let (e, err) = ws_run(config, stream, sizes);
        assert_eq!(coalesce(e), whole, "events differ for sizes {sizes:?}");
        assert_eq!(err, whole_err, "error differs for sizes {sizes:?}");
    }

    // Re-encode what decoded, as a server and as a client, and decode it
    // back with the matching policy.
    for role in [Role::Server, Role::Client] {
        let enc = FrameEncoder::new(role);
        let mut out = BytesMut::new();
        for e in &whole {
            let r = match e {
                Event::Data(b) => enc.binary(b, &mut out),
                Event::Ping(b) => enc.ping(b, &mut out),
                Event::Pong(b) => enc.pong(b, &mut out),
                Event::Close(c) => enc.close(c.as_ref(), &mut out),
            };
            assert!(r.is_ok(), "re-encoding {e:?}: {r:?}");
        }
        let policy = match role {
            Role::Server => MaskPolicy::Forbidden,
            Role::Client => MaskPolicy::Required,
        };
        let back_config = DecoderConfig {
            mask: policy,
            max_frame: websocket::DEFAULT_MAX_FRAME,
        };
        let (back, err) = ws_run(back_config, &out, &[usize::MAX]);
        assert_eq!(err, None, "re-encoded stream refused");
        assert_eq!(
            coalesce(back),
            whole,
            "re-encoded stream decodes differently"
        );
    }
}

/// Drives the HTTP head parsers and what reads a parsed request. Invariants:
/// a parsed head is within the limits and re-parses the same from exactly
/// its own bytes; its strict prefixes are incomplete, never refused; no
/// helper panics.
pub fn http(data: &[u8]) {
    let limits = Limits {
        max_head: 2048,
        max_headers: 16,
    };
    let _ = http::parse_response(data, &limits);
    let parsed = http::parse_request(data, &limits);
    let req = match parsed {
        Ok(Some(r)) => r,
        Ok(None) => {
            assert!(
                data.len() < limits.max_head,
                "undecided past the head limit"
            );
            return;
        }
        Err(e) => {
            let s = e.status();
            assert!(s == 400 || s == 431 || s == 505);
            let _ = http::Reply::for_error(&e).head.to_bytes();
            return;
        }
    };
    assert!(req.head_len <= data.len() && req.head_len <= limits.max_head);
    assert!(req.headers.len() <= limits.max_headers);
    let again = http::parse_request(&data[..req.head_len], &limits);
    assert_eq!(again, Ok(Some(req.clone())), "head re-parses differently");
    for n in [req.head_len - 1, req.head_len / 2, req.head_len / 3] {
        assert_eq!(
            http::parse_request(&data[..n], &limits),
            Ok(None),
            "prefix of {n} bytes of a valid head refused"
        );
    }
    // The helpers the engine calls on a request.
    let path = req.path();
    let _ = http::percent_decode(path);
    let _ = (req.query(), req.keep_alive(), req.has_body());
    let _ = req.wants_upgrade("websocket");
    match websocket::server_handshake(&req, &websocket::ServerOptions::default()) {
        Ok(a) => {
            let head = http::parse_response(&a.response, &Limits::default());
            assert!(matches!(head, Ok(Some(ref r)) if r.status == 101));
        }
        Err(e) => {
            let _ = e.reply().head.to_bytes();
        }
    }
    let _ = http::sessions_reply(&req, &[]);
    let _ = http::mime_type(path);
}

/// Drives [`proxy_protocol::parse`] on every prefix of the input.
/// Invariants: the answer is `NeedMore` until a decision, then the same
/// decision (the same header or the same error) for every longer prefix; a
/// v1 header is decided within [`V1_MAX_LEN`] bytes, a v2 one within its
/// fixed part and [`V2_MAX_BODY`]; a header takes no more bytes than there
/// are or its version allows, parses the same from exactly those bytes, has
/// both addresses or neither (of one family), and its addresses survive
/// [`proxy_protocol::encode_v1`] and [`proxy_protocol::encode_v2`].
pub fn proxy_protocol(data: &[u8]) {
    let is_v1 = data.starts_with(b"PROXY ");
    let mut decided: Option<Result<Parsed, ProxyError>> = None;
    for n in 0..=data.len() {
        let r = proxy_protocol::parse(&data[..n]);
        match &decided {
            Some(d) => assert_eq!(&r, d, "decision changed at {n} bytes"),
            None if r != Ok(Parsed::NeedMore) => decided = Some(r),
            None if is_v1 => assert!(n < V1_MAX_LEN, "v1 undecided after {n} bytes"),
            None => assert!(
                n < V2_FIXED_LEN + V2_MAX_BODY,
                "v2 undecided after {n} bytes"
            ),
        }
    }
    let Some(Ok(Parsed::Done(h))) = decided else {
        return;
    };
    assert!(h.consumed <= data.len());
    match h.version {
        Version::V1 => {
            assert!(is_v1 && h.consumed <= V1_MAX_LEN, "v1 took {}", h.consumed);
            assert_eq!(h.command, Command::Proxy);
            assert!(!h.datagram);
        }
        Version::V2 => assert!(
            (V2_FIXED_LEN..=V2_FIXED_LEN + V2_MAX_BODY).contains(&h.consumed),
            "v2 took {}",
            h.consumed
        ),
    }
    if h.command == Command::Local {
        assert!(h.source.is_none() && !h.datagram);
    }
    match (h.source, h.destination) {
        (Some(s), Some(d)) => assert_eq!(s.is_ipv4(), d.is_ipv4(), "mixed families"),
        (None, None) => {}
        other => panic!("one address without the other: {other:?}"),
    }
    assert_eq!(
        proxy_protocol::parse(&data[..h.consumed]),
        Ok(Parsed::Done(h)),
        "does not parse the same from its own bytes"
    );
    let v1 = proxy_protocol::encode_v1(h.source, h.destination);
    let v2 = proxy_protocol::encode_v2(h.source, h.destination);
    for (version, bytes) in [(Version::V1, v1.as_bytes()), (Version::V2, &v2[..])] {
        match proxy_protocol::parse(bytes) {
            Ok(Parsed::Done(again)) => {
                assert_eq!(again.version, version);
                assert_eq!(again.consumed, bytes.len());
                assert_eq!(
                    (again.source, again.destination),
                    (h.source, h.destination),
                    "addresses change when re-encoded as {version:?}"
                );
            }
            other => panic!("re-encoded as {version:?}: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_survive_samples() {
        let samples: [&[u8]; 10] = [
            b"",
            b"P\x10\0\0\0\0\0\x10",
            b"\x16\x03\x01\x02\x00\x01",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c",
            b"\x00\x82\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\x89\x80\0\0\0\0",
            b"\x01\x01\x03\x48\x65\x6c\x89\x05Hello\x80\x02\x6c\x6f\x88\x02\x03\xe8",
            b"\x05\x82\x7e\x01\x2d",
            b"GET /a%2e%2e HTTP/1.0\n\n",
        ];
        for s in samples {
            sniff(s);
            websocket(s);
            http(s);
            proxy_protocol(s);
        }
    }
}
