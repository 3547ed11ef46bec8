#!/usr/bin/env bash
# The long run: every fuzz target (or those named in $TARGETS) for $1 seconds (default an
# hour) on one core, from its committed corpus. Prints a Markdown table per target: the CPU
# time it used, libFuzzer's executions and coverage, the inputs it found and whether it
# crashed. The inputs found are kept under the build directory, outside the repository.
# A crash does not stop the run; the script exits 1 at the end if any target crashed.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-3600}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
cargo +nightly fuzz build -O --target-dir "$target_dir"
echo "| target | wall s | CPU s | executions | coverage | inputs found | crashed |"
echo "|---|---|---|---|---|---|---|"
failed=0
for t in ${TARGETS:-$(cargo +nightly fuzz list)}; do
  mkdir -p "corpus/$t"
  found="$target_dir/long-corpus/$t"
  mkdir -p "$found"
  log="$target_dir/long-$t.log"
  crashed=no
  # the binary built above, run directly: `cargo fuzz run` would rebuild first when the
  # sources changed, and /usr/bin/time would count the compiler's CPU as fuzzing
  mkdir -p "artifacts/$t"
  if ! /usr/bin/time -f "%e %U %S" -o "$target_dir/long-$t.time" \
    "$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release/$t" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    "$found" "corpus/$t" >"$log" 2>&1; then
    crashed="yes: fuzz/artifacts/$t/"
    failed=1
  fi
  read -r wall user sys < <(tail -1 "$target_dir/long-$t.time")
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  inputs=$(find "$found" -type f | wc -l)
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", u + s }')
  echo "| $t | ${wall%.*} | $cpu | $execs | $cov | $inputs | $crashed |"
done
exit "$failed"
