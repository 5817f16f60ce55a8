"""Sextant on S3: a real S3 API server (moto's, from PyPI `moto[server]`)
started by the test, Sextant pointed at it with --object-store s3://... and
the standard AWS variables.

- The whole cycle: create, insert, flush, compact, restart, query; the Parquet
  files are in the bucket (none on local disk) and results never change.
- The S3 server stopped and started again under ingest: writes are still
  acknowledged (into the WAL) while it is down, FLUSH fails with a clear
  error, backpressure starts once the write buffer is full, Sextant is even
  killed with SIGKILL and restarted while the store is down, and once the
  store is back every acknowledged row is there exactly once.
- Losing the machine: a new node on an empty data directory restores the
  catalog from the copy in the bucket and answers as the old one did.
"""

import json
import logging
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from conftest import Server

BUCKET = "telemetry"
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """moto's S3 server in this process. Its buckets live in the process, so
    stop() then start() on the same port is an outage with nothing lost."""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto did not start listening")

    def stop(self):
        self.server.stop()
        self.server = None

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def keys(self, prefix: str) -> list:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def s3():
    s = S3()
    s.start()
    s.client().create_bucket(Bucket=BUCKET)
    yield s
    if s.server is not None:
        s.stop()


def sextant_on(s3: S3, tmp_path: Path, prefix: str, *args) -> Server:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return Server(data, ["--object-store", f"s3://{BUCKET}/{prefix}", *args], env=s3.env)


def rows_sql(table: str, first: int, n: int) -> str:
    """INSERT of n rows with keys first..first+n-1, all in one hour (one
    partition) of 2025-12-01."""
    values = ",".join(
        f"(to_timestamp({1764547200 + k % 3000}), {k}, 'host-{k % 7}', {k * 0.5})"
        for k in range(first, first + n)
    )
    return f"INSERT INTO {table} (time, k, host, v) VALUES {values}"


SUMMARY = "SELECT host, count(*), sum(k), sum(v), min(time), max(time) FROM m GROUP BY host ORDER BY host"


def test_whole_cycle_on_s3(s3, tmp_path):
    prefix = "sextant/prod"
    server = sextant_on(s3, tmp_path, prefix)
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE m (time TIMESTAMP NOT NULL, k BIGINT, host TEXT, v DOUBLE)")
        for i in range(6):
            conn.execute(rows_sql("m", i * 1000, 1000))
            conn.execute("FLUSH TABLE m")
        before = conn.execute(SUMMARY).fetchall()
        paths = [r[0] for r in conn.execute("SELECT path FROM system.files WHERE table_name = 'm'")]
        assert len(paths) == 6
        # The files are in the bucket under the prefix, and nowhere on local disk.
        parquet = [k for k in s3.keys(prefix + "/") if k.endswith(".parquet")]
        assert sorted(f"{prefix}/{p}" for p in paths) == parquet
        assert list(server.data_dir.rglob("*.parquet")) == []

        merged = conn.execute("COMPACT TABLE m")
        assert merged.statusmessage == "COMPACT 6"
        after_compaction = conn.execute(SUMMARY).fetchall()
        assert after_compaction == before
        runs = conn.execute(
            "SELECT files_in, files_out, rows, trigger FROM system.compactions WHERE table_name = 'm'"
        ).fetchall()
        assert runs == [(6, 1, 6000, "COMPACT TABLE")]
        # COMPACT TABLE deletes the replaced files at once (no query holds them).
        parquet = [k for k in s3.keys(prefix + "/") if k.endswith(".parquet")]
        paths = [r[0] for r in conn.execute("SELECT path FROM system.files WHERE table_name = 'm'")]
        assert parquet == [f"{prefix}/{paths[0]}"] and len(paths) == 1

    assert server.stop(signal.SIGTERM) == 0
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute(SUMMARY).fetchall() == before
        # New writes after the restart land next to the compacted file.
        conn.execute(rows_sql("m", 6000, 10))
        conn.execute("FLUSH TABLE m")
        assert conn.execute("SELECT count(*), count(DISTINCT k) FROM m").fetchone() == (6010, 6010)
        assert conn.execute("SELECT count(*) FROM system.files WHERE table_name = 'm'").fetchone()[0] == 2


