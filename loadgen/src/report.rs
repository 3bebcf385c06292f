//! Client statistics: counters, latency histograms, the JSON report and the
//! human table.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};

use crate::chaos::ChaosStats;
use crate::client::ClientConfig;

/// Why a connection failed before (or, for `Lost`, after) its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fail {
    /// Connect failed (refused, unreachable, no such socket).
    Refused,
    /// The server closed with an authentication reason, or we had no
    /// password to give.
    AuthFailed,
    /// No server hello within `--timeout`.
    Timeout,
    /// Closed by the peer during the handshake (with or without a reason).
    Closed,
    /// Bytes that are not xpra's protocol.
    Protocol,
    /// An established connection that ended during the run.
    Lost,
}

impl Fail {
    pub fn name(self) -> &'static str {
        match self {
            Fail::Refused => "refused",
            Fail::AuthFailed => "auth_failed",
            Fail::Timeout => "timeout",
            Fail::Closed => "closed",
            Fail::Protocol => "protocol",
            Fail::Lost => "lost",
        }
    }
}

pub struct Stats {
    pub ok: u64,
    pub failed: BTreeMap<Fail, u64>,
    /// Established connections that ended during the run, and of those
    /// the ones that ended on bytes that are not xpra's protocol.
    pub dropped: u64,
    pub dropped_protocol: u64,
    pub handshake: Histogram<u64>,
    pub rtt: Histogram<u64>,
    pub bytes: u64,
    pub packets: u64,
    pub draws: u64,
    pub lost: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub pings: u64,
    /// `damage-sequence` acks sent.
    pub acks: u64,
    /// Watchdog: stalls counted, and the longest wait for expected data.
    pub stalls: u64,
    pub max_stall: std::time::Duration,
    /// A few distinct error messages with their counts.
    pub reasons: BTreeMap<String, u64>,
    /// `--chaos`: the faults and their outcomes (chaos slots' draws are
    /// counted there, not in `lost` / `reordered` / `corrupt`).
    pub chaos: ChaosStats,
    /// `--video`: frames per coding, pixel bytes, latency.
    pub video: crate::frames::VideoStats,
}

/// A histogram of 1 .. `max` (microseconds, say), 3 significant digits.
#[allow(clippy::expect_used)]
pub fn histogram_up_to(max: u64) -> Histogram<u64> {
    // Low bound 1, high bound at least 2, 3 digits: always valid bounds.
    Histogram::new_with_bounds(1, max.max(2), 3).expect("histogram bounds are valid")
}

