//! The helper process (`xfwd session-helper`, root): reads requests from
//! its channel (stdin); hands a user's connections and listings to that
//! user's agent, and runs everything else (starts, PAM) as an operation
//! process of its own, one start per user at a time, each within its
//! bound; exits when the channel closes.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::{first_message, recv_message, send_message};
use super::{
    decode, encode, HelperConfig, OpInput, Refusal, Reply, Request, MAX_QUEUED_STARTS, MAX_RUNNING,
    OP_SUBCOMMAND, OP_TIMEOUT,
};
use crate::sessions::user::SessionUser;

/// How often running operations are looked at while no request comes.
const TICK: Duration = Duration::from_millis(200);

/// One operation process.
struct Running {
    child: Child,
    deadline: Instant,
    /// A start's user (the next start of that user waits for it).
    start_of: Option<u32>,
}

/// A user's agent, as the helper holds it.
struct Agent {
    channel: OwnedFd,
    child: Child,
    last_used: Instant,
}

/// At most this many agents at once (users with recent clients); beyond,
/// a connection runs as an operation of its own.
const MAX_AGENTS: usize = 256;

/// A request and where its answer goes.
struct Pending {
    request: Request,
    reply: OwnedFd,
}

/// Answers `reply` directly (no operation ran).
fn refuse(reply: &OwnedFd, refusal: Refusal) {
    if let Ok(bytes) = encode(&Reply::Refused { refusal }) {
        let _ = send_message(reply.as_fd(), &bytes, &[], false);
    }
}

/// What the helper keeps between requests.
struct Helper {
    config: HelperConfig,
    program: PathBuf,
    running: Vec<Running>,
    /// Starts waiting, per uid, behind the one running.
    queued: HashMap<u32, VecDeque<Pending>>,
    /// The users' agents.
    agents: HashMap<SessionUser, Agent>,
    /// Agents whose channel was closed, until they have exited (reaped).
    closing: Vec<Child>,
}

impl Helper {
    fn deadline(&self, request: &Request) -> Instant {
        let bound = match request {
            // The launcher bounds a start itself; a little more for the
            // connection after it.
            Request::Start { .. } => Duration::from_secs(self.config.start_timeout_s) + OP_TIMEOUT,
            _ => OP_TIMEOUT,
        };
        Instant::now() + bound
    }

    fn starting(&self, uid: u32) -> bool {
        self.running.iter().any(|r| r.start_of == Some(uid))
    }

    /// Takes one request off the channel.
    fn take(&mut self, bytes: &[u8], mut fds: Vec<OwnedFd>) {
        let Some(reply) = fds.pop().filter(|_| fds.is_empty()) else {
            tracing::warn!("session helper: a request without exactly one answer socket: ignored");
            return;
        };
        let request: Request = match decode(bytes) {
            Ok(r) => r,
            Err(e) => return refuse(&reply, Refusal::Invalid(e)),
        };
        if let Err(r) = request.check() {
            tracing::warn!("session helper: refused {request:?}: {r}");
            return refuse(&reply, r);
        }
        if let Request::Start { user, .. } = &request {
            if !self.config.start_sessions {
                return refuse(
                    &reply,
                    Refusal::Start(crate::proxy::START_DISABLED.to_owned()),
                );
            }
            if self.starting(user.uid) {
                let q = self.queued.entry(user.uid).or_default();
                if q.len() >= MAX_QUEUED_STARTS {
                    return refuse(
                        &reply,
                        Refusal::Start(
                            "cannot start a session: too many starts waiting for this user".into(),
                        ),
                    );
                }
                q.push_back(Pending { request, reply });
                return;
            }
        }
        if let Request::Connect { user, .. } | Request::Live { user } = &request {
            // No agent for a uid without an account: told so at once.
            if !self.agents.contains_key(user) {
                if let Err(e) = crate::sessions::user::Account::lookup(*user) {
                    return refuse(&reply, Refusal::User(e.to_string()));
                }
            }
            if self.forward(*user, bytes, &reply) {
                return;
            }
        }
        self.run(Pending { request, reply });
    }

    /// Hands a request to its user's agent (started now if there is none);
    /// false when no agent can take it.
    fn forward(&mut self, user: SessionUser, bytes: &[u8], reply: &OwnedFd) -> bool {
        if !self.agents.contains_key(&user) {
            if self.agents.len() >= MAX_AGENTS {
                return false;
            }
            match self.spawn_agent(user) {
                Ok(a) => {
                    self.agents.insert(user, a);
                }
                Err(e) => {
                    tracing::warn!(
                        "session helper: cannot start an agent for uid {}: {e}",
                        user.uid
                    );
                    return false;
                }
            }
        }
        let Some(agent) = self.agents.get_mut(&user) else {
            return false;
        };
        match send_message(agent.channel.as_fd(), bytes, &[reply.as_fd()], true) {
            Ok(()) => {
                agent.last_used = Instant::now();
                true
            }
            Err(e) => {
                tracing::debug!("session helper: the agent of uid {} is gone: {e}", user.uid);
                if let Some(mut a) = self.agents.remove(&user) {
                    let _ = a.child.kill();
                    let _ = a.child.wait();
                }
                false
            }
        }
    }

    fn spawn_agent(&self, user: SessionUser) -> std::io::Result<Agent> {
        let (ours, theirs) = super::client::seqpacket_pair()?;
        let child = Command::new(&self.program)
            .arg(super::agent::AGENT_SUBCOMMAND)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let init = super::agent::AgentInit {
            config: self.config.clone(),
            user,
        };
        let bytes = encode(&init).map_err(std::io::Error::other)?;
        send_message(ours.as_fd(), &bytes, &[], false)?;
        Ok(Agent {
            channel: ours,
            child,
            last_used: Instant::now(),
        })
    }

