//! Hang detectors (issue 9): xfwd with `--cores 2` under an xpra-like load.
//!
//! - `ack_windowed_load_never_stalls`: a session that keeps at most 128
//!   draws of 256 KiB un-acknowledged (`loadgen server --window`), clients
//!   that acknowledge every 32 draws (`--ack-every`) and ping every 20 ms,
//!   as xpra's do; the client's watchdog must see no connection go without
//!   data for over a second while it expects some. Then xfwd must stop on
//!   SIGTERM within 3 s.
//! - `sigterm_under_load_stops_within_3s`: start xfwd, load it, SIGTERM it
//!   during the load: it must exit 0 within 3 s. `XFWD_STOP_CYCLES`
//!   (default 6) says how many times, `XFWD_STOP_LOAD_SECS` (default 6) how
//!   long each load runs. Odd cycles carry one ack-windowed
//!   connection with pings (one shard busy, the other idle: the shape that
//!   hung the glommio engine most often), even ones a bulk mix (4
//!   free-running connections, 2 ack-windowed).
//!
//! The bounds (1 s without data, 3 s to stop) are hang detectors, generous
//! on purpose, not timing assertions. `XFWD_BIN` runs them against another
//! xfwd build (see docs/loadgen.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::*;

/// One at a time: both load the machine, and on 2 cores two of them at
/// once would measure each other.
static SERIAL: Mutex<()> = Mutex::new(());

const DRAWS: [&str; 2] = ["--draw-size=262144", "--draw-rate=max"];

#[test]
fn ack_windowed_load_never_stalls() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let session: Vec<&str> = DRAWS.iter().copied().chain(["--window=128"]).collect();
    let mut s = Setup::start(
        Setup::scratch("ack-window"),
        "41",
        &session,
        "allow",
        &["--cores=2".to_owned()],
    );
    let (code, r) = s.client(
        "ack",
        "u:any",
        "41",
        &[
            "--connections=3",
            "--duration=10",
            "--ack-every=32",
            "--ping-interval=20",
            "--stall-ms=1000",
            "--fail-on-stall",
        ],
    );
    let ctx = format!("{r:#}\n{}", s.logs());
    assert_eq!(n(&r, &["connections_ok"]), 3, "{ctx}");
    assert_eq!(n(&r, &["connections_dropped"]), 0, "{ctx}");
    assert!(n(&r, &["draws"]) > 0, "{ctx}");
    assert!(n(&r, &["acks_sent"]) > 0, "{ctx}");
    assert!(n(&r, &["rtt_us", "count"]) > 0, "pings were echoed: {ctx}");
    assert_eq!(
        n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
        0,
        "{ctx}"
    );
    assert_eq!(
        n(&r, &["stalls"]),
        0,
        "a connection went over 1 s without data while expecting it \
         (longest wait {} ms): {ctx}",
        n(&r, &["max_stall_ms"])
    );
    assert_eq!(code, 0, "{ctx}");
    stop_within_3s(&mut s.xfwd, "after the ack-windowed run");
}

/// SIGTERMs xfwd; it must exit 0 within 3 s (else it is killed, and what
/// its threads were waiting in is part of the failure).
fn stop_within_3s(xfwd: &mut Proc, when: &str) -> Duration {
    let pid = xfwd.child.id();
    let sent = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let Some(status) = wait_exit(xfwd, Duration::from_secs(3)) else {
        let threads = threads_of(pid);
        let _ = xfwd.child.kill();
        let _ = xfwd.child.wait();
        panic!(
            "{when}: xfwd did not exit within 3 s of SIGTERM (killed); its threads \
             then:\n{threads}\nxfwd log:\n{}",
            xfwd.log()
        );
    };
    assert!(
        status.success(),
        "{when}: xfwd exited with {status} after SIGTERM\n{}",
        xfwd.log()
    );
    sent.elapsed()
}

fn cycles() -> usize {
    std::env::var("XFWD_STOP_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
        .max(1)
}

fn load_time() -> Duration {
    let secs = std::env::var("XFWD_STOP_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(6.0);
    Duration::from_secs_f64(secs.min(600.0))
}

/// What the threads of a process are waiting in (for a hang report).
fn threads_of(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let syscall = read("syscall");
        let nr = syscall.split_whitespace().next().unwrap_or("?");
        out.push_str(&format!(
            "  thread {} {}: wchan {} syscall {nr}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan").trim(),
        ));
    }
    out
}