/// Latencies: 1 us .. 100 s.
fn histogram() -> Histogram<u64> {
    histogram_up_to(100_000_000)
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            ok: 0,
            failed: BTreeMap::new(),
            dropped: 0,
            dropped_protocol: 0,
            handshake: histogram(),
            rtt: histogram(),
            bytes: 0,
            packets: 0,
            draws: 0,
            lost: 0,
            reordered: 0,
            corrupt: 0,
            pings: 0,
            acks: 0,
            stalls: 0,
            max_stall: std::time::Duration::ZERO,
            reasons: BTreeMap::new(),
            chaos: ChaosStats::default(),
            video: Default::default(),
        }
    }

    pub fn fail(&mut self, kind: Fail, reason: &str) {
        *self.failed.entry(kind).or_default() += 1;
        self.note(&format!("{}: {reason}", kind.name()));
    }

    pub fn note(&mut self, reason: &str) {
        if self.reasons.len() < 16 || self.reasons.contains_key(reason) {
            *self.reasons.entry(reason.to_owned()).or_default() += 1;
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn merge(&mut self, o: &Stats) {
        self.ok += o.ok;
        for (k, v) in &o.failed {
            *self.failed.entry(*k).or_default() += v;
        }
        self.dropped += o.dropped;
        self.dropped_protocol += o.dropped_protocol;
        self.chaos.merge(&o.chaos);
        self.video.merge(&o.video);
        let _ = self.handshake.add(&o.handshake);
        let _ = self.rtt.add(&o.rtt);
        self.bytes += o.bytes;
        self.packets += o.packets;
        self.draws += o.draws;
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.corrupt += o.corrupt;
        self.pings += o.pings;
        self.acks += o.acks;
        self.stalls += o.stalls;
        self.max_stall = self.max_stall.max(o.max_stall);
        for (k, v) in &o.reasons {
            if self.reasons.len() < 16 || self.reasons.contains_key(k) {
                *self.reasons.entry(k.clone()).or_default() += v;
            }
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

fn q(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(p)
    }
}

/// The JSON report (the fields the issue names, plus detail).
pub fn summarize(s: &Stats, cfg: &ClientConfig, duration_s: f64, cpu: (f64, f64)) -> Json {
    let d = duration_s.max(1e-9);
    let failed: serde_json::Map<String, Json> = [
        Fail::Refused,
        Fail::AuthFailed,
        Fail::Timeout,
        Fail::Closed,
        Fail::Protocol,
    ]
    .iter()
    .map(|f| {
        (
            f.name().to_owned(),
            json!(s.failed.get(f).copied().unwrap_or(0)),
        )
    })
    .collect();
    json!({
        "connections_ok": s.ok,
        "connections_failed": s.failed_total(),
        "failures": failed,
        "connections_dropped": s.dropped,
        "dropped_protocol": s.dropped_protocol,
        "handshake_us": {
            "p50": q(&s.handshake, 0.5),
            "p99": q(&s.handshake, 0.99),
            "max": s.handshake.max(),
            "count": s.handshake.len(),
        },
        "handshakes_per_s": s.ok as f64 / d,
        "bytes": s.bytes,
        "bytes_per_s": s.bytes as f64 / d,
        "packets": s.packets,
        "packets_per_s": s.packets as f64 / d,
        "draws": s.draws,
        "rtt_us": {
            "p50": q(&s.rtt, 0.5),
            "p99": q(&s.rtt, 0.99),
            "p999": q(&s.rtt, 0.999),
            "max": s.rtt.max(),
            "count": s.rtt.len(),
        },
        "pings_sent": s.pings,
        "acks_sent": s.acks,
        "stalls": s.stalls,
        "max_stall_ms": s.max_stall.as_millis() as u64,
        "lost": s.lost,
        "reordered": s.reordered,
        "corrupt": s.corrupt,
        "duration_s": duration_s,
        "cpu_user_s": cpu.0,
        "cpu_system_s": cpu.1,
        "cpu_s": cpu.0 + cpu.1,
        "errors": s.reasons,
        "chaos": s.chaos.to_json(),
        "video": if cfg.video { video_json(s, d) } else { Json::Null },
        "config": {
            "connect": match &cfg.target.addr {
                crate::net::Addr::Tcp(a) => format!("{}://{a}", cfg.target.scheme.name()),
                other => other.to_string(),
            },
            "connections": cfg.connections,
            "encoder": cfg.encoder.name(),
            "compress": cfg.compress.name(),
            "threads": cfg.threads,
            "handshake_loop": cfg.handshake_loop,
            "ping_interval_ms": cfg.ping_interval.map(|d| d.as_millis() as u64),
            "read_rate": cfg.read_rate,
            "ack_every": cfg.ack_every,
            "stall_ms": cfg.stall.map(|d| d.as_millis() as u64),
            "reconnect": cfg.reconnect,
            "chaos": chaos_config(cfg),
            "video": cfg.video,
        },
    })
}

/// `--video`: what arrived (the session's side is added by the caller).
fn video_json(s: &Stats, duration_s: f64) -> Json {
    let v = &s.video;
    let frames = v.frames();
    // frames/s over the time frames were arriving (the ramp and the tail
    // without frames do not dilute it), else over the run
    let span = match (v.first, v.last) {
        (Some(a), Some(b)) if b > a && frames > 1 => b.duration_since(a).as_secs_f64(),
        _ => duration_s,
    };
    let per_s = if frames > 1 && span > 0.0 {
        (frames - 1) as f64 / span
    } else {
        frames as f64 / duration_s.max(1e-9)
    };
    json!({
        "frames": frames,
        "frames_per_s": per_s,
        "by_coding": v.by_coding,
        "data_bytes": v.data_bytes,
        "bytes": s.bytes,
        "latency_us": {
            "p50": q(&v.latency_us, 0.5),
            "p99": q(&v.latency_us, 0.99),
            "max": v.latency_us.max(),
            "count": v.latency_us.len(),
        },
        "session": Json::Null,
    })
}

fn chaos_config(cfg: &ClientConfig) -> Json {
    let Some(c) = cfg.chaos.as_ref() else {
        return Json::Null;
    };
    let t = &cfg.chaos_timing;
    json!({
        "rate": c.rate,
        "kinds": c.kinds,
        "seed": cfg.seed,
        "delay_ms": t.delay.as_millis() as u64,
        "pause_ms": t.pause.as_millis() as u64,
        "freeze_ms": t.freeze.as_millis() as u64,
        "wait_ms": t.wait.as_millis() as u64,
    })
}

pub fn rate_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB/s", b / 1e6)
    } else {
        format!("{:.1} kB/s", b / 1e3)
    }
}

fn num(v: &Json, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(0.0)
}

/// The human table printed at the end of a run.
pub fn table(j: &Json) -> String {
    let mut out = String::new();
    let row = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<22} {v}\n"));
    out.push_str("loadgen client\n");
    row(
        &mut out,
        "duration",
        format!("{:.2} s", num(j, &["duration_s"])),
    );
    row(
        &mut out,
        "connections",
        format!(
            "{} ok, {} failed, {} dropped during the run",
            num(j, &["connections_ok"]),
            num(j, &["connections_failed"]),
            num(j, &["connections_dropped"])
        ),
    );
    if num(j, &["connections_failed"]) > 0.0 {
        let f = &j["failures"];
        row(
            &mut out,
            "  failures",
            format!(
                "refused {} auth {} timeout {} closed {} protocol {}",
                num(f, &["refused"]),
                num(f, &["auth_failed"]),
                num(f, &["timeout"]),
                num(f, &["closed"]),
                num(f, &["protocol"])
            ),
        );
    }
    row(
        &mut out,
        "handshake",
        format!(
            "p50 {} us, p99 {} us, max {} us ({:.0}/s)",
            num(j, &["handshake_us", "p50"]),
            num(j, &["handshake_us", "p99"]),
            num(j, &["handshake_us", "max"]),
            num(j, &["handshakes_per_s"])
        ),
    );
    row(&mut out, "throughput", rate_bytes(num(j, &["bytes_per_s"])));
    row(
        &mut out,
        "packets",
        format!(
            "{:.0}/s ({} draws)",
            num(j, &["packets_per_s"]),
            num(j, &["draws"])
        ),
    );
    row(
        &mut out,
        "ping rtt",
        format!(
            "p50 {} us, p99 {} us, p99.9 {} us, max {} us ({} echoes)",
            num(j, &["rtt_us", "p50"]),
            num(j, &["rtt_us", "p99"]),
            num(j, &["rtt_us", "p999"]),
            num(j, &["rtt_us", "max"]),
            num(j, &["rtt_us", "count"])
        ),
    );
    row(
        &mut out,
        "integrity",
        format!(
            "lost {} reordered {} corrupt {}",
            num(j, &["lost"]),
            num(j, &["reordered"]),
            num(j, &["corrupt"])
        ),
    );
    row(
        &mut out,
        "watchdog",
        format!(
            "{} stalls (no data for over {} ms while expecting it), longest wait {} ms",
            num(j, &["stalls"]),
            num(j, &["config", "stall_ms"]),
            num(j, &["max_stall_ms"])
        ),
    );
    if num(j, &["config", "ack_every"]) > 0.0 {
        row(
            &mut out,
            "acks",
            format!(
                "{} damage-sequence sent (every {} draws)",
                num(j, &["acks_sent"]),
                num(j, &["config", "ack_every"])
            ),
        );
    }
    row(
        &mut out,
        "loadgen cpu",
        format!(
            "{:.2} s user, {:.2} s system",
            num(j, &["cpu_user_s"]),
            num(j, &["cpu_system_s"])
        ),
    );
    if j["video"].is_object() {
        let v = &j["video"];
        let codings: Vec<String> = v["by_coding"]
            .as_object()
            .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect())
            .unwrap_or_default();
        row(
            &mut out,
            "video frames",
            format!(
                "{} ({:.1}/s): {}",
                num(v, &["frames"]),
                num(v, &["frames_per_s"]),
                codings.join(", ")
            ),
        );
        row(
            &mut out,
            "video latency",
            format!(
                "send to receipt p50 {} us, p99 {} us ({} draws with the session's time)",
                num(v, &["latency_us", "p50"]),
                num(v, &["latency_us", "p99"]),
                num(v, &["latency_us", "count"])
            ),
        );
        if v["session"].is_object() {
            let se = &v["session"];
            row(
                &mut out,
                "video session",
                format!(
                    "sent {} frames, {} bytes; received {} bytes ({:.4} of it)",
                    num(se, &["frames"]),
                    num(se, &["bytes"]),
                    num(v, &["bytes"]),
                    num(v, &["bytes_ratio"])
                ),
            );
            row(
                &mut out,
                "video ack latency",
                format!(
                    "send to ack p50 {} us, p99 {} us ({} acked)",
                    num(se, &["ack_us", "p50"]),
                    num(se, &["ack_us", "p99"]),
                    num(se, &["ack_us", "count"])
                ),
            );
        }
    }
    if let Some(kinds) = j["chaos"].as_object() {
        for (k, v) in kinds {
            row(
                &mut out,
                &format!("chaos {k}"),
                format!(
                    "{} injected: {} ended (max {} ms), {} closed, {} survived, {} open",
                    num(v, &["injected"]),
                    num(v, &["ended"]),
                    num(v, &["max_end_ms"]),
                    num(v, &["closed"]),
                    num(v, &["survived"]),
                    num(v, &["open"])
                ),
            );
        }
    }
    if let Some(errors) = j["errors"].as_object() {
        for (k, v) in errors {
            row(&mut out, "  error", format!("{k} (x{v})"));
        }
    }
    out
}
