//! End-to-end over TLS and WebSocket: `loadgen server` (a fake session in
//! a socket dir) behind the `xfwd` binary with a self-signed certificate,
//! driven by `loadgen client` over `ssl://`, `ws://` and `wss://` on xfwd's
//! one TCP port. Correctness only: every connection set up, no draw lost,
//! reordered or corrupt, pings echoed; certificate checking refuses the
//! self-signed certificate when asked to.
//!
//! Needs `openssl` to make the certificate; skipped (with a message) when
//! it is missing.
//!
//! The xfwd binary is looked for next to loadgen's (`cargo test --workspace`
//! builds both); when it is missing it is built with cargo, same profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;

/// As `Setup::start`, xfwd with a self-signed certificate; `None` (test
/// skipped) when openssl cannot make one.
fn setup(name: &str, display: &str, session_args: &[&str], tcp_auth: &str) -> Option<Setup> {
    let dir = Setup::scratch(&format!("tls-{name}"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: openssl cannot make a self-signed certificate");
        return None;
    }
    let tls = [
        format!("--ssl-cert={}", cert.display()),
        format!("--ssl-key={}", key.display()),
    ];
    Some(Setup::start(dir, display, session_args, tcp_auth, &tls))
}

#[test]
fn draws_arrive_whole_and_in_order_over_ssl_ws_and_wss() {
    let Some(s) = setup(
        "transports",
        "31",
        &["--draw-size=65536", "--draw-rate=100", "--windows=2"],
        "allow",
    ) else {
        return;
    };
    for scheme in ["ssl", "ws", "wss"] {
        let (code, r) = s.client_over(
            scheme,
            scheme,
            "u:any",
            "31",
            &["--connections=3", "--duration=2", "--ping-interval=50"],
        );
        let ctx = format!("{scheme}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 3, "{ctx}");
        assert_eq!(n(&r, &["connections_failed"]), 0, "{ctx}");
        assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
        assert_eq!(n(&r, &["lost"]), 0, "{ctx}");
        assert_eq!(n(&r, &["reordered"]), 0, "{ctx}");
        assert_eq!(n(&r, &["corrupt"]), 0, "{ctx}");
        assert!(n(&r, &["draws"]) > 0, "{ctx}");
        assert!(n(&r, &["rtt_us", "count"]) > 0, "pings were echoed: {ctx}");
        assert_eq!(code, 0, "{ctx}");
    }
}

#[test]
fn bulk_and_challenges_over_wss() {
    // max-rate draws (big writes through both layers) and a session
    // password: xfwd's challenge and the session's, both over wss
    let Some(s) = setup(
        "bulk",
        "32",
        &["--draw-size=262144", "--draw-rate=max", "--password=s3cret"],
        "allow",
    ) else {
        return;
    };
    for scheme in ["wss", "ssl", "ws"] {
        let (code, r) = s.client_over(
            scheme,
            &format!("bulk-{scheme}"),
            "u:s3cret",
            "32",
            &["--connections=2", "--duration=2", "--encoder=rencodeplus"],
        );
        let ctx = format!("{scheme}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 2, "{ctx}");
        assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
        assert!(n(&r, &["draws"]) > 2, "{ctx}");
        assert_eq!(
            n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
            0,
            "{ctx}"
        );
        assert_eq!(code, 0, "{ctx}");
    }
}

#[test]
fn required_verification_refuses_a_self_signed_certificate() {
    let Some(s) = setup("verify", "33", &["--draw-rate=0"], "allow") else {
        return;
    };
    for scheme in ["ssl", "wss"] {
        let (code, r) = s.client_over(
            scheme,
            &format!("verify-{scheme}"),
            "u:x",
            "33",
            &[
                "--connections=2",
                "--duration=1",
                "--ssl-server-verify-mode=required",
            ],
        );
        let ctx = format!("{scheme}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 0, "{ctx}");
        assert_eq!(n(&r, &["failures", "protocol"]), 2, "{ctx}");
        assert_eq!(code, 3, "an error exit, not a panic: {ctx}");
    }
}
