//! `pam[,service=NAME][,check-account=yes]` (also `sys`): the system's PAM
//! stack checks the user name and password, as xpra's pam_auth does.
//! Built with the cargo feature `pam` (links libpam: Debian's
//! `libpam0g-dev`).
//!
//! PAM needs the password itself, so the client answers an `xor`
//! challenge: private transports only (Unix socket, TLS), as xpra's client
//! insists too. `service` defaults to `login` (xpra's default, or
//! `XPRA_PAM_AUTH_SERVICE`); with `check-account` (also `check_account`)
//! the account must be valid too (expiry, access rules). The PAM
//! conversation answers hidden prompts with the password and visible ones
//! with the user name.

use std::sync::Arc;

use super::authenticator::{AuthError, Authenticator};
use super::spec::AuthSpec;

/// xpra's default PAM service.
pub const DEFAULT_SERVICE: &str = "login";

/// Builds the module, or says that this build has no PAM.
pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    #[cfg(feature = "pam")]
    {
        Ok(Arc::new(imp::PamAuth::new(spec)))
    }
    #[cfg(not(feature = "pam"))]
    {
        let _ = spec;
        Err(AuthError::Spec(super::spec::AuthSpecError::NotBuilt("pam")))
    }
}

#[cfg(feature = "pam")]
pub use imp::PamAuth;

/// Where a PAM check runs instead of this process (system-wide mode: the
/// session helper, which is root and may read `/etc/shadow`): service,
/// check-account, user name, password.
pub type PamBackend = dyn Fn(&str, bool, &str, &[u8]) -> Result<bool, AuthError> + Send + Sync;

static BACKEND: std::sync::OnceLock<Box<PamBackend>> = std::sync::OnceLock::new();

/// Sends every PAM check to `backend` from now on (set once, by `main`).
pub fn set_backend(backend: Box<PamBackend>) {
    let _ = BACKEND.set(backend);
}

/// A PAM check in this process (what the session helper runs); an error
/// where this build has no PAM.
pub fn check(
    service: &str,
    check_account: bool,
    username: &str,
    password: &[u8],
) -> Result<bool, AuthError> {
    #[cfg(feature = "pam")]
    {
        imp::check(service, check_account, username, password)
    }
    #[cfg(not(feature = "pam"))]
    {
        let _ = (service, check_account, username, password);
        Err(AuthError::Spec(super::spec::AuthSpecError::NotBuilt("pam")))
    }
}

#[cfg(feature = "pam")]
mod imp {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;

    use nonstick::{AuthnFlags, ConversationAdapter, ErrorCode, Transaction, TransactionBuilder};

    use super::super::authenticator::{AuthError, Authenticator, Method, Sessions};
    use super::super::peer::PeerInfo;
    use super::super::secret::Secret;
    use super::super::spec::{AuthSpec, ModuleKind};
    use super::super::targets::parse_bool;
    use super::DEFAULT_SERVICE;

    /// The `pam` module.
    #[derive(Debug)]
    pub struct PamAuth {
        service: String,
        check_account: bool,
        prompt: String,
    }

    impl PamAuth {
        pub fn new(spec: &AuthSpec) -> PamAuth {
            let service = spec
                .option("service")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .or_else(|| std::env::var("XPRA_PAM_AUTH_SERVICE").ok())
                .unwrap_or_else(|| DEFAULT_SERVICE.to_owned());
            let check_account = spec
                .option("check-account")
                .or_else(|| spec.option("check_account"))
                .and_then(parse_bool)
                .unwrap_or(false);
            PamAuth {
                service,
                check_account,
                prompt: spec.prompt().to_owned(),
            }
        }
    }

    struct Convo {
        username: OsString,
        password: Secret,
    }

    impl ConversationAdapter for Convo {
        fn prompt(&self, _request: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
            Ok(self.username.clone())
        }
        fn masked_prompt(&self, _request: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
            Ok(OsStr::from_bytes(self.password.as_bytes()).to_owned())
        }
        fn error_msg(&self, message: impl AsRef<OsStr>) {
            tracing::debug!(target: "xfwd::auth", "pam: {}", message.as_ref().to_string_lossy());
        }
        fn info_msg(&self, message: impl AsRef<OsStr>) {
            tracing::debug!(target: "xfwd::auth", "pam: {}", message.as_ref().to_string_lossy());
        }
    }

    /// One PAM transaction for `username` (blocking), in this process:
    /// `Ok(false)` for a refusal.
    pub fn check(
        service: &str,
        check_account: bool,
        username: &str,
        password: &[u8],
    ) -> Result<bool, AuthError> {
        if username.is_empty() || username.contains('\0') || password.contains(&0) {
            return Ok(false);
        }
        let convo = Convo {
            username: OsString::from(username),
            password: Secret::from(password),
        };
        let mut txn = TransactionBuilder::new_with_service(service)
            .username(username)
            .build(convo.into_conversation())
            .map_err(|e| AuthError::Pam(format!("cannot start a transaction: {e}")))?;
        let verdict = |r: nonstick::Result<()>| -> Result<bool, AuthError> {
            match r {
                Ok(()) => Ok(true),
                Err(
                    ErrorCode::AuthenticationError
                    | ErrorCode::UserUnknown
                    | ErrorCode::MaxTries
                    | ErrorCode::PermissionDenied
                    | ErrorCode::AccountExpired
                    | ErrorCode::NewAuthTokRequired
                    | ErrorCode::CredentialsInsufficient
                    | ErrorCode::AuthInfoUnavailable,
                ) => Ok(false),
                Err(e) => Err(AuthError::Pam(e.to_string())),
            }
        };
        if !verdict(txn.authenticate(AuthnFlags::empty()))? {
            return Ok(false);
        }
        if check_account {
            return verdict(txn.account_management(AuthnFlags::empty()));
        }
        Ok(true)
    }

    impl Authenticator for PamAuth {
        fn kind(&self) -> ModuleKind {
            ModuleKind::Pam
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
            // (`check` refuses what PAM cannot take, wherever it runs.)
            match super::BACKEND.get() {
                Some(remote) => remote(&self.service, self.check_account, username, password),
                None => check(&self.service, self.check_account, username, password),
            }
        }
        fn sessions(
            &self,
            username: &str,
            _peer: &PeerInfo,
            _matched: Option<&Secret>,
        ) -> Result<Option<Sessions>, AuthError> {
            Ok(Some(Sessions::system(username)))
        }
    }
}
