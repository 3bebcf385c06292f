//! Fault injection (`--chaos`): a seedable RNG, the fault kinds of the
//! client and the session, and what became of each injected fault.
//!
//! A fault's outcome is one of:
//! - `ended`: the proxy ended the connection (EOF, reset, or a disconnect
//!   packet was seen), `end_ms` after the fault was injected;
//! - `closed`: loadgen closed it itself (the fault *is* a close: a reset or
//!   a kill mid-record), or closed it after it kept working (`pause`);
//! - `survived`: the proxy did not end it within `--chaos-wait` (a failure
//!   for the faults the proxy must end: garbage, freeze, stop-read);
//! - `open`: still in progress when the run ended.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};

/// SplitMix64: small, fast, seedable; good enough to pick faults.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (
            lo.as_micros() as u64,
            hi.as_micros().max(lo.as_micros()) as u64,
        );
        Duration::from_micros(lo + self.below(hi - lo + 1))
    }

    /// Random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A seed: the one given, or a random one (printed in the report, so a run
/// can be repeated).
pub fn seed_or_random(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        u64::from_le_bytes(b)
    })
}

/// `--chaos RATE[,KIND...]`: the fraction of connections that misbehave
/// and the kinds they pick from (all of `all` when none is named).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub rate: f64,
    pub kinds: Vec<&'static str>,
}

impl Spec {
    pub fn parse(s: &str, all: &[&'static str]) -> Result<Spec, String> {
        let mut parts = s.split(',').map(str::trim);
        let rate_s = parts.next().unwrap_or("");
        let rate: f64 = rate_s
            .parse()
            .map_err(|_| format!("--chaos {s}: expected RATE[,KIND...] (RATE in 0..1)"))?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("--chaos {s}: RATE must be within 0..1"));
        }
        let mut kinds = Vec::new();
        for k in parts.filter(|k| !k.is_empty()) {
            let Some(known) = all.iter().find(|a| **a == k) else {
                return Err(format!(
                    "--chaos: unknown kind {k} (known: {})",
                    all.join(", ")
                ));
            };
            if !kinds.contains(known) {
                kinds.push(*known);
            }
        }
        if kinds.is_empty() {
            kinds = all.to_vec();
        }
        Ok(Spec { rate, kinds })
    }
}

/// Client-side faults.
pub const CLIENT_KINDS: &[&str] = &["reset", "garbage", "pause", "freeze"];
/// Session-side faults.
pub const SERVER_KINDS: &[&str] = &["kill", "garbage", "stop-read"];

/// What became of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ended,
    Closed,
    Survived,
}

/// The outcomes of one kind of fault.
pub struct KindStats {
    pub injected: u64,
    pub ended: u64,
    pub closed: u64,
    pub survived: u64,
    /// Microseconds from the fault to its end (outcome `ended`).
    pub end_us: Histogram<u64>,
    /// Draw integrity on these connections up to the fault's end (reported,
    /// not part of the well-behaved totals).
    pub lost: u64,
    pub reordered: u64,
    pub corrupt: u64,
    /// A few distinct end reasons with their counts.
    pub reasons: BTreeMap<String, u64>,
}

/// 1 us .. 1000 s.
fn histogram() -> Histogram<u64> {
    crate::report::histogram_up_to(1_000_000_000)
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats {
            injected: 0,
            ended: 0,
            closed: 0,
            survived: 0,
            end_us: histogram(),
            lost: 0,
            reordered: 0,
            corrupt: 0,
            reasons: BTreeMap::new(),
        }
    }
}

/// Every kind's outcomes.
#[derive(Default)]
pub struct ChaosStats {
    pub kinds: BTreeMap<&'static str, KindStats>,
}

/// Most distinct reasons kept per kind.
const REASONS: usize = 8;

impl ChaosStats {
    pub fn injected(&mut self, kind: &'static str) {
        self.kinds.entry(kind).or_default().injected += 1;
    }

