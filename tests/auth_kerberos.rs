//! `kerberos-password` against a real MIT KDC (Debian's krb5-kdc,
//! krb5-admin-server for kadmin.local, krb5-user), and one real xpra 3.1.3
//! client through xfwd.
//!
//! Each test makes its own realm, XFWD.TEST, in a temp dir: krb5.conf and
//! kdc.conf of its own (KRB5_CONFIG, KRB5_KDC_PROFILE; /etc/krb5.conf is
//! never read), a database made by `kdb5_util create`, principals
//! `alice` (password `secret`) and `xpra/localhost` (its key in a keytab),
//! and `krb5kdc -n` on a free loopback port (TCP; as `nobody` when the
//! test runs as root, so the KDC runs as an ordinary user).
//!
//! libkrb5 reads KRB5_CONFIG in the process that checks the password: the
//! in-process checks all run in one test (the variable is set once, before
//! the first module is built); the client test passes it to xfwd's
//! environment.
//!
//! Where the tools are missing: a note and nothing checked when not root
//! (or with XFWD_SKIP_INTEROP=1); as root, a failure that says what to
//! install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use xfwd::auth::{
    client_answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, PeerInfo, RefuseCause,
    Refused, Step,
};

const REALM: &str = "XFWD.TEST";
const TOOLS: [&str; 3] = [
    "/usr/sbin/krb5kdc",
    "/usr/sbin/kdb5_util",
    "/usr/sbin/kadmin.local",
];
const PACKAGES: &str = "krb5-kdc krb5-admin-server krb5-user";
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the KDC tools are here (see the module comment).
fn kdc_tools() -> bool {
    if skip_interop("Kerberos tests") {
        return false;
    }
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|t| !Path::new(t).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if is_root() {
        panic!("the Kerberos tests need {missing:?}: apt-get install -y {PACKAGES}");
    }
    eprintln!("note: {missing:?} missing (apt-get install -y {PACKAGES}): skipping");
    false
}

/// A test realm: its files, and its KDC while it runs.
struct Realm {
    dir: PathBuf,
    port: u16,
    /// A port that accepts TCP connections and never answers (realm
    /// SILENT.TEST).
    silent: TcpListener,
    krb5_conf: PathBuf,
    kdc: Option<Proc>,
    /// The keytab with xpra/localhost's current key.
    keytab: PathBuf,
    /// A keytab with an older key of xpra/localhost (the kvno after it was
    /// taken: what a stale keytab, or another realm's, looks like).
    stale_keytab: PathBuf,
}

