//! The control socket: a Unix socket (mode 0600) on which `xfwd list`,
//! `xfwd info` and `xfwd stop` (and `xpra info` / `xpra stop`, see
//! [`xpra`]) reach a running server.
//!
//! It runs on its own thread ("xfwd-control", a tokio current-thread
//! runtime), never on a shard: it asks the shards by message
//! ([`Shards`]) and they answer between their other work, so nothing on
//! the forwarding path takes a lock for it.
//!
//! Protocol: one JSON request line, one JSON response line, then the
//! server closes. Requests are `{"cmd":"list"}`, `{"cmd":"info"}`,
//! `{"cmd":"info","connection":ID}`, `{"cmd":"stop","connection":ID}` and
//! `{"cmd":"stop"}` (the whole server: as SIGTERM) and `{"cmd":"reload"}`
//! (as SIGHUP); responses are
//! `{"ok":true,...}` or `{"ok":false,"error":"..."}` ([`Response`]).
//!
//! Only the user xfwd runs as and root may talk to it (the socket's mode,
//! and `SO_PEERCRED` on every connection); a request line is at most
//! [`MAX_REQUEST`] bytes and must arrive within [`READ_DEADLINE`]; at most
//! [`MAX_CLIENTS`] clients are served at once.

mod xpra;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::registry::{ConnInfo, Shards};
use super::StartError;

/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;
/// How long a client has to send its request.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing a response may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the shards may take to answer one request.
const SHARD_DEADLINE: Duration = Duration::from_secs(10);
/// How long a new xfwd may take to listen once it has the sockets.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(60);
/// The longest drain a takeover may ask for.
const MAX_DRAIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a draining server looks whether its connections have ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Control clients served at once; more are told to try again.
pub const MAX_CLIENTS: usize = 16;

/// A request, as one JSON line: `{"cmd":"list"}`, `{"cmd":"info"}`,
/// `{"cmd":"info","connection":7}`, `{"cmd":"stop","connection":7}`,
/// `{"cmd":"stop"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Every live connection.
    List,
    /// The server's own state and its connections, or one connection.
    Info {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection: Option<u64>,
    },
    /// Stop one connection, or (without one) the whole server. With
    /// `node` (another node of the cluster view), the connection is that
    /// node's: a stop request it executes at its next heartbeat.
    Stop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Every live node's connections, from the cluster database
    /// (`--cluster-db`).
    #[serde(rename = "list-cluster")]
    ListCluster,
    /// Read the configuration again, as SIGHUP does.
    Reload,
    /// A new xfwd asks for the listening sockets (see [`super::takeover`]);
    /// this one drains for at most `drain_s` seconds once it is done.
    Takeover { drain_s: u64 },
    /// The new xfwd listens: stop accepting and drain.
    #[serde(rename = "takeover-done")]
    TakeoverDone,
}

/// What the server says about itself (`info` without a connection).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub version: String,
    pub uuid: String,
    pub hostname: String,
    pub pid: u32,
    /// When the server started (Unix time, seconds).
    pub started: u64,
    pub uptime_s: f64,
    pub shards: usize,
    /// `tcp:ADDR` and `unix:PATH`, one per listener.
    pub listeners: Vec<String>,
    pub control_socket: String,
    /// Live connections.
    pub connections: usize,
}

/// A response line. `ok` says whether the request was done; the other
/// fields are there when the request gives them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<ConnInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnInfo>,
    /// The connection a `stop` ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<u64>,
    /// A server `stop` was accepted: the server is stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<bool>,
    /// A `reload` was done: new connections use the new configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reloaded: Option<bool>,
    /// The sockets a `takeover` hands over (their descriptors ride along).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Vec<super::takeover::SocketDesc>>,
    /// `list-cluster`: every live node and their connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterView>,
    /// A remote stop was requested (`NODE/ID`): that node stops it within
    /// one of its heartbeats (`heartbeat_s`: this node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u64>,
    /// The connections left to drain after a takeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<usize>,
}