def test_storage_md_command_runs_on_s3(s3, tmp_path):
    """docs/storage.md's command, as it stands (its variables and flags),
    with moto in place of the MinIO at 127.0.0.1:9000 and minio's keys
    (moto takes any), plus this test's data directory and ports."""
    import shlex

    from test_docs_blocks import ROOT, code_blocks

    blocks = [b for b in code_blocks((ROOT / "docs/storage.md").read_text(), "sh") if "s3://" in b]
    assert len(blocks) == 1, blocks
    words = shlex.split(blocks[0].replace("\\\n", " "))
    at = words.index("sextant")
    env = dict(w.split("=", 1) for w in words[:at])
    assert words[at + 1] == "serve", words
    args = words[at + 2:]
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000", env
    env["AWS_ENDPOINT_URL"] = s3.endpoint
    bucket, prefix = args[args.index("--object-store") + 1].removeprefix("s3://").split("/", 1)
    assert bucket == BUCKET, args
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data, args, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env)
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE m (time TIMESTAMP NOT NULL, k BIGINT, host TEXT, v DOUBLE)")
            conn.execute(rows_sql("m", 0, 100))
            conn.execute("FLUSH TABLE m")
            paths = [r[0] for r in conn.execute("SELECT path FROM system.files WHERE table_name = 'm'")]
        # (moto keeps the other tests' objects, some under this prefix's own.)
        assert len(paths) == 1 and paths[0].startswith("m/"), paths
        assert s3.keys(f"{prefix}/m/") == [f"{prefix}/{paths[0]}"]
    finally:
        assert server.stop() == 0


class Ingest:
    """Writes batches of rows with fresh keys on one connection; counts only
    what was acknowledged."""

    BATCH = 200

    def __init__(self):
        self.next_key = 0
        self.acked = 0
        self.refused = []  # (sqlstate, message) of writes refused with backpressure

    def run(self, server: Server, seconds: float = None, until_refused: bool = False):
        deadline = time.time() + (seconds if seconds is not None else 120)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            while time.time() < deadline:
                try:
                    conn.execute(rows_sql("s", self.next_key, self.BATCH))
                except psycopg.errors.InsufficientResources as e:  # 53000
                    self.refused.append((e.sqlstate, str(e)))
                    if until_refused:
                        return
                    continue
                self.next_key += self.BATCH
                self.acked += self.BATCH
        assert not until_refused, "the write buffer never filled up while the object store was down"


def test_s3_outage_under_ingest_loses_nothing(s3, tmp_path):
    server = sextant_on(
        s3, tmp_path, "outage",
        "--persist-interval", "1s", "--buffer-limit", "4MiB", "--backpressure-timeout", "1s",
    )
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE s (time TIMESTAMP NOT NULL, k BIGINT, host TEXT, v DOUBLE)")
    ingest = Ingest()
    ingest.run(server, seconds=3)
    acked_before_outage = ingest.acked
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("FLUSH TABLE s")
        # A second file, so that COMPACT TABLE has work to do in the outage.
        conn.execute(f"INSERT INTO s VALUES (now(), {ingest.next_key}, 'compact', 1)")
        ingest.next_key += 1
        ingest.acked += 1
        acked_before_outage += 1
        conn.execute("FLUSH TABLE s")
        assert conn.execute("SELECT count(*) FROM system.files WHERE table_name = 's'").fetchone()[0] >= 2

    s3.stop()
    # Writes are still acknowledged: they go into the WAL and the write buffer.
    ingest.run(server, seconds=2)
    assert ingest.acked > acked_before_outage
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("FLUSH TABLE s")
        message = str(failed.value)
        print(f"FLUSH TABLE while the store is down: {failed.value.sqlstate}: {message}")
        # As docs/storage.md says: 58030 and the store's error.
        assert failed.value.sqlstate == "58030", (failed.value.sqlstate, message)
        assert "object store" in message.lower() or "s3" in message.lower(), message
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("COMPACT TABLE s")
        assert failed.value.sqlstate == "58030", (failed.value.sqlstate, str(failed.value))
        # So does a query that must read a persisted file.
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("SELECT sum(v) FROM s")
        assert failed.value.sqlstate == "58030", (failed.value.sqlstate, str(failed.value))
        # The connection and the server are fine.
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Until the buffer is full: then writes are refused with SQLSTATE 53000.
    ingest.run(server, until_refused=True)
    sqlstate, message = ingest.refused[-1]
    assert sqlstate == "53000" and "write buffer is full" in message, message
    # The refusal says why: the store, not a slow disk.
    assert "persistence is failing: object storage" in message, message
    acked_in_outage = ingest.acked - acked_before_outage
    assert acked_in_outage >= 1000
    print(f"acknowledged before the outage: {acked_before_outage} rows; during it: {acked_in_outage}; then: {sqlstate}: {message}")

    # The worst case while the store is down: the process dies. The WAL has
    # every acknowledged row; the store is still down when it starts again.
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    failures_before = server.log().count("persistence failed; will retry")
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        buffered = conn.execute("SELECT buffered_rows FROM system.tables WHERE table_name = 's'").fetchone()[0]
        assert buffered >= acked_in_outage
    # The new process finds the store down too (and says so) before it is back.
    deadline = time.time() + 30
    while server.log().count("persistence failed; will retry") <= failures_before:
        assert time.time() < deadline, "the restarted server never tried to persist\n" + server.log()
        time.sleep(0.2)

    s3.start()
    # Persistence catches up on its own (retry with backoff) and ingest goes on.
    ingest.run(server, seconds=2)
    deadline = time.time() + 90
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        while conn.execute("SELECT buffered_rows FROM system.tables WHERE table_name = 's'").fetchone()[0] > 0:
            assert time.time() < deadline, "persistence did not catch up after the store came back\n" + server.log()
            time.sleep(0.5)
        assert conn.execute("SELECT count(*), count(DISTINCT k), max(k) + 1 FROM s").fetchone() == (
            ingest.acked, ingest.acked, ingest.next_key,
        )
    # The two log lines docs/storage.md quotes.
    assert "persistence failed; will retry" in server.log()
    assert "persistence works again" in server.log()
    print(f"after the store came back: {ingest.acked} rows acknowledged in all, all there exactly once")

    # And once more from the bucket alone.
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT k) FROM s").fetchone() == (ingest.acked, ingest.acked)


