//! `otp,secret=BASE32[,valid-window=N][,issuer-name=NAME]`: a time-based
//! one-time password (RFC 6238), as xpra 6's `otp` module: the client
//! answers an `xor` challenge (private transports only) with the current
//! 6-digit code of `secret` (SHA-1, 30 s steps: what authenticator apps and
//! pyotp make); `valid-window=N` also accepts the N codes before and after
//! (clock drift). The prompt is `OTP`. Chained after a password module it
//! is a second factor: `--tcp-auth=ldap,... --tcp-auth=otp,secret=...`.
//!
//! As in xpra, `secret` is base32 (case-insensitive; padding optional);
//! text that is not base32 is taken as the secret's bytes. `issuer-name`
//! only labels provisioning URIs (`xfwd` prints none).
//!
//! Where xfwd is stricter than xpra: `secret` is required (xpra invents a
//! random one nobody knows, which refuses everyone), and a code accepted
//! once is not accepted again for the same user (RFC 6238 §5.2): a code
//! seen on the wire cannot be replayed within its window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::authenticator::{AuthError, Authenticator, Method};
use super::peer::PeerInfo;
use super::spec::{AuthSpec, AuthSpecError, ModuleKind};

/// Seconds per code (RFC 6238's default, pyotp's).
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Largest `valid-window` (each side): a wider one is a static password.
pub const MAX_WINDOW: u8 = 10;
/// Users whose last accepted step is remembered (older entries expire
/// with their window; past this, the oldest are dropped).
const MAX_REMEMBERED: usize = 65_536;

/// The `otp` module.
pub struct OtpAuth {
    totp: TOTP,
    window: u8,
    prompt: String,
    /// Per user: the last time step a code was accepted for.
    used: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for OtpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpAuth")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    Ok(Arc::new(OtpAuth::new(spec)?))
}

fn bad(message: impl Into<String>) -> AuthError {
    AuthError::Spec(AuthSpecError::BadValue {
        module: "otp",
        message: message.into(),
    })
}

/// xpra's `b32()`: base32 text is decoded, anything else is the secret's
/// own bytes.
pub fn secret_bytes(text: &str) -> Vec<u8> {
    let t: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    match base32_decode(&t) {
        Some(b) if !b.is_empty() => b,
        _ => text.as_bytes().to_vec(),
    }
}

/// RFC 4648 base32 without padding; `None` when `t` is not base32.
fn base32_decode(t: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::Encoded(t.to_owned()).to_bytes().ok()
}

