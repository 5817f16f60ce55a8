"""Grafana's PostgreSQL data source against sextant: the exact texts it sends,
over the simple query protocol with text results, as Grafana does (pgx
`PgConn().Exec`; lib/pq's simple query for the older default).

The texts come from Grafana's own source (grafana/grafana):
`public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts`
(meta queries; V3 is the form since PR #95636, late 11.x and 12.x; V1 the one
of 10.x/early 11.x; V4 the newest with `showSchemas`), the extracted plugin's
`showDatabases`, `pkg/tsdb/grafana-postgresql-datasource/macros.go` (macro
expansions, here for 2024-01-01T00:00:00Z to 06:00:00Z at 5m) and the health
check (`-- ping` from pgx, `;` from lib/pq). Result types are checked against
what Grafana maps: int2/4/8, float4/8, numeric, timestamptz/timestamp/date as
time, text.
"""

import psycopg
import pytest

OID = {"int8": 20, "int4": 23, "text": 25, "float8": 701, "timestamptz": 1184, "numeric": 1700}

SEARCH_PATH = """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""

GET_VERSION = "SELECT current_setting('server_version_num')::int/100 as version"
GET_TIMESCALEDB_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"

SHOW_TABLES_V3 = f"""SELECT
    CASE WHEN {SEARCH_PATH}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {SEARCH_PATH} THEN 0 ELSE 1 END, 1"""


def get_schema_v3(table):
    part = "'" + table.replace("'", "''") + "'"
    return f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({part}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({part}))[1]
          AND quote_ident(table_name) = (parse_ident({part}))[2]
        ELSE quote_ident(table_name) = {part}
          AND {SEARCH_PATH}
      END"""


SHOW_TABLES_V1 = f"""select quote_ident(table_name) as "table" from information_schema.tables
    where quote_ident(table_schema) not in ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
      and {SEARCH_PATH}"""

GET_SCHEMA_V1 = """select quote_ident(column_name) as "column", data_type as "type"
    from information_schema.columns
    where quote_ident(table_name) = 'cpu'"""

SHOW_SCHEMAS_V4 = """SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name"""

SHOW_TABLES_V4_PUBLIC = """SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1"""

SHOW_DATABASES = "SELECT datname FROM pg_database WHERE datistemplate = false ORDER BY datname"

# Panel queries after macro expansion (macros.go), 2024-01-01 00:00 to 06:00Z, 5m.
TIME_SERIES = (
    'SELECT floor(extract(epoch from ts)/300)*300 AS "time", avg(usage) AS value FROM cpu '
    "WHERE ts BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-01T06:00:00Z' GROUP BY 1 ORDER BY 1"
)
RAW_ROWS = (
    'SELECT ts AS "time", host AS metric, usage FROM cpu '
    "WHERE ts BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-01T06:00:00Z' ORDER BY 1"
)
TIME_EPOCH = 'SELECT extract(epoch from ts) as "time", usage FROM cpu ORDER BY 1'
UNIX_EPOCH = (
    'SELECT floor((epoch_s)/300)*300 AS "time", avg(usage) AS value FROM cpu '
    "WHERE epoch_s >= 1704067200 AND epoch_s <= 1704088800 GROUP BY 1 ORDER BY 1"
)
TO_TIMESTAMP = 'SELECT to_timestamp(epoch_s) AS "time", usage FROM cpu ORDER BY 1'


@pytest.fixture
def grafana(server):
    """A connection with a table `cpu` (time column `ts`, as panels often
    name theirs) and the raw libpq connection for simple-protocol queries."""
    with psycopg.connect(server.dsn().replace("user=sextant", "user=grafana"), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE cpu (time TIMESTAMP NOT NULL, ts TIMESTAMPTZ, host TEXT, usage DOUBLE PRECISION, epoch_s BIGINT)"
        )
        conn.execute(
            "INSERT INTO cpu VALUES "
            "('2024-01-01T00:01:00Z', '2024-01-01T00:01:00Z', 'web-1', 10, 1704067260), "
            "('2024-01-01T00:03:00Z', '2024-01-01T00:03:00Z', 'web-2', 20, 1704067380), "
            "('2024-01-01T00:07:00Z', '2024-01-01T00:07:00Z', 'web-1', 30, 1704067620), "
            "('2024-01-02T00:00:00Z', '2024-01-02T00:00:00Z', 'web-1', 99, 1704153600)"
        )
        yield conn.pgconn


def simple(pgconn, sql):
    """(column names, type oids, rows of text) of `sql` sent as one Query."""
    r = pgconn.exec_(sql.encode())
    assert r.error_message == b"", (sql, r.error_message.decode())
    names = [r.fname(i).decode() for i in range(r.nfields)]
    oids = [r.ftype(i) for i in range(r.nfields)]
    rows = [
        [None if r.get_value(j, i) is None else r.get_value(j, i).decode() for i in range(r.nfields)]
        for j in range(r.ntuples)
    ]
    return names, oids, rows


