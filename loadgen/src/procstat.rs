//! CPU time and memory of other processes (and their children), from /proc.

use std::collections::{HashMap, VecDeque};

fn clk_tck() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Fields of /proc/PID/stat after the command name: (ppid, utime, stime,
/// cutime, cstime) in clock ticks.
fn stat(pid: u32) -> Option<(u32, u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15,
    // cutime 16, cstime 17
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((get(4)? as u32, get(14)?, get(15)?, get(16)?, get(17)?))
}

/// Seconds since boot.
pub fn uptime_s() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Whether `pid` started at or after `since` (seconds since boot). A
/// descendant of a process we started cannot be older than it; an older
/// process has only reused a pid we saw.
pub fn started_after(pid: u32, since: f64) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return false;
    };
    // field 22: starttime, in clock ticks since boot
    rest.split_whitespace()
        .nth(22 - 3)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|t| t as f64 / clk_tck() + 0.5 >= since)
}

/// `pid` and every live descendant.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, ..)) = stat(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut queue = VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        for c in children.get(&p).into_iter().flatten() {
            out.push(*c);
            queue.push_back(*c);
        }
    }
    out
}

/// CPU seconds (user + system) used by `pid`, its live descendants, and
/// the children it has reaped.
pub fn tree_cpu_s(pid: u32) -> f64 {
    let tck = clk_tck();
    let mut ticks = 0u64;
    for p in tree(pid) {
        if let Some((_, u, s, cu, cs)) = stat(p) {
            ticks += u + s + cu + cs;
        }
    }
    ticks as f64 / tck
}

/// Context switches (voluntary and not) of every thread of `pid` and its
/// live descendants (`/proc/PID/task/TID/status`).
pub fn tree_ctxt_switches(pid: u32) -> u64 {
    let mut n = 0;
    for p in tree(pid) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            for l in text.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    n += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    n
}

/// VmRSS of one process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// VmRSS of `pid` and its live descendants, KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(rss_kib).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap_or(0) > 0);
        assert!(tree(me).contains(&me));
        assert!(tree_cpu_s(me) >= 0.0);
        assert!(tree_ctxt_switches(me) > 0);
    }
}
