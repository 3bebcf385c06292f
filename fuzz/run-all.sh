#!/usr/bin/env bash
# Runs every cargo-fuzz target in turn, SECONDS each (default 30), through
# fuzz/run-wire-only.sh, and prints one summary line per target (executions,
# corpus size, crash or not). Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); without them it says so and exits 0, so CI
# on stable can call it unconditionally.
#
#   fuzz/run-all.sh [SECONDS]
#
# Exit status: 1 if any target found a crash (see fuzz/artifacts/TARGET).
set -uo pipefail
seconds=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run-all.sh: no nightly toolchain or cargo-fuzz here; not fuzzing"
  exit 0
fi
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$here/Cargo.toml" | grep -v '^xfwd-fuzz$')
failed=0
for t in $targets; do
  log=$(mktemp)
  if "$here/run-wire-only.sh" "$t" "$seconds" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
  fi
  # libFuzzer's last status line: "#N DONE cov: .. corp: ..", or the crash
  summary=$(grep -E '^#[0-9]+' "$log" | tail -1)
  echo "$t: $status ${summary:-$(tail -1 "$log")}"
  [ "$status" = ok ] || grep -E 'ERROR|panicked|Test unit written' "$log" | head -5
  rm -f "$log"
done
exit $failed
