//! NVIDIA devices and their NVENC engines.
//!
//! Detection asks the driver's NVML (`libnvidia-ml.so.1`, loaded at run
//! time: xfwd builds and runs without it) for the devices, their names and
//! brands, and each one's h264 encoder capacity
//! (`nvmlDeviceGetEncoderCapacity(H264)`). A device that answers
//! `NVML_ERROR_NOT_SUPPORTED` has no NVENC engine: the compute parts (A100,
//! H100, H200) are like that. GeForce and TITAN cards have NVENC but NVIDIA
//! caps their concurrent encoder sessions (3 for years; recent drivers
//! allow 5, then 8): the lowest, 3, is assumed.
//!
//! Encoding on a device with NVENC goes through FFmpeg's `h264_nvenc`
//! ([`super::avcodec`]), which loads `libcuda.so.1` and
//! `libnvidia-encode.so.1` itself and follows NVENC's API versions.
//!
//! Why `unsafe`: calling a C library loaded at run time is FFI. NVML is
//! initialised and shut down around one detection; no handle outlives it.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Arc;

use super::codec::{Backend, CodecError};

/// The driver's management library.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// Concurrent NVENC sessions assumed on consumer (GeForce, TITAN) cards.
pub const CONSUMER_MAX_SESSIONS: usize = 3;

/// Devices asked about at most.
const MAX_DEVICES: u32 = 64;

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

impl NvencReport {
    /// The devices that have an NVENC engine.
    pub fn with_nvenc(&self) -> impl Iterator<Item = &NvencDevice> {
        self.devices.iter().filter(|d| d.has_nvenc)
    }
}

// nvmlReturn_t values (nvml.h).
const NVML_SUCCESS: c_int = 0;
const NVML_ERROR_NOT_SUPPORTED: c_int = 3;
// nvmlEncoderType_t.
const NVML_ENCODER_QUERY_H264: c_int = 0;
// nvmlBrandType_t.
const NVML_BRAND_GEFORCE: c_int = 5;
const NVML_BRAND_TITAN: c_int = 6;
const NVML_BRAND_GEFORCE_RTX: c_int = 15;
const NVML_BRAND_TITAN_RTX: c_int = 16;
/// NVML_DEVICE_NAME_V2_BUFFER_SIZE.
const NAME_BUFFER: usize = 96;

/// An NVML error: its code and, where NVML could say, its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlError {
    pub code: i32,
    pub message: Option<String>,
}

impl NvmlError {
    fn words(&self) -> String {
        if let Some(m) = &self.message {
            return m.to_ascii_lowercase();
        }
        match self.code {
            1 => "uninitialized".into(),
            2 => "invalid argument".into(),
            3 => "not supported".into(),
            4 => "no permission".into(),
            6 => "not found".into(),
            9 => "driver not loaded".into(),
            12 => "library not found".into(),
            13 => "function not found".into(),
            15 => "GPU is lost".into(),
            18 => "driver/library version mismatch".into(),
            c => format!("error {c}"),
        }
    }
}

/// What NVML said about one device: the input of [`device_from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub index: u32,
    /// `None`: NVML did not give it.
    pub name: Option<String>,
    /// nvmlBrandType_t, when NVML gave it.
    pub brand: Option<i32>,
    /// The h264 encoder capacity (percent free), or why not.
    pub encoder_capacity: Result<u32, NvmlError>,
}

/// Whether a device is a consumer card (NVENC sessions capped).
fn is_consumer(brand: Option<i32>, name: &str) -> bool {
    match brand {
        Some(
            NVML_BRAND_GEFORCE | NVML_BRAND_TITAN | NVML_BRAND_GEFORCE_RTX | NVML_BRAND_TITAN_RTX,
        ) => true,
        Some(_) => false,
        None => {
            let n = name.to_ascii_lowercase();
            n.contains("geforce") || n.contains("titan")
        }
    }
}

