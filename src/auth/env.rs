//! `env[,name=VAR]`: one password for every user name, read from the
//! environment variable `VAR` (default `XPRA_PASSWORD`) of the xfwd
//! process each time a client answers, as xpra's env_auth does. Unset or
//! empty: nobody passes.

use std::os::unix::ffi::OsStrExt;

use super::authenticator::{AuthError, Authenticator, Method};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};

/// The variable read when `name=` is not given.
pub const DEFAULT_VAR: &str = "XPRA_PASSWORD";

#[derive(Debug)]
pub struct EnvAuth {
    var: String,
    prompt: String,
}

impl EnvAuth {
    pub fn new(spec: &AuthSpec) -> EnvAuth {
        EnvAuth {
            var: spec
                .option("name")
                .filter(|n| !n.is_empty())
                .unwrap_or(DEFAULT_VAR)
                .to_owned(),
            prompt: spec.prompt().to_owned(),
        }
    }
}

impl Authenticator for EnvAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Env
    }
    fn method(&self) -> Method {
        Method::Stored
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn lookup(&self, _username: &str, _peer: &PeerInfo) -> Result<Option<Vec<Secret>>, AuthError> {
        Ok(std::env::var_os(&self.var)
            .filter(|v| !v.is_empty())
            .map(|v| vec![Secret::from(v.as_bytes())]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_variable_each_time() {
        // PATH is always set; a unique name is never set
        let a = EnvAuth::new(&AuthSpec::parse("env,name=PATH").unwrap());
        let p = a.lookup("x", &PeerInfo::default()).unwrap().unwrap();
        assert_eq!(
            p[0].as_bytes(),
            std::env::var_os("PATH").unwrap().as_bytes()
        );
        let a = EnvAuth::new(&AuthSpec::parse("env,name=XFWD_TEST_NEVER_SET_4711").unwrap());
        assert!(a.lookup("x", &PeerInfo::default()).unwrap().is_none());
        assert_eq!(
            EnvAuth::new(&AuthSpec::parse("env").unwrap()).var,
            DEFAULT_VAR
        );
    }
}
