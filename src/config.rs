//! Command-line options for serving, and the typed [`Config`] they become.
//!
//! Option names and the `MODULE[,key=value...]` auth syntax follow xpra's,
//! so an xpra user's habits carry over.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthSpec, AuthSpecError};

pub mod file;

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
    #[error("--{option}={value}: expected HOST:PORT")]
    BadAddress { option: &'static str, value: String },
    #[error("--{option}: {error}")]
    BadOption { option: &'static str, error: String },
    #[error("--proxy-protocol-from: {0}")]
    BadCidr(String),
    #[error("--bind-ssl and --bind-wss need --ssl-cert")]
    NoCertificate,
    #[error("--cores must be at least 1")]
    NoCores,
    #[error("--bind-metrics={0}: an xpra listener is there too; give the metrics their own port")]
    MetricsOnListener(SocketAddr),
    #[error("--session-pool: {0}")]
    Pool(#[from] crate::sessions::balance::PoolError),
}

impl ConfigError {
    /// The option the error is about (its long name), when there is one.
    pub fn option(&self) -> Option<&'static str> {
        match self {
            ConfigError::BadTcpAddress(_) => Some("bind-tcp"),
            ConfigError::Auth { option, .. }
            | ConfigError::BadAddress { option, .. }
            | ConfigError::BadOption { option, .. } => Some(option),
            ConfigError::BadCidr(_) => Some("proxy-protocol-from"),
            ConfigError::NoCertificate => None,
            ConfigError::NoCores => Some("cores"),
            ConfigError::MetricsOnListener(_) => Some("bind-metrics"),
            ConfigError::Pool(_) => Some("session-pool"),
        }
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

/// A yes/no option (xpra's spelling; `true`/`false`, `on`/`off` and `1`/`0`
/// too, and a boolean in a config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    #[value(alias = "true", alias = "on", alias = "1")]
    Yes,
    #[value(alias = "false", alias = "off", alias = "0")]
    No,
}

impl YesNo {
    pub fn is_yes(self) -> bool {
        self == YesNo::Yes
    }
}

impl<'de> Deserialize<'de> for YesNo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = YesNo;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("yes or no")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<YesNo, E> {
                Ok(if b { YesNo::Yes } else { YesNo::No })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<YesNo, E> {
                YesNo::from_str(s, true)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where xfwd listens when no `--bind-tcp` or `--bind` is given:
/// loopback only.
pub const DEFAULT_TCP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    14501,
));

/// The defaults of the options below that have one (`into_config` applies
/// them: an option left out stays `None`, so that a config file's value is
/// not taken for a flag; see [`file`]).
pub const DEFAULT_HANDSHAKE_TIMEOUT: u64 = 15;
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 256;

/// Serving options, as on the command line, and as in a `--config` file
/// (the same names: see [`file`] and docs/configuration.md). A list given
/// by a file may also be one string; comma-separated options split it.
#[derive(Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServeArgs {
    /// Listen for xpra clients on a TCP address (HOST:PORT); repeatable.
    /// Default, when no listener is given: 127.0.0.1:14501.
    #[arg(long = "bind-tcp", value_name = "HOST:PORT")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub bind_tcp: Vec<String>,
    /// Listen on a Unix socket at PATH; repeatable.
    #[arg(long = "bind", value_name = "PATH")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub bind: Vec<PathBuf>,
    /// Listen for TLS clients (xpra's ssl://); every TCP port also sniffs
    /// TLS, WebSocket and HTTP, as xpra's do.
    #[arg(long = "bind-ssl", value_name = "HOST:PORT")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub bind_ssl: Vec<String>,
    /// Listen for WebSocket clients (ws://, the HTML5 client).
    #[arg(long = "bind-ws", value_name = "HOST:PORT")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub bind_ws: Vec<String>,
    /// Listen for WebSocket-over-TLS clients (wss://).
    #[arg(long = "bind-wss", value_name = "HOST:PORT")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub bind_wss: Vec<String>,
    /// TLS certificate chain (PEM; may also hold the key).
    #[arg(long = "ssl-cert", value_name = "FILE")]
    pub ssl_cert: Option<PathBuf>,
    /// TLS private key (PEM), when not in --ssl-cert.
    #[arg(long = "ssl-key", value_name = "FILE")]
    pub ssl_key: Option<PathBuf>,
    /// Verify client certificates against these CAs (file or directory).
    #[arg(long = "ssl-ca-certs", value_name = "FILE")]
    pub ssl_ca_certs: Option<PathBuf>,
    /// Verify the certificates of `ssl://` session targets: required
    /// (default, against the system's CAs or --ssl-server-ca-certs) or none
    /// (self-signed test sessions only).
    #[arg(long = "ssl-server-verify-mode", value_name = "MODE")]
    pub ssl_server_verify_mode: Option<String>,
    /// CAs that sign the certificates of `ssl://` session targets.
    #[arg(long = "ssl-server-ca-certs", value_name = "FILE")]
    pub ssl_server_ca_certs: Option<PathBuf>,
    /// Serve these files (e.g. /usr/share/xpra/www) to HTTP requests.
    #[arg(long = "html", value_name = "DIR")]
    pub html: Option<PathBuf>,
    /// Pass non-xpra traffic (HTTP not served here, anything else) to this
    /// server.
    #[arg(long = "tcp-proxy", value_name = "HOST:PORT")]
    pub tcp_proxy: Option<String>,
    /// Accept PROXY protocol v1/v2 headers from these fronts.
    #[arg(
        long = "proxy-protocol-from",
        value_name = "CIDR[,CIDR...]",
        value_delimiter = ','
    )]
    #[serde(deserialize_with = "file::comma_list")]
    pub proxy_protocol_from: Vec<String>,
    /// Authentication for every listener without its own:
    /// MODULE[,key=value...] (allow, none, reject, fail, password, file,
    /// multifile, sqlite, mysql, postgresql, sql, env, exec, pam, peercred,
    /// ldap, ldap3, kerberos-password, hosts, otp, http-header:
    /// docs/auth.md); repeat to chain modules (all must pass).
    #[arg(long = "auth", value_name = "MODULE")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub auth: Vec<String>,
    /// Authentication for TCP listeners (repeatable).
    #[arg(long = "tcp-auth", value_name = "MODULE")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub tcp_auth: Vec<String>,
    /// Authentication for Unix-socket listeners (repeatable).
    #[arg(long = "unix-auth", value_name = "MODULE")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub unix_auth: Vec<String>,
    /// Authentication for TLS connections (default: --tcp-auth's).
    #[arg(long = "ssl-auth", value_name = "MODULE")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub ssl_auth: Vec<String>,
    /// Authentication for WebSocket connections (default: --tcp-auth's).
    #[arg(long = "ws-auth", value_name = "MODULE")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub ws_auth: Vec<String>,
    /// Authentication for WebSocket-over-TLS connections (default:
    /// --ssl-auth's).
    #[arg(long = "wss-auth", value_name = "MODULE")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub wss_auth: Vec<String>,
    /// Extra directory to look for local sessions in; repeatable.
    #[arg(long = "socket-dir", value_name = "DIR")]
    #[serde(deserialize_with = "file::one_or_many")]
    pub socket_dir: Vec<PathBuf>,
    /// Replaces xpra's default session directories (`/run/user/UID/xpra`,
    /// `/run/xpra`, `~/.xpra`) with this comma-separated list.
    #[arg(
        long = "socket-dirs",
        value_name = "DIR[,DIR...]",
        value_delimiter = ','
    )]
    #[serde(deserialize_with = "file::some_comma_list")]
    pub socket_dirs: Option<Vec<PathBuf>>,
    /// A pool of session hosts, NAME=URI[,URI...] (repeatable; URIs as in
    /// a user's `displays`: tcp://HOST:PORT/, ssl://, ws://, wss://,
    /// socket:PATH). A user whose auth data names `pool:NAME` goes to one
    /// of its hosts: their sticky host, else the one with the fewest
    /// connections; a host that fails is skipped for 10 to 60 s. In a
    /// config file also a table: `[session-pool]` with `NAME = [URI, ...]`.
    /// See docs/scale-out.md.
    #[arg(long = "session-pool", value_name = "NAME=URI,...")]
    #[serde(alias = "session-pools", deserialize_with = "file::pools")]
    pub session_pool: Vec<String>,
    /// Seconds between active health checks of the pools' hosts (a TCP
    /// connect to each, on a thread of its own; a host that fails is
    /// skipped like one that failed a user's connection). 0: off, only
    /// users' connections tell. Default 0.
    #[arg(long = "pool-health-interval", value_name = "SECS")]
    pub pool_health_interval: Option<u64>,
    /// Start a session (`xpra start`, as the user xfwd runs as) for a
    /// client that asks for one (`xpra start tcp://...`), or that finds no
    /// session to attach to: yes or no. Default no.
    #[arg(long = "proxy-start-sessions", value_name = "yes|no", value_enum)]
    pub proxy_start_sessions: Option<YesNo>,
    /// Started as root: serve every user (system-wide mode: the shards
    /// drop to --uid/--gid, a privileged helper reaches each user's
    /// sessions as that user; nothing is forwarded as root). yes or no;
    /// default yes when started as root. `no` serves root's own sessions
    /// as root (containers where everything runs as root). See
    /// docs/deployment.md.
    #[arg(long = "system-wide", value_name = "yes|no", value_enum)]
    pub system_wide: Option<YesNo>,
    /// System-wide mode: the user the shards run as (a name or a uid;
    /// never root). Default nobody.
    #[arg(long = "uid", value_name = "USER")]
    pub uid: Option<String>,
    /// System-wide mode: the group the shards run as (a name or a gid;
    /// never root). Default: nobody's group, else nogroup.
    #[arg(long = "gid", value_name = "GROUP")]
    pub gid: Option<String>,
    /// An extra argument for every `xpra start` xfwd runs (e.g.
    /// --pulseaudio=no); repeatable.
    #[arg(
        long = "proxy-start-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    #[serde(deserialize_with = "file::one_or_many")]
    pub proxy_start_arg: Vec<String>,
    /// Transcode sessions' raw pixels to h264 for clients that decode it
    /// (xpra's option name): auto (every NVENC device found, and the
    /// CPU), none, or a list of nvenc, x264 in order of preference. The
    /// session is asked for raw rgb only; windows that change often reach
    /// the client as h264, the others lossless. Default none. See
    /// docs/video.md.
    #[arg(long = "proxy-video-encoders", value_name = "auto|none|nvenc,x264")]
    pub proxy_video_encoders: Option<String>,
    /// CPU encoder threads (x264) when transcoding; 0: half the CPUs, at
    /// least 1. Default 0.
    #[arg(long = "proxy-video-workers", value_name = "N")]
    pub proxy_video_workers: Option<usize>,
    /// Number of shards (one pinned executor each); default: the CPUs available.
    #[arg(long = "cores", value_name = "N")]
    pub cores: Option<usize>,
    /// Seconds a client has to complete the handshake. Default 15.
    #[arg(long = "handshake-timeout", value_name = "SECS")]
    pub handshake_timeout: Option<u64>,
    /// Connections that may be in their handshake (not yet authenticated
    /// and relaying) at once, over every listener; more are closed at
    /// accept. Default 1024.
    #[arg(long = "max-handshakes", value_name = "N")]
    pub max_handshakes: Option<usize>,
    /// The same, per client address (not counted for the trusted fronts of
    /// --proxy-protocol-from: every client behind them shares their
    /// address). Default 256.
    #[arg(long = "max-handshakes-per-ip", value_name = "N")]
    pub max_handshakes_per_ip: Option<usize>,
    /// Seconds between the proxy's pings to each side of a relayed
    /// connection (0: no pings, and no dead-peer check). Default 5.
    #[arg(long = "ping-interval", value_name = "SECS")]
    pub ping_interval: Option<u64>,
    /// A side that has answered none of the proxy's pings for this many
    /// seconds is taken as dead: the connection ends and the other side is
    /// told why. Default 60.
    #[arg(long = "ping-timeout", value_name = "SECS")]
    pub ping_timeout: Option<u64>,
    /// The control socket for `xfwd list|info|stop` (mode 0600, owner
    /// only), or `none`. Default: `control-PID.sock` in
    /// $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), else in
    /// $XDG_RUNTIME_DIR/xfwd, or /run/xfwd for root.
    #[arg(long = "control-socket", value_name = "PATH")]
    pub control_socket: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (its own
    /// thread; not on the xpra ports).
    #[arg(long = "bind-metrics", value_name = "HOST:PORT")]
    pub bind_metrics: Option<String>,
    /// The cluster view (issue 16, docs/scale-out.md): register this node
    /// and its live connections in this PostgreSQL database
    /// (postgres://USER:PASSWORD@HOST:PORT/DB[?sslmode=verify-full&sslrootcert=CA]), for `xfwd list
    /// --cluster`, `xfwd stop --connection NODE/ID` from any node, and
    /// session host pools that count every node's connections. Default: off.
    #[arg(long = "cluster-db", value_name = "URI")]
    pub cluster_db: Option<String>,
    /// This node's name in the cluster view, unique among the live nodes
    /// (a second live node of the same name is refused at start). Default:
    /// the hostname.
    #[arg(long = "node-name", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Seconds between this node's heartbeats to the cluster database.
    /// Default 5.
    #[arg(long = "cluster-heartbeat", value_name = "SECS")]
    pub cluster_heartbeat: Option<u64>,
    /// A node whose last heartbeat is older than this many seconds is taken
    /// as gone (its rows are deleted). Default: 3 heartbeats.
    #[arg(long = "cluster-expiry", value_name = "SECS")]
    pub cluster_expiry: Option<u64>,
    /// Log line format: text or json (colour only when stderr is a
    /// terminal and NO_COLOR is unset). Default text.
    #[arg(long = "log-format", value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub tcp: Vec<SocketAddr>,
    /// `tcp` is only the default listener (no listener was given): it is
    /// left out when listening sockets are inherited (socket activation).
    pub default_listener: bool,
    pub unix: Vec<PathBuf>,
    /// The auth chain of each listener kind (never empty: `none` when no
    /// module is given).
    pub tcp_auth: Vec<AuthSpec>,
    pub unix_auth: Vec<AuthSpec>,
    pub ssl_auth: Vec<AuthSpec>,
    pub ws_auth: Vec<AuthSpec>,
    pub wss_auth: Vec<AuthSpec>,
    /// TLS settings, when --ssl-cert is given.
    pub tls: Option<crate::transport::tls::ServerTls>,
    /// TLS settings for `ssl://` session targets.
    pub upstream_tls: crate::transport::tls::ClientTls,
    pub html: Option<PathBuf>,
    pub tcp_proxy: Option<SocketAddr>,
    pub proxy_protocol_from: Vec<crate::transport::proxy_protocol::Cidr>,
    /// Directories searched for local sessions first (`--socket-dir`).
    pub socket_dirs: Vec<PathBuf>,
    /// Replaces xpra's default session directories when set
    /// (`--socket-dirs`).
    pub default_socket_dirs: Option<Vec<PathBuf>>,
    pub cores: usize,
    /// Start sessions on demand (`--proxy-start-sessions`).
    pub start_sessions: bool,
    /// Extra arguments of the `xpra start` runs (`--proxy-start-arg`).
    pub start_args: Vec<String>,
    /// `--system-wide`: `None` is the default (yes when started as root).
    pub system_wide: Option<bool>,
    /// `--uid` / `--gid`, as given (resolved when system-wide mode starts).
    pub run_as_user: Option<String>,
    pub run_as_group: Option<String>,
    /// The listeners that authenticate with the built-in default (no
    /// `--auth`, nor an option of their own): `none`, or in system-wide
    /// mode PAM ([`Config::system_wide_defaults`]).
    pub defaulted_auth: Vec<crate::auth::Transport>,
    pub handshake_timeout: Duration,
    /// Connections in their handshake at once (all, and per address).
    pub max_handshakes: usize,
    pub max_handshakes_per_ip: usize,
    /// The proxy's pings while relaying.
    pub ping: crate::proxy::link::PingConfig,
    /// Where the control socket listens (`None`: no control socket).
    pub control_socket: Option<PathBuf>,
    /// Where Prometheus metrics are served (`--bind-metrics`).
    pub metrics: Option<SocketAddr>,
    /// Session host pools (`--session-pool`), by name.
    pub pools: Vec<crate::sessions::balance::SessionPool>,
    /// Active health checks of the pools' hosts (zero: off).
    pub pool_health_interval: Duration,
    /// The cluster view (`--cluster-db`), when on.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Video transcoding (`--proxy-video-encoders`): off by default.
    pub video: crate::video::EncoderChoice,
    /// CPU encoder threads (`--proxy-video-workers`; 0: automatic).
    pub video_workers: usize,
}

