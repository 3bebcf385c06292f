//! xpra's challenge digests (`xpra/net/digest.py` in 3.1): HMAC with
//! md5 / sha1 / sha224 / sha256 / sha384 / sha512 (hex output, as Python's
//! `hexdigest()`), the legacy name `hmac` (= `hmac+md5`), and `xor`.
//!
//! The same functions combine the client's and the server's salts
//! ([`response_salt`]) and compute or verify a challenge response
//! ([`gendigest`], [`verify_digest`]). Comparisons are constant-time.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// A digest xpra names in `digest` and `salt-digest` capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Digest {
    /// `xor`: the password xored with the salt (padded with zeros or
    /// truncated to the password's length). Reveals the password to anyone
    /// who sees the salt and the response: private transports only.
    Xor,
    /// `hmac`: the legacy name of `hmac+md5`.
    HmacLegacy,
    HmacMd5,
    HmacSha1,
    HmacSha224,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// Every digest xfwd knows, strongest first: the order in which xpra's
/// `choose_digest` picks from what the peer offers.
pub const PREFERENCE: [Digest; 8] = [
    Digest::HmacSha512,
    Digest::HmacSha384,
    Digest::HmacSha256,
    Digest::HmacSha224,
    Digest::HmacSha1,
    Digest::HmacMd5,
    Digest::HmacLegacy,
    Digest::Xor,
];

impl Digest {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Xor => "xor",
            Digest::HmacLegacy => "hmac",
            Digest::HmacMd5 => "hmac+md5",
            Digest::HmacSha1 => "hmac+sha1",
            Digest::HmacSha224 => "hmac+sha224",
            Digest::HmacSha256 => "hmac+sha256",
            Digest::HmacSha384 => "hmac+sha384",
            Digest::HmacSha512 => "hmac+sha512",
        }
    }

    /// Parses a wire name. xpra's challenge digest may carry a suffix after
    /// `:` (`kerberos:value`); it is ignored here as xpra ignores it.
    pub fn from_name(name: &str) -> Option<Digest> {
        let base = name.split(':').next().unwrap_or("");
        PREFERENCE.into_iter().find(|d| d.name() == base)
    }

    pub fn is_xor(self) -> bool {
        self == Digest::Xor
    }

    /// Computes `digest(password, salt)` as xpra's `gendigest`:
    /// HMAC(key = password, message = salt) as lowercase hex for the hmac
    /// family; `password XOR salt` for `xor`. `None` when the password or
    /// the salt is empty (xpra asserts both are set).
    pub fn compute(self, password: &[u8], salt: &[u8]) -> Option<Vec<u8>> {
        if password.is_empty() || salt.is_empty() {
            return None;
        }
        Some(match self {
            Digest::Xor => xor_with_salt(password, salt),
            Digest::HmacLegacy | Digest::HmacMd5 => hmac_hex::<Hmac<md5::Md5>>(password, salt),
            Digest::HmacSha1 => hmac_hex::<Hmac<sha1::Sha1>>(password, salt),
            Digest::HmacSha224 => hmac_hex::<Hmac<sha2::Sha224>>(password, salt),
            Digest::HmacSha256 => hmac_hex::<Hmac<sha2::Sha256>>(password, salt),
            Digest::HmacSha384 => hmac_hex::<Hmac<sha2::Sha384>>(password, salt),
            Digest::HmacSha512 => hmac_hex::<Hmac<sha2::Sha512>>(password, salt),
        })
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn hmac_hex<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let Ok(mut mac) = <M as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(msg);
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hex, as Python's `hexdigest()`.
pub fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    out
}

/// `data` xored with `salt`, the salt zero-padded or truncated to the
/// length of `data` (xpra: `salt.ljust(len(password), b"\0")[:len(password)]`).
/// The output has the length of `data`; bytes past the salt are unchanged.
pub fn xor_with_salt(data: &[u8], salt: &[u8]) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, b)| b ^ salt.get(i).copied().unwrap_or(0))
        .collect()
}

/// xpra's `gendigest(digest, password, salt)` by name: `None` for an unknown
/// digest (including `des`, which xfwd does not offer) or empty inputs.
pub fn gendigest(digest: &str, password: &[u8], salt: &[u8]) -> Option<Vec<u8>> {
    Digest::from_name(digest)?.compute(password, salt)
}

/// The salt a response is computed with, as xpra 3.1's
/// `get_response_salt`: the server salt alone when the client sent no salt,
/// otherwise `salt_digest` applied to (client salt as the key, server salt
/// as the message). With an hmac salt digest the result is the hex text
/// (ASCII bytes); with `xor` it is the client salt xored with the server
/// salt. `None` when the client salt is present but empty (xpra fails
/// there too).
pub fn response_salt(
    salt_digest: Digest,
    server_salt: &[u8],
    client_salt: Option<&[u8]>,
) -> Option<Vec<u8>> {
    match client_salt {
        None => Some(server_salt.to_vec()),
        Some(cs) => salt_digest.compute(cs, server_salt),
    }
}

/// Constant-time equality (the length may leak, the contents do not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// xpra's `verify_digest`: whether `response` is `digest(password, salt)`.
/// False when any input is empty.
pub fn verify_digest(digest: Digest, password: &[u8], salt: &[u8], response: &[u8]) -> bool {
    if response.is_empty() {
        return false;
    }
    match digest.compute(password, salt) {
        Some(expected) => ct_eq(&expected, response),
        None => false,
    }
}

