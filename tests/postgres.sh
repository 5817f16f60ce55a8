#!/usr/bin/env bash
# A PostgreSQL 15 server in a temporary directory, for the tests of the
# shared catalog (Debian's server binaries; initdb refuses root, so as root
# it runs as the `postgres` user). Trust authentication on 127.0.0.1 only.
# TLS is on too (clients choose): DIR/ca.pem is the certificate authority
# that signed the server's certificate (for 127.0.0.1), for the tests of
# --catalog-ca.
#
#   tests/postgres.sh start DIR   starts a fresh cluster in DIR (empty) and
#                                 prints its URL, postgres://postgres@127.0.0.1:PORT
#   tests/postgres.sh stop DIR    stops it (immediate shutdown) and removes DIR
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
cmd=${1:?usage: tests/postgres.sh start|stop DIR}
dir=${2:?usage: tests/postgres.sh start|stop DIR}
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    [ -x "$bin/initdb" ] || { echo "PostgreSQL 15 is not installed (apt-get install postgresql-15)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale C >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    {
      openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 2 -subj /CN=sextant-test-catalog-ca
      openssl req "${ec[@]}" -keyout "$dir/data/server.key" -out "$dir/server.csr" -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/data/server.crt" -days 2 -copy_extensions copyall
    } >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; exit 1; }
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/data/server.key" "$dir/data/server.crt"
    chmod 600 "$dir/data/server.key"
    as_postgres "$bin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c ssl=on" start >/dev/null \
      || { cat "$dir/log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port"
    ;;
  stop)
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) echo "usage: tests/postgres.sh start|stop DIR" >&2; exit 2 ;;
esac
