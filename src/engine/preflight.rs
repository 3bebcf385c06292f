//! Checks made before any executor starts, so that a machine that cannot run
//! glommio gets a sentence saying why and what to change, not a panic.

use nix::sys::resource::{getrlimit, Resource};

/// Locked memory glommio needs at least (it refuses to start below this).
pub const MIN_MEMLOCK: u64 = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = {0}); \
         xfwd needs it: run `sysctl -w kernel.io_uring_disabled=0` as root"
    )]
    IoUringDisabled(String),
    #[error(
        "the locked-memory limit is {have} KiB; xfwd's io_uring executors need at least {need} KiB: \
         raise it with `ulimit -l 8192` (or LimitMEMLOCK=8M in a systemd unit, memlock in \
         /etc/security/limits.conf)"
    )]
    Memlock { have: u64, need: u64 },
}

/// Reads `kernel.io_uring_disabled`: `0` allows everyone, `1` only members
/// of `kernel.io_uring_group` (and root), `2` nobody.
pub fn check_io_uring_sysctl() -> Result<(), PreflightError> {
    let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") else {
        return Ok(()); // older kernels have no such switch
    };
    let v = v.trim();
    let root = nix::unistd::geteuid().is_root();
    match v {
        "2" => Err(PreflightError::IoUringDisabled(v.to_owned())),
        "1" if !root => {
            tracing::warn!(
                "kernel.io_uring_disabled = 1: only members of kernel.io_uring_group may use io_uring"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks the locked-memory limit.
pub fn check_memlock() -> Result<(), PreflightError> {
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft < MIN_MEMLOCK => Err(PreflightError::Memlock {
            have: soft / 1024,
            need: MIN_MEMLOCK / 1024,
        }),
        _ => Ok(()),
    }
}

/// Runs every check.
pub fn check() -> Result<(), PreflightError> {
    check_io_uring_sysctl()?;
    check_memlock()
}

/// Turns an executor start failure into advice.
pub fn explain_start_error(e: &str) -> String {
    let lower = e.to_ascii_lowercase();
    if lower.contains("memlock") || lower.contains("cannot allocate memory") {
        format!(
            "cannot start an io_uring executor ({e}): the locked-memory limit is too low; \
             raise it with `ulimit -l 8192`"
        )
    } else if lower.contains("operation not permitted")
        || lower.contains("function not implemented")
    {
        format!(
            "cannot start an io_uring executor ({e}): io_uring is unavailable (an old kernel, \
             kernel.io_uring_disabled, or a seccomp filter such as a container's)"
        )
    } else {
        format!("cannot start an io_uring executor: {e}")
    }
}
