//! A window's pixels on its encoder worker: BGRX, rows of `stride` bytes.
//!
//! The session's rectangles ([`Rect`], in any [`PixelFormat`]) are
//! converted into it; the encoders read whole frames from it and
//! [`super::lossless`] reads rectangles back out of it. Sizes are bounded
//! at [`MAX_DIM`] x [`MAX_DIM`]; a rectangle that does not fit its own
//! bytes, or reaches past the bound, is refused before anything is
//! changed.

use super::codec::Frame;
use super::job::{PixelFormat, Rect};

/// The largest width or height a framebuffer takes (64 MiB of BGRX).
pub const MAX_DIM: u32 = 4096;

/// Bytes per framebuffer pixel (BGRX).
pub const BPP: usize = 4;

/// Why a size or a rectangle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FbError {
    #[error("size {width}x{height} over the {MAX_DIM}x{MAX_DIM} bound")]
    TooLarge { width: u64, height: u64 },
    #[error("rectangle {w}x{h} at {x},{y}: stride {stride} shorter than a row of {row} bytes")]
    Stride {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        stride: u32,
        row: u64,
    },
    #[error("rectangle {w}x{h} at {x},{y}: {have} pixel bytes, {need} needed")]
    Short {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        have: usize,
        need: u64,
    },
}

/// A BGRX framebuffer. The fourth byte of each pixel is what the session
/// sent as X or A (0xff for 3-byte formats).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    stride: usize,
    data: Vec<u8>,
}

/// Checks a rectangle against its own bytes and the size bound; returns
/// the bottom-right corner it reaches (exclusive). An empty rectangle
/// reaches nothing (`None`).
pub fn check_rect(r: &Rect) -> Result<Option<(u32, u32)>, FbError> {
    let right = u64::from(r.x) + u64::from(r.w);
    let bottom = u64::from(r.y) + u64::from(r.h);
    if right > u64::from(MAX_DIM) || bottom > u64::from(MAX_DIM) {
        return Err(FbError::TooLarge {
            width: right,
            height: bottom,
        });
    }
    if r.w == 0 || r.h == 0 {
        return Ok(None);
    }
    let row = u64::from(r.w) * r.format.bytes_per_pixel() as u64;
    if u64::from(r.stride) < row {
        return Err(FbError::Stride {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
            stride: r.stride,
            row,
        });
    }
    let need = u64::from(r.stride) * (u64::from(r.h) - 1) + row;
    if (r.pixels.len() as u64) < need {
        return Err(FbError::Short {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
            have: r.pixels.len(),
            need,
        });
    }
    // Both fit in u32: bounded by MAX_DIM above.
    Ok(Some((right as u32, bottom as u32)))
}

/// Converts one row of `format` pixels into BGRX (`dst` is exactly the
/// row's pixels, 4 bytes each; `src` at least as many pixels).
pub fn row_to_bgrx(src: &[u8], dst: &mut [u8], format: PixelFormat) {
    super::job::convert_row(src, format, dst, PixelFormat::Bgrx)
}

fn check_size(width: u32, height: u32) -> Result<(), FbError> {
    if width > MAX_DIM || height > MAX_DIM {
        return Err(FbError::TooLarge {
            width: width.into(),
            height: height.into(),
        });
    }
    Ok(())
}

