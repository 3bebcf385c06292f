//! `exec,command=CMD[,timeout=SECONDS][,require-challenge=yes]`: an
//! external command decides; exit status 0 lets the client in.
//!
//! The command line, as xpra runs it:
//!
//! - xpra 3.1: `CMD "Connection request from <connection>" <timeout>`
//!   (the command is one path, not split);
//! - xpra 4+ (when `CMD` contains `${`): `CMD` is split like a shell line
//!   and `${auth_dialog}`, `${info}`, `${timeout}`, `${username}` (letters
//!   and digits only), `${prompt}` and, with `require-challenge=yes`,
//!   `${password}` are substituted.
//!
//! xfwd also passes `XFWD_AUTH_USERNAME` (as the client sent it),
//! `XFWD_AUTH_PEER` and `XFWD_AUTH_TRANSPORT` in the environment, and, with
//! `require-challenge=yes`, `XFWD_AUTH_PASSWORD`: prefer it to
//! `${password}`, which every local user can read in the process list.
//!
//! Without `require-challenge` the client gets no challenge (xpra 3.1's
//! only mode). With it the client must answer an `xor` challenge, so that
//! xfwd learns the password: private transports only (Unix socket, TLS).
//!
//! The command is killed (SIGTERM, then SIGKILL two seconds later) when it
//! runs longer than `timeout` seconds (default 600, or
//! `XPRA_EXEC_AUTH_TIMEOUT`; 0: no limit); that counts as a refusal.
//! Standard input is empty, standard output is discarded, standard error is
//! xfwd's.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::authenticator::{AuthError, Authenticator, Method};
use super::peer::PeerInfo;
use super::spec::{AuthSpec, ModuleKind};
use super::targets::parse_bool;

/// xpra's default timeout, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 600;
/// What `${auth_dialog}` stands for (xpra's default dialog).
pub const AUTH_DIALOG: &str = "/usr/libexec/xpra/auth_dialog";
/// How long a command may take to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct ExecAuth {
    command: String,
    timeout: Option<Duration>,
    require_challenge: bool,
    prompt: String,
}

impl ExecAuth {
    pub fn new(spec: &AuthSpec) -> Result<ExecAuth, AuthError> {
        let command = spec.option("command").unwrap_or("").trim().to_owned();
        if command.is_empty() {
            return Err(AuthError::Other("exec auth needs command=".into()));
        }
        let secs = match spec.option("timeout") {
            Some(t) => t
                .trim()
                .parse::<u64>()
                .map_err(|_| AuthError::Other(format!("exec auth: bad timeout {t:?}")))?,
            None => std::env::var("XPRA_EXEC_AUTH_TIMEOUT")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_TIMEOUT),
        };
        if command.contains("${") && shlex::split(&command).is_none() {
            return Err(AuthError::Other(format!(
                "exec auth: cannot split the command line {command:?}"
            )));
        }
        Ok(ExecAuth {
            command,
            timeout: (secs > 0).then(|| Duration::from_secs(secs)),
            require_challenge: spec
                .option("require-challenge")
                .and_then(parse_bool)
                .unwrap_or(false),
            prompt: spec.prompt().to_owned(),
        })
    }

    fn argv(&self, username: &str, peer: &PeerInfo, password: Option<&[u8]>) -> Vec<String> {
        let info = format!("Connection request from {peer}");
        let timeout = self.timeout.map_or(0, |t| t.as_secs()).to_string();
        if !self.command.contains("${") {
            return vec![self.command.clone(), info, timeout];
        }
        let user: String = username.chars().filter(|c| c.is_alphanumeric()).collect();
        let password = password
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let subs: [(&str, &str); 6] = [
            ("auth_dialog", AUTH_DIALOG),
            ("info", &info),
            ("timeout", &timeout),
            ("username", &user),
            ("prompt", &self.prompt),
            ("password", &password),
        ];
        shlex::split(&self.command)
            .unwrap_or_default()
            .into_iter()
            .map(|word| {
                let mut w = word;
                for (k, v) in subs {
                    w = w.replace(&format!("${{{k}}}"), v);
                }
                w
            })
            .collect()
    }

    /// Runs the command; whether it exited with status 0 in time.
    fn run(
        &self,
        username: &str,
        peer: &PeerInfo,
        password: Option<&[u8]>,
    ) -> Result<bool, AuthError> {
        let argv = self.argv(username, peer, password);
        let Some((program, args)) = argv.split_first() else {
            return Err(AuthError::Other("exec auth: empty command".into()));
        };
        let err = |message: String| AuthError::Exec {
            command: program.clone(),
            message,
        };
        // With no signal blocked, so that its timeout's SIGTERM reaches it
        // (crate::process).
        let (mut cmd, through_helper) = crate::process::command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env("XFWD_AUTH_USERNAME", username)
            .env("XFWD_AUTH_PEER", peer.to_string())
            .env("XFWD_AUTH_TRANSPORT", peer.transport.name())
            .env_remove("XFWD_AUTH_PASSWORD");
        if let Some(p) = password {
            use std::os::unix::ffi::OsStrExt;
            cmd.env("XFWD_AUTH_PASSWORD", std::ffi::OsStr::from_bytes(p));
        }
        let mut child = cmd.spawn().map_err(|e| err(e.to_string()))?;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| err(e.to_string()))? {
                if through_helper && status.code() == Some(crate::process::NOT_FOUND) {
                    return Err(err("not found".into()));
                }
                return Ok(status.success());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        // timed out: SIGTERM, then SIGKILL
        tracing::warn!(target: "xfwd::auth", command = %program, "exec auth command timed out");
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let grace = Instant::now() + TERM_GRACE;
        while Instant::now() < grace {
            if child.try_wait().map_err(|e| err(e.to_string()))?.is_some() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(false)
    }
}

