//! Starting sessions on demand (`--proxy-start-sessions`): what a client's
//! `start-new-session` request may ask for ([`StartRequest`], sans-IO, read
//! by the connection core), and the [`Launcher`] that runs `xpra start` for
//! it (blocking: on the blocking pool, never on a shard).
//!
//! The launcher runs, as the user xfwd runs as:
//!
//! ```text
//! xpra start|start-desktop [:DISPLAY] --daemon=yes --systemd-run=no
//!     [--displayfd=FD] [--socket-dirs=DIR]... [--start=CMD]... [--start-child=CMD]...
//!     [ARGS of --proxy-start-arg]...
//! ```
//!
//! with xpra's proxy environment whitelist ([`ENV_WHITELIST`]), in a process
//! group of its own (`xpra --daemon=yes` then forks and calls `setsid`, so
//! the session outlives xfwd), reads the display xpra chose from the
//! displayfd pipe (when none was asked for), and waits for the session's
//! socket to appear in xfwd's socket dirs and accept connections. The whole
//! start is bounded by [`Launcher::timeout`].

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::wire::Value;

/// How long a whole start may take by default: spawning `xpra start`,
/// the display, the socket going live. xpra's proxy waits 90 s (blocking
/// its main thread); a client waiting in its handshake is better told
/// sooner.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment `xpra start` gets from xfwd's (xpra's proxy
/// `ENV_WHITELIST`); nothing else is passed.
pub const ENV_WHITELIST: [&str; 9] = [
    "LANG", "HOSTNAME", "PWD", "TERM", "SHELL", "SHLVL", "PATH", "USER", "HOME",
];

/// At most this many `start` plus `start-child` commands in one request.
pub const MAX_COMMANDS: usize = 16;
/// At most this many bytes in one command.
pub const MAX_COMMAND_LEN: usize = 4096;
/// At most this many bytes of `xpra start`'s output are kept for a reason.
const MAX_OUTPUT: u64 = 16 * 1024;
/// How often the socket dirs are looked at while a session starts.
const POLL: Duration = Duration::from_millis(100);

/// The kind of session a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartMode {
    /// `xpra start`: seamless windows.
    Start,
    /// `xpra start-desktop`: a whole desktop.
    StartDesktop,
}

impl StartMode {
    pub fn name(self) -> &'static str {
        match self {
            StartMode::Start => "start",
            StartMode::StartDesktop => "start-desktop",
        }
    }
}

/// Why a start was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartReason {
    /// The client's hello carried `start-new-session` (`xpra start
    /// tcp://...`): always a new session.
    Requested,
    /// A plain attach found no session: a session that appeared meanwhile
    /// (another client's start) is used instead of starting a second one.
    NoSession,
}

/// What a start may ask for: only these of the client's `start-new-session`
/// options are used. xpra's proxy lets clients override some 80 options
/// (`PROXY_START_OVERRIDABLE_OPTIONS`), among them `bind-tcp`, `auth`,
/// `env` and `chdir`, which would let a client open listeners or change
/// how its session authenticates; xfwd passes only the session's kind, its
/// display and its start commands (what `xpra start tcp://...` sends from
/// its command line). Everything else is ignored (and logged).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartRequest {
    pub mode: StartMode,
    /// The display number asked for, without the `:`; `None`: xpra
    /// chooses (and tells through `--displayfd`).
    pub display: Option<String>,
    /// `--start` commands (run once, by the new session).
    pub start: Vec<String>,
    /// `--start-child` commands.
    pub start_child: Vec<String>,
    pub reason: StartReason,
}

/// Why a `start-new-session` request was refused before anything ran; the
/// text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid start-new-session request: not a dictionary")]
    NotADict,
    #[error("cannot start a session of mode '{0}' (only start and start-desktop)")]
    Mode(String),
    #[error("invalid display for a new session: '{0}'")]
    Display(String),
    #[error("invalid start-new-session option '{0}'")]
    Option(&'static str),
    #[error("too many start commands (at most {MAX_COMMANDS})")]
    TooManyCommands,
}

