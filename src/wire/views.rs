//! Typed views of the few packets a proxy reads: `hello`, `challenge` and
//! the close packet (`disconnect`, which xfwd's docs call connection-close).
//!
//! Views borrow the decoded [`Value`]s; builders make the packets xfwd sends.
//! Capabilities are read the way xpra's `typedict` reads them: text and
//! bytes are interchangeable, booleans may be ints.

use bytes::Bytes;

use super::header::{Compressor, Encoder};
use super::value::Value;

/// Name xpra (3.x to 6.x) uses for the packet that closes a connection.
pub const CLOSE_PACKET: &str = "disconnect";
/// Other names accepted for it on input.
pub const CLOSE_PACKET_ALIASES: [&str; 3] = ["disconnect", "connection-close", "connection-lost"];

/// Why a packet does not fit the view asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    #[error("expected a {expected} packet, got {got:?}")]
    WrongType { expected: &'static str, got: String },
    #[error("{packet} packet: {field} is missing or has the wrong type")]
    BadField {
        packet: &'static str,
        field: &'static str,
    },
}

fn type_of(items: &[Value]) -> String {
    match items.first() {
        Some(v) => v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("<{}>", v.kind())),
        None => "<empty>".to_owned(),
    }
}

fn expect_type(items: &[Value], names: &[&str], expected: &'static str) -> Result<(), ViewError> {
    match items.first().and_then(Value::as_str) {
        Some(t) if names.contains(&t) => Ok(()),
        _ => Err(ViewError::WrongType {
            expected,
            got: type_of(items),
        }),
    }
}

/// The capabilities of a `hello` packet.
#[derive(Clone, Copy, Debug)]
pub struct Hello<'a> {
    caps: &'a Value,
}

