"""Sextant observed from outside: `GET /metrics` parsed by the Prometheus
client library's own text parser, its counters moving with ingest and
queries, `system.metrics` agreeing with it, and the real Prometheus
scraping it (and remote-writing the samples back into sextant)."""

import json
import time
import urllib.request

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from test_prometheus import Prometheus, logs, prometheus_bin, wait_for_rows


def scrape(server) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_parse_and_move_with_ingest_and_queries(server):
    before = scrape(server)
    assert value(before, "sextant_buffer_bytes") == 0
    lp = b"cpu,host=a usage=1 1704067200000000000\ncpu,host=b usage=2 1704067201000000000\ncpu,host=c usage=3 1704067202000000000\n"
    status, _, _ = server.post("/api/v2/write", lp, {})
    assert status == 204
    status, _, _ = server.post("/api/v2/write", b"cpu,host=d usage=oops\n", {})
    assert status == 400
    rows = b'{"time": "2024-01-01T00:00:00Z", "v": 1}\n{"time": "2024-01-01T00:00:01Z", "v": 2}\n'
    assert server.post("/v1/ingest/events", rows, {})[0] == 200
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO events (time, v) VALUES ('2024-01-01T00:00:02Z', 3)")
        during = scrape(server)
        conn.execute("FLUSH TABLE cpu, events")
        assert conn.execute("SELECT count(*) FROM cpu").fetchone()[0] == 3
        try:
            conn.execute("SELECT * FROM nope")
        except psycopg.errors.UndefinedTable:
            pass
    after = scrape(server)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sextant_ingest_rows_total", protocol="line_protocol", table="cpu") == 3
    assert moved("sextant_ingest_rows_total", protocol="json", table="events") == 2
    assert moved("sextant_ingest_rows_total", protocol="sql", table="events") == 1
    assert moved("sextant_ingest_rejected_points_total", protocol="line_protocol", reason="invalid") == 1
    assert moved("sextant_ingest_requests_total", protocol="line_protocol", status="204") == 1
    assert moved("sextant_ingest_requests_total", protocol="line_protocol", status="400") == 1
    assert moved("sextant_ingest_bytes_total", protocol="line_protocol") == len(lp) + len(b"cpu,host=d usage=oops\n")
    # Every acknowledged write was fsynced; groups hold at least one record.
    assert moved("sextant_wal_fsync_seconds_count") >= 3
    assert moved("sextant_wal_group_records_sum") >= 3
    # Buffered before FLUSH, persisted after.
    assert value(during, "sextant_buffer_rows") == 6
    assert value(during, "sextant_buffer_bytes") > 0
    assert value(after, "sextant_buffer_rows") == 0
    assert moved("sextant_persisted_files_total") == 2
    assert moved("sextant_persist_seconds_count") == 2
    assert moved("sextant_object_store_request_seconds_count", op="put") >= 2
    # The count(*) scanned the one file of cpu.
    assert moved("sextant_scan_parts_total", kind="file", result="scanned") >= 1
    assert moved("sextant_scan_file_bytes_total") > 0
    assert moved("sextant_queries_total", protocol="pgwire", outcome="ok") >= 3
    assert moved("sextant_queries_total", protocol="pgwire", outcome="error") == 1
    assert moved("sextant_query_seconds_count", protocol="pgwire") >= 4
    # Histograms are cumulative: +Inf holds every observation.
    assert value(after, "sextant_wal_fsync_seconds_bucket", le="+Inf") == value(after, "sextant_wal_fsync_seconds_count")


def test_system_metrics_has_the_same_figures(server):
    status, _, _ = server.post("/api/v2/write", b"m v=1 1\nm v=2 2\n", {})
    assert status == 204
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, labels, value, type, help FROM system.metrics "
            "WHERE name = 'sextant_ingest_rows_total'"
        ).fetchall()
        assert rows == [
            (
                "sextant_ingest_rows_total",
                '{protocol="line_protocol",table="m"}',
                2.0,
                "counter",
                "Rows written, by protocol and table",
            )
        ], rows
        kinds = dict(conn.execute("SELECT DISTINCT name, type FROM system.metrics WHERE name LIKE 'sextant_wal_fsync%'").fetchall())
        assert kinds == {
            "sextant_wal_fsync_seconds_bucket": "histogram",
            "sextant_wal_fsync_seconds_sum": "histogram",
            "sextant_wal_fsync_seconds_count": "histogram",
        }
    endpoint = scrape(server)
    assert value(endpoint, "sextant_ingest_rows_total", protocol="line_protocol", table="m") == 2.0


