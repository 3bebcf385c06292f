//! `loadgen`: fake xpra sessions and clients, and the side-by-side runner.
//!
//! - `loadgen server`: a fake session that streams draws;
//! - `loadgen client`: N fake clients that check and measure what arrives;
//! - `loadgen perf`: direct / xfwd / HAProxy / xpra's proxy, interleaved;
//! - `loadgen check`: a perf run's ratios against a baseline;
//! - `loadgen abuse`: abusive pre-authentication clients in a loop.
//!
//! See docs/loadgen.md.

mod abuse;
mod chaos;
mod check;
mod client;
mod digest;
mod evloop;
mod frames;
mod net;
mod perf;
mod procstat;
mod proto;
mod report;
mod server;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use xfwd::wire::header::{Compressor, Encoder};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Fake xpra sessions and clients to measure xpra proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A fake xpra session: answers hellos, streams draws, echoes pings.
    Server(ServerArgs),
    /// N concurrent fake xpra clients; checks draws, measures latency.
    Client(ClientArgs),
    /// Side-by-side runs: direct, xfwd, HAProxy, xpra's proxy (see perf/run).
    Perf(perf::PerfArgs),
    /// Compares a perf run's ratios with a baseline (see perf/check).
    Check(check::CheckArgs),
    /// Abusive pre-authentication clients in a loop, timed until closed.
    Abuse(abuse::AbuseArgs),
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Where to listen: tcp://HOST:PORT or unix:PATH (repeatable).
    #[arg(long, value_name = "URI")]
    listen: Vec<String>,
    /// Appear as a local session in DIR (socket DIR/HOSTNAME-DISPLAY, mode 0600).
    #[arg(long, value_name = "DIR")]
    socket_dir: Option<PathBuf>,
    /// Display number of the session (without ':').
    #[arg(long, default_value = "100")]
    display: String,
    /// Demand this password with xpra's challenge (hmac+sha256).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from a file (first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Pixel bytes per draw.
    #[arg(long, default_value_t = 262_144)]
    draw_size: usize,
    /// Draws per second per window, `max`, or 0 for none.
    #[arg(long, default_value = "max")]
    draw_rate: String,
    /// Windows per connection (draws go round-robin over them).
    #[arg(long, default_value_t = 1)]
    windows: u32,
    /// Keep at most N draws un-acknowledged per connection (all its windows
    /// together) and send more as the client's `damage-sequence` packets
    /// acknowledge them, as xpra paces draws; 0: free-running.
    #[arg(long, value_name = "N", default_value_t = 0)]
    window: u32,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Fault injection: RATE (0..1) of the connections misbehave once
    /// streaming, by a KIND (kill, garbage, stop-read; default all).
    #[arg(long, value_name = "RATE[,KIND...]")]
    chaos: Option<String>,
    /// Seed of the fault picks (default: random, reported).
    #[arg(long)]
    seed: Option<u64>,
    /// A fault comes 100 ms .. MS after the hello.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    chaos_delay: u64,
    /// `garbage`, `stop-read`: not ended by the proxy SECS after the fault:
    /// `survived`.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    chaos_wait: f64,
    /// Write the fault outcomes (and with --raw-frames the frames' numbers)
    /// here on SIGINT / SIGTERM (also printed).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Send what an xpra 3.1.3 session sends a client restricted to raw
    /// rgb: `new-window`, then full-window `rgb24` BGRX frames of
    /// --frame-size whose content changes every frame (--draw-size is
    /// ignored; pace with --draw-rate and --window).
    #[arg(long)]
    raw_frames: bool,
    /// --raw-frames: the window size, WxH.
    #[arg(long, value_name = "WxH", default_value = "1920x1080")]
    frame_size: String,
    /// --raw-frames: write every connection's frame numbers (frames,
    /// bytes, send-to-ack latency) to PATH every 200 ms and when a
    /// connection ends, for `loadgen client --session-stats`.
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// tcp://[user[:password]@]host:port[/display] (or ssl://, ws://,
    /// wss://) or unix:PATH.
    #[arg(long, value_name = "URI")]
    connect: String,
    /// ssl:// and wss://: check the server's certificate (required: against
    /// the system's CAs or --ssl-ca-certs) or not (none, the default: a
    /// load tool in front of self-signed test proxies).
    #[arg(long, value_name = "none|required", default_value = "none")]
    ssl_server_verify_mode: String,
    /// CAs (PEM file or directory) to verify the server against.
    #[arg(long, value_name = "FILE")]
    ssl_ca_certs: Option<PathBuf>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Send a ping every MS milliseconds on each connection (0: never).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    ping_interval: u64,
    /// Packet encoder: rencodeplus (a 6.x client), rencode or bencode (a 3.1 client).
    #[arg(long, default_value = "rencode")]
    encoder: String,
    /// Compression offered for main packets: none or lz4.
    #[arg(long, default_value = "none")]
    compress: String,
    /// Password file (first line); a password in the URI works too.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Event-loop threads (default: the CPUs available).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds a connection has to get the server's hello.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Close each connection after its handshake and open a new one
    /// (measures connection setup).
    #[arg(long)]
    handshake_loop: bool,
    /// Handshakes in flight at once (connections ramp up at this pace).
    #[arg(long, default_value_t = 128)]
    max_pending: usize,
    /// Write this file once every initial connection has finished its handshake.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// End the run SECS after every initial connection has finished its
    /// handshake (instead of at --duration, when that comes first).
    #[arg(long, value_name = "SECS")]
    hold_after_ready: Option<f64>,
    /// Read at most BYTES per second per connection once established (a
    /// slow reader).
    #[arg(long, value_name = "BYTES")]
    read_rate: Option<u64>,
    /// Acknowledge draws with `damage-sequence` (xpra's draw ack) every M
    /// draws received, and whatever is un-acknowledged once no draw has come
    /// for 50 ms (0: never ack).
    #[arg(long, value_name = "M", default_value_t = 0)]
    ack_every: u32,
    /// Count a stall when an established connection that expects data
    /// (draws have been flowing, or a ping is unanswered) gets no bytes for
    /// more than MS milliseconds (0: no watchdog).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    stall_ms: u64,
    /// Exit with status 4 when any stall was counted.
    #[arg(long)]
    fail_on_stall: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Fault injection: RATE (0..1) of the connection slots misbehave, one
    /// fault at a time, picked from KINDs (reset, garbage, pause, freeze;
    /// default all); a slot whose connection ended opens another.
    #[arg(long, value_name = "RATE[,KIND...]")]
    chaos: Option<String>,
    /// Seed of the fault picks (default: random, reported).
    #[arg(long)]
    seed: Option<u64>,
    /// A fault comes 100 ms .. MS after the hello.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    chaos_delay: u64,
    /// `pause`: reading stops for MS/4 .. MS.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    chaos_pause: u64,
    /// `freeze`: reading stops for SECS, then the connection is drained to
    /// see whether the proxy ended it.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    chaos_freeze: f64,
    /// `garbage`, `freeze`: not ended by the proxy SECS after the fault:
    /// `survived`.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    chaos_wait: f64,
    /// Replace established connections that end during the run (clients
    /// of a session run with `loadgen server --chaos`).
    #[arg(long)]
    reconnect: bool,
    /// Offer h264 in the hello (as xpra 3.1.3's client does: `encodings`
    /// with h264, `encoding.full_csc_modes` h264 YUV420P), accept draws of
    /// any coding, ack every draw, and report frames, bytes and latency
    /// (rencode / bencode only: a transcoding proxy takes 3.1 hellos).
    #[arg(long)]
    video: bool,
    /// --video: read the session's numbers for these connections from
    /// `loadgen server --stats-file PATH` at the end (same host).
    #[arg(long, value_name = "PATH")]
    session_stats: Option<PathBuf>,
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    if v > 0.0 && v.is_finite() {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{what} must be positive"))
    }
}

