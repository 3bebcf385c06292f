//! The small modules: `allow`, `none`, `reject`, `fail`, `password`.

use super::authenticator::{AuthError, Authenticator, Method, Sessions};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};

/// `allow`: sends a challenge and accepts any response; the user's local
/// sessions (xpra's allow_auth).
#[derive(Debug)]
pub struct Allow {
    prompt: String,
}

impl Allow {
    pub fn new(spec: &AuthSpec) -> Allow {
        Allow {
            prompt: spec.prompt().to_owned(),
        }
    }
}

impl Authenticator for Allow {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Allow
    }
    fn method(&self) -> Method {
        Method::AnyResponse
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
}

/// `none`: no challenge, everyone passes; the user's local sessions.
#[derive(Debug)]
pub struct NoneAuth;

impl Authenticator for NoneAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::None
    }
    fn method(&self) -> Method {
        Method::Direct
    }
    fn check_direct(&self, _username: &str, _peer: &PeerInfo) -> Result<bool, AuthError> {
        Ok(true)
    }
}

/// `reject`: sends a challenge, then refuses whatever comes back.
#[derive(Debug)]
pub struct Reject {
    prompt: String,
}

impl Reject {
    pub fn new(spec: &AuthSpec) -> Reject {
        Reject {
            prompt: spec.prompt().to_owned(),
        }
    }
}

impl Authenticator for Reject {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Reject
    }
    fn method(&self) -> Method {
        Method::Refuse
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn sessions(
        &self,
        _username: &str,
        _peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        Ok(None)
    }
}

/// `fail`: refuses at once, without a challenge.
#[derive(Debug)]
pub struct Fail;

impl Authenticator for Fail {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Fail
    }
    fn method(&self) -> Method {
        Method::Direct
    }
    fn sessions(
        &self,
        _username: &str,
        _peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        Ok(None)
    }
}

/// `password,value=SECRET`: one password for every user name.
pub struct PasswordAuth {
    password: Secret,
    prompt: String,
}

impl std::fmt::Debug for PasswordAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordAuth")
    }
}

impl PasswordAuth {
    pub fn new(spec: &AuthSpec) -> Result<PasswordAuth, AuthError> {
        let v = spec.option("value").unwrap_or("");
        if v.is_empty() {
            return Err(AuthError::Other("password auth needs value=".into()));
        }
        Ok(PasswordAuth {
            password: Secret::from(v),
            prompt: spec.prompt().to_owned(),
        })
    }
}

impl Authenticator for PasswordAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Password
    }
    fn method(&self) -> Method {
        Method::Stored
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn lookup(&self, _username: &str, _peer: &PeerInfo) -> Result<Option<Vec<Secret>>, AuthError> {
        Ok(Some(vec![self.password.clone()]))
    }
}
