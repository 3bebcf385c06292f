//! `xpra info` and `xpra stop` aimed at the control socket
//! (`xpra info socket:///run/xfwd/control-PID.sock`).
//!
//! A client whose first byte is `P` (an xpra packet header) is taken as
//! xpra: its hello (read within the pre-authentication limits and the
//! read deadline) says what it wants:
//!
//! - `request=info` (or `info_request`): a `hello` whose capabilities are
//!   the server's state and its connections (the same facts as
//!   `xfwd info`), then the connection ends;
//! - `request=stop` (or `stop_request`): a `hello` that says
//!   `client-shutdown`; when the client then sends `shutdown-server`, it is
//!   told `server shutdown` and the server stops as on SIGTERM;
//! - anything else (an `attach`): a `disconnect` saying what this socket
//!   is for.
//!
//! The socket's permission checks come first, as for every client.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{Ctx, ServerInfo, READ_DEADLINE, WRITE_DEADLINE};
use crate::engine::registry::ConnInfo;
use crate::proxy::oneshot::Request;
use crate::wire::frame::{FrameDecoder, Limits};
use crate::wire::header::{Encoder, Rules};
use crate::wire::packet::{Assembler, Packet};
use crate::wire::views::{Close, Hello};
use crate::wire::Value;

/// What a non-request client is told.
const NOT_HERE: &str =
    "this is xfwd's control socket: only xpra info and xpra stop are answered here";

