//! Interop: Debian's real xpra 3.1.3 one-shot clients (`xpra version`,
//! `xpra id`, `xpra info`, `xpra connect-test`, `xpra stop`) against xfwd,
//! which answers them itself: the version before any auth, the rest after
//! the listener's auth (a password file answers the challenge), listing
//! only what the authenticated user may reach. Exit codes and output are
//! the real client's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const SQLITE_AUTH: &str = "/usr/lib/python3/dist-packages/xpra/server/auth/sqlite_auth.py";

/// Runs `xpra ARGS...` (at most 60 s): its exit code and everything it
/// printed (the info lines go to the log, on stderr).
fn xpra(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg("xpra")
        .args(args)
        .env("PATH", SYSTEM_PATH)
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("xpra {args:?} -> {:?}\n{text}", out.status.code());
    (out.status.code(), text)
}

fn password_file(dir: &Path, name: &str, pw: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pw).unwrap();
    format!("--password-file={}", p.display())
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

#[test]
fn version_id_and_info_on_a_file_listener() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("oneshot-file");
    let session = Session::start(free_display(251), &dir);
    let pw = dir.join("proxy-password.txt");
    std::fs::write(&pw, "sesame").unwrap();
    let mut xfwd = Xfwd::start(
        &dir,
        &[&format!("--tcp-auth=file,filename={}", pw.display())],
    );
    let url = format!("tcp://alice@127.0.0.1:{}/", xfwd.port);

    // version: no auth at all, not even with the file module.
    let (code, out) = xpra(&["version", &format!("tcp://127.0.0.1:{}/", xfwd.port)]);
    assert_eq!(code, Some(0), "{out}");
    let version = format!("3.1-xfwd-{}", env!("CARGO_PKG_VERSION"));
    assert!(lines(&out).contains(&version.as_str()), "{out}");

    // id and info: after the challenge, answered from the password file.
    let good = password_file(&dir, "good.pw", "sesame");
    let (code, out) = xpra(&["id", &good, &url]);
    assert_eq!(code, Some(0), "{out}");
    let l = lines(&out);
    assert!(l.contains(&"session-type=proxy"), "{out}");
    assert!(l.iter().any(|x| x.starts_with("uuid=")), "{out}");
    assert!(l.contains(&"platform=linux"), "{out}");

    let (code, out) = xpra(&["info", &good, &url]);
    assert_eq!(code, Some(0), "{out}");
    let l = lines(&out);
    for want in [
        "mode=proxy",
        "session-type=proxy",
        "user=alice",
        "shards=2",
        "sessions=1",
        &format!("sessions.0.display=:{}", session.display),
        "sessions.0.type=local",
        "type=xfwd",
    ] {
        assert!(l.contains(&want), "{want:?} missing:\n{out}");
    }
    assert!(l.iter().any(|x| x.starts_with("elapsed_time=")), "{out}");

    // The same uuid in both: xfwd's instance.
    let uuid = |t: &str| {
        t.lines()
            .find_map(|x| x.trim().strip_prefix("uuid=").map(str::to_owned))
            .unwrap()
    };
    assert_eq!(uuid(&out), uuid(&xpra(&["id", &good, &url]).1));

    // A wrong password: the normal refusal, a failing exit code.
    let bad = password_file(&dir, "bad.pw", "not-it");
    let (code, out) = xpra(&["info", &bad, &url]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(!out.contains("mode=proxy"), "{out}");

    // No password at all: the client is told one is needed.
    let (code, out) = xpra(&["info", &url]);
    assert_ne!(code, Some(0), "{out}");

    // stop is refused with its reason; nothing stops.
    let (_, out) = xpra(&["stop", &good, &url]);
    assert!(
        out.contains("cannot stop proxy server from a 'tcp' connection"),
        "{out}"
    );
    assert!(xfwd.alive(), "xfwd must keep serving");
    let log = xfwd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("one-shot request answered") && l.contains("\"info\"")),
        "{log}"
    );
    assert!(
        !log.contains("target=\"session"),
        "a one-shot was routed:\n{log}"
    );
}

