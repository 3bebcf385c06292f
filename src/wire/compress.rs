//! Payload compressors: lz4 (block, little-endian size prefix), zlib, brotli,
//! zstd. Every decompression is bounded.
//!
//! Formats, as xpra writes them:
//! - lz4: the uncompressed size as u32 little-endian, then one raw LZ4 block
//!   (python-lz4 `lz4.block.compress(data, store_size=True)`);
//! - zlib: a zlib stream (`zlib.compress(data, level)`), legacy peers only;
//! - brotli: a raw brotli stream (standard window, at most 16 MiB);
//! - zstd: one or more standard zstd frames;
//! - lzo: not supported ([`CompressError::Unsupported`]).
//!
//! Which bound applies where:
//! - [`decompress`] never returns more than `max_out` bytes, and never holds
//!   more than `max_out` bytes of output plus one 32 KiB scratch chunk:
//!   - none: the payload itself is the output, refused if longer than `max_out`;
//!   - lz4: the size prefix is checked against `max_out` (and against the most
//!     a block of that length can hold, 255 bytes per input byte) *before* the
//!     output is allocated; the block must then fill exactly that many bytes;
//!   - zlib, brotli, zstd: decoded in chunks of at most `max_out + 1 - produced`
//!     bytes; the first byte past `max_out` stops decoding with
//!     [`CompressError::TooLarge`]. The decoders' own state is bounded too:
//!     zlib about 40 KiB, brotli 16 MiB (large-window streams are refused), zstd
//!     `max(8 MiB, max_out rounded up to a power of two)` (frames that ask for
//!     a larger window are refused as corrupt).
//! - [`decompress_prefix`] produces at most `want` bytes and stops decoding
//!   as soon as it has them: lz4 goes through a small decoder of its own that
//!   never looks past the sequence that reaches `want`; zlib, brotli and zstd
//!   are streamed with an output window of at most `want` bytes (zstd works
//!   in whole blocks of up to 128 KiB, and its window is capped at the
//!   library default, 128 MiB). Damage after the prefix goes unnoticed
//!   there; [`decompress`] sees it.
//! - [`compress`] has no bound beyond lz4's u32 size prefix.
//!
//! Trailing bytes after the end of a stream: ignored for zlib (as Python's
//! `zlib.decompress` does), refused for brotli (as `brotli.decompress` does)
//! and zstd (they would have to be another frame).

use std::io;

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
    #[error("{compressor} compression failed: {detail}")]
    Failed {
        compressor: Compressor,
        detail: String,
    },
}

/// Output is gathered through a scratch buffer of this size.
const CHUNK: usize = 32 * 1024;
/// Length of the lz4 size prefix.
const LZ4_PREFIX: usize = 4;
/// zstd's window cap never goes below this (the format's recommended
/// minimum decoder support, 8 MiB).
const ZSTD_MIN_WINDOW_LOG: u32 = 23;
/// zstd's window cap never goes above this (1 GiB, valid on 32-bit too).
const ZSTD_MAX_WINDOW_LOG: u32 = 30;
/// zstd's own default window cap (128 MiB), used by [`decompress_prefix`].
const ZSTD_DEFAULT_WINDOW_LOG: u32 = 27;

fn corrupt(compressor: Compressor, detail: impl Into<String>) -> CompressError {
    CompressError::Corrupt {
        compressor,
        detail: detail.into(),
    }
}

fn too_large(compressor: Compressor, limit: usize) -> CompressError {
    CompressError::TooLarge { compressor, limit }
}

