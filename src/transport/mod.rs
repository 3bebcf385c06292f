//! Transports, sans-IO: what the engine needs to serve xpra over more than
//! plain TCP, as bytes in and decisions or bytes out. Nothing here opens a
//! socket or needs an executor; `http` reads file metadata, `tls` reads PEM
//! files.
//!
//! - [`sniff`](mod@sniff): classify a connection's first bytes (xpra, TLS, HTTP,
//!   PROXY v1/v2, other), as xpra's server does;
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers and the
//!   `--proxy-protocol-from` CIDR list;
//! - [`http`]: bounded HTTP/1.x head parsing, response heads, the
//!   `--html` static-file decisions and the `/xfwd/sessions` JSON;
//! - [`websocket`]: RFC 6455 handshakes (server and client), a streaming
//!   frame decoder and an encoder;
//! - [`tls`]: rustls server configuration (reloadable) and upstream client
//!   configuration;
//! - [`fuzzing`]: the invariants the `fuzz/` targets check.
//!
//! `docs/transports.md` describes the flow the engine drives.

pub mod db_tls;
pub mod fuzzing;
pub mod http;
pub mod proxy_protocol;
pub mod sniff;
pub mod tls;
pub mod websocket;

pub use sniff::{sniff, sniff_final, Sniffed, SNIFF_MAX};
