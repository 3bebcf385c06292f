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
pub mod cluster;
mod conn;
pub mod control;
mod front;
mod health;
pub mod inherit;
mod listen;
pub mod metrics;
pub mod preflight;
pub mod pump;
pub mod registry;
pub mod reload;
mod stream;
pub mod takeover;
mod upstream;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use blocking::{Blocking, BlockingPool};

use crate::auth::{AuthChain, SharedThrottle, ThrottleConfig, Transport};
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
    #[error("system-wide mode: {0}")]
    SystemWide(String),
    #[error("cluster view: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("--proxy-video-encoders: {0}")]
    Video(String),
    #[error("{listener} authentication: {source}")]
    Auth {
        listener: &'static str,
        #[source]
        source: crate::auth::AuthError,
    },
}

/// What every connection uses (read-only): one generation of the
/// configuration, replaced whole by a reload (`reload.rs`); a connection
/// keeps the one it was accepted with.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub hostname: String,
    pub uid: u32,
    /// Socket dirs searched for sessions: the configured ones, then xpra's
    /// defaults for this user.
    pub socket_dirs: Vec<PathBuf>,
    /// Chooses and opens local sessions: this process's own (the cached
    /// session directory), or in system-wide mode the privileged helper's
    /// (docs/deployment.md).
    pub connector: Arc<dyn crate::sessions::access::SessionConnector>,
    /// Starts sessions on demand (`--proxy-start-sessions=yes`).
    pub launcher: Option<Arc<dyn crate::sessions::access::SessionLauncher>>,
    /// System-wide mode (the helper reaches users' sessions).
    pub system_wide: bool,
    /// Who the proxy is, for the hellos sessions get.
    pub identity: Arc<crate::proxy::Identity>,
    /// The auth chain of each transport.
    pub auth: Vec<(Transport, AuthEntry)>,
    /// TLS configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
    /// Cancelled when the server stops, or earlier, when a new xfwd has
    /// taken the listening sockets over: the accept loops end.
    pub accepting: CancellationToken,
    /// What this node knows of the session hosts' load, for pools: this
    /// node's count (`local_load`), and with a cluster registry every
    /// node's. Kept across reloads.
    pub load: Arc<dyn crate::sessions::balance::LoadView>,
    /// This node's live connections per session host (every shard's).
    pub local_load: Arc<crate::sessions::balance::LocalLoad>,
    /// The pools' hosts that failed lately (passive health).
    pub health: Arc<crate::sessions::balance::PoolHealth>,
    /// The encoder workers, when transcoding is on.
    pub video: Option<Arc<crate::video::workers::Pool>>,
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
        self.tls.clone()
    }
}

/// A running server.
pub struct Server {
    /// The configuration the server started with (its lasting parts, the
    /// stop token and the metrics, are every generation's).
    shared: Arc<Shared>,
    /// Reloads (SIGHUP, the control socket).
    reloader: Arc<reload::Reloader>,
    /// How the control socket reaches the shards.
    control: registry::Shards,
    shards: Vec<std::thread::JoinHandle<()>>,
    pool: Option<BlockingPool>,
    tcp_addrs: Vec<SocketAddr>,
    /// The Unix sockets listened on.
    unix_paths: Vec<PathBuf>,
    /// The Unix socket files removed when the server ends.
    unix_owned: Vec<PathBuf>,
    /// A duplicate of every listening socket (for an upgrade), until the
    /// control socket starts and keeps them in `handover`.
    sockets: Vec<listen::ListenSocket>,
    /// The listening sockets, for a new xfwd that takes over.
    handover: Arc<takeover::Handover>,
    /// The control socket (`xfwd list|info|stop`), when configured.
    control_socket: Option<control::Control>,
    /// The metrics endpoint's thread and address (`--bind-metrics`).
    metrics: Option<(std::thread::JoinHandle<()>, SocketAddr)>,
    /// The cluster view's heartbeat (`--cluster-db`).
    cluster: Option<cluster::Heartbeat>,
    /// The cluster view's parts, until the heartbeat takes them.
    cluster_parts: Option<cluster::Parts>,
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        return format!("xfwd-{}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How [`Server::start_with_options`] starts besides its configuration.
#[derive(Default)]
pub struct StartOptions {
    /// System-wide mode's helper: users' sessions are reached through it.
    pub helper: Option<Arc<crate::sessions::helper::client::HelperClient>>,
    /// Runs once every listener is bound, before anyone is accepted (the
    /// privilege drop); an error stops the server.
    pub before_serving: Option<Box<dyn FnOnce() -> Result<(), String>>>,
}

impl Server {
    /// Checks the machine, binds every listener and starts the shards.
    /// Returns once every shard listens (or with the first failure).
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, inherit::Inherited::none())
    }

