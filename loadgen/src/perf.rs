//! `loadgen perf` (what `perf/run` calls): the same scenarios through a
//! direct connection, xfwd, HAProxy (tcp mode) and xpra 3.1's own proxy,
//! interleaved round by round, reported as medians and ratios.
//!
//! Every process is started here and stopped here: fake sessions
//! (`loadgen server`), the proxies, and one `loadgen client` process per
//! measurement (so its CPU time and memory are its own). Proxy CPU time and
//! memory come from /proc.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::procstat;

#[derive(clap::Args, Debug)]
pub struct PerfArgs {
    /// Short mode for CI: 1.5-second runs, no xpra proxy unless asked.
    #[arg(long)]
    quick: bool,
    /// Rounds (each round runs every target once, in a rotated order).
    #[arg(long)]
    rounds: Option<usize>,
    /// xfwd shards (--cores) and HAProxy threads (nbthread).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Targets: direct,xfwd,haproxy,xpra (default: all; --quick: no xpra).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Scenarios (default: all): bulk-1,bulk-16,small,latency-idle,latency-bulk,idle,slow-reader,handshake.
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Directory for report.md, report.json and raw results.
    #[arg(long, default_value = "perf")]
    out: PathBuf,
    /// The xfwd binary (default: next to this loadgen).
    #[arg(long)]
    xfwd: Option<PathBuf>,
    /// Seconds per measurement (default 5, --quick 1.5).
    #[arg(long)]
    duration: Option<f64>,
    /// Connections of the idle scenario.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Non-root user that runs xpra's proxy when this runs as root.
    #[arg(long, default_value = "xperf")]
    xpra_user: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    Xfwd,
    Haproxy,
    Xpra,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Xfwd => "xfwd",
            Target::Haproxy => "haproxy",
            Target::Xpra => "xpra",
        }
    }
    fn parse(s: &str) -> Option<Target> {
        Some(match s {
            "direct" => Target::Direct,
            "xfwd" => Target::Xfwd,
            "haproxy" => Target::Haproxy,
            "xpra" => Target::Xpra,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bulk { draw_size: usize, conns: usize },
    LatencyIdle,
    LatencyBulk,
    Idle,
    SlowReader,
    Handshake { concurrency: usize },
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    title: &'static str,
    kind: Kind,
}

const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "bulk-1",
        title: "bulk: 256 KiB draws at max rate, 1 connection",
        kind: Kind::Bulk {
            draw_size: 262_144,
            conns: 1,
        },
    },
    Scenario {
        name: "bulk-16",
        title: "bulk: 256 KiB draws at max rate, 16 connections",
        kind: Kind::Bulk {
            draw_size: 262_144,
            conns: 16,
        },
    },
    Scenario {
        name: "small",
        title: "small packets: 1 KiB draws at max rate, 1 connection",
        kind: Kind::Bulk {
            draw_size: 1024,
            conns: 1,
        },
    },
    Scenario {
        name: "latency-idle",
        title: "ping RTT, idle (1 connection, a ping every 10 ms)",
        kind: Kind::LatencyIdle,
    },
    Scenario {
        name: "latency-bulk",
        title: "ping RTT under bulk load (pings on an idle session while 4 other connections pull 256 KiB draws at max rate through the same proxy)",
        kind: Kind::LatencyBulk,
    },
    Scenario {
        name: "idle",
        title: "many idle connections: proxy memory per connection",
        kind: Kind::Idle,
    },
    Scenario {
        name: "slow-reader",
        title: "slow readers: 4 connections reading 1 MB/s each from a session drawing 256 KiB at max rate: proxy memory growth",
        kind: Kind::SlowReader,
    },
    Scenario {
        name: "handshake",
        title: "handshake rate: authenticated connections set up and closed, 4 at a time",
        kind: Kind::Handshake { concurrency: 4 },
    },
];

const PASSWORD: &str = "perfpass";
const DISPLAY_BULK: &str = "100";
const DISPLAY_IDLE: &str = "101";