/// The next packet, or `None` at end of stream or on any error.
async fn next_packet(
    stream: &mut UnixStream,
    dec: &mut FrameDecoder,
    asm: &mut Assembler,
    limits: &Limits,
) -> Option<Packet> {
    let mut buf = [0u8; 4096];
    loop {
        while let Some(r) = dec.next_record().ok()? {
            if let Some(p) = asm.push(&r, limits).ok()? {
                return Some(p);
            }
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        dec.feed(buf.get(..n)?);
    }
}

async fn send(stream: &mut UnixStream, items: &[Value], encoder: Encoder) -> bool {
    let Ok(out) = crate::proxy::encode_items(items, encoder) else {
        return false;
    };
    matches!(
        tokio::time::timeout(WRITE_DEADLINE, stream.write_all(&out)).await,
        Ok(Ok(()))
    )
}

/// Serves one xpra client whose first bytes are `first`. Returns whether
/// the server is to stop.
pub(super) async fn serve(stream: &mut UnixStream, first: Vec<u8>, ctx: &Ctx) -> bool {
    let limits = Limits::pre_hello();
    let mut dec = FrameDecoder::new(Rules::Any, limits);
    let mut asm = Assembler::new();
    dec.feed(&first);
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    let Ok(Some(hello)) =
        tokio::time::timeout_at(deadline, next_packet(stream, &mut dec, &mut asm, &limits)).await
    else {
        return false;
    };
    // Answer in the encoder the client used (yaml is not written here).
    let encoder = match hello.encoder {
        Encoder::Yaml => Encoder::Bencode,
        e => e,
    };
    // Read as the core reads one-shot requests (`request` or the legacy
    // `<mode>_request` flags, in xpra's order).
    let request = Hello::parse(&hello.items)
        .ok()
        .and_then(|h| Request::of(&h));
    match request {
        Some(Request::Info { .. }) => {
            let Ok(conns) = ctx.list(None).await else {
                send(stream, &Close::new(["server error"]).to_items(), encoder).await;
                return false;
            };
            let info = info_caps(&ctx.server_info(conns.len()), &conns);
            tracing::debug!("control socket: xpra info");
            send(stream, &[Value::from("hello"), info], encoder).await;
            let _ = stream.shutdown().await;
            false
        }
        Some(Request::Stop) => {
            if !send(stream, &[Value::from("hello"), stop_caps(encoder)], encoder).await {
                return false;
            }
            // The client asks once more, with `shutdown-server`.
            let deadline = tokio::time::Instant::now() + READ_DEADLINE;
            loop {
                let next = tokio::time::timeout_at(
                    deadline,
                    next_packet(stream, &mut dec, &mut asm, &limits),
                )
                .await;
                match next {
                    Ok(Some(p)) if p.packet_type() == Some("shutdown-server") => break,
                    Ok(Some(_)) => continue,
                    _ => return false,
                }
            }
            tracing::info!("control socket: server stop requested (xpra stop)");
            send(stream, &Close::new(["server shutdown"]).to_items(), encoder).await;
            let _ = stream.shutdown().await;
            true
        }
        _ => {
            send(stream, &Close::new([NOT_HERE]).to_items(), encoder).await;
            false
        }
    }
}

fn kv(k: &str, v: Value) -> (Value, Value) {
    (Value::from(k), v)
}

fn secs_ms(s: f64) -> Value {
    // Whole milliseconds: every encoder writes integers.
    Value::uint((s * 1000.0) as u64)
}

/// The capabilities of the hello that answers `xpra stop`.
fn stop_caps(encoder: Encoder) -> Value {
    Value::Dict(vec![
        kv("version", Value::from(crate::proxy::link::VERSION)),
        kv("client-shutdown", Value::Bool(true)),
        kv(encoder.name(), Value::Bool(true)),
        kv("bencode", Value::Bool(true)),
        kv(
            "compressors",
            Value::List(vec![Value::from("lz4"), Value::from("zlib")]),
        ),
        kv("lz4", Value::Bool(true)),
        kv("zlib", Value::Bool(true)),
    ])
}

/// The server's state as xpra info capabilities: `server.*` and
/// `connection.ID.*` (xpra flattens the nesting with dots).
fn info_caps(server: &ServerInfo, conns: &[ConnInfo]) -> Value {
    let s = Value::Dict(vec![
        kv("type", Value::from("xfwd")),
        kv("version", Value::from(server.version.as_str())),
        kv("uuid", Value::from(server.uuid.as_str())),
        kv("hostname", Value::from(server.hostname.as_str())),
        kv("pid", Value::uint(u64::from(server.pid))),
        kv("start_time", Value::uint(server.started)),
        kv("uptime", secs_ms(server.uptime_s)),
        kv("shards", Value::uint(server.shards as u64)),
        kv(
            "listeners",
            Value::List(
                server
                    .listeners
                    .iter()
                    .map(|l| Value::from(l.as_str()))
                    .collect(),
            ),
        ),
        kv(
            "control-socket",
            Value::from(server.control_socket.as_str()),
        ),
        kv("connections", Value::uint(server.connections as u64)),
    ]);
    let c = Value::Dict(
        conns
            .iter()
            .map(|c| (Value::from(c.id.to_string()), conn_caps(c)))
            .collect(),
    );
    Value::Dict(vec![kv("server", s), kv("connection", c)])
}

fn conn_caps(c: &ConnInfo) -> Value {
    let opt = |v: &Option<String>| Value::from(v.as_deref().unwrap_or(""));
    let dir = |bytes: u64, packets: u64| {
        Value::Dict(vec![
            kv("bytes", Value::uint(bytes)),
            kv("packets", Value::uint(packets)),
        ])
    };
    let mut d = vec![
        kv("shard", Value::uint(c.shard as u64)),
        kv("peer", Value::from(c.peer.as_str())),
        kv("transport", Value::from(c.transport.as_str())),
        kv("user", opt(&c.user)),
        kv("target", opt(&c.target)),
        kv("phase", Value::from(c.phase.as_str())),
        kv("age", secs_ms(c.age_s)),
        kv("start_time", Value::uint(c.started)),
        kv(
            "client-to-server",
            dir(c.client_to_session_bytes, c.client_to_session_packets),
        ),
        kv(
            "server-to-client",
            dir(c.session_to_client_bytes, c.session_to_client_packets),
        ),
    ];
    let mut latency = Vec::new();
    if let Some(ms) = c.latency_client_ms {
        latency.push(kv("client", Value::uint(ms)));
    }
    if let Some(ms) = c.latency_session_ms {
        latency.push(kv("server", Value::uint(ms)));
    }
    d.push(kv("latency", Value::Dict(latency)));
    Value::Dict(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::packet::{self, EncodeOptions};

    #[test]
    fn info_encodes_in_every_encoder() {
        let server = ServerInfo {
            version: "0.1.0".into(),
            uuid: "u".into(),
            hostname: "h".into(),
            pid: 7,
            started: 1,
            uptime_s: 2.5,
            shards: 2,
            listeners: vec!["tcp:127.0.0.1:1".into()],
            control_socket: "/x".into(),
            connections: 1,
        };
        let conn = ConnInfo {
            id: 3,
            shard: 1,
            peer: "p".into(),
            transport: "tcp".into(),
            user: Some("alice".into()),
            target: None,
            host_key: None,
            phase: "relaying".into(),
            age_s: 1.0,
            started: 1,
            client_to_session_bytes: 10,
            client_to_session_packets: 1,
            session_to_client_bytes: 20,
            session_to_client_packets: 2,
            latency_client_ms: Some(3),
            latency_session_ms: None,
        };
        let items = vec![Value::from("hello"), info_caps(&server, &[conn])];
        for e in [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode] {
            let records = packet::encode_packet(&items, &EncodeOptions::plain(e)).unwrap();
            let p = packet::decode_main(&records[0], &Limits::default()).unwrap();
            let h = Hello::parse(&p.items).unwrap();
            let server = h.get("server").unwrap().as_dict().unwrap();
            assert!(server
                .iter()
                .any(|(k, v)| k.as_str() == Some("uptime") && v.as_int() == Some(2500)));
            assert!(h.get("connection").is_some());
        }
        let stop = [Value::from("hello"), stop_caps(Encoder::Rencode)];
        assert!(packet::encode_packet(&stop, &EncodeOptions::plain(Encoder::Bencode)).is_ok());
    }
}
