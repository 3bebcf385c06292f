//! Payload compressors: lz4 (block, little-endian size prefix), zlib, brotli,
//! zstd. Every decompression is bounded.
//! TODO(helper): implement.

use super::header::Compressor;

/// Why a payload could not be (de)compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    #[error("{0} is not supported")]
    Unsupported(Compressor),
    #[error("{compressor} data would expand past the {limit}-byte limit")]
    TooLarge {
        compressor: Compressor,
        limit: usize,
    },
    #[error("corrupt {compressor} data: {detail}")]
    Corrupt {
        compressor: Compressor,
        detail: String,
    },
}

/// Decompresses a whole payload, refusing output larger than `max_out`.
pub fn decompress(c: Compressor, _input: &[u8], _max_out: usize) -> Result<Vec<u8>, CompressError> {
    Err(CompressError::Unsupported(c))
}

/// Decompresses only the first `want` bytes of output (fewer if the data is
/// shorter), doing work proportional to `want`, not to the payload.
pub fn decompress_prefix(
    c: Compressor,
    _input: &[u8],
    _want: usize,
) -> Result<Vec<u8>, CompressError> {
    Err(CompressError::Unsupported(c))
}

/// Compresses `input` at `level` (1..=15 in xpra's scale).
pub fn compress(c: Compressor, _level: u8, _input: &[u8]) -> Result<Vec<u8>, CompressError> {
    Err(CompressError::Unsupported(c))
}
