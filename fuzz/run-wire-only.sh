#!/usr/bin/env bash
# Runs one cargo-fuzz target against a copy of xfwd that holds only
# src/wire/ and the sans-IO transport decoders (src/transport/ without TLS:
# sniff, PROXY protocol, HTTP, WebSocket), what every target exercises, so
# the fuzz build neither waits for nor breaks on the rest of the crate (the
# engine, TLS, SQLite, ...).
#
#   fuzz/run-wire-only.sh TARGET [SECONDS]      (default 600)
#
# Corpus and artifacts are this checkout's fuzz/corpus/TARGET and
# fuzz/artifacts/TARGET; the corpus starts from fuzz/seeds/TARGET. Runs under
# `nice -n 19` with a 2 GiB RSS limit. The plain equivalent, building the
# whole crate, is `cd fuzz && cargo +nightly fuzz run TARGET`.
set -euo pipefail
target=${1:?usage: $0 TARGET [SECONDS]}
seconds=${2:-600}
repo=$(cd "$(dirname "$0")/.." && pwd)
snap=${XFWD_FUZZ_SNAPSHOT:-/tmp/xfwd-wire-snapshot}

mkdir -p "$snap/src" "$snap/fuzz" "$repo/fuzz/corpus/$target" "$repo/fuzz/artifacts"
rm -rf "$snap/src/wire" "$snap/src/transport" "$snap/fuzz/fuzz_targets"
cp -r "$repo/src/wire" "$snap/src/wire"
mkdir -p "$snap/src/transport"
for m in fuzzing http proxy_protocol sniff websocket; do
  cp "$repo/src/transport/$m.rs" "$snap/src/transport/"
done
cat > "$snap/src/transport/mod.rs" <<'EOF'
//! xfwd's sans-IO transport decoders, TLS left out (see fuzz/run-wire-only.sh).
pub mod fuzzing;
pub mod http;
pub mod proxy_protocol;
pub mod sniff;
pub mod websocket;
EOF
cp -r "$repo/fuzz/fuzz_targets" "$snap/fuzz/"
cp "$repo/fuzz/Cargo.toml" "$snap/fuzz/Cargo.toml"
[ -e "$snap/fuzz/Cargo.lock" ] || { [ -e "$repo/fuzz/Cargo.lock" ] && cp "$repo/fuzz/Cargo.lock" "$snap/fuzz/"; } || true
ln -sfn "$repo/fuzz/corpus" "$snap/fuzz/corpus"
ln -sfn "$repo/fuzz/artifacts" "$snap/fuzz/artifacts"
cat > "$snap/src/lib.rs" <<'EOF'
//! xfwd's wire layer and transport decoders alone, for fuzzing (see
//! fuzz/run-wire-only.sh).
#![deny(unsafe_code)]
pub mod transport;
pub mod wire;
EOF
# The dependencies of those layers, as in the real Cargo.toml.
cat > "$snap/Cargo.toml" <<'EOF'
[package]
name = "xfwd"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
path = "src/lib.rs"

[dependencies]
bytes = "1"
thiserror = "2"
lz4_flex = { version = "0.11", default-features = false, features = ["safe-encode", "safe-decode", "std"] }
flate2 = "1"
brotli = "8"
zstd = "0.13"
base64 = "0.22"
sha1 = "0.10"
getrandom = "0.2"
httpdate = "1"

[workspace]
members = ["."]
exclude = ["fuzz"]
EOF
cp -n "$repo/fuzz/seeds/$target/"* "$repo/fuzz/corpus/$target/" 2>/dev/null || true

cd "$snap/fuzz"
exec nice -n 19 cargo +nightly fuzz run "$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048
