//! Command-line tools built on the library (`xfwd wire ...`, `xfwd auth ...`).

pub mod auth_sqlite;
pub mod wire_decode;
