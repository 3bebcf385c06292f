//! Colour conversion, BGRX to planar YUV (issue 13: being written).
