//! libx264 (Debian's `libx264.so.164`), loaded at run time, so that xfwd
//! builds and runs where it is missing (issue 13: being written; the
//! signature of [`load`] is fixed).

use std::sync::Arc;

use super::codec::{Backend, CodecError};

/// Loads libx264 and checks its ABI; the backend opens one context per
/// window stream.
pub fn load() -> Result<Arc<dyn Backend>, CodecError> {
    Err(CodecError::Unavailable {
        backend: "x264",
        reason: "not built yet".into(),
    })
}
