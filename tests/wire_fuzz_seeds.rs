//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) and the
//! inputs fuzzing found (`fuzz/regressions/<target>/`) through the same
//! checks the cargo-fuzz targets run, so `cargo test` keeps them passing
//! without a nightly toolchain.

use std::path::PathBuf;

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