/// A process we started; stopped (TERM, then KILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    /// When it was started (seconds since boot, as /proc counts).
    started: f64,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 5 s; descendants still alive after that
    /// (xpra's per-connection proxy processes) are killed too.
    fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if !self.alive() {
            return;
        }
        let family = procstat::tree(self.child.id());
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && self.alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            eprintln!("perf: {} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in family.into_iter().skip(1) {
            // still there, and not an older process that took the pid over
            if procstat::rss_kib(pid).is_some() && procstat::started_after(pid, self.started) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn wait_tcp(port: u16, timeout: Duration, p: &mut Proc) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if !p.alive() {
            return Err(format!("{} exited before listening on port {port}", p.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{} is not listening on port {port} after {timeout:?}",
        p.name
    ))
}

fn wait_path(path: &Path, timeout: Duration, p: &mut Proc) -> Result<(), String> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if path.exists() {
            return Ok(());
        }
        if !p.alive() {
            return Err(format!(
                "{} exited before creating {}",
                p.name,
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{} did not create {}", p.name, path.display()))
}

fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Proc {
        name: name.to_owned(),
        child,
        started: procstat::uptime_s(),
    })
}

struct Env {
    loadgen: PathBuf,
    work: PathBuf,
    sockdir: PathBuf,
    /// Bulk session (per scenario), its TCP port.
    ps_bulk: u16,
    ps_idle: u16,
    ps_auth: u16,
    px: u16,
    ph_bulk: u16,
    ph_idle: u16,
    ph_auth: u16,
    pxp: u16,
    xfwd: Option<Proc>,
    haproxy: Option<Proc>,
    xpra: Option<Proc>,
    idle_server: Option<Proc>,
    auth_server: Option<Proc>,
    notes: Vec<String>,
    duration: f64,
    cores: usize,
    xfwd_cmd: Option<(PathBuf, usize)>,
}

impl Env {
    fn start_server(
        &self,
        name: &str,
        args: &[String],
        tcp: &[u16],
        socket: Option<&Path>,
    ) -> Result<Proc, String> {
        let mut cmd = Command::new(&self.loadgen);
        cmd.arg("server").args(args);
        for p in tcp {
            cmd.arg(format!("--listen=tcp://127.0.0.1:{p}"));
        }
        let mut proc = spawn(name, &mut cmd, &self.work.join(format!("{name}.log")))?;
        for p in tcp {
            wait_tcp(*p, Duration::from_secs(10), &mut proc)?;
        }
        if let Some(s) = socket {
            wait_path(s, Duration::from_secs(10), &mut proc)?;
        }
        Ok(proc)
    }

    fn session_socket(&self, display: &str) -> PathBuf {
        self.sockdir
            .join(format!("{}-{display}", crate::proto::hostname()))
    }

    /// URI of a session kind ("bulk", "idle", "auth") through `t`.
    fn uri(&self, t: Target, session: &str) -> String {
        let p = PASSWORD;
        match (t, session) {
            (Target::Direct, "bulk") => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_BULK}", self.ps_bulk)
            }
            (Target::Direct, "idle") => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_IDLE}", self.ps_idle)
            }
            (Target::Direct, _) => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_IDLE}", self.ps_auth)
            }
            (Target::Xfwd, "bulk") => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_BULK}", self.px)
            }
            (Target::Xfwd, _) => format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_IDLE}", self.px),
            (Target::Haproxy, "bulk") => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_BULK}", self.ph_bulk)
            }
            (Target::Haproxy, "idle") => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_IDLE}", self.ph_idle)
            }
            (Target::Haproxy, _) => {
                format!("tcp://perf:{p}@127.0.0.1:{}/{DISPLAY_IDLE}", self.ph_auth)
            }
            (Target::Xpra, "bulk") => format!("tcp://bulk:{p}@127.0.0.1:{}/", self.pxp),
            (Target::Xpra, _) => format!("tcp://idle:{p}@127.0.0.1:{}/", self.pxp),
        }
    }

    fn proxy_pid(&self, t: Target) -> Option<u32> {
        match t {
            Target::Direct => None,
            Target::Xfwd => self.xfwd.as_ref().map(Proc::pid),
            Target::Haproxy => self.haproxy.as_ref().map(Proc::pid),
            Target::Xpra => self.xpra.as_ref().map(Proc::pid),
        }
    }
}

/// Whether the xfwd `bin` has `--system-wide` (an older build, by `--xfwd`,
/// may not: it has no system-wide mode either).
fn knows_system_wide(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--system-wide"))
}

fn start_xfwd(env: &mut Env, bin: &Path, cores: usize) -> Result<(), String> {
    let mut cmd = Command::new(bin);
    // Run as root, it serves root's own fake sessions: not system-wide
    // mode (root's default, which serves none of root's sessions).
    if knows_system_wide(bin) {
        cmd.arg("--system-wide=no");
    }
    cmd.arg(format!("--bind-tcp=127.0.0.1:{}", env.px))
        .arg("--tcp-auth=allow")
        .arg(format!("--socket-dir={}", env.sockdir.display()))
        .arg(format!("--cores={cores}"));
    let log = env.work.join("xfwd.log");
    let mut p = spawn("xfwd", &mut cmd, &log)?;
    wait_tcp(env.px, Duration::from_secs(10), &mut p).map_err(|e| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        format!("{e}: {}", text.lines().last().unwrap_or(""))
    })?;
    env.xfwd = Some(p);
    env.xfwd_cmd = Some((bin.to_path_buf(), cores));
    Ok(())
}

