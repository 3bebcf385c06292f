//! The forwarding engine: one pinned executor ("shard") per core, each a
//! tokio current-thread runtime (epoll) on its own OS thread, with its own
//! SO_REUSEPORT listeners and every connection it accepted. A connection
//! never moves between shards, so shard state needs no locks. Blocking work
//! goes to one bounded pool shared by every shard (`blocking.rs`).
//!
//! Everything runtime-specific lives in this module (docs/runtime.md says
//! why tokio and not glommio).
//!
//! Life of a connection (see docs/engine.md): accept -> handshake (hello,
//! auth challenge) -> route (find the session) -> upstream hello -> relay
//! both ways -> close (each side told why).

pub mod admission;
pub mod blocking;
mod conn;
pub mod control;
mod front;
mod listen;
pub mod metrics;
pub mod preflight;
pub mod pump;
pub mod registry;
mod stream;
mod upstream;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use blocking::{Blocking, BlockingPool};

use crate::auth::{AuthChain, AuthPolicy, AuthSpec, SharedThrottle, ThrottleConfig, Transport};
use crate::config::Config;

pub use listen::ListenerKind;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr}: address already in use (is another xfwd or xpra running there?)"
    )]
    AddrInUse { addr: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Executor(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--html: {0}")]
    Html(String),
    #[error("{0}")]
    Control(String),
    #[error("{listener} authentication: {source}")]
    Auth {
        listener: &'static str,
        #[source]
        source: crate::auth::AuthError,
    },
}

/// What every shard shares (read-only).
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub hostname: String,
    pub uid: u32,
    /// Socket dirs searched for sessions: the configured ones, then xpra's
    /// defaults for this user.
    pub socket_dirs: Vec<PathBuf>,
    /// Who the proxy is, for the hellos sessions get.
    pub identity: Arc<crate::proxy::Identity>,
    /// The auth chain of each transport.
    pub auth: Vec<(Transport, AuthEntry)>,
    /// TLS configuration, swapped whole on reload (SIGHUP).
    pub tls: Option<std::sync::RwLock<Arc<rustls::ServerConfig>>>,
    /// `--html` files.
    pub html: Option<crate::transport::http::StaticFiles>,
    /// Client TLS for `ssl://` session targets (or why there is none: a
    /// machine without CA certificates can still serve everything else).
    pub upstream_tls: Result<Arc<rustls::ClientConfig>, String>,
    /// Failed-attempt delays, shared by every shard (an attacker's
    /// connections land on any shard).
    pub throttle: SharedThrottle,
    /// Connections in their handshake (`--max-handshakes`).
    pub admission: Arc<admission::Admission>,
    /// The blocking pool (auth modules, discovery, DNS, files).
    pub blocking: Blocking,
    /// Cancelled once, when the server stops: every shard, accept loop
    /// and connection waits on it (a waiter's registration ends with it).
    pub stop: CancellationToken,
    /// The registry, with `--bind-metrics`.
    pub metrics: Option<Arc<metrics::Metrics>>,
}

/// One transport's auth chain.
#[derive(Debug, Clone)]
pub(crate) struct AuthEntry {
    pub chain: Arc<AuthChain>,
    /// The chain's modules never block (reject, fail): they run on the
    /// shard, saving two thread hand-offs.
    pub inline: bool,
}

impl Shared {
    /// The auth chain for a connection that arrived over `t`.
    pub fn auth_for(&self, t: Transport) -> Option<&AuthEntry> {
        self.auth.iter().find(|(k, _)| *k == t).map(|(_, e)| e)
    }