def test_health_check_pings_are_empty_queries(grafana):
    for ping in ("-- ping", ";"):
        r = grafana.exec_(ping.encode())
        assert r.status == psycopg.pq.ExecStatus.EMPTY_QUERY, (ping, r.status, r.error_message)


def test_version_and_timescaledb_probes(grafana):
    names, oids, rows = simple(grafana, GET_VERSION)
    # Postgres answers int4 (int / int); Grafana reads any integer type.
    assert (names, rows) == (["version"], [["1600"]]) and oids[0] in (OID["int4"], OID["int8"])
    names, _, rows = simple(grafana, GET_TIMESCALEDB_VERSION)
    assert names == ["extversion"] and rows == []


def test_table_pickers(grafana):
    names, oids, rows = simple(grafana, SHOW_TABLES_V3)
    assert names == ["table"] and oids == [OID["text"]]
    tables = [r[0] for r in rows]
    # On the search path: unqualified, first; elsewhere: schema-qualified.
    assert tables[0] == "cpu", tables
    assert "system.files" in tables and "public.cpu" not in tables, tables
    assert [r[0] for r in simple(grafana, SHOW_TABLES_V1)[2]] == ["cpu"]
    assert simple(grafana, SHOW_TABLES_V4_PUBLIC)[2] == [["cpu"]]
    assert [r[0] for r in simple(grafana, SHOW_SCHEMAS_V4)[2]] == ["public", "system"]
    assert ["sextant"] in simple(grafana, SHOW_DATABASES)[2]
    # A materialized view is offered like a table.
    r = grafana.exec_(
        b"CREATE MATERIALIZED VIEW cpu_5m AS SELECT date_bin(INTERVAL '5 minutes', time) AS time, "
        b"host, avg(usage) AS avg FROM cpu GROUP BY 1, 2"
    )
    assert r.error_message == b"", r.error_message
    tables = [r[0] for r in simple(grafana, SHOW_TABLES_V3)[2]]
    assert tables[:2] == ["cpu", "cpu_5m"], tables


def test_column_pickers_see_postgres_types(grafana):
    expected = [
        ["time", "timestamp with time zone"],
        ["ts", "timestamp with time zone"],
        ["host", "text"],
        ["usage", "double precision"],
        ["epoch_s", "bigint"],
    ]
    for sql in (get_schema_v3("cpu"), get_schema_v3("public.cpu"), GET_SCHEMA_V1):
        names, _, rows = simple(grafana, sql)
        assert names == ["column", "type"], sql
        assert sorted(rows) == sorted(expected), (sql, rows)


def test_panel_queries_after_macro_expansion(grafana):
    names, oids, rows = simple(grafana, TIME_SERIES)
    assert names == ["time", "value"] and oids == [OID["float8"], OID["float8"]]
    assert rows == [["1704067200", "15"], ["1704067500", "30"]]

    names, oids, rows = simple(grafana, RAW_ROWS)
    assert names == ["time", "metric", "usage"]
    assert oids == [OID["timestamptz"], OID["text"], OID["float8"]]
    assert rows[0] == ["2024-01-01 00:01:00+00", "web-1", "10"], rows

    names, oids, rows = simple(grafana, TIME_EPOCH)
    assert oids[0] in (OID["float8"], OID["numeric"]) and rows[0][0].startswith("1704067260")

    names, oids, rows = simple(grafana, UNIX_EPOCH)
    assert names == ["time", "value"]
    assert [r[1] for r in rows] == ["15", "30"], rows

    names, oids, rows = simple(grafana, TO_TIMESTAMP)
    assert oids[0] == OID["timestamptz"] and rows[0][0] == "2024-01-01 00:01:00+00"


def test_alert_history_panel(grafana):
    """docs/alerts.md's alert history panel, as Grafana sends it after
    expanding $__timeGroupAlias(time, '1h') and $__timeFilter(time)."""
    import datetime
    import time

    before = int(time.time()) // 3600 * 3600
    r = grafana.exec_(
        b"CREATE ALERT web_up AS SELECT host, max(usage) AS peak FROM cpu GROUP BY host "
        b"EVERY '1 hour' NOTIFY WEBHOOK 'http://127.0.0.1:9/hook' WITH (retries = 0)"
    )
    assert r.error_message == b"", r.error_message.decode()
    deadline = time.monotonic() + 30
    while simple(grafana, "SELECT evaluations FROM system.alerts")[2] != [["1"]]:
        assert time.monotonic() < deadline, "the first evaluation did not run"
        time.sleep(0.02)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now + datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    from test_docs_blocks import ROOT, code_blocks

    panels = [b for b in code_blocks((ROOT / "docs/alerts.md").read_text(), "sql") if "$__timeFilter" in b]
    assert len(panels) == 1, panels
    names, oids, rows = simple(grafana, expand_macros(panels[0].strip(), start, end))
    assert names == ["time", "metric", "value"]
    assert oids == [OID["float8"], OID["text"], OID["int8"]]
    after = int(now.timestamp()) // 3600 * 3600
    # Both hosts fired at once (no FOR), in the hour of the evaluation.
    assert len(rows) == 1 and rows[0][1:] == ["web_up", "2"], rows
    assert rows[0][0] in (f"{before}", f"{after}"), rows