def test_prometheus_scrapes_sextant(server, tmp_path):
    """The real Prometheus, configured with docs/observability.md's scrape
    job and docs/ingest.md's remote_write, scrapes sextant's /metrics and
    remote-writes the samples back: sextant's own counters end up as
    tables in sextant."""
    status, _, _ = server.post("/api/v2/write", b"cpu usage=1 1\n", {})
    assert status == 204
    prom = Prometheus(prometheus_bin(), tmp_path, server.http_url, scrape=server.addrs["http"])
    prom.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            wait_for_rows(
                conn,
                "SELECT count(*) FROM sextant_ingest_rows_total "
                "WHERE protocol = 'line_protocol' AND \"table\" = 'cpu' AND value >= 1",
                server,
                prom,
            )
            up = conn.execute(f"SELECT max(value) FROM up WHERE job = '{prom.job}'").fetchone()[0]
            assert up == 1.0, logs(server, prom)
        # Prometheus itself says the target is healthy.
        url = f"http://{prom.target}/api/v1/targets"
        with urllib.request.urlopen(url, timeout=10) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
    finally:
        prom.stop()


# A statement that runs for minutes and holds more memory the longer it runs
# (a growing hash set), in well under a second of rows per batch.
LONG = "SELECT count(DISTINCT v) AS n FROM generate_series(1, 100000000000) AS t(v)"


