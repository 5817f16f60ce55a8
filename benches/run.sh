#!/usr/bin/env bash
# Runs every benchmark of Sextant in one go, on this machine:
#   1. builds sextant and sextant-load in release (CARGO_TARGET_DIR, default
#      $HOME/.cache/sextant/release-target: keep it warm, a cold release build
#      takes about 30 minutes on 2 cores);
#   2. installs DuckDB (benches/requirements.txt) into .venv;
#   3. runs the load tool: ingest into Sextant and PostgreSQL 15, the query
#      suite on Sextant, DuckDB and PostgreSQL, storage per row; the summary
#      goes to stdout and to benches/results/latest.md;
#   4. unless BENCH_SKIP_VIEWS=1, the materialized-view benchmark (ingest
#      with 0, 1 and 5 views, a 30-day dashboard panel on views and on the
#      base table), to benches/results/views.md;
#   5. unless BENCH_SKIP_CLUSTER=1, the query suite on one node and on a
#      three-node cluster (catalog in PostgreSQL, Parquet in moto's S3), to
#      benches/results/cluster.md;
#   6. unless BENCH_SKIP_PROMQL=1, PromQL range queries on Sextant and on
#      Prometheus 2.42 (/usr/bin/prometheus: apt-get install prometheus)
#      over the same remote-written samples, to benches/results/promql.md;
#   7. unless BENCH_SKIP_CRITERION=1, the criterion benchmarks (storage
#      path and decoders).
# Extra arguments go to sextant-load (e.g. --logs 200000 for a quick run);
# `target/release/sextant-load --help` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sextant/release-target}"

echo "==> building sextant and sextant-load (release)"
cargo build --release --quiet -p sextant-server -p sextant-benches --bin sextant --bin sextant-load

echo "==> installing DuckDB and moto into .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt

echo "==> load tool"
mkdir -p benches/results
"$CARGO_TARGET_DIR/release/sextant-load" --python .venv/bin/python --report benches/results/latest.md "$@"

if [ "${BENCH_SKIP_VIEWS:-0}" != 1 ]; then
  echo "==> load tool: materialized views"
  "$CARGO_TARGET_DIR/release/sextant-load" --scenario views --report benches/results/views.md
fi

if [ "${BENCH_SKIP_CLUSTER:-0}" != 1 ]; then
  echo "==> load tool: one node and a three-node cluster"
  "$CARGO_TARGET_DIR/release/sextant-load" --scenario cluster --python .venv/bin/python \
    --report benches/results/cluster.md "$@"
fi

if [ "${BENCH_SKIP_PROMQL:-0}" != 1 ]; then
  echo "==> load tool: PromQL against Prometheus"
  "$CARGO_TARGET_DIR/release/sextant-load" --scenario promql --report benches/results/promql.md
fi

if [ "${BENCH_SKIP_CRITERION:-0}" != 1 ]; then
  echo "==> criterion: storage path"
  cargo bench --quiet -p sextant-benches --bench storage
  echo "==> criterion: decoders"
  cargo bench --quiet -p sextant-benches --bench decoders
  # The WAL's peer: what the disk itself does per fsync.
  pg_test_fsync=/usr/lib/postgresql/15/bin/pg_test_fsync
  if [ -x "$pg_test_fsync" ]; then
    echo "==> peer: pg_test_fsync on the same file system"
    tmp=$(mktemp -d)
    "$pg_test_fsync" -s 1 -f "$tmp/fsync.test" | sed -n '1,10p'
    rm -rf "$tmp"
  fi
fi