def expand_macros(sql, start, end):
    """Grafana's macros.go expansions of the macros the dashboard uses."""
    import re

    units = {"s": 1, "m": 60, "h": 3600}

    def group_alias(m):
        col, interval = m.group(1).strip(), m.group(2).strip().strip("'")
        seconds = int(interval[:-1]) * units[interval[-1]]
        return f'floor(extract(epoch from {col})/{seconds})*{seconds} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", group_alias, sql)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1).strip()} BETWEEN '{start}' AND '{end}'", sql)
    assert "$__" not in sql, sql
    return sql


def test_dashboard_panels_answer(tmp_path):
    """docs/grafana/sextant.json: every panel's query, after macro expansion,
    runs on a server with --self-telemetry, in the shape its format needs,
    and the panels that should show something do."""
    import datetime
    import json
    import time
    from pathlib import Path

    from conftest import Server

    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "sextant.json").read_text())
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data, ["--self-telemetry", "--self-telemetry-metrics-interval", "200ms"])
    server.start()
    try:
        start_time = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        for i in range(3):
            lp = "".join(f"cpu,host=h{j} usage={j} {1704067200 + i * 10 + j}000000000\n" for j in range(5))
            assert server.post("/api/v2/write", lp.encode(), {})[0] == 204
            assert server.post("/api/v2/write", b"cpu,host=x usage=bad\n", {})[0] == 400
            time.sleep(0.5)
        with psycopg.connect(server.dsn().replace("user=sextant", "user=grafana"), autocommit=True) as conn:
            conn.execute("FLUSH TABLE cpu")
            assert conn.execute("SELECT count(*) FROM cpu").fetchone() == (15,)
            samples = "SELECT count(DISTINCT time) FROM sextant_metrics"
            wanted = conn.execute(samples).fetchone()[0] + 3
            deadline = time.monotonic() + 30
            while conn.execute(samples).fetchone()[0] < wanted:
                assert time.monotonic() < deadline, "sextant_metrics has too few samples"
                time.sleep(0.1)
            end_time = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
            start = start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            end = end_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            results = {}
            panels = [p for p in dashboard["panels"] if p["type"] != "row"]
            assert len(panels) >= 25
            for p in panels:
                [t] = p["targets"]
                assert t["datasource"]["type"] == "grafana-postgresql-datasource"
                names, oids, rows = simple(conn.pgconn, expand_macros(t["rawSql"], start, end))
                if t["format"] == "time_series":
                    assert names[0] == "time" and oids[0] in (OID["timestamptz"], OID["float8"]), (p["title"], names, oids)
                    assert names[1:] == ["metric", "value"], (p["title"], names)
                    assert oids[1] == OID["text"] and oids[2] in (OID["float8"], OID["int8"], OID["numeric"]), (p["title"], oids)
                results[p["title"]] = rows

        def series(title):
            out = {}
            for _, metric, value in results[title]:
                if value is not None:
                    out.setdefault(metric, []).append(float(value))
            return out

        assert float(results["Rows ingested since start"][0][0]) >= 15
        assert [r[0] for r in results["Tables"]].count("cpu") == 1
        # The panel's own statement is the one running.
        assert results["WAL"] and results["Statements running"][0][0] == "1"
        assert max(series("Ingest rows/s by protocol")["line_protocol"]) > 0
        assert max(series("Ingest rows/s by table")["cpu"]) > 0
        assert max(series("Rejected points/s by protocol")["line_protocol"]) > 0
        assert set(series("Ingest requests/s by status")) >= {"204", "400"}
        assert max(series("Write buffer bytes")["sextant_buffer_bytes"]) > 0
        assert max(series("Statements/s by outcome")["ok"]) > 0
        assert max(series("Mean statement latency by protocol")["pgwire"]) > 0
        assert max(series("WAL fsyncs/s")["sextant_wal_fsync_seconds_count"]) > 0
        assert max(series("WAL fsync latency (mean)")["all"]) > 0
        assert "pgwire" in series("Statement latency (latest 1000 statements)")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