    /// The current TLS configuration.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls
            .as_ref()
            .map(|l| l.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    /// How the control socket reaches the shards.
    control: registry::Shards,
    shards: Vec<std::thread::JoinHandle<()>>,
    pool: Option<BlockingPool>,
    tcp_addrs: Vec<SocketAddr>,
    /// The control socket (`xfwd list|info|stop`), when configured.
    control_socket: Option<control::Control>,
    /// The metrics endpoint's thread and address (`--bind-metrics`).
    metrics: Option<(std::thread::JoinHandle<()>, SocketAddr)>,
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        return format!("xfwd-{}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Server {
    /// Checks the machine, binds every listener and starts the shards.
    /// Returns once every shard listens (or with the first failure).
    pub fn start(config: Config) -> Result<Server, StartError> {
        preflight::prepare();
        // Looked up once here, not on a shard (a client without a user
        // name is taken as the account xfwd runs as).
        let _ = crate::auth::ids::current_user_name();
        let none_only =
            |c: &[crate::auth::AuthSpec]| c.iter().all(|s| s.kind == crate::auth::ModuleKind::None);
        if !config.tcp.is_empty() && none_only(&config.tcp_auth) {
            tracing::warn!(
                "TCP listeners use no authentication (--tcp-auth=none): anyone who can reach {:?} can attach to your sessions",
                config.tcp
            );
        }
        let tcp_addrs = listen::probe_tcp(&config.tcp)?;
        listen::prepare_unix(&config.unix)?;
        let metrics_listener = match config.metrics {
            Some(a) => Some(listen::bind_metrics(&a)?),
            None => None,
        };
        let uid = nix::unistd::geteuid().as_raw();
        let home = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.dir);
        let mut socket_dirs = config.socket_dirs.clone();
        match &config.default_socket_dirs {
            Some(dirs) => socket_dirs.extend(dirs.iter().cloned()),
            None => socket_dirs.extend(crate::sessions::default_socket_dirs(uid, home.as_deref())),
        }
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        if config.cores > ncpu {
            tracing::warn!(
                cores = config.cores,
                cpus = ncpu,
                "more shards than CPUs: shards share CPUs (shard i runs on CPU i mod {ncpu})"
            );
        }
        let entry = |listener: &'static str, specs: &[AuthSpec]| {
            use crate::auth::ModuleKind;
            let chain = AuthChain::new(specs, AuthPolicy::default())
                .map(Arc::new)
                .map_err(|source| StartError::Auth { listener, source })?;
            // Only modules that never accept run on the shard: any module
            // that accepts looks the account up (getpwnam, which may ask
            // NSS, LDAP ...) for the user's sessions, and that blocks.
            let inline = specs
                .iter()
                .all(|s| matches!(s.kind, ModuleKind::Reject | ModuleKind::Fail));
            Ok::<_, StartError>(AuthEntry { chain, inline })
        };
        let auth = vec![
            (Transport::Tcp, entry("TCP", &config.tcp_auth)?),
            (Transport::Unix, entry("Unix socket", &config.unix_auth)?),
            (Transport::Ssl, entry("TLS", &config.ssl_auth)?),
            (Transport::Ws, entry("WebSocket", &config.ws_auth)?),
            (
                Transport::Wss,
                entry("WebSocket over TLS", &config.wss_auth)?,
            ),
        ];
        let tls = match &config.tls {
            Some(t) => Some(std::sync::RwLock::new(
                t.build().map_err(|e| StartError::Tls(e.to_string()))?,
            )),
            None => None,
        };
        let html = match &config.html {
            Some(dir) => Some(
                crate::transport::http::StaticFiles::new(dir)
                    .map_err(|e| StartError::Html(e.to_string()))?,
            ),
            None => None,
        };
        let pool = BlockingPool::new(BLOCKING_THREADS, BLOCKING_QUEUE)
            .map_err(|e| StartError::Executor(format!("cannot start the blocking pool: {e}")))?;
        let upstream_tls = config.upstream_tls.build().map_err(|e| e.to_string());
        if let Err(e) = &upstream_tls {
            tracing::debug!("no TLS for ssl:// session targets: {e}");
        }
        let uuid = random_uuid();
        let shards = config.cores;
        let admission =
            admission::Admission::new(config.max_handshakes, config.max_handshakes_per_ip);
        let metrics = metrics_listener.as_ref().map(|_| {
            let modules: Vec<_> = [
                &config.tcp_auth,
                &config.unix_auth,
                &config.ssl_auth,
                &config.ws_auth,
                &config.wss_auth,
            ]
            .into_iter()
            .flatten()
            .map(|s| s.kind)
            .collect();
            Arc::new(metrics::Metrics::new(&modules))
        });
        let shared = Arc::new(Shared {
            auth,
            tls,
            html,
            upstream_tls,
            throttle: SharedThrottle::new(ThrottleConfig::default()),
            config,
            identity: Arc::new(crate::proxy::Identity {
                hostname: hostname.clone(),
                uuid,
                start_time: std::time::SystemTime::now(),
                started: std::time::Instant::now(),
                shards,
            }),
            hostname,
            uid,
            socket_dirs,
            admission,
            blocking: pool.handle(),
            stop: CancellationToken::new(),
            metrics,
        });
        let control_socket = match &shared.config.control_socket {
            Some(p) => Some(control::Control::bind(p)?),
            None => None,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
        let mut shards = Vec::new();
        let n = shared.config.cores;
        let cpus = allowed_cpus();
        let mut spawn_error = None;
        let mut control = registry::Shards::default();
        for id in 0..n {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let (tx, requests) = tokio::sync::mpsc::channel(registry::SHARD_QUEUE);
            control.push(tx);
            let tcp = tcp_addrs.clone();
            let cpu = cpus.get(id % cpus.len().max(1)).copied();
            let spawned = std::thread::Builder::new()
                .name(format!("xfwd-shard-{id}"))
                .spawn(move || run_shard(id, cpu, shared, tcp, ready, requests));
            match spawned {
                Ok(h) => shards.push(h),
                Err(e) => {
                    spawn_error = Some(StartError::Executor(format!(
                        "cannot start shard {id}: {e}"
                    )));
                    break;
                }
            }
        }
        drop(ready_tx);
        let mut server = Server {
            shared,
            control,
            shards,
            pool: Some(pool),
            tcp_addrs,
            control_socket,
            metrics: None,
        };
        let endpoint = metrics_listener.zip(server.shared.metrics.clone());
        if let (Some(((l, addr), m)), true) = (endpoint, spawn_error.is_none()) {
            match metrics::spawn_endpoint(l, m, server.shared.stop.clone()) {
                Ok(t) => server.metrics = Some((t, addr)),
                Err(e) => {
                    spawn_error = Some(StartError::Executor(format!(
                        "cannot start the metrics endpoint: {e}"
                    )));
                }
            }
        }
        if let Some(e) = spawn_error {
            server.stop_and_join();
            return Err(e);
        }
        for _ in 0..n {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stop_and_join();
                    return Err(e);
                }
                Err(_) => {
                    let e = StartError::Executor("a shard did not start within 10 s".into());
                    server.stop_and_join();
                    return Err(e);
                }
            }
        }
        if let Err(e) = server.start_control() {
            server.stop_and_join();
            return Err(e.into());
        }
        if let Some((_, addr)) = &server.metrics {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        tracing::info!(shards = n, tcp = ?server.tcp_addrs, unix = ?server.shared.config.unix, "xfwd listening");
        server.advise_without_sessions();
        Ok(server)
    }

