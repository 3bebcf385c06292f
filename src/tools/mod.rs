//! Command-line tools built on the library (`xfwd wire ...`, `xfwd auth ...`,
//! `xfwd list|info|stop`).

pub mod auth_sqlite;
pub mod control;
pub mod wire_decode;