    /// Starts the operation's process: the request on its stdin, the
    /// answer socket as its stdout.
    fn run(&mut self, p: Pending) {
        if self.running.len() >= MAX_RUNNING {
            return refuse(
                &p.reply,
                Refusal::Failed("busy: too many operations at once".into()),
            );
        }
        let input = OpInput {
            config: self.config.clone(),
            request: p.request,
        };
        let bytes = match serde_json::to_vec(&input) {
            Ok(b) => b,
            Err(e) => return refuse(&p.reply, Refusal::Failed(e.to_string())),
        };
        let reply = match p.reply.try_clone() {
            Ok(r) => r,
            Err(e) => return refuse(&p.reply, Refusal::Failed(e.to_string())),
        };
        let spawned = Command::new(&self.program)
            .arg(OP_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(reply))
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    &p.reply,
                    Refusal::Failed(format!("cannot run an operation: {e}")),
                )
            }
        };
        // (Bounded: a request is at most MAX_MESSAGE, the config small.)
        if let Some(mut stdin) = child.stdin.take() {
            if let Err(e) = stdin.write_all(&bytes) {
                tracing::warn!("session helper: cannot hand the operation its request: {e}");
            }
        }
        let start_of = match &input.request {
            Request::Start { user, .. } => Some(user.uid),
            _ => None,
        };
        self.running.push(Running {
            deadline: self.deadline(&input.request),
            child,
            start_of,
        });
    }

    /// Reaps ended operations, kills late ones, runs the next start of a
    /// user whose start ended.
    fn tick(&mut self) {
        let now = Instant::now();
        let mut ended_starts = Vec::new();
        self.running.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    tracing::debug!("session helper: an operation ended with {status}");
                }
                ended_starts.extend(r.start_of);
                false
            }
            Ok(None) if now >= r.deadline => {
                tracing::warn!(
                    pid = r.child.id(),
                    "session helper: an operation ran past its bound: killed"
                );
                let _ = r.child.kill();
                let _ = r.child.wait();
                ended_starts.extend(r.start_of);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        // Agents that ended, and those idle for long: their channel closes,
        // they answer what is queued and exit.
        let mut idle = Vec::new();
        self.agents.retain(|user, a| match a.child.try_wait() {
            Ok(None) if a.last_used.elapsed() < super::agent::AGENT_IDLE => true,
            Ok(None) => {
                idle.push(*user);
                true
            }
            _ => false,
        });
        for user in idle {
            if let Some(a) = self.agents.remove(&user) {
                tracing::debug!(uid = user.uid, "session helper: an agent idle: closed");
                drop(a.channel);
                self.closing.push(a.child);
            }
        }
        self.closing
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        for uid in ended_starts {
            let next = self.queued.get_mut(&uid).and_then(VecDeque::pop_front);
            if self.queued.get(&uid).is_some_and(VecDeque::is_empty) {
                self.queued.remove(&uid);
            }
            if let Some(p) = next {
                self.run(p);
            }
        }
    }
}

/// The helper's body: the channel is stdin. Returns the exit status.
pub fn serve(channel: OwnedFd, program: PathBuf) -> u8 {
    let config: HelperConfig = match first_message(channel.as_fd()) {
        Ok(Some(c)) => c,
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("session helper: {e}");
            return 2;
        }
    };
    if let Err(e) = rustix::net::sockopt::set_socket_timeout(
        &channel,
        rustix::net::sockopt::Timeout::Recv,
        Some(TICK),
    ) {
        tracing::error!("session helper: {e}");
        return 2;
    }
    tracing::debug!(pid = std::process::id(), "session helper serving");
    let mut helper = Helper {
        config,
        program,
        running: Vec::new(),
        queued: HashMap::new(),
        agents: HashMap::new(),
        closing: Vec::new(),
    };
    loop {
        match recv_message(channel.as_fd()) {
            Ok(Some((bytes, fds))) => helper.take(&bytes, fds),
            // xfwd has ended.
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("session helper: {e}");
                // A malformed message is skipped; a broken channel ends.
                if e.kind() != std::io::ErrorKind::Other {
                    break;
                }
            }
        }
        helper.tick();
    }
    // Agents: their channels close, they answer what is queued and exit.
    for (_, a) in helper.agents.drain() {
        drop(a.channel);
        helper.closing.push(a.child);
    }
    // Queued starts are not begun; running operations finish (a start's
    // session is the user's either way) within their bounds.
    for (_, q) in helper.queued.drain() {
        for p in q {
            refuse(&p.reply, Refusal::Start("the proxy is stopping".into()));
        }
    }
    // (Agents get an operation's bound to answer and go.)
    let agents_by = Instant::now() + OP_TIMEOUT;
    while !helper.running.is_empty() || !helper.closing.is_empty() {
        helper.tick();
        if Instant::now() >= agents_by {
            for c in &mut helper.closing {
                let _ = c.kill();
                let _ = c.wait();
            }
            helper.closing.clear();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in &helper.config.remove_at_exit {
        remove_socket(path);
    }
    0
}

/// Removes a socket file xfwd made, once xfwd has ended: only a socket
/// (never another file that took its place), and only when nothing
/// listens on it any more (not one that another process, or systemd,
/// holds: xfwd may have failed to bind it, or inherited it).
fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if socket && !crate::sessions::is_live(path) {
        let _ = std::fs::remove_file(path);
    }
}