impl Authenticator for ExecAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Exec
    }
    fn method(&self) -> Method {
        if self.require_challenge {
            Method::Plaintext
        } else {
            Method::Direct
        }
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn check_direct(&self, username: &str, peer: &PeerInfo) -> Result<bool, AuthError> {
        self.run(username, peer, None)
    }
    fn check_password(
        &self,
        username: &str,
        password: &[u8],
        peer: &PeerInfo,
    ) -> Result<bool, AuthError> {
        self.run(username, peer, Some(password))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exec(opts: &str) -> ExecAuth {
        ExecAuth::new(&AuthSpec::parse(&format!("exec,{opts}")).unwrap()).unwrap()
    }

    fn peer() -> PeerInfo {
        PeerInfo::tcp(
            "10.0.0.1:4000".parse().unwrap(),
            Some("10.0.0.2:14500".parse().unwrap()),
        )
    }

    #[test]
    fn argv_like_xpra() {
        let a = exec("command=/usr/bin/check,timeout=5");
        assert_eq!(
            a.argv("u", &peer(), None),
            vec![
                "/usr/bin/check".to_owned(),
                "Connection request from tcp socket: 10.0.0.2:14500 <- 10.0.0.1:4000".to_owned(),
                "5".to_owned()
            ]
        );
        let a = exec("command=check ${username} '${info}' --to=${timeout} ${password}");
        let v = a.argv("a b;c", &peer(), Some(b"pw"));
        assert_eq!(v[0], "check");
        assert_eq!(v[1], "abc");
        assert!(v[2].starts_with("Connection request from tcp socket"));
        assert_eq!(v[3], "--to=600");
        assert_eq!(v[4], "pw");
    }

    #[test]
    fn exit_status_decides() {
        let p = peer();
        assert!(exec("command=/bin/true").check_direct("u", &p).unwrap());
        assert!(!exec("command=/bin/false").check_direct("u", &p).unwrap());
        assert!(exec("command=/nonexistent/xfwd-cmd")
            .check_direct("u", &p)
            .is_err());
        // the environment carries user and password
        let a = exec(
            "command=sh -c 'test \"$XFWD_AUTH_USERNAME\" = alice && test \"$XFWD_AUTH_PASSWORD\" = s3cret' ${info},require-challenge=yes",
        );
        assert_eq!(a.method(), Method::Plaintext);
        assert!(a.check_password("alice", b"s3cret", &p).unwrap());
        assert!(!a.check_password("alice", b"wrong", &p).unwrap());
        assert!(!a.check_password("bob", b"s3cret", &p).unwrap());
    }

    #[test]
    fn timeout_kills() {
        let a = exec("command=sleep 30 ${timeout},timeout=1");
        let t = Instant::now();
        assert!(!a.check_direct("u", &peer()).unwrap());
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