fn display_number(s: &str) -> Option<&str> {
    let d = s.strip_prefix(':').unwrap_or(s);
    (!d.is_empty() && d.len() <= 9 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// A command list: a string, or a list of strings (xpra sends lists).
fn commands(v: Option<&Value>, name: &'static str) -> Result<Vec<String>, RequestError> {
    let items: Vec<&Value> = match v {
        None | Some(Value::None) => return Ok(Vec::new()),
        Some(Value::List(l)) => {
            if l.len() > MAX_COMMANDS {
                return Err(RequestError::TooManyCommands);
            }
            l.iter().collect()
        }
        Some(other) => vec![other],
    };
    items
        .into_iter()
        .map(|v| {
            v.as_str()
                .filter(|s| !s.is_empty() && s.len() <= MAX_COMMAND_LEN && !s.contains('\0'))
                .map(str::to_owned)
                .ok_or(RequestError::Option(name))
        })
        .collect()
}

impl StartRequest {
    /// The request of a hello's `start-new-session` value. `Ok(None)`: no
    /// request (absent, or empty: xpra tests its truthiness).
    pub fn from_caps(sns: Option<&Value>) -> Result<Option<StartRequest>, RequestError> {
        let Some(sns) = sns.filter(|v| v.truthy()) else {
            return Ok(None);
        };
        let dict = sns.as_dict().ok_or(RequestError::NotADict)?;
        let mode = match sns.get("mode").map(|m| m.as_str()) {
            None | Some(Some("start")) => StartMode::Start,
            Some(Some("start-desktop")) => StartMode::StartDesktop,
            // shadow would shadow a display xfwd does not own.
            Some(m) => {
                return Err(RequestError::Mode(
                    m.unwrap_or("?").chars().take(32).collect(),
                ))
            }
        };
        let display = match sns.get("display").map(|d| d.as_str()) {
            None | Some(Some("")) => None,
            Some(Some(d)) => Some(
                display_number(d)
                    .ok_or_else(|| RequestError::Display(d.chars().take(32).collect()))?
                    .to_owned(),
            ),
            Some(None) => return Err(RequestError::Display("?".into())),
        };
        let start = commands(sns.get("start"), "start")?;
        let start_child = commands(sns.get("start-child"), "start-child")?;
        if start.len() + start_child.len() > MAX_COMMANDS {
            return Err(RequestError::TooManyCommands);
        }
        for (k, _) in dict {
            let k = k.as_str().unwrap_or("?");
            if !["mode", "display", "start", "start-child"].contains(&k) {
                tracing::debug!(
                    option = k.chars().take(64).collect::<String>(),
                    "start-new-session: option ignored"
                );
            }
        }
        Ok(Some(StartRequest {
            mode,
            display,
            start,
            start_child,
            reason: StartReason::Requested,
        }))
    }

    /// Checks a request made elsewhere (the session helper trusts no
    /// field): the same bounds as [`StartRequest::from_caps`].
    pub fn check(&self) -> Result<(), RequestError> {
        if let Some(d) = &self.display {
            if display_number(d) != Some(d.as_str()) {
                return Err(RequestError::Display(d.chars().take(32).collect()));
            }
        }
        if self.start.len() + self.start_child.len() > MAX_COMMANDS {
            return Err(RequestError::TooManyCommands);
        }
        let ok = |c: &String| !c.is_empty() && c.len() <= MAX_COMMAND_LEN && !c.contains('\0');
        if !self.start.iter().all(ok) {
            return Err(RequestError::Option("start"));
        }
        if !self.start_child.iter().all(ok) {
            return Err(RequestError::Option("start-child"));
        }
        Ok(())
    }

    /// The start of a plain attach that found no session (on `display`,
    /// when it named one).
    pub fn for_attach(display: Option<&str>) -> StartRequest {
        StartRequest {
            mode: StartMode::Start,
            display: display.and_then(display_number).map(str::to_owned),
            start: Vec::new(),
            start_child: Vec::new(),
            reason: StartReason::NoSession,
        }
    }
}

/// A started (or, for [`StartReason::NoSession`], found) session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The display number, without the `:`.
    pub display: String,
    /// Its live socket.
    pub socket: PathBuf,
    /// Whether xfwd started it (else another start did, meanwhile).
    pub new: bool,
}

/// Why a start failed; the text goes to the client.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start a session: {program} not found")]
    NotFound { program: String },
    #[error("cannot start a session: {0}")]
    Spawn(std::io::Error),
    #[error("cannot start a session: xpra start failed ({status}){}", output_suffix(.output))]
    Failed { status: String, output: String },
    #[error("cannot start a session: display :{0} is already in use")]
    DisplayInUse(String),
    #[error("cannot start a session: xpra did not say which display it chose")]
    NoDisplay,
    #[error("the new session did not start within {} s", .0.as_secs())]
    Timeout(Duration),
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// Runs `xpra start` for clients (see the module docs).
#[derive(Debug)]
pub struct Launcher {
    /// The xpra program (`xpra`, found on PATH).
    pub program: PathBuf,
    /// Where xfwd looks for sessions: the new session's sockets go there
    /// (`--socket-dirs`), the first dir is where xpra creates them.
    pub socket_dirs: Vec<PathBuf>,
    pub hostname: String,
    pub uid: u32,
    /// Extra arguments for every `xpra start` (`--proxy-start-arg`).
    pub extra_args: Vec<String>,
    /// The whole start's bound.
    pub timeout: Duration,
    /// `xpra start`'s whole environment (xpra's whitelist, from xfwd's
    /// own, or the user's in system-wide mode).
    pub env: Vec<(String, std::ffi::OsString)>,
    /// Where it runs (the user's home), when that exists.
    pub home: Option<PathBuf>,
}

/// One start at a time per user (keyed by uid), over the whole process (a
/// reload makes a new [`Launcher`]; a start may still run).
static LOCKS: std::sync::LazyLock<Mutex<HashMap<u32, Arc<Mutex<()>>>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

impl Launcher {
    pub fn new(socket_dirs: Vec<PathBuf>, hostname: String, uid: u32) -> Launcher {
        Launcher {
            program: PathBuf::from("xpra"),
            socket_dirs,
            hostname,
            uid,
            extra_args: Vec::new(),
            timeout: DEFAULT_START_TIMEOUT,
            env: ENV_WHITELIST
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| ((*k).to_owned(), v)))
                .collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// A launcher for `account` (system-wide mode, run as that user): the
    /// whitelist's `USER`, `HOME`, `SHELL` and `PWD` are the user's.
    pub fn for_account(
        socket_dirs: Vec<PathBuf>,
        hostname: String,
        account: &super::user::Account,
    ) -> Launcher {
        let mut l = Launcher::new(socket_dirs, hostname, account.uid);
        let own: [(&str, std::ffi::OsString); 4] = [
            ("USER", account.name.clone().into()),
            ("HOME", account.home.clone().into()),
            ("SHELL", account.shell.clone().into()),
            ("PWD", account.home.clone().into()),
        ];
        l.env.retain(|(k, _)| !own.iter().any(|(o, _)| o == k));
        l.env
            .extend(own.into_iter().map(|(k, v)| (k.to_owned(), v)));
        l.home = Some(account.home.clone());
        l
    }

    /// The arguments of `xpra` for `req` (`displayfd`: the pipe's fd, when
    /// xpra chooses the display).
    pub fn args(&self, req: &StartRequest, displayfd: Option<i32>) -> Vec<String> {
        let mut args = vec![req.mode.name().to_owned()];
        if let Some(d) = &req.display {
            args.push(format!(":{d}"));
        }
        args.push("--daemon=yes".into());
        // xfwd's own process group and xpra's setsid are enough; a
        // systemd scope is for system-wide mode.
        args.push("--systemd-run=no".into());
        if let Some(fd) = displayfd {
            args.push(format!("--displayfd={fd}"));
        }
        // xpra takes a list option once per value (a comma is part of a
        // path). The dirs xpra could not make (a runtime dir without a
        // login session) are left out: it would only warn about them.
        let usable: Vec<&PathBuf> = self
            .socket_dirs
            .iter()
            .filter(|d| d.is_dir() || d.parent().is_some_and(Path::is_dir))
            .collect();
        let dirs = if usable.is_empty() {
            self.socket_dirs.iter().collect()
        } else {
            usable
        };
        for d in dirs {
            args.push(format!("--socket-dirs={}", d.display()));
        }
        for c in &req.start {
            args.push(format!("--start={c}"));
        }
        for c in &req.start_child {
            args.push(format!("--start-child={c}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The live socket of `display` in the socket dirs, if any.
    fn live_socket(&self, display: &str) -> Option<PathBuf> {
        super::candidates(&self.socket_dirs, &self.hostname, self.uid)
            .into_iter()
            .filter(|(d, _)| d == display)
            .map(|(_, p)| p)
            .find(|p| super::is_live(p))
    }

    /// A live session that a start for `req` may use instead of starting
    /// one (a concurrent start's, or one that came up meanwhile).
    fn existing(&self, req: &StartRequest) -> Option<Started> {
        let sessions = super::discover(&self.socket_dirs, &self.hostname, self.uid);
        let live = super::live(&sessions);
        let found = match &req.display {
            Some(d) => live.into_iter().find(|s| &s.display == d),
            None if live.len() == 1 => live.into_iter().next(),
            None => None,
        }?;
        let socket = found.sockets.first()?.clone();
        Some(Started {
            display: found.display,
            socket,
            new: false,
        })
    }

    /// Starts a session for `req` (blocks up to [`Launcher::timeout`]).
    pub fn start(&self, req: &StartRequest) -> Result<Started, LaunchError> {
        let deadline = Instant::now() + self.timeout;
        let lock = {
            let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(self.uid).or_default().clone()
        };
        // Another start for this user runs: wait for it (within the
        // deadline), then look again.
        let _held = loop {
            match lock.try_lock() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(LaunchError::Timeout(self.timeout));
                    }
                    std::thread::sleep(POLL);
                }
            }
        };
        match req.reason {
            StartReason::NoSession => {
                if let Some(s) = self.existing(req) {
                    tracing::info!(display = %s.display, "a session started meanwhile: using it");
                    return Ok(s);
                }
            }
            StartReason::Requested => {
                if let Some(d) = &req.display {
                    if self.live_socket(d).is_some() {
                        return Err(LaunchError::DisplayInUse(d.clone()));
                    }
                }
            }
        }
        self.run(req, deadline)
    }

    fn run(&self, req: &StartRequest, deadline: Instant) -> Result<Started, LaunchError> {
        // The displayfd pipe: the read end is ours only; the write end is
        // inherited by xpra (and closed here once it runs).
        let pipe = match &req.display {
            Some(_) => None,
            None => {
                let (r, w) = nix::unistd::pipe().map_err(|e| LaunchError::Spawn(e.into()))?;
                set_cloexec(&r)?;
                Some((r, w))
            }
        };
        let args = self.args(req, pipe.as_ref().map(|(_, w)| w.as_raw_fd()));
        let output = output_file()?;
        // With no signal blocked (crate::process).
        let (mut cmd, through_helper) = crate::process::command(&self.program);
        cmd.args(&args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(LaunchError::Spawn)?)
            .stderr(output.try_clone().map_err(LaunchError::Spawn)?)
            .process_group(0);
        // (A missing home would read as a missing program.)
        if let Some(home) = self.home.as_ref().filter(|h| h.is_dir()) {
            cmd.current_dir(home);
        }
        tracing::info!(
            program = %self.program.display(),
            args = ?args,
            "starting a session"
        );
        // ETXTBSY: the program is being written (an upgrade in progress, or
        // a file another thread's fork still holds open): a moment later
        // it runs.
        let mut spawned = cmd.spawn();
        for _ in 0..5 {
            match &spawned {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                    spawned = cmd.spawn();
                }
                _ => break,
            }
        }
        let mut child = spawned.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LaunchError::NotFound {
                    program: self.program.display().to_string(),
                }
            } else {
                LaunchError::Spawn(e)
            }
        })?;
        // xpra keeps its own copy; ours would hide its end (EOF).
        let read = pipe.map(|(r, w)| {
            drop(w);
            r
        });
        // `xpra start --daemon=yes` exits once the server forked away.
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LaunchError::Timeout(self.timeout));
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => return Err(LaunchError::Spawn(e)),
            }
        };
        // (Through the helper, a missing program is its exit status.)
        if through_helper && status.code() == Some(crate::process::NOT_FOUND) {
            return Err(LaunchError::NotFound {
                program: self.program.display().to_string(),
            });
        }
        if !status.success() {
            return Err(LaunchError::Failed {
                status: status.to_string(),
                output: tail(output),
            });
        }
        let number = match (&req.display, read) {
            (Some(d), _) => d.clone(),
            (None, Some(r)) => read_display(&r, deadline, self.timeout)?,
            (None, None) => return Err(LaunchError::NoDisplay),
        };
        tracing::debug!("the new session's display: :{number}");
        loop {
            if let Some(socket) = self.live_socket(&number) {
                return Ok(Started {
                    display: number,
                    socket,
                    new: true,
                });
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Timeout(self.timeout));
            }
            std::thread::sleep(POLL);
        }
    }
}

