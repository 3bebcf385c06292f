//! Reloading (SIGHUP, `xfwd reload`): the configuration is read again and
//! becomes a new [`Shared`] for the connections accepted from then on;
//! connections already accepted keep the one they started with, so a
//! reload never touches them.
//!
//! What a reload can change: authentication (the modules, their files and
//! databases: every chain is built again), the TLS certificate and key,
//! `--html`, `--tcp-proxy`, `--proxy-protocol-from`, session directories,
//! timeouts, pings and handshake limits, `ssl://` target verification,
//! session host pools (`--session-pool`: the hosts' counts, health and
//! sticky users carry over).
//! What it cannot (the listening sockets, the number of shards, the control
//! socket, the metrics endpoint, the cluster and video encoder options:
//! [`fixed_changes`]) must stay as it is: a new
//! configuration that changes one of them is refused whole, with the
//! reason, and the running one stays (they change with a restart or an
//! upgrade, `--takeover`). So is one that does not build (a missing
//! certificate, a bad auth module).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use super::blocking::Blocking;
use super::{admission, metrics, AuthEntry, Shared, StartError};
use crate::auth::{AuthChain, AuthPolicy, AuthSpec, SharedThrottle, Transport};
use crate::config::Config;

/// Why a reload did not happen (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Read(String),
    #[error("the new configuration changes {}, which only a restart (or an upgrade, --takeover) can change", .0.join(", "))]
    Fixed(Vec<&'static str>),
    #[error("{0}")]
    Build(#[from] StartError),
}

/// Reads the configuration again (the config file, then the command line
/// given at start); the strings are warnings to log.
pub type ConfigSource = Box<dyn Fn() -> Result<(Config, Vec<String>), String> + Send + Sync>;

/// What stays for the life of the process, whatever is reloaded.
#[derive(Debug, Clone)]
pub(crate) struct Lasting {
    pub hostname: String,
    pub uid: u32,
    pub home: Option<PathBuf>,
    pub identity: Arc<crate::proxy::Identity>,
    pub throttle: SharedThrottle,
    pub admission: Arc<admission::Admission>,
    pub blocking: Blocking,
    /// System-wide mode's helper.
    pub helper: Option<Arc<crate::sessions::helper::client::HelperClient>>,
    /// The session directory, kept across reloads that keep its dirs (its
    /// cache and watches).
    pub directory: Arc<Mutex<Option<Arc<crate::sessions::directory::SessionDirectory>>>>,
    pub stop: tokio_util::sync::CancellationToken,
    pub accepting: tokio_util::sync::CancellationToken,
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// Session host pools: the load seen, this node's counts, the hosts'
    /// health (the pools themselves are configuration: a reload changes
    /// them; counts and health carry over).
    pub load: Arc<dyn crate::sessions::balance::LoadView>,
    pub local_load: Arc<crate::sessions::balance::LocalLoad>,
    pub health: Arc<crate::sessions::balance::PoolHealth>,
    /// The encoder workers (`--proxy-video-encoders`), started once.
    pub video: Option<Arc<crate::video::workers::Pool>>,
}

/// Builds what connections use from `config`.
pub(crate) fn build(config: Config, lasting: &Lasting) -> Result<Shared, StartError> {
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
        Some(t) => Some(t.build().map_err(|e| StartError::Tls(e.to_string()))?),
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
    let mut socket_dirs = config.socket_dirs.clone();
    match &config.default_socket_dirs {
        Some(dirs) => socket_dirs.extend(dirs.iter().cloned()),
        None => socket_dirs.extend(crate::sessions::default_socket_dirs(
            lasting.uid,
            lasting.home.as_deref(),
        )),
    }
    lasting
        .admission
        .set_limits(config.max_handshakes, config.max_handshakes_per_ip);
    let (connector, launcher) = sessions_access(&config, &socket_dirs, lasting);
    let l = lasting.clone();
    Ok(Shared {
        connector,
        launcher,
        system_wide: l.helper.is_some(),
        config,
        hostname: l.hostname,
        uid: l.uid,
        socket_dirs,
        identity: l.identity,
        auth,
        tls,
        html,
        upstream_tls,
        throttle: l.throttle,
        admission: l.admission,
        blocking: l.blocking,
        stop: l.stop,
        accepting: l.accepting,
        metrics: l.metrics,
        load: l.load,
        local_load: l.local_load,
        health: l.health,
        video: l.video,
    })
}

type Access = (
    Arc<dyn crate::sessions::access::SessionConnector>,
    Option<Arc<dyn crate::sessions::access::SessionLauncher>>,
);

/// How this generation reaches local sessions: the helper (system-wide
/// mode), or this process's session directory (the one of the generation
/// before when the dirs are the same) and launcher.
fn sessions_access(config: &Config, socket_dirs: &[PathBuf], lasting: &Lasting) -> Access {
    use crate::sessions::access::{OwnSessions, SessionConnector, SessionLauncher};
    use crate::sessions::directory::SessionDirectory;
    use crate::sessions::launch::DEFAULT_START_TIMEOUT;
    if let Some(client) = &lasting.helper {
        let helper = Arc::new(crate::sessions::helper::client::HelperSessions {
            client: client.clone(),
            start_timeout: DEFAULT_START_TIMEOUT,
        });
        let launcher = config
            .start_sessions
            .then(|| helper.clone() as Arc<dyn SessionLauncher>);
        return (helper as Arc<dyn SessionConnector>, launcher);
    }
    let directory = {
        let mut kept = lasting.directory.lock().unwrap_or_else(|e| e.into_inner());
        match kept.as_ref() {
            Some(d) if d.serves(socket_dirs, &lasting.hostname, lasting.uid) => d.clone(),
            _ => {
                let d = Arc::new(SessionDirectory::new(
                    socket_dirs.to_vec(),
                    lasting.hostname.clone(),
                    lasting.uid,
                ));
                *kept = Some(d.clone());
                d
            }
        }
    };
    let launcher = config.start_sessions.then(|| {
        let mut l = crate::sessions::launch::Launcher::new(
            socket_dirs.to_vec(),
            lasting.hostname.clone(),
            lasting.uid,
        );
        l.extra_args = config.start_args.clone();
        Arc::new(l) as Arc<dyn SessionLauncher>
    });
    (Arc::new(OwnSessions { directory }), launcher)
}

/// The options of `new` that differ from `old` and that a reload cannot
/// change.
pub(crate) fn fixed_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    // The default listener is left out when sockets are inherited: compare
    // what was asked for.
    let asked = |c: &Config| (!c.default_listener).then(|| c.tcp.clone());
    if asked(old) != asked(new) {
        out.push("bind-tcp/bind-ssl/bind-ws/bind-wss");
    }
    if old.unix != new.unix {
        out.push("bind");
    }
    if old.cores != new.cores {
        out.push("cores");
    }
    if old.control_socket != new.control_socket {
        out.push("control-socket");
    }
    if old.metrics != new.metrics {
        out.push("bind-metrics");
    }
    if (old.system_wide, &old.run_as_user, &old.run_as_group)
        != (new.system_wide, &new.run_as_user, &new.run_as_group)
    {
        out.push("system-wide/uid/gid");
    }
    // The heartbeat thread registered the node with these (its name is
    // its identity in the cluster): a restart changes them.
    if old.cluster != new.cluster {
        out.push("cluster-db/node-name/cluster-heartbeat/cluster-expiry");
    }
    // The encoder workers start once, with the devices found then.
    if (&old.video, old.video_workers) != (&new.video, new.video_workers) {
        out.push("proxy-video-encoders/proxy-video-workers");
    }
    out
}