    pub fn outcome(
        &mut self,
        kind: &'static str,
        outcome: Outcome,
        took: Option<Duration>,
        reason: &str,
    ) {
        let k = self.kinds.entry(kind).or_default();
        match outcome {
            Outcome::Ended => {
                k.ended += 1;
                if let Some(t) = took {
                    let _ = k.end_us.record((t.as_micros() as u64).max(1));
                }
            }
            Outcome::Closed => k.closed += 1,
            Outcome::Survived => k.survived += 1,
        }
        let reason = shorten(reason);
        if k.reasons.len() < REASONS || k.reasons.contains_key(&reason) {
            *k.reasons.entry(reason).or_default() += 1;
        }
    }

    pub fn integrity(&mut self, kind: &'static str, lost: u64, reordered: u64, corrupt: u64) {
        let k = self.kinds.entry(kind).or_default();
        k.lost += lost;
        k.reordered += reordered;
        k.corrupt += corrupt;
    }

    pub fn merge(&mut self, o: &ChaosStats) {
        for (name, s) in &o.kinds {
            let k = self.kinds.entry(name).or_default();
            k.injected += s.injected;
            k.ended += s.ended;
            k.closed += s.closed;
            k.survived += s.survived;
            let _ = k.end_us.add(&s.end_us);
            k.lost += s.lost;
            k.reordered += s.reordered;
            k.corrupt += s.corrupt;
            for (r, n) in &s.reasons {
                if k.reasons.len() < REASONS || k.reasons.contains_key(r) {
                    *k.reasons.entry(r.clone()).or_default() += n;
                }
            }
        }
    }

    pub fn to_json(&self) -> Json {
        let mut m = serde_json::Map::new();
        for (name, k) in &self.kinds {
            let q = |p: f64| {
                if k.end_us.is_empty() {
                    0
                } else {
                    k.end_us.value_at_quantile(p) / 1000
                }
            };
            let open = k.injected.saturating_sub(k.ended + k.closed + k.survived);
            m.insert(
                (*name).to_owned(),
                json!({
                    "injected": k.injected,
                    "ended": k.ended,
                    "closed": k.closed,
                    "survived": k.survived,
                    "open": open,
                    "p50_end_ms": q(0.5),
                    "p99_end_ms": q(0.99),
                    "max_end_ms": k.end_us.max() / 1000,
                    "lost": k.lost,
                    "reordered": k.reordered,
                    "corrupt": k.corrupt,
                    "reasons": k.reasons,
                }),
            );
        }
        Json::Object(m)
    }
}

/// Reasons carry numbers (sizes, addresses) that would make every one
/// distinct: keep the words.
fn shorten(reason: &str) -> String {
    let mut s: String = reason
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    if s.len() > 120 {
        let mut cut = 120;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Bytes that are not an xpra record: the first byte is not `P`.
pub fn garbage(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut g = vec![0u8; len];
    rng.fill(&mut g);
    if let Some(b) = g.first_mut() {
        *b = b'G';
    }
    g
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_rate_and_kinds() {
        let s = Spec::parse("0.25", CLIENT_KINDS).unwrap();
        assert_eq!(s.rate, 0.25);
        assert_eq!(s.kinds, CLIENT_KINDS);
        let s = Spec::parse("1,reset,freeze,reset", CLIENT_KINDS).unwrap();
        assert_eq!(s.kinds, vec!["reset", "freeze"]);
        assert!(Spec::parse("2", CLIENT_KINDS).is_err());
        assert!(Spec::parse("0.1,bogus", CLIENT_KINDS).is_err());
        assert!(Spec::parse("x", SERVER_KINDS).is_err());
    }

    #[test]
    fn rng_is_seeded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert!(a.below(10) < 10);
        let u = a.unit();
        assert!((0.0..1.0).contains(&u));
        assert_eq!(garbage(&mut a, 16)[0], b'G');
    }
}