fn set_cloexec(fd: &OwnedFd) -> Result<(), LaunchError> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(drop)
        .map_err(|e| LaunchError::Spawn(e.into()))
}

/// Where `xpra start`'s own output goes (an unlinked temporary file: the
/// daemon may keep writing to it until it redirects to its log).
fn output_file() -> Result<std::fs::File, LaunchError> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("xfwd-start-{}-{n}.log", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(LaunchError::Spawn)?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// The last lines of `xpra start`'s output, for a reason (at most
/// [`MAX_OUTPUT`] bytes read, a few lines kept).
fn tail(mut f: std::fs::File) -> String {
    use std::io::Seek;
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(std::io::SeekFrom::Start(len.saturating_sub(MAX_OUTPUT)));
    let mut buf = Vec::new();
    let _ = f.take(MAX_OUTPUT).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let keep = lines.len().saturating_sub(3);
    lines[keep..].join("; ").chars().take(512).collect()
}

/// Reads the display number xpra writes to the displayfd pipe (digits and
/// a newline), until `deadline`.
fn read_display(fd: &OwnedFd, deadline: Instant, timeout: Duration) -> Result<String, LaunchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LaunchError::Timeout(timeout));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(LaunchError::Spawn(e.into())),
        }
        let mut chunk = [0u8; 16];
        let n = match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(LaunchError::Spawn(e.into())),
        };
        let eof = n == 0;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&buf);
        if eof || text.contains('\n') || buf.len() >= 16 {
            let d = text.trim().trim_start_matches(':');
            return display_number(d)
                .map(str::to_owned)
                .ok_or(LaunchError::NoDisplay);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sns(pairs: Vec<(&str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn requests_take_only_the_whitelisted_options() {
        let v = sns(vec![
            ("mode", Value::from("start")),
            ("display", Value::from(":120")),
            ("start", Value::List(vec![Value::from("xterm")])),
            ("start-child", Value::from("xclock")),
            ("bind-tcp", Value::List(vec![Value::from("0.0.0.0:1")])),
            ("env", Value::List(vec![Value::from("LD_PRELOAD=x")])),
        ]);
        let r = StartRequest::from_caps(Some(&v)).unwrap().unwrap();
        assert_eq!(r.mode, StartMode::Start);
        assert_eq!(r.display.as_deref(), Some("120"));
        assert_eq!(r.start, vec!["xterm"]);
        assert_eq!(r.start_child, vec!["xclock"]);
        let l = Launcher::new(vec![PathBuf::from("/s")], "h".into(), 0);
        let args = l.args(&r, None);
        assert_eq!(
            args,
            vec![
                "start",
                ":120",
                "--daemon=yes",
                "--systemd-run=no",
                "--socket-dirs=/s",
                "--start=xterm",
                "--start-child=xclock"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("bind") || a.contains("env")));
        // One flag per dir; one xpra could not make is left out.
        let l = Launcher::new(
            vec![
                PathBuf::from("/nonexistent-xfwd/run/user/7/xpra"),
                PathBuf::from("/tmp/a,b"),
                PathBuf::from("/tmp"),
            ],
            "h".into(),
            0,
        );
        let dirs: Vec<String> = l
            .args(&r, None)
            .into_iter()
            .filter(|a| a.starts_with("--socket-dirs"))
            .collect();
        assert_eq!(dirs, ["--socket-dirs=/tmp/a,b", "--socket-dirs=/tmp"]);
        // xpra chooses the display: displayfd.
        let r = StartRequest::from_caps(Some(&sns(vec![("mode", Value::from("start-desktop"))])))
            .unwrap()
            .unwrap();
        assert_eq!(r.display, None);
        assert_eq!(
            l.args(&r, Some(7))[..4],
            [
                "start-desktop",
                "--daemon=yes",
                "--systemd-run=no",
                "--displayfd=7"
            ]
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert_eq!(StartRequest::from_caps(None).unwrap(), None);
        assert_eq!(StartRequest::from_caps(Some(&sns(vec![]))).unwrap(), None);
        let e = |v: Value| StartRequest::from_caps(Some(&v)).unwrap_err().to_string();
        assert_eq!(
            e(sns(vec![("mode", Value::from("shadow"))])),
            "cannot start a session of mode 'shadow' (only start and start-desktop)"
        );
        assert_eq!(
            e(sns(vec![("display", Value::from(":1; rm -rf"))])),
            "invalid display for a new session: ':1; rm -rf'"
        );
        assert_eq!(
            e(sns(vec![(
                "start",
                Value::List(vec![Value::from("x"); MAX_COMMANDS + 1])
            )])),
            "too many start commands (at most 16)"
        );
        assert_eq!(
            e(sns(vec![("start", Value::Int(1))])),
            "invalid start-new-session option 'start'"
        );
        assert_eq!(
            e(Value::from("start")),
            "invalid start-new-session request: not a dictionary"
        );
    }

    #[test]
    fn a_missing_program_is_a_clear_failure() {
        let dir = std::env::temp_dir().join(format!("xfwd-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut l = Launcher::new(vec![dir.clone()], "h".into(), 0);
        l.program = PathBuf::from("/nonexistent/xpra");
        let e = l.start(&StartRequest::for_attach(None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot start a session: /nonexistent/xpra not found"
        );
        // A program that fails: its last words are the reason.
        l.program = PathBuf::from("/bin/sh");
        l.extra_args = vec![];
        let e = l
            .start(&StartRequest {
                mode: StartMode::Start,
                display: Some("77".into()),
                start: vec![],
                start_child: vec![],
                reason: StartReason::Requested,
            })
            .unwrap_err();
        assert!(
            matches!(e, LaunchError::Failed { .. }),
            "sh cannot run a script called 'start': {e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stand-in for xpra: a shell script.
    fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_display_comes_from_displayfd_and_the_socket_must_go_live() {
        let dir = std::env::temp_dir().join(format!("xfwd-launch-fd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let mut l = Launcher::new(vec![dir.clone()], "h".into(), uid);
        // Says nothing on the pipe and exits: no display.
        l.program = script(&dir, "silent", "exit 0");
        let e = l.start(&StartRequest::for_attach(None)).unwrap_err();
        assert!(matches!(e, LaunchError::NoDisplay), "{e}");
        // Says :7, and its socket is there and live: started. (Through
        // /dev/fd: the pipe may be fd 10 or more, which `>&N` in dash
        // cannot name.)
        let body = "for a; do case $a in --displayfd=*) fd=${a#--displayfd=};; esac; done\n\
                    echo 7 > /dev/fd/$fd";
        l.program = script(&dir, "says7", body);
        let listener = std::os::unix::net::UnixListener::bind(dir.join("h-7")).unwrap();
        let s = l
            .start(&StartRequest {
                reason: StartReason::Requested,
                ..StartRequest::for_attach(None)
            })
            .unwrap();
        assert_eq!(s.display, "7");
        assert_eq!(s.socket, dir.join("h-7"));
        assert!(s.new);
        // Its socket never goes live: the timeout, with its reason.
        drop(listener);
        l.timeout = Duration::from_millis(300);
        let e = l
            .start(&StartRequest {
                reason: StartReason::Requested,
                ..StartRequest::for_attach(None)
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "the new session did not start within 0 s");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
