//! The `ldap` and `ldap3` modules against a real OpenLDAP server.
//!
//! Each test runs its own slapd (Debian's `slapd`, `apt-get install -y
//! slapd ldap-utils`; the packaged instance is not used): a `slapd.conf`
//! and an mdb database in a temp directory, loaded with `slapadd`,
//! listening on `ldap://127.0.0.1:PORT/` and `ldaps://127.0.0.1:PORT2/`
//! (a certificate made with openssl), run as the `openldap` user when the
//! tests run as root. The directory, `dc=example,dc=com`: alice and bob
//! under `ou=people` with userPassword (slappasswd), uidNumber and
//! gidNumber. The server allows "unauthenticated" binds (a DN with an
//! empty password), as many do, so that the module's own refusal of an
//! empty password is what is tested.
//!
//! The flow is driven as the engine drives it (`AuthFlow::advance`,
//! `client_answer`); one test runs a real `xpra attach` through xfwd to a
//! real `xpra start` session. Without slapd the tests fail with what to
//! install (`XFWD_SKIP_INTEROP=1`: skipped).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Proc};
use xfwd::auth::{
    authenticator, client_answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, PeerInfo,
    RefuseCause, Refused, Sessions, Step,
};

const SUFFIX: &str = "dc=example,dc=com";
const ALICE_PW: &str = "alice-s3cret";
const BOB_PW: &str = "bob pässword";
const SVC_PW: &str = "svc-pw";

fn dn(user: &str) -> String {
    format!("uid={user},ou=people,{SUFFIX}")
}

fn slapd_present() -> bool {
    let missing: Vec<&str> = [
        "/usr/sbin/slapd",
        "/usr/sbin/slapadd",
        "/usr/sbin/slappasswd",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .chain((!common::have("openssl")).then_some("openssl"))
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("XFWD_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("XFWD_SKIP_INTEROP=1: skipping, missing {missing:?}");
        return false;
    }
    panic!(
        "the ldap tests need {missing:?}: DEBIAN_FRONTEND=noninteractive apt-get install -y \
         slapd ldap-utils openssl (or set XFWD_SKIP_INTEROP=1)"
    );
}

/// Our own slapd.
struct Slapd {
    dir: PathBuf,
    port: u16,
    tls_port: u16,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    proc: Option<Proc>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        common::text(&out.stdout),
        common::text(&out.stderr)
    );
    common::text(&out.stdout)
}

