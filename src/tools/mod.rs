//! Command-line tools built on the library (`xfwd wire ...`, `xfwd auth ...`,
//! `xfwd list|info|stop`, and the hidden `xfwd generate`).

pub mod auth_mysql;
pub mod auth_postgresql;
pub mod auth_sqlite;
pub mod control;
pub mod generate;
pub mod wire_decode;
