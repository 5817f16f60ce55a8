#!/usr/bin/env bash
# Runs every test of Sextant: formatting and lints, the Rust unit and
# end-to-end tests (which start the real server), the sqllogictest suite, and
# the Python client tests. Installs what the tests need first (a Python venv
# with the client libraries under .venv, and the Prometheus Debian package).
#
# Environment: CARGO_TARGET_DIR (where cargo builds; CI points it outside the
# clone so dependencies stay built between runs), SEXTANT_CRASH_CYCLES.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "installing test dependencies (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
command -v psql >/dev/null || echo "note: psql not found; the psql test will fail (apt-get install postgresql-client)"
if ! command -v prometheus >/dev/null; then
  # The remote-write test runs the real Prometheus (it starts its own process;
  # the package's system service plays no part).
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "note: prometheus not found and not root; the Prometheus test will fail (sudo apt-get install prometheus)"
  fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building (debug)"
cargo build --workspace --all-targets --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export SEXTANT_BIN="$target_dir/debug/sextant"

step "Rust tests: unit, end-to-end (tests/), sqllogictest (sqllogictest/slt)"
cargo test --workspace --quiet

step "Python client tests (psycopg, OpenTelemetry SDK, influxdb-client, Prometheus, ADBC and pyarrow Flight SQL)"
.venv/bin/python -m pytest -q tests/python

step "all tests passed"
