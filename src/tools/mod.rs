//! Command-line tools built on the library (`xfwd wire ...`).

pub mod wire_decode;
