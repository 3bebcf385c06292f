//! Passwords in memory: wiped on drop, never printed.

use zeroize::Zeroizing;

use super::digest::ct_eq;

/// A password or other secret as bytes. `Debug` prints `Secret(..)`;
/// equality is constant-time; the memory is zeroed when dropped.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The candidate byte forms of a password stored as text, the way
    /// xpra 3.1 turns text into bytes (`str.encode("latin1")`) first, then
    /// UTF-8 when that differs (what a client reading a UTF-8 password file
    /// sends). Empty text gives no candidate.
    pub fn text_candidates(text: &str) -> Vec<Secret> {
        if text.is_empty() {
            return Vec::new();
        }
        let utf8 = text.as_bytes().to_vec();
        let latin1: Option<Vec<u8>> = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect();
        match latin1 {
            Some(l) if l != utf8 => vec![Secret::new(l), Secret::new(utf8)],
            _ => vec![Secret::new(utf8)],
        }
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Secret {
    fn from(s: &[u8]) -> Secret {
        Secret::new(s.to_vec())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(s, Secret::from(&b"hunter2"[..]));
        assert_ne!(s, Secret::from("hunter3"));
    }

    #[test]
    fn text_forms() {
        let c = Secret::text_candidates("abc");
        assert_eq!(c.len(), 1);
        let c = Secret::text_candidates("caf\u{e9}");
        assert_eq!(c[0].as_bytes(), b"caf\xe9");
        assert_eq!(c[1].as_bytes(), "caf\u{e9}".as_bytes());
        let c = Secret::text_candidates("\u{20ac}");
        assert_eq!(c.len(), 1);
        assert!(Secret::text_candidates("").is_empty());
    }
}