/// The device `probe` describes.
pub fn device_from(probe: &Probe) -> NvencDevice {
    let name = probe
        .name
        .clone()
        .unwrap_or_else(|| format!("NVIDIA device {}", probe.index));
    let (has_nvenc, mut note) = match &probe.encoder_capacity {
        Ok(_) => (true, None),
        Err(e) if e.code == NVML_ERROR_NOT_SUPPORTED => (
            false,
            Some(format!(
                "{name}: no NVENC engine (nvmlDeviceGetEncoderCapacity: not supported)"
            )),
        ),
        Err(e) => (
            false,
            Some(format!(
                "{name}: NVENC not usable (nvmlDeviceGetEncoderCapacity: {})",
                e.words()
            )),
        ),
    };
    let max_sessions = if has_nvenc && is_consumer(probe.brand, &name) {
        note = Some(format!(
            "{name}: at most {CONSUMER_MAX_SESSIONS} concurrent NVENC sessions (NVIDIA's cap on consumer cards)"
        ));
        Some(CONSUMER_MAX_SESSIONS)
    } else {
        None
    };
    NvencDevice {
        index: probe.index,
        name,
        has_nvenc,
        note,
        max_sessions,
    }
}

/// The startup log lines for `report`.
pub fn describe(report: &NvencReport) -> Vec<String> {
    const CPU: &str = "frames go to CPU workers";
    if let Some(why) = &report.unavailable {
        return vec![format!("nvenc: {why}; {CPU}")];
    }
    if report.devices.is_empty() {
        return vec![format!("nvenc: no NVIDIA device; {CPU}")];
    }
    let none = report.with_nvenc().next().is_none();
    report
        .devices
        .iter()
        .map(|d| {
            let what = match (&d.note, d.has_nvenc) {
                (Some(n), _) => n.clone(),
                (None, true) => format!("{}: NVENC h264 engine", d.name),
                (None, false) => format!("{}: no NVENC engine", d.name),
            };
            if none {
                format!("nvenc: device {} {what}; {CPU}", d.index)
            } else {
                format!("nvenc: device {} {what}", d.index)
            }
        })
        .collect()
}

/// Looks for NVIDIA devices (through the driver's libraries, loaded at run
/// time) and says which have NVENC.
pub fn detect() -> NvencReport {
    detect_from(NVML_LIBRARY)
}

/// [`detect`] with NVML from `path`.
pub fn detect_from(path: &str) -> NvencReport {
    let report = match Nvml::open(path).and_then(|nvml| nvml.probe()) {
        Ok(probes) => NvencReport {
            devices: probes.iter().map(device_from).collect(),
            unavailable: None,
        },
        Err(why) => NvencReport {
            devices: Vec::new(),
            unavailable: Some(why),
        },
    };
    tracing::debug!(target: "xfwd::video", "nvenc detection: {report:?}");
    report
}

/// An encoder backend on `device`: FFmpeg's `h264_nvenc`
/// ([`super::avcodec::nvenc`]), on the CUDA device of the same index (NVML
/// and CUDA number devices alike with `CUDA_DEVICE_ORDER=PCI_BUS_ID`; set
/// it where a machine has several GPUs of different kinds). A device
/// without an NVENC engine is refused without trying.
pub fn backend(device: &NvencDevice) -> Result<Arc<dyn Backend>, CodecError> {
    if !device.has_nvenc {
        return Err(CodecError::Unavailable {
            backend: "nvenc",
            reason: format!(
                "device {} {} has no NVENC engine",
                device.index, device.name
            ),
        });
    }
    super::avcodec::nvenc(device.index, device.max_sessions).map_err(|e| CodecError::Unavailable {
        backend: "nvenc",
        reason: format!("device {} {}: {e}", device.index, device.name),
    })
}

type RawDevice = *mut c_void;

