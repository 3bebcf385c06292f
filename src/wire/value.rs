//! The value model: everything an xpra packet can carry.
//!
//! One model serves the three encoders. Byte strings are `bytes::Bytes`, so a
//! decoder fed a `Bytes` hands back slices of its input instead of copies.
//! Dictionaries keep their key order (xpra's encoders write keys in insertion
//! order, and a proxy that re-encodes a hello should not shuffle it).

use bytes::Bytes;

/// One decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An integer that fits in 64 bits, signed.
    Int(i64),
    /// An integer outside `i64`, as its decimal text (an optional `-`, then
    /// digits, no leading zeros). Encoders write it in their big-number form.
    BigInt(String),
    /// A floating point number (legacy rencode sends 32-bit floats; they
    /// widen here without loss).
    Float(f64),
    Bool(bool),
    None,
    /// Text. Legacy rencode and bencode cannot tell text from bytes on the
    /// wire, so their decoders return [`Value::Bytes`] and callers use
    /// [`Value::as_str`], which accepts both.
    Str(String),
    /// A byte string.
    Bytes(Bytes),
    List(Vec<Value>),
    /// Key/value pairs in wire order.
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// Text view of a `Str`, or of `Bytes` that are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Raw bytes of a `Bytes` or `Str`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// An unsigned integer, exactly: an `Int` when it fits, else a
    /// `BigInt`.
    pub fn uint(n: u64) -> Value {
        i64::try_from(n).map_or_else(|_| Value::BigInt(n.to_string()), Value::Int)
    }

    /// Python's truthiness (what `bool(v)` gives xpra for any value): false
    /// for `None`, `False`, zero, and empty strings, lists and dicts.
    pub fn truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Dict(d) => !d.is_empty(),
        }
    }

    /// Truthiness the way xpra's `typedict.boolget` reads capabilities.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks up `key` in a dict whose keys are text or bytes.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Follows a dotted path through nested dicts, e.g. `"encoding.proxy.video"`
    /// looks up first the whole key, then each prefix as a nested dict, the way
    /// xpra flattens and unflattens capability names.
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.get(path) {
            return Some(v);
        }
        let mut split = path.len();
        while let Some(pos) = path[..split].rfind('.') {
            if let Some(inner) = self.get(&path[..pos]) {
                if let Some(v) = inner.get_path(&path[pos + 1..]) {
                    return Some(v);
                }
            }
            split = pos;
        }
        None
    }

    /// Text, or the elements of a list of texts.
    pub fn as_str_list(&self) -> Vec<&str> {
        match self {
            Value::List(l) => l.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        }
    }

    /// Short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::BigInt(_) => "bigint",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::None => "none",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }

    /// The same value with every `Str` turned into `Bytes`: what a legacy
    /// rencode or bencode round trip gives back.
    pub fn strings_as_bytes(&self) -> Value {
        match self {
            Value::Str(s) => Value::Bytes(Bytes::copy_from_slice(s.as_bytes())),
            Value::List(l) => Value::List(l.iter().map(Value::strings_as_bytes).collect()),
            Value::Dict(d) => Value::Dict(
                d.iter()
                    .map(|(k, v)| (k.strings_as_bytes(), v.strings_as_bytes()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Bytes(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

/// Checks that `s` is the canonical decimal text of an integer
/// (`-?[1-9][0-9]*` or `0`), at most `max_len` characters.
pub fn is_canonical_bigint(s: &str, max_len: usize) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && s.len() <= max_len
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && !(s.starts_with('-') && digits == "0")
}

/// Bytes charged against [`DecodeLimits::max_bytes`] for every decoded
/// value, whatever its kind: what one [`Value`] takes in memory (a dict
/// pair is two values). Strings, byte strings and big-integer texts are
/// charged their length on top.
pub const VALUE_COST: usize = std::mem::size_of::<Value>();

/// Default [`DecodeLimits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Default [`DecodeLimits::max_values`] (authenticated peers).
pub const DEFAULT_MAX_VALUES: usize = 1 << 20;
/// Default [`DecodeLimits::max_bytes`] (authenticated peers): what the
/// default record limits let a payload decompress to
/// (`frame::DEFAULT_MAX_PAYLOAD * 4`).
pub const DEFAULT_MAX_DECODED: usize = 256 * 1024 * 1024;

/// The work budget of one decode, so that hostile input costs bounded
/// memory, stack and time. Every decoder charges a value against the
/// budget before it builds it, and a length before it copies or slices that
/// many bytes; no capacity is reserved beyond what the budget has left.
///
/// [`Usage::of`] computes the same charges for a decoded value: a decode
/// succeeds under limits at least as large as its value's usage, and fails
/// with [`DecodeError::TooManyValues`] or [`DecodeError::TooManyBytes`] under
/// smaller ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting of lists and dicts.
    pub max_depth: usize,
    /// Most values one decode builds: every list item, dict key and dict
    /// value, the lists and dicts themselves included.
    pub max_values: usize,
    /// Most bytes one decode may account for: [`VALUE_COST`] per value,
    /// plus the length of every string, byte string and big integer.
    pub max_bytes: usize,
}

impl DecodeLimits {
    /// Generous but bounded: for the packets of authenticated peers (the
    /// session's hello, which can be large).
    pub const fn after_auth() -> DecodeLimits {
        DecodeLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: DEFAULT_MAX_VALUES,
            max_bytes: DEFAULT_MAX_DECODED,
        }
    }

    /// No bound but depth, for tools and tests that measure a value.
    pub const fn unbounded() -> DecodeLimits {
        DecodeLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::after_auth()
    }
}

/// What a decoded value costs against [`DecodeLimits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Values, containers and dict keys included.
    pub values: usize,
    /// [`VALUE_COST`] per value plus string, byte-string and big-integer
    /// lengths.
    pub bytes: usize,
    /// Deepest nesting of lists and dicts (0 for a scalar).
    pub depth: usize,
}

impl Usage {
    /// The usage of `v`, charged the way the decoders charge it.
    pub fn of(v: &Value) -> Usage {
        let mut u = Usage::default();
        u.add(v, 0);
        u
    }

    fn add(&mut self, v: &Value, depth: usize) {
        self.values = self.values.saturating_add(1);
        self.bytes = self.bytes.saturating_add(VALUE_COST);
        self.depth = self.depth.max(depth);
        match v {
            Value::BigInt(s) | Value::Str(s) => self.bytes = self.bytes.saturating_add(s.len()),
            Value::Bytes(b) => self.bytes = self.bytes.saturating_add(b.len()),
            Value::List(items) => {
                self.depth = self.depth.max(depth + 1);
                for item in items {
                    self.add(item, depth + 1);
                }
            }
            Value::Dict(pairs) => {
                self.depth = self.depth.max(depth + 1);
                for (k, v) in pairs {
                    self.add(k, depth + 1);
                    self.add(v, depth + 1);
                }
            }
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::None => {}
        }
    }

    /// The tightest limits `v` decodes under.
    pub fn as_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_depth: self.depth,
            max_values: self.values,
            max_bytes: self.bytes,
        }
    }
}

