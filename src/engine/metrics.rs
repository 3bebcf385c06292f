//! Prometheus metrics (`--bind-metrics=HOST:PORT`, docs/metrics.md).
//!
//! One [`Metrics`] holds the registry. Each shard takes a [`ShardMetrics`]
//! handle when it starts: every label set it can need is resolved there,
//! once, into clones of the counters, so counting on a shard is one relaxed
//! atomic add (no map lookup, no lock). Relayed bytes and packets are added
//! once per written batch (`pump::Tally::add`), not per packet.
//!
//! Without `--bind-metrics` there is no registry and no thread: every
//! handle is empty and each counting point is one branch.
//!
//! The scrape endpoint runs on its own thread (a tokio current-thread
//! runtime, never a shard): `GET /metrics` only, the request head bounded
//! in size and read under a deadline, a few scrapes at a time.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{self, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::auth::ModuleKind;
use crate::proxy::{ConnError, Side};

/// How a connection's handshake ended (label `result` of
/// `xfwd_handshakes_total`). Every accepted connection ends its handshake
/// exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    /// Authenticated, routed, relaying.
    Relayed,
    /// Refused by authentication.
    Refused,
    /// No session for the client.
    Route,
    /// The session could not be reached, or failed its handshake.
    Upstream,
    Timeout,
    /// Not xpra (and not served), or the client broke the protocol.
    Protocol,
    /// The client left during the handshake.
    Gone,
    /// The proxy stopped.
    Stopping,
    /// The blocking pool was full.
    Busy,
    /// Closed at accept: `--max-handshakes` or `--max-handshakes-per-ip`.
    Limited,
    /// Not xpra, and served: an HTTP reply (`--html`, errors), or passed to
    /// `--tcp-proxy`.
    Served,
    /// A one-shot request (`xpra version|id|info`), answered or refused.
    Request,
    /// Stopped by an administrator (`xfwd stop --connection`).
    Admin,
}

impl HandshakeResult {
    pub const ALL: [HandshakeResult; 13] = [
        HandshakeResult::Relayed,
        HandshakeResult::Refused,
        HandshakeResult::Route,
        HandshakeResult::Upstream,
        HandshakeResult::Timeout,
        HandshakeResult::Protocol,
        HandshakeResult::Gone,
        HandshakeResult::Stopping,
        HandshakeResult::Busy,
        HandshakeResult::Limited,
        HandshakeResult::Served,
        HandshakeResult::Request,
        HandshakeResult::Admin,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            HandshakeResult::Relayed => "relayed",
            HandshakeResult::Refused => "refused",
            HandshakeResult::Route => "route",
            HandshakeResult::Upstream => "upstream",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::Protocol => "protocol",
            HandshakeResult::Gone => "gone",
            HandshakeResult::Stopping => "stopping",
            HandshakeResult::Busy => "busy",
            HandshakeResult::Limited => "limited",
            HandshakeResult::Served => "served",
            HandshakeResult::Request => "request",
            HandshakeResult::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<&ConnError> for HandshakeResult {
    fn from(e: &ConnError) -> Self {
        match e {
            ConnError::Protocol(_) => HandshakeResult::Protocol,
            ConnError::Refused { .. } => HandshakeResult::Refused,
            ConnError::Route(_) | ConnError::NoSessions => HandshakeResult::Route,
            // A start that failed: the session could not be had.
            ConnError::Start(_) => HandshakeResult::Upstream,
            ConnError::Upstream { .. } | ConnError::PoolDown(_) => HandshakeResult::Upstream,
            ConnError::Timeout => HandshakeResult::Timeout,
            ConnError::Stopping => HandshakeResult::Stopping,
            ConnError::Busy(_) => HandshakeResult::Busy,
            ConnError::Gone => HandshakeResult::Gone,
            ConnError::Request(_) => HandshakeResult::Request,
            ConnError::AdminStop => HandshakeResult::Admin,
        }
    }
}

/// A relayed direction (label `direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDirection {
    ClientToSession,
    SessionToClient,
}

impl RelayDirection {
    pub fn name(self) -> &'static str {
        match self {
            RelayDirection::ClientToSession => "client_to_session",
            RelayDirection::SessionToClient => "session_to_client",
        }
    }
}

/// The label value of a refusal without a module.
const NO_MODULE: &str = "-";

/// A counter alone on its cache line: the relay counters of different
/// shards are written by different threads all the time, and must not
/// share a line (their `Arc`s are small allocations, often adjacent).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PaddedU64(AtomicU64);

