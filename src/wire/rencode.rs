//! rencodeplus (modern xpra) and legacy rencode (xpra 3.1, python3-rencode).
//! TODO(helper): implement.

use bytes::Bytes;

use super::value::{DecodeError, DecodeLimits, EncodeError, Value};

/// Encodes `v` as rencodeplus, appending to `out`.
pub fn encode_plus(_v: &Value, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
    Err(EncodeError::Unsupported("todo"))
}

/// Decodes one rencodeplus value that spans all of `input`.
pub fn decode_plus(_input: &Bytes, _limits: DecodeLimits) -> Result<Value, DecodeError> {
    Err(DecodeError::Empty)
}

/// Encodes `v` as legacy rencode, appending to `out`.
pub fn encode_legacy(_v: &Value, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
    Err(EncodeError::Unsupported("todo"))
}

/// Decodes one legacy rencode value that spans all of `input`.
pub fn decode_legacy(_input: &Bytes, _limits: DecodeLimits) -> Result<Value, DecodeError> {
    Err(DecodeError::Empty)
}