fn read_password(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

fn server_config(a: ServerArgs) -> Result<server::ServerConfig, String> {
    let password = match (&a.password, &a.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_password(f)?),
        (None, None) => None,
    };
    if password.as_deref() == Some("") {
        return Err("the password is empty".into());
    }
    if a.draw_size == 0 {
        return Err("--draw-size must be at least 1".into());
    }
    let raw_frames = if a.raw_frames {
        Some(frames::parse_size(&a.frame_size)?)
    } else {
        None
    };
    if a.stats_file.is_some() && raw_frames.is_none() {
        return Err("--stats-file goes with --raw-frames".into());
    }
    let draw_size = raw_frames.map_or(a.draw_size, |(w, h)| w as usize * h as usize * 4);
    Ok(server::ServerConfig {
        listen: server::parse_listens(&a.listen)?,
        socket_dir: a.socket_dir,
        display: a.display.trim_start_matches(':').to_owned(),
        password: password.map(String::into_bytes),
        draw_size,
        rate: server::Rate::parse(&a.draw_rate)?,
        windows: a.windows.max(1),
        window: a.window,
        threads: a.threads.max(1),
        chaos: a
            .chaos
            .as_deref()
            .map(|s| chaos::Spec::parse(s, chaos::SERVER_KINDS))
            .transpose()?,
        seed: chaos::seed_or_random(a.seed),
        chaos_delay: Duration::from_millis(a.chaos_delay.max(100)),
        chaos_wait: secs(a.chaos_wait, "--chaos-wait")?,
        json: a.json,
        raw_frames,
        stats_file: a.stats_file,
    })
}