impl counter::Atomic<u64> for PaddedU64 {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    fn inc_by(&self, v: u64) -> u64 {
        self.0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

type HotCounter = Counter<u64, PaddedU64>;
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// The cluster view's gauges (`--cluster-db`), written by the heartbeat
/// thread.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    nodes: Gauge,
    connections: Family<NodeLabels, Gauge>,
    db_up: Gauge,
    /// The node labels of the last update (those gone are removed).
    seen: std::sync::Mutex<Vec<String>>,
}

impl ClusterMetrics {
    /// After a heartbeat: the live nodes and their connections.
    pub fn update(&self, per_node: &[(String, usize)]) {
        self.db_up.set(1);
        self.nodes
            .set(i64::try_from(per_node.len()).unwrap_or(i64::MAX));
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for old in seen.iter() {
            if !per_node.iter().any(|(n, _)| n == old) {
                self.connections.remove(&NodeLabels { node: old.clone() });
            }
        }
        seen.clear();
        for (node, n) in per_node {
            self.connections
                .get_or_create(&NodeLabels { node: node.clone() })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
            seen.push(node.clone());
        }
    }

    /// The database could not be reached (the last counts stay).
    pub fn db_down(&self) {
        self.db_up.set(0);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    shard: u32,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    shard: u32,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    shard: u32,
    module: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    shard: u32,
    side: &'static str,
}

/// Handshake times: a local session answers in a millisecond or two; an
/// auth module, a throttled retry or a remote session take seconds.
const HANDSHAKE_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Ping round trips: a LAN to a slow WAN link.
const RTT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn handshake_histogram() -> Histogram {
    Histogram::new(HANDSHAKE_BUCKETS)
}

fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

/// The registry and every metric family.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    open: Family<ShardLabels, Gauge>,
    accepted: Family<ShardLabels, Counter>,
    handshakes: Family<ResultLabels, Counter>,
    handshake_time: HistogramFamily<ShardLabels>,
    bytes: Family<DirectionLabels, HotCounter>,
    packets: Family<DirectionLabels, HotCounter>,
    auth_failures: Family<ModuleLabels, Counter>,
    rtt: HistogramFamily<SideLabels>,
    pool_hosts_down: Family<PoolLabels, Gauge>,
    /// The modules of the configured auth chains (their failure series are
    /// there from the start, at 0).
    modules: Vec<ModuleKind>,
    /// With `--cluster-db`.
    cluster: Option<Arc<ClusterMetrics>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
    encoder: String,
    device: String,
}

/// The encoder workers' series, made at scrape time from
/// [`crate::video::workers::Pool::stats`] (the workers count with their own
/// atomics; nothing is kept here).
#[derive(Debug)]
struct VideoCollector(Arc<crate::video::workers::Pool>);

impl prometheus_client::collector::Collector for VideoCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let stats = self.0.stats();
        let labels = |s: &crate::video::workers::WorkerStats| WorkerLabels {
            worker: s.index.to_string(),
            encoder: s.encoder.to_owned(),
            device: s.device.clone(),
        };
        type Get = fn(&crate::video::workers::WorkerStats) -> u64;
        let counters: [(&str, &str, Option<Unit>, Get); 5] = [
            (
                "video_jobs",
                "Jobs answered by each encoder worker",
                None,
                |s| s.jobs,
            ),
            (
                "video_frames",
                "Video frames encoded by each worker",
                None,
                |s| s.frames,
            ),
            (
                "video_errors",
                "Jobs each worker answered with an error",
                None,
                |s| s.errors,
            ),
            (
                "video_in",
                "Pixel bytes each worker took from sessions' draws",
                Some(Unit::Bytes),
                |s| s.bytes_in,
            ),
            (
                "video_out",
                "Bytes each worker made (bitstream and lossless)",
                Some(Unit::Bytes),
                |s| s.bytes_out,
            ),
        ];
        for (name, help, unit, get) in &counters {
            let mut family =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for s in &stats {
                ConstCounter::new(get(s)).encode(family.encode_family(&labels(s))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "video_encode",
            "Time each worker spent applying draws and encoding",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for s in &stats {
            ConstCounter::new(s.encode_time.as_secs_f64())
                .encode(family.encode_family(&labels(s))?)?;
        }
        type GetG = fn(&crate::video::workers::WorkerStats) -> i64;
        let gauges: [(&str, &str, GetG); 4] = [
            (
                "video_queue_depth",
                "Jobs waiting in each worker's queue",
                |s| i64::try_from(s.queue_depth).unwrap_or(i64::MAX),
            ),
            (
                "video_contexts",
                "Encoder contexts open on each worker",
                |s| i64::try_from(s.contexts).unwrap_or(i64::MAX),
            ),
            (
                "video_worker_up",
                "Whether each encoder worker runs (1) or died (0)",
                |s| i64::from(s.alive),
            ),
            (
                "video_frames_per_second",
                "Frames each worker encoded per second, lately",
                |s| s.fps.round() as i64,
            ),
        ];
        for (name, help, get) in &gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &stats {
                ConstGauge::new(get(s)).encode(family.encode_family(&labels(s))?)?;
            }
        }
        Ok(())
    }
}

/// The scrape formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (the default; what `promtool check metrics`
    /// reads).
    Prometheus,
    /// OpenMetrics 1.0 text (when the scraper's `Accept` asks for it, as
    /// Prometheus does).
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// A registry with every family; `modules`: those of the configured
    /// auth chains.
    pub fn new(modules: &[ModuleKind]) -> Metrics {
        let mut registry = Registry::with_prefix("xfwd");
        let open = Family::default();
        let accepted = Family::default();
        let handshakes = Family::default();
        let handshake_time: HistogramFamily<ShardLabels> =
            Family::new_with_constructor(handshake_histogram);
        let bytes = Family::default();
        let packets = Family::default();
        let auth_failures = Family::default();
        let rtt: HistogramFamily<SideLabels> = Family::new_with_constructor(rtt_histogram);
        let pool_hosts_down = Family::default();
        registry.register(
            "connections_open",
            "Client connections open (accepted and not closed yet)",
            open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            accepted.clone(),
        );
        registry.register(
            "handshakes",
            "Handshakes ended, by result (relayed, or why not)",
            handshakes.clone(),
        );
        registry.register_with_unit(
            "handshake_duration",
            "Time from accept to relaying, of handshakes that reached relaying",
            Unit::Seconds,
            handshake_time.clone(),
        );
        registry.register_with_unit(
            "relayed",
            "Bytes relayed and written, by direction",
            Unit::Bytes,
            bytes.clone(),
        );
        registry.register(
            "relayed_packets",
            "Packets relayed and written, by direction",
            packets.clone(),
        );
        registry.register(
            "auth_failures",
            "Connections refused by authentication, by the module that refused",
            auth_failures.clone(),
        );
        registry.register_with_unit(
            "rtt",
            "Ping round-trip times of the proxy's own pings, by side",
            Unit::Seconds,
            rtt.clone(),
        );
        registry.register(
            "pool_hosts_down",
            "Hosts of a session host pool passed over as down, as of the pool's last connection attempt",
            pool_hosts_down.clone(),
        );
        let mut modules = modules.to_vec();
        modules.sort_by_key(|m| m.name());
        modules.dedup();
        Metrics {
            registry,
            open,
            accepted,
            handshakes,
            handshake_time,
            bytes,
            packets,
            auth_failures,
            rtt,
            pool_hosts_down,
            modules,
            cluster: None,
        }
    }