/// Waits up to `limit` for `p` to exit; its status, or `None`.
fn wait_exit(p: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The clients of one cycle; they run well past the SIGTERM.
fn load_clients(dir: &Path, port: u16, cycle: usize, load: Duration) -> Vec<(String, Proc)> {
    let dur = format!("--duration={}", load.as_secs() + 30);
    let free = format!("free-{cycle}");
    let acked = format!("acked-{cycle}");
    if cycle % 2 == 1 {
        return vec![(
            acked.clone(),
            spawn_client(
                dir,
                port,
                "43",
                &acked,
                &[
                    "--connections=1",
                    &dur,
                    "--ack-every=32",
                    "--ping-interval=20",
                    "--stall-ms=0",
                ],
            ),
        )];
    }
    vec![
        (
            free.clone(),
            spawn_client(
                dir,
                port,
                "42",
                &free,
                &["--connections=4", &dur, "--stall-ms=0"],
            ),
        ),
        (
            acked.clone(),
            spawn_client(
                dir,
                port,
                "43",
                &acked,
                &[
                    "--connections=2",
                    &dur,
                    "--ack-every=32",
                    "--ping-interval=20",
                    "--stall-ms=0",
                ],
            ),
        ),
    ]
}

#[test]
fn sigterm_under_load_stops_within_3s() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Setup::scratch("sigterm");
    let _free = start_session(&dir, "42", &DRAWS, "session-free.log");
    let windowed: Vec<&str> = DRAWS.iter().copied().chain(["--window=128"]).collect();
    let _acked = start_session(&dir, "43", &windowed, "session-acked.log");
    let (cycles, load) = (cycles(), load_time());
    for cycle in 1..=cycles {
        let log = format!("xfwd-{cycle}.log");
        let (mut xfwd, port) = start_xfwd(&dir, "allow", &["--cores=2".to_owned()], &log);
        let mut clients = load_clients(&dir, port, cycle, load);
        // the load runs (clients connect in the first few ms)
        std::thread::sleep(load);
        let took = stop_within_3s(&mut xfwd, &format!("cycle {cycle}/{cycles}, under load"));
        eprintln!(
            "cycle {cycle}/{cycles}: xfwd stopped {} ms after SIGTERM",
            took.as_millis()
        );
        // the clients end once xfwd has closed their connections; their
        // reports show the load was real
        for (tag, mut p) in clients.drain(..) {
            let _ = wait_exit(&mut p, Duration::from_secs(10));
            drop(p);
            let r = report(&dir, &tag);
            let draws = r.as_ref().map_or(0, |r| n(r, &["draws"]));
            assert!(
                draws > 0,
                "cycle {cycle}: client {tag} got no draws before the SIGTERM: {r:#?}\n{}",
                xfwd.log()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A session straight on TCP (no xfwd): its port.
fn direct_session(dir: &Path, args: &[&str], log: &str) -> (Proc, u16) {
    let mut p = Proc::start(
        std::process::Command::new(loadgen())
            .args(["server", "--listen=tcp://127.0.0.1:0"])
            .args(args),
        dir.join(log),
    );
    let mut port = 0u16;
    wait_for(
        || {
            port = p_port(&dir.join(log)).unwrap_or(0);
            port != 0
        },
        "the session to listen",
        &mut p,
    );
    (p, port)
}

fn p_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("listening on tcp://"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// The tool checks itself: a windowed session and a client that never
/// acks stop after one window, and the watchdog says so (exit 4); acking
/// every 32 with a window of 20 (not a multiple, smaller) does not
/// deadlock, thanks to the idle ack.
#[test]
fn watchdog_and_idle_ack_work_without_a_proxy() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Setup::scratch("watchdog");
    let (_s, port) = direct_session(
        &dir,
        &["--window=20", "--draw-size=4096", "--draw-rate=max"],
        "session.log",
    );
    let run = |tag: &str, args: &[&str]| {
        let mut p = Proc::start(
            std::process::Command::new(loadgen())
                .arg("client")
                .arg(format!("--connect=tcp://127.0.0.1:{port}"))
                .arg(format!(
                    "--json={}",
                    dir.join(format!("{tag}.json")).display()
                ))
                .args(["--quiet", "--threads=1", "--connections=2", "--duration=2"])
                .args(args),
            dir.join(format!("{tag}.log")),
        );
        let st = wait_exit(&mut p, Duration::from_secs(20)).expect("the client ends");
        let r = report(&dir, tag).expect("a report");
        (st.code(), r, p.log())
    };
    let (code, r, log) = run("noack", &["--stall-ms=500", "--fail-on-stall"]);
    let ctx = format!("{r:#}\n{log}");
    assert_eq!(n(&r, &["draws"]), 40, "one window per connection: {ctx}");
    assert_eq!(n(&r, &["stalls"]), 2, "{ctx}");
    assert!(n(&r, &["max_stall_ms"]) > 500, "{ctx}");
    assert_eq!(code, Some(4), "{ctx}");

    let (code, r, log) = run("idle-ack", &["--ack-every=32", "--fail-on-stall"]);
    let ctx = format!("{r:#}\n{log}");
    assert!(
        n(&r, &["draws"]) > 40,
        "acks opened the window again: {ctx}"
    );
    assert!(n(&r, &["acks_sent"]) > 2, "{ctx}");
    assert_eq!(n(&r, &["stalls"]), 0, "{ctx}");
    assert_eq!(
        n(&r, &["lost"]) + n(&r, &["reordered"]) + n(&r, &["corrupt"]),
        0,
        "{ctx}"
    );
    assert_eq!(code, Some(0), "{ctx}");
    let _ = std::fs::remove_dir_all(&dir);
}
