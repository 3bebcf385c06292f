//! The forwarding engine: one pinned glommio executor ("shard") per core,
//! each with its own SO_REUSEPORT listeners and every connection it
//! accepted. A connection never moves between shards, so shard state needs
//! no locks.
//!
//! Everything glommio-specific lives in this module.
//!
//! Life of a connection (see docs/engine.md): accept -> handshake (hello,
//! auth challenge) -> route (find the session) -> upstream hello -> relay
//! both ways -> close (each side told why).

mod conn;
mod front;
mod handshake;
mod listen;
pub mod preflight;
mod pump;
mod stop;
mod stream;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::auth::{AuthChain, AuthPolicy, AuthSpec, SharedThrottle, ThrottleConfig, Transport};
use crate::config::Config;

pub use listen::ListenerKind;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
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
    /// Identifies this proxy instance (its pings, its info).
    pub uuid: String,
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
    pub stop: AtomicBool,
}

/// One transport's auth chain.
#[derive(Debug, Clone)]
pub(crate) struct AuthEntry {
    pub chain: Arc<AuthChain>,
    /// The chain's modules never block (allow, none, reject, fail): they
    /// run on the shard, saving two thread hand-offs.
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
    shards: Vec<ExecutorJoinHandle<()>>,
    tcp_addrs: Vec<SocketAddr>,
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
        preflight::check()?;
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
            let inline = specs.iter().all(|s| {
                matches!(
                    s.kind,
                    ModuleKind::Allow | ModuleKind::None | ModuleKind::Reject | ModuleKind::Fail
                )
            });
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
        let upstream_tls = config.upstream_tls.build().map_err(|e| e.to_string());
        if let Err(e) = &upstream_tls {
            tracing::debug!("no TLS for ssl:// session targets: {e}");
        }
        let shared = Arc::new(Shared {
            auth,
            tls,
            html,
            upstream_tls,
            throttle: SharedThrottle::new(ThrottleConfig::default()),
            config,
            hostname,
            uid,
            socket_dirs,
            uuid: random_uuid(),
            stop: AtomicBool::new(false),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
        let mut shards = Vec::new();
        let n = shared.config.cores;
        for id in 0..n {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let tcp = tcp_addrs.clone();
            // A short preemption interval: a connection that becomes ready
            // waits at most this long behind busy pumps.
            let builder = LocalExecutorBuilder::new(Placement::Fixed(id % ncpu))
                .name(&format!("xfwd-shard-{id}"))
                .preempt_timer(PREEMPT_TIMER);
            let handle = builder
                .spawn(move || async move { shard_main(id, shared, tcp, ready).await })
                .map_err(|e| {
                    StartError::Executor(preflight::explain_start_error(&e.to_string()))
                })?;
            shards.push(handle);
        }
        drop(ready_tx);
        let server = Server {
            shared,
            shards,
            tcp_addrs,
        };
        for _ in 0..n {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stop_and_join();
                    return Err(e);
                }
                Err(_) => {
                    let e = StartError::Executor(preflight::explain_start_error(
                        "a shard did not start within 10 s",
                    ));
                    server.stop_and_join();
                    return Err(e);
                }
            }
        }
        tracing::info!(shards = n, tcp = ?server.tcp_addrs, unix = ?server.shared.config.unix, "xfwd listening");
        Ok(server)
    }

    /// The TCP addresses listened on (ports resolved when 0 was asked).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
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
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Stops and waits for every shard.
    pub fn stop_and_join(self) {
        self.request_stop();
        self.join();
    }

    /// Waits for every shard to end.
    pub fn join(self) {
        for s in self.shards {
            if let Err(e) = s.join() {
                tracing::error!("shard ended with an error: {e}");
            }
        }
        for p in &self.shared.config.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How often a busy shard lets other tasks run (glommio's default: 100 ms).
const PREEMPT_TIMER: Duration = Duration::from_millis(1);

/// How long connections get to say goodbye when the server stops.
const STOP_GRACE: Duration = Duration::from_secs(3);

async fn shard_main(
    id: usize,
    shared: Arc<Shared>,
    tcp: Vec<SocketAddr>,
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let listeners = match listen::bind_shard(id, &tcp, &shared.config.unix) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let stop = stop::StopSignal::new();
    let live = Rc::new(std::cell::Cell::new(0usize));
    let mut tasks = Vec::new();
    for l in listeners {
        let shared = shared.clone();
        let stop = stop.clone();
        let live = live.clone();
        tasks.push(glommio::spawn_local(async move {
            listen::accept_loop(l, shared, stop, live).await;
        }));
    }
    // Watch the process-wide stop flag.
    while !shared.stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    stop.set();
    for t in tasks {
        t.await;
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while live.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    tracing::debug!(shard = id, left = live.get(), "shard stopped");
}
