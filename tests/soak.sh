#!/usr/bin/env bash
# The crash cycle for long, outside CI: the kill -9 crash test, the
# all-paths kill -9 test (every ingest path at once, with background work
# at short intervals; tests/e2e/crash.rs) and the power-loss test on the
# forgetful FUSE file system (tests/e2e/power.rs), each for a number of
# cycles or a time, whichever ends first. Each prints one line per cycle and
# then its totals: cycles, acknowledged rows (all present exactly once),
# rows in doubt, and the slowest recovery (restart until ready). CI runs 20,
# 20 and 10 cycles.
#
# Usage: tests/soak.sh [cycles] [seconds]   (default: 1000 cycles, no time limit)
# The power-loss test starts on a new disk every SEXTANT_POWER_ROUND cycles
# (default 25 here), as each cycle reads back every row written so far.
# Needs root and /dev/fuse for the power-loss half. Environment as for the
# tests: CARGO_TARGET_DIR, SEXTANT_CRASH_SEED to replay a seed.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-1000}
seconds=${2:-}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sextant/target}"
# The same build as tests/run-all.sh (other targets unify other features,
# and would build everything again).
cargo build --quiet --workspace --all-targets
export SEXTANT_CRASH_CYCLES=$cycles SEXTANT_PATHS_CYCLES=$cycles SEXTANT_POWER_CYCLES=$cycles
export SEXTANT_POWER_ROUND="${SEXTANT_POWER_ROUND:-25}"
if [ -n "$seconds" ]; then
  export SEXTANT_CRASH_SECONDS=$seconds
fi
log=$(mktemp /tmp/sextant-soak.XXXXXX)
run() {
  local started
  started=$(date +%s)
  cargo test --quiet -p sextant-tests --test e2e -- --exact "$1" --nocapture >>"$log" 2>&1 || {
    tail -n 60 "$log"
    echo "soak: $1 FAILED (whole output in $log)"
    exit 1
  }
  echo "soak: $1 passed in $(( $(date +%s) - started )) s"
}
run crash::acknowledged_writes_survive_kill9
run crash::every_ingest_path_survives_kill9_amid_background_work
run power::acknowledged_writes_survive_power_loss
grep -E '^(crash test|all-paths crash test|power-loss test)' "$log" | grep -v -E 'seed|flush statements|in-doubt'
echo "soak: every cycle's line is in $log"
