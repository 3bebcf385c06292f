//! Capabilities: whether a client can decode what the workers make, and
//! the hello the session gets when its draws are transcoded.
//!
//! (issue 13: being written; the signatures are fixed.)

use crate::wire::Value;

use super::job::{Csc, PixelFormat};

/// What a transcoded client takes, read from its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVideo {
    /// Sampling for h264 frames (4:2:0 when the client lists it for h264,
    /// else 4:4:4).
    pub csc: Csc,
    /// The largest video size it decodes (`encoding.video_max_size`).
    pub max_width: u32,
    pub max_height: u32,
    /// The format of lossless rectangles sent to it.
    pub rgb_format: PixelFormat,
    /// It takes lz4-compressed rgb (`encoding.rgb_lz4`).
    pub lz4: bool,
}

/// `Some` when the client's hello says it decodes h264 in a sampling the
/// workers make; `None`: the connection is relayed as it is.
pub fn client_video(client_caps: &Value) -> Option<ClientVideo> {
    let _ = client_caps;
    None
}

/// Restricts the hello the session gets (the client's capabilities, as
/// `proxy::upstream_hello` made them) to raw rgb draws the proxy can read:
/// no `mmap*`, no `aliases*`, encodings `rgb` only (core `rgb24`,
/// `rgb32`), no pixel compression, no scrolling, no video scaling, no
/// delta.
pub fn restrict_upstream_hello(caps: &mut Vec<(Value, Value)>) {
    let _ = caps;
}