impl Response {
    pub fn error(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(e.into()),
            ..Response::default()
        }
    }

    fn ok() -> Response {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the response"}"#.into());
        s.push('\n');
        s
    }
}

/// Parses a request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

/// Why the control socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "control socket {0}: another xfwd answers on it (pass another --control-socket, or --control-socket=none)"
    )]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ControlError> for StartError {
    fn from(e: ControlError) -> StartError {
        StartError::Control(e.to_string())
    }
}

/// What the server is, for `info`.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub uuid: String,
    pub hostname: String,
    pub shards: usize,
    pub listeners: Vec<String>,
    pub started: Instant,
    pub started_wall: SystemTime,
}

/// The socket file this server bound: removed when dropped, unless
/// something else has replaced it since.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The control socket: bound by [`Control::bind`], served once
/// [`Control::start`] has run, ended by [`Control::join`] (or drop).
#[derive(Debug)]
pub(crate) struct Control {
    listener: Option<std::os::unix::net::UnixListener>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: CancellationToken,
    file: SocketFile,
}

impl Control {
    /// Creates the directory (0700) if missing, refuses a socket another
    /// process answers on, removes a stale one, binds (0600).
    pub fn bind(path: &Path) -> Result<Control, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        if std::fs::symlink_metadata(path).is_ok() {
            if crate::sessions::is_live(path) {
                return Err(ControlError::InUse(path.to_owned()));
            }
            tracing::debug!(path = %path.display(), "removing a stale control socket");
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                ControlError::InUse(path.to_owned())
            } else {
                io(e)
            }
        })?;
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        let file = SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        Ok(Control {
            listener: Some(listener),
            thread: None,
            stop: CancellationToken::new(),
            file,
        })
    }

    /// Starts the control thread; it ends when `stop` (the server's) or
    /// [`Control::join`] says so.
    pub fn start(
        &mut self,
        facts: Facts,
        shards: Shards,
        reloader: Arc<super::reload::Reloader>,
        handover: Arc<super::takeover::Handover>,
        cluster: Option<super::cluster::ClusterAccess>,
        stop: &CancellationToken,
    ) -> Result<(), ControlError> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let path = self.file.path.clone();
        let io = |source| ControlError::Io {
            path: path.clone(),
            source,
        };
        self.stop = stop.child_token();
        let ctx = Arc::new(Ctx {
            facts,
            shards,
            reloader,
            handover,
            cluster,
            file: (self.file.dev, self.file.ino),
            uid: nix::unistd::geteuid().as_raw(),
            path: path.clone(),
        });
        let stop = self.stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io)?;
        let thread = std::thread::Builder::new()
            .name("xfwd-control".into())
            .spawn(move || {
                rt.block_on(async move {
                    match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => accept_loop(l, ctx, stop).await,
                        Err(e) => tracing::error!("control socket: {e}"),
                    }
                });
            })
            .map_err(io)?;
        self.thread = Some(thread);
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(())
    }

    /// Stops the control thread, waits for it and removes the socket.
    pub fn join(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the control thread panicked");
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What every control client's task shares.
struct Ctx {
    facts: Facts,
    shards: Shards,
    reloader: Arc<super::reload::Reloader>,
    /// The listening sockets, for a takeover.
    handover: Arc<super::takeover::Handover>,
    /// The cluster database (`--cluster-db`).
    cluster: Option<super::cluster::ClusterAccess>,
    /// The control socket file's device and inode (removed at a takeover
    /// only if it is still this one).
    file: (u64, u64),
    /// xfwd's effective uid: the one user (besides root) let in.
    uid: u32,
    path: PathBuf,
}

async fn accept_loop(listener: tokio::net::UnixListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let line =
                Response::error("busy: too many control clients at once; try again").to_line();
            let _ = stream.try_write(line.as_bytes());
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_client(stream, &ctx).await;
            drop(permit);
        });
    }
}

