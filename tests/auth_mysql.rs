//! The `mysql` and `sql` modules against a real MariaDB server (Debian's
//! `mariadb-server`, `mariadb-client`), started by the test itself in a
//! temp dir on a free loopback port, with real grants: a login user with a
//! password, xpra's `users` table (its `CREATE TABLE`), rows for two xpra
//! users. As root (CI) the server runs as the `mysql` account (`nobody`
//! where there is none); as another user, as that user. Without MariaDB's
//! programs the test says so and returns when it is not root or
//! `XFWD_SKIP_INTEROP=1` (root is expected to have them: `tests/run`
//! installs them).
//!
//! The chain is driven through [`AuthFlow`] as a client would (hmac
//! challenge, answer), plus one end-to-end run: a real `xpra attach
//! --password-file` through xfwd `--tcp-auth=mysql,uri=...` to the real
//! `xpra start --bind-tcp` session its row's `displays` names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, wait_until, Proc};
use xfwd::auth::{
    client_answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, PeerInfo, RefuseCause,
    Step, Targets,
};

/// The login user's password: percent-encoded in URIs.
const DB_PASSWORD: &str = "db p@ss:w/rd";
const DB_PASSWORD_IN_URI: &str = "db%20p%40ss%3Aw%2Frd";

/// xpra's table (sqlauthbase.py's `create`).
const CREATE_SQL: &str = xfwd::auth::sql_rows::CREATE_SQL;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A MariaDB server of the test's own, killed (and its files removed) on
/// drop.
struct Mariadb {
    dir: PathBuf,
    port: u16,
    /// The account it runs as, when started by root.
    user: Option<String>,
    proc: Option<Proc>,
    /// With TLS ([`Mariadb::start_tls`]): the CA that signed the server's
    /// certificate, and another one.
    ca: Option<(PathBuf, PathBuf)>,
}

impl Mariadb {
    /// `None` (after a note) when MariaDB is not installed and the test may
    /// skip.
    fn start(name: &str) -> Option<Mariadb> {
        Mariadb::start_with(name, false)
    }

    /// With `--ssl-cert --ssl-key --ssl-ca`: a test CA's certificate for
    /// IP:127.0.0.1 and DNS:localhost.
    fn start_tls(name: &str) -> Option<Mariadb> {
        Mariadb::start_with(name, true)
    }

