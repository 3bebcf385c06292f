//! The auth chain end to end, without Python: a simulated client answers
//! the challenges xfwd's [`AuthFlow`] sends, for every module and for
//! chains of modules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use xfwd::auth::{
    client_answer, Answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, Digest,
    ModuleKind, PeerInfo, RefuseCause, Step, Targets, Transport, REFUSED,
};
use xfwd::wire::views::Hello;
use xfwd::wire::Value;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xfwd-auth-flow-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str, content: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chain(specs: &[&str], policy: AuthPolicy) -> Arc<AuthChain> {
    let specs = AuthSpec::parse_chain(specs).unwrap();
    Arc::new(AuthChain::new(&specs, policy).unwrap())
}

fn client(user: &str) -> ClientAuth {
    ClientAuth {
        username: user.to_owned(),
        digests: ["hmac", "hmac+sha256", "hmac+sha512", "xor"]
            .map(str::to_owned)
            .to_vec(),
        salt_digests: ["hmac+sha256", "hmac+sha512", "xor"]
            .map(str::to_owned)
            .to_vec(),
    }
}

fn tcp() -> PeerInfo {
    PeerInfo::tcp(
        "192.0.2.7:40000".parse().unwrap(),
        Some("127.0.0.1:14501".parse().unwrap()),
    )
}

fn unix(uid: u32, gid: u32) -> PeerInfo {
    PeerInfo {
        transport: Transport::Unix,
        uid: Some(uid),
        gid: Some(gid),
        ..PeerInfo::default()
    }
}

/// Runs a whole exchange, answering every challenge with the next password.
fn run(chain: &Arc<AuthChain>, user: &str, peer: PeerInfo, passwords: &[&[u8]]) -> Step {
    let mut flow = AuthFlow::new(chain.clone(), client(user), peer);
    let mut step = flow.advance(None);
    let mut pw = passwords.iter();
    while let Step::Challenge(c) = &step {
        let p = pw.next().expect("more challenges than passwords");
        let answer = client_answer(c, p).unwrap();
        step = flow.advance(Some(answer));
    }
    step
}