/// What a reload cannot change in system-wide mode besides
/// [`fixed_changes`]: the helper was told the session options once, as
/// root.
pub(crate) fn helper_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if (&old.socket_dirs, &old.default_socket_dirs) != (&new.socket_dirs, &new.default_socket_dirs)
    {
        out.push("socket-dir/socket-dirs");
    }
    if (old.start_sessions, &old.start_args) != (new.start_sessions, &new.start_args) {
        out.push("proxy-start-sessions/proxy-start-arg");
    }
    out
}

/// The configuration new connections get; replaced whole by a reload.
#[derive(Debug)]
pub(crate) struct Current(RwLock<Arc<Shared>>);

impl Current {
    pub fn new(shared: Arc<Shared>) -> Current {
        Current(RwLock::new(shared))
    }

    /// The configuration now (one read lock and a reference count).
    pub fn get(&self) -> Arc<Shared> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, shared: Arc<Shared>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = shared;
    }
}

/// Carries out reloads, one at a time (SIGHUP and the control socket may
/// ask together).
pub(crate) struct Reloader {
    pub current: Arc<Current>,
    lasting: Lasting,
    /// Where the configuration is read again (none: the running one is
    /// built again, which re-reads certificates and auth files).
    source: Mutex<Option<ConfigSource>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(current: Arc<Current>, lasting: Lasting) -> Reloader {
        Reloader {
            current,
            lasting,
            source: Mutex::new(None),
        }
    }

    pub fn set_source(&self, source: ConfigSource) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Reads the configuration again and, if it is valid and changes
    /// nothing that [`fixed_changes`] lists, makes it the one new connections get. Tells
    /// systemd (RELOADING=1, then READY=1) when it runs xfwd.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&reloading);
        let result = self.reload_locked(source.as_ref());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        result
    }

    fn reload_locked(&self, source: Option<&ConfigSource>) -> Result<(), ReloadError> {
        let old = self.current.get();
        let config = match source {
            Some(read) => {
                let (config, warnings) = read().map_err(ReloadError::Read)?;
                for w in warnings {
                    tracing::warn!("reload: {w}");
                }
                config
            }
            None => old.config.clone(),
        };
        let mut fixed = fixed_changes(&old.config, &config);
        if self.lasting.helper.is_some() {
            fixed.extend(helper_changes(&old.config, &config));
        }
        if !fixed.is_empty() {
            return Err(ReloadError::Fixed(fixed));
        }
        // The listeners stay as they are (the default one may have been
        // left out for inherited sockets).
        let mut config = config;
        config.tcp.clone_from(&old.config.tcp);
        let fresh = build(config, &self.lasting)?;
        self.current.set(Arc::new(fresh));
        Ok(())
    }
}
