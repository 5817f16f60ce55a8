#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time, starting
# from the committed corpus (fuzz/corpus/<target>); new inputs go to a
# temporary directory, so the checkout is left as it was. A crash fails the
# run, and libFuzzer prints the input that caused it (save it under
# fuzz/corpus/<target> once fixed, so it is tried every time).
#
# Environment: FUZZ_SECONDS (per target, default 20), FUZZ_TARGET_DIR
# (where the instrumented build goes; default ~/.cache/sextant/fuzz-target,
# outside the clone so CI keeps it between runs).
#
# cargo-fuzz is installed if missing. It runs on the stable toolchain with
# --sanitizer none (the sanitizers need nightly): panics, aborts, timeouts
# and runaway memory are still caught.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/sextant/fuzz-target}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
targets=$(cargo fuzz list --fuzz-dir fuzz)
cargo fuzz build --fuzz-dir fuzz --sanitizer none --release --target-dir "$target_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in $targets; do
  mkdir -p "$work/$t"
  echo "fuzz: $t for ${seconds}s (corpus fuzz/corpus/$t)"
  set +e
  cargo fuzz run --fuzz-dir fuzz --sanitizer none --release --target-dir "$target_dir" "$t" \
    "$work/$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$work/$t.log" 2>&1
  status=$?
  set -e
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|INFO: seed corpus)" "$work/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$work/$t.log"
    echo "fuzz: $t failed (exit $status); the input is under fuzz/artifacts/$t"
    exit 1
  fi
done
echo "fuzz: all targets ran ${seconds}s without a crash"
