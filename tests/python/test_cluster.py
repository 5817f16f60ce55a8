"""Three nodes as docs/cluster.md sets them up, with real clients: the
catalog in PostgreSQL 15 (SEXTANT_TEST_POSTGRES, which tests/run-all.sh
starts), the Parquet files in one S3 bucket (moto's server), a (ingest,query),
b (ingest,query), c (query,compact).

Spans come into a from the OpenTelemetry SDK's OTLP/HTTP exporter, line
protocol into a, INSERTs into b over psycopg; c answers over pgwire
(psycopg) and over Flight SQL (ADBC, with `?` parameters) with every row
before any flush, after FLUSH on a and b (the files are then in the bucket),
and after COMPACT TABLE on c.
"""

import os
import time
import uuid
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import Server
from test_s3 import BUCKET, S3, s3  # noqa: F401  (s3: the moto fixture)

SECRET = "python-cluster-secret-0123456789"


@pytest.fixture
def catalog():
    base = os.environ.get("SEXTANT_TEST_POSTGRES")
    if not base:
        pytest.fail("SEXTANT_TEST_POSTGRES is not set: tests/run-all.sh starts PostgreSQL 15 and sets it")
    db = f"py_cluster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    yield f"{base}/{db}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def node(tmp_path: Path, s3: S3, catalog: str, node_id: str, mode: str) -> Server:
    data = tmp_path / node_id / "data"
    data.mkdir(parents=True)
    server = Server(
        data,
        [
            "--catalog", catalog, "--cluster-secret", SECRET, "--node-id", node_id, "--mode", mode,
            "--object-store", f"s3://{BUCKET}/cluster",
        ],
        env=s3.env,
    )
    server.start()
    return server


COUNTS = "SELECT service_name, count(*) FROM otel_traces GROUP BY service_name ORDER BY service_name"


def test_three_nodes_with_real_clients(s3, catalog, tmp_path):
    a = node(tmp_path, s3, catalog, "a", "ingest,query")
    b = node(tmp_path, s3, catalog, "b", "ingest,query")
    c = node(tmp_path, s3, catalog, "c", "query,compact")

    # Spans into a through the SDK's exporter (its own request, its own retries).
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(http_traces.OTLPSpanExporter(endpoint=f"{a.http_url}/v1/traces")))
    tracer = provider.get_tracer("sextant.tests.cluster")
    for i in range(25):
        with tracer.start_as_current_span(f"charge-{i}"):
            pass
    provider.shutdown()

    # Line protocol into a (the table created there), INSERTs into b.
    lines = "".join(f"cpu,host=h{i % 4} usage={i}.5 {1764547200 + i}\n" for i in range(400)).encode()
    status, _, body = a.post("/api/v2/write?precision=s", lines, {"Content-Type": "text/plain"})
    assert status == 204, body
    with psycopg.connect(b.dsn(), autocommit=True) as conn:
        # b takes in the table a created (at once, or on its first write).
        deadline = time.time() + 10
        while True:
            try:
                conn.execute(
                    "INSERT INTO cpu (time, host, usage) SELECT to_timestamp(1764550000 + value), 'h9', value "
                    "FROM generate_series(1, 100)"
                )
                break
            except psycopg.errors.UndefinedTable:
                assert time.time() < deadline, "b never saw cpu"
                time.sleep(0.05)

    want_cpu = [("h0", 100), ("h1", 100), ("h2", 100), ("h3", 100), ("h9", 100)]
    cpu_sql = "SELECT host, count(*) FROM cpu GROUP BY host ORDER BY host"

    def answers(stage: str):
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            assert conn.execute(cpu_sql).fetchall() == want_cpu, stage
            assert conn.execute(COUNTS).fetchall() == [("checkout", 25)], stage
        with flight_sql.connect(f"grpc://{c.addrs['flight']}", autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(usage) FROM cpu WHERE host = ?", parameters=("h9",))
            assert cur.fetchall() == [(100, 5050.0)], stage
            # a's rows have usage i + 0.5 for i in 0..399, b's 1..100.
            cur.execute("SELECT count(*) FROM cpu WHERE usage > ?", parameters=(199.0,))
            assert cur.fetchall() == [(201,)], stage

    answers("before any flush: from a's and b's buffers")

    for server in (a, b):
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("FLUSH TABLE cpu")
            conn.execute("FLUSH TABLE otel_traces")
    parquet = [k for k in s3.keys("cluster/") if k.endswith(".parquet")]
    assert any("-a-" in k for k in parquet) and any("-b-" in k for k in parquet), parquet
    answers("after FLUSH on a and b: from the bucket")

    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("COMPACT TABLE cpu")
        compacted = conn.execute("SELECT count(*) FROM system.files WHERE table_name = 'cpu'").fetchone()
        assert compacted == (1,)
    answers("after COMPACT TABLE on c")
