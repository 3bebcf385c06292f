//! xpra's challenge digests, as `xpra/net/digest.py` (3.1) computes them.
//!
//! - `gendigest("hmac+H", key, msg)` is the lowercase hex of HMAC-H keyed
//!   with `key` over `msg` (`"hmac"` alone is the legacy name of hmac+md5);
//! - `gendigest("xor", key, msg)` xors `key` with `msg` padded (with zeros)
//!   or cut to the length of `key`.
//!
//! A client answers `["challenge", server_salt, _, digest, salt_digest]`
//! with `client_salt` (32 random bytes, or as long as the server salt when
//! the salt digest is `xor`) and
//! `gendigest(digest, password, gendigest(salt_digest, client_salt, server_salt))`;
//! the server recomputes the same value (`get_response_salt` in
//! `server/auth/sys_auth_base.py`) and compares.

use hmac::{Hmac, Mac};

fn hex(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out
}

macro_rules! hmac_hex {
    ($hash:ty, $key:expr, $msg:expr) => {{
        let mut mac = <Hmac<$hash> as Mac>::new_from_slice($key).ok()?;
        mac.update($msg);
        hex(&mac.finalize().into_bytes())
    }};
}

/// xpra's `gendigest(digest, key, msg)`; `None` for a digest we cannot
/// compute (or an empty key / message, which xpra refuses too).
pub fn gendigest(digest: &str, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    if key.is_empty() || msg.is_empty() {
        return None;
    }
    Some(match digest {
        "xor" => {
            let mut out = key.to_vec();
            for (i, o) in out.iter_mut().enumerate() {
                *o ^= msg.get(i).copied().unwrap_or(0);
            }
            out
        }
        "hmac+sha512" => hmac_hex!(sha2::Sha512, key, msg),
        "hmac+sha384" => hmac_hex!(sha2::Sha384, key, msg),
        "hmac+sha256" => hmac_hex!(sha2::Sha256, key, msg),
        "hmac+sha224" => hmac_hex!(sha2::Sha224, key, msg),
        "hmac+sha1" => hmac_hex!(sha1::Sha1, key, msg),
        "hmac+md5" | "hmac" => hmac_hex!(md5::Md5, key, msg),
        _ => return None,
    })
}

/// The client salt length xpra's client uses for `salt_digest`.
pub fn client_salt_len(salt_digest: &str, server_salt_len: usize) -> usize {
    if salt_digest == "xor" {
        server_salt_len.clamp(16, 256)
    } else {
        32
    }
}

/// The response to a challenge: `(challenge_response, client_salt)`.
pub fn respond(
    digest: &str,
    salt_digest: &str,
    password: &[u8],
    server_salt: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    // "hmac+sha256:..." may carry extra text after a colon.
    let digest = digest.split(':').next().unwrap_or(digest);
    let mut client_salt = vec![0u8; client_salt_len(salt_digest, server_salt.len())];
    getrandom::getrandom(&mut client_salt).map_err(|e| format!("no random bytes: {e}"))?;
    let salt = gendigest(salt_digest, &client_salt, server_salt)
        .ok_or_else(|| format!("unsupported salt digest {salt_digest:?}"))?;
    let response = gendigest(digest, password, &salt)
        .ok_or_else(|| format!("unsupported digest {digest:?}"))?;
    Ok((response, client_salt))
}

/// Checks a response as xpra's server does.
pub fn verify(
    digest: &str,
    salt_digest: &str,
    password: &[u8],
    server_salt: &[u8],
    client_salt: &[u8],
    response: &[u8],
) -> bool {
    let Some(salt) = gendigest(salt_digest, client_salt, server_salt) else {
        return false;
    };
    match gendigest(digest, password, &salt) {
        Some(expected) => constant_time_eq(&expected, response),
        None => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231 test case 2.
        let d = gendigest("hmac+sha256", b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            String::from_utf8(d).unwrap(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn xor_pads_and_cuts() {
        assert_eq!(gendigest("xor", b"ab", b"\x01").unwrap(), b"`b");
        assert_eq!(gendigest("xor", b"a", b"\x01\x02").unwrap(), b"`");
    }

    #[test]
    fn respond_then_verify() {
        let server_salt = [7u8; 64];
        for (d, s) in [
            ("hmac+sha256", "hmac+sha256"),
            ("hmac+sha512", "xor"),
            ("xor", "hmac+sha1"),
        ] {
            let (resp, cs) = respond(d, s, b"secret", &server_salt).unwrap();
            assert!(verify(d, s, b"secret", &server_salt, &cs, &resp));
            assert!(!verify(d, s, b"wrong", &server_salt, &cs, &resp));
        }
    }
}
