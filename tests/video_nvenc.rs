//! NVENC (issue 13): detection on whatever machine runs this, and the
//! fallback to CPU workers.
//!
//! Where a device with an NVENC engine is found, its backend (FFmpeg's
//! h264_nvenc, src/video/avcodec.rs) must open and encode a key frame.
//! Elsewhere (CI, the H200 machine: no NVENC engine) that part is reported
//! as skipped, with the reason, and what is checked is that detection says
//! why and that xfwd falls back to x264. The FFmpeg code path itself runs
//! everywhere with FFmpeg's libx264 (tests/video_codec.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xfwd::video::codec::{EncoderConfig, Frame};
use xfwd::video::job::Csc;
use xfwd::video::nvenc;

#[test]
fn detection_reports_and_nvenc_devices_encode() {
    let report = nvenc::detect();
    let lines = nvenc::describe(&report);
    for l in &lines {
        eprintln!("{l}");
    }
    assert!(!lines.is_empty());
    match &report.unavailable {
        Some(why) => {
            assert!(report.devices.is_empty(), "{report:?}");
            assert!(!why.is_empty());
        }
        None => {
            for d in &report.devices {
                if !d.has_nvenc {
                    // An H200 and its kind: the reason is given.
                    let note = d.note.as_deref().unwrap_or("");
                    assert!(note.contains("NVENC"), "{d:?}");
                }
            }
        }
    }
    let with: Vec<_> = report.with_nvenc().collect();
    if with.is_empty() {
        eprintln!(
            "skipped: NVENC encoding (no device with an NVENC engine here: {})",
            lines.join("; ")
        );
        return;
    }
    for d in with {
        let backend = nvenc::backend(d)
            .unwrap_or_else(|e| panic!("device {} ({}) has NVENC: {e}", d.index, d.name));
        let cfg = EncoderConfig {
            width: 640,
            height: 480,
            csc: Csc::Yuv420p,
            quality: 80,
            speed: 80,
        };
        let mut enc = backend.open(&cfg).unwrap();
        let pixels = vec![0x80u8; 640 * 480 * 4];
        let frame = Frame {
            width: 640,
            height: 480,
            stride: 640 * 4,
            bgrx: &pixels,
        };
        let out = enc.encode(&frame, true).unwrap();
        assert!(out.keyframe && !out.data.is_empty());
    }
}

/// `--proxy-video-encoders=auto` on a machine without NVENC: the startup
/// log says what NVENC detection found, and x264 workers serve.
#[test]
fn auto_falls_back_to_the_cpu() {
    if nvenc::detect().with_nvenc().next().is_some() {
        eprintln!("skipped: a device with NVENC is here, auto uses it");
        return;
    }
    if xfwd::video::x264::load().is_err() {
        eprintln!("skipped: no libx264 here (tests/run installs libx264-164)");
        assert!(
            !nix::unistd::geteuid().is_root(),
            "root (CI) must have libx264"
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("xfwd-nvenc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("xfwd.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args([
            "--system-wide=no",
            "--control-socket=none",
            &format!("--bind-tcp=127.0.0.1:{port}"),
            "--proxy-video-encoders=auto",
            "--proxy-video-workers=1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < until {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains("listening"), "{text}");
    assert!(
        text.contains("NVENC"),
        "the NVENC finding is logged: {text}"
    );
    assert!(text.contains("x264: 1 CPU encoder workers"), "{text}");
}