impl Realm {
    fn new(name: &str) -> Realm {
        let dir = scratch(name);
        let port = free_port();
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let krb5_conf = dir.join("krb5.conf");
        let keytab = dir.join("xpra.keytab");
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n \
                 dns_lookup_realm = false\n rdns = false\n udp_preference_limit = 1\n \
                 default_keytab_name = FILE:{}\n\
                 [realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n \
                 SILENT.TEST = {{\n  kdc = 127.0.0.1:{silent_port}\n }}\n",
                keytab.display()
            ),
        )
        .unwrap();
        let r = Realm {
            stale_keytab: dir.join("stale.keytab"),
            dir,
            port,
            silent,
            krb5_conf,
            kdc: None,
            keytab,
        };
        r.database("real", &[("alice", "secret")]);
        // the stale keytab first: the second ktadd gives the service a new key
        r.kadmin("real", "addprinc -randkey xpra/localhost");
        r.kadmin(
            "real",
            &format!("ktadd -k {} xpra/localhost", r.stale_keytab.display()),
        );
        r.kadmin(
            "real",
            &format!("ktadd -k {} xpra/localhost", r.keytab.display()),
        );
        r
    }

    fn kdc_conf(&self, db: &str) -> PathBuf {
        self.dir.join(format!("kdc-{db}.conf"))
    }

    /// A database `db` for the realm with `users` (name, password).
    fn database(&self, db: &str, users: &[(&str, &str)]) {
        let data = self.dir.join(db);
        std::fs::create_dir_all(&data).unwrap();
        let listen = format!("127.0.0.1:{}", self.port);
        std::fs::write(
            self.kdc_conf(db),
            format!(
                "[realms]\n {REALM} = {{\n  database_name = {d}/principal\n  \
                 key_stash_file = {d}/stash\n  acl_file = {d}/kadm5.acl\n  \
                 kdc_listen = {listen}\n  kdc_tcp_listen = {listen}\n }}\n\
                 [logging]\n kdc = FILE:{d}/kdc.log\n",
                d = data.display()
            ),
        )
        .unwrap();
        let ok = self
            .tool(db, TOOLS[1])
            .args(["create", "-s", "-r", REALM, "-P", "master-pw"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kdb5_util create failed");
        for (user, pw) in users {
            self.kadmin(db, &format!("addprinc -pw {pw} {user}"));
        }
    }

    fn tool(&self, db: &str, path: &str) -> Command {
        let mut c = Command::new(path);
        c.env("KRB5_CONFIG", &self.krb5_conf)
            .env("KRB5_KDC_PROFILE", self.kdc_conf(db))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn kadmin(&self, db: &str, query: &str) {
        let ok = self
            .tool(db, TOOLS[2])
            .args(["-r", REALM, "-q", query])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kadmin.local -q {query:?} failed");
    }

    /// Starts the KDC serving database `db` (`real`, or a `fake` one): as
    /// nobody when root (its database given to nobody), falling back to
    /// root, with a note, where nobody cannot run it.
    fn start_kdc(&mut self, db: &str) {
        self.stop_kdc();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(self.dir.join(db))
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown nobody {}", self.dir.join(db).display());
            if let Some(kdc) = self.spawn_kdc(db, Some(NOBODY)) {
                self.kdc = Some(kdc);
                return;
            }
            eprintln!("note: krb5kdc does not run as nobody here: running it as root");
        }
        self.kdc = Some(self.spawn_kdc(db, None).expect("krb5kdc did not start"));
    }

    /// krb5kdc in the foreground, once it accepts connections (`None`: it
    /// exited first).
    fn spawn_kdc(&self, db: &str, uid: Option<u32>) -> Option<Proc> {
        let mut cmd = self.tool(db, TOOLS[0]);
        cmd.args(["-n", "-r", REALM]);
        if let Some(id) = uid {
            cmd.uid(id).gid(id);
        }
        let mut kdc = Proc(cmd.spawn().unwrap());
        let port = self.port;
        let mut exited = false;
        wait_until("the KDC", Duration::from_secs(15), || {
            exited = kdc.0.try_wait().unwrap().is_some();
            exited || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        (!exited).then_some(kdc)
    }

    fn stop_kdc(&mut self) {
        self.kdc = None;
    }
}

fn login_with(chain: &Arc<AuthChain>, user: &str, password: &str) -> Step {
    let client = ClientAuth {
        username: user.to_owned(),
        digests: vec!["hmac+sha256".into(), "xor".into()],
        salt_digests: vec!["hmac+sha256".into()],
    };
    let peer = PeerInfo::tcp("127.0.0.1:1".parse().unwrap(), None);
    let mut flow = AuthFlow::new(chain.clone(), client, peer);
    let Step::Challenge(c) = flow.advance(None) else {
        panic!("no challenge")
    };
    assert_eq!(c.digest, "xor", "Kerberos needs the password: xor");
    flow.advance(Some(client_answer(&c, password.as_bytes()).unwrap()))
}

fn chain(spec: &str) -> Arc<AuthChain> {
    let spec = AuthSpec::parse(spec).unwrap();
    Arc::new(AuthChain::new(&[spec], AuthPolicy::default()).unwrap())
}

fn accepted(s: Step, what: &str) {
    assert!(matches!(s, Step::Accepted(_)), "{what}: {s:?}");
}

fn refused(s: Step, what: &str) -> Refused {
    match s {
        Step::Refused(r) => {
            eprintln!("{what}: {}", r.detail);
            r
        }
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn passwords_checked_by_a_real_kdc() {
    if !kdc_tools() {
        return;
    }
    let mut realm = Realm::new("krb5-flow");
    // libkrb5 of this process reads it; no other test of this binary loads
    // libkrb5 in-process.
    std::env::set_var("KRB5_CONFIG", &realm.krb5_conf);
    realm.start_kdc("real");
    let keytab = realm.keytab.display().to_string();
    let verified = chain(&format!(
        "kerberos-password,realm={REALM},service=xpra/localhost,keytab={keytab}"
    ));

    accepted(login_with(&verified, "alice", "secret"), "right password");
    let r = refused(login_with(&verified, "alice", "wrong"), "wrong password");
    assert_eq!(r.cause, RefuseCause::Credentials, "{r:?}");
    assert_eq!(r.reason, "authentication failed");
    let r = refused(login_with(&verified, "bob", "secret"), "unknown principal");
    assert_eq!(r.cause, RefuseCause::Credentials, "{r:?}");
    accepted(
        login_with(&verified, &format!("alice@{REALM}"), "secret"),
        "user@REALM",
    );
    // another realm named by the user: not this KDC's
    let r = refused(
        login_with(&verified, "alice@NO-SUCH.TEST", "secret"),
        "unknown realm",
    );
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    // username= replaces the client's name (xpra's option)
    let bound = chain(&format!(
        "kerberos-password,username=alice,service=xpra/localhost,keytab={keytab}"
    ));
    accepted(login_with(&bound, "whoever", "secret"), "username=");
    // no realm=, no keytab=: krb5.conf's default realm and default keytab
    accepted(
        login_with(
            &chain("kerberos-password,service=xpra/localhost"),
            "alice",
            "secret",
        ),
        "defaults",
    );
    // no service=: any host/ key of the keytab; this one has none
    let r = refused(
        login_with(
            &chain(&format!("kerberos-password,keytab={keytab}")),
            "alice",
            "secret",
        ),
        "no service, no host key",
    );
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(r.detail.contains("ticket not verified"), "{r:?}");

    // verification fails closed: a stale key, or no key for the service
    let stale = chain(&format!(
        "kerberos-password,service=xpra/localhost,keytab={}",
        realm.stale_keytab.display()
    ));
    let r = refused(login_with(&stale, "alice", "secret"), "stale keytab");
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(r.detail.contains("ticket not verified"), "{r:?}");
    let other = chain(&format!(
        "kerberos-password,service=host/elsewhere,keytab={keytab}"
    ));
    let r = refused(
        login_with(&other, "alice", "secret"),
        "service not in keytab",
    );
    assert!(r.detail.contains("ticket not verified"), "{r:?}");
    // a keytab that cannot be read: refused at startup
    let e = AuthChain::new(
        &[AuthSpec::parse("kerberos-password,keytab=/nonexistent/krb5.keytab").unwrap()],
        AuthPolicy::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot read the keytab"), "{e}");

    // verify=no: the password alone
    let unverified = chain(&format!("kerberos-password,realm={REALM},verify=no"));
    accepted(login_with(&unverified, "alice", "secret"), "verify=no");
    let r = refused(
        login_with(&unverified, "alice", "wrong"),
        "verify=no, wrong",
    );
    assert_eq!(r.cause, RefuseCause::Credentials, "{r:?}");
    // unverified, another realm's KDC is not asked (it would decide alone)
    let r = refused(
        login_with(&unverified, "alice@SILENT.TEST", "secret"),
        "verify=no, another realm",
    );
    assert_eq!(r.cause, RefuseCause::Credentials, "{r:?}");
    accepted(
        login_with(&unverified, &format!("alice@{REALM}"), "secret"),
        "verify=no, user@REALM",
    );

    // a KDC that accepts the connection and never answers: the timeout
    let silent = chain("kerberos-password,realm=SILENT.TEST,verify=no,timeout=1");
    let r = refused(login_with(&silent, "alice", "secret"), "silent KDC");
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(
        r.detail.contains("no answer from the KDC within 1 s"),
        "{r:?}"
    );
    let _ = &realm.silent;

    // the KDC stopped: refused, said why
    realm.stop_kdc();
    let r = refused(login_with(&verified, "alice", "secret"), "KDC stopped");
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert_eq!(r.reason, "authentication failed");
    assert!(r.detail.contains("KDC unreachable"), "{r:?}");

    // a spoofed KDC for the realm (its own database: the password it
    // chose, its own key for the service): a password-only check lets it
    // in, the keytab's key does not
    realm.database("fake", &[("alice", "chosen-by-the-spoofer")]);
    // the same kvno as the real keytab's key: the key itself differs
    realm.kadmin("fake", "addprinc -randkey -kvno 3 xpra/localhost");
    realm.start_kdc("fake");
    accepted(
        login_with(&unverified, "alice", "chosen-by-the-spoofer"),
        "the spoofer's password, unverified",
    );
    let r = refused(
        login_with(&verified, "alice", "chosen-by-the-spoofer"),
        "the spoofer's password, verified",
    );
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(r.detail.contains("ticket not verified"), "{r:?}");

    // the real KDC back: the same module works again
    realm.start_kdc("real");
    accepted(login_with(&verified, "alice", "secret"), "KDC back");
}

#[test]
fn xpra_client_through_xfwd_with_kerberos() {
    if !kdc_tools() || !tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut realm = Realm::new("krb5-xpra");
    realm.start_kdc("real");
    let dir = realm.dir.clone();
    let session = Session::start(free_display(311), &dir);

    let port = free_port();
    let spec = format!(
        "--tcp-auth=kerberos-password,realm={REALM},service=xpra/localhost,keytab={}",
        realm.keytab.display()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xfwd"));
    cmd.env("KRB5_CONFIG", &realm.krb5_conf)
        .arg(format!(
            "--control-socket={}",
            dir.join(format!("control-{port}.sock")).display()
        ))
        .arg("--system-wide=no")
        .arg(format!("--bind-tcp=127.0.0.1:{port}"))
        .arg(format!("--socket-dirs={}", dir.display()))
        .args(["--cores", "2"])
        .arg(&spec);
    let mut xfwd = Xfwd::spawn(cmd, port);
    xfwd.wait_log("xfwd listening", Duration::from_secs(10));

    // the right password: the session's xterm on the client's display
    let display = free_display(session.display + 1);
    let _x = xvfb(display);
    let pw = dir.join("alice.pw");
    std::fs::write(&pw, "secret").unwrap();
    let (mut client, log) = attach_uri(
        &format!("tcp://alice@127.0.0.1:{port}/"),
        display,
        &dir,
        &[],
        &[&format!("--password-file={}", pw.display())],
    );
    wait_until(
        &format!("the xterm on :{display}"),
        Duration::from_secs(45),
        || windows(display).contains("xterm"),
    );
    assert!(client_kill(&mut client), "{}", read(&log));
    xfwd.wait_log("module=kerberos-password result=ok", Duration::from_secs(5));

    // a wrong one: "authentication failed"
    let wrong = dir.join("wrong.pw");
    std::fs::write(&wrong, "not-it").unwrap();
    let (mut client, log) = attach_uri(
        &format!("tcp://alice@127.0.0.1:{port}/"),
        display,
        &dir,
        &[],
        &[&format!("--password-file={}", wrong.display())],
    );
    assert!(
        wait_exit(&mut client, Duration::from_secs(40)),
        "client still running"
    );
    let text = read(&log);
    assert!(text.contains("authentication failed"), "{text}");
    xfwd.wait_log(
        "module=kerberos-password result=failed",
        Duration::from_secs(5),
    );
    assert!(!xfwd.log().contains("not-it"), "a password reached the log");
    assert!(xfwd.alive(), "xfwd must keep serving");
    let _ = &session;
}