/// NVML, initialised (shut down on drop).
struct Nvml {
    shutdown: unsafe extern "C" fn() -> c_int,
    get_count: unsafe extern "C" fn(*mut c_uint) -> c_int,
    get_handle: unsafe extern "C" fn(c_uint, *mut RawDevice) -> c_int,
    get_name: unsafe extern "C" fn(RawDevice, *mut c_char, c_uint) -> c_int,
    get_encoder_capacity: unsafe extern "C" fn(RawDevice, c_int, *mut c_uint) -> c_int,
    get_brand: Option<unsafe extern "C" fn(RawDevice, *mut c_int) -> c_int>,
    error_string: Option<unsafe extern "C" fn(c_int) -> *const c_char>,
    /// `nvmlInit_v2` succeeded (then `Drop` shuts NVML down).
    initialised: bool,
    /// Loaded while the pointers above are used.
    _lib: libloading::Library,
}

impl Nvml {
    fn open(path: &str) -> Result<Nvml, String> {
        // SAFETY: loading the driver's NVML runs its initialisers, which
        // set up its own state only.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|_| format!("no NVIDIA driver ({path} not found)"))?;
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol's type is its declaration in nvml.h
                // (the field it is stored in); `lib` is kept in the same
                // struct, so it outlives the copy.
                let s = unsafe { lib.get($name) }.map_err(|e| {
                    format!(
                        "{path}: no {} (driver too old?): {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?;
                *s
            }};
        }
        let init: unsafe extern "C" fn() -> c_int = sym!(b"nvmlInit_v2\0");
        // SAFETY: as in `sym!`, optional symbols.
        let get_brand = unsafe { lib.get(b"nvmlDeviceGetBrand\0") }
            .ok()
            .map(|s: libloading::Symbol<unsafe extern "C" fn(RawDevice, *mut c_int) -> c_int>| *s);
        // SAFETY: as above.
        let error_string = unsafe { lib.get(b"nvmlErrorString\0") }
            .ok()
            .map(|s: libloading::Symbol<unsafe extern "C" fn(c_int) -> *const c_char>| *s);
        let mut nvml = Nvml {
            shutdown: sym!(b"nvmlShutdown\0"),
            get_count: sym!(b"nvmlDeviceGetCount_v2\0"),
            get_handle: sym!(b"nvmlDeviceGetHandleByIndex_v2\0"),
            get_name: sym!(b"nvmlDeviceGetName\0"),
            get_encoder_capacity: sym!(b"nvmlDeviceGetEncoderCapacity\0"),
            get_brand,
            error_string,
            initialised: false,
            _lib: lib,
        };
        // SAFETY: no arguments; paired with nvmlShutdown in `Drop` (NVML
        // counts initialisations), which only runs once this succeeded.
        let rc = unsafe { init() };
        if rc != NVML_SUCCESS {
            let e = nvml.error(rc);
            return Err(format!(
                "NVIDIA driver not usable (nvmlInit: {})",
                e.words()
            ));
        }
        nvml.initialised = true;
        Ok(nvml)
    }

    fn error(&self, code: c_int) -> NvmlError {
        let message = self.error_string.and_then(|f| {
            // SAFETY: nvmlErrorString returns a static NUL-terminated
            // string (or NULL), valid for the life of the library.
            let p = unsafe { f(code) };
            if p.is_null() {
                return None;
            }
            // SAFETY: non-NULL, NUL-terminated, static (above).
            Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        });
        NvmlError { code, message }
    }