    /// `pool` has `down` hosts passed over now (pool names are the
    /// configuration's: a bounded set).
    pub fn pool_hosts_down(&self, pool: &str, down: usize) {
        self.pool_hosts_down
            .get_or_create(&PoolLabels {
                pool: pool.to_owned(),
            })
            .set(i64::try_from(down).unwrap_or(i64::MAX));
    }

    /// Adds the cluster view's families (`xfwd_cluster_nodes`,
    /// `xfwd_cluster_connections{node}`, `xfwd_cluster_db_up`).
    pub fn enable_cluster(&mut self) {
        let c = Arc::new(ClusterMetrics::default());
        self.registry.register(
            "cluster_nodes",
            "Live nodes in the cluster database (this one included), at the last heartbeat",
            c.nodes.clone(),
        );
        self.registry.register(
            "cluster_connections",
            "Connections of each live node, at the last heartbeat",
            c.connections.clone(),
        );
        self.registry.register(
            "cluster_db_up",
            "Whether the last heartbeat reached the cluster database (1) or not (0)",
            c.db_up.clone(),
        );
        self.cluster = Some(c);
    }

    /// Adds the encoder workers' families (`xfwd_video_*{worker, encoder,
    /// device}`), read from the pool at each scrape.
    pub fn enable_video(&mut self, pool: Arc<crate::video::workers::Pool>) {
        self.registry
            .register_collector(Box::new(VideoCollector(pool)));
    }