impl Config {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&crate::sessions::balance::SessionPool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

impl Config {
    /// System-wide mode's defaults: users log in with their system
    /// accounts (xpra's system proxy: `sys`, PAM) where no auth module was
    /// given. Without PAM in this build they stay `none`, which identifies
    /// nobody (every client is then refused, as xpra's proxy as root does):
    /// the warning says so.
    pub fn system_wide_defaults(&mut self) -> Option<String> {
        use crate::auth::{ModuleKind, Transport};
        if self.defaulted_auth.is_empty() {
            return None;
        }
        if !ModuleKind::Pam.is_built() {
            return Some(
                "system-wide mode: this build has no PAM (cargo feature pam), so listeners without an auth module use none, which identifies no user: every client is refused (cannot run proxy instances as root). Give --auth (pam, peercred, multifile, sqlite, or a module with uid=/gid=), or --system-wide=no".into(),
            );
        }
        let pam = vec![AuthSpec::of(ModuleKind::Pam)];
        for t in std::mem::take(&mut self.defaulted_auth) {
            let chain = match t {
                Transport::Tcp => &mut self.tcp_auth,
                Transport::Unix => &mut self.unix_auth,
                Transport::Ssl => &mut self.ssl_auth,
                Transport::Ws => &mut self.ws_auth,
                Transport::Wss => &mut self.wss_auth,
            };
            chain.clone_from(&pam);
        }
        None
    }
}

/// Where the control socket of this process listens by default:
/// `$RUNTIME_DIRECTORY/control-PID.sock` under systemd's
/// `RuntimeDirectory=` (`/run/xfwd` in the shipped unit), else
/// `$XDG_RUNTIME_DIR/xfwd/control-PID.sock`, or `/run/xfwd/...` for root
/// (and when no runtime dir is set).
pub fn default_control_dir() -> PathBuf {
    // systemd's RuntimeDirectory= (a unit's own /run/NAME), when set.
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| v.into_string().ok())
        .and_then(|v| v.split(':').next().map(PathBuf::from))
        .filter(|p| p.is_absolute())
    {
        return dir;
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() && !nix::unistd::geteuid().is_root() => {
            PathBuf::from(d).join("xfwd")
        }
        _ if nix::unistd::geteuid().is_root() => PathBuf::from("/run/xfwd"),
        _ => std::env::temp_dir().join(format!("xfwd-{}", nix::unistd::geteuid())),
    }
}

