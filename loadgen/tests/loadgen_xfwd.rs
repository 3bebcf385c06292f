//! End-to-end: `loadgen server` (a fake session in a socket dir) behind the
//! `xfwd` binary, driven by `loadgen client`. Checks correctness only (no
//! timing assertions): every connection set up, no draw lost, reordered or
//! corrupt, challenges relayed, wrong passwords refused and counted.
//!
//! The xfwd binary is looked for next to loadgen's (`cargo test --workspace`
//! builds both); when it is missing it is built with cargo, same profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::process::Command;

use serde_json::Value;

use common::*;

/// A fake session `:display` and xfwd in front, for test `name`.
fn setup(name: &str, display: &str, session_args: &[&str], tcp_auth: &str) -> Setup {
    Setup::start(Setup::scratch(name), display, session_args, tcp_auth, &[])
}

#[test]
fn draws_arrive_whole_and_in_order_through_xfwd() {
    let s = setup(
        "draws",
        "21",
        &["--draw-size=65536", "--draw-rate=100", "--windows=2"],
        "allow",
    );
    let (code, r) = s.client(
        "draws",
        "u:any",
        "21",
        &["--connections=4", "--duration=3", "--ping-interval=50"],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 4, "{ctx}");
    assert_eq!(n(&r, &["connections_failed"]), 0, "{ctx}");
    assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
    assert_eq!(n(&r, &["lost"]), 0, "{ctx}");
    assert_eq!(n(&r, &["reordered"]), 0, "{ctx}");
    assert_eq!(n(&r, &["corrupt"]), 0, "{ctx}");
    assert!(n(&r, &["bytes"]) > 0, "{ctx}");
    assert!(n(&r, &["draws"]) > 0, "{ctx}");
    assert!(n(&r, &["rtt_us", "count"]) > 0, "pings were echoed: {ctx}");
    assert_eq!(code, 0, "{ctx}");
}

#[test]
fn every_encoder_and_lz4_through_xfwd() {
    let s = setup(
        "encoders",
        "22",
        &["--draw-size=4096", "--draw-rate=50"],
        "allow",
    );
    for (enc, comp) in [
        ("rencodeplus", "lz4"),
        ("rencode", "none"),
        ("bencode", "lz4"),
    ] {
        let (code, r) = s.client(
            enc,
            "u:any",
            "22",
            &[
                "--connections=2",
                "--duration=1",
                "--ping-interval=100",
                &format!("--encoder={enc}"),
                &format!("--compress={comp}"),
            ],
        );
        let ctx = format!("{enc}/{comp}: {r:#}\n{}", s.logs());
        assert_eq!(n(&r, &["connections_ok"]), 2, "{ctx}");
        assert!(n(&r, &["draws"]) > 0, "{ctx}");
        assert_eq!(
            n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
            0,
            "{ctx}"
        );
        assert_eq!(code, 0, "{ctx}");
    }
}

#[test]
fn session_password_challenge_is_relayed_through_xfwd() {
    // xfwd does not authenticate (none): the only challenge comes from the
    // session, through xfwd, and the client must answer it
    let s = setup(
        "relay-auth",
        "23",
        &["--draw-size=4096", "--draw-rate=20", "--password=s3cret"],
        "none",
    );
    let (code, r) = s.client(
        "good",
        "u:s3cret",
        "23",
        &["--connections=2", "--duration=1"],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 2, "{ctx}");
    assert!(n(&r, &["draws"]) > 0, "{ctx}");
    assert_eq!(code, 0, "{ctx}");
    // no password at all: refused by the session, counted as an auth failure
    let (code, r) = s.client("nopass", "u", "23", &["--connections=2", "--duration=1"]);
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 0, "{ctx}");
    assert_eq!(n(&r, &["failures", "auth_failed"]), 2, "{ctx}");
    assert_eq!(code, 3, "{ctx}");
}

#[test]
fn wrong_password_fails_cleanly_and_is_counted() {
    // xfwd challenges (allow: any password) and the session challenges too:
    // the session's check is the one that fails
    let s = setup(
        "wrong-pass",
        "24",
        &["--draw-rate=0", "--password=right"],
        "allow",
    );
    let (code, r) = s.client(
        "wrong",
        "u:wrong",
        "24",
        &["--connections=3", "--duration=2"],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 0, "{ctx}");
    assert_eq!(n(&r, &["connections_failed"]), 3, "{ctx}");
    assert_eq!(n(&r, &["failures", "auth_failed"]), 3, "{ctx}");
    assert_eq!(code, 3, "an error exit, not a panic (101): {ctx}");
    // and the right one, answering two challenges (xfwd's, then the session's)
    let (code, r) = s.client(
        "right",
        "u:right",
        "24",
        &["--connections=3", "--duration=1"],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 3, "{ctx}");
    assert_eq!(code, 0, "{ctx}");
}

#[test]
fn refused_and_missing_sessions_are_counted_not_fatal() {
    // nothing listens on this port
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}-refused", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let out = Command::new(loadgen())
        .arg("client")
        .arg(format!("--connect=tcp://127.0.0.1:{port}/1"))
        .args(["--connections=3", "--duration=1", "--quiet"])
        .arg(format!("--json={}", json.display()))
        .output()
        .unwrap();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(out.status.code(), Some(3), "{r:#}");
    assert_eq!(n(&r, &["failures", "refused"]), 3, "{r:#}");
    let _ = std::fs::remove_dir_all(&dir);

    // xfwd up, but the display asked for does not exist: closed with a reason
    let s = setup("missing", "25", &["--draw-rate=0"], "allow");
    let (code, r) = s.client("missing", "u:x", "99", &["--connections=2", "--duration=3"]);
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 0, "{ctx}");
    assert_eq!(n(&r, &["failures", "closed"]), 2, "{ctx}");
    assert_eq!(code, 3, "{ctx}");
}

#[test]
fn slow_readers_lose_nothing_through_xfwd() {
    // the session draws at max rate, the clients read 2 MB/s: xfwd has to
    // push back on the session, and every draw must still arrive whole
    let s = setup(
        "slow",
        "26",
        &["--draw-size=65536", "--draw-rate=max"],
        "allow",
    );
    let (code, r) = s.client(
        "slow",
        "u:any",
        "26",
        &["--connections=2", "--duration=2", "--read-rate=2000000"],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 2, "{ctx}");
    assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
    assert!(n(&r, &["draws"]) > 0, "{ctx}");
    assert_eq!(
        n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
        0,
        "{ctx}"
    );
    assert_eq!(code, 0, "{ctx}");
}