    /// The cluster view's gauges, when enabled.
    pub fn cluster(&self) -> Option<Arc<ClusterMetrics>> {
        self.cluster.clone()
    }

    /// The handle of shard `id`: every label set resolved now.
    pub fn shard(self: &Arc<Self>, id: usize) -> ShardMetrics {
        let shard = u32::try_from(id).unwrap_or(u32::MAX);
        let s = ShardLabels { shard };
        let result = |r: HandshakeResult| {
            self.handshakes.get_or_create_owned(&ResultLabels {
                shard,
                result: r.name(),
            })
        };
        let dir = |f: &Family<DirectionLabels, HotCounter>, d: RelayDirection| {
            f.get_or_create_owned(&DirectionLabels {
                shard,
                direction: d.name(),
            })
        };
        let side = |side: &'static str| self.rtt.get_or_create_owned(&SideLabels { shard, side });
        let relay = |d| RelayCounters {
            bytes: dir(&self.bytes, d),
            packets: dir(&self.packets, d),
        };
        ShardMetrics(Some(Arc::new(Handles {
            metrics: self.clone(),
            shard,
            open: self.open.get_or_create_owned(&s),
            accepted: self.accepted.get_or_create_owned(&s),
            handshakes: HandshakeResult::ALL.map(result),
            handshake_time: self.handshake_time.get_or_create_owned(&s),
            c2s: relay(RelayDirection::ClientToSession),
            s2c: relay(RelayDirection::SessionToClient),
            auth_failures: self
                .modules
                .iter()
                .map(|m| {
                    let labels = ModuleLabels {
                        shard,
                        module: m.name(),
                    };
                    (*m, self.auth_failures.get_or_create_owned(&labels))
                })
                .collect(),
            rtt_client: side("client"),
            rtt_session: side("session"),
        })))
    }

    /// The text of a scrape.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }
}

/// One direction's relay counters (clones of the shard's series).
#[derive(Debug, Clone)]
pub struct RelayCounters {
    bytes: HotCounter,
    packets: HotCounter,
}

impl RelayCounters {
    /// One written batch.
    #[inline]
    pub fn add(&self, bytes: u64, packets: u64) {
        self.bytes.inc_by(bytes);
        self.packets.inc_by(packets);
    }
}

/// What a shard counts with, resolved at shard start.
#[derive(Debug)]
struct Handles {
    /// For series made on demand (a refusal by a module no chain names).
    metrics: Arc<Metrics>,
    shard: u32,
    open: Gauge,
    accepted: Counter,
    handshakes: [Counter; HandshakeResult::ALL.len()],
    handshake_time: Histogram,
    c2s: RelayCounters,
    s2c: RelayCounters,
    auth_failures: Vec<(ModuleKind, Counter)>,
    rtt_client: Histogram,
    rtt_session: Histogram,
}

/// A shard's handle on the metrics; empty without `--bind-metrics` (then
/// every method does nothing).
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics(Option<Arc<Handles>>);

