#!/usr/bin/env bash
# docs/observability.md's tokio-console build, checked by hand (not in CI:
# the `console` feature turns on tokio's `tracing` feature and the document's
# RUSTFLAGS add a cfg, so each build below recompiles every crate, about 15
# minutes each on 2 cores in debug, twice that with --release as the
# document's command has it).
#
#   tests/console.sh            debug builds in target/console and target/console-nocfg
#   tests/console.sh --release  the document's own command (release)
#
# Checks: built as the document says, `sextant serve` starts and the console
# listens on 127.0.0.1:6669; built with the feature but without the cfg, it
# says so and exits with status 2, as the document says.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(); dir=debug
if [ "${1:-}" = --release ]; then profile=(--release); dir=release; fi
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
pid=

echo "==> built as docs/observability.md says (target/console)"
RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/console \
  cargo build "${profile[@]}" --features sextant-server/console --bin sextant
target/console/$dir/sextant serve --data-dir "$data/a" --pg-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
  --grpc-addr 127.0.0.1:0 --flight-addr 127.0.0.1:0 --ready-file "$data/ready" >"$data/log" 2>&1 &
pid=$!
for _ in $(seq 300); do [ -f "$data/ready" ] && break; sleep 0.1; done
[ -f "$data/ready" ] || { cat "$data/log"; echo "FAIL: not ready"; exit 1; }
python3 -c 'import socket; socket.create_connection(("127.0.0.1", 6669), timeout=5).close()' \
  || { echo "FAIL: nothing listens on 127.0.0.1:6669"; exit 1; }
kill "$pid"; wait "$pid" || true
echo "ok: the console listens on 127.0.0.1:6669"

echo "==> built with the feature but without the cfg (target/console-nocfg)"
CARGO_TARGET_DIR=target/console-nocfg cargo build "${profile[@]}" --features sextant-server/console --bin sextant
set +e
out=$(target/console-nocfg/$dir/sextant serve --data-dir "$data/b" 2>&1)
status=$?
set -e
[ "$status" = 2 ] || { echo "FAIL: exit status $status, not 2: $out"; exit 1; }
case "$out" in
  *"built with the console feature but without"*) echo "ok: exits 2 saying: $out" ;;
  *) echo "FAIL: no explanation: $out"; exit 1 ;;
esac