#[test]
fn info_lists_only_the_users_own_targets() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("oneshot-sqlite");
    let db = dir.join("xpra-auth.sdb");
    let tool = |args: &[&str]| {
        let ok = Command::new("/usr/bin/python3")
            .arg(SQLITE_AUTH)
            .arg(&db)
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "sqlite_auth.py {args:?} failed");
    };
    // Nothing listens there: info lists, it never connects.
    let (alice_port, bob_port) = (free_port(), free_port());
    let alice_target = format!("tcp://127.0.0.1:{alice_port}/7");
    let bob_target = format!("tcp://root:b0bsecret@127.0.0.1:{bob_port}/8");
    tool(&["create"]);
    tool(&["add", "alice", "apw", "nobody", "nobody", &alice_target]);
    tool(&["add", "bob", "bpw", "nobody", "nobody", &bob_target]);
    let xfwd = Xfwd::start(
        &dir,
        &[&format!("--tcp-auth=sqlite,filename={}", db.display())],
    );

    let apw = password_file(&dir, "alice.pw", "apw");
    let (code, out) = xpra(&[
        "info",
        &apw,
        &format!("tcp://alice@127.0.0.1:{}/", xfwd.port),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let l = lines(&out);
    assert!(l.contains(&"mode=proxy"), "{out}");
    assert!(l.contains(&"user=alice"), "{out}");
    assert!(l.contains(&"sessions=1"), "{out}");
    assert!(l.contains(&"sessions.0.display=:7"), "{out}");
    assert!(l.contains(&"sessions.0.type=tcp"), "{out}");
    assert!(
        l.contains(&format!("sessions.0.uri={alice_target}").as_str()),
        "{out}"
    );
    assert!(
        !out.contains(&bob_port.to_string()),
        "bob's target shown:\n{out}"
    );
    assert!(
        !l.iter()
            .any(|x| x.contains("bob") || x.ends_with("display=:8")),
        "{out}"
    );

    let (code, out) = xpra(&["id", &apw, &format!("tcp://alice@127.0.0.1:{}/", xfwd.port)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(lines(&out).contains(&"session-type=proxy"), "{out}");

    let bpw = password_file(&dir, "bob.pw", "bpw");
    let (code, out) = xpra(&["info", &bpw, &format!("tcp://bob@127.0.0.1:{}/", xfwd.port)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{bob_port}/8")), "{out}");
    assert!(
        !out.contains("b0bsecret"),
        "a target password shown:\n{out}"
    );
    assert!(!out.contains(&alice_port.to_string()), "{out}");

    // Alice with bob's password is refused.
    let (code, out) = xpra(&["id", &bpw, &format!("tcp://alice@127.0.0.1:{}/", xfwd.port)]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    let log = xfwd.log();
    assert!(!log.contains("target=\"session"), "{log}");
}

#[test]
fn none_and_allow_answer_a_client_that_has_a_password() {
    // A 3.1 client with a password exits with "the server did not request
    // our password" (code 11) unless it is challenged: xfwd challenges for
    // nothing when no module asks.
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("oneshot-none");
    let pwf = password_file(&dir, "any.pw", "anything");
    for auth in ["none", "allow"] {
        let xfwd = Xfwd::start(&dir, &[&format!("--tcp-auth={auth}")]);
        let url = format!("tcp://alice@127.0.0.1:{}/", xfwd.port);
        let (code, out) = xpra(&["info", &pwf, &url]);
        assert_eq!(code, Some(0), "{auth}: {out}");
        assert!(lines(&out).contains(&"mode=proxy"), "{auth}: {out}");
        let (code, out) = xpra(&["id", &pwf, &url]);
        assert_eq!(code, Some(0), "{auth}: {out}");
        assert!(lines(&out).contains(&"session-type=proxy"), "{auth}: {out}");
        let (code, out) = xpra(&["connect-test", &pwf, &url]);
        assert_eq!(code, Some(0), "{auth}: {out}");
        // version with a password: challenged for nothing, answered.
        let (code, out) = xpra(&["version", &pwf, &url]);
        assert_eq!(code, Some(0), "{auth}: {out}");
        assert!(out.contains("3.1-xfwd-"), "{auth}: {out}");
        // screenshot: not a proxy's business.
        let shot = dir.join("shot.png");
        let (code, out) = xpra(&["screenshot", shot.to_str().unwrap(), &pwf, &url]);
        assert_ne!(code, Some(0), "{auth}: {out}");
        assert!(out.contains("invalid request"), "{auth}: {out}");
        assert!(!shot.exists());
    }
}
