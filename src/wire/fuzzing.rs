//! Fuzz logic, kept in the library so the `fuzz/` targets are one-line shims
//! and the same checks run in unit tests. Each function takes arbitrary bytes
//! and panics only if an invariant breaks.

use bytes::Bytes;

use super::frame::{FrameDecoder, Limits, Record};
use super::header::Rules;
use super::packet::Assembler;
use super::peek;
use super::value::{DecodeLimits, Value};
use super::{bencode, rencode};

/// Decoding may fail, but what decodes must re-encode and decode to the
/// same value.
fn value_round_trip(
    data: &[u8],
    decode: fn(&Bytes, DecodeLimits) -> Result<Value, super::value::DecodeError>,
    encode: fn(&Value, &mut Vec<u8>) -> Result<(), super::value::EncodeError>,
) {
    let input = Bytes::copy_from_slice(data);
    let Ok(v) = decode(&input, DecodeLimits::default()) else {
        return;
    };
    let mut out = Vec::new();
    if encode(&v, &mut out).is_err() {
        return;
    }
    let again = decode(&Bytes::from(out.clone()), DecodeLimits::default());
    let again = match again {
        Ok(a) => a,
        Err(e) => panic!("re-encoded value does not decode: {e}\n value: {v:?}"),
    };
    assert!(
        same_value(&again, &v),
        "re-encoded value decodes differently\n first: {v:?}\n again: {again:?}"
    );
    // Encoding is deterministic: the value decoded again encodes to the same
    // bytes.
    let mut out2 = Vec::new();
    assert!(
        encode(&again, &mut out2).is_ok(),
        "decoded value does not re-encode"
    );
    assert_eq!(out, out2, "encoding is not a fixpoint");
}

/// Structural equality where floats compare by bit pattern and every NaN
/// equals every other NaN (`Value`'s `PartialEq` says NaN != NaN, and a
/// float32 round trip may change a NaN's payload).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same_value(k1, k2) && same_value(v1, v2))
        }
        _ => a == b,
    }
}

/// Drives the rencodeplus decoder.
pub fn rencodeplus(data: &[u8]) {
    value_round_trip(data, rencode::decode_plus, rencode::encode_plus);
}

/// Drives the legacy rencode decoder.
pub fn rencode_legacy(data: &[u8]) {
    value_round_trip(data, rencode::decode_legacy, rencode::encode_legacy);
}

/// Drives the bencode decoder.
pub fn bencode(data: &[u8]) {
    value_round_trip(data, bencode::decode, bencode::encode);
}

fn decode_all(data: &[u8], splits: &[usize], limits: Limits) -> (Vec<Record>, bool) {
    let mut d = FrameDecoder::new(Rules::Any, limits);
    let mut records = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = splits.iter().map(|&s| s.min(data.len())).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    for cut in cuts {
        if cut < start {
            continue;
        }
        d.feed(&data[start..cut]);
        start = cut;
        loop {
            match d.next_record() {
                Ok(Some(r)) => records.push(r),
                Ok(None) => break,
                Err(_) => return (records, true),
            }
        }
    }
    (records, false)
}

/// Drives the frame decoder, peek and packet assembly. The first two bytes
/// choose split points; the rest is the stream.
pub fn frame(data: &[u8]) {
    let Some((&[a, b], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limits = Limits {
        max_payload: 1 << 20,
        max_decompressed: 4 << 20,
        max_pending_chunks: 8,
    };
    let (whole, whole_failed) = decode_all(stream, &[], limits);
    let splits = [usize::from(a), usize::from(a) + usize::from(b) * 3];
    let (split, split_failed) = decode_all(stream, &splits, limits);
    assert_eq!(whole, split, "records depend on how the bytes were split");
    assert_eq!(whole_failed, split_failed, "errors depend on the splits");

    // Records re-emit the exact bytes they came from.
    let mut re = Vec::new();
    for r in &whole {
        re.extend_from_slice(&r.to_bytes());
    }
    assert_eq!(
        &stream[..re.len()],
        &re[..],
        "records do not re-emit their bytes"
    );

    // Peek agrees with a full decode wherever both succeed.
    let mut assembler = Assembler::new();
    for r in &whole {
        let peeked = (!r.header.is_chunk()).then(|| peek::peek_type(r));
        let Ok(Some(p)) = assembler.push(r, &limits) else {
            continue;
        };
        if let Some(Ok(t)) = peeked {
            let first = p.items.first();
            let agrees = match t {
                peek::PacketType::Name(n) => first.and_then(Value::as_str) == Some(n.as_str()),
                peek::PacketType::Alias(a) => first == Some(&Value::Int(a)),
            };
            assert!(agrees, "peek says {t:?}, the full decode {first:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_survive_samples() {
        for sample in [
            &b""[..],
            b"\x00\x00P\x10\x00\x00\x00\x00\x00\x06\xc2\x84ping\x01",
            b"\x01\x02P\x00\x00\x01\x00\x00\x00\x02ab",
            b"\xc2\x84ping\x01",
            b"l4:pingi1ee",
            b";\x7f",
        ] {
            frame(sample);
            rencodeplus(sample);
            rencode_legacy(sample);
            bencode(sample);
        }
    }

    /// Found by the rencodeplus target: a list holding a float32 NaN. The
    /// check compared with `PartialEq`, where NaN != NaN; NaNs now compare
    /// equal, every other float by its bits.
    #[test]
    fn nan_round_trips() {
        let crash = b"\xc9\x2c\x3f\xf8\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x42\
                      \xff\xff\xff\xff\x41\xff\xff\x74\x74\x32\x32\x74\x74\x42\x3c\x01\
                      \x02\x7f";
        rencodeplus(crash);
        rencode_legacy(crash);
        for nan in [b"\x42\x7f\xc0\x00\x01", b"\x42\xff\xff\xff\xff"] {
            rencodeplus(nan);
            rencode_legacy(nan);
        }
        rencodeplus(b"\x2c\x7f\xf8\x00\x00\x00\x00\x00\x01");
        rencode_legacy(b"\x2c\x7f\xf0\x00\x00\x00\x00\x00\x01");
        assert!(same_value(
            &Value::Float(f64::NAN),
            &Value::Float(-f64::NAN)
        ));
        assert!(!same_value(&Value::Float(0.0), &Value::Float(-0.0)));
    }
}
