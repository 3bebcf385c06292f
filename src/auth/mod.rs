//! Authentication of clients, as xpra does it: an auth module per listener
//! (`MODULE[,key=value...]`), and a challenge sent to the client when the
//! module needs a password.
//!
//! Modules today: `allow` (challenges, accepts any password: the username is
//! what matters), `none` (no challenge), `reject`/`fail` (refuses everyone).
//! The password-checking modules (file, multifile, sqlite, ...) plug in here.

use bytes::Bytes;

use crate::wire::views::Challenge;
use crate::wire::Value;

/// Salt length xpra uses (`get_salt(64)`).
pub const SALT_LEN: usize = 64;

/// The auth modules xfwd knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthModule {
    Allow,
    None,
    Reject,
}

/// An auth module with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSpec {
    pub module: AuthModule,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSpecError {
    #[error("unknown auth module {0:?} (available: allow, none, reject)")]
    UnknownModule(String),
    #[error("auth option {0:?} is not key=value")]
    BadOption(String),
    #[error("auth module {module} takes no option {key:?}")]
    UnknownOption { module: &'static str, key: String },
}

impl AuthSpec {
    pub fn none() -> AuthSpec {
        AuthSpec {
            module: AuthModule::None,
            options: Vec::new(),
        }
    }

    /// Parses xpra's `MODULE[,key=value...]` (also `MODULE:key=value`).
    pub fn parse(s: &str) -> Result<AuthSpec, AuthSpecError> {
        let mut parts = s.split([',', ':']);
        let name = parts.next().unwrap_or("").trim();
        let module = match name {
            "allow" => AuthModule::Allow,
            "none" | "" => AuthModule::None,
            "reject" | "fail" => AuthModule::Reject,
            other => return Err(AuthSpecError::UnknownModule(other.to_owned())),
        };
        let mut options = Vec::new();
        for p in parts.filter(|p| !p.is_empty()) {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| AuthSpecError::BadOption(p.to_owned()))?;
            options.push((k.to_owned(), v.to_owned()));
        }
        // xpra's allow/none/reject accept no options but a prompt.
        if let Some((k, _)) = options.iter().find(|(k, _)| k != "prompt") {
            return Err(AuthSpecError::UnknownOption {
                module: module.name(),
                key: k.clone(),
            });
        }
        Ok(AuthSpec { module, options })
    }

    fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The prompt shown by the client when it asks for a password.
    pub fn prompt(&self) -> &str {
        self.option("prompt").unwrap_or("password")
    }
}

impl AuthModule {
    pub fn name(self) -> &'static str {
        match self {
            AuthModule::Allow => "allow",
            AuthModule::None => "none",
            AuthModule::Reject => "reject",
        }
    }
}

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
/// strongest hmac the client offers; `xor` for clients that offer none
/// (xpra's legacy behaviour, which modern clients refuse).
pub fn choose_salt_digest<'a>(offered: &[&'a str]) -> &'a str {
    DIGEST_ORDER[..6]
        .iter()
        .find_map(|d| offered.iter().find(|o| *o == d).copied())
        .unwrap_or("xor")
}

/// Why a challenge could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("the client offers no digest this server accepts (offered: {0})")]
    NoDigest(String),
    #[error("cannot read random bytes for the salt: {0}")]
    Random(String),
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
    let mut salt = [0u8; SALT_LEN];
    getrandom::getrandom(&mut salt).map_err(|e| ChallengeError::Random(e.to_string()))?;
    Ok(Challenge {
        salt: Bytes::copy_from_slice(&salt),
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
        let s = AuthSpec::parse("allow,prompt=Token").unwrap();
        assert_eq!(s.prompt(), "Token");
        assert!(AuthSpec::parse("allow,foo").is_err());
        assert!(AuthSpec::parse("allow,foo=1").is_err());
        assert!(matches!(
            AuthSpec::parse("kerberos"),
            Err(AuthSpecError::UnknownModule(_))
        ));
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
