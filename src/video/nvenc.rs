//! NVIDIA devices and their NVENC engines (issue 13: being written; the
//! signatures are fixed).

use std::sync::Arc;

use super::codec::{Backend, CodecError};

/// One NVIDIA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvencDevice {
    pub index: u32,
    pub name: String,
    /// It has an NVENC engine that encodes h264.
    pub has_nvenc: bool,
    /// Why not, or what limits it, in words.
    pub note: Option<String>,
    /// Concurrent encoder sessions it allows (consumer cards cap them);
    /// `None`: not capped.
    pub max_sessions: Option<usize>,
}

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvencReport {
    pub devices: Vec<NvencDevice>,
    /// Why nothing could be asked (no driver library), if so.
    pub unavailable: Option<String>,
}

/// Looks for NVIDIA devices (through the driver's libraries, loaded at run
/// time) and says which have NVENC.
pub fn detect() -> NvencReport {
    NvencReport {
        devices: Vec::new(),
        unavailable: Some("not built yet".into()),
    }
}

/// An encoder backend on `device`.
pub fn backend(device: &NvencDevice) -> Result<Arc<dyn Backend>, CodecError> {
    let _ = device;
    Err(CodecError::Unavailable {
        backend: "nvenc",
        reason: "not built yet".into(),
    })
}
