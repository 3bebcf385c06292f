//! Interop: xpra 3.1.3's auth data and sessions through xfwd.
//!
//! A database made by xpra's own `sqlite_auth.py` (and a multifile) sends
//! each user to the `tcp://` session it names; a target that wants a password
//! is answered with the credentials in its URI; a wrong password fails with
//! an auth error while xfwd keeps serving. Real `xpra start --bind-tcp`
//! sessions, real `xpra attach --password-file` clients under Xvfb.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const SQLITE_AUTH: &str = "/usr/lib/python3/dist-packages/xpra/server/auth/sqlite_auth.py";

fn sqlite_tool(db: &Path, args: &[&str]) {
    let ok = Command::new("/usr/bin/python3")
        .arg(SQLITE_AUTH)
        .arg(db)
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "sqlite_auth.py {args:?} failed");
}

/// Two sessions reachable over TCP: the second wants a password.
struct Pair {
    open: Session,
    locked: Session,
    open_port: u16,
    locked_port: u16,
}

fn two_sessions(dir: &Path, from: u32) -> Pair {
    let open_port = free_port();
    let open = Session::start_with(
        free_display(from),
        dir,
        &[
            &format!("--bind-tcp=127.0.0.1:{open_port}"),
            "--tcp-auth=none",
        ],
    );
    let locked_port = free_port();
    let pw = dir.join("session-password.txt");
    std::fs::write(&pw, "s3ssion").unwrap();
    let locked = Session::start_with(
        free_display(open.display + 1),
        dir,
        &[
            &format!("--bind-tcp=127.0.0.1:{locked_port}"),
            &format!("--tcp-auth=file,filename={}", pw.display()),
        ],
    );
    Pair {
        open,
        locked,
        open_port,
        locked_port,
    }
}

#[test]
fn sqlite_database_from_xpra_routes_users_to_their_sessions() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("sqlite");
    let pair = two_sessions(&dir, 211);
    let db = dir.join("xpra-auth.sdb");
    sqlite_tool(&db, &["create"]);
    let open_target = format!("tcp://127.0.0.1:{}/", pair.open_port);
    let locked_target = format!("tcp://root:s3ssion@127.0.0.1:{}/", pair.locked_port);
    sqlite_tool(
        &db,
        &["add", "foo", "bar", "nobody", "nobody", &open_target],
    );
    sqlite_tool(
        &db,
        &[
            "add",
            "moo",
            "cow",
            "nobody",
            "nobody",
            &locked_target,
            "",
            "compression=0",
        ],
    );
    let mut xfwd = Xfwd::start(
        &dir,
        &[&format!("--tcp-auth=sqlite,filename={}", db.display())],
    );

    attach_and_see_xterm(xfwd.port, "foo", "bar", &dir, pair.locked.display + 1);
    xfwd.wait_log(
        &format!(
            "result=ok target=\"session tcp://127.0.0.1:{}/",
            pair.open_port
        ),
        Duration::from_secs(5),
    );
    attach_and_see_xterm(xfwd.port, "moo", "cow", &dir, pair.locked.display + 1);
    let log = xfwd.log();
    assert!(log.contains(&format!(":{}", pair.locked_port)), "{log}");
    assert!(
        !log.contains("s3ssion"),
        "a target password reached the log:\n{log}"
    );

    wrong_password_fails(xfwd.port, "foo", &dir, pair.locked.display + 1);
    wrong_password_fails(xfwd.port, "nobody-known", &dir, pair.locked.display + 1);
    assert!(xfwd.alive(), "xfwd must keep serving");
    let _ = (&pair.open, &pair.locked);
}

#[test]
fn multifile_routes_and_answers_the_target_challenge() {
    if !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("multifile");
    let pair = two_sessions(&dir, 231);
    let users = dir.join("users.txt");
    std::fs::write(
        &users,
        format!(
            "# username|password|uid|gid|displays|env_options|session_options\n\
             foo|bar|nobody|nobody|tcp://127.0.0.1:{}/||\n\
             moo|cow|nobody|nobody|tcp://root:s3ssion@127.0.0.1:{}/||\n",
            pair.open_port, pair.locked_port
        ),
    )
    .unwrap();
    let mut xfwd = Xfwd::start(
        &dir,
        &[&format!(
            "--tcp-auth=multifile,filename={}",
            users.display()
        )],
    );
    attach_and_see_xterm(xfwd.port, "moo", "cow", &dir, pair.locked.display + 1);
    attach_and_see_xterm(xfwd.port, "foo", "bar", &dir, pair.locked.display + 1);
    wrong_password_fails(xfwd.port, "moo", &dir, pair.locked.display + 1);
    assert!(xfwd.alive());
}