fn client_config(a: ClientArgs) -> Result<client::ClientConfig, String> {
    let target = net::Target::parse(&a.connect)?;
    let encoder = match a.encoder.as_str() {
        "rencodeplus" => Encoder::Rencodeplus,
        "rencode" => Encoder::Rencode,
        "bencode" => Encoder::Bencode,
        other => {
            return Err(format!(
                "--encoder {other}: expected rencodeplus, rencode or bencode"
            ))
        }
    };
    let compress = match a.compress.as_str() {
        "none" => Compressor::None,
        "lz4" => Compressor::Lz4,
        other => return Err(format!("--compress {other}: expected none or lz4")),
    };
    let password = match (&a.password_file, &target.password) {
        (Some(f), _) => Some(read_password(f)?),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if !positive(a.duration) || !positive(a.timeout) {
        return Err("--duration and --timeout must be positive".into());
    }
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if a.video && encoder == Encoder::Rencodeplus {
        return Err("--video: use --encoder rencode or bencode (a 3.1 client's hello)".into());
    }
    if a.session_stats.is_some() && !a.video {
        return Err("--session-stats goes with --video".into());
    }
    let tls = if target.scheme.tls() {
        use xfwd::transport::tls::{self as xtls, ClientTls, VerifyMode};
        let mode: VerifyMode = a
            .ssl_server_verify_mode
            .parse()
            .map_err(|e| format!("--ssl-server-verify-mode: {e}"))?;
        let settings = match (&a.ssl_ca_certs, mode) {
            (_, VerifyMode::None) => ClientTls::insecure_accept_any(),
            (Some(ca), _) => ClientTls::with_ca(ca.clone()),
            (None, _) => ClientTls::system(),
        };
        let config = settings.build().map_err(|e| e.to_string())?;
        let name = xtls::server_name(&target.host).map_err(|e| e.to_string())?;
        // said even with --quiet: a run's log should show what was checked
        eprintln!(
            "loadgen client: {}:// with ssl-server-verify-mode={}{}",
            target.scheme.name(),
            if mode == VerifyMode::None {
                "none"
            } else {
                "required"
            },
            if mode == VerifyMode::None {
                " (the server's certificate is not checked)"
            } else {
                ""
            }
        );
        Some((config, name))
    } else {
        None
    };
    Ok(client::ClientConfig {
        target,
        connections: a.connections,
        duration: Duration::from_secs_f64(a.duration),
        ping_interval: (a.ping_interval > 0).then(|| Duration::from_millis(a.ping_interval)),
        encoder,
        compress,
        password: password.filter(|p| !p.is_empty()).map(String::into_bytes),
        json: a.json,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        timeout: Duration::from_secs_f64(a.timeout),
        handshake_loop: a.handshake_loop,
        ready_file: a.ready_file,
        hold_after_ready: a
            .hold_after_ready
            .filter(|h| *h >= 0.0 && h.is_finite())
            .map(Duration::from_secs_f64),
        read_rate: a.read_rate.filter(|r| *r > 0),
        max_pending: a.max_pending.max(1),
        // a transcoding proxy wants each of its draws acked
        ack_every: if a.video { 1 } else { a.ack_every },
        stall: (a.stall_ms > 0).then(|| Duration::from_millis(a.stall_ms)),
        fail_on_stall: a.fail_on_stall,
        quiet: a.quiet,
        tls,
        chaos: a
            .chaos
            .as_deref()
            .map(|s| chaos::Spec::parse(s, chaos::CLIENT_KINDS))
            .transpose()?,
        chaos_timing: client::ChaosTiming {
            delay: Duration::from_millis(a.chaos_delay.max(100)),
            pause: Duration::from_millis(a.chaos_pause.max(4)),
            freeze: secs(a.chaos_freeze, "--chaos-freeze")?,
            wait: secs(a.chaos_wait, "--chaos-wait")?,
        },
        seed: chaos::seed_or_random(a.seed),
        reconnect: a.reconnect,
        video: a.video,
        session_stats: a.session_stats,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(a) => match server_config(a) {
            Ok(c) => server::run(c),
            Err(e) => {
                eprintln!("loadgen server: {e}");
                ExitCode::from(2)
            }
        },
        Command::Client(a) => match client_config(a) {
            Ok(c) => client::run(c),
            Err(e) => {
                eprintln!("loadgen client: {e}");
                ExitCode::from(2)
            }
        },
        Command::Perf(a) => perf::run(a),
        Command::Check(a) => check::run(a),
        Command::Abuse(a) => abuse::run(a),
    }
}
