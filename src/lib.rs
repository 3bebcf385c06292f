//! xfwd: a fast proxy server for xpra sessions.
//!
//! See `docs/` for the user guide and `../shared/docs/architecture.md` in the
//! steering repo for the house plan.

#![forbid(unsafe_code)]

pub mod wire;
