"""Three nodes as docs/cluster.md sets them up, with real clients: the
catalog in PostgreSQL 15 (SEXTANT_TEST_POSTGRES, which tests/run-all.sh
starts), the Parquet files in one S3 bucket (moto's server), a (ingest,query),
b (ingest,query), c (query,compact).

Spans come into a from the OpenTelemetry SDK's OTLP/HTTP exporter, line
protocol into a, INSERTs into b over psycopg; c answers over pgwire
(psycopg) and over Flight SQL (ADBC, with `?` parameters) with every row
before any flush, after FLUSH on a and b (the files are then in the bucket),
and after COMPACT TABLE on c. Every other ingest protocol works on either
ingest node too (OTLP/gRPC, Prometheus remote write, NDJSON, Flight SQL
bulk ingest through ADBC, COPY), counted from c, and c answers PromQL
over the remote-written series and the metadata written to a. Nodes with certificates
talk to each other over TLS, trusting the certificate authority
--cluster-ca names.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow as pa
import pytest
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import Server
from remote_write import pb_metadata, pb_series, snappy, write_request
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


def node(tmp_path: Path, s3: S3, catalog: str, node_id: str, mode: str, extra=()) -> Server:
    data = tmp_path / node_id / "data"
    data.mkdir(parents=True)
    server = Server(
        data,
        [
            "--catalog", catalog, "--cluster-secret", SECRET, "--node-id", node_id, "--mode", mode,
            "--object-store", f"s3://{BUCKET}/cluster", *extra,
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
        # Logs to search, with a token index once persisted.
        conn.execute("CREATE TABLE applog (time TIMESTAMP NOT NULL, message TEXT)")
        conn.execute(
            "INSERT INTO applog SELECT to_timestamp(1764550000 + value), "
            "CASE WHEN value % 10 = 3 THEN 'disk full on h' || CAST(value % 4 AS VARCHAR) "
            "ELSE 'request served' END FROM generate_series(1, 100)"
        )

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
            # A token search, with the term bound and written out.
            cur.execute("SELECT count(*) FROM applog WHERE matches_term(message, ?)", parameters=("full",))
            assert cur.fetchall() == [(10,)], stage
            cur.execute("SELECT count(*) FROM applog WHERE matches_term(message, 'on h1')")
            assert cur.fetchall() == [(sum(1 for v in range(1, 101) if v % 10 == 3 and v % 4 == 1),)], stage

    # c takes in the table b created (at once, or after its catalog poll).
    deadline = time.time() + 10
    while True:
        try:
            with psycopg.connect(c.dsn(), autocommit=True) as conn:
                if conn.execute("SELECT count(*) FROM applog").fetchone() == (100,):
                    break
        except psycopg.errors.UndefinedTable:
            pass
        assert time.time() < deadline, "c never saw applog's rows"
        time.sleep(0.05)
    answers("before any flush: from a's and b's buffers")

    for server in (a, b):
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("FLUSH TABLE cpu")
            conn.execute("FLUSH TABLE otel_traces")
    with psycopg.connect(b.dsn(), autocommit=True) as conn:
        conn.execute("FLUSH TABLE applog")
    parquet = [k for k in s3.keys("cluster/") if k.endswith(".parquet")]
    assert any("-a-" in k for k in parquet) and any("-b-" in k for k in parquet), parquet
    answers("after FLUSH on a and b: from the bucket")

    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("COMPACT TABLE cpu")
        compacted = conn.execute("SELECT count(*) FROM system.files WHERE table_name = 'cpu'").fetchone()
        assert compacted == (1,)
    answers("after COMPACT TABLE on c")


def test_every_ingest_protocol_on_either_ingest_node(s3, catalog, tmp_path):
    a = node(tmp_path, s3, catalog, "a", "ingest,query")
    b = node(tmp_path, s3, catalog, "b", "ingest,query")
    c = node(tmp_path, s3, catalog, "c", "query,compact")
    t0_ms = 1764547200000

    # OTLP/gRPC spans into b, through the SDK's gRPC exporter.
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-on-b"}))
    provider.add_span_processor(SimpleSpanProcessor(
        grpc_traces.OTLPSpanExporter(endpoint=b.grpc_endpoint, insecure=True, timeout=10)))
    tracer = provider.get_tracer("sextant.tests.cluster")
    for i in range(30):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    provider.shutdown()

    # Prometheus remote write: one series into a, another into b, same
    # metric; its metadata (in a request of its own, as Prometheus sends
    # it) into a.
    series_into_a, series_into_b = (
        snappy(write_request(pb_series(
            [("__name__", "rw_requests_total"), ("job", job)],
            [(float(i), t0_ms + i * 1000) for i in range(40)],
        )))
        for job in ("on-a", "on-b")
    )
    for server, body in (
        (a, series_into_a),
        (b, series_into_b),
        (a, snappy(pb_metadata("counter", "rw_requests_total", "Requests, by job."))),
    ):
        status, _, resp = server.post("/api/v1/write", body, {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        })
        assert status == 204, resp

    # NDJSON into b.
    ndjson = "".join(f'{{"time": {t0_ms + i}, "kind": "k{i % 2}", "n": {i}}}\n' for i in range(50))
    status, _, resp = b.post("/v1/ingest/events", ndjson.encode(), {"Content-Type": "application/x-ndjson"})
    assert status < 300, resp

    # Flight SQL bulk ingest through ADBC into a, then into b (which takes
    # the table a created in).
    def batch(first):
        return pa.table({
            "time": pa.array([t0_ms * 1_000_000 + first + i for i in range(20)], pa.timestamp("ns", tz="UTC")),
            "v": pa.array([float(first + i) for i in range(20)]),
        })
    with flight_sql.connect(f"grpc://{a.addrs['flight']}", autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("bulk", batch(0), mode="create")
    deadline = time.time() + 10
    while True:
        try:
            with flight_sql.connect(f"grpc://{b.addrs['flight']}", autocommit=True) as conn, conn.cursor() as cur:
                cur.adbc_ingest("bulk", batch(100), mode="append")
            break
        except Exception as e:  # noqa: BLE001 (b may not have taken the table in yet)
            assert time.time() < deadline, f"b never took bulk in: {e}"
            time.sleep(0.1)

    # COPY into b over psycopg.
    with psycopg.connect(b.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE copied (time TIMESTAMP NOT NULL, word TEXT)")
        with conn.cursor().copy("COPY copied (time, word) FROM STDIN") as copy:
            for i in range(25):
                copy.write_row((f"2025-12-01T00:00:{i:02d}Z", f"w{i}"))

    want = {
        "SELECT service_name, count(*) FROM otel_traces GROUP BY 1 ORDER BY 1": [("grpc-on-b", 30)],
        "SELECT job, count(*), sum(value) FROM rw_requests_total GROUP BY 1 ORDER BY 1":
            [("on-a", 40, 780.0), ("on-b", 40, 780.0)],
        "SELECT kind, count(*), sum(n) FROM events GROUP BY 1 ORDER BY 1": [("k0", 25, 600), ("k1", 25, 625)],
        "SELECT count(*), sum(v) FROM bulk": [(40, 2380.0)],
        "SELECT count(*), min(word), max(word) FROM copied": [(25, "w0", "w9")],
    }

    def answers(stage):
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            for sql, rows in want.items():
                assert conn.execute(sql).fetchall() == rows, (stage, sql)
        # PromQL on c over both nodes' series: each counter rose by 1 a
        # second, so its last value at t0 + 39 s is 39 and its rate over
        # the 30 s before is 1.
        for expr, want_values in (
            ("sum by (job) (rw_requests_total)", {"on-a": "39", "on-b": "39"}),
            ("rate(rw_requests_total[30s])", {"on-a": "1", "on-b": "1"}),
        ):
            status, answer = prom_api(c, "/api/v1/query", {"query": expr, "time": str(t0_ms / 1000 + 39)})
            assert status == 200, (stage, expr, answer)
            got = {s["metric"]["job"]: s["value"][1] for s in answer["data"]["result"]}
            assert got == want_values, (stage, expr, answer)
        # The metadata written to a, from c (the catalog they share).
        assert prom_api(c, "/api/v1/metadata", {}) == (200, {
            "status": "success",
            "data": {"rw_requests_total": [{"type": "counter", "help": "Requests, by job.", "unit": ""}]},
        }), stage

    answers("before any flush: from a's and b's buffers")
    for server in (a, b):
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            for table in ("otel_traces", "rw_requests_total", "events", "bulk", "copied"):
                conn.execute(f"FLUSH TABLE {table}")
    answers("after FLUSH on a and b: from the bucket")


def prom_api(server: Server, path: str, params: dict):
    """(status, JSON answer) of `server`'s Prometheus HTTP API."""
    url = f"{server.http_url}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def make_ca_and_cert(directory: Path):
    """A certificate authority and a node certificate it signed (for
    127.0.0.1 and localhost), as a cluster's operator would make them."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "node.pem", directory / "node.key", directory / "node.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=sextant-test-ca"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=sextant-node",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-copy_extensions", "copyall"],
    ):
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    return ca, cert, key


def test_nodes_with_certificates_talk_over_tls(s3, catalog, tmp_path):
    """Nodes with certificates (--tls-cert) reach each other over TLS and
    trust what --cluster-ca signed: c reads a's buffer and runs stages on
    a and b; a node that lacks --cluster-ca cannot, and says why."""
    ca, cert, key = make_ca_and_cert(tmp_path)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    a = node(tmp_path, s3, catalog, "a", "ingest,query", [*tls, "--cluster-ca", str(ca)])
    b = node(tmp_path, s3, catalog, "b", "ingest,query", [*tls, "--cluster-ca", str(ca)])
    c = node(tmp_path, s3, catalog, "c", "query,compact", [*tls, "--cluster-ca", str(ca)])
    dsn = lambda s: f"{s.dsn()} sslmode=verify-full sslrootcert={ca}"  # noqa: E731

    with psycopg.connect(dsn(a), autocommit=True) as conn:
        conn.execute("CREATE TABLE m (time TIMESTAMP NOT NULL, k BIGINT)")
        for i in range(4):
            conn.execute(f"INSERT INTO m SELECT to_timestamp(1764547200 + value), value FROM generate_series({i * 100 + 1}, {i * 100 + 100})")
            conn.execute("FLUSH TABLE m")
        conn.execute("INSERT INTO m VALUES (to_timestamp(1764550000), 1000)")
    with psycopg.connect(dsn(c), autocommit=True) as conn:
        # a's buffer, read over TLS; then the Parquet scan spread over a, b
        # and c, whose stages travel over TLS too.
        assert conn.execute("SELECT count(*), sum(k) FROM m").fetchone() == (401, 81200)
        conn.execute("SET distributed.file_scan_config_bytes_per_partition = 1")
        plan = "\n".join(r[1] for r in conn.execute("EXPLAIN SELECT k % 3, count(*) FROM m GROUP BY 1"))
        assert "DistributedExec" in plan and "tasks=3" in plan, plan
        assert conn.execute("SELECT k % 3 AS r, count(*) FROM m GROUP BY 1 ORDER BY 1").fetchall() == [
            (0, 133), (1, 135), (2, 133)]

    # Without --cluster-ca a node cannot trust the others' certificates.
    d = node(tmp_path, s3, catalog, "d", "query", tls)
    with psycopg.connect(dsn(d), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT count(*) FROM m").fetchone()
        assert "--cluster-ca" in str(err.value), err.value