/// A self-signed CA, DIR/NAME.pem and DIR/NAME.key.
fn make_ca(dir: &Path, name: &str) {
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN=xfwd test {name}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .stderr(Stdio::null()));
}

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Slapd {
    fn new(name: &str) -> Slapd {
        let dir = common::scratch(&format!("slapd-{name}"));
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::create_dir_all(dir.join("db2")).unwrap();
        // a CA, and the server's certificate (for 127.0.0.1) signed by it
        let ca = dir.join("ca.pem");
        make_ca(&dir, "ca");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()));
        let hash = |pw: &str| {
            run(Command::new("/usr/sbin/slappasswd").args(["-s", pw]))
                .trim()
                .to_owned()
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {d}/slapd.pid\n\
             allow bind_anon_dn\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             database mdb\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"cn=admin,{SUFFIX}\"\n\
             directory {d}/db\n\
             maxsize 10485760\n\
             access to attrs=userPassword by anonymous auth by self read by * none\n\
             access to * by * read\n\
             database mdb\n\
             suffix \"o=svc\"\n\
             directory {d}/db2\n\
             maxsize 10485760\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n",
            d = dir.display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(dir.join("slapd.conf"), conf).unwrap();
        let person = |user: &str, cn: &str, uid: u32, gid: u32, pw: &str| {
            format!(
                "dn: {}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: {user}\n\
                 cn: {cn}\nsn: {cn}\nuidNumber: {uid}\ngidNumber: {gid}\n\
                 homeDirectory: /home/{user}\nuserPassword: {}\n\n",
                dn(user),
                hash(pw)
            )
        };
        let ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\n\
             dc: example\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: cn=Alice Smith,{SUFFIX}\nobjectClass: person\ncn: Alice Smith\nsn: Smith\n\
             userPassword: {}\n\n{}{}",
            hash(ALICE_PW),
            person("alice", "Alice", 2001, 2002, ALICE_PW),
            person("bob", "Bob", 2003, 2004, BOB_PW),
        );
        std::fs::write(dir.join("data.ldif"), ldif).unwrap();
        run(Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("data.ldif")));
        // a service entry whose DN has no comma: `ldap3,username=o=svc`
        std::fs::write(
            dir.join("svc.ldif"),
            format!(
                "dn: o=svc\nobjectClass: organization\no: svc\nuserPassword: {}\n",
                hash(SVC_PW)
            ),
        )
        .unwrap();
        run(Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .args(["-b", "o=svc", "-l"])
            .arg(dir.join("svc.ldif")));
        if as_root() {
            // slapd runs as the openldap user: it must own its files
            run(Command::new("chown")
                .args(["-R", "openldap:openldap"])
                .arg(&dir));
        }
        let mut s = Slapd {
            dir,
            port: free_port(),
            tls_port: free_port(),
            ca,
            proc: None,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("slapd.log")).unwrap();
        let mut cmd = Command::new("/usr/sbin/slapd");
        cmd.arg("-d")
            .arg("0")
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.port, self.tls_port
            ));
        if as_root() {
            cmd.args(["-u", "openldap", "-g", "openldap"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = proc.0.try_wait() {
                panic!("slapd exited ({status}): {}", self.log());
            }
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.port) && up(self.tls_port) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
    }

    fn log(&self) -> String {
        common::read(&self.dir.join("slapd.log"))
    }

    /// `ldap,...` with this server's host and port.
    fn ldap(&self, options: &str) -> String {
        format!("ldap,host=127.0.0.1,port={}{options}", self.port)
    }

    fn ldap3(&self, options: &str) -> String {
        format!("ldap3,host=127.0.0.1,port={}{options}", self.port)
    }

    /// A file holding `format` (for `username_format_file=`).
    fn format_file(&self, format: &str) -> String {
        let f = self.dir.join("username_format");
        std::fs::write(&f, format!("# bind DN\n{format}\n")).unwrap();
        f.display().to_string()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP client on this host's loopback (private: xor is allowed).
fn loopback_peer() -> PeerInfo {
    PeerInfo::tcp(
        "127.0.0.1:40000".parse().unwrap(),
        Some("127.0.0.1:14500".parse().unwrap()),
    )
}

/// One login as the engine runs it: hello, xor challenge, answer.
fn login(spec: &str, user: &str, password: &str) -> Step {
    let spec = AuthSpec::parse(spec).unwrap();
    let chain = Arc::new(AuthChain::new(&[spec], AuthPolicy::default()).unwrap());
    let client = ClientAuth {
        username: user.to_owned(),
        digests: vec!["hmac+sha256".into(), "xor".into()],
        salt_digests: vec!["hmac+sha256".into()],
    };
    let mut flow = AuthFlow::new(chain, client, loopback_peer());
    let Step::Challenge(c) = flow.advance(None) else {
        panic!("no challenge")
    };
    assert_eq!(c.digest, "xor", "LDAP needs the password: xor");
    flow.advance(Some(client_answer(&c, password.as_bytes()).unwrap()))
}

fn accepted(step: Step) -> Option<Sessions> {
    match step {
        Step::Accepted(a) => {
            assert_eq!(a.modules.len(), 1);
            a.sessions
        }
        other => panic!("not accepted: {other:?}"),
    }
}

fn refused(step: Step) -> Refused {
    match step {
        Step::Refused(r) => {
            assert_eq!(r.reason, "authentication failed", "{r:?}");
            r
        }
        other => panic!("not refused: {other:?}"),
    }
}

fn refused_credentials(step: Step) {
    let r = refused(step);
    assert_eq!(r.cause, RefuseCause::Credentials, "{r:?}");
}

#[test]
fn passwords_users_and_directory_ids() {
    if !slapd_present() {
        return;
    }
    let s = Slapd::new("passwords");
    let file = s.format_file(&format!("uid=%username,ou=people,{SUFFIX}"));
    let spec = s.ldap(&format!(",username_format_file={file}"));

    // right password: in, with the local sessions of xfwd's account
    let sessions = accepted(login(&spec, "alice", ALICE_PW)).unwrap();
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    assert_eq!((sessions.uid, sessions.gid), (Some(me.0), Some(me.1)));
    // non-ASCII passwords go as UTF-8
    accepted(login(&spec, "bob", BOB_PW));
    // wrong password, another user's password, unknown user
    refused_credentials(login(&spec, "alice", "wrong"));
    refused_credentials(login(&spec, "alice", BOB_PW));
    refused_credentials(login(&spec, "nobody-here", ALICE_PW));
    // a user name that would add DN parts: refused before any bind
    refused_credentials(login(&spec, "alice,ou=people", ALICE_PW));
    refused_credentials(login(&spec, "x=y", ALICE_PW));

    // empty password: this server takes a DN with an empty password as an
    // anonymous bind ...
    let who = run(Command::new("ldapwhoami")
        .args(["-x", "-H", &format!("ldap://127.0.0.1:{}", s.port)])
        .args(["-D", &dn("alice"), "-w", ""]));
    assert_eq!(who.trim(), "anonymous");
    // ... the module refuses it before binding (and xpra's client cannot
    // even answer a challenge with an empty password)
    let module = authenticator(&AuthSpec::parse(&spec).unwrap()).unwrap();
    assert!(!module
        .check_password("alice", b"", &loopback_peer())
        .unwrap());
    assert!(module
        .check_password("alice", ALICE_PW.as_bytes(), &loopback_peer())
        .unwrap());

    // uid / gid from the directory's attributes; uid= / gid= still win
    let ids = format!("{spec},uid_attribute=uidNumber,gid_attribute=gidNumber");
    let sessions = accepted(login(&ids, "alice", ALICE_PW)).unwrap();
    assert_eq!((sessions.uid, sessions.gid), (Some(2001), Some(2002)));
    let sessions = accepted(login(&ids, "bob", BOB_PW)).unwrap();
    assert_eq!((sessions.uid, sessions.gid), (Some(2003), Some(2004)));
    let sessions = accepted(login(&format!("{ids},uid=77,gid=78"), "bob", BOB_PW)).unwrap();
    assert_eq!((sessions.uid, sessions.gid), (Some(77), Some(78)));
    // an attribute the entry lacks refuses the login, saying why
    let r = refused(login(
        &format!("{spec},uid_attribute=employeeNumber"),
        "alice",
        ALICE_PW,
    ));
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(r.detail.contains("employeeNumber"), "{r:?}");
}

#[test]
fn bind_name_formats() {
    if !slapd_present() {
        return;
    }
    let s = Slapd::new("formats");
    // %dc: the domain as dc= components; the entry "cn=Alice Smith,
    // dc=example,dc=com" is "cn=%username,%dc" with domain=example.com
    let f = s.format_file("cn=%username,%dc");
    let spec = s.ldap(&format!(",username_format_file={f},domain=example.com"));
    accepted(login(&spec, "Alice Smith", ALICE_PW));
    refused_credentials(login(&spec, "Alice Smith", "nope"));
    // the default format, with this host's domain: no such entry here
    refused_credentials(login(&s.ldap(""), "alice", ALICE_PW));

    // ldap3: the user name is the bind name
    let spec = s.ldap3("");
    accepted(login(&spec, &dn("alice"), ALICE_PW));
    refused_credentials(login(&spec, &dn("alice"), "nope"));
    refused_credentials(login(&spec, "alice", ALICE_PW));
    let sessions = accepted(login(
        &s.ldap3(",uid_attribute=uidNumber,gid_attribute=gidNumber"),
        &dn("bob"),
        BOB_PW,
    ))
    .unwrap();
    assert_eq!((sessions.uid, sessions.gid), (Some(2003), Some(2004)));
    // username=: one bind name for every client
    let spec = s.ldap3(",authentication=SIMPLE,username=o=svc");
    accepted(login(&spec, "whoever", SVC_PW));
    refused_credentials(login(&spec, "whoever", ALICE_PW));
    // NTLM / SASL: refused at startup
    let e = AuthSpec::parse(&s.ldap3(",authentication=NTLM"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("SIMPLE"), "{e}");
}

#[test]
fn ldaps_with_cacert() {
    if !slapd_present() {
        return;
    }
    let s = Slapd::new("ldaps");
    let f = s.format_file(&format!("uid=%username,ou=people,{SUFFIX}"));
    let spec = format!(
        "ldap,host=127.0.0.1,port={},tls=1,cacert={},username_format_file={f}",
        s.tls_port,
        s.ca.display()
    );
    accepted(login(&spec, "alice", ALICE_PW));
    refused_credentials(login(&spec, "alice", "wrong"));
    let spec3 = format!(
        "ldap3,host=127.0.0.1,port={},tls=1,cacert={}",
        s.tls_port,
        s.ca.display()
    );
    accepted(login(&spec3, &dn("bob"), BOB_PW));
    // a CA that did not sign the server's certificate: no bind, an error
    // that says why
    make_ca(&s.dir, "other-ca");
    let spec = format!(
        "ldap,host=127.0.0.1,port={},tls=1,cacert={},username_format_file={f}",
        s.tls_port,
        s.dir.join("other-ca.pem").display()
    );
    let r = refused(login(&spec, "alice", ALICE_PW));
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(
        r.detail.contains(&format!(
            "LDAP server at 127.0.0.1:{} is unreachable",
            s.tls_port
        )),
        "{r:?}"
    );
    assert!(r.detail.to_lowercase().contains("certificate"), "{r:?}");
    // ldaps to the plain LDAP port: an error, no hang
    let t0 = Instant::now();
    let r = refused(login(
        &format!(
            "ldap,host=127.0.0.1,port={},tls=1,cacert={},timeout=2",
            s.port,
            s.ca.display()
        ),
        "alice",
        ALICE_PW,
    ));
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{r:?}");
}

#[test]
fn server_down_then_back() {
    if !slapd_present() {
        return;
    }
    let mut s = Slapd::new("down");
    let f = s.format_file(&format!("uid=%username,ou=people,{SUFFIX}"));
    let spec = s.ldap(&format!(",username_format_file={f},timeout=2"));
    accepted(login(&spec, "alice", ALICE_PW));

    s.kill();
    let t0 = Instant::now();
    let r = refused(login(&spec, "alice", ALICE_PW));
    eprintln!("server killed: {}", r.detail);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(r.cause, RefuseCause::Error, "{r:?}");
    assert!(!r.counts_as_failure(), "not the user's fault: {r:?}");
    assert!(
        r.detail.contains(&format!(
            "LDAP server at 127.0.0.1:{} is unreachable",
            s.port
        )),
        "{r:?}"
    );

    // a server that accepts connections and never answers: the deadline
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let t0 = Instant::now();
    let r = refused(login(
        &format!("ldap,host=127.0.0.1,port={hole_port},domain=x,timeout=1"),
        "alice",
        ALICE_PW,
    ));
    let took = t0.elapsed();
    eprintln!("no answer: {} ({took:?})", r.detail);
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(r.detail.contains("no answer within 1.0 s"), "{r:?}");
    drop(hole);

    // back: the next login works
    s.start();
    accepted(login(&spec, "alice", ALICE_PW));
    refused_credentials(login(&spec, "alice", "wrong"));
}

/// A real `xpra attach` through xfwd over TLS (`--ssl-auth=ldap,...`; the
/// client checks xfwd's certificate) to a real `xpra start` session.
#[test]
fn xpra_client_through_xfwd_with_ldap() {
    if !slapd_present() || !common::tools_present() {
        return;
    }
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Slapd::new("xpra");
    let dir = common::scratch("ldap-xpra");
    let f = s.format_file(&format!("uid=%username,ou=people,{SUFFIX}"));
    let session = common::Session::start(common::free_display(251), &dir);
    let (cert, key) = common::certificate(&dir);
    let auth = format!(
        "ldap,host=127.0.0.1,port={},username_format_file={f}",
        s.port
    );
    let xfwd = common::Xfwd::start(
        &dir,
        &[
            &cert,
            &key,
            &format!("--tcp-auth={auth}"),
            &format!("--ssl-auth={auth}"),
        ],
    );
    let ca = format!("--ssl-ca-certs={}", dir.join("cert.pem").display());
    let pw = |name: &str, pw: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pw).unwrap();
        format!("--password-file={}", p.display())
    };
    let display = common::free_display(session.display + 1);
    let _x = common::xvfb(display);

    let (mut client, log) = common::attach_uri(
        &format!("ssl://alice@127.0.0.1:{}/", xfwd.port),
        display,
        &dir,
        &[],
        &[&pw("alice.pw", ALICE_PW), &ca],
    );
    common::wait_until(
        &format!("alice's xterm on :{display}"),
        Duration::from_secs(45),
        || common::windows(display).contains("xterm"),
    );
    xfwd.wait_log(
        "user=\"alice\" module=ldap result=ok",
        Duration::from_secs(5),
    );
    assert!(common::client_kill(&mut client), "{}", common::read(&log));

    let (mut client, log) = common::attach_uri(
        &format!("ssl://alice@127.0.0.1:{}/", xfwd.port),
        display,
        &dir,
        &[],
        &[&pw("wrong.pw", "not-it"), &ca],
    );
    assert!(
        common::wait_exit(&mut client, Duration::from_secs(40)),
        "client still running"
    );
    let text = common::read(&log);
    assert!(text.contains("authentication failed"), "{text}");
    xfwd.wait_log(
        "user=\"alice\" module=ldap result=failed",
        Duration::from_secs(5),
    );
    let log = xfwd.log();
    for l in log.lines().filter(|l| l.contains("auth time=")) {
        eprintln!("{l}");
    }
    assert!(
        !log.contains(ALICE_PW),
        "a password reached the log:\n{log}"
    );
    drop(session);
}
