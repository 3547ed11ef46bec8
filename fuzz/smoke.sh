#!/usr/bin/env bash
# Runs every fuzz target for a short time (20 s, or $1) from its committed corpus: CI's
# smoke run (fuzz/README.md). A crash fails the script and leaves its input in artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# instrumented builds kept beside the others (CI's cache survives its clean clones)
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
cargo +nightly fuzz build -O --target-dir "$target_dir"
for t in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$t"
  # new inputs go to a scratch directory: the committed corpus changes only by hand
  scratch=$(mktemp -d)
  echo "fuzzing $t for ${seconds}s"
  log="$scratch.log"
  if ! cargo +nightly fuzz run -O --target-dir "$target_dir" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz target $t failed; its input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" || true
  rm -rf "$scratch" "$log"
done