    /// As [`Server::start`], with listening sockets handed over (systemd's
    /// socket activation, or the xfwd this one replaces): their addresses
    /// are not bound again, and the default listener (no `--bind-tcp` or
    /// `--bind` given) is not added beside them.
    pub fn start_with(config: Config, inherited: inherit::Inherited) -> Result<Server, StartError> {
        Server::start_with_options(config, inherited, StartOptions::default())
    }

    /// As [`Server::start_with`], with [`StartOptions`].
    pub fn start_with_options(
        mut config: Config,
        inherited: inherit::Inherited,
        options: StartOptions,
    ) -> Result<Server, StartError> {
        preflight::prepare();
        // Looked up once here, not on a shard (a client without a user
        // name is taken as the account xfwd runs as).
        let _ = crate::auth::ids::current_user_name();
        // And the ids xfwd started as (before a system-wide drop).
        let _ = crate::auth::ids::proxy_ids();
        let none_only =
            |c: &[crate::auth::AuthSpec]| c.iter().all(|s| s.kind == crate::auth::ModuleKind::None);
        let plan = listen::plan(&mut config, inherited)?;
        if !plan.tcp_addrs.is_empty() && none_only(&config.tcp_auth) {
            tracing::warn!(
                "TCP listeners use no authentication (--tcp-auth=none): anyone who can reach {:?} can attach to your sessions",
                plan.tcp_addrs
            );
        }
        let listen::Plan {
            bind_tcp: bound,
            bind_unix,
            tcp_addrs,
            unix_paths,
            unix_owned,
            metrics: metrics_listener,
            inherited,
        } = plan;
        let uid = nix::unistd::geteuid().as_raw();
        let home = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.dir);
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
        // The encoder workers (they find the devices and log what they
        // found); asked for and none usable is an error, not a silent
        // relay.
        let video = if config.video.is_enabled() {
            let cfg = crate::video::workers::PoolConfig {
                cpu_workers: config.video_workers,
                ..crate::video::workers::PoolConfig::default()
            };
            Some(
                crate::video::workers::Pool::start(&config.video, cfg)
                    .map_err(|e| StartError::Video(e.to_string()))?,
            )
        } else {
            None
        };
        let pool = BlockingPool::new(BLOCKING_THREADS, BLOCKING_QUEUE)
            .map_err(|e| StartError::Executor(format!("cannot start the blocking pool: {e}")))?;
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
            let mut m = metrics::Metrics::new(&modules);
            if config.cluster.is_some() {
                m.enable_cluster();
            }
            if let Some(v) = &video {
                m.enable_video(v.clone());
            }
            Arc::new(m)
        });
        let stop = CancellationToken::new();
        let local_load = crate::sessions::balance::LocalLoad::new();
        let cluster_parts = config.cluster.as_ref().map(|_| cluster::Parts::new());
        let lasting = reload::Lasting {
            identity: Arc::new(crate::proxy::Identity {
                hostname: hostname.clone(),
                uuid: random_uuid(),
                start_time: std::time::SystemTime::now(),
                started: std::time::Instant::now(),
                shards: config.cores,
            }),
            hostname,
            uid,
            home,
            throttle: SharedThrottle::new(ThrottleConfig::default()),
            admission: admission::Admission::new(
                config.max_handshakes,
                config.max_handshakes_per_ip,
            ),
            blocking: pool.handle(),
            helper: options.helper,
            directory: Arc::default(),
            accepting: stop.child_token(),
            stop,
            metrics,
            // With --cluster-db: every live node's counts and sticky hosts
            // around this node's own.
            load: match &cluster_parts {
                Some(p) => p.load(local_load.clone()),
                None => local_load.clone(),
            },
            local_load,
            health: Arc::default(),
            video,
        };
        let shared = Arc::new(reload::build(config, &lasting)?);
        let current = Arc::new(reload::Current::new(shared.clone()));
        let reloader = Arc::new(reload::Reloader::new(current.clone(), lasting));
        let control_socket = match &shared.config.control_socket {
            Some(p) => Some(control::Control::bind(p)?),
            None => None,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<listen::ListenSocket>, StartError>>();
        let mut shards = Vec::new();
        let n = shared.config.cores;
        let cpus = allowed_cpus();
        let mut spawn_error = None;
        let mut control = registry::Shards::default();
        // Opened once every shard listens (and the privileges are dropped).
        let open = CancellationToken::new();
        for id in 0..n {
            let current = current.clone();
            let ready = ready_tx.clone();
            let (tx, requests) = tokio::sync::mpsc::channel(registry::SHARD_QUEUE);
            control.push(tx);
            let sockets = ShardListen {
                tcp: bound.clone(),
                unix: bind_unix.clone(),
                inherited: inherited.clone(),
                shards: n,
                open: open.clone(),
            };
            let cpu = cpus.get(id % cpus.len().max(1)).copied();
            let spawned = std::thread::Builder::new()
                .name(format!("xfwd-shard-{id}"))
                .spawn(move || run_shard(id, cpu, current, sockets, ready, requests));
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
        if spawn_error.is_none() {
            if let Err(e) = health::spawn(current.clone(), shared.stop.clone()) {
                spawn_error = Some(StartError::Executor(format!(
                    "cannot start the pool health check: {e}"
                )));
            }
        }
        let mut server = Server {
            shared,
            reloader,
            control,
            shards,
            pool: Some(pool),
            tcp_addrs,
            unix_paths,
            unix_owned,
            sockets: Vec::new(),
            handover: Arc::new(takeover::Handover::new(
                Vec::new(),
                CancellationToken::new(),
            )),
            control_socket,
            metrics: None,
            cluster: None,
            cluster_parts,
        };
        let endpoint = metrics_listener.zip(server.shared.metrics.clone());
        if let (Some(((l, addr), m)), true) = (endpoint, spawn_error.is_none()) {
            if let Ok(copy) = l.try_clone() {
                server.sockets.push(listen::ListenSocket::Metrics(copy));
            }
            match metrics::spawn_endpoint(l, m, server.shared.accepting.clone()) {
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
                Ok(Ok(copies)) => server.sockets.extend(copies),
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
        if let Some(f) = options.before_serving {
            if let Err(e) = f() {
                server.stop_and_join();
                return Err(StartError::SystemWide(e));
            }
        }
        // Registered before anyone is served: a live node of the same
        // name elsewhere stops this start.
        if let Err(e) = server.start_cluster(inherited.origin == inherit::Origin::Xfwd) {
            server.stop_and_join();
            return Err(e);
        }
        open.cancel();
        if let Err(e) = server.start_control() {
            server.stop_and_join();
            return Err(e.into());
        }
        if let Some((_, addr)) = &server.metrics {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        if !inherited.is_empty() {
            let from = match inherited.origin {
                inherit::Origin::Systemd => "systemd",
                inherit::Origin::Xfwd => "the previous xfwd",
            };
            tracing::info!(tcp = ?inherited.tcp_addrs(), unix = ?inherited.unix_paths(), "listening sockets from {from}");
        }
        tracing::info!(shards = n, tcp = ?server.tcp_addrs, unix = ?server.unix_paths, "xfwd listening");
        server.advise_without_sessions();
        Ok(server)
    }

    /// Says how to start a session when no local one is there yet (remote
    /// targets of auth data are not known here). Runs once at start.
    fn advise_without_sessions(&self) {
        let sh = &self.shared;
        if sh.system_wide {
            return;
        }
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

    /// Registers this node in the cluster database and starts the
    /// heartbeat (`--cluster-db`), once every shard listens.
    fn start_cluster(&mut self, takeover: bool) -> Result<(), StartError> {
        let Some(cfg) = self.shared.config.cluster.clone() else {
            return Ok(());
        };
        let listeners: Vec<String> = self.tcp_addrs.iter().map(|a| format!("tcp:{a}")).collect();
        let me = crate::cluster::db::Me::new(&cfg.node, &self.shared.hostname, &listeners);
        let client = cluster::register(&cfg, &me, takeover)?;
        let metrics = self.shared.metrics.as_ref().and_then(|m| m.cluster());
        let parts = self
            .cluster_parts
            .take()
            .unwrap_or_else(cluster::Parts::new);
        let hb = cluster::Heartbeat::start(&cfg, me, client, self.control.clone(), metrics, parts)
            .map_err(StartError::Executor)?;
        self.cluster = Some(hb);
        Ok(())
    }

    /// Starts the control socket's thread, once every shard listens.
    fn start_control(&mut self) -> Result<(), control::ControlError> {
        let sockets = std::mem::take(&mut self.sockets)
            .into_iter()
            .filter_map(|s| s.describe(&self.unix_owned))
            .collect();
        self.handover = Arc::new(takeover::Handover::new(
            sockets,
            self.shared.accepting.clone(),
        ));
        let Some(c) = self.control_socket.as_mut() else {
            return Ok(());
        };
        let listeners = self
            .tcp_addrs
            .iter()
            .map(|a| format!("tcp:{a}"))
            .chain(
                self.unix_paths
                    .iter()
                    .map(|p| format!("unix:{}", p.display())),
            )
            .collect();
        let facts = control::Facts {
            uuid: self.shared.identity.uuid.clone(),
            hostname: self.shared.identity.hostname.clone(),
            shards: self.shards.len(),
            listeners,
            started: std::time::Instant::now(),
            started_wall: std::time::SystemTime::now(),
        };
        c.start(
            facts,
            self.control.clone(),
            self.reloader.clone(),
            self.handover.clone(),
            self.cluster.as_ref().map(cluster::Heartbeat::access),
            &self.shared.stop,
        )
    }

    /// Where the control socket listens, when there is one.
    pub fn control_socket(&self) -> Option<&std::path::Path> {
        self.shared.config.control_socket.as_deref()
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

    /// Where [`Server::reload`] reads the configuration again (without
    /// one, it builds the running configuration again: certificates and
    /// auth files are read again).
    pub fn set_config_source(&self, source: reload::ConfigSource) {
        self.reloader.set_source(source);
    }

    /// Reloads the configuration (SIGHUP, `xfwd reload`): connections
    /// accepted from now on use the new one; established connections are
    /// not touched. On error nothing changed.
    pub fn reload(&self) -> Result<(), reload::ReloadError> {
        self.reloader.reload()
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
        // Unregistered first: the other nodes stop listing this one now,
        // not at its expiry.
        if let Some(hb) = self.cluster.take() {
            hb.shutdown();
        }
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
        // The encoder workers, once no shard hands them jobs.
        if let Some(video) = &self.shared.video {
            video.shutdown();
        }
        // After a takeover the Unix socket files are the new xfwd's.
        if !self.handover.handed_over() {
            for p in &self.unix_owned {
                let _ = std::fs::remove_file(p);
            }
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
    current: Arc<reload::Current>,
    sockets: ShardListen,
    ready: mpsc::Sender<Result<Vec<listen::ListenSocket>, StartError>>,
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
    local.block_on(&rt, shard_main(id, current, sockets, ready, requests));
}

/// What a shard listens on: addresses it binds itself, and inherited
/// sockets (dealt out by [`inherit::Inherited::for_shard`]).
struct ShardListen {
    tcp: Vec<SocketAddr>,
    unix: Vec<PathBuf>,
    inherited: Arc<inherit::Inherited>,
    shards: usize,
    /// Accepting starts when this is cancelled.
    open: CancellationToken,
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
    current: Arc<reload::Current>,
    sockets: ShardListen,
    ready: mpsc::Sender<Result<Vec<listen::ListenSocket>, StartError>>,
    requests: tokio::sync::mpsc::Receiver<registry::ShardRequest>,
) {
    let bound = listen::bind_shard(
        id,
        sockets.shards,
        &sockets.tcp,
        &sockets.unix,
        &sockets.inherited,
    );
    let open = sockets.open.clone();
    drop(sockets);
    let listeners = match bound {
        Ok(b) => {
            let _ = ready.send(Ok(b.copies));
            b.listeners
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Nobody is accepted before every shard listens and the server is
    // what it will serve as (system-wide mode drops root first).
    let stop_early = current.get().stop.clone();
    tokio::select! {
        () = open.cancelled() => {}
        () = stop_early.cancelled() => return,
    }
    let shared = current.get();
    // Every label set of this shard, resolved once.
    let metrics = shared
        .metrics
        .as_ref()
        .map_or_else(metrics::ShardMetrics::disabled, |m| m.shard(id));
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
        let current = current.clone();
        let stop = stop.clone();
        let accepting = shared.accepting.clone();
        let live = live.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::task::spawn_local(async move {
            listen::accept_loop(l, current, accepting, stop, live, ctx).await;
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
