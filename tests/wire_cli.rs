//! `xfwd wire decode`, run as a user would: the built binary on the
//! captured hellos, on standard input, on a hand-built stream with a raw
//! chunk and binary strings, on a malformed stream and on a missing file.
//!
//! Every line printed must be JSON: a small parser here reads them, and
//! Python's `json` module (`/usr/bin/python3`) checks them independently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use bytes::Bytes;

use xfwd::wire::frame::Record;
use xfwd::wire::header::{Compressor, Encoder};
use xfwd::wire::packet::{self, EncodeOptions};
use xfwd::wire::Value;

// ---------------------------------------------------------------------------
// running the tool

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn xfwd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xfwd"))
}

fn decode_file(path: &str) -> Output {
    xfwd().args(["wire", "decode", path]).output().unwrap()
}

fn decode_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = xfwd()
        .args(["wire", "decode"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // write from a thread: the tool prints while it still reads
    let writer = std::thread::spawn(move || {
        // the tool may stop reading early on an error
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn stdout_lines(out: &Output) -> Vec<Json> {
    let text = std::str::from_utf8(&out.stdout).expect("stdout is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output ends mid-line: {text:?}"
    );
    python_accepts(text);
    text.lines()
        .map(|l| parse_json(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Python's `json` module reads every line.
fn python_accepts(text: &str) {
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", "import json,sys; [json.loads(l) for l in sys.stdin]"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "python's json refused: {text}"
    );
}

fn stream(packets: &[(Vec<Value>, EncodeOptions)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (items, opts) in packets {
        for r in packet::encode_packet(items, opts).unwrap() {
            out.extend_from_slice(&r.to_bytes());
        }
    }
    out
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

// ---------------------------------------------------------------------------
// a small JSON reader, enough to check the tool's lines

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    /// The number's text, as printed.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(pairs) => pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn has(&self, key: &str) -> bool {
        matches!(self, Json::Obj(pairs) if pairs.iter().any(|(k, _)| k == key))
    }

    fn at(&self, i: usize) -> &Json {
        match self {
            Json::Arr(items) => &items[i],
            _ => panic!("not an array: {self:?}"),
        }
    }

    fn len(&self) -> usize {
        match self {
            Json::Arr(items) => items.len(),
            Json::Obj(pairs) => pairs.len(),
            _ => panic!("no length: {self:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    fn num(&self) -> &str {
        match self {
            Json::Num(s) => s,
            _ => panic!("not a number: {self:?}"),
        }
    }
}

fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing text at {}", p.i));
    }
    Ok(v)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }

    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 200 {
            return Err("too deep".into());
        }
        self.ws();
        match self.s.get(self.i) {
            None => Err("unexpected end".into()),
            Some(b'n') => self.lit("null", Json::Null),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut pairs = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(pairs));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    let v = self.value(depth + 1)?;
                    pairs.push((k, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(pairs));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                self.i += 1;
                while matches!(
                    self.s.get(self.i),
                    Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                ) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                let digits = text.trim_start_matches('-');
                if digits.is_empty()
                    || (digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."))
                {
                    return Err(format!("bad number {text}"));
                }
                Ok(Json::Num(text.to_owned()))
            }
            Some(c) => Err(format!("unexpected {:?} at {}", *c as char, self.i)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("bad \\u")?;
                            self.i += 4;
                            let n = u32::from_str_radix(std::str::from_utf8(hex).unwrap(), 16)
                                .map_err(|e| e.to_string())?;
                            // the tool escapes control characters only
                            char::from_u32(n).ok_or("surrogate escape")?
                        }
                        _ => return Err(format!("bad escape {:?}", e as char)),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err("raw control character in a string".into()),
                c => out.push(c),
            }
        }
    }
}

#[test]
fn json_reader_reads_what_it_should() {
    let v = parse_json(r#" {"a":[1,-2.5e3,"x\"\u0001",{"b64":"/wA="},null,true,false],"b":{}} "#)
        .unwrap();
    assert_eq!(v.get("a").len(), 7);
    assert_eq!(v.get("a").at(1).num(), "-2.5e3");
    assert_eq!(v.get("a").at(2).str(), "x\"\u{1}");
    assert_eq!(v.get("a").at(3).get("b64").str(), "/wA=");
    assert_eq!(v.get("b").len(), 0);
    for bad in ["", "{", "[1,]", "{\"a\"}", "\"\n\"", "01", "[1] x", "tru"] {
        assert!(parse_json(bad).is_err(), "{bad:?}");
    }
}

// ---------------------------------------------------------------------------
// the captured hellos

fn check_one_hello(out: &Output, encoder: &str, compression: &str) -> Json {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout_lines(out);
    assert_eq!(lines.len(), 1, "one packet, one line");
    let line = lines.into_iter().next().unwrap();
    assert_eq!(line.len(), 4, "type, encoder, compression, packet");
    assert_eq!(line.get("type").str(), "hello");
    assert_eq!(line.get("encoder").str(), encoder);
    assert_eq!(line.get("compression").str(), compression);
    let packet = line.get("packet");
    assert_eq!(packet.len(), 2);
    assert_eq!(packet.at(0).str(), "hello");
    line
}

#[test]
fn decodes_the_xpra31_hello() {
    let path = data("hello-xpra31-client.bin");
    let out = decode_file(path.to_str().unwrap());
    let line = check_one_hello(&out, "rencode", "zlib");
    let caps = line.get("packet").at(1);
    assert!(caps.get("version").str().starts_with("3.1"));
    assert_eq!(caps.get("display").str(), ":100");
    assert_eq!(caps.get("username").str(), "xuser");
    assert_eq!(caps.len(), 218);
}

#[test]
fn decodes_the_xpra6_hello() {
    let path = data("hello-xpra6-client.bin");
    let out = decode_file(path.to_str().unwrap());
    let line = check_one_hello(&out, "rencodeplus", "lz4");
    let caps = line.get("packet").at(1);
    assert!(caps.get("version").str().starts_with("6."));
    assert_eq!(caps.get("session").get("display").str(), "110");
    assert_eq!(caps.get("encoders").at(0).str(), "rencodeplus");
    assert_eq!(caps.len(), 74);
}

#[test]
fn reads_standard_input() {
    for name in ["hello-xpra31-client.bin", "hello-xpra6-client.bin"] {
        let bytes = std::fs::read(data(name)).unwrap();
        let from_file = decode_file(data(name).to_str().unwrap());
        let from_stdin = decode_stdin(&["-"], &bytes);
        assert!(from_stdin.status.success());
        assert_eq!(from_stdin.stdout, from_file.stdout, "{name}");
        // `-` is the default
        let default = decode_stdin(&[], &bytes);
        assert!(default.status.success());
        assert_eq!(default.stdout, from_file.stdout, "{name}");
    }
    // both hellos back to back, in one stream
    let mut both = std::fs::read(data("hello-xpra31-client.bin")).unwrap();
    both.extend(std::fs::read(data("hello-xpra6-client.bin")).unwrap());
    let out = decode_stdin(&["-"], &both);
    assert!(out.status.success());
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].get("encoder").str(), "rencode");
    assert_eq!(lines[1].get("encoder").str(), "rencodeplus");
}

#[test]
fn empty_input_prints_nothing() {
    let out = decode_stdin(&["-"], b"");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

// ---------------------------------------------------------------------------
// a hand-built stream

fn opts(encoder: Encoder, compressor: Compressor, chunk_threshold: Option<usize>) -> EncodeOptions {
    EncodeOptions {
        compressor,
        level: 1,
        min_compress: 0,
        chunk_threshold,
        ..EncodeOptions::plain(encoder)
    }
}

/// Pixels that are not UTF-8.
fn pixels(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| 0x80 | (i % 97) as u8).collect::<Vec<_>>())
}

#[test]
fn several_packets_with_a_raw_chunk_and_binary_strings() {
    let px = pixels(20_000);
    let packets = vec![
        (
            vec![
                Value::from("draw"),
                Value::Int(1),
                Value::Int(10),
                Value::Int(20),
                Value::Int(100),
                Value::Int(50),
                Value::from("rgb24"),
                Value::Bytes(px.clone()),
                Value::Int(3),
                Value::Int(300),
                Value::Dict(vec![(Value::from("zlib"), Value::Int(0))]),
            ],
            opts(Encoder::Rencodeplus, Compressor::None, Some(4096)),
        ),
        (
            vec![
                Value::from("ping"),
                Value::Int(1_700_000_000_000),
                Value::Bytes(Bytes::from_static(b"\xff\x00")),
                Value::Bytes(Bytes::from_static(b"utf-8 bytes")),
                Value::Float(0.5),
                Value::None,
                Value::Bool(false),
                Value::BigInt("123456789012345678901234567890".into()),
            ],
            opts(Encoder::Rencodeplus, Compressor::Lz4, None),
        ),
        (
            vec![
                Value::from("cursor"),
                Value::Bytes(Bytes::from_static(b"\xc3\x28 not utf-8")),
                Value::Int(-5),
            ],
            opts(Encoder::Rencode, Compressor::Zlib, None),
        ),
        (
            vec![
                Value::from("sound-data"),
                Value::from("opus"),
                Value::Bytes(pixels(2000)),
            ],
            opts(Encoder::Bencode, Compressor::Brotli, Some(1000)),
        ),
        (
            vec![Value::from("ping_echo"), Value::from("tab\tquote\"é")],
            opts(Encoder::Rencodeplus, Compressor::Zstd, None),
        ),
    ];
    let input = stream(&packets);
    let out = decode_stdin(&["-"], &input);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 5, "one line per packet, none per raw chunk");

    let draw = &lines[0];
    assert_eq!(draw.get("type").str(), "draw");
    assert_eq!(draw.get("encoder").str(), "rencodeplus");
    assert_eq!(draw.get("compression").str(), "none");
    let p = draw.get("packet");
    assert_eq!(p.len(), 11);
    // the raw chunk is back in its place
    assert_eq!(p.at(7).get("b64").str(), b64(&px));
    assert_eq!(p.at(6).str(), "rgb24");
    assert_eq!(p.at(10).get("zlib").num(), "0");

    let ping = &lines[1];
    assert_eq!(ping.get("compression").str(), "lz4");
    let p = ping.get("packet");
    assert_eq!(p.at(1).num(), "1700000000000");
    assert_eq!(p.at(2).get("b64").str(), "/wA=");
    assert_eq!(p.at(3).str(), "utf-8 bytes");
    assert_eq!(p.at(4).num(), "0.5");
    assert_eq!(p.at(5), &Json::Null);
    assert_eq!(p.at(6), &Json::Bool(false));
    assert_eq!(p.at(7).num(), "123456789012345678901234567890");

    let cursor = &lines[2];
    assert_eq!(cursor.get("encoder").str(), "rencode");
    assert_eq!(cursor.get("compression").str(), "zlib");
    assert_eq!(cursor.get("type").str(), "cursor");
    assert_eq!(
        cursor.get("packet").at(1).get("b64").str(),
        b64(b"\xc3\x28 not utf-8")
    );
    assert_eq!(cursor.get("packet").at(2).num(), "-5");

    let sound = &lines[3];
    assert_eq!(sound.get("encoder").str(), "bencode");
    assert_eq!(sound.get("compression").str(), "brotli");
    assert_eq!(sound.get("packet").at(1).str(), "opus");
    assert_eq!(
        sound.get("packet").at(2).get("b64").str(),
        b64(&pixels(2000))
    );

    let echo = &lines[4];
    assert_eq!(echo.get("compression").str(), "zstd");
    assert_eq!(echo.get("packet").at(1).str(), "tab\tquote\"é");
}