impl ShardMetrics {
    /// The handle of a server without metrics.
    pub fn disabled() -> ShardMetrics {
        ShardMetrics(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// A connection was accepted.
    pub fn accepted(&self) {
        if let Some(h) = &self.0 {
            h.accepted.inc();
        }
    }

    /// A connection is open until the guard is dropped.
    pub fn open(&self) -> OpenGuard {
        OpenGuard(self.0.as_ref().map(|h| {
            h.open.inc();
            h.open.clone()
        }))
    }

    /// A handshake ended; `took`: accept to relaying, for relayed ones.
    pub fn handshake_ended(&self, result: HandshakeResult, took: Option<Duration>) {
        if let Some(h) = &self.0 {
            h.handshakes[result.index()].inc();
            if let Some(t) = took {
                h.handshake_time.observe(t.as_secs_f64());
            }
        }
    }

    /// Authentication refused a connection; `module`: the one that did.
    pub fn auth_failure(&self, module: Option<ModuleKind>) {
        let Some(h) = &self.0 else { return };
        if let Some((_, c)) = module.and_then(|m| h.auth_failures.iter().find(|(k, _)| *k == m)) {
            c.inc();
            return;
        }
        // Not a module of the configured chains (or none): rare, looked up.
        let labels = ModuleLabels {
            shard: h.shard,
            module: module.map_or(NO_MODULE, ModuleKind::name),
        };
        h.metrics.auth_failures.get_or_create(&labels).inc();
    }

    /// The counters of one relayed direction, for `pump::Tally`.
    pub fn relay(&self, d: RelayDirection) -> Option<RelayCounters> {
        self.0.as_ref().map(|h| match d {
            RelayDirection::ClientToSession => h.c2s.clone(),
            RelayDirection::SessionToClient => h.s2c.clone(),
        })
    }

    /// The pumps' counters of a connection: (client to session, session to
    /// client).
    pub fn relay_counters(&self) -> (Option<RelayCounters>, Option<RelayCounters>) {
        (
            self.relay(RelayDirection::ClientToSession),
            self.relay(RelayDirection::SessionToClient),
        )
    }

    /// One ping round trip to the client or to the session (the proxy's
    /// own pings). `Side::Proxy` has no round trip: ignored.
    pub fn observe_rtt(&self, side: Side, rtt: Duration) {
        let Some(h) = &self.0 else { return };
        let histogram = match side {
            Side::Client => &h.rtt_client,
            Side::Session => &h.rtt_session,
            Side::Proxy => return,
        };
        histogram.observe(rtt.as_secs_f64());
    }
}

/// Holds one place in `xfwd_connections_open`.
#[derive(Debug)]
pub struct OpenGuard(Option<Gauge>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

/// One connection's handshake, counted once: as relayed (with its time)
/// or as why it ended. Dropped uncounted, it counts as `stopping` (only a
/// stopping shard drops a connection's task).
#[derive(Debug)]
pub struct ConnMetrics {
    shard: ShardMetrics,
    start: Instant,
    done: bool,
}

impl ConnMetrics {
    /// A connection accepted at `start`.
    pub fn new(shard: ShardMetrics, start: Instant) -> ConnMetrics {
        ConnMetrics {
            shard,
            start,
            done: false,
        }
    }

    pub fn shard(&self) -> &ShardMetrics {
        &self.shard
    }

    /// The handshake ended with `result` (the first call counts).
    pub fn ended(&mut self, result: HandshakeResult) {
        if self.done {
            return;
        }
        self.done = true;
        let took = (result == HandshakeResult::Relayed).then(|| self.start.elapsed());
        self.shard.handshake_ended(result, took);
    }

    /// The connection reached relaying.
    pub fn relayed(&mut self) {
        self.ended(HandshakeResult::Relayed);
    }

    /// The core closed the connection: counted by its error (and a refusal
    /// by the module that refused), unless it was relaying.
    pub fn closed(&mut self, error: Option<&ConnError>, answered: bool) {
        if self.done {
            return;
        }
        let result = match error {
            Some(ConnError::Refused { module, .. }) => {
                self.shard.auth_failure(*module);
                HandshakeResult::Refused
            }
            Some(e) => HandshakeResult::from(e),
            None if answered => HandshakeResult::Request,
            None => HandshakeResult::Gone,
        };
        self.ended(result);
    }

    /// The pumps' counters (see [`ShardMetrics::relay_counters`]).
    pub fn relay_counters(&self) -> (Option<RelayCounters>, Option<RelayCounters>) {
        self.shard.relay_counters()
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.ended(HandshakeResult::Stopping);
    }
}

// ---------------------------------------------------------------------------
// The scrape endpoint.

/// The largest request head read; more is refused (431).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Headers parsed in a request; more is refused (431).
const MAX_HEADERS: usize = 32;
/// Time a scraper has to send its request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Time a scraper has to take the answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Scrapes served at once; more are closed at accept.
const MAX_SCRAPES: usize = 8;

/// What a request head asks for, as far as it has come.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// More bytes are needed.
    Partial,
    /// A complete head: the answer's status, and the format for a 200.
    Answer(u16, Option<Format>),
}

/// The request head, read with the front door's bounded HTTP parser
/// (`transport::http`).
fn parse_request(buf: &[u8]) -> Request {
    use crate::transport::http::{self, Method};
    let limits = http::Limits {
        max_head: MAX_REQUEST,
        max_headers: MAX_HEADERS,
    };
    let req = match http::parse_request(buf, &limits) {
        Ok(Some(r)) => r,
        Ok(None) => return Request::Partial,
        Err(e) => return Request::Answer(e.status(), None),
    };
    if req.path() != "/metrics" {
        return Request::Answer(404, None);
    }
    if req.method != Method::Get {
        return Request::Answer(405, None);
    }
    let openmetrics = req
        .headers
        .get_all("accept")
        .any(|v| v.contains("application/openmetrics-text"));
    let format = if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    Request::Answer(200, Some(format))
}

/// The whole answer to a request head.
fn answer(status: u16, format: Option<Format>, metrics: &Metrics) -> Vec<u8> {
    use crate::transport::http::{reason, ResponseHead};
    let (status, content_type, body) = match format.map(|f| (f, metrics.encode(f))) {
        Some((f, Ok(body))) => (status, f.content_type(), body),
        Some((_, Err(_))) => (500, "text/plain; charset=utf-8", "encoding failed\n".into()),
        None => (
            status,
            "text/plain; charset=utf-8",
            format!("{}\n", reason(status)),
        ),
    };
    let mut head = ResponseHead::new(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len().to_string());
    if status == 405 {
        head.push("Allow", "GET");
    }
    let mut out = head.header("Connection", "close").to_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Reads one request head (bounded by [`MAX_REQUEST`]) and answers it.
async fn scrape(mut stream: tokio::net::TcpStream, metrics: &Metrics) {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let room = MAX_REQUEST.saturating_sub(buf.len()).min(chunk.len());
            let n = stream.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Request::Answer(status, format) = parse_request(&buf) {
                return Ok(Some((status, format)));
            }
        }
    };
    let (status, format) = match tokio::time::timeout(READ_DEADLINE, read).await {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None) | Err(_)) => return,
        Err(_) => (408, None),
    };
    let reply = answer(status, format, metrics);
    let _ = tokio::time::timeout(WRITE_DEADLINE, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves scrapes on `listener` (already bound) from a thread of its own
/// until `stop` is cancelled.
pub fn spawn_endpoint(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("xfwd-metrics".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("metrics endpoint: {e}");
                        return;
                    }
                };
                endpoint_loop(listener, metrics, stop).await;
            });
        })
}

