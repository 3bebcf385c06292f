//! A [`Value`] as JSON text, for tools (`xfwd wire decode`) and logs.
//!
//! Text and UTF-8 byte strings print as JSON strings; other byte strings as
//! `{"b64": "..."}`. Big integers print as JSON numbers. Non-finite floats
//! print as `null`. Dict keys that are not text print as their JSON text.

use std::fmt::Write;

use base64::Engine as _;

use super::value::Value;

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_bytes(out: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => write_str(out, s),
        Err(_) => {
            out.push_str("{\"b64\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push_str("\"}");
        }
    }
}

/// Appends `v` as JSON.
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::BigInt(s) => out.push_str(s),
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Float(_) | Value::None => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) => write_bytes(out, b),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Dict(pairs) => {
            out.push('{');
            for (i, (k, val)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match k.as_str() {
                    Some(s) => write_str(out, s),
                    None => {
                        let mut key = String::new();
                        write_value(&mut key, k);
                        write_str(out, &key);
                    }
                }
                out.push(':');
                write_value(out, val);
            }
            out.push('}');
        }
    }
}

/// `v` as a JSON string.
pub fn to_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn shapes() {
        let v = Value::List(vec![
            Value::from("a\"b\n"),
            Value::Bytes(Bytes::from_static(b"\xff\x00")),
            Value::Bytes(Bytes::from_static(b"ok")),
            Value::Int(-3),
            Value::BigInt("123456789012345678901234".into()),
            Value::Float(1.5),
            Value::Float(f64::NAN),
            Value::Bool(true),
            Value::None,
            Value::Dict(vec![
                (Value::from("k"), Value::Int(1)),
                (Value::Int(2), Value::Int(3)),
            ]),
        ]);
        assert_eq!(
            to_json(&v),
            r#"["a\"b\n",{"b64":"/wA="},"ok",-3,123456789012345678901234,1.5,null,true,null,{"k":1,"2":3}]"#
        );
    }
}