fn accepted(step: Step) -> xfwd::auth::Accepted {
    match step {
        Step::Accepted(a) => a,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn refused(step: Step) -> xfwd::auth::Refused {
    match step {
        Step::Refused(r) => r,
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn multifile_routes_users_and_hides_why_it_refuses() {
    let d = TempDir::new("multifile");
    let f = d.file(
        "users",
        b"foo|bar|nobody|nobody|tcp://192.168.1.200:10100/\n\
          moo|cow|nobody|nobody|tcp://192.168.1.200:10101/||compression=0\n",
    );
    let c = chain(&[&format!("multifile,filename={f}")], AuthPolicy::default());
    let a = accepted(run(&c, "foo", tcp(), &[b"bar"]));
    assert_eq!(a.username, "foo");
    assert_eq!(a.modules, vec![ModuleKind::Multifile]);
    let s = a.sessions.unwrap();
    assert_eq!(
        s.select(None).unwrap().unwrap().to_string(),
        "tcp://192.168.1.200:10100/"
    );
    let s = accepted(run(&c, "moo", tcp(), &[b"cow"])).sessions.unwrap();
    assert_eq!(
        s.select(None).unwrap().unwrap().to_string(),
        "tcp://192.168.1.200:10101/"
    );
    assert_eq!(s.session_options.compression_level, Some(0));

    let wrong = refused(run(&c, "foo", tcp(), &[b"cow"]));
    let unknown = refused(run(&c, "nobody-here", tcp(), &[b"bar"]));
    assert_eq!(wrong.reason, REFUSED);
    assert_eq!(unknown.reason, wrong.reason);
    assert_eq!(unknown.cause, RefuseCause::Credentials);
    assert_eq!(wrong.cause, RefuseCause::Credentials);
    assert!(wrong.counts_as_failure() && unknown.counts_as_failure());
    assert_ne!(wrong.detail, unknown.detail, "the log tells them apart");
}

#[test]
fn challenge_digests_follow_the_client_and_the_policy() {
    let c = chain(&["password,value=pw"], AuthPolicy::default());
    let mut flow = AuthFlow::new(c.clone(), client("u"), tcp());
    let Step::Challenge(ch) = flow.advance(None) else {
        panic!()
    };
    assert_eq!(ch.digest, "hmac+sha512");
    assert_eq!(ch.salt_digest, "hmac+sha512");
    assert_eq!(ch.salt.len(), 64);
    assert_eq!(ch.prompt, "password");

    // a client that offers only xor: refused on TCP, fine on a Unix socket
    let mut only_xor = client("u");
    only_xor.digests = vec!["xor".into()];
    let mut flow = AuthFlow::new(c.clone(), only_xor.clone(), tcp());
    let r = refused(flow.advance(None));
    assert_eq!(r.cause, RefuseCause::Policy);
    assert!(!r.counts_as_failure());
    let mut flow = AuthFlow::new(c.clone(), only_xor.clone(), unix(1, 1));
    let Step::Challenge(ch) = flow.advance(None) else {
        panic!()
    };
    assert_eq!(ch.digest, "xor");
    let ans = client_answer(&ch, b"pw").unwrap();
    accepted(flow.advance(Some(ans)));
    // ... or where the policy allows it
    let open = chain(
        &["password,value=pw"],
        AuthPolicy {
            xor_on_open_transports: true,
            ..AuthPolicy::default()
        },
    );
    let mut flow = AuthFlow::new(open, only_xor, tcp());
    assert!(matches!(flow.advance(None), Step::Challenge(_)));

    // a client without a salt digest: xor, refused unless legacy is on
    let mut old = client("u");
    old.salt_digests = vec!["xor".into()];
    let r = refused(AuthFlow::new(c.clone(), old.clone(), tcp()).advance(None));
    assert_eq!(r.reason, "insecure salt digest 'xor' rejected");
    let legacy = chain(
        &["password,value=pw"],
        AuthPolicy {
            legacy_salt_digest: true,
            ..AuthPolicy::default()
        },
    );
    let mut flow = AuthFlow::new(legacy, old, tcp());
    let Step::Challenge(ch) = flow.advance(None) else {
        panic!()
    };
    assert_eq!(ch.salt_digest, "xor");
    accepted(flow.advance(Some(client_answer(&ch, b"pw").unwrap())));

    // no usable digest at all
    let mut none = client("u");
    none.digests = vec!["des".into(), "hmac+sha3_512".into()];
    let r = refused(AuthFlow::new(c, none, tcp()).advance(None));
    assert_eq!(r.cause, RefuseCause::Policy);
}

#[test]
fn protocol_errors() {
    let c = chain(&["password,value=pw"], AuthPolicy::default());
    // no answer to the challenge
    let mut flow = AuthFlow::new(c.clone(), client("u"), tcp());
    assert!(matches!(flow.advance(None), Step::Challenge(_)));
    let r = refused(flow.advance(None));
    assert_eq!(r.cause, RefuseCause::Protocol);
    assert_eq!(r.reason, REFUSED);
    // the flow is over
    assert!(matches!(flow.advance(None), Step::Refused(_)));
    // an empty client salt
    let mut flow = AuthFlow::new(c.clone(), client("u"), tcp());
    let Step::Challenge(ch) = flow.advance(None) else {
        panic!()
    };
    let mut ans = client_answer(&ch, b"pw").unwrap();
    ans.client_salt = Some(Vec::new());
    assert_eq!(
        refused(flow.advance(Some(ans))).cause,
        RefuseCause::Protocol
    );
    // no client salt at all: the server salt alone (old clients)
    let mut flow = AuthFlow::new(c, client("u"), tcp());
    let Step::Challenge(ch) = flow.advance(None) else {
        panic!()
    };
    let r = Digest::HmacSha512.compute(b"pw", &ch.salt).unwrap();
    accepted(flow.advance(Some(Answer::new(&r, None))));
}

#[test]
fn simple_modules() {
    let p = AuthPolicy::default();
    // none: no challenge
    let a =
        accepted(AuthFlow::new(chain(&["none"], p.clone()), client("root"), tcp()).advance(None));
    assert_eq!(a.sessions.unwrap().targets, Targets::Local);
    // allow: a challenge, any answer
    accepted(run(
        &chain(&["allow"], p.clone()),
        "u",
        tcp(),
        &[b"anything"],
    ));
    // reject: a challenge, then no
    let r = refused(run(&chain(&["reject"], p.clone()), "u", tcp(), &[b"x"]));
    assert_eq!(r.reason, REFUSED);
    assert_eq!(r.module, Some(ModuleKind::Reject));
    // fail: no at once
    let r = refused(AuthFlow::new(chain(&["fail"], p.clone()), client("u"), tcp()).advance(None));
    assert_eq!(r.module, Some(ModuleKind::Fail));
    // the allow prompt is sent
    let mut flow = AuthFlow::new(chain(&["allow,prompt=token"], p), client("u"), tcp());
    let Step::Challenge(ch) = flow.advance(None) else {
        panic!()
    };
    assert_eq!(ch.prompt, "token");
}

#[test]
fn file_and_env_modules() {
    let d = TempDir::new("file");
    let f = d.file("pw", b"secret\n");
    let c = chain(&[&format!("file,filename={f}")], AuthPolicy::default());
    // the whole file, newline included, is the password
    accepted(run(&c, "anyone", tcp(), &[b"secret\n"]));
    refused(run(&c, "anyone", tcp(), &[b"secret"]));
    let c = chain(&["env,name=PATH"], AuthPolicy::default());
    let path = std::env::var("PATH").unwrap();
    accepted(run(&c, "u", tcp(), &[path.as_bytes()]));
    // missing file: a server-side error, same reason for the client
    let c = chain(
        &["file,filename=/nonexistent/xfwd-pw"],
        AuthPolicy::default(),
    );
    let r = refused(run(&c, "u", tcp(), &[b"x"]));
    assert_eq!(r.reason, REFUSED);
    assert_eq!(r.cause, RefuseCause::Error);
    assert!(!r.counts_as_failure());
}

#[test]
fn chains_must_all_pass_and_the_first_sessions_win() {
    let d = TempDir::new("chain");
    let f = d.file("users", b"foo|bar|1|1|tcp://h:1/\n");
    let me = nix::unistd::getuid().as_raw();
    let my_gid = nix::unistd::getgid().as_raw();
    let multi = format!("multifile,filename={f}");
    // peercred first (no challenge), then multifile (one challenge)
    let c = chain(
        &[&format!("peercred,uid={me}"), &multi],
        AuthPolicy::default(),
    );
    let a = accepted(run(&c, "foo", unix(me, my_gid), &[b"bar"]));
    assert_eq!(a.modules, vec![ModuleKind::Peercred, ModuleKind::Multifile]);
    // peercred offers sessions first: the peer's local ones (as xpra)
    let s = a.sessions.unwrap();
    assert_eq!(s.targets, Targets::Local);
    assert_eq!(s.uid, Some(me));
    // a wrong uid stops the chain before any challenge
    let r = refused(AuthFlow::new(c.clone(), client("foo"), unix(me + 1, 0)).advance(None));
    assert_eq!(r.module, Some(ModuleKind::Peercred));
    // over TCP peercred never passes
    refused(AuthFlow::new(c, client("foo"), tcp()).advance(None));

    // multifile then password: two challenges, one answer each
    let c = chain(&[&multi, "password,value=second"], AuthPolicy::default());
    let a = accepted(run(&c, "foo", tcp(), &[b"bar", b"second"]));
    assert_eq!(
        a.sessions
            .unwrap()
            .select(None)
            .unwrap()
            .unwrap()
            .to_string(),
        "tcp://h:1/"
    );
    refused(run(&c, "foo", tcp(), &[b"bar", b"bar"]));
    // otp (a gate: it knows nothing of the user) before multifile: the
    // row's sessions, not otp's (xfwd's own account)
    let otp = xfwd::auth::otp::OtpAuth::new(
        &AuthSpec::parse("otp,secret=JBSWY3DPEHPK3PXP,valid-window=1").unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = otp.code_at(now);
    let c = chain(
        &["otp,secret=JBSWY3DPEHPK3PXP,valid-window=1", &multi],
        AuthPolicy::default(),
    );
    let a = accepted(run(&c, "foo", unix(me, my_gid), &[code.as_bytes(), b"bar"]));
    assert_eq!(a.modules, vec![ModuleKind::Otp, ModuleKind::Multifile]);
    let s = a.sessions.unwrap();
    assert_eq!((s.uid, s.gid), (Some(1), Some(1)));
    assert_eq!(s.select(None).unwrap().unwrap().to_string(), "tcp://h:1/");
    // a gate alone: its (xfwd's own account's) local sessions
    let c = chain(
        &["otp,secret=JBSWY3DPEHPK3PXP,valid-window=1"],
        AuthPolicy::default(),
    );
    let a = accepted(run(&c, "bar", unix(me, my_gid), &[code.as_bytes()]));
    assert_eq!(a.sessions.unwrap().uid, Some(me));

    // reject in a chain: no sessions from it, but nothing passes anyway
    refused(run(
        &chain(&["allow", "reject"], AuthPolicy::default()),
        "u",
        tcp(),
        &[b"a", b"b"],
    ));
}

#[test]
fn exec_module() {
    let p = AuthPolicy::default();
    accepted(
        AuthFlow::new(
            chain(&["exec,command=/bin/true"], p.clone()),
            client("u"),
            tcp(),
        )
        .advance(None),
    );
    refused(
        AuthFlow::new(
            chain(&["exec,command=/bin/false"], p.clone()),
            client("u"),
            tcp(),
        )
        .advance(None),
    );
    // with require-challenge the password reaches the command (xor: private only)
    let spec = "exec,command=sh -c 'test \"$XFWD_AUTH_PASSWORD\" = open-sesame' ${info},require-challenge=yes";
    let c = chain(&[spec], p);
    accepted(run(&c, "u", unix(1, 1), &[b"open-sesame"]));
    refused(run(&c, "u", unix(1, 1), &[b"nope"]));
    let r = refused(AuthFlow::new(c, client("u"), tcp()).advance(None));
    assert_eq!(r.cause, RefuseCause::Policy);
}

#[test]
fn sqlite_database_from_the_tool() {
    let d = TempDir::new("sqlite");
    let db = d.0.join("auth.sdb");
    let db = db.to_str().unwrap();
    let tool = |args: &[&str]| {
        let args: Vec<String> = std::iter::once(db)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = xfwd::tools::auth_sqlite::run(&args, &mut out, &mut err);
        assert_eq!(rc, 0, "{}", String::from_utf8_lossy(&err));
    };
    tool(&["create"]);
    tool(&[
        "add",
        "foo",
        "bar",
        "nobody",
        "nobody",
        "tcp://192.168.1.200:10100/",
    ]);
    tool(&[
        "add",
        "moo",
        "cow",
        "nobody",
        "nobody",
        "tcp://192.168.1.200:10101/",
        "",
        "compression=0",
    ]);
    tool(&[
        "add",
        "multi",
        "pw",
        "0",
        "0",
        "tcp://h:10200/200, tcp://user:upw@h:10201/201",
    ]);
    let c = chain(&[&format!("sqlite,filename={db}")], AuthPolicy::default());
    let foo = accepted(run(&c, "foo", tcp(), &[b"bar"])).sessions.unwrap();
    assert_eq!(
        foo.select(None).unwrap().unwrap().to_string(),
        "tcp://192.168.1.200:10100/"
    );
    let moo = accepted(run(&c, "moo", tcp(), &[b"cow"])).sessions.unwrap();
    assert_eq!(moo.session_options.compression_level, Some(0));
    let multi = accepted(run(&c, "multi", tcp(), &[b"pw"]))
        .sessions
        .unwrap();
    assert!(
        multi.select(None).is_err(),
        "two targets: the client must pick"
    );
    let t = multi.select(Some("201")).unwrap().unwrap();
    assert_eq!(t.username(), Some("user"));
    assert_eq!(t.password().unwrap().as_bytes(), b"upw");
    assert!(!format!("{multi:?}").contains("upw"));
    assert_eq!(refused(run(&c, "foo", tcp(), &[b"cow"])).reason, REFUSED);
    assert_eq!(refused(run(&c, "ghost", tcp(), &[b"cow"])).reason, REFUSED);
}

#[test]
fn client_auth_from_hellos() {
    let hello = |pairs: Vec<(&str, Value)>| {
        vec![
            Value::from("hello"),
            Value::Dict(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), v))
                    .collect(),
            ),
        ]
    };
    let h = hello(vec![
        ("username", Value::from("foo")),
        (
            "digest",
            Value::List(vec!["hmac+sha256".into(), "xor".into()]),
        ),
        ("salt-digest", Value::List(vec!["hmac+sha512".into()])),
        (
            "challenge_response",
            Value::Bytes(Bytes::from_static(b"abcd")),
        ),
        (
            "challenge_client_salt",
            Value::Bytes(Bytes::from_static(b"salt")),
        ),
    ]);
    let view = Hello::parse(&h).unwrap();
    let c = ClientAuth::from_hello(&view);
    assert_eq!(c.username, "foo");
    assert_eq!(c.digests, vec!["hmac+sha256", "xor"]);
    assert_eq!(c.salt_digests, vec!["hmac+sha512"]);
    let a = Answer::from_hello(&view).unwrap();
    assert_eq!(a.response.as_bytes(), b"abcd");
    assert_eq!(a.client_salt.as_deref(), Some(&b"salt"[..]));
    // xpra's defaults when absent; the server's own user for no username
    let h = hello(vec![]);
    let view = Hello::parse(&h).unwrap();
    let c = ClientAuth::from_hello(&view);
    assert_eq!(c.digests, vec!["hmac"]);
    assert_eq!(c.salt_digests, vec!["xor"]);
    assert_eq!(c.username, xfwd::auth::ids::current_user_name());
    assert!(Answer::from_hello(&view).is_none());
}

#[test]
fn pam_is_a_build_feature() {
    let r = AuthSpec::parse("pam");
    if cfg!(feature = "pam") {
        let c = chain(&["pam,service=xfwd-test-none"], AuthPolicy::default());
        // PAM needs the password: xor only, so TCP is refused
        let r = refused(AuthFlow::new(c, client("root"), tcp()).advance(None));
        assert_eq!(r.cause, RefuseCause::Policy);
    } else {
        assert!(r.is_err());
        assert!(r.unwrap_err().to_string().contains("--features pam"));
    }
}

#[test]
fn flows_move_to_the_blocking_pool() {
    fn send_static<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send_static::<AuthFlow>();
    send_static::<Step>();
    shared::<AuthChain>();
    shared::<xfwd::auth::SharedThrottle>();
}