fn start_haproxy(env: &mut Env, cores: usize) -> Result<(), String> {
    // haproxy wants two descriptors per connection under the hard limit
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(4096, |(_, h)| h);
    let maxconn = (nofile.min(1 << 20).saturating_sub(200) / 2).max(256);
    let cfg = format!(
        "global\n  maxconn {maxconn}\n  nbthread {cores}\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\n\
         listen bulk\n  bind 127.0.0.1:{}\n  server s1 127.0.0.1:{}\n\n\
         listen idle\n  bind 127.0.0.1:{}\n  server s1 127.0.0.1:{}\n\n\
         listen auth\n  bind 127.0.0.1:{}\n  server s1 127.0.0.1:{}\n",
        env.ph_bulk, env.ps_bulk, env.ph_idle, env.ps_idle, env.ph_auth, env.ps_auth
    );
    let path = env.work.join("haproxy.cfg");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f").arg(&path).arg("-db");
    let mut p = spawn("haproxy", &mut cmd, &env.work.join("haproxy.log"))?;
    wait_tcp(env.ph_idle, Duration::from_secs(10), &mut p)?;
    env.haproxy = Some(p);
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// xpra 3.1's proxy, as a non-root user, with sqlite auth naming our fake
/// sessions by TCP address.
fn start_xpra(env: &mut Env, user: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let xpra = which("xpra").ok_or("xpra is not installed")?;
    let root = nix::unistd::geteuid().is_root();
    let (uid, gid) = if root {
        let find = || nix::unistd::User::from_name(user).ok().flatten();
        if find().is_none() {
            let st = Command::new("useradd")
                .args(["-M", "-r", "-s", "/usr/sbin/nologin", user])
                .status()
                .map_err(|e| format!("useradd: {e}"))?;
            if !st.success() {
                return Err(format!("useradd {user} failed"));
            }
        }
        let u = find().ok_or_else(|| format!("no user {user}"))?;
        (u.uid.as_raw(), u.gid.as_raw())
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let dir = env.work.join("xpra");
    for d in [dir.clone(), dir.join("sock"), dir.join("run")] {
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        let _ = nix::unistd::chown(
            &d,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
    }
    let db = dir.join("users.sdb");
    let script = format!(
        "import sqlite3\nc=sqlite3.connect({db:?})\n\
         c.execute('CREATE TABLE users (username VARCHAR(255) NOT NULL, password VARCHAR(255), uid VARCHAR(63), gid VARCHAR(63), displays VARCHAR(8191), env_options VARCHAR(8191), session_options VARCHAR(8191))')\n\
         c.execute('INSERT INTO users VALUES (?,?,?,?,?,?,?)', ('bulk', {PASSWORD:?}, '{uid}', '{gid}', 'tcp://127.0.0.1:{}/', '', ''))\n\
         c.execute('INSERT INTO users VALUES (?,?,?,?,?,?,?)', ('idle', {PASSWORD:?}, '{uid}', '{gid}', 'tcp://127.0.0.1:{}/', '', ''))\n\
         c.commit()\n",
        env.ps_bulk,
        env.ps_idle,
        db = db.display().to_string()
    );
    let _ = std::fs::remove_file(&db);
    let st = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .status()
        .map_err(|e| format!("python3: {e}"))?;
    if !st.success() {
        return Err("cannot create the sqlite auth database".into());
    }
    let _ = nix::unistd::chown(
        &db,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    );
    let mut cmd = Command::new(xpra);
    cmd.arg("proxy")
        .arg(":14999")
        .arg(format!("--bind-tcp=127.0.0.1:{}", env.pxp))
        .arg(format!("--tcp-auth=sqlite,filename={}", db.display()))
        .arg("--daemon=no")
        .arg(format!("--socket-dirs={}", dir.join("sock").display()))
        .arg(format!("--log-dir={}", dir.display()))
        .args([
            "--mdns=no",
            "--dbus-proxy=no",
            "--dbus-control=no",
            "--notifications=no",
            "--webcam=no",
            "--pulseaudio=no",
            "--printing=no",
            "--file-transfer=no",
            "--open-files=no",
            "--html=no",
        ])
        .env("HOME", &dir)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .current_dir(&dir);
    if root {
        // std clears the supplementary groups when root sets a uid
        cmd.uid(uid).gid(gid);
    }
    let mut p = spawn("xpra-proxy", &mut cmd, &env.work.join("xpra-proxy.log"))?;
    wait_tcp(env.pxp, Duration::from_secs(30), &mut p)?;
    env.xpra = Some(p);
    Ok(())
}

/// Runs one `loadgen client`; returns its JSON report.
fn client(env: &Env, tag: &str, args: &[String], extra_wait: Duration) -> Result<Json, String> {
    let json = env.work.join(format!("{tag}.json"));
    let _ = std::fs::remove_file(&json);
    let mut cmd = Command::new(&env.loadgen);
    cmd.arg("client")
        .args(args)
        .arg("--quiet")
        .arg(format!("--json={}", json.display()));
    let mut p = spawn(
        &format!("client {tag}"),
        &mut cmd,
        &env.work.join(format!("{tag}.log")),
    )?;
    let limit = Instant::now() + Duration::from_secs_f64(env.duration * 3.0 + 30.0) + extra_wait;
    while p.alive() {
        if Instant::now() > limit {
            p.stop();
            return Err(format!("client {tag} did not finish in time"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text =
        std::fs::read_to_string(&json).map_err(|e| format!("client {tag} wrote no report: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("client {tag}: bad report: {e}"))
}

fn f(v: &Json, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(0.0)
}

/// The metrics of one client report.
fn client_metrics(j: &Json) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (k, path) in [
        ("bytes_per_s", &["bytes_per_s"][..]),
        ("packets_per_s", &["packets_per_s"]),
        ("rtt_p50_us", &["rtt_us", "p50"]),
        ("rtt_p99_us", &["rtt_us", "p99"]),
        ("rtt_p999_us", &["rtt_us", "p999"]),
        ("rtt_count", &["rtt_us", "count"]),
        ("handshake_p50_us", &["handshake_us", "p50"]),
        ("handshake_p99_us", &["handshake_us", "p99"]),
        ("handshakes_per_s", &["handshakes_per_s"]),
        ("connections_ok", &["connections_ok"]),
        ("connections_failed", &["connections_failed"]),
        ("connections_dropped", &["connections_dropped"]),
        ("lost", &["lost"]),
        ("reordered", &["reordered"]),
        ("corrupt", &["corrupt"]),
        ("bytes", &["bytes"]),
        ("packets", &["packets"]),
        ("client_cpu_s", &["cpu_s"]),
        ("duration_s", &["duration_s"]),
    ] {
        m.insert(k.to_owned(), f(j, path));
    }
    m
}

/// One measurement of one scenario through one target.
fn measure(
    env: &mut Env,
    sc: &Scenario,
    t: Target,
    round: usize,
) -> Result<BTreeMap<String, f64>, String> {
    let tag = format!("{}-{}-r{round}", sc.name, t.name());
    let d = env.duration;
    let dur = format!("--duration={d}");
    if matches!(sc.kind, Kind::Idle | Kind::SlowReader) {
        // a fresh proxy: memory freed by earlier runs would hide the growth
        restart_proxy(env, t)?;
    }
    let pid = env.proxy_pid(t);
    let cpu0 = pid.map(procstat::tree_cpu_s);
    let cs0 = pid.map(procstat::tree_ctxt_switches);
    let mut extra: BTreeMap<String, f64> = BTreeMap::new();
    let threads = "--threads=1".to_owned();
    let report = match sc.kind {
        Kind::Bulk { conns, .. } => client(
            env,
            &tag,
            &[
                format!("--connect={}", env.uri(t, "bulk")),
                format!("--connections={conns}"),
                dur,
                threads,
            ],
            Duration::ZERO,
        )?,
        Kind::LatencyIdle => client(
            env,
            &tag,
            &[
                format!("--connect={}", env.uri(t, "idle")),
                "--connections=1".into(),
                "--ping-interval=10".into(),
                dur,
                threads,
            ],
            Duration::ZERO,
        )?,
        Kind::LatencyBulk => {
            // the load: 4 bulk connections through the same proxy
            let json = env.work.join(format!("{tag}-load.json"));
            let mut cmd = Command::new(&env.loadgen);
            cmd.arg("client")
                .arg(format!("--connect={}", env.uri(t, "bulk")))
                .args(["--connections=4", "--threads=1", "--quiet"])
                .arg(format!("--duration={}", d + 2.0))
                .arg(format!("--json={}", json.display()));
            let mut load = spawn(
                "bulk load",
                &mut cmd,
                &env.work.join(format!("{tag}-load.log")),
            )?;
            std::thread::sleep(Duration::from_millis(1000));
            let r = client(
                env,
                &tag,
                &[
                    format!("--connect={}", env.uri(t, "idle")),
                    "--connections=1".into(),
                    "--ping-interval=10".into(),
                    dur,
                    threads,
                ],
                Duration::ZERO,
            );
            let until = Instant::now() + Duration::from_secs_f64(d + 30.0);
            while load.alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            load.stop();
            if let Ok(text) = std::fs::read_to_string(&json) {
                if let Ok(j) = serde_json::from_str::<Json>(&text) {
                    extra.insert("load_bytes_per_s".into(), f(&j, &["bytes_per_s"]));
                    extra.insert("load_connections_ok".into(), f(&j, &["connections_ok"]));
                }
            }
            r?
        }
        Kind::Idle => {
            let n = env_idle_connections(sc);
            let ready = env.work.join(format!("{tag}.ready"));
            let _ = std::fs::remove_file(&ready);
            let rss0 = pid.map(procstat::tree_rss_kib);
            let json = env.work.join(format!("{tag}.json"));
            let _ = std::fs::remove_file(&json);
            let mut cmd = Command::new(&env.loadgen);
            cmd.arg("client")
                .arg(format!("--connect={}", env.uri(t, "idle")))
                .arg(format!("--connections={n}"))
                .arg("--duration=60")
                .arg("--hold-after-ready=1")
                .arg(format!("--ready-file={}", ready.display()))
                .args(["--threads=1", "--quiet", "--timeout=20"])
                .arg(format!("--json={}", json.display()));
            let mut c = spawn(
                &format!("client {tag}"),
                &mut cmd,
                &env.work.join(format!("{tag}.log")),
            )?;
            let until = Instant::now() + Duration::from_secs(60);
            let mut rss1 = None;
            let mut ready_s = None;
            let t0 = Instant::now();
            while c.alive() && Instant::now() < until {
                if ready.exists() {
                    ready_s = Some(t0.elapsed().as_secs_f64());
                    // let the proxy settle (buffers, handshakes finishing)
                    std::thread::sleep(Duration::from_millis(500));
                    rss1 = pid.map(procstat::tree_rss_kib);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let until = Instant::now() + Duration::from_secs(30);
            while c.alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            c.stop();
            let text = std::fs::read_to_string(&json)
                .map_err(|e| format!("client {tag} wrote no report: {e}"))?;
            let j: Json = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if let (Some(a), Some(b)) = (rss0, rss1) {
                let ok = f(&j, &["connections_ok"]).max(1.0);
                extra.insert("rss_before_kib".into(), a as f64);
                extra.insert("rss_after_kib".into(), b as f64);
                extra.insert("rss_per_conn_kib".into(), (b as f64 - a as f64) / ok);
            }
            if let Some(r) = ready_s {
                extra.insert("ramp_s".into(), r);
            }
            j
        }
        Kind::SlowReader => {
            let rss0 = pid.map(procstat::tree_rss_kib);
            let json = env.work.join(format!("{tag}.json"));
            let _ = std::fs::remove_file(&json);
            let mut cmd = Command::new(&env.loadgen);
            cmd.arg("client")
                .arg(format!("--connect={}", env.uri(t, "bulk")))
                .args([
                    "--connections=4",
                    "--read-rate=1000000",
                    "--threads=1",
                    "--quiet",
                ])
                .arg(format!("--duration={}", d + 1.0))
                .arg(format!("--json={}", json.display()));
            let mut c = spawn(
                &format!("client {tag}"),
                &mut cmd,
                &env.work.join(format!("{tag}.log")),
            )?;
            // sample near the end of the run, with the readers still behind
            let sample_at = Instant::now() + Duration::from_secs_f64(d);
            let mut rss1 = None;
            while c.alive() {
                if Instant::now() >= sample_at {
                    rss1 = pid.map(procstat::tree_rss_kib);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let until = Instant::now() + Duration::from_secs_f64(d + 30.0);
            while c.alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            c.stop();
            let text = std::fs::read_to_string(&json)
                .map_err(|e| format!("client {tag} wrote no report: {e}"))?;
            let j: Json = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if let (Some(a), Some(b)) = (rss0, rss1) {
                extra.insert("rss_before_kib".into(), a as f64);
                extra.insert("rss_after_kib".into(), b as f64);
                extra.insert("rss_growth_kib".into(), b as f64 - a as f64);
            }
            j
        }
        Kind::Handshake { concurrency } => client(
            env,
            &tag,
            &[
                format!("--connect={}", env.uri(t, "auth")),
                format!("--connections={concurrency}"),
                "--handshake-loop".into(),
                format!("--max-pending={concurrency}"),
                dur,
                threads,
            ],
            Duration::ZERO,
        )?,
    };
    let mut m = client_metrics(&report);
    m.extend(extra);
    if let (Some(pid), Some(c0)) = (pid, cpu0) {
        let cpu = procstat::tree_cpu_s(pid) - c0;
        m.insert("proxy_cpu_s".into(), cpu);
        let bytes = m.get("bytes").copied().unwrap_or(0.0);
        if matches!(sc.kind, Kind::Bulk { .. }) && bytes > 1e7 {
            m.insert("proxy_cpu_s_per_gb".into(), cpu / (bytes / 1e9));
        }
        // What each relayed packet costs the proxy in wakeups (issue 14):
        // context switches of all its threads. (System calls are not
        // counted: /proc's syscr/syscw leave out the recv/send sockets
        // use, and `perf stat` is not on every machine.)
        let packets = m.get("packets").copied().unwrap_or(0.0);
        if matches!(sc.kind, Kind::Bulk { .. }) && packets >= 1000.0 {
            if let Some(c0) = cs0 {
                let cs = procstat::tree_ctxt_switches(pid).saturating_sub(c0);
                m.insert("proxy_ctx_switches_per_packet".into(), cs as f64 / packets);
            }
        }
    }
    Ok(m)
}

/// Stops and starts the proxy of `t` (xfwd, HAProxy) so it starts fresh.
fn restart_proxy(env: &mut Env, t: Target) -> Result<(), String> {
    match t {
        Target::Xfwd => {
            env.xfwd = None;
            let (bin, cores) = env.xfwd_cmd.clone().ok_or("xfwd was not started")?;
            start_xfwd(env, &bin, cores)
        }
        Target::Haproxy => {
            env.haproxy = None;
            start_haproxy(env, env.cores)
        }
        _ => Ok(()),
    }
}

static IDLE_CONNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1000);

fn env_idle_connections(_sc: &Scenario) -> usize {
    IDLE_CONNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which metrics each scenario is judged by: (metric, higher is better).
fn primary(kind: Kind) -> &'static [(&'static str, bool)] {
    match kind {
        Kind::Bulk { draw_size, .. } if draw_size < 16 * 1024 => {
            &[("packets_per_s", true), ("bytes_per_s", true)]
        }
        Kind::Bulk { .. } => &[("bytes_per_s", true), ("packets_per_s", true)],
        Kind::LatencyIdle | Kind::LatencyBulk => &[("rtt_p50_us", false), ("rtt_p99_us", false)],
        Kind::Idle => &[("rss_per_conn_kib", false), ("handshake_p50_us", false)],
        Kind::SlowReader => &[("rss_growth_kib", false), ("bytes_per_s", true)],
        Kind::Handshake { .. } => &[
            ("handshakes_per_s", true),
            ("handshake_p50_us", false),
            ("handshake_p99_us", false),
        ],
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(a: PerfArgs) -> ExitCode {
    match run_inner(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perf: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(a: PerfArgs) -> Result<(), String> {
    crate::evloop::raise_nofile();
    IDLE_CONNS.store(
        a.idle_connections.max(1),
        std::sync::atomic::Ordering::Relaxed,
    );
    let started = Instant::now();
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bindir = me.parent().map(Path::to_path_buf).unwrap_or_default();
    let xfwd_bin = a.xfwd.clone().unwrap_or_else(|| bindir.join("xfwd"));
    let rounds = a.rounds.unwrap_or(3).max(1);
    let duration = a.duration.unwrap_or(if a.quick { 1.5 } else { 5.0 });
    let mut targets: Vec<Target> = match &a.targets {
        Some(v) => v
            .iter()
            .map(|s| Target::parse(s).ok_or_else(|| format!("unknown target {s:?}")))
            .collect::<Result<_, _>>()?,
        None if a.quick => vec![Target::Direct, Target::Xfwd, Target::Haproxy],
        None => vec![Target::Direct, Target::Xfwd, Target::Haproxy, Target::Xpra],
    };
    let scenarios: Vec<Scenario> = match &a.scenarios {
        Some(v) => v
            .iter()
            .map(|n| {
                SCENARIOS
                    .iter()
                    .find(|s| s.name == n)
                    .copied()
                    .ok_or_else(|| format!("unknown scenario {n:?}"))
            })
            .collect::<Result<_, _>>()?,
        None => SCENARIOS.to_vec(),
    };
    let work = std::env::temp_dir().join(format!("xfwd-perf-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755));
    }
    let sockdir = work.join("sockets");
    std::fs::create_dir_all(&sockdir).map_err(|e| e.to_string())?;
    let mut env = Env {
        loadgen: me.clone(),
        work: work.clone(),
        sockdir,
        ps_bulk: free_port()?,
        ps_idle: free_port()?,
        ps_auth: free_port()?,
        px: free_port()?,
        ph_bulk: free_port()?,
        ph_idle: free_port()?,
        ph_auth: free_port()?,
        pxp: free_port()?,
        xfwd: None,
        haproxy: None,
        xpra: None,
        idle_server: None,
        auth_server: None,
        notes: Vec::new(),
        duration,
        cores: a.cores,
        xfwd_cmd: None,
    };
    eprintln!("perf: work dir {}", work.display());
    // long-lived sessions: idle (no draws) and auth (no draws, a password)
    let idle_sock = env.session_socket(DISPLAY_IDLE);
    env.idle_server = Some(env.start_server(
        "session-idle",
        &[
            "--draw-rate=0".into(),
            format!("--socket-dir={}", env.sockdir.display()),
            format!("--display={DISPLAY_IDLE}"),
        ],
        &[env.ps_idle],
        Some(&idle_sock),
    )?);
    env.auth_server = Some(env.start_server(
        "session-auth",
        &[
            "--draw-rate=0".into(),
            format!("--password={PASSWORD}"),
            format!("--display={DISPLAY_IDLE}"),
        ],
        &[env.ps_auth],
        None,
    )?);
    // the proxies
    let mut not_measured: BTreeMap<String, String> = BTreeMap::new();
    if targets.contains(&Target::Xfwd) {
        if let Err(e) = start_xfwd(&mut env, &xfwd_bin, a.cores) {
            not_measured.insert("xfwd".into(), e);
        }
    }
    if targets.contains(&Target::Haproxy) {
        if let Err(e) = start_haproxy(&mut env, a.cores) {
            not_measured.insert("haproxy".into(), e);
        }
    }
    if targets.contains(&Target::Xpra) {
        if let Err(e) = start_xpra(&mut env, &a.xpra_user) {
            not_measured.insert("xpra".into(), e);
        }
    }
    targets.retain(|t| !not_measured.contains_key(t.name()));
    for (t, why) in &not_measured {
        eprintln!("perf: {t} not measured: {why}");
    }
    let start_failed = !not_measured.is_empty();
    // results[scenario][target][metric] = values per round
    type Runs = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>;
    let mut results: Runs = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    // connection failures are data, not errors, but their logs are worth keeping
    let mut keep_logs = false;
    for sc in &scenarios {
        let mut bulk: Option<Proc> = None;
        if let Kind::Bulk { draw_size, .. } = sc.kind {
            bulk = Some(start_bulk(&env, draw_size)?);
        } else if let Kind::LatencyBulk | Kind::SlowReader = sc.kind {
            bulk = Some(start_bulk(&env, 262_144)?);
        }
        for round in 0..rounds {
            let mut order = targets.clone();
            let n = order.len().max(1);
            order.rotate_left(round % n);
            for t in order {
                if matches!(sc.kind, Kind::Idle) && t == Target::Xpra {
                    continue;
                }
                eprint!("perf: {} round {} {:<8} ", sc.name, round + 1, t.name());
                let _ = std::io::stderr().flush();
                match measure(&mut env, sc, t, round) {
                    Ok(m) => {
                        eprintln!("{}", short(sc.kind, &m));
                        if m.get("connections_failed").copied().unwrap_or(0.0) > 0.0 {
                            keep_logs = true;
                        }
                        let slot = results
                            .entry(sc.name.to_owned())
                            .or_default()
                            .entry(t.name().to_owned())
                            .or_default();
                        for (k, v) in m {
                            slot.entry(k).or_default().push(v);
                        }
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failures.push(format!(
                            "{} / {} round {}: {e}",
                            sc.name,
                            t.name(),
                            round + 1
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
                // a proxy that died is not measured further
                for (name, p) in [
                    ("xfwd", &mut env.xfwd),
                    ("haproxy", &mut env.haproxy),
                    ("xpra", &mut env.xpra),
                ] {
                    if let Some(proc) = p {
                        if !proc.alive() {
                            failures.push(format!("{name} exited during {}", sc.name));
                            *p = None;
                        }
                    }
                }
            }
        }
        drop(bulk);
    }
    if targets.contains(&Target::Xpra) && scenarios.iter().any(|s| matches!(s.kind, Kind::Idle)) {
        not_measured.insert(
            "xpra (idle)".into(),
            "xpra 3.1's proxy forks one process per connection (about 20 MB each) and accepts at most 200 by default; \
             1,000 would need about 20 GB"
                .into(),
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    // stop everything before writing the report
    env.xpra = None;
    env.xfwd = None;
    env.haproxy = None;
    env.idle_server = None;
    env.auth_server = None;
    let report = build_report(
        &a,
        &scenarios,
        &results,
        &not_measured,
        &failures,
        &env.notes,
        rounds,
        duration,
        elapsed,
    );
    std::fs::create_dir_all(&a.out).map_err(|e| e.to_string())?;
    let json_path = a.out.join("report.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    let md = render_markdown(&report);
    let md_path = a.out.join("report.md");
    std::fs::write(&md_path, md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    eprintln!(
        "perf: wrote {} and {} in {elapsed:.0} s",
        md_path.display(),
        json_path.display()
    );
    if failures.is_empty() && !start_failed && !keep_logs {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("perf: logs kept in {}", work.display());
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} measurement(s) failed (see the report)",
            failures.len()
        ));
    }
    Ok(())
}

fn start_bulk(env: &Env, draw_size: usize) -> Result<Proc, String> {
    let sock = env.session_socket(DISPLAY_BULK);
    env.start_server(
        "session-bulk",
        &[
            format!("--draw-size={draw_size}"),
            "--draw-rate=max".into(),
            format!("--socket-dir={}", env.sockdir.display()),
            format!("--display={DISPLAY_BULK}"),
        ],
        &[env.ps_bulk],
        Some(&sock),
    )
}

fn short(kind: Kind, m: &BTreeMap<String, f64>) -> String {
    let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let integrity = format!(
        "ok {} failed {} lost {} corrupt {}",
        g("connections_ok"),
        g("connections_failed"),
        g("lost"),
        g("corrupt")
    );
    match kind {
        Kind::Bulk { .. } => format!(
            "{:.1} MB/s {:.0} packets/s proxy cpu {:.2} s  [{integrity}]",
            g("bytes_per_s") / 1e6,
            g("packets_per_s"),
            g("proxy_cpu_s")
        ),
        Kind::LatencyIdle | Kind::LatencyBulk => format!(
            "rtt p50 {:.0} us p99 {:.0} us ({} echoes)  [{integrity}]",
            g("rtt_p50_us"),
            g("rtt_p99_us"),
            g("rtt_count")
        ),
        Kind::Idle => format!(
            "rss/conn {:.1} KiB, ramp {:.2} s  [{integrity}]",
            g("rss_per_conn_kib"),
            g("ramp_s")
        ),
        Kind::SlowReader => format!(
            "rss growth {:.0} KiB at {:.1} MB/s  [{integrity}]",
            g("rss_growth_kib"),
            g("bytes_per_s") / 1e6
        ),
        Kind::Handshake { .. } => format!(
            "{:.0}/s p50 {:.0} us p99 {:.0} us  [{integrity}]",
            g("handshakes_per_s"),
            g("handshake_p50_us"),
            g("handshake_p99_us")
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    a: &PerfArgs,
    scenarios: &[Scenario],
    results: &BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>,
    not_measured: &BTreeMap<String, String>,
    failures: &[String],
    notes: &[String],
    rounds: usize,
    duration: f64,
    elapsed: f64,
) -> Json {
    let mut out_sc = serde_json::Map::new();
    for sc in scenarios {
        let Some(per_target) = results.get(sc.name) else {
            continue;
        };
        let mut targets = serde_json::Map::new();
        let mut medians: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
        for (t, metrics) in per_target {
            let mut tm = serde_json::Map::new();
            for (k, vals) in metrics {
                let mut v = vals.clone();
                let med = median(&mut v);
                let min = v.first().copied().unwrap_or(f64::NAN);
                let max = v.last().copied().unwrap_or(f64::NAN);
                tm.insert(
                    k.clone(),
                    json!({"median": med, "min": min, "max": max, "runs": vals}),
                );
                medians
                    .entry(t.as_str())
                    .or_default()
                    .insert(k.as_str(), med);
            }
            targets.insert(t.clone(), Json::Object(tm));
        }
        let mut ratios = serde_json::Map::new();
        for (metric, higher) in primary(sc.kind) {
            for t in per_target.keys() {
                let Some(v) = medians.get(t.as_str()).and_then(|m| m.get(metric)) else {
                    continue;
                };
                for base in ["direct", "haproxy"] {
                    if base == t {
                        continue;
                    }
                    if let Some(b) = medians.get(base).and_then(|m| m.get(metric)) {
                        if *b > 0.0 && v.is_finite() {
                            ratios.insert(
                                format!("{metric}.{t}/{base}"),
                                json!({"ratio": v / b, "higher_is_better": higher}),
                            );
                        }
                    }
                }
            }
        }
        out_sc.insert(
            sc.name.to_owned(),
            json!({"title": sc.title, "primary": primary(sc.kind).iter().map(|(m, h)| json!({"metric": m, "higher_is_better": h})).collect::<Vec<_>>(), "targets": targets, "ratios": ratios}),
        );
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "generated_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "host": {
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "kernel": kernel.trim(),
            "hostname": crate::proto::hostname(),
        },
        "mode": if a.quick { "quick" } else { "full" },
        "rounds": rounds,
        "duration_s": duration,
        "xfwd_cores": a.cores,
        "idle_connections": a.idle_connections,
        "elapsed_s": elapsed,
        "scenarios": out_sc,
        "not_measured": not_measured,
        "failures": failures,
        "notes": notes,
    })
}

fn fmt_metric(metric: &str, v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    match metric {
        "bytes_per_s" | "load_bytes_per_s" => format!("{:.0} MB/s", v / 1e6),
        "packets_per_s" | "handshakes_per_s" => format!("{v:.0}/s"),
        m if m.ends_with("_us") => format!("{v:.0} us"),
        m if m.ends_with("_kib") => format!("{v:.1} KiB"),
        "proxy_cpu_s_per_gb" => format!("{v:.2} s/GB"),
        "proxy_ctx_switches_per_packet" => format!("{v:.3}"),
        _ => format!("{v:.2}"),
    }
}

/// report.md from report.json's content.
pub fn render_markdown(r: &Json) -> String {
    let mut md = String::new();
    let p = |md: &mut String, s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    p(&mut md, "# Side-by-side performance report".into());
    p(&mut md, String::new());
    p(
        &mut md,
        format!(
            "Generated by `perf/run{}` on a {}-CPU machine (kernel {}), {} rounds of {} s per measurement, \
             targets interleaved in a rotated order each round; xfwd `--cores {}` and HAProxy `nbthread {}`; \
             took {:.0} s. Medians, with min–max over the rounds. Ratios are medians over medians \
             (for RTT, memory and setup time lower is better).",
            if r["mode"] == "quick" { " --quick" } else { "" },
            r["host"]["cpus"],
            r["host"]["kernel"].as_str().unwrap_or("?"),
            r["rounds"],
            r["duration_s"],
            r["xfwd_cores"],
            r["xfwd_cores"],
            f(r, &["elapsed_s"])
        ),
    );
    p(&mut md, String::new());
    // summary of ratios
    p(&mut md, "## Summary: ratios of medians".into());
    p(&mut md, String::new());
    p(&mut md, "| scenario | metric | xfwd/direct | xfwd/haproxy | haproxy/direct | xpra/direct | xpra/haproxy |".into());
    p(&mut md, "|---|---|---|---|---|---|---|".into());
    if let Some(scs) = r["scenarios"].as_object() {
        for (name, sc) in scs {
            for pm in sc["primary"].as_array().into_iter().flatten() {
                let m = pm["metric"].as_str().unwrap_or("");
                let get = |k: &str| {
                    sc["ratios"][format!("{m}.{k}")]["ratio"]
                        .as_f64()
                        .map_or("-".to_owned(), |v| format!("{v:.2}"))
                };
                let row = [
                    get("xfwd/direct"),
                    get("xfwd/haproxy"),
                    get("haproxy/direct"),
                    get("xpra/direct"),
                    get("xpra/haproxy"),
                ];
                if row.iter().all(|c| c == "-") {
                    continue;
                }
                p(&mut md, format!("| {name} | {m} | {} |", row.join(" | ")));
            }
        }
    }
    p(&mut md, String::new());
    if let Some(scs) = r["scenarios"].as_object() {
        for (name, sc) in scs {
            p(
                &mut md,
                format!("## {name}: {}", sc["title"].as_str().unwrap_or("")),
            );
            p(&mut md, String::new());
            let mut cols: Vec<&str> = sc["primary"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["metric"].as_str())
                .collect();
            for extra in [
                "rss_growth_kib",
                "proxy_cpu_s_per_gb",
                "proxy_ctx_switches_per_packet",
                "proxy_cpu_s",
                "load_bytes_per_s",
                "rss_before_kib",
                "rss_after_kib",
                "ramp_s",
                "client_cpu_s",
            ] {
                let present = sc["targets"]
                    .as_object()
                    .is_some_and(|t| t.values().any(|tm| tm.get(extra).is_some()));
                if present && !cols.contains(&extra) {
                    cols.push(extra);
                }
            }
            p(
                &mut md,
                format!(
                    "| target | {} | ok / failed | lost / reordered / corrupt |",
                    cols.join(" | ")
                ),
            );
            p(
                &mut md,
                format!("|---|{}---|---|", "---|".repeat(cols.len())),
            );
            for (t, tm) in sc["targets"].as_object().into_iter().flatten() {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| match tm.get(*c) {
                        Some(v) => format!(
                            "{} ({}–{})",
                            fmt_metric(c, f(v, &["median"])),
                            fmt_metric(c, f(v, &["min"])),
                            fmt_metric(c, f(v, &["max"]))
                        ),
                        None => "-".into(),
                    })
                    .collect();
                let sum = |k: &str| {
                    tm.get(k)
                        .and_then(|v| v["runs"].as_array())
                        .map_or(0.0, |a| a.iter().filter_map(Json::as_f64).sum::<f64>())
                };
                p(
                    &mut md,
                    format!(
                        "| {t} | {} | {} / {} | {} / {} / {} |",
                        cells.join(" | "),
                        sum("connections_ok"),
                        sum("connections_failed"),
                        sum("lost"),
                        sum("reordered"),
                        sum("corrupt")
                    ),
                );
            }
            p(&mut md, String::new());
        }
    }
    if let Some(nm) = r["not_measured"].as_object() {
        if !nm.is_empty() {
            p(&mut md, "## Not measured".into());
            p(&mut md, String::new());
            for (k, v) in nm {
                p(&mut md, format!("- {k}: {}", v.as_str().unwrap_or("")));
            }
            p(&mut md, String::new());
        }
    }
    if let Some(fl) = r["failures"].as_array() {
        if !fl.is_empty() {
            p(&mut md, "## Failed measurements".into());
            p(&mut md, String::new());
            for x in fl {
                p(&mut md, format!("- {}", x.as_str().unwrap_or("")));
            }
            p(&mut md, String::new());
        }
    }
    md
}
