//! One challenge: what the server sends, what it keeps, and how it checks
//! the answer. Sans-IO and cheap (no file, no database): usable on a shard.

use std::sync::OnceLock;

use bytes::Bytes;

use super::digest::{response_salt, verify_digest, xor_with_salt, Digest};
use super::secret::Secret;
use crate::wire::views::{Challenge, Hello};
use crate::wire::Value;

/// Salt length xpra uses (`get_salt(64)`).
pub const SALT_LEN: usize = 64;

/// Why a challenge could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("the client offers no digest this server accepts (offered: {0})")]
    NoDigest(String),
    #[error("cannot read random bytes for the salt: {0}")]
    Random(String),
}

/// `len` bytes from the OS random number generator.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, ChallengeError> {
    let mut v = vec![0u8; len];
    getrandom::getrandom(&mut v).map_err(|e| ChallengeError::Random(e.to_string()))?;
    Ok(v)
}

/// A challenge the server sent, kept to check the answer. Use it once.
#[derive(Clone, Debug)]
pub struct IssuedChallenge {
    pub salt: Vec<u8>,
    pub digest: Digest,
    pub salt_digest: Digest,
    pub prompt: String,
}

/// The client's answer, from its next `hello`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// `challenge_response` (hex text for hmac digests; with `xor` it
    /// reveals the password, hence a [`Secret`]).
    pub response: Secret,
    /// `challenge_client_salt`, when sent.
    pub client_salt: Option<Vec<u8>>,
}

impl Answer {
    pub fn new(response: &[u8], client_salt: Option<&[u8]>) -> Answer {
        Answer {
            response: Secret::from(response),
            client_salt: client_salt.map(<[u8]>::to_vec),
        }
    }

    /// The answer a `hello` carries, if any.
    pub fn from_hello(hello: &Hello<'_>) -> Option<Answer> {
        hello
            .challenge_response()
            .map(|r| Answer::new(r, hello.challenge_client_salt()))
    }
}

/// A password no one has, to spend the same time on unknown users.
fn dummy_password() -> &'static Secret {
    static DUMMY: OnceLock<Secret> = OnceLock::new();
    DUMMY.get_or_init(|| Secret::new(random_bytes(32).unwrap_or_else(|_| vec![0x5a; 32])))
}

impl IssuedChallenge {
    /// A challenge with a fresh 64-byte salt from the OS.
    pub fn new(
        digest: Digest,
        salt_digest: Digest,
        prompt: &str,
    ) -> Result<IssuedChallenge, ChallengeError> {
        Ok(IssuedChallenge {
            salt: random_bytes(SALT_LEN)?,
            digest,
            salt_digest,
            prompt: prompt.to_owned(),
        })
    }

    /// The `challenge` packet to send.
    pub fn packet(&self) -> Challenge {
        Challenge {
            salt: Bytes::copy_from_slice(&self.salt),
            auth_caps: Value::Str(String::new()),
            digest: self.digest.name().to_owned(),
            salt_digest: self.salt_digest.name().to_owned(),
            prompt: self.prompt.clone(),
        }
    }

    /// The salt the client's response is computed with (xpra's
    /// `get_response_salt`); `None` when the client salt is empty.
    pub fn response_salt(&self, answer: &Answer) -> Option<Vec<u8>> {
        response_salt(self.salt_digest, &self.salt, answer.client_salt.as_deref())
    }

    /// Which of `passwords` the answer proves (the first that matches).
    /// Every candidate is checked, and with no candidates a dummy password
    /// is, so an unknown user costs the same as a wrong password.
    pub fn verify(&self, answer: &Answer, passwords: &[Secret]) -> Option<usize> {
        let salt = self.response_salt(answer);
        let salt = salt.as_deref().unwrap_or(&self.salt);
        let response = answer.response.as_bytes();
        if passwords.is_empty() {
            let _ = verify_digest(self.digest, dummy_password().as_bytes(), salt, response);
            return None;
        }
        let mut found = None;
        for (i, p) in passwords.iter().enumerate() {
            let ok = verify_digest(self.digest, p.as_bytes(), salt, response);
            if ok && found.is_none() {
                found = Some(i);
            }
        }
        // an empty client salt never passes (xpra fails there too)
        found.filter(|_| self.response_salt(answer).is_some())
    }

