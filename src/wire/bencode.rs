//! xpra's bencode variant (as Debian's xpra 3.1.3 writes it).
//!
//! Forms: `i<int>e`, `<len>:<bytes>`, `l...e`, `d...e`, plus xpra's
//! `u<len>:<utf8>` for text, which xpra reads but never writes.
//!
//! What xpra 3.1.3's `bencode()` (its Cython module, the default) writes, and
//! what this encoder matches byte for byte:
//! - booleans as integers: `True` is `i1e`, `False` is `i0e`;
//! - text as its UTF-8 bytes in the plain `len:` form, no `u` prefix, so text
//!   and bytes look the same on the wire;
//! - integers of any size as `i<decimal>e`;
//! - tuples as lists; dict keys of any type, in insertion order (no sorting);
//! - `None` and floats raise errors, so they are [`EncodeError::Unsupported`]
//!   here.
//!
//! Decoding gives [`Value::Bytes`] (slices of the input) for plain strings,
//! [`Value::Str`] for `u` strings, and [`Value::BigInt`] for integers beyond
//! `i64`. Integers must be canonical (no `+`, no leading zeros, no `-0`),
//! length prefixes too, and the value must span the whole input. Every value
//! and length is charged against the [`DecodeLimits`] budget before it is
//! built.

use bytes::Bytes;

use super::value::{
    is_canonical_bigint, Budget, DecodeError, DecodeLimits, EncodeError, Value, MAX_ENCODE_DEPTH,
};

/// Longest integer text (sign included) accepted either way, as for rencode.
const MAX_INT_LEN: usize = 63;
/// Most decimal digits a string length prefix may have.
const MAX_LEN_DIGITS: usize = 10;

/// Encodes `v` as bencode, appending to `out`.
///
/// On error `out` is left as it was.
pub fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_value(v, out, 0);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Decodes one bencode value that spans all of `input`.
pub fn decode(input: &Bytes, limits: DecodeLimits) -> Result<Value, DecodeError> {
    if input.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut d = Decoder {
        input,
        buf: input.as_ref(),
        pos: 0,
        budget: Budget::new(limits),
    };
    let v = d.value(0)?;
    if d.pos < d.buf.len() {
        return Err(DecodeError::TrailingBytes {
            at: d.pos,
            count: d.buf.len() - d.pos,
        });
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Encoding

fn encode_value(v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    match v {
        Value::Int(i) => {
            out.push(b'i');
            push_i64(*i, out);
            out.push(b'e');
        }
        Value::BigInt(s) => {
            if !is_canonical_bigint(s, MAX_INT_LEN) {
                return Err(EncodeError::BadBigInt(s.clone()));
            }
            out.reserve(s.len() + 2);
            out.push(b'i');
            out.extend_from_slice(s.as_bytes());
            out.push(b'e');
        }
        Value::Bool(b) => out.extend_from_slice(if *b { b"i1e" } else { b"i0e" }),
        Value::None => return Err(EncodeError::Unsupported("none")),
        Value::Float(_) => return Err(EncodeError::Unsupported("float")),
        Value::Str(s) => encode_string(s.as_bytes(), out),
        Value::Bytes(b) => encode_string(b, out),
        Value::List(items) => {
            let depth = enter_encode(depth)?;
            out.push(b'l');
            for item in items {
                encode_value(item, out, depth)?;
            }
            out.push(b'e');
        }
        Value::Dict(pairs) => {
            let depth = enter_encode(depth)?;
            out.push(b'd');
            for (k, v) in pairs {
                encode_value(k, out, depth)?;
                encode_value(v, out, depth)?;
            }
            out.push(b'e');
        }
    }
    Ok(())
}

fn enter_encode(depth: usize) -> Result<usize, EncodeError> {
    let depth = depth + 1;
    if depth > MAX_ENCODE_DEPTH {
        Err(EncodeError::TooDeep {
            limit: MAX_ENCODE_DEPTH,
        })
    } else {
        Ok(depth)
    }
}

fn encode_string(b: &[u8], out: &mut Vec<u8>) {
    push_u64(b.len() as u64, out);
    out.push(b':');
    out.extend_from_slice(b);
}

fn push_i64(i: i64, out: &mut Vec<u8>) {
    if i < 0 {
        out.push(b'-');
    }
    push_u64(i.unsigned_abs(), out);
}

/// Appends the decimal digits of `n`.
fn push_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut used = 0;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        used += 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(digits.len() - used..).unwrap_or_default());
}