impl OtpAuth {
    pub fn new(spec: &AuthSpec) -> Result<OtpAuth, AuthError> {
        let secret = spec.option("secret").unwrap_or("");
        if secret.trim().is_empty() {
            return Err(bad(
                "needs secret=BASE32 (the secret the users' authenticator apps hold)",
            ));
        }
        let window = match spec.option("valid-window") {
            None => 0,
            Some(v) => match v.trim().parse::<u8>() {
                Ok(n) if n <= MAX_WINDOW => n,
                _ => {
                    return Err(bad(format!(
                        "valid-window={v}: a number of steps, 0 to {MAX_WINDOW}"
                    )))
                }
            },
        };
        // Short secrets are allowed, as pyotp allows them (RFC 4226
        // recommends 160 bits: the docs say so).
        let totp = TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP, secret_bytes(secret));
        Ok(OtpAuth {
            totp,
            window,
            prompt: spec.option("prompt").unwrap_or("OTP").to_owned(),
            used: Mutex::new(HashMap::new()),
        })
    }

    /// The code for `unix_time` (what the user's app shows then).
    pub fn code_at(&self, unix_time: u64) -> String {
        self.totp.generate(unix_time)
    }

    /// Whether `code` is right for `username` at `unix_time`, and not
    /// used before (the accepted step is remembered).
    pub fn check_at(&self, username: &str, code: &[u8], unix_time: u64) -> bool {
        let code = trim_ascii(code);
        if code.len() != DIGITS || !code.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let now = unix_time / STEP;
        let w = u64::from(self.window);
        // The newest step of the window that matches.
        let matched = (now.saturating_sub(w)..=now.saturating_add(w))
            .rev()
            .find(|&step| {
                let expected = self.totp.generate(step.saturating_mul(STEP));
                bool::from(expected.as_bytes().ct_eq(code))
            });
        let Some(step) = matched else {
            return false;
        };
        let mut used = match self.used.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if used.get(username).is_some_and(|&last| step <= last) {
            tracing::info!(target: "xfwd::auth", "otp: a code for {username:?} was used again");
            return false;
        }
        if used.len() >= MAX_REMEMBERED && !used.contains_key(username) {
            let horizon = now.saturating_sub(w + 1);
            used.retain(|_, last| *last >= horizon);
            if used.len() >= MAX_REMEMBERED {
                // Still full of live entries: forget the oldest one.
                if let Some(k) = used.iter().min_by_key(|(_, s)| **s).map(|(k, _)| k.clone()) {
                    used.remove(&k);
                }
            }
        }
        used.insert(username.to_owned(), step);
        true
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator for OtpAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Otp
    }

    fn is_gate(&self) -> bool {
        true
    }

    fn method(&self) -> Method {
        Method::Plaintext
    }

    fn prompt(&self) -> &str {
        &self.prompt
    }

    fn check_password(
        &self,
        username: &str,
        password: &[u8],
        _peer: &PeerInfo,
    ) -> Result<bool, AuthError> {
        Ok(self.check_at(username, password, unix_now()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn module(opts: &str) -> OtpAuth {
        OtpAuth::new(&AuthSpec::parse(&format!("otp{opts}")).unwrap()).unwrap()
    }

    /// RFC 6238 appendix B (SHA-1, 8 digits there; the last 6 here, which
    /// is what the same truncation gives for 6 digits).
    #[test]
    fn rfc6238_vectors() {
        // "12345678901234567890" in base32.
        let m = module(",secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(m.code_at(t), code, "t={t}");
        }
    }

    #[test]
    fn secrets_like_xpra() {
        assert_eq!(secret_bytes("GEZDGNBV"), b"12345".to_vec());
        assert_eq!(secret_bytes("gezdgnbv"), b"12345".to_vec());
        assert_eq!(secret_bytes("GEZDGNBVGY======"), b"123456".to_vec());
        // Not base32 ('1' is not in its alphabet): the text itself.
        assert_eq!(secret_bytes("pass1"), b"pass1".to_vec());
        assert!(OtpAuth::new(&AuthSpec::parse("otp").unwrap()).is_err());
        assert!(OtpAuth::new(&AuthSpec::parse("otp,secret=AB,valid-window=x").unwrap()).is_err());
        assert!(OtpAuth::new(&AuthSpec::parse("otp,secret=AB,valid-window=11").unwrap()).is_err());
    }

    #[test]
    fn current_code_once_stale_never() {
        let m = module(",secret=JBSWY3DPEHPK3PXP");
        let t = 1_700_000_000;
        let code = m.code_at(t);
        assert!(m.check_at("alice", code.as_bytes(), t + 5));
        // The same code again: a replay.
        assert!(!m.check_at("alice", code.as_bytes(), t + 6));
        // Another user may use the same step.
        assert!(m.check_at("bob", format!(" {code}\n").as_bytes(), t));
        // The previous step's code, without a window: stale.
        let old = m.code_at(t - STEP);
        assert!(!m.check_at("carol", old.as_bytes(), t));
        assert!(!m.check_at("carol", b"12345", t));
        assert!(!m.check_at("carol", b"abcdef", t));
        assert!(!m.check_at("carol", b"", t));
    }

    #[test]
    fn valid_window_accepts_drift() {
        let m = module(",secret=JBSWY3DPEHPK3PXP,valid-window=1");
        let t = 1_700_000_000;
        assert!(m.check_at("a", m.code_at(t - STEP).as_bytes(), t));
        assert!(m.check_at("b", m.code_at(t + STEP).as_bytes(), t));
        assert!(!m.check_at("c", m.code_at(t - 2 * STEP).as_bytes(), t));
        // A later code used: earlier ones of the window are spent too.
        assert!(!m.check_at("b", m.code_at(t).as_bytes(), t));
    }

    #[test]
    fn memory_is_bounded() {
        let m = module(",secret=JBSWY3DPEHPK3PXP");
        let t = 1_700_000_000;
        let code = m.code_at(t);
        for i in 0..(MAX_REMEMBERED + 10) {
            assert!(m.check_at(&format!("u{i}"), code.as_bytes(), t));
        }
        assert!(m.used.lock().unwrap().len() <= MAX_REMEMBERED);
    }
}
