//! `loadgen server --raw-frames` and `loadgen client --video`, straight
//! and through the `xfwd` binary: raw BGRX frames paced by acks, what each
//! side counted (the client reads the session's `--stats-file`), no timing
//! assertions.
//!
//! Through xfwd the connection is relayed until the engine transcodes
//! ([`TRANSCODE`]); then the client must get h264 for the window and fewer
//! pixel bytes than the session sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use serde_json::Value;

use common::*;

/// The xfwd option that turns transcoding on; `XFWD_LOADGEN_VIDEO_FLAG`
/// (`none` or empty: off) runs the same test as a plain relay.
const TRANSCODE: Option<&str> = Some("--proxy-video-encoders=auto");

fn transcode_flag() -> Option<String> {
    match std::env::var("XFWD_LOADGEN_VIDEO_FLAG") {
        Ok(v) if v.is_empty() || v == "none" => None,
        Ok(v) => Some(v),
        Err(_) => TRANSCODE.map(str::to_owned),
    }
}

fn session_args(stats: &std::path::Path) -> Vec<String> {
    vec![
        "--raw-frames".into(),
        "--frame-size=320x240".into(),
        "--draw-rate=20".into(),
        "--window=4".into(),
        format!("--stats-file={}", stats.display()),
    ]
}

/// What both sides must agree on, relayed or not.
fn check_common(r: &Value, ctx: &str) {
    let v = &r["video"];
    let se = &v["session"];
    assert_eq!(n(r, &["connections_ok"]), 1, "{ctx}");
    assert_eq!(n(r, &["connections_dropped"]), 0, "{ctx}");
    assert_eq!(n(r, &["corrupt"]), 0, "{ctx}");
    assert!(n(v, &["frames"]) > 0, "frames arrived: {ctx}");
    assert_eq!(
        n(r, &["acks_sent"]),
        n(v, &["frames"]),
        "every draw acked: {ctx}"
    );
    assert_eq!(se["complete"], true, "the session saw the close: {ctx}");
    assert_eq!(n(se, &["connections"]), 1, "{ctx}");
    assert!(
        n(se, &["frames"]) >= n(v, &["frames"]),
        "the session sent at least what arrived: {ctx}"
    );
    assert!(n(se, &["acked"]) > 0, "{ctx}");
    assert!(n(se, &["ack_us", "count"]) > 0, "{ctx}");
    assert_eq!(
        n(se, &["data_bytes"]),
        n(se, &["frames"]) * 320 * 240 * 4,
        "whole frames: {ctx}"
    );
}

#[test]
fn raw_frames_straight_to_a_video_client() {
    let dir = Setup::scratch("video-direct");
    let stats = dir.join("stats.json");
    let args = session_args(&stats);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut session = start_session(&dir, "31", &args, "session.log");
    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let socket = dir.join("sockets").join(format!("{hostname}-31"));
    let json = dir.join("direct.json");
    let out = Command::new(loadgen())
        .arg("client")
        .arg(format!("--connect=unix:{}", socket.display()))
        .arg(format!("--json={}", json.display()))
        .arg(format!("--session-stats={}", stats.display()))
        .args(["--video", "--quiet", "--duration=2", "--threads=1"])
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let r: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let ctx = format!(
        "{r:#}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        session.log()
    );
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    check_common(&r, &ctx);
    let v = &r["video"];
    assert_eq!(n(v, &["by_coding", "rgb24"]), n(v, &["frames"]), "{ctx}");
    assert!(n(v, &["latency_us", "count"]) > 0, "{ctx}");
    // straight: the client got the session's bytes (but the frames still
    // in flight at the end)
    assert!(
        n(v, &["data_bytes"]) <= n(v, &["session", "data_bytes"]),
        "{ctx}"
    );
    assert_eq!(
        n(v, &["data_bytes"]),
        n(v, &["frames"]) * 320 * 240 * 4,
        "{ctx}"
    );
    let _ = session.child.try_wait();
}

#[test]
fn raw_frames_through_xfwd() {
    let flag = transcode_flag();
    let dir = Setup::scratch("video-xfwd");
    let stats = dir.join("stats.json");
    let args = session_args(&stats);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Setup::start(
        dir,
        "32",
        &args,
        "allow",
        &flag.iter().cloned().collect::<Vec<_>>(),
    );
    let stats_arg = format!("--session-stats={}", stats.display());
    let (code, r) = s.client(
        "video",
        "u:any",
        "32",
        &["--video", "--duration=3", &stats_arg],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(code, 0, "{ctx}");
    check_common(&r, &ctx);
    let v = &r["video"];
    if flag.is_some() {
        // transcoded: h264 for the window, fewer pixel bytes than sent
        assert!(n(v, &["by_coding", "h264"]) > 0, "{ctx}");
        assert!(
            n(v, &["data_bytes"]) < n(v, &["session", "data_bytes"]),
            "{ctx}"
        );
    } else {
        // relayed: the session's own draws, timed by their option
        assert_eq!(n(v, &["by_coding", "rgb24"]), n(v, &["frames"]), "{ctx}");
        assert!(n(v, &["latency_us", "count"]) > 0, "{ctx}");
        eprintln!("note: transcoding off (TRANSCODE in loadgen/tests/loadgen_video.rs)");
    }
}