/// What a client sent first.
enum Input {
    /// A request line (without its newline).
    Line(Vec<u8>),
    /// The start of an xpra packet (its first byte is `P`).
    Xpra(Vec<u8>),
    /// Nothing: the client connected and left (a liveness probe).
    Nothing,
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes.
async fn read_input(stream: &mut UnixStream) -> Result<Input, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Ok(if buf.is_empty() {
                Input::Nothing
            } else {
                Input::Line(buf)
            });
        }
        let Some(data) = chunk.get(..n) else {
            return Err("read failed".into());
        };
        if buf.is_empty() && data.first() == Some(&b'P') {
            return Ok(Input::Xpra(data.to_vec()));
        }
        let seen = buf.len();
        buf.extend_from_slice(data);
        if let Some(pos) = data.iter().position(|&b| b == b'\n') {
            buf.truncate(seen + pos);
            if buf.len() > MAX_REQUEST {
                return Err(format!("request too long (at most {MAX_REQUEST} bytes)"));
            }
            return Ok(Input::Line(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Err(format!("request too long (at most {MAX_REQUEST} bytes)"));
        }
    }
}

/// Writes `line`, closes our side, and drains what the client still sends
/// (briefly), so that it reads the answer rather than a reset.
async fn reply(stream: &mut UnixStream, line: &str) {
    let written = tokio::time::timeout(WRITE_DEADLINE, async {
        stream.write_all(line.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn serve_client(mut stream: UnixStream, ctx: &Ctx) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!("control socket: no peer credentials: {e}");
            reply(
                &mut stream,
                &Response::error("permission denied: no peer credentials").to_line(),
            )
            .await;
            return;
        }
    };
    if uid != ctx.uid && uid != 0 {
        tracing::warn!(uid, "control socket: refused a client of another user");
        let msg = format!(
            "permission denied: uid {uid} may not use this control socket (only uid {} and root)",
            ctx.uid
        );
        reply(&mut stream, &Response::error(msg).to_line()).await;
        return;
    }
    let input = match tokio::time::timeout(READ_DEADLINE, read_input(&mut stream)).await {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => {
            tracing::debug!("control socket: {e}");
            reply(&mut stream, &Response::error(e).to_line()).await;
            return;
        }
        Err(_) => {
            let e = format!("no request line within {} s", READ_DEADLINE.as_secs());
            reply(&mut stream, &Response::error(e).to_line()).await;
            return;
        }
    };
    let stop_server = match input {
        Input::Nothing => false,
        Input::Xpra(first) => xpra::serve(&mut stream, first, ctx).await,
        Input::Line(line) => {
            let (response, stop) = match parse_request(&line) {
                // The connection stays with the takeover.
                Ok(Request::Takeover { drain_s }) => {
                    hand_over(stream, ctx, uid, Duration::from_secs(drain_s)).await;
                    return;
                }
                Ok(r) => {
                    tracing::debug!(uid, request = ?r, "control request");
                    answer(r, ctx, uid).await
                }
                Err(e) => (Response::error(e), false),
            };
            reply(&mut stream, &response.to_line()).await;
            stop
        }
    };
    if stop_server {
        stop_the_server();
    }
}

/// Serves a takeover (see [`super::takeover`]): sends the listening
/// sockets, waits for the new xfwd to listen, then stops accepting and
/// drains, and stops the server when the last connection has ended or
/// `drain` has passed.
async fn hand_over(mut stream: UnixStream, ctx: &Ctx, uid: u32, drain: Duration) {
    use std::os::fd::AsFd;
    // The client's number: bounded before it becomes an Instant.
    let drain = drain.min(MAX_DRAIN);
    let Some(_busy) = ctx.handover.begin() else {
        let e = "a takeover is under way or done already";
        reply(&mut stream, &Response::error(e).to_line()).await;
        return;
    };
    let connections = ctx.list(None).await.map_or(0, |l| l.len());
    let (descs, fds) = ctx.handover.sockets();
    if fds.len() > super::takeover::MAX_SOCKETS {
        let e = format!(
            "{} listening sockets, more than one takeover hands over ({})",
            fds.len(),
            super::takeover::MAX_SOCKETS
        );
        tracing::warn!("takeover refused: {e}");
        reply(&mut stream, &Response::error(e).to_line()).await;
        return;
    }
    let line = Response {
        sockets: Some(descs),
        server: Some(ctx.server_info(connections)),
        ..Response::ok()
    }
    .to_line();
    tracing::info!(
        uid,
        sockets = fds.len(),
        "control socket: handing the listening sockets to a new xfwd"
    );
    let sent = tokio::time::timeout(
        WRITE_DEADLINE,
        stream.async_io(tokio::io::Interest::WRITABLE, || {
            crate::fdpass::send_with_fds(
                stream.as_fd(),
                line.as_bytes(),
                &fds,
                rustix::net::SendFlags::empty(),
            )
        }),
    )
    .await;
    let rest = match sent {
        Ok(Ok(n)) => line.as_bytes().get(n..).unwrap_or_default(),
        Ok(Err(e)) => {
            tracing::warn!("takeover: cannot send the sockets: {e}");
            return;
        }
        Err(_) => return,
    };
    if tokio::time::timeout(WRITE_DEADLINE, stream.write_all(rest))
        .await
        .map_or(true, |r| r.is_err())
    {
        return;
    }
    drop(fds);
    // The new xfwd starts its shards on the sockets, then says so.
    let done = tokio::time::timeout(TAKEOVER_DEADLINE, read_input(&mut stream)).await;
    let done = match done {
        Ok(Ok(Input::Line(l))) => parse_request(&l),
        Ok(Ok(_)) => Err("it left".into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no word within {} s", TAKEOVER_DEADLINE.as_secs())),
    };
    if !matches!(done, Ok(Request::TakeoverDone)) {
        let why = done.err().unwrap_or_else(|| "an unexpected request".into());
        tracing::warn!("takeover abandoned by the new xfwd ({why}); serving on");
        return;
    }
    // From here on the new xfwd serves: stop accepting, leave the socket
    // files (Unix listeners, this control socket) to it.
    ctx.handover.commit();
    // Under systemd the new xfwd becomes the service's main process
    // before this one exits (systemd reads notifications before it sees
    // the exit). Nothing without $NOTIFY_SOCKET.
    if let Some(pid) = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
    {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::MainPid(pid)]) {
            tracing::warn!("takeover: cannot tell systemd the new main pid {pid}: {e}");
        }
    }
    remove_if_same(&ctx.path, ctx.file);
    let draining = ctx.list(None).await.map_or(0, |l| l.len());
    tracing::info!(
        draining,
        deadline_s = drain.as_secs(),
        "taken over by a new xfwd: not accepting any more; draining"
    );
    reply(
        &mut stream,
        &Response {
            draining: Some(draining),
            ..Response::ok()
        }
        .to_line(),
    )
    .await;
    let end = Instant::now() + drain;
    loop {
        let left = ctx.list(None).await.map_or(0, |l| l.len());
        if left == 0 {
            tracing::info!("drained: every connection has ended");
            break;
        }
        if Instant::now() >= end {
            tracing::info!(left, "drain deadline reached: stopping the rest");
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    stop_the_server();
}

/// Removes the file at `path` if it is still the socket this server bound.
fn remove_if_same(path: &Path, (dev, ino): (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.dev() == dev && m.ino() == ino {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Stops the server exactly as SIGTERM does: the signal goes to this
/// process, where `xfwd`'s main thread waits for it.
fn stop_the_server() {
    use nix::sys::signal::{kill, Signal};
    if let Err(e) = kill(nix::unistd::getpid(), Signal::SIGTERM) {
        tracing::error!("control socket: cannot signal the server to stop: {e}");
    }
}

impl Ctx {
    async fn list(&self, id: Option<u64>) -> Result<Vec<ConnInfo>, String> {
        tokio::time::timeout(SHARD_DEADLINE, self.shards.list(id))
            .await
            .map_err(|_| "the shards did not answer in time".to_owned())
    }

    fn server_info(&self, connections: usize) -> ServerInfo {
        let f = &self.facts;
        ServerInfo {
            version: crate::proxy::link::VERSION.to_owned(),
            uuid: f.uuid.clone(),
            hostname: f.hostname.clone(),
            pid: std::process::id(),
            started: f
                .started_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uptime_s: f.started.elapsed().as_secs_f64(),
            shards: f.shards,
            listeners: f.listeners.clone(),
            control_socket: self.path.display().to_string(),
            connections,
        }
    }
}

/// How long a cluster database request may take (its connect and
/// statement timeouts bound it; this bounds the wait for a blocking thread).
const CLUSTER_DEADLINE: Duration = Duration::from_secs(15);

/// Runs `f` against the cluster database on a blocking thread.
async fn cluster_job<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&super::cluster::ClusterAccess) -> Result<T, crate::cluster::ClusterError>
        + Send
        + 'static,
) -> Result<T, String> {
    let Some(access) = ctx.cluster.clone() else {
        return Err(crate::cluster::ClusterError::Off.to_string());
    };
    let job = tokio::task::spawn_blocking(move || f(&access));
    match tokio::time::timeout(CLUSTER_DEADLINE, job).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("the cluster request failed: {e}")),
        Err(_) => Err(format!(
            "the cluster database did not answer within {} s",
            CLUSTER_DEADLINE.as_secs()
        )),
    }
}

/// Carries out one request; `true`: stop the server once answered.
async fn answer(request: Request, ctx: &Ctx, uid: u32) -> (Response, bool) {
    let r = match request {
        Request::List => ctx.list(None).await.map(|l| Response {
            connections: Some(l),
            ..Response::ok()
        }),
        Request::Info { connection: None } => ctx.list(None).await.map(|l| Response {
            server: Some(ctx.server_info(l.len())),
            connections: Some(l),
            ..Response::ok()
        }),
        Request::Info {
            connection: Some(id),
        } => ctx
            .list(Some(id))
            .await
            .and_then(|l| match l.into_iter().next() {
                Some(c) => Ok(Response {
                    connection: Some(c),
                    ..Response::ok()
                }),
                None => Err(format!("no connection {id}")),
            }),
        Request::ListCluster => cluster_job(ctx, |c| c.view()).await.map(|v| Response {
            cluster: Some(v),
            ..Response::ok()
        }),
        Request::Stop {
            connection: Some(id),
            node: Some(node),
        } if ctx.cluster.as_ref().is_none_or(|c| c.node != node) => {
            let n = node.clone();
            match cluster_job(ctx, move |c| c.request_stop(&n, id)).await {
                Ok(()) => {
                    tracing::info!(connection = id, node = %node, uid, "control socket: asked another node to stop a connection");
                    Ok(Response {
                        requested: Some(format!("{node}/{id}")),
                        heartbeat_s: ctx.cluster.as_ref().map(|c| c.heartbeat.as_secs()),
                        ..Response::ok()
                    })
                }
                Err(e) => Err(e),
            }
        }
        Request::Stop {
            connection: Some(id),
            ..
        } => match tokio::time::timeout(SHARD_DEADLINE, ctx.shards.stop(id)).await {
            Ok(true) => {
                tracing::info!(
                    connection = id,
                    uid,
                    "control socket: stopping a connection"
                );
                Ok(Response {
                    stopped: Some(id),
                    ..Response::ok()
                })
            }
            Ok(false) => Err(format!("no connection {id}")),
            Err(_) => Err("the shards did not answer in time".to_owned()),
        },
        Request::Reload => {
            tracing::info!(uid, "control socket: reload requested");
            let reloader = ctx.reloader.clone();
            match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(Ok(())) => {
                    tracing::info!("configuration reloaded; new connections use it");
                    Ok(Response {
                        reloaded: Some(true),
                        ..Response::ok()
                    })
                }
                Ok(Err(e)) => {
                    tracing::error!("not reloaded: {e}; the running configuration stays");
                    Err(format!(
                        "not reloaded: {e}; the running configuration stays"
                    ))
                }
                Err(e) => Err(format!("the reload failed: {e}")),
            }
        }
        Request::Takeover { .. } | Request::TakeoverDone => {
            Err("takeover-done without a takeover on this connection".to_owned())
        }
        Request::Stop {
            connection: None,
            node: Some(node),
        } => Err(format!(
            "a stop for node {node} needs a connection (NODE/ID); the whole server stops only without a node"
        )),
        Request::Stop {
            connection: None,
            node: None,
        } => {
            tracing::info!(uid, "control socket: server stop requested");
            return (
                Response {
                    stopping: Some(true),
                    ..Response::ok()
                },
                true,
            );
        }
    };
    (r.unwrap_or_else(Response::error), false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_refusals_are_clear() {
        assert_eq!(parse_request(br#"{"cmd":"list"}"#).unwrap(), Request::List);
        assert_eq!(
            parse_request(b"{\"cmd\":\"info\",\"connection\":7}\r").unwrap(),
            Request::Info {
                connection: Some(7)
            }
        );
        assert_eq!(
            parse_request(br#"{"cmd":"stop"}"#).unwrap(),
            Request::Stop {
                connection: None,
                node: None
            }
        );
        assert_eq!(
            parse_request(br#"{"cmd":"stop","connection":4,"node":"b"}"#).unwrap(),
            Request::Stop {
                connection: Some(4),
                node: Some("b".into())
            }
        );
        assert_eq!(
            parse_request(br#"{"cmd":"list-cluster"}"#).unwrap(),
            Request::ListCluster
        );
        let e = parse_request(br#"{"cmd":"reboot"}"#).unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
        assert!(parse_request(b"garbage").is_err());
        assert!(parse_request(br#"{"cmd":"stop","connection":-1}"#).is_err());
        assert_eq!(
            parse_request(br#"{"cmd":"takeover-done"}"#).unwrap(),
            Request::TakeoverDone
        );
        assert!(
            parse_request(br#"{"cmd":"takeover"}"#).is_err(),
            "drain_s is needed"
        );
        // What the client sends is what the server reads.
        for r in [
            Request::List,
            Request::Info { connection: None },
            Request::Stop {
                connection: Some(3),
                node: None,
            },
            Request::ListCluster,
            Request::Reload,
            Request::Takeover { drain_s: 30 },
            Request::TakeoverDone,
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(parse_request(line.as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn responses_are_one_line() {
        let l = Response::error("no\nconnection 5").to_line();
        assert_eq!(l.matches('\n').count(), 1);
        assert!(l.ends_with('\n'));
        let back: Response = serde_json::from_str(&l).unwrap();
        assert!(!back.ok);
        assert_eq!(back.error.as_deref(), Some("no\nconnection 5"));
        assert_eq!(
            serde_json::to_string(&Response {
                stopped: Some(2),
                ..Response::ok()
            })
            .unwrap(),
            r#"{"ok":true,"stopped":2}"#
        );
    }

    #[test]
    fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = std::env::temp_dir().join(format!("xfwd-control-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("c.sock");
        let a = Control::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let e = Control::bind(&path).unwrap_err();
        assert!(e.to_string().contains("another xfwd"), "{e}");
        drop(a);
        assert!(!path.exists());
        // A stale socket (nobody listening) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let b = Control::bind(&path).unwrap();
        b.join();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