/// What one decode has left of its [`DecodeLimits`]. The decoders charge
/// every value before building it and every length before copying or
/// slicing it.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: DecodeLimits,
    values_left: usize,
    bytes_left: usize,
}

impl Budget {
    pub(crate) fn new(limits: DecodeLimits) -> Budget {
        Budget {
            limits,
            values_left: limits.max_values,
            bytes_left: limits.max_bytes,
        }
    }

    pub(crate) fn max_depth(&self) -> usize {
        self.limits.max_depth
    }

    /// Charges one value.
    pub(crate) fn value(&mut self) -> Result<(), DecodeError> {
        if self.values_left == 0 {
            return Err(DecodeError::TooManyValues {
                limit: self.limits.max_values,
            });
        }
        self.values_left -= 1;
        self.bytes(VALUE_COST)
    }

    /// Charges `len` bytes of string data.
    pub(crate) fn bytes(&mut self, len: usize) -> Result<(), DecodeError> {
        match self.bytes_left.checked_sub(len) {
            Some(left) => {
                self.bytes_left = left;
                Ok(())
            }
            None => Err(DecodeError::TooManyBytes {
                limit: self.limits.max_bytes,
            }),
        }
    }

    /// How many more values the budget pays for: the most capacity a
    /// decoder may reserve for items it has not read yet.
    pub(crate) fn values_affordable(&self) -> usize {
        self.values_left.min(self.bytes_left / VALUE_COST)
    }
}

