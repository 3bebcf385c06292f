//! xfwd: a fast proxy server for xpra sessions.
//!
//! - [`wire`]: sans-IO xpra protocol (no sockets, no executor);
//! - [`auth`]: auth modules and challenges;
//! - [`sessions`]: finding and choosing sessions;
//! - [`config`]: options to a typed configuration;
//! - [`cluster`]: the cluster view (nodes and their connections in PostgreSQL);
//! - [`engine`]: the shards (one pinned runtime per core) that accept, route and relay;
//! - [`video`]: transcoding raw-pixel sessions to h264 (encoder workers);
//! - [`tools`]: command-line tools on top of the library.

#![deny(unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod fdpass;
pub mod privilege;
pub mod process;
pub mod proxy;
pub mod sessions;
pub mod tools;
pub mod transport;
pub mod video;
pub mod wire;
