//! Colour conversion, BGRX to planar YUV, for the h264 encoders.
//!
//! xpra's 3.1.3 client decodes h264 with `dec_avcodec2` into `YUV420P` or
//! `YUV444P` planes and turns them into RGB with `csc_swscale` (default
//! colour details: ITU-R BT.601, limited "TV" range) or with its OpenGL
//! shader (`client/gl/gl_colorspace_conversions.py`: the BT.601
//! limited-range matrix, `1.1643835 * (Y - 16)`, `1.5960271 * (V - 128)`
//! ...). So the planes made here are BT.601, limited range (Y 16..=235,
//! U/V 16..=240), which is [`ColorSpace::Bt601`] of AWS's
//! `dcv-color-primitives` (SIMD, AVX2 where the CPU has it).
//!
//! The source is BGRX: 4 bytes a pixel, B, G, R then an ignored byte, in
//! memory (dcv's `Bgra`; the fourth byte is not read into the result).

use dcp::{ColorSpace, ImageFormat, PixelFormat};
use dcv_color_primitives as dcp;

use super::codec::{CodecError, Frame};
use super::job::Csc;

/// The largest width or height converted (xpra's window limit here).
pub const MAX_DIMENSION: u32 = 4096;

/// Planar YUV, 8 bits, BT.601 limited range: `y` is `height` rows of
/// `strides[0]` bytes, `u` and `v` `chroma_height` rows of `strides[1]`
/// (`strides[2]`) bytes. The buffers are kept between frames: converting
/// a frame of the same size allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Yuv {
    width: u32,
    height: u32,
    csc: Option<Csc>,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// Bytes per row of `y`, `u`, `v`.
    pub strides: [usize; 3],
}