impl Framebuffer {
    /// A black framebuffer of `width` x `height`.
    pub fn new(width: u32, height: u32) -> Result<Framebuffer, FbError> {
        check_size(width, height)?;
        let stride = width as usize * BPP;
        Ok(Framebuffer {
            width,
            height,
            stride,
            data: vec![0; stride * height as usize],
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The pixels, `height` rows of `stride` bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Makes it `width` x `height`, keeping the pixels both sizes share;
    /// new pixels are black.
    pub fn resize(&mut self, width: u32, height: u32) -> Result<(), FbError> {
        check_size(width, height)?;
        if width == self.width && height == self.height {
            return Ok(());
        }
        let mut next = Framebuffer::new(width, height)?;
        let cols = self.width.min(width) as usize * BPP;
        let rows = self.height.min(height) as usize;
        if cols > 0 {
            for (d, s) in next
                .data
                .chunks_exact_mut(next.stride)
                .zip(self.data.chunks_exact(self.stride))
                .take(rows)
            {
                d[..cols].copy_from_slice(&s[..cols]);
            }
        }
        *self = next;
        Ok(())
    }

    /// Grows it (never shrinks) to hold `width` x `height`.
    pub fn grow_to(&mut self, width: u32, height: u32) -> Result<(), FbError> {
        self.resize(self.width.max(width), self.height.max(height))
    }

    /// Converts a rectangle into the framebuffer, growing it when the
    /// rectangle reaches outside. Nothing changes when it is refused.
    pub fn apply(&mut self, r: &Rect) -> Result<(), FbError> {
        let Some((right, bottom)) = check_rect(r)? else {
            return Ok(());
        };
        self.grow_to(right, bottom)?;
        let bpp = r.format.bytes_per_pixel();
        let src_row = r.w as usize * bpp;
        let dst_row = r.w as usize * BPP;
        let stride = r.stride as usize;
        for row in 0..r.h as usize {
            let s0 = row * stride;
            let d0 = (r.y as usize + row) * self.stride + r.x as usize * BPP;
            let (Some(src), Some(dst)) = (
                r.pixels.get(s0..s0 + src_row),
                self.data.get_mut(d0..d0 + dst_row),
            ) else {
                // Unreachable after check_rect and grow_to.
                break;
            };
            row_to_bgrx(src, dst, r.format);
        }
        Ok(())
    }

    /// The top-left `width` x `height` of it, for an encoder (`None` when
    /// that is more than it holds).
    pub fn frame(&self, width: u32, height: u32) -> Option<Frame<'_>> {
        if width > self.width || height > self.height {
            return None;
        }
        Some(Frame {
            width,
            height,
            stride: self.stride,
            bgrx: &self.data,
        })
    }

    /// One pixel's BGRX bytes (tests, edges).
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = y as usize * self.stride + x as usize * BPP;
        let p = self.data.get(i..i + BPP)?;
        Some([p[0], p[1], p[2], p[3]])
    }

    /// Row `y`, pixels `x..x + w` (BGRX), or `None` outside.
    pub fn row(&self, x: u32, y: u32, w: u32) -> Option<&[u8]> {
        if u64::from(x) + u64::from(w) > u64::from(self.width) || y >= self.height {
            return None;
        }
        let i = y as usize * self.stride + x as usize * BPP;
        self.data.get(i..i + w as usize * BPP)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A rect of `w` x `h` whose pixel (i, j) is colour (r, g, b) =
    /// (i, j, i + j), in `format`, with `pad` bytes after each row.
    fn rect(x: u32, y: u32, w: u32, h: u32, format: PixelFormat, pad: usize) -> Rect {
        let bpp = format.bytes_per_pixel();
        let stride = w as usize * bpp + pad;
        let mut px = Vec::new();
        for j in 0..h {
            for i in 0..w {
                let (r, g, b) = (i as u8, j as u8, (i + j) as u8);
                let a = 0x80;
                px.extend_from_slice(&match format {
                    PixelFormat::Bgrx | PixelFormat::Bgra => vec![b, g, r, a],
                    PixelFormat::Rgbx | PixelFormat::Rgba => vec![r, g, b, a],
                    PixelFormat::Rgb => vec![r, g, b],
                    PixelFormat::Bgr => vec![b, g, r],
                });
            }
            px.extend(std::iter::repeat_n(0xee, pad));
        }
        Rect {
            x,
            y,
            w,
            h,
            stride: stride as u32,
            format,
            pixels: Bytes::from(px),
        }
    }

    const ALL: [PixelFormat; 6] = [
        PixelFormat::Bgrx,
        PixelFormat::Bgra,
        PixelFormat::Rgbx,
        PixelFormat::Rgba,
        PixelFormat::Rgb,
        PixelFormat::Bgr,
    ];

    #[test]
    fn applies_every_format_with_and_without_padding() {
        for format in ALL {
            for pad in [0, 3, 16] {
                let mut fb = Framebuffer::new(20, 10).unwrap();
                fb.apply(&rect(2, 3, 5, 4, format, pad)).unwrap();
                let x = if format.bytes_per_pixel() == 3 {
                    0xff
                } else {
                    0x80
                };
                for j in 0..4u32 {
                    for i in 0..5u32 {
                        assert_eq!(
                            fb.pixel(2 + i, 3 + j).unwrap(),
                            [(i + j) as u8, j as u8, i as u8, x],
                            "{format:?} pad {pad} at {i},{j}"
                        );
                    }
                }
                // Outside the rectangle: untouched.
                assert_eq!(fb.pixel(1, 3).unwrap(), [0; 4]);
                assert_eq!(fb.pixel(7, 3).unwrap(), [0; 4]);
                assert_eq!(fb.pixel(2, 7).unwrap(), [0; 4]);
            }
        }
    }

    #[test]
    fn last_row_may_be_short() {
        let mut r = rect(0, 0, 4, 3, PixelFormat::Rgb, 8);
        let len = r.pixels.len() - 8;
        r.pixels = r.pixels.slice(..len);
        let mut fb = Framebuffer::new(4, 3).unwrap();
        fb.apply(&r).unwrap();
        assert_eq!(fb.pixel(3, 2).unwrap(), [5, 2, 3, 0xff]);
        // One byte shorter: refused, nothing written.
        r.pixels = r.pixels.slice(..len - 1);
        let mut fb = Framebuffer::new(4, 3).unwrap();
        assert!(matches!(fb.apply(&r), Err(FbError::Short { .. })));
        assert_eq!(fb, Framebuffer::new(4, 3).unwrap());
    }

    #[test]
    fn refuses_bad_strides_and_sizes() {
        let mut r = rect(0, 0, 4, 2, PixelFormat::Bgrx, 0);
        r.stride = 15;
        let mut fb = Framebuffer::new(8, 8).unwrap();
        assert!(matches!(fb.apply(&r), Err(FbError::Stride { .. })));
        let mut r = rect(0, 0, 4, 2, PixelFormat::Bgrx, 0);
        r.x = MAX_DIM - 3;
        assert!(matches!(fb.apply(&r), Err(FbError::TooLarge { .. })));
        let mut r = rect(0, 0, 4, 2, PixelFormat::Bgrx, 0);
        r.y = u32::MAX;
        assert!(matches!(fb.apply(&r), Err(FbError::TooLarge { .. })));
        // A huge claimed size with few bytes: refused before allocating.
        let r = Rect {
            x: 0,
            y: 0,
            w: 4000,
            h: 4000,
            stride: 16000,
            format: PixelFormat::Bgrx,
            pixels: Bytes::from_static(&[0; 64]),
        };
        assert!(matches!(fb.apply(&r), Err(FbError::Short { .. })));
        assert_eq!(fb.width(), 8);
        assert!(Framebuffer::new(MAX_DIM + 1, 1).is_err());
        assert!(fb.resize(1, MAX_DIM + 1).is_err());
        // Empty rectangles are nothing to do.
        let mut r = rect(0, 0, 0, 5, PixelFormat::Bgrx, 0);
        r.pixels = Bytes::new();
        fb.apply(&r).unwrap();
        assert_eq!(fb, Framebuffer::new(8, 8).unwrap());
    }

    #[test]
    fn resize_keeps_shared_pixels_and_grows_for_rects() {
        let mut fb = Framebuffer::new(6, 5).unwrap();
        fb.apply(&rect(0, 0, 6, 5, PixelFormat::Rgbx, 0)).unwrap();
        let before = fb.clone();
        fb.resize(9, 3).unwrap();
        assert_eq!((fb.width(), fb.height(), fb.stride()), (9, 3, 36));
        for j in 0..3 {
            for i in 0..6 {
                assert_eq!(fb.pixel(i, j), before.pixel(i, j));
            }
            for i in 6..9 {
                assert_eq!(fb.pixel(i, j).unwrap(), [0; 4]);
            }
        }
        fb.resize(2, 7).unwrap();
        assert_eq!(fb.pixel(1, 2), before.pixel(1, 2));
        assert_eq!(fb.pixel(1, 4).unwrap(), [0; 4]);
        // A rect outside grows it.
        fb.apply(&rect(10, 12, 3, 2, PixelFormat::Bgr, 1)).unwrap();
        assert_eq!((fb.width(), fb.height()), (13, 14));
        assert_eq!(fb.pixel(1, 2), before.pixel(1, 2));
        assert_eq!(fb.pixel(12, 13).unwrap(), [3, 1, 2, 0xff]);
        fb.resize(0, 0).unwrap();
        assert_eq!(fb.data().len(), 0);
        fb.resize(3, 3).unwrap();
        assert_eq!(fb.pixel(2, 2).unwrap(), [0; 4]);
    }

    #[test]
    fn frames_and_rows() {
        let mut fb = Framebuffer::new(5, 3).unwrap();
        fb.apply(&rect(0, 0, 5, 3, PixelFormat::Bgrx, 0)).unwrap();
        let f = fb.frame(4, 2).unwrap();
        assert_eq!((f.width, f.height, f.stride, f.bgrx.len()), (4, 2, 20, 60));
        assert!(fb.frame(6, 2).is_none());
        assert_eq!(fb.row(1, 2, 2).unwrap(), &[3, 2, 1, 0x80, 4, 2, 2, 0x80]);
        assert!(fb.row(4, 0, 2).is_none());
        assert!(fb.row(0, 3, 1).is_none());
    }
}
