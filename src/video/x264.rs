//! libx264 (Debian's `libx264.so.164`), loaded at run time (issue 13:
//! being written).