// ---------------------------------------------------------------------------
// failures

fn good_ping() -> Vec<u8> {
    stream(&[(
        vec![Value::from("ping"), Value::Int(42)],
        EncodeOptions::plain(Encoder::Rencodeplus),
    )])
}

fn check_failure(out: &Output, good_lines: usize) -> Json {
    assert!(!out.status.success(), "a malformed stream must fail");
    let lines = stdout_lines(out);
    assert_eq!(
        lines.len(),
        good_lines + 1,
        "the good packets, then the error"
    );
    for l in &lines[..good_lines] {
        assert_eq!(l.get("type").str(), "ping");
        assert!(!l.has("error"));
    }
    let err = lines[good_lines].clone();
    assert!(!err.get("error").str().is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("xfwd wire decode:"),
        "stderr says why: {stderr}"
    );
    err
}

#[test]
fn good_packet_then_garbage() {
    let mut input = good_ping();
    let good_len = input.len();
    input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let out = decode_stdin(&["-"], &input);
    let err = check_failure(&out, 1);
    assert!(
        err.get("error").str().contains("not an xpra record"),
        "{err:?}"
    );
    assert_eq!(err.get("offset").num(), good_len.to_string());
}

#[test]
fn good_packets_then_a_truncated_record() {
    let mut input = good_ping();
    input.extend(good_ping());
    let cut = good_ping();
    input.extend_from_slice(&cut[..cut.len() - 2]);
    let out = decode_stdin(&["-"], &input);
    let err = check_failure(&out, 2);
    assert!(
        err.get("error").str().contains("ended inside a record"),
        "{err:?}"
    );
}

#[test]
fn good_packet_then_an_undecodable_one() {
    let mut input = good_ping();
    let good_len = input.len();
    // frames fine, but is no rencodeplus value
    input.extend_from_slice(&Record::new(0x10, 0, 0, Bytes::from_static(b"\x2e\x2e")).to_bytes());
    input.extend(good_ping());
    let out = decode_stdin(&["-"], &input);
    let err = check_failure(&out, 1);
    assert!(err.get("error").str().contains("rencodeplus"), "{err:?}");
    assert_eq!(err.get("offset").num(), good_len.to_string());
}

#[test]
fn oversize_record_is_refused() {
    let mut input = good_ping();
    input.extend_from_slice(&[b'P', 0x10, 0, 0, 0, 0, 0x10, 0x01]); // 4097 bytes
    let out = decode_stdin(&["--max-payload", "4096", "-"], &input);
    let err = check_failure(&out, 1);
    assert!(err.get("error").str().contains("4096"), "{err:?}");
}

#[test]
fn missing_file() {
    let path = "/nonexistent/xfwd-test/capture.bin";
    let out = decode_file(path);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open"), "{stderr}");
    assert!(stderr.contains(path), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}
