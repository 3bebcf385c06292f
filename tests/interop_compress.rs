//! Cross-implementation checks of `xfwd::wire::compress` against the real
//! Python libraries xpra uses (python-lz4, zlib, brotli), run through
//! `/usr/bin/python3`, and against the `zstd` command-line tool.
//!
//! A missing Python module fails the test with a message saying what to
//! install, unless `XFWD_SKIP_INTEROP=1` is set (then the test prints a note
//! and passes). A missing `zstd` binary only skips the zstd CLI part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use xfwd::wire::compress::{compress, decompress, decompress_prefix};
use xfwd::wire::Compressor;

const PYTHON: &str = "/usr/bin/python3";
const MIB: usize = 1024 * 1024;

/// Reads stdin, applies the operation named by argv[1], writes stdout.
const HELPER: &str = r#"
import sys
op = sys.argv[1]
data = sys.stdin.buffer.read()
if op == "lz4-c":
    import lz4.block
    out = lz4.block.compress(data, store_size=True)
elif op == "lz4-d":
    import lz4.block
    out = lz4.block.decompress(data)
elif op == "zlib-c":
    import zlib
    out = zlib.compress(data, int(sys.argv[2]))
elif op == "zlib-d":
    import zlib
    out = zlib.decompress(data)
elif op == "brotli-c":
    import brotli
    out = brotli.compress(data, quality=int(sys.argv[2]))
elif op == "brotli-d":
    import brotli
    out = brotli.decompress(data)
else:
    raise SystemExit("unknown op " + op)
sys.stdout.buffer.write(out)
"#;

fn skip_requested() -> bool {
    std::env::var("XFWD_SKIP_INTEROP").is_ok_and(|v| v == "1")
}

/// Checks that `/usr/bin/python3` can import `module`. Panics with a clear
/// message if not, or returns false (skip) under `XFWD_SKIP_INTEROP=1`.
fn require_python_module(module: &str, package: &str) -> bool {
    let status = Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let why = match status {
        Ok(s) if s.success() => return true,
        Ok(_) => format!("{PYTHON} cannot import {module}"),
        Err(e) => format!("cannot run {PYTHON}: {e}"),
    };
    if skip_requested() {
        eprintln!("note: skipping {module} interop test ({why}; XFWD_SKIP_INTEROP=1)");
        return false;
    }
    panic!(
        "{why}. Install it (Debian: apt-get install {package}) or set \
         XFWD_SKIP_INTEROP=1 to skip the Python interop tests."
    );
}

/// Runs the Python helper with `args`, feeding `input`; returns stdout.
fn python(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(HELPER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    // Feed stdin from a thread so a large output cannot deadlock us.
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(n: usize) -> Vec<u8> {
    let words = "[\"draw\", 1, 0, 0, 640, 480, \"rgb24\", b'...', 17, {\"zlib\": 1}] ".as_bytes();
    words.iter().copied().cycle().take(n).collect()
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 1 MiB of compressible data: repeated text with some noise mixed in.
fn compressible() -> Vec<u8> {
    let mut v = text(MIB);
    for (i, b) in noise(MIB / 64, 99).into_iter().enumerate() {
        v[i * 64] = b;
    }
    v
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("text", text(5000)),
        ("random", noise(100_000, 42)),
        ("1 MiB compressible", compressible()),
        ("1 MiB zeros", vec![0u8; MIB]),
    ]
}

/// Python compresses, Rust decompresses (whole and prefix); Rust
/// compresses, Python decompresses.
fn check_both_ways(c: Compressor, py_compress: &[&str], py_decompress: &str, rust_level: u8) {
    for (name, data) in samples() {
        let z = python(py_compress, &data);
        let out = decompress(c, &z, data.len()).unwrap_or_else(|e| panic!("{c} {name}: {e}"));
        assert!(out == data, "{c} {name}: python -> rust differs");
        if !data.is_empty() {
            assert!(
                matches!(
                    decompress(c, &z, data.len() - 1),
                    Err(xfwd::wire::compress::CompressError::TooLarge { .. })
                ),
                "{c} {name}: limit not enforced"
            );
        }
        for want in [0, 1, 64, 1000, data.len() + 1] {
            let p = decompress_prefix(c, &z, want).unwrap();
            assert!(
                p[..] == data[..want.min(data.len())],
                "{c} {name}: prefix {want} differs"
            );
        }

        let z = compress(c, rust_level, &data).unwrap();
        let back = python(&[py_decompress], &z);
        assert!(back == data, "{c} {name}: rust -> python differs");
    }
}

#[test]
fn lz4_with_python_lz4() {
    if !require_python_module("lz4.block", "python3-lz4") {
        return;
    }
    check_both_ways(Compressor::Lz4, &["lz4-c"], "lz4-d", 1);
    // python-lz4's own byte layout: u32 LE size, then the block.
    let z = python(&["lz4-c"], b"hello hello hello hello");
    assert_eq!(&z[..4], &23u32.to_le_bytes());
}

#[test]
fn zlib_with_python_zlib() {
    if !require_python_module("zlib", "python3") {
        return;
    }
    for level in ["1", "6", "9"] {
        check_both_ways(Compressor::Zlib, &["zlib-c", level], "zlib-d", 6);
    }
    for level in [1u8, 9, 15] {
        let data = text(20_000);
        let z = compress(Compressor::Zlib, level, &data).unwrap();
        assert_eq!(python(&["zlib-d"], &z), data, "rust level {level}");
    }
}

#[test]
fn brotli_with_python_brotli() {
    if !require_python_module("brotli", "python3-brotli") {
        return;
    }
    // Quality 11 is xpra's and python-brotli's default; Rust compresses at a
    // lower quality here because quality 11 is slow in debug builds.
    for quality in ["1", "11"] {
        check_both_ways(Compressor::Brotli, &["brotli-c", quality], "brotli-d", 5);
    }
    let data = text(20_000);
    let z = compress(Compressor::Brotli, 11, &data).unwrap();
    assert_eq!(python(&["brotli-d"], &z), data, "rust quality 11");
}

/// Runs the `zstd` CLI with `args` on `input`; None if there is no `zstd`.
fn zstd_cli(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = match Command::new("zstd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run zstd: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "zstd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[test]
fn zstd_round_trip_and_cli() {
    let c = Compressor::Zstd;
    for (name, data) in samples() {
        for level in [1u8, 3, 15] {
            let z = compress(c, level, &data).unwrap();
            assert!(decompress(c, &z, data.len()).unwrap() == data, "{name}");
            let p = decompress_prefix(c, &z, 64).unwrap();
            assert!(p[..] == data[..data.len().min(64)], "{name}");
        }
    }
    if zstd_cli(&["--version"], b"").is_none() {
        eprintln!("note: no `zstd` binary on PATH; skipping the zstd CLI checks");
        return;
    }
    for (name, data) in samples() {
        // From stdin the CLI does not know the size: streamed frames.
        for level in ["-1", "-3", "-19"] {
            let z = zstd_cli(&["-q", "-c", level], &data).unwrap();
            let out = decompress(c, &z, data.len()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(out == data, "cli {level} {name}: cli -> rust differs");
            let p = decompress_prefix(c, &z, 100).unwrap();
            assert!(p[..] == data[..data.len().min(100)], "{name}");
        }
        let z = compress(c, 3, &data).unwrap();
        let back = zstd_cli(&["-q", "-d", "-c"], &z).unwrap();
        assert!(back == data, "{name}: rust -> cli differs");
    }
}
