//! The `postgresql` module (and `sql,uri=postgresql://...`, the `postgres`
//! alias) against a real PostgreSQL server (Debian's `postgresql`), started
//! by the test itself ([`common::pg::Pg`]: a temp cluster on a free
//! loopback port, a login role with a scram-sha-256 password, xpra's
//! `users` table made with its `CREATE TABLE`, SELECT granted).
//!
//! The chain is driven through [`AuthFlow`] as a client would (hmac
//! challenge, answer); `xfwd auth postgresql` manages a table; the server
//! is stopped and started again under a running module (the backoff); and
//! the seed's "Remote Hosts" example end to end: two real `xpra start
//! --bind-tcp` sessions, two users whose rows name one each, real `xpra
//! attach --password-file` clients through xfwd
//! `--tcp-auth=postgresql,uri=...`, a wrong password refused, an attached
//! client unaffected while the database is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::pg::Pg;
use common::{free_port, wait_until, Proc};
use xfwd::auth::{
    client_answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, PeerInfo, RefuseCause,
    Step, Targets,
};

/// The login role's password (percent-encoded in URIs).
const DB_PASSWORD: &str = "db p@ss:w/rd";
const DB_PASSWORD_IN_URI: &str = "db%20p%40ss%3Aw%2Frd";

/// `xpra`: xpra's table, a login role `xfwd` that may only read it, and
/// `rows` (`username, password, uid, gid, displays, env_options,
/// session_options`).
fn xpra_database(pg: &Pg, rows: &[[&str; 7]]) -> String {
    pg.create_database("xpra");
    pg.create_login("xfwd", DB_PASSWORD);
    let mut sql = format!(
        "{}; GRANT SELECT ON users TO xfwd;",
        xfwd::auth::sql_rows::CREATE_SQL
    );
    for r in rows {
        sql.push_str(&insert("users", r));
    }
    pg.sql("xpra", &sql);
    let uri = pg.uri("xfwd", DB_PASSWORD, "xpra");
    assert!(uri.contains(DB_PASSWORD_IN_URI), "{uri}");
    uri
}