/// Why a value could not be decoded. Offsets are into the decoder's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("input ends early at byte {at}: {what} is incomplete")]
    Truncated { at: usize, what: &'static str },
    #[error("unknown type code {code} (0x{code:02x}) at byte {at}")]
    UnknownTypeCode { code: u8, at: usize },
    #[error("bad length prefix at byte {at}")]
    BadLength { at: usize },
    #[error("bad number at byte {at}")]
    BadNumber { at: usize },
    #[error("text at byte {at} is not valid UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("values nest deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("decode budget exceeded: more than {limit} values")]
    TooManyValues { limit: usize },
    #[error("decode budget exceeded: more than {limit} bytes of values and strings")]
    TooManyBytes { limit: usize },
    #[error("{count} unexpected bytes after the value, at byte {at}")]
    TrailingBytes { at: usize, count: usize },
    #[error("empty input")]
    Empty,
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("big integer {0:?} is not a canonical decimal of at most 63 characters")]
    BadBigInt(String),
    #[error("{0} values cannot be encoded by this encoder")]
    Unsupported(&'static str),
    #[error("values nest deeper than {limit} levels")]
    TooDeep { limit: usize },
}

/// Deepest nesting the encoders accept (matches the decoders' default).
pub const MAX_ENCODE_DEPTH: usize = DEFAULT_MAX_DEPTH;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn get_accepts_text_and_byte_keys() {
        let d = Value::Dict(vec![
            (Value::from("a"), Value::Int(1)),
            (Value::Bytes(Bytes::from_static(b"b")), Value::Int(2)),
        ]);
        assert_eq!(d.get("a"), Some(&Value::Int(1)));
        assert_eq!(d.get("b"), Some(&Value::Int(2)));
        assert_eq!(d.get("c"), None);
    }

    #[test]
    fn get_path_walks_flat_and_nested() {
        let inner = Value::Dict(vec![(Value::from("video"), Value::Bool(true))]);
        let d = Value::Dict(vec![
            (Value::from("encoding.proxy"), inner),
            (Value::from("x.y"), Value::Int(3)),
        ]);
        assert_eq!(d.get_path("encoding.proxy.video"), Some(&Value::Bool(true)));
        assert_eq!(d.get_path("x.y"), Some(&Value::Int(3)));
        assert_eq!(d.get_path("x.z"), None);
    }

    #[test]
    fn usage_charges_values_and_lengths() {
        let v = Value::List(vec![
            Value::from("abc"),
            Value::Dict(vec![(
                Value::Bytes(Bytes::from_static(b"wxyz")),
                Value::BigInt("12345678901234567890".into()),
            )]),
            Value::Int(1),
        ]);
        let u = Usage::of(&v);
        // the list, "abc", the dict, its key and value, 1
        assert_eq!(u.values, 6);
        assert_eq!(u.bytes, 6 * VALUE_COST + 3 + 4 + 20);
        assert_eq!(u.depth, 2);
        assert_eq!(
            Usage::of(&Value::Int(1)),
            Usage {
                values: 1,
                bytes: VALUE_COST,
                depth: 0
            }
        );
        assert_eq!(u.as_limits().max_values, 6);
        // the docs and the pre-auth numbers assume this
        #[cfg(target_pointer_width = "64")]
        assert_eq!(VALUE_COST, 40);
    }

    #[test]
    fn budget_refuses_past_its_limits() {
        let limits = DecodeLimits {
            max_depth: 1,
            max_values: 2,
            max_bytes: 2 * VALUE_COST + 5,
        };
        let mut b = Budget::new(limits);
        assert_eq!(b.values_affordable(), 2);
        b.value().unwrap();
        b.bytes(5).unwrap();
        assert_eq!(b.values_affordable(), 1);
        let too_many_bytes = DecodeError::TooManyBytes {
            limit: 2 * VALUE_COST + 5,
        };
        assert_eq!(b.bytes(VALUE_COST + 1), Err(too_many_bytes.clone()));
        // a refused charge takes nothing
        b.value().unwrap();
        assert_eq!(b.values_affordable(), 0);
        assert_eq!(b.value(), Err(DecodeError::TooManyValues { limit: 2 }));
        assert_eq!(b.bytes(1), Err(too_many_bytes));
        b.bytes(0).unwrap();
        // the byte budget alone limits the values too
        let b = Budget::new(DecodeLimits {
            max_values: usize::MAX,
            max_bytes: 10 * VALUE_COST + 1,
            ..limits
        });
        assert_eq!(b.values_affordable(), 10);
    }

    #[test]
    fn canonical_bigint() {
        assert!(is_canonical_bigint("123", 63));
        assert!(is_canonical_bigint("-9223372036854775809", 63));
        assert!(is_canonical_bigint("0", 63));
        assert!(!is_canonical_bigint("-0", 63));
        assert!(!is_canonical_bigint("012", 63));
        assert!(!is_canonical_bigint("", 63));
        assert!(!is_canonical_bigint("-", 63));
        assert!(!is_canonical_bigint("1a", 63));
        assert!(!is_canonical_bigint(&"9".repeat(64), 63));
    }
}