    /// Says how to start a session when no local one is there yet (remote
    /// targets of auth data are not known here). Runs once at start.
    fn advise_without_sessions(&self) {
        let sh = &self.shared;
        // Sockets are only listed, not probed: connecting would show in
        // every session's log.
        let found = crate::sessions::discover(&sh.socket_dirs, &sh.hostname, sh.uid);
        if found.is_empty() {
            let port = self.tcp_addrs.first().map_or(14501, SocketAddr::port);
            tracing::info!(
                "no xpra session found yet in {:?}; start one with `xpra start :100 --start=xterm`, then attach with `xpra attach tcp://127.0.0.1:{port}/100`",
                sh.socket_dirs
            );
        }
    }

    /// Starts the control socket's thread, once every shard listens.
    fn start_control(&mut self) -> Result<(), control::ControlError> {
        let Some(c) = self.control_socket.as_mut() else {
            return Ok(());
        };
        let config = &self.shared.config;
        let listeners = self
            .tcp_addrs
            .iter()
            .map(|a| format!("tcp:{a}"))
            .chain(config.unix.iter().map(|p| format!("unix:{}", p.display())))
            .collect();
        let facts = control::Facts {
            uuid: self.shared.identity.uuid.clone(),
            hostname: self.shared.identity.hostname.clone(),
            shards: self.shards.len(),
            listeners,
            started: std::time::Instant::now(),
            started_wall: std::time::SystemTime::now(),
        };
        c.start(facts, self.control.clone(), &self.shared.stop)
    }

    /// The TCP addresses listened on (ports resolved when 0 was asked).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// How to reach the shards' registries (for the control socket).
    pub fn shards(&self) -> registry::Shards {
        self.control.clone()
    }