impl Yuv {
    /// Empty planes (sized by the first [`convert`]).
    pub fn new() -> Yuv {
        Yuv::default()
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The sampling of the last conversion, if any.
    pub fn csc(&self) -> Option<Csc> {
        self.csc
    }

    /// Rows in the `u` and `v` planes.
    pub fn chroma_height(&self) -> u32 {
        match self.csc {
            Some(Csc::Yuv420p) => self.height / 2,
            _ => self.height,
        }
    }

    /// Sizes the planes for `width` x `height` in `csc` (tight rows).
    fn shape(&mut self, width: u32, height: u32, csc: Csc) {
        if self.width == width && self.height == height && self.csc == Some(csc) {
            return;
        }
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = match csc {
            Csc::Yuv420p => (w / 2, h / 2),
            Csc::Yuv444p => (w, h),
        };
        self.y.resize(w * h, 0);
        self.u.resize(cw * ch, 0);
        self.v.resize(cw * ch, 0);
        self.strides = [w, cw, cw];
        self.width = width;
        self.height = height;
        self.csc = Some(csc);
    }
}

/// Checks that `frame` can be read as `width` x `height` BGRX pixels in
/// `csc`: sizes in 1..=[`MAX_DIMENSION`] (even for 4:2:0), a stride of at
/// least `width * 4` bytes and `stride * height` bytes of data.
pub fn check_frame(frame: &Frame<'_>, csc: Csc) -> Result<(), CodecError> {
    let (w, h) = (frame.width, frame.height);
    if w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION {
        return Err(CodecError::BadFrame(format!(
            "{w}x{h}: sizes must be 1..={MAX_DIMENSION}"
        )));
    }
    if csc == Csc::Yuv420p && (w % 2 != 0 || h % 2 != 0) {
        return Err(CodecError::BadFrame(format!(
            "{w}x{h}: 4:2:0 needs an even width and height"
        )));
    }
    let row = w as usize * 4;
    if frame.stride < row {
        return Err(CodecError::BadFrame(format!(
            "stride {} is less than {w} pixels of 4 bytes",
            frame.stride
        )));
    }
    let need = frame.stride.checked_mul(h as usize).ok_or_else(|| {
        CodecError::BadFrame(format!("stride {} x {h} rows overflows", frame.stride))
    })?;
    if frame.bgrx.len() < need {
        return Err(CodecError::BadFrame(format!(
            "{} bytes of pixels, {h} rows of {} bytes need {need}",
            frame.bgrx.len(),
            frame.stride
        )));
    }
    Ok(())
}

/// Converts the `frame.width` x `frame.height` BGRX pixels of `frame` to
/// planar YUV in `out` (resized only when the size or sampling changes).
pub fn convert(frame: &Frame<'_>, csc: Csc, out: &mut Yuv) -> Result<(), CodecError> {
    check_frame(frame, csc)?;
    out.shape(frame.width, frame.height, csc);
    let src_format = ImageFormat {
        pixel_format: PixelFormat::Bgra,
        color_space: ColorSpace::Rgb,
        num_planes: 1,
    };
    let dst_format = ImageFormat {
        pixel_format: match csc {
            Csc::Yuv420p => PixelFormat::I420,
            Csc::Yuv444p => PixelFormat::I444,
        },
        color_space: ColorSpace::Bt601,
        num_planes: 3,
    };
    // Only the rows converted: dcv checks `stride * height` against it.
    let src = &frame.bgrx[..frame.stride * frame.height as usize];
    let strides = out.strides;
    dcp::convert_image(
        frame.width,
        frame.height,
        &src_format,
        Some(&[frame.stride]),
        &[src],
        &dst_format,
        Some(&strides),
        &mut [&mut out.y[..], &mut out.u[..], &mut out.v[..]],
    )
    .map_err(|e| {
        CodecError::BadFrame(format!(
            "BGRX to {} at {}x{}: {e}",
            csc.name(),
            frame.width,
            frame.height
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, stride: usize, bgr: [u8; 3]) -> Vec<u8> {
        let mut v = vec![0u8; stride * h as usize];
        for row in v.chunks_mut(stride) {
            for px in row[..w as usize * 4].chunks_mut(4) {
                px[..3].copy_from_slice(&bgr);
                px[3] = 0x5a; // X: ignored
            }
        }
        v
    }

    fn frame(w: u32, h: u32, stride: usize, data: &[u8]) -> Frame<'_> {
        Frame {
            width: w,
            height: h,
            stride,
            bgrx: data,
        }
    }

    fn near(a: u8, b: u8) -> bool {
        a.abs_diff(b) <= 1
    }

    /// BT.601 limited range of the reference formulas.
    fn reference(r: f64, g: f64, b: f64) -> (u8, u8, u8) {
        let y = 0.257 * r + 0.504 * g + 0.098 * b + 16.0;
        let u = -0.148 * r - 0.291 * g + 0.439 * b + 128.0;
        let v = 0.439 * r - 0.368 * g - 0.071 * b + 128.0;
        (y.round() as u8, u.round() as u8, v.round() as u8)
    }

    #[test]
    fn limited_range_bt601_colours() {
        for (bgr, csc) in [
            ([255, 255, 255], Csc::Yuv420p),
            ([0, 0, 0], Csc::Yuv444p),
            ([0, 0, 255], Csc::Yuv420p),
            ([0, 255, 0], Csc::Yuv444p),
            ([255, 0, 0], Csc::Yuv420p),
            ([40, 120, 200], Csc::Yuv444p),
        ] {
            let data = solid(16, 8, 64, bgr);
            let mut out = Yuv::new();
            convert(&frame(16, 8, 64, &data), csc, &mut out).unwrap();
            let (y, u, v) = reference(bgr[2] as f64, bgr[1] as f64, bgr[0] as f64);
            assert!(
                out.y.iter().all(|&p| near(p, y)),
                "{bgr:?} y {:?}",
                &out.y[..4]
            );
            assert!(
                out.u.iter().all(|&p| near(p, u)),
                "{bgr:?} u {:?}",
                &out.u[..4]
            );
            assert!(
                out.v.iter().all(|&p| near(p, v)),
                "{bgr:?} v {:?}",
                &out.v[..4]
            );
        }
        // The range ends: white is Y 235, black Y 16, grey chroma 128.
        let data = solid(4, 2, 16, [255, 255, 255]);
        let mut out = Yuv::new();
        convert(&frame(4, 2, 16, &data), Csc::Yuv420p, &mut out).unwrap();
        assert!(near(out.y[0], 235) && near(out.u[0], 128) && near(out.v[0], 128));
    }

    #[test]
    fn plane_shapes_and_reuse() {
        let data = solid(64, 32, 64 * 4 + 12, [1, 2, 3]);
        let mut out = Yuv::new();
        convert(&frame(64, 32, 64 * 4 + 12, &data), Csc::Yuv420p, &mut out).unwrap();
        assert_eq!(out.strides, [64, 32, 32]);
        assert_eq!(
            (out.y.len(), out.u.len(), out.v.len()),
            (64 * 32, 32 * 16, 32 * 16)
        );
        assert_eq!(out.chroma_height(), 16);
        let ptr = out.y.as_ptr();
        convert(&frame(64, 32, 64 * 4 + 12, &data), Csc::Yuv420p, &mut out).unwrap();
        assert_eq!(out.y.as_ptr(), ptr, "same size: no new buffer");

        // 4:4:4 at an odd size; a larger framebuffer (the top-left part).
        let data = solid(100, 60, 400, [9, 99, 199]);
        convert(&frame(41, 27, 400, &data), Csc::Yuv444p, &mut out).unwrap();
        assert_eq!(out.strides, [41, 41, 41]);
        assert_eq!((out.y.len(), out.u.len()), (41 * 27, 41 * 27));
        assert_eq!(
            (out.width(), out.height(), out.csc()),
            (41, 27, Some(Csc::Yuv444p))
        );
    }

    #[test]
    fn chroma_is_averaged_in_420() {
        // Left column pair red, right pair blue: each 2x2 block is uniform.
        let (w, h) = (4u32, 2u32);
        let mut data = vec![0u8; 16 * 2];
        for row in data.chunks_mut(16) {
            for (i, px) in row.chunks_mut(4).enumerate() {
                let bgr = if i < 2 { [0, 0, 255] } else { [255, 0, 0] };
                px[..3].copy_from_slice(&bgr);
            }
        }
        let mut out = Yuv::new();
        convert(&frame(w, h, 16, &data), Csc::Yuv420p, &mut out).unwrap();
        let (_, ur, vr) = reference(255.0, 0.0, 0.0);
        let (_, ub, vb) = reference(0.0, 0.0, 255.0);
        assert!(
            near(out.u[0], ur) && near(out.v[0], vr),
            "{:?} {:?}",
            out.u,
            out.v
        );
        assert!(
            near(out.u[1], ub) && near(out.v[1], vb),
            "{:?} {:?}",
            out.u,
            out.v
        );
    }

    #[test]
    fn refuses_bad_frames() {
        let data = vec![0u8; 64 * 4 * 8];
        let mut out = Yuv::new();
        let bad = |r: Result<(), CodecError>| matches!(r, Err(CodecError::BadFrame(_)));
        // odd 4:2:0
        assert!(bad(convert(
            &frame(15, 8, 256, &data),
            Csc::Yuv420p,
            &mut out
        )));
        assert!(bad(convert(
            &frame(16, 7, 256, &data),
            Csc::Yuv420p,
            &mut out
        )));
        // zero, too large
        assert!(bad(convert(
            &frame(0, 8, 256, &data),
            Csc::Yuv444p,
            &mut out
        )));
        assert!(bad(convert(
            &frame(4098, 2, 1 << 15, &data),
            Csc::Yuv444p,
            &mut out
        )));
        // stride shorter than a row
        assert!(bad(convert(
            &frame(64, 8, 255, &data),
            Csc::Yuv444p,
            &mut out
        )));
        // too few bytes: 9 rows of 256
        assert!(bad(convert(
            &frame(64, 9, 256, &data),
            Csc::Yuv444p,
            &mut out
        )));
        // stride * height overflows
        assert!(bad(convert(
            &frame(64, 8, usize::MAX / 4, &data),
            Csc::Yuv444p,
            &mut out
        )));
        // exactly enough
        convert(&frame(64, 8, 256, &data), Csc::Yuv444p, &mut out).unwrap();
    }
}
