//! The WebSocket frame layer end to end: any split of a frame stream
//! decodes to the same events; frames encoded by either role decode back
//! (masked for the client role, unmasked for the server); data payloads are
//! slices of the read buffer; handshakes pair up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use xfwd::transport::http::{parse_request, Limits};
use xfwd::transport::websocket::{
    encode_frame, server_handshake, ClientHandshake, CloseFrame, DecoderConfig, Event,
    FrameDecoder, FrameEncoder, MaskPolicy, OpCode, Role, ServerOptions, WsError,
};

/// One frame to put on the wire.
#[derive(Clone, Debug)]
enum Frame {
    /// A data message, cut into fragments of these sizes (one fragment: a
    /// plain binary frame).
    Message(Vec<u8>, Vec<usize>, bool),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => (
            prop::collection::vec(any::<u8>(), 0..600),
            prop::collection::vec(1usize..200, 0..4),
            any::<bool>()
        )
            .prop_map(|(d, cuts, text)| Frame::Message(d, cuts, text)),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Frame::Ping),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Frame::Pong),
    ]
}

/// Encodes the frames (and an optional close) as `role` would, with masks
/// from `seed`; returns the bytes and the events they must decode to.
fn build(
    frames: &[Frame],
    close: Option<(u16, String)>,
    masked: bool,
    seed: u32,
) -> (Vec<u8>, Vec<Event>) {
    let mut out = BytesMut::new();
    let mut want = Vec::new();
    let mut k = seed;
    let mut mask = || {
        if masked {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            Some(k.to_be_bytes())
        } else {
            None
        }
    };
    for f in frames {
        match f {
            Frame::Message(data, cuts, text) => {
                let mut pieces = Vec::new();
                let mut rest = &data[..];
                for &c in cuts {
                    let c = c.min(rest.len());
                    pieces.push(&rest[..c]);
                    rest = &rest[c..];
                }
                pieces.push(rest);
                for (i, p) in pieces.iter().enumerate() {
                    let op = if i > 0 {
                        OpCode::Continuation
                    } else if *text {
                        OpCode::Text
                    } else {
                        OpCode::Binary
                    };
                    encode_frame(&mut out, i + 1 == pieces.len(), op, p, mask());
                }
                if !data.is_empty() {
                    want.push(Event::Data(Bytes::copy_from_slice(data)));
                }
            }
            Frame::Ping(p) => {
                encode_frame(&mut out, true, OpCode::Ping, p, mask());
                want.push(Event::Ping(Bytes::copy_from_slice(p)));
            }
            Frame::Pong(p) => {
                encode_frame(&mut out, true, OpCode::Pong, p, mask());
                want.push(Event::Pong(Bytes::copy_from_slice(p)));
            }
        }
    }
    if let Some((code, reason)) = close {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        encode_frame(&mut out, true, OpCode::Close, &p, mask());
        want.push(Event::Close(Some(CloseFrame { code, reason })));
    }
    (out.to_vec(), want)
}

/// Adjacent data joined: how a stream is compared across splits.
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::Data(prev)), Event::Data(b)) => {
                let mut j = BytesMut::from(&prev[..]);
                j.extend_from_slice(&b);
                *prev = j.freeze();
            }
            (_, e) => out.push(e),
        }
    }
    out
}