    /// With the `xor` digest: the password the answer carries (xpra's
    /// `authenticate_check`: the response xored with the salt, which is
    /// padded or truncated to the response's length). `None` for other
    /// digests, an empty response or an empty client salt.
    pub fn recover_password(&self, answer: &Answer) -> Option<Secret> {
        if !self.digest.is_xor() || answer.response.is_empty() {
            return None;
        }
        let salt = self.response_salt(answer)?;
        Some(Secret::new(xor_with_salt(
            answer.response.as_bytes(),
            &salt,
        )))
    }
}

/// What a client computes for a challenge (its side of the exchange, as
/// xpra 3.1's `send_challenge_reply`): a client salt of 32 random bytes
/// (the server salt's length with a `xor` salt digest), and
/// `digest(password, salt_digest(client_salt, server_salt))`. For tests and
/// for answering a target server's challenge with a target's password.
pub fn client_answer(challenge: &Challenge, password: &[u8]) -> Option<Answer> {
    let digest = Digest::from_name(&challenge.digest)?;
    let salt_digest = Digest::from_name(&challenge.salt_digest)?;
    let len = if salt_digest.is_xor() {
        challenge.salt.len().clamp(16, 256)
    } else {
        32
    };
    let client_salt = random_bytes(len).ok()?;
    let salt = response_salt(salt_digest, &challenge.salt, Some(&client_salt))?;
    let response = digest.compute(password, &salt)?;
    Some(Answer {
        response: Secret::new(response),
        client_salt: Some(client_salt),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_verify() {
        let c = IssuedChallenge::new(Digest::HmacSha256, Digest::HmacSha512, "password").unwrap();
        assert_eq!(c.salt.len(), SALT_LEN);
        let a = client_answer(&c.packet(), b"pw").unwrap();
        let pws = [Secret::from("other"), Secret::from("pw")];
        assert_eq!(c.verify(&a, &pws), Some(1));
        assert_eq!(c.verify(&a, &pws[..1]), None);
        assert_eq!(c.verify(&a, &[]), None);
        // no client salt: the server salt alone (old clients)
        let r = Digest::HmacSha256.compute(b"pw", &c.salt).unwrap();
        assert_eq!(c.verify(&Answer::new(&r, None), &pws), Some(1));
        // an empty client salt fails
        let a = Answer::new(&r, Some(b""));
        assert_eq!(c.verify(&a, &pws), None);
    }

    #[test]
    fn xor_recovers_the_password() {
        let c = IssuedChallenge::new(Digest::Xor, Digest::HmacSha256, "password").unwrap();
        let a = client_answer(&c.packet(), b"long password here").unwrap();
        assert_eq!(
            c.recover_password(&a).unwrap().as_bytes(),
            b"long password here"
        );
        assert_eq!(c.verify(&a, &[Secret::from("long password here")]), Some(0));
        let h = IssuedChallenge::new(Digest::HmacSha1, Digest::HmacSha256, "p").unwrap();
        assert!(h.recover_password(&a).is_none());
    }

    #[test]
    fn packet_shape() {
        let c = IssuedChallenge::new(Digest::HmacSha1, Digest::Xor, "Token").unwrap();
        let p = c.packet();
        assert_eq!(p.digest, "hmac+sha1");
        assert_eq!(p.salt_digest, "xor");
        assert_eq!(p.prompt, "Token");
        assert_eq!(Challenge::parse(&p.to_items()).unwrap(), p);
    }
}