impl<'a> Hello<'a> {
    /// Views `["hello", caps]`.
    pub fn parse(items: &'a [Value]) -> Result<Hello<'a>, ViewError> {
        expect_type(items, &["hello"], "hello")?;
        match items.get(1) {
            Some(caps @ Value::Dict(_)) => Ok(Hello { caps }),
            _ => Err(ViewError::BadField {
                packet: "hello",
                field: "capabilities",
            }),
        }
    }

    /// The capabilities dict.
    pub fn caps(&self) -> &'a Value {
        self.caps
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.caps.get_path(key)
    }

    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub fn version(&self) -> Option<&'a str> {
        self.str("version")
    }

    pub fn username(&self) -> Option<&'a str> {
        self.str("username").filter(|s| !s.is_empty())
    }

    pub fn uuid(&self) -> Option<&'a str> {
        self.str("uuid")
    }

    /// The encoders the peer accepts, in its order of preference.
    /// Modern peers send an `encoders` list; legacy peers may also send one
    /// boolean per encoder, and every legacy peer takes bencode.
    pub fn encoders(&self) -> Vec<Encoder> {
        let mut out: Vec<Encoder> = self
            .get("encoders")
            .map(Value::as_str_list)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Encoder::from_name)
            .collect();
        for e in [Encoder::Rencodeplus, Encoder::Rencode, Encoder::Bencode] {
            if !out.contains(&e) && self.bool(e.name()) == Some(true) {
                out.push(e);
            }
        }
        out
    }

    /// The compressors the peer accepts.
    pub fn compressors(&self) -> Vec<Compressor> {
        let mut out: Vec<Compressor> = self
            .get("compressors")
            .map(Value::as_str_list)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Compressor::from_name)
            .collect();
        for c in [
            Compressor::Lz4,
            Compressor::Zlib,
            Compressor::Brotli,
            Compressor::Zstd,
        ] {
            let flagged = self.bool(c.name()) == Some(true)
                || self
                    .get(c.name())
                    .and_then(|v| v.get(""))
                    .and_then(Value::as_bool)
                    == Some(true);
            if !out.contains(&c) && flagged {
                out.push(c);
            }
        }
        out
    }

    /// Digests the peer can answer a challenge with.
    pub fn digests(&self) -> Vec<&'a str> {
        self.get("digest")
            .map(Value::as_str_list)
            .unwrap_or_default()
    }

    /// Salt digests the peer supports.
    pub fn salt_digests(&self) -> Vec<&'a str> {
        self.get("salt-digest")
            .map(Value::as_str_list)
            .unwrap_or_default()
    }

    /// The response to our challenge, if this hello carries one.
    pub fn challenge_response(&self) -> Option<&'a [u8]> {
        self.get("challenge_response").and_then(Value::as_bytes)
    }

    /// The client's salt, sent with a challenge response.
    pub fn challenge_client_salt(&self) -> Option<&'a [u8]> {
        self.get("challenge_client_salt").and_then(Value::as_bytes)
    }

    /// The display the client asks for, without the leading `:`.
    /// Legacy clients send `display = ":100"`; modern ones send
    /// `session = {"display": "100"}` (their `display` is a dict of screen
    /// settings).
    pub fn requested_display(&self) -> Option<&'a str> {
        let raw = self
            .get("session")
            .and_then(|s| s.get("display"))
            .and_then(Value::as_str)
            .or_else(|| self.str("display"))?;
        let d = raw.trim_start_matches(':');
        (!d.is_empty()).then_some(d)
    }

    /// A one-shot request (`info`, `id`, `version`, `stop`, ...): the
    /// `request` capability, or a legacy `<mode>_request` flag.
    pub fn request(&self) -> Option<&'a str> {
        if let Some(r) = self.str("request").filter(|r| !r.is_empty()) {
            return Some(r);
        }
        const LEGACY: [&str; 7] = [
            "info",
            "id",
            "version",
            "stop",
            "exit",
            "connect_test",
            "screenshot",
        ];
        let dict = self.caps.as_dict()?;
        LEGACY.into_iter().find(|mode| {
            dict.iter().any(|(k, v)| {
                k.as_str()
                    .and_then(|k| k.strip_suffix("_request"))
                    .is_some_and(|m| m == *mode)
                    && v.as_bool() == Some(true)
            })
        })
    }
}

/// A `challenge` packet:
/// `["challenge", salt, auth_caps, digest, salt_digest, prompt]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    pub salt: Bytes,
    /// Extra capabilities (xpra sends `""` or a dict).
    pub auth_caps: Value,
    pub digest: String,
    pub salt_digest: String,
    pub prompt: String,
}

impl Challenge {
    pub fn parse(items: &[Value]) -> Result<Challenge, ViewError> {
        expect_type(items, &["challenge"], "challenge")?;
        let field = |i: usize, field: &'static str| {
            items.get(i).ok_or(ViewError::BadField {
                packet: "challenge",
                field,
            })
        };
        let text = |i: usize, field: &'static str, default: &str| -> Result<String, ViewError> {
            match items.get(i) {
                None => Ok(default.to_owned()),
                Some(v) => v.as_str().map(str::to_owned).ok_or(ViewError::BadField {
                    packet: "challenge",
                    field,
                }),
            }
        };
        let salt = field(1, "salt")?.as_bytes().ok_or(ViewError::BadField {
            packet: "challenge",
            field: "salt",
        })?;
        Ok(Challenge {
            salt: Bytes::copy_from_slice(salt),
            auth_caps: items.get(2).cloned().unwrap_or(Value::Str(String::new())),
            digest: text(3, "digest", "hmac")?,
            salt_digest: text(4, "salt_digest", "xor")?,
            prompt: text(5, "prompt", "password")?,
        })
    }

    /// The packet items, as xpra's server sends them.
    pub fn to_items(&self) -> Vec<Value> {
        vec![
            Value::from("challenge"),
            Value::Bytes(self.salt.clone()),
            self.auth_caps.clone(),
            Value::from(self.digest.as_str()),
            Value::from(self.salt_digest.as_str()),
            Value::from(self.prompt.as_str()),
        ]
    }
}

