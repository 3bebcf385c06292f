//! Lossless rectangles for the client, read back from a window's BGRX
//! [`Framebuffer`] in the pixel format the client asked for, optionally
//! lz4-compressed.
//!
//! lz4 here is an lz4 *block* with a 4-byte little-endian size prefix
//! ([`lz4_flex::block::compress_prepend_size`]): what xpra's python-lz4
//! `lz4.block.compress` makes by default (`store_size=True`), and what its
//! client reads (`xpra/net/compression.py`: `LZ4_HEADER = Struct('<L')`,
//! then `LZ4_uncompress`).

use crate::wire::compress;
use crate::wire::header::Compressor;
use bytes::Bytes;

use super::framebuffer::Framebuffer;
use super::job::{PixelFormat, RgbRect};

/// A refresh is cut into row bands of at most this many (uncompressed)
/// bytes, so that no single draw packet is huge (a 4096x4096 BGRX window
/// is 64 MiB).
pub const BAND_BYTES: usize = 4 << 20;

/// Converts one row of BGRX pixels into `format` (`dst` holds exactly the
/// row's pixels in `format`).
pub fn row_from_bgrx(src: &[u8], dst: &mut [u8], format: PixelFormat) {
    super::job::convert_row(src, PixelFormat::Bgrx, dst, format)
}

/// The part of `x, y, w, h` inside the framebuffer (`None`: nothing).
pub fn clip(fb: &Framebuffer, x: u32, y: u32, w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
    if x >= fb.width() || y >= fb.height() {
        return None;
    }
    let w = w.min(fb.width() - x);
    let h = h.min(fb.height() - y);
    if w == 0 || h == 0 {
        return None;
    }
    Some((x, y, w, h))
}

/// Rectangle `x, y, w, h` of the framebuffer (clipped to it; `None` when
/// nothing is left) in `format`, rows packed (`stride = w * bpp`),
/// lz4-compressed when `lz4`.
pub fn read_rect(
    fb: &Framebuffer,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    format: PixelFormat,
    lz4: bool,
) -> Option<RgbRect> {
    let (x, y, w, h) = clip(fb, x, y, w, h)?;
    let bpp = format.bytes_per_pixel();
    let stride = w as usize * bpp;
    let mut out = vec![0u8; stride * h as usize];
    for (j, dst) in out.chunks_exact_mut(stride).enumerate() {
        let src = fb.row(x, y + j as u32, w)?;
        row_from_bgrx(src, dst, format);
    }
    let data = if lz4 {
        // xpra's framing of lz4 (a 4-byte size, then the block), as the
        // wire layer compresses packets; a band is far below its bound.
        compress::compress(Compressor::Lz4, 0, &out).ok()?
    } else {
        out
    };
    Some(RgbRect {
        x,
        y,
        w,
        h,
        stride: stride as u32,
        format,
        lz4,
        data: Bytes::from(data),
    })
}

/// The whole framebuffer, in row bands of at most [`BAND_BYTES`] (at
/// least one row each). Empty for an empty framebuffer.
pub fn read_all(fb: &Framebuffer, format: PixelFormat, lz4: bool) -> Vec<RgbRect> {
    let (w, h) = (fb.width(), fb.height());
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let row = w as usize * format.bytes_per_pixel();
    let rows = (BAND_BYTES / row).clamp(1, h as usize) as u32;
    let mut out = Vec::new();
    let mut y = 0;
    while y < h {
        let bh = rows.min(h - y);
        if let Some(r) = read_rect(fb, 0, y, w, bh, format, lz4) {
            out.push(r);
        }
        y += bh;
    }
    out
}

/// The pixels of a [`RgbRect`], uncompressed (`None`: a bad lz4 block, or
/// one that claims more than its rectangle holds).
pub fn pixels(r: &RgbRect) -> Option<Vec<u8>> {
    let size = (r.stride as usize).checked_mul(r.h as usize)?;
    let c = if r.lz4 {
        Compressor::Lz4
    } else {
        Compressor::None
    };
    compress::decompress(c, &r.data, size).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::video::job::Rect;

    fn fb() -> Framebuffer {
        let mut fb = Framebuffer::new(7, 5).unwrap();
        let mut px = Vec::new();
        for j in 0..5u8 {
            for i in 0..7u8 {
                px.extend_from_slice(&[i, j, i ^ j, 0x40 + i]);
            }
        }
        fb.apply(&Rect {
            x: 0,
            y: 0,
            w: 7,
            h: 5,
            stride: 28,
            format: PixelFormat::Bgrx,
            pixels: Bytes::from(px),
        })
        .unwrap();
        fb
    }

    #[test]
    fn reads_every_format_back() {
        let fb = fb();
        type Want = fn(u8, u8) -> Vec<u8>;
        let cases: [(PixelFormat, Want); 6] = [
            (PixelFormat::Bgrx, |i: u8, j: u8| {
                vec![i, j, i ^ j, 0x40 + i]
            }),
            (PixelFormat::Bgra, |i: u8, j: u8| {
                vec![i, j, i ^ j, 0x40 + i]
            }),
            (PixelFormat::Rgbx, |i: u8, j: u8| {
                vec![i ^ j, j, i, 0x40 + i]
            }),
            (PixelFormat::Rgba, |i: u8, j: u8| {
                vec![i ^ j, j, i, 0x40 + i]
            }),
            (PixelFormat::Rgb, |i: u8, j: u8| vec![i ^ j, j, i]),
            (PixelFormat::Bgr, |i: u8, j: u8| vec![i, j, i ^ j]),
        ];
        for (format, want) in cases {
            for lz4 in [false, true] {
                let r = read_rect(&fb, 2, 1, 3, 2, format, lz4).unwrap();
                assert_eq!((r.x, r.y, r.w, r.h), (2, 1, 3, 2));
                assert_eq!(r.stride as usize, 3 * format.bytes_per_pixel());
                let mut expect = Vec::new();
                for j in 1..3 {
                    for i in 2..5 {
                        expect.extend(want(i, j));
                    }
                }
                assert_eq!(pixels(&r).unwrap(), expect, "{format:?} lz4 {lz4}");
            }
        }
    }

    #[test]
    fn clips_to_the_framebuffer() {
        let fb = fb();
        let r = read_rect(&fb, 5, 3, 10, 10, PixelFormat::Rgb, false).unwrap();
        assert_eq!((r.x, r.y, r.w, r.h), (5, 3, 2, 2));
        assert!(read_rect(&fb, 7, 0, 1, 1, PixelFormat::Rgb, false).is_none());
        assert!(read_rect(&fb, 0, 0, 0, 1, PixelFormat::Rgb, false).is_none());
    }

    #[test]
    fn read_all_covers_the_window() {
        let fb = fb();
        let all = read_all(&fb, PixelFormat::Bgrx, true);
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].w, all[0].h), (7, 5));
        assert_eq!(pixels(&all[0]).unwrap(), fb.data());
        // Bands for a large window, covering it exactly.
        let big = Framebuffer::new(2000, 1500).unwrap();
        let bands = read_all(&big, PixelFormat::Bgrx, false);
        assert!(bands.len() > 1);
        let mut y = 0;
        for b in &bands {
            assert_eq!((b.x, b.y, b.w), (0, y, 2000));
            assert!(b.data.len() <= BAND_BYTES);
            y += b.h;
        }
        assert_eq!(y, 1500);
        assert!(read_all(&Framebuffer::new(0, 4).unwrap(), PixelFormat::Rgb, false).is_empty());
    }
}
