//! `--chaos` through xfwd (issue 10): faults injected by the client (reset
//! mid-record, pause, freeze, garbage after the hello) and by the session
//! (killed mid-record, garbage, stop reading). Asserts outcomes, not
//! timings: the well-behaved connections keep every draw intact and none
//! is dropped; the faults xfwd must end are ended (the wait before a fault
//! counts as survived is a hang detector, several times xfwd's ping
//! timeout); the clients of the misbehaving session see only xpra's
//! protocol and intact draws.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn chaos_faults_end_and_spare_the_others() {
    let dir = Setup::scratch("chaos");
    let bad_json = dir.join("bad-session.json");
    let mut bad = start_session(
        &dir,
        "62",
        &[
            "--draw-size=4096",
            "--draw-rate=50",
            "--chaos=1",
            "--seed=5",
            "--chaos-delay=300",
            "--chaos-wait=10",
            &format!("--json={}", bad_json.display()),
        ],
        "bad-session.log",
    );
    let s = Setup::start(
        dir,
        "61",
        &["--draw-size=4096", "--draw-rate=50"],
        "allow",
        &[
            "--ping-interval=1".to_owned(),
            "--ping-timeout=3".to_owned(),
        ],
    );
    let victims = spawn_client(
        &s.dir,
        s.port,
        "62",
        "victims",
        &["--connections=2", "--reconnect", "--duration=10"],
    );
    let (_, r) = s.client(
        "chaos",
        "u:any",
        "61",
        &[
            "--connections=8",
            "--chaos=0.5",
            "--seed=1",
            "--chaos-delay=300",
            "--chaos-pause=400",
            "--chaos-freeze=5",
            "--chaos-wait=10",
            "--duration=10",
        ],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_failed"]), 0, "{ctx}");
    assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
    assert!(n(&r, &["draws"]) > 0, "{ctx}");
    let integrity = n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]);
    assert_eq!(integrity, 0, "{ctx}");
    let chaos = r["chaos"].as_object().expect("a chaos report");
    let injected: u64 = chaos.values().map(|k| n(k, &["injected"])).sum();
    assert!(injected >= 4, "{ctx}");
    for kind in ["garbage", "freeze"] {
        if let Some(k) = chaos.get(kind) {
            assert_eq!(n(k, &["survived"]), 0, "{kind} not ended by xfwd: {ctx}");
        }
    }
    if let Some(k) = chaos.get("reset") {
        assert_eq!(n(k, &["closed"]), n(k, &["injected"]), "{ctx}");
    }

    // the clients of the misbehaving session
    let mut victims = victims;
    let until = Instant::now() + Duration::from_secs(30);
    while victims.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "victims' client did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = report(&s.dir, "victims").expect("victims' report");
    let vctx = format!("{v:#}\n{}", s.logs());
    assert!(
        n(&v, &["connections_dropped"]) > 0,
        "faults happened: {vctx}"
    );
    assert_eq!(n(&v, &["dropped_protocol"]), 0, "{vctx}");
    let integrity = n(&v, &["lost"]) + n(&v, &["reordered"]) + n(&v, &["corrupt"]);
    assert_eq!(integrity, 0, "{vctx}");

    // the session's own account, written on SIGTERM
    let pid = nix::unistd::Pid::from_raw(bad.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while bad.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "the session did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&bad_json).expect("the session's report");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kinds = j["chaos"].as_object().expect("session chaos");
    let injected: u64 = kinds.values().map(|k| n(k, &["injected"])).sum();
    assert!(injected > 0, "{text}");
    for (kind, k) in kinds {
        assert_eq!(
            n(k, &["survived"]),
            0,
            "session {kind}: {text}\n{}",
            s.logs()
        );
    }
}
