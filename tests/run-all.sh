#!/usr/bin/env bash
# Runs every test of Sextant: formatting and lints, the Rust unit and
# end-to-end tests (which start the real server), the sqllogictest suite,
# the fuzz targets for a bounded time (tests/fuzz.sh), and the client tests
# (Python, Java, Node). Installs what the tests need first:
# a Python venv with the client libraries under .venv, node-postgres under
# tests/node/node_modules, and the Debian packages prometheus and
# libpostgresql-jdbc-java; and starts a PostgreSQL 15 server in a temporary
# directory for the tests of the shared catalog (tests/postgres.sh), stopped
# when the script ends.
#
# Environment: CARGO_TARGET_DIR (where cargo builds; CI points it outside the
# clone so dependencies stay built between runs), SEXTANT_CRASH_CYCLES,
# FUZZ_SECONDS and FUZZ_TARGET_DIR (tests/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "installing test dependencies (.venv, tests/node, Debian packages)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Debian packages the tests use: psql (the psql and Grafana tests), node
# and npm (node-postgres), the real Prometheus (the remote-write test starts
# its own process; the package's system service plays no part), pgjdbc and
# a JDK (the JDBC test compiles against it), GNU patch (vendor/rebuild.sh)
# and the PostgreSQL 15 server (the shared catalog, PostgreSQL's own answers).
missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v patch >/dev/null || missing+=(patch)
command -v prometheus >/dev/null || missing+=(prometheus)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || missing+=(default-jdk-headless)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed and not root; their tests will fail (sudo apt-get install ${missing[*]})"
  fi
fi
# node-postgres for the Node client test, at the version package-lock.json pins.
npm ci --prefix tests/node --silent --no-audit --no-fund

step "vendor/: each patched crate is its published .crate plus vendor/patches"
vendor/rebuild.sh --check

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building (debug)"
cargo build --workspace --all-targets --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export SEXTANT_BIN="$target_dir/debug/sextant"

step "PostgreSQL 15 for the shared catalog's tests (tests/postgres.sh)"
pg_dir=$(mktemp -d /tmp/sextant-pg.XXXXXX)
trap 'tests/postgres.sh stop "$pg_dir"' EXIT
SEXTANT_TEST_POSTGRES=$(tests/postgres.sh start "$pg_dir")
export SEXTANT_TEST_POSTGRES SEXTANT_TEST_POSTGRES_CA="$pg_dir/ca.pem"
echo "$SEXTANT_TEST_POSTGRES (TLS: $SEXTANT_TEST_POSTGRES_CA)"

step "Rust tests: unit, end-to-end (tests/), sqllogictest (sqllogictest/slt and SQLite's corpus in sqllogictest/sqlite)"
cargo test --workspace --quiet

step "fuzz targets, ${FUZZ_SECONDS:-20}s each (fuzz/, corpus in fuzz/corpus)"
tests/fuzz.sh

step "client tests (psql, psycopg, asyncpg, SQLAlchemy, pandas, pgjdbc, node-postgres, Grafana's queries, OpenTelemetry SDK, influxdb-client, Prometheus, ADBC and pyarrow Flight SQL, S3 on moto)"
.venv/bin/python -m pytest -q tests/python

step "all tests passed"
