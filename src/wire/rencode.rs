//! rencodeplus (modern xpra) and legacy rencode (xpra 3.1, python3-rencode).
//!
//! Both share one type-code table:
//!
//! | codes      | meaning                                             |
//! |------------|-----------------------------------------------------|
//! | 0..=43     | the integer itself                                  |
//! | 44         | float64, 8 bytes big-endian                         |
//! | 48..=57    | `len:` text, or (rencodeplus only) `len/` bytes     |
//! | 59         | list: items, then 127                               |
//! | 60         | dict: key/value pairs, then 127                     |
//! | 61         | big integer: ASCII decimal (at most 63), then 127   |
//! | 62..=65    | i8, i16, i32, i64, big-endian                       |
//! | 66         | float32, 4 bytes big-endian                         |
//! | 67, 68, 69 | true, false, none                                   |
//! | 70..=101   | -1 ..= -32                                          |
//! | 102..=126  | dict of 0..=24 pairs                                |
//! | 128..=191  | string of 0..=63 bytes                              |
//! | 192..=255  | list of 0..=63 items                                |
//!
//! rencodeplus tells text from bytes: fixed strings and `len:` are UTF-8 text,
//! `len/` is a byte string. Legacy rencode has only the text forms and cannot
//! tell the two apart, so its decoder hands back [`Value::Bytes`] for every
//! string.
//!
//! Decoders take a [`Bytes`] and return byte strings as slices of it. They
//! check every length against the input left before slicing, charge every
//! value and length against the [`DecodeLimits`] budget before building it
//! (values, bytes, nesting depth), and insist that the value spans the whole
//! input (the Python decoders silently ignore trailing bytes; xfwd does not).

use bytes::Bytes;

use super::value::{
    is_canonical_bigint, Budget, DecodeError, DecodeLimits, EncodeError, Value, MAX_ENCODE_DEPTH,
};

const CHR_FLOAT64: u8 = 44;
const CHR_LIST: u8 = 59;
const CHR_DICT: u8 = 60;
const CHR_INT: u8 = 61;
const CHR_INT1: u8 = 62;
const CHR_INT2: u8 = 63;
const CHR_INT4: u8 = 64;
const CHR_INT8: u8 = 65;
const CHR_FLOAT32: u8 = 66;
const CHR_TRUE: u8 = 67;
const CHR_FALSE: u8 = 68;
const CHR_NONE: u8 = 69;
const CHR_TERM: u8 = 127;

const INT_POS_FIXED_COUNT: i64 = 44;
const INT_NEG_FIXED_START: u8 = 70;
const INT_NEG_FIXED_COUNT: i64 = 32;
const DICT_FIXED_START: u8 = 102;
const DICT_FIXED_COUNT: usize = 25;
const STR_FIXED_START: u8 = 128;
const STR_FIXED_COUNT: usize = 64;
const LIST_FIXED_START: u8 = 192;
const LIST_FIXED_COUNT: usize = 64;

/// Longest big integer text (sign included) either side writes.
const MAX_BIGINT_LEN: usize = 63;
/// Most decimal digits a string length prefix may have.
const MAX_LEN_DIGITS: usize = 10;

/// Encodes `v` as rencodeplus, appending to `out`.
///
/// On error `out` is left as it was.
pub fn encode_plus(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_with::<true>(v, out)
}

/// Decodes one rencodeplus value that spans all of `input`.
pub fn decode_plus(input: &Bytes, limits: DecodeLimits) -> Result<Value, DecodeError> {
    decode_with::<true>(input, limits)
}

/// Encodes `v` as legacy rencode, appending to `out`.
///
/// Text and bytes both become plain strings. A float goes out as float32 when
/// that loses nothing (python3-rencode's default width), as float64 otherwise.
/// On error `out` is left as it was.
pub fn encode_legacy(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_with::<false>(v, out)
}

/// Decodes one legacy rencode value that spans all of `input`.
///
/// Every string comes back as [`Value::Bytes`].
pub fn decode_legacy(input: &Bytes, limits: DecodeLimits) -> Result<Value, DecodeError> {
    decode_with::<false>(input, limits)
}

// ---------------------------------------------------------------------------
// Encoding