    fn start_with(name: &str, tls: bool) -> Option<Mariadb> {
        let missing: Vec<&str> = ["mariadbd", "mariadb-install-db", "mariadb"]
            .into_iter()
            .filter(|c| !common::have(c) && !Path::new(&format!("/usr/sbin/{c}")).exists())
            .collect();
        if !missing.is_empty() {
            if common::skip_interop("MariaDB checks") || !is_root() {
                eprintln!(
                    "note: {missing:?} missing: skipping the MariaDB checks \
                     (apt-get install -y mariadb-server mariadb-client)"
                );
                return None;
            }
            panic!("{missing:?} missing: apt-get install -y mariadb-server mariadb-client");
        }
        let dir = std::env::temp_dir().join(format!("xfwd-mysql-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // A temp dir of its own: servers bootstrapped at once (the tests
        // run in parallel) clash over /tmp/#sql-temptable-* names.
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let user = is_root().then(|| {
            ["mysql", "nobody"]
                .into_iter()
                .find(|u| nix::unistd::User::from_name(u).ok().flatten().is_some())
                .expect("no mysql or nobody account")
                .to_owned()
        });
        if let Some(u) = &user {
            let acct = nix::unistd::User::from_name(u).unwrap().unwrap();
            for p in [dir.clone(), dir.join("data"), dir.join("tmp")] {
                nix::unistd::chown(&p, Some(acct.uid), Some(acct.gid)).unwrap();
            }
        }
        let mut install = Command::new(sbin("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .env("TMPDIR", dir.join("tmp"));
        if let Some(u) = &user {
            install.arg(format!("--user={u}"));
        }
        let out = install.output().unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            common::text(&out.stderr)
        );
        let mut db = Mariadb {
            dir,
            port: free_port(),
            user,
            proc: None,
            ca: None,
        };
        if tls {
            let t = db.dir.join("tls");
            common::test_pki(&t);
            if let Some(u) = &db.user {
                let acct = nix::unistd::User::from_name(u).unwrap().unwrap();
                for f in ["", "server.key", "server.pem", "ca.pem"] {
                    nix::unistd::chown(&t.join(f), Some(acct.uid), Some(acct.gid)).unwrap();
                }
            }
            db.ca = Some((t.join("ca.pem"), t.join("other-ca.pem")));
        }
        db.run();
        Some(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Starts the server (again) on its data dir and port.
    fn run(&mut self) {
        let mut cmd = Command::new(sbin("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
            ]);
        if let Some(u) = &self.user {
            cmd.arg(format!("--user={u}"));
        }
        if self.ca.is_some() {
            let t = self.dir.join("tls");
            cmd.arg(format!("--ssl-cert={}", t.join("server.pem").display()))
                .arg(format!("--ssl-key={}", t.join("server.key").display()))
                .arg(format!("--ssl-ca={}", t.join("ca.pem").display()));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let port = self.port;
        wait_until("MariaDB listening", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && self.socket().exists()
        });
    }

    /// Stops the server and waits until it is gone.
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let pid = nix::unistd::Pid::from_raw(p.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let exited = common::wait_exit(&mut p, Duration::from_secs(60));
            assert!(exited, "MariaDB did not stop");
        }
    }

    /// Runs SQL as MariaDB's root, over its Unix socket.
    fn sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-e", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb -e {sql:?}: {}",
            common::text(&out.stderr)
        );
    }

    /// The `xpra` database with xpra's table, a login user `xfwd` (password
    /// [`DB_PASSWORD`], SELECT only) and the rows given
    /// (`username, password, uid, gid, displays, env_options,
    /// session_options`).
    fn xpra_database(&self, rows: &[[&str; 7]]) {
        let mut sql = format!(
            "CREATE DATABASE xpra; USE xpra; {CREATE_SQL}; \
             CREATE USER 'xfwd'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; \
             GRANT SELECT ON xpra.* TO 'xfwd'@'127.0.0.1';"
        );
        for r in rows {
            let values: Vec<String> = r.iter().map(|v| format!("'{v}'")).collect();
            sql.push_str(&format!(
                " INSERT INTO users VALUES ({});",
                values.join(", ")
            ));
        }
        self.sql(&sql);
    }

    fn uri(&self) -> String {
        format!(
            "mysql://xfwd:{DB_PASSWORD_IN_URI}@127.0.0.1:{}/xpra",
            self.port
        )
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sbin(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/sbin").join(name);
    if p.exists() {
        p
    } else {
        PathBuf::from(name)
    }
}

fn chain(spec: &str) -> Arc<AuthChain> {
    let specs = AuthSpec::parse_chain(&[spec]).unwrap();
    Arc::new(AuthChain::new(&specs, AuthPolicy::default()).unwrap())
}

/// A client's login through the chain: its hello, the challenge, its answer.
fn login(chain: &Arc<AuthChain>, user: &str, password: &str) -> Step {
    let client = ClientAuth {
        username: user.to_owned(),
        digests: vec!["hmac+sha256".into()],
        salt_digests: vec!["hmac+sha256".into()],
    };
    let peer = PeerInfo::tcp(
        "127.0.0.1:40000".parse().unwrap(),
        Some("127.0.0.1:14500".parse().unwrap()),
    );
    let mut flow = AuthFlow::new(chain.clone(), client, peer);
    match flow.advance(None) {
        Step::Challenge(c) => {
            assert_eq!(c.digest, "hmac+sha256");
            flow.advance(Some(client_answer(&c, password.as_bytes()).unwrap()))
        }
        other => other,
    }
}

fn accepted(step: Step) -> xfwd::auth::Sessions {
    match step {
        Step::Accepted(a) => a.sessions.expect("no sessions"),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn refused(step: Step, cause: RefuseCause) -> String {
    match step {
        Step::Refused(r) => {
            eprintln!("refused: {}", r.detail);
            assert_eq!(r.cause, cause, "{r:?}");
            assert!(!r.detail.contains(DB_PASSWORD), "{r:?}");
            assert!(!r.detail.contains(DB_PASSWORD_IN_URI), "{r:?}");
            r.detail
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn displays(s: &xfwd::auth::Sessions) -> Vec<String> {
    match &s.targets {
        Targets::Listed(t) => t.iter().map(ToString::to_string).collect(),
        other => panic!("{other:?}"),
    }
}

const ROWS: [[&str; 7]; 3] = [
    ["foo", "bar", "0", "0", "tcp://127.0.0.1:10100/", "", ""],
    [
        "moo",
        "cow",
        "nobody",
        "nobody",
        "tcp://127.0.0.1:10101/, tcp://127.0.0.1:10102/7",
        "LANG=C",
        "compression=0",
    ],
    ["two", "p2", "1234", "1235", ":7", "", ""],
];

#[test]
fn mysql_passwords_sessions_and_custom_queries() {
    let Some(db) = Mariadb::start("main") else {
        return;
    };
    db.xpra_database(&ROWS);
    // a second password for `two`, other sessions
    db.sql("INSERT INTO xpra.users VALUES ('two', 'p1', '0', '0', ':8', '', '')");
    let uri = db.uri();
    let mysql = chain(&format!("mysql,uri={uri}"));

    let s = accepted(login(&mysql, "foo", "bar"));
    assert_eq!((s.uid, s.gid), (Some(0), Some(0)));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10100/"]);
    let s = accepted(login(&mysql, "moo", "cow"));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(s.uid, Some(nobody.uid.as_raw()));
    assert_eq!(
        displays(&s),
        ["tcp://127.0.0.1:10101/", "tcp://127.0.0.1:10102/7"]
    );
    assert_eq!(s.env_options, [("LANG".to_owned(), "C".to_owned())]);
    assert_eq!(s.session_options.compression_level, Some(0));
    // two passwords: the sessions follow the one that matched
    let s = accepted(login(&mysql, "two", "p2"));
    assert_eq!((s.uid, s.gid), (Some(1234), Some(1235)));
    assert_eq!(displays(&s), [":7"]);
    let s = accepted(login(&mysql, "two", "p1"));
    assert_eq!(displays(&s), [":8"]);

    let d = refused(login(&mysql, "foo", "cow"), RefuseCause::Credentials);
    assert!(d.contains("does not match"), "{d}");
    let d = refused(login(&mysql, "nobody-here", "x"), RefuseCause::Credentials);
    assert!(d.contains("unknown user"), "{d}");
    // a name that is SQL: only ever a parameter
    refused(
        login(&mysql, "x' OR '1'='1", "bar"),
        RefuseCause::Credentials,
    );

    // `sql` with a MySQL URI (SQLAlchemy's dialect+driver spelling too)
    let uri_driver = uri.replace("mysql://", "mysql+mysqlconnector://");
    for u in [&uri, &uri_driver] {
        let sql = chain(&format!("sql,uri={u}"));
        assert_eq!(
            displays(&accepted(login(&sql, "foo", "bar"))),
            ["tcp://127.0.0.1:10100/"]
        );
        refused(login(&sql, "foo", "nope"), RefuseCause::Credentials);
    }

    // custom queries on another table: `?` and `%s` placeholders
    db.sql(
        "CREATE TABLE xpra.accounts (login VARCHAR(64), secret VARCHAR(64), host VARCHAR(255)); \
         INSERT INTO xpra.accounts VALUES ('ann', 'pw', 'tcp://127.0.0.1:10200/5'); \
         INSERT INTO xpra.accounts VALUES ('bob', NULL, 'tcp://127.0.0.1:10201/');",
    );
    let custom = chain(&format!(
        "mysql,uri={uri},password_query=SELECT secret FROM accounts WHERE login=?,\
         sessions_query=SELECT host AS displays FROM accounts WHERE login=%s AND secret=%s"
    ));
    let s = accepted(login(&custom, "ann", "pw"));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10200/5"]);
    // NULL password: no password at all (xpra would compare with "None")
    refused(login(&custom, "bob", "None"), RefuseCause::Credentials);
    // and a query the server refuses is an error, not a pass
    let broken = chain(&format!(
        "mysql,uri={uri},password_query=SELECT secret FROM no_such_table WHERE login=?"
    ));
    let d = refused(login(&broken, "ann", "pw"), RefuseCause::Error);
    assert!(d.contains(&format!("127.0.0.1:{}/xpra", db.port)), "{d}");

    // the login user's password matters
    let wrong = chain(&format!(
        "mysql,uri=mysql://xfwd:wrong@127.0.0.1:{}/xpra",
        db.port
    ));
    let d = refused(login(&wrong, "foo", "bar"), RefuseCause::Error);
    assert!(d.contains("Access denied"), "{d}");
    assert!(!d.contains("wrong@"), "{d}");
}

#[test]
fn mysql_server_down_then_back() {
    let Some(mut db) = Mariadb::start("restart") else {
        return;
    };
    db.xpra_database(&ROWS);
    let mysql = chain(&format!("mysql,uri={},timeout=3", db.uri()));
    accepted(login(&mysql, "foo", "bar"));

    // down: the login fails (an error naming the server, not a wrong
    // password), and returns
    db.stop();
    let d = refused(login(&mysql, "foo", "bar"), RefuseCause::Error);
    assert!(
        d.contains(&format!("mysql server 127.0.0.1:{}/xpra", db.port)),
        "{d}"
    );

    // back: the next login works
    db.run();
    accepted(login(&mysql, "foo", "bar"));
    // restarted with no login in between: the pooled connection is dead,
    // and replaced
    db.stop();
    db.run();
    let s = accepted(login(&mysql, "moo", "cow"));
    assert_eq!(s.session_options.compression_level, Some(0));
    refused(login(&mysql, "moo", "bar"), RefuseCause::Credentials);
}

#[test]
fn sql_with_a_sqlite_uri_is_the_sqlite_module() {
    let dir = common::scratch("sql-sqlite");
    let path = dir.join("xpra.sdb");
    let file = xfwd::auth::sqlite::SqliteDb::new(&path);
    file.create().unwrap();
    file.add_user(&["foo", "bar", "0", "0", "tcp://127.0.0.1:10100/"])
        .unwrap();
    // SQLAlchemy's absolute path: four slashes
    let sql = chain(&format!("sql,uri=sqlite:///{}", path.display()));
    assert_eq!(
        displays(&accepted(login(&sql, "foo", "bar"))),
        ["tcp://127.0.0.1:10100/"]
    );
    refused(login(&sql, "foo", "baz"), RefuseCause::Credentials);
    // custom queries with xpra's `%s` for the sql module
    let sql = chain(&format!(
        "sql,uri=sqlite:///{},password_query=SELECT password FROM users WHERE username=%s",
        path.display()
    ));
    accepted(login(&sql, "foo", "bar"));

    // refused at startup
    for (spec, why) in [
        ("mysql,uri=postgresql://u:pw@127.0.0.1/xpra", "not MySQL's"),
        ("sql,uri=oracle://127.0.0.1/xpra", "unsupported database"),
        ("sql,uri=sqlite://", "names no file"),
        ("mysql,uri=sqlite:///x.sdb", "not MySQL"),
    ] {
        let specs = AuthSpec::parse_chain(&[spec]).unwrap();
        let e = AuthChain::new(&specs, AuthPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{spec}: {e}");
        assert!(!e.contains("pw"), "{e}");
    }
    assert!(AuthSpec::parse("mysql").is_err(), "needs uri=");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn xpra_client_through_mysql_to_the_session_of_its_row() {
    if !common::tools_present() {
        return;
    }
    let Some(db) = Mariadb::start("e2e") else {
        return;
    };
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::scratch("mysql-e2e");
    let session_port = free_port();
    let session = common::Session::start_with(
        common::free_display(251),
        &dir,
        &[
            &format!("--bind-tcp=127.0.0.1:{session_port}"),
            "--tcp-auth=none",
        ],
    );
    let target = format!("tcp://127.0.0.1:{session_port}/");
    db.xpra_database(&[["foo", "bar", "nobody", "nobody", &target, "", ""]]);
    let mut xfwd = common::Xfwd::start(&dir, &[&format!("--tcp-auth=mysql,uri={}", db.uri())]);

    common::attach_and_see_xterm(xfwd.port, "foo", "bar", &dir, session.display + 1);
    xfwd.wait_log(
        &format!("result=ok target=\"session tcp://127.0.0.1:{session_port}/"),
        Duration::from_secs(5),
    );
    common::wrong_password_fails(xfwd.port, "foo", &dir, session.display + 1);
    common::wrong_password_fails(xfwd.port, "nobody-known", &dir, session.display + 1);
    assert!(xfwd.alive(), "xfwd must keep serving");
    let log = xfwd.log();
    assert!(log.contains("module=mysql"), "{log}");
    assert!(
        !log.contains(DB_PASSWORD) && !log.contains(DB_PASSWORD_IN_URI),
        "the database password reached the log:\n{log}"
    );
}

#[test]
fn xfwd_auth_mysql_manages_the_table() {
    let Some(db) = Mariadb::start("tool") else {
        return;
    };
    db.sql(&format!(
        "CREATE DATABASE tooldb; \
         CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; \
         GRANT ALL ON tooldb.* TO 'admin'@'127.0.0.1';"
    ));
    let uri = format!(
        "mysql://admin:{DB_PASSWORD_IN_URI}@127.0.0.1:{}/tooldb",
        db.port
    );
    let tool = |args: &[&str]| {
        let mut all = vec!["auth", "mysql", uri.as_str()];
        all.extend_from_slice(args);
        let out = common::run_xfwd(&all);
        let text = common::text(&out.stdout);
        let err = common::text(&out.stderr);
        assert!(
            !err.contains(DB_PASSWORD) && !err.contains(DB_PASSWORD_IN_URI),
            "{err}"
        );
        (out.status.code(), text, err)
    };
    assert_eq!(tool(&["create"]).0, Some(0));
    let (rc, _, err) = tool(&["create"]);
    assert_eq!(rc, Some(1), "the table exists already");
    assert!(err.contains("tooldb"), "{err}");
    assert_eq!(tool(&["list"]).1, "no rows found\n");
    let add = [
        "add",
        "foo",
        "bar",
        "nobody",
        "nobody",
        "tcp://127.0.0.1:10100/",
    ];
    assert_eq!(tool(&add).0, Some(0));
    let add = ["add", "moo", "cow", "0", "0", ":7", "", "compression=0"];
    assert_eq!(tool(&add).0, Some(0));
    let (rc, list, _) = tool(&["list"]);
    assert_eq!(rc, Some(0));
    assert!(list.starts_with("2 rows found:\n"), "{list}");
    assert!(list.contains("| tcp://127.0.0.1:10100/|"), "{list}");
    let (rc, out, _) = tool(&["authenticate", "moo", "cow"]);
    assert_eq!(rc, Some(0));
    assert!(
        out.starts_with("success, found sessions: (0, 0, [':7']"),
        "{out}"
    );
    assert_eq!(tool(&["authenticate", "moo", "bar"]).0, Some(1));
    // what the tool wrote, the module reads
    let mysql = chain(&format!("mysql,uri={uri}"));
    assert_eq!(
        displays(&accepted(login(&mysql, "foo", "bar"))),
        ["tcp://127.0.0.1:10100/"]
    );
    assert_eq!(tool(&["remove", "foo", "nope"]).0, Some(0));
    assert!(tool(&["list"]).1.starts_with("2 rows found:"));
    assert_eq!(tool(&["remove", "foo"]).0, Some(0));
    assert!(tool(&["list"]).1.starts_with("1 rows found:"));
    refused(login(&mysql, "foo", "bar"), RefuseCause::Credentials);
    // usage as xpra's tool prints it
    let (rc, out, _) = tool(&["add", "x"]);
    assert_eq!(rc, Some(1));
    assert!(
        out.starts_with("invalid number of arguments\nusage:\n"),
        "{out}"
    );
}

#[test]
fn mysql_over_tls() {
    let Some(db) = Mariadb::start_tls("tls") else {
        return;
    };
    db.xpra_database(&[["foo", "bar", "0", "0", "tcp://127.0.0.1:10100/", "", ""]]);
    // the login user may only log in over TLS: a login proves it
    db.sql("ALTER USER 'xfwd'@'127.0.0.1' REQUIRE SSL");
    let (ca, other) = db.ca.clone().unwrap();
    let uri = db.uri();
    let module = |params: &str| chain(&format!("mysql,uri={uri}?{params}"));

    // plain: the server refuses the user (so the check below is real)
    let d = refused(
        login(&module("ssl-mode=DISABLED"), "foo", "bar"),
        RefuseCause::Error,
    );
    assert!(d.contains("Access denied"), "{d}");
    // VERIFY_IDENTITY against the test CA
    let s = accepted(login(
        &module(&format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display())),
        "foo",
        "bar",
    ));
    match &s.targets {
        Targets::Listed(t) => assert_eq!(t.len(), 1),
        other => panic!("{other:?}"),
    }
    // ssl-ca alone: VERIFY_CA
    accepted(login(
        &module(&format!("ssl-ca={}", ca.display())),
        "foo",
        "bar",
    ));
    // REQUIRED without a CA: encrypted, not verified
    accepted(login(&module("ssl-mode=REQUIRED"), "foo", "bar"));
    // the session's cipher, seen by the server (Ssl_cipher of a session of
    // that user, through the module's own pool)
    let cipher = chain(&format!(
        "mysql,uri={uri}?ssl-mode=REQUIRED,password_query=SELECT password FROM users \
         WHERE username=? AND (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME='SSL_CIPHER') <> ''"
    ));
    accepted(login(&cipher, "foo", "bar"));
    // the wrong CA: refused, saying why
    let d = refused(
        login(
            &module(&format!(
                "ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
                other.display()
            )),
            "foo",
            "bar",
        ),
        RefuseCause::Error,
    );
    assert!(d.to_lowercase().contains("certificate"), "{d}");
}