def wait_running(conn, text, timeout=30):
    """The system.queries row of the running statement `text`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = conn.execute(
            "SELECT query_id, pid, state FROM system.queries WHERE query = %s AND state = 'running'",
            (text,),
        ).fetchone()
        if row:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never showed up as running")


def wait_memory(server, predicate, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        held = value(scrape(server), "sextant_query_memory_bytes")
        if predicate(held):
            return held
        time.sleep(0.05)
    raise AssertionError(f"query memory never {what} (last {held})")


def finished(conn, query_id):
    return conn.execute(
        "SELECT state, error, duration_ms > 0 FROM system.queries WHERE query_id = %s", (query_id,)
    ).fetchone()


def test_psql_ctrl_c_cancels_a_running_query_and_frees_its_memory(server):
    import signal
    import subprocess

    host, port = server.pg
    psql = subprocess.Popen(
        ["psql", "-X", "-h", host, "-p", str(port), "-U", "sextant", "-d", "sextant", "-c", LONG],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            query_id, pid, _ = wait_running(conn, LONG)
            assert pid is not None
            held = wait_memory(server, lambda b: b > 1 << 20, "grew past 1 MiB")
            psql.send_signal(signal.SIGINT)  # psql sends a CancelRequest
            out, err = psql.communicate(timeout=30)
            assert psql.returncode != 0
            assert "canceling statement due to user request" in err, (out, err)
            state, error, _ = finished(conn, query_id)
            assert (state, error) == ("cancelled", "canceling statement due to user request")
            released = wait_memory(server, lambda b: b == 0, "went back to 0")
            assert released == 0 and held > 0
            # The connection that watched is fine, and so is the server.
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        if psql.poll() is None:
            psql.kill()


def run_in_thread(dsn, sql):
    """Runs `sql` on its own connection in a thread; returns (thread, result dict)."""
    import threading

    result = {}

    def run():
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                result["pid"] = c.execute("SELECT pg_backend_pid()").fetchone()[0]
                c.execute(sql).fetchall()
                result["ok"] = True
        except psycopg.Error as e:
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_pg_cancel_backend_and_kill_query(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for how in ("pg_cancel_backend", "kill"):
            t, result = run_in_thread(server.dsn(), LONG)
            query_id, pid, _ = wait_running(conn, LONG)
            if how == "kill":
                conn.execute(f"KILL QUERY {query_id}")
            else:
                assert conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)
                assert result.get("pid") == pid
            t.join(timeout=30)
            assert not t.is_alive()
            e = result.get("error")
            assert isinstance(e, psycopg.errors.QueryCanceled), result
            assert finished(conn, query_id)[0] == "cancelled"
        # Nothing to cancel.
        assert conn.execute("SELECT pg_cancel_backend(12345)").fetchone() == (False,)
        try:
            conn.execute("KILL QUERY 999999")
            raise AssertionError("KILL of an unknown query succeeded")
        except psycopg.errors.UndefinedObject as e:
            assert "query 999999 is not running" in str(e)
        # The statements themselves are in system.queries, finished.
        rows = conn.execute(
            "SELECT state, rows FROM system.queries WHERE query = 'SELECT pg_backend_pid()' ORDER BY query_id"
        ).fetchall()
        assert rows == [("done", 1), ("done", 1)], rows
        wait_memory(server, lambda b: b == 0, "went back to 0")


def wait_rows(conn, sql, params=(), what="rows", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            rows = conn.execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable:  # nothing written yet
            rows = []
        if rows:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout}s: {sql}")


def test_self_telemetry_writes_own_spans_and_logs(tmp_path):
    from conftest import Server

    data = tmp_path / "data"
    data.mkdir()
    server = Server(
        data,
        ["--self-telemetry", "--self-telemetry-interval", "100ms", "--self-telemetry-metrics-interval", "200ms"],
    )
    server.start()
    try:
        status, _, _ = server.post("/api/v2/write", b"cpu,host=a usage=1 1\ncpu,host=b usage=2 2\n", {})
        assert status == 204
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) AS marker_4242 FROM cpu").fetchone() == (2,)
            try:
                conn.execute("SELECT * FROM missing_marker_4243")
                raise AssertionError("query of a missing table succeeded")
            except psycopg.errors.UndefinedTable:
                pass
            spans = "SELECT trace_id, span_id, parent_span_id, service_name, kind, status_code, " \
                "status_message, duration_ns, json_get_str(attributes, 'state'), " \
                "json_get_int(attributes, 'rows'), json_get_str(attributes, 'protocol'), " \
                "json_get_str(attributes, 'sqlstate') FROM otel_traces " \
                "WHERE name = 'query' AND json_get_str(attributes, 'sql') = %s"
            # The statement's span, as a trace of its own.
            [ok] = wait_rows(conn, spans, ("SELECT count(*) AS marker_4242 FROM cpu",), "query span")
            trace_id, span_id, parent, service, kind, code, _, duration, state, rows, protocol, sqlstate = ok
            assert (parent, service, kind, code, state, rows, protocol, sqlstate) == (
                None, "sextant", "server", "unset", "done", 1, "pgwire", None
            ), ok
            assert len(trace_id) == 32 and len(span_id) == 16 and duration > 0, ok
            # Inside it: planning, then fetching the rows.
            children = conn.execute(
                "SELECT name, parent_span_id, duration_ns <= %s FROM otel_traces "
                "WHERE trace_id = %s AND name <> 'query' ORDER BY time",
                (duration, trace_id),
            ).fetchall()
            assert children == [("plan", span_id, True), ("execute", span_id, True)], children
            # A failed statement is an error span, and its log line carries
            # the same trace.
            [bad] = wait_rows(conn, spans, ("SELECT * FROM missing_marker_4243",), "failed query span")
            assert (bad[5], bad[8], bad[11]) == ("error", "failed", "42P01"), bad
            assert "missing_marker_4243" in bad[6], bad  # the error message
            logs_sql = "SELECT severity_text, severity_number, service_name, span_id, " \
                "json_get_str(attributes, 'error') FROM otel_logs " \
                "WHERE body = 'statement failed' AND trace_id = %s"
            [log] = wait_rows(conn, logs_sql, (bad[0],), "log line of the failed query")
            assert log[:4] == ("INFO", 9, "sextant", bad[1]), log
            assert "missing_marker_4243" in log[4], log
            # An ingest request: the HTTP span with the ingest batch inside.
            [http] = wait_rows(
                conn,
                "SELECT trace_id, span_id, json_get_int(attributes, 'status') FROM otel_traces "
                "WHERE name = 'http_request' AND json_get_str(attributes, 'path') = '/api/v2/write'",
                what="HTTP span",
            )
            assert http[2] == 204, http
            [child] = wait_rows(
                conn,
                "SELECT parent_span_id, json_get_int(attributes, 'rows'), json_get_str(attributes, 'protocol') "
                "FROM otel_traces WHERE name = 'ingest' AND trace_id = %s",
                (http[0],),
                "ingest span",
            )
            assert child == (http[1], 2, "line_protocol"), child
            # No feedback: writing the records makes no spans, and an idle
            # server writes nothing new while the writer keeps running.
            own = "SELECT count(*) FROM otel_traces WHERE name = 'ingest' " \
                "AND json_get_str(attributes, 'protocol') = 'self_telemetry'"
            assert conn.execute(own).fetchone() == (0,)
            others = "SELECT count(*) FROM otel_traces WHERE name NOT IN ('query', 'plan', 'execute')"
            before = conn.execute(others).fetchone()[0]
            time.sleep(1.5)
            assert conn.execute(others).fetchone()[0] == before
            assert conn.execute(own).fetchone() == (0,)
            # The examples of docs/observability.md, as written there.
            from pathlib import Path

            doc = (Path(__file__).parents[2] / "docs" / "observability.md").read_text()
            block = doc.split("## Dogfooding", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
            slowest, failed = [q.strip() for q in block.split(";") if q.strip()]
            phases = conn.execute(slowest).fetchall()
            assert {p[2] for p in phases} == {"plan", "execute"}, phases
            assert all(p[3] <= p[0] for p in phases), phases
            failures = conn.execute(failed).fetchall()
            assert [f[1] for f in failures] == ["statement failed"], failures
            assert "missing_marker_4243" in failures[0][2], failures
            # The metrics' history: a sample of every series per interval.
            [(rows,)] = wait_rows(
                conn,
                "SELECT max(value) FROM sextant_metrics WHERE name = 'sextant_ingest_rows_total' "
                "AND json_get_str(labels, 'protocol') = 'line_protocol' "
                "AND json_get_str(labels, 'table') = 'cpu' HAVING max(value) IS NOT NULL",
                what="metric samples",
            )
            assert rows == 2.0
            times = conn.execute(
                "SELECT count(DISTINCT time) FROM sextant_metrics WHERE name = 'sextant_buffer_bytes'"
            ).fetchone()[0]
            assert times >= 2, times
            assert conn.execute(
                "SELECT retention FROM system.tables WHERE table_name = 'sextant_metrics'"
            ).fetchone()[0] == "7 days"
        samples = scrape(server)
        assert value(samples, "sextant_self_telemetry_records_total", signal="traces", outcome="written") >= 4
        assert value(samples, "sextant_self_telemetry_records_total", signal="logs", outcome="written") >= 1
        assert value(samples, "sextant_ingest_rows_total", protocol="self_telemetry", table="otel_traces") >= 4
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_flight_sql_statements_are_listed_and_killed(server):
    """An ADBC Flight SQL query shows in system.queries as flight_sql, with
    its rows once done; a long one is cancelled by KILL QUERY, the client
    gets CANCELLED, and its memory goes back to the pool."""
    import threading

    import adbc_driver_flightsql.dbapi as flight_sql
    import adbc_driver_manager

    def connect():
        return flight_sql.connect(f"grpc://{server.addrs['flight']}", autocommit=True)

    with connect() as fconn, fconn.cursor() as cur:
        cur.execute("SELECT v FROM generate_series(1, 1234) AS t(v)")
        assert cur.fetch_arrow_table().num_rows == 1234
    result = {}

    def run():
        try:
            with connect() as c, c.cursor() as cur:
                cur.execute(LONG)
                cur.fetch_arrow_table()
                result["ok"] = True
        except adbc_driver_manager.Error as e:
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        done = conn.execute(
            "SELECT protocol, pid, state, rows FROM system.queries "
            "WHERE query = 'SELECT v FROM generate_series(1, 1234) AS t(v)'"
        ).fetchall()
        assert done == [("flight_sql", None, "done", 1234)], done
        query_id, pid, _ = wait_running(conn, LONG)
        assert pid is None
        wait_memory(server, lambda b: b > 1 << 20, "grew past 1 MiB")
        conn.execute(f"KILL QUERY {query_id}")
        t.join(timeout=30)
        assert not t.is_alive()
        e = result.get("error")
        assert e is not None and "canceling statement due to user request" in str(e), result
        assert finished(conn, query_id)[:2] == ("cancelled", "canceling statement due to user request")
        assert conn.execute(
            "SELECT protocol FROM system.queries WHERE query_id = %s", (query_id,)
        ).fetchone() == ("flight_sql",)
        wait_memory(server, lambda b: b == 0, "went back to 0")


def test_debug_logs_every_statement(tmp_path):
    """docs/observability.md: with `sextant_sql=debug`, every statement
    logs `statement finished`; at info only a failed one logs."""
    from conftest import Server
    logs_of = {}
    for name, log_filter in (("debug", "info,sextant_sql=debug"), ("info", "info")):
        data = tmp_path / name / "data"
        data.mkdir(parents=True)
        server = Server(data, extra_args=("--log-filter", log_filter))
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("SELECT 41 + 1").fetchall()
        server.stop()
        logs_of[name] = server.log()
    finished = [line for line in logs_of["debug"].splitlines() if "statement finished" in line]
    assert any("SELECT 41 + 1" in line for line in finished), logs_of["debug"]
    assert "statement finished" not in logs_of["info"], logs_of["info"]