    /// Where `--bind-metrics` serves (its port resolved when 0 was asked).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// Reloads the TLS certificate and key (SIGHUP): new connections use
    /// the new ones; established connections are not touched.
    pub fn reload_tls(&self) -> Result<(), StartError> {
        let (Some(lock), Some(t)) = (&self.shared.tls, &self.shared.config.tls) else {
            return Ok(());
        };
        let fresh = t.build().map_err(|e| StartError::Tls(e.to_string()))?;
        *lock.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Asks every shard to stop: clients are told why, then the shards end.
    pub fn request_stop(&self) {
        self.shared.stop.cancel();
    }

    /// Stops and waits for every shard.
    pub fn stop_and_join(self) {
        self.request_stop();
        self.join();
    }

    /// Waits for every shard to end.
    pub fn join(mut self) {
        if let Some(c) = self.control_socket.take() {
            c.join();
        }
        for s in std::mem::take(&mut self.shards) {
            if s.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
        if let Some((t, _)) = self.metrics.take() {
            if t.join().is_err() {
                tracing::error!("the metrics thread panicked");
            }
        }
        if let Some(pool) = self.pool.take() {
            pool.shutdown();
        }
        for p in &self.shared.config.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Threads of the blocking pool (shared by every shard).
const BLOCKING_THREADS: usize = 32;
/// Blocking jobs in the pool at once (running or waiting) before new ones
/// are refused.
const BLOCKING_QUEUE: usize = 1024;

/// How long connections get to say goodbye when the server stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The CPUs this process may run on (its affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> nix::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// The body of a shard thread: pin, build the runtime, run until stopped.
fn run_shard(
    id: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    tcp: Vec<SocketAddr>,
    ready: mpsc::Sender<Result<(), StartError>>,
    requests: tokio::sync::mpsc::Receiver<registry::ShardRequest>,
) {
    if let Some(cpu) = cpu {
        if let Err(e) = pin_to(cpu) {
            tracing::warn!(shard = id, cpu, "cannot pin the shard to its CPU: {e}");
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StartError::Executor(format!(
                "cannot start shard {id}: {e}"
            ))));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, shard_main(id, shared, tcp, ready, requests));
}

/// What a shard's connections share: its id and its registry.
pub(crate) struct ShardCtx {
    pub id: usize,
    pub registry: Rc<registry::Registry>,
    /// The shard's metrics handle (empty without `--bind-metrics`).
    pub metrics: metrics::ShardMetrics,
}

/// Connections alive on a shard, and a wake-up when the last one ends.
#[derive(Default)]
pub(crate) struct Live {
    count: Cell<usize>,
    zero: tokio::sync::Notify,
}

/// Holds one place in [`Live`] while a connection runs.
pub(crate) struct LiveGuard(Rc<Live>);

impl Live {
    pub fn enter(self: &Rc<Self>) -> LiveGuard {
        self.count.set(self.count.get() + 1);
        LiveGuard(self.clone())
    }

    async fn drained(&self) {
        while self.count.get() > 0 {
            self.zero.notified().await;
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let n = self.0.count.get().saturating_sub(1);
        self.0.count.set(n);
        if n == 0 {
            self.0.zero.notify_waiters();
        }
    }
}

async fn shard_main(
    id: usize,
    shared: Arc<Shared>,
    tcp: Vec<SocketAddr>,
    ready: mpsc::Sender<Result<(), StartError>>,
    requests: tokio::sync::mpsc::Receiver<registry::ShardRequest>,
) {
    let listeners = match listen::bind_shard(id, &tcp, &shared.config.unix) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Every label set of this shard, resolved once.
    let metrics = shared
        .metrics
        .as_ref()
        .map_or_else(metrics::ShardMetrics::disabled, |m| m.shard(id));
    let _ = ready.send(Ok(()));
    let stop = shared.stop.clone();
    let live = Rc::new(Live::default());
    let ctx = Rc::new(ShardCtx {
        id,
        registry: registry::Registry::new(id),
        metrics,
    });
    // The control socket's questions, answered between connections' work.
    let answering = tokio::task::spawn_local(ctx.registry.clone().serve(requests));
    let mut tasks = Vec::new();
    for l in listeners {
        let shared = shared.clone();
        let stop = stop.clone();
        let live = live.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::task::spawn_local(async move {
            listen::accept_loop(l, shared, stop, live, ctx).await;
        }));
    }
    stop.cancelled().await;
    for t in tasks {
        let _ = t.await;
    }
    // Connections say goodbye (each bounded by its own timeout), then the
    // shard ends; whatever is left is dropped with the runtime.
    let _ = tokio::time::timeout(STOP_GRACE, live.drained()).await;
    answering.abort();
    tracing::debug!(shard = id, left = live.count.get(), "shard stopped");
}