fn decode_split(
    config: DecoderConfig,
    bytes: &[u8],
    cuts: &[usize],
) -> Result<Vec<Event>, WsError> {
    let mut d = FrameDecoder::new(config);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut pos = 0;
    for p in points {
        buf.extend_from_slice(&bytes[pos..p]);
        pos = p;
        while let Some(e) = d.decode(&mut buf)? {
            if let Event::Data(b) = &e {
                assert!(!b.is_empty(), "empty data event");
            }
            events.push(e);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    Ok(events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any split of a client's (masked) stream decodes, on a server, to
    /// the events that were encoded.
    #[test]
    fn any_split_same_events_masked(
        frames in prop::collection::vec(frame(), 0..8),
        close in prop::option::of((1000u16..=1003, "[a-z ]{0,40}")),
        seed in any::<u32>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (bytes, want) = build(&frames, close, true, seed);
        let want = coalesce(want);
        let got = decode_split(DecoderConfig::server(), &bytes, &cuts).unwrap();
        prop_assert_eq!(coalesce(got), want.clone());
        let byte_by_byte: Vec<usize> = (0..bytes.len()).collect();
        let got = decode_split(DecoderConfig::server(), &bytes, &byte_by_byte).unwrap();
        prop_assert_eq!(coalesce(got), want);
    }

    /// The same for a server's (unmasked) stream read by a client.
    #[test]
    fn any_split_same_events_unmasked(
        frames in prop::collection::vec(frame(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (bytes, want) = build(&frames, None, false, 0);
        let want = coalesce(want);
        let got = decode_split(DecoderConfig::client(), &bytes, &cuts).unwrap();
        prop_assert_eq!(coalesce(got), want.clone());
        // The lenient server takes it too; the strict one refuses it.
        let got = decode_split(DecoderConfig::server_lenient(), &bytes, &cuts).unwrap();
        prop_assert_eq!(coalesce(got), want.clone());
        if !want.is_empty() {
            prop_assert_eq!(
                decode_split(DecoderConfig::server(), &bytes, &cuts).unwrap_err(),
                WsError::MaskRequired
            );
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The encoder of each role round-trips through the decoder of the
    /// other.
    #[test]
    fn encoder_round_trip(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..70_000), 0..4),
        ping in prop::collection::vec(any::<u8>(), 0..=125),
        reason in "\\PC{0,60}",
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        for (role, policy) in [(Role::Server, MaskPolicy::Forbidden), (Role::Client, MaskPolicy::Required)] {
            let enc = FrameEncoder::new(role);
            let mut out = BytesMut::new();
            let mut want = Vec::new();
            for p in &payloads {
                enc.binary(p, &mut out).unwrap();
                if !p.is_empty() {
                    want.push(Event::Data(Bytes::copy_from_slice(p)));
                }
            }
            enc.ping(&ping, &mut out).unwrap();
            want.push(Event::Ping(Bytes::copy_from_slice(&ping)));
            let close = CloseFrame { code: 1000, reason: reason.clone() };
            enc.close(Some(&close), &mut out).unwrap();
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            want.push(Event::Close(Some(CloseFrame { code: 1000, reason: reason[..cut].to_string() })));
            let config = DecoderConfig { mask: policy, max_frame: 1 << 20 };
            let got = decode_split(config, &out, &cuts).unwrap();
            // Adjacent binary frames are one stream: compare joined.
            prop_assert_eq!(coalesce(got), coalesce(want));
        }
    }
}

#[test]
fn data_is_a_slice_of_the_read_buffer() {
    let mut out = BytesMut::new();
    encode_frame(
        &mut out,
        true,
        OpCode::Binary,
        &[5u8; 1000],
        Some([9, 8, 7, 6]),
    );
    let mut d = FrameDecoder::new(DecoderConfig::server());
    let start = out.as_ptr() as usize;
    let end = start + out.capacity();
    let Some(Event::Data(b)) = d.decode(&mut out).unwrap() else {
        panic!("no data");
    };
    assert_eq!(&b[..], &[5u8; 1000][..]);
    let p = b.as_ptr() as usize;
    assert!(p >= start && p < end, "payload was copied");
}

#[test]
fn frame_limit_is_checked_from_the_header() {
    let config = DecoderConfig {
        mask: MaskPolicy::Forbidden,
        max_frame: 1000,
    };
    let mut d = FrameDecoder::new(config);
    // Only the header of a 1001-byte frame: refused before any payload.
    let mut buf = BytesMut::from(&[0x82u8, 126, 0x03, 0xe9][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(WsError::FrameTooLarge {
            len: 1001,
            max: 1000
        })
    );
}

#[test]
fn handshake_pair() {
    let client = ClientHandshake::new("127.0.0.1:14501", "/100").unwrap();
    let req_bytes = client.request();
    let req = parse_request(&req_bytes, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(req.head_len, req_bytes.len());
    let accepted = server_handshake(&req, &ServerOptions::default()).unwrap();
    let got = client.read_response(&accepted.response).unwrap().unwrap();
    assert_eq!(got.protocol.as_deref(), Some("binary"));
    assert_eq!(got.head_len, accepted.response.len());
}

/// What xpra 3.1's `xpra attach ws://` sends (from
/// `xpra/net/websockets/common.py`: `client_upgrade`), and its check of our
/// answer (`verify_response_headers`: `upgrade` must be exactly
/// `websocket` and the protocol exactly `binary`, split on ": ").
#[test]
fn xpra_31_client_handshake() {
    let request = b"GET /100 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\nSec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\nHost: 127.0.0.1:14501\r\n\r\n";
    let req = parse_request(request, &Limits::default()).unwrap().unwrap();
    let a = server_handshake(&req, &ServerOptions::default()).unwrap();
    let text = String::from_utf8(a.response).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut headers = std::collections::HashMap::new();
    for line in head.split("\r\n") {
        if let Some((k, v)) = line.split_once(": ") {
            headers.insert(k.to_ascii_lowercase(), v.to_string());
        }
    }
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["sec-websocket-protocol"], "binary");
    assert_eq!(
        headers["sec-websocket-accept"],
        xfwd::transport::websocket::accept_key("AAECAwQFBgcICQoLDA0ODw==")
    );
    // And its frames are unmasked: the lenient server config takes them.
    let mut d = FrameDecoder::new(DecoderConfig::server_lenient());
    let mut buf = BytesMut::from(&b"\x82\x08P\x10\0\0\0\0\0\x00"[..]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Event::Data(_)))));
}