/// Decompresses a whole payload, refusing output larger than `max_out`.
pub fn decompress(c: Compressor, input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressError> {
    match c {
        Compressor::None => {
            if input.len() > max_out {
                return Err(too_large(c, max_out));
            }
            Ok(input.to_vec())
        }
        Compressor::Lz4 => lz4_decompress(input, max_out),
        Compressor::Zlib => run_stream(c, ZlibStep::new(), input, Bound::Max(max_out)),
        Compressor::Brotli => run_stream(c, BrotliStep::new(), input, Bound::Max(max_out)),
        Compressor::Zstd => {
            let step = ZstdStep::new(zstd_window_log(max_out)).map_err(|e| corrupt(c, e))?;
            run_stream(c, step, input, Bound::Max(max_out))
        }
        Compressor::Lzo => Err(CompressError::Unsupported(c)),
    }
}

/// Decompresses only the first `want` bytes of output (fewer if the data is
/// shorter), doing work proportional to `want`, not to the payload.
pub fn decompress_prefix(
    c: Compressor,
    input: &[u8],
    want: usize,
) -> Result<Vec<u8>, CompressError> {
    match c {
        Compressor::None => Ok(input[..want.min(input.len())].to_vec()),
        Compressor::Lz4 => lz4_prefix(input, want),
        Compressor::Zlib => run_stream(c, ZlibStep::new(), input, Bound::Prefix(want)),
        Compressor::Brotli => run_stream(c, BrotliStep::new(), input, Bound::Prefix(want)),
        Compressor::Zstd => {
            let step = ZstdStep::new(ZSTD_DEFAULT_WINDOW_LOG).map_err(|e| corrupt(c, e))?;
            run_stream(c, step, input, Bound::Prefix(want))
        }
        Compressor::Lzo => Err(CompressError::Unsupported(c)),
    }
}

/// Compresses `input` at `level` (1..=15 in xpra's scale).
///
/// lz4 ignores the level (one speed only); zlib clamps it to 1..=9, brotli
/// to 0..=11 (quality, 4 MiB window), zstd to 1..=19.
pub fn compress(c: Compressor, level: u8, input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let failed = |e: io::Error| CompressError::Failed {
        compressor: c,
        detail: e.to_string(),
    };
    match c {
        Compressor::None => Ok(input.to_vec()),
        Compressor::Lz4 => {
            if u32::try_from(input.len()).is_err() {
                return Err(too_large(c, u32::MAX as usize));
            }
            Ok(lz4_flex::block::compress_prepend_size(input))
        }
        Compressor::Zlib => {
            use std::io::Write;
            let level = flate2::Compression::new(u32::from(level.clamp(1, 9)));
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), level);
            enc.write_all(input).map_err(failed)?;
            enc.finish().map_err(failed)
        }
        Compressor::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: i32::from(level.min(11)),
                lgwin: 22,
                size_hint: input.len(),
                ..Default::default()
            };
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &input[..], &mut out, &params).map_err(failed)?;
            Ok(out)
        }
        Compressor::Zstd => {
            zstd::bulk::compress(input, i32::from(level.clamp(1, 19))).map_err(failed)
        }
        Compressor::Lzo => Err(CompressError::Unsupported(c)),
    }
}

// ---------------------------------------------------------------------------
// lz4

/// Splits an lz4 payload into its declared size and its block.
fn lz4_split(input: &[u8]) -> Result<(usize, &[u8]), CompressError> {
    let c = Compressor::Lz4;
    let Some((prefix, block)) = input.split_first_chunk::<LZ4_PREFIX>() else {
        return Err(corrupt(c, "payload shorter than its 4-byte size prefix"));
    };
    let size = u32::from_le_bytes(*prefix);
    // A u32 that does not fit in usize is past any limit we could hold.
    let size = usize::try_from(size).map_err(|_| too_large(c, usize::MAX))?;
    Ok((size, block))
}

/// The most output an LZ4 block of `len` bytes can describe: every
/// length-extension byte adds at most 255 bytes, and a sequence's fixed
/// parts add a few more.
fn lz4_max_output(len: usize) -> usize {
    len.saturating_mul(255).saturating_add(64)
}

fn lz4_decompress(input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressError> {
    let c = Compressor::Lz4;
    let (size, block) = lz4_split(input)?;
    if size > max_out {
        return Err(too_large(c, max_out));
    }
    if size > lz4_max_output(block.len()) {
        return Err(corrupt(
            c,
            format!(
                "size prefix says {size} bytes, more than a {}-byte block can hold",
                block.len()
            ),
        ));
    }
    let mut out = vec![0u8; size];
    let n =
        lz4_flex::block::decompress_into(block, &mut out).map_err(|e| corrupt(c, e.to_string()))?;
    if n != size {
        return Err(corrupt(
            c,
            format!("block holds {n} bytes, size prefix says {size}"),
        ));
    }
    Ok(out)
}

fn lz4_prefix(input: &[u8], want: usize) -> Result<Vec<u8>, CompressError> {
    let c = Compressor::Lz4;
    if want == 0 {
        return Ok(Vec::new());
    }
    let (size, block) = lz4_split(input)?;
    let limit = want.min(size);
    if limit > lz4_max_output(block.len()) {
        return Err(corrupt(
            c,
            format!(
                "size prefix says {size} bytes, more than a {}-byte block can hold",
                block.len()
            ),
        ));
    }
    lz4_block_prefix(block, limit).map_err(|e| corrupt(c, e))
}

/// Reads the 255-continued extension of a length that starts at `base`.
/// Stops early once the length reaches `enough` (callers pass `usize::MAX`
/// when they need the exact value, i.e. when more data follows it).
fn lz4_read_len(
    block: &[u8],
    pos: &mut usize,
    base: usize,
    enough: usize,
) -> Result<usize, &'static str> {
    let mut len = base;
    loop {
        let Some(&b) = block.get(*pos) else {
            return Err("truncated length");
        };
        *pos += 1;
        len = len.saturating_add(usize::from(b));
        if b != 255 || len >= enough {
            return Ok(len);
        }
    }
}

