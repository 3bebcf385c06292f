//! xpra's bencode variant (as Debian's xpra 3.1.3 writes it).
//! TODO(helper): implement.

use bytes::Bytes;

use super::value::{DecodeError, DecodeLimits, EncodeError, Value};

/// Encodes `v` as bencode, appending to `out`.
pub fn encode(_v: &Value, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
    Err(EncodeError::Unsupported("todo"))
}

/// Decodes one bencode value that spans all of `input`.
pub fn decode(_input: &Bytes, _limits: DecodeLimits) -> Result<Value, DecodeError> {
    Err(DecodeError::Empty)
}