fn parse_auth(option: &'static str, values: &[String]) -> Result<Vec<AuthSpec>, ConfigError> {
    AuthSpec::parse_chain(values).map_err(|source| ConfigError::Auth { option, source })
}

impl ServeArgs {
    /// Validates the options.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let resolve = |option: &'static str, a: &String| {
            a.to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| ConfigError::BadAddress {
                    option,
                    value: a.clone(),
                })
        };
        let mut tcp = Vec::new();
        for a in &self.bind_tcp {
            let addr = a
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| ConfigError::BadTcpAddress(a.clone()))?;
            tcp.push(addr);
        }
        for (option, list) in [
            ("bind-ssl", &self.bind_ssl),
            ("bind-ws", &self.bind_ws),
            ("bind-wss", &self.bind_wss),
        ] {
            for a in list {
                tcp.push(resolve(option, a)?);
            }
        }
        if (!self.bind_ssl.is_empty() || !self.bind_wss.is_empty()) && self.ssl_cert.is_none() {
            return Err(ConfigError::NoCertificate);
        }
        let tls = self.ssl_cert.as_ref().map(|cert| {
            let mut t = crate::transport::tls::ServerTls::new(cert);
            if let Some(k) = &self.ssl_key {
                t = t.key(k);
            }
            if let Some(ca) = &self.ssl_ca_certs {
                t = t.ca_certs(ca, crate::transport::tls::VerifyMode::Optional);
            }
            t
        });
        let mut upstream_tls = match &self.ssl_server_ca_certs {
            Some(ca) => crate::transport::tls::ClientTls::with_ca(ca),
            None => crate::transport::tls::ClientTls::system(),
        };
        upstream_tls.verify = self
            .ssl_server_verify_mode
            .as_deref()
            .unwrap_or("required")
            .parse()
            .map_err(
                |e: crate::transport::tls::TlsError| ConfigError::BadOption {
                    option: "ssl-server-verify-mode",
                    error: e.to_string(),
                },
            )?;
        let tcp_proxy = match &self.tcp_proxy {
            Some(a) => Some(resolve("tcp-proxy", a)?),
            None => None,
        };
        let proxy_protocol_from = self
            .proxy_protocol_from
            .iter()
            .map(|c| crate::transport::proxy_protocol::Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::BadCidr(e.to_string()))?;
        let default_listener = tcp.is_empty() && self.bind.is_empty();
        if default_listener {
            tcp.push(DEFAULT_TCP);
        }
        let metrics = match &self.bind_metrics {
            Some(a) => Some(resolve("bind-metrics", a)?),
            None => None,
        };
        if let Some(m) = metrics.filter(|m| m.port() != 0) {
            let clash = |t: &SocketAddr| {
                t.port() == m.port()
                    && (t.ip() == m.ip() || t.ip().is_unspecified() || m.ip().is_unspecified())
            };
            if tcp.iter().any(clash) {
                return Err(ConfigError::MetricsOnListener(m));
            }
        }
        let mut default_auth = parse_auth("auth", &self.auth)?;
        let auth_given = !default_auth.is_empty();
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
        let or = |v: Vec<AuthSpec>, d: &Vec<AuthSpec>| if v.is_empty() { d.clone() } else { v };
        let ssl_auth = or(parse_auth("ssl-auth", &self.ssl_auth)?, &tcp_auth);
        let ws_auth = or(parse_auth("ws-auth", &self.ws_auth)?, &tcp_auth);
        let wss_auth = or(parse_auth("wss-auth", &self.wss_auth)?, &ssl_auth);
        // The listeners whose chain is the built-in default (nothing given
        // for them, nor for those they inherit from).
        let defaulted_auth = if auth_given {
            Vec::new()
        } else {
            use crate::auth::Transport;
            let tcp = self.tcp_auth.is_empty();
            let ssl = tcp && self.ssl_auth.is_empty();
            [
                (Transport::Tcp, tcp),
                (Transport::Unix, self.unix_auth.is_empty()),
                (Transport::Ssl, ssl),
                (Transport::Ws, tcp && self.ws_auth.is_empty()),
                (Transport::Wss, ssl && self.wss_auth.is_empty()),
            ]
            .into_iter()
            .filter_map(|(t, d)| d.then_some(t))
            .collect()
        };
        let video = match self.proxy_video_encoders.as_deref() {
            None => crate::video::EncoderChoice::None,
            Some(v) => v.parse().map_err(|e: crate::video::choice::ChoiceError| {
                ConfigError::BadOption {
                    option: "proxy-video-encoders",
                    error: e.to_string(),
                }
            })?,
        };
        let video_workers = self.proxy_video_workers.unwrap_or(0);
        if video_workers > 256 {
            return Err(ConfigError::BadOption {
                option: "proxy-video-workers",
                error: format!("{video_workers} threads: at most 256"),
            });
        }
        let ping = {
            let d = crate::proxy::link::PingConfig::default();
            let interval = self.ping_interval.map_or(d.interval, Duration::from_secs);
            let timeout = self.ping_timeout.map_or(d.timeout, Duration::from_secs);
            if !interval.is_zero() && timeout <= interval {
                return Err(ConfigError::BadOption {
                    option: "ping-timeout",
                    error: format!(
                        "{} s must be longer than --ping-interval ({} s)",
                        timeout.as_secs(),
                        interval.as_secs()
                    ),
                });
            }
            crate::proxy::link::PingConfig { interval, timeout }
        };
        let control_socket = match self.control_socket.as_deref() {
            Some("none") => None,
            Some("") => {
                return Err(ConfigError::BadOption {
                    option: "control-socket",
                    error: "expected a path or none".into(),
                })
            }
            Some(p) => Some(PathBuf::from(p)),
            None => {
                Some(default_control_dir().join(format!("control-{}.sock", std::process::id())))
            }
        };
        let pools = crate::sessions::balance::parse_pools(&self.session_pool)?;
        let cluster = self.cluster_config()?;
        let cores = match self.cores {
            Some(0) => return Err(ConfigError::NoCores),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Config {
            tcp,
            default_listener,
            unix: self.bind,
            tcp_auth,
            unix_auth,
            ssl_auth,
            ws_auth,
            wss_auth,
            tls,
            upstream_tls,
            html: self.html,
            tcp_proxy,
            proxy_protocol_from,
            socket_dirs: self.socket_dir,
            default_socket_dirs: self.socket_dirs,
            cores,
            start_sessions: self.proxy_start_sessions.is_some_and(YesNo::is_yes),
            start_args: self.proxy_start_arg,
            system_wide: self.system_wide.map(YesNo::is_yes),
            run_as_user: self.uid,
            run_as_group: self.gid,
            defaulted_auth,
            handshake_timeout: Duration::from_secs(
                self.handshake_timeout
                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
                    .max(1),
            ),
            max_handshakes: self.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES).max(1),
            max_handshakes_per_ip: self
                .max_handshakes_per_ip
                .unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_IP)
                .max(1),
            ping,
            control_socket,
            metrics,
            pools,
            pool_health_interval: Duration::from_secs(self.pool_health_interval.unwrap_or(0)),
            cluster,
            video,
            video_workers,
        })
    }

    /// `--cluster-db` and its options, checked.
    fn cluster_config(&self) -> Result<Option<crate::cluster::ClusterConfig>, ConfigError> {
        let bad = |option, error: String| ConfigError::BadOption { option, error };
        let Some(db) = self.cluster_db.as_deref().filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let node = self
            .node_name
            .clone()
            .unwrap_or_else(crate::cluster::default_node_name);
        crate::cluster::check_node_name(&node).map_err(|e| bad("node-name", e))?;
        crate::cluster::db::client_config(db, &node)
            .map_err(|e| bad("cluster-db", e.to_string()))?;
        let heartbeat = self
            .cluster_heartbeat
            .unwrap_or(crate::cluster::DEFAULT_HEARTBEAT);
        if heartbeat == 0 || heartbeat > 3600 {
            return Err(bad(
                "cluster-heartbeat",
                "expected 1 to 3600 seconds".into(),
            ));
        }
        let expiry = self
            .cluster_expiry
            .unwrap_or(heartbeat * crate::cluster::EXPIRY_HEARTBEATS);
        if expiry <= heartbeat || expiry > 86400 {
            return Err(bad(
                "cluster-expiry",
                format!(
                    "{expiry} s: expected more than --cluster-heartbeat ({heartbeat} s), at most 86400"
                ),
            ));
        }
        Ok(Some(crate::cluster::ClusterConfig {
            db: db.to_owned(),
            node,
            heartbeat: Duration::from_secs(heartbeat),
            expiry: Duration::from_secs(expiry),
        }))
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
    fn proxy_start_sessions_is_yes_or_no() {
        assert!(!ServeArgs::default().into_config().unwrap().start_sessions);
        for (text, yes) in [
            ("proxy-start-sessions = \"yes\"", true),
            ("proxy-start-sessions = true", true),
            ("proxy-start-sessions = \"off\"", false),
            ("proxy-start-sessions = false", false),
        ] {
            let args: ServeArgs = toml::from_str(text).unwrap();
            assert_eq!(args.into_config().unwrap().start_sessions, yes, "{text}");
        }
        let e = toml::from_str::<ServeArgs>("proxy-start-sessions = \"maybe\"").unwrap_err();
        assert!(e.to_string().contains("yes or no"), "{e}");
        assert_eq!(YesNo::from_str("on", true), Ok(YesNo::Yes));
        let args: ServeArgs =
            toml::from_str("proxy-start-arg = [\"--pulseaudio=no\", \"--mdns=no\"]").unwrap();
        assert_eq!(
            args.into_config().unwrap().start_args,
            vec!["--pulseaudio=no", "--mdns=no"]
        );
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

    #[test]
    fn cluster_options_are_checked() {
        assert_eq!(ServeArgs::default().into_config().unwrap().cluster, None);
        let args = |db: &str, node: Option<&str>, hb: Option<u64>, exp: Option<u64>| ServeArgs {
            cluster_db: Some(db.into()),
            node_name: node.map(String::from),
            cluster_heartbeat: hb,
            cluster_expiry: exp,
            ..ServeArgs::default()
        };
        let c = args("postgres://u@db/x", Some("a"), None, None)
            .into_config()
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.node, "a");
        assert_eq!(c.heartbeat, Duration::from_secs(5));
        assert_eq!(c.expiry, Duration::from_secs(15));
        let c = args("postgres://u@db/x", None, Some(2), None)
            .into_config()
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.node, crate::cluster::default_node_name());
        assert_eq!(c.expiry, Duration::from_secs(6));
        for (a, opt) in [
            (
                args("postgres://u@db/x", Some("a/b"), None, None),
                "node-name",
            ),
            (
                args("postgres://u@db/x?nope=1", None, None, None),
                "cluster-db",
            ),
            (
                args("postgres://u@db/x", None, Some(0), None),
                "cluster-heartbeat",
            ),
            (
                args("postgres://u@db/x", None, Some(5), Some(5)),
                "cluster-expiry",
            ),
        ] {
            let e = a.into_config().unwrap_err();
            assert_eq!(e.option(), Some(opt), "{e}");
        }
        let t: ServeArgs = toml::from_str(
            "cluster-db = \"postgres://db/x\"\nnode-name = \"n1\"\ncluster-heartbeat = 1",
        )
        .unwrap();
        let c = t.into_config().unwrap().cluster.unwrap();
        assert_eq!((c.node.as_str(), c.expiry.as_secs()), ("n1", 3));
    }

    #[test]
    fn metrics_address_is_checked() {
        let c = ServeArgs {
            bind_metrics: Some("127.0.0.1:9464".into()),
            ..ServeArgs::default()
        }
        .into_config()
        .unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(ServeArgs::default().into_config().unwrap().metrics, None);
        let e = ServeArgs {
            bind_metrics: Some("nowhere".into()),
            ..ServeArgs::default()
        }
        .into_config()
        .unwrap_err();
        assert_eq!(e.to_string(), "--bind-metrics=nowhere: expected HOST:PORT");
        // On an xpra port (the default one, or a wildcard listener's).
        for (tcp, metrics) in [
            (None, "127.0.0.1:14501"),
            (Some("0.0.0.0:9000"), "127.0.0.1:9000"),
            (Some("127.0.0.1:9000"), "0.0.0.0:9000"),
        ] {
            let e = ServeArgs {
                bind_tcp: tcp.into_iter().map(String::from).collect(),
                bind_metrics: Some(metrics.into()),
                ..ServeArgs::default()
            }
            .into_config()
            .unwrap_err();
            assert!(
                e.to_string().contains("give the metrics their own port"),
                "{e}"
            );
        }
        // Port 0 picks a free port: never a clash.
        assert!(ServeArgs {
            bind_tcp: vec!["127.0.0.1:0".into()],
            bind_metrics: Some("127.0.0.1:0".into()),
            ..ServeArgs::default()
        }
        .into_config()
        .is_ok());
    }
}