fn insert(table: &str, values: &[&str]) -> String {
    let values: Vec<String> = values
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect();
    format!(" INSERT INTO {table} VALUES ({});", values.join(", "))
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
fn postgresql_passwords_sessions_and_custom_queries() {
    let Some(pg) = Pg::start("main") else {
        return;
    };
    let uri = xpra_database(&pg, &ROWS);
    // a second password for `two`, other sessions
    pg.sql(
        "xpra",
        &insert("users", &["two", "p1", "0", "0", ":8", "", ""]),
    );
    let postgresql = chain(&format!("postgresql,uri={uri}"));

    let s = accepted(login(&postgresql, "foo", "bar"));
    assert_eq!((s.uid, s.gid), (Some(0), Some(0)));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10100/"]);
    let s = accepted(login(&postgresql, "moo", "cow"));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(s.uid, Some(nobody.uid.as_raw()));
    assert_eq!(
        displays(&s),
        ["tcp://127.0.0.1:10101/", "tcp://127.0.0.1:10102/7"]
    );
    assert_eq!(s.env_options, [("LANG".to_owned(), "C".to_owned())]);
    assert_eq!(s.session_options.compression_level, Some(0));
    // two passwords: the sessions follow the one that matched
    let s = accepted(login(&postgresql, "two", "p2"));
    assert_eq!((s.uid, s.gid), (Some(1234), Some(1235)));
    assert_eq!(displays(&s), [":7"]);
    let s = accepted(login(&postgresql, "two", "p1"));
    assert_eq!(displays(&s), [":8"]);

    let d = refused(login(&postgresql, "foo", "cow"), RefuseCause::Credentials);
    assert!(d.contains("does not match"), "{d}");
    let d = refused(
        login(&postgresql, "nobody-here", "x"),
        RefuseCause::Credentials,
    );
    assert!(d.contains("unknown user"), "{d}");
    // a name that is SQL: only ever a parameter
    refused(
        login(&postgresql, "x' OR '1'='1", "bar"),
        RefuseCause::Credentials,
    );

    // `sql` with a PostgreSQL URI (both schemes, a driver too), and the
    // `postgres` alias
    let postgres_uri = uri.replace("postgresql://", "postgres://");
    let driver_uri = uri.replace("postgresql://", "postgresql+psycopg2://");
    for spec in [
        format!("sql,uri={uri}"),
        format!("sql,uri={postgres_uri}"),
        format!("sql,uri={driver_uri}"),
        format!("postgres,uri={postgres_uri}"),
    ] {
        let c = chain(&spec);
        assert_eq!(
            displays(&accepted(login(&c, "foo", "bar"))),
            ["tcp://127.0.0.1:10100/"],
            "{spec}"
        );
        refused(login(&c, "foo", "nope"), RefuseCause::Credentials);
    }

    // over the server's Unix socket (the directory as the host; local
    // logins are trusted by this cluster)
    let socket_uri = format!(
        "postgresql://xfwd@{}:{}/xpra",
        common::pg::encode(pg.path().to_str().unwrap()),
        pg.port
    );
    let c = chain(&format!("postgresql,uri={socket_uri}"));
    assert_eq!(
        displays(&accepted(login(&c, "foo", "bar"))),
        ["tcp://127.0.0.1:10100/"]
    );

    // custom queries on another table: `?`, `%s` and `$n` placeholders,
    // an integer column, a NULL password (no commas: xpra's option syntax
    // has none in values)
    pg.sql(
        "xpra",
        &format!(
            "CREATE TABLE accounts (login TEXT, secret TEXT, displays TEXT, uid INTEGER); \
             GRANT SELECT ON accounts TO xfwd; {} {} \
             INSERT INTO accounts VALUES ('bob', NULL, 'tcp://127.0.0.1:10201/', 2);",
            insert("accounts", &["ann", "pw", "tcp://127.0.0.1:10200/5", "1"]),
            insert("accounts", &["cy", "it's", "tcp://127.0.0.1:10202/", "3"]),
        ),
    );
    let custom = chain(&format!(
        "postgresql,uri={uri},password_query=SELECT secret FROM accounts WHERE login=?,\
         sessions_query=SELECT * FROM accounts \
         WHERE login=%s AND secret=%s AND displays LIKE 'tcp://%'"
    ));
    let s = accepted(login(&custom, "ann", "pw"));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10200/5"]);
    assert_eq!(s.uid, Some(1));
    let s = accepted(login(&custom, "cy", "it's"));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10202/"]);
    // NULL password: no password at all (xpra would compare with "None")
    refused(login(&custom, "bob", "None"), RefuseCause::Credentials);
    // PostgreSQL's own placeholders, and a parameter of another type
    let numbered = chain(&format!(
        "postgresql,uri={uri},password_query=SELECT secret FROM accounts WHERE login=$1,\
         sessions_query=SELECT displays FROM accounts WHERE uid=(\
         SELECT uid FROM accounts WHERE login=$1 AND secret=$2)"
    ));
    let s = accepted(login(&numbered, "ann", "pw"));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10200/5"]);

    // a query the server refuses is an error naming the server, not a pass
    let broken = chain(&format!(
        "postgresql,uri={uri},password_query=SELECT secret FROM no_such_table WHERE login=?"
    ));
    let d = refused(login(&broken, "ann", "pw"), RefuseCause::Error);
    assert!(d.contains(&format!("127.0.0.1:{}/xpra", pg.port)), "{d}");
    assert!(d.contains("no_such_table"), "{d}");
    // a column of a type not converted: the error says how to cast it
    let typed = chain(&format!(
        "postgresql,uri={uri},password_query=SELECT now() AS secret WHERE ?::text <> ''"
    ));
    let d = refused(login(&typed, "ann", "pw"), RefuseCause::Error);
    assert!(d.contains("::text"), "{d}");
    // a query that runs too long: cut by the timeout (the server's
    // statement_timeout or xfwd's own, whichever comes first)
    let slow = chain(&format!(
        "postgresql,uri={uri},timeout=1,password_query=SELECT password FROM users \
         WHERE username=? AND pg_sleep(5) IS NOT NULL"
    ));
    let d = refused(login(&slow, "foo", "bar"), RefuseCause::Error);
    assert!(
        d.contains("statement timeout") || d.contains("no answer within 1 s"),
        "{d}"
    );
    // the role may only read
    let writer = chain(&format!(
        "postgresql,uri={uri},password_query=DELETE FROM users WHERE username=? RETURNING password"
    ));
    let d = refused(login(&writer, "foo", "bar"), RefuseCause::Error);
    assert!(d.contains("permission denied"), "{d}");

    // the login role's password matters
    let wrong = chain(&format!(
        "postgresql,uri=postgresql://xfwd:wrong@127.0.0.1:{}/xpra",
        pg.port
    ));
    let d = refused(login(&wrong, "foo", "bar"), RefuseCause::Error);
    assert!(d.contains("password authentication failed"), "{d}");
    assert!(!d.contains("wrong@"), "{d}");
    // after that failure, the backoff: refused at once, saying so
    let d = refused(login(&wrong, "foo", "bar"), RefuseCause::Error);
    assert!(d.contains("database unavailable (retrying in"), "{d}");
    // the others' pools are their own
    accepted(login(&postgresql, "foo", "bar"));
}

/// The wait a "retrying in N s" refusal names.
fn retry_in(detail: &str) -> Option<Duration> {
    let rest = detail.split("retrying in ").nth(1)?;
    let secs: f64 = rest.split(' ').next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

#[test]
fn postgresql_server_down_then_back() {
    let Some(mut pg) = Pg::start("restart") else {
        return;
    };
    let uri = xpra_database(&pg, &ROWS);
    let postgresql = chain(&format!("postgresql,uri={uri},timeout=3"));
    accepted(login(&postgresql, "foo", "bar"));
    let server = format!("postgresql server 127.0.0.1:{}/xpra", pg.port);

    // down: the login fails (an error naming the server, not a wrong
    // password)
    pg.stop();
    let d = refused(login(&postgresql, "foo", "bar"), RefuseCause::Error);
    assert!(d.contains(&server), "{d}");
    assert!(d.contains("cannot connect"), "{d}");
    // and the next ones fail at once, without trying: the backoff
    for _ in 0..3 {
        let d = refused(login(&postgresql, "moo", "cow"), RefuseCause::Error);
        assert!(d.contains(&server), "{d}");
        assert!(
            d.contains("database unavailable (retrying in"),
            "no backoff: {d}"
        );
    }

    // back: the next login after the backoff works
    pg.run();
    match login(&postgresql, "foo", "bar") {
        Step::Accepted(_) => {}
        other => {
            let d = refused(other, RefuseCause::Error);
            let wait = retry_in(&d).unwrap_or_else(|| panic!("{d}"));
            std::thread::sleep(wait + Duration::from_millis(100));
            accepted(login(&postgresql, "foo", "bar"));
        }
    }
    // restarted with no login in between: the pooled connection is dead,
    // and replaced without a failure
    pg.stop();
    pg.run();
    let s = accepted(login(&postgresql, "moo", "cow"));
    assert_eq!(s.session_options.compression_level, Some(0));
    refused(login(&postgresql, "moo", "bar"), RefuseCause::Credentials);
}

#[test]
fn xfwd_auth_postgresql_manages_the_table() {
    let Some(pg) = Pg::start("tool") else {
        return;
    };
    pg.create_login("admin", DB_PASSWORD);
    pg.sql("postgres", "CREATE DATABASE tooldb OWNER admin");
    let uri = pg.uri("admin", DB_PASSWORD, "tooldb");
    let tool = |args: &[&str]| {
        let mut all = vec!["auth", "postgresql", uri.as_str()];
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
    // xpra's columns, as PostgreSQL has them
    let cols = pg.sql(
        "tooldb",
        "SELECT column_name || ' ' || data_type || ' ' || coalesce(character_maximum_length, 0) \
         FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
    );
    assert_eq!(
        cols.lines().collect::<Vec<_>>(),
        [
            "username character varying 255",
            "password character varying 255",
            "uid character varying 63",
            "gid character varying 63",
            "displays character varying 8191",
            "env_options character varying 8191",
            "session_options character varying 8191",
        ]
    );
    let (rc, _, err) = tool(&["create"]);
    assert_eq!(rc, Some(1), "the table exists already");
    assert!(err.contains("tooldb"), "{err}");
    assert!(err.contains("already exists"), "{err}");
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
    // uid and gid default to the caller's
    assert_eq!(tool(&["add", "zed", "z"]).0, Some(0));
    let (rc, list, _) = tool(&["list"]);
    assert_eq!(rc, Some(0));
    assert!(list.starts_with("3 rows found:\n"), "{list}");
    assert!(list.contains("| tcp://127.0.0.1:10100/|"), "{list}");
    let (rc, out, _) = tool(&["authenticate", "moo", "cow"]);
    assert_eq!(rc, Some(0));
    assert!(
        out.starts_with("success, found sessions: (0, 0, [':7']"),
        "{out}"
    );
    let (rc, _, err) = tool(&["authenticate", "moo", "bar"]);
    assert_eq!(rc, Some(1));
    assert!(err.contains("does not match"), "{err}");
    // what the tool wrote, the module reads
    let postgresql = chain(&format!("postgresql,uri={uri}"));
    assert_eq!(
        displays(&accepted(login(&postgresql, "foo", "bar"))),
        ["tcp://127.0.0.1:10100/"]
    );
    assert_eq!(tool(&["remove", "foo", "nope"]).0, Some(0));
    assert!(tool(&["list"]).1.starts_with("3 rows found:"));
    assert_eq!(tool(&["remove", "foo", "bar"]).0, Some(0));
    assert!(tool(&["list"]).1.starts_with("2 rows found:"));
    assert_eq!(tool(&["remove", "zed"]).0, Some(0));
    assert!(tool(&["list"]).1.starts_with("1 rows found:"));
    refused(login(&postgresql, "foo", "bar"), RefuseCause::Credentials);
    // usage as xpra's tool prints it
    let (rc, out, _) = tool(&["add", "x"]);
    assert_eq!(rc, Some(1));
    assert!(
        out.starts_with("invalid number of arguments\nusage:\n"),
        "{out}"
    );
    // a server that is not there: a clear error, and no password
    let gone = format!(
        "postgresql://admin:{DB_PASSWORD_IN_URI}@127.0.0.1:{}/tooldb",
        free_port()
    );
    let out = common::run_xfwd(&["auth", "postgresql", &gone, "list"]);
    let err = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains(DB_PASSWORD_IN_URI), "{err}");
}

/// Two sessions reachable over TCP, each with an xterm titled after it
/// ([`OPEN_TITLE`], [`LOCKED_TITLE`]): the second wants a password.
struct Pair {
    open: common::Session,
    locked: common::Session,
    open_port: u16,
    locked_port: u16,
}

const OPEN_TITLE: &str = "pg-open-session";
const LOCKED_TITLE: &str = "pg-locked-session";

fn two_sessions(dir: &Path, from: u32) -> Pair {
    let open_port = free_port();
    let open = common::Session::start_with(
        common::free_display(from),
        dir,
        &[
            &format!("--bind-tcp=127.0.0.1:{open_port}"),
            "--tcp-auth=none",
            &format!("--start=xterm -T {OPEN_TITLE}"),
        ],
    );
    let locked_port = free_port();
    let pw = dir.join("session-password.txt");
    std::fs::write(&pw, "s3ssion").unwrap();
    let locked = common::Session::start_with(
        common::free_display(open.display + 1),
        dir,
        &[
            &format!("--bind-tcp=127.0.0.1:{locked_port}"),
            &format!("--tcp-auth=file,filename={}", pw.display()),
            &format!("--start=xterm -T {LOCKED_TITLE}"),
        ],
    );
    Pair {
        open,
        locked,
        open_port,
        locked_port,
    }
}

/// Attaches `user` with `password` and waits for the xterm titled
/// `title` (its own session's) on a fresh client display: the client, its
/// X server, that display, the client's log.
fn attach_and_see(
    port: u16,
    user: &str,
    password: &str,
    dir: &Path,
    from: u32,
    title: &str,
) -> (Proc, Proc, u32, std::path::PathBuf) {
    let display = common::free_display(from);
    let x = common::xvfb(display);
    let pwf = common::password_file(dir, &format!("{user}.pw"), password);
    let (client, log) = common::attach_uri(
        &format!("tcp://{user}@127.0.0.1:{port}/"),
        display,
        dir,
        &[],
        &[&pwf],
    );
    wait_until(
        &format!("{user}'s xterm {title:?} on :{display}"),
        Duration::from_secs(45),
        || common::windows(display).contains(title),
    );
    (client, x, display, log)
}

/// Waits for a line of xfwd's log that has every one of `needles`.
fn wait_log_line(xfwd: &common::Xfwd, needles: &[&str]) {
    wait_until(
        &format!("an xfwd log line with {needles:?}"),
        Duration::from_secs(5),
        || {
            xfwd.log()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        },
    );
}

/// `xpra attach` as `user` with the right `password` while the database is
/// down: refused with xpra's "authentication failed".
fn login_refused(port: u16, user: &str, password: &str, dir: &Path, from: u32) {
    let display = common::free_display(from);
    let _x = common::xvfb(display);
    let pwf = common::password_file(dir, &format!("{user}-down.pw"), password);
    let (mut client, log) = common::attach_uri(
        &format!("tcp://{user}@127.0.0.1:{port}/"),
        display,
        dir,
        &[],
        &[&pwf],
    );
    assert!(
        common::wait_exit(&mut client, Duration::from_secs(40)),
        "client still running"
    );
    let text = common::read(&log);
    assert!(text.contains("authentication failed"), "{text}");
}

/// The seed's "Remote Hosts" example with the user database in
/// PostgreSQL.
#[test]
fn remote_hosts_from_a_postgresql_database() {
    if !common::tools_present() {
        return;
    }
    let Some(mut pg) = Pg::start("e2e") else {
        return;
    };
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::scratch("postgresql-e2e");
    let pair = two_sessions(&dir, 281);
    let open_target = format!("tcp://127.0.0.1:{}/", pair.open_port);
    let locked_target = format!("tcp://root:s3ssion@127.0.0.1:{}/", pair.locked_port);
    let uri = xpra_database(
        &pg,
        &[
            ["foo", "bar", "nobody", "nobody", &open_target, "", ""],
            [
                "moo",
                "cow",
                "nobody",
                "nobody",
                &locked_target,
                "",
                "compression=0",
            ],
        ],
    );
    let mut xfwd = common::Xfwd::start(&dir, &[&format!("--tcp-auth=postgresql,uri={uri}")]);
    let from = pair.locked.display + 1;

    // each user reaches the xterm of the session of its row
    let open_seen = format!(
        "result=ok target=\"session tcp://127.0.0.1:{}/",
        pair.open_port
    );
    let locked_seen = format!(
        "result=ok target=\"session tcp://127.0.0.1:{}/",
        pair.locked_port
    );
    let (mut moo, _mx, _, moo_log) =
        attach_and_see(xfwd.port, "moo", "cow", &dir, from, LOCKED_TITLE);
    wait_log_line(&xfwd, &["user=\"moo\"", "module=postgresql", &locked_seen]);
    assert!(common::client_kill(&mut moo), "{}", common::read(&moo_log));
    let (mut foo, _fx, display, foo_log) =
        attach_and_see(xfwd.port, "foo", "bar", &dir, from, OPEN_TITLE);
    wait_log_line(&xfwd, &["user=\"foo\"", "module=postgresql", &open_seen]);
    assert!(!common::windows(display).contains(LOCKED_TITLE));
    common::wrong_password_fails(xfwd.port, "foo", &dir, display + 1);
    common::wrong_password_fails(xfwd.port, "nobody-known", &dir, display + 1);

    // foo stays attached; the database goes away
    pg.stop();
    login_refused(xfwd.port, "moo", "cow", &dir, display + 1);
    xfwd.wait_log(
        &format!(
            "postgresql server 127.0.0.1:{}/xpra: cannot connect",
            pg.port
        ),
        Duration::from_secs(5),
    );
    // the established connection goes on
    assert!(
        foo.0.try_wait().unwrap().is_none(),
        "the attached client ended: {}",
        common::read(&foo_log)
    );
    assert!(common::windows(display).contains(OPEN_TITLE));

    // back (after the backoff of one failure, 0.5 s): logins work again
    pg.run();
    std::thread::sleep(Duration::from_secs(1));
    let (mut moo, _mx, _, moo_log) =
        attach_and_see(xfwd.port, "moo", "cow", &dir, display + 1, LOCKED_TITLE);
    assert!(common::client_kill(&mut moo), "{}", common::read(&moo_log));
    assert!(
        foo.0.try_wait().unwrap().is_none(),
        "the attached client ended: {}",
        common::read(&foo_log)
    );
    assert!(common::client_kill(&mut foo), "{}", common::read(&foo_log));

    assert!(xfwd.alive(), "xfwd must keep serving");
    let log = xfwd.log();
    assert!(log.contains("module=postgresql"), "{log}");
    assert!(
        !log.contains("s3ssion"),
        "a target password reached the log:\n{log}"
    );
    assert!(
        !log.contains(DB_PASSWORD) && !log.contains(DB_PASSWORD_IN_URI),
        "the database password reached the log:\n{log}"
    );
    let _ = (&pair.open, &pair.locked);
}

/// The password query answers only over TLS: a login through it proves
/// that the module's pooled connection is encrypted.
const TLS_ONLY_QUERY: &str = "SELECT password FROM users WHERE username=? \
     AND (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";

#[test]
fn postgresql_over_tls() {
    use common::pg::Tls;
    let Some(pg) = Pg::start_tls("tls", Tls::On) else {
        return;
    };
    let uri = xpra_database(&pg, &ROWS);
    let ca = pg.ca.clone().unwrap();
    let other = pg.other_ca.clone().unwrap();
    let module = |params: &str| {
        chain(&format!(
            "postgresql,uri={uri}?{params},password_query={TLS_ONLY_QUERY}"
        ))
    };

    // verify-full against the test CA (the certificate names 127.0.0.1)
    let full = module(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let s = accepted(login(&full, "foo", "bar"));
    assert_eq!(displays(&s), ["tcp://127.0.0.1:10100/"]);
    // the TLS-only query refuses a plain connection: the check is real
    let plain = module("sslmode=disable");
    refused(login(&plain, "foo", "bar"), RefuseCause::Credentials);
    // verify-ca too
    let ca_only = module(&format!("sslmode=verify-ca&sslrootcert={}", ca.display()));
    accepted(login(&ca_only, "foo", "bar"));
    // require: encrypted, the certificate not verified (no root given)
    accepted(login(&module("sslmode=require"), "foo", "bar"));
    // the default, prefer: TLS since the server has it
    accepted(login(
        &chain(&format!(
            "postgresql,uri={uri},password_query={TLS_ONLY_QUERY}"
        )),
        "foo",
        "bar",
    ));
    // and a hostname the certificate does not name is refused by
    // verify-full, not by verify-ca
    let by_name = uri.replace("@127.0.0.1:", "@localhost:");
    assert_ne!(by_name, uri);
    let c = chain(&format!(
        "postgresql,uri={by_name}?sslmode=verify-full&sslrootcert={},password_query={TLS_ONLY_QUERY}",
        ca.display()
    ));
    accepted(login(&c, "foo", "bar"));

    // verify-full with the wrong CA: refused, saying why
    let wrong = module(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    ));
    let d = refused(login(&wrong, "foo", "bar"), RefuseCause::Error);
    assert!(d.contains("certificate"), "{d}");
    assert!(d.contains("UnknownIssuer") || d.contains("issuer"), "{d}");

    // a missing root file: the module is refused at start
    let specs = AuthSpec::parse_chain(&[format!(
        "postgresql,uri={uri}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
    )
    .as_str()])
    .unwrap();
    let e = AuthChain::new(&specs, AuthPolicy::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn postgresql_hostssl_only() {
    use common::pg::Tls;
    let Some(pg) = Pg::start_tls("hostssl", Tls::Only) else {
        return;
    };
    let uri = xpra_database(&pg, &ROWS);
    let ca = pg.ca.clone().unwrap();
    // plain refused by the server's pg_hba.conf, clearly
    let plain = chain(&format!("postgresql,uri={uri}?sslmode=disable"));
    let d = refused(login(&plain, "foo", "bar"), RefuseCause::Error);
    assert!(
        d.contains("pg_hba.conf") && d.contains("no encryption"),
        "{d}"
    );
    // verify-full gets in
    let full = chain(&format!(
        "postgresql,uri={uri}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ));
    accepted(login(&full, "foo", "bar"));
}
