//! `xfwd auth sqlite` and xpra 3.1.3's `sqlite_auth.py` manage the same
//! database: what one writes, the other lists (byte for byte the same
//! output), authenticates and edits; xfwd's `sqlite` module reads both.
//!
//! Needs Debian's xpra and `/usr/bin/python3`: without them these tests
//! fail, unless `XFWD_SKIP_INTEROP=1` is set. `XFWD_INTEROP_PYTHON`
//! overrides the interpreter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{python, skip_interop};

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use xfwd::auth::{
    client_answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, PeerInfo, Step,
};

const XPRA_TOOL: &str = "/usr/lib/python3/dist-packages/xpra/server/auth/sqlite_auth.py";

fn xpra(db: &str, args: &[&str]) -> Output {
    assert!(
        std::path::Path::new(XPRA_TOOL).exists(),
        "{XPRA_TOOL} is missing: install Debian's xpra (apt-get install xpra) \
         or set XFWD_SKIP_INTEROP=1"
    );
    Command::new(python())
        .arg(XPRA_TOOL)
        .arg(db)
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; the interop tests need Debian's python3 and xpra, \
                 or XFWD_SKIP_INTEROP=1",
                python().display()
            )
        })
}

fn ours(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .args(["auth", "sqlite", db])
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("xfwd-sqlite-interop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The users of the example, plus defaults and odd characters.
const USERS: [&[&str]; 4] = [
    &[
        "foo",
        "bar",
        "nobody",
        "nobody",
        "tcp://192.168.1.200:10100/",
    ],
    &[
        "moo",
        "cow",
        "nobody",
        "nobody",
        "tcp://192.168.1.200:10101/",
        "",
        "compression=0",
    ],
    &["plain", "pw"],
    &[
        "j\u{f6}rg",
        "p\u{e4}ss w|rd",
        "0",
        "0",
        ":10,tcp://u:p@h:1/2",
        "A=1;B=2",
        "lz4=no",
    ],
];

fn login(db: &str, user: &str, password: &[u8]) -> bool {
    let spec = AuthSpec::parse(&format!("sqlite,filename={db}")).unwrap();
    let chain = Arc::new(AuthChain::new(&[spec], AuthPolicy::default()).unwrap());
    let client = ClientAuth {
        username: user.to_owned(),
        digests: vec!["hmac+sha256".into()],
        salt_digests: vec!["hmac+sha256".into()],
    };
    let mut flow = AuthFlow::new(
        chain,
        client,
        PeerInfo::tcp("127.0.0.1:1".parse().unwrap(), None),
    );
    let Step::Challenge(c) = flow.advance(None) else {
        panic!("no challenge")
    };
    matches!(
        flow.advance(Some(client_answer(&c, password).unwrap())),
        Step::Accepted(_)
    )
}

#[test]
fn xfwd_writes_xpra_reads() {
    if skip_interop("xpra sqlite interop checks") {
        return;
    }
    let d = TempDir::new("xfwd-writes");
    let db = d.path("auth.sdb");
    ok(ours(&db, &["create"]), "xfwd create");
    for u in USERS {
        let mut args = vec!["add"];
        args.extend_from_slice(u);
        ok(ours(&db, &args), "xfwd add");
    }
    let their_list = ok(xpra(&db, &["list"]), "xpra list");
    assert!(their_list.starts_with("4 rows found:"), "{their_list}");
    assert_eq!(ok(ours(&db, &["list"]), "xfwd list"), their_list);
    let auth = ok(
        xpra(&db, &["authenticate", "moo", "cow"]),
        "xpra authenticate",
    );
    assert!(auth.contains("success"), "{auth}");
    assert!(auth.contains("tcp://192.168.1.200:10101/"), "{auth}");
    assert!(!xpra(&db, &["authenticate", "moo", "bar"]).status.success());
    // xpra edits, xfwd sees it
    ok(xpra(&db, &["remove", "foo"]), "xpra remove");
    ok(xpra(&db, &["add", "new", "one"]), "xpra add");
    assert_eq!(
        ok(ours(&db, &["list"]), "xfwd list"),
        ok(xpra(&db, &["list"]), "xpra list")
    );
    assert!(!login(&db, "foo", b"bar"));
    assert!(login(&db, "new", b"one"));
    assert!(login(&db, "moo", b"cow"));
}

#[test]
fn xpra_writes_xfwd_reads() {
    if skip_interop("xpra sqlite interop checks") {
        return;
    }
    let d = TempDir::new("xpra-writes");
    let db = d.path("auth.sdb");
    ok(xpra(&db, &["create"]), "xpra create");
    for u in USERS {
        let mut args = vec!["add"];
        args.extend_from_slice(u);
        ok(xpra(&db, &args), "xpra add");
    }
    let their_list = ok(xpra(&db, &["list"]), "xpra list");
    assert_eq!(ok(ours(&db, &["list"]), "xfwd list"), their_list);
    let auth = ok(
        ours(&db, &["authenticate", "foo", "bar"]),
        "xfwd authenticate",
    );
    assert!(auth.contains("tcp://192.168.1.200:10100/"), "{auth}");
    assert!(login(&db, "foo", b"bar"));
    assert!(login(&db, "moo", b"cow"));
    assert!(!login(&db, "moo", b"bar"));
    assert!(login(&db, "plain", b"pw"));
    // a latin-1 password as xpra's client sends it from a latin-1 file,
    // and as UTF-8
    assert!(login(&db, "j\u{f6}rg", b"p\xe4ss w|rd"));
    assert!(login(&db, "j\u{f6}rg", "p\u{e4}ss w|rd".as_bytes()));
    // xfwd edits, xpra sees it
    ok(ours(&db, &["remove", "plain", "pw"]), "xfwd remove");
    ok(
        ours(&db, &["remove", "moo", "wrong"]),
        "xfwd remove (no match)",
    );
    assert_eq!(
        ok(xpra(&db, &["list"]), "xpra list"),
        ok(ours(&db, &["list"]), "xfwd list")
    );
    assert!(ok(ours(&db, &["list"]), "xfwd list").starts_with("3 rows found:"));
}

#[test]
fn same_usage_errors() {
    if skip_interop("xpra sqlite interop checks") {
        return;
    }
    let d = TempDir::new("usage");
    let db = d.path("auth.sdb");
    ok(ours(&db, &["create"]), "xfwd create");
    for args in [
        &["add", "onlyname"][..],
        &["remove"],
        &["list", "extra"],
        &["create", "extra"],
        &["frobnicate"],
        &["add", "a", "b", "c", "d", "e", "f", "g", "h"],
    ] {
        let t = xpra(&db, args);
        let o = ours(&db, args);
        assert_eq!(t.status.code(), Some(1), "xpra {args:?}");
        assert_eq!(o.status.code(), Some(1), "xfwd {args:?}");
        let first = |o: &Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        };
        assert_eq!(first(&o), first(&t), "{args:?}");
    }
    // a second create fails in both
    assert!(!xpra(&db, &["create"]).status.success());
    assert!(!ours(&db, &["create"]).status.success());
}