/// A close packet: `["disconnect", reason, details...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    pub reasons: Vec<String>,
}

impl Close {
    pub fn parse(items: &[Value]) -> Result<Close, ViewError> {
        expect_type(items, &CLOSE_PACKET_ALIASES, "disconnect")?;
        let reasons = items
            .iter()
            .skip(1)
            .map(|v| match v.as_str() {
                Some(s) => s.to_owned(),
                None => format!("{v:?}"),
            })
            .collect();
        Ok(Close { reasons })
    }

    pub fn new<S: Into<String>>(reasons: impl IntoIterator<Item = S>) -> Close {
        Close {
            reasons: reasons.into_iter().map(Into::into).collect(),
        }
    }

    /// The first reason, or a placeholder.
    pub fn reason(&self) -> &str {
        self.reasons
            .first()
            .map_or("unknown reason", String::as_str)
    }

    pub fn to_items(&self) -> Vec<Value> {
        std::iter::once(Value::from(CLOSE_PACKET))
            .chain(self.reasons.iter().map(|r| Value::from(r.as_str())))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dict(pairs: Vec<(&str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn legacy_hello() {
        let items = vec![
            Value::from("hello"),
            dict(vec![
                ("version", Value::Bytes(Bytes::from_static(b"3.1.3"))),
                ("display", Value::from(":100")),
                ("rencode", Value::Bool(true)),
                ("bencode", Value::Bool(true)),
                (
                    "compressors",
                    Value::List(vec!["zlib".into(), "lz4".into()]),
                ),
                (
                    "digest",
                    Value::List(vec!["hmac+sha256".into(), "xor".into()]),
                ),
                ("info_request", Value::Bool(true)),
            ]),
        ];
        let h = Hello::parse(&items).unwrap();
        assert_eq!(h.version(), Some("3.1.3"));
        assert_eq!(h.requested_display(), Some("100"));
        assert_eq!(h.encoders(), vec![Encoder::Rencode, Encoder::Bencode]);
        assert_eq!(h.compressors(), vec![Compressor::Zlib, Compressor::Lz4]);
        assert_eq!(h.digests(), vec!["hmac+sha256", "xor"]);
        assert_eq!(h.request(), Some("info"));
    }

    #[test]
    fn modern_hello() {
        let items = vec![
            Value::from("hello"),
            dict(vec![
                (
                    "encoders",
                    Value::List(vec!["rencodeplus".into(), "yaml".into()]),
                ),
                ("display", dict(vec![("dpi", Value::Int(96))])),
                ("session", dict(vec![("display", Value::from("110"))])),
                ("request", Value::from("id")),
            ]),
        ];
        let h = Hello::parse(&items).unwrap();
        assert_eq!(h.encoders(), vec![Encoder::Rencodeplus, Encoder::Yaml]);
        assert_eq!(h.requested_display(), Some("110"));
        assert_eq!(h.request(), Some("id"));
    }

    #[test]
    fn challenge_round_trip() {
        let c = Challenge {
            salt: Bytes::from_static(b"0123456789abcdef"),
            auth_caps: Value::Str(String::new()),
            digest: "hmac+sha256".into(),
            salt_digest: "sha512".into(),
            prompt: "password".into(),
        };
        assert_eq!(Challenge::parse(&c.to_items()).unwrap(), c);
    }

    #[test]
    fn close_round_trip_and_aliases() {
        let c = Close::new(["authentication failed", "wrong password"]);
        assert_eq!(Close::parse(&c.to_items()).unwrap(), c);
        let items = vec![Value::from("connection-lost")];
        assert_eq!(Close::parse(&items).unwrap().reason(), "unknown reason");
        assert!(Close::parse(&[Value::from("hello")]).is_err());
    }
}
