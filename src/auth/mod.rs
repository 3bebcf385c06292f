//! Authentication of clients, as xpra does it: a chain of auth modules per
//! listener (`MODULE[,key=value...]`, one per `--tcp-auth` ...), xpra's
//! challenge/response with hmac digests, and the sessions each user may
//! reach. See `docs/auth.md`.
//!
//! - [`digest`]: hmac+md5 ... hmac+sha512, legacy `hmac`, `xor`; salt
//!   combination; constant-time checks.
//! - [`spec`]: [`AuthSpec`], parsed as xpra parses auth options.
//! - [`authenticator`]: the [`Authenticator`] trait every module
//!   implements, [`Sessions`] / [`Targets`], [`authenticator()`] to build a
//!   module from a spec.
//! - modules: [`modules`] (allow, none, reject, fail, password), [`file`],
//!   [`multifile`], [`sqlite`], [`env`], [`exec`], [`pam`] (feature `pam`),
//!   [`peercred`], [`kerberos`] (`kerberos-password`: the system's libkrb5,
//!   loaded at run time), [`ldap`] (ldap, ldap3), [`sql`] (mysql, sql),
//!   [`postgresql`] (postgresql, and sql with a PostgreSQL URI), [`hosts`] (TCP wrappers: the system's libwrap, loaded at run time),
//!   [`otp`], [`http_header`].
//! - [`challenge`]: one challenge and its answer; [`flow`]: a listener's
//!   [`AuthChain`] and a connection's [`AuthFlow`].
//! - [`targets`] (at home in `crate::sessions`, with routing):
//!   `tcp://user:pw@host:port/display` and friends, session options.
//! - [`throttle`]: delays after failures, the log line of each attempt.
//!
//! The items of the first engine ([`AuthModule`], [`make_challenge`],
//! [`choose_digest`], [`choose_salt_digest`]) keep working.

pub mod authenticator;
pub mod challenge;
pub mod digest;
pub mod env;
pub mod exec;
pub mod file;
pub mod flow;
pub mod hosts;
pub mod http_header;
pub mod ids;
pub mod kerberos;
pub mod ldap;
pub mod modules;
pub mod multifile;
pub mod otp;
pub mod pam;
pub mod peer;
pub mod peercred;
pub mod postgresql;
pub mod secret;
pub mod spec;
pub mod sql;
pub mod sql_rows;
pub mod sqlite;
/// Session targets live with routing (`crate::sessions::targets`); the auth
/// modules that list them use them from here too.
pub use crate::sessions::targets;
pub mod throttle;

pub use authenticator::{authenticator, AuthError, Authenticator, Method, Sessions, Targets};
pub use challenge::{client_answer, Answer, ChallengeError, IssuedChallenge, SALT_LEN};
pub use digest::Digest;
pub use flow::{
    Accepted, AuthChain, AuthFlow, AuthPolicy, ClientAuth, RefuseCause, Refused, Step, REFUSED,
};
pub use peer::{PeerInfo, Transport};
pub use secret::Secret;
pub use spec::{AuthModule, AuthSpec, AuthSpecError, ModuleKind};
pub use targets::{SelectError, SessionOptions, Target, TargetKind};
pub use throttle::{SharedThrottle, Throttle, ThrottleConfig};

use bytes::Bytes;

use crate::wire::views::Challenge;
use crate::wire::Value;

/// Digests xfwd can verify, strongest first (xpra's order).
const DIGEST_ORDER: [&str; 7] = [
    "hmac+sha512",
    "hmac+sha384",
    "hmac+sha256",
    "hmac+sha224",
    "hmac+sha1",
    "hmac+md5",
    "hmac",
];

/// Picks the digest for a challenge from what the client offers, strongest
/// first, as xpra does. `xor` sends the password itself (masked by the salt)
/// and is used only when `allow_xor` (private transports).
pub fn choose_digest<'a>(offered: &[&'a str], allow_xor: bool) -> Option<&'a str> {
    DIGEST_ORDER
        .iter()
        .find_map(|d| offered.iter().find(|o| *o == d).copied())
        .or_else(|| {
            allow_xor
                .then(|| offered.iter().find(|o| **o == "xor").copied())
                .flatten()
        })
}

/// Picks the salt digest (how client and server salts combine): the
/// strongest hmac the client offers (legacy `hmac` included, as xpra);
/// `xor` for clients that offer none (xpra's legacy behaviour, which
/// modern clients refuse; [`AuthFlow`] refuses it unless
/// [`AuthPolicy::legacy_salt_digest`]).
pub fn choose_salt_digest<'a>(offered: &[&'a str]) -> &'a str {
    DIGEST_ORDER
        .iter()
        .find_map(|d| offered.iter().find(|o| *o == d).copied())
        .unwrap_or("xor")
}

/// A fresh challenge for a client offering `digests` and `salt_digests`.
pub fn make_challenge(
    digests: &[&str],
    salt_digests: &[&str],
    allow_xor: bool,
    prompt: &str,
) -> Result<Challenge, ChallengeError> {
    let digest = choose_digest(digests, allow_xor)
        .ok_or_else(|| ChallengeError::NoDigest(digests.join(", ")))?;
    let salt = challenge::random_bytes(SALT_LEN)?;
    Ok(Challenge {
        salt: Bytes::from(salt),
        auth_caps: Value::Str(String::new()),
        digest: digest.to_owned(),
        salt_digest: choose_salt_digest(salt_digests).to_owned(),
        prompt: prompt.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert_eq!(AuthSpec::parse("allow").unwrap().module, AuthModule::Allow);
        assert_eq!(AuthSpec::parse("fail").unwrap().module, AuthModule::Reject);
        assert_eq!(AuthSpec::parse("none").unwrap().module, AuthModule::None);
        let s = AuthSpec::parse("allow,prompt=Token").unwrap();
        assert_eq!(s.prompt(), "Token");
        assert!(AuthSpec::parse("allow,foo").is_err());
        assert!(AuthSpec::parse("allow,foo=1").is_err());
        assert!(matches!(
            AuthSpec::parse("kerberos"),
            Err(AuthSpecError::UnknownModule(_))
        ));
        // modules the first engine cannot run fail closed there
        assert_eq!(
            AuthSpec::parse("multifile,filename=/x").unwrap().module,
            AuthModule::Reject
        );
    }

    #[test]
    fn digest_choice() {
        assert_eq!(
            choose_digest(&["xor", "hmac+sha1", "hmac+sha256"], false),
            Some("hmac+sha256")
        );
        assert_eq!(choose_digest(&["xor"], false), None);
        assert_eq!(choose_digest(&["xor"], true), Some("xor"));
        assert_eq!(
            choose_salt_digest(&["hmac+md5", "hmac+sha512", "hmac+sha3_512"]),
            "hmac+sha512"
        );
        assert_eq!(choose_salt_digest(&["hmac", "xor"]), "hmac");
        assert_eq!(choose_salt_digest(&[]), "xor");
    }

    #[test]
    fn challenges_are_fresh() {
        let a = make_challenge(&["hmac+sha256"], &["hmac+sha256"], false, "password").unwrap();
        let b = make_challenge(&["hmac+sha256"], &["hmac+sha256"], false, "password").unwrap();
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_ne!(a.salt, b.salt);
        assert_eq!(a.digest, "hmac+sha256");
    }
}