// ---------------------------------------------------------------------------
// Decoding

struct Decoder<'a> {
    input: &'a Bytes,
    buf: &'a [u8],
    pos: usize,
    budget: Budget,
}

impl Decoder<'_> {
    fn truncated(&self, what: &'static str) -> DecodeError {
        DecodeError::Truncated {
            at: self.buf.len(),
            what,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn enter(&self, depth: usize) -> Result<usize, DecodeError> {
        let depth = depth + 1;
        if depth > self.budget.max_depth() {
            Err(DecodeError::TooDeep {
                limit: self.budget.max_depth(),
            })
        } else {
            Ok(depth)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let at = self.pos;
        let code = *self.buf.get(at).ok_or_else(|| self.truncated("value"))?;
        self.budget.value()?;
        match code {
            b'i' => {
                self.pos = at + 1;
                self.int(at)
            }
            b'0'..=b'9' => {
                let range = self.string(at)?;
                self.budget.bytes(range.len())?;
                Ok(Value::Bytes(self.input.slice(range)))
            }
            b'u' => {
                self.pos = at + 1;
                let range = self.string(at + 1)?;
                self.budget.bytes(range.len())?;
                let raw = self.buf.get(range).unwrap_or_default();
                let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { at })?;
                Ok(Value::Str(s.to_owned()))
            }
            b'l' => {
                self.pos = at + 1;
                let depth = self.enter(depth)?;
                let mut items = Vec::new();
                loop {
                    match self.buf.get(self.pos) {
                        None => return Err(self.truncated("list")),
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(_) => items.push(self.value(depth)?),
                    }
                }
            }
            b'd' => {
                self.pos = at + 1;
                let depth = self.enter(depth)?;
                let mut pairs = Vec::new();
                loop {
                    match self.buf.get(self.pos) {
                        None => return Err(self.truncated("dict")),
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(Value::Dict(pairs));
                        }
                        Some(_) => {
                            let k = self.value(depth)?;
                            let v = self.value(depth)?;
                            pairs.push((k, v));
                        }
                    }
                }
            }
            _ => Err(DecodeError::UnknownTypeCode { code, at }),
        }
    }

    /// `i` digits `e`, with `self.pos` just past the `i` at `at`.
    fn int(&mut self, at: usize) -> Result<Value, DecodeError> {
        let buf = self.buf;
        let start = self.pos;
        let window_end = buf.len().min(start + MAX_INT_LEN + 1);
        let window = buf.get(start..window_end).unwrap_or_default();
        let Some(n) = window.iter().position(|&b| b == b'e') else {
            return Err(if window.len() > MAX_INT_LEN {
                DecodeError::BadNumber { at }
            } else {
                self.truncated("int")
            });
        };
        self.pos = start + n + 1;
        let text = window.get(..n).unwrap_or_default();
        let s = std::str::from_utf8(text).map_err(|_| DecodeError::BadNumber { at })?;
        if !is_canonical_bigint(s, MAX_INT_LEN) {
            return Err(DecodeError::BadNumber { at });
        }
        Ok(match s.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => {
                self.budget.bytes(s.len())?;
                Value::BigInt(s.to_owned())
            }
        })
    }

    /// `len:` + bytes starting at `at`; returns the range of the bytes.
    fn string(&mut self, at: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        let buf = self.buf;
        // ten digits fit u64 whatever the width of usize
        let mut len: u64 = 0;
        let mut i = at;
        loop {
            let b = *buf.get(i).ok_or_else(|| self.truncated("string length"))?;
            match b {
                b'0'..=b'9' => {
                    let ndigits = i - at;
                    // A zero first digit may only stand alone ("0:").
                    if ndigits >= MAX_LEN_DIGITS || (ndigits > 0 && len == 0) {
                        return Err(DecodeError::BadLength { at });
                    }
                    len = len * 10 + u64::from(b - b'0');
                }
                // at least one digit before the colon
                b':' if i > at => break,
                _ => return Err(DecodeError::BadLength { at }),
            }
            i += 1;
        }
        self.pos = i + 1;
        let len = usize::try_from(len).map_err(|_| self.truncated("string"))?;
        if len > self.remaining() {
            return Err(self.truncated("string"));
        }
        let start = self.pos;
        self.pos = start + len;
        Ok(start..self.pos)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out).unwrap();
        out
    }

    fn dec(b: &[u8]) -> Result<Value, DecodeError> {
        decode(&Bytes::copy_from_slice(b), DecodeLimits::default())
    }

    fn s(text: &str) -> Value {
        Value::Str(text.to_owned())
    }

    fn b(raw: &[u8]) -> Value {
        Value::Bytes(Bytes::copy_from_slice(raw))
    }

    #[test]
    fn ints() {
        for (i, text) in [
            (0i64, &b"i0e"[..]),
            (1, b"i1e"),
            (-1, b"i-1e"),
            (42, b"i42e"),
            (i64::MAX, b"i9223372036854775807e"),
            (i64::MIN, b"i-9223372036854775808e"),
        ] {
            assert_eq!(enc(&Value::Int(i)), text);
            assert_eq!(dec(text).unwrap(), Value::Int(i));
        }
    }

    #[test]
    fn big_ints() {
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            &"9".repeat(63),
        ] {
            let wire = format!("i{text}e");
            assert_eq!(enc(&Value::BigInt(text.into())), wire.as_bytes());
            assert_eq!(dec(wire.as_bytes()).unwrap(), Value::BigInt(text.into()));
        }
        // a BigInt inside i64 writes the same digits
        assert_eq!(enc(&Value::BigInt("-5".into())), b"i-5e");
        let mut out = vec![1];
        assert_eq!(
            encode(&Value::BigInt("007".into()), &mut out),
            Err(EncodeError::BadBigInt("007".into()))
        );
        assert_eq!(out, [1]);
    }

    #[test]
    fn bad_ints() {
        for bad in [
            &b"ie"[..],
            b"i-e",
            b"i-0e",
            b"i01e",
            b"i00e",
            b"i-01e",
            b"i+1e",
            b"i 1e",
            b"i1.5e",
            b"i0x1e",
        ] {
            assert_eq!(dec(bad), Err(DecodeError::BadNumber { at: 0 }), "{bad:?}");
        }
        let long = format!("i{}e", "1".repeat(64));
        assert_eq!(dec(long.as_bytes()), Err(DecodeError::BadNumber { at: 0 }));
        let unterminated = format!("i{}", "1".repeat(100));
        assert_eq!(
            dec(unterminated.as_bytes()),
            Err(DecodeError::BadNumber { at: 0 })
        );
        assert!(matches!(dec(b"i12"), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn bools_none_floats() {
        assert_eq!(enc(&Value::Bool(true)), b"i1e");
        assert_eq!(enc(&Value::Bool(false)), b"i0e");
        let mut out = Vec::new();
        assert_eq!(
            encode(&Value::None, &mut out),
            Err(EncodeError::Unsupported("none"))
        );
        assert_eq!(
            encode(&Value::Float(1.0), &mut out),
            Err(EncodeError::Unsupported("float"))
        );
        // nested: nothing half-written is left behind
        out.extend_from_slice(b"xy");
        assert_eq!(
            encode(
                &Value::List(vec![Value::Int(1), Value::Float(0.5)]),
                &mut out
            ),
            Err(EncodeError::Unsupported("float"))
        );
        assert_eq!(out, b"xy");
    }

    #[test]
    fn strings() {
        assert_eq!(enc(&s("")), b"0:");
        assert_eq!(enc(&s("abc")), b"3:abc");
        assert_eq!(enc(&s("\u{e9}")), b"2:\xc3\xa9");
        assert_eq!(enc(&b(b"\xff")), b"1:\xff");
        assert_eq!(dec(b"0:").unwrap(), b(b""));
        assert_eq!(dec(b"3:abc").unwrap(), b(b"abc"));
        assert_eq!(dec(b"1:\xff").unwrap(), b(b"\xff"));
        let long = vec![b'q'; 1234];
        let mut wire = b"1234:".to_vec();
        wire.extend_from_slice(&long);
        assert_eq!(enc(&b(&long)), wire);
        assert_eq!(dec(&wire).unwrap(), b(&long));
    }

    #[test]
    fn unicode_strings() {
        assert_eq!(dec(b"u3:abc").unwrap(), s("abc"));
        assert_eq!(dec(b"u0:").unwrap(), s(""));
        assert_eq!(dec(b"u2:\xc3\xa9").unwrap(), s("\u{e9}"));
        assert_eq!(dec(b"u1:\xff"), Err(DecodeError::InvalidUtf8 { at: 0 }));
        assert_eq!(dec(b"u03:abc"), Err(DecodeError::BadLength { at: 1 }));
        assert_eq!(dec(b"u:"), Err(DecodeError::BadLength { at: 1 }));
        assert_eq!(dec(b"ux"), Err(DecodeError::BadLength { at: 1 }));
        assert!(matches!(dec(b"u"), Err(DecodeError::Truncated { .. })));
        assert!(matches!(dec(b"u5:abc"), Err(DecodeError::Truncated { .. })));
        assert_eq!(
            dec(b"du1:ai1ee").unwrap(),
            Value::Dict(vec![(s("a"), Value::Int(1))])
        );
    }

    #[test]
    fn length_errors() {
        assert_eq!(dec(b"03:abc"), Err(DecodeError::BadLength { at: 0 }));
        assert_eq!(dec(b"00:"), Err(DecodeError::BadLength { at: 0 }));
        assert_eq!(dec(b"3x"), Err(DecodeError::BadLength { at: 0 }));
        assert_eq!(dec(b"3/abc"), Err(DecodeError::BadLength { at: 0 }));
        assert_eq!(dec(b"12345678901:a"), Err(DecodeError::BadLength { at: 0 }));
        assert!(matches!(
            dec(b"9999999999:a"),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(dec(b"3:ab"), Err(DecodeError::Truncated { .. })));
        assert!(matches!(dec(b"3"), Err(DecodeError::Truncated { .. })));
        assert_eq!(
            dec(b"-1:a"),
            Err(DecodeError::UnknownTypeCode { code: b'-', at: 0 })
        );
    }

    #[test]
    fn lists_and_dicts() {
        let v = Value::List(vec![Value::Int(1), Value::List(vec![Value::Int(2)])]);
        assert_eq!(enc(&v), b"li1eli2eee");
        assert_eq!(dec(b"li1eli2eee").unwrap(), v);
        assert_eq!(enc(&Value::List(vec![])), b"le");
        assert_eq!(dec(b"le").unwrap(), Value::List(vec![]));
        assert_eq!(enc(&Value::Dict(vec![])), b"de");
        assert_eq!(dec(b"de").unwrap(), Value::Dict(vec![]));
        // insertion order, not sorted; keys of any type
        let d = Value::Dict(vec![
            (s("b"), Value::Int(1)),
            (s("a"), Value::Int(2)),
            (Value::Int(7), s("x")),
            (Value::List(vec![Value::Int(1)]), Value::Bool(true)),
        ]);
        let wire = b"d1:bi1e1:ai2ei7e1:xli1eei1ee";
        assert_eq!(enc(&d), wire);
        assert_eq!(
            dec(wire).unwrap(),
            Value::Dict(vec![
                (b(b"b"), Value::Int(1)),
                (b(b"a"), Value::Int(2)),
                (Value::Int(7), b(b"x")),
                (Value::List(vec![Value::Int(1)]), Value::Int(1)),
            ])
        );
        // a dict may not end between key and value
        assert_eq!(
            dec(b"d1:ae"),
            Err(DecodeError::UnknownTypeCode { code: b'e', at: 4 })
        );
    }

    #[test]
    fn unknown_codes_empty_trailing() {
        for code in [b'e', b'x', b'-', b':', 0u8, 0xff] {
            assert_eq!(
                dec(&[code]),
                Err(DecodeError::UnknownTypeCode { code, at: 0 })
            );
        }
        assert_eq!(dec(b""), Err(DecodeError::Empty));
        assert_eq!(
            dec(b"i1ei2e"),
            Err(DecodeError::TrailingBytes { at: 3, count: 3 })
        );
        assert_eq!(
            dec(b"1:a1:b"),
            Err(DecodeError::TrailingBytes { at: 3, count: 3 })
        );
    }

    #[test]
    fn decoded_bytes_are_slices_of_input() {
        let input = Bytes::from_static(b"l3:abce");
        let v = decode(&input, DecodeLimits::default()).unwrap();
        let Value::List(items) = &v else { panic!() };
        let Value::Bytes(got) = &items[0] else {
            panic!()
        };
        assert_eq!(got.as_ptr(), input[3..].as_ptr());
    }

    fn sample() -> Value {
        Value::Dict(vec![
            (s("version"), s("3.1.3")),
            (s("n"), Value::Int(-123456)),
            (
                s("big"),
                Value::BigInt("-123456789012345678901234567890".into()),
            ),
            (s("raw"), b(&[0u8, 1, 2, 255])),
            (
                s("l"),
                Value::List(vec![Value::Int(0), s("\u{263a}"), Value::Dict(vec![])]),
            ),
        ])
    }

    #[test]
    fn every_prefix_is_an_error() {
        let wire = enc(&sample());
        assert!(dec(&wire).is_ok());
        for cut in 0..wire.len() {
            let err = dec(&wire[..cut]).unwrap_err();
            if cut == 0 {
                assert_eq!(err, DecodeError::Empty);
            } else {
                assert!(
                    matches!(err, DecodeError::Truncated { .. }),
                    "{cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn depth_limits() {
        let limits = DecodeLimits {
            max_depth: 5,
            ..DecodeLimits::default()
        };
        let ok = Bytes::from(format!("{}{}", "l".repeat(5), "e".repeat(5)));
        assert!(decode(&ok, limits).is_ok());
        let deep = Bytes::from(format!("{}{}", "l".repeat(6), "e".repeat(6)));
        assert_eq!(
            decode(&deep, limits),
            Err(DecodeError::TooDeep { limit: 5 })
        );
        let deep = Bytes::from(format!("{}i1e{}", "d1:k".repeat(6), "e".repeat(6)));
        assert_eq!(
            decode(&deep, limits),
            Err(DecodeError::TooDeep { limit: 5 })
        );
        let hostile = Bytes::from(vec![b'l'; 1_000_000]);
        assert_eq!(
            decode(&hostile, DecodeLimits::default()),
            Err(DecodeError::TooDeep { limit: 64 })
        );

        let mut v = Value::Int(0);
        for _ in 0..MAX_ENCODE_DEPTH {
            v = Value::List(vec![v]);
        }
        assert!(decode(&Bytes::from(enc(&v)), DecodeLimits::default()).is_ok());
        let mut out = Vec::new();
        assert_eq!(
            encode(&Value::List(vec![v]), &mut out),
            Err(EncodeError::TooDeep {
                limit: MAX_ENCODE_DEPTH
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn budget_limits() {
        use crate::wire::value::VALUE_COST;
        let limits = |max_values, max_bytes| DecodeLimits {
            max_values,
            max_bytes,
            ..DecodeLimits::default()
        };
        // a list of ten small ints: eleven values
        let list = Bytes::from(format!("l{}e", "i1e".repeat(10)));
        assert!(decode(&list, limits(11, 11 * VALUE_COST)).is_ok());
        assert_eq!(
            decode(&list, limits(10, usize::MAX)),
            Err(DecodeError::TooManyValues { limit: 10 })
        );
        assert_eq!(
            decode(&list, limits(usize::MAX, 11 * VALUE_COST - 1)),
            Err(DecodeError::TooManyBytes {
                limit: 11 * VALUE_COST - 1
            })
        );
        // a dict's keys count as values
        let dict = Bytes::from_static(b"d1:ai1e1:bi2ee");
        assert!(decode(&dict, limits(5, usize::MAX)).is_ok());
        assert_eq!(
            decode(&dict, limits(4, usize::MAX)),
            Err(DecodeError::TooManyValues { limit: 4 })
        );
        // strings, text and big ints count by their length
        for (input, len) in [
            (&b"3:abc"[..], 3),
            (b"u3:abc", 3),
            (b"i12345678901234567890e", 20),
        ] {
            let input = Bytes::copy_from_slice(input);
            assert!(decode(&input, limits(1, VALUE_COST + len)).is_ok());
            assert_eq!(
                decode(&input, limits(1, VALUE_COST + len - 1)),
                Err(DecodeError::TooManyBytes {
                    limit: VALUE_COST + len - 1
                })
            );
        }
    }

    #[test]
    fn every_code_is_handled() {
        for code in 0..=255u8 {
            for tail in [&b""[..], b"e", b"0:", b"i1e", &[b'9'; 20]] {
                let mut input = vec![code];
                input.extend_from_slice(tail);
                let _ = dec(&input);
            }
        }
    }

    // -----------------------------------------------------------------------
    // properties

    fn big_int_text() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            1u8..=9,
            proptest::collection::vec(0u8..=9, 19..62),
        )
            .prop_filter_map("outside i64", |(neg, first, rest)| {
                let mut s = String::new();
                if neg {
                    s.push('-');
                }
                s.push(char::from(b'0' + first));
                s.extend(rest.iter().map(|d| char::from(b'0' + d)));
                (s.len() <= MAX_INT_LEN && s.parse::<i64>().is_err()).then_some(s)
            })
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (-100i64..100).prop_map(Value::Int),
            big_int_text().prop_map(Value::BigInt),
            any::<bool>().prop_map(Value::Bool),
            ".{0,80}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..100)
                .prop_map(|v| Value::Bytes(Bytes::from(v))),
        ]
    }

    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec((".{0,8}", inner), 0..6).prop_map(|pairs| {
                    Value::Dict(pairs.into_iter().map(|(k, v)| (Value::Str(k), v)).collect())
                }),
            ]
        })
    }

    /// What a round trip gives back: strings as bytes, booleans as integers.
    fn expected(v: &Value) -> Value {
        match v {
            Value::Bool(b) => Value::Int(i64::from(*b)),
            Value::List(l) => Value::List(l.iter().map(expected).collect()),
            Value::Dict(d) => {
                Value::Dict(d.iter().map(|(k, v)| (expected(k), expected(v))).collect())
            }
            other => other.strings_as_bytes(),
        }
    }

    proptest! {
        #[test]
        fn round_trip(v in tree()) {
            let wire = enc(&v);
            prop_assert_eq!(dec(&wire).unwrap(), expected(&v));
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&Bytes::from(data), DecodeLimits::default());
        }

        #[test]
        fn mutated_encodings_never_panic(
            v in tree(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut wire = enc(&v);
            for (idx, byte) in &flips {
                let i = idx.index(wire.len());
                wire[i] = *byte;
            }
            let _ = decode(&Bytes::from(wire), DecodeLimits::default());
        }
    }
}
