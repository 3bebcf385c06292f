//! Local sessions and routing, in one place:
//!
//! - [`router`] (sans-IO): where an authenticated client goes, from the
//!   sessions its auth module offers ([`targets`]: the targets listed in
//!   auth data, parsed) and the display it asked for;
//! - [`discovery`]: the sessions in socket dirs (xpra 3's `HOST-DISPLAY`,
//!   xpra 4's `DISPLAY/socket`), choosing one; [`directory`]: the same,
//!   cached and refreshed by inotify instead of read per connection;
//! - [`access`]: the seams the engine drives, `SessionConnector` (choose
//!   and open a user's session) and `SessionLauncher` (start one), for this
//!   process's own sessions or, in system-wide mode, through the
//!   privileged [`helper`], which acts as each [`user`];
//! - [`launch`]: `xpra start` for sessions started on demand;
//! - [`balance`]: session host pools, the load a node knows of
//!   ([`balance::LoadView`]).
//!
//! The engine (`engine/upstream.rs`) only connects: to a chosen local
//! session's sockets, to a target, or takes the socket the helper
//! connected.

pub mod access;
pub mod balance;
pub mod directory;
pub mod discovery;
pub mod helper;
pub mod launch;
pub mod router;
pub mod targets;
pub mod user;

pub(crate) use discovery::is_display;
pub use discovery::{
    candidates, choose, default_socket_dirs, discover, is_live, live, not_found, LocalSession,
    RouteError,
};