async fn endpoint_loop(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let busy = Rc::new(Cell::new(0usize));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                if busy.get() >= MAX_SCRAPES {
                    // A scraper that holds connections open gets no more.
                    drop(stream);
                    continue;
                }
                busy.set(busy.get() + 1);
                let (metrics, busy, stop) = (metrics.clone(), busy.clone(), stop.clone());
                tokio::task::spawn_local(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = scrape(stream, &metrics) => {}
                    }
                    busy.set(busy.get().saturating_sub(1));
                });
            }
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(&[ModuleKind::File, ModuleKind::Reject]))
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| &l[series.len() + 1..])
    }

    #[test]
    fn every_series_is_there_at_zero_from_shard_start() {
        let m = metrics();
        let _s0 = m.shard(0);
        let _s1 = m.shard(1);
        let t = m.encode(Format::Prometheus).unwrap();
        for shard in ["0", "1"] {
            assert_eq!(
                line(&t, &format!("xfwd_connections_open{{shard=\"{shard}\"}}")),
                Some("0"),
                "{t}"
            );
            assert_eq!(
                line(
                    &t,
                    &format!("xfwd_connections_accepted_total{{shard=\"{shard}\"}}")
                ),
                Some("0")
            );
            for r in HandshakeResult::ALL {
                let s = format!(
                    "xfwd_handshakes_total{{shard=\"{shard}\",result=\"{}\"}}",
                    r.name()
                );
                assert_eq!(line(&t, &s), Some("0"), "{s}");
            }
            for d in ["client_to_session", "session_to_client"] {
                let s = format!("xfwd_relayed_bytes_total{{shard=\"{shard}\",direction=\"{d}\"}}");
                assert_eq!(line(&t, &s), Some("0"), "{s}\n{t}");
                let s =
                    format!("xfwd_relayed_packets_total{{shard=\"{shard}\",direction=\"{d}\"}}");
                assert_eq!(line(&t, &s), Some("0"), "{s}");
            }
            for module in ["file", "reject"] {
                let s =
                    format!("xfwd_auth_failures_total{{shard=\"{shard}\",module=\"{module}\"}}");
                assert_eq!(line(&t, &s), Some("0"), "{s}");
            }
        }
        // Modules no chain names have no series.
        assert!(!t.contains("module=\"pam\""));
        assert!(t.contains("# TYPE xfwd_handshake_duration_seconds histogram"));
        assert!(t.contains("# TYPE xfwd_rtt_seconds histogram"));
    }

    #[test]
    fn counting_points_move_their_series_only() {
        let m = metrics();
        let s = m.shard(3);
        let other = m.shard(4);
        s.accepted();
        s.accepted();
        let open = s.open();
        let (up, down) = s.relay_counters();
        let (up, down) = (up.unwrap(), down.unwrap());
        up.add(100, 2);
        up.add(50, 1);
        down.add(7, 1);
        let mut c = ConnMetrics::new(s.clone(), Instant::now());
        c.relayed();
        // Counted once: a later close changes nothing.
        c.closed(Some(&ConnError::Timeout), false);
        drop(c);
        let mut c = ConnMetrics::new(s.clone(), Instant::now());
        c.closed(
            Some(&ConnError::Refused {
                reason: "no".into(),
                delay: Duration::ZERO,
                module: Some(ModuleKind::File),
            }),
            false,
        );
        let mut c = ConnMetrics::new(s.clone(), Instant::now());
        c.closed(
            Some(&ConnError::Refused {
                reason: "no".into(),
                delay: Duration::ZERO,
                module: None,
            }),
            false,
        );
        // Dropped uncounted: the shard stopped under it.
        drop(ConnMetrics::new(s.clone(), Instant::now()));
        s.handshake_ended(HandshakeResult::Limited, None);
        let t = m.encode(Format::Prometheus).unwrap();
        let get = |series: &str| line(&t, series).unwrap_or_else(|| panic!("{series}\n{t}"));
        assert_eq!(get("xfwd_connections_accepted_total{shard=\"3\"}"), "2");
        assert_eq!(get("xfwd_connections_open{shard=\"3\"}"), "1");
        assert_eq!(
            get("xfwd_relayed_bytes_total{shard=\"3\",direction=\"client_to_session\"}"),
            "150"
        );
        assert_eq!(
            get("xfwd_relayed_packets_total{shard=\"3\",direction=\"client_to_session\"}"),
            "3"
        );
        assert_eq!(
            get("xfwd_relayed_bytes_total{shard=\"3\",direction=\"session_to_client\"}"),
            "7"
        );
        assert_eq!(
            get("xfwd_handshakes_total{shard=\"3\",result=\"relayed\"}"),
            "1"
        );
        assert_eq!(
            get("xfwd_handshakes_total{shard=\"3\",result=\"timeout\"}"),
            "0"
        );
        assert_eq!(
            get("xfwd_handshakes_total{shard=\"3\",result=\"refused\"}"),
            "2"
        );
        assert_eq!(
            get("xfwd_handshakes_total{shard=\"3\",result=\"stopping\"}"),
            "1"
        );
        assert_eq!(
            get("xfwd_handshakes_total{shard=\"3\",result=\"limited\"}"),
            "1"
        );
        assert_eq!(
            get("xfwd_auth_failures_total{shard=\"3\",module=\"file\"}"),
            "1"
        );
        // A refusal without a module: its series made on demand.
        assert_eq!(
            get("xfwd_auth_failures_total{shard=\"3\",module=\"-\"}"),
            "1"
        );
        assert_eq!(
            get("xfwd_handshake_duration_seconds_count{shard=\"3\"}"),
            "1"
        );
        // The other shard saw nothing.
        assert_eq!(get("xfwd_connections_accepted_total{shard=\"4\"}"), "0");
        assert_eq!(
            get("xfwd_relayed_bytes_total{shard=\"4\",direction=\"client_to_session\"}"),
            "0"
        );
        drop(open);
        drop(other);
        let t = m.encode(Format::Prometheus).unwrap();
        assert_eq!(line(&t, "xfwd_connections_open{shard=\"3\"}"), Some("0"));
    }

    #[test]
    fn rtt_is_observed_per_side() {
        let m = metrics();
        let s = m.shard(0);
        s.observe_rtt(Side::Client, Duration::from_millis(3));
        s.observe_rtt(Side::Client, Duration::from_millis(300));
        s.observe_rtt(Side::Session, Duration::from_micros(200));
        s.observe_rtt(Side::Proxy, Duration::from_secs(1));
        let t = m.encode(Format::Prometheus).unwrap();
        let get = |series: &str| line(&t, series).unwrap_or_else(|| panic!("{series}\n{t}"));
        assert_eq!(
            get("xfwd_rtt_seconds_count{shard=\"0\",side=\"client\"}"),
            "2"
        );
        assert_eq!(
            get("xfwd_rtt_seconds_count{shard=\"0\",side=\"session\"}"),
            "1"
        );
        assert_eq!(
            get("xfwd_rtt_seconds_bucket{shard=\"0\",side=\"client\",le=\"0.005\"}"),
            "1"
        );
        assert_eq!(
            get("xfwd_rtt_seconds_bucket{shard=\"0\",side=\"client\",le=\"0.5\"}"),
            "2"
        );
        assert_eq!(
            get("xfwd_rtt_seconds_bucket{shard=\"0\",side=\"session\",le=\"0.0005\"}"),
            "1"
        );
        let sum: f64 = get("xfwd_rtt_seconds_sum{shard=\"0\",side=\"client\"}")
            .parse()
            .unwrap();
        assert!((sum - 0.303).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_disabled_handle_counts_nothing_and_costs_little() {
        let s = ShardMetrics::disabled();
        assert!(!s.is_enabled());
        s.accepted();
        drop(s.open());
        s.observe_rtt(Side::Client, Duration::from_millis(1));
        s.auth_failure(Some(ModuleKind::File));
        let (up, _) = s.relay_counters();
        assert!(up.is_none());
        assert_eq!(std::mem::size_of::<ShardMetrics>(), 8);
        assert_eq!(std::mem::size_of::<Option<RelayCounters>>(), 16);
    }

    #[test]
    fn handshake_results_map_every_error() {
        let cases = [
            (ConnError::Protocol("x".into()), "protocol"),
            (
                ConnError::Refused {
                    reason: "x".into(),
                    delay: Duration::ZERO,
                    module: None,
                },
                "refused",
            ),
            (ConnError::Route("x".into()), "route"),
            (
                ConnError::Upstream {
                    target: "t".into(),
                    error: "e".into(),
                },
                "upstream",
            ),
            (ConnError::Timeout, "timeout"),
            (ConnError::Stopping, "stopping"),
            (ConnError::Busy("x".into()), "busy"),
            (ConnError::Gone, "gone"),
            (ConnError::Request("x".into()), "request"),
            (ConnError::AdminStop, "admin"),
        ];
        for (e, name) in cases {
            assert_eq!(HandshakeResult::from(&e).name(), name);
        }
        for (i, r) in HandshakeResult::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn openmetrics_when_asked() {
        let m = metrics();
        let _s = m.shard(0);
        let t = m.encode(Format::OpenMetrics).unwrap();
        assert!(t.ends_with("# EOF\n"));
        assert!(t.contains("# TYPE xfwd_connections_accepted counter"));
        let t = m.encode(Format::Prometheus).unwrap();
        assert!(!t.contains("# EOF"));
        assert!(t.contains("# TYPE xfwd_connections_accepted_total counter"));
    }

    #[test]
    fn requests_are_answered_by_path_and_method() {
        let m = metrics();
        let ok = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request(ok),
            Request::Answer(200, Some(Format::Prometheus))
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Answer(200, Some(Format::Prometheus))
        );
        assert_eq!(
            parse_request(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
            ),
            Request::Answer(200, Some(Format::OpenMetrics))
        );
        assert_eq!(parse_request(&ok[..10]), Request::Partial);
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Answer(404, None)
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Answer(405, None)
        );
        assert_eq!(
            parse_request(b"\x16\x03\x01garbage\r\n\r\n"),
            Request::Answer(400, None)
        );
        // An endless header: refused at the bound, not read on.
        let mut long = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        long.resize(MAX_REQUEST, b'a');
        assert_eq!(parse_request(&long), Request::Answer(431, None));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many), Request::Answer(431, None));

        let reply = String::from_utf8(answer(200, Some(Format::Prometheus), &m)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Type: text/plain; version=0.0.4"));
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let reply = String::from_utf8(answer(405, None, &m)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(reply.contains("Allow: GET\r\n"));
    }

    /// What the handles cost (docs/metrics.md quotes these).
    #[test]
    fn handle_sizes() {
        let handles = std::mem::size_of::<Handles>();
        let relay_counter_alloc = std::mem::size_of::<PaddedU64>();
        eprintln!(
            "Handles {handles} bytes, ShardMetrics {} bytes, ConnMetrics {} bytes, \
             pump::Tally {} bytes, PaddedU64 {relay_counter_alloc} bytes",
            std::mem::size_of::<ShardMetrics>(),
            std::mem::size_of::<ConnMetrics>(),
            std::mem::size_of::<super::super::pump::Tally<'_>>(),
        );
        assert_eq!(relay_counter_alloc, 64);
        assert!(handles < 512, "{handles}");
    }
}