/// Decodes an LZ4 block until exactly `limit` bytes are produced; an error
/// if the block ends sooner or is malformed before that point.
fn lz4_block_prefix(block: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(limit);
    let mut pos = 0usize;
    while out.len() < limit {
        let Some(&token) = block.get(pos) else {
            break;
        };
        pos += 1;

        // Literals. Their extension bytes precede them, so the whole length
        // must be read to find where they start.
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            lit = lz4_read_len(block, &mut pos, lit, usize::MAX)?;
        }
        let take = lit.min(limit - out.len());
        let literals = pos
            .checked_add(take)
            .and_then(|end| block.get(pos..end))
            .ok_or("literals run past the end of the block")?;
        out.extend_from_slice(literals);
        if out.len() >= limit {
            break;
        }
        pos = pos
            .checked_add(lit)
            .filter(|&end| end <= block.len())
            .ok_or("literals run past the end of the block")?;
        if pos == block.len() {
            // The last sequence has literals only.
            break;
        }

        // Match.
        let offset = match block.get(pos..pos + 2) {
            Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])),
            _ => return Err("truncated match offset".into()),
        };
        pos += 2;
        if offset == 0 {
            return Err("match offset 0".into());
        }
        if offset > out.len() {
            return Err(format!(
                "match offset {offset} reaches before the start of the output ({} bytes)",
                out.len()
            ));
        }
        let need = limit - out.len();
        let mut mlen = usize::from(token & 0x0f) + 4;
        if mlen == 19 {
            // Nothing after this match is read when it reaches `need`.
            mlen = lz4_read_len(block, &mut pos, mlen, need)?;
        }
        let take = mlen.min(need);
        let start = out.len() - offset;
        if take <= offset {
            out.extend_from_within(start..start + take);
        } else {
            // Overlapping copy: the match repeats its own output.
            for _ in 0..take {
                let b = out[out.len() - offset];
                out.push(b);
            }
        }
    }
    if out.len() < limit {
        return Err(format!(
            "block ends after {} bytes, expected {limit}",
            out.len()
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// streaming decoders

/// What a caller bounds: the whole output, or the prefix it wants.
#[derive(Clone, Copy)]
enum Bound {
    /// Decode everything; refuse output past this many bytes.
    Max(usize),
    /// Decode only this many bytes (fewer if the data is shorter).
    Prefix(usize),
}

/// One call into a streaming decoder.
struct Step {
    /// Input bytes consumed.
    read: usize,
    /// Output bytes produced.
    written: usize,
    /// The stream is complete (its output fully handed out).
    end: bool,
}

trait StreamStep {
    /// Whether bytes after the end of the stream are an error.
    const STRICT_END: bool;
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, String>;
}

/// Drives `dec` over `input` under `bound`.
fn run_stream<D: StreamStep>(
    c: Compressor,
    mut dec: D,
    input: &[u8],
    bound: Bound,
) -> Result<Vec<u8>, CompressError> {
    let cap = match bound {
        Bound::Max(m) => m.saturating_add(1),
        Bound::Prefix(w) => w,
    };
    let mut out = Vec::new();
    let mut scratch = vec![0u8; CHUNK.min(cap).max(1)];
    let mut pos = 0usize;
    loop {
        let room = match bound {
            Bound::Max(m) => (m - out.len()).saturating_add(1),
            Bound::Prefix(w) => {
                if out.len() >= w {
                    return Ok(out);
                }
                w - out.len()
            }
        };
        let room = room.min(scratch.len());
        let rest = input.get(pos..).unwrap_or_default();
        let step = dec
            .step(rest, &mut scratch[..room])
            .map_err(|e| corrupt(c, e))?;
        pos += step.read.min(rest.len());
        if step.written > 0 {
            let written = step.written.min(room);
            if let Bound::Max(m) = bound {
                if out.len() + written > m {
                    return Err(too_large(c, m));
                }
            }
            append_bounded(&mut out, &scratch[..written], cap);
        }
        if step.end {
            if let Bound::Max(_) = bound {
                if D::STRICT_END && pos < input.len() {
                    return Err(corrupt(
                        c,
                        format!("{} trailing bytes after the stream", input.len() - pos),
                    ));
                }
            }
            return Ok(out);
        }
        if step.read == 0 && step.written == 0 {
            return Err(corrupt(
                c,
                if pos >= input.len() {
                    "truncated stream"
                } else {
                    "decoder made no progress"
                },
            ));
        }
    }
}

/// Appends `data`, growing `out` geometrically but never past `cap`
/// (callers guarantee `out.len() + data.len() <= cap`).
fn append_bounded(out: &mut Vec<u8>, data: &[u8], cap: usize) {
    let need = out.len() + data.len();
    if need > out.capacity() {
        let target = out.capacity().saturating_mul(2).min(cap).max(need);
        out.reserve_exact(target - out.len());
    }
    out.extend_from_slice(data);
}

struct ZlibStep(flate2::Decompress);

impl ZlibStep {
    fn new() -> ZlibStep {
        ZlibStep(flate2::Decompress::new(true))
    }
}

impl StreamStep for ZlibStep {
    const STRICT_END: bool = false;

    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, String> {
        let (in0, out0) = (self.0.total_in(), self.0.total_out());
        let status = self
            .0
            .decompress(input, out, flate2::FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        let read = usize::try_from(self.0.total_in() - in0).map_err(|e| e.to_string())?;
        let written = usize::try_from(self.0.total_out() - out0).map_err(|e| e.to_string())?;
        Ok(Step {
            read,
            written,
            end: status == flate2::Status::StreamEnd,
        })
    }
}

type BrotliState = brotli::BrotliState<
    brotli::enc::StandardAlloc,
    brotli::enc::StandardAlloc,
    brotli::enc::StandardAlloc,
>;

struct BrotliStep(Box<BrotliState>);

impl BrotliStep {
    fn new() -> BrotliStep {
        // `new_strict`: standard windows only (at most 16 MiB), like the
        // reference decoder's default; `new` would accept 1 GiB windows.
        BrotliStep(Box::new(BrotliState::new_strict(
            Default::default(),
            Default::default(),
            Default::default(),
        )))
    }
}

impl StreamStep for BrotliStep {
    const STRICT_END: bool = true;

    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, String> {
        let mut avail_in = input.len();
        let mut in_off = 0usize;
        let mut avail_out = out.len();
        let mut out_off = 0usize;
        let mut total = 0usize;
        let result = brotli::BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            out,
            &mut total,
            &mut self.0,
        );
        let end = match result {
            brotli::BrotliResult::ResultSuccess => true,
            brotli::BrotliResult::NeedsMoreInput | brotli::BrotliResult::NeedsMoreOutput => false,
            brotli::BrotliResult::ResultFailure => {
                return Err(format!("{:?}", self.0.error_code));
            }
        };
        Ok(Step {
            read: in_off,
            written: out_off,
            end,
        })
    }
}

struct ZstdStep(zstd::stream::raw::Decoder<'static>);

impl ZstdStep {
    fn new(window_log_max: u32) -> Result<ZstdStep, String> {
        let mut dec = zstd::stream::raw::Decoder::new().map_err(|e| e.to_string())?;
        dec.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(window_log_max))
            .map_err(|e| e.to_string())?;
        Ok(ZstdStep(dec))
    }
}

/// The zstd window cap for a whole-payload decode under `max_out`: large
/// enough for any single-segment frame of up to `max_out` bytes.
fn zstd_window_log(max_out: usize) -> u32 {
    let log = max_out
        .checked_next_power_of_two()
        .map_or(usize::BITS, usize::trailing_zeros);
    log.clamp(ZSTD_MIN_WINDOW_LOG, ZSTD_MAX_WINDOW_LOG)
}

impl StreamStep for ZstdStep {
    const STRICT_END: bool = true;

    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, String> {
        use zstd::stream::raw::Operation;
        let status = self
            .0
            .run_on_buffers(input, out)
            .map_err(|e| e.to_string())?;
        // 0: a frame is complete and flushed. Another frame may follow.
        let end = status.remaining == 0 && status.bytes_read >= input.len();
        Ok(Step {
            read: status.bytes_read,
            written: status.bytes_written,
            end,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compressor; 4] = [
        Compressor::Lz4,
        Compressor::Zlib,
        Compressor::Brotli,
        Compressor::Zstd,
    ];
    const MIB: usize = 1024 * 1024;

    fn text(n: usize) -> Vec<u8> {
        let words = b"hello window draw-packet cursor rencodeplus xpra lz4 ";
        words.iter().copied().cycle().take(n).collect()
    }

    /// Deterministic pseudo-random bytes (xorshift).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn is_too_large(r: Result<Vec<u8>, CompressError>) -> bool {
        matches!(r, Err(CompressError::TooLarge { .. }))
    }

    fn is_corrupt(r: Result<Vec<u8>, CompressError>) -> bool {
        matches!(r, Err(CompressError::Corrupt { .. }))
    }

    #[test]
    fn round_trip_each_compressor() {
        let samples = [
            Vec::new(),
            b"x".to_vec(),
            text(10_000),
            noise(10_000, 7),
            vec![0u8; 300_000],
        ];
        for c in ALL {
            for data in &samples {
                let z = compress(c, 3, data).unwrap();
                assert_eq!(&decompress(c, &z, data.len()).unwrap(), data, "{c}");
                assert_eq!(&decompress(c, &z, usize::MAX).unwrap(), data, "{c}");
                if !data.is_empty() {
                    assert!(is_too_large(decompress(c, &z, data.len() - 1)), "{c}");
                }
                assert_eq!(&decompress_prefix(c, &z, usize::MAX).unwrap(), data, "{c}");
                assert_eq!(
                    decompress_prefix(c, &z, 64).unwrap(),
                    data[..data.len().min(64)],
                    "{c}"
                );
            }
        }
    }

    #[test]
    fn levels_are_clamped() {
        let data = text(5_000);
        for c in ALL {
            for level in [0u8, 1, 5, 9, 11, 15, 255] {
                let z = compress(c, level, &data).unwrap();
                assert_eq!(decompress(c, &z, MIB).unwrap(), data, "{c} level {level}");
            }
        }
    }

    #[test]
    fn none_is_a_bounded_copy() {
        let c = Compressor::None;
        assert_eq!(compress(c, 5, b"abc").unwrap(), b"abc");
        assert_eq!(decompress(c, b"abc", 3).unwrap(), b"abc");
        assert!(is_too_large(decompress(c, b"abc", 2)));
        assert_eq!(decompress_prefix(c, b"abc", 2).unwrap(), b"ab");
        assert_eq!(decompress_prefix(c, b"abc", 0).unwrap(), b"");
        assert_eq!(decompress_prefix(c, b"abc", 9).unwrap(), b"abc");
    }

    #[test]
    fn lzo_is_unsupported() {
        let c = Compressor::Lzo;
        let e = CompressError::Unsupported(c);
        assert_eq!(decompress(c, b"abc", 10), Err(e.clone()));
        assert_eq!(decompress_prefix(c, b"abc", 10), Err(e.clone()));
        assert_eq!(compress(c, 1, b"abc"), Err(e));
    }

    #[test]
    fn lz4_format_is_le_size_then_block() {
        // python-lz4: lz4.block.compress(b"a" * 100, store_size=True)
        let py = [
            0x64, 0x00, 0x00, 0x00, 0x1f, 0x61, 0x01, 0x00, 0x4b, 0x50, 0x61, 0x61, 0x61, 0x61,
            0x61,
        ];
        assert_eq!(
            decompress(Compressor::Lz4, &py, 100).unwrap(),
            vec![b'a'; 100]
        );
        assert_eq!(
            decompress_prefix(Compressor::Lz4, &py, 30).unwrap(),
            vec![b'a'; 30]
        );
        // python-lz4, empty input.
        let empty = [0u8, 0, 0, 0, 0];
        assert_eq!(decompress(Compressor::Lz4, &empty, 0).unwrap(), b"");
        assert_eq!(decompress_prefix(Compressor::Lz4, &empty, 10).unwrap(), b"");
        let z = compress(Compressor::Lz4, 1, b"hello").unwrap();
        assert_eq!(&z[..4], &5u32.to_le_bytes());
    }

    #[test]
    fn lz4_bomb_refused_before_allocating() {
        // 1 GiB claimed; a buffer that size would be allocated (and zeroed)
        // by a naive decoder.
        let mut bomb = (1u32 << 30).to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0x1f, 0, 1, 0, 0xff, 0xff, 0xff, 0x00]);
        let c = Compressor::Lz4;
        assert_eq!(
            decompress(c, &bomb, MIB),
            Err(CompressError::TooLarge {
                compressor: c,
                limit: MIB
            })
        );
        // Even under a generous limit, a short block cannot hold 1 GiB.
        assert!(is_corrupt(decompress(c, &bomb, usize::MAX)));
        assert!(is_corrupt(decompress_prefix(c, &bomb, usize::MAX)));
        // u32::MAX claimed.
        let mut max = u32::MAX.to_le_bytes().to_vec();
        max.push(0);
        assert!(is_too_large(decompress(c, &max, 100 * MIB)));
    }

    #[test]
    fn lz4_size_mismatch_is_corrupt() {
        let c = Compressor::Lz4;
        let mut z = compress(c, 1, &text(1000)).unwrap();
        // Claims more than the block holds.
        z[..4].copy_from_slice(&1001u32.to_le_bytes());
        assert!(is_corrupt(decompress(c, &z, MIB)));
        assert!(is_corrupt(decompress_prefix(c, &z, 2000)));
        // The prefix below the real size is still fine.
        assert_eq!(decompress_prefix(c, &z, 1000).unwrap(), text(1000));
        // Claims less than the block holds.
        z[..4].copy_from_slice(&999u32.to_le_bytes());
        assert!(is_corrupt(decompress(c, &z, MIB)));
        assert_eq!(decompress_prefix(c, &z, 2000).unwrap(), text(999));
    }

    #[test]
    fn lz4_highly_compressible_is_not_mistaken_for_a_bomb() {
        let data = vec![0u8; 16 * MIB];
        let z = compress(Compressor::Lz4, 1, &data).unwrap();
        assert!(z.len() < data.len() / 200, "ratio {}", data.len() / z.len());
        assert_eq!(decompress(Compressor::Lz4, &z, 16 * MIB).unwrap(), data);
        assert_eq!(
            decompress_prefix(Compressor::Lz4, &z, 100).unwrap(),
            vec![0u8; 100]
        );
    }

    #[test]
    fn streaming_bombs_stop_at_the_limit() {
        // 64 MiB of zeros compress to a few KiB; with a 1 MiB limit the
        // decoder must stop right after the first MiB.
        let zeros = vec![0u8; 64 * MIB];
        for c in [Compressor::Zlib, Compressor::Zstd] {
            let z = compress(c, 1, &zeros).unwrap();
            let t = std::time::Instant::now();
            assert_eq!(
                decompress(c, &z, MIB),
                Err(CompressError::TooLarge {
                    compressor: c,
                    limit: MIB
                }),
                "{c}"
            );
            assert!(t.elapsed().as_secs() < 5, "{c} took {:?}", t.elapsed());
            assert_eq!(decompress_prefix(c, &z, 10).unwrap(), vec![0u8; 10]);
        }
        // brotli at quality 0: higher ones are slow in debug builds.
        let c = Compressor::Brotli;
        let z = compress(c, 0, &zeros).unwrap();
        let t = std::time::Instant::now();
        assert!(is_too_large(decompress(c, &z, MIB)));
        assert!(t.elapsed().as_secs() < 5, "{c} took {:?}", t.elapsed());
        assert_eq!(decompress_prefix(c, &z, 10).unwrap(), vec![0u8; 10]);
    }

    #[test]
    fn streaming_limits_are_exact() {
        let data = text(100_000);
        for c in [Compressor::Zlib, Compressor::Brotli, Compressor::Zstd] {
            let z = compress(c, 1, &data).unwrap();
            assert_eq!(decompress(c, &z, 100_000).unwrap(), data, "{c}");
            // Output never holds more than the limit (plus the probe byte).
            let out = decompress(c, &z, 150_000).unwrap();
            assert!(out.capacity() <= 150_001, "{c}: {}", out.capacity());
            assert!(is_too_large(decompress(c, &z, 99_999)), "{c}");
            assert!(is_too_large(decompress(c, &z, 0)), "{c}");
        }
    }

    #[test]
    fn truncated_input_is_corrupt() {
        let data = text(50_000);
        for c in ALL {
            let z = compress(c, 3, &data).unwrap();
            for cut in [0, 1, 3, 4, 5, z.len() / 2, z.len() - 1] {
                let r = decompress(c, &z[..cut], MIB);
                assert!(is_corrupt(r.clone()), "{c} cut at {cut}/{}: {r:?}", z.len());
            }
        }
    }

    #[test]
    fn trailing_bytes() {
        let data = text(1000);
        // zlib ignores them, like Python's zlib.decompress.
        let mut z = compress(Compressor::Zlib, 3, &data).unwrap();
        z.extend_from_slice(b"xx");
        assert_eq!(decompress(Compressor::Zlib, &z, MIB).unwrap(), data);
        for c in [Compressor::Brotli, Compressor::Zstd] {
            let mut z = compress(c, 3, &data).unwrap();
            z.extend_from_slice(b"xx");
            assert!(is_corrupt(decompress(c, &z, MIB)), "{c}");
        }
    }

    #[test]
    fn zstd_concatenated_frames() {
        let c = Compressor::Zstd;
        let mut z = compress(c, 3, b"hello ").unwrap();
        z.extend(compress(c, 3, b"world").unwrap());
        assert_eq!(decompress(c, &z, 100).unwrap(), b"hello world");
        assert!(is_too_large(decompress(c, &z, 10)));
    }

    #[test]
    fn zstd_window_cap() {
        use std::io::Write;
        assert_eq!(zstd_window_log(0), 23);
        assert_eq!(zstd_window_log(MIB), 23);
        assert_eq!(zstd_window_log(16 * MIB), 24);
        assert_eq!(zstd_window_log(16 * MIB + 1), 25);
        assert_eq!(zstd_window_log(usize::MAX), 30);
        // A streamed frame (no content size) asking for a 128 MiB window.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        enc.write_all(b"small").unwrap();
        let z = enc.finish().unwrap();
        let c = Compressor::Zstd;
        assert!(is_corrupt(decompress(c, &z, MIB)));
        assert_eq!(decompress(c, &z, 128 * MIB).unwrap(), b"small");
        assert_eq!(decompress_prefix(c, &z, 3).unwrap(), b"sma");
    }

    #[test]
    fn brotli_large_window_refused() {
        let params = brotli::enc::BrotliEncoderParams {
            quality: 1,
            lgwin: 26,
            large_window: true,
            ..Default::default()
        };
        let mut z = Vec::new();
        brotli::BrotliCompress(&mut &b"abcabcabc"[..], &mut z, &params).unwrap();
        assert!(is_corrupt(decompress(Compressor::Brotli, &z, MIB)));
    }

    #[test]
    fn garbage_is_corrupt_not_panic() {
        for c in ALL {
            for g in [
                &b""[..],
                b"\x00",
                b"\xff\xff\xff\xff\xff",
                b"garbage garbage",
            ] {
                assert!(decompress(c, g, MIB).is_err(), "{c} {g:?}");
            }
        }
    }

    #[test]
    fn prefix_edges() {
        let data = text(10_000);
        for c in ALL {
            let z = compress(c, 3, &data).unwrap();
            assert_eq!(decompress_prefix(c, &z, 0).unwrap(), b"", "{c}");
            assert_eq!(decompress_prefix(c, &z, 1).unwrap(), &data[..1], "{c}");
            assert_eq!(decompress_prefix(c, &z, 10_000).unwrap(), data, "{c}");
            assert_eq!(decompress_prefix(c, &z, 10_001).unwrap(), data, "{c}");
            // Truncating the payload far after the prefix does not matter
            // (zstd decodes whole blocks, up to 128 KiB, so not there).
            if matches!(c, Compressor::Zlib | Compressor::Brotli) {
                let cut = &z[..z.len() - 1];
                assert_eq!(decompress_prefix(c, cut, 10).unwrap(), &data[..10], "{c}");
            }
        }
    }

    /// A hand-made block with overlapping matches.
    fn overlap_block() -> (Vec<u8>, Vec<u8>) {
        let mut block = Vec::new();
        // 1 literal 'a', match offset 1 length 4+15+1 = 20 ("a" * 20).
        block.extend_from_slice(&[0x1f, b'a', 1, 0, 1]);
        // 3 literals "xyz", match offset 3 length 4+5 = 9 ("xyzxyzxyz").
        block.extend_from_slice(&[0x35, b'x', b'y', b'z', 3, 0]);
        // Match offset 26 (back to the first 'a's), length 4.
        block.extend_from_slice(&[0x00, 26, 0]);
        // Final literals.
        block.extend_from_slice(&[0x20, b'!', b'!']);
        let mut expect = vec![b'a'; 21];
        expect.extend_from_slice(b"xyzxyzxyzxyz");
        expect.extend_from_slice(b"aaaa!!");
        let mut payload = (expect.len() as u32).to_le_bytes().to_vec();
        payload.extend_from_slice(&block);
        (payload, expect)
    }

    #[test]
    fn lz4_prefix_overlapping_matches() {
        let (payload, expect) = overlap_block();
        let c = Compressor::Lz4;
        assert_eq!(decompress(c, &payload, 1000).unwrap(), expect);
        for n in 0..=expect.len() + 2 {
            assert_eq!(
                decompress_prefix(c, &payload, n).unwrap(),
                expect[..n.min(expect.len())],
                "n={n}"
            );
        }
    }

    #[test]
    fn lz4_prefix_stops_early() {
        let c = Compressor::Lz4;
        // One match that claims to go on for ~2.5 MiB of extension bytes,
        // then garbage: the prefix never reads that far.
        let mut payload = u32::MAX.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0x1f, b'a', 1, 0]);
        payload.extend(std::iter::repeat_n(0xffu8, 10_000));
        assert_eq!(decompress_prefix(c, &payload, 64).unwrap(), vec![b'a'; 64]);
        // Bad data after the wanted prefix goes unnoticed.
        let (mut payload, expect) = overlap_block();
        let n = payload.len();
        payload[n - 5] = 200; // third match offset: out of range
        assert_eq!(decompress_prefix(c, &payload, 33).unwrap(), &expect[..33]);
        assert!(is_corrupt(decompress_prefix(c, &payload, 34)));
        assert!(is_corrupt(decompress(c, &payload, 1000)));
    }

    #[test]
    fn lz4_prefix_rejects_bad_blocks() {
        let c = Compressor::Lz4;
        let with = |size: u32, block: &[u8]| {
            let mut p = size.to_le_bytes().to_vec();
            p.extend_from_slice(block);
            p
        };
        // Offset 0.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(10, &[0x10, b'a', 0, 0]),
            10
        )));
        // Offset past the output.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(10, &[0x10, b'a', 2, 0]),
            10
        )));
        // Truncated offset.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(10, &[0x10, b'a', 1]),
            10
        )));
        // Literals past the end.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(10, &[0x50, b'a']),
            10
        )));
        // Truncated literal length.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(300, &[0xf0, 0xff]),
            300
        )));
        // Truncated match length.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(300, &[0x1f, b'a', 1, 0]),
            300
        )));
        // Short prefix.
        assert!(is_corrupt(decompress_prefix(c, &[1, 0, 0], 10)));
        // Block shorter than declared.
        assert!(is_corrupt(decompress_prefix(
            c,
            &with(10, &[0x30, b'a', b'b', b'c']),
            10
        )));
        assert_eq!(
            decompress_prefix(c, &with(10, &[0x30, b'a', b'b', b'c']), 3).unwrap(),
            b"abc"
        );
    }

    /// Data that mixes random runs with long repeats of short patterns.
    fn mixed_data() -> impl Strategy<Value = Vec<u8>> {
        let segment = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            (prop::collection::vec(any::<u8>(), 1..8), 1usize..3000).prop_map(|(p, n)| p
                .iter()
                .copied()
                .cycle()
                .take(n)
                .collect::<Vec<u8>>()),
            (any::<u8>(), 0usize..70_000).prop_map(|(b, n)| vec![b; n]),
        ];
        prop::collection::vec(segment, 0..8).prop_map(|s| s.concat())
    }

    /// Hand-encoded LZ4 blocks from random sequences: literal runs and
    /// matches of any length, offsets that are sometimes out of range.
    fn lz4_block() -> impl Strategy<Value = Vec<u8>> {
        let seq = (
            prop::collection::vec(any::<u8>(), 0..40),
            0u16..48,
            0usize..600,
        );
        (
            prop::collection::vec(seq, 0..12),
            prop::collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(|(seqs, last)| {
                fn ext(block: &mut Vec<u8>, mut n: usize) {
                    while n >= 255 {
                        block.push(255);
                        n -= 255;
                    }
                    block.push(n as u8);
                }
                let mut block = Vec::new();
                for (lits, offset, mlen) in seqs {
                    let l = lits.len();
                    block.push(((l.min(15) as u8) << 4) | mlen.min(15) as u8);
                    if l >= 15 {
                        ext(&mut block, l - 15);
                    }
                    block.extend_from_slice(&lits);
                    block.extend_from_slice(&offset.to_le_bytes());
                    if mlen >= 15 {
                        ext(&mut block, mlen - 15);
                    }
                }
                let l = last.len();
                block.push((l.min(15) as u8) << 4);
                if l >= 15 {
                    ext(&mut block, l - 15);
                }
                block.extend_from_slice(&last);
                block
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn lz4_prefix_agrees_with_lz4_flex(data in mixed_data(), ns in prop::collection::vec(any::<prop::sample::Index>(), 8)) {
            let z = compress(Compressor::Lz4, 1, &data).unwrap();
            let full = lz4_flex::block::decompress_size_prepended(&z).unwrap();
            prop_assert_eq!(&full, &data);
            let total = full.len();
            let mut wants: Vec<usize> = ns.iter().map(|i| i.index(total + 2)).collect();
            wants.extend([0, 1, 4, 15, 16, 19, 64, total, total + 1]);
            for n in wants {
                let p = decompress_prefix(Compressor::Lz4, &z, n).unwrap();
                prop_assert_eq!(&p[..], &full[..n.min(total)], "want {}", n);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn lz4_prefix_agrees_on_generated_blocks(block in lz4_block()) {
            let mut full = vec![0u8; 1 << 16];
            if let Ok(n) = lz4_flex::block::decompress_into(&block, &mut full) {
                let mine = lz4_block_prefix(&block, n);
                prop_assert_eq!(mine.as_deref(), Ok(&full[..n]));
                prop_assert!(lz4_block_prefix(&block, n + 1).is_err());
                for k in [0, 1.min(n), n / 3, n / 2] {
                    let mine = lz4_block_prefix(&block, k);
                    prop_assert_eq!(mine.as_deref(), Ok(&full[..k]));
                }
            } else {
                // Invalid blocks: never a panic, and no full-length output.
                let _ = lz4_block_prefix(&block, 1 << 16);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn round_trips(data in mixed_data(), level in 0u8..16, which in 0usize..4) {
            let c = ALL[which];
            // brotli's top qualities are slow in debug builds.
            let level = if c == Compressor::Brotli { level.min(6) } else { level };
            let z = compress(c, level, &data).unwrap();
            prop_assert_eq!(&decompress(c, &z, data.len()).unwrap(), &data);
            if !data.is_empty() {
                prop_assert!(is_too_large(decompress(c, &z, data.len() - 1)));
            }
            for n in [0usize, 1, 64, data.len() / 2, data.len() + 1] {
                let p = decompress_prefix(c, &z, n).unwrap();
                prop_assert_eq!(&p[..], &data[..n.min(data.len())]);
            }
        }

        #[test]
        fn arbitrary_input_never_panics(input in prop::collection::vec(any::<u8>(), 0..200), which in 0usize..4, want in 0usize..500) {
            let c = ALL[which];
            let _ = decompress(c, &input, 1 << 16);
            let _ = decompress_prefix(c, &input, want);
        }

        #[test]
        fn damaged_input_never_panics(data in mixed_data(), which in 0usize..4, flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), want in 0usize..5000) {
            let c = ALL[which];
            let mut z = compress(c, 1, &data).unwrap();
            for (i, b) in flips {
                let i = i.index(z.len());
                z[i] ^= b;
            }
            if let Ok(out) = decompress(c, &z, 1 << 20) {
                prop_assert!(out.len() <= 1 << 20);
            }
            if let Ok(out) = decompress_prefix(c, &z, want) {
                prop_assert!(out.len() <= want);
            }
        }
    }
}
