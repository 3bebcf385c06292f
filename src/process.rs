//! Child processes of xfwd (`exec` auth commands, `xpra start` for
//! sessions started on demand) and the signal mask they must not inherit.
//!
//! The xfwd binary blocks SIGINT, SIGTERM, SIGHUP and SIGUSR2 in every
//! thread, so that its main thread alone takes them (`sigwait`); a child
//! inherits blocked signals across fork and exec. A session started that
//! way ignores `kill` (its Xvfb outlives `xpra stop`), an auth command its
//! SIGTERM. Safe Rust cannot change a child's mask between fork and exec,
//! so where the spawning thread blocks them, [`command`] runs the program
//! through the binary's hidden `xfwd exec-session` ([`exec_unblocked`]),
//! which unblocks every signal and then execs the program in its own place
//! (same pid: a signal sent to the child reaches the program). Where
//! nothing is blocked (the engine embedded in tests), or no helper was set
//! ([`set_helper`], by the binary), the program is run directly.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The helper's subcommand (hidden).
pub const EXEC_SUBCOMMAND: &str = "exec-session";

/// The exit status of the helper when the program cannot be found.
pub const NOT_FOUND: i32 = 127;

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// The xfwd binary, to run children through (set once, by `main`).
pub fn set_helper(binary: PathBuf) {
    let _ = HELPER.set(binary);
}

/// Whether this thread blocks a signal a child must get.
fn signals_blocked() -> bool {
    use nix::sys::signal::{SigSet, Signal};
    SigSet::thread_get_mask().is_ok_and(|m| {
        [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGUSR2,
        ]
        .iter()
        .any(|s| m.contains(*s))
    })
}

/// A command for `program` that starts with no signal blocked; `true`
/// when it goes through the helper (then exit status [`NOT_FOUND`] means
/// the program was not found, which a direct spawn reports as an error).
pub fn command(program: impl AsRef<OsStr>) -> (Command, bool) {
    match HELPER.get().filter(|_| signals_blocked()) {
        Some(helper) => {
            let mut c = Command::new(helper);
            c.arg(EXEC_SUBCOMMAND).arg(program);
            (c, true)
        }
        None => (Command::new(program), false),
    }
}

/// `xfwd exec-session COMMAND...`: unblocks every signal and execs COMMAND
/// (returns only when that fails: [`NOT_FOUND`], or 126 when it cannot be
/// run, 2 without a command).
pub fn exec_unblocked(command: &[OsString]) -> u8 {
    use std::os::unix::process::CommandExt;
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    let Some((program, args)) = command.split_first() else {
        return 2;
    };
    let e = Command::new(program).args(args).exec();
    eprintln!("xfwd: cannot run {}: {e}", program.to_string_lossy());
    if e.kind() == std::io::ErrorKind::NotFound {
        NOT_FOUND as u8
    } else {
        126
    }
}