/// Picks a digest from what the peer offers, strongest first (xpra's
/// `choose_digest`), among those `allowed` accepts.
pub fn choose<S: AsRef<str>>(offered: &[S], allowed: impl Fn(Digest) -> bool) -> Option<Digest> {
    PREFERENCE
        .into_iter()
        .find(|d| allowed(*d) && offered.iter().any(|o| o.as_ref() == d.name()))
}

/// The digests the client accepts when its hello names none (xpra 3.1:
/// `c.strlistget("digest", ("hmac",))`).
pub const DEFAULT_CLIENT_DIGESTS: [&str; 1] = ["hmac"];
/// The salt digests assumed when the hello names none (xpra 3.1:
/// `("xor",)`, which xpra then refuses unless legacy salt digests are on).
pub const DEFAULT_CLIENT_SALT_DIGESTS: [&str; 1] = ["xor"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Vectors computed with xpra 3.1.3's own code:
    // /usr/bin/python3 -c 'from xpra.net.digest import gendigest; print(gendigest(D, P, S))'
    const PW: &[u8] = b"abc";
    const SALT: &[u8] = b"0123456789";

    #[test]
    fn hmac_vectors_from_xpra() {
        let cases: [(&str, &str); 7] = [
            ("hmac", "614f1891e653742b08340ebb7d0ec3a0"),
            ("hmac+md5", "614f1891e653742b08340ebb7d0ec3a0"),
            ("hmac+sha1", "d697a0939055843bb9c16ba5a94a3f8c6b34a9ed"),
            (
                "hmac+sha224",
                "84838ffeffba6cdbf7412e24431ff0d5d9c4f4ee3e0e2356fa6e316f",
            ),
            (
                "hmac+sha256",
                "20a37605e0b06d925f52dddd623732b019c963b20bca2426bf4e9220459a49b1",
            ),
            ("hmac+sha384", SHA384),
            ("hmac+sha512", SHA512),
        ];
        for (d, want) in cases {
            let got = gendigest(d, PW, SALT).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{d}");
        }
    }

    const SHA384: &str = "46c917d799f0b15d0a2ebec263f748f8a563ddceb72867d75ec812429341c53e04ddde13b4b265b78a67c88e99f318c8";
    const SHA512: &str = "7e43c16dbc792ac073ba8abc11e6790e738af5abb50071c70ea71d154c9a3a77697da7970f1abaeceb6108c2437a9b041cb125145a2de6af2000b443461e1ff4";

    #[test]
    fn xor_vectors_from_xpra() {
        // gendigest('xor', b'abc', b'0123456789') == b'QSQ'
        assert_eq!(gendigest("xor", b"abc", SALT).unwrap(), b"QSQ");
        // gendigest('xor', b'abcdefghijkl', b'0123') == b'QSQWefghijkl'
        assert_eq!(
            gendigest("xor", b"abcdefghijkl", b"0123").unwrap(),
            b"QSQWefghijkl"
        );
        // gendigest('xor', 'abc\u00e9', b'0123') == b'QSQ\xda' (latin-1 text)
        assert_eq!(gendigest("xor", b"abc\xe9", b"0123").unwrap(), b"QSQ\xda");
    }

    #[test]
    fn names_and_choice() {
        for d in PREFERENCE {
            assert_eq!(Digest::from_name(d.name()), Some(d));
        }
        assert_eq!(Digest::from_name("kerberos:x"), None);
        assert_eq!(Digest::from_name("hmac+sha3_512"), None);
        assert_eq!(
            choose(&["xor", "hmac+sha1", "hmac+sha256"], |_| true),
            Some(Digest::HmacSha256)
        );
        assert_eq!(choose(&["xor"], |d| !d.is_xor()), None);
        assert_eq!(choose(&["hmac", "xor"], |_| true), Some(Digest::HmacLegacy));
        assert_eq!(choose::<&str>(&[], |_| true), None);
    }

    #[test]
    fn empty_inputs_fail() {
        assert_eq!(gendigest("hmac+sha256", b"", SALT), None);
        assert_eq!(gendigest("hmac+sha256", PW, b""), None);
        assert_eq!(gendigest("des", PW, SALT), None);
        assert!(!verify_digest(Digest::HmacSha256, PW, SALT, b""));
    }

    #[test]
    fn salts_combine_like_xpra() {
        let server = b"S".repeat(64);
        assert_eq!(
            response_salt(Digest::HmacSha256, &server, None).unwrap(),
            server
        );
        let c = response_salt(Digest::HmacSha256, &server, Some(b"client")).unwrap();
        assert_eq!(c, gendigest("hmac+sha256", b"client", &server).unwrap());
        assert_eq!(c.len(), 64);
        let x = response_salt(Digest::Xor, &server, Some(b"cc")).unwrap();
        assert_eq!(x, vec![b'c' ^ b'S', b'c' ^ b'S']);
        assert_eq!(response_salt(Digest::HmacSha256, &server, Some(b"")), None);
    }

    #[test]
    fn verify_round_trip() {
        let salt = b"some salt";
        for d in PREFERENCE {
            let r = d.compute(b"pw", salt).unwrap();
            assert!(verify_digest(d, b"pw", salt, &r), "{d}");
            assert!(!verify_digest(d, b"pX", salt, &r), "{d}");
        }
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
