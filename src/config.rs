//! Command-line options for serving, and the typed [`Config`] they become.
//!
//! Option names and the `MODULE[,key=value...]` auth syntax follow xpra's,
//! so an xpra user's habits carry over.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::{AuthSpec, AuthSpecError};

/// What a bad option looks like to the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--bind-tcp={0}: expected HOST:PORT")]
    BadTcpAddress(String),
    #[error("--{option}: {source}")]
    Auth {
        option: &'static str,
        #[source]
        source: AuthSpecError,
    },
    #[error("--cores must be at least 1")]
    NoCores,
}

/// Where xfwd listens when no `--bind-tcp` or `--bind` is given:
/// loopback only.
pub const DEFAULT_TCP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    14501,
));

/// Serving options, as on the command line.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Listen for xpra clients on a TCP address (HOST:PORT); repeatable.
    /// Default, when no listener is given: 127.0.0.1:14501.
    #[arg(long = "bind-tcp", value_name = "HOST:PORT")]
    pub bind_tcp: Vec<String>,
    /// Listen on a Unix socket at PATH; repeatable.
    #[arg(long = "bind", value_name = "PATH")]
    pub bind: Vec<PathBuf>,
    /// Authentication for every listener without its own:
    /// MODULE[,key=value...] (allow, none, reject, fail, file, multifile,
    /// sqlite, env, exec, pam, peercred); repeat to chain modules (all must
    /// pass).
    #[arg(long = "auth", value_name = "MODULE")]
    pub auth: Vec<String>,
    /// Authentication for TCP listeners (repeatable).
    #[arg(long = "tcp-auth", value_name = "MODULE")]
    pub tcp_auth: Vec<String>,
    /// Authentication for Unix-socket listeners (repeatable).
    #[arg(long = "unix-auth", value_name = "MODULE")]
    pub unix_auth: Vec<String>,
    /// Extra directory to look for local sessions in; repeatable.
    #[arg(long = "socket-dir", value_name = "DIR")]
    pub socket_dir: Vec<PathBuf>,
    /// Replaces xpra's default session directories (`/run/user/UID/xpra`,
    /// `/run/xpra`, `~/.xpra`) with this comma-separated list.
    #[arg(
        long = "socket-dirs",
        value_name = "DIR[,DIR...]",
        value_delimiter = ','
    )]
    pub socket_dirs: Option<Vec<PathBuf>>,
    /// Number of shards (one pinned executor each); default: the CPUs available.
    #[arg(long = "cores", value_name = "N")]
    pub cores: Option<usize>,
    /// Seconds a client has to complete the handshake.
    #[arg(long = "handshake-timeout", value_name = "SECS", default_value_t = 15)]
    pub handshake_timeout: u64,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub tcp: Vec<SocketAddr>,
    pub unix: Vec<PathBuf>,
    /// The auth chain of each listener kind (never empty: `none` when no
    /// module is given).
    pub tcp_auth: Vec<AuthSpec>,
    pub unix_auth: Vec<AuthSpec>,
    /// Directories searched for local sessions first (`--socket-dir`).
    pub socket_dirs: Vec<PathBuf>,
    /// Replaces xpra's default session directories when set
    /// (`--socket-dirs`).
    pub default_socket_dirs: Option<Vec<PathBuf>>,
    pub cores: usize,
    pub handshake_timeout: Duration,
}

fn parse_auth(option: &'static str, values: &[String]) -> Result<Vec<AuthSpec>, ConfigError> {
    AuthSpec::parse_chain(values).map_err(|source| ConfigError::Auth { option, source })
}

impl ServeArgs {
    /// Validates the options.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut tcp = Vec::new();
        for a in &self.bind_tcp {
            let addr = a
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| ConfigError::BadTcpAddress(a.clone()))?;
            tcp.push(addr);
        }
        if tcp.is_empty() && self.bind.is_empty() {
            tcp.push(DEFAULT_TCP);
        }
        let mut default_auth = parse_auth("auth", &self.auth)?;
        if default_auth.is_empty() {
            default_auth.push(AuthSpec::none());
        }
        let mut tcp_auth = parse_auth("tcp-auth", &self.tcp_auth)?;
        if tcp_auth.is_empty() {
            tcp_auth = default_auth.clone();
        }
        let mut unix_auth = parse_auth("unix-auth", &self.unix_auth)?;
        if unix_auth.is_empty() {
            unix_auth = default_auth;
        }
        let cores = match self.cores {
            Some(0) => return Err(ConfigError::NoCores),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Config {
            tcp,
            unix: self.bind,
            tcp_auth,
            unix_auth,
            socket_dirs: self.socket_dir,
            default_socket_dirs: self.socket_dirs,
            cores,
            handshake_timeout: Duration::from_secs(self.handshake_timeout.max(1)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::ModuleKind;

    #[test]
    fn defaults_and_overrides() {
        let args = ServeArgs {
            bind_tcp: vec!["127.0.0.1:0".into()],
            auth: vec!["reject".into()],
            tcp_auth: vec!["allow".into(), "env".into()],
            cores: Some(2),
            ..ServeArgs::default()
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.tcp_auth[0].kind, ModuleKind::Allow);
        assert_eq!(c.tcp_auth[1].kind, ModuleKind::Env);
        assert_eq!(c.unix_auth.len(), 1);
        assert_eq!(c.unix_auth[0].kind, ModuleKind::Reject);
        assert_eq!(c.cores, 2);
    }

    #[test]
    fn refusals_are_clear() {
        let c = ServeArgs::default().into_config().unwrap();
        assert_eq!(c.tcp, vec![DEFAULT_TCP]);
        let e = ServeArgs {
            bind_tcp: vec!["nonsense".into()],
            ..ServeArgs::default()
        }
        .into_config()
        .unwrap_err();
        assert!(e.to_string().contains("nonsense"));
        let e = ServeArgs {
            bind_tcp: vec!["127.0.0.1:1".into()],
            tcp_auth: vec!["bogus".into()],
            ..ServeArgs::default()
        }
        .into_config()
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
