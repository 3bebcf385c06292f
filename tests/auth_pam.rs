//! The `pam` module against the real libpam (cargo feature `pam`).
//!
//! Writes two throw-away PAM services, `/etc/pam.d/xfwd-test-permit-PID`
//! (pam_permit) and `/etc/pam.d/xfwd-test-deny-PID` (pam_deny), and removes
//! them afterwards: needs root (CI runs as root). Elsewhere the
//! service-file checks are skipped with a note.

#![cfg(feature = "pam")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use xfwd::auth::{
    client_answer, AuthChain, AuthFlow, AuthPolicy, AuthSpec, ClientAuth, Digest, PeerInfo,
    RefuseCause, Step, Transport,
};

struct Service(PathBuf);

impl Service {
    fn new(kind: &str, body: &str) -> Option<Service> {
        let name = format!("xfwd-test-{kind}-{}", std::process::id());
        let path = PathBuf::from("/etc/pam.d").join(&name);
        match std::fs::write(&path, body) {
            Ok(()) => Some(Service(path)),
            Err(e) => {
                eprintln!(
                    "note: cannot write {} ({e}): skipping this PAM check",
                    path.display()
                );
                None
            }
        }
    }
    fn name(&self) -> &str {
        self.0.file_name().unwrap().to_str().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unix_peer() -> PeerInfo {
    PeerInfo {
        transport: Transport::Unix,
        uid: Some(0),
        gid: Some(0),
        ..PeerInfo::default()
    }
}

fn login(service: &str, user: &str, password: &[u8]) -> Step {
    let spec = AuthSpec::parse(&format!("pam,service={service},check-account=yes")).unwrap();
    let chain = Arc::new(AuthChain::new(&[spec], AuthPolicy::default()).unwrap());
    let client = ClientAuth {
        username: user.to_owned(),
        digests: vec!["hmac+sha256".into(), "xor".into()],
        salt_digests: vec!["hmac+sha256".into()],
    };
    let mut flow = AuthFlow::new(chain, client, unix_peer());
    let Step::Challenge(c) = flow.advance(None) else {
        panic!("no challenge")
    };
    assert_eq!(c.digest, Digest::Xor.name(), "PAM needs the password: xor");
    flow.advance(Some(client_answer(&c, password).unwrap()))
}

#[test]
fn permit_and_deny_services() {
    let Some(permit) = Service::new(
        "permit",
        "auth required pam_permit.so\naccount required pam_permit.so\n",
    ) else {
        return;
    };
    let Some(deny) = Service::new(
        "deny",
        "auth required pam_deny.so\naccount required pam_deny.so\n",
    ) else {
        return;
    };
    let s = login(permit.name(), "root", b"anything");
    assert!(matches!(s, Step::Accepted(_)), "{s:?}");
    let s = login(deny.name(), "root", b"anything");
    match s {
        Step::Refused(r) => assert_eq!(r.cause, RefuseCause::Credentials, "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unix_passwords_of_unknown_users_fail() {
    // pam_unix through Debian's common-auth: an account that does not exist
    let spec = AuthSpec::parse("pam,service=login").unwrap();
    let a = xfwd::auth::authenticator(&spec).unwrap();
    let r = a.check_password("xfwd-no-such-user-4711", b"pw", &unix_peer());
    assert!(!r.unwrap_or(false));
    // and the policy: PAM over TCP from another host is refused before any
    // challenge; from this host's loopback the password stays here.
    let chain = Arc::new(AuthChain::new(&[spec], AuthPolicy::default()).unwrap());
    let client = ClientAuth {
        username: "root".into(),
        digests: vec!["xor".into()],
        salt_digests: vec!["hmac+sha256".into()],
    };
    let remote = PeerInfo::tcp("192.0.2.1:1".parse().unwrap(), None);
    match AuthFlow::new(chain.clone(), client.clone(), remote).advance(None) {
        Step::Refused(r) => assert_eq!(r.cause, RefuseCause::Policy),
        other => panic!("{other:?}"),
    }
    let local = PeerInfo::tcp("127.0.0.1:1".parse().unwrap(), None);
    match AuthFlow::new(chain, client, local).advance(None) {
        Step::Challenge(c) => assert_eq!(c.digest, "xor"),
        other => panic!("{other:?}"),
    }
}