def test_a_new_node_restores_the_catalog_from_the_bucket(s3, tmp_path):
    """Losing the machine: the old node's data directory (WAL, SQLite
    catalog) is deleted; a new node on an empty one and the same bucket
    restores the catalog from the copy the old one kept in the bucket
    (`_catalog/`), and answers as before for everything persisted."""
    prefix = "sextant/lost"
    args = ["--object-store", f"s3://{BUCKET}/{prefix}", "--catalog-snapshot-interval", "1s"]
    (tmp_path / "old" / "data").mkdir(parents=True)
    old = Server(tmp_path / "old" / "data", args, env=s3.env)
    old.start()
    with psycopg.connect(old.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE m (time TIMESTAMP NOT NULL, k BIGINT, host TEXT, v DOUBLE)")
        for i in range(3):
            conn.execute(rows_sql("m", i * 500, 500))
            conn.execute("FLUSH TABLE m")
        conn.execute("COMPACT TABLE m")
        conn.execute(
            "CREATE MATERIALIZED VIEW m_hosts AS SELECT date_bin(INTERVAL '1 hour', time) AS time, "
            "host, count(*) AS n FROM m GROUP BY 1, 2"
        )
        conn.execute("REFRESH MATERIALIZED VIEW m_hosts")
        before = conn.execute(SUMMARY).fetchall()
        view = conn.execute("SELECT host, n FROM m_hosts ORDER BY host").fetchall()
        conn.execute("CREATE USER admin WITH SUPERUSER PASSWORD 'admin-pw'")
    dsn = old.dsn().replace("user=sextant", "user=admin password=admin-pw")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Acknowledged, in the WAL only: the lost disk takes it along.
        conn.execute(rows_sql("m", 1500, 4))
    deadline = time.time() + 30
    while True:
        keys = s3.keys(prefix + "/_catalog/")
        manifest = None
        if f"{prefix}/_catalog/manifest.json" in keys:
            body = s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/_catalog/manifest.json")["Body"].read()
            manifest = json.loads(body)
            if manifest["unpersisted_rows"] == 4 and manifest["tables"] == 2:
                break
        assert time.time() < deadline, f"no catalog copy with 4 unpersisted rows: {keys} {manifest}"
        time.sleep(0.1)
    assert old.stop(signal.SIGKILL) != 0
    shutil.rmtree(tmp_path / "old" / "data")

    new = Server(tmp_path / "new" / "data", args, env=s3.env)
    (tmp_path / "new" / "data").mkdir(parents=True)
    new.start()
    assert "4 acknowledged rows were in the old node's WAL and write buffer only" in new.log()
    # The line docs/durability.md quotes, with other times, ids and counts.
    doc = (Path(__file__).resolve().parents[2] / "docs/durability.md").read_text()
    quoted = next(ln for ln in doc.splitlines() if ln.startswith("WARN sextant_server: no catalog here"))

    def shape(text):
        return re.sub(r"\d+", "#", re.sub(r"node-[0-9a-f]+", "node-#", text))

    assert shape(quoted) in shape(new.log()), new.log()
    # Nothing of the catalog is on the new node's disk but the restored file.
    assert list(new.data_dir.rglob("*.parquet")) == []
    dsn = new.dsn().replace("user=sextant", "user=admin password=admin-pw")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(SUMMARY).fetchall() == before
        # The new node recomputed the view from what was restored (the old
        # one may have refreshed it from rows only its WAL held).
        assert "materialized view refreshed in full" in new.log(), new.log()
        assert conn.execute("SELECT host, n FROM m_hosts ORDER BY host").fetchall() == view
        assert {r[3] for r in conn.execute("CHECK TABLE m, m_hosts")} == {"ok"}
        conn.execute(rows_sql("m", 2000, 10))
        conn.execute("FLUSH TABLE m")
        assert conn.execute("SELECT count(*) FROM m").fetchone() == (1510,)
