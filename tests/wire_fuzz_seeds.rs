//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) and the
//! inputs fuzzing found (`fuzz/regressions/<target>/`) through the same
//! checks the cargo-fuzz targets run (the wire targets and the transport
//! ones), so `cargo test` keeps them passing without a nightly toolchain.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use xfwd::transport::fuzzing as transport;
use xfwd::wire::fuzzing;

fn replay(dir: &str, target: &str, check: fn(&[u8])) -> usize {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return 0;
    };
    let mut n = 0;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for file in files {
        let data =
            std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        eprintln!("{}", file.display());
        check(&data);
        n += 1;
    }
    n
}

fn run(target: &str, check: fn(&[u8])) {
    let seeds = replay("seeds", target, check);
    assert!(seeds > 0, "no seeds for {target} in fuzz/seeds/{target}");
    replay("regressions", target, check);
}

#[test]
fn frame() {
    run("frame", fuzzing::frame);
}

#[test]
fn rencodeplus() {
    run("rencodeplus", fuzzing::rencodeplus);
}

#[test]
fn rencode() {
    run("rencode", fuzzing::rencode_legacy);
}

#[test]
fn bencode() {
    run("bencode", fuzzing::bencode);
}

#[test]
fn budget() {
    run("budget", fuzzing::budget);
}

#[test]
fn proxy_protocol() {
    run("proxy_protocol", transport::proxy_protocol);
}

#[test]
fn sniff() {
    run("sniff", transport::sniff);
}

#[test]
fn websocket() {
    run("websocket", transport::websocket);
}

#[test]
fn http() {
    run("http", transport::http);
}

/// The PROXY seeds cover what the brief of the target says: v1 TCP4, TCP6
/// and UNKNOWN headers, v2 ones with TLVs and LOCAL, headers still
/// incomplete, and refusals.
#[test]
fn proxy_protocol_seeds_cover_the_forms() {
    use xfwd::transport::proxy_protocol::{parse, Command, Parsed, Version};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/proxy_protocol");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let kind = match parse(&data) {
            Ok(Parsed::NeedMore) => "incomplete",
            Err(_) => "refused",
            Ok(Parsed::Done(h)) => match (h.version, h.command, h.source) {
                (Version::V1, _, None) => "v1 unknown",
                (Version::V1, _, Some(a)) if a.is_ipv4() => "v1 tcp4",
                (Version::V1, _, Some(_)) => "v1 tcp6",
                (Version::V2, Command::Local, _) => "v2 local",
                (Version::V2, _, _) if h.consumed < data.len() => "v2 with data after",
                (Version::V2, _, _) if h.consumed > 16 + 36 => "v2 with tlvs or unix",
                (Version::V2, _, _) => "v2",
            },
        };
        seen.insert(kind);
    }
    for kind in [
        "incomplete",
        "refused",
        "v1 unknown",
        "v1 tcp4",
        "v1 tcp6",
        "v2 local",
        "v2 with data after",
        "v2 with tlvs or unix",
        "v2",
    ] {
        assert!(seen.contains(kind), "no {kind} seed: {seen:?}");
    }
}