    fn probe(&self) -> Result<Vec<Probe>, String> {
        let mut count: c_uint = 0;
        // SAFETY: NVML is initialised; a valid out pointer.
        let rc = unsafe { (self.get_count)(&mut count) };
        if rc != NVML_SUCCESS {
            return Err(format!(
                "NVIDIA driver not usable (nvmlDeviceGetCount: {})",
                self.error(rc).words()
            ));
        }
        let mut probes = Vec::new();
        for index in 0..count.min(MAX_DEVICES) {
            let mut dev: RawDevice = std::ptr::null_mut();
            // SAFETY: NVML is initialised; an index below the count; a
            // valid out pointer.
            let rc = unsafe { (self.get_handle)(index, &mut dev) };
            if rc != NVML_SUCCESS || dev.is_null() {
                probes.push(Probe {
                    index,
                    name: None,
                    brand: None,
                    encoder_capacity: Err(self.error(rc)),
                });
                continue;
            }
            let mut buf = [0 as c_char; NAME_BUFFER];
            // SAFETY: a handle NVML gave; the buffer and its length match.
            let rc = unsafe { (self.get_name)(dev, buf.as_mut_ptr(), NAME_BUFFER as c_uint) };
            let name = (rc == NVML_SUCCESS).then(|| {
                // NVML NUL-terminates; the last byte is forced anyway.
                buf[NAME_BUFFER - 1] = 0;
                // SAFETY: a NUL-terminated string within `buf`.
                unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            });
            let brand = self.get_brand.and_then(|f| {
                let mut b: c_int = 0;
                // SAFETY: a handle NVML gave; a valid out pointer.
                (unsafe { f(dev, &mut b) } == NVML_SUCCESS).then_some(b)
            });
            let mut cap: c_uint = 0;
            // SAFETY: a handle NVML gave; a valid out pointer.
            let rc = unsafe { (self.get_encoder_capacity)(dev, NVML_ENCODER_QUERY_H264, &mut cap) };
            let encoder_capacity = if rc == NVML_SUCCESS {
                Ok(cap)
            } else {
                Err(self.error(rc))
            };
            probes.push(Probe {
                index,
                name,
                brand,
                encoder_capacity,
            });
        }
        Ok(probes)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        if self.initialised {
            // SAFETY: NVML was initialised in `open`; no device handle is
            // used after this.
            unsafe {
                (self.shutdown)();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn probe(index: u32, name: &str, brand: Option<i32>, cap: Result<u32, i32>) -> Probe {
        Probe {
            index,
            name: Some(name.into()),
            brand,
            encoder_capacity: cap.map_err(|code| NvmlError {
                code,
                message: None,
            }),
        }
    }

    #[test]
    fn compute_parts_have_no_nvenc() {
        let d = device_from(&probe(0, "NVIDIA H200", Some(2), Err(3)));
        assert!(!d.has_nvenc);
        assert_eq!(d.max_sessions, None);
        assert_eq!(
            d.note.as_deref(),
            Some("NVIDIA H200: no NVENC engine (nvmlDeviceGetEncoderCapacity: not supported)")
        );
        let report = NvencReport {
            devices: vec![d],
            unavailable: None,
        };
        assert_eq!(
            describe(&report),
            ["nvenc: device 0 NVIDIA H200: no NVENC engine (nvmlDeviceGetEncoderCapacity: not supported); frames go to CPU workers"]
        );
        assert!(backend(&report.devices[0]).is_err());
    }

    #[test]
    fn consumer_cards_are_capped() {
        // by brand
        let d = device_from(&probe(1, "NVIDIA GeForce RTX 4090", Some(5), Ok(100)));
        assert!(d.has_nvenc);
        assert_eq!(d.max_sessions, Some(3));
        assert!(d.note.as_deref().unwrap().contains("consumer"), "{d:?}");
        // by name when NVML gives no brand
        let d = device_from(&probe(0, "NVIDIA TITAN V", None, Ok(100)));
        assert_eq!(d.max_sessions, Some(3));
        // professional and data-centre cards: not capped
        for (name, brand) in [
            ("NVIDIA RTX A4000", Some(13)),
            ("NVIDIA L4", Some(2)),
            ("Quadro RTX 5000", None),
        ] {
            let d = device_from(&probe(0, name, brand, Ok(100)));
            assert!(
                d.has_nvenc && d.max_sessions.is_none() && d.note.is_none(),
                "{d:?}"
            );
        }
        // a GeForce whose query failed otherwise: not used, said why
        let d = device_from(&probe(2, "NVIDIA GeForce GTX 1080", Some(5), Err(15)));
        assert!(!d.has_nvenc && d.max_sessions.is_none());
        assert_eq!(
            d.note.as_deref(),
            Some("NVIDIA GeForce GTX 1080: NVENC not usable (nvmlDeviceGetEncoderCapacity: GPU is lost)")
        );
    }

    #[test]
    fn descriptions() {
        let none = NvencReport {
            devices: vec![],
            unavailable: Some("no NVIDIA driver (libnvidia-ml.so.1 not found)".into()),
        };
        assert_eq!(
            describe(&none),
            ["nvenc: no NVIDIA driver (libnvidia-ml.so.1 not found); frames go to CPU workers"]
        );
        assert_eq!(
            describe(&NvencReport::default()),
            ["nvenc: no NVIDIA device; frames go to CPU workers"]
        );
        let mixed = NvencReport {
            devices: vec![
                device_from(&probe(0, "NVIDIA H100", Some(2), Err(3))),
                device_from(&probe(1, "NVIDIA L40S", Some(2), Ok(100))),
                device_from(&Probe {
                    index: 2,
                    name: None,
                    brand: None,
                    encoder_capacity: Ok(50),
                }),
            ],
            unavailable: None,
        };
        assert_eq!(mixed.with_nvenc().count(), 2);
        assert_eq!(
            describe(&mixed),
            [
                "nvenc: device 0 NVIDIA H100: no NVENC engine (nvmlDeviceGetEncoderCapacity: not supported)",
                "nvenc: device 1 NVIDIA L40S: NVENC h264 engine",
                "nvenc: device 2 NVIDIA device 2: NVENC h264 engine",
            ]
        );
    }

    #[test]
    fn nvml_messages_are_used_when_given() {
        let e = NvmlError {
            code: 999,
            message: Some("Unknown Error".into()),
        };
        assert_eq!(e.words(), "unknown error");
        assert_eq!(
            NvmlError {
                code: 42,
                message: None
            }
            .words(),
            "error 42"
        );
    }

    #[test]
    fn no_driver_library() {
        let r = detect_from("libnvidia-ml-missing.so.1");
        assert!(r.devices.is_empty());
        assert_eq!(
            r.unavailable.as_deref(),
            Some("no NVIDIA driver (libnvidia-ml-missing.so.1 not found)")
        );
        // A library that is not NVML.
        let r = detect_from("libc.so.6");
        assert!(r.unavailable.unwrap().contains("nvmlInit_v2"));
        // Whatever this machine has, detection answers.
        let r = detect();
        assert!(r.unavailable.is_some() || r.devices.iter().all(|d| !d.name.is_empty()));
        assert!(!describe(&r).is_empty());
    }

    /// Without an NVENC engine the backend is refused without trying; with
    /// one (here: no driver, so FFmpeg's h264_nvenc cannot open) the reason
    /// is FFmpeg's, and names the device.
    #[test]
    fn backend_says_why_not() {
        let d = device_from(&probe(
            0,
            "NVIDIA H200",
            Some(9),
            Err(NVML_ERROR_NOT_SUPPORTED),
        ));
        match backend(&d) {
            Err(CodecError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "nvenc");
                assert!(reason.contains("no NVENC engine"), "{reason}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a backend on a device without NVENC"),
        }
        if std::path::Path::new("/dev/nvidia0").exists() {
            return;
        }
        let d = device_from(&probe(0, "NVIDIA RTX A4000", Some(13), Ok(100)));
        match backend(&d) {
            Err(CodecError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "nvenc");
                assert!(reason.contains("device 0 NVIDIA RTX A4000"), "{reason}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("NVENC opened without an NVIDIA device"),
        }
    }
}