fn encode_with<const PLUS: bool>(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_value::<PLUS>(v, out, 0);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_value<const PLUS: bool>(
    v: &Value,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), EncodeError> {
    match v {
        Value::Int(i) => encode_int(*i, out),
        Value::BigInt(s) => {
            if !is_canonical_bigint(s, MAX_BIGINT_LEN) {
                return Err(EncodeError::BadBigInt(s.clone()));
            }
            // A value that fits i64 takes its smallest form, as Python writes
            // it (the Cython decoders cannot even read short big numbers).
            match s.parse::<i64>() {
                Ok(i) => encode_int(i, out),
                Err(_) => {
                    out.reserve(s.len() + 2);
                    out.push(CHR_INT);
                    out.extend_from_slice(s.as_bytes());
                    out.push(CHR_TERM);
                }
            }
        }
        Value::Float(f) => encode_float::<PLUS>(*f, out),
        Value::Bool(b) => out.push(if *b { CHR_TRUE } else { CHR_FALSE }),
        Value::None => out.push(CHR_NONE),
        Value::Str(s) => encode_text(s.as_bytes(), out),
        Value::Bytes(b) => {
            if PLUS {
                push_decimal(b.len(), out);
                out.push(b'/');
                out.extend_from_slice(b);
            } else {
                encode_text(b, out);
            }
        }
        Value::List(items) => {
            let depth = enter_encode(depth)?;
            if items.len() < LIST_FIXED_COUNT {
                out.push(LIST_FIXED_START + items.len() as u8);
                for item in items {
                    encode_value::<PLUS>(item, out, depth)?;
                }
            } else {
                out.push(CHR_LIST);
                for item in items {
                    encode_value::<PLUS>(item, out, depth)?;
                }
                out.push(CHR_TERM);
            }
        }
        Value::Dict(pairs) => {
            let depth = enter_encode(depth)?;
            let fixed = pairs.len() < DICT_FIXED_COUNT;
            out.push(if fixed {
                DICT_FIXED_START + pairs.len() as u8
            } else {
                CHR_DICT
            });
            for (k, v) in pairs {
                encode_value::<PLUS>(k, out, depth)?;
                encode_value::<PLUS>(v, out, depth)?;
            }
            if !fixed {
                out.push(CHR_TERM);
            }
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

/// The smallest form, as both Python encoders choose it.
fn encode_int(i: i64, out: &mut Vec<u8>) {
    if (0..INT_POS_FIXED_COUNT).contains(&i) {
        out.push(i as u8);
    } else if (-INT_NEG_FIXED_COUNT..0).contains(&i) {
        // -1 => 70, -32 => 101
        out.push(INT_NEG_FIXED_START + (-1 - i) as u8);
    } else if let Ok(b) = i8::try_from(i) {
        out.push(CHR_INT1);
        out.extend_from_slice(&b.to_be_bytes());
    } else if let Ok(s) = i16::try_from(i) {
        out.push(CHR_INT2);
        out.extend_from_slice(&s.to_be_bytes());
    } else if let Ok(w) = i32::try_from(i) {
        out.push(CHR_INT4);
        out.extend_from_slice(&w.to_be_bytes());
    } else {
        out.push(CHR_INT8);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn encode_float<const PLUS: bool>(f: f64, out: &mut Vec<u8>) {
    // rencodeplus always writes float64. Legacy peers default to float32; use
    // it whenever the value survives the trip (NaN and the infinities do).
    let narrow = f as f32;
    if !PLUS && (f.is_nan() || f64::from(narrow) == f) {
        out.push(CHR_FLOAT32);
        out.extend_from_slice(&narrow.to_be_bytes());
    } else {
        out.push(CHR_FLOAT64);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

fn encode_text(b: &[u8], out: &mut Vec<u8>) {
    if b.len() < STR_FIXED_COUNT {
        out.push(STR_FIXED_START + b.len() as u8);
    } else {
        push_decimal(b.len(), out);
        out.push(b':');
    }
    out.extend_from_slice(b);
}

/// Appends the decimal digits of `n`.
fn push_decimal(mut n: usize, out: &mut Vec<u8>) {
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

fn decode_with<const PLUS: bool>(
    input: &Bytes,
    limits: DecodeLimits,
) -> Result<Value, DecodeError> {
    if input.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut d = Decoder::<PLUS> {
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

struct Decoder<'a, const PLUS: bool> {
    input: &'a Bytes,
    buf: &'a [u8],
    pos: usize,
    budget: Budget,
}

impl<'a, const PLUS: bool> Decoder<'a, PLUS> {
    fn truncated(&self, what: &'static str) -> DecodeError {
        DecodeError::Truncated {
            at: self.buf.len(),
            what,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `N` bytes, consumed.
    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let buf = self.buf;
        let end = self.pos.saturating_add(N);
        let bytes = buf
            .get(self.pos..end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or_else(|| self.truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    /// Range of the next `len` bytes, consumed; checked before anything else.
    fn take_range(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<std::ops::Range<usize>, DecodeError> {
        if len > self.remaining() {
            return Err(self.truncated(what));
        }
        let start = self.pos;
        self.pos = start + len;
        Ok(start..self.pos)
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
        self.pos = at + 1;
        self.budget.value()?;
        match code {
            0..=43 => Ok(Value::Int(i64::from(code))),
            CHR_FLOAT64 => {
                let b = self.take_array::<8>("float64")?;
                Ok(Value::Float(f64::from_be_bytes(b)))
            }
            b'0'..=b'9' => self.long_string(at),
            CHR_LIST => self.open_list(depth),
            CHR_DICT => self.open_dict(depth),
            CHR_INT => self.big_int(at),
            CHR_INT1 => {
                let b = self.take_array::<1>("int1")?;
                Ok(Value::Int(i64::from(i8::from_be_bytes(b))))
            }
            CHR_INT2 => {
                let b = self.take_array::<2>("int2")?;
                Ok(Value::Int(i64::from(i16::from_be_bytes(b))))
            }
            CHR_INT4 => {
                let b = self.take_array::<4>("int4")?;
                Ok(Value::Int(i64::from(i32::from_be_bytes(b))))
            }
            CHR_INT8 => {
                let b = self.take_array::<8>("int8")?;
                Ok(Value::Int(i64::from_be_bytes(b)))
            }
            CHR_FLOAT32 => {
                let b = self.take_array::<4>("float32")?;
                Ok(Value::Float(f64::from(f32::from_be_bytes(b))))
            }
            CHR_TRUE => Ok(Value::Bool(true)),
            CHR_FALSE => Ok(Value::Bool(false)),
            CHR_NONE => Ok(Value::None),
            70..=101 => Ok(Value::Int(-(i64::from(code - INT_NEG_FIXED_START) + 1))),
            102..=126 => self.fixed_dict(usize::from(code - DICT_FIXED_START), depth),
            128..=191 => {
                let len = usize::from(code - STR_FIXED_START);
                let range = self.take_range(len, "string")?;
                self.text_or_bytes(range, at)
            }
            192..=255 => self.fixed_list(usize::from(code - LIST_FIXED_START), depth),
            _ => Err(DecodeError::UnknownTypeCode { code, at }),
        }
    }

    /// A string in text form: `Str` for rencodeplus, `Bytes` for legacy.
    fn text_or_bytes(
        &mut self,
        range: std::ops::Range<usize>,
        at: usize,
    ) -> Result<Value, DecodeError> {
        self.budget.bytes(range.len())?;
        if PLUS {
            let raw = self.buf.get(range).unwrap_or_default();
            let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { at })?;
            Ok(Value::Str(s.to_owned()))
        } else {
            Ok(Value::Bytes(self.input.slice(range)))
        }
    }

    /// `len:` + text, or `len/` + bytes (rencodeplus only); `at` is the first
    /// digit.
    fn long_string(&mut self, at: usize) -> Result<Value, DecodeError> {
        let buf = self.buf;
        // ten digits fit u64 whatever the width of usize
        let mut len: u64 = 0;
        let mut i = at;
        let binary = loop {
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
                b':' => break false,
                b'/' if PLUS => break true,
                _ => return Err(DecodeError::BadLength { at }),
            }
            i += 1;
        };
        self.pos = i + 1;
        let len = usize::try_from(len).map_err(|_| self.truncated("string"))?;
        let range = self.take_range(len, "string")?;
        if binary {
            self.budget.bytes(range.len())?;
            Ok(Value::Bytes(self.input.slice(range)))
        } else {
            self.text_or_bytes(range, at)
        }
    }

    /// `=` digits 127; `at` is the type code.
    fn big_int(&mut self, at: usize) -> Result<Value, DecodeError> {
        let buf = self.buf;
        let start = self.pos;
        let window_end = buf.len().min(start + MAX_BIGINT_LEN + 1);
        let window = buf.get(start..window_end).unwrap_or_default();
        let Some(n) = window.iter().position(|&b| b == CHR_TERM) else {
            return Err(if window.len() > MAX_BIGINT_LEN {
                DecodeError::BadNumber { at }
            } else {
                self.truncated("big int")
            });
        };
        self.pos = start + n + 1;
        let text = window.get(..n).unwrap_or_default();
        parse_int_text(text, at, &mut self.budget)
    }

    fn fixed_list(&mut self, count: usize, depth: usize) -> Result<Value, DecodeError> {
        let depth = self.enter(depth)?;
        // Every item takes at least one byte and one value of the budget.
        let cap = count
            .min(self.remaining())
            .min(self.budget.values_affordable());
        let mut items = Vec::with_capacity(cap);
        for _ in 0..count {
            items.push(self.value(depth)?);
        }
        Ok(Value::List(items))
    }

    fn open_list(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let depth = self.enter(depth)?;
        // Open lists hold 64 items or more when Python writes them.
        let cap = LIST_FIXED_COUNT
            .min(self.remaining())
            .min(self.budget.values_affordable());
        let mut items = Vec::with_capacity(cap);
        loop {
            match self.buf.get(self.pos) {
                None => return Err(self.truncated("list")),
                Some(&CHR_TERM) => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                Some(_) => items.push(self.value(depth)?),
            }
        }
    }

    fn fixed_dict(&mut self, count: usize, depth: usize) -> Result<Value, DecodeError> {
        let depth = self.enter(depth)?;
        // Every pair takes at least two bytes and two values of the budget.
        let cap = count
            .min(self.remaining() / 2)
            .min(self.budget.values_affordable() / 2);
        let mut pairs = Vec::with_capacity(cap);
        for _ in 0..count {
            let k = self.value(depth)?;
            let v = self.value(depth)?;
            pairs.push((k, v));
        }
        Ok(Value::Dict(pairs))
    }

    fn open_dict(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let depth = self.enter(depth)?;
        let cap = DICT_FIXED_COUNT
            .min(self.remaining() / 2)
            .min(self.budget.values_affordable() / 2);
        let mut pairs = Vec::with_capacity(cap);
        loop {
            match self.buf.get(self.pos) {
                None => return Err(self.truncated("dict")),
                Some(&CHR_TERM) => {
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
}

/// Canonical decimal text to `Int` when it fits, else `BigInt` (its text
/// charged to `budget`).
fn parse_int_text(text: &[u8], at: usize, budget: &mut Budget) -> Result<Value, DecodeError> {
    let s = std::str::from_utf8(text).map_err(|_| DecodeError::BadNumber { at })?;
    if !is_canonical_bigint(s, MAX_BIGINT_LEN) {
        return Err(DecodeError::BadNumber { at });
    }
    Ok(match s.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => {
            budget.bytes(s.len())?;
            Value::BigInt(s.to_owned())
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc_plus(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_plus(v, &mut out).unwrap();
        out
    }

    fn enc_legacy(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_legacy(v, &mut out).unwrap();
        out
    }

    fn dec_plus(b: &[u8]) -> Result<Value, DecodeError> {
        decode_plus(&Bytes::copy_from_slice(b), DecodeLimits::default())
    }

    fn dec_legacy(b: &[u8]) -> Result<Value, DecodeError> {
        decode_legacy(&Bytes::copy_from_slice(b), DecodeLimits::default())
    }

    /// Encodes with both, checks the exact bytes, decodes back.
    fn check_both(v: Value, expected: &[u8]) {
        assert_eq!(enc_plus(&v), expected, "plus encoding of {v:?}");
        assert_eq!(dec_plus(expected).unwrap(), v, "plus decoding of {v:?}");
        assert_eq!(enc_legacy(&v), expected, "legacy encoding of {v:?}");
        assert_eq!(
            dec_legacy(expected).unwrap(),
            v.strings_as_bytes(),
            "legacy decoding of {v:?}"
        );
    }

    fn s(text: &str) -> Value {
        Value::Str(text.to_owned())
    }

    fn b(raw: &[u8]) -> Value {
        Value::Bytes(Bytes::copy_from_slice(raw))
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn fixed_positive_ints() {
        for i in 0..=43u8 {
            check_both(Value::Int(i64::from(i)), &[i]);
        }
        // 44 no longer fits a fixed code
        check_both(Value::Int(44), &[CHR_INT1, 44]);
    }

    #[test]
    fn fixed_negative_ints() {
        check_both(Value::Int(-1), &[70]);
        for code in 70..=101u8 {
            check_both(Value::Int(-(i64::from(code) - 69)), &[code]);
        }
        check_both(Value::Int(-32), &[101]);
        check_both(Value::Int(-33), &[CHR_INT1, 0xdf]);
    }

    #[test]
    fn int1_edges() {
        check_both(Value::Int(127), &[CHR_INT1, 0x7f]);
        check_both(Value::Int(-128), &[CHR_INT1, 0x80]);
        check_both(Value::Int(128), &[CHR_INT2, 0x00, 0x80]);
        check_both(Value::Int(-129), &[CHR_INT2, 0xff, 0x7f]);
        // decoders accept non-minimal forms too
        assert_eq!(dec_plus(&[CHR_INT1, 5]).unwrap(), Value::Int(5));
    }

    #[test]
    fn int2_edges() {
        check_both(Value::Int(32767), &[CHR_INT2, 0x7f, 0xff]);
        check_both(Value::Int(-32768), &[CHR_INT2, 0x80, 0x00]);
        check_both(Value::Int(32768), &[CHR_INT4, 0, 0, 0x80, 0]);
        check_both(Value::Int(-32769), &[CHR_INT4, 0xff, 0xff, 0x7f, 0xff]);
    }

    #[test]
    fn int4_edges() {
        check_both(
            Value::Int(i64::from(i32::MAX)),
            &[CHR_INT4, 0x7f, 0xff, 0xff, 0xff],
        );
        check_both(Value::Int(i64::from(i32::MIN)), &[CHR_INT4, 0x80, 0, 0, 0]);
        check_both(Value::Int(1 << 31), &[CHR_INT8, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        check_both(
            Value::Int(-(1 << 31) - 1),
            &[CHR_INT8, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        );
    }

    #[test]
    fn int8_edges() {
        check_both(
            Value::Int(i64::MAX),
            &[CHR_INT8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        );
        check_both(Value::Int(i64::MIN), &[CHR_INT8, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn big_ints() {
        check_both(
            Value::BigInt("9223372036854775808".into()),
            b"=9223372036854775808\x7f",
        );
        check_both(
            Value::BigInt("-9223372036854775809".into()),
            b"=-9223372036854775809\x7f",
        );
        let longest = format!("1{}", "0".repeat(62));
        check_both(
            Value::BigInt(longest.clone()),
            &cat(&[b"=", longest.as_bytes(), b"\x7f"]),
        );
        // big-number text that fits i64 decodes to Int ...
        assert_eq!(dec_plus(b"=12\x7f").unwrap(), Value::Int(12));
        assert_eq!(
            dec_legacy(b"=-9223372036854775808\x7f").unwrap(),
            Value::Int(i64::MIN)
        );
        // ... and a BigInt that fits i64 encodes in its smallest form
        assert_eq!(enc_plus(&Value::BigInt("5".into())), [5]);
        assert_eq!(
            enc_legacy(&Value::BigInt("-300".into())),
            [CHR_INT2, 0xfe, 0xd4]
        );
    }

    #[test]
    fn big_int_errors() {
        for bad in [
            &b"=\x7f"[..],
            b"=-\x7f",
            b"=-0\x7f",
            b"=007\x7f",
            b"=+5\x7f",
            b"= 5\x7f",
            b"=1a\x7f",
            b"=99999999999999999999.5\x7f",
        ] {
            assert_eq!(
                dec_plus(bad),
                Err(DecodeError::BadNumber { at: 0 }),
                "{bad:?}"
            );
            assert_eq!(
                dec_legacy(bad),
                Err(DecodeError::BadNumber { at: 0 }),
                "{bad:?}"
            );
        }
        let too_long = cat(&[b"=", "1".repeat(64).as_bytes(), b"\x7f"]);
        assert_eq!(dec_plus(&too_long), Err(DecodeError::BadNumber { at: 0 }));
        let unterminated = cat(&[b"=", "1".repeat(100).as_bytes()]);
        assert_eq!(
            dec_plus(&unterminated),
            Err(DecodeError::BadNumber { at: 0 })
        );
        assert!(matches!(
            dec_plus(b"=123"),
            Err(DecodeError::Truncated { .. })
        ));
        for bad in ["", "-", "-0", "01", "1e5", &"1".repeat(64)] {
            let mut out = vec![9];
            assert_eq!(
                encode_plus(&Value::BigInt(bad.into()), &mut out),
                Err(EncodeError::BadBigInt(bad.into()))
            );
            assert_eq!(out, [9], "output untouched on error");
            assert_eq!(
                encode_legacy(&Value::BigInt(bad.into()), &mut out),
                Err(EncodeError::BadBigInt(bad.into()))
            );
        }
    }

    #[test]
    fn floats() {
        // plus: always float64
        assert_eq!(
            enc_plus(&Value::Float(1.5)),
            [CHR_FLOAT64, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            enc_plus(&Value::Float(0.1)),
            cat(&[&[CHR_FLOAT64], &0.1f64.to_be_bytes()])
        );
        // legacy: float32 when exact, else float64
        assert_eq!(
            enc_legacy(&Value::Float(1.5)),
            [CHR_FLOAT32, 0x3f, 0xc0, 0, 0]
        );
        assert_eq!(
            enc_legacy(&Value::Float(0.1)),
            cat(&[&[CHR_FLOAT64], &0.1f64.to_be_bytes()])
        );
        assert_eq!(
            enc_legacy(&Value::Float(f64::INFINITY)),
            [CHR_FLOAT32, 0x7f, 0x80, 0, 0]
        );
        assert_eq!(enc_legacy(&Value::Float(f64::NAN))[0], CHR_FLOAT32);
        // both decoders read both widths
        for dec in [dec_plus, dec_legacy] {
            assert_eq!(
                dec(&[CHR_FLOAT32, 0x3f, 0xc0, 0, 0]).unwrap(),
                Value::Float(1.5)
            );
            assert_eq!(
                dec(&cat(&[&[CHR_FLOAT32], &0.1f32.to_be_bytes()])).unwrap(),
                Value::Float(f64::from(0.1f32))
            );
            assert_eq!(
                dec(&cat(&[&[CHR_FLOAT64], &(-2.25f64).to_be_bytes()])).unwrap(),
                Value::Float(-2.25)
            );
            match dec(&[CHR_FLOAT64, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]).unwrap() {
                Value::Float(f) => assert!(f.is_nan()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bool_none() {
        check_both(Value::Bool(true), &[67]);
        check_both(Value::Bool(false), &[68]);
        check_both(Value::None, &[69]);
    }

    #[test]
    fn fixed_strings() {
        check_both(s(""), &[128]);
        check_both(s("a"), b"\x81a");
        check_both(s("\u{e9}"), b"\x82\xc3\xa9");
        let s63 = "x".repeat(63);
        check_both(s(&s63), &cat(&[&[191], s63.as_bytes()]));
        for len in 0..64usize {
            let text = "y".repeat(len);
            let enc = enc_plus(&s(&text));
            assert_eq!(enc.first(), Some(&(128 + len as u8)));
            assert_eq!(dec_plus(&enc).unwrap(), s(&text));
        }
    }

    #[test]
    fn long_strings() {
        let s64 = "x".repeat(64);
        check_both(s(&s64), &cat(&[b"64:", s64.as_bytes()]));
        let s1000 = "\u{263a}".repeat(1000);
        check_both(s(&s1000), &cat(&[b"3000:", s1000.as_bytes()]));
        // "0:" and short "len:" forms decode even though encoders never use them
        assert_eq!(dec_plus(b"0:").unwrap(), s(""));
        assert_eq!(dec_plus(b"3:abc").unwrap(), s("abc"));
        assert_eq!(dec_legacy(b"3:abc").unwrap(), b(b"abc"));
    }

    #[test]
    fn byte_strings_plus() {
        // plus writes bytes always as len/..., even short ones
        assert_eq!(enc_plus(&b(b"")), b"0/");
        assert_eq!(enc_plus(&b(b"\xff\x00")), b"2/\xff\x00");
        let big = vec![0xabu8; 64];
        assert_eq!(enc_plus(&b(&big)), cat(&[b"64/", &big]));
        assert_eq!(dec_plus(b"0/").unwrap(), b(b""));
        assert_eq!(dec_plus(b"2/\xff\x00").unwrap(), b(b"\xff\x00"));
        assert_eq!(dec_plus(&cat(&[b"64/", &big])).unwrap(), b(&big));
        // legacy writes bytes as text strings and rejects '/'
        assert_eq!(enc_legacy(&b(b"\xff\x00")), b"\x82\xff\x00");
        assert_eq!(enc_legacy(&b(&big)), cat(&[b"64:", &big]));
        assert_eq!(dec_legacy(b"2/ab"), Err(DecodeError::BadLength { at: 0 }));
        assert_eq!(dec_legacy(b"\x82\xff\x00").unwrap(), b(b"\xff\x00"));
    }

    #[test]
    fn plus_text_must_be_utf8() {
        assert_eq!(
            dec_plus(b"\x82\xff\xfe"),
            Err(DecodeError::InvalidUtf8 { at: 0 })
        );
        assert_eq!(
            dec_plus(b"\xc1\x81\xff"),
            Err(DecodeError::InvalidUtf8 { at: 1 })
        );
        assert_eq!(dec_plus(b"1:\xff"), Err(DecodeError::InvalidUtf8 { at: 0 }));
        assert_eq!(dec_plus(b"1/\xff").unwrap(), b(b"\xff"));
    }

    #[test]
    fn decoded_bytes_are_slices_of_input() {
        let input = Bytes::from(cat(&[b"\xc2", b"3/abc", b"\x83xyz"]));
        let v = decode_plus(&input, DecodeLimits::default()).unwrap();
        let Value::List(items) = &v else { panic!() };
        let Value::Bytes(got) = &items[0] else {
            panic!()
        };
        assert_eq!(got.as_ptr(), input[3..].as_ptr());
        let v = decode_legacy(&input.slice(6..), DecodeLimits::default()).unwrap();
        let Value::Bytes(got) = &v else { panic!() };
        assert_eq!(got.as_ptr(), input[7..].as_ptr());
    }

    #[test]
    fn length_prefix_errors() {
        for dec in [dec_plus, dec_legacy] {
            assert_eq!(dec(b"03:abc"), Err(DecodeError::BadLength { at: 0 }));
            assert_eq!(dec(b"00:"), Err(DecodeError::BadLength { at: 0 }));
            assert_eq!(dec(b"3x:abc"), Err(DecodeError::BadLength { at: 0 }));
            assert_eq!(dec(b"3-abc"), Err(DecodeError::BadLength { at: 0 }));
            // eleven digits
            assert_eq!(dec(b"12345678901:a"), Err(DecodeError::BadLength { at: 0 }));
            let many = cat(&[&[b'9'; 1000], b":"]);
            assert_eq!(dec(&many), Err(DecodeError::BadLength { at: 0 }));
            // ten digits are fine as digits but far beyond the input
            assert!(matches!(
                dec(b"9999999999:abc"),
                Err(DecodeError::Truncated { .. })
            ));
            assert!(matches!(dec(b"5:abc"), Err(DecodeError::Truncated { .. })));
            assert!(matches!(dec(b"123"), Err(DecodeError::Truncated { .. })));
        }
        assert!(matches!(
            dec_plus(b"4/abc"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn fixed_dicts() {
        check_both(Value::Dict(vec![]), &[102]);
        check_both(Value::Dict(vec![(s("a"), Value::Int(1))]), b"\x67\x81a\x01");
        for n in [1usize, 24] {
            let pairs: Vec<_> = (0..n)
                .map(|i| (Value::Int(i as i64), Value::None))
                .collect();
            let mut expected = vec![102 + n as u8];
            for i in 0..n {
                expected.extend([i as u8, 69]);
            }
            check_both(Value::Dict(pairs), &expected);
        }
        // non-string keys are fine
        check_both(
            Value::Dict(vec![(Value::List(vec![Value::Int(1)]), Value::Bool(true))]),
            b"\x67\xc1\x01\x43",
        );
    }

    #[test]
    fn open_dicts() {
        let pairs: Vec<_> = (0..25).map(|i| (Value::Int(i), Value::Int(-1))).collect();
        let mut expected = vec![CHR_DICT];
        for i in 0..25u8 {
            expected.extend([i, 70]);
        }
        expected.push(CHR_TERM);
        check_both(Value::Dict(pairs), &expected);
        // short open dicts decode too
        assert_eq!(dec_plus(b"<\x7f").unwrap(), Value::Dict(vec![]));
        assert_eq!(
            dec_plus(b"<\x01\x02\x7f").unwrap(),
            Value::Dict(vec![(Value::Int(1), Value::Int(2))])
        );
        // the terminator is only allowed where a key would start
        assert_eq!(
            dec_plus(b"<\x01\x7f"),
            Err(DecodeError::UnknownTypeCode { code: 127, at: 2 })
        );
    }

    #[test]
    fn fixed_lists() {
        check_both(Value::List(vec![]), &[192]);
        check_both(
            Value::List(vec![Value::Int(1), Value::List(vec![Value::Int(2)])]),
            b"\xc2\x01\xc1\x02",
        );
        let items: Vec<_> = (0..63).map(|_| Value::Int(7)).collect();
        let mut expected = vec![255];
        expected.extend([7u8; 63]);
        check_both(Value::List(items), &expected);
    }

    #[test]
    fn open_lists() {
        let items: Vec<_> = (0..64).map(|_| Value::Int(7)).collect();
        let mut expected = vec![CHR_LIST];
        expected.extend([7u8; 64]);
        expected.push(CHR_TERM);
        check_both(Value::List(items), &expected);
        assert_eq!(dec_plus(b";\x7f").unwrap(), Value::List(vec![]));
        assert_eq!(
            dec_legacy(b";\x01\x02\x7f").unwrap(),
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
    }

    #[test]
    fn unknown_codes() {
        for code in [45u8, 46, 47, 58, 127] {
            assert_eq!(
                dec_plus(&[code]),
                Err(DecodeError::UnknownTypeCode { code, at: 0 })
            );
            assert_eq!(
                dec_legacy(&[code]),
                Err(DecodeError::UnknownTypeCode { code, at: 0 })
            );
        }
        assert_eq!(
            dec_plus(&[0xc1, 46]),
            Err(DecodeError::UnknownTypeCode { code: 46, at: 1 })
        );
    }

    #[test]
    fn every_code_is_handled() {
        // No byte value may panic, alone or followed by junk.
        for code in 0..=255u8 {
            for tail in [&b""[..], b"\x00", b"\x7f\x7f", &[0xff; 20]] {
                let input = cat(&[&[code], tail]);
                let _ = dec_plus(&input);
                let _ = dec_legacy(&input);
            }
        }
    }

    #[test]
    fn empty_and_trailing() {
        assert_eq!(dec_plus(b""), Err(DecodeError::Empty));
        assert_eq!(dec_legacy(b""), Err(DecodeError::Empty));
        assert_eq!(
            dec_plus(b"\x83abcd"),
            Err(DecodeError::TrailingBytes { at: 4, count: 1 })
        );
        assert_eq!(
            dec_legacy(b"\x01\x02\x03"),
            Err(DecodeError::TrailingBytes { at: 1, count: 2 })
        );
    }

    fn sample() -> Value {
        Value::List(vec![
            s("hello"),
            Value::Dict(vec![
                (s("version"), s("6.5")),
                (
                    s("big"),
                    Value::BigInt("123456789012345678901234567890".into()),
                ),
                (s("neg"), Value::Int(-40000)),
                (s("i8"), Value::Int(i64::MIN)),
                (s("f"), Value::Float(0.25)),
                (s("t"), Value::Bool(true)),
                (s("n"), Value::None),
                (s("long"), s(&"z".repeat(70))),
                (s("l"), Value::List((0..70).map(Value::Int).collect())),
            ]),
            b(b"\x00\x01\x02"),
            b(&[0x55; 100]),
        ])
    }

    #[test]
    fn every_prefix_is_an_error() {
        let v = sample();
        for (enc, dec) in [
            (
                enc_plus(&v),
                dec_plus as fn(&[u8]) -> Result<Value, DecodeError>,
            ),
            (enc_legacy(&v), dec_legacy),
        ] {
            assert!(dec(&enc).is_ok());
            for cut in 0..enc.len() {
                let err = dec(&enc[..cut]).unwrap_err();
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
    }

    fn nested(depth: usize, fixed: bool) -> Vec<u8> {
        let mut enc = Vec::new();
        for _ in 0..depth {
            enc.push(if fixed { 0xc1 } else { CHR_LIST });
        }
        enc.push(0);
        if !fixed {
            enc.extend(std::iter::repeat_n(CHR_TERM, depth));
        }
        enc
    }

    #[test]
    fn depth_limit() {
        let limits = DecodeLimits {
            max_depth: 10,
            ..DecodeLimits::default()
        };
        for fixed in [true, false] {
            let ok = Bytes::from(nested(10, fixed));
            assert!(decode_plus(&ok, limits).is_ok());
            assert!(decode_legacy(&ok, limits).is_ok());
            let deep = Bytes::from(nested(11, fixed));
            assert_eq!(
                decode_plus(&deep, limits),
                Err(DecodeError::TooDeep { limit: 10 })
            );
            assert_eq!(
                decode_legacy(&deep, limits),
                Err(DecodeError::TooDeep { limit: 10 })
            );
        }
        // dicts count too
        let d = Bytes::from_static(b"g\x00g\x00\x00");
        assert!(decode_plus(
            &d,
            DecodeLimits {
                max_depth: 2,
                ..DecodeLimits::default()
            }
        )
        .is_ok());
        assert_eq!(
            decode_plus(
                &d,
                DecodeLimits {
                    max_depth: 1,
                    ..DecodeLimits::default()
                }
            ),
            Err(DecodeError::TooDeep { limit: 1 })
        );
        // hostile nesting a million deep fails cleanly under the default limit
        let hostile = Bytes::from(vec![0xc1u8; 1_000_000]);
        assert_eq!(
            decode_plus(&hostile, DecodeLimits::default()),
            Err(DecodeError::TooDeep { limit: 64 })
        );
        let hostile = Bytes::from(vec![CHR_LIST; 1_000_000]);
        assert_eq!(
            decode_legacy(&hostile, DecodeLimits::default()),
            Err(DecodeError::TooDeep { limit: 64 })
        );
    }

    #[test]
    fn budget_limits() {
        use crate::wire::value::VALUE_COST;
        let limits = |max_values, max_bytes| DecodeLimits {
            max_values,
            max_bytes,
            ..DecodeLimits::default()
        };
        // an open list of ten small ints: eleven values
        let list = Bytes::from(cat(&[b";", &[1; 10], b"\x7f"]));
        // a fixed list of 63 items announced, three there
        let fixed = Bytes::from_static(b"\xff\x01\x02\x03");
        for dec in [decode_plus, decode_legacy] {
            assert!(dec(&list, limits(11, 11 * VALUE_COST)).is_ok());
            assert_eq!(
                dec(&list, limits(10, usize::MAX)),
                Err(DecodeError::TooManyValues { limit: 10 })
            );
            assert_eq!(
                dec(&list, limits(usize::MAX, 11 * VALUE_COST - 1)),
                Err(DecodeError::TooManyBytes {
                    limit: 11 * VALUE_COST - 1
                })
            );
            // strings, byte strings and big ints count by their length
            for (input, len) in [
                (&b"\x83abc"[..], 3),
                (b"3:abc", 3),
                (b"=12345678901234567890\x7f", 20),
            ] {
                let input = Bytes::copy_from_slice(input);
                assert!(dec(&input, limits(1, VALUE_COST + len)).is_ok());
                assert_eq!(
                    dec(&input, limits(1, VALUE_COST + len - 1)),
                    Err(DecodeError::TooManyBytes {
                        limit: VALUE_COST + len - 1
                    })
                );
            }
            // the budget runs out before the input does
            assert_eq!(
                dec(&fixed, limits(2, usize::MAX)),
                Err(DecodeError::TooManyValues { limit: 2 })
            );
            assert!(matches!(
                dec(&fixed, limits(64, usize::MAX)),
                Err(DecodeError::Truncated { .. })
            ));
        }
        let bytes = Bytes::from_static(b"3/abc");
        assert_eq!(
            decode_plus(&bytes, limits(1, VALUE_COST + 2)),
            Err(DecodeError::TooManyBytes {
                limit: VALUE_COST + 2
            })
        );
    }

    #[test]
    fn encode_depth_limit() {
        let mut v = Value::Int(0);
        for _ in 0..MAX_ENCODE_DEPTH {
            v = Value::List(vec![v]);
        }
        let mut out = Vec::new();
        encode_plus(&v, &mut out).unwrap();
        assert!(decode_plus(&Bytes::from(out), DecodeLimits::default()).is_ok());
        let v = Value::Dict(vec![(s("k"), v)]);
        let mut out = Vec::new();
        assert_eq!(
            encode_plus(&v, &mut out),
            Err(EncodeError::TooDeep {
                limit: MAX_ENCODE_DEPTH
            })
        );
        assert!(out.is_empty());
        assert_eq!(
            encode_legacy(&v, &mut out),
            Err(EncodeError::TooDeep {
                limit: MAX_ENCODE_DEPTH
            })
        );
    }

    #[test]
    fn huge_counts_do_not_preallocate() {
        // a fixed list of 63 items with one byte behind it
        assert!(matches!(
            dec_plus(&[255, 0]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            dec_plus(&[126]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn sample_round_trips() {
        let v = sample();
        assert_eq!(dec_plus(&enc_plus(&v)).unwrap(), v);
        assert_eq!(dec_legacy(&enc_legacy(&v)).unwrap(), v.strings_as_bytes());
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
                (s.len() <= MAX_BIGINT_LEN && s.parse::<i64>().is_err()).then_some(s)
            })
    }

    fn int_value() -> impl Strategy<Value = i64> {
        prop_oneof![
            -40i64..50,
            -200i64..200,
            -70000i64..70000,
            any::<i32>().prop_map(i64::from),
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
        ]
    }

    fn leaf(float: BoxedStrategy<f64>) -> impl Strategy<Value = Value> {
        prop_oneof![
            int_value().prop_map(Value::Int),
            big_int_text().prop_map(Value::BigInt),
            float.prop_map(Value::Float),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::None),
            prop_oneof![".{0,10}", ".{60,70}", ".{0,200}"].prop_map(Value::Str),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..10),
                proptest::collection::vec(any::<u8>(), 60..300),
            ]
            .prop_map(|v| Value::Bytes(Bytes::from(v))),
        ]
    }

    fn tree(float: BoxedStrategy<f64>) -> impl Strategy<Value = Value> {
        let flat = leaf(float.clone()).boxed();
        leaf(float).prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                // long lists and dicts (open forms) hold leaves only, to keep
                // trees small
                proptest::collection::vec(flat.clone(), 60..70).prop_map(Value::List),
                proptest::collection::vec((".{0,8}", inner), 0..5).prop_map(str_dict),
                proptest::collection::vec((".{0,8}", flat.clone()), 23..27).prop_map(str_dict),
            ]
        })
    }

    fn str_dict(pairs: Vec<(String, Value)>) -> Value {
        Value::Dict(pairs.into_iter().map(|(k, v)| (Value::Str(k), v)).collect())
    }

    fn finite_f64() -> BoxedStrategy<f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(f64::from),
        ]
        .boxed()
    }

    fn finite_f32() -> BoxedStrategy<f64> {
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(f64::from)
            .boxed()
    }

    proptest! {
        #[test]
        fn plus_round_trip(v in tree(finite_f64())) {
            let enc = enc_plus(&v);
            prop_assert_eq!(dec_plus(&enc).unwrap(), v);
        }

        #[test]
        fn legacy_round_trip(v in tree(finite_f64())) {
            // f32-exact floats travel as float32, the rest as float64: none is
            // ever rounded
            let enc = enc_legacy(&v);
            prop_assert_eq!(dec_legacy(&enc).unwrap(), v.strings_as_bytes());
        }

        #[test]
        fn legacy_f32_round_trip(v in tree(finite_f32())) {
            let enc = enc_legacy(&v);
            prop_assert_eq!(dec_legacy(&enc).unwrap(), v.strings_as_bytes());
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let input = Bytes::from(data);
            let _ = decode_plus(&input, DecodeLimits::default());
            let _ = decode_legacy(&input, DecodeLimits::default());
        }

        #[test]
        fn mutated_encodings_never_panic(
            v in tree(finite_f64()),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            for mut enc in [enc_plus(&v), enc_legacy(&v)] {
                for (idx, byte) in &flips {
                    let i = idx.index(enc.len());
                    enc[i] = *byte;
                }
                let input = Bytes::from(enc);
                let _ = decode_plus(&input, DecodeLimits::default());
                let _ = decode_legacy(&input, DecodeLimits::default());
            }
        }
    }
}
