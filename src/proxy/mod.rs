//! The sans-IO connection core, as quinn-proto is: one [`Connection`] state
//! machine per client, from its first xpra bytes to its close. It takes
//! events (bytes from a side, a timer, an auth or route result, a connect
//! result, the end of relaying, a stop) with the time passed in, and
//! returns actions (bytes to a side, a blocking job to run, a destination
//! to connect to, the relay to start, close). It knows nothing of sockets,
//! executors or clocks; `engine/` drives it, and `tests/proxy_core.rs`
//! drives it in memory with a simulated clock.
//!
//! The life cycle and its table (state × event × timeout) are in
//! docs/engine.md. The front door (TLS, HTTP, WebSocket, PROXY headers)
//! happens before: it decides which byte stream the connection runs on
//! (`transport/` holds its sans-IO parts).

mod connection;
pub mod direction;
mod error;
pub mod link;
pub mod oneshot;
mod plan;
pub mod video;

pub use connection::{
    Action, ConnConfig, Connection, Event, Identity, Phase, PumpEnd, RelayEnd, RelayStart,
    CLIENT_GONE, SERVER_SHUTDOWN, SESSION_CLOSED, SESSION_LOST, START_DISABLED, START_NOT_LOCAL,
};
pub use direction::{
    Batch, CutEnd, Direction, ForwardAll, Injected, Intercepts, PacketHook, Verdict,
};
pub use error::{ConnError, Side};
pub use oneshot::{Reachable, Request};
pub use plan::{upstream_hello, Destination, Plan};

use bytes::BytesMut;

use crate::wire::header::Encoder;
use crate::wire::packet::{self, EncodeOptions};
use crate::wire::Value;

/// Encodes `items` with `encoder` (uncompressed) into wire bytes.
pub fn encode_items(items: &[Value], encoder: Encoder) -> Result<BytesMut, packet::PacketError> {
    let records = packet::encode_packet(items, &EncodeOptions::plain(encoder))?;
    let mut out = BytesMut::new();
    for r in &records {
        r.write_to(&mut out);
    }
    Ok(out)
}
